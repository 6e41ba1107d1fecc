//! `make bench`: what the operator costs and how fast it converges, on real
//! API servers, with figures rather than pass/fail. See
//! docs/performance.md for what each figure means and the targets.
//!
//! Control planes from the test kit (three unless `--clusters` says; a
//! fleet of its own for each count given); for each scale, nodes created as
//! API objects on every cluster, then a new ClusterMesh and a fresh
//! operator process (cold start), then on that converged mesh the latency,
//! frozen-remote and heartbeat scenarios where their scale comes up, then
//! the floors (a plain client writing the same Peers, and answering the same
//! node changes), then the manual procedure.

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

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use k8s_openapi::jiff::Timestamp;

use crate::{
    fleet::Fleet,
    report::{Machine, ManualComparison, Results, Versions},
};

/// Benchmarks the operator against real API servers and prints the figures.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: Args,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Draws the curves of results files already written into one SVG: a
    /// sweep of nodes per cluster and one of clusters, for instance.
    Plot {
        /// Where the SVG goes.
        #[arg(long)]
        out: PathBuf,
        /// Results files (`bench/results/*.json`).
        #[arg(required = true)]
        results: Vec<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct Args {
    /// Clusters of the mesh, each its own control plane, the first the hub.
    /// Several make a curve: each count gets a fleet of its own, in
    /// increasing order, and the frozen-remote, churn and manual scenarios
    /// run on the first (smallest) one.
    #[arg(long, value_delimiter = ',', default_value = "3")]
    clusters: Vec<usize>,

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
    let Cli { command, args } = Cli::parse();
    if let Some(Command::Plot { out, results }) = command {
        let (cold_starts, latencies) = plot::read(&results)?;
        plot::curves(&cold_starts, &latencies, &out)?;
        println!("curves in {}", out.display());
        return Ok(());
    }
    let mut counts = args.clusters.clone();
    counts.sort_unstable();
    counts.dedup();
    // Before the first fleet: a bad count would otherwise end the run late.
    for &count in &counts {
        fleet::check_size(count)?;
    }
    let binary = operator::binary()?;
    let logs = tempfile::Builder::new()
        .prefix("kcm-bench-")
        .tempdir()?
        .keep();
    eprintln!("bench: operator logs in {}", logs.display());

    let mut results = Results {
        date: Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        machine: Machine::this(),
        versions: Versions::default(),
        clusters: counts.clone(),
        operator_qps: args.operator_qps,
        write_concurrency: operator::WRITE_CONCURRENCY,
        cold_start: Vec::new(),
        latency: Vec::new(),
        frozen_remote: None,
        churn: None,
        manual: None,
    };
    let run = Run {
        args: &args,
        binary: &binary,
        logs: &logs,
    };
    for (i, &clusters) in counts.iter().enumerate() {
        let mut fleet = Fleet::start(&binary, clusters).await?;
        if i == 0 {
            results.versions = versions(&fleet, &binary).await?;
        }
        run.measure(&mut fleet, i == 0, &mut results).await?;
    }
    run.report_skipped(&counts);
    print!("{}", results.table());
    let path = results.write(&args.out)?;
    println!("\nwritten to {}", path.display());
    let curves = path.with_extension("svg");
    plot::curves(&results.cold_start, &results.latency, &curves)?;
    println!("curves in {}", curves.display());
    Ok(())
}

/// One `make bench`: its arguments, the operator binary, where its logs go.
struct Run<'a> {
    args: &'a Args,
    binary: &'a Path,
    logs: &'a Path,
}

impl Run<'_> {
    /// Every scale of `--nodes` on one fleet; the frozen-remote, churn and
    /// manual scenarios too when `scenarios` (the first fleet).
    async fn measure(
        &self,
        fleet: &mut Fleet,
        scenarios: bool,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let args = self.args;
        let clusters = fleet.names().len();
        let size = |nodes: u32| format!("{clusters}x{nodes}");
        let mut scales = args.nodes.clone();
        scales.sort_unstable();
        scales.dedup();
        for nodes in scales {
            let grown = std::time::Instant::now();
            fleet.grow_to(nodes).await?;
            eprintln!(
                "bench: {} nodes in place ({:.1} s)",
                size(nodes),
                grown.elapsed().as_secs_f64()
            );
            let mesh = format!("bench-{nodes}");
            let log = self.logs.join(format!("operator-{}.log", size(nodes)));
            let (mut cold, mut running) =
                cold_start::run(fleet, self.binary, &mesh, &log, args.operator_qps).await?;
            eprintln!("bench: cold start {}: {:.2} s", size(nodes), cold.seconds);
            let mut latency = None;
            if args.latency_nodes.contains(&nodes) && args.events > 0 {
                latency = Some(latency::run(fleet, &mut running, args.events).await?);
                eprintln!("bench: latency at {} measured", size(nodes));
            }
            // Remote b frozen between healthy a and c.
            if scenarios && nodes == args.frozen_nodes && args.frozen_events > 0 && clusters >= 3 {
                let frozen = frozen_remote::run(fleet, &mesh, args.frozen_events).await?;
                results.frozen_remote = Some(frozen);
                eprintln!("bench: one frozen remote measured");
            }
            if scenarios && nodes == args.churn_nodes && !args.churn_duration.is_zero() {
                let churn = churn::run(
                    fleet,
                    &mut running,
                    args.churn_duration,
                    args.heartbeat_period,
                )
                .await?;
                results.churn = Some(churn);
                eprintln!("bench: heartbeat churn measured");
            }
            cold_start::floor(fleet, running, &mesh, &mut cold).await?;
            eprintln!("bench: floor {}: {:.2} s", size(nodes), cold.floor_seconds);
            if let Some(mut latency) = latency {
                latency::floor(fleet, args.events, &mut latency).await?;
                eprintln!("bench: latency floor at {} measured", size(nodes));
                results.latency.push(latency);
            }
            fleet.delete_all_peers().await?;
            if scenarios && nodes == args.manual_nodes {
                let manual = manual::run(fleet).await?;
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
        Ok(())
    }

    /// Says which scenario asked for a scale the run did not measure.
    fn report_skipped(&self, counts: &[usize]) {
        let args = self.args;
        let latency = args
            .latency_nodes
            .iter()
            .map(|&n| ("latency", n, args.events > 0));
        let first_fleet = counts.first().copied().unwrap_or_default();
        for (what, scale, wanted) in latency.chain([
            (
                "one frozen remote",
                args.frozen_nodes,
                args.frozen_events > 0 && first_fleet >= 3,
            ),
            ("churn", args.churn_nodes, !args.churn_duration.is_zero()),
            ("manual", args.manual_nodes, args.manual_nodes > 0),
        ]) {
            if wanted && !args.nodes.contains(&scale) {
                eprintln!("bench: {what} skipped: its scale {scale} is not in --nodes");
            }
        }
    }
}

async fn versions(fleet: &Fleet, binary: &Path) -> anyhow::Result<Versions> {
    let output = |program: &Path, arg: &str| {
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
