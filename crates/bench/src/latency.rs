//! Convergence latency: a node created on one cluster, until its Peer is
//! on every other cluster; a node deleted, until its Peer is gone from
//! them. Both ends are watch events the harness receives from the API
//! servers, so the delivery delay of a watch is on both sides of the
//! difference.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::Peer;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use serde::Serialize;

use crate::{
    fleet::Fleet,
    operator::{Operator, Stages},
    stats::Summary,
    watch::Arrivals,
};

/// How long one event may take before the run is given up.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub nodes_per_cluster: u32,
    /// Node created → its Peer present on both other clusters.
    pub node_added: Summary,
    /// Node deleted → its Peer gone from both other clusters.
    pub node_deleted: Summary,
    /// The operator's passes meanwhile, and their time per stage.
    pub passes: f64,
    pub stage_seconds: Stages,
}

/// Creates and deletes `events` probe nodes one after the other, round
/// robin over the clusters.
pub async fn run(fleet: &Fleet, operator: &mut Operator, events: usize) -> anyhow::Result<Latency> {
    let clusters = fleet.names().len();
    let nodes: Vec<Arrivals> = (0..clusters)
        .map(|c| Arrivals::start::<Node>(fleet.client(c)))
        .collect();
    let peers: Vec<Arrivals> = (0..clusters)
        .map(|c| Arrivals::start::<Peer>(fleet.client(c)))
        .collect();
    let base = fleet.node_count() as usize;
    for (c, watch) in nodes.iter().enumerate() {
        let listed = watch.wait_for(EVENT_TIMEOUT, |w| w.count() >= base).await
            && peers[c]
                .wait_for(EVENT_TIMEOUT, |w| w.count() >= (clusters - 1) * base)
                .await;
        if !listed {
            bail!(
                "cluster {} did not list its nodes and Peers",
                fleet.names()[c]
            );
        }
    }
    let before = operator.sample().await?;
    let (mut added, mut deleted) = (Vec::new(), Vec::new());
    for event in 0..events {
        let source = event % clusters;
        let name = format!("probe-{event}");
        let peer = format!("{}.{name}", fleet.names()[source]);
        let others: Vec<&Arrivals> = (0..clusters)
            .filter(|c| *c != source)
            .map(|c| &peers[c])
            .collect();
        let index = fleet.node_count() + u32::try_from(event)?;
        let api = Api::<Node>::all(fleet.client(source));
        api.create(
            &PostParams::default(),
            &crate::fleet::node(source, &name, index),
        )
        .await
        .with_context(|| format!("creating node {name}"))?;
        let created = seen(&nodes[source], &name, Arrivals::appeared).await?;
        let present = latest(&others, &peer, Arrivals::appeared).await?;
        added.push(present.saturating_duration_since(created));

        api.delete(&name, &DeleteParams::default()).await?;
        let removed = seen(&nodes[source], &name, Arrivals::disappeared).await?;
        let gone = latest(&others, &peer, Arrivals::disappeared).await?;
        deleted.push(gone.saturating_duration_since(removed));
    }
    let during = operator.sample().await?.since(&before);
    Ok(Latency {
        nodes_per_cluster: fleet.node_count(),
        node_added: Summary::of(&added),
        node_deleted: Summary::of(&deleted),
        passes: during.reconciles,
        stage_seconds: during.stages,
    })
}

/// When `watch` saw `name` do what `when` reads.
async fn seen(
    watch: &Arrivals,
    name: &str,
    when: fn(&Arrivals, &str) -> Option<Instant>,
) -> anyhow::Result<Instant> {
    watch
        .wait_for(EVENT_TIMEOUT, |w| when(w, name).is_some())
        .await;
    when(watch, name).with_context(|| format!("{name}: no watch event within {EVENT_TIMEOUT:?}"))
}

/// The last of the times the `watches` saw `name` do what `when` reads.
async fn latest(
    watches: &[&Arrivals],
    name: &str,
    when: fn(&Arrivals, &str) -> Option<Instant>,
) -> anyhow::Result<Instant> {
    let mut last = None;
    for watch in watches {
        let at = seen(watch, name, when).await?;
        last = last.max(Some(at));
    }
    last.context("no cluster to watch")
}
