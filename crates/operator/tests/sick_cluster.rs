//! A sick cluster never stalls the mesh or hides behind Ready: a remote
//! behind a fault proxy is blackholed (a partition, a frozen API server),
//! its token is revoked, Kilo is missing. Each is reported with its own
//! cause within seconds, the other clusters keep converging, and no Peer is
//! lost. The figures are printed (`--nocapture`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::jiff::Timestamp;
use testkit::{ControlPlane, Fault, FaultProxy};

/// The longest a fault may take to show in the status: the probe's
/// interval and timeout say 14 s (`probe.rs`); the rest is slack for a
/// loaded machine.
const DETECTED: Duration = Duration::from_secs(20);
const CONVERGE: Duration = Duration::from_secs(30);

/// Clusters a (hub), b and c with one node each, b reached through a fault
/// proxy, and the operator running.
async fn mesh_with_b_behind_a_proxy() -> (Vec<ControlPlane>, FaultProxy, Operator) {
    let planes = ControlPlane::start_many(3).await.unwrap();
    for (k, plane) in planes.iter().enumerate() {
        create_node(plane, &kilo_node(k as u8 + 1, 0)).await;
    }
    connect(&planes[0], &planes[1], "b").await;
    connect(&planes[0], &planes[2], "c").await;
    let proxy = FaultProxy::start(planes[1].port()).await.unwrap();
    let through_proxy = planes[1]
        .service_account_kubeconfig(NAMESPACE, "kilo-clustermesh", None)
        .await
        .unwrap()
        .replace(&planes[1].server_url(), &proxy.url());
    put_secret(&planes[0], "b-kubeconfig", &through_proxy).await;
    let clusters = vec![
        entry("a", 1, true),
        entry("b", 2, false),
        entry("c", 3, false),
    ];
    create_mesh(&planes[0], "mesh", clusters).await;
    let operator = start_operator(&planes[0]);
    eventually("the mesh converged", CONVERGE, || async {
        peer_names(&planes[0]).await == ["b.node-0", "c.node-0"]
            && peer_names(&planes[1]).await == ["a.node-0", "c.node-0"]
    })
    .await;
    (planes, proxy, operator)
}

/// The status message of cluster `name`, once it is unreachable.
async fn unreachable_message(hub: &ControlPlane, name: &str) -> Option<String> {
    let status = mesh_status(hub, "mesh").await;
    let cluster = status.clusters.iter().find(|c| c.name == name)?;
    (!cluster.reachable && cluster.stale_since.is_some())
        .then(|| cluster.message.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_remote_is_reported_and_the_others_converge_without_it() {
    let (planes, proxy, _operator) = mesh_with_b_behind_a_proxy().await;
    proxy.set(Fault::Blackhole);
    let blackholed = Instant::now();
    eventually("b reported unreachable", DETECTED, || async {
        unreachable_message(&planes[0], "b")
            .await
            .is_some_and(|m| m.contains("did not answer within"))
    })
    .await;
    figure(
        "blackholed remote reported unreachable after {} s",
        blackholed,
    );

    // The others follow a change as if b were healthy.
    let added = Instant::now();
    create_node(&planes[2], &kilo_node(3, 1)).await;
    eventually("c's new node on a", CONVERGE, || async {
        peer_names(&planes[0]).await == ["b.node-0", "c.node-0", "c.node-1"]
    })
    .await;
    figure(
        "node added on c reached a in {} s while b is blackholed",
        added,
    );
    let ready = condition(&mesh_status(&planes[0], "mesh").await, "Ready").cloned();
    assert!(
        ready.is_some_and(|c| c.status == "False"),
        "not Ready while b is blackholed"
    );

    proxy.set(Fault::Pass);
    let healed = Instant::now();
    eventually("b reachable again", Duration::from_secs(10), || async {
        unreachable_message(&planes[0], "b").await.is_none()
    })
    .await;
    figure("healed remote reachable after {} s", healed);
    eventually("c's new node on b", CONVERGE, || async {
        peer_names(&planes[1]).await == ["a.node-0", "c.node-0", "c.node-1"]
    })
    .await;
    assert_eq!(
        peer_names(&planes[2]).await,
        ["a.node-0", "b.node-0"],
        "b's Peer kept on c throughout"
    );
}

/// Prints a figure the test measured: `what`, with `{}` standing for the
/// seconds since `since`.
fn figure(what: &str, since: Instant) {
    let seconds = format!("{:.2}", since.elapsed().as_secs_f64());
    eprintln!("figure: {}", what.replacen("{}", &seconds, 1));
}

/// Whether the status still calls cluster `name` reachable.
async fn still_reachable(hub: &ControlPlane, name: &str) -> bool {
    let status = mesh_status(hub, "mesh").await;
    status
        .clusters
        .iter()
        .any(|c| c.name == name && c.reachable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_remote_holds_up_only_its_own_writes() {
    let (planes, proxy, _operator) = mesh_with_b_behind_a_proxy().await;
    // Not yet detected: every write to b hangs until its request times out.
    proxy.set(Fault::Blackhole);
    let mut on_a = vec!["b.node-0".to_owned(), "c.node-0".to_owned()];
    for i in 1..=2 {
        let added = Instant::now();
        create_node(&planes[2], &kilo_node(3, i)).await;
        on_a.push(format!("c.node-{i}"));
        eventually(&format!("c.node-{i} on a"), CONVERGE, || async {
            peer_names(&planes[0]).await == on_a
        })
        .await;
        figure(
            &format!("node {i} added on c reached a in {{}} s while b hangs"),
            added,
        );
    }
    // Both passes ended without waiting for b: they were done before the
    // probe found b unreachable, so nothing relied on detecting it.
    assert!(
        still_reachable(&planes[0], "b").await,
        "c's nodes reached a only after b was detected"
    );

    proxy.set(Fault::Pass);
    eventually("c's new nodes on b", CONVERGE, || async {
        peer_names(&planes[1]).await == ["a.node-0", "c.node-0", "c.node-1", "c.node-2"]
    })
    .await;
    eventually("the mesh Ready", CONVERGE, || async {
        condition(&mesh_status(&planes[0], "mesh").await, "Ready")
            .is_some_and(|c| c.status == "True")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_remote_is_written_late_and_slows_no_other() {
    let (planes, proxy, _operator) = mesh_with_b_behind_a_proxy().await;
    // Every chunk each way 1 s late: requests take seconds, within the
    // probe's and the requests' timeouts.
    proxy.set(Fault::Delay(Duration::from_secs(1)));
    let added = Instant::now();
    create_node(&planes[2], &kilo_node(3, 1)).await;
    eventually("c.node-1 on a", CONVERGE, || async {
        peer_names(&planes[0]).await == ["b.node-0", "c.node-0", "c.node-1"]
    })
    .await;
    figure("node added on c reached a in {} s while b is slow", added);
    eventually("c.node-1 on the slow b", CONVERGE, || async {
        peer_names(&planes[1]).await == ["a.node-0", "c.node-0", "c.node-1"]
    })
    .await;
    figure("and reached the slow b in {} s", added);
    let status = mesh_status(&planes[0], "mesh").await;
    assert!(
        status.clusters.iter().all(|c| c.reachable),
        "a slow cluster is not unreachable: {:?}",
        status.clusters
    );
    assert!(
        condition(&status, "Ready").is_some_and(|c| c.status == "True"),
        "still Ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_credentials_invalid_while_old_watches_stream() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::{Api, api::DeleteParams};
    let (planes, _proxy, _operator) = mesh_with_b_behind_a_proxy().await;
    Api::<ServiceAccount>::namespaced(admin(&planes[1]), NAMESPACE)
        .delete("kilo-clustermesh", &DeleteParams::default())
        .await
        .unwrap();
    let revoked = Instant::now();
    eventually("CredentialsInvalid for b", DETECTED, || async {
        condition(&mesh_status(&planes[0], "mesh").await, "CredentialsInvalid").is_some_and(|c| {
            c.status == "True"
                && c.message.contains("cluster b")
                && c.message.contains("rejected the token")
        })
    })
    .await;
    figure("revoked token reported after {} s", revoked);
    assert_eq!(
        peer_names(&planes[0]).await,
        ["b.node-0", "c.node-0"],
        "b's Peers kept"
    );
    assert_eq!(
        peer_names(&planes[2]).await,
        ["a.node-0", "b.node-0"],
        "b's Peers kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_expiring_then_credentials_invalid() {
    let (planes, proxy, _operator) = mesh_with_b_behind_a_proxy().await;
    // The API server refuses a token from 60 s after its expiry: dated so
    // that it is refused 15 s from now.
    let refused_in = Duration::from_secs(15);
    let expires = Timestamp::now() + refused_in - testkit::ACCEPTED_PAST_EXPIRY;
    let expiring = planes[1]
        .expiring_service_account_kubeconfig(NAMESPACE, "kilo-clustermesh", expires)
        .await
        .unwrap()
        .replace(&planes[1].server_url(), &proxy.url());
    put_secret(&planes[0], "b-kubeconfig", &expiring).await;
    let refused = Instant::now() + refused_in;
    eventually(
        "CredentialsExpiring for b, b reachable",
        CONVERGE,
        || async {
            let status = mesh_status(&planes[0], "mesh").await;
            still_reachable(&planes[0], "b").await
                && condition(&status, "CredentialsExpiring")
                    .is_some_and(|c| c.status == "True" && c.message.contains("cluster b"))
        },
    )
    .await;
    eventually(
        "CredentialsInvalid for b",
        refused_in + DETECTED,
        || async {
            condition(&mesh_status(&planes[0], "mesh").await, "CredentialsInvalid").is_some_and(
                |c| {
                    c.status == "True"
                        && c.message.contains("cluster b")
                        && c.message.contains("rejected the token")
                },
            )
        },
    )
    .await;
    eprintln!(
        "figure: expired token reported {:.1} s after the API server began to refuse it",
        Instant::now()
            .saturating_duration_since(refused)
            .as_secs_f64()
    );
    assert_eq!(
        (peer_names(&planes[0]).await, peer_names(&planes[2]).await),
        (
            vec!["b.node-0".to_owned(), "c.node-0".to_owned()],
            vec!["a.node-0".to_owned(), "b.node-0".to_owned()]
        ),
        "b's Peers kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_without_kilo_is_told_so() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::{Api, api::DeleteParams};
    let (planes, _proxy, _operator) = mesh_with_b_behind_a_proxy().await;
    Api::<CustomResourceDefinition>::all(admin(&planes[2]))
        .delete("peers.kilo.squat.ai", &DeleteParams::default())
        .await
        .unwrap();
    eventually("c reported without Kilo", DETECTED, || async {
        unreachable_message(&planes[0], "c")
            .await
            .is_some_and(|m| m.contains("Kilo is not installed"))
    })
    .await;
    let message = unreachable_message(&planes[0], "c")
        .await
        .unwrap_or_default();
    assert!(
        !message.contains("Failed to parse"),
        "no raw client error: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_under_a_remote_keeps_every_peer() {
    let (mut planes, _proxy, _operator) = mesh_with_b_behind_a_proxy().await;
    let before = (peer_names(&planes[0]).await, peer_names(&planes[2]).await);
    let restarted = Instant::now();
    planes[1].restart_etcd().await.unwrap();
    figure("b's etcd restarted, API server ready in {} s", restarted);
    eventually("b reachable and the mesh Ready", CONVERGE, || async {
        let status = mesh_status(&planes[0], "mesh").await;
        status.clusters.iter().all(|c| c.reachable)
            && condition(&status, "Ready").is_some_and(|c| c.status == "True")
    })
    .await;
    figure("Ready again {} s after the restart began", restarted);
    assert_eq!(
        (peer_names(&planes[0]).await, peer_names(&planes[2]).await),
        before,
        "no Peer lost"
    );
    create_node(&planes[1], &kilo_node(2, 1)).await;
    eventually("b's new node on a", CONVERGE, || async {
        peer_names(&planes[0]).await == ["b.node-0", "b.node-1", "c.node-0"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_api_server_restarting_keeps_every_peer_and_the_mesh_follows_again() {
    let (mut planes, _proxy, _operator) = mesh_with_b_behind_a_proxy().await;
    let before = (peer_names(&planes[0]).await, peer_names(&planes[2]).await);
    // Peers written meanwhile make the hub's watches' resource versions
    // older than the restarted API server's watch cache.
    let restarted = Instant::now();
    planes[0].stop_apiserver();
    create_node(&planes[1], &kilo_node(2, 1)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    planes[0].start_apiserver().await.unwrap();
    figure("the hub's API server ready again in {} s", restarted);
    eventually(
        "b's new node on a, and the mesh Ready",
        Duration::from_secs(60),
        || async {
            let status = mesh_status(&planes[0], "mesh").await;
            peer_names(&planes[0]).await == ["b.node-0", "b.node-1", "c.node-0"]
                && status.clusters.iter().all(|c| c.reachable)
                && condition(&status, "Ready").is_some_and(|c| c.status == "True")
        },
    )
    .await;
    figure("Ready again {} s after the restart began", restarted);
    assert!(
        peer_names(&planes[2])
            .await
            .contains(&"b.node-1".to_owned())
    );
    assert_eq!(before.1.len() + 1, peer_names(&planes[2]).await.len());
}
