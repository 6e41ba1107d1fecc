//! Observe, the part a pass does: turns the watched clusters' caches into
//! the plain inputs of `mesh::plan`.

use std::sync::Arc;

use api::{ClusterMesh, Peer};
use k8s_openapi::{api::core::v1::Node, apimachinery::pkg::apis::meta::v1::Time};
use kube::ResourceExt;
use mesh::{ClusterView, MeshIdentity, NodeView, Observation, ObservedPeer, Shared, Unreachable};

use crate::{
    clusters::{Reads, WatchedCluster},
    probe::Census,
    writer::Outcome,
};

/// A cluster of a mesh as this pass sees it.
pub enum Resolved {
    /// Watched, with the expiry of its credentials when known.
    Watched {
        cluster: Arc<WatchedCluster>,
        credentials_expire: Option<Time>,
    },
    /// Its credentials cannot be used; the message says why and what to fix.
    Unusable(String),
}

/// The identity of a mesh: hub cluster, namespace, name.
pub fn identity(mesh: &ClusterMesh) -> MeshIdentity {
    MeshIdentity {
        hub_cluster: mesh
            .spec
            .local_cluster()
            .map(|c| c.name.clone())
            .unwrap_or_default(),
        namespace: mesh.namespace().unwrap_or_default(),
        name: mesh.name_any(),
    }
}

/// What the plan gets of one cluster.
pub fn observation(resolved: &Resolved) -> Observation {
    let cluster = match resolved {
        Resolved::Watched { cluster, .. } => cluster,
        Resolved::Unusable(why) => {
            return Observation::Unreachable {
                cause: Unreachable::Credentials(why.clone()),
                last_known: None,
            };
        }
    };
    let health = cluster.health();
    let view = || {
        let (peers, peers_unknown) = match cluster.reads {
            Reads::NodesAndPeers => (cluster.views.peers(), false),
            Reads::Nodes => match cluster.census() {
                Census::Read(peers) => (peers, false),
                Census::NotYet | Census::Forbidden => (Shared::default(), true),
            },
        };
        ClusterView {
            uid: cluster.uid(),
            nodes: cluster.views.nodes(health.seeing_since),
            peers,
            peers_unknown,
        }
    };
    match (health.synced, health.reachable) {
        (true, true) => Observation::Observed(view()),
        (synced, false) => {
            let why = health.error.unwrap_or_default();
            Observation::Unreachable {
                cause: match health.credentials_refused {
                    true => Unreachable::Credentials(why),
                    false => Unreachable::Connection(why),
                },
                last_known: synced.then(view),
            }
        }
        (false, true) => Observation::Unreachable {
            cause: Unreachable::Syncing,
            last_known: None,
        },
    }
}

/// When a cluster became unreachable, when its credentials expire, and what
/// its writer did.
#[derive(Clone, Debug, Default)]
pub struct ClusterHealth {
    pub unreachable_since: Option<Time>,
    pub credentials_expire: Option<Time>,
    pub writes: Outcome,
}

pub fn health(resolved: &Resolved, writes: Outcome) -> ClusterHealth {
    match resolved {
        Resolved::Watched {
            cluster,
            credentials_expire,
        } => ClusterHealth {
            unreachable_since: cluster.health().unreachable_since,
            credentials_expire: credentials_expire.clone(),
            writes,
        },
        Resolved::Unusable(_) => ClusterHealth::default(),
    }
}

/// Kilo's last check-in on a node (`kilo.squat.ai/last-seen`).
pub fn last_seen(node: &Node) -> Option<i64> {
    node.annotations()
        .get(mesh::annotation::LAST_SEEN)?
        .trim()
        .parse()
        .ok()
}

/// A node as the plan reads it; its check-in is never earlier than
/// `seeing_since` (see [`crate::clusters::Health::seeing_since`]), and its
/// annotations leave `last-seen` out: a heartbeat changes the check-in time
/// only.
pub fn node_view(node: &Node, seeing_since: i64) -> NodeView {
    let spec = node.spec.as_ref();
    let pod_cidrs = spec
        .and_then(|s| s.pod_cidrs.clone())
        .filter(|cidrs| !cidrs.is_empty())
        .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|cidr| vec![cidr]))
        .unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    NodeView {
        name: node.name_any(),
        pod_cidrs,
        annotations: node
            .annotations()
            .iter()
            .filter(|(key, _)| *key != mesh::annotation::LAST_SEEN)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        ready,
        created: node
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
        region: node.labels().get(mesh::REGION_LABEL).cloned(),
        checked_in: last_seen(node).map(|seen| seen.max(seeing_since)),
    }
}

/// A Peer as the plan reads it.
pub fn observed_peer(peer: &Peer) -> ObservedPeer {
    ObservedPeer {
        name: peer.name_any(),
        labels: peer.labels().clone(),
        annotations: peer.annotations().clone(),
        spec: peer.spec.clone(),
        uid: peer.uid(),
        resource_version: peer.resource_version(),
    }
}
