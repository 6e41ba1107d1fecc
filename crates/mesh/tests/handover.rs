//! Who keeps a cluster's Peers when a mesh has more than one operator: the
//! moves between a hub and a decentralized mesh hand Peers over in place,
//! and writers that may not share are named, never overwritten.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;
use std::{collections::BTreeMap, sync::Arc};

use api::PeerPlacement::{self, AllClusters, LocalCluster};
use mesh::{
    ClusterWriter, ConditionType, MESH_ANNOTATION, MESH_LABEL, Observation, ObservedPeer, RELEASED,
    Writer, conditions, plan,
};

/// Every Peer on every cluster, by cluster and name: what a handover must
/// keep (its spec) while the owner changes.
fn specs(observations: &BTreeMap<String, Observation>) -> BTreeMap<(String, String), String> {
    observations
        .iter()
        .flat_map(|(cluster, observation)| {
            let peers = observation.view().map(|v| v.peers.iter());
            peers
                .into_iter()
                .flatten()
                .map(move |p| ((cluster.clone(), p.name.clone()), format!("{:?}", p.spec)))
        })
        .collect()
}

fn labelled<'a>(observations: &'a BTreeMap<String, Observation>, cluster: &str) -> Vec<&'a str> {
    let mut labels: Vec<&str> = peers(observations, cluster)
        .into_iter()
        .map(|p| p.labels[MESH_LABEL].as_str())
        .collect();
    labels.dedup();
    labels
}

/// The plan of the operator on `local` whose mesh has `placement`.
fn plan_as(
    local: &str,
    placement: PeerPlacement,
    observations: &BTreeMap<String, Observation>,
) -> mesh::Plan {
    plan(
        &spec_on(local, placement),
        &identity_of(local),
        &settings(),
        observations,
    )
}

/// [`converge_as`] for the operator on `local` whose mesh has `placement`.
fn converge_on(
    local: &str,
    placement: PeerPlacement,
    observations: &mut BTreeMap<String, Observation>,
) -> mesh::Plan {
    converge_as(
        &identity_of(local),
        &spec_on(local, placement),
        observations,
    )
}

/// The world a hub on `a` left: every cluster holds the others' nodes.
fn hub_mesh() -> BTreeMap<String, Observation> {
    let mut observations = fresh(2);
    converge_on("a", AllClusters, &mut observations);
    observations
}

#[test]
fn a_clusters_own_operator_takes_the_hubs_peers_over_in_place_and_the_hub_steps_back() {
    let mut observations = hub_mesh();
    let before = specs(&observations);
    let hub = identity_of("a").label_value();
    let b = identity_of("b").label_value();

    // b's own operator starts, the hub still running with AllClusters.
    let plan_b = plan_as("b", LocalCluster, &observations);
    let writes = &plan_b.writes["b"];
    assert!(writes.delete.is_empty(), "{writes:?}");
    assert_eq!(writes.apply.len(), 4, "every Peer on b is taken over");
    assert_eq!(plan_b.writes.keys().collect::<Vec<_>>(), ["b"]);
    assert!(plan_b.report.peer_conflicts.is_empty());
    converge_on("b", LocalCluster, &mut observations);
    assert_eq!(labelled(&observations, "b"), [b.as_str()]);
    assert_eq!(
        specs(&observations),
        before,
        "no Peer changed but its owner"
    );

    // The hub now leaves b to its own operator, keeps writing a and c, and
    // says so.
    let plan_a = converge_on("a", AllClusters, &mut observations);
    assert_eq!(labelled(&observations, "b"), [b.as_str()]);
    assert_eq!(labelled(&observations, "c"), [hub.as_str()]);
    let writer = |name: &str| {
        let report = plan_a.report.clusters.iter().find(|c| c.name == name);
        report.unwrap().writer
    };
    assert_eq!(writer("b"), ClusterWriter::OwnOperatorTookOver);
    assert_eq!(writer("c"), ClusterWriter::ThisOperator);
    assert!(plan_a.report.peer_conflicts.is_empty());
    let status = mesh::status(&plan_a.report, &BTreeMap::new());
    let b_status = status.clusters.iter().find(|c| c.name == "b").unwrap();
    assert!(
        b_status
            .message
            .as_deref()
            .unwrap()
            .contains("own operator of this mesh took its Peers over"),
        "{b_status:?}"
    );

    // A node added to a reaches b through b's operator only.
    view_mut(&mut observations, "a")
        .nodes
        .make_mut()
        .push(Arc::new(node(1, 2)));
    let plan_a = plan_as("a", AllClusters, &observations);
    assert!(!plan_a.writes.contains_key("b"));
    let plan_b = plan_as("b", LocalCluster, &observations);
    let added: Vec<&str> = plan_b.writes["b"]
        .apply
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(added, ["a.node-2"]);
}

#[test]
fn a_hub_takes_over_in_place_what_a_clusters_operator_released() {
    // Decentralized: each cluster's own operator wrote its own Peers.
    let mut observations = fresh(2);
    for local in ["a", "b", "c"] {
        converge_on(local, LocalCluster, &mut observations);
    }
    let before = specs(&observations);
    let hub = identity_of("a").label_value();

    // a becomes the hub while b's operator still runs: b is left alone.
    // c's operator was deleted with peers-on-delete: release.
    for peer in view_mut(&mut observations, "c").peers.make_mut() {
        Arc::make_mut(peer)
            .labels
            .insert(MESH_LABEL.into(), RELEASED.into());
    }
    let plan_a = plan_as("a", AllClusters, &observations);
    assert!(!plan_a.writes.contains_key("b"));
    assert!(plan_a.writes["c"].delete.is_empty());
    assert_eq!(plan_a.writes["c"].apply.len(), 4);
    converge_on("a", AllClusters, &mut observations);
    assert_eq!(labelled(&observations, "c"), [hub.as_str()]);
    assert_eq!(
        specs(&observations),
        before,
        "no Peer changed but its owner"
    );

    // b's operator releases too: the hub takes b over as well.
    for peer in view_mut(&mut observations, "b").peers.make_mut() {
        Arc::make_mut(peer)
            .labels
            .insert(MESH_LABEL.into(), RELEASED.into());
    }
    let plan_a = converge_on("a", AllClusters, &mut observations);
    assert_eq!(labelled(&observations, "b"), [hub.as_str()]);
    assert_eq!(specs(&observations), before);
    assert!(
        plan_a
            .report
            .clusters
            .iter()
            .all(|c| c.writer == ClusterWriter::ThisOperator)
    );
}

#[test]
fn two_hubs_of_one_mesh_are_both_named_and_neither_touches_the_others_peers() {
    let mut observations = hub_mesh();
    // A second hub of the same mesh on b: it takes b's Peers (its own
    // cluster), and finds the first hub's on c.
    let plan_b = converge_on("b", AllClusters, &mut observations);
    let hub = identity_of("a").label_value();
    assert_eq!(labelled(&observations, "c"), [hub.as_str()]);
    assert!(
        plan_b
            .report
            .peer_conflicts
            .iter()
            .all(|c| c.cluster == "c" && c.writer == Writer::Sibling("a".into())),
        "{:?}",
        plan_b.report.peer_conflicts
    );
    assert_eq!(plan_b.report.peer_conflicts.len(), 4);
    let message = conflict_message(&plan_b.report);
    assert!(
        message.contains(
            "Peer a.node-0 on cluster c is written by this mesh's operator on cluster a as well \
             as by this mesh, written from cluster b: two hubs of one mesh"
        ),
        "{message}"
    );
}

#[test]
fn a_peer_of_another_mesh_names_that_mesh_and_the_cluster_it_is_written_from() {
    let mut observations = fresh(1);
    converge(&spec(), &mut observations);
    // Mesh other/mesh, whose hub is b, wrote a.node-0 on c first.
    let other = mesh::MeshIdentity {
        hub_cluster: "b".into(),
        namespace: "other".into(),
        name: "mesh".into(),
    };
    let c = view_mut(&mut observations, "c");
    let theirs: &mut ObservedPeer = Arc::make_mut(
        c.peers
            .make_mut()
            .iter_mut()
            .find(|p| p.name == "a.node-0")
            .unwrap(),
    );
    theirs.labels.insert(MESH_LABEL.into(), other.label_value());
    theirs
        .annotations
        .insert(MESH_ANNOTATION.into(), "other/mesh".into());
    let plan = converge(&spec(), &mut observations);
    assert_eq!(
        plan.report.peer_conflicts[0].writer,
        Writer::OtherMesh {
            mesh: "other/mesh".into(),
            cluster: Some("b".into())
        }
    );
    let message = conflict_message(&plan.report);
    assert!(
        message.contains(
            "Peer a.node-0 on cluster c is written by mesh other/mesh, from cluster b, and \
             wanted by this mesh, written from cluster a"
        ),
        "{message}"
    );
    // A released Peer of another mesh is not this mesh's to take.
    let c = view_mut(&mut observations, "c");
    let theirs = Arc::make_mut(
        c.peers
            .make_mut()
            .iter_mut()
            .find(|p| p.name == "a.node-0")
            .unwrap(),
    );
    theirs.labels.insert(MESH_LABEL.into(), RELEASED.into());
    let plan = converge(&spec(), &mut observations);
    assert_eq!(plan.report.peer_conflicts.len(), 1);
    assert_eq!(
        peers(&observations, "c")
            .iter()
            .find(|p| p.name == "a.node-0")
            .unwrap()
            .labels[MESH_LABEL],
        RELEASED
    );
}

fn conflict_message(report: &mesh::Report) -> String {
    conditions(report, &BTreeMap::new())
        .into_iter()
        .find(|c| c.type_ == ConditionType::PeerConflict)
        .unwrap()
        .message
}

#[test]
fn a_clusters_own_operator_peering_us_back_is_counted_where_its_peers_are_known() {
    let mut observations = fresh(2);
    for local in ["a", "b", "c"] {
        converge_on(local, LocalCluster, &mut observations);
    }
    let back = |observations: &BTreeMap<String, Observation>, name: &str| {
        let plan = plan_as("a", LocalCluster, observations);
        let report = plan.report.clusters.into_iter().find(|c| c.name == name);
        report.unwrap().peered_back.map(|b| (b.peered, b.of))
    };
    assert_eq!(back(&observations, "b"), Some((2, 2)));
    // b's operator has not peered a's node-1 (yet): told.
    view_mut(&mut observations, "b")
        .peers
        .make_mut()
        .retain(|p| p.name != "a.node-1");
    assert_eq!(back(&observations, "b"), Some((1, 2)));
    // Peers a may not read tell nothing.
    let c = view_mut(&mut observations, "c");
    c.peers.make_mut().clear();
    c.peers_unknown = true;
    assert_eq!(back(&observations, "c"), None);
    assert_eq!(back(&observations, "a"), None, "a writes its own");
}

#[test]
fn a_released_peer_of_a_same_named_mesh_for_a_cluster_not_in_this_one_is_left_alone() {
    let mut observations = fresh(1);
    converge(&spec(), &mut observations);
    // A mesh also named kilo-system/mesh, meshing c with a cluster z this
    // mesh does not have, released its Peer for z's node on c.
    let mut theirs = peers(&observations, "c")[0].clone();
    theirs.name = "z.node-0".into();
    theirs.labels.insert(MESH_LABEL.into(), RELEASED.into());
    theirs.labels.insert(mesh::CLUSTER_LABEL.into(), "z".into());
    view_mut(&mut observations, "c")
        .peers
        .make_mut()
        .push(Arc::new(theirs));
    let plan = converge(&spec(), &mut observations);
    assert!(plan.writes.is_empty());
    assert!(
        peers(&observations, "c")
            .iter()
            .any(|p| p.name == "z.node-0")
    );
}
