//! The clusters a benchmark runs on: real control planes from the test kit,
//! their Kilo-annotated nodes, the remote access `connect` sets up, and the
//! ClusterMesh that joins them.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use api::{ClusterEntry, ClusterMesh, ClusterMeshSpec, Peer, SecretKeyRef, fixtures::ready_node};
use base64::{Engine, engine::general_purpose::STANDARD};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use testkit::ControlPlane;

/// Namespace of the ClusterMesh and of the remotes' kubeconfig Secrets.
pub const NAMESPACE: &str = "kilo-system";

/// Requests the harness itself keeps in flight per cluster when it creates
/// or changes nodes.
const SETUP_CONCURRENCY: usize = 32;

/// Control planes started at once.
const STARTING_AT_ONCE: usize = 4;

/// The most clusters a fleet can have: the ranges of [`entry`] and the
/// names of [`name`] run out after that.
pub const MAX_CLUSTERS: usize = 26;

/// The name of cluster `c` (0-based): a, b, c, ...
fn name(c: usize) -> String {
    char::from(b'a' + u8::try_from(c % MAX_CLUSTERS).unwrap_or_default()).to_string()
}

/// Refuses a fleet of `clusters` the ranges and names cannot hold.
pub fn check_size(clusters: usize) -> anyhow::Result<()> {
    if !(2..=MAX_CLUSTERS).contains(&clusters) {
        bail!("--clusters: a fleet has 2 to {MAX_CLUSTERS} clusters, not {clusters}");
    }
    Ok(())
}

/// The clusters, the first the hub.
pub struct Fleet {
    pub planes: Vec<ControlPlane>,
    /// Cluster names, in the order of the control planes.
    names: Vec<String>,
    /// Admin kubeconfig file of each plane.
    kubeconfigs: Vec<PathBuf>,
    /// Nodes `node-0 .. node-{nodes}` exist on every cluster.
    nodes: u32,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts the control planes and gives the hub least-privilege access to
    /// the others with the operator's own `connect` command.
    pub async fn start(operator: &Path, clusters: usize) -> anyhow::Result<Self> {
        check_size(clusters)?;
        let names: Vec<String> = (0..clusters).map(name).collect();
        // A few at a time: two cores start three in seconds, twenty at once
        // in minutes.
        let mut planes = Vec::with_capacity(clusters);
        let plane_names: Vec<String> = (0..clusters).map(|c| format!("cluster-{c}")).collect();
        for batch in plane_names.chunks(STARTING_AT_ONCE) {
            let starting = batch.iter().map(|name| ControlPlane::start(name));
            let started: Result<Vec<_>, _> = futures::future::join_all(starting)
                .await
                .into_iter()
                .collect();
            planes.extend(started?);
        }
        let dir = tempfile::tempdir()?;
        let mut kubeconfigs = Vec::new();
        for (plane, name) in planes.iter().zip(&names) {
            let path = dir.path().join(format!("{name}.kubeconfig"));
            std::fs::write(&path, plane.admin_kubeconfig())?;
            kubeconfigs.push(path);
            plane.ensure_namespace(NAMESPACE).await?;
        }
        let fleet = Self {
            planes,
            names,
            kubeconfigs,
            nodes: 0,
            _dir: dir,
        };
        for remote in 1..clusters {
            fleet.connect(operator, remote).await?;
        }
        Ok(fleet)
    }

    async fn connect(&self, operator: &Path, remote: usize) -> anyhow::Result<()> {
        let output = tokio::process::Command::new(operator)
            .arg("connect")
            .args(["--name", &self.names[remote]])
            .arg("--remote-kubeconfig")
            .arg(&self.kubeconfigs[remote])
            .arg("--kubeconfig")
            .arg(&self.kubeconfigs[0])
            .arg("--allow-loopback-server")
            .output()
            .await
            .context("running kilo-clustermesh-operator connect")?;
        if !output.status.success() {
            bail!(
                "connect --name {} failed: {}",
                self.names[remote],
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn client(&self, cluster: usize) -> Client {
        self.planes[cluster].admin_client()
    }

    pub fn hub_kubeconfig(&self) -> &Path {
        &self.kubeconfigs[0]
    }

    pub fn kubeconfig(&self, cluster: usize) -> &Path {
        &self.kubeconfigs[cluster]
    }

    /// Creates nodes until every cluster has `count`.
    pub async fn grow_to(&mut self, count: u32) -> anyhow::Result<()> {
        let missing = self.nodes..count;
        let fleet = &*self;
        let creates = (0..self.names.len()).flat_map(|cluster| {
            missing
                .clone()
                .map(move |i| (cluster, node(cluster, &format!("node-{i}"), i)))
        });
        stream::iter(creates)
            .map(|(cluster, node)| async move {
                Api::<Node>::all(fleet.client(cluster))
                    .create(&PostParams::default(), &node)
                    .await
                    .with_context(|| {
                        format!("creating {} on {}", node.name_any(), fleet.names[cluster])
                    })
            })
            .buffer_unordered(SETUP_CONCURRENCY * self.names.len())
            .try_collect::<Vec<_>>()
            .await?;
        self.nodes = self.nodes.max(count);
        Ok(())
    }

    /// The nodes every cluster has.
    pub fn node_count(&self) -> u32 {
        self.nodes
    }

    /// Creates the ClusterMesh `name` over all clusters.
    pub async fn create_mesh(&self, name: &str) -> anyhow::Result<()> {
        let clusters = (0..self.names.len()).map(entry).collect();
        let mut mesh = ClusterMesh::new(
            name,
            ClusterMeshSpec {
                clusters,
                ..Default::default()
            },
        );
        mesh.metadata.namespace = Some(NAMESPACE.into());
        Api::<ClusterMesh>::namespaced(self.client(0), NAMESPACE)
            .create(&PostParams::default(), &mesh)
            .await
            .with_context(|| format!("creating ClusterMesh {name}"))?;
        Ok(())
    }

    /// Whether the mesh's Ready condition is True.
    pub async fn mesh_ready(&self, name: &str) -> anyhow::Result<bool> {
        let mesh = Api::<ClusterMesh>::namespaced(self.client(0), NAMESPACE)
            .get(name)
            .await?;
        Ok(mesh
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    /// Forgets a mesh whose operator is stopped: drops its finalizer,
    /// deletes it, and deletes every Peer of every cluster.
    pub async fn remove_mesh(&self, name: &str) -> anyhow::Result<()> {
        let meshes = Api::<ClusterMesh>::namespaced(self.client(0), NAMESPACE);
        let patch = serde_json::json!({ "metadata": { "finalizers": null } });
        meshes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        meshes.delete(name, &DeleteParams::default()).await?;
        self.delete_all_peers().await
    }

    /// Deletes every Peer of every cluster and waits until they are gone.
    pub async fn delete_all_peers(&self) -> anyhow::Result<()> {
        for cluster in 0..self.names.len() {
            let peers = Api::<Peer>::all(self.client(cluster));
            peers
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await?;
            for _ in 0..600 {
                let left = peers.list_metadata(&ListParams::default().limit(1)).await?;
                if left.items.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Every Peer of one cluster.
    pub async fn peers(&self, cluster: usize) -> anyhow::Result<Vec<Peer>> {
        Ok(Api::<Peer>::all(self.client(cluster))
            .list(&ListParams::default())
            .await?
            .items)
    }
}

/// The ranges of cluster `c` (0-based, below [`MAX_CLUSTERS`]), sized for
/// 8192 nodes: pods in `10.<8c>.0.0/13` (a /26 per node), WireGuard in
/// `100.<64+c>.0.0/16`, services in a /20 of `172.16.0.0/12`.
pub fn entry(cluster: usize) -> ClusterEntry {
    let name = name(cluster);
    ClusterEntry {
        local: cluster == 0,
        kubeconfig_secret_ref: (cluster != 0).then(|| SecretKeyRef {
            name: format!("{name}-kubeconfig"),
            key: "kubeconfig".into(),
        }),
        name,
        pod_cidrs: vec![format!("10.{}.0.0/13", 8 * cluster)],
        wireguard_cidr: format!("100.{}.0.0/16", 64 + cluster),
        service_cidr: Some(format!(
            "172.{}.{}.0/20",
            16 + cluster / 16,
            (cluster % 16) * 16
        )),
        additional_cidrs: vec![],
    }
}

/// Node `name`, number `i` of cluster `cluster`, annotated as Kilo's agent
/// annotates it, Ready, with its own /26 of the cluster's pod range.
pub fn node(cluster: usize, name: &str, i: u32) -> Node {
    let c = u8::try_from(cluster).unwrap_or(u8::MAX);
    let k = c.saturating_add(1);
    let pod_base = u32::from(Ipv4Addr::new(10, 8 * c, 0, 0)) + i * 64;
    let wireguard_ip = u32::from(Ipv4Addr::new(100, 64 + c, 0, 0)) + i + 1;
    let mut key = [9u8; 32];
    key[0] = k;
    key[1..5].copy_from_slice(&i.to_be_bytes());
    let annotations = BTreeMap::from([
        ("kilo.squat.ai/key".to_owned(), STANDARD.encode(key)),
        (
            "kilo.squat.ai/endpoint".to_owned(),
            format!("192.0.2.{k}:51820"),
        ),
        (
            "kilo.squat.ai/wireguard-ip".to_owned(),
            format!("{}/16", Ipv4Addr::from(wireguard_ip)),
        ),
        ("kilo.squat.ai/granularity".to_owned(), "full".to_owned()),
        ("kilo.squat.ai/last-seen".to_owned(), unix_now().to_string()),
    ]);
    let pod_cidr = format!("{}/26", Ipv4Addr::from(pod_base));
    let mut node = ready_node(name, annotations, vec![pod_cidr.clone()]);
    // Kilo (and so the manual procedure) reads the singular field.
    if let Some(spec) = node.spec.as_mut() {
        spec.pod_cidr = Some(pod_cidr);
    }
    node
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_distinct_ranges_inside_their_clusters() {
        let last = node(2, "n", 8191);
        let spec = last.spec.unwrap_or_default();
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.23.255.192/26"));
        let first = node(0, "n", 0);
        assert_eq!(
            first.annotations().get("kilo.squat.ai/wireguard-ip"),
            Some(&"100.64.0.1/16".to_owned())
        );
        assert_eq!(entry(2).pod_cidrs, ["10.16.0.0/13"]);
        let last = entry(MAX_CLUSTERS - 1);
        assert_eq!(last.name, "z");
        assert_eq!(last.service_cidr.as_deref(), Some("172.17.144.0/20"));
    }
}
