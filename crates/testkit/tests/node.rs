//! The test kit's node: a Deployment becomes a running pod, and nothing of
//! the node is left once it is dropped (root; `make tools node-packages`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kilo_clustermesh_testkit::{ControlPlane, Node, NodeNetwork};
use kube::{
    Api,
    api::{ListParams, PostParams},
};

/// A Deployment of the node's own sandbox image, as the operator's chart runs
/// its pod: non-root, read-only root filesystem, no capabilities.
fn sleeper() -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": "sleeper", "namespace": "default" },
        "spec": {
            "selector": { "matchLabels": { "app": "sleeper" } },
            "template": {
                "metadata": { "labels": { "app": "sleeper" } },
                "spec": {
                    "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532 },
                    "containers": [{
                        "name": "sleeper",
                        "image": "localhost/kcm-pause:1",
                        "imagePullPolicy": "Never",
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                    }],
                },
            },
        },
    }))
    .unwrap()
}

/// The containers' cgroups of every containerd's CRI (`/k8s.io/<id>`).
fn cgroups() -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir("/sys/fs/cgroup/memory/k8s.io")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

fn running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test]
async fn a_deployment_runs_on_the_node_and_the_node_leaves_nothing_behind() {
    // After the sweep of a killed test's node, which `create` runs.
    let network = NodeNetwork::create().unwrap();
    let cgroups_before = cgroups();
    let netns = network.netns();
    let pod_cidr = network.pod_cidr();
    let hub = ControlPlane::start_on("hub", network.host_address())
        .await
        .unwrap();
    let started = Instant::now();
    let node = Node::start(&hub, network, &[]).await.unwrap();
    let node_started = started.elapsed();
    let dir = format!("{}", std::env::temp_dir().display());

    let client = hub.admin_client();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &sleeper())
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client, "default");
    let created = Instant::now();
    let pod = loop {
        let list = pods
            .list(&ListParams::default().labels("app=sleeper"))
            .await
            .unwrap();
        if let Some(pod) = list.items.into_iter().find(running) {
            break pod;
        }
        assert!(
            created.elapsed() < Duration::from_secs(90),
            "no pod running after 90 s:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "testkit: node ready in {:.1} s, its first pod running {:.1} s after its Deployment",
        node_started.as_secs_f64(),
        created.elapsed().as_secs_f64()
    );
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(node.name()));
    let ip = pod.status.clone().unwrap().pod_ip.unwrap();
    let prefix = pod_cidr.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "pod IP {ip} outside {pod_cidr}");

    // Deleting the pod stops its containers: the kubelet removes it.
    let name = pod.metadata.name.clone().unwrap();
    pods.delete(&name, &Default::default()).await.unwrap();
    let deleted = Instant::now();
    while pods.get_opt(&name).await.unwrap().is_some() {
        assert!(
            deleted.elapsed() < Duration::from_secs(60),
            "pod {name} not gone 60 s after its deletion:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "testkit: a deleted pod gone in {:.1} s",
        deleted.elapsed().as_secs_f64()
    );

    drop(node);
    // Nothing of the node is left: no namespace, no link, no route, no
    // process and no mount of its.
    assert!(!std::path::Path::new("/run/netns").join(&netns).exists());
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    let slot = netns.trim_start_matches("kcmnode-");
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&format!(" kcmnode{slot}@")));
    let routes = std::process::Command::new("ip")
        .args(["route"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&routes.stdout).contains(&pod_cidr));
    assert_eq!(
        cgroups(),
        cgroups_before,
        "the containers' cgroups are removed"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("kcmnode"), "{mounts}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !(cmdline.contains(&dir) && cmdline.contains("kcmnode-testkit-")),
            "left running: {cmdline}"
        );
    }
}
