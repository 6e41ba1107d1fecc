//! Fixtures shared by the plan tests and the property tests.
#![allow(dead_code, unused_imports, clippy::unwrap_used)] // each test file uses part of it; a panic is the failure report

use std::{collections::BTreeMap, sync::Arc};

pub use api::fixtures::{cluster_entry as cluster, wireguard_key as key};
use api::{ClusterMeshSpec, PeerPlacement, fixtures::kilo_annotations};
use mesh::{
    ClusterView, Liveness, MeshIdentity, NodeView, Observation, ObservedPeer, Plan, Settings,
    applied, plan,
};

pub fn identity() -> MeshIdentity {
    identity_of("a")
}

/// The identity of mesh kilo-system/mesh as seen from its operator on
/// `local`.
pub fn identity_of(local: &str) -> MeshIdentity {
    MeshIdentity {
        hub_cluster: local.into(),
        namespace: "kilo-system".into(),
        name: "mesh".into(),
    }
}

pub fn settings() -> Settings {
    Settings {
        default_persistent_keepalive: Some(25),
        advertise_internal_ips: false,
        // Nodes without a check-in time are not judged: only those a test
        // makes silent (checked in at 0) are.
        liveness: Some(Liveness {
            now: 1_000_000,
            stale_after_seconds: 90,
        }),
        ..Settings::default()
    }
}

/// Clusters a (local), b and c.
pub fn spec() -> ClusterMeshSpec {
    ClusterMeshSpec {
        clusters: vec![
            cluster("a", 1, true),
            cluster("b", 2, false),
            cluster("c", 3, false),
        ],
        ..Default::default()
    }
}

/// Clusters a, b and c as the ClusterMesh on `local` names them, with
/// `placement`.
pub fn spec_on(local: &str, placement: PeerPlacement) -> ClusterMeshSpec {
    ClusterMeshSpec {
        clusters: [("a", 1), ("b", 2), ("c", 3)]
            .into_iter()
            .map(|(name, k)| cluster(name, k, name == local))
            .collect(),
        peer_placement: placement,
    }
}

/// Node `i` of cluster number `k`, annotated as Kilo annotates it.
pub fn node(k: u8, i: u8) -> NodeView {
    NodeView {
        name: format!("node-{i}"),
        pod_cidrs: vec![format!("10.{k}.{i}.0/24")],
        annotations: kilo_annotations(k, i),
        ready: true,
        ..NodeView::default()
    }
}

/// Observations of clusters a, b, c with `n` nodes each and no Peers yet.
pub fn fresh(n: u8) -> BTreeMap<String, Observation> {
    [("a", 1), ("b", 2), ("c", 3)]
        .into_iter()
        .map(|(name, k)| {
            let view = ClusterView {
                nodes: (0..n).map(|i| Arc::new(node(k, i))).collect(),
                peers: vec![].into(),
                uid: Some(format!("uid-{name}")),
                peers_unknown: false,
            };
            (name.to_owned(), Observation::Observed(view))
        })
        .collect()
}

/// Applies a plan's writes to the observations, as the API servers would.
pub fn apply(observations: &mut BTreeMap<String, Observation>, plan: &Plan) {
    for (cluster, writes) in &plan.writes {
        if let Some(Observation::Observed(view)) = observations.get_mut(cluster) {
            view.peers = applied(view, writes);
        }
    }
}

/// Plans and applies until nothing is left to write (at most 5 passes).
pub fn converge(spec: &ClusterMeshSpec, observations: &mut BTreeMap<String, Observation>) -> Plan {
    converge_as(&identity(), spec, observations)
}

/// [`converge`] for the operator of mesh `identity`.
pub fn converge_as(
    identity: &MeshIdentity,
    spec: &ClusterMeshSpec,
    observations: &mut BTreeMap<String, Observation>,
) -> Plan {
    for _ in 0..5 {
        let plan = plan(spec, identity, &settings(), observations);
        if plan.writes.is_empty() {
            return plan;
        }
        apply(observations, &plan);
    }
    panic!("the plan did not converge in 5 passes");
}

pub fn peers<'a>(
    observations: &'a BTreeMap<String, Observation>,
    cluster: &str,
) -> Vec<&'a ObservedPeer> {
    observations
        .get(cluster)
        .and_then(Observation::view)
        .map(|v| v.peers.iter().map(|p| &**p).collect())
        .unwrap_or_default()
}

pub fn view_mut<'a>(
    observations: &'a mut BTreeMap<String, Observation>,
    cluster: &str,
) -> &'a mut ClusterView {
    match observations.get_mut(cluster) {
        Some(Observation::Observed(view)) => view,
        _ => panic!("cluster {cluster} is not observed"),
    }
}

/// Node `i` of `cluster`'s view, to change (a copy, if a pass shares it).
pub fn node_mut<'a>(
    observations: &'a mut BTreeMap<String, Observation>,
    cluster: &str,
    i: usize,
) -> &'a mut NodeView {
    Arc::make_mut(&mut view_mut(observations, cluster).nodes.make_mut()[i])
}

/// Every node of `cluster`'s view, to change.
pub fn nodes_mut<'a>(
    observations: &'a mut BTreeMap<String, Observation>,
    cluster: &str,
) -> impl Iterator<Item = &'a mut NodeView> {
    view_mut(observations, cluster)
        .nodes
        .make_mut()
        .iter_mut()
        .map(Arc::make_mut)
}

/// The Peer named `name` the plan wants on `target`.
pub fn desired<'a>(plan: &'a Plan, target: &str, name: &str) -> Option<&'a mesh::DesiredPeer> {
    let peers = plan.desired.get(target)?;
    peers.iter().find(|p| p.name == name).map(|p| &**p)
}
