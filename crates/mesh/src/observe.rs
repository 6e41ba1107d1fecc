//! What the plan is fed: each cluster's nodes and Peers, stripped to plain
//! data by the controller.

use std::{collections::BTreeMap, ops::Deref, sync::Arc};

use api::PeerSpec;

/// A node, reduced to what peering reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// `spec.podCIDRs`, else `[spec.podCIDR]`.
    pub pod_cidrs: Vec<String>,
    /// The node's `kilo.squat.ai/*` annotations.
    pub annotations: BTreeMap<String, String>,
    /// The node's Ready condition is True.
    pub ready: bool,
    /// When the node object was created (Unix seconds; 0 when unknown):
    /// of two nodes that claim one key or range, the older keeps it.
    pub created: i64,
    /// Its `topology.kubernetes.io/region` label: Kilo's location when the
    /// node has no `kilo.squat.ai/location` annotation.
    pub region: Option<String>,
    /// When its Kilo agent last checked in, as far as the operator can tell
    /// (Unix seconds): `kilo.squat.ai/last-seen`, but never earlier than
    /// when the operator last started seeing the cluster, since an agent
    /// cannot check in while its API server is unreachable. `None` when
    /// the node has no `last-seen`.
    pub checked_in: Option<i64>,
}

impl NodeView {
    /// Whether `other` is this node, changed at most in its check-in time:
    /// a Kilo heartbeat, which changes nothing a node's check reads.
    pub fn same_but_check_in(&self, other: &NodeView) -> bool {
        let Self {
            name,
            pod_cidrs,
            annotations,
            ready,
            created,
            region,
            checked_in: _,
        } = self;
        *name == other.name
            && *pod_cidrs == other.pod_cidrs
            && *annotations == other.annotations
            && *ready == other.ready
            && *created == other.created
            && *region == other.region
    }
}

/// A Peer as found on a cluster: any Peer this mesh owns, and any other whose
/// name the mesh would use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPeer {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: PeerSpec,
    /// The object's uid and resourceVersion, when it was read from a
    /// cluster: a deletion is made conditional on them.
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// A list of shared objects, itself shared: the operator's caches hand
/// every pass the same list until one of its objects changes, so a pass
/// copies no list, and one that finds the list it saw before knows nothing
/// in it changed.
#[derive(Debug, PartialEq, Eq)]
pub struct Shared<T>(Arc<Vec<Arc<T>>>);

impl<T> Shared<T> {
    /// The list, to change (copied first if it is shared).
    pub fn make_mut(&mut self) -> &mut Vec<Arc<T>> {
        Arc::make_mut(&mut self.0)
    }

    /// Whether `other` is this very list.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Shared<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T> Deref for Shared<T> {
    type Target = [Arc<T>];

    fn deref(&self) -> &[Arc<T>] {
        &self.0
    }
}

impl<T> From<Vec<Arc<T>>> for Shared<T> {
    fn from(list: Vec<Arc<T>>) -> Self {
        Self(Arc::new(list))
    }
}

impl<T> FromIterator<Arc<T>> for Shared<T> {
    fn from_iter<I: IntoIterator<Item = Arc<T>>>(iter: I) -> Self {
        Self(Arc::new(iter.into_iter().collect()))
    }
}

impl<'a, T> IntoIterator for &'a Shared<T> {
    type Item = &'a Arc<T>;
    type IntoIter = std::slice::Iter<'a, Arc<T>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// What was read of one cluster. Nodes and Peers are shared with the
/// caches they come from (and between passes), never copied: a pass that
/// finds the same `Arc` as the last one knows the object did not change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// By name.
    pub nodes: Shared<NodeView>,
    /// By name.
    pub peers: Shared<ObservedPeer>,
    /// What identifies the cluster (the uid of its `kube-system`
    /// namespace), when it could be read: two entries with the same one
    /// reach the same cluster.
    pub uid: Option<String>,
    /// True when this mesh only reads the cluster and may not read its
    /// Peers (or has not yet): `peers` is then empty for want of knowing.
    /// On such a cluster `peers` holds only the Peers' metadata.
    pub peers_unknown: bool,
}

/// Why a cluster could not be read this time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// Its kubeconfig Secret is missing, unusable or refused.
    Credentials(String),
    /// Its API server does not answer or refuses the operator.
    Connection(String),
    /// Its watches have not listed it yet.
    Syncing,
}

/// One cluster's observation for a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Read successfully; the view is current.
    Observed(ClusterView),
    /// Not readable now. `last_known` is what was read before, if anything;
    /// it is used for counting only: nothing is written from it.
    Unreachable {
        cause: Unreachable,
        last_known: Option<ClusterView>,
    },
}

impl Observation {
    /// The nodes and Peers, current or last known.
    pub fn view(&self) -> Option<&ClusterView> {
        match self {
            Self::Observed(view) => Some(view),
            Self::Unreachable { last_known, .. } => last_known.as_ref(),
        }
    }

    pub fn is_observed(&self) -> bool {
        matches!(self, Self::Observed(_))
    }
}
