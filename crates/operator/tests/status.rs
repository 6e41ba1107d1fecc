//! `kilo-clustermesh-operator status` as a user or a script runs it, on a
//! real mesh: what it prints and its exit code while the mesh is Ready with
//! warnings, while a cluster is down, and when there is nothing to show.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::{path::Path, process::Output, time::Duration};

use common::*;

async fn run_status(kubeconfig: &Path, args: &[&str]) -> Output {
    run_binary("status", kubeconfig, args).await
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_cluster_and_exits_with_the_meshs_health() {
    let mut planes = two_cluster_mesh().await;
    let _operator = start_operator(&planes[0]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("hub.kubeconfig");
    std::fs::write(&kubeconfig, planes[0].admin_kubeconfig()).unwrap();

    // Ready, but the one-hour token is within the warning window: exit 3.
    let output = run_status(&kubeconfig, &["mesh", "--wait", "30s"]).await;
    let said = text(&output);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert!(
        said.contains("ClusterMesh kilo-system/mesh: Ready, with warnings (2 clusters, 2 peers"),
        "{said}"
    );
    assert!(said.contains("a (local)  yes"), "{said}");
    assert!(
        said.contains("expire in 59m") || said.contains("expire in 60m"),
        "{said}"
    );
    assert!(
        said.contains("CredentialsExpiring: cluster b: its token expires at"),
        "{said}"
    );

    let output = run_status(&kubeconfig, &["--output", "json"]).await;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report[0]["verdict"], "ReadyWithWarnings");
    assert_eq!(report[0]["status"]["clusters"][1]["name"], "b");

    // A remote API server down: not Ready, exit 1, and the reason.
    planes[1].stop_apiserver();
    let mut output = run_status(&kubeconfig, &["mesh"]).await;
    for _ in 0..60 {
        if output.status.code() == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        output = run_status(&kubeconfig, &["mesh"]).await;
    }
    let said = text(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("ClusterMesh kilo-system/mesh: NOT READY"),
        "{said}"
    );
    assert!(said.contains("ClustersUnreachable: cluster b"), "{said}");
    assert!(said.contains("no, stale"), "{said}");

    // Nothing to show: exit 2, and what to do.
    let output = run_status(&kubeconfig, &["other"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("there is no ClusterMesh other"));
}
