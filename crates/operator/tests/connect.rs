//! `kilo-clustermesh-operator connect` as a user runs it, against real API
//! servers: it grants least-privilege access on the remote, stores a
//! token-only kubeconfig on the hub, prints the entry, and the operator meshes
//! the clusters with that Secret. Every refusal leaves both clusters as they
//! were.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::{path::Path, process::Output, time::Duration};

use api::ClusterEntry;
use common::*;
use k8s_openapi::api::{
    core::v1::{Secret, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kilo_clustermesh_operator::{connect::REMOTE_ROLE, kubeconfig};
use kube::{Api, api::PostParams};
use testkit::ControlPlane;

async fn run_connect(kubeconfig: &Path, args: &[&str]) -> Output {
    run_binary("connect", kubeconfig, args).await
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn hub_secret(hub: &ControlPlane, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(hub.admin_client(), NAMESPACE)
        .get_opt(name)
        .await
        .unwrap()
}

fn secret_kubeconfig(secret: &Secret) -> String {
    let data = secret.data.as_ref().unwrap();
    String::from_utf8(data["kubeconfig"].0.clone()).unwrap()
}

async fn resource_version<K>(api: Api<K>, name: &str) -> Option<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .unwrap()
        .and_then(|o| o.meta().resource_version.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_grants_least_privilege_and_the_operator_meshes_with_its_secret() {
    let planes = ControlPlane::start_many(2).await.unwrap();
    let (hub, remote) = (&planes[0], &planes[1]);
    create_node(hub, &kilo_node(1, 0)).await;
    create_node(remote, &kilo_node(2, 0)).await;
    create_node(remote, &kilo_node(2, 1)).await;
    ensure_namespace(hub).await;
    let dir = tempfile::tempdir().unwrap();
    let config = contexts_file(
        dir.path(),
        &[
            ("hub", hub.admin_kubeconfig()),
            ("cluster-b", remote.admin_kubeconfig()),
        ],
    );
    let command = [
        "--hub-context",
        "hub",
        "--remote-context",
        "cluster-b",
        "--name",
        "cluster-b",
        "--token-duration",
        "2h",
        "--allow-loopback-server",
    ];

    let output = run_connect(&config, &command).await;
    assert!(
        output.status.success(),
        "connect failed: {}",
        stderr(&output)
    );
    let printed = String::from_utf8(output.stdout.clone()).unwrap();
    let entries: Vec<ClusterEntry> = serde_yaml::from_str(&printed).unwrap();
    let [entry] = entries.as_slice() else {
        panic!("one entry expected:\n{printed}")
    };
    assert_eq!(entry.name, "cluster-b");
    assert_eq!(entry.pod_cidrs, ["10.2.0.0/23"], "{printed}");
    assert_eq!(entry.wireguard_cidr, "10.102.0.0/24", "{printed}");
    assert_eq!(entry.service_cidr.as_deref(), Some("10.96.0.0/16"));
    let secret_ref = entry.kubeconfig_secret_ref.clone().unwrap();
    assert_eq!(
        (secret_ref.name.as_str(), secret_ref.key.as_str()),
        ("cluster-b-kubeconfig", "kubeconfig")
    );

    // The Secret holds the ServiceAccount's token, the server and the CA only.
    let secret = hub_secret(hub, "cluster-b-kubeconfig").await.unwrap();
    let stored = secret_kubeconfig(&secret);
    assert!(
        !stored.contains("client-certificate") && !stored.contains("client-key"),
        "the admin's certificate must not be stored:\n{stored}"
    );
    let token = kubeconfig::bearer_token(&stored).unwrap();
    let claims = token.split('.').nth(1).unwrap();
    let claims = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert!(
        claims.contains("system:serviceaccount:kilo-system:kilo-clustermesh"),
        "{claims}"
    );

    // The operator meshes the clusters with that Secret alone.
    // As the printed note says: the cluster's pod range is wider than what
    // its two nodes use so far.
    let mut remote_entry = entry.clone();
    remote_entry.pod_cidrs = vec!["10.2.0.0/16".into()];
    create_mesh(hub, "mesh", vec![common::entry("a", 1, true), remote_entry]).await;
    let _operator = start_operator(hub);
    let converge = Duration::from_secs(30);
    eventually("the clusters peered", converge, || async {
        peer_names(hub).await == ["cluster-b.node-0", "cluster-b.node-1"]
            && peer_names(remote).await == ["a.node-0"]
    })
    .await;
    eventually("Ready with the token's expiry", converge, || async {
        let status = mesh_status(hub, "mesh").await;
        let expiry = status
            .clusters
            .iter()
            .find(|c| c.name == "cluster-b")
            .and_then(|c| c.credentials_expire.clone());
        let warned = condition(&status, "CredentialsExpiring").is_some_and(|c| {
            c.status == "True"
                && c.message
                    .contains("cluster cluster-b: its token expires at")
        });
        condition(&status, "Ready").is_some_and(|c| c.status == "True")
            && warned
            && expiry.is_some_and(|t| {
                let left = t.0.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
                (6_600..=7_200).contains(&left)
            })
    })
    .await;

    // Running it again rotates the token and changes nothing else.
    let admin = remote.admin_client();
    let role_before = resource_version(Api::<ClusterRole>::all(admin.clone()), REMOTE_ROLE).await;
    let binding_before =
        resource_version(Api::<ClusterRoleBinding>::all(admin.clone()), REMOTE_ROLE).await;
    let account_before = resource_version(
        Api::<ServiceAccount>::namespaced(admin.clone(), NAMESPACE),
        "kilo-clustermesh",
    )
    .await;
    let output = run_connect(&config, &command).await;
    assert!(
        output.status.success(),
        "second connect: {}",
        stderr(&output)
    );
    let rotated = secret_kubeconfig(&hub_secret(hub, "cluster-b-kubeconfig").await.unwrap());
    assert_ne!(
        kubeconfig::bearer_token(&rotated),
        Some(token),
        "a new token"
    );
    assert_eq!(
        resource_version(Api::<ClusterRole>::all(admin.clone()), REMOTE_ROLE).await,
        role_before
    );
    assert_eq!(
        resource_version(Api::<ClusterRoleBinding>::all(admin.clone()), REMOTE_ROLE).await,
        binding_before
    );
    assert_eq!(
        resource_version(
            Api::<ServiceAccount>::namespaced(admin, NAMESPACE),
            "kilo-clustermesh"
        )
        .await,
        account_before
    );
    // A node added after the rotation is seen through the new token.
    create_node(remote, &kilo_node(2, 2)).await;
    eventually("the new node peered", converge, || async {
        peer_names(hub).await.len() == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_clearly_and_changes_nothing() {
    let planes = ControlPlane::start_many(2).await.unwrap();
    let (hub, remote) = (&planes[0], &planes[1]);
    ensure_namespace(hub).await;
    ensure_namespace(remote).await;

    // A remote identity that may read Peers and nothing else it needs.
    let admin = remote.admin_client();
    let mut reader = kilo_clustermesh_operator::connect::remote_role();
    reader.metadata.name = Some("peer-reader".into());
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &reader)
        .await
        .unwrap();
    let limited = remote
        .service_account_kubeconfig(NAMESPACE, "limited", None)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "peer-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "peer-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": "limited", "namespace": NAMESPACE }],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The remote's address on a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = remote
        .admin_kubeconfig()
        .replace(&remote.server_url(), &format!("https://127.0.0.1:{closed}"));

    let dir = tempfile::tempdir().unwrap();
    let config = contexts_file(
        dir.path(),
        &[
            ("hub", hub.admin_kubeconfig()),
            ("cluster-b", remote.admin_kubeconfig()),
            ("limited", &limited),
            ("down", &down),
        ],
    );
    let base = ["--hub-context", "hub", "--name", "cluster-b"];
    let cases: [(&[&str], &str); 5] = [
        (
            &["--remote-context", "cluster-b"],
            "is loopback: from the hub's operator pod",
        ),
        (
            &[
                "--remote-context",
                "cluster-b",
                "--allow-loopback-server",
                "--namespace",
                "absent",
            ],
            "namespace absent does not exist on the hub",
        ),
        (
            &["--remote-context", "limited", "--allow-loopback-server"],
            "create clusterroles.rbac.authorization.k8s.io on the remote (context \"limited\")",
        ),
        (
            &["--remote-context", "down", "--allow-loopback-server"],
            "cannot reach the remote",
        ),
        (
            &["--remote-context", "hub", "--allow-loopback-server"],
            "the hub and the remote are the same API server",
        ),
    ];
    for (args, expected) in cases {
        let output = run_connect(&config, &[&base[..], args].concat()).await;
        let said = stderr(&output);
        assert!(!output.status.success(), "{args:?} should be refused");
        assert!(
            said.contains(expected),
            "{args:?}: expected {expected:?} in:\n{said}"
        );
    }
    // A Secret of that name that connect did not write is not replaced.
    put_secret(hub, "cluster-b-kubeconfig", "hand-made").await;
    let output = run_connect(
        &config,
        &[
            &base[..],
            &["--remote-context", "cluster-b", "--allow-loopback-server"],
        ]
        .concat(),
    )
    .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("was not written by connect"),
        "{}",
        stderr(&output)
    );

    // Nothing was changed on either side.
    assert!(
        Api::<ClusterRole>::all(admin.clone())
            .get_opt(REMOTE_ROLE)
            .await
            .unwrap()
            .is_none(),
        "no ClusterRole on the remote"
    );
    assert!(
        Api::<ServiceAccount>::namespaced(admin, NAMESPACE)
            .get_opt("kilo-clustermesh")
            .await
            .unwrap()
            .is_none(),
        "no ServiceAccount on the remote"
    );
    let kept = hub_secret(hub, "cluster-b-kubeconfig").await.unwrap();
    assert_eq!(secret_kubeconfig(&kept), "hand-made");
}
