//! Who wrote a Peer, as one mesh sees it: this mesh's operator, another
//! operator of the same mesh (from another of its clusters), nobody any more
//! (released), another mesh, or something else.
//!
//! A mesh's Peers carry [`MESH_LABEL`], a hash of the writing cluster and the
//! mesh's namespace and name. The operators of one decentralized mesh each
//! write from their own cluster, so each has its own label; hashing every
//! cluster of the spec with the mesh's name tells which one wrote a Peer.
//! Who keeps which Peers follows from that (docs/topologies.md):
//! - a cluster's own operator keeps its cluster's Peers of the mesh: it takes
//!   over in place those another operator of the mesh wrote there (a hub,
//!   before the mesh went decentralized);
//! - a hub leaves alone a cluster whose own operator of the mesh writes there;
//! - a released Peer is taken over by whichever operator of the mesh writes
//!   its cluster (the way back from decentralized to a hub);
//! - anything else is never touched.

use std::collections::BTreeMap;

use crate::{
    identity::{
        CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MESH_ANNOTATION, MESH_LABEL, MeshIdentity,
    },
    observe::ObservedPeer,
};

/// [`MESH_LABEL`] of a Peer whose operator let it go when its ClusterMesh
/// was deleted with [`PEERS_ON_DELETE_ANNOTATION`] `release`.
pub const RELEASED: &str = "released";

/// On a ClusterMesh: what its deletion does to its Peers, `delete` (the
/// default) or `release` (left in place for another operator of the same
/// mesh to take over).
pub const PEERS_ON_DELETE_ANNOTATION: &str = "kilo-clustermesh.io/peers-on-delete";

/// Who wrote a Peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Writer {
    /// This mesh's operator.
    This,
    /// The same mesh's operator on another of its clusters (named).
    Sibling(String),
    /// The same mesh, released by the operator that wrote it, for a node of
    /// one of this mesh's clusters.
    Released,
    /// Another kilo-clustermesh-operator mesh (`namespace/name`), written
    /// from `cluster` when that is one of this mesh's clusters.
    OtherMesh {
        mesh: String,
        cluster: Option<String>,
    },
    /// Not written by a kilo-clustermesh-operator.
    Unmanaged,
}

/// Tells the writers of Peers apart for one mesh.
pub struct Writers<'a> {
    label: String,
    annotation: String,
    /// The mesh's clusters, by the [`MESH_LABEL`] their own operator of
    /// this mesh would write.
    siblings: BTreeMap<String, &'a str>,
    clusters: Vec<&'a str>,
}

impl<'a> Writers<'a> {
    /// The writers of `identity`'s mesh, whose clusters are `clusters`.
    pub fn new(identity: &MeshIdentity, clusters: impl IntoIterator<Item = &'a str>) -> Self {
        let clusters: Vec<&str> = clusters.into_iter().collect();
        let siblings = clusters
            .iter()
            .filter(|cluster| **cluster != identity.hub_cluster)
            .map(|cluster| {
                (
                    writing_from(cluster, &identity.namespace, &identity.name),
                    *cluster,
                )
            })
            .collect();
        Self {
            label: identity.label_value(),
            annotation: identity.annotation_value(),
            siblings,
            clusters,
        }
    }

    /// Who wrote `peer`.
    pub fn of(&self, peer: &ObservedPeer) -> Writer {
        let Some(label) = peer.labels.get(MESH_LABEL) else {
            return Writer::Unmanaged;
        };
        if *label == self.label {
            return Writer::This;
        }
        if peer
            .labels
            .get(MANAGED_BY_LABEL)
            .is_none_or(|m| m != MANAGED_BY)
        {
            return Writer::Unmanaged;
        }
        let mesh = peer
            .annotations
            .get(MESH_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        // A mesh of the same name is this one only where the Peer describes
        // a node of one of this mesh's clusters.
        let source = peer.labels.get(CLUSTER_LABEL);
        if mesh == self.annotation && source.is_some_and(|c| self.clusters.contains(&c.as_str())) {
            if label == RELEASED {
                return Writer::Released;
            }
            if let Some(cluster) = self.siblings.get(label) {
                return Writer::Sibling((*cluster).to_owned());
            }
        }
        let cluster = mesh.split_once('/').and_then(|(namespace, name)| {
            self.clusters
                .iter()
                .find(|cluster| writing_from(cluster, namespace, name) == *label)
                .map(|cluster| (*cluster).to_owned())
        });
        Writer::OtherMesh { mesh, cluster }
    }
}

/// [`MESH_LABEL`] of mesh `namespace/name` written from `cluster`.
fn writing_from(cluster: &str, namespace: &str, name: &str) -> String {
    MeshIdentity {
        hub_cluster: cluster.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
    .label_value()
}
