//! The node's processes that the test process did not start itself: shims
//! (containerd starts them, then they leave it) and containers (children of
//! the shims). Found by the node's network namespace, which the test created,
//! and killed by pid.

use std::{
    os::unix::fs::MetadataExt,
    path::Path,
    time::{Duration, Instant},
};

/// How long the processes of a node may take to die.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Kills every process in the network namespace mounted at `netns` and every
/// descendant of one (a container runs in a namespace of its own, as a child
/// of its shim), and waits until they are gone, for at most [`KILL_TIMEOUT`].
pub fn kill_all_in(netns: &Path) {
    let Ok(namespace) = std::fs::metadata(netns) else {
        return;
    };
    let target = format!("net:[{}]", namespace.ino());
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let pids = members(&target);
        if pids.is_empty() || Instant::now() > deadline {
            if !pids.is_empty() {
                eprintln!("testkit: node: processes {pids:?} outlived {KILL_TIMEOUT:?} of SIGKILL");
            }
            return;
        }
        let mut args = vec!["-KILL".to_owned()];
        args.extend(pids.iter().map(u32::to_string));
        let _ = std::process::Command::new("kill")
            .args(&args)
            .stderr(std::process::Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pids in the namespace `target` (`net:[<inode>]`) and their
/// descendants.
fn members(target: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let processes: Vec<(u32, u32, bool)> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let proc = Path::new("/proc").join(pid.to_string());
            let stat = std::fs::read_to_string(proc.join("stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces and parens.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let inside = std::fs::read_link(proc.join("ns/net"))
                .is_ok_and(|link| link.as_os_str() == target);
            Some((pid, ppid, inside))
        })
        .collect();
    let mut chosen: Vec<u32> = processes
        .iter()
        .filter(|(_, _, inside)| *inside)
        .map(|(pid, _, _)| *pid)
        .collect();
    // Descendants, a generation per round; a tree is never deeper than the
    // number of processes.
    for _ in 0..processes.len() {
        let next: Vec<u32> = processes
            .iter()
            .filter(|(pid, ppid, _)| chosen.contains(ppid) && !chosen.contains(pid))
            .map(|(pid, _, _)| *pid)
            .collect();
        if next.is_empty() {
            break;
        }
        chosen.extend(next);
    }
    chosen
}

/// Where containerd 1.6 keeps a task's state, one directory per container
/// id, until the task is deleted.
const TASKS: &str = "containerd/state/io.containerd.runtime.v2.task/k8s.io";
/// The cgroup containerd's CRI puts containers in, `/k8s.io/<id>`, when
/// kubelet gives no parent (no QoS cgroups).
const CGROUP_PARENT: &str = "k8s.io";

/// Removes, in every cgroup hierarchy, the cgroups of the containers whose
/// task state is still in the node's directory `dir` (containers killed
/// without containerd deleting their task), then the parent `/k8s.io` if no
/// other containerd uses it. A cgroup still in use stays.
pub fn remove_cgroups(dir: &Path) {
    let ids: Vec<String> = std::fs::read_dir(dir.join(TASKS))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let parent = hierarchy.path().join(CGROUP_PARENT);
        if hierarchy.path().is_symlink() || !parent.is_dir() {
            continue;
        }
        for id in &ids {
            let cgroup = parent.join(id);
            if cgroup.is_dir()
                && let Err(error) = std::fs::remove_dir(&cgroup)
            {
                eprintln!("testkit: node: cgroup {} stays: {error}", cgroup.display());
            }
        }
        // Fails while another node's (or the host's) containers are in it.
        let _ = std::fs::remove_dir(&parent);
    }
}
