//! A decentralized mesh: three clusters, each running its own operator with
//! a ClusterMesh that names itself local and `peerPlacement: LocalCluster`,
//! each reaching the others through `connect --read-only` (a token that may
//! read nodes and nothing else). Each operator writes Peers on its own
//! cluster only.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::Duration;

use api::{ClusterMesh, ClusterMeshSpec, PeerPlacement};
use common::*;
use kube::{Api, api::PostParams};
use testkit::ControlPlane;

const CONVERGE: Duration = Duration::from_secs(30);
const NAMES: [&str; 3] = ["a", "b", "c"];

/// Each cluster's ClusterMesh: itself local, the others read through their
/// read-only Secrets.
async fn decentralized_mesh(planes: &[ControlPlane]) {
    let dir = tempfile::tempdir().unwrap();
    let contexts: Vec<(&str, &str)> = NAMES
        .iter()
        .zip(planes)
        .map(|(name, plane)| (*name, plane.admin_kubeconfig()))
        .collect();
    let config = contexts_file(dir.path(), &contexts);
    for (h, hub) in NAMES.iter().enumerate() {
        ensure_namespace(&planes[h]).await;
        for remote in NAMES.iter().filter(|r| *r != hub) {
            let args = [
                "--hub-context",
                hub,
                "--remote-context",
                remote,
                "--name",
                remote,
                "--read-only",
                "--service-account",
                "kilo-clustermesh-reader",
                "--allow-loopback-server",
            ];
            let output = run_binary("connect", &config, &args).await;
            assert!(
                output.status.success(),
                "connect --read-only {hub} -> {remote}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let clusters = NAMES
            .iter()
            .enumerate()
            .map(|(k, name)| entry(name, k as u8 + 1, k == h))
            .collect();
        let mut mesh = ClusterMesh::new(
            "mesh",
            ClusterMeshSpec {
                clusters,
                peer_placement: PeerPlacement::LocalCluster,
            },
        );
        mesh.metadata.namespace = Some(NAMESPACE.into());
        Api::<ClusterMesh>::namespaced(planes[h].admin_client(), NAMESPACE)
            .create(&PostParams::default(), &mesh)
            .await
            .unwrap();
    }
}

fn others(cluster: usize, nodes: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = NAMES
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != cluster)
        .flat_map(|(_, name)| nodes.iter().map(move |n| format!("{name}.{n}")))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_operators_each_write_only_their_own_cluster_and_one_stopping_costs_nothing() {
    let planes = ControlPlane::start_many(3).await.unwrap();
    for (k, plane) in planes.iter().enumerate() {
        create_node(plane, &kilo_node(k as u8 + 1, 0)).await;
    }
    decentralized_mesh(&planes).await;
    let mut operators: Vec<Option<Operator>> =
        planes.iter().map(|p| Some(start_operator(p))).collect();
    for (k, plane) in planes.iter().enumerate() {
        eventually(&format!("{}'s own Peers", NAMES[k]), CONVERGE, || async {
            let status = mesh_status(plane, "mesh").await;
            peer_names(plane).await == others(k, &["node-0"])
                && condition(&status, "Ready").is_some_and(|c| c.status == "True")
        })
        .await;
    }
    // Every Peer on a cluster is its own operator's: none is in conflict.
    for plane in &planes {
        let status = mesh_status(plane, "mesh").await;
        assert!(condition(&status, "PeerConflict").is_some_and(|c| c.status == "False"));
    }

    // b's operator stops: a and c keep their Peers and still follow b's nodes.
    operators[1] = None;
    create_node(&planes[1], &kilo_node(2, 1)).await;
    create_node(&planes[0], &kilo_node(1, 1)).await;
    for k in [0, 2] {
        eventually(
            &format!("b's new node on {}", NAMES[k]),
            CONVERGE,
            || async {
                peer_names(&planes[k])
                    .await
                    .contains(&"b.node-1".to_owned())
            },
        )
        .await;
    }
    eventually("a's new node on c", CONVERGE, || async {
        peer_names(&planes[2])
            .await
            .contains(&"a.node-1".to_owned())
    })
    .await;
    // Nobody else writes on b: its Peers stay as its operator left them.
    assert_eq!(peer_names(&planes[1]).await, others(1, &["node-0"]));
    drop(operators);
}
