//! A container registry on loopback: Debian's `docker-registry` (the CNCF
//! distribution registry), plain HTTP, no authentication, its storage in a
//! directory of its own. Charts (`helm push`) and images (`skopeo copy`) go
//! to it as they would to a cluster's own registry.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::{
    control_plane::{DIR_PREFIX, OWNER_FILE, remove_stale_dirs},
    http::http_get,
    process::Process,
};

/// Where Debian's package `docker-registry` puts the registry.
const BINARY: &str = "/usr/bin/docker-registry";

/// How long the registry may take to answer `/v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many free ports the registry tries before giving up.
const PORT_ATTEMPTS: u32 = 4;

/// Why the registry could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{BINARY} is missing: install Debian's docker-registry (`make image-packages`)")]
    Missing,
    #[error("starting the registry: {0}")]
    Io(#[from] std::io::Error),
    #[error("the registry on {address} is not ready: {why}\n{logs}")]
    NotReady {
        address: SocketAddr,
        why: String,
        logs: String,
    },
}

/// A running registry on `127.0.0.1:<port>` (or another address of this
/// host, [`Registry::start_on`]). Stopped and its storage deleted
/// on drop; a test killed by SIGKILL takes the process with it (see
/// [`Process::spawn`]) and the next control plane or registry started
/// removes its directory.
pub struct Registry {
    address: SocketAddr,
    process: Process,
    // Declared last: removed after the process is gone.
    _dir: TempDir,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it answers.
    pub async fn start() -> Result<Self, RegistryError> {
        Self::start_on(Ipv4Addr::LOCALHOST.into()).await
    }

    /// As [`Self::start`], on a free port of `address`: the host side of a
    /// [`crate::NodeNetwork`], so a [`crate::Node`]'s containerd pulls from it.
    pub async fn start_on(address: IpAddr) -> Result<Self, RegistryError> {
        if !Path::new(BINARY).exists() {
            return Err(RegistryError::Missing);
        }
        let mut attempt = 1;
        loop {
            let mut registry = Self::spawn(address)?;
            match registry.wait_ready().await {
                Ok(()) => return Ok(registry),
                // The port is chosen before the registry binds it; another
                // process may take it meanwhile. Try another.
                Err(RegistryError::NotReady { logs, .. })
                    if logs.contains("address already in use") && attempt < PORT_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn spawn(address: IpAddr) -> Result<Self, RegistryError> {
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}registry-"))
            .tempdir()?;
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
        let address = TcpListener::bind((address, 0))?.local_addr()?;
        let config = dir.path().join("config.yml");
        std::fs::write(&config, config_yaml(&dir.path().join("storage"), address))?;
        let process = Process::spawn(
            "docker-registry",
            Path::new(BINARY),
            &["serve".to_owned(), config.display().to_string()],
            dir.path().join("registry.log"),
        )?;
        Ok(Self {
            address,
            process,
            _dir: dir,
        })
    }

    /// `<address>:<port>`, the registry's host in image and chart
    /// references.
    pub fn host(&self) -> String {
        self.address.to_string()
    }

    /// The recent lines of the registry's log.
    pub fn logs(&self) -> String {
        self.process.log_tail(40)
    }

    async fn wait_ready(&mut self) -> Result<(), RegistryError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.process.exited() {
                return Err(self.not_ready("it exited"));
            }
            let answer = http_get(self.address, "/v2/").await;
            if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(&format!("no answer to /v2/ in {READY_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn not_ready(&self, why: &str) -> RegistryError {
        RegistryError::NotReady {
            address: self.address,
            why: why.to_owned(),
            logs: self.logs(),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "testkit: registry {} was running:\n{}",
                self.host(),
                self.logs()
            );
        }
        self.process.kill();
    }
}

/// Plain HTTP on one address only, no authentication, deletes allowed.
fn config_yaml(storage: &Path, address: SocketAddr) -> String {
    format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
http:
  addr: {address}
",
        storage.display()
    )
}
