//! The curves of a run: convergence latency and cold start against the
//! mesh's size, as an SVG beside the JSON results.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::{cold_start::ColdStart, latency::Latency, report::Results, stats::Summary};

/// The 250 ms latency target, drawn on the latency chart.
const LATENCY_TARGET_MS: f64 = 250.0;

/// Writes two charts side by side to `path`: node add → Peer everywhere
/// (p50, p99) and cold start (operator, plain-client floor), each against
/// nodes per cluster.
pub fn curves(results: &Results, path: &Path) -> anyhow::Result<()> {
    draw(&results.latency, &results.cold_start, path)
        .map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A curve: its label, its points (nodes per cluster, value), its colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn draw(latencies: &[Latency], cold_starts: &[ColdStart], path: &Path) -> DrawResult {
    let root = SVGBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let latency = |pick: fn(&Summary) -> f64| -> Vec<(f64, f64)> {
        let points = latencies.iter();
        points
            .map(|l| (f64::from(l.nodes_per_cluster), pick(&l.node_added)))
            .collect()
    };
    chart(
        &left,
        "node added -> Peer on every other cluster (ms)",
        &[
            ("p50", latency(|s| s.p50_ms), BLUE),
            ("p99", latency(|s| s.p99_ms), RED),
        ],
        Some(LATENCY_TARGET_MS),
    )?;
    let cold = |pick: fn(&ColdStart) -> f64| -> Vec<(f64, f64)> {
        let points = cold_starts.iter();
        points
            .map(|c| (f64::from(c.nodes_per_cluster), pick(c)))
            .collect()
    };
    chart(
        &right,
        "cold start, every Peer everywhere (s)",
        &[
            ("operator", cold(|c| c.seconds), RED),
            ("plain-client floor", cold(|c| c.floor_seconds), BLACK),
        ],
        None,
    )?;
    root.present()?;
    Ok(())
}

/// One chart of `series` against nodes per cluster (3 clusters), with a
/// dashed `target` line when given.
fn chart(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
    target: Option<f64>,
) -> DrawResult {
    let points = series.iter().flat_map(|(_, points, _)| points);
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points.map(|p| p.1).chain(target).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("nodes per cluster (3 clusters)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    if let Some(target) = target {
        let line = DashedLineSeries::new(
            [(0.0, target), (x_max * 1.05, target)],
            6,
            4,
            RGBColor(120, 120, 120).into(),
        );
        chart
            .draw_series(line)?
            .label(format!("target {target:.0}"));
    }
    for (label, points, color) in series {
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn a_sweep_draws_both_curves_with_the_target() {
        let latency = |nodes, p50_ms, p99_ms| Latency {
            nodes_per_cluster: nodes,
            node_added: Summary {
                p50_ms,
                p99_ms,
                ..Summary::default()
            },
            ..Latency::default()
        };
        let cold = |nodes, seconds, floor_seconds| ColdStart {
            nodes_per_cluster: nodes,
            seconds,
            floor_seconds,
            ..ColdStart::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.svg");
        draw(
            &[latency(100, 15.0, 40.0), latency(5000, 277.0, 390.0)],
            &[cold(100, 1.5, 1.2), cold(5000, 75.0, 70.0)],
            &path,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "p50",
            "p99",
            "target 250",
            "operator",
            "plain-client floor",
            "5000",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
