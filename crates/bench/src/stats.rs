//! Percentiles of a set of durations.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A distribution of durations, in milliseconds.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Summary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    pub fn of(durations: &[Duration]) -> Self {
        let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let Some(&max_ms) = ms.last() else {
            return Self::default();
        };
        Self {
            samples: ms.len(),
            p50_ms: nearest_rank(&ms, 50.0),
            p95_ms: nearest_rank(&ms, 95.0),
            p99_ms: nearest_rank(&ms, 99.0),
            max_ms,
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }
}

/// The nearest-rank percentile of sorted, non-empty `values`.
fn nearest_rank(values: &[f64], percentile: f64) -> f64 {
    let rank = (percentile / 100.0 * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let durations: Vec<Duration> = (1..=200).map(Duration::from_millis).collect();
        let summary = Summary::of(&durations);
        assert_eq!(summary.samples, 200);
        assert_eq!(
            (
                summary.p50_ms,
                summary.p95_ms,
                summary.p99_ms,
                summary.max_ms
            ),
            (100.0, 190.0, 198.0, 200.0)
        );
        assert_eq!(Summary::of(&[]).samples, 0);
    }
}
