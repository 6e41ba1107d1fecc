//! Apply, per cluster: the Peer writes of each mesh on each cluster go
//! through a worker of their own, so a hung or slow cluster delays only its
//! own writes while every other cluster converges as if it were healthy.
//!
//! A pass hands each cluster its writes and goes on without waiting. A
//! worker sends one batch at a time, after the [`Fence`] says this replica
//! still leads. A batch handed over while another one is being sent was
//! planned from caches that the batch in flight is changing: it is not
//! sent; the mesh is planned again once the flight ends. A failed batch is
//! not resent either: the mesh is planned again after a backoff (1 s,
//! doubling up to 30 s), from what the cluster holds by then. The Peer
//! changes a batch makes start no pass when the watch reports them back
//! ([`Flights`]): a node change costs one pass, not one more per cluster
//! written, and a cold start plans a few times, not once per Peer event.
//! A landing plans again only when someone else changed the cluster's
//! Peers meanwhile or the cluster recovered; the controller reports how
//! the batches landed by passes of its own while any is in flight
//! ([`Writers::busy`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use api::ClusterMesh;
use futures::FutureExt;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Client, runtime::reflector::ObjectRef};
use mesh::ClusterWrites;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    apply::{self, PeerChange},
    clusters::{ClusterSource, WatchedCluster},
    leader::Fence,
    lock,
    metrics::{ClusterLabels, Metrics, WriteLabels},
};

/// First wait after a failed batch; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The batches in flight and the echoes still to come, by mesh and
/// cluster: shared with the cluster registry, which asks, of each Peer
/// change a cluster's watch reports, whether it starts a pass of the mesh.
///
/// It does not when it is the echo of the mesh's own write there: the
/// change the writer made, reported back (a pass would find nothing to do).
/// While a batch is in flight, every Peer change there is held: the batch
/// is changing the cluster, and a pass planned now would only be dropped
/// as stale. When the batch lands, the changes held are matched against
/// what it wrote; the worker plans again if one of them was not its own.
#[derive(Clone, Default)]
pub struct Flights {
    state: Arc<Mutex<HashMap<FlightKey, Flight>>>,
}

type FlightKey = (ObjectRef<ClusterMesh>, ClusterSource);

/// One mesh's writes on one cluster, as the registry sees them.
#[derive(Default)]
struct Flight {
    /// A batch is being sent.
    in_flight: bool,
    /// Meanwhile, a change that cannot be an echo (a relist), or writes
    /// handed over that were dropped as stale.
    held: bool,
    /// Meanwhile, the Peer changes the watch reported.
    seen: Vec<PeerChange>,
    /// The changes landed batches made whose echo has not come yet, by
    /// Peer name (a newer write of a Peer replaces the older one's).
    echoes: HashMap<String, PeerChange>,
}

impl Flight {
    /// Whether `change` is the echo of a landed write, which it then uses
    /// up. A Peer's echo can only be the next change reported of it.
    fn is_echo(&mut self, change: &PeerChange) -> bool {
        self.echoes
            .remove(change.name())
            .is_some_and(|echo| &echo == change)
    }
}

impl Flights {
    /// Whether a batch of `mesh` is in flight on `source`; if so, a pass is
    /// owed when it ends.
    pub fn hold(&self, mesh: &ObjectRef<ClusterMesh>, source: &ClusterSource) -> bool {
        let mut state = lock(&self.state);
        match state.get_mut(&(mesh.clone(), source.clone())) {
            Some(flight) if flight.in_flight => {
                flight.held = true;
                true
            }
            _ => false,
        }
    }

    /// Whether the Peer change `change` (`None`: the watch listed the
    /// cluster's Peers again) on `source` needs no pass of `mesh` now: the
    /// echo of its own write, or seen while its batch there is in flight
    /// (the worker decides when it lands).
    pub fn quiet(
        &self,
        mesh: &ObjectRef<ClusterMesh>,
        source: &ClusterSource,
        change: Option<&PeerChange>,
    ) -> bool {
        let mut state = lock(&self.state);
        let Some(flight) = state.get_mut(&(mesh.clone(), source.clone())) else {
            return false;
        };
        match (flight.in_flight, change) {
            (true, Some(change)) => flight.seen.push(change.clone()),
            (true, None) => flight.held = true,
            (false, Some(change)) => return flight.is_echo(change),
            // What was listed is not matched: a pass looks.
            (false, None) => {
                flight.echoes.clear();
                return false;
            }
        }
        true
    }

    /// Whether a batch of `mesh` is in flight on any cluster.
    fn busy(&self, mesh: &ObjectRef<ClusterMesh>) -> bool {
        let state = lock(&self.state);
        state
            .iter()
            .any(|((flying, _), flight)| flying == mesh && flight.in_flight)
    }

    fn take_off(&self, key: &WorkerKey) {
        lock(&self.state).entry(key.flight()).or_default().in_flight = true;
    }

    /// Ends a flight that made `changes`; returns whether a pass is owed: a
    /// change not its own (nor an earlier batch's) was seen meanwhile, or
    /// writes were dropped as stale.
    fn land(&self, key: &WorkerKey, changes: Vec<PeerChange>) -> bool {
        let mut state = lock(&self.state);
        let flight = state.entry(key.flight()).or_default();
        flight.in_flight = false;
        flight.echoes.extend(
            changes
                .into_iter()
                .map(|change| (change.name().to_owned(), change)),
        );
        let seen = std::mem::take(&mut flight.seen);
        let foreign = seen.iter().any(|change| !flight.is_echo(change));
        std::mem::take(&mut flight.held) || foreign
    }

    /// Forgets a stopped worker's flight.
    fn forget(&self, key: &WorkerKey) {
        lock(&self.state).remove(&key.flight());
    }
}

/// What the writes of one mesh on one cluster came to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// When a batch was last sent in full.
    pub last_written: Option<Time>,
    /// Why the last batch failed, until one succeeds.
    pub failing: Option<String>,
}

/// Every worker, one per mesh, cluster entry and credentials.
pub struct Writers {
    workers: Mutex<HashMap<WorkerKey, Worker>>,
    /// Stopped workers whose batch in flight may not have ended yet.
    stopping: Mutex<Vec<(WorkerKey, JoinHandle<()>)>>,
    /// Removals of a mesh's Peers from clusters that left it.
    purges: Mutex<HashMap<(ObjectRef<ClusterMesh>, String), PurgeAttempts>>,
    trigger: mpsc::UnboundedSender<ObjectRef<ClusterMesh>>,
    flights: Flights,
    metrics: Arc<Metrics>,
    fence: Fence,
    concurrency: usize,
}

/// Where the removal of a mesh's Peers from a cluster that left it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purge {
    /// Under way (or waiting for the cluster's last batch to end).
    Running { last_failure: Option<String> },
    /// This many Peers were removed.
    Done(usize),
    /// The attempt that just ended failed, for this reason.
    Failed(String),
}

/// The attempts at one removal: the one under way, and why the last failed.
#[derive(Default)]
struct PurgeAttempts {
    task: Option<JoinHandle<Result<usize, String>>>,
    failure: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct WorkerKey {
    mesh: ObjectRef<ClusterMesh>,
    cluster: String,
    source: ClusterSource,
}

impl WorkerKey {
    fn flight(&self) -> FlightKey {
        (self.mesh.clone(), self.source.clone())
    }
}

struct Worker {
    batches: mpsc::UnboundedSender<ClusterWrites>,
    outcome: Arc<Mutex<Outcome>>,
    task: JoinHandle<()>,
}

impl Writers {
    /// Workers that ask for a pass of their mesh through `trigger`, and send
    /// at most `concurrency` requests at a time each.
    pub fn new(
        trigger: mpsc::UnboundedSender<ObjectRef<ClusterMesh>>,
        flights: Flights,
        metrics: Arc<Metrics>,
        fence: Fence,
        concurrency: usize,
    ) -> Self {
        Self {
            workers: Mutex::default(),
            stopping: Mutex::default(),
            purges: Mutex::default(),
            trigger,
            flights,
            metrics,
            fence,
            concurrency,
        }
    }

    /// Hands `writes` to the worker of `mesh` on `cluster`, started if new,
    /// unless a batch is in flight there. Returns at once.
    pub fn submit(
        &self,
        mesh: &ObjectRef<ClusterMesh>,
        cluster: &str,
        watched: &WatchedCluster,
        writes: ClusterWrites,
    ) {
        // A batch in flight there: these writes are stale before they
        // could be sent. Not kept (at scale, a whole plan's Peers): the
        // worker plans again when its batch lands.
        if self.flights.hold(mesh, &watched.source) {
            return;
        }
        let key = WorkerKey {
            mesh: mesh.clone(),
            cluster: cluster.to_owned(),
            source: watched.source.clone(),
        };
        let mut workers = lock(&self.workers);
        let worker = workers
            .entry(key)
            .or_insert_with_key(|key| self.start(key, watched.client.clone()));
        // The worker lives until its sender is dropped.
        let _ = worker.batches.send(writes);
    }

    /// Whether a batch of `mesh` is being sent to some cluster: its landing
    /// is not reported by a pass of its own (see the module's notes).
    pub fn busy(&self, mesh: &ObjectRef<ClusterMesh>) -> bool {
        self.flights.busy(mesh)
    }

    /// The outcome so far of the writes of `mesh` on `cluster` through the
    /// credentials `source`.
    pub fn outcome(
        &self,
        mesh: &ObjectRef<ClusterMesh>,
        cluster: &str,
        source: &ClusterSource,
    ) -> Outcome {
        let key = WorkerKey {
            mesh: mesh.clone(),
            cluster: cluster.to_owned(),
            source: source.clone(),
        };
        lock(&self.workers)
            .get(&key)
            .map(|worker| lock(&worker.outcome).clone())
            .unwrap_or_default()
    }

    /// Stops the workers of `mesh` that `keep` does not name (a cluster left
    /// the mesh, or its credentials changed). Each ends after its batch in
    /// flight, without making the caller wait: [`Writers::settled`] tells
    /// when it has.
    pub fn retain(
        &self,
        mesh: &ObjectRef<ClusterMesh>,
        keep: impl Fn(&str, &ClusterSource) -> bool,
    ) {
        let stopped = self.remove(mesh, keep);
        let mut stopping = lock(&self.stopping);
        stopping.retain(|(_, task)| !task.is_finished());
        stopping.extend(
            stopped
                .into_iter()
                .map(|(key, worker)| (key, worker.stop())),
        );
    }

    /// True once no stopped worker of `mesh` on `cluster` can still write.
    pub fn settled(&self, mesh: &ObjectRef<ClusterMesh>, cluster: &str) -> bool {
        lock(&self.stopping)
            .iter()
            .all(|(key, task)| task.is_finished() || &key.mesh != mesh || key.cluster != cluster)
    }

    /// Stops every worker of `mesh` and waits for their batches in flight,
    /// so nothing this mesh wrote lands after it returns.
    pub async fn stop(&self, mesh: &ObjectRef<ClusterMesh>) {
        let mut tasks: Vec<JoinHandle<()>> = self
            .remove(mesh, |_, _| false)
            .into_iter()
            .map(|(_, worker)| worker.stop())
            .collect();
        {
            let mut stopping = lock(&self.stopping);
            let (theirs, others) = std::mem::take(&mut *stopping)
                .into_iter()
                .partition::<Vec<_>, _>(|(key, _)| &key.mesh == mesh);
            *stopping = others;
            tasks.extend(theirs.into_iter().map(|(_, task)| task));
        }
        futures::future::join_all(tasks).await;
    }

    /// Removes every Peer carrying `selector` (the mesh's label) from
    /// `cluster`, which left the mesh, in the background, once its stopped
    /// worker has settled. The mesh is planned again when an attempt ends;
    /// a failed attempt is made again at the next call.
    pub fn purge(
        &self,
        mesh: &ObjectRef<ClusterMesh>,
        cluster: &str,
        client: Client,
        selector: String,
    ) -> Purge {
        let key = (mesh.clone(), cluster.to_owned());
        let mut purges = lock(&self.purges);
        let attempt = purges.entry(key).or_default();
        if let Some(task) = attempt.task.take_if(|task| task.is_finished()) {
            match task.now_or_never() {
                Some(Ok(Ok(count))) => {
                    purges.remove(&(mesh.clone(), cluster.to_owned()));
                    return Purge::Done(count);
                }
                Some(Ok(Err(why))) => attempt.failure = Some(why),
                Some(Err(error)) => attempt.failure = Some(format!("the removal stopped: {error}")),
                None => {}
            }
            return Purge::Failed(attempt.failure.clone().unwrap_or_default());
        }
        if attempt.task.is_none() && self.settled(mesh, cluster) {
            let (mesh, cluster, trigger) = (mesh.clone(), cluster.to_owned(), self.trigger.clone());
            let concurrency = self.concurrency;
            let fence = self.fence.clone();
            attempt.task = Some(tokio::spawn(async move {
                let result = match fence.check().await {
                    Ok(()) => apply::remove_labelled_peers(
                        &client,
                        &cluster,
                        &selector,
                        apply::OnDelete::Delete,
                        concurrency,
                    )
                    .await
                    .map_err(|error| error.to_string()),
                    Err(fenced) => Err(fenced.to_string()),
                };
                let _ = trigger.send(mesh);
                result
            }));
        }
        Purge::Running {
            last_failure: attempt.failure.clone(),
        }
    }

    fn remove(
        &self,
        mesh: &ObjectRef<ClusterMesh>,
        keep: impl Fn(&str, &ClusterSource) -> bool,
    ) -> Vec<(WorkerKey, Worker)> {
        let mut workers = lock(&self.workers);
        let stopped: Vec<WorkerKey> = workers
            .keys()
            .filter(|key| &key.mesh == mesh && !keep(&key.cluster, &key.source))
            .cloned()
            .collect();
        stopped
            .into_iter()
            .filter_map(|key| workers.remove(&key).map(|worker| (key, worker)))
            .collect()
    }

    fn start(&self, key: &WorkerKey, client: Client) -> Worker {
        let (batches, receiver) = mpsc::unbounded_channel();
        let outcome = Arc::new(Mutex::new(Outcome::default()));
        let sender = Sender {
            key: key.clone(),
            client,
            outcome: outcome.clone(),
            trigger: self.trigger.clone(),
            flights: self.flights.clone(),
            metrics: self.metrics.clone(),
            fence: self.fence.clone(),
            concurrency: self.concurrency,
        };
        Worker {
            batches,
            outcome,
            task: tokio::spawn(sender.work(receiver)),
        }
    }
}

impl Worker {
    /// Lets the batch in flight end, then stops the worker: dropping the
    /// sender ends its loop. Returns its task.
    fn stop(self) -> JoinHandle<()> {
        drop(self.batches);
        self.task
    }
}

/// The loop behind one worker.
struct Sender {
    key: WorkerKey,
    client: Client,
    outcome: Arc<Mutex<Outcome>>,
    trigger: mpsc::UnboundedSender<ObjectRef<ClusterMesh>>,
    flights: Flights,
    metrics: Arc<Metrics>,
    fence: Fence,
    concurrency: usize,
}

impl Sender {
    async fn work(self, mut batches: mpsc::UnboundedReceiver<ClusterWrites>) {
        let mut backoff = FIRST_BACKOFF;
        while let Some(mut writes) = batches.recv().await {
            // Handed over while this worker was idle: the newest plan wins.
            while let Ok(newer) = batches.try_recv() {
                writes = newer;
            }
            self.flights.take_off(&self.key);
            let (changes, failure) = match self.send(writes).await {
                Ok(changes) => (changes, None),
                Err(why) => (Vec::new(), Some(why)),
            };
            let owed = self.flights.land(&self.key, changes);
            // Planned, or changed by someone else, while this batch was in
            // flight: plan again.
            let stale = drain(&mut batches) || owed;
            match failure {
                None => {
                    let recovered = {
                        let mut outcome = lock(&self.outcome);
                        outcome.last_written = Some(Time(Timestamp::now()));
                        outcome.failing.take().is_some()
                    };
                    backoff = FIRST_BACKOFF;
                    if stale || recovered {
                        self.replan();
                    }
                }
                Some(why) => {
                    tracing::warn!(mesh = %self.key.mesh, cluster = %self.key.cluster, %why, "Peer writes failed; retrying in {} s", backoff.as_secs());
                    lock(&self.outcome).failing = Some(why);
                    self.metrics
                        .peer_write_failures
                        .get_or_create(&ClusterLabels {
                            mesh: self.key.mesh.to_string(),
                            cluster: self.key.cluster.clone(),
                        })
                        .inc();
                    // Now, so the status says so; again after the backoff, to retry.
                    self.replan();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    drain(&mut batches);
                    self.replan();
                }
            }
        }
        self.flights.forget(&self.key);
    }

    /// Sends one batch, if this replica still leads; returns the changes it
    /// made.
    async fn send(&self, writes: ClusterWrites) -> Result<Vec<PeerChange>, String> {
        self.fence
            .check()
            .await
            .map_err(|fenced| fenced.to_string())?;
        let cluster = &self.key.cluster;
        for (op, n) in [
            ("apply", writes.apply.len()),
            ("delete", writes.delete.len()),
        ] {
            let labels = WriteLabels {
                cluster: cluster.clone(),
                op,
            };
            self.metrics
                .peer_writes
                .get_or_create(&labels)
                .inc_by(n as u64);
        }
        apply::write_peers(
            &self.client,
            cluster,
            writes.apply,
            writes.delete,
            self.concurrency,
        )
        .await
        .map_err(|error| error.to_string())
    }

    /// Asks for a pass of the mesh.
    fn replan(&self) {
        // The receiver lives as long as the controller; a send after it
        // stopped has nobody to tell.
        let _ = self.trigger.send(self.key.mesh.clone());
    }
}

/// Drops the batches waiting; returns whether there were any.
fn drain(batches: &mut mpsc::UnboundedReceiver<ClusterWrites>) -> bool {
    let mut any = false;
    while batches.try_recv().is_ok() {
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WorkerKey {
        WorkerKey {
            mesh: ObjectRef::new("mesh").within("kilo-system"),
            cluster: "b".into(),
            source: ClusterSource::Local,
        }
    }

    fn applied(name: &str, version: &str) -> PeerChange {
        PeerChange::Applied {
            name: name.into(),
            version: version.into(),
        }
    }

    fn deleted(name: &str) -> PeerChange {
        PeerChange::Deleted { name: name.into() }
    }

    fn quiet(flights: &Flights, change: Option<&PeerChange>) -> bool {
        let key = key();
        flights.quiet(&key.mesh, &key.source, change)
    }

    #[test]
    fn the_echo_of_a_landed_write_starts_no_pass_and_nothing_else_is_taken_for_one() {
        let flights = Flights::default();
        // No writes yet: every change is someone else's.
        assert!(!quiet(&flights, Some(&applied("b.n1", "7"))));
        flights.take_off(&key());
        assert!(!flights.land(&key(), vec![applied("b.n1", "8"), deleted("b.n2")]));
        assert!(quiet(&flights, Some(&applied("b.n1", "8"))));
        assert!(quiet(&flights, Some(&deleted("b.n2"))));
        // Each echo is used once: the same change again is a new one.
        assert!(!quiet(&flights, Some(&deleted("b.n2"))));
        // Someone else's version of a Peer just written.
        flights.take_off(&key());
        assert!(!flights.land(&key(), vec![applied("b.n3", "9")]));
        assert!(!quiet(&flights, Some(&applied("b.n3", "10"))));
        // A relist is never taken for an echo, and forgets the echoes due.
        flights.take_off(&key());
        assert!(!flights.land(&key(), vec![applied("b.n4", "11")]));
        assert!(!quiet(&flights, None));
        assert!(!quiet(&flights, Some(&applied("b.n4", "11"))));
    }

    #[test]
    fn changes_seen_in_flight_owe_a_pass_unless_they_were_its_own() {
        let flights = Flights::default();
        flights.take_off(&key());
        // The echo can come before the write's answer.
        assert!(quiet(&flights, Some(&applied("b.n1", "8"))));
        assert!(!flights.land(&key(), vec![applied("b.n1", "8")]));

        flights.take_off(&key());
        assert!(quiet(&flights, Some(&applied("b.n2", "12"))));
        assert!(quiet(&flights, Some(&applied("b.x", "13"))));
        assert!(
            flights.land(&key(), vec![applied("b.n2", "12")]),
            "b.x was not this batch's"
        );

        flights.take_off(&key());
        assert!(quiet(&flights, None));
        assert!(flights.land(&key(), vec![]), "a relist owes a pass");

        flights.take_off(&key());
        assert!(flights.hold(&key().mesh, &key().source));
        assert!(flights.land(&key(), vec![]), "writes were dropped as stale");
        assert!(!flights.hold(&key().mesh, &key().source), "landed");
    }
}
