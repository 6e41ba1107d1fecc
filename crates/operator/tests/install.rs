//! The install path of the brief, as `docs/install.md` walks it ("Air-gapped:
//! from a registry of your own"): the image `make image` built and the
//! chart, pushed to a registry on loopback (Debian's `docker-registry`), then
//! `helm install oci://…` into a real API server.
//!
//! No kubelet runs in the test kit yet, so no pod starts: the test checks the
//! objects the install created, that the registry serves the very image the
//! Deployment names, and runs that image's binary from the image's own files
//! as the image's user. `make test-install` builds the image, then runs this.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    NAMESPACE, contexts_file, eventually,
    guide::{self, FROM_YOUR_OWN_REGISTRY, REPO},
};
use k8s_openapi::{
    api::apps::v1::Deployment,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, GroupVersionKind},
    discovery::{self, Scope},
    runtime::wait::{await_condition, conditions},
};
use serde::Deserialize;
use testkit::{ControlPlane, Registry};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const RELEASE: &str = "kilo-clustermesh-operator";
const CHART: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../charts/kilo-clustermesh-operator"
);
const CRD: &str = "clustermeshes.kilo.squat.ai";

/// The OCI archive `make image` writes for this version.
fn archive() -> PathBuf {
    let path = PathBuf::from(format!(
        "{REPO}/target/image/kilo-clustermesh-operator-{VERSION}.oci.tar"
    ));
    assert!(
        path.exists(),
        "{} is missing: run `make image` (`make test-install` runs it first)",
        path.display()
    );
    path
}

/// Runs a tool the install path needs, with its output or a failure naming
/// how to get it.
async fn tool(program: &str, args: &[&str]) -> String {
    testkit::command::output(program, args, None)
        .await
        .unwrap_or_else(|e| {
            panic!("{e}\n(`make image-packages` installs buildah, skopeo and docker-registry)")
        })
}

/// `helm template` of the chart as the docs install it, as YAML documents.
async fn render(values: &[&str]) -> Vec<serde_yaml::Value> {
    let helm = format!("{REPO}/.tools/bin/helm");
    assert!(
        Path::new(&helm).exists(),
        "{helm} is missing: run `make tools`"
    );
    let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    args.extend(values.iter().flat_map(|v| ["--set", v]));
    let text = tool(&helm, &args).await;
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The live object a rendered document describes, if it exists.
async fn live(client: &Client, doc: &serde_yaml::Value) -> Option<DynamicObject> {
    let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", doc["apiVersion"].as_str().unwrap()),
    };
    let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await.unwrap();
    let api = match capabilities.scope {
        Scope::Namespaced => {
            let namespace = doc["metadata"]["namespace"].as_str().unwrap_or(NAMESPACE);
            Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        }
        Scope::Cluster => Api::<DynamicObject>::all_with(client.clone(), &resource),
    };
    api.get_opt(doc["metadata"]["name"].as_str().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_and_image_from_a_registry_install_as_the_docs_say() {
    let archive = archive();
    let (plane, registry) = tokio::join!(ControlPlane::start("hub"), Registry::start());
    let (plane, registry) = (plane.unwrap(), registry.unwrap());
    let client = plane.admin_client();

    // The chart must bring the ClusterMesh CRD itself: remove the test kit's.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.delete(CRD, &DeleteParams::default()).await.unwrap();
    eventually(
        "the test kit's CRD gone",
        Duration::from_secs(30),
        || async { crds.get_opt(CRD).await.unwrap().is_none() },
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = contexts_file(dir.path(), &[("hub", plane.admin_kubeconfig())]);
    let host = registry.host();
    let commands = guide::script(FROM_YOUR_OWN_REGISTRY);
    let said = guide::run(&commands, &kubeconfig, dir.path(), &[("REGISTRY", &host)]).await;
    println!("{said}");

    // Helm pulled the chart from the registry, and the Deployment names the
    // image pushed beside it (the docs' kubectl prints it).
    assert!(
        said.contains(&format!(
            "Pulled: {host}/charts/kilo-clustermesh-operator:{VERSION}"
        )),
        "{said}"
    );
    let image = format!("{host}/kilo-clustermesh-operator:{VERSION}");
    assert!(said.contains(&image), "{said}");
    let deployment = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get(RELEASE)
        .await
        .unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some(image.as_str()));
    assert_eq!(pod.service_account_name.as_deref(), Some(RELEASE));

    // The registry serves, under that name, the image `make image` built:
    // what a kubelet would pull.
    let digest = |reference: String, tls: &'static [&'static str]| async move {
        let mut args = vec!["inspect", "--format", "{{.Digest}}"];
        args.extend(tls);
        args.push(&reference);
        tool("skopeo", &args).await.trim().to_owned()
    };
    assert_eq!(
        digest(format!("docker://{image}"), &["--tls-verify=false"]).await,
        digest(format!("oci-archive:{}", archive.display()), &[]).await,
        "the registry must serve the image of {}",
        archive.display()
    );

    // The chart's CRD, established.
    let established = await_condition(crds.clone(), CRD, conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("the chart's CRD is established within 30 s")
        .unwrap();

    // Every object the chart renders exists, owned by the release.
    let rendered = render(&[&format!(
        "image.repository={host}/kilo-clustermesh-operator"
    )])
    .await;
    let mut kinds = BTreeSet::new();
    for doc in &rendered {
        let kind = doc["kind"].as_str().unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap();
        let object = live(&client, doc)
            .await
            .unwrap_or_else(|| panic!("{kind} {name} was not installed"));
        assert_eq!(
            object
                .annotations()
                .get("meta.helm.sh/release-name")
                .map(String::as_str),
            Some(RELEASE),
            "{kind} {name} belongs to the release"
        );
        kinds.insert(kind.to_owned());
    }
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
    ] {
        assert!(
            kinds.contains(kind),
            "the chart renders no {kind}: {kinds:?}"
        );
    }
}

/// The image `make image` wrote, read from its OCI archive.
struct Image {
    /// The layout's files, by path (`index.json`, `blobs/sha256/<hex>`).
    layout: tempfile::TempDir,
    manifest: serde_json::Value,
    config: serde_json::Value,
}

impl Image {
    async fn open(archive: &Path) -> Self {
        let layout = tempfile::tempdir().unwrap();
        let to = layout.path().display().to_string();
        tool("tar", &["-xf", &archive.display().to_string(), "-C", &to]).await;
        let json = |path: PathBuf| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        };
        let index = json(layout.path().join("index.json"));
        let manifest = json(blob(layout.path(), &index["manifests"][0]["digest"]));
        let config = json(blob(layout.path(), &manifest["config"]["digest"]));
        Self {
            layout,
            manifest,
            config,
        }
    }

    fn layers(&self) -> Vec<PathBuf> {
        self.manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|layer| blob(self.layout.path(), &layer["digest"]))
            .collect()
    }
}

fn blob(layout: &Path, digest: &serde_json::Value) -> PathBuf {
    let digest = digest.as_str().unwrap();
    layout.join("blobs").join(digest.replace(':', "/"))
}

fn string_map(value: &serde_json::Value) -> BTreeMap<String, String> {
    serde_json::from_value(value.clone()).unwrap()
}

#[tokio::test]
async fn the_image_runs_its_static_binary_alone_as_the_charts_user() {
    let image = Image::open(&archive()).await;
    let docs = render(&[]).await;
    let deployment = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let user = format!(
        "{}:{}",
        pod["securityContext"]["runAsUser"].as_u64().unwrap(),
        pod["securityContext"]["runAsGroup"].as_u64().unwrap()
    );
    let config = &image.config["config"];
    assert_eq!(
        config["User"],
        user.as_str(),
        "the image's user is the chart's"
    );
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/kilo-clustermesh-operator"])
    );
    let command = pod["containers"][0]["args"][0].as_str().unwrap();
    assert_eq!(config["Cmd"], serde_json::json!([command]));

    // Labels: what the Dockerfile sets too; the same as manifest annotations.
    let labels = string_map(&config["Labels"]);
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{CHART}/Chart.yaml")).unwrap())
            .unwrap();
    let label = |key: &str| labels[&format!("org.opencontainers.image.{key}")].clone();
    assert_eq!(label("version"), VERSION);
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(VERSION),
        "the chart's default image tag is the operator's version"
    );
    assert_eq!(chart["home"].as_str(), Some(label("source").as_str()));
    assert_eq!(label("licenses"), env!("CARGO_PKG_LICENSE"));
    assert_eq!(label("title"), RELEASE);
    assert_eq!(label("created"), image.config["created"].as_str().unwrap());
    assert!(label("revision").len() >= 40, "{labels:?}");
    assert_eq!(string_map(&image.manifest["annotations"]), labels);
    let dockerfile = std::fs::read_to_string(format!("{REPO}/Dockerfile")).unwrap();
    for key in labels.keys() {
        assert!(
            dockerfile.contains(&format!("{key}=")),
            "the Dockerfile must set {key}"
        );
    }
    assert!(dockerfile.contains(&format!("\nARG VERSION={VERSION}\n")));
    assert!(dockerfile.contains(&format!("\nCMD [\"{command}\"]\n")));

    // Its files: the binary and the CA bundle, nothing else.
    let layers = image.layers();
    assert_eq!(layers.len(), 1);
    let layer = layers[0].display().to_string();
    let files: BTreeSet<String> = tool("tar", &["-tzf", &layer])
        .await
        .lines()
        .map(str::to_owned)
        .collect();
    let expected = [
        "etc/",
        "etc/ssl/",
        "etc/ssl/certs/",
        "etc/ssl/certs/ca-certificates.crt",
        "kilo-clustermesh-operator",
    ];
    assert_eq!(files, expected.map(str::to_owned).into());

    // The binary runs in a root holding only those files, as the image's
    // user, and prints the CRD the chart ships.
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().display().to_string();
    tool("tar", &["-xzf", &layer, "-C", &root_path]).await;
    let printed = testkit::command::output(
        "chroot",
        &[
            &format!("--userspec={user}"),
            root_path.as_str(),
            "/kilo-clustermesh-operator",
            "crd",
        ],
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n(chroot needs root, as `make test` has)"));
    let shipped = std::fs::read_to_string(format!("{CHART}/crds/{CRD}.yaml")).unwrap();
    assert!(
        printed == shipped,
        "the image's binary prints another CRD than the chart's"
    );
}
