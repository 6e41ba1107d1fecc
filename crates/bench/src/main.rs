//! `make bench`: what the operator costs and how fast it converges, on real
//! API servers, with figures rather than pass/fail. See
//! docs/performance.md for what each figure means and the targets.
//!
//! Control planes from the test kit (three unless `--clusters` says); for each scale, nodes created as
//! API objects on every cluster, then a new ClusterMesh and a fresh
//! operator process (cold start), then on that converged mesh the latency
//! frozen-remote and heartbeat scenarios where their scale comes up, then the floor (a
//! plain client writing the same Peers), then the manual procedure.

mod churn;
mod cold_start;
mod fleet;
mod frozen_remote;
mod latency;
mod manual;
mod operator;
mod plot;
mod report;
mod stats;
mod watch;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use k8s_openapi::jiff::Timestamp;

use crate::{
    fleet::Fleet,
    report::{Machine, ManualComparison, Results, Versions},
};

/// Benchmarks the operator against real API servers and prints the figures.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Clusters of the mesh, each its own control plane; the first is the
    /// hub.
    #[arg(long, default_value_t = 3)]
    clusters: usize,

    /// Nodes per cluster of each cold start, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    nodes: Vec<u32>,

    /// Node add and delete events of the latency scenario (0 skips it).
    #[arg(long, default_value_t = 200)]
    events: usize,

    /// Node additions with every cluster healthy, then as many with one
    /// remote frozen, at `--frozen-nodes` (0 skips the scenario).
    #[arg(long, default_value_t = 50)]
    frozen_events: usize,

    /// Scales (nodes per cluster) at which latency is measured: several
    /// make a curve of latency against size.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    latency_nodes: Vec<u32>,

    /// Scale at which one frozen remote is measured.
    #[arg(long, default_value_t = 100)]
    frozen_nodes: u32,

    /// How long heartbeats are sent (0 skips the churn scenario).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    churn_duration: Duration,

    /// Scale at which heartbeat churn is measured.
    #[arg(long, default_value_t = 1000)]
    churn_nodes: u32,

    /// Kilo's check-in period: each node's last-seen is rewritten this often.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat_period: Duration,

    /// Scale at which the manual procedure is timed (0 skips it).
    #[arg(long, default_value_t = 100)]
    manual_nodes: u32,

    /// The operator's `--kube-api-qps` (its burst is twice that); the
    /// operator's own default is 50.
    #[arg(long, default_value_t = operator::QPS)]
    operator_qps: u32,

    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut scales = args.nodes.clone();
    scales.sort_unstable();
    scales.dedup();
    let binary = operator::binary()?;
    let logs = tempfile::Builder::new()
        .prefix("kcm-bench-")
        .tempdir()?
        .keep();
    eprintln!("bench: operator logs in {}", logs.display());

    let mut fleet = Fleet::start(&binary, args.clusters).await?;
    let size = |nodes: u32| format!("{}x{nodes}", args.clusters);
    let mut results = Results {
        date: Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        machine: Machine::this(),
        versions: versions(&fleet, &binary).await?,
        clusters: args.clusters,
        operator_qps: args.operator_qps,
        write_concurrency: operator::WRITE_CONCURRENCY,
        cold_start: Vec::new(),
        latency: Vec::new(),
        frozen_remote: None,
        churn: None,
        manual: None,
    };
    for &nodes in &scales {
        let grown = std::time::Instant::now();
        fleet.grow_to(nodes).await?;
        eprintln!(
            "bench: {} nodes in place ({:.1} s)",
            size(nodes),
            grown.elapsed().as_secs_f64()
        );
        let mesh = format!("bench-{nodes}");
        let log = logs.join(format!("operator-{nodes}.log"));
        let (mut cold, mut running) =
            cold_start::run(&fleet, &binary, &mesh, &log, args.operator_qps).await?;
        eprintln!("bench: cold start {}: {:.2} s", size(nodes), cold.seconds);
        if args.latency_nodes.contains(&nodes) && args.events > 0 {
            let latency = latency::run(&fleet, &mut running, args.events).await?;
            results.latency.push(latency);
            eprintln!("bench: latency at {} measured", size(nodes));
        }
        // Remote b frozen between healthy a and c.
        if nodes == args.frozen_nodes && args.frozen_events > 0 && args.clusters >= 3 {
            let frozen = frozen_remote::run(&fleet, &mesh, args.frozen_events).await?;
            results.frozen_remote = Some(frozen);
            eprintln!("bench: one frozen remote measured");
        }
        if nodes == args.churn_nodes && !args.churn_duration.is_zero() {
            let churn = churn::run(
                &fleet,
                &mut running,
                args.churn_duration,
                args.heartbeat_period,
            )
            .await?;
            results.churn = Some(churn);
            eprintln!("bench: heartbeat churn measured");
        }
        cold_start::floor(&fleet, running, &mesh, &mut cold).await?;
        eprintln!("bench: floor {}: {:.2} s", size(nodes), cold.floor_seconds);
        if nodes == args.manual_nodes {
            let manual = manual::run(&fleet).await?;
            fleet.delete_all_peers().await?;
            results.manual = Some(ManualComparison {
                speedup: manual.seconds / cold.seconds,
                operator_seconds: cold.seconds,
                manual,
            });
            eprintln!("bench: manual procedure measured");
        }
        results.cold_start.push(cold);
    }
    let latency = args
        .latency_nodes
        .iter()
        .map(|&n| ("latency", n, args.events > 0));
    for (what, scale, wanted) in latency.chain([
        (
            "one frozen remote",
            args.frozen_nodes,
            args.frozen_events > 0,
        ),
        ("churn", args.churn_nodes, !args.churn_duration.is_zero()),
        ("manual", args.manual_nodes, args.manual_nodes > 0),
    ]) {
        if wanted && !scales.contains(&scale) {
            eprintln!("bench: {what} skipped: its scale {scale} is not in --nodes");
        }
    }
    print!("{}", results.table());
    let path = results.write(&args.out)?;
    println!("\nwritten to {}", path.display());
    let curves = path.with_extension("svg");
    plot::curves(&results, &curves)?;
    println!("curves in {}", curves.display());
    Ok(())
}

async fn versions(fleet: &Fleet, binary: &std::path::Path) -> anyhow::Result<Versions> {
    let output = |program: &std::path::Path, arg: &str| {
        std::process::Command::new(program)
            .arg(arg)
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .with_context(|| format!("running {} {arg}", program.display()))
    };
    let apiserver = fleet.client(0).apiserver_version().await?;
    Ok(Versions {
        operator: output(binary, "--version")?,
        kube_apiserver: apiserver.git_version,
        etcd: output(&testkit::tool("etcd")?, "--version")?
            .trim_start_matches("etcd Version: ")
            .to_owned(),
    })
}
