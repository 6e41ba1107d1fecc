//! The controller against three real control planes: a hub (a) and two
//! remotes (b, c) reached through least-privilege ServiceAccount tokens.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use testkit::ControlPlane;

const CONVERGE: Duration = Duration::from_secs(30);

async fn three_cluster_mesh(nodes: u8) -> (Vec<ControlPlane>, Operator) {
    let planes = ControlPlane::start_many(3).await.unwrap();
    for (k, plane) in planes.iter().enumerate() {
        for i in 0..nodes {
            create_node(plane, &kilo_node(k as u8 + 1, i)).await;
        }
    }
    connect(&planes[0], &planes[1], "b").await;
    connect(&planes[0], &planes[2], "c").await;
    create_mesh(
        &planes[0],
        "mesh",
        vec![
            entry("a", 1, true),
            entry("b", 2, false),
            entry("c", 3, false),
        ],
    )
    .await;
    let operator = start_operator(&planes[0]);
    (planes, operator)
}

fn expected(others: &[&str], nodes: u8) -> Vec<String> {
    let mut names: Vec<String> = others
        .iter()
        .flat_map(|o| (0..nodes).map(move |i| format!("{o}.node-{i}")))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clusters_converge_to_a_full_mesh() {
    let (planes, _operator) = three_cluster_mesh(2).await;
    for (plane, others) in planes.iter().zip([["b", "c"], ["a", "c"], ["a", "b"]]) {
        let want = expected(&others, 2);
        eventually(&format!("Peers on {}", plane.name()), CONVERGE, || async {
            peer_names(plane).await == want
        })
        .await;
    }
    let on_a = peers(&planes[0]).await;
    let b1 = &on_a["b.node-1"];
    assert_eq!(b1.spec.public_key, key(2, 1));
    assert_eq!(
        b1.spec.endpoint.as_ref().unwrap().dns_or_ip.ip.as_deref(),
        Some("192.0.2.21")
    );
    assert_eq!(b1.spec.endpoint.as_ref().unwrap().port, 51820);
    assert!(b1.spec.allowed_ips.contains(&"10.2.1.0/24".into()));
    assert!(b1.spec.allowed_ips.contains(&"10.102.0.2/32".into()));
    let anchor = &on_a["b.node-0"];
    assert!(
        anchor.spec.allowed_ips.contains(&"10.202.0.0/16".into()),
        "b's anchor carries its service CIDR"
    );
    assert!(!b1.spec.allowed_ips.contains(&"10.202.0.0/16".into()));

    eventually("Ready=True", CONVERGE, || async {
        condition(&mesh_status(&planes[0], "mesh").await, "Ready")
            .is_some_and(|c| c.status == "True")
    })
    .await;
    let status = mesh_status(&planes[0], "mesh").await;
    assert_eq!(status.registered_peers, 6);
    assert_eq!(status.cluster_count, 3);
    assert!(status.observed_generation.is_some());
    let b = status.clusters.iter().find(|c| c.name == "b").unwrap();
    assert_eq!((b.nodes, b.registered_peers, b.skipped_nodes), (2, 2, 0));
    assert_eq!(b.anchor_node.as_deref(), Some("node-0"));
    assert!(b.reachable && b.last_sync_time.is_some() && b.credentials_expire.is_some());
}
