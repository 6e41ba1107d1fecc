//! A ClusterMesh spec as the API server hands it to the operator (JSON),
//! through the spec's checks, CIDR parsing, the conflict finder and the
//! plan. The CRD's schema and CEL rules may be older than the operator, so
//! the operator must stand any spec: each cluster gets two nodes inside its
//! declared ranges, and the plan must pass `kcm_fuzz::invariants`.
#![no_main]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use api::{ClusterMeshSpec, is_dns1123_label};
use ipnet::IpNet;
use kcm_fuzz::invariants::checked_plan;
use libfuzzer_sys::fuzz_target;
use mesh::{ClusterView, NodeView, Observation, Settings, annotation};

/// Node `i` of the `k`th cluster, with its pod CIDRs and WireGuard IP taken
/// from the cluster's declared ranges and a public endpoint.
fn node(entry: &api::ClusterEntry, k: usize, i: u8) -> NodeView {
    let net = |s: &str| s.trim().parse::<IpNet>().ok().map(|n| n.trunc());
    let pod_cidrs = entry
        .pod_cidrs
        .iter()
        .filter_map(|p| net(p))
        .map(|pod| {
            // The i-th subnet one bit longer, where there is one.
            let sub = pod
                .subnets(pod.max_prefix_len().min(pod.prefix_len() + 1))
                .ok();
            let sub = sub.and_then(|mut s| s.nth(usize::from(i))).unwrap_or(pod);
            sub.to_string()
        })
        .collect();
    let mut annotations =
        api::fixtures::kilo_annotations(u8::try_from(k % 20).expect("below 20"), i);
    match net(&entry.wireguard_cidr).and_then(|wg| wg.hosts().nth(usize::from(i))) {
        Some(ip) => annotations.insert(annotation::WIREGUARD_IP.into(), format!("{ip}/32")),
        None => annotations.remove(annotation::WIREGUARD_IP),
    };
    NodeView {
        name: format!("node-{i}"),
        pod_cidrs,
        annotations,
        ready: true,
        created: i64::from(i),
        ..NodeView::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<ClusterMeshSpec>(data) else {
        return;
    };
    let observations: BTreeMap<String, Observation> = spec
        .clusters
        .iter()
        .enumerate()
        .map(|(k, entry)| {
            let view = ClusterView {
                nodes: (0..2).map(|i| Arc::new(node(entry, k, i))).collect(),
                peers: vec![].into(),
                uid: Some(format!("uid-{}", entry.name)),
                peers_unknown: false,
            };
            (entry.name.clone(), Observation::Observed(view))
        })
        .collect();
    let plan = checked_plan(&spec, &Settings::default(), &observations);
    let errors = &plan.report.spec_errors;
    assert!(errors.iter().all(|e| e.field.starts_with("spec.clusters")));
    if errors.is_empty() {
        // What the CRD's rules promise, the operator's checks keep.
        let names: BTreeSet<&str> = spec.clusters.iter().map(|c| c.name.as_str()).collect();
        assert!(spec.clusters.len() >= 2);
        assert_eq!(names.len(), spec.clusters.len(), "names are unique");
        assert!(names.iter().all(|n| is_dns1123_label(n)));
        assert_eq!(spec.clusters.iter().filter(|c| c.local).count(), 1);
        assert!(
            spec.clusters
                .iter()
                .all(|c| c.local || c.kubeconfig_secret_ref.is_some())
        );
    }
});
