//! The node's network: a network namespace `kcmnode-<slot>` joined to this
//! host by a veth pair and to nothing else. It has no default route, so what
//! runs in it reaches this host's address on the pair and nothing beyond.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use tempfile::TempDir;

use super::{NodeError, run};

/// How many nodes may run on one machine at once.
const SLOTS: u8 = 32;

/// Prefix of the node directories under the temp dir. Not the control
/// planes' prefix: their sweep would remove a stale node's directory before
/// the node's sweep has read which namespace to remove.
pub(super) const DIR_PREFIX: &str = "kcmnode-testkit-";
/// Files in a node's directory: the pid of the test process that owns it, and
/// the name of its network namespace.
const OWNER_FILE: &str = "owner.pid";
const NETNS_FILE: &str = "netns";

/// A network namespace and the veth pair into it, for one [`super::Node`]:
/// `10.254.<slot>.1/24` on this host's side (`kcmnode<slot>`),
/// `10.254.<slot>.2/24` on the node's (`eth0`), and a route on this host to
/// the node's pod range `10.245.<slot>.0/24`. Create it first, start the
/// control planes and the registry on [`Self::host_address`], then the
/// [`super::Node`]. Deleted on drop (after the node's processes are gone).
pub struct NodeNetwork {
    slot: u8,
    // Declared last: removed after the namespace is gone.
    dir: TempDir,
}

impl NodeNetwork {
    /// Creates the namespace in the first free slot, and its veth pair.
    pub fn create() -> Result<Self, NodeError> {
        remove_stale();
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir()?;
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
        let slot = claim_slot()?;
        // Recorded at once: a test killed from here on leaves it to the sweep.
        std::fs::write(dir.path().join(NETNS_FILE), netns_name(slot))?;
        let network = Self { slot, dir };
        network.wire()?;
        Ok(network)
    }

    fn wire(&self) -> Result<(), NodeError> {
        let (netns, host_link) = (netns_name(self.slot), host_link(self.slot));
        let host = format!("{}/24", self.host_address());
        let node = format!("{}/24", self.node_address());
        run(
            "ip",
            &[
                "link", "add", &host_link, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        run("ip", &["addr", "add", &host, "dev", &host_link])?;
        run("ip", &["link", "set", &host_link, "up"])?;
        run("ip", &["-n", &netns, "addr", "add", &node, "dev", "eth0"])?;
        run("ip", &["-n", &netns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
        // Pods answer this host (the API servers, the probes of the test)
        // without masquerading: their range is routed to the node.
        let pods = self.pod_cidr();
        let via = self.node_address().to_string();
        run(
            "ip",
            &["route", "add", &pods, "via", &via, "dev", &host_link],
        )?;
        Ok(())
    }

    /// This host's address on the pair: where the node reaches the API
    /// servers and the registry.
    pub fn host_address(&self) -> IpAddr {
        Ipv4Addr::new(10, 254, self.slot, 1).into()
    }

    /// The node's address (its InternalIP).
    pub fn node_address(&self) -> IpAddr {
        Ipv4Addr::new(10, 254, self.slot, 2).into()
    }

    /// The node's pod range, `10.245.<slot>.0/24`.
    pub fn pod_cidr(&self) -> String {
        format!("10.245.{}.0/24", self.slot)
    }

    /// The namespace's name, `kcmnode-<slot>`.
    pub fn netns(&self) -> String {
        netns_name(self.slot)
    }

    /// The node's directory: its configuration, state and logs.
    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        remove(self.dir.path(), &self.netns(), &host_link(self.slot));
    }
}

fn netns_name(slot: u8) -> String {
    format!("kcmnode-{slot}")
}

fn host_link(slot: u8) -> String {
    format!("kcmnode{slot}")
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Creates the first `kcmnode-<slot>` that does not exist; `ip netns add`
/// fails on one that does, so two tests never share one.
fn claim_slot() -> Result<u8, NodeError> {
    let mut last = None;
    for slot in 0..SLOTS {
        let name = netns_name(slot);
        if netns_path(&name).exists() {
            continue;
        }
        match run("ip", &["netns", "add", &name]) {
            Ok(_) => return Ok(slot),
            // Taken between the check and the add: try the next.
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or(NodeError::NoSlot(SLOTS)))
}

/// Kills what still runs in the namespace, removes the cgroups of the
/// containers containerd left (those killed here), then deletes the
/// namespace and this host's end of the pair (deleting the namespace deletes
/// the pair, unless a process still holds it).
fn remove(dir: &Path, netns: &str, host_link: &str) {
    super::processes::kill_all_in(&netns_path(netns));
    super::processes::remove_cgroups(dir);
    let _ = run("ip", &["link", "delete", host_link]);
    let _ = run("ip", &["netns", "delete", netns]);
}

/// Removes the namespaces and directories of nodes whose test process is
/// gone: a test killed with SIGKILL runs no Drop. Its containerd and kubelet
/// died with it; its shims and containers did not, and are killed here.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        // A directory without an owner yet is being set up right now.
        let Ok(owner) = std::fs::read_to_string(path.join(OWNER_FILE)) else {
            continue;
        };
        if Path::new("/proc").join(owner.trim()).exists() {
            continue;
        }
        if let Ok(netns) = std::fs::read_to_string(path.join(NETNS_FILE)) {
            let slot = netns.trim().trim_start_matches("kcmnode-");
            remove(&path, netns.trim(), &format!("kcmnode{slot}"));
        }
        let _ = std::fs::remove_dir_all(&path);
    }
}
