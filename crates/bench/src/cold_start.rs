//! Cold start at scale: nodes already on every cluster, then the mesh and a
//! fresh operator; timed until every Peer is on every cluster and the mesh
//! is Ready. The floor is a plain client writing the same Peers, the same
//! way (server-side apply, the same concurrency per cluster), to the same
//! API servers: what the API servers and etcd allow.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use api::Peer;
use futures::{StreamExt, TryStreamExt, future::try_join_all, stream};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
};
use serde::{Deserialize, Serialize};

use crate::{
    fleet::Fleet,
    operator::{Operator, Sample, Stages, WRITE_CONCURRENCY},
    watch::Arrivals,
};

/// Longest a cold start may take before the run is given up.
const TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ColdStart {
    /// Clusters of the mesh, and nodes on each.
    pub clusters: usize,
    pub nodes_per_cluster: u32,
    /// Peers written in all, on all clusters.
    pub peers: usize,
    /// Operator started → every Peer present everywhere and Ready=True.
    pub seconds: f64,
    /// The plain client writing the same Peers.
    pub floor_seconds: f64,
    /// `seconds / floor_seconds`.
    pub ratio_to_floor: f64,
    /// Requests the operator sent to all API servers until then.
    pub requests: f64,
    pub requests_per_peer: f64,
    pub peer_writes: f64,
    pub reconciles: f64,
    /// Where the operator's passes spent their time.
    pub stage_seconds: Stages,
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
}

/// Starts the operator (client limit `qps`) on a new mesh `name` and waits
/// for it to converge. Returns the figures so far (no floor yet) and the
/// running operator.
pub async fn run(
    fleet: &Fleet,
    binary: &Path,
    name: &str,
    log: &Path,
    qps: u32,
) -> anyhow::Result<(ColdStart, Operator)> {
    let clusters = fleet.names().len();
    let expected = (clusters - 1) * fleet.node_count() as usize;
    let peers: Vec<Arrivals> = (0..clusters)
        .map(|c| Arrivals::start::<Peer>(fleet.client(c)))
        .collect();
    fleet.create_mesh(name).await?;
    let started = Instant::now();
    let mut operator = Operator::start(binary, fleet.hub_kubeconfig(), name, log, qps)?;
    for (c, watch) in peers.iter().enumerate() {
        if !watch.wait_for(TIMEOUT, |w| w.count() >= expected).await {
            bail!(
                "cluster {} holds {} of {expected} Peers after {TIMEOUT:?}; operator log: {}",
                fleet.names()[c],
                watch.count(),
                log.display()
            );
        }
    }
    let deadline = started + TIMEOUT;
    while !fleet.mesh_ready(name).await? {
        if Instant::now() > deadline {
            bail!("ClusterMesh {name} is not Ready after {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let sample: Sample = operator.sample().await?;
    let peers = clusters * expected;
    let figures = ColdStart {
        clusters: fleet.names().len(),
        nodes_per_cluster: fleet.node_count(),
        peers,
        seconds,
        floor_seconds: 0.0,
        ratio_to_floor: 0.0,
        requests: sample.requests,
        requests_per_peer: sample.requests / peers as f64,
        peer_writes: sample.peer_writes,
        reconciles: sample.reconciles,
        stage_seconds: sample.stages,
        cpu_seconds: sample.cpu_seconds,
        peak_rss_mib: sample.peak_rss_mib,
    };
    Ok((figures, operator))
}

/// Stops the operator, forgets mesh `name` and its Peers, and times a plain
/// client writing the Peers the operator wrote. Leaves those Peers in place
/// (the latency floor starts from them).
pub async fn floor(
    fleet: &Fleet,
    operator: Operator,
    name: &str,
    figures: &mut ColdStart,
) -> anyhow::Result<()> {
    let clusters = fleet.names().len();
    let mut written = Vec::new();
    for c in 0..clusters {
        written.push(
            fleet
                .peers(c)
                .await?
                .into_iter()
                .map(fresh)
                .collect::<Vec<_>>(),
        );
    }
    operator.stop().await?;
    fleet.remove_mesh(name).await?;

    let started = Instant::now();
    try_join_all(
        written
            .into_iter()
            .enumerate()
            .map(|(c, peers)| apply_all(fleet, c, peers)),
    )
    .await?;
    figures.floor_seconds = started.elapsed().as_secs_f64();
    figures.ratio_to_floor = figures.seconds / figures.floor_seconds;
    Ok(())
}

async fn apply_all(fleet: &Fleet, cluster: usize, peers: Vec<Peer>) -> anyhow::Result<()> {
    let api = Api::<Peer>::all(fleet.client(cluster));
    let params = PatchParams::apply("bench-floor").force();
    stream::iter(peers)
        .map(|peer| {
            let (api, params) = (&api, &params);
            async move {
                let name = peer.name_any();
                api.patch(&name, params, &Patch::Apply(&peer))
                    .await
                    .with_context(|| format!("applying Peer {name}"))
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The Peer as a writer would send it: name, labels, annotations, spec.
fn fresh(peer: Peer) -> Peer {
    let meta = peer.meta();
    let mut fresh = Peer::new(&peer.name_any(), peer.spec.clone());
    fresh.metadata = ObjectMeta {
        name: meta.name.clone(),
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        ..ObjectMeta::default()
    };
    fresh
}
