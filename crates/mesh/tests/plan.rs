//! The plan's behaviour, case by case.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use std::{collections::BTreeMap, sync::Arc};

use mesh::{
    ANCHOR_LABEL, ConditionType, Liveness, MESH_LABEL, Observation, Unreachable, conditions, plan,
    status, transitions,
};

#[test]
fn every_cluster_holds_the_eligible_nodes_of_every_other_cluster() {
    let mut observations = fresh(2);
    let plan = converge(&spec(), &mut observations);
    for (cluster, others) in [("a", ["b", "c"]), ("b", ["a", "c"]), ("c", ["a", "b"])] {
        let mut names: Vec<&str> = peers(&observations, cluster)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        names.sort();
        let expected: Vec<String> = others
            .iter()
            .flat_map(|o| [format!("{o}.node-0"), format!("{o}.node-1")])
            .collect();
        assert_eq!(names, expected, "Peers on {cluster}");
    }
    let b0 = peers(&observations, "a")
        .into_iter()
        .find(|p| p.name == "b.node-0")
        .unwrap()
        .clone();
    assert_eq!(b0.spec.public_key, key(2, 0));
    assert_eq!(
        b0.spec
            .endpoint
            .as_ref()
            .and_then(|e| e.dns_or_ip.ip.as_deref()),
        Some("192.0.2.20")
    );
    assert_eq!(b0.spec.persistent_keepalive, Some(25));
    assert!(b0.spec.allowed_ips.contains(&"10.2.0.0/24".to_owned()));
    assert!(b0.spec.allowed_ips.contains(&"10.102.0.1/32".to_owned()));
    let report = status(&plan.report, &no_failures());
    assert_eq!(report.registered_peers, 6);
    let ready = conditions(&plan.report, &no_failures())
        .into_iter()
        .find(|c| c.type_ == ConditionType::Ready)
        .unwrap();
    assert!(ready.status, "{ready:?}");
}

#[test]
fn the_anchor_carries_the_service_cidr_in_its_own_peer() {
    let mut spec = spec();
    spec.clusters[1].additional_cidrs = vec!["192.168.20.0/24".into()];
    let mut observations = fresh(3);
    converge(&spec, &mut observations);
    let on_a = peers(&observations, "a");
    let anchors: Vec<_> = on_a
        .iter()
        .filter(|p| p.labels.contains_key(ANCHOR_LABEL) && p.name.starts_with("b."))
        .collect();
    assert_eq!(anchors.len(), 1, "exactly one anchor for b");
    assert_eq!(anchors[0].name, "b.node-0", "lowest name among Ready nodes");
    assert!(
        anchors[0]
            .spec
            .allowed_ips
            .contains(&"10.202.0.0/16".to_owned())
    );
    assert!(
        anchors[0]
            .spec
            .allowed_ips
            .contains(&"192.168.20.0/24".to_owned())
    );
    let with_service = on_a
        .iter()
        .filter(|p| p.spec.allowed_ips.contains(&"10.202.0.0/16".to_owned()))
        .count();
    assert_eq!(
        with_service, 1,
        "the service range is in one Peer, never a separate one"
    );
}

#[test]
fn a_removed_anchor_hands_over_in_one_pass() {
    let mut observations = fresh(3);
    converge(&spec(), &mut observations);
    view_mut(&mut observations, "b")
        .nodes
        .make_mut()
        .retain(|n| n.name != "node-0");
    let next = plan(&spec(), &identity(), &settings(), &observations);
    let on_a = &next.writes["a"];
    assert_eq!(deleted(on_a), ["b.node-0"]);
    let new_anchor = on_a
        .apply
        .iter()
        .find(|p| p.name == "b.node-1")
        .expect("node-1 takes over");
    assert!(
        new_anchor
            .spec
            .allowed_ips
            .contains(&"10.202.0.0/16".to_owned())
    );
}

#[test]
fn unreachable_cluster_keeps_its_peers_everywhere() {
    let mut observations = fresh(2);
    converge(&spec(), &mut observations);
    observations.insert(
        "b".into(),
        Observation::Unreachable {
            cause: Unreachable::Connection("connection refused".into()),
            last_known: None,
        },
    );
    let plan = plan(&spec(), &identity(), &settings(), &observations);
    assert!(
        !plan.writes.contains_key("b"),
        "nothing is written to an unreachable cluster"
    );
    for (cluster, writes) in &plan.writes {
        assert!(
            writes.delete.iter().all(|d| !d.name.starts_with("b.")),
            "b's Peers deleted on {cluster}"
        );
    }
    let b = &status(&plan.report, &no_failures()).clusters[1];
    assert!(!b.reachable);
    assert_eq!(b.registered_peers, 2, "its kept Peers are still counted");
    let ready = conditions(&plan.report, &no_failures())
        .into_iter()
        .find(|c| c.type_ == ConditionType::Ready)
        .unwrap();
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (false, "ClustersUnreachable")
    );
    assert!(ready.message.contains("cluster b"), "{}", ready.message);
}

#[test]
fn a_source_listing_zero_eligible_nodes_while_unreachable_wipes_nothing() {
    let mut observations = fresh(2);
    converge(&spec(), &mut observations);
    let last_known = observations["c"].view().cloned().map(|mut v| {
        v.nodes.make_mut().clear();
        v
    });
    observations.insert(
        "c".into(),
        Observation::Unreachable {
            cause: Unreachable::Syncing,
            last_known,
        },
    );
    let plan = plan(&spec(), &identity(), &settings(), &observations);
    assert!(
        plan.writes.values().all(|w| w.delete.is_empty()),
        "{:?}",
        plan.writes
    );
}

#[test]
fn a_node_removed_from_a_readable_cluster_loses_its_peers_everywhere() {
    let mut observations = fresh(2);
    converge(&spec(), &mut observations);
    view_mut(&mut observations, "c")
        .nodes
        .make_mut()
        .retain(|n| n.name != "node-1");
    let plan = plan(&spec(), &identity(), &settings(), &observations);
    assert_eq!(deleted(&plan.writes["a"]), ["c.node-1"]);
    assert_eq!(deleted(&plan.writes["b"]), ["c.node-1"]);
    assert!(!plan.writes.contains_key("c"));
}

#[test]
fn a_foreign_peer_with_our_name_is_left_alone_and_reported() {
    let mut observations = fresh(1);
    view_mut(&mut observations, "a")
        .peers
        .make_mut()
        .push(Arc::new(mesh::ObservedPeer {
            name: "b.node-0".into(),
            labels: Default::default(),
            annotations: Default::default(),
            spec: api::PeerSpec {
                allowed_ips: vec!["10.9.9.0/24".into()],
                endpoint: None,
                persistent_keepalive: None,
                preshared_key: None,
                public_key: key(9, 9),
            },
            uid: None,
            resource_version: None,
        }));
    let plan = plan(&spec(), &identity(), &settings(), &observations);
    assert!(plan.writes["a"].apply.iter().all(|p| p.name != "b.node-0"));
    assert!(plan.writes["a"].delete.is_empty());
    assert_eq!(plan.report.peer_conflicts.len(), 1);
    let conflict = conditions(&plan.report, &no_failures())
        .into_iter()
        .find(|c| c.type_ == ConditionType::PeerConflict)
        .unwrap();
    assert!(
        conflict.status && conflict.message.contains("Peer b.node-0 on cluster a"),
        "{conflict:?}"
    );
}

#[test]
fn another_meshs_peers_are_never_touched() {
    let mut observations = fresh(1);
    converge(&spec(), &mut observations);
    let mut theirs = peers(&observations, "a")[0].clone();
    theirs.name = "other.node-0".into();
    theirs
        .labels
        .insert(MESH_LABEL.into(), "m-someone-else".into());
    view_mut(&mut observations, "a")
        .peers
        .make_mut()
        .push(Arc::new(theirs));
    let plan = plan(&spec(), &identity(), &settings(), &observations);
    assert!(plan.writes.is_empty(), "{:?}", plan.writes);
}

#[test]
fn a_spec_error_plans_no_write_at_all() {
    let mut observations = fresh(2);
    converge(&spec(), &mut observations);
    let mut bad = spec();
    bad.clusters[1].pod_cidrs = vec!["10.2.0.1/16".into()];
    view_mut(&mut observations, "b").nodes.make_mut().clear();
    let plan = plan(&bad, &identity(), &settings(), &observations);
    assert!(plan.writes.is_empty());
    let invalid = conditions(&plan.report, &no_failures())
        .into_iter()
        .find(|c| c.type_ == ConditionType::InvalidSpec)
        .unwrap();
    assert!(
        invalid.message.contains(
            "spec.clusters[1].podCIDRs[0]: 10.2.0.1/16 has host bits set; write 10.2.0.0/16"
        ),
        "{}",
        invalid.message
    );
}

#[test]
fn a_cluster_dropped_from_the_spec_loses_its_peers() {
    let mut observations = fresh(1);
    converge(&spec(), &mut observations);
    let mut two = spec();
    two.clusters.pop();
    let plan = plan(&two, &identity(), &settings(), &observations);
    assert_eq!(deleted(&plan.writes["a"]), ["c.node-0"]);
    assert_eq!(deleted(&plan.writes["b"]), ["c.node-0"]);
}

/// Cluster c as Kilo lays it out with `--mesh-granularity=location`: nodes
/// 0 and 1 in rack-1, 2 and 3 in rack-2, each with an internal IP; the
/// leaders (0 and 2, first by name) hold WireGuard IPs, the others none.
fn location_cluster(observations: &mut BTreeMap<String, Observation>) {
    for node in nodes_mut(observations, "c") {
        let i: u8 = node.name["node-".len()..].parse().unwrap();
        let rack = if i < 2 { "rack-1" } else { "rack-2" };
        let a = &mut node.annotations;
        a.insert("kilo.squat.ai/granularity".into(), "location".into());
        a.insert("kilo.squat.ai/location".into(), rack.into());
        a.insert(
            "kilo.squat.ai/internal-ip".into(),
            format!("172.16.3.{i}/24"),
        );
        if i % 2 == 1 {
            a.remove("kilo.squat.ai/wireguard-ip");
        }
    }
}

fn allowed(observations: &BTreeMap<String, Observation>, cluster: &str, peer: &str) -> Vec<String> {
    peers(observations, cluster)
        .into_iter()
        .find(|p| p.name == peer)
        .map(|p| p.spec.allowed_ips.clone())
        .unwrap_or_default()
}

#[test]
fn a_location_cluster_is_one_peer_per_location_with_its_leaders_key() {
    let mut observations = fresh(4);
    location_cluster(&mut observations);
    let plan = converge(&spec(), &mut observations);
    let on_a: Vec<&str> = peers(&observations, "a")
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| n.starts_with("c."))
        .collect();
    assert_eq!(on_a, ["c.location-rack-1", "c.location-rack-2"]);
    let rack1 = peers(&observations, "b")
        .into_iter()
        .find(|p| p.name == "c.location-rack-1")
        .unwrap();
    assert_eq!(rack1.spec.public_key, key(3, 0));
    // rack-1 is c's anchor: its Peer also routes c's services.
    assert_eq!(
        rack1.spec.allowed_ips,
        [
            "10.3.0.0/24",
            "10.3.1.0/24",
            "10.103.0.1/32",
            "10.203.0.0/16"
        ]
    );
    let c = &status(&plan.report, &no_failures()).clusters[2];
    assert_eq!((c.registered_peers, c.skipped_nodes), (4, 0));
    assert_eq!(
        rack1.annotations["kilo-clustermesh.io/nodes"],
        "node-0,node-1"
    );
    // Peers written into c are per node of a and b, as for any cluster.
    assert_eq!(peers(&observations, "c").len(), 8);
    // c goes down: its Peers are kept, and still counted by node.
    let last_known = view_mut(&mut observations, "c").clone();
    observations.insert(
        "c".into(),
        Observation::Unreachable {
            cause: Unreachable::Connection("down".into()),
            last_known: Some(last_known),
        },
    );
    let down = mesh::plan(&spec(), &identity(), &settings(), &observations);
    assert_eq!(
        status(&down.report, &no_failures()).clusters[2].registered_peers,
        4
    );
}

#[test]
fn a_location_leader_that_stops_checking_in_hands_its_peer_over() {
    let mut observations = fresh(4);
    location_cluster(&mut observations);
    for node in nodes_mut(&mut observations, "c") {
        node.checked_in = Some(10_000);
    }
    let mut settings = settings();
    settings.liveness = Some(Liveness {
        now: 10_010,
        stale_after_seconds: 90,
    });
    let first = plan(&spec(), &identity(), &settings, &observations);
    assert_eq!(first.recheck_at, Some(10_091));
    apply(&mut observations, &first);

    // node-0's kg stops; its neighbours keep checking in.
    settings.liveness = Some(Liveness {
        now: 10_100,
        stale_after_seconds: 90,
    });
    for node in nodes_mut(&mut observations, "c").skip(1) {
        node.checked_in = Some(10_095);
    }
    let handed_over = plan(&spec(), &identity(), &settings, &observations);
    let writes = &handed_over.writes["a"];
    assert!(
        writes.delete.is_empty(),
        "handed over, not deleted and made again"
    );
    let rack1 = writes
        .apply
        .iter()
        .find(|p| p.name == "c.location-rack-1")
        .unwrap();
    assert_eq!(rack1.spec.public_key, key(3, 1));
    assert_eq!(rack1.spec.allowed_ips, ["10.3.1.0/24", "10.203.0.0/16"]);
    let c = &status(&handed_over.report, &no_failures()).clusters[2];
    assert_eq!(c.skipped[0].reason, "NotCheckingIn");
    assert_eq!(handed_over.recheck_at, Some(10_186));

    // It checks in again: it leads again.
    node_mut(&mut observations, "c", 0).checked_in = Some(10_120);
    settings.liveness = Some(Liveness {
        now: 10_120,
        stale_after_seconds: 90,
    });
    apply(&mut observations, &handed_over);
    let back = plan(&spec(), &identity(), &settings, &observations);
    let rack1 = back.writes["a"]
        .apply
        .iter()
        .find(|p| p.name == "c.location-rack-1")
        .unwrap();
    assert_eq!(rack1.spec.public_key, key(3, 0));
}

#[test]
fn a_node_behind_nat_gets_a_peer_without_endpoint_and_a_keepalive() {
    let mut observations = fresh(1);
    node_mut(&mut observations, "b", 0)
        .annotations
        .remove("kilo.squat.ai/endpoint");
    converge(&spec(), &mut observations);
    let b0 = peers(&observations, "a")
        .into_iter()
        .find(|p| p.name == "b.node-0")
        .unwrap();
    assert_eq!(b0.spec.endpoint, None);
    assert_eq!(b0.spec.persistent_keepalive, Some(25));
    assert!(allowed(&observations, "c", "b.node-0").contains(&"10.2.0.0/24".to_owned()));
}

#[test]
fn overlapping_service_cidrs_are_not_advertised_and_the_rest_works() {
    let mut spec = spec();
    spec.clusters[1].service_cidr = Some("10.96.0.0/12".into());
    spec.clusters[2].service_cidr = Some("10.96.0.0/12".into());
    let mut observations = fresh(1);
    let plan = converge(&spec, &mut observations);
    for peer in peers(&observations, "a") {
        assert!(
            !peer.spec.allowed_ips.contains(&"10.96.0.0/12".to_owned()),
            "{}",
            peer.name
        );
    }
    assert_eq!(peers(&observations, "a").len(), 2, "pods stay meshed");
    let conflict = conditions(&plan.report, &no_failures())
        .into_iter()
        .find(|c| c.type_ == ConditionType::CIDRConflict)
        .unwrap();
    assert!(
        conflict
            .message
            .contains("b serviceCIDR 10.96.0.0/12 overlaps c serviceCIDR 10.96.0.0/12"),
        "{}",
        conflict.message
    );
}

#[test]
fn heartbeat_only_changes_plan_no_write() {
    let mut observations = fresh(2);
    converge(&spec(), &mut observations);
    // Kilo's check-ins move last-seen forward; a Kilo annotation the plan
    // ignores (a location, in a full cluster) must not cause writes either.
    let mut settings = settings();
    for (seen, now) in [(1_000, 1_010), (1_030, 1_040)] {
        for cluster in ["a", "b", "c"] {
            for node in nodes_mut(&mut observations, cluster) {
                node.checked_in = Some(seen);
            }
        }
        settings.liveness = Some(Liveness {
            now,
            stale_after_seconds: 90,
        });
        assert!(
            plan(&spec(), &identity(), &settings, &observations)
                .writes
                .is_empty()
        );
    }
    node_mut(&mut observations, "b", 0)
        .annotations
        .insert("kilo.squat.ai/location".into(), "rack-1".into());
    assert!(
        plan(&spec(), &identity(), &settings, &observations)
            .writes
            .is_empty()
    );
}

#[test]
fn events_are_told_on_transitions_only() {
    let mut observations = fresh(2);
    node_mut(&mut observations, "b", 1)
        .annotations
        .remove("kilo.squat.ai/key");
    let first = converge(&spec(), &mut observations);
    let mut before = status(&first.report, &no_failures());
    let events = transitions(&api::ClusterMeshStatus::default(), &before);
    assert_eq!(
        events.iter().filter(|e| e.reason == "NodeSkipped").count(),
        1,
        "{events:?}"
    );
    before.conditions.clear();
    let again = status(
        &plan(&spec(), &identity(), &settings(), &observations).report,
        &no_failures(),
    );
    assert!(
        transitions(&before, &again).is_empty(),
        "a steady state tells nothing"
    );
    node_mut(&mut observations, "b", 1)
        .annotations
        .insert("kilo.squat.ai/key".into(), key(2, 1));
    let restored = status(&converge(&spec(), &mut observations).report, &no_failures());
    let events = transitions(&again, &restored);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "NodeRestored");
}

#[test]
fn failing_writes_make_the_mesh_not_ready_and_name_the_cluster() {
    let mut observations = fresh(1);
    let plan = converge(&spec(), &mut observations);
    let failing = mesh::FailingWrites::from([("b".to_owned(), "timed out".to_owned())]);
    let b = &status(&plan.report, &failing).clusters[1];
    assert!(b.reachable);
    assert_eq!(
        b.message.as_deref(),
        Some("writing its Peers fails, retrying: timed out")
    );
    let all = conditions(&plan.report, &failing);
    let ready = all.last().unwrap();
    assert_eq!(ready.type_, ConditionType::Ready);
    assert!(!ready.status);
    assert_eq!(ready.reason, "PeerWritesFailing");
    assert!(
        ready.message.contains("cluster b: timed out"),
        "{}",
        ready.message
    );
}

#[test]
fn two_entries_reaching_one_cluster_are_refused_naming_both() {
    let mut observations = fresh(1);
    // The Secret of entry c reaches cluster a.
    view_mut(&mut observations, "c").uid = Some("uid-a".into());
    let plan = plan(&spec(), &identity(), &settings(), &observations);
    assert!(plan.writes.is_empty(), "nothing written: {:?}", plan.writes);
    let invalid = conditions(&plan.report, &no_failures())
        .into_iter()
        .find(|c| c.type_ == ConditionType::InvalidSpec)
        .unwrap();
    assert!(invalid.status);
    assert!(
        invalid.message.contains(
            "spec.clusters[2]: entries \"a\" (spec.clusters[0]) and \"c\" reach the same cluster"
        ),
        "{}",
        invalid.message
    );
}

#[test]
fn no_tunnel_routes_an_endpoint_of_the_mesh() {
    let mut spec = spec();
    // b's host network holds every node's endpoint (192.0.2.x).
    spec.clusters[1].additional_cidrs = vec!["192.0.2.0/24".into()];
    let mut observations = fresh(2);
    // c's node-1 announces an endpoint inside its own pod range.
    node_mut(&mut observations, "c", 1)
        .annotations
        .insert("kilo.squat.ai/endpoint".into(), "10.3.1.7:51820".into());
    let plan = plan(&spec, &identity(), &settings(), &observations);
    let endpoints: Vec<std::net::IpAddr> = plan
        .desired
        .values()
        .flatten()
        .filter_map(|p| {
            p.spec
                .endpoint
                .as_ref()?
                .dns_or_ip
                .ip
                .as_deref()?
                .parse()
                .ok()
        })
        .collect();
    for peer in plan.desired.values().flatten() {
        for range in &peer.spec.allowed_ips {
            let range: ipnet::IpNet = range.parse().unwrap();
            assert!(
                endpoints.iter().all(|e| !range.contains(e)),
                "{} routes {range}, which holds an endpoint",
                peer.name
            );
        }
    }
    let b_anchor = desired(&plan, "a", "b.node-0").unwrap();
    assert!(
        b_anchor
            .spec
            .allowed_ips
            .contains(&"192.0.2.128/25".to_owned()),
        "the rest of the host network is still routed: {:?}",
        b_anchor.spec.allowed_ips
    );
    let c = status(&plan.report, &no_failures()).clusters[2].clone();
    assert_eq!(c.skipped[0].name, "node-1");
    assert_eq!(c.skipped[0].reason, "EndpointInsideRoutes");
}

/// The names of the Peers `writes` deletes.
fn deleted(writes: &mesh::ClusterWrites) -> Vec<&str> {
    writes.delete.iter().map(|d| d.name.as_str()).collect()
}

/// No cluster's writes failing.
fn no_failures() -> mesh::FailingWrites {
    mesh::FailingWrites::new()
}

#[test]
fn dns_endpoints_follow_the_policy_and_a_dead_name_costs_only_its_node() {
    use mesh::{DnsAnswer, EndpointDns};
    let mut observations = fresh(1);
    node_mut(&mut observations, "b", 0).annotations.insert(
        "kilo.squat.ai/endpoint".into(),
        "b0.example.com:51820".into(),
    );
    let endpoint_of = |settings: &mesh::Settings| {
        let plan = plan(&spec(), &identity(), settings, &observations);
        let peer = desired(&plan, "a", "b.node-0").cloned();
        let listed = conditions(&plan.report, &no_failures());
        let is_true = |type_| listed.iter().any(|c| c.type_ == type_ && c.status);
        (
            peer.map(|p| p.spec.endpoint.clone().unwrap().dns_or_ip),
            is_true(ConditionType::EndpointsUnresolvable),
            is_true(ConditionType::Ready),
        )
    };
    let mut settings = settings();
    let answer = |address: Option<&str>, error: Option<&str>| DnsAnswer {
        address: address.map(|a| a.parse().unwrap()),
        error: error.map(str::to_owned),
    };

    // resolve (the default): the Peer carries the address.
    settings.dns_answers = [("b0.example.com".into(), answer(Some("198.51.100.9"), None))].into();
    let (endpoint, warned, ready) = endpoint_of(&settings);
    assert_eq!(endpoint.unwrap().ip.as_deref(), Some("198.51.100.9"));
    assert!(!warned && ready);
    // The name stops resolving: the last address is kept, with a warning.
    settings.dns_answers = [(
        "b0.example.com".into(),
        answer(Some("198.51.100.9"), Some("NXDOMAIN")),
    )]
    .into();
    let (endpoint, warned, ready) = endpoint_of(&settings);
    assert_eq!(endpoint.unwrap().ip.as_deref(), Some("198.51.100.9"));
    assert!(warned && ready, "a warning, not an outage");
    // A name that never resolved: only that node is skipped.
    settings.dns_answers = [("b0.example.com".into(), answer(None, Some("NXDOMAIN")))].into();
    let skipped = plan(&spec(), &identity(), &settings, &observations);
    let b = &status(&skipped.report, &no_failures()).clusters[1];
    assert_eq!(b.skipped[0].reason, "EndpointUnresolvable");
    assert!(
        b.skipped[0].message.contains("NXDOMAIN"),
        "{}",
        b.skipped[0].message
    );

    // keep: the Peer carries the name, and the hub's failure is a warning.
    settings.endpoint_dns = EndpointDns::Keep;
    let (endpoint, warned, ready) = endpoint_of(&settings);
    assert_eq!(endpoint.unwrap().dns.as_deref(), Some("b0.example.com"));
    assert!(warned && ready);
}

#[test]
fn local_cluster_placement_writes_only_on_the_local_cluster_and_reads_the_others() {
    let mut spec = spec();
    spec.peer_placement = api::PeerPlacement::LocalCluster;
    let mut observations = fresh(2);
    let plan = converge(&spec, &mut observations);
    let on_a: Vec<&str> = peers(&observations, "a")
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(on_a, ["b.node-0", "b.node-1", "c.node-0", "c.node-1"]);
    assert!(peers(&observations, "b").is_empty() && peers(&observations, "c").is_empty());
    assert_eq!(plan.desired.keys().collect::<Vec<_>>(), ["a"]);
    let b = &status(&plan.report, &no_failures()).clusters[1];
    assert_eq!(b.registered_peers, 2, "b's nodes are peered (on a)");
}
