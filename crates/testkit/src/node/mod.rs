//! A real node for a [`ControlPlane`]: kubelet and kube-proxy (built from the
//! API server's own `k8s.io/kubernetes` pin by `make tools`) on Debian's
//! containerd, runc and CNI plugins, all inside a network namespace of the
//! test's ([`NodeNetwork`]), with the control plane's kube-controller-manager
//! and kube-scheduler beside it: a Deployment becomes a running pod that
//! reaches the API servers on the host's side of the node's veth pair.
//!
//! Confinement: containerd, kubelet and kube-proxy share one mount namespace,
//! private to the node, with fresh tmpfs on `/run` (sockets, runc state, the
//! pods' network namespaces, iptables' lock), `/var/lib` (CNI's cache) and
//! `/var/log`; the rest of their state is in the node's directory. When its
//! last process is gone, every mount it made is gone with it. Teardown (on
//! drop, also on panic): kubelet and kube-proxy stop, containerd kills and
//! deletes every task (runc removes their cgroups), then every process left
//! in the node's namespace or below one (shims, containers) is killed by pid,
//! then the namespace and the veth pair are deleted and the directory
//! removed. A test killed with SIGKILL takes containerd and kubelet with it;
//! the next [`NodeNetwork::create`] finds its namespace and does the rest.

mod config;
mod network;
mod processes;
mod sandbox;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::{Api, Client};

pub use network::NodeNetwork;

use crate::{
    ControlPlane,
    kubeconfig::{self, Credentials},
    process::Process,
    tools,
};

/// How long a node may take to register and become Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long containerd may take to answer on its socket.
const CONTAINERD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command of the setup or teardown may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the teardown waits for containerd to kill and delete one task.
const TASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0} is missing: {1}")]
    Missing(String, &'static str),
    #[error("starting a node: {0}")]
    Io(#[from] std::io::Error),
    #[error("`{command}` failed: {why}")]
    Command { command: String, why: String },
    #[error("every node slot (kcmnode-0 to kcmnode-{}) is taken", .0 - 1)]
    NoSlot(u8),
    #[error("node {name}: {why}\n{logs}")]
    NotReady {
        name: String,
        why: String,
        logs: String,
    },
    #[error(transparent)]
    ControlPlane(#[from] crate::Error),
}

/// A running node registered with one control plane. Stopped and removed
/// on drop (see the module's documentation); drop it before its control
/// plane.
pub struct Node {
    name: String,
    kubelet: Option<Process>,
    kube_proxy: Option<Process>,
    containerd: Option<Process>,
    controller_manager: Process,
    scheduler: Process,
    /// Holds the node's mount namespace (and sits in its network namespace).
    holder: Process,
    // Declared last: deleted after the processes are gone.
    network: NodeNetwork,
}

impl Node {
    /// Starts a node named `kcmnode-<slot>` in `network` for `hub` (started
    /// on `network.host_address()`), and waits until it is Ready. Its
    /// containerd pulls from the plain-HTTP registries `insecure_registries`
    /// (`host:port`) and from no other.
    pub async fn start(
        hub: &ControlPlane,
        network: NodeNetwork,
        insecure_registries: &[String],
    ) -> Result<Self, NodeError> {
        let started = Instant::now();
        let name = network.netns();
        let kubelet = tool("kubelet")?;
        let kube_proxy = tool("kube-proxy")?;
        let controller_manager = tool("kube-controller-manager")?;
        let scheduler = tool("kube-scheduler")?;
        let pause = tool("pause")?;
        for binary in ["/usr/bin/containerd", "/usr/bin/ctr", "/usr/lib/cni/bridge"] {
            if !Path::new(binary).exists() {
                return Err(NodeError::Missing(
                    binary.into(),
                    "run `make node-packages`",
                ));
            }
        }
        let dir = network.dir().to_owned();
        let file = |name: &str, contents: &str| -> Result<PathBuf, NodeError> {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, contents)?;
            Ok(path)
        };
        file("ca.crt", hub.ca_pem())?;
        let (cert, key) = hub.admin_credentials();
        let kubeconfig = file(
            "kubeconfig",
            &kubeconfig::yaml(
                hub.name(),
                &hub.server_url(),
                hub.ca_pem(),
                Credentials::ClientCertificate { cert, key },
            ),
        )?;
        let containerd_config = file("containerd.toml", &config::containerd(&dir, sandbox::IMAGE))?;
        file(
            "cni/10-kcmnode.conflist",
            &config::cni(&dir, &name, &network.pod_cidr()),
        )?;
        for host in insecure_registries {
            file(
                &format!("certs.d/{host}/hosts.toml"),
                &config::plain_http_registry(host),
            )?;
        }
        let node_address = network.node_address().to_string();
        let kubelet_config = file("kubelet.yaml", &config::kubelet(&dir, &node_address))?;
        let kube_proxy_config = file(
            "kube-proxy.yaml",
            &config::kube_proxy(&dir, &name, &network.pod_cidr()),
        )?;
        let pause_archive = sandbox::archive(&dir, &pause)?;

        let holder = hold_namespaces(&network)?;
        let holder_pid = holder.id();
        let inside = |component: &str, binary: &Path, args: Vec<String>| {
            let mut all = vec![
                format!("--target={holder_pid}"),
                "--mount".to_owned(),
                "--net".to_owned(),
                "--".to_owned(),
                binary.display().to_string(),
            ];
            all.extend(args);
            Process::spawn(
                component,
                Path::new("nsenter"),
                &all,
                dir.join(format!("{component}.log")),
            )
        };
        let containerd = inside(
            "containerd",
            Path::new("/usr/bin/containerd"),
            vec![format!("--config={}", containerd_config.display())],
        )?;
        let mut node = Self {
            name: name.clone(),
            kubelet: None,
            kube_proxy: None,
            containerd: Some(containerd),
            controller_manager: Process::spawn(
                "kube-controller-manager",
                &controller_manager,
                &controller_manager_args(&kubeconfig, &dir),
                dir.join("kube-controller-manager.log"),
            )?,
            scheduler: Process::spawn(
                "kube-scheduler",
                &scheduler,
                &[
                    format!("--kubeconfig={}", kubeconfig.display()),
                    "--leader-elect=false".to_owned(),
                    "--bind-address=127.0.0.1".to_owned(),
                    "--secure-port=0".to_owned(),
                ],
                dir.join("kube-scheduler.log"),
            )?,
            holder,
            network,
        };
        node.wait_containerd().await?;
        node.ctr(&[
            "images",
            "import",
            "--snapshotter=native",
            &pause_archive.display().to_string(),
        ])?;
        node.kubelet = Some(inside(
            "kubelet",
            &kubelet,
            vec![
                format!("--config={}", kubelet_config.display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={}", dir.join("kubelet").display()),
                format!("--hostname-override={name}"),
                format!("--node-ip={node_address}"),
            ],
        )?);
        node.kube_proxy = Some(inside(
            "kube-proxy",
            &kube_proxy,
            vec![format!("--config={}", kube_proxy_config.display())],
        )?);
        node.wait_ready(hub.admin_client()).await?;
        eprintln!(
            "testkit: node {name} ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(node)
    }

    /// The node's name, `kcmnode-<slot>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's network.
    pub fn network(&self) -> &NodeNetwork {
        &self.network
    }

    /// The recent logs of the node's components.
    pub fn logs(&self) -> String {
        let mut logs: Vec<String> = [&self.kubelet, &self.containerd, &self.kube_proxy]
            .into_iter()
            .flatten()
            .map(|p| p.log_tail(30))
            .collect();
        logs.push(self.controller_manager.log_tail(15));
        logs.push(self.scheduler.log_tail(10));
        logs.join("\n")
    }

    /// What the containers of the pods whose name starts with `pod` (in
    /// `namespace`) wrote, from the kubelet's log files.
    pub fn pod_logs(&self, namespace: &str, pod: &str) -> String {
        let prefix = format!("{namespace}_{pod}");
        let mut logs = String::new();
        let Ok(pods) = std::fs::read_dir(self.network.dir().join("pod-logs")) else {
            return logs;
        };
        for entry in pods.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            for container in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                for file in std::fs::read_dir(container.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let text = std::fs::read_to_string(file.path()).unwrap_or_default();
                    logs.push_str(&format!("--- {} ---\n{text}", file.path().display()));
                }
            }
        }
        logs
    }

    fn ctr(&self, args: &[&str]) -> Result<String, NodeError> {
        let socket = self.network.dir().join("containerd.sock");
        let mut all = vec![
            "--address",
            socket.to_str().unwrap_or_default(),
            "--namespace",
            "k8s.io",
        ];
        all.extend(args);
        run_bounded("ctr", &all, COMMAND_TIMEOUT)
    }

    async fn wait_containerd(&mut self) -> Result<(), NodeError> {
        let deadline = Instant::now() + CONTAINERD_TIMEOUT;
        loop {
            let last = match self.ctr(&["version"]) {
                Ok(_) => return Ok(()),
                Err(error) => error.to_string(),
            };
            if self.containerd.as_mut().is_none_or(Process::exited) {
                return Err(self.not_ready("containerd exited"));
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(&format!("containerd does not answer: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_ready(&mut self, client: Client) -> Result<(), NodeError> {
        let nodes = Api::<NodeObject>::all(client);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = nodes
                .get_opt(&self.name)
                .await
                .ok()
                .flatten()
                .is_some_and(|node| {
                    node.status
                        .and_then(|s| s.conditions)
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                });
            if ready {
                return Ok(());
            }
            let exited = [
                &mut self.kubelet,
                &mut self.containerd,
                &mut self.kube_proxy,
            ]
            .into_iter()
            .any(|process| process.as_mut().is_some_and(Process::exited));
            if exited {
                return Err(self.not_ready("a component exited"));
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(&format!("not Ready after {READY_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn not_ready(&self, why: &str) -> NodeError {
        NodeError::NotReady {
            name: self.name.clone(),
            why: why.to_owned(),
            logs: self.logs(),
        }
    }

    /// containerd kills and deletes every task, so runc removes what it made
    /// (cgroups); bounded per task.
    fn delete_tasks(&self) {
        let Ok(tasks) = self.ctr(&["tasks", "list", "--quiet"]) else {
            return;
        };
        for task in tasks.split_whitespace() {
            let _ = self.ctr(&["tasks", "kill", "--signal=SIGKILL", task]);
        }
        for task in tasks.split_whitespace() {
            let socket = self.network.dir().join("containerd.sock");
            let args = [
                "--address",
                socket.to_str().unwrap_or_default(),
                "--namespace",
                "k8s.io",
                "tasks",
                "delete",
                "--force",
                task,
            ];
            let _ = run_bounded("ctr", &args, TASK_TIMEOUT);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("testkit: node {} was running:\n{}", self.name, self.logs());
        }
        // Nothing restarts a container from here on.
        for process in [&mut self.kubelet, &mut self.kube_proxy] {
            if let Some(mut process) = process.take() {
                process.kill();
            }
        }
        self.delete_tasks();
        if let Some(mut containerd) = self.containerd.take() {
            containerd.kill();
        }
        self.holder.kill();
        self.controller_manager.kill();
        self.scheduler.kill();
        // The network's drop kills what is left (shims, containers) and
        // deletes the namespace.
    }
}

/// The kube-controller-manager of a node's control plane: Deployments,
/// ReplicaSets, garbage collection, the `kube-root-ca.crt` ConfigMaps pods
/// mount; no serving port. Nodes' health is not watched (a grace period
/// longer than any test): the tests' other Node objects have no kubelet,
/// and a controller turning them NotReady would take them out of meshes.
fn controller_manager_args(kubeconfig: &Path, dir: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".to_owned(),
        "--bind-address=127.0.0.1".to_owned(),
        "--secure-port=0".to_owned(),
        format!("--root-ca-file={}", dir.join("ca.crt").display()),
        "--node-monitor-grace-period=24h".to_owned(),
    ]
}

/// The process that holds the node's mount namespace, in its network
/// namespace: `nsenter` the network namespace (not `ip netns exec`, whose
/// fresh /sys hides the cgroup mounts kubelet needs), then `unshare` a
/// private mount namespace with fresh tmpfs where containerd, runc, CNI and
/// kubelet keep host-wide state.
fn hold_namespaces(network: &NodeNetwork) -> Result<Process, NodeError> {
    let dir = network.dir();
    let ready = dir.join("namespaces.ready");
    let script = format!(
        "set -e
mount -t tmpfs -o mode=0755 kcmnode /run
mkdir -p /run/netns /run/containerd
mount -t tmpfs -o mode=0755 kcmnode /var/lib
mount -t tmpfs -o mode=0755 kcmnode /var/log
echo 1 > /proc/sys/net/ipv4/ip_forward
touch {}
exec sleep infinity",
        ready.display()
    );
    let netns = network.netns();
    let args: Vec<String> = [
        &format!("--net=/run/netns/{netns}"),
        "--",
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        &script,
    ]
    .map(str::to_owned)
    .into();
    let mut holder = Process::spawn(
        "namespaces",
        Path::new("nsenter"),
        &args,
        dir.join("namespaces.log"),
    )?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while !ready.exists() {
        if holder.exited() || Instant::now() > deadline {
            return Err(NodeError::NotReady {
                name: netns,
                why: "its namespaces were not set up".into(),
                logs: holder.log_tail(20),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(holder)
}

fn tool(name: &str) -> Result<PathBuf, NodeError> {
    tools::binary(name).map_err(|_| NodeError::Missing(name.into(), "run `make tools`"))
}

/// Runs `program args` to its end, for at most [`COMMAND_TIMEOUT`]; its
/// stdout.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, NodeError> {
    run_bounded(program, args, COMMAND_TIMEOUT)
}

/// Runs `program args` to its end, killed after `timeout`; its stdout, or its
/// stderr in the error. Blocking: for setup and Drop.
fn run_bounded(program: &str, args: &[&str], timeout: Duration) -> Result<String, NodeError> {
    let command = format!("{program} {}", args.join(" "));
    let failed = |why: String| NodeError::Command {
        command: command.clone(),
        why,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("no answer in {timeout:?}")));
            }
            Err(error) => return Err(failed(error.to_string())),
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(failed(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
