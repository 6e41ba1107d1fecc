//! What the lab changes on the host outside its namespaces, and how it is all
//! removed: its state directory (a private mount, like `/run/netns`, so that
//! mount namespaces can be kept as files in it), the empty mount points it
//! may create, and every namespace named with the lab's prefix.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::plan::NETNS_PREFIX;
use crate::sh::run_quietly;

/// Where the lab keeps its sockets, kubeconfigs, keys and mount namespaces.
pub const STATE_DIR: &str = "/run/kcm-netlab";
/// The pid of the process that owns the lab, in [`STATE_DIR`].
const OWNER_FILE: &str = "owner.pid";
/// Mount points the lab created on the host (one path a line), removed last.
const CREATED_FILE: &str = "created-dirs";
/// Directories a node's mount namespace covers with its own: wireguard-go's
/// UAPI sockets and Kilo's private key live at fixed paths.
pub const PRIVATE_DIRS: [&str; 2] = ["/run/wireguard", "/var/lib/kilo"];

/// Checks that the lab can run here, in the order a user fixes things.
pub fn preflight() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the network lab needs root (network namespaces, wireguard-go): run it with sudo");
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!(
            "/dev/net/tun is missing: wireguard-go needs it (`modprobe tun`, or give the container --device /dev/net/tun)"
        );
    }
    for tool in [
        "ip",
        "wg",
        "wireguard-go",
        "iptables",
        "ping",
        "nsenter",
        "unshare",
    ] {
        if which(tool).is_none() {
            bail!(
                "`{tool}` is not installed: apt-get install wireguard-go wireguard-tools iproute2 iptables iputils-ping util-linux (`make demo` and `make e2e` do it)"
            );
        }
    }
    Ok(())
}

/// Makes the state directory, first removing what a lab whose process died
/// left behind. Fails if another lab is running.
pub fn claim() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(STATE_DIR);
    if let Ok(pid) = std::fs::read_to_string(dir.join(OWNER_FILE)) {
        let pid = pid.trim();
        if pid != std::process::id().to_string() && Path::new("/proc").join(pid).exists() {
            bail!(
                "another network lab is running (pid {pid}); stop it first, or `kill {pid}` if it is stuck"
            );
        }
        eprintln!("netlab: removing what a previous lab (pid {pid}) left behind");
    }
    remove_everything();
    std::fs::create_dir_all(&dir).context("creating the lab's state directory")?;
    crate::sh::run_quietly("mount", &["--bind", STATE_DIR, STATE_DIR]);
    let private = std::process::Command::new("mount")
        .args(["--make-private", STATE_DIR])
        .status()?;
    if !private.success() {
        bail!("could not make {STATE_DIR} a private mount (needed to keep mount namespaces)");
    }
    std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string())?;
    let mut created = Vec::new();
    for private_dir in PRIVATE_DIRS {
        if !Path::new(private_dir).exists() {
            std::fs::create_dir_all(private_dir)?;
            created.push(private_dir);
        }
    }
    std::fs::write(dir.join(CREATED_FILE), created.join("\n"))?;
    Ok(dir)
}

/// Removes every process, mount, namespace and directory of a lab, running
/// or dead. Idempotent; never fails (what is gone is gone).
pub fn remove_everything() {
    let namespaces = lab_namespaces();
    // Processes first: a namespace lives on while a process holds it.
    for netns in &namespaces {
        for pid in netns_pids(netns) {
            run_quietly("kill", &["-KILL", &pid]);
        }
    }
    for mount in lab_mounts() {
        run_quietly("umount", &["--lazy", &mount]);
    }
    for netns in &namespaces {
        run_quietly("ip", &["netns", "delete", netns]);
    }
    let dir = Path::new(STATE_DIR);
    let created = std::fs::read_to_string(dir.join(CREATED_FILE)).unwrap_or_default();
    let _ = std::fs::remove_dir_all(dir);
    for path in created.lines().filter(|l| !l.is_empty()) {
        let _ = std::fs::remove_dir(path);
    }
}

/// What a lab left behind: namespaces, mounts, processes in its namespaces,
/// its state directory. Empty after a clean teardown.
pub fn leftovers() -> Vec<String> {
    let mut left: Vec<String> = Vec::new();
    for netns in lab_namespaces() {
        for pid in netns_pids(&netns) {
            left.push(format!("process {pid} in {netns}"));
        }
        left.push(format!("network namespace {netns}"));
    }
    left.extend(lab_mounts().into_iter().map(|m| format!("mount {m}")));
    if Path::new(STATE_DIR).exists() {
        left.push(format!("directory {STATE_DIR}"));
    }
    left
}

fn lab_namespaces() -> Vec<String> {
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(NETNS_PREFIX))
        .map(str::to_owned)
        .collect()
}

fn netns_pids(netns: &str) -> Vec<String> {
    std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Mount points under the state directory, deepest first.
fn lab_mounts() -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut ours: Vec<String> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|point| point.starts_with(STATE_DIR))
        .map(str::to_owned)
        .collect();
    ours.sort_by_key(|p| std::cmp::Reverse(p.len()));
    ours
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The path of `tool` on `$PATH` (and the sbin directories root has).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(tool))
        .find(|candidate| candidate.is_file())
}
