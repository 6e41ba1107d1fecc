//! The Helm chart's RBAC on a real API server: the operator runs with only
//! the chart's ServiceAccount permissions and meshes two clusters, and a verb
//! it does not need is refused.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::{net::TcpListener, path::Path, time::Duration};

use common::*;
use k8s_openapi::api::{
    core::v1::{Secret, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Api, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde::{Deserialize, de::DeserializeOwned};

const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../charts/kilo-clustermesh-operator"
);
const HELM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.tools/bin/helm");

/// `helm template` of the chart with `values` (`key=value`), as YAML
/// documents.
fn render(values: &[&str]) -> Vec<serde_yaml::Value> {
    assert!(
        Path::new(HELM).exists(),
        "{HELM} is missing: run `make tools`"
    );
    let output = std::process::Command::new(HELM)
        .args(["template", "kcm", CHART, "--namespace", NAMESPACE])
        .args(values.iter().flat_map(|v| ["--set", v]))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Server-side applies every rendered document of kind `K` through the API
/// `api` gives for its namespace.
async fn apply_all<K>(docs: &[serde_yaml::Value], api: impl Fn(Option<&str>) -> Api<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    for doc in docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some(&K::kind(&())))
    {
        let object: K = serde_yaml::from_value(doc.clone()).unwrap();
        let name = object.meta().name.clone().unwrap();
        api(object.meta().namespace.as_deref())
            .patch(
                &name,
                &PatchParams::apply("chart-test").force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_rbac_is_enough_to_mesh_two_clusters_and_no_more() {
    let planes = two_cluster_mesh().await;

    let docs = render(&[]);
    let hub = admin(&planes[0]);
    let namespaced = |ns: Option<&str>| ns.unwrap_or(NAMESPACE).to_owned();
    apply_all(&docs, |ns| {
        Api::<ServiceAccount>::namespaced(hub.clone(), &namespaced(ns))
    })
    .await;
    apply_all(&docs, |_| Api::<ClusterRole>::all(hub.clone())).await;
    apply_all(&docs, |_| Api::<ClusterRoleBinding>::all(hub.clone())).await;
    apply_all(&docs, |ns| {
        Api::<Role>::namespaced(hub.clone(), &namespaced(ns))
    })
    .await;
    apply_all(&docs, |ns| {
        Api::<RoleBinding>::namespaced(hub.clone(), &namespaced(ns))
    })
    .await;

    let kubeconfig = planes[0]
        .service_account_kubeconfig(NAMESPACE, "kilo-clustermesh-operator", None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("operator.kubeconfig");
    std::fs::write(&path, &kubeconfig).unwrap();
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
        .args(["--metrics-address", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &path)
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let converge = Duration::from_secs(30);
    eventually("both clusters peered", converge, || async {
        peer_names(&planes[0]).await == ["b.node-0"] && peer_names(&planes[1]).await == ["a.node-0"]
    })
    .await;
    eventually(
        "Ready written with the chart's permissions",
        converge,
        || async {
            condition(&mesh_status(&planes[0], "mesh").await, "Ready")
                .is_some_and(|c| c.status == "True")
        },
    )
    .await;

    // Verbs it does not need are not granted.
    let operator = testkit::client_from_yaml(&kubeconfig).await.unwrap();
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("x".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let denied = Api::<Secret>::namespaced(operator.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(s)) if s.code == 403),
        "creating Secrets must be refused"
    );
    let denied = Api::<Secret>::namespaced(operator, "default")
        .get_opt("any")
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(s)) if s.code == 403),
        "Secrets outside the watched namespace must be refused"
    );
}

/// The chart's remote mode grants exactly what `connect` grants, with and
/// without `--read-only`.
#[test]
fn the_charts_remote_role_is_the_one_connect_grants() {
    use kilo_clustermesh_operator::connect::{remote_reader_role, remote_role};
    for (values, granted) in [
        (&["mode=remote"][..], remote_role()),
        (
            &["mode=remote", "remote.readOnly=true"][..],
            remote_reader_role(),
        ),
    ] {
        let docs = render(values);
        let role = docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("ClusterRole"))
            .unwrap();
        let role: ClusterRole = serde_yaml::from_value(role.clone()).unwrap();
        assert_eq!(role.metadata.name, granted.metadata.name, "{values:?}");
        assert_eq!(role.rules, granted.rules, "{values:?}");
    }
}

/// The chart ships the CRD that `kilo-clustermesh-operator crd` prints.
#[test]
fn the_charts_crd_is_what_the_crd_command_prints() {
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_kilo-clustermesh-operator"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let shipped = std::fs::read(format!("{CHART}/crds/clustermeshes.kilo.squat.ai.yaml")).unwrap();
    assert!(
        printed.stdout == shipped,
        "the chart's crds/ is stale: run `make manifests`"
    );
}

/// The image's user is the one the chart's Deployment runs as, so
/// `runAsNonRoot` holds and the binary is the one the Deployment starts.
#[test]
fn the_image_runs_the_user_and_binary_the_chart_expects() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Dockerfile")).unwrap();
    let docs = render(&[]);
    let deployment = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let user = pod["securityContext"]["runAsUser"].as_u64().unwrap();
    let group = pod["securityContext"]["runAsGroup"].as_u64().unwrap();
    assert!(
        dockerfile.contains(&format!("\nUSER {user}:{group}\n")),
        "the Dockerfile's USER must be {user}:{group}"
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"/kilo-clustermesh-operator\"]"));
    let args = pod["containers"][0]["args"].as_sequence().unwrap();
    assert_eq!(args[0].as_str(), Some("run"), "the chart starts `run`");
}
