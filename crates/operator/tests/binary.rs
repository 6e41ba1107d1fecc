//! The real binary: `kilo-clustermesh-operator run` as a process, with leader
//! election on a Lease, the metrics and health endpoints, and a 2-cluster
//! mesh to converge.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::{
    net::TcpListener,
    path::Path,
    time::{Duration, Instant},
};

use common::*;
use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::Api;
use testkit::{ControlPlane, http_get};

/// Starts `kilo-clustermesh-operator run` as the pod `name` would, with
/// leader election in the mesh's namespace.
fn replica(kubeconfig: &Path, name: &str, port: u16, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kilo-clustermesh-operator"))
        .args([
            "run",
            "--namespace",
            NAMESPACE,
            "--leader-election-namespace",
            NAMESPACE,
        ])
        .args([
            "--metrics-address",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", name)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `signal` (STOP, CONT, KILL) to a replica.
fn signal(replica: &tokio::process::Child, signal: &str) {
    let pid = replica.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The holder of the leader-election Lease.
async fn lease_holder(hub: &ControlPlane) -> Option<String> {
    Api::<Lease>::namespaced(admin(hub), NAMESPACE)
        .get_opt("kilo-clustermesh-operator")
        .await
        .unwrap()
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity)
}

/// The writes replica `name` sent to any of `planes` at or after `since`.
fn writes_of(planes: &[ControlPlane], name: &str, since: Timestamp) -> Vec<testkit::AuditedWrite> {
    let agent = format!("({name})");
    planes
        .iter()
        .flat_map(|plane| plane.audited_writes().unwrap())
        .filter(|write| write.user_agent.ends_with(&agent) && write.received >= since)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_elects_a_leader_serves_metrics_and_meshes_two_clusters() {
    let planes = two_cluster_mesh().await;

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("hub.kubeconfig");
    std::fs::write(&kubeconfig, planes[0].admin_kubeconfig()).unwrap();
    let port = free_port();
    let _operator = replica(&kubeconfig, "operator-0", port, &[]);

    let converge = Duration::from_secs(30);
    eventually("a.node-0 on b and b.node-0 on a", converge, || async {
        peer_names(&planes[0]).await == ["b.node-0"] && peer_names(&planes[1]).await == ["a.node-0"]
    })
    .await;
    let lease = Api::<Lease>::namespaced(admin(&planes[0]), NAMESPACE)
        .get("kilo-clustermesh-operator")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("operator-0")
    );

    eventually("/readyz ok", converge, || async {
        http_get(port, "/readyz").await.starts_with("HTTP/1.0 200")
    })
    .await;
    assert!(http_get(port, "/healthz").await.starts_with("HTTP/1.0 200"));
    eventually("reachability in /metrics", converge, || async {
        let metrics = http_get(port, "/metrics").await;
        metrics.contains(r#"kilo_clustermesh_cluster_reachable{mesh="ClusterMesh.v1alpha1.kilo.squat.ai/mesh.kilo-system",cluster="b"} 1"#)
            && metrics.contains("kilo_clustermesh_peer_writes_total{cluster=\"a\",op=\"apply\"} 1")
    })
    .await;
    // What the operator costs each API server, and where its passes spend
    // their time.
    let metrics = http_get(port, "/metrics").await;
    for sample in [
        r#"kilo_clustermesh_kube_requests_total{client="local",verb="watch"}"#,
        r#"kilo_clustermesh_kube_requests_total{client="local",verb="patch"}"#,
        r#"kilo_clustermesh_kube_requests_total{client="kilo-system/b-kubeconfig",verb="watch"}"#,
        r#"kilo_clustermesh_kube_requests_total{client="kilo-system/b-kubeconfig",verb="patch"}"#,
        r#"kilo_clustermesh_stage_duration_seconds_count{stage="plan"}"#,
        r#"kilo_clustermesh_stage_duration_seconds_count{stage="apply"}"#,
    ] {
        assert!(
            metrics.contains(sample),
            "{sample} missing from:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hand_over_and_a_deposed_leader_writes_nothing() {
    let planes = two_cluster_mesh().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("hub.kubeconfig");
    std::fs::write(&kubeconfig, planes[0].admin_kubeconfig()).unwrap();
    let lease = ["--leader-election-lease-duration", "4s"];
    let converge = Duration::from_secs(30);

    let mut first = replica(&kubeconfig, "replica-0", free_port(), &lease);
    eventually("replica-0 leads and meshes", converge, || async {
        lease_holder(&planes[0]).await.as_deref() == Some("replica-0")
            && peer_names(&planes[1]).await == ["a.node-0"]
    })
    .await;
    let second = replica(&kubeconfig, "replica-1", free_port(), &lease);

    // The leader frozen past its Lease: the standby takes over.
    signal(&first, "STOP");
    let frozen = Instant::now();
    eventually("replica-1 took the Lease", converge, || async {
        lease_holder(&planes[0]).await.as_deref() == Some("replica-1")
    })
    .await;
    eprintln!(
        "figure: standby took over {:.1} s after the leader froze",
        frozen.elapsed().as_secs_f64()
    );
    // A change the frozen leader's watches hold for it: it would write.
    create_node(&planes[1], &kilo_node(2, 1)).await;
    eventually("the new leader wrote b.node-1 on a", converge, || async {
        peer_names(&planes[0]).await == ["b.node-0", "b.node-1"]
    })
    .await;

    let resumed = Timestamp::now();
    signal(&first, "CONT");
    let exited = tokio::time::timeout(converge, first.wait()).await;
    assert!(
        exited.is_ok_and(|status| status.is_ok_and(|s| !s.success())),
        "the deposed leader exits with an error"
    );
    let deposed_writes = writes_of(&planes, "replica-0", resumed);
    assert!(
        deposed_writes.is_empty(),
        "the deposed leader wrote after it resumed: {deposed_writes:?}"
    );
    assert!(
        !writes_of(&planes, "replica-1", resumed - Duration::from_secs(60)).is_empty(),
        "the audit log tells the replicas apart"
    );

    // The leader killed: a new standby takes over and writes.
    let _third = replica(&kubeconfig, "replica-2", free_port(), &lease);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Timestamp::now();
    signal(&second, "KILL");
    create_node(&planes[1], &kilo_node(2, 2)).await;
    eventually("the next leader wrote b.node-2 on a", converge, || async {
        peer_names(&planes[0]).await == ["b.node-0", "b.node-1", "b.node-2"]
    })
    .await;
    let first_write = writes_of(&planes, "replica-2", killed_at)
        .into_iter()
        .map(|write| write.received)
        .min()
        .unwrap();
    eprintln!(
        "figure: first write of the new leader {:.1} s after the leader was killed (Lease 4 s)",
        first_write.duration_since(killed_at).as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_outage_longer_than_the_lease_never_leaves_a_replica_fenced_for_good() {
    let mut planes = two_cluster_mesh().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("hub.kubeconfig");
    std::fs::write(&kubeconfig, planes[0].admin_kubeconfig()).unwrap();
    let lease = ["--leader-election-lease-duration", "4s"];
    let converge = Duration::from_secs(30);
    let mut operator = replica(&kubeconfig, "replica-0", free_port(), &lease);
    eventually("replica-0 leads and meshes", converge, || async {
        peer_names(&planes[1]).await == ["a.node-0"]
    })
    .await;

    // The hub's API server is down for twice the Lease: the replica cannot
    // renew it.
    planes[0].stop_apiserver();
    tokio::time::sleep(Duration::from_secs(8)).await;
    planes[0].start_apiserver().await.unwrap();
    let back = Instant::now();
    create_node(&planes[1], &kilo_node(2, 1)).await;
    // It leads again, or exits for its Deployment to start it again: either
    // way the mesh follows the world again.
    let mut restarts = 0;
    eventually("b.node-1 on a", Duration::from_secs(60), || {
        if operator.try_wait().ok().flatten().is_some() {
            restarts += 1;
            operator = replica(&kubeconfig, "replica-0", free_port(), &lease);
        }
        async { peer_names(&planes[0]).await == ["b.node-0", "b.node-1"] }
    })
    .await;
    eprintln!(
        "figure: meshing again {:.1} s after the hub's API server came back ({restarts} restarts)",
        back.elapsed().as_secs_f64()
    );
}
