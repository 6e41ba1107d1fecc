//! The lab's node agent: Kilo's `kg` behaviour for `--mesh-granularity=full`,
//! written from Kilo's documented behaviour (`../shared/reference/kilo.md`),
//! not from its code. It runs inside a node's namespaces, next to the
//! `kilo0` that `wireguard-go` made (kg's `--create-interface=false`).
//!
//! - check-in (`Mesh.checkIn`, `nodeBackend.Set`): key, endpoint, WireGuard
//!   IP, granularity and `last-seen` on its own Node, every 30 s;
//! - on every Node or Peer event and every resync: the ready nodes and Peers
//!   ([`topology`]) become `kilo0`'s config, routes and NAT rules ([`device`]).

pub mod device;
pub mod topology;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
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
    device::Device,
    topology::{KiloNode, PeerIndex, annotation},
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
    /// `full` only, for now; `location` and `cross` come with the granularity work.
    #[arg(long, default_value = "full")]
    pub mesh_granularity: String,
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
    if args.mesh_granularity != "full" {
        bail!(
            "--mesh-granularity={} is not supported by the lab's agent yet: only full",
            args.mesh_granularity
        );
    }
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
            .map(|n| KiloNode::from_node(n))
            .filter(|n| n.ready(now))
            .collect();
        let topology =
            topology::full_mesh(&args.hostname, &ready, &peers_ready(&peers), args.subnet);
        let wireguard_ip = topology
            .as_ref()
            .map(|t| t.wireguard_cidr.to_string())
            .unwrap_or_default();
        let wanted = match own_annotations(local, &public_key, args.port, &wireguard_ip) {
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
                    peers = topology.peers.len(),
                    routes = topology.routes.len(),
                    wireguard_ip = %topology.wireguard_cidr,
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

/// The annotations kg keeps on its own Node (`nodeBackend.Set`), but
/// `last-seen`. The endpoint is the Node's InternalIP and `--port` (kg finds
/// the address on its interfaces); the lab's addresses are not RFC 1918, so
/// like kg there is no internal IP.
fn own_annotations(
    local: &Node,
    public_key: &str,
    port: u16,
    wireguard_ip: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let address = local
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
        .context("the Node has no InternalIP")?;
    let endpoint = topology::Endpoint::Ip(address.parse().context("the Node's InternalIP")?, port);
    Ok(BTreeMap::from([
        (annotation::KEY.into(), public_key.to_owned()),
        (annotation::ENDPOINT.into(), endpoint.to_string()),
        (annotation::INTERNAL_IP.into(), String::new()),
        (annotation::WIREGUARD_IP.into(), wireguard_ip.to_owned()),
        (annotation::GRANULARITY.into(), "full".into()),
    ]))
}

fn peers_ready(peers: &Mutex<PeerIndex>) -> Vec<topology::KiloPeer> {
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
