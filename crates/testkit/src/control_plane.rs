//! One control plane: etcd + kube-apiserver on loopback.

use std::{
    net::{IpAddr, Ipv4Addr, TcpListener},
    path::PathBuf,
    time::{Duration, Instant},
};

use api::{ClusterMesh, Peer};
use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Namespace, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResourceExt,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};
use tempfile::TempDir;

use crate::{
    kubeconfig::{self, Credentials},
    pki::Pki,
    process::Process,
    token, tools,
};

/// The Service range of every control plane.
const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The ClusterIP of the `kubernetes` Service (the first of [`SERVICE_CIDR`]):
/// where a pod's in-cluster configuration sends it, so the serving
/// certificate covers it.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// The issuer (and audience) of ServiceAccount tokens.
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc";

/// The API server's audit log, in the control plane's directory.
const AUDIT_LOG: &str = "audit.log";

/// What the audit log keeps: the writes of Peers and ClusterMeshes, so a
/// test can tell which client wrote what and when.
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
    resources:
      - group: kilo.squat.ai
        resources: [peers, clustermeshes, clustermeshes/status]
  - level: None
"#;

/// One write, as an API server's audit log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditedWrite {
    pub verb: String,
    /// `peers` or `clustermeshes`.
    pub resource: String,
    pub name: String,
    /// Who sent it: the operator's names its replica.
    pub user_agent: String,
    pub received: k8s_openapi::jiff::Timestamp,
    /// The answer's HTTP status.
    pub code: u64,
}

/// How many sets of free ports a control plane tries before giving up.
const PORT_ATTEMPTS: u32 = 4;

/// How long a control plane may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a control plane could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} is missing: run `make tools` first", .0.display())]
    MissingTool(PathBuf),
    #[error("starting a control plane: {0}")]
    Io(#[from] std::io::Error),
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("control plane {name} is not ready: {why}\n{logs}")]
    NotReady {
        name: String,
        why: String,
        logs: String,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
}

/// A running etcd + kube-apiserver. Everything is stopped and deleted on drop.
pub struct ControlPlane {
    name: String,
    pki: Pki,
    admin: Client,
    admin_kubeconfig: String,
    address: IpAddr,
    port: u16,
    apiserver_binary: PathBuf,
    apiserver_args: Vec<String>,
    apiserver: Option<Process>,
    etcd: Process,
    etcd_binary: PathBuf,
    etcd_args: Vec<String>,
    // Declared last: removed after the processes are gone.
    dir: TempDir,
}

impl ControlPlane {
    /// Starts a control plane named `name` on 127.0.0.1 and installs the
    /// ClusterMesh and Peer CRDs.
    pub async fn start(name: &str) -> Result<Self, Error> {
        Self::start_on(name, Ipv4Addr::LOCALHOST.into()).await
    }

    /// As [`Self::start`], with the API server listening on `address`
    /// instead of 127.0.0.1: the host side of a [`crate::NodeNetwork`], so
    /// the pods of a [`crate::Node`] reach it. Its serving certificate covers
    /// `address` and [`KUBERNETES_SERVICE_IP`], and off loopback the API
    /// server keeps the `kubernetes` Service's endpoints at `address`, which
    /// the node's kube-proxy routes `kubernetes.default` to.
    pub async fn start_on(name: &str, address: IpAddr) -> Result<Self, Error> {
        let started = Instant::now();
        let mut attempt = 1;
        let plane = loop {
            let mut plane = Self::spawn(name, address).await?;
            match plane.wait_ready().await {
                Ok(()) => break plane,
                // Free ports are chosen before the processes bind them; a
                // control plane started meanwhile may take one. Try others.
                Err(Error::NotReady { logs, .. })
                    if logs.contains("address already in use") && attempt < PORT_ATTEMPTS =>
                {
                    eprintln!(
                        "testkit: control plane {name}: a port was taken meanwhile, retrying"
                    );
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        };
        plane.install_crds().await?;
        eprintln!(
            "testkit: control plane {name} ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(plane)
    }

    /// Starts `count` control planes at once, named `cluster-0`, `cluster-1`, ...
    pub async fn start_many(count: usize) -> Result<Vec<Self>, Error> {
        let names: Vec<String> = (0..count).map(|i| format!("cluster-{i}")).collect();
        futures::future::join_all(names.iter().map(|name| Self::start(name)))
            .await
            .into_iter()
            .collect()
    }

    async fn spawn(name: &str, address: IpAddr) -> Result<Self, Error> {
        let etcd_binary = tools::binary("etcd")?;
        let apiserver_binary = tools::binary(&tools::apiserver_name())?;
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{name}-"))
            .tempdir()?;
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
        let pki = Pki::generate(name, &[address, KUBERNETES_SERVICE_IP.into()])?;
        let file = |file: &str, contents: &str| -> Result<String, Error> {
            let path = dir.path().join(file);
            std::fs::write(&path, contents)?;
            Ok(path.display().to_string())
        };
        let ca = file("ca.crt", &pki.ca_cert)?;
        let serving_cert = file("apiserver.crt", &pki.serving_cert)?;
        let serving_key = file("apiserver.key", &pki.serving_key)?;
        let sa_key = file("service-account.key", &pki.service_account_key)?;
        let sa_public_key = file("service-account.pub", &pki.service_account_public_key)?;
        let audit_policy = file("audit-policy.yaml", AUDIT_POLICY)?;

        let [client_port, peer_port] = free_ports(Ipv4Addr::LOCALHOST.into())?;
        let [port] = free_ports(address)?;
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            format!("--name={name}"),
            format!("--data-dir={}", dir.path().join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster={name}={peer_url}"),
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let etcd = Process::spawn(
            "etcd",
            &etcd_binary,
            &etcd_args,
            dir.path().join("etcd.log"),
        )?;
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={address}"),
            format!("--advertise-address={address}"),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.path().join("certs").display()),
            format!("--tls-cert-file={serving_cert}"),
            format!("--tls-private-key-file={serving_key}"),
            format!("--client-ca-file={ca}"),
            "--authorization-mode=RBAC".to_owned(),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={sa_public_key}"),
            format!("--service-account-signing-key-file={sa_key}"),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            // On loopback nothing needs the Endpoints of the kubernetes
            // Service; a node's pods reach the API server through them.
            format!(
                "--endpoint-reconciler-type={}",
                if address.is_loopback() {
                    "none"
                } else {
                    "lease"
                }
            ),
            "--enable-priority-and-fairness=false".to_owned(),
            format!("--audit-policy-file={audit_policy}"),
            format!("--audit-log-path={}", dir.path().join(AUDIT_LOG).display()),
        ];
        let apiserver = Process::spawn(
            "kube-apiserver",
            &apiserver_binary,
            &apiserver_args,
            dir.path().join("kube-apiserver.log"),
        )?;
        let admin_kubeconfig = kubeconfig::yaml(
            name,
            &url(address, port),
            &pki.ca_cert,
            Credentials::ClientCertificate {
                cert: &pki.admin_cert,
                key: &pki.admin_key,
            },
        );
        let admin = client_from_yaml(&admin_kubeconfig).await?;
        Ok(Self {
            name: name.to_owned(),
            pki,
            admin,
            admin_kubeconfig,
            address,
            port,
            apiserver_binary,
            apiserver_args,
            apiserver: Some(apiserver),
            etcd,
            etcd_binary,
            etcd_args,
            dir,
        })
    }

    /// The control plane's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `https://<address>:<port>`, `https://127.0.0.1:<port>` unless
    /// started with [`Self::start_on`].
    pub fn server_url(&self) -> String {
        url(self.address, self.port)
    }

    /// The address the API server listens on.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The API server's port (on [`Self::address`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin's client certificate and key, PEM: for the components of a
    /// [`crate::Node`].
    pub(crate) fn admin_credentials(&self) -> (&str, &str) {
        (&self.pki.admin_cert, &self.pki.admin_key)
    }

    /// The CA that signed the serving and client certificates, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_cert
    }

    /// A kubeconfig for the admin (a client certificate in `system:masters`).
    pub fn admin_kubeconfig(&self) -> &str {
        &self.admin_kubeconfig
    }

    /// A client for the admin.
    pub fn admin_client(&self) -> Client {
        self.admin.clone()
    }

    /// Creates the namespace `name` unless it exists.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), Error> {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<Namespace>::all(self.admin_client())
            .create(&PostParams::default(), &namespace)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The ServiceAccount `namespace/name`, created if it is missing.
    async fn ensure_service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<ServiceAccount, Error> {
        let accounts = Api::<ServiceAccount>::namespaced(self.admin_client(), namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(created) => Ok(created),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(accounts.get(name).await?),
            Err(error) => Err(error.into()),
        }
    }

    /// Creates the ServiceAccount `namespace/name` if it is missing, mints a
    /// token for it through the TokenRequest API, and returns a kubeconfig
    /// holding only that token, the server URL and the CA.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        expiration: Option<Duration>,
    ) -> Result<String, Error> {
        self.ensure_service_account(namespace, name).await?;
        let accounts = Api::<ServiceAccount>::namespaced(self.admin_client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: expiration.map(|d| d.as_secs() as i64),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        let token = token.status.map(|s| s.token).unwrap_or_default();
        Ok(kubeconfig::yaml(
            &self.name,
            &self.server_url(),
            &self.pki.ca_cert,
            Credentials::Token(&token),
        ))
    }

    /// As [`Self::service_account_kubeconfig`], but the token expires at
    /// `expires`, even in the past: it is signed here with the control
    /// plane's key, as the API server signs its own. The API server refuses
    /// it from [`crate::ACCEPTED_PAST_EXPIRY`] after `expires`.
    pub async fn expiring_service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        expires: k8s_openapi::jiff::Timestamp,
    ) -> Result<String, Error> {
        let account = self.ensure_service_account(namespace, name).await?;
        let claims = token::Claims {
            issuer: SERVICE_ACCOUNT_ISSUER,
            namespace,
            service_account: name,
            uid: account.metadata.uid.as_deref().unwrap_or_default(),
            expires,
        };
        let token = token::sign(&self.pki.service_account_key, &claims)?;
        Ok(kubeconfig::yaml(
            &self.name,
            &self.server_url(),
            &self.pki.ca_cert,
            Credentials::Token(&token),
        ))
    }

    /// A client authenticated as the ServiceAccount `namespace/name` (see
    /// [`Self::service_account_kubeconfig`]).
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Client, Error> {
        client_from_yaml(
            &self
                .service_account_kubeconfig(namespace, name, None)
                .await?,
        )
        .await
    }

    /// Kills the API server (etcd and its data stay), as an outage would.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut apiserver) = self.apiserver.take() {
            apiserver.kill();
        }
    }

    /// Starts the API server again on the same port and waits until it is
    /// ready.
    pub async fn start_apiserver(&mut self) -> Result<(), Error> {
        if self.apiserver.is_none() {
            let log = self.dir.path().join("kube-apiserver.log");
            self.apiserver = Some(Process::spawn(
                "kube-apiserver",
                &self.apiserver_binary,
                &self.apiserver_args,
                log,
            )?);
        }
        self.wait_ready().await
    }

    /// Kills etcd and starts it again on the same data and ports, under the
    /// running API server (which fails its requests meanwhile); waits until
    /// the API server is ready again.
    pub async fn restart_etcd(&mut self) -> Result<(), Error> {
        self.etcd.kill();
        self.etcd = Process::spawn(
            "etcd",
            &self.etcd_binary,
            &self.etcd_args,
            self.dir.path().join("etcd.log"),
        )?;
        self.wait_ready().await
    }

    /// Every write to a Peer or a ClusterMesh (its status included) that
    /// this API server answered, oldest first, from its audit log.
    pub fn audited_writes(&self) -> Result<Vec<AuditedWrite>, Error> {
        let log = std::fs::read_to_string(self.dir.path().join(AUDIT_LOG))?;
        Ok(log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["stage"] == "ResponseComplete")
            .map(|event| {
                let text =
                    |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
                AuditedWrite {
                    verb: text(&event["verb"]),
                    resource: text(&event["objectRef"]["resource"]),
                    name: text(&event["objectRef"]["name"]),
                    user_agent: text(&event["userAgent"]),
                    received: text(&event["requestReceivedTimestamp"])
                        .parse()
                        .unwrap_or_default(),
                    code: event["responseStatus"]["code"].as_u64().unwrap_or_default(),
                }
            })
            .collect())
    }

    /// The recent logs of both processes.
    pub fn logs(&self) -> String {
        let apiserver = self
            .apiserver
            .as_ref()
            .map(|p| p.log_tail(40))
            .unwrap_or_default();
        format!("{}\n{apiserver}", self.etcd.log_tail(20))
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let client = self.admin_client();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = self.apiserver.as_mut().is_none_or(Process::exited) || self.etcd.exited();
            if exited {
                return Err(self.not_ready("a process exited"));
            }
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| self.not_ready(&e.to_string()))?;
            let last = match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(error) => error.to_string(),
            };
            if Instant::now() > deadline {
                return Err(self.not_ready(&format!("/readyz after {READY_TIMEOUT:?}: {last}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn not_ready(&self, why: &str) -> Error {
        Error::NotReady {
            name: self.name.clone(),
            why: why.to_owned(),
            logs: self.logs(),
        }
    }

    async fn install_crds(&self) -> Result<(), Error> {
        let crds = Api::<CustomResourceDefinition>::all(self.admin_client());
        // Kilo's Peer CRD from our mirror of its type: Kilo's Go module, which
        // publishes the original, cannot be downloaded here (docs/design.md).
        for crd in [ClusterMesh::crd(), Peer::crd()] {
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.create(&PostParams::default(), &crd).await?;
            let established =
                await_condition(crds.clone(), &name, conditions::is_crd_established());
            tokio::time::timeout(READY_TIMEOUT, established)
                .await
                .map_err(|_| self.not_ready(&format!("CRD {name} not established")))?
                .map_err(|e| self.not_ready(&format!("waiting for CRD {name}: {e}")))?;
        }
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "testkit: control plane {} at {} was running:\n{}",
                self.name,
                self.server_url(),
                self.logs()
            );
        }
        self.stop_apiserver();
        self.etcd.kill();
    }
}

/// A client for a kubeconfig given as YAML.
pub async fn client_from_yaml(yaml: &str) -> Result<Client, Error> {
    let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(Client::try_from(config)?)
}

/// Prefix of every control plane's (and registry's) directory under the temp dir.
pub(crate) const DIR_PREFIX: &str = "kcm-testkit-";
/// File in that directory naming the pid of the test process that owns it.
pub(crate) const OWNER_FILE: &str = "owner.pid";

/// Removes the directories of control planes (and registries) whose test
/// process is gone: a test killed with SIGKILL runs no Drop. (Its processes
/// died with it; see [`Process::spawn`].)
pub(crate) fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry.file_name().to_string_lossy().starts_with(DIR_PREFIX);
        // A directory without an owner yet is being set up right now.
        let owner = std::fs::read_to_string(path.join(OWNER_FILE)).ok();
        let owner_gone =
            owner.is_some_and(|pid| !std::path::Path::new("/proc").join(pid.trim()).exists());
        if ours && owner_gone {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// `https://<address>:<port>`, an IPv6 address in brackets.
fn url(address: IpAddr, port: u16) -> String {
    format!("https://{}", std::net::SocketAddr::new(address, port))
}

/// Free ports on `address`, held together while chosen so they are distinct.
fn free_ports<const N: usize>(address: IpAddr) -> std::io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((address, 0)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
