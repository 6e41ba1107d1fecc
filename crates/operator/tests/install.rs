//! The install path of the brief, as `docs/install.md` walks it ("Air-gapped:
//! from a registry of your own"): the image `make image` built and the
//! chart, pushed to a registry (Debian's `docker-registry`), then
//! `helm install oci://…` into a real API server.
//!
//! On the test kit's real node (kubelet, containerd, in a network namespace
//! of the test's), the chart's Deployment runs the operator as a pod pulled
//! from that registry; a remote is connected and meshed, the release
//! upgraded and uninstalled, all with the docs' commands. A second test runs
//! the image's binary from the image's own files as the image's user.
//! `make test-install` builds the image, then runs this (root).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use api::fixtures::kilo_annotations;
use common::{
    NAMESPACE, contexts_file, create_node, eventually,
    guide::{
        self, CONNECT_AND_CHECK, FROM_YOUR_OWN_REGISTRY, REPO, THE_OPERATORS_POD,
        UNINSTALL_FROM_YOUR_OWN_REGISTRY, UPGRADE_FROM_YOUR_OWN_REGISTRY,
    },
    kilo_node, peer_names, unix_now,
};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{Node, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    discovery::{self, Scope},
    runtime::wait::{await_condition, conditions},
};
use serde::Deserialize;
use testkit::{ControlPlane, NodeNetwork, Registry, http_get, metric_sum};

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

/// The next version the upgrade installs: the same image under another tag,
/// the chart packaged with that version.
const NEXT_VERSION: &str = "0.1.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_from_a_registry_runs_as_a_pod_and_meshes_as_the_docs_say() {
    let archive = archive();
    let network = NodeNetwork::create().unwrap();
    let address = network.host_address();
    let (hub, remote, registry) = tokio::join!(
        ControlPlane::start_on("hub", address),
        ControlPlane::start_on("cluster-b", address),
        Registry::start_on(address)
    );
    let (hub, remote, registry) = (hub.unwrap(), remote.unwrap(), registry.unwrap());
    let client = hub.admin_client();

    // The chart must bring the ClusterMesh CRD itself: remove the test kit's.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.delete(CRD, &DeleteParams::default()).await.unwrap();
    eventually(
        "the test kit's CRD gone",
        Duration::from_secs(30),
        || async { crds.get_opt(CRD).await.unwrap().is_none() },
    )
    .await;

    let host = registry.host();
    let started = Instant::now();
    let node = testkit::Node::start(&hub, network, std::slice::from_ref(&host))
        .await
        .unwrap();
    let node_ready = started.elapsed();
    // Kilo runs on the hub's node and on one node of cluster-b.
    kilo_on_the_node(&hub, node.name()).await;
    create_node(&remote, &kilo_node(2, 0)).await;
    let heartbeats = tokio::spawn(kilo_checks_in(vec![
        (client.clone(), node.name().to_owned()),
        (remote.admin_client(), "node-0".into()),
    ]));

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = contexts_file(
        dir.path(),
        &[
            ("hub", hub.admin_kubeconfig()),
            ("cluster-b", remote.admin_kubeconfig()),
        ],
    );
    let env = [("REGISTRY", host.as_str())];
    let run = |sections: &'static [(&'static str, &'static str)],
               env: Vec<(&'static str, String)>| {
        let kubeconfig = kubeconfig.clone();
        let home = dir.path().to_owned();
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            guide::run(&guide::script(sections), &kubeconfig, &home, &env).await
        }
    };
    let with_registry = || {
        env.iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect::<Vec<_>>()
    };

    // The install, as the docs say.
    let installed = Instant::now();
    let said = run(FROM_YOUR_OWN_REGISTRY, with_registry()).await;
    println!("{said}");
    installed_objects_are_the_charts(&client, &host, &archive, &said).await;

    // The operator's pod: Running, Ready, non-root, read-only root.
    let said = run(THE_OPERATORS_POD, with_registry()).await;
    println!("{said}");
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let pod = operator_pods(&pods)
        .await
        .into_iter()
        .find(ready)
        .unwrap_or_else(|| {
            panic!(
                "no Ready operator pod:\n{}",
                node.pod_logs(NAMESPACE, RELEASE)
            )
        });
    let pod_name = pod.metadata.name.clone().unwrap();
    println!(
        "install: node ready in {:.1} s; the operator's pod Ready {:.1} s after `helm install` began",
        node_ready.as_secs_f64(),
        installed.elapsed().as_secs_f64()
    );
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(node.name())
    );
    let (uid, root) = operator_process();
    assert_eq!(
        uid, "65532",
        "the operator's process runs as the chart's user"
    );
    assert!(
        root.split(',').any(|o| o == "ro"),
        "its / is mounted {root}"
    );

    // It leads, serves metrics at the pod's IP.
    let leases = Api::<Lease>::namespaced(client.clone(), NAMESPACE);
    let holder = || async {
        leases
            .get_opt(RELEASE)
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
            .unwrap_or_default()
    };
    eventually(
        "the pod holds the Lease",
        Duration::from_secs(60),
        || async { holder().await.contains(&pod_name) },
    )
    .await;

    // A remote connected, the mesh declared and Ready, as connect.md says.
    let said = run(CONNECT_AND_CHECK, vec![]).await;
    println!("{said}");
    eventually(
        "each cluster has the other's Peer",
        Duration::from_secs(60),
        || async {
            peer_names(&hub).await == ["cluster-b.node-0"]
                && peer_names(&remote).await == [format!("hub.{}", node.name())]
        },
    )
    .await;
    let metrics = scrape(&pod).await;
    assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
    assert!(
        metric_sum(&metrics, "kilo_clustermesh_reconciles_total", "") >= 1.0,
        "{metrics}"
    );

    // The upgrade: a next version pushed, then the docs' commands.
    release_next_version(&host, &archive).await;
    let peer_writes = || {
        [&hub, &remote]
            .iter()
            .flat_map(|plane| plane.audited_writes().unwrap())
            .filter(|write| write.resource == "peers")
            .count()
    };
    let before = peer_writes();
    let upgraded = Instant::now();
    let said = run(
        UPGRADE_FROM_YOUR_OWN_REGISTRY,
        [with_registry(), vec![("VERSION", NEXT_VERSION.to_owned())]].concat(),
    )
    .await;
    println!("{said}");
    let next = eventually_value(
        "a pod of the next version leads",
        Duration::from_secs(120),
        || async {
            let pod = operator_pods(&pods)
                .await
                .into_iter()
                .find(|pod| ready(pod) && image_of(pod).ends_with(&format!(":{NEXT_VERSION}")))?;
            let name = pod.metadata.name.clone()?;
            holder().await.contains(&name).then_some(pod)
        },
    )
    .await;
    eventually(
        "the new leader reconciled",
        Duration::from_secs(60),
        || async {
            metric_sum(
                &scrape(&next).await,
                "kilo_clustermesh_reconciles_total",
                "",
            ) >= 1.0
        },
    )
    .await;
    println!(
        "install: upgraded, the new pod leading and reconciled, in {:.1} s",
        upgraded.elapsed().as_secs_f64()
    );
    assert_eq!(peer_writes(), before, "the upgrade wrote Peers");
    assert_eq!(peer_names(&hub).await, ["cluster-b.node-0"]);

    // The uninstall, the ClusterMesh first: no Peer left, no pod.
    let said = run(UNINSTALL_FROM_YOUR_OWN_REGISTRY, vec![]).await;
    println!("{said}");
    assert!(peer_names(&hub).await.is_empty(), "Peers left on the hub");
    assert!(
        peer_names(&remote).await.is_empty(),
        "Peers left on cluster-b"
    );
    eventually(
        "the operator's pods gone",
        Duration::from_secs(60),
        || async { operator_pods(&pods).await.is_empty() },
    )
    .await;
    heartbeats.abort();
    println!(
        "install: the whole path in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(node);
}

/// What `helm install` left: the chart from the registry, every object it
/// renders, owned by the release, and the image the Deployment names served
/// by the registry as `make image` built it.
async fn installed_objects_are_the_charts(client: &Client, host: &str, archive: &Path, said: &str) {
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

    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let established = await_condition(crds, CRD, conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("the chart's CRD is established within 30 s")
        .unwrap();

    let rendered = render(&[&format!(
        "image.repository={host}/kilo-clustermesh-operator"
    )])
    .await;
    let mut kinds = BTreeSet::new();
    for doc in &rendered {
        let kind = doc["kind"].as_str().unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap();
        let object = live(client, doc)
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

/// Annotates the hub's real node as Kilo would (node 0 of cluster 1, the
/// mesh's `hub` entry) and gives it a pod range in that entry's.
async fn kilo_on_the_node(hub: &ControlPlane, name: &str) {
    let mut annotations = kilo_annotations(1, 0);
    annotations.insert("kilo.squat.ai/last-seen".into(), unix_now().to_string());
    let patch = serde_json::json!({
        "metadata": { "annotations": annotations },
        "spec": { "podCIDR": "10.1.0.0/24", "podCIDRs": ["10.1.0.0/24"] },
    });
    Api::<Node>::all(hub.admin_client())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Kilo's check-ins (`last-seen`) on `nodes`, every 10 s, for at most 30
/// minutes: the test outlives the operator's check-in grace.
async fn kilo_checks_in(nodes: Vec<(Client, String)>) {
    for _ in 0..180 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        for (client, name) in &nodes {
            let patch = serde_json::json!({"metadata": {"annotations": {
                "kilo.squat.ai/last-seen": unix_now().to_string(),
            }}});
            let _ = Api::<Node>::all(client.clone())
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
}

/// The operator's pods.
async fn operator_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/name={RELEASE}")))
        .await
        .unwrap()
        .items
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default()
}

/// `GET /metrics` from the pod's IP and `metrics` port.
async fn scrape(pod: &Pod) -> String {
    let ip: std::net::IpAddr = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .unwrap()
        .parse()
        .unwrap();
    http_get(std::net::SocketAddr::new(ip, 8080), "/metrics").await
}

/// The running operator's uid and the mount options of its `/`, read from
/// the node's `/proc`: what the runtime made of the chart's securityContext.
fn operator_process() -> (String, String) {
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !cmdline.starts_with(b"/kilo-clustermesh-operator\0run\0") {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let mounts = std::fs::read_to_string(entry.path().join("mountinfo")).unwrap();
        // `id parent major:minor root mount-point options ...`
        let root = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.get(4) == Some(&"/"))
            .map(|fields| fields[5].to_owned())
            .unwrap();
        return (uid, root);
    }
    panic!("no operator process on the node");
}

/// A next release in the registry: the image under [`NEXT_VERSION`] (the
/// same bytes), the chart packaged with that version and app version.
async fn release_next_version(host: &str, archive: &Path) {
    tool(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci-archive:{}", archive.display()),
            &format!("docker://{host}/kilo-clustermesh-operator:{NEXT_VERSION}"),
        ],
    )
    .await;
    let helm = format!("{REPO}/.tools/bin/helm");
    let out = tempfile::tempdir().unwrap();
    let out_path = out.path().display().to_string();
    tool(
        &helm,
        &[
            "package",
            CHART,
            "--version",
            NEXT_VERSION,
            "--app-version",
            NEXT_VERSION,
            "--destination",
            &out_path,
        ],
    )
    .await;
    tool(
        &helm,
        &[
            "push",
            &format!("{out_path}/kilo-clustermesh-operator-{NEXT_VERSION}.tgz"),
            &format!("oci://{host}/charts"),
            "--plain-http",
        ],
    )
    .await;
}

/// Polls `check` every 250 ms until it gives a value, for at most `timeout`.
async fn eventually_value<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
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
    let first_difference = printed
        .lines()
        .zip(shipped.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b);
    assert!(
        printed == shipped,
        "the image's binary prints another CRD than the chart's: line, printed, shipped: \
         {first_difference:?} ({} and {} lines)",
        printed.lines().count(),
        shipped.lines().count()
    );
}
