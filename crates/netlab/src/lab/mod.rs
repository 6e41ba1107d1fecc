//! The network lab: clusters of nodes made of network namespaces, joined by
//! an underlay, each node running real WireGuard (`wireguard-go`) driven by a
//! Kilo-compatible agent (or Kilo's own `kg`), each cluster's Nodes on a real
//! API server.
//!
//! ```text
//!                  kcmlab-underlay: bridge br0, routes between the three subnets
//!        192.0.2.1/24          198.51.100.1/24          203.0.113.1/24
//!     ┌──────┴──────┐        ┌──────┴──────┐          ┌──────┴──────┐
//!  kcmlab-a1    kcmlab-a2   kcmlab-b1   kcmlab-b2    kcmlab-c1   kcmlab-c2      nodes: eth0 + kilo0
//!     │             │          │            │           │            │
//!  kcmlab-a1-p1    ...     kcmlab-b1-p1    ...       kcmlab-c1-p1   ...          pods: eth0 (veth)
//! ```
//!
//! Every node also has a mount namespace of its own (kept as a file in the
//! state directory) in which `/run/wireguard` and `/var/lib/kilo` are its
//! own, so `wg` finds that node's `kilo0` and `kg` its key. Nodes reach their
//! cluster's API server on loopback through a forwarder: `127.0.0.1:<port>`
//! inside the node → a Unix socket in the state directory → the API server.
//!
//! A cluster's agents run in Kilo's `full` granularity unless
//! [`ClusterOptions`] say otherwise; [`NodeOptions`] put a node in a location,
//! make it its leader, and give it the private address Kilo needs to group it
//! with the other nodes of its location.
//!
//! Nothing routes out of the lab's namespaces. Dropping the [`Lab`] removes
//! every process, mount and namespace it made, also after a panic; a lab
//! whose process was killed is cleaned by the next one ([`host::claim`]).

pub mod host;
pub mod plan;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use testkit::{ControlPlane, Process};

use self::plan::{ClusterPlan, NodePlan, SERVICE_PORT, UNDERLAY_NETNS, WIREGUARD_PORT};
pub use crate::agent::topology::Granularity;
use crate::{agent::backend::annotation, sh::run};

/// What runs on every node to turn Nodes and Peers into WireGuard config.
#[derive(Clone, Debug)]
pub enum NodeAgent {
    /// This crate's Kilo-compatible agent (`kcm-netlab agent`).
    Compatible,
    /// Kilo's own `kg` at this path (`KILO_KG`).
    Kilo(PathBuf),
}

impl NodeAgent {
    /// `KILO_KG=/path/to/kg` picks Kilo's own agent.
    pub fn from_env() -> Self {
        match std::env::var_os("KILO_KG") {
            Some(path) if !path.is_empty() => Self::Kilo(PathBuf::from(path)),
            _ => Self::Compatible,
        }
    }
}

/// How a cluster is built. The default is what [`Lab::add_cluster`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The agents' `--mesh-granularity`.
    pub granularity: Granularity,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            granularity: Granularity::Full,
        }
    }
}

impl ClusterOptions {
    pub fn granularity(granularity: Granularity) -> Self {
        Self { granularity }
    }
}

/// Where Kilo places a node: the annotation, or the label kg falls back to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeLocation {
    /// `kilo.squat.ai/location`.
    Annotation(String),
    /// `topology.kubernetes.io/region` (kg's default `--topology-label`).
    RegionLabel(String),
}

impl NodeLocation {
    pub fn name(&self) -> &str {
        match self {
            Self::Annotation(name) | Self::RegionLabel(name) => name,
        }
    }
}

/// How a node is registered and addressed. The default is what
/// [`Lab::add_node`] builds: no location, no leader annotation, no private
/// address (so Kilo finds no internal IP and the node is a segment of its own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeOptions {
    pub location: Option<NodeLocation>,
    /// `kilo.squat.ai/leader` on the Node at registration.
    pub leader: bool,
    /// An RFC 1918 address on the node's underlay link, shared as a subnet
    /// with the nodes of the same location only ([`ClusterPlan::private_ip`]):
    /// kg takes it as the node's internal IP.
    pub private_ip: bool,
}

impl NodeOptions {
    /// In `location` (the annotation), with a private address.
    pub fn in_location(location: &str) -> Self {
        Self {
            location: Some(NodeLocation::Annotation(location.to_owned())),
            private_ip: true,
            ..Self::default()
        }
    }

    /// In `region` (the region label), with a private address.
    pub fn in_region(region: &str) -> Self {
        Self {
            location: Some(NodeLocation::RegionLabel(region.to_owned())),
            private_ip: true,
            ..Self::default()
        }
    }

    /// With the `kilo.squat.ai/leader` annotation.
    pub fn leader(mut self) -> Self {
        self.leader = true;
        self
    }

    /// With a private address even without a location (the location `""`).
    pub fn with_private_ip(mut self) -> Self {
        self.private_ip = true;
        self
    }

    /// Without a private address: Kilo finds no internal IP, and puts the
    /// node in a segment of its own whatever its location.
    pub fn without_private_ip(mut self) -> Self {
        self.private_ip = false;
        self
    }
}

/// A running lab. Dropping it removes everything it made.
pub struct Lab {
    dir: PathBuf,
    /// `kcm-netlab`: the agent, the forwarder and the echo server.
    tool: PathBuf,
    agent: NodeAgent,
    clusters: BTreeMap<String, LabCluster>,
}

struct LabCluster {
    plan: ClusterPlan,
    options: ClusterOptions,
    /// The locations of its nodes with a private address, in order of
    /// first use: the `l`-th gets the private subnet `l`.
    private_subnets: Vec<String>,
    client: Client,
    kubeconfig: PathBuf,
    api_port: u16,
    /// The Unix-socket end of the path to the API server.
    _bridge: Process,
    nodes: BTreeMap<String, LabNode>,
    /// The pod that serves the cluster's ClusterIP.
    service_backend: Option<Ipv4Addr>,
}

/// One node's processes. Dropped (killed) before its namespaces go.
struct LabNode {
    plan: NodePlan,
    agent: Option<Process>,
    others: Vec<Process>,
}

impl Lab {
    /// Claims the host for a lab; `tool` is the `kcm-netlab` binary.
    pub async fn new(tool: PathBuf, agent: NodeAgent) -> anyhow::Result<Self> {
        host::preflight()?;
        if let NodeAgent::Kilo(kg) = &agent
            && !kg.is_file()
        {
            bail!("KILO_KG={} is not a file", kg.display());
        }
        let dir = host::claim()?;
        let lab = Self {
            dir,
            tool,
            agent,
            clusters: BTreeMap::new(),
        };
        lab.underlay().await?;
        Ok(lab)
    }

    /// The namespace that routes between the clusters' underlay subnets.
    async fn underlay(&self) -> anyhow::Result<()> {
        let ns = UNDERLAY_NETNS;
        run("ip", &["netns", "add", ns]).await?;
        netns_sysctl(ns, "net.ipv4.ip_forward=1").await?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"]).await?;
        run("ip", &["-n", ns, "link", "add", "br0", "type", "bridge"]).await?;
        // A bridge takes the lowest MAC of its ports unless it has its own:
        // a node joining or leaving would change the gateway's MAC under
        // every node's ARP cache, and cut traffic between clusters for as
        // long as the stale entries live.
        let mac = "02:6b:63:6d:00:01"; // locally administered
        run("ip", &["-n", ns, "link", "set", "br0", "address", mac]).await?;
        run("ip", &["-n", ns, "link", "set", "br0", "up"]).await?;
        for k in 1..=3 {
            let plan = ClusterPlan::new(k);
            let gateway = format!("{}/{}", plan.gateway(), plan.underlay.prefix_len());
            run("ip", &["-n", ns, "addr", "add", &gateway, "dev", "br0"]).await?;
        }
        Ok(())
    }

    /// Adds a cluster whose Nodes live on `plane`, its agents in `full`
    /// granularity.
    pub async fn add_cluster(
        &mut self,
        plan: ClusterPlan,
        plane: &ControlPlane,
    ) -> anyhow::Result<()> {
        self.add_cluster_with(plan, plane, ClusterOptions::default())
            .await
    }

    /// Adds a cluster whose Nodes live on `plane`, built as `options` say.
    pub async fn add_cluster_with(
        &mut self,
        plan: ClusterPlan,
        plane: &ControlPlane,
        options: ClusterOptions,
    ) -> anyhow::Result<()> {
        let kubeconfig = self.dir.join(format!("{}.kubeconfig", plan.name));
        std::fs::write(&kubeconfig, plane.admin_kubeconfig())?;
        let api_port = plane.port();
        let socket = self.socket(&plan.name);
        let bridge = Process::spawn(
            &format!("api bridge {}", plan.name),
            &self.tool,
            &[
                "forward".into(),
                format!("--listen=unix:{}", socket.display()),
                format!("--to=127.0.0.1:{api_port}"),
            ],
            self.dir.join(format!("{}-bridge.log", plan.name)),
        )?;
        wait_for_path(&socket).await?;
        self.clusters.insert(
            plan.name.clone(),
            LabCluster {
                plan,
                options,
                private_subnets: Vec::new(),
                client: plane.admin_client(),
                kubeconfig,
                api_port,
                _bridge: bridge,
                nodes: BTreeMap::new(),
                service_backend: None,
            },
        );
        Ok(())
    }

    /// The lab's state directory ([`host::STATE_DIR`]): sockets, logs,
    /// kubeconfigs; removed with the lab.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `kcm-netlab` binary the lab runs in its namespaces.
    pub fn tool(&self) -> &Path {
        &self.tool
    }

    /// The clusters' plans, by name.
    pub fn clusters(&self) -> impl Iterator<Item = &ClusterPlan> {
        self.clusters.values().map(|c| &c.plan)
    }

    /// Every node of `cluster`.
    pub fn nodes(&self, cluster: &str) -> Vec<NodePlan> {
        self.clusters
            .get(cluster)
            .map(|c| c.nodes.values().map(|n| n.plan.clone()).collect())
            .unwrap_or_default()
    }

    /// Every node of the lab.
    pub fn all_nodes(&self) -> Vec<NodePlan> {
        self.clusters
            .values()
            .flat_map(|c| c.nodes.values().map(|n| n.plan.clone()))
            .collect()
    }

    /// The granularity of `cluster`'s agents.
    pub fn granularity(&self, cluster: &str) -> Option<Granularity> {
        self.clusters.get(cluster).map(|c| c.options.granularity)
    }

    /// Adds node `n` to `cluster` with no location and no private address.
    pub async fn add_node(&mut self, cluster: &str, n: u8, pods: u8) -> anyhow::Result<NodePlan> {
        self.add_node_with(cluster, n, pods, NodeOptions::default())
            .await
    }

    /// Adds node `n` to `cluster`: namespaces, links, WireGuard, the Node
    /// object as a kubelet registers it (with the location and leader
    /// annotation or label of `options`), then the agent.
    pub async fn add_node_with(
        &mut self,
        cluster: &str,
        n: u8,
        pods: u8,
        options: NodeOptions,
    ) -> anyhow::Result<NodePlan> {
        let lab_cluster = self.cluster_mut(cluster)?;
        let mut plan = lab_cluster.plan.node(n, pods);
        if options.private_ip {
            let location = options.location.as_ref().map_or("", NodeLocation::name);
            let subnet = match lab_cluster
                .private_subnets
                .iter()
                .position(|l| l == location)
            {
                Some(index) => index + 1,
                None => {
                    lab_cluster.private_subnets.push(location.to_owned());
                    lab_cluster.private_subnets.len()
                }
            };
            let subnet = u8::try_from(subnet)
                .with_context(|| format!("{cluster} has more than 255 locations"))?;
            plan.private_ip = Some(lab_cluster.plan.private_ip(subnet, n));
        }
        let lab_cluster = self.cluster(cluster)?;
        let client = lab_cluster.client.clone();
        let cluster_plan = lab_cluster.plan.clone();
        let api_port = lab_cluster.api_port;
        let ns = plan.netns.as_str();
        run("ip", &["netns", "add", ns]).await?;
        netns_sysctl(ns, "net.ipv4.ip_forward=1").await?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"]).await?;

        // Underlay: eth0 on the bridge, routes to the other clusters' subnets.
        let port = plan.netns.trim_start_matches(plan::NETNS_PREFIX);
        run(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                UNDERLAY_NETNS,
            ],
        )
        .await?;
        run(
            "ip",
            &[
                "-n",
                UNDERLAY_NETNS,
                "link",
                "set",
                port,
                "master",
                "br0",
                "up",
            ],
        )
        .await?;
        let address = format!(
            "{}/{}",
            plan.underlay_ip,
            cluster_plan.underlay.prefix_len()
        );
        run("ip", &["-n", ns, "addr", "add", &address, "dev", "eth0"]).await?;
        // Second, so the underlay address stays eth0's primary one.
        if let Some(private) = plan.private_ip {
            let private = private.to_string();
            run("ip", &["-n", ns, "addr", "add", &private, "dev", "eth0"]).await?;
        }
        run("ip", &["-n", ns, "link", "set", "eth0", "up"]).await?;
        for k in (1..=3).filter(|k| *k != cluster_plan.k) {
            let other = ClusterPlan::new(k).underlay.to_string();
            let gateway = cluster_plan.gateway().to_string();
            run("ip", &["-n", ns, "route", "add", &other, "via", &gateway]).await?;
        }

        // Pods: a veth each, a host route and proxy ARP on the node's side.
        for (p, pod) in plan.pods.iter().enumerate() {
            let veth = format!("veth-p{}", p + 1);
            run("ip", &["netns", "add", &pod.netns]).await?;
            run(
                "ip",
                &[
                    "link", "add", "eth0", "netns", &pod.netns, "type", "veth", "peer", "name",
                    &veth, "netns", ns,
                ],
            )
            .await?;
            run("ip", &["-n", &pod.netns, "link", "set", "lo", "up"]).await?;
            run(
                "ip",
                &[
                    "-n",
                    &pod.netns,
                    "addr",
                    "add",
                    &format!("{}/32", pod.ip),
                    "dev",
                    "eth0",
                ],
            )
            .await?;
            run("ip", &["-n", &pod.netns, "link", "set", "eth0", "up"]).await?;
            run(
                "ip",
                &["-n", &pod.netns, "route", "add", "default", "dev", "eth0"],
            )
            .await?;
            run("ip", &["-n", ns, "link", "set", &veth, "up"]).await?;
            netns_sysctl(ns, &format!("net.ipv4.conf.{veth}.proxy_arp=1")).await?;
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "route",
                    "add",
                    &format!("{}/32", pod.ip),
                    "dev",
                    &veth,
                ],
            )
            .await?;
        }

        // The node's own /run/wireguard and /var/lib/kilo.
        let mount_ns = self.mount_ns(&plan.netns);
        std::fs::File::create(&mount_ns)?;
        let mut binds = String::new();
        for private_dir in host::PRIVATE_DIRS {
            let own = self.private_dir(&plan.netns, private_dir);
            std::fs::create_dir_all(&own)?;
            binds.push_str(&format!("mount --bind {} {private_dir} && ", own.display()));
        }
        run(
            "unshare",
            &[
                &format!("--mount={}", mount_ns.display()),
                "--propagation=private",
                "sh",
                "-c",
                &format!("{binds}true"),
            ],
        )
        .await?;

        let mut others = Vec::new();
        let wireguard = spawn_on_node(
            &self.dir,
            &plan,
            "wireguard-go",
            Path::new("env"),
            // Its handshakes in its log, for the failure report.
            &["LOG_LEVEL=verbose", "wireguard-go", "-f", "kilo0"],
        )?;
        others.push(wireguard);
        let socket = self
            .private_dir(&plan.netns, "/run/wireguard")
            .join("kilo0.sock");
        wait_for_path(&socket).await?;
        others.push(spawn_on_node(
            &self.dir,
            &plan,
            "api forwarder",
            &self.tool,
            &[
                "forward",
                &format!("--listen=127.0.0.1:{api_port}"),
                &format!("--to=unix:{}", self.socket(cluster).display()),
            ],
        )?);
        if let Some(backend) = self.cluster(cluster)?.service_backend {
            service_rules(&plan, &cluster_plan, backend).await?;
        }

        Api::<Node>::all(client)
            .create(&PostParams::default(), &registered_node(&plan, &options))
            .await
            .with_context(|| format!("registering Node {} on {cluster}", plan.name))?;
        let mut node = LabNode {
            plan: plan.clone(),
            agent: None,
            others,
        };
        node.agent = Some(self.start_agent(&node.plan)?);
        self.cluster_mut(cluster)?
            .nodes
            .insert(plan.name.clone(), node);
        Ok(plan)
    }

    /// Removes a node as an administrator would: its Node object deleted,
    /// the machine gone.
    pub async fn remove_node(&mut self, cluster: &str, name: &str) -> anyhow::Result<()> {
        let lab_cluster = self.cluster_mut(cluster)?;
        let node = lab_cluster
            .nodes
            .remove(name)
            .with_context(|| format!("{cluster} has no node {name}"))?;
        let client = lab_cluster.client.clone();
        Api::<Node>::all(client)
            .delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting Node {name} on {cluster}"))?;
        let mount_ns = self.mount_ns(&node.plan.netns);
        let node_dir = node.plan.netns.clone();
        let namespaces: Vec<String> = node
            .plan
            .pods
            .iter()
            .map(|p| p.netns.clone())
            .chain([node.plan.netns.clone()])
            .collect();
        drop(node);
        crate::sh::run_quietly("umount", &[&mount_ns.display().to_string()]);
        for ns in namespaces {
            run("ip", &["netns", "delete", &ns]).await?;
        }
        let _ = std::fs::remove_dir_all(self.dir.join(&node_dir));
        Ok(())
    }

    /// Kills a node's agent (SIGKILL), as when kg crashes: the node stays,
    /// its `kilo0` keeps what the agent last put there, and its `last-seen`
    /// ages, so after 60 s Kilo counts it as not ready. Does nothing if the
    /// agent is not running.
    pub async fn stop_agent(&mut self, cluster: &str, name: &str) -> anyhow::Result<()> {
        self.node_mut(cluster, name)?.agent = None; // killed
        Ok(())
    }

    /// Starts a node's agent again (killing it first if it runs), with the
    /// same key. The log of the previous one is kept beside the new one, as
    /// `<netns>-agent.previous.log`.
    pub async fn restart_agent(&mut self, cluster: &str, name: &str) -> anyhow::Result<()> {
        let node = self.node_mut(cluster, name)?;
        node.agent = None;
        let plan = node.plan.clone();
        let log = self.dir.join(format!("{}-agent.log", plan.netns));
        let previous = self.dir.join(format!("{}-agent.previous.log", plan.netns));
        let _ = std::fs::rename(log, previous);
        let restarted = self.start_agent(&plan)?;
        self.node_mut(cluster, name)?.agent = Some(restarted);
        Ok(())
    }

    /// Restarts a node's agent with a new private key, as after a reinstall.
    pub async fn regenerate_key(&mut self, cluster: &str, name: &str) -> anyhow::Result<()> {
        let node = self.node_mut(cluster, name)?;
        node.agent = None; // killed
        let plan = node.plan.clone();
        let key = self.private_dir(&plan.netns, "/var/lib/kilo").join("key");
        std::fs::remove_file(&key).with_context(|| format!("removing {}", key.display()))?;
        let restarted = self.start_agent(&plan)?;
        self.node_mut(cluster, name)?.agent = Some(restarted);
        Ok(())
    }

    /// Serves the cluster's ClusterIP from `pod` of its node `node`, as
    /// kube-proxy would: every node DNATs the ClusterIP to the pod, and
    /// masquerades what comes from outside the cluster's pods.
    pub async fn add_service(&mut self, cluster: &str, node: &str) -> anyhow::Result<Ipv4Addr> {
        let lab_cluster = self.cluster(cluster)?;
        let cluster_plan = lab_cluster.plan.clone();
        let backend_node = lab_cluster
            .nodes
            .get(node)
            .with_context(|| format!("{cluster} has no node {node}"))?
            .plan
            .clone();
        let pod = backend_node
            .pods
            .first()
            .context("the backend node has no pod")?;
        let reply = format!("{cluster}/{node}");
        let server = Process::spawn(
            &format!("echo server {reply}"),
            Path::new("ip"),
            &[
                "netns".into(),
                "exec".into(),
                pod.netns.clone(),
                self.tool.display().to_string(),
                "serve".into(),
                format!("--listen=0.0.0.0:{SERVICE_PORT}"),
                format!("--reply={reply}"),
            ],
            self.dir.join(format!("{}-serve.log", pod.netns)),
        )?;
        let backend = pod.ip;
        let nodes: Vec<NodePlan> = lab_cluster.nodes.values().map(|n| n.plan.clone()).collect();
        for plan in &nodes {
            service_rules(plan, &cluster_plan, backend).await?;
        }
        let lab_cluster = self.cluster_mut(cluster)?;
        lab_cluster.service_backend = Some(backend);
        if let Some(node) = lab_cluster.nodes.get_mut(node) {
            node.others.push(server);
        }
        Ok(cluster_plan.service_ip())
    }

    /// A command line that runs `command` on `node` as the node sees it
    /// (its network and its own `/run/wireguard`), for a user to paste.
    pub fn enter_command(&self, netns: &str, command: &str) -> String {
        format!(
            "nsenter --net=/run/netns/{netns} --mount={} {command}",
            self.mount_ns(netns).display()
        )
    }

    /// Runs `args` on a node (see [`Self::enter_command`]) and returns stdout.
    pub async fn on_node(&self, netns: &str, args: &[&str]) -> anyhow::Result<String> {
        let net = format!("--net=/run/netns/{netns}");
        let mount = format!("--mount={}", self.mount_ns(netns).display());
        let mut full = vec![net.as_str(), mount.as_str(), "--"];
        full.extend_from_slice(args);
        run("nsenter", &full).await
    }

    /// The last lines of a node agent's log.
    /// The last `lines` lines of the log of a node's `agent` or `wireguard-go`.
    pub fn node_log(&self, netns: &str, what: &str, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("{netns}-{what}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn start_agent(&self, plan: &NodePlan) -> anyhow::Result<Process> {
        let cluster = self.cluster(&plan.cluster)?;
        let kubeconfig = format!("--kubeconfig={}", cluster.kubeconfig.display());
        let hostname = format!("--hostname={}", plan.name);
        let subnet = format!("--subnet={}", cluster.plan.wireguard);
        let port = format!("--port={WIREGUARD_PORT}");
        let granularity = format!("--mesh-granularity={}", cluster.options.granularity);
        let (program, args): (&Path, Vec<&str>) = match &self.agent {
            NodeAgent::Compatible => (
                &self.tool,
                vec![
                    "agent",
                    &kubeconfig,
                    &hostname,
                    &subnet,
                    &port,
                    &granularity,
                ],
            ),
            // The flags docs/netlab.md lists for running kg outside a pod.
            NodeAgent::Kilo(kg) => (
                kg,
                vec![
                    &kubeconfig,
                    &hostname,
                    &subnet,
                    &port,
                    "--create-interface=false",
                    "--cni=false",
                    "--encapsulate=never",
                    &granularity,
                    "--listen=127.0.0.1:1107",
                ],
            ),
        };
        spawn_on_node(&self.dir, plan, "agent", program, &args)
    }

    /// The node's own copy of one of [`host::PRIVATE_DIRS`].
    fn private_dir(&self, netns: &str, dir: &str) -> PathBuf {
        self.dir
            .join(netns)
            .join(dir.trim_start_matches('/').replace('/', "-"))
    }

    fn node_mut(&mut self, cluster: &str, name: &str) -> anyhow::Result<&mut LabNode> {
        self.cluster_mut(cluster)?
            .nodes
            .get_mut(name)
            .with_context(|| format!("{cluster} has no node {name}"))
    }

    fn cluster(&self, name: &str) -> anyhow::Result<&LabCluster> {
        self.clusters
            .get(name)
            .with_context(|| format!("the lab has no cluster {name}"))
    }

    fn cluster_mut(&mut self, name: &str) -> anyhow::Result<&mut LabCluster> {
        self.clusters
            .get_mut(name)
            .with_context(|| format!("the lab has no cluster {name}"))
    }

    fn socket(&self, cluster: &str) -> PathBuf {
        self.dir.join(format!("{cluster}.sock"))
    }

    fn mount_ns(&self, netns: &str) -> PathBuf {
        self.dir.join(format!("{netns}.mnt"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first (dropping them kills them), then everything else.
        self.clusters.clear();
        host::remove_everything();
    }
}

/// Starts `program` in a node's network and mount namespaces.
fn spawn_on_node(
    dir: &Path,
    plan: &NodePlan,
    what: &str,
    program: &Path,
    args: &[&str],
) -> anyhow::Result<Process> {
    let mut full = vec![
        format!("--net=/run/netns/{}", plan.netns),
        format!(
            "--mount={}",
            dir.join(format!("{}.mnt", plan.netns)).display()
        ),
        "--".into(),
        program.display().to_string(),
    ];
    full.extend(args.iter().map(|a| (*a).to_owned()));
    let log = dir.join(format!("{}-{}.log", plan.netns, what.replace(' ', "-")));
    Process::spawn(
        &format!("{what} on {}/{}", plan.cluster, plan.name),
        Path::new("nsenter"),
        &full,
        log,
    )
    .with_context(|| format!("starting {what} on {}", plan.netns))
}

/// kube-proxy's rules for one ClusterIP with one endpoint (iptables mode):
/// DNAT to the backend, and masquerade what does not come from this
/// cluster's pods so the reply returns through this node.
async fn service_rules(
    node: &NodePlan,
    cluster: &ClusterPlan,
    backend: Ipv4Addr,
) -> anyhow::Result<()> {
    let service = format!("{}/32", cluster.service_ip());
    let port = SERVICE_PORT.to_string();
    let to = format!("{backend}:{SERVICE_PORT}");
    let pods = cluster.pods.to_string();
    let rules = format!(
        "*nat\n\
         :KUBE-SVC-LAB - [0:0]\n\
         -A PREROUTING -d {service} -p tcp --dport {port} -j KUBE-SVC-LAB\n\
         -A OUTPUT -d {service} -p tcp --dport {port} -j KUBE-SVC-LAB\n\
         -A KUBE-SVC-LAB ! -s {pods} -j MARK --set-xmark 0x4000/0x4000\n\
         -A KUBE-SVC-LAB -p tcp -j DNAT --to-destination {to}\n\
         -A POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE\n\
         COMMIT\n"
    );
    crate::sh::run_with_input(
        "ip",
        &[
            "netns",
            "exec",
            &node.netns,
            "iptables-restore",
            "--noflush",
        ],
        Some(&rules),
    )
    .await
    .map(drop)
}

/// The Node a kubelet would register: pod CIDR (both fields: Kilo reads the
/// singular one), the underlay address as InternalIP, Ready; with the
/// location and leader annotations or label an administrator would set.
fn registered_node(plan: &NodePlan, options: &NodeOptions) -> Node {
    let mut annotations = BTreeMap::new();
    let mut labels = BTreeMap::new();
    match &options.location {
        Some(NodeLocation::Annotation(location)) => {
            annotations.insert(annotation::LOCATION.to_owned(), location.clone());
        }
        Some(NodeLocation::RegionLabel(region)) => {
            labels.insert(annotation::REGION_LABEL.to_owned(), region.clone());
        }
        None => {}
    }
    if options.leader {
        annotations.insert(annotation::LEADER.to_owned(), "true".to_owned());
    }
    Node {
        metadata: ObjectMeta {
            name: Some(plan.name.clone()),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            labels: Some(labels).filter(|l| !l.is_empty()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(plan.pod_cidr.to_string()),
            pod_cidrs: Some(vec![plan.pod_cidr.to_string()]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: plan.underlay_ip.to_string(),
            }]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

async fn netns_sysctl(netns: &str, setting: &str) -> anyhow::Result<()> {
    run("ip", &["netns", "exec", netns, "sysctl", "-qw", setting])
        .await
        .map(drop)
}

/// Waits until a process made `path` (a socket), for at most 10 s.
async fn wait_for_path(path: &Path) -> anyhow::Result<()> {
    for _ in 0..200 {
        if path.exists() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{} did not appear within 10 s", path.display())
}
