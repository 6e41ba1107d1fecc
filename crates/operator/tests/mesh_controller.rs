//! The controller against three real control planes: a hub (a) and two
//! remotes (b, c) reached through least-privilege ServiceAccount tokens.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use testkit::ControlPlane;

const CONVERGE: Duration = Duration::from_secs(30);

/// Clusters a (hub), b and c with `nodes` Kilo nodes each, b and c
/// connected through least-privilege tokens, and the mesh declared.
async fn three_clusters(nodes: u8) -> Vec<ControlPlane> {
    let planes = ControlPlane::start_many(3).await.unwrap();
    for (k, plane) in planes.iter().enumerate() {
        for i in 0..nodes {
            create_node(plane, &kilo_node(k as u8 + 1, i)).await;
        }
    }
    connect(&planes[0], &planes[1], "b").await;
    connect(&planes[0], &planes[2], "c").await;
    let clusters = vec![
        entry("a", 1, true),
        entry("b", 2, false),
        entry("c", 3, false),
    ];
    create_mesh(&planes[0], "mesh", clusters).await;
    planes
}

async fn three_cluster_mesh(nodes: u8) -> (Vec<ControlPlane>, Operator) {
    let planes = three_clusters(nodes).await;
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

async fn converged(planes: &[ControlPlane], nodes: u8) {
    for (plane, others) in planes.iter().zip([["b", "c"], ["a", "c"], ["a", "b"]]) {
        let want = expected(&others, nodes);
        eventually(&format!("Peers on {}", plane.name()), CONVERGE, || async {
            peer_names(plane).await == want
        })
        .await;
    }
    eventually("Ready=True", CONVERGE, || async {
        condition(&mesh_status(&planes[0], "mesh").await, "Ready")
            .is_some_and(|c| c.status == "True")
    })
    .await;
}

/// resourceVersions of every Peer on every cluster: unchanged means unwritten.
async fn versions(planes: &[ControlPlane]) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for plane in planes {
        for (name, peer) in peers(plane).await {
            all.push((
                format!("{}/{name}", plane.name()),
                peer.metadata.resource_version.unwrap_or_default(),
            ));
        }
    }
    all
}

/// Deletes the mesh and waits until `cleared` hold no Peer and the finalizer
/// has let the mesh go.
async fn delete_mesh(hub: &ControlPlane, cleared: &[ControlPlane]) {
    use api::ClusterMesh;
    use kube::{Api, api::DeleteParams};
    let meshes = Api::<ClusterMesh>::namespaced(admin(hub), NAMESPACE);
    meshes
        .delete("mesh", &DeleteParams::default())
        .await
        .unwrap();
    for plane in cleared {
        eventually(
            &format!("no Peers on {}", plane.name()),
            CONVERGE,
            || async { peer_names(plane).await.is_empty() },
        )
        .await;
    }
    eventually(
        "the mesh is gone (finalizer released)",
        CONVERGE,
        || async { meshes.get_opt("mesh").await.unwrap().is_none() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_node_changes_follow_everywhere_and_heartbeats_write_nothing() {
    use k8s_openapi::api::core::v1::Node;
    use kube::{
        Api,
        api::{DeleteParams, Patch, PatchParams},
    };
    let (planes, operator) = three_cluster_mesh(2).await;
    converged(&planes, 2).await;

    // Heartbeats: Kilo rewrites kilo.squat.ai/last-seen every 30 s on every node.
    let before = versions(&planes).await;
    let writes_before = operator.metrics.render();
    for (k, plane) in planes.iter().enumerate() {
        for i in 0..2u8 {
            let seen = unix_now() + 30 + k as u64;
            annotate_node(
                plane,
                &format!("node-{i}"),
                serde_json::json!({"kilo.squat.ai/last-seen": seen.to_string()}),
            )
            .await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        versions(&planes).await,
        before,
        "heartbeats caused Peer writes"
    );
    let applies = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("kilo_clustermesh_peer_writes_total"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(applies(&operator.metrics.render()), applies(&writes_before));

    // A node joins b: its Peer appears on a and c.
    create_node(&planes[1], &kilo_node(2, 2)).await;
    for plane in [&planes[0], &planes[2]] {
        eventually("b.node-2 everywhere", CONVERGE, || async {
            peer_names(plane).await.contains(&"b.node-2".to_owned())
        })
        .await;
    }
    // Its endpoint changes: the Peers follow.
    let patch = serde_json::json!({"metadata": {"annotations": {"kilo.squat.ai/endpoint": "198.51.100.7:4000"}}});
    Api::<Node>::all(admin(&planes[1]))
        .patch("node-2", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("new endpoint on a", CONVERGE, || async {
        peers(&planes[0]).await["b.node-2"]
            .spec
            .endpoint
            .as_ref()
            .is_some_and(|e| e.port == 4000)
    })
    .await;
    // It leaves: its Peers go everywhere.
    Api::<Node>::all(admin(&planes[1]))
        .delete("node-2", &DeleteParams::default())
        .await
        .unwrap();
    for plane in [&planes[0], &planes[2]] {
        eventually("b.node-2 gone", CONVERGE, || async {
            !peer_names(plane).await.contains(&"b.node-2".to_owned())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_kilo_stops_checking_in_leaves_the_mesh_and_comes_back() {
    let planes = two_cluster_mesh().await;
    create_node(&planes[1], &kilo_node(2, 1)).await;
    let _operator = start_operator_with(&planes[0], |s| s.check_in_grace = Duration::ZERO);
    eventually("b's two nodes on a", CONVERGE, || async {
        peer_names(&planes[0]).await == ["b.node-0", "b.node-1"]
    })
    .await;
    // node-0's kg keeps checking in (every 10 s here); node-1's stopped.
    let started = std::time::Instant::now();
    let heartbeats = {
        let b = planes[1].admin_client();
        tokio::spawn(async move {
            for _ in 0..30 {
                let patch = serde_json::json!({"metadata": {"annotations": {"kilo.squat.ai/last-seen": unix_now().to_string()}}});
                let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(b.clone());
                let _ = nodes
                    .patch(
                        "node-0",
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        })
    };
    // Kilo's 60 s, counted from when the operator began watching b at the
    // earliest, and no grace.
    eventually(
        "b.node-1 taken out of a",
        Duration::from_secs(90),
        || async { peer_names(&planes[0]).await == ["b.node-0"] },
    )
    .await;
    println!(
        "figure: silent node taken out {:.1} s after the operator converged",
        started.elapsed().as_secs_f64()
    );
    // The status is written after the pass hands its writes over.
    eventually("NotCheckingIn in the status", CONVERGE, || async {
        let status = mesh_status(&planes[0], "mesh").await;
        let b = status.clusters.iter().find(|c| c.name == "b");
        b.is_some_and(|b| b.skipped.iter().any(|s| s.reason == "NotCheckingIn"))
    })
    .await;
    let status = mesh_status(&planes[0], "mesh").await;
    assert!(condition(&status, "Ready").is_some_and(|c| c.status == "True"));

    // Its kg checks in again: it is back at once.
    let back = std::time::Instant::now();
    annotate_node(
        &planes[1],
        "node-1",
        serde_json::json!({"kilo.squat.ai/last-seen": unix_now().to_string()}),
    )
    .await;
    eventually("b.node-1 back on a", CONVERGE, || async {
        peer_names(&planes[0]).await == ["b.node-0", "b.node-1"]
    })
    .await;
    println!(
        "figure: back {:.2} s after its check-in",
        back.elapsed().as_secs_f64()
    );
    heartbeats.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_endpoint_is_written_as_the_address_it_resolves_to_and_followed() {
    use kilo_clustermesh_operator::resolver::{Lookup, REFRESH};
    use std::{
        collections::BTreeMap,
        net::IpAddr,
        sync::{Arc, Mutex},
    };
    // The names resolve from a table the test changes: no query leaves the
    // machine (the system resolver is tested on /etc/hosts in resolver.rs).
    let table: Arc<Mutex<BTreeMap<String, IpAddr>>> = Arc::default();
    table
        .lock()
        .unwrap()
        .insert("b0.example.test".into(), "198.51.100.20".parse().unwrap());
    let read = table.clone();
    let lookup = Lookup::new(move |name| {
        let found = read.lock().unwrap().get(&name).copied();
        Box::pin(async move {
            found
                .map(|ip| vec![ip])
                .ok_or_else(|| "NXDOMAIN".to_owned())
        })
    });
    let planes = two_cluster_mesh().await;
    annotate_node(
        &planes[1],
        "node-0",
        serde_json::json!({"kilo.squat.ai/force-endpoint": "b0.example.test:51820"}),
    )
    .await;
    let _operator = start_operator_with(&planes[0], |s| s.lookup = lookup);
    let endpoint_ip = || async {
        let peers = peers(&planes[0]).await;
        let endpoint = peers.get("b.node-0")?.spec.endpoint.clone()?;
        endpoint.dns_or_ip.ip
    };
    eventually("b.node-0's Peer carries the address", CONVERGE, || async {
        endpoint_ip().await.as_deref() == Some("198.51.100.20")
    })
    .await;
    // The name moves: the Peer follows at the next lookup.
    table
        .lock()
        .unwrap()
        .insert("b0.example.test".into(), "198.51.100.21".parse().unwrap());
    eventually("the new address", REFRESH + CONVERGE, || async {
        endpoint_ip().await.as_deref() == Some("198.51.100.21")
    })
    .await;
    // It stops resolving: the last address stays, with a warning.
    table.lock().unwrap().clear();
    eventually("EndpointsUnresolvable", REFRESH + CONVERGE, || async {
        let status = mesh_status(&planes[0], "mesh").await;
        condition(&status, "EndpointsUnresolvable").is_some_and(|c| c.status == "True")
    })
    .await;
    let status = mesh_status(&planes[0], "mesh").await;
    assert!(condition(&status, "Ready").is_some_and(|c| c.status == "True"));
    assert_eq!(endpoint_ip().await.as_deref(), Some("198.51.100.21"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_cluster_is_peered_through_its_leaders_and_follows_a_new_leader() {
    let planes = ControlPlane::start_many(2).await.unwrap();
    create_node(&planes[0], &kilo_node(1, 0)).await;
    // b runs Kilo with location granularity: node-0 and node-1 in rack-1
    // (node-0 leads, first by name), node-2 alone in rack-2.
    for i in 0..3u8 {
        let mut node = kilo_node(2, i);
        let a = node.metadata.annotations.as_mut().unwrap();
        a.insert("kilo.squat.ai/granularity".into(), "location".into());
        let rack = if i < 2 { "rack-1" } else { "rack-2" };
        a.insert("kilo.squat.ai/location".into(), rack.into());
        a.insert(
            "kilo.squat.ai/internal-ip".into(),
            format!("172.16.2.{i}/24"),
        );
        if i == 1 {
            a.remove("kilo.squat.ai/wireguard-ip");
        }
        create_node(&planes[1], &node).await;
    }
    connect(&planes[0], &planes[1], "b").await;
    create_mesh(
        &planes[0],
        "mesh",
        vec![entry("a", 1, true), entry("b", 2, false)],
    )
    .await;
    let _operator = start_operator(&planes[0]);
    eventually("one Peer per location of b on a", CONVERGE, || async {
        peer_names(&planes[0]).await == ["b.location-rack-1", "b.location-rack-2"]
    })
    .await;
    let rack1 = &peers(&planes[0]).await["b.location-rack-1"];
    assert_eq!(rack1.spec.public_key, api::fixtures::wireguard_key(2, 0));
    // rack-1 is b's anchor: it also routes b's services.
    assert_eq!(
        rack1.spec.allowed_ips,
        [
            "10.2.0.0/24",
            "10.2.1.0/24",
            "10.102.0.1/32",
            "10.202.0.0/16"
        ]
    );
    // Peers written into b stay one per node of a: Kilo puts them on its leaders.
    assert_eq!(peer_names(&planes[1]).await, ["a.node-0"]);
    // The status lands after the Peers (their writers send them first).
    eventually(
        "b's three nodes counted in the status",
        CONVERGE,
        || async {
            let status = mesh_status(&planes[0], "mesh").await;
            status
                .clusters
                .iter()
                .any(|c| c.name == "b" && c.registered_peers == 3)
        },
    )
    .await;

    // An admin makes node-1 rack-1's leader; Kilo moves the WireGuard IP.
    annotate_node(&planes[1], "node-1", serde_json::json!({"kilo.squat.ai/leader": "true", "kilo.squat.ai/wireguard-ip": "10.102.0.2/24"})).await;
    annotate_node(
        &planes[1],
        "node-0",
        serde_json::json!({"kilo.squat.ai/wireguard-ip": ""}),
    )
    .await;
    eventually("rack-1's Peer carries node-1's key", CONVERGE, || async {
        let rack1 = &peers(&planes[0]).await["b.location-rack-1"];
        rack1.spec.public_key == api::fixtures::wireguard_key(2, 1)
            && rack1.spec.allowed_ips
                == [
                    "10.2.0.0/24",
                    "10.2.1.0/24",
                    "10.102.0.2/32",
                    "10.202.0.0/16",
                ]
    })
    .await;
    assert_eq!(
        peer_names(&planes[0]).await,
        ["b.location-rack-1", "b.location-rack-2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_bad_pod_cidr_is_skipped_counted_and_told() {
    use k8s_openapi::api::core::v1::Event;
    use kube::{Api, api::ListParams};
    let (planes, _operator) = three_cluster_mesh(1).await;
    converged(&planes, 1).await;
    let mut rogue = kilo_node(3, 5);
    rogue.spec.as_mut().unwrap().pod_cidrs = Some(vec!["0.0.0.0/0".into()]);
    create_node(&planes[2], &rogue).await;
    eventually("c counts a skipped node", CONVERGE, || async {
        mesh_status(&planes[0], "mesh")
            .await
            .clusters
            .iter()
            .any(|c| c.name == "c" && c.skipped_nodes == 1)
    })
    .await;
    let status = mesh_status(&planes[0], "mesh").await;
    let c = status.clusters.iter().find(|c| c.name == "c").unwrap();
    assert_eq!(c.skipped[0].reason, "PodCIDROutsideCluster");
    assert!(
        !peer_names(&planes[0])
            .await
            .contains(&"c.node-5".to_owned()),
        "no Peer for a skipped node"
    );
    eventually("a NodeSkipped Event", CONVERGE, || async {
        let events = Api::<Event>::namespaced(admin(&planes[0]), NAMESPACE)
            .list(&ListParams::default())
            .await
            .unwrap();
        events.items.iter().any(|e| {
            e.reason.as_deref() == Some("NodeSkipped")
                && e.message.as_deref().unwrap_or("").contains("node-5")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_key_an_ip_or_a_pod_cidr_leave_one_peer_each() {
    let (planes, _operator) = three_cluster_mesh(1).await;
    converged(&planes, 1).await;
    // A copy of a's node-0 on c (same key), a node of c reusing c's node-0
    // WireGuard IP (named to sort first: age decides, not names), and one
    // reusing its pod CIDR.
    let mut copied = kilo_node(3, 5);
    copied.metadata.annotations.as_mut().unwrap().insert(
        "kilo.squat.ai/key".into(),
        api::fixtures::wireguard_key(1, 0),
    );
    let mut same_ip = kilo_node(3, 6);
    same_ip.metadata.name = Some("a-newcomer".into());
    same_ip
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("kilo.squat.ai/wireguard-ip".into(), "10.103.0.1/24".into());
    let mut same_pods = kilo_node(3, 7);
    same_pods.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.3.0.0/24".into()]);
    // Creation times are whole seconds: make the newcomers younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for node in [&copied, &same_ip, &same_pods] {
        create_node(&planes[2], node).await;
    }
    eventually("c's three newcomers skipped", CONVERGE, || async {
        let status = mesh_status(&planes[0], "mesh").await;
        let c = status.clusters.iter().find(|c| c.name == "c").unwrap();
        let reasons: Vec<(&str, &str)> = c
            .skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_str()))
            .collect();
        reasons
            == [
                ("a-newcomer", "DuplicateWireGuardIP"),
                ("node-5", "DuplicateKey"),
                ("node-7", "PodCIDROverlapsNode"),
            ]
    })
    .await;
    let status = mesh_status(&planes[0], "mesh").await;
    let c = status.clusters.iter().find(|c| c.name == "c").unwrap();
    assert!(
        c.skipped[0].message.contains("older node c/node-0"),
        "{}",
        c.skipped[0].message
    );
    assert!(
        c.skipped[1].message.contains("older node a/node-0"),
        "{}",
        c.skipped[1].message
    );
    // The older nodes keep their Peers; no key or range is on two Peers.
    assert_eq!(peer_names(&planes[1]).await, ["a.node-0", "c.node-0"]);
    assert_eq!(peer_names(&planes[0]).await, ["b.node-0", "c.node-0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_entries_reaching_one_cluster_are_refused_and_nothing_is_written() {
    let planes = ControlPlane::start_many(1).await.unwrap();
    create_node(&planes[0], &kilo_node(1, 0)).await;
    ensure_namespace(&planes[0]).await;
    // A Secret made by hand for "b" that reaches the hub itself.
    put_secret(&planes[0], "b-kubeconfig", planes[0].admin_kubeconfig()).await;
    create_mesh(
        &planes[0],
        "mesh",
        vec![entry("a", 1, true), entry("b", 2, false)],
    )
    .await;
    let _operator = start_operator(&planes[0]);
    eventually("InvalidSpec naming both entries", CONVERGE, || async {
        condition(&mesh_status(&planes[0], "mesh").await, "InvalidSpec").is_some_and(|c| {
            c.status == "True"
                && c.message
                    .contains(r#"entries "a" (spec.clusters[0]) and "b" reach the same cluster"#)
        })
    })
    .await;
    assert!(
        peer_names(&planes[0]).await.is_empty(),
        "no Peer of the hub's node written onto the hub"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_examples_shared_service_cidr_is_not_advertised_and_named() {
    let planes = ControlPlane::start_many(2).await.unwrap();
    create_node(&planes[0], &kilo_node(1, 0)).await;
    create_node(&planes[1], &kilo_node(2, 0)).await;
    connect(&planes[0], &planes[1], "b").await;
    let mut a = entry("a", 1, true);
    let mut b = entry("b", 2, false);
    a.service_cidr = Some("10.96.0.0/12".into());
    b.service_cidr = Some("10.96.0.0/12".into());
    create_mesh(&planes[0], "mesh", vec![a, b]).await;
    let _operator = start_operator(&planes[0]);
    eventually("b.node-0 on a", CONVERGE, || async {
        peer_names(&planes[0]).await == ["b.node-0"]
    })
    .await;
    let peer = &peers(&planes[0]).await["b.node-0"];
    assert!(
        !peer.spec.allowed_ips.contains(&"10.96.0.0/12".into()),
        "{:?}",
        peer.spec.allowed_ips
    );
    assert!(
        peer.spec.allowed_ips.contains(&"10.2.0.0/24".into()),
        "pods stay meshed"
    );
    eventually("CIDRConflict names both clusters", CONVERGE, || async {
        let status = mesh_status(&planes[0], "mesh").await;
        condition(&status, "CIDRConflict").is_some_and(|c| {
            c.status == "True"
                && c.message
                    .contains("a serviceCIDR 10.96.0.0/12 overlaps b serviceCIDR 10.96.0.0/12")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_rotated_credentials_keep_the_peers_and_say_why() {
    let (planes, _operator) = three_cluster_mesh(1).await;
    converged(&planes, 1).await;
    let before = versions(&planes).await;

    // An exec plugin is refused; b's Peers stay everywhere.
    let exec = "apiVersion: v1\nkind: Config\ncurrent-context: x\ncontexts:\n- name: x\n  context: {cluster: x, user: x}\nclusters:\n- name: x\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: x\n  user:\n    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}\n";
    put_secret(&planes[0], "b-kubeconfig", exec).await;
    eventually("CredentialsInvalid names b", CONVERGE, || async {
        condition(&mesh_status(&planes[0], "mesh").await, "CredentialsInvalid").is_some_and(|c| {
            c.status == "True"
                && c.message.contains("cluster b")
                && c.message.contains("--allow-kubeconfig-exec")
        })
    })
    .await;
    put_secret(&planes[0], "c-kubeconfig", "not: [a kubeconfig").await;
    eventually("CredentialsInvalid names c", CONVERGE, || async {
        condition(&mesh_status(&planes[0], "mesh").await, "CredentialsInvalid")
            .is_some_and(|c| c.message.contains("cluster c"))
    })
    .await;
    assert_eq!(
        versions(&planes).await,
        before,
        "no Peer was touched while credentials were bad"
    );

    // A kubeconfig for a server that is not there: unreachable, Peers kept.
    let nowhere = planes[1]
        .admin_kubeconfig()
        .replace(&planes[1].server_url(), "https://127.0.0.1:1");
    put_secret(&planes[0], "b-kubeconfig", &nowhere).await;
    eventually("ClustersUnreachable names b", CONVERGE, || async {
        let status = mesh_status(&planes[0], "mesh").await;
        condition(&status, "ClustersUnreachable")
            .is_some_and(|c| c.status == "True" && c.message.contains("cluster b"))
    })
    .await;
    assert_eq!(
        versions(&planes).await,
        before,
        "no Peer was touched while b was unreachable"
    );

    // A fresh token: the new client is used and the mesh is Ready again.
    rotate(&planes[0], &planes[1], "b").await;
    rotate(&planes[0], &planes[2], "c").await;
    converged(&planes, 1).await;
    create_node(&planes[1], &kilo_node(2, 1)).await;
    eventually("the rotated client sees new nodes", CONVERGE, || async {
        peer_names(&planes[0])
            .await
            .contains(&"b.node-1".to_owned())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_outage_keeps_last_known_peers_and_recovers() {
    let (mut planes, _operator) = three_cluster_mesh(1).await;
    converged(&planes, 1).await;
    planes[2].stop_apiserver();
    eventually("c stale", CONVERGE, || async {
        let status = mesh_status(&planes[0], "mesh").await;
        status
            .clusters
            .iter()
            .any(|c| c.name == "c" && !c.reachable && c.stale_since.is_some())
    })
    .await;
    assert_eq!(
        peer_names(&planes[0]).await,
        ["b.node-0", "c.node-0"],
        "c's Peer kept on a"
    );
    assert_eq!(
        peer_names(&planes[1]).await,
        ["a.node-0", "c.node-0"],
        "c's Peer kept on b"
    );
    planes[2].start_apiserver().await.unwrap();
    converged(&planes, 1).await;
    let status = mesh_status(&planes[0], "mesh").await;
    assert!(
        status
            .clusters
            .iter()
            .all(|c| c.reachable && c.stale_since.is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_peers_are_left_alone_and_owned_peers_are_repaired() {
    use api::{Peer, PeerSpec};
    use kube::{
        Api,
        api::{DeleteParams, PostParams},
    };
    let planes = three_clusters(1).await;
    // Someone already has a Peer named like the one the mesh wants on a.
    let foreign = Peer::new(
        "c.node-0",
        PeerSpec {
            allowed_ips: vec!["10.77.0.0/24".into()],
            endpoint: None,
            persistent_keepalive: None,
            preshared_key: None,
            public_key: key(7, 7),
        },
    );
    Api::<Peer>::all(admin(&planes[0]))
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let _operator = start_operator(&planes[0]);
    eventually("PeerConflict reported", CONVERGE, || async {
        condition(&mesh_status(&planes[0], "mesh").await, "PeerConflict")
            .is_some_and(|c| c.status == "True" && c.message.contains("Peer c.node-0 on cluster a"))
    })
    .await;
    assert_eq!(
        peers(&planes[0]).await["c.node-0"].spec.public_key,
        key(7, 7),
        "the foreign Peer is untouched"
    );

    // An owned Peer deleted or edited by hand comes back as it was.
    eventually("b.node-0 on c", CONVERGE, || async {
        peer_names(&planes[2])
            .await
            .contains(&"b.node-0".to_owned())
    })
    .await;
    let on_c = Api::<Peer>::all(admin(&planes[2]));
    on_c.delete("b.node-0", &DeleteParams::default())
        .await
        .unwrap();
    eventually("b.node-0 recreated", CONVERGE, || async {
        peer_names(&planes[2])
            .await
            .contains(&"b.node-0".to_owned())
    })
    .await;
    let patch = serde_json::json!({"spec": {"allowedIPs": ["10.99.0.0/16"]}});
    on_c.patch(
        "b.node-0",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    eventually("b.node-0 repaired", CONVERGE, || async {
        peers(&planes[2]).await["b.node-0"]
            .spec
            .allowed_ips
            .contains(&"10.2.0.0/24".to_owned())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_mesh_removes_its_peers_everywhere_and_restarts_write_nothing() {
    let (planes, operator) = three_cluster_mesh(2).await;
    converged(&planes, 2).await;

    // A restarted operator on a converged mesh writes nothing.
    drop(operator);
    let before = versions(&planes).await;
    let status_before = mesh_status(&planes[0], "mesh").await;
    let operator = start_operator(&planes[0]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(versions(&planes).await, before, "a restart rewrote Peers");
    assert_eq!(
        mesh_status(&planes[0], "mesh").await,
        status_before,
        "a restart rewrote the status"
    );

    delete_mesh(&planes[0], &planes).await;
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_secret_keeps_peers_and_a_deleted_mesh_gives_that_cluster_up_with_a_warning() {
    use k8s_openapi::api::core::v1::{Event, Secret};
    use kube::{
        Api,
        api::{DeleteParams, ListParams},
    };
    let (planes, _operator) = three_cluster_mesh(1).await;
    converged(&planes, 1).await;
    Api::<Secret>::namespaced(admin(&planes[0]), NAMESPACE)
        .delete("c-kubeconfig", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "CredentialsInvalid says the Secret is gone",
        CONVERGE,
        || async {
            condition(&mesh_status(&planes[0], "mesh").await, "CredentialsInvalid").is_some_and(
                |c| {
                    c.status == "True"
                        && c.message
                            .contains("Secret kilo-system/c-kubeconfig not found")
                },
            )
        },
    )
    .await;
    assert_eq!(
        peer_names(&planes[0]).await,
        ["b.node-0", "c.node-0"],
        "c's Peer kept on a"
    );

    delete_mesh(&planes[0], &planes[..2]).await;
    assert_eq!(
        peer_names(&planes[2]).await,
        ["a.node-0", "b.node-0"],
        "unreachable c keeps its Peers"
    );
    let events = Api::<Event>::namespaced(admin(&planes[0]), NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap();
    let given_up = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("CleanupGivenUp"))
        .expect("a CleanupGivenUp Event");
    let message = given_up.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("cluster c")
            && message.contains("kubectl delete peers -l kilo-clustermesh.io/mesh="),
        "{message}"
    );
}

/// Replaces the spec's clusters of the mesh, as `kubectl apply` would.
async fn set_clusters(hub: &ControlPlane, clusters: Vec<api::ClusterEntry>) {
    use kube::{
        Api,
        api::{Patch, PatchParams},
    };
    let patch = serde_json::json!({ "spec": { "clusters": clusters } });
    Api::<api::ClusterMesh>::namespaced(admin(hub), NAMESPACE)
        .patch("mesh", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The message of the first Event with `reason` about the mesh, if any.
async fn event_message(hub: &ControlPlane, reason: &str) -> Option<String> {
    use k8s_openapi::api::core::v1::Event;
    use kube::{Api, api::ListParams};
    let events = Api::<Event>::namespaced(admin(hub), NAMESPACE)
        .list(&ListParams::default())
        .await
        .ok()?;
    events
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.message.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_removed_from_the_spec_keeps_none_of_the_meshs_peers() {
    let (mut planes, _operator) = three_cluster_mesh(1).await;
    converged(&planes, 1).await;

    // c leaves while reachable, its Secret still there: cleaned on every side.
    set_clusters(&planes[0], vec![entry("a", 1, true), entry("b", 2, false)]).await;
    eventually(
        "c's Peers gone from a and b, the mesh's Peers gone from c",
        CONVERGE,
        || async {
            peer_names(&planes[0]).await == ["b.node-0"]
                && peer_names(&planes[1]).await == ["a.node-0"]
                && peer_names(&planes[2]).await.is_empty()
        },
    )
    .await;
    // The pass after the removal publishes it.
    eventually("the RemovedClusterCleaned Event", CONVERGE, || async {
        event_message(&planes[0], "RemovedClusterCleaned")
            .await
            .is_some_and(|m| m.contains("cluster c left the mesh"))
    })
    .await;

    // b leaves while its API server is down (and c comes back): the mesh's
    // Peers on b are kept until the cleanup timeout (20 s in these tests),
    // then given up with an Event.
    planes[1].stop_apiserver();
    set_clusters(&planes[0], vec![entry("a", 1, true), entry("c", 3, false)]).await;
    eventually(
        "the cleanup of b pending, told in the status",
        CONVERGE,
        || async {
            let status = mesh_status(&planes[0], "mesh").await;
            let ready = condition(&status, "Ready").is_some_and(|c| c.status == "True");
            condition(&status, "CleanupPending").is_some_and(|c| {
                c.status == "True"
                    && c.message.contains("cluster b left the mesh at")
                    && c.message.contains("last attempt:")
            }) && ready
        },
    )
    .await;
    eventually(
        "the cleanup of b given up",
        Duration::from_secs(60),
        || async {
            event_message(&planes[0], "CleanupGivenUp")
                .await
                .is_some_and(|m| {
                    m.contains("cluster b left the mesh") && m.contains("kubectl delete peers -l")
                })
        },
    )
    .await;
    eventually("b's Peer gone from a, c's back", CONVERGE, || async {
        peer_names(&planes[0]).await == ["c.node-0"]
    })
    .await;
    planes[1].start_apiserver().await.unwrap();
    assert_eq!(
        peer_names(&planes[1]).await,
        ["a.node-0"],
        "given up: left on b, as the Event says"
    );
    let status = mesh_status(&planes[0], "mesh").await;
    assert!(
        condition(&status, "CleanupPending").is_some_and(|c| c.status == "False"),
        "nothing pending once given up"
    );
}
