//! Three lab clusters meshed the way `docs/connect.md` tells a user: the
//! release operator binary runs as its own process against the hub, each
//! remote is joined with `kilo-clustermesh-operator connect`, and the
//! ClusterMesh is applied with `kubectl`. Shared by `make demo` and the
//! end-to-end test.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, api::ListParams};
use testkit::ControlPlane;

use crate::{
    lab::{ClusterOptions, Granularity, Lab, NodeAgent, NodeOptions, plan::ClusterPlan},
    probe,
};

/// The namespace of the ClusterMesh, its Secrets and the operator's Lease.
pub const NAMESPACE: &str = "kilo-system";
/// The ClusterMesh's name.
pub const MESH: &str = "lab";
/// The hub: where the operator runs and the ClusterMesh lives.
pub const HUB: &str = "cluster-a";

/// Pods per node.
pub const PODS: u8 = 1;
/// The node of each cluster whose pod serves the cluster's ClusterIP.
pub const SERVICE_NODE: &str = "node-2";

/// A running meshed lab.
pub struct Mesh {
    // Dropped in this order: the operators, the lab's processes, the control planes.
    /// The hub's operator (cluster-a's own, in a decentralized mesh).
    pub operator: Option<Operator>,
    /// In a decentralized mesh, the other clusters' own operators, by
    /// cluster.
    pub local_operators: BTreeMap<String, Operator>,
    pub lab: Lab,
    pub planes: Vec<ControlPlane>,
    /// The user's kubeconfig: one admin context per cluster.
    pub contexts: PathBuf,
    pub operator_binary: PathBuf,
    pub kubectl: PathBuf,
}

/// How long the demo's pings and requests may take to all succeed once the
/// mesh is Ready.
const SETTLE: Duration = Duration::from_secs(30);

/// How long the whole mesh may take to become Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The operator's `--node-check-in-grace` in the lab: none past Kilo's own
/// 60 s, so that the operator moves a dead location leader's Peer when the
/// lab's agents move the leadership (a user keeps the 60 s default).
const CHECK_IN_GRACE: &str = "0s";

/// What the lab builds: three clusters (a, b, c; a is the hub), each with
/// its Kilo granularity and its nodes (node `n` is `nodes[n - 1]`).
#[derive(Clone, Debug)]
pub struct Layout {
    pub clusters: [(Granularity, Vec<NodeOptions>); 3],
}

impl Layout {
    /// Three `full` clusters of two nodes: `make demo`, and the faults of
    /// `make e2e`.
    pub fn full() -> Self {
        let two = || (Granularity::Full, vec![NodeOptions::default(); 2]);
        Self {
            clusters: [two(), two(), two()],
        }
    }

    /// Every granularity in one mesh: cluster-a `full` (two nodes),
    /// cluster-b `location` (rack-1: node-1, the leader by annotation, and
    /// node-2; rack-2: node-3 and node-4, located by the region label),
    /// cluster-c `cross` (two nodes of one region, which Kilo does not
    /// tunnel between).
    pub fn mixed() -> Self {
        Self {
            clusters: [
                (Granularity::Full, vec![NodeOptions::default(); 2]),
                (
                    Granularity::Location,
                    vec![
                        NodeOptions::in_location("rack-1").leader(),
                        NodeOptions::in_location("rack-1"),
                        NodeOptions::in_region("rack-2"),
                        NodeOptions::in_region("rack-2"),
                    ],
                ),
                (
                    Granularity::Cross,
                    vec![NodeOptions::in_region("zone-1"); 2],
                ),
            ],
        }
    }
}

impl Mesh {
    /// Builds the lab and meshes it. `say` reports each step.
    pub async fn start(
        tool: PathBuf,
        operator_binary: PathBuf,
        say: &dyn Fn(&str),
    ) -> anyhow::Result<Self> {
        Self::start_with(tool, operator_binary, Layout::full(), say).await
    }

    /// [`Mesh::start`] with the clusters and nodes of `layout`.
    pub async fn start_with(
        tool: PathBuf,
        operator_binary: PathBuf,
        layout: Layout,
        say: &dyn Fn(&str),
    ) -> anyhow::Result<Self> {
        // Refusals (not root, no /dev/net/tun, a tool missing) before the
        // control planes start; `Lab::new` checks again.
        crate::lab::host::preflight()?;
        if !operator_binary.is_file() {
            bail!(
                "{} is missing: build it first (cargo build -p kilo-clustermesh-operator)",
                operator_binary.display()
            );
        }
        let kubectl = testkit::tool("kubectl").context("kubectl")?;
        let plans = cluster_plans();

        say("starting 3 control planes (etcd + kube-apiserver each)");
        let planes: Vec<ControlPlane> =
            futures::future::try_join_all(plans.iter().map(|p| ControlPlane::start(&p.name)))
                .await?;

        let described: Vec<String> = plans
            .iter()
            .zip(&layout.clusters)
            .map(|(plan, (granularity, nodes))| {
                format!("{} {} x{}", plan.name, granularity.as_str(), nodes.len())
            })
            .collect();
        say(&format!(
            "building the network: underlay, nodes ({}), a pod on each, wireguard-go on every node",
            described.join(", ")
        ));
        let mut lab = Lab::new(tool, NodeAgent::from_env()).await?;
        for ((plan, plane), (granularity, nodes)) in plans.iter().zip(&planes).zip(&layout.clusters)
        {
            let options = ClusterOptions::granularity(*granularity);
            lab.add_cluster_with(plan.clone(), plane, options).await?;
            for (n, node) in (1..).zip(nodes) {
                lab.add_node_with(&plan.name, n, PODS, node.clone()).await?;
            }
            lab.add_service(&plan.name, SERVICE_NODE).await?;
        }
        say("waiting for every node's agent to check in (key, endpoint, granularity on its Node)");
        for (plane, (_, nodes)) in planes.iter().zip(&layout.clusters) {
            if let Err(error) = wait_for_agents(plane, nodes.len()).await {
                let logs: Vec<String> = lab
                    .nodes(plane.name())
                    .iter()
                    .map(|n| {
                        format!(
                            "-- {} agent\n{}",
                            n.netns,
                            lab.node_log(&n.netns, "agent", 40)
                        )
                    })
                    .collect();
                bail!("{error:#}\n{}", logs.join("\n"));
            }
        }

        // The user's files live with the lab's, and go with them.
        let contexts = lab.dir().join("kubeconfig");
        let named: Vec<(&str, &str)> = planes
            .iter()
            .map(|p| (p.name(), p.admin_kubeconfig()))
            .collect();
        std::fs::write(&contexts, testkit::merged_kubeconfig(&named)?)?;
        let mut mesh = Self {
            lab,
            planes,
            operator: None,
            local_operators: BTreeMap::new(),
            contexts,
            operator_binary,
            kubectl,
        };
        say("the operator: kilo-clustermesh-operator run, against the hub");
        mesh.kubectl(&["--context", HUB, "create", "namespace", NAMESPACE])
            .await?;
        mesh.start_operator()?;
        for remote in plans.iter().skip(1) {
            let printed = mesh
                .connect(HUB, &remote.name, Access::ReadWrite, say)
                .await?;
            say(&indent(&printed));
        }
        say("kubectl --context cluster-a apply -f clustermesh.yaml");
        let manifest = mesh.lab.dir().join("clustermesh.yaml");
        std::fs::write(&manifest, cluster_mesh_yaml(&plans))?;
        mesh.kubectl(&[
            "--context",
            HUB,
            "apply",
            "-f",
            &manifest.display().to_string(),
        ])
        .await?;
        let status = mesh.wait_ready().await?;
        say(&format!(
            "kilo-clustermesh-operator status {MESH} --context {HUB}\n{}",
            indent(&status)
        ));
        Ok(mesh)
    }

    /// Moves the hub mesh to a decentralized one, as docs/topologies.md
    /// says: cluster-b and cluster-c get their own operators (each takes its
    /// cluster's Peers over from the hub in place), the hub's mesh becomes
    /// `LocalCluster`, and its write access to the others is replaced by
    /// read-only access.
    pub async fn decentralize(&mut self, say: &dyn Fn(&str)) -> anyhow::Result<()> {
        let plans = cluster_plans();
        for local in plans.iter().skip(1) {
            self.start_own_operator(&local.name, say).await?;
        }
        for plan in plans.iter().skip(1) {
            self.wait_ready_on(&plan.name, say).await?;
        }
        say(&format!(
            "kubectl --context {HUB} patch clustermesh {MESH} --type merge -p '{{\"spec\":{{\"peerPlacement\":\"LocalCluster\"}}}}'"
        ));
        self.set_hub_placement("LocalCluster").await?;
        for remote in plans.iter().skip(1) {
            self.connect(HUB, &remote.name, Access::ReadOnly, say)
                .await?;
            say(&format!(
                "kubectl --context {} delete clusterrolebinding kilo-clustermesh-remote",
                remote.name
            ));
            self.kubectl(&[
                "--context",
                &remote.name,
                "delete",
                "clusterrolebinding",
                "kilo-clustermesh-remote",
            ])
            .await?;
        }
        self.wait_ready_on(HUB, say).await
    }

    /// Moves a decentralized mesh back to the hub on cluster-a: the hub
    /// gets write access again and `AllClusters`, then each other cluster's
    /// mesh is deleted with `peers-on-delete: release` (its operator leaves
    /// its Peers for the hub to take over in place) and its operator goes.
    pub async fn centralize(&mut self, say: &dyn Fn(&str)) -> anyhow::Result<()> {
        let plans = cluster_plans();
        for remote in plans.iter().skip(1) {
            self.connect(HUB, &remote.name, Access::ReadWrite, say)
                .await?;
        }
        say(&format!(
            "kubectl --context {HUB} patch clustermesh {MESH} --type merge -p '{{\"spec\":{{\"peerPlacement\":\"AllClusters\"}}}}'"
        ));
        self.set_hub_placement("AllClusters").await?;
        for plan in plans.iter().skip(1) {
            let context = ["--context", plan.name.as_str()];
            let annotation = "kilo-clustermesh.io/peers-on-delete=release";
            say(&format!(
                "kubectl --context {} annotate clustermesh {MESH} {annotation} && kubectl --context {0} delete clustermesh {MESH}",
                plan.name
            ));
            let annotate = ["-n", NAMESPACE, "annotate", "clustermesh", MESH, annotation];
            self.kubectl(&[&context[..], &annotate].concat()).await?;
            let wait = format!("--timeout={}s", READY_TIMEOUT.as_secs());
            let delete = ["-n", NAMESPACE, "delete", "clustermesh", MESH, &wait];
            self.kubectl(&[&context[..], &delete].concat()).await?;
            if let Some(operator) = self.local_operators.remove(&plan.name) {
                operator.kill().await?;
            }
        }
        self.wait_ready_on(HUB, say).await
    }

    /// Cluster `local`'s own operator, with a ClusterMesh naming it local and
    /// `peerPlacement: LocalCluster`, reading the others through
    /// `connect --read-only`. Started again if it was stopped.
    pub async fn start_own_operator(
        &mut self,
        local: &str,
        say: &dyn Fn(&str),
    ) -> anyhow::Result<()> {
        say(&format!(
            "{local}: its own operator, and read-only access to the others"
        ));
        // The hub's `connect` may have made the namespace already.
        let context = ["--context", local];
        if self
            .kubectl(&[&context[..], &["get", "namespace", NAMESPACE]].concat())
            .await
            .is_err()
        {
            self.kubectl(&[&context[..], &["create", "namespace", NAMESPACE]].concat())
                .await?;
        }
        let plane = self.plane(local)?;
        let kubeconfig = self.lab.dir().join(format!("{local}.kubeconfig"));
        std::fs::write(&kubeconfig, plane.admin_kubeconfig())?;
        let log = self.lab.dir().join(format!("operator-{local}.log"));
        let operator = Operator::start(&self.operator_binary, &kubeconfig, &log)?;
        self.local_operators.insert(local.to_owned(), operator);
        let plans = cluster_plans();
        for remote in plans.iter().filter(|p| p.name != local) {
            self.connect(local, &remote.name, Access::ReadOnly, say)
                .await?;
        }
        let manifest = self.lab.dir().join(format!("clustermesh-{local}.yaml"));
        std::fs::write(&manifest, cluster_mesh_yaml_for(&plans, local, true))?;
        let path = manifest.display().to_string();
        self.kubectl(&["--context", local, "apply", "-f", &path])
            .await?;
        Ok(())
    }

    /// `kilo-clustermesh-operator connect` from `hub` to `remote`; returns
    /// what it printed.
    async fn connect(
        &self,
        hub: &str,
        remote: &str,
        access: Access,
        say: &dyn Fn(&str),
    ) -> anyhow::Result<String> {
        let mut args = vec![
            "connect",
            "--hub-context",
            hub,
            "--remote-context",
            remote,
            "--name",
            remote,
        ];
        if access == Access::ReadOnly {
            args.extend([
                "--read-only",
                "--service-account",
                "kilo-clustermesh-reader",
            ]);
        }
        say(&format!("kilo-clustermesh-operator {}", args.join(" ")));
        // The lab's API servers and the operator share the host's loopback.
        args.push("--allow-loopback-server");
        self.operator_command(&args).await
    }

    async fn set_hub_placement(&self, placement: &str) -> anyhow::Result<()> {
        let patch = format!(r#"{{"spec":{{"peerPlacement":"{placement}"}}}}"#);
        let args = [
            "-n",
            NAMESPACE,
            "patch",
            "clustermesh",
            MESH,
            "--type",
            "merge",
            "-p",
        ];
        self.kubectl(&[&["--context", HUB][..], &args, &[patch.as_str()]].concat())
            .await
            .map(drop)
    }

    /// `status --wait` on `cluster`'s ClusterMesh, told.
    async fn wait_ready_on(&self, cluster: &str, say: &dyn Fn(&str)) -> anyhow::Result<()> {
        let wait = format!("{}s", READY_TIMEOUT.as_secs());
        let status = self
            .operator_command(&["status", MESH, "--context", cluster, "--wait", &wait])
            .await?;
        say(&format!(
            "kilo-clustermesh-operator status {MESH} --context {cluster}\n{}",
            indent(&status)
        ));
        Ok(())
    }

    /// `status --wait`: the table once the mesh is Ready.
    pub async fn wait_ready(&self) -> anyhow::Result<String> {
        let wait = format!("{}s", READY_TIMEOUT.as_secs());
        self.operator_command(&["status", MESH, "--context", HUB, "--wait", &wait])
            .await
    }

    /// The ClusterMesh's status now.
    pub async fn status(&self) -> anyhow::Result<api::ClusterMeshStatus> {
        let meshes = Api::<api::ClusterMesh>::namespaced(self.planes[0].admin_client(), NAMESPACE);
        Ok(meshes.get(MESH).await?.status.unwrap_or_default())
    }

    /// Starts (or restarts) the operator process.
    pub fn start_operator(&mut self) -> anyhow::Result<()> {
        let hub = self.lab.dir().join("hub.kubeconfig");
        std::fs::write(&hub, self.planes[0].admin_kubeconfig())?;
        let log = self.lab.dir().join("operator.log");
        self.operator = Some(Operator::start(&self.operator_binary, &hub, &log)?);
        Ok(())
    }

    /// Runs `kilo-clustermesh-operator args` as the user, with the user's
    /// kubeconfig; returns what it printed.
    pub async fn operator_command(&self, args: &[&str]) -> anyhow::Result<String> {
        run_with_kubeconfig(&self.operator_binary, args, &self.contexts).await
    }

    /// Runs `kubectl args` with the user's kubeconfig.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        run_with_kubeconfig(&self.kubectl, args, &self.contexts).await
    }

    /// The operator's log so far.
    /// (Every operator's, one after the other, in a decentralized mesh.)
    pub fn operator_log(&self) -> String {
        let mut names: Vec<String> = std::fs::read_dir(self.lab.dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.starts_with("operator") && name.ends_with(".log"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.lab.dir().join(name)).unwrap_or_default();
                format!("-- {name}\n{text}")
            })
            .collect()
    }

    /// The control plane of `cluster`.
    pub fn plane(&self, cluster: &str) -> anyhow::Result<&ControlPlane> {
        self.planes
            .iter()
            .find(|p| p.name() == cluster)
            .with_context(|| format!("no control plane {cluster}"))
    }

    /// The control plane of `cluster`, to stop or restart it.
    pub fn plane_mut(&mut self, cluster: &str) -> anyhow::Result<&mut ControlPlane> {
        self.planes
            .iter_mut()
            .find(|p| p.name() == cluster)
            .with_context(|| format!("no control plane {cluster}"))
    }

    /// Everything a reader needs when a check fails: Peers, `wg show` and
    /// routes of every node, the agents' and the operator's last lines.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        for plane in &self.planes {
            let peers = Api::<api::Peer>::all(plane.admin_client())
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .map(|p| {
                            format!(
                                "  {} {:?} {}",
                                kube::ResourceExt::name_any(p),
                                p.spec.allowed_ips,
                                p.spec.public_key
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_else(|e| format!("  (cannot list: {e})"));
            out.push_str(&format!("== Peers on {}\n{peers}\n", plane.name()));
        }
        for node in self.lab.all_nodes() {
            let wg = self
                .lab
                .on_node(&node.netns, &["wg", "show", "kilo0"])
                .await
                .unwrap_or_else(|e| e.to_string());
            let routes = self
                .lab
                .on_node(&node.netns, &["ip", "route"])
                .await
                .unwrap_or_else(|e| e.to_string());
            out.push_str(&format!(
                "== {} {}\n{wg}\n-- routes\n{routes}\n-- agent log\n{}\n-- wireguard-go log\n{}\n",
                node.cluster,
                node.name,
                self.lab.node_log(&node.netns, "agent", 30),
                self.lab.node_log(&node.netns, "wireguard-go", 30),
            ));
        }
        let log = self.operator_log();
        let lines: Vec<&str> = log.lines().collect();
        out.push_str(&format!(
            "== operator log\n{}\n",
            lines[lines.len().saturating_sub(40)..].join("\n")
        ));
        out
    }
}

/// The operator as its own process, as a Deployment would run it.
pub struct Operator {
    child: tokio::process::Child,
    pub metrics_port: u16,
}

impl Operator {
    fn start(binary: &Path, kubeconfig: &Path, log: &Path) -> anyhow::Result<Self> {
        let metrics_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = tokio::process::Command::new(binary)
            .arg("run")
            .args([
                "--namespace",
                NAMESPACE,
                "--leader-election-namespace",
                NAMESPACE,
            ])
            .arg(format!("--metrics-address=127.0.0.1:{metrics_port}"))
            .arg(format!("--node-check-in-grace={CHECK_IN_GRACE}"))
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", "netlab-operator")
            .env("RUST_LOG", "info")
            // It logs to stdout, as in a pod.
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting kilo-clustermesh-operator run")?;
        Ok(Self {
            child,
            metrics_port,
        })
    }

    /// Peer writes (applies and deletes) this process has sent.
    pub async fn peer_writes(&self) -> f64 {
        let metrics = testkit::http_get(self.metrics_port, "/metrics").await;
        testkit::metric_sum(&metrics, "kilo_clustermesh_peer_writes_total", "")
    }

    /// SIGKILL, as a crashed pod.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

async fn run_with_kubeconfig(
    program: &Path,
    args: &[&str],
    kubeconfig: &Path,
) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "`{} {}` failed ({}):\n{stdout}{}",
            program.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// Waits until `count` Nodes of `plane` carry the agent's key, endpoint and
/// granularity, and a WireGuard IP where the agent leads (every node but a
/// `location` cluster's non-leaders, which write none).
async fn wait_for_agents(plane: &ControlPlane, count: usize) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(plane.admin_client());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = nodes.list(&ListParams::default()).await?;
        let checked_in = list
            .items
            .iter()
            .filter(|n| {
                let annotations = n.metadata.annotations.clone().unwrap_or_default();
                let has = |a: &str| annotations.get(a).is_some_and(|v| !v.is_empty());
                let location = annotations
                    .get("kilo.squat.ai/granularity")
                    .is_some_and(|g| g == "location");
                has("kilo.squat.ai/key")
                    && has("kilo.squat.ai/endpoint")
                    && has("kilo.squat.ai/granularity")
                    && (location || has("kilo.squat.ai/wireguard-ip"))
            })
            .count();
        if checked_in >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {count} agents of {} checked in within 60 s",
                checked_in,
                plane.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The lab's three clusters.
fn cluster_plans() -> Vec<ClusterPlan> {
    (1..=3).map(ClusterPlan::new).collect()
}

/// What `connect` grants the hub on a remote.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Nodes, and Peers to write (a hub's).
    ReadWrite,
    /// Nodes only (`--read-only`).
    ReadOnly,
}

/// The ClusterMesh a user writes from `connect`'s printed entries, with
/// each cluster's whole pod range (so nodes added later are covered).
pub fn cluster_mesh_yaml(plans: &[ClusterPlan]) -> String {
    cluster_mesh_yaml_for(plans, HUB, false)
}

/// The ClusterMesh of the cluster named `local`; `own_peers_only` sets
/// `peerPlacement: LocalCluster`.
fn cluster_mesh_yaml_for(plans: &[ClusterPlan], local: &str, own_peers_only: bool) -> String {
    let mut yaml = format!(
        "apiVersion: kilo.squat.ai/v1alpha1\nkind: ClusterMesh\nmetadata:\n  name: {MESH}\n  namespace: {NAMESPACE}\nspec:\n"
    );
    if own_peers_only {
        yaml.push_str("  peerPlacement: LocalCluster\n");
    }
    yaml.push_str("  clusters:\n");
    for plan in plans {
        yaml.push_str(&format!("    - name: {}\n", plan.name));
        if plan.name == local {
            yaml.push_str("      local: true\n");
        } else {
            yaml.push_str(&format!(
                "      kubeconfigSecretRef: {{name: {}-kubeconfig, key: kubeconfig}}\n",
                plan.name
            ));
        }
        yaml.push_str(&format!(
            "      podCIDRs: [{}]\n      wireguardCIDR: {}\n      serviceCIDR: {}\n",
            plan.pods, plan.wireguard, plan.services
        ));
    }
    yaml
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `make demo`: the mesh, the status, a ping matrix and each cluster's
/// service reached from the others; then the lab stays up to explore.
pub async fn demo(tool: PathBuf, keep: Option<Duration>) -> anyhow::Result<()> {
    let started = Instant::now();
    let say = |step: &str| eprintln!("[{:>5.1}s] {step}", started.elapsed().as_secs_f64());
    let operator_binary = tool.with_file_name("kilo-clustermesh-operator");
    let run = async {
        let mesh = Mesh::start(tool, operator_binary, &say).await?;
        say("ping matrix: every pod to every pod of the other clusters");
        let matrix = probe::settled_ping_matrix(&mesh.lab, SETTLE).await;
        println!("{}", probe::render_matrix(&matrix));
        say("services: each cluster's ClusterIP from a pod of every other cluster");
        let services = probe::settled_service_matrix(&mesh.lab, SETTLE).await;
        println!("{}", probe::render_services(&services));
        let failed = matrix.iter().filter(|p| !p.reached()).count()
            + services.iter().filter(|s| s.reply.is_err()).count();
        if failed > 0 {
            eprintln!("{}", mesh.describe().await);
            bail!("{failed} probes failed (the lab's state is above)");
        }
        say(&format!(
            "all green in {:.0} s. Explore:",
            started.elapsed().as_secs_f64()
        ));
        for node in mesh.lab.all_nodes().iter().take(2) {
            println!("  {}", mesh.lab.enter_command(&node.netns, "wg show kilo0"));
            println!("  ip netns exec {} ip route", node.netns);
        }
        let pods: Vec<_> = mesh
            .lab
            .all_nodes()
            .into_iter()
            .flat_map(|n| n.pods)
            .collect();
        if let (Some(from), Some(to)) = (pods.first(), pods.last()) {
            println!("  ip netns exec {} ping {}", from.netns, to.ip);
        }
        println!(
            "  KUBECONFIG={} {} get peers --context cluster-b",
            mesh.contexts.display(),
            mesh.kubectl.display()
        );
        match keep {
            Some(keep) => {
                say(&format!(
                    "keeping the lab up for {} s (DEMO_SECONDS)",
                    keep.as_secs()
                ));
                tokio::time::sleep(keep).await;
            }
            None => {
                say("keeping the lab up until Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        result = run => result,
        _ = tokio::signal::ctrl_c() => {
            say("Ctrl-C");
            Ok(())
        }
    };
    // The mesh was dropped with the future: everything is removed.
    let left = crate::lab::host::leftovers();
    if !left.is_empty() {
        eprintln!("left behind: {left:?}");
    } else if result.is_ok() {
        say("cleaned up: no namespace, mount or process of the lab is left");
    }
    result
}
