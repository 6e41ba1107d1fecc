//! The curves of a run: convergence latency and cold start against the
//! mesh's size, as an SVG beside the JSON results. A run that sweeps nodes
//! per cluster gets a row of charts against them; one that sweeps the
//! number of clusters, a row against that; `plot` draws both from several
//! results files.

use std::{collections::BTreeSet, path::Path};

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use serde::de::DeserializeOwned;

use crate::{cold_start::ColdStart, latency::Latency, stats::Summary};

/// Writes the curves of `cold_starts` and `latencies` to `path`: for each
/// swept axis, node add → Peer everywhere (p50, p99, the plain client's
/// p99) and cold start (operator, plain-client floor).
pub fn curves(cold_starts: &[ColdStart], latencies: &[Latency], path: &Path) -> anyhow::Result<()> {
    draw(cold_starts, latencies, path).map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

/// The cold starts and latencies of results files `paths`, any version:
/// entries from before each carried its cluster count take the file's
/// (three before `--clusters` existed).
pub fn read(paths: &[impl AsRef<Path>]) -> anyhow::Result<(Vec<ColdStart>, Vec<Latency>)> {
    let (mut cold_starts, mut latencies) = (Vec::new(), Vec::new());
    for path in paths {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let clusters = results["clusters"].as_u64().unwrap_or(3);
        let context = |key: &str| format!("{}: {key}", path.display());
        cold_starts.extend(
            entries::<ColdStart>(&results["cold_start"], clusters)
                .with_context(|| context("cold_start"))?,
        );
        latencies.extend(
            entries::<Latency>(&results["latency"], clusters)
                .with_context(|| context("latency"))?,
        );
    }
    Ok((cold_starts, latencies))
}

/// The entries of a results array, each given `clusters` unless it says.
fn entries<T: DeserializeOwned>(
    array: &serde_json::Value,
    clusters: u64,
) -> anyhow::Result<Vec<T>> {
    let items = array.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            if let Some(fields) = item.as_object_mut() {
                fields.entry("clusters").or_insert(clusters.into());
            }
            Ok(serde_json::from_value(item)?)
        })
        .collect()
}

/// A line of sizes the charts are drawn along.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Axis {
    /// Nodes per cluster vary, at this many clusters.
    Nodes { clusters: usize },
    /// The number of clusters varies, at this many nodes each.
    Clusters { nodes: u32 },
}

impl Axis {
    /// Where a measurement at `clusters` × `nodes` lies on this axis, if it
    /// is on it.
    fn x(self, clusters: usize, nodes: u32) -> Option<f64> {
        match self {
            Self::Nodes { clusters: c } => (c == clusters).then_some(f64::from(nodes)),
            Self::Clusters { nodes: n } => (n == nodes).then_some(clusters as f64),
        }
    }

    fn description(self) -> String {
        match self {
            Self::Nodes { clusters } => format!("nodes per cluster ({clusters} clusters)"),
            Self::Clusters { nodes } => format!("clusters ({nodes} nodes each)"),
        }
    }

    /// The latency target of docs/performance.md along this axis: under
    /// 100 ms at 3×5000, under 150 ms at 20×20.
    fn target_ms(self) -> f64 {
        match self {
            Self::Nodes { .. } => 100.0,
            Self::Clusters { .. } => 150.0,
        }
    }
}

/// The axes the sizes sweep: nodes per cluster at the cluster count with
/// the most of them, clusters at the node count with the most of them;
/// those with two sizes or more, else the one point there is.
fn axes(sizes: &BTreeSet<(usize, u32)>) -> Vec<Axis> {
    let most = |key: &dyn Fn(&(usize, u32)) -> u64| {
        sizes
            .iter()
            .map(|size| {
                let alike = sizes.iter().filter(|other| key(other) == key(size)).count();
                (alike, std::cmp::Reverse(key(size)))
            })
            .max()
            .map(|(alike, key)| (alike, key.0))
    };
    let by_clusters = most(&|(clusters, _)| *clusters as u64);
    let by_nodes = most(&|(_, nodes)| u64::from(*nodes));
    let mut axes = Vec::new();
    if let Some((alike, clusters)) = by_clusters
        && alike >= 2
    {
        axes.push(Axis::Nodes {
            clusters: clusters as usize,
        });
    }
    if let Some((alike, nodes)) = by_nodes
        && alike >= 2
    {
        axes.push(Axis::Clusters {
            nodes: u32::try_from(nodes).unwrap_or(u32::MAX),
        });
    }
    if axes.is_empty()
        && let Some(&(clusters, _)) = sizes.first()
    {
        axes.push(Axis::Nodes { clusters });
    }
    axes
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A curve: its label, its points (size, value), its colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn draw(cold_starts: &[ColdStart], latencies: &[Latency], path: &Path) -> DrawResult {
    let sizes: BTreeSet<(usize, u32)> = cold_starts
        .iter()
        .map(|c| (c.clusters, c.nodes_per_cluster))
        .chain(latencies.iter().map(|l| (l.clusters, l.nodes_per_cluster)))
        .collect();
    let axes = axes(&sizes);
    let rows = u32::try_from(axes.len().max(1))?;
    let root = SVGBackend::new(path, (1100, 420 * rows)).into_drawing_area();
    root.fill(&WHITE)?;
    for (axis, row) in axes.iter().zip(root.split_evenly((axes.len().max(1), 1))) {
        let (left, right) = row.split_horizontally(550);
        let latency = |pick: fn(&Latency) -> &Summary, value: fn(&Summary) -> f64| {
            let mut points: Vec<(f64, f64)> = latencies
                .iter()
                .filter(|l| pick(l).samples > 0)
                .filter_map(|l| Some((axis.x(l.clusters, l.nodes_per_cluster)?, value(pick(l)))))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points
        };
        chart(
            &left,
            "node added -> Peer on every other cluster (ms)",
            *axis,
            &[
                ("p50", latency(|l| &l.node_added, |s| s.p50_ms), BLUE),
                ("p99", latency(|l| &l.node_added, |s| s.p99_ms), RED),
                (
                    "plain-client p99",
                    latency(|l| &l.floor_node_added, |s| s.p99_ms),
                    BLACK,
                ),
            ],
            Some(axis.target_ms()),
        )?;
        let cold = |value: fn(&ColdStart) -> f64| {
            let mut points: Vec<(f64, f64)> = cold_starts
                .iter()
                .filter_map(|c| Some((axis.x(c.clusters, c.nodes_per_cluster)?, value(c))))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points
        };
        chart(
            &right,
            "cold start, every Peer everywhere (s)",
            *axis,
            &[
                ("operator", cold(|c| c.seconds), RED),
                ("plain-client floor", cold(|c| c.floor_seconds), BLACK),
            ],
            None,
        )?;
    }
    root.present()?;
    Ok(())
}

/// One chart of `series` along `axis`, with a dashed `target` line when
/// given. Series without points are left out.
fn chart(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    axis: Axis,
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
        .x_desc(axis.description())
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    if let Some(target) = target {
        let grey = RGBColor(120, 120, 120);
        let line =
            DashedLineSeries::new([(0.0, target), (x_max * 1.05, target)], 6, 4, grey.into());
        chart
            .draw_series(line)?
            .label(format!("target {target:.0}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], grey));
    }
    for (label, points, color) in series.iter().filter(|(_, points, _)| !points.is_empty()) {
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

    fn latency(clusters: usize, nodes: u32, p50_ms: f64, p99_ms: f64) -> Latency {
        let summary = |p50_ms, p99_ms| Summary {
            samples: 100,
            p50_ms,
            p99_ms,
            ..Summary::default()
        };
        Latency {
            clusters,
            nodes_per_cluster: nodes,
            node_added: summary(p50_ms, p99_ms),
            floor_node_added: summary(p50_ms / 2.0, p99_ms / 2.0),
            ..Latency::default()
        }
    }

    fn cold(clusters: usize, nodes: u32, seconds: f64, floor_seconds: f64) -> ColdStart {
        ColdStart {
            clusters,
            nodes_per_cluster: nodes,
            seconds,
            floor_seconds,
            ..ColdStart::default()
        }
    }

    #[test]
    fn a_sweep_of_both_sizes_draws_a_row_for_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.svg");
        draw(
            &[
                cold(3, 100, 1.5, 1.2),
                cold(3, 5000, 75.0, 70.0),
                cold(5, 20, 2.0, 2.0),
                cold(20, 20, 20.0, 21.0),
            ],
            &[
                latency(3, 100, 15.0, 40.0),
                latency(3, 5000, 43.0, 82.0),
                latency(5, 20, 30.0, 50.0),
                latency(20, 20, 130.0, 235.0),
            ],
            &path,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "p50",
            "p99",
            "plain-client p99",
            "target 100",
            "target 150",
            "operator",
            "plain-client floor",
            "nodes per cluster (3 clusters)",
            "clusters (20 nodes each)",
            "5000",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn the_axes_are_the_sizes_that_vary() {
        let sizes = |s: &[(usize, u32)]| s.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(
            axes(&sizes(&[(3, 100), (3, 1000), (20, 20)])),
            [Axis::Nodes { clusters: 3 }]
        );
        assert_eq!(
            axes(&sizes(&[(3, 20), (10, 20), (20, 20)])),
            [Axis::Clusters { nodes: 20 }]
        );
        assert_eq!(axes(&sizes(&[(20, 20)])), [Axis::Nodes { clusters: 20 }]);
        assert_eq!(axes(&BTreeSet::new()), []);
    }

    #[test]
    fn old_results_files_take_their_cluster_count() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.json");
        std::fs::write(
            &old,
            r#"{"cold_start": [{"nodes_per_cluster": 100, "seconds": 1.5}],
                "latency": [{"nodes_per_cluster": 100, "node_added": {"samples": 1, "p50_ms": 9.0}}]}"#,
        )
        .unwrap();
        let new = dir.path().join("new.json");
        std::fs::write(
            &new,
            r#"{"clusters": [5, 20], "cold_start": [{"clusters": 20, "nodes_per_cluster": 20}],
                "latency": []}"#,
        )
        .unwrap();
        let (cold_starts, latencies) = read(&[old, new]).unwrap();
        let sizes: Vec<_> = cold_starts
            .iter()
            .map(|c| (c.clusters, c.nodes_per_cluster))
            .collect();
        assert_eq!(sizes, [(3, 100), (20, 20)]);
        assert_eq!(
            (latencies[0].clusters, latencies[0].node_added.p50_ms),
            (3, 9.0)
        );
    }
}
