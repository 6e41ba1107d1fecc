//! Convergence latency: a node created on one cluster, until its Peer is
//! on every other cluster; a node deleted, until its Peer is gone from
//! them. Both ends are watch events the harness receives from the API
//! servers, so the delivery delay of a watch is on both sides of the
//! difference.
//!
//! The floor is the same events answered by a plain client that writes (or
//! deletes) the node's Peer on every other cluster at once, as soon as the
//! harness sees the node change: what the API servers allow for one change.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::Peer;
use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde::{Deserialize, Serialize};

use crate::{
    fleet::Fleet,
    operator::{Operator, Stages},
    stats::Summary,
    watch::Arrivals,
};

/// How long one event may take before the run is given up.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Latency {
    /// Clusters of the mesh, and nodes on each.
    pub clusters: usize,
    pub nodes_per_cluster: u32,
    /// Node created → its Peer present on every other cluster.
    pub node_added: Summary,
    /// Node deleted → its Peer gone from every other cluster.
    pub node_deleted: Summary,
    /// The operator's passes meanwhile, and their time per stage.
    pub passes: f64,
    pub stage_seconds: Stages,
    /// The same events answered by a plain client (see [`floor`]).
    pub floor_node_added: Summary,
    pub floor_node_deleted: Summary,
}

/// Creates and deletes `events` probe nodes one after the other, round
/// robin over the clusters, and times the running operator's answer.
pub async fn run(fleet: &Fleet, operator: &mut Operator, events: usize) -> anyhow::Result<Latency> {
    let probes = Probes::start(fleet).await?;
    let before = operator.sample().await?;
    let (added, deleted) = probes
        .time(fleet, "probe", events, &Answer::Operator)
        .await?;
    let during = operator.sample().await?.since(&before);
    Ok(Latency {
        clusters: fleet.names().len(),
        nodes_per_cluster: fleet.node_count(),
        node_added: Summary::of(&added),
        node_deleted: Summary::of(&deleted),
        passes: during.reconciles,
        stage_seconds: during.stages,
        ..Latency::default()
    })
}

/// Times the same `events` answered by a plain client, with the operator
/// stopped and the converged mesh's Peers in place (as the cold start's
/// floor leaves them). Each Peer it writes is a copy of one the cluster
/// holds, renamed for the probe node. Leaves its probe Peers deleted.
pub async fn floor(fleet: &Fleet, events: usize, latency: &mut Latency) -> anyhow::Result<()> {
    let mut templates = Vec::new();
    for c in 0..fleet.names().len() {
        let peer = fleet.peers(c).await?.into_iter().next();
        templates.push(
            peer.with_context(|| format!("cluster {} holds no Peer to copy", fleet.names()[c]))?,
        );
    }
    let probes = Probes::start(fleet).await?;
    let answer = Answer::PlainClient(templates);
    let (added, deleted) = probes.time(fleet, "floor", events, &answer).await?;
    latency.floor_node_added = Summary::of(&added);
    latency.floor_node_deleted = Summary::of(&deleted);
    Ok(())
}

/// Who writes a probe node's Peers.
enum Answer {
    /// The operator under test: the harness only watches.
    Operator,
    /// The harness itself, copying the Peer each cluster holds (one per
    /// cluster, in cluster order).
    PlainClient(Vec<Peer>),
}

impl Answer {
    /// Writes (`present`) or deletes Peer `name` on every cluster of
    /// `others` at once.
    async fn answer(
        &self,
        fleet: &Fleet,
        others: &[usize],
        name: &str,
        present: bool,
    ) -> anyhow::Result<()> {
        let Self::PlainClient(templates) = self else {
            return Ok(());
        };
        let params = PatchParams::apply("bench-floor").force();
        try_join_all(others.iter().map(|&c| {
            let api = Api::<Peer>::all(fleet.client(c));
            let mut peer = Peer::new(name, templates[c].spec.clone());
            peer.metadata.labels = templates[c].metadata.labels.clone();
            peer.metadata.annotations = templates[c].metadata.annotations.clone();
            let params = &params;
            async move {
                if present {
                    api.patch(name, params, &Patch::Apply(&peer)).await?;
                } else {
                    api.delete(name, &DeleteParams::default()).await?;
                }
                anyhow::Ok(())
            }
        }))
        .await
        .with_context(|| format!("writing Peer {name}"))?;
        Ok(())
    }
}

/// Watches of every cluster's Nodes and Peers, listed.
struct Probes {
    nodes: Vec<Arrivals>,
    peers: Vec<Arrivals>,
}

impl Probes {
    /// Starts the watches and waits until they list the fleet's nodes and
    /// the converged mesh's Peers.
    async fn start(fleet: &Fleet) -> anyhow::Result<Self> {
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
        Ok(Self { nodes, peers })
    }

    /// Creates and deletes `events` nodes named `<prefix>-<n>`, one after
    /// the other, round robin over the clusters; `answer` writes their
    /// Peers. Returns the add and delete latencies.
    async fn time(
        &self,
        fleet: &Fleet,
        prefix: &str,
        events: usize,
        answer: &Answer,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let clusters = fleet.names().len();
        let (mut added, mut deleted) = (Vec::new(), Vec::new());
        for event in 0..events {
            let source = event % clusters;
            let name = format!("{prefix}-{event}");
            let peer = format!("{}.{name}", fleet.names()[source]);
            let others: Vec<usize> = (0..clusters).filter(|c| *c != source).collect();
            let watches: Vec<&Arrivals> = others.iter().map(|&c| &self.peers[c]).collect();
            let index = fleet.node_count() + u32::try_from(event)?;
            let api = Api::<Node>::all(fleet.client(source));
            api.create(
                &PostParams::default(),
                &crate::fleet::node(source, &name, index),
            )
            .await
            .with_context(|| format!("creating node {name}"))?;
            let created = seen(&self.nodes[source], &name, Arrivals::appeared).await?;
            answer.answer(fleet, &others, &peer, true).await?;
            let present = latest(&watches, &peer, Arrivals::appeared).await?;
            added.push(present.saturating_duration_since(created));

            api.delete(&name, &DeleteParams::default()).await?;
            let removed = seen(&self.nodes[source], &name, Arrivals::disappeared).await?;
            answer.answer(fleet, &others, &peer, false).await?;
            let gone = latest(&watches, &peer, Arrivals::disappeared).await?;
            deleted.push(gone.saturating_duration_since(removed));
        }
        Ok((added, deleted))
    }
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
