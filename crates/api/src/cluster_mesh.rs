//! The `ClusterMesh` resource: the clusters of one Kilo WireGuard mesh.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Finalizer that keeps a `ClusterMesh` until its Peers are removed from every
/// cluster that can be reached.
pub const CLEANUP_FINALIZER: &str = "kilo-clustermesh.io/cleanup";

/// The clusters of one Kilo WireGuard mesh. The operator keeps, on every
/// cluster, one Kilo Peer per eligible node of every other cluster.
// Each printcolumn repeats the same keys, which clippy reads as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kilo.squat.ai",
    version = "v1alpha1",
    kind = "ClusterMesh",
    namespaced,
    status = "ClusterMeshStatus",
    shortname = "cmesh",
    shortname = "cm",
    category = "kilo",
    doc = "A Kilo WireGuard mesh of two or more Kubernetes clusters. Each cluster holds a Kilo Peer for every eligible node of every other cluster.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Clusters",
        type_ = "integer",
        json_path = ".status.clusterCount"
    ),
    printcolumn(
        name = "Peers",
        type_ = "integer",
        json_path = ".status.registeredPeers"
    ),
    printcolumn(
        name = "Skipped",
        type_ = "integer",
        json_path = ".status.skippedNodes"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMeshSpec {
    /// Clusters in this mesh: at least 2, names unique, exactly one with
    /// `local: true` (the cluster the operator runs in).
    #[schemars(length(min = 2, max = 64))]
    #[x_kube(
        validation = Rule::new("self.filter(c, has(c.local) && c.local).size() == 1")
            .message("exactly one entry of spec.clusters must have local: true"),
        validation = Rule::new("self.all(c, self.exists_one(d, d.name == c.name))")
            .message("spec.clusters[].name must be unique within the mesh")
    )]
    pub clusters: Vec<ClusterEntry>,

    /// Where this mesh's operator writes Peers. `AllClusters` (the default):
    /// the operator of the local cluster (the hub) writes them on every
    /// cluster, with a kubeconfig that may write Peers there. `LocalCluster`:
    /// only on the local cluster, for the nodes of every other one, which it
    /// only reads (`kilo-clustermesh-operator connect --read-only`); each
    /// cluster runs its own operator and its own ClusterMesh naming itself
    /// local (a decentralized mesh, docs/topologies.md).
    #[serde(default, skip_serializing_if = "PeerPlacement::is_default")]
    pub peer_placement: PeerPlacement,
}

/// Where a mesh's operator writes Peers: see `spec.peerPlacement`.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
pub enum PeerPlacement {
    /// On every cluster of the mesh, from the hub.
    #[default]
    AllClusters,
    /// On the local cluster only; the others are only read.
    LocalCluster,
}

impl PeerPlacement {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One cluster of the mesh and the address ranges it owns.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.local) && self.local) || has(self.kubeconfigSecretRef)")
    .message("kubeconfigSecretRef is required on every cluster that is not local"))]
pub struct ClusterEntry {
    /// Name of the cluster, unique within the mesh; a DNS-1123 label. It
    /// prefixes the names of the Peers made for the cluster's nodes.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// True for the cluster the operator runs in. Exactly one entry is local.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,

    /// Secret in the ClusterMesh's namespace holding a kubeconfig for this
    /// cluster. Required for every cluster that is not local. Make it with
    /// `kilo-clustermesh-operator connect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,

    /// Pod CIDRs of this cluster (IPv4 and/or IPv6). Every entry of a node's
    /// `spec.podCIDRs` must lie inside one of them, or the node is skipped.
    #[serde(rename = "podCIDRs")]
    #[schemars(length(min = 1, max = 16), inner(length(max = 64)))]
    pub pod_cidrs: Vec<String>,

    /// CIDR of Kilo's WireGuard interface in this cluster (Kilo's `--subnet`).
    /// Each node's `kilo.squat.ai/wireguard-ip` must lie inside it. Kilo's
    /// default, 10.4.0.0/16, is the same in every cluster: give each cluster
    /// its own.
    #[serde(rename = "wireguardCIDR")]
    #[schemars(length(min = 1, max = 64))]
    pub wireguard_cidr: String,

    /// Service CIDR of this cluster. When set, it is routed to one node of the
    /// cluster (the anchor) so its services are reachable from the others.
    #[serde(
        rename = "serviceCIDR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("!self.endsWith('/0')").message(
        "serviceCIDR may not be 0.0.0.0/0 or ::/0: that would route every address into this cluster"
    ))]
    pub service_cidr: Option<String>,

    /// Further CIDRs to route into this cluster through its anchor node
    /// (host-network ranges, external subnets).
    #[serde(
        rename = "additionalCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(length(max = 32), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(c, !c.endsWith('/0'))").message(
        "additionalCIDRs may not hold 0.0.0.0/0 or ::/0: that would route every address into this cluster"
    ))]
    pub additional_cidrs: Vec<String>,
}

/// A key of a Secret in the ClusterMesh's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data whose value is the kubeconfig.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Observed state of a mesh, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMeshStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of clusters in the mesh.
    #[serde(default)]
    pub cluster_count: i32,
    /// Peers the operator keeps, summed over all clusters.
    #[serde(default)]
    pub registered_peers: i32,
    /// Nodes skipped because they cannot be peered, summed over all clusters.
    #[serde(default)]
    pub skipped_nodes: i32,
    /// Per-cluster state, in the order of `spec.clusters`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterStatus>,
    /// `Ready` is True when every cluster was read and every eligible node is
    /// peered everywhere. The other conditions (`CIDRConflict`,
    /// `ClustersUnreachable`, `CredentialsInvalid`, `PeerConflict`,
    /// `NodesSkipped`) are True when there is such a problem and name it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Per-cluster state of a mesh.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Matches `spec.clusters[].name`.
    pub name: String,
    /// Nodes of this cluster the operator sees.
    #[serde(default)]
    pub nodes: i32,
    /// Nodes of this cluster peered on every other cluster.
    #[serde(default)]
    pub registered_peers: i32,
    /// Nodes of this cluster that cannot be peered (see `skipped`).
    #[serde(default)]
    pub skipped_nodes: i32,
    /// The node whose Peer carries this cluster's service and additional CIDRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_node: Option<String>,
    /// False when the cluster could not be read on the last attempt; its last
    /// known Peers are kept everywhere meanwhile.
    #[serde(default)]
    pub reachable: bool,
    /// When the cluster became unreachable; absent while it is reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<Time>,
    /// Last time this cluster's nodes were read and its Peers written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Expiry of the ServiceAccount token in this cluster's kubeconfig, when
    /// the token says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_expire: Option<Time>,
    /// Why the cluster is not fully meshed, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The skipped nodes with their reasons (at most 20 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedNode>,
    /// Who writes this mesh's Peers on the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_writer: Option<PeerWriter>,
    /// Where the cluster's own operator writes its Peers: how many of the
    /// local cluster's peered nodes (its `registeredPeers`) have a Peer
    /// there. Absent when this operator writes them, or may not read the
    /// cluster's Peers (docs/topologies.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peered_back: Option<i32>,
}

/// Who writes a mesh's Peers on one of its clusters.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerWriter {
    /// This ClusterMesh's operator.
    ThisOperator,
    /// The cluster's own operator of the same mesh: with `peerPlacement:
    /// LocalCluster`, or on a hub once that operator took the cluster's
    /// Peers over (docs/topologies.md).
    OwnOperator,
}

/// A node that was not peered, and why.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SkippedNode {
    /// Node name.
    pub name: String,
    /// Machine-readable reason, e.g. `MissingKey`, `PodCIDROutsideCluster`.
    pub reason: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ClusterMeshSpec {
    /// Whether this mesh's operator writes Peers on `cluster`.
    pub fn writes_on(&self, cluster: &ClusterEntry) -> bool {
        self.peer_placement == PeerPlacement::AllClusters || cluster.local
    }

    /// The entry marked `local`, if exactly one is.
    pub fn local_cluster(&self) -> Option<&ClusterEntry> {
        let mut locals = self.clusters.iter().filter(|c| c.local);
        match (locals.next(), locals.next()) {
            (Some(local), None) => Some(local),
            _ => None,
        }
    }
}
