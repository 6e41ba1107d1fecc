//! Kubernetes resource types of kilo-clustermesh-operator.
//!
//! - [`ClusterMesh`] (`kilo.squat.ai/v1alpha1`): the resource users write; it
//!   declares the clusters of one mesh and carries their status.
//! - [`Peer`] (`kilo.squat.ai/v1alpha1`): Kilo's own resource, which the
//!   operator writes on every cluster. The type mirrors Kilo's published CRD and
//!   [`PeerSpec::validate`] applies the checks Kilo applies, so the operator
//!   never writes a Peer that Kilo would ignore.
//!
//! This crate does no I/O.

mod cluster_mesh;
mod dns;
#[cfg(feature = "fixtures")]
pub mod fixtures;
mod peer;

pub use cluster_mesh::{
    CLEANUP_FINALIZER, ClusterEntry, ClusterMesh, ClusterMeshSpec, ClusterMeshStatus,
    ClusterStatus, PeerPlacement, PeerWriter, SecretKeyRef, SkippedNode,
};
pub use dns::{is_dns1123_label, is_dns1123_subdomain};
pub use peer::{DnsOrIp, InvalidKey, InvalidPeer, Peer, PeerEndpoint, PeerSpec, WireGuardKey};

/// API group shared by `ClusterMesh` and Kilo's `Peer`.
pub const GROUP: &str = "kilo.squat.ai";
