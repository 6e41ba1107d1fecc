//! The real binary: `kilo-clustermesh-operator run` as a process, with leader
//! election on a Lease, the metrics and health endpoints, and a 2-cluster
//! mesh to converge.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::{net::TcpListener, time::Duration};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use testkit::http_get;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_elects_a_leader_serves_metrics_and_meshes_two_clusters() {
    let planes = two_cluster_mesh().await;

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("hub.kubeconfig");
    std::fs::write(&kubeconfig, planes[0].admin_kubeconfig()).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_kilo-clustermesh-operator"))
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
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", "operator-0")
        .kill_on_drop(true)
        .spawn()
        .unwrap();

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
