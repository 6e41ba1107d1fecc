//! Fixtures shared by the plan tests and the property tests.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses part of it; a panic is the failure report

use std::collections::BTreeMap;

use api::{ClusterEntry, ClusterMeshSpec, SecretKeyRef};
use mesh::{
    ClusterView, MeshIdentity, NodeView, Observation, ObservedPeer, Plan, Settings, applied, plan,
};

pub fn identity() -> MeshIdentity {
    MeshIdentity {
        hub_cluster: "a".into(),
        namespace: "kilo-system".into(),
        name: "mesh".into(),
    }
}

pub fn settings() -> Settings {
    Settings {
        default_persistent_keepalive: Some(25),
        advertise_internal_ips: false,
    }
}

/// Cluster number `k` (1-based) of a test mesh: pods in 10.k.0.0/16,
/// WireGuard in 10.10k.0.0/24 (k < 10), services in 10.20k.0.0/16.
pub fn cluster(name: &str, k: u8, local: bool) -> ClusterEntry {
    ClusterEntry {
        name: name.into(),
        local,
        kubeconfig_secret_ref: (!local).then(|| SecretKeyRef {
            name: format!("{name}-kubeconfig"),
            key: "kubeconfig".into(),
        }),
        pod_cidrs: vec![format!("10.{k}.0.0/16")],
        wireguard_cidr: format!("10.10{k}.0.0/24"),
        service_cidr: Some(format!("10.20{k}.0.0/16")),
        additional_cidrs: vec![],
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
    }
}

/// A valid WireGuard key, distinct per (k, i).
pub fn key(k: u8, i: u8) -> String {
    use base64::Engine;
    let mut bytes = [7u8; 32];
    bytes[0] = k;
    bytes[1] = i;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Node `i` of cluster number `k`, annotated as Kilo annotates it.
pub fn node(k: u8, i: u8) -> NodeView {
    NodeView {
        name: format!("node-{i}"),
        pod_cidrs: vec![format!("10.{k}.{i}.0/24")],
        annotations: BTreeMap::from([
            ("kilo.squat.ai/key".into(), key(k, i)),
            (
                "kilo.squat.ai/endpoint".into(),
                format!("192.0.2.{}:51820", k * 10 + i),
            ),
            (
                "kilo.squat.ai/wireguard-ip".into(),
                format!("10.10{k}.0.{}/24", i + 1),
            ),
            ("kilo.squat.ai/granularity".into(), "full".into()),
        ]),
        ready: true,
    }
}

/// Observations of clusters a, b, c with `n` nodes each and no Peers yet.
pub fn fresh(n: u8) -> BTreeMap<String, Observation> {
    [("a", 1), ("b", 2), ("c", 3)]
        .into_iter()
        .map(|(name, k)| {
            let view = ClusterView {
                nodes: (0..n).map(|i| node(k, i)).collect(),
                peers: vec![],
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
    for _ in 0..5 {
        let plan = plan(spec, &identity(), &settings(), observations);
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
        .map(|v| v.peers.iter().collect())
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
