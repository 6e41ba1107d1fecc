//! The pure core of the operator: no client, no clock, no I/O.
//!
//! [`plan`] takes a `ClusterMesh` spec and what was observed of each cluster
//! (its nodes and the Peers it holds) and returns a [`Plan`]: the Peers every
//! cluster must hold, the writes that differ from what it holds now, and a
//! [`Report`] from which the status and Events are made. The same inputs give
//! the same plan, byte for byte.
//!
//! Safety rules live here, so they are tested here:
//! - a spec error plans no write at all;
//! - a cluster that could not be read keeps its Peers everywhere;
//! - no range leaves a cluster's declared CIDRs, and a range that overlaps
//!   another cluster's is advertised by neither;
//! - a Peer that this mesh does not own is never touched; one another
//!   operator of the same mesh wrote is taken over only as `writers`
//!   says.

mod anchor;
mod changes;
mod cidr;
mod claims;
mod condition;
mod conflict;
mod endpoint;
mod events;
mod identity;
mod naming;
mod node;
mod observe;
mod plan;
mod segment;
mod spec;
mod status;
mod writers;

pub use cidr::covering;
pub use condition::ConditionType;
pub use conflict::Conflict;
pub use endpoint::{DnsAnswer, DnsAnswers, EndpointDns};
pub use events::{MeshEvent, transitions};
pub use identity::{
    ANCHOR_LABEL, CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MESH_ANNOTATION, MESH_LABEL,
    MeshIdentity, NODE_ANNOTATION,
};
pub use naming::peer_name;
pub use node::{
    KILO_READY_WITHIN_SECONDS, Liveness, REGION_LABEL, SkipReason, annotation, endpoint_name,
};
pub use observe::{ClusterView, NodeView, Observation, ObservedPeer, Shared, Unreachable};
pub use plan::{
    ClusterReport, ClusterWriter, ClusterWrites, DesiredPeer, DesiredPeers, PeerConflict,
    PeerDeletion, PeeredBack, Plan, Planner, Report, Settings, SkippedNode, applied, plan,
};
pub use spec::SpecError;
pub use status::{FailingWrites, MeshCondition, conditions, status};
pub use writers::{PEERS_ON_DELETE_ANNOTATION, RELEASED, Writer};
