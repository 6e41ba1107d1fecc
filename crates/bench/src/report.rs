//! The results: a table on stdout and a JSON file with the machine, the
//! versions and the date, under `bench/results/`.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use crate::{
    churn::Churn, cold_start::ColdStart, frozen_remote::FrozenRemote, latency::Latency,
    manual::Manual, stats::Summary,
};

/// Everything one `make bench` measured.
#[derive(Debug, Serialize)]
pub struct Results {
    pub date: String,
    pub machine: Machine,
    pub versions: Versions,
    /// The cluster counts measured, each on a fleet of its own.
    pub clusters: Vec<usize>,
    /// The operator's client settings during the run.
    pub operator_qps: u32,
    pub write_concurrency: usize,
    pub cold_start: Vec<ColdStart>,
    /// One per scale of `--latency-nodes`, smallest first.
    pub latency: Vec<Latency>,
    pub frozen_remote: Option<FrozenRemote>,
    pub churn: Option<Churn>,
    pub manual: Option<ManualComparison>,
}

#[derive(Debug, Serialize)]
pub struct ManualComparison {
    pub manual: Manual,
    pub operator_seconds: f64,
    /// How many times faster the operator is.
    pub speedup: f64,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Versions {
    pub operator: String,
    pub kube_apiserver: String,
    pub etcd: String,
}

impl Machine {
    pub fn this() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_default();
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_default();
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        }
    }
}

impl Results {
    /// The results as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "{} on {} ({} cores, {} GiB), kube-apiserver {}, etcd {}, operator {}\n",
            self.date,
            m.cpu,
            m.cores,
            m.memory_gib,
            self.versions.kube_apiserver,
            self.versions.etcd,
            self.versions.operator
        );
        let _ = writeln!(
            out,
            "Cold start (operator --kube-api-qps={}, --write-concurrency={})",
            self.operator_qps, self.write_concurrency
        );
        let columns = [
            "nodes", "peers", "seconds", "floor s", "ratio", "requests", "req/peer", "writes",
            "passes", "CPU s", "peak MiB",
        ];
        let _ = writeln!(
            out,
            "{}  pass time observe/plan/apply/report (s)",
            columns.map(|c| format!("{c:>9}")).join("")
        );
        for c in &self.cold_start {
            let cells = [
                format!("{}x{}", c.clusters, c.nodes_per_cluster),
                c.peers.to_string(),
                format!("{:.2}", c.seconds),
                format!("{:.2}", c.floor_seconds),
                format!("{:.2}", c.ratio_to_floor),
                c.requests.to_string(),
                format!("{:.3}", c.requests_per_peer),
                c.peer_writes.to_string(),
                c.reconciles.to_string(),
                format!("{:.2}", c.cpu_seconds),
                format!("{:.1}", c.peak_rss_mib),
            ];
            let stages = &c.stage_seconds;
            let _ = writeln!(
                out,
                "{}  {:.2}/{:.2}/{:.2}/{:.2}",
                cells.map(|c| format!("{c:>9}")).join(""),
                stages.observe,
                stages.plan,
                stages.apply,
                stages.report
            );
        }
        if let Some(f) = &self.frozen_remote {
            let _ = writeln!(
                out,
                "\nOne remote frozen (blackholed), {}x{} nodes, {} events: node added on a healthy cluster -> Peer on the other (ms)",
                f.clusters, f.nodes_per_cluster, f.all_healthy.samples
            );
            summaries(
                &mut out,
                &[("all healthy", &f.all_healthy), ("b frozen", &f.one_frozen)],
            );
            let detected = f
                .detected_seconds
                .map_or("not within 120 s".to_owned(), |s| format!("{s:.1} s"));
            let _ = writeln!(out, "b reported unreachable after {detected}");
        }
        for l in &self.latency {
            let _ = writeln!(
                out,
                "\nConvergence latency, {}x{} nodes, {} events (ms)",
                l.clusters, l.nodes_per_cluster, l.node_added.samples
            );
            summaries(
                &mut out,
                &[
                    ("node added -> Peer everywhere", &l.node_added),
                    ("  plain-client floor", &l.floor_node_added),
                    ("node deleted -> Peer gone", &l.node_deleted),
                    ("  plain-client floor", &l.floor_node_deleted),
                ],
            );
            let per_pass = |seconds: f64| seconds * 1e3 / l.passes.max(1.0);
            let _ = writeln!(
                out,
                "{} passes; per pass: observe {:.1} ms, plan {:.1} ms, apply {:.1} ms, report {:.1} ms",
                l.passes,
                per_pass(l.stage_seconds.observe),
                per_pass(l.stage_seconds.plan),
                per_pass(l.stage_seconds.apply),
                per_pass(l.stage_seconds.report)
            );
        }
        if let Some(c) = &self.churn {
            let _ = writeln!(
                out,
                "\nHeartbeat churn, {}x{} nodes, last-seen every {} s for {:.0} s: {} heartbeats\n\
                 Peer writes {}, reconciles {}, requests {}, CPU {:.2} s ({:.0} us per heartbeat), RSS {:.1} MiB (peak {:.1})",
                c.clusters,
                c.nodes_per_cluster,
                c.heartbeat_period_seconds,
                c.seconds,
                c.heartbeats,
                c.peer_writes,
                c.reconciles,
                c.requests,
                c.cpu_seconds,
                c.cpu_us_per_heartbeat,
                c.rss_mib,
                c.peak_rss_mib
            );
        }
        if let Some(m) = &self.manual {
            let _ = writeln!(
                out,
                "\nManual procedure (kubectl stand-in for kgctl), {}x{} nodes: {} pipelines in {:.1} s; operator {:.2} s: {:.0}x faster",
                m.manual.clusters,
                m.manual.nodes_per_cluster,
                m.manual.pipelines,
                m.manual.seconds,
                m.operator_seconds,
                m.speedup
            );
        }
        out
    }

    /// Writes the results as `<dir>/<date>.json`; returns the path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.date.replace(':', "")));
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(path)
    }
}

/// A table of latency summaries in ms, one row per `(label, summary)`.
fn summaries(out: &mut String, rows: &[(&str, &Summary)]) {
    let _ = writeln!(
        out,
        "{:<32} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "", "p50", "p95", "p99", "max", "mean"
    );
    for (what, s) in rows {
        let _ = writeln!(
            out,
            "{what:<32} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.mean_ms
        );
    }
}
