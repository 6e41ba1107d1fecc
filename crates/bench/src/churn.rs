//! Steady state under Kilo's heartbeat: every node's
//! `kilo.squat.ai/last-seen` rewritten once per period, as each Kilo agent
//! does, spread evenly over the period. A converged mesh should write
//! nothing and reconcile (next to) never.

use std::time::Duration;

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde::Serialize;

use crate::{
    fleet::{Fleet, unix_now},
    operator::Operator,
};

#[derive(Clone, Debug, Serialize)]
pub struct Churn {
    /// Clusters of the mesh, and nodes on each.
    pub clusters: usize,
    pub nodes_per_cluster: u32,
    pub seconds: f64,
    pub heartbeat_period_seconds: f64,
    /// Node updates the harness sent.
    pub heartbeats: u64,
    /// What the operator did meanwhile.
    pub peer_writes: f64,
    pub reconciles: f64,
    pub requests: f64,
    pub cpu_seconds: f64,
    /// CPU time of the operator per heartbeat, in microseconds.
    pub cpu_us_per_heartbeat: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

/// Sends heartbeats for `duration` and reports what the operator did.
pub async fn run(
    fleet: &Fleet,
    operator: &mut Operator,
    duration: Duration,
    period: Duration,
) -> anyhow::Result<Churn> {
    // Let the passes that convergence triggered settle first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = operator.sample().await?;
    let rounds = (duration.as_secs_f64() / period.as_secs_f64()).ceil() as u32;
    let start = tokio::time::Instant::now();
    let sent =
        try_join_all((0..fleet.names().len()).map(|c| heartbeats(fleet, c, start, rounds, period)))
            .await?;
    let seconds = start.elapsed().as_secs_f64();
    let during = operator.sample().await?.since(&before);
    let heartbeats = sent.iter().sum::<u64>();
    Ok(Churn {
        clusters: fleet.names().len(),
        nodes_per_cluster: fleet.node_count(),
        seconds,
        heartbeat_period_seconds: period.as_secs_f64(),
        heartbeats,
        peer_writes: during.peer_writes,
        reconciles: during.reconciles,
        requests: during.requests,
        cpu_seconds: during.cpu_seconds,
        cpu_us_per_heartbeat: during.cpu_seconds * 1e6 / heartbeats.max(1) as f64,
        rss_mib: during.rss_mib,
        peak_rss_mib: during.peak_rss_mib,
    })
}

/// One cluster's heartbeats: node `i` checks in at `i/N` of each period.
async fn heartbeats(
    fleet: &Fleet,
    cluster: usize,
    start: tokio::time::Instant,
    rounds: u32,
    period: Duration,
) -> anyhow::Result<u64> {
    let api = Api::<Node>::all(fleet.client(cluster));
    let nodes = fleet.node_count();
    let mut sent = 0;
    for round in 0..rounds {
        for i in 0..nodes {
            let offset = period * round + period.mul_f64(f64::from(i) / f64::from(nodes));
            tokio::time::sleep_until(start + offset).await;
            let patch = serde_json::json!({
                "metadata": { "annotations": { "kilo.squat.ai/last-seen": unix_now().to_string() } }
            });
            api.patch(
                &format!("node-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            sent += 1;
        }
    }
    Ok(sent)
}
