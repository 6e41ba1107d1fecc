//! A test mesh on real control planes: remote access through a least-privilege
//! ServiceAccount, Kilo-annotated nodes, and the controller running in-process.
#![allow(dead_code, unused_imports, clippy::unwrap_used)] // each test file uses part of it; a panic is the failure report

pub mod guide;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

pub use api::fixtures::{cluster_entry as entry, wireguard_key as key};
use api::{
    ClusterEntry, ClusterMesh, ClusterMeshSpec, Peer,
    fixtures::{kilo_annotations, ready_node},
};
use k8s_openapi::{
    ByteString,
    api::{
        core::v1::{Node, Secret},
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
    },
};
use std::num::NonZeroU32;

use kilo_clustermesh_operator::{
    connect,
    controller::{self, Settings},
    kubeconfig::KubeconfigPolicy,
    leader::Fence,
    metrics::{Metrics, Readiness},
    rate_limit::Limits,
    resolver::Lookup,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use testkit::ControlPlane;

pub const NAMESPACE: &str = "kilo-system";

/// Grants the remote role to a ServiceAccount on `remote` and stores a
/// kubeconfig holding only its token as Secret `<name>-kubeconfig` on the hub.
pub async fn connect(hub: &ControlPlane, remote: &ControlPlane, name: &str) {
    let admin = remote.admin_client();
    let pp = PostParams::default();
    Api::<ClusterRole>::all(admin.clone())
        .create(&pp, &connect::remote_role())
        .await
        .unwrap();
    ensure_namespace(remote).await;
    ensure_namespace(hub).await;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some("kilo-clustermesh-remote".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "kilo-clustermesh-remote".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "kilo-clustermesh".into(),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin)
        .create(&pp, &binding)
        .await
        .unwrap();
    rotate(hub, remote, name).await;
}

/// Mints a fresh ServiceAccount token on `remote` and stores its kubeconfig
/// as the hub's Secret `<name>-kubeconfig`.
pub async fn rotate(hub: &ControlPlane, remote: &ControlPlane, name: &str) {
    let kubeconfig = remote
        .service_account_kubeconfig(
            NAMESPACE,
            "kilo-clustermesh",
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    put_secret(hub, &format!("{name}-kubeconfig"), &kubeconfig).await;
}

/// Creates or replaces a kubeconfig Secret on the hub.
pub async fn put_secret(hub: &ControlPlane, name: &str, kubeconfig: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "kubeconfig".into(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    let secrets = Api::<Secret>::namespaced(hub.admin_client(), NAMESPACE);
    secrets
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

/// Node `node-<i>` of cluster number `k`, annotated as Kilo annotates it.
pub fn kilo_node(k: u8, i: u8) -> Node {
    let mut annotations = kilo_annotations(k, i);
    annotations.insert("kilo.squat.ai/last-seen".into(), unix_now().to_string());
    ready_node(
        &format!("node-{i}"),
        annotations,
        vec![format!("10.{k}.{i}.0/24")],
    )
}

pub async fn create_node(plane: &ControlPlane, node: &Node) {
    Api::<Node>::all(plane.admin_client())
        .create(&PostParams::default(), node)
        .await
        .unwrap();
}

/// Creates the operator's namespace unless it exists.
pub async fn ensure_namespace(plane: &ControlPlane) {
    plane.ensure_namespace(NAMESPACE).await.unwrap();
}

pub async fn create_mesh(
    hub: &ControlPlane,
    name: &str,
    clusters: Vec<ClusterEntry>,
) -> ClusterMesh {
    ensure_namespace(hub).await;
    let mut mesh = ClusterMesh::new(
        name,
        ClusterMeshSpec {
            clusters,
            ..Default::default()
        },
    );
    mesh.metadata.namespace = Some(NAMESPACE.into());
    Api::<ClusterMesh>::namespaced(hub.admin_client(), NAMESPACE)
        .create(&PostParams::default(), &mesh)
        .await
        .unwrap()
}

/// Two clusters, `a` (the hub) and `b` (connected through a least-privilege
/// token), one Kilo node each, and the ClusterMesh `mesh` joining them.
pub async fn two_cluster_mesh() -> Vec<ControlPlane> {
    let planes = ControlPlane::start_many(2).await.unwrap();
    create_node(&planes[0], &kilo_node(1, 0)).await;
    create_node(&planes[1], &kilo_node(2, 0)).await;
    connect(&planes[0], &planes[1], "b").await;
    create_mesh(
        &planes[0],
        "mesh",
        vec![entry("a", 1, true), entry("b", 2, false)],
    )
    .await;
    planes
}

/// Runs `kilo-clustermesh-operator <command> <args>` as a user would, with
/// `kubeconfig` as $KUBECONFIG.
pub async fn run_binary(
    command: &str,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kilo-clustermesh-operator"))
        .arg(command)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

/// Runs the controller against `hub` until the returned handle is dropped.
pub struct Operator {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub metrics: Arc<Metrics>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn start_operator(hub: &ControlPlane) -> Operator {
    start_operator_with(hub, |_| {})
}

/// [`start_operator`] with the test's own changes to the settings.
pub fn start_operator_with(hub: &ControlPlane, change: impl FnOnce(&mut Settings)) -> Operator {
    // Logs show with --nocapture, or for a failed test.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("kilo_clustermesh_operator=info,kube_runtime=warn")
        .try_init();
    let mut settings = Settings {
        namespace: Some(NAMESPACE.into()),
        default_persistent_keepalive: 25,
        advertise_internal_ips: false,
        kubeconfig_policy: KubeconfigPolicy::default(),
        write_concurrency: 8,
        limits: Limits {
            qps: NonZeroU32::new(200).unwrap(),
            burst: NonZeroU32::new(400).unwrap(),
        },
        cleanup_timeout: Duration::from_secs(20),
        credentials_expiry_warning: Duration::from_secs(14 * 86_400),
        // The test nodes' Kilo checks in once, at creation: none may count
        // as silent during a test, unless the test says so.
        check_in_grace: Duration::from_secs(3600),
        endpoint_dns: mesh::EndpointDns::Resolve,
        // Test nodes' endpoints are IPs; a test with names brings its own.
        lookup: Lookup::new(|name| {
            Box::pin(async move { Err(format!("{name}: no lookup in this test")) })
        }),
    };
    change(&mut settings);
    let metrics = Arc::new(Metrics::default());
    let task = tokio::spawn(controller::run(
        hub.admin_client(),
        settings,
        Fence::open(),
        metrics.clone(),
        Readiness::default(),
    ));
    Operator { task, metrics }
}

pub async fn peers(plane: &ControlPlane) -> BTreeMap<String, Peer> {
    let list = Api::<Peer>::all(plane.admin_client())
        .list(&ListParams::default())
        .await
        .unwrap();
    list.items.into_iter().map(|p| (p.name_any(), p)).collect()
}

pub async fn peer_names(plane: &ControlPlane) -> Vec<String> {
    peers(plane).await.into_keys().collect()
}

pub async fn mesh_status(hub: &ControlPlane, name: &str) -> api::ClusterMeshStatus {
    let mesh = Api::<ClusterMesh>::namespaced(hub.admin_client(), NAMESPACE)
        .get(name)
        .await
        .unwrap();
    mesh.status.unwrap_or_default()
}

pub fn condition<'a>(
    status: &'a api::ClusterMeshStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// One kubeconfig file with a context per `(name, kubeconfig)`, the first
/// current, as a user's merged `~/.kube/config` would be.
pub fn contexts_file(dir: &std::path::Path, contexts: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.join("config");
    std::fs::write(&path, testkit::merged_kubeconfig(contexts).unwrap()).unwrap();
    path
}

/// Polls `check` every 100 ms until it returns true, for at most `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Merges `annotations` into node `name`'s.
pub async fn annotate_node(plane: &ControlPlane, name: &str, annotations: serde_json::Value) {
    let patch = serde_json::json!({"metadata": {"annotations": annotations}});
    Api::<Node>::all(plane.admin_client())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Now, in Unix seconds, as Kilo writes `last-seen`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn admin(plane: &ControlPlane) -> Client {
    plane.admin_client()
}
