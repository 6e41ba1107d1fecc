//! Observe: one client and one pair of long-lived watches (Nodes, Peers) per
//! cluster, shared by every mesh that uses the cluster.
//!
//! A cluster is keyed by where its credentials come from: the operator's own
//! client for the local cluster, or a Secret's key at one resourceVersion for
//! a remote. A changed Secret therefore starts a fresh client and fresh
//! watches; the old ones stop when no mesh uses them any more. Stores keep
//! their last contents while a watch fails, so an unreachable cluster still
//! has a last known view.
//!
//! Each cluster is also probed every few seconds ([`crate::probe`]): a
//! frozen API server or a revoked token makes it unreachable even while its
//! old watch connections stay open.

use std::{
    collections::{BTreeSet, HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use api::{ClusterMesh, Peer};
use futures::{Stream, StreamExt};
use k8s_openapi::{
    api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::ObjectRef,
        utils::Backoff,
        watcher::{self, Event},
    },
};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::{
    apply::PeerChange,
    lock, observe,
    probe::{self, Census, ProbeFailure},
    views::{Update, Views},
    writer::Flights,
};

/// Where a cluster's client comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClusterSource {
    /// The cluster the operator runs in.
    Local,
    /// A kubeconfig in a Secret, at one resourceVersion of the Secret.
    Secret {
        namespace: String,
        name: String,
        key: String,
        resource_version: String,
    },
}

/// Reachability of a cluster as its watches and its probe see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    /// Both watches have listed the cluster at least once, and the probe
    /// has tried to read what identifies it.
    pub synced: bool,
    /// False while a watch of the cluster or its probe is failing.
    pub reachable: bool,
    /// When the cluster became unreachable.
    pub unreachable_since: Option<Time>,
    /// Why, while unreachable.
    pub error: Option<String>,
    /// Whether the cluster refuses the operator's credentials.
    pub credentials_refused: bool,
    /// When the operator last started seeing the cluster (Unix seconds):
    /// its first listing, or its recovery. No Kilo agent of the cluster
    /// could check in while it was unreachable, so no node counts as silent
    /// since before then.
    pub seeing_since: i64,
}

/// What the operator reads of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Nodes and Peers: a cluster a mesh writes Peers on.
    NodesAndPeers,
    /// Nodes only: a cluster that `LocalCluster` meshes only read, with a
    /// token that may read nothing else (`connect --read-only`).
    Nodes,
}

/// A cluster being watched: its client and the last known Nodes and Peers.
pub struct WatchedCluster {
    pub source: ClusterSource,
    /// Whether its Peers are watched (else they stay empty in `views`).
    pub reads: Reads,
    pub client: Client,
    pub views: Arc<Views>,
    health: Arc<Mutex<HealthState>>,
    tasks: Vec<AbortHandle>,
}

/// What the watches and the probe found, behind [`WatchedCluster::health`].
#[derive(Default)]
struct HealthState {
    nodes_synced: bool,
    peers_synced: bool,
    failing: Option<(Time, String)>,
    probe_failures_in_a_row: u32,
    probe_failing: Option<(Time, ProbeFailure)>,
    /// What identifies the cluster, once read ([`probe::cluster_uid`]).
    uid: Option<String>,
    /// Whether reading it was tried: until then the cluster counts as not
    /// listed yet, so no pass writes before it could tell two entries
    /// reaching one cluster apart.
    identity_tried: bool,
    /// See [`Health::seeing_since`].
    seeing_since: i64,
    /// On a cluster whose Peers are not watched: what the census found.
    census: Census,
}

impl WatchedCluster {
    /// The cluster's reachability now.
    pub fn health(&self) -> Health {
        let health = lock(&self.health);
        let probe = health.probe_failing.as_ref();
        let since = [
            health.failing.as_ref().map(|(since, _)| since),
            probe.map(|(since, _)| since),
        ];
        Health {
            synced: health.nodes_synced && health.peers_synced && health.identity_tried,
            reachable: health.failing.is_none() && probe.is_none(),
            unreachable_since: since.into_iter().flatten().min_by_key(|t| t.0).cloned(),
            // The probe's cause is the one a user can act on.
            error: probe
                .map(|(_, failure)| failure.message())
                .or_else(|| health.failing.as_ref().map(|(_, error)| error.clone())),
            credentials_refused: probe.is_some_and(|(_, failure)| failure.is_credentials()),
            seeing_since: health.seeing_since,
        }
    }
}

impl WatchedCluster {
    /// What identifies the cluster (its `kube-system` namespace's uid), once
    /// the probe has read it.
    pub fn uid(&self) -> Option<String> {
        lock(&self.health).uid.clone()
    }

    /// Where Peers are not watched: the Peers the latest census found.
    pub fn census(&self) -> Census {
        lock(&self.health).census.clone()
    }
}

impl Drop for WatchedCluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The clusters in use, and which meshes use each.
pub struct ClusterRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    clusters: Mutex<HashMap<ClusterSource, Arc<WatchedCluster>>>,
    users: Mutex<HashMap<ObjectRef<ClusterMesh>, BTreeSet<ClusterSource>>>,
    trigger: mpsc::UnboundedSender<ObjectRef<ClusterMesh>>,
    flights: Flights,
}

impl ClusterRegistry {
    /// A registry whose watches send the meshes to reconcile to `trigger`,
    /// but for a Peer change on a cluster where the mesh has a batch in
    /// `flights`.
    pub fn new(trigger: mpsc::UnboundedSender<ObjectRef<ClusterMesh>>, flights: Flights) -> Self {
        let inner = Inner {
            clusters: Mutex::default(),
            users: Mutex::default(),
            trigger,
            flights,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The watched cluster for `source`, started with `client` if it is new
    /// or does not read all of `reads` yet.
    pub fn cluster(
        &self,
        source: &ClusterSource,
        reads: Reads,
        client: impl FnOnce() -> Client,
    ) -> Arc<WatchedCluster> {
        let mut clusters = lock(&self.inner.clusters);
        if let Some(cluster) = clusters.get(source)
            && (cluster.reads == Reads::NodesAndPeers || reads == Reads::Nodes)
        {
            return cluster.clone();
        }
        let cluster = start(source.clone(), reads, client(), Arc::downgrade(&self.inner));
        clusters.insert(source.clone(), cluster.clone());
        cluster
    }

    /// The cluster for `source` if it is already watched, reading at least
    /// `reads`.
    pub fn get(&self, source: &ClusterSource, reads: Reads) -> Option<Arc<WatchedCluster>> {
        let clusters = lock(&self.inner.clusters);
        let cluster = clusters.get(source)?;
        (cluster.reads == Reads::NodesAndPeers || reads == Reads::Nodes).then(|| cluster.clone())
    }

    /// Records the clusters `mesh` uses now, and stops watching clusters that
    /// no mesh uses any more.
    pub fn set_used(&self, mesh: ObjectRef<ClusterMesh>, sources: BTreeSet<ClusterSource>) {
        let mut users = lock(&self.inner.users);
        if sources.is_empty() {
            users.remove(&mesh);
        } else {
            users.insert(mesh, sources);
        }
        let in_use: BTreeSet<&ClusterSource> = users.values().flatten().collect();
        lock(&self.inner.clusters).retain(|source, _| in_use.contains(source));
    }
}

impl Inner {
    /// Asks for a reconcile of every mesh that uses `source`; after a Peer
    /// change (`kind`; `change` when it was one Peer's), not of a mesh whose
    /// own write it echoes, nor of one whose batch there is in flight: its
    /// writer plans again when the batch lands, if the change was not its
    /// own (see [`Flights`]).
    fn trigger_users(&self, source: &ClusterSource, kind: Kind, change: Option<&PeerChange>) {
        for (mesh, sources) in lock(&self.users).iter() {
            if !sources.contains(source) {
                continue;
            }
            let quiet = kind == Kind::Peers && self.flights.quiet(mesh, source, change);
            if !quiet {
                // The receiver lives as long as the controller; a send after
                // it stopped has nobody to tell.
                let _ = self.trigger.send(mesh.clone());
            }
        }
    }
}

/// Starts the Node watch of one cluster, its Peer watch when `reads` says
/// so, and its probe.
fn start(
    source: ClusterSource,
    reads: Reads,
    client: Client,
    registry: Weak<Inner>,
) -> Arc<WatchedCluster> {
    let views = Arc::new(Views::default());
    let node_events = watcher(Api::<Node>::all(client.clone())).modify(strip_node);
    let watch_peers = reads == Reads::NodesAndPeers;
    let health = Arc::new(Mutex::new(HealthState {
        // Nothing to list when Peers are not read.
        peers_synced: !watch_peers,
        ..HealthState::default()
    }));
    let follower = |kind| Follower {
        kind,
        source: source.clone(),
        health: health.clone(),
        registry: registry.clone(),
    };
    let mut tasks = vec![
        tokio::spawn(
            follower(Kind::Nodes).follow(node_events, node_fingerprint, {
                let views = views.clone();
                move |update| views.update_nodes(update)
            }),
        )
        .abort_handle(),
        tokio::spawn(
            Prober {
                source: source.clone(),
                health: health.clone(),
                registry: registry.clone(),
            }
            .probe(client.clone(), watch_peers),
        )
        .abort_handle(),
    ];
    if watch_peers {
        let peer_events = watcher(Api::<Peer>::all(client.clone()))
            .modify(|peer| peer.managed_fields_mut().clear());
        let views = views.clone();
        let peers = tokio::spawn(follower(Kind::Peers).follow(
            peer_events,
            peer_fingerprint,
            move |update| views.update_peers(update),
        ));
        tasks.push(peers.abort_handle());
    }
    Arc::new(WatchedCluster {
        source,
        reads,
        client,
        views,
        health,
        tasks,
    })
}

fn watcher<K>(api: Api<K>) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default()).backoff(WatchBackoff::default())
}

/// Reconnects a failed watch after 0.5 s, doubling up to 3 s: a cluster that
/// heals is watched again within seconds (kube's default waits up to 30 s).
struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(3);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (wait * 2).min(Self::MAX);
        Some(wait)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nodes,
    Peers,
}

/// Drives one watch of one cluster.
struct Follower {
    kind: Kind,
    source: ClusterSource,
    health: Arc<Mutex<HealthState>>,
    registry: Weak<Inner>,
}

impl Follower {
    /// Keeps every change of the watched objects (`keep`), records
    /// reachability, and triggers the meshes using the cluster when
    /// something they depend on changed. Objects are compared by a
    /// fingerprint of the fields the plan reads, so a Kilo heartbeat
    /// (`kilo.squat.ai/last-seen`) or a status update triggers nothing;
    /// only a check-in after a silence Kilo would notice does.
    async fn follow<K: Resource + Clone>(
        self,
        events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
        fingerprint: fn(&K) -> Print,
        keep: impl Fn(Update<K>),
    ) {
        let mut seen: HashMap<String, Print> = HashMap::new();
        let mut listing: HashMap<String, Print> = HashMap::new();
        let mut listed: Vec<K> = Vec::new();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            // What changed when it was one Peer and nothing else: a
            // writer's echo is told by it. (Nodes have no writer here.)
            let mut change = None;
            let peers = self.kind == Kind::Peers;
            let changed = match event {
                Ok(event) => {
                    let (recovered, first_sync) = self.record_success(&event);
                    let changed = match event {
                        Event::Apply(object) => {
                            let print = fingerprint(&object);
                            let name = object.name_any();
                            change = peers.then(|| PeerChange::Applied {
                                name: name.clone(),
                                version: object.resource_version().unwrap_or_default(),
                            });
                            let before = seen.insert(name, print);
                            keep(Update::Apply(object));
                            before.is_none_or(|before| print.differs_from(&before))
                        }
                        Event::Delete(object) => {
                            let name = object.name_any();
                            keep(Update::Delete(name.clone()));
                            change = peers.then(|| PeerChange::Deleted { name: name.clone() });
                            seen.remove(&name).is_some()
                        }
                        Event::Init => {
                            listing.clear();
                            listed.clear();
                            false
                        }
                        Event::InitApply(object) => {
                            listing.insert(object.name_any(), fingerprint(&object));
                            listed.push(object);
                            false
                        }
                        Event::InitDone => {
                            let changed = listing.len() != seen.len()
                                || listing.iter().any(|(name, print)| {
                                    seen.get(name).is_none_or(|b| print.differs_from(b))
                                });
                            seen = std::mem::take(&mut listing);
                            keep(Update::Relisted(std::mem::take(&mut listed)));
                            changed
                        }
                    };
                    if recovered || first_sync {
                        change = None;
                    }
                    changed || recovered || first_sync
                }
                Err(error) => self.record_failure(&error),
            };
            if changed {
                let Some(registry) = self.registry.upgrade() else {
                    return;
                };
                registry.trigger_users(&self.source, self.kind, change.as_ref());
            }
        }
    }

    /// Returns whether the cluster recovered, and whether this is its first
    /// complete listing.
    fn record_success<K>(&self, event: &Event<K>) -> (bool, bool) {
        let mut health = lock(&self.health);
        let recovered = health.failing.take().is_some();
        let mut first_sync = false;
        if let Event::InitDone = event {
            let synced = match self.kind {
                Kind::Nodes => &mut health.nodes_synced,
                Kind::Peers => &mut health.peers_synced,
            };
            first_sync = !*synced;
            *synced = true;
        }
        if recovered || first_sync {
            health.seeing_since = Timestamp::now().as_second();
        }
        (recovered, first_sync)
    }

    /// Returns whether the cluster just became unreachable.
    fn record_failure(&self, error: &watcher::Error) -> bool {
        let mut health = lock(&self.health);
        let first_failure = health.failing.is_none();
        let since = health
            .failing
            .take()
            .map_or_else(|| Time(Timestamp::now()), |(since, _)| since);
        health.failing = Some((
            since,
            format!("watching failed: {}", probe::root_cause(error)),
        ));
        if first_failure {
            tracing::warn!(cluster = ?self.source, %error, "cluster unreachable");
        }
        first_failure
    }
}

/// Probes one cluster.
struct Prober {
    source: ClusterSource,
    health: Arc<Mutex<HealthState>>,
    registry: Weak<Inner>,
}

impl Prober {
    /// Probes the cluster every [`probe::INTERVAL`] until aborted, reads
    /// what identifies it once it answers, and triggers the meshes using it
    /// when its reachability changes or it is identified.
    async fn probe(self, client: Client, peers: bool) {
        let mut ticks = tokio::time::interval(probe::INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut census_due = tokio::time::Instant::now();
        loop {
            ticks.tick().await;
            if !peers && tokio::time::Instant::now() >= census_due {
                census_due += probe::CENSUS_INTERVAL;
                if let Some(census) = probe::census(&client).await
                    && self.record_census(census)
                    && let Some(registry) = self.registry.upgrade()
                {
                    registry.trigger_users(&self.source, Kind::Nodes, None);
                }
            }
            let outcome = probe::probe(&client, peers).await;
            let identify = outcome.is_ok() && lock(&self.health).uid.is_none();
            let identified = match identify {
                true => Some(probe::cluster_uid(&client).await),
                false => None,
            };
            let identity_changed = identified.is_some_and(|uid| self.record_identity(uid));
            if self.record_probe(outcome) || identity_changed {
                let Some(registry) = self.registry.upgrade() else {
                    return;
                };
                registry.trigger_users(&self.source, Kind::Nodes, None);
            }
        }
    }

    /// Records what identifies the cluster (`None`: it could not be read, and
    /// is tried again at the next probe). Returns whether a pass should see
    /// it: the first attempt, or the uid found.
    fn record_identity(&self, uid: Option<String>) -> bool {
        let mut health = lock(&self.health);
        let first = !std::mem::replace(&mut health.identity_tried, true);
        let found = uid.is_some();
        if found {
            health.uid = uid;
        }
        first || found
    }

    /// Returns whether the census found something else than the last.
    fn record_census(&self, census: Census) -> bool {
        let mut health = lock(&self.health);
        std::mem::replace(&mut health.census, census) != health.census
    }

    /// Returns whether the probe's verdict changed.
    fn record_probe(&self, outcome: Result<(), ProbeFailure>) -> bool {
        let mut health = lock(&self.health);
        let failure = match outcome {
            Ok(()) => {
                health.probe_failures_in_a_row = 0;
                let recovered = health.probe_failing.take().is_some();
                if recovered {
                    health.seeing_since = Timestamp::now().as_second();
                }
                return recovered;
            }
            Err(failure) => failure,
        };
        health.probe_failures_in_a_row += 1;
        let counts = failure.is_definite()
            || health.probe_failures_in_a_row >= probe::FAILURES_BEFORE_UNREACHABLE;
        if !counts {
            return false;
        }
        let previous = health.probe_failing.take();
        let changed = previous.as_ref().is_none_or(|(_, was)| *was != failure);
        if changed {
            tracing::warn!(cluster = ?self.source, cause = %failure.message(), "cluster unreachable");
        }
        let since = previous.map_or_else(|| Time(Timestamp::now()), |(since, _)| since);
        health.probe_failing = Some((since, failure));
        changed
    }
}

/// Kilo's NAT discovery: changes often, and peering does not read it; dropped
/// from the cache so that it neither costs memory nor triggers a pass.
const DISCOVERED_ENDPOINTS: &str = "kilo.squat.ai/discovered-endpoints";

/// Keeps only what peering depends on: name, age, region label, Kilo
/// annotations, pod CIDRs and the Ready condition.
fn strip_node(node: &mut Node) {
    let annotations = node
        .annotations()
        .iter()
        .filter(|(key, _)| key.starts_with("kilo.squat.ai/") && *key != DISCOVERED_ENDPOINTS)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let region = node
        .labels()
        .get(mesh::REGION_LABEL)
        .map(|region| (mesh::REGION_LABEL.to_owned(), region.clone()));
    let spec = node.spec.take().unwrap_or_default();
    let ready = node
        .status
        .take()
        .and_then(|status| status.conditions)
        .into_iter()
        .flatten()
        .filter(|condition| condition.type_ == "Ready")
        .map(|condition| NodeCondition {
            type_: condition.type_,
            status: condition.status,
            ..Default::default()
        })
        .collect::<Vec<_>>();
    *node = Node {
        metadata: ObjectMeta {
            name: node.metadata.name.take(),
            uid: node.metadata.uid.take(),
            resource_version: node.metadata.resource_version.take(),
            // Of two nodes claiming one key or range, the older keeps it.
            creation_timestamp: node.metadata.creation_timestamp.take(),
            annotations: Some(annotations),
            labels: region.map(|label| [label].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: spec.pod_cidr,
            pod_cidrs: spec.pod_cidrs,
            ..Default::default()
        }),
        status: Some(NodeStatus {
            conditions: Some(ready),
            ..Default::default()
        }),
    };
}

/// What a watch event is compared by: a hash of the fields the plan reads,
/// and for a Node, Kilo's last check-in, kept apart from the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Print {
    fields: u64,
    checked_in: Option<i64>,
}

impl Print {
    /// A change the plan must see: another field, or a check-in after a
    /// silence longer than Kilo's readiness window (the node may have been
    /// taken out meanwhile; an agent checking in every 30 s never is).
    fn differs_from(&self, before: &Print) -> bool {
        let revived = match (before.checked_in, self.checked_in) {
            (Some(before), Some(now)) => {
                now.saturating_sub(before) > mesh::KILO_READY_WITHIN_SECONDS
            }
            (before, now) => before.is_some() != now.is_some(),
        };
        self.fields != before.fields || revived
    }
}

fn node_fingerprint(node: &Node) -> Print {
    let mut hasher = DefaultHasher::new();
    let annotations = node.metadata.annotations.iter().flatten();
    annotations
        .filter(|(key, _)| *key != mesh::annotation::LAST_SEEN)
        .for_each(|entry| entry.hash(&mut hasher));
    node.metadata.labels.hash(&mut hasher);
    node.spec
        .as_ref()
        .map(|s| (&s.pod_cidr, &s.pod_cidrs))
        .hash(&mut hasher);
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| c.iter().map(|c| &c.status).collect::<Vec<_>>())
        .hash(&mut hasher);
    Print {
        fields: hasher.finish(),
        checked_in: observe::last_seen(node),
    }
}

fn peer_fingerprint(peer: &Peer) -> Print {
    let mut hasher = DefaultHasher::new();
    peer.metadata.labels.hash(&mut hasher);
    peer.metadata.annotations.hash(&mut hasher);
    serde_json::to_string(&peer.spec)
        .unwrap_or_default()
        .hash(&mut hasher);
    Print {
        fields: hasher.finish(),
        checked_in: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn node(last_seen: &str) -> Node {
        let annotations = BTreeMap::from([
            ("kilo.squat.ai/key".to_owned(), "k".to_owned()),
            ("kilo.squat.ai/last-seen".to_owned(), last_seen.to_owned()),
            (
                "kubeadm.alpha.kubernetes.io/cri-socket".to_owned(),
                "x".to_owned(),
            ),
        ]);
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidrs: Some(vec!["10.1.0.0/24".into()]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![
                    NodeCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    },
                    NodeCondition {
                        type_: "MemoryPressure".into(),
                        status: "False".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    fn prober() -> Prober {
        Prober {
            source: ClusterSource::Local,
            health: Arc::default(),
            registry: Weak::new(),
        }
    }

    fn reachable(prober: &Prober) -> bool {
        lock(&prober.health).probe_failing.is_none()
    }

    #[test]
    fn two_probes_without_answer_or_one_rejected_token_make_a_cluster_unreachable() {
        let timeouts = prober();
        assert!(!timeouts.record_probe(Err(ProbeFailure::TimedOut)));
        assert!(reachable(&timeouts), "one slow answer is not an outage");
        assert!(timeouts.record_probe(Err(ProbeFailure::TimedOut)));
        assert!(!reachable(&timeouts));
        assert!(timeouts.record_probe(Ok(())), "one answer heals it");
        assert!(reachable(&timeouts));

        let rejected = prober();
        assert!(rejected.record_probe(Err(ProbeFailure::TokenRejected)));
        let health = lock(&rejected.health);
        assert!(
            health
                .probe_failing
                .as_ref()
                .is_some_and(|(_, f)| f.is_credentials())
        );
    }

    #[test]
    fn watches_reconnect_within_three_seconds() {
        let mut backoff = WatchBackoff::default();
        let waits: Vec<u64> = (&mut backoff)
            .take(5)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 3000, 3000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn stripped_nodes_keep_what_peering_needs() {
        let mut stripped = node("1");
        strip_node(&mut stripped);
        assert_eq!(
            stripped.annotations().keys().collect::<Vec<_>>(),
            ["kilo.squat.ai/key", "kilo.squat.ai/last-seen"]
        );
        assert_eq!(
            stripped.spec.as_ref().and_then(|s| s.pod_cidrs.clone()),
            Some(vec!["10.1.0.0/24".into()])
        );
        let conditions = stripped
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "Ready");
    }

    #[test]
    fn heartbeats_change_nothing_but_a_check_in_after_a_silence_does() {
        let print = |last_seen: &str| {
            let mut node = node(last_seen);
            strip_node(&mut node);
            node_fingerprint(&node)
        };
        let (first, next) = (print("1700000000"), print("1700000030"));
        assert!(!next.differs_from(&first), "a heartbeat");
        assert!(print("1700000061").differs_from(&first), "back after 61 s");
        // last-seen is whatever a Node says: no overflow at the ends of time.
        let (min, max) = (print(&i64::MIN.to_string()), print(&i64::MAX.to_string()));
        assert!(max.differs_from(&min));
        assert!(!min.differs_from(&max));
        let mut edited = node("1700000030");
        strip_node(&mut edited);
        edited
            .annotations_mut()
            .insert("kilo.squat.ai/endpoint".into(), "192.0.2.1:51820".into());
        assert!(node_fingerprint(&edited).differs_from(&next));
    }
}
