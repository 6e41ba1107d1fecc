//! One remote frozen: a node created on a healthy cluster until its Peer is
//! on the other healthy cluster, with every cluster healthy and then while
//! remote b is blackholed (the test kit's fault proxy in front of its API
//! server: connections open, no answer, as a partition or a frozen API
//! server). The frozen series starts the moment b freezes, so it includes
//! the time before the operator notices.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use api::{ClusterMesh, Peer};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use testkit::{Fault, FaultProxy};

use crate::{fleet::Fleet, stats::Summary, watch::Arrivals};

/// How long one event may take before the run is given up.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The frozen remote, and the two healthy clusters events alternate on.
const FROZEN: usize = 1;
const HEALTHY: [usize; 2] = [0, 2];

#[derive(Clone, Debug, Serialize)]
pub struct FrozenRemote {
    /// Clusters of the mesh, and nodes on each.
    pub clusters: usize,
    pub nodes_per_cluster: u32,
    /// Node created on a or c → its Peer on the other, all healthy.
    pub all_healthy: Summary,
    /// The same from the moment b is blackholed.
    pub one_frozen: Summary,
    /// Seconds from the blackhole to the status saying b is unreachable.
    pub detected_seconds: Option<f64>,
}

/// Runs `events` node additions on the healthy clusters with b healthy, then
/// as many with b blackholed. `mesh` is the converged ClusterMesh.
pub async fn run(fleet: &Fleet, mesh: &str, events: usize) -> anyhow::Result<FrozenRemote> {
    let proxy = FaultProxy::start(fleet.planes[FROZEN].port()).await?;
    let secret = SecretRoute::through(fleet, &proxy).await?;
    let peers: Vec<Arrivals> = HEALTHY
        .iter()
        .map(|c| Arrivals::start::<Peer>(fleet.client(*c)))
        .collect();
    // The operator rebuilds b's client from the changed Secret.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all_healthy = add_nodes(fleet, &peers, "healthy", 0..events).await?;

    proxy.set(Fault::Blackhole);
    let frozen_at = Instant::now();
    let detection = tokio::spawn(detected(fleet.client(0), mesh.to_owned(), frozen_at));
    let one_frozen = add_nodes(fleet, &peers, "frozen", events..2 * events).await?;
    let detected_seconds = detection.await.ok().flatten();

    proxy.set(Fault::Pass);
    secret.restore(fleet).await?;
    Ok(FrozenRemote {
        clusters: fleet.names().len(),
        nodes_per_cluster: fleet.node_count(),
        all_healthy,
        one_frozen,
        detected_seconds,
    })
}

/// Creates and deletes a node per event, alternating between the healthy
/// clusters; the time until each one's Peer is on the other healthy cluster.
/// Events number the nodes after the fleet's, inside the clusters' ranges.
async fn add_nodes(
    fleet: &Fleet,
    peers: &[Arrivals],
    prefix: &str,
    events: std::ops::Range<usize>,
) -> anyhow::Result<Summary> {
    let mut added = Vec::new();
    for event in events {
        let (source, other) = (event % 2, 1 - event % 2);
        let cluster = HEALTHY[source];
        let name = format!("{prefix}-{event}");
        let peer = format!("{}.{name}", fleet.names()[cluster]);
        let index = fleet.node_count() + u32::try_from(event)?;
        let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(fleet.client(cluster));
        let created = Instant::now();
        nodes
            .create(
                &PostParams::default(),
                &crate::fleet::node(cluster, &name, index),
            )
            .await
            .with_context(|| format!("creating node {name}"))?;
        let arrived = peers[other]
            .wait_for(EVENT_TIMEOUT, |w| w.appeared(&peer).is_some())
            .await;
        let Some(at) = peers[other].appeared(&peer).filter(|_| arrived) else {
            bail!("Peer {peer} did not arrive within {EVENT_TIMEOUT:?}");
        };
        added.push(at.saturating_duration_since(created));
        nodes.delete(&name, &DeleteParams::default()).await?;
    }
    Ok(Summary::of(&added))
}

/// Seconds from `since` until the mesh's status says b is unreachable, if
/// within two minutes.
async fn detected(hub: kube::Client, mesh: String, since: Instant) -> Option<f64> {
    let meshes = Api::<ClusterMesh>::namespaced(hub, crate::fleet::NAMESPACE);
    while since.elapsed() < Duration::from_secs(120) {
        let status = meshes.get(&mesh).await.ok()?.status.unwrap_or_default();
        if status
            .clusters
            .iter()
            .any(|c| c.name == "b" && !c.reachable)
        {
            return Some(since.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// b's kubeconfig Secret on the hub, pointed through the proxy, and how to
/// point it back.
struct SecretRoute {
    original: Secret,
}

impl SecretRoute {
    const NAME: &str = "b-kubeconfig";
    const KEY: &str = "kubeconfig";

    async fn through(fleet: &Fleet, proxy: &FaultProxy) -> anyhow::Result<Self> {
        let secrets = Api::<Secret>::namespaced(fleet.client(0), crate::fleet::NAMESPACE);
        let original = secrets.get(Self::NAME).await?;
        let yaml = kubeconfig_of(&original).context("b's Secret has no kubeconfig")?;
        let direct = fleet.planes[FROZEN].server_url();
        let proxied = yaml.replace(&direct, &proxy.url());
        put(&secrets, &proxied).await?;
        Ok(Self { original })
    }

    async fn restore(self, fleet: &Fleet) -> anyhow::Result<()> {
        let secrets = Api::<Secret>::namespaced(fleet.client(0), crate::fleet::NAMESPACE);
        let yaml = kubeconfig_of(&self.original).unwrap_or_default();
        put(&secrets, &yaml).await
    }
}

fn kubeconfig_of(secret: &Secret) -> Option<String> {
    let data = secret.data.as_ref()?.get(SecretRoute::KEY)?;
    Some(String::from_utf8_lossy(&data.0).into_owned())
}

async fn put(secrets: &Api<Secret>, kubeconfig: &str) -> anyhow::Result<()> {
    let patch = serde_json::json!({
        "data": { SecretRoute::KEY: ByteString(kubeconfig.as_bytes().to_vec()) }
    });
    secrets
        .patch(
            SecretRoute::NAME,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}
