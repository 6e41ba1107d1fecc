//! The lab's node agent: Kilo's `kg` behaviour for `--mesh-granularity`
//! `full`, `location` and `cross` (Kilo PR #490), written from Kilo's
//! documented behaviour (`../shared/reference/kilo.md`), not from its code.
//! It runs inside a node's namespaces, next to the `kilo0` that
//! `wireguard-go` made (kg's `--create-interface=false`).
//!
//! - check-in (`Mesh.checkIn`, `nodeBackend.Set`): key, endpoint, internal
//!   IP, WireGuard IP, granularity and `last-seen` on its own Node, every 30 s;
//! - on every Node or Peer event and every resync: the Nodes and Peers as kg
//!   reads them ([`backend`]), the ready ones grouped in segments
//!   ([`topology`]), become `kilo0`'s config, routes and NAT rules ([`device`]).

pub mod backend;
pub mod device;
pub mod topology;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use tokio::sync::Notify;

use self::{
    backend::{KiloNode, PeerIndex, annotation},
    device::Device,
    topology::Granularity,
};
use crate::sh;

/// kg's check-in period; a node unseen for twice as long is not ready.
const CHECK_IN_PERIOD: Duration = Duration::from_secs(30);
/// After a failed check-in or apply, the next try (kg waits for its resync;
/// the lab's nodes start in a burst, and a second counts there).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The agent's flags: the subset of kg's that the lab uses, same names.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The name of this node's Node.
    #[arg(long)]
    pub hostname: String,
    /// The cluster's WireGuard range (kg's default is the same in every cluster).
    #[arg(long, default_value = "10.4.0.0/16")]
    pub subnet: IpNet,
    #[arg(long, default_value_t = 51820)]
    pub port: u16,
    #[arg(long, default_value = "kilo0")]
    pub interface: String,
    /// `location` (kg's default), `full`, or `cross` (Kilo PR #490).
    #[arg(long, default_value = "location")]
    pub mesh_granularity: Granularity,
    /// The Node label that gives a node's location when it has no
    /// `kilo.squat.ai/location` annotation.
    #[arg(long, default_value = annotation::REGION_LABEL)]
    pub topology_label: String,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync_period: Duration,
    /// kg keeps its key at this fixed path.
    #[arg(long, default_value = "/var/lib/kilo/key")]
    pub key_file: PathBuf,
}

/// Runs the agent until it is killed.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // The lab keeps each agent's log in a file: no colours.
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let (private_key, public_key) = key_pair(&args.key_file).await?;
    let client = client(&args.kubeconfig).await?;
    let changed = Arc::new(Notify::new());

    let (nodes, writer) = reflector::store::<Node>();
    let node_events = reflector(
        writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff();
    // Every event, `InitDone` included: the store takes a listing in only
    // at its end, and a pass woken by the listing's objects alone would
    // find it empty, then sleep until the next resync.
    tokio::spawn(notify_on_each(node_events, changed.clone()));
    let peers = Arc::new(Mutex::new(PeerIndex::default()));
    tokio::spawn(feed_peers(client.clone(), peers.clone(), changed.clone()));

    let mut device = Device::new(args.interface.clone(), private_key);
    // kg looks once, at start (`mesh.New`).
    let private_ip = device.private_ip().await?;
    tracing::info!(
        private_ip = private_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        granularity = %args.mesh_granularity,
        "starting"
    );
    let mut resync = tokio::time::interval(args.resync_period);
    let mut check_in = tokio::time::interval(CHECK_IN_PERIOD);
    let node_api = Api::<Node>::all(client);
    let mut last_check_in = 0;
    let mut retry_soon = false;
    loop {
        let retry = async {
            match retry_soon {
                true => tokio::time::sleep(RETRY_AFTER).await,
                false => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed.notified() => {}
            _ = resync.tick() => {}
            _ = check_in.tick() => last_check_in = 0,
            _ = retry => {}
        }
        retry_soon = false;
        let now = unix_now();
        let all = nodes.state();
        let Some(local) = all
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(&args.hostname))
        else {
            tracing::info!(node = %args.hostname, "waiting for this node's Node object");
            continue;
        };
        let ready: Vec<KiloNode> = all
            .iter()
            .map(|n| KiloNode::from_node(n, &args.topology_label))
            .filter(|n| n.ready(now))
            .collect();
        let topology = topology::topology(
            args.mesh_granularity,
            &args.hostname,
            &ready,
            &peers_ready(&peers),
            args.subnet,
        );
        let own = OwnAnnotations {
            public_key: &public_key,
            port: args.port,
            private_ip,
            wireguard_ip: topology.as_ref().ok().and_then(|t| t.wireguard_ip()),
            granularity: args.mesh_granularity,
        };
        let wanted = match own.of(local, &args.topology_label) {
            Ok(wanted) => wanted,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "cannot check in");
                retry_soon = true;
                continue;
            }
        };
        let current = local.metadata.annotations.clone().unwrap_or_default();
        let stale = wanted.iter().any(|(k, v)| current.get(k) != Some(v));
        if stale || now - last_check_in >= CHECK_IN_PERIOD.as_secs() as i64 {
            let mut annotations = wanted;
            annotations.insert(annotation::LAST_SEEN.into(), now.to_string());
            let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
            match node_api
                .patch(
                    &args.hostname,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => last_check_in = now,
                Err(error) => {
                    tracing::warn!(%error, "check-in failed");
                    retry_soon = true;
                }
            }
        }
        match topology {
            Err(why) => tracing::info!(%why, "nothing to apply"),
            Ok(topology) => match device.apply(&topology).await {
                Ok(changes) if changes.any() => tracing::info!(
                    leader = topology.wireguard.is_some(),
                    peers = topology.wireguard.as_ref().map_or(0, |w| w.peers.len()),
                    routes = topology.routes.len(),
                    wireguard_ip = topology
                        .wireguard_ip()
                        .map(|ip| ip.to_string())
                        .unwrap_or_default(),
                    ?changes,
                    "applied"
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "applying the topology failed");
                    retry_soon = true;
                }
            },
        }
    }
}

/// What the agent knows of itself, for its check-in.
struct OwnAnnotations<'a> {
    public_key: &'a str,
    port: u16,
    /// The private IP found at start.
    private_ip: Option<IpNet>,
    /// The address of a leader's `kilo0`; `None` on a non-leader.
    wireguard_ip: Option<IpNet>,
    granularity: Granularity,
}

impl OwnAnnotations<'_> {
    /// The annotations kg keeps on its own Node (`handleLocal`,
    /// `nodeBackend.Set`), but `last-seen`. The endpoint is the Node's
    /// InternalIP and `--port` (kg finds the address on its interfaces). The
    /// internal IP is the forced or already written one, else the one found
    /// at start, and none when `force-internal-ip` says so.
    fn of(&self, local: &Node, topology_label: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let address = local
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone())
            .context("the Node has no InternalIP")?;
        let endpoint =
            backend::Endpoint::Ip(address.parse().context("the Node's InternalIP")?, self.port);
        let written = KiloNode::from_node(local, topology_label);
        let internal_ip = match written.no_internal_ip {
            true => None,
            false => written.internal_ip.or(self.private_ip),
        };
        let text = |ip: Option<IpNet>| ip.map(|ip| ip.to_string()).unwrap_or_default();
        Ok(BTreeMap::from([
            (annotation::KEY.into(), self.public_key.to_owned()),
            (annotation::ENDPOINT.into(), endpoint.to_string()),
            (annotation::INTERNAL_IP.into(), text(internal_ip)),
            (annotation::WIREGUARD_IP.into(), text(self.wireguard_ip)),
            (annotation::GRANULARITY.into(), self.granularity.to_string()),
        ]))
    }
}

fn peers_ready(peers: &Mutex<PeerIndex>) -> Vec<backend::KiloPeer> {
    peers.lock().map(|p| p.ready()).unwrap_or_default()
}

/// Feeds Peer watch events to the index as kg's informer handlers do.
async fn feed_peers(client: Client, peers: Arc<Mutex<PeerIndex>>, changed: Arc<Notify>) {
    let mut events = watcher(Api::<api::Peer>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relisted = BTreeSet::new();
    while let Some(event) = events.next().await {
        let Ok(mut index) = peers.lock() else { return };
        match event {
            Ok(watcher::Event::Apply(peer)) => index.apply(peer),
            Ok(watcher::Event::Delete(peer)) => index.delete(&peer),
            Ok(watcher::Event::Init) => relisted.clear(),
            Ok(watcher::Event::InitApply(peer)) => {
                relisted.insert(peer.metadata.name.clone().unwrap_or_default());
                index.apply(peer);
            }
            Ok(watcher::Event::InitDone) => index.retain_names(&relisted),
            Err(error) => tracing::warn!(%error, "watching Peers"),
        }
        drop(index);
        changed.notify_one();
    }
}

async fn notify_on_each<S, T, E>(stream: S, changed: Arc<Notify>)
where
    S: futures::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if let Err(error) = event {
            tracing::warn!(%error, "watching Nodes");
        }
        changed.notify_one();
    }
}

/// kg's key handling (`mesh.New`): read the private key at `path`, or make
/// one and keep it there; returns (private, public).
async fn key_pair(path: &Path) -> anyhow::Result<(String, String)> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let private = match existing.trim() {
        key if key.parse::<api::WireGuardKey>().is_ok() => key.to_owned(),
        _ => {
            let key = sh::run("wg", &["genkey"]).await?.trim().to_owned();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, &key).with_context(|| format!("writing {}", path.display()))?;
            key
        }
    };
    let public = sh::run_with_input("wg", &["pubkey"], Some(&private))
        .await?
        .trim()
        .to_owned();
    Ok((private, public))
}

async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let yaml = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    Ok(testkit::client_from_yaml(&yaml).await?)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn own(private_ip: Option<&str>) -> OwnAnnotations<'static> {
        OwnAnnotations {
            public_key: "key",
            port: 51820,
            private_ip: private_ip.map(|ip| ip.parse().unwrap()),
            wireguard_ip: None,
            granularity: Granularity::Location,
        }
    }

    fn node(annotations: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: "198.51.100.12".into(),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_check_in_writes_the_found_private_ip_unless_one_is_forced_written_or_refused() {
        let internal = |own: &OwnAnnotations<'_>, annotations: &[(&str, &str)]| {
            let written = own
                .of(&node(annotations), annotation::REGION_LABEL)
                .unwrap();
            written[annotation::INTERNAL_IP].clone()
        };
        let found = own(Some("172.18.1.12/24"));
        assert_eq!(internal(&found, &[]), "172.18.1.12/24");
        assert_eq!(internal(&own(None), &[]), "");
        let written = (annotation::INTERNAL_IP, "172.18.9.9/24");
        assert_eq!(internal(&found, &[written]), "172.18.9.9/24");
        let forced = (annotation::FORCE_INTERNAL_IP, "10.9.0.1/16");
        assert_eq!(internal(&found, &[written, forced]), "10.9.0.1/16");
        let refused = (annotation::FORCE_INTERNAL_IP, "-");
        assert_eq!(internal(&found, &[refused]), "");
        let all = found.of(&node(&[]), annotation::REGION_LABEL).unwrap();
        assert_eq!(all[annotation::ENDPOINT], "198.51.100.12:51820");
        assert_eq!(all[annotation::GRANULARITY], "location");
        assert_eq!(
            all[annotation::WIREGUARD_IP],
            "",
            "a non-leader writes no address"
        );
    }
}
