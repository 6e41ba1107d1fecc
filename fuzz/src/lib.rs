//! What the fuzz targets share: a small text format for a world of nodes
//! and Peers ([`scenario`]) and the checks every plan must pass
//! ([`invariants`]).
//!
//! A panic is how a fuzz target reports a failure, so the harness asserts
//! freely; the code under test must not panic on any input.

pub mod invariants;
pub mod scenario;

use std::sync::LazyLock;

use api::{ClusterEntry, ClusterMeshSpec};
use mesh::MeshIdentity;

/// The identity of the mesh every target plans.
pub fn identity() -> MeshIdentity {
    MeshIdentity {
        hub_cluster: "a".into(),
        namespace: "kilo-system".into(),
        name: "mesh".into(),
    }
}

/// Three clusters, dual-stack, with service and additional ranges; c's
/// additional range overlaps b's, so both are blocked as a conflict.
pub fn mesh_spec() -> &'static ClusterMeshSpec {
    static SPEC: LazyLock<ClusterMeshSpec> = LazyLock::new(spec);
    &SPEC
}

fn spec() -> ClusterMeshSpec {
    let entry = |name: &str, k: u8, local: bool, additional: &[&str]| ClusterEntry {
        pod_cidrs: vec![format!("10.{k}.0.0/16"), format!("fd00:{k}::/48")],
        additional_cidrs: additional.iter().map(|c| (*c).to_owned()).collect(),
        ..api::fixtures::cluster_entry(name, k, local)
    };
    let mut c = entry("c", 3, false, &["192.168.2.128/25"]);
    c.service_cidr = None;
    let clusters = [
        entry("a", 1, true, &["192.168.1.0/24"]),
        entry("b", 2, false, &["192.168.2.0/24", "2001:db8:2::/48"]),
        c,
    ];
    // Through JSON, as the API server hands a spec over: every other field
    // takes its default.
    serde_json::from_value(serde_json::json!({ "clusters": clusters }))
        .expect("the fixed spec deserializes")
}
