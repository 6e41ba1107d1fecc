//! Test fixtures shared by every crate's tests (feature `fixtures`): one
//! numbering of test clusters, keys and nodes, so tests read alike.

use base64::{Engine, engine::general_purpose::STANDARD};

use crate::{ClusterEntry, SecretKeyRef};

/// Entry `k` (1-based, below 10) of a test mesh: pods in `10.k.0.0/16`,
/// WireGuard in `10.10k.0.0/24`, services in `10.20k.0.0/16`; a remote's
/// kubeconfig in Secret `<name>-kubeconfig`, key `kubeconfig`.
pub fn cluster_entry(name: &str, k: u8, local: bool) -> ClusterEntry {
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

/// A valid WireGuard public key, distinct for each (k, i).
pub fn wireguard_key(k: u8, i: u8) -> String {
    let mut bytes = [9u8; 32];
    bytes[0] = k;
    bytes[1] = i;
    STANDARD.encode(bytes)
}

/// Kilo's annotations on node `i` of cluster `k`: key, endpoint
/// `192.0.2.<10k+i>:51820`, WireGuard IP `10.10k.0.<i+1>/24`, full granularity.
pub fn kilo_annotations(k: u8, i: u8) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        ("kilo.squat.ai/key".into(), wireguard_key(k, i)),
        (
            "kilo.squat.ai/endpoint".into(),
            format!("192.0.2.{}:51820", k * 10 + i),
        ),
        (
            "kilo.squat.ai/wireguard-ip".into(),
            format!("10.10{k}.0.{}/24", i + 1),
        ),
        ("kilo.squat.ai/granularity".into(), "full".into()),
    ])
}

/// A Ready node `name` with these annotations and `spec.podCIDRs`.
pub fn ready_node(
    name: &str,
    annotations: std::collections::BTreeMap<String, String>,
    pod_cidrs: Vec<String>,
) -> k8s_openapi::api::core::v1::Node {
    use k8s_openapi::{
        api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidrs: Some(pod_cidrs),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}
