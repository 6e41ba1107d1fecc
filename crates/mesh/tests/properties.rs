//! Invariants of the plan over generated meshes: random node sets, broken
//! nodes, overlapping service ranges and unreachable clusters.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::{collections::BTreeMap, sync::Arc};

use common::*;
use ipnet::IpNet;
use mesh::{ANCHOR_LABEL, CLUSTER_LABEL, NODE_ANNOTATION, Observation, Planner, Unreachable, plan};
use proptest::prelude::*;

/// How a generated node is broken, if at all.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    NoKey,
    PodOutside,
    WireGuardOutside,
    NotReady,
    /// The key of node 0 of cluster a (a copied machine).
    KeyOfAnother,
    /// The WireGuard IP of node 0 of its own cluster.
    WireGuardIpOfAnother,
    /// The pod CIDR of node 0 of its own cluster.
    PodCidrOfAnother,
    /// Its Kilo agent stopped checking in long ago.
    Silent,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        1 => Just(Fault::NoKey),
        1 => Just(Fault::PodOutside),
        1 => Just(Fault::WireGuardOutside),
        1 => Just(Fault::NotReady),
        1 => Just(Fault::KeyOfAnother),
        1 => Just(Fault::WireGuardIpOfAnother),
        1 => Just(Fault::PodCidrOfAnother),
        1 => Just(Fault::Silent),
    ]
}

/// Per cluster: which node indexes exist and how each is broken.
fn nodes() -> impl Strategy<Value = BTreeMap<u8, Fault>> {
    proptest::collection::btree_map(0u8..8, fault(), 0..6)
}

/// A service CIDR drawn from a small pool, so that overlaps happen.
fn service() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("10.96.0.0/12".to_owned())),
        Just(Some("10.96.0.0/16".to_owned())),
        Just(Some("10.250.0.0/16".to_owned()))
    ]
}

/// A range routed through an anchor, drawn to overlap other clusters'
/// pod, WireGuard and service ranges, or not.
fn anchor_range() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("10.1.0.0/16".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("10.101.0.0/24".to_owned()),
        Just("10.2.5.0/24".to_owned()),
        Just("10.96.0.0/12".to_owned()),
        Just("192.168.0.0/16".to_owned()),
    ]
}

#[derive(Clone, Debug)]
struct World {
    services: [Option<String>; 3],
    nodes: [BTreeMap<u8, Fault>; 3],
    /// Clusters whose Kilo runs with `location` granularity (two
    /// locations: even and odd nodes).
    location: [bool; 3],
}

fn world() -> impl Strategy<Value = World> {
    (
        (service(), service(), service()),
        (nodes(), nodes(), nodes()),
        any::<[bool; 3]>(),
    )
        .prop_map(|((s0, s1, s2), (n0, n1, n2), location)| World {
            services: [s0, s1, s2],
            nodes: [n0, n1, n2],
            location,
        })
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn build(world: &World) -> (api::ClusterMeshSpec, BTreeMap<String, Observation>) {
    let mut spec = spec();
    let mut observations = BTreeMap::new();
    for (k, name) in NAMES.iter().enumerate() {
        spec.clusters[k].service_cidr = world.services[k].clone();
        let n = k as u8 + 1;
        let nodes = world.nodes[k]
            .iter()
            .map(|(&i, fault)| {
                let mut view = node(n, i);
                match fault {
                    Fault::None => {}
                    Fault::NoKey => drop(view.annotations.remove("kilo.squat.ai/key")),
                    Fault::PodOutside => view.pod_cidrs.push("0.0.0.0/0".into()),
                    Fault::WireGuardOutside => drop(
                        view.annotations
                            .insert("kilo.squat.ai/wireguard-ip".into(), "10.4.0.1/16".into()),
                    ),
                    Fault::NotReady => view.ready = false,
                    Fault::KeyOfAnother => drop(
                        view.annotations
                            .insert("kilo.squat.ai/key".into(), key(1, 0)),
                    ),
                    Fault::WireGuardIpOfAnother => drop(view.annotations.insert(
                        "kilo.squat.ai/wireguard-ip".into(),
                        node(n, 0).annotations["kilo.squat.ai/wireguard-ip"].clone(),
                    )),
                    Fault::PodCidrOfAnother => view.pod_cidrs = node(n, 0).pod_cidrs,
                    Fault::Silent => view.checked_in = Some(0),
                }
                if world.location[k] {
                    in_location(&mut view, n, i);
                }
                // Nodes are created in index order: node 0 is the oldest.
                view.created = i64::from(i);
                Arc::new(view)
            })
            .collect();
        observations.insert(
            name.to_string(),
            Observation::Observed(mesh::ClusterView {
                nodes,
                peers: vec![].into(),
                uid: Some(format!("uid-{name}")),
                peers_unknown: false,
            }),
        );
    }
    (spec, observations)
}

/// Node `i` of cluster number `n` as Kilo with `location` granularity
/// annotates it: even nodes in `rack-0`, odd ones in `rack-1`.
fn in_location(view: &mut mesh::NodeView, n: u8, i: u8) {
    let a = &mut view.annotations;
    a.insert("kilo.squat.ai/granularity".into(), "location".into());
    a.insert("kilo.squat.ai/location".into(), format!("rack-{}", i % 2));
    a.insert(
        "kilo.squat.ai/internal-ip".into(),
        format!("172.16.{n}.{i}/24"),
    );
}

fn declared(spec: &api::ClusterMeshSpec, cluster: &str) -> Vec<IpNet> {
    let entry = spec.clusters.iter().find(|c| c.name == cluster).unwrap();
    entry
        .pod_cidrs
        .iter()
        .chain(std::iter::once(&entry.wireguard_cidr))
        .chain(entry.service_cidr.iter())
        .chain(entry.additional_cidrs.iter())
        .map(|s| s.parse().unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_same_inputs_give_the_same_plan(world in world()) {
        let (spec, observations) = build(&world);
        let first = plan(&spec, &identity(), &settings(), &observations);
        let second = plan(&spec, &identity(), &settings(), &observations);
        prop_assert_eq!(format!("{first:?}"), format!("{second:?}"));
    }

    #[test]
    fn a_converged_mesh_plans_no_write(world in world()) {
        let (spec, mut observations) = build(&world);
        converge(&spec, &mut observations);
        let again = plan(&spec, &identity(), &settings(), &observations);
        prop_assert!(again.writes.is_empty(), "{:?}", again.writes);
    }

    #[test]
    fn every_route_lies_inside_its_source_clusters_declared_ranges(world in world()) {
        let (spec, observations) = build(&world);
        let plan = plan(&spec, &identity(), &settings(), &observations);
        for peers in plan.desired.values() {
            for peer in peers.iter() {
                let source = &peer.labels[CLUSTER_LABEL];
                let ranges = declared(&spec, source);
                for ip in &peer.spec.allowed_ips {
                    let ip: IpNet = ip.parse().unwrap();
                    prop_assert!(ranges.iter().any(|r| r.contains(&ip)), "{} routes {} outside {}", peer.name, ip, source);
                }
            }
        }
    }

    #[test]
    fn no_two_peers_on_a_cluster_share_a_key_or_a_range(world in world()) {
        let (spec, observations) = build(&world);
        let plan = plan(&spec, &identity(), &settings(), &observations);
        for peers in plan.desired.values() {
            let mut keys = std::collections::BTreeSet::new();
            for peer in peers.iter() {
                prop_assert!(keys.insert(&peer.spec.public_key), "two Peers with the key of {}", peer.name);
            }
            let routes: Vec<(&str, IpNet)> = peers
                .iter()
                .flat_map(|p| p.spec.allowed_ips.iter().map(move |ip| (p.name.as_str(), ip.parse().unwrap())))
                .collect();
            for (i, (a_peer, a)) in routes.iter().enumerate() {
                for (b_peer, b) in &routes[i + 1..] {
                    let overlap = a.contains(b) || b.contains(a);
                    prop_assert!(!overlap, "{a} of {a_peer} overlaps {b} of {b_peer}");
                }
            }
        }
    }

    #[test]
    fn an_edit_of_one_clusters_declared_ranges_never_costs_another_its_nodes(
        world in world(),
        edited in 0usize..3,
        service in proptest::option::of(anchor_range()),
        additional in proptest::collection::vec(anchor_range(), 0..3),
    ) {
        let (spec, observations) = build(&world);
        let before = plan(&spec, &identity(), &settings(), &observations);
        let mut edit = spec.clone();
        edit.clusters[edited].service_cidr = service;
        edit.clusters[edited].additional_cidrs = additional;
        let after = plan(&edit, &identity(), &settings(), &observations);
        prop_assume!(before.report.spec_errors.is_empty() && after.report.spec_errors.is_empty());
        for (was, now) in before.report.clusters.iter().zip(&after.report.clusters) {
            if was.name != NAMES[edited] {
                prop_assert!(
                    now.registered_peers >= was.registered_peers,
                    "editing {} cost {} nodes: {:?}",
                    NAMES[edited],
                    was.name,
                    after.report.conflicts
                );
            }
        }
    }

    #[test]
    fn every_desired_peer_passes_kilos_checks(world in world()) {
        let (spec, observations) = build(&world);
        let plan = plan(&spec, &identity(), &settings(), &observations);
        for peer in plan.desired.values().flatten() {
            prop_assert_eq!(peer.spec.validate(), Ok(()), "{}", peer.name);
            prop_assert!(api::is_dns1123_subdomain(&peer.name));
        }
    }

    #[test]
    fn each_cluster_has_at_most_one_anchor_and_it_stays_under_churn(world in world(), added in 8u8..12, removed in 0u8..8) {
        let (spec, mut observations) = build(&world);
        converge(&spec, &mut observations);
        let anchors = |observations: &BTreeMap<String, Observation>| -> BTreeMap<String, String> {
            let mut found = BTreeMap::new();
            for target in NAMES {
                for peer in peers(observations, target).into_iter().filter(|p| p.labels.contains_key(ANCHOR_LABEL)) {
                    let previous = found.insert(peer.labels[CLUSTER_LABEL].clone(), peer.annotations[NODE_ANNOTATION].clone());
                    assert!(previous.is_none_or(|p| p == peer.annotations[NODE_ANNOTATION]), "two anchors for one cluster");
                }
            }
            found
        };
        let before = anchors(&observations);
        // Churn on b: a node joins, and a node that is not the anchor leaves.
        let b_anchor = before.get("b").cloned();
        let view = view_mut(&mut observations, "b");
        let mut joining = node(2, added);
        if world.location[1] {
            in_location(&mut joining, 2, added);
        }
        view.nodes.make_mut().push(Arc::new(joining));
        // The anchor's node, or its location's nodes, stay.
        let location = format!("location-rack-{}", removed % 2);
        let keep = b_anchor.as_ref().is_some_and(|a| *a == format!("node-{removed}") || *a == location);
        view.nodes.make_mut().retain(|n| n.name != format!("node-{removed}") || keep);
        converge(&spec, &mut observations);
        let after = anchors(&observations);
        if let Some(anchor) = before.get("b") {
            prop_assert_eq!(Some(anchor), after.get("b"));
        }
    }

    #[test]
    fn an_unreachable_cluster_is_never_written_and_never_loses_peers(world in world(), down in 0usize..3) {
        let (spec, mut observations) = build(&world);
        converge(&spec, &mut observations);
        let name = NAMES[down];
        observations.insert(name.into(), Observation::Unreachable { cause: Unreachable::Connection("down".into()), last_known: None });
        let plan = plan(&spec, &identity(), &settings(), &observations);
        prop_assert!(!plan.writes.contains_key(name));
        let prefix = format!("{name}.");
        for writes in plan.writes.values() {
            prop_assert!(writes.delete.iter().all(|d| !d.name.starts_with(&prefix)));
            prop_assert!(writes.apply.iter().all(|p| !p.name.starts_with(&prefix)));
        }
    }

    #[test]
    fn the_planner_plans_what_a_full_plan_does(steps in proptest::collection::vec(step(), 1..10)) {
        let mut planner = Planner::default();
        let mut settings = settings();
        let mut current: Option<(api::ClusterMeshSpec, BTreeMap<String, Observation>)> = None;
        for step in steps {
            let (spec, mut observations) = match (step.world, current.take()) {
                (Some(world), before) => {
                    let (spec, mut observations) = build(&world);
                    if let Some((_, before)) = before {
                        carry_over(&before, &mut observations);
                    }
                    (spec, observations)
                }
                (None, Some(before)) => before,
                (None, None) => build(&World { services: [None, None, None], nodes: Default::default(), location: [false; 3] }),
            };
            if let Some(liveness) = settings.liveness.as_mut() {
                liveness.now += step.later;
            }
            if step.heartbeat {
                let now = settings.liveness.map(|l| l.now);
                for view in observations.values_mut().filter_map(view_of) {
                    for node in view.nodes.make_mut().iter_mut().filter(|n| n.checked_in != Some(0)) {
                        Arc::make_mut(node).checked_in = now;
                    }
                }
            }
            if step.edit
                && let Some(peer) = observations.values_mut().filter_map(view_of).flat_map(|v| v.peers.make_mut().iter_mut()).next()
            {
                Arc::make_mut(peer).spec.allowed_ips.push("10.9.9.0/24".into());
            }
            let mut seen = observations.clone();
            if let Some(down) = step.down {
                let last_known = seen.get(NAMES[down]).and_then(Observation::view).cloned();
                seen.insert(NAMES[down].into(), Observation::Unreachable { cause: Unreachable::Connection("down".into()), last_known });
            }
            let incremental = planner.plan(&spec, &identity(), &settings, &seen);
            let full = plan(&spec, &identity(), &settings, &seen);
            prop_assert_eq!(&incremental, &full);
            if step.write {
                apply(&mut observations, &incremental);
            }
            current = Some((spec, observations));
        }
    }
}

/// One change between two passes of the planner property.
#[derive(Clone, Debug)]
struct Step {
    /// A new world (nodes added, removed, broken, moved; ranges changed), or
    /// the same one.
    world: Option<World>,
    /// Every live node checks in.
    heartbeat: bool,
    /// Seconds the clock moves on.
    later: i64,
    /// A cluster that cannot be read this pass.
    down: Option<usize>,
    /// The pass's writes land.
    write: bool,
    /// Someone edits a Peer by hand.
    edit: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        proptest::option::weighted(0.4, world()),
        any::<bool>(),
        prop_oneof![Just(0i64), Just(30), Just(120)],
        proptest::option::weighted(0.2, 0usize..3),
        proptest::bool::weighted(0.8),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(world, heartbeat, later, down, write, edit)| Step {
            world,
            heartbeat,
            later,
            down,
            write,
            edit,
        })
}

fn view_of(observation: &mut Observation) -> Option<&mut mesh::ClusterView> {
    match observation {
        Observation::Observed(view) => Some(view),
        Observation::Unreachable { .. } => None,
    }
}

/// What a cluster keeps from one world to the next, as a watch would: its
/// Peers, and the very same node objects where a node did not change.
fn carry_over(before: &BTreeMap<String, Observation>, after: &mut BTreeMap<String, Observation>) {
    for (name, observation) in after.iter_mut() {
        let (Some(old), Some(new)) = (
            before.get(name).and_then(Observation::view),
            view_of(observation),
        ) else {
            continue;
        };
        new.peers = old.peers.clone();
        for node in new.nodes.make_mut() {
            if let Some(same) = old.nodes.iter().find(|n| **n == *node) {
                *node = same.clone();
            }
        }
    }
}
