//! What every plan must satisfy, whatever the nodes, Peers and spec it was
//! planned from: the safety rules of `mesh` (see its crate docs) checked
//! from the outside.

use std::collections::{BTreeMap, BTreeSet};

use api::{ClusterMeshSpec, is_dns1123_subdomain};
use ipnet::IpNet;
use mesh::{CLUSTER_LABEL, MESH_LABEL, NODE_ANNOTATION, Observation, Plan, Settings};

/// Plans `observations` under `spec` and checks the plan: the same inputs
/// give the same plan; a spec error writes nothing; every desired Peer
/// passes Kilo's checks and routes only its source cluster's declared
/// ranges; no two Peers of a cluster share a key or a range; nothing is
/// written to an unreachable cluster, no foreign Peer is touched, and no
/// Peer of an unreachable cluster's nodes is deleted; applying the writes
/// pass after pass comes to a plan that writes nothing.
pub fn checked_plan(
    spec: &ClusterMeshSpec,
    settings: &Settings,
    observations: &BTreeMap<String, Observation>,
) -> Plan {
    let identity = crate::identity();
    let plan = mesh::plan(spec, &identity, settings, observations);
    let again = mesh::plan(spec, &identity, settings, observations);
    assert_eq!(plan, again, "the same inputs gave two plans");
    if !plan.report.spec_errors.is_empty() {
        assert!(plan.writes.is_empty(), "a spec error planned writes");
        assert!(plan.desired.is_empty(), "a spec error planned Peers");
        return plan;
    }
    let mesh = identity.label_value();
    for (cluster, peers) in &plan.desired {
        desired_peers_are_sound(spec, cluster, peers);
    }
    for (cluster, writes) in &plan.writes {
        let Some(Observation::Observed(view)) = observations.get(cluster) else {
            panic!("writes planned for {cluster}, which could not be read");
        };
        let observed: BTreeMap<&str, _> = view.peers.iter().map(|p| (p.name.as_str(), p)).collect();
        let owned = |name: &str| {
            observed
                .get(name)
                .is_none_or(|p| p.labels.get(MESH_LABEL) == Some(&mesh))
        };
        for peer in &writes.apply {
            assert!(
                owned(&peer.name),
                "{cluster}: foreign Peer {} overwritten",
                peer.name
            );
            assert_eq!(
                plan.desired[cluster].get(&peer.name),
                Some(peer),
                "{cluster}: a write that is not the desired Peer"
            );
        }
        for deletion in &writes.delete {
            let peer = observed.get(deletion.name.as_str());
            let peer =
                peer.unwrap_or_else(|| panic!("{cluster}: deletes unseen {}", deletion.name));
            assert!(
                owned(&deletion.name),
                "{cluster}: foreign Peer {} deleted",
                peer.name
            );
            assert_eq!(deletion.uid, peer.uid, "the deletion is not preconditioned");
            let source = peer.labels.get(CLUSTER_LABEL).map(String::as_str);
            let source_down = source.is_some_and(|s| {
                spec.clusters.iter().any(|c| c.name == s)
                    && observations.get(s).is_none_or(|o| !o.is_observed())
            });
            assert!(
                !source_down,
                "{cluster}: {} deleted while its cluster is unreachable",
                peer.name
            );
        }
    }
    converges(spec, settings, observations.clone(), &plan);
    plan
}

/// Applies `plan`'s writes as the API servers would and plans again, until
/// a plan writes nothing. One pass is the rule; a second is needed when the
/// anchor was kept for a Peer the first pass deleted and the anchor's own
/// Peer could not be written (a foreign Peer holds its name): the anchor
/// then moves once.
fn converges(
    spec: &ClusterMeshSpec,
    settings: &Settings,
    mut observations: BTreeMap<String, Observation>,
    plan: &Plan,
) {
    const PASSES: usize = 3;
    let mut writes = plan.writes.clone();
    for _ in 0..PASSES {
        for (cluster, writes) in &writes {
            if let Some(Observation::Observed(view)) = observations.get_mut(cluster) {
                view.peers = mesh::applied(view, writes);
            }
        }
        writes = mesh::plan(spec, &crate::identity(), settings, &observations).writes;
        if writes.is_empty() {
            return;
        }
    }
    panic!("no convergence in {PASSES} passes: {writes:#?}");
}

/// The Peers one cluster must hold.
fn desired_peers_are_sound(spec: &ClusterMeshSpec, cluster: &str, peers: &mesh::DesiredPeers) {
    let mut keys = BTreeSet::new();
    let mut routes: Vec<(IpNet, &str)> = Vec::new();
    for peer in peers {
        let name = &peer.name;
        assert_eq!(
            peer.spec.validate(),
            Ok(()),
            "{cluster}: Kilo would ignore Peer {name}: {:?}",
            peer.spec
        );
        if peer
            .annotations
            .get(NODE_ANNOTATION)
            .is_some_and(|n| is_dns1123_subdomain(n))
        {
            assert!(is_dns1123_subdomain(name), "{cluster}: Peer name {name:?}");
        }
        let source = &peer.labels[CLUSTER_LABEL];
        assert_ne!(source, cluster, "{cluster} given a Peer of its own node");
        let declared = declared(spec, source);
        for ip in &peer.spec.allowed_ips {
            let ip: IpNet = ip.parse().expect("validated above");
            assert!(
                declared.iter().any(|range| range.contains(&ip)),
                "{cluster}: {name} routes {ip}, outside {source}'s declared ranges"
            );
            if let Some((_, other)) = routes
                .iter()
                .find(|(range, other)| other != name && (range.contains(&ip) || ip.contains(range)))
            {
                panic!("{cluster}: {ip} of {name} overlaps a range of {other}");
            }
            routes.push((ip, name));
        }
        assert!(
            keys.insert(&peer.spec.public_key),
            "{cluster}: two Peers have the key of {name}"
        );
    }
}

/// Every range `cluster` declares in a spec that passed the plan's checks.
fn declared(spec: &ClusterMeshSpec, cluster: &str) -> Vec<IpNet> {
    let entry = spec.clusters.iter().find(|c| c.name == cluster);
    let entry = entry.unwrap_or_else(|| panic!("Peer of unknown cluster {cluster}"));
    entry
        .pod_cidrs
        .iter()
        .chain([&entry.wireguard_cidr])
        .chain(&entry.service_cidr)
        .chain(&entry.additional_cidrs)
        .map(|range| range.trim().parse().expect("a valid spec's ranges parse"))
        .collect()
}
