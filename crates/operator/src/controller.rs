//! The controller: one reconcile per ClusterMesh, triggered by the mesh, its
//! Secrets, and the Nodes and Peers of every cluster it spans.
//!
//! A pass observes (cluster registry), plans (the mesh's `mesh::Planner`,
//! pure), applies the differences, and reports (status, Events, metrics).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use api::{CLEANUP_FINALIZER, ClusterEntry, ClusterMesh, ClusterMeshStatus};
use futures::StreamExt;
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, PredicateConfig, WatchStreamExt,
        controller::Action,
        events::{Event as KubeEvent, EventType, Recorder, Reporter},
        finalizer::{self, finalizer},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use mesh::{ConditionType, Observation, Unreachable};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::{
    apply::{self, FIELD_MANAGER},
    client,
    clusters::{ClusterRegistry, ClusterSource, Reads, WatchedCluster},
    kubeconfig::{self, KubeconfigError, KubeconfigPolicy},
    leader::{Fence, Fenced},
    metrics::{ClusterLabels, ErrorLabels, MeshLabels, Metrics, Readiness},
    observe::{self, Resolved},
    rate_limit::Limits,
    removed, report,
    resolver::{Lookup, Resolver},
    writer::{Flights, Purge, Writers},
};

/// How soon a pass that found a cluster still listing is retried.
const SYNC_WAIT: Duration = Duration::from_millis(500);
/// A mesh's status is written at most this often while its conditions keep
/// their state and reason and its spec is unchanged (only counts, times and
/// messages move): on a busy mesh, one status write a second instead of one
/// per node change, none of them holding up the next change's pass. A
/// condition that turns, or a new generation, is written at once. While
/// Peer writes are in flight, a pass follows this often to report them.
const STATUS_PACE: Duration = Duration::from_secs(1);
/// How soon the cleanup of a cluster removed from the spec is tried again.
const REMOVED_CLEANUP_RETRY: Duration = Duration::from_secs(5);

/// The kubeconfig of a remote entry, read from its Secret.
struct SecretKubeconfig {
    source: ClusterSource,
    yaml: String,
    /// "kubeconfig in Secret ns/name key ..." for messages.
    describe: String,
    /// The client's label in metrics.
    label: String,
}

/// How the controller behaves; set from the `run` flags.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: Option<String>,
    pub default_persistent_keepalive: i32,
    pub advertise_internal_ips: bool,
    pub kubeconfig_policy: KubeconfigPolicy,
    pub write_concurrency: usize,
    /// Client-side rate limits of every cluster's client.
    pub limits: Limits,
    pub cleanup_timeout: Duration,
    /// How long before a cluster's token expires `CredentialsExpiring` is set.
    pub credentials_expiry_warning: Duration,
    /// How long past Kilo's own 60 s a node whose agent stopped checking in
    /// stays peered.
    pub check_in_grace: Duration,
    /// What the Peers of a node with a DNS endpoint carry.
    pub endpoint_dns: mesh::EndpointDns,
    /// How endpoint names are looked up.
    pub lookup: Lookup,
}

/// How long until `at` (Unix seconds), at least a second.
fn until_recheck(at: Option<i64>) -> Option<Duration> {
    let wait = at?.saturating_sub(Timestamp::now().as_second());
    Some(Duration::from_secs(u64::try_from(wait).unwrap_or(0).max(1)))
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    registry: ClusterRegistry,
    secrets: Store<Secret>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    settings: Settings,
    writers: Writers,
    resolver: Resolver,
    fence: Fence,
    /// What each mesh's passes remember between them.
    meshes: Mutex<HashMap<ObjectRef<ClusterMesh>, Memory>>,
}

/// What a mesh's passes remember between them.
#[derive(Default)]
struct Memory {
    /// What they planned before (see [`mesh::Planner`]).
    planner: mesh::Planner,
    /// When one of them last wrote the status.
    status_written: Option<Instant>,
}

/// Why a pass failed. Each variant is countable by `metric_label`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ClusterMesh {0} has no namespace")]
    NoNamespace(String),
    #[error("writing the status of ClusterMesh {mesh}: {source}")]
    Status { mesh: String, source: kube::Error },
    #[error("recording the clusters of ClusterMesh {mesh} in its annotations: {source}")]
    Annotations { mesh: String, source: kube::Error },
    #[error("removing the Peers of ClusterMesh {mesh} from {clusters}: will retry")]
    Cleanup { mesh: String, clusters: String },
    #[error("ClusterMesh {mesh} is being deleted, but {why}")]
    CleanupPolicy { mesh: String, why: String },
    #[error(transparent)]
    Fenced(#[from] Fenced),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoNamespace(_) => "NoNamespace",
            Self::Fenced(_) => "Fenced",
            Self::Status { .. } => "StatusWrite",
            Self::Annotations { .. } => "AnnotationsWrite",
            Self::Cleanup { .. } => "Cleanup",
            Self::CleanupPolicy { .. } => "CleanupPolicy",
            Self::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.metric_label()
                }
                _ => "Finalizer",
            },
        }
    }
}

/// Runs the controller until SIGTERM or Ctrl-C. Every write goes through
/// `fence`.
pub async fn run(
    client: Client,
    settings: Settings,
    fence: Fence,
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> anyhow::Result<()> {
    let (meshes, secrets_api) = match &settings.namespace {
        Some(ns) => (
            Api::<ClusterMesh>::namespaced(client.clone(), ns),
            Api::<Secret>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<ClusterMesh>::all(client.clone()),
            Api::<Secret>::all(client.clone()),
        ),
    };
    let (trigger, triggers) = mpsc::unbounded_channel();
    let (mesh_store, mesh_writer) = reflector::store();
    let mesh_events = watcher::watcher(meshes, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(mesh_writer)
        .applied_objects()
        .predicate_filter(mesh_input, PredicateConfig::default());
    let controller = Controller::for_stream(mesh_events, mesh_store.clone());

    let (secrets, secret_writer) = reflector::store();
    let secret_events = watcher::watcher(secrets_api, watcher::Config::default())
        .default_backoff()
        .modify(|secret: &mut Secret| secret.managed_fields_mut().clear())
        .reflect(secret_writer);
    tokio::spawn(trigger_on_secrets(
        secret_events,
        mesh_store,
        trigger.clone(),
    ));
    let ready = secrets.clone();
    tokio::spawn(async move {
        if ready.wait_until_ready().await.is_ok() {
            readiness.set_ready();
        }
    });

    let flights = Flights::default();
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER)),
        client,
        writers: Writers::new(
            trigger.clone(),
            flights.clone(),
            metrics.clone(),
            fence.clone(),
            settings.write_concurrency,
        ),
        resolver: Resolver::start(settings.lookup.clone(), trigger.clone()),
        registry: ClusterRegistry::new(trigger, flights),
        meshes: Mutex::default(),
        secrets,
        metrics,
        settings,
        fence,
    });
    controller
        .reconcile_on(UnboundedReceiverStream::new(triggers))
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile failed");
            }
        })
        .await;
    Ok(())
}

/// What of a ClusterMesh a pass reads: a change of anything else (its
/// status, which the passes write themselves) starts no pass.
fn mesh_input(mesh: &ClusterMesh) -> Option<u64> {
    let mut hasher = std::hash::DefaultHasher::new();
    let meta = mesh.meta();
    (
        meta.generation,
        &meta.annotations,
        &meta.finalizers,
        meta.deletion_timestamp.as_ref().map(|t| t.0.as_second()),
    )
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Reconciles the meshes that reference a Secret whenever it changes.
async fn trigger_on_secrets(
    events: impl futures::Stream<Item = Result<watcher::Event<Secret>, watcher::Error>>,
    meshes: Store<ClusterMesh>,
    trigger: mpsc::UnboundedSender<ObjectRef<ClusterMesh>>,
) {
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let secret = match event {
            Ok(watcher::Event::Apply(secret) | watcher::Event::Delete(secret)) => secret,
            // A (re)listing is in the store: a pass that ran before it may
            // have found a Secret missing that is there.
            Ok(watcher::Event::InitDone) => {
                for mesh in meshes.state() {
                    let _ = trigger.send(ObjectRef::from_obj(mesh.as_ref()));
                }
                continue;
            }
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(%error, "watching Secrets failed");
                continue;
            }
        };
        let (namespace, name) = (secret.namespace(), secret.name_any());
        for mesh in meshes.state() {
            let references = mesh.namespace() == namespace
                && mesh.spec.clusters.iter().any(|c| {
                    c.kubeconfig_secret_ref
                        .as_ref()
                        .is_some_and(|r| r.name == name)
                });
            if references {
                let _ = trigger.send(ObjectRef::from_obj(mesh.as_ref()));
            }
        }
    }
}

async fn reconcile(mesh: Arc<ClusterMesh>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = mesh
        .namespace()
        .ok_or_else(|| Error::NoNamespace(mesh.name_any()))?;
    let api = Api::<ClusterMesh>::namespaced(context.client.clone(), &namespace);
    finalizer(&api, CLEANUP_FINALIZER, mesh, |event| async {
        match event {
            finalizer::Event::Apply(mesh) => context.sync(&mesh).await,
            finalizer::Event::Cleanup(mesh) => context.cleanup(&mesh).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

fn error_policy(mesh: Arc<ClusterMesh>, error: &Error, context: Arc<Context>) -> Action {
    tracing::warn!(mesh = %ObjectRef::from_obj(mesh.as_ref()), %error, "reconcile failed");
    context
        .metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            error: error.metric_label(),
        })
        .inc();
    Action::requeue(Duration::from_secs(15))
}

/// What a pass read of a mesh's clusters: each entry's cluster as resolved,
/// and what the plan gets of it.
struct Observed {
    resolved: BTreeMap<String, Resolved>,
    observations: BTreeMap<String, Observation>,
}

impl Observed {
    /// A cluster whose watches have not listed it yet is neither known nor
    /// unreachable: the pass waits for it rather than report it as down.
    fn still_listing(&self) -> bool {
        self.observations.values().any(|o| {
            matches!(
                o,
                Observation::Unreachable {
                    cause: Unreachable::Syncing,
                    ..
                }
            )
        })
    }

    fn watched(&self, cluster: &str) -> Option<&Arc<WatchedCluster>> {
        match self.resolved.get(cluster) {
            Some(Resolved::Watched { cluster, .. }) => Some(cluster),
            _ => None,
        }
    }
}

impl Context {
    /// One pass over a live mesh: observe → plan (pure) → apply (handed to
    /// each cluster's writer) → report.
    async fn sync(&self, mesh: &ClusterMesh) -> Result<Action, Error> {
        self.fence.check().await?;
        let started = Instant::now();
        let mesh_ref = ObjectRef::from_obj(mesh);
        let labels = MeshLabels {
            mesh: mesh_ref.to_string(),
        };
        self.metrics.reconciles.get_or_create(&labels).inc();

        let observed = self.observe(mesh, &mesh_ref).await;
        if observed.still_listing() {
            tracing::debug!(mesh = %mesh_ref, "waiting for clusters to be listed");
            return Ok(Action::requeue(SYNC_WAIT));
        }
        let names = observed
            .resolved
            .keys()
            .filter_map(|name| observed.watched(name))
            .flat_map(|cluster| cluster.views.endpoint_names())
            .collect();
        let dns_answers = self.resolver.answers(&mesh_ref, names).await;
        let stage = self.metrics.stage_done("observe", started);
        // Passes of one mesh never overlap: its memory is taken for this one.
        let mut memory = self.meshes().remove(&mesh_ref).unwrap_or_default();
        let plan = memory.planner.plan(
            &mesh.spec,
            &observe::identity(mesh),
            &self.plan_settings(dns_answers),
            &observed.observations,
        );
        self.meshes().insert(mesh_ref.clone(), memory);
        let stage = self.metrics.stage_done("plan", stage);
        self.apply(&mesh_ref, &observed, &plan.writes);
        let stage = self.metrics.stage_done("apply", stage);
        let cleaning = self.clean_removed_clusters(mesh, &mesh_ref).await?;
        let (status, deferred) = self
            .report(mesh, &mesh_ref, &observed, &plan, &cleaning, &labels)
            .await?;
        self.metrics.stage_done("report", stage);
        self.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        let next = self.next_pass(&status, !cleaning.is_empty());
        // Writes handed over, or still being sent: a pass reports how they
        // landed (each cluster's lastSyncTime).
        let writing =
            plan.writes.values().any(|writes| !writes.is_empty()) || self.writers.busy(&mesh_ref);
        let sooner = [
            until_recheck(plan.recheck_at),
            deferred,
            writing.then_some(STATUS_PACE),
        ];
        Ok(Action::requeue(
            sooner.into_iter().flatten().fold(next, Duration::min),
        ))
    }

    /// Observe: resolves every entry to its watched cluster (started if new),
    /// stops watching and writing what the mesh no longer uses, and reads
    /// each cluster's caches.
    async fn observe(&self, mesh: &ClusterMesh, mesh_ref: &ObjectRef<ClusterMesh>) -> Observed {
        let namespace = mesh.namespace().unwrap_or_default();
        let mut resolved = BTreeMap::new();
        for entry in &mesh.spec.clusters {
            let reads = match mesh.spec.writes_on(entry) {
                true => Reads::NodesAndPeers,
                false => Reads::Nodes,
            };
            let resolved_entry = self.resolve(entry, reads, &namespace).await;
            resolved.insert(entry.name.clone(), resolved_entry);
        }
        let observed = Observed {
            observations: resolved
                .iter()
                .map(|(name, r)| (name.clone(), observe::observation(r)))
                .collect(),
            resolved,
        };
        let sources: BTreeSet<ClusterSource> = observed
            .resolved
            .keys()
            .filter_map(|name| observed.watched(name))
            .map(|cluster| cluster.source.clone())
            .collect();
        self.registry.set_used(mesh_ref.clone(), sources);
        self.writers.retain(mesh_ref, |cluster, source| {
            observed
                .watched(cluster)
                .is_some_and(|watched| &watched.source == source)
        });
        observed
    }

    /// Apply: hands each cluster its writes. Its writer sends them on its
    /// own (`writer.rs`), so no cluster waits for another.
    fn apply(
        &self,
        mesh_ref: &ObjectRef<ClusterMesh>,
        observed: &Observed,
        writes: &BTreeMap<String, mesh::ClusterWrites>,
    ) {
        for (cluster, writes) in writes {
            if let Some(watched) = observed.watched(cluster) {
                self.writers
                    .submit(mesh_ref, cluster, watched, writes.clone());
            }
        }
    }

    /// When to look at the mesh again without a change: soon while a removed
    /// cluster is being cleaned, every minute while a cluster is unreachable,
    /// else every 10 minutes; sooner when a token enters its warning window.
    fn next_pass(&self, status: &ClusterMeshStatus, cleaning_removed: bool) -> Duration {
        let all_reachable = status.clusters.iter().all(|c| c.reachable);
        let resync = match (cleaning_removed, all_reachable) {
            (true, _) => REMOVED_CLEANUP_RETRY,
            (false, true) => Duration::from_secs(600),
            (false, false) => Duration::from_secs(60),
        };
        let expiry_check = report::until_expiry_warning(
            status,
            Timestamp::now(),
            self.settings.credentials_expiry_warning,
        );
        expiry_check.map_or(resync, |d| d.min(resync))
    }

    fn meshes(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<ClusterMesh>, Memory>> {
        crate::lock(&self.meshes)
    }

    fn plan_settings(&self, dns_answers: mesh::DnsAnswers) -> mesh::Settings {
        let grace = i64::try_from(self.settings.check_in_grace.as_secs()).unwrap_or(i64::MAX);
        mesh::Settings {
            default_persistent_keepalive: Some(self.settings.default_persistent_keepalive)
                .filter(|k| *k > 0),
            advertise_internal_ips: self.settings.advertise_internal_ips,
            liveness: Some(mesh::Liveness {
                now: Timestamp::now().as_second(),
                stale_after_seconds: mesh::KILO_READY_WITHIN_SECONDS.saturating_add(grace),
            }),
            endpoint_dns: self.settings.endpoint_dns,
            dns_answers,
        }
    }

    /// The watched cluster behind an entry, started if new.
    async fn resolve(&self, entry: &ClusterEntry, reads: Reads, namespace: &str) -> Resolved {
        if entry.local {
            let cluster = self
                .registry
                .cluster(&ClusterSource::Local, reads, || self.client.clone());
            return Resolved::Watched {
                cluster,
                credentials_expire: None,
            };
        }
        let kubeconfig = match self.secret_kubeconfig(entry, namespace) {
            Ok(kubeconfig) => kubeconfig,
            Err(why) => return Resolved::Unusable(why),
        };
        let credentials_expire = kubeconfig::token_expiry(&kubeconfig.yaml);
        if let Some(cluster) = self.registry.get(&kubeconfig.source, reads) {
            return Resolved::Watched {
                cluster,
                credentials_expire,
            };
        }
        match self.secret_client(&kubeconfig).await {
            Ok(client) => Resolved::Watched {
                cluster: self.registry.cluster(&kubeconfig.source, reads, || client),
                credentials_expire,
            },
            Err(why) => Resolved::Unusable(why),
        }
    }

    /// The kubeconfig in a remote entry's Secret.
    fn secret_kubeconfig(
        &self,
        entry: &ClusterEntry,
        namespace: &str,
    ) -> Result<SecretKubeconfig, String> {
        let Some(reference) = &entry.kubeconfig_secret_ref else {
            return Err(
                "spec.clusters[].kubeconfigSecretRef is required for a remote cluster".into(),
            );
        };
        let secret = self
            .secrets
            .get(&ObjectRef::new(&reference.name).within(namespace));
        let Some(secret) = secret else {
            return Err(format!(
                "Secret {namespace}/{} not found; create it with `kilo-clustermesh-operator connect`",
                reference.name
            ));
        };
        let Some(yaml) = secret
            .data
            .as_ref()
            .and_then(|data| data.get(&reference.key))
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
        else {
            return Err(format!(
                "Secret {namespace}/{} has no key {:?} holding a kubeconfig",
                reference.name, reference.key
            ));
        };
        Ok(SecretKubeconfig {
            source: ClusterSource::Secret {
                namespace: namespace.to_owned(),
                name: reference.name.clone(),
                key: reference.key.clone(),
                resource_version: secret.resource_version().unwrap_or_default(),
            },
            describe: format!(
                "kubeconfig in Secret {namespace}/{} key {:?}",
                reference.name, reference.key
            ),
            label: format!("{namespace}/{}", reference.name),
            yaml,
        })
    }

    /// A client for a Secret's kubeconfig, refused unless the policy allows it.
    async fn secret_client(&self, kubeconfig: &SecretKubeconfig) -> Result<Client, String> {
        let describe = |error: KubeconfigError| format!("{}: {error}", kubeconfig.describe);
        let config = kubeconfig::client_config(&kubeconfig.yaml, self.settings.kubeconfig_policy)
            .await
            .map_err(describe)?;
        client::build(
            config,
            self.settings.limits,
            &self.metrics.kube_requests,
            &kubeconfig.label,
        )
        .map_err(|error| describe(KubeconfigError::Client(error.to_string())))
    }

    /// A client for any entry, old or current, without watching it.
    async fn entry_client(&self, entry: &ClusterEntry, namespace: &str) -> Result<Client, String> {
        if entry.local {
            return Ok(self.client.clone());
        }
        let kubeconfig = self.secret_kubeconfig(entry, namespace)?;
        match self.registry.get(&kubeconfig.source, Reads::Nodes) {
            Some(cluster) => Ok(cluster.client.clone()),
            None => self.secret_client(&kubeconfig).await,
        }
    }

    /// Removes this mesh's Peers from the clusters removed from its spec
    /// (`removed.rs`), in the background, and remembers the clusters of the
    /// spec. Returns the removed clusters still to be cleaned.
    async fn clean_removed_clusters(
        &self,
        mesh: &ClusterMesh,
        mesh_ref: &ObjectRef<ClusterMesh>,
    ) -> Result<Vec<removed::Pending>, Error> {
        let namespace = mesh.namespace().unwrap_or_default();
        let now = Timestamp::now().as_second();
        let (current, pending) = removed::bookkeeping(&mesh.spec.clusters, mesh.annotations(), now);
        let selector = observe::identity(mesh).selector();
        let mut still_pending = Vec::new();
        let mut reported = Vec::new();
        // A cluster this mesh only read holds none of its Peers.
        let pending = pending
            .into_iter()
            .filter(|removed| mesh.spec.writes_on(&removed.cluster.entry()));
        for removed in pending {
            let name = removed.cluster.name.clone();
            let purge = match self
                .entry_client(&removed.cluster.entry(), &namespace)
                .await
            {
                Ok(client) => self
                    .writers
                    .purge(mesh_ref, &name, client, selector.clone()),
                Err(why) => Purge::Failed(why),
            };
            let waited = Duration::from_secs(u64::try_from(now - removed.since).unwrap_or(0));
            let (type_, reason, note) = match purge {
                Purge::Done(count) => (
                    EventType::Normal,
                    "RemovedClusterCleaned",
                    format!(
                        "cluster {name} left the mesh: its {count} Peers of this mesh there were removed"
                    ),
                ),
                Purge::Failed(why) if waited >= self.settings.cleanup_timeout => (
                    EventType::Warning,
                    "CleanupGivenUp",
                    format!(
                        "cluster {name} left the mesh, but the Peers of this mesh there could not be removed \
                         ({why}); delete them there with `kubectl delete peers -l {selector}`"
                    ),
                ),
                Purge::Failed(why)
                | Purge::Running {
                    last_failure: Some(why),
                } => {
                    tracing::warn!(cluster = %name, %why, "cleaning a removed cluster failed; will retry");
                    reported.push(removed::Pending {
                        name,
                        since: removed.since,
                        why: Some(why),
                    });
                    still_pending.push(removed);
                    continue;
                }
                Purge::Running { last_failure: None } => {
                    reported.push(removed::Pending {
                        name,
                        since: removed.since,
                        why: None,
                    });
                    still_pending.push(removed);
                    continue;
                }
            };
            self.publish(mesh, type_, reason, note, "Cleanup").await;
        }
        let wanted = removed::annotations(&current, &still_pending);
        let stored = mesh.annotations();
        if wanted
            .iter()
            .any(|(key, value)| stored.get(*key) != value.as_ref())
        {
            let patch = serde_json::json!({ "metadata": { "annotations": wanted } });
            Api::<ClusterMesh>::namespaced(self.client.clone(), &namespace)
                .patch(
                    &mesh.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|source| Error::Annotations {
                    mesh: ObjectRef::from_obj(mesh).to_string(),
                    source,
                })?;
        }
        Ok(reported)
    }

    /// Publishes an Event about `mesh`; a failure is only logged.
    async fn publish(
        &self,
        mesh: &ClusterMesh,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &mesh.object_ref(&())).await {
            tracing::warn!(%error, "publishing an Event failed");
        }
    }

    /// Report: the status, from the plan's report, each cluster's health and
    /// what its writer did; the Events of what changed, and the metrics.
    /// Returns the status, and when to write it if it waits (see
    /// [`STATUS_PACE`]).
    async fn report(
        &self,
        mesh: &ClusterMesh,
        mesh_ref: &ObjectRef<ClusterMesh>,
        observed: &Observed,
        plan: &mesh::Plan,
        cleaning: &[removed::Pending],
        labels: &MeshLabels,
    ) -> Result<(ClusterMeshStatus, Option<Duration>), Error> {
        self.metrics
            .cidr_conflicts
            .get_or_create(labels)
            .set(plan.report.conflicts.len() as i64);
        let health = observed
            .resolved
            .iter()
            .map(|(name, resolved)| {
                let writes = observed
                    .watched(name)
                    .map(|watched| self.writers.outcome(mesh_ref, name, &watched.source));
                (
                    name.clone(),
                    observe::health(resolved, writes.unwrap_or_default()),
                )
            })
            .collect::<BTreeMap<_, _>>();
        let previous = mesh.status.clone().unwrap_or_default();
        let status = report::status(
            mesh,
            plan,
            &health,
            removed::condition(cleaning, self.settings.cleanup_timeout),
            &previous,
            &report::now(),
            self.settings.credentials_expiry_warning,
        );
        let deferred = self
            .publish_status(mesh, mesh_ref, &previous, &status, labels)
            .await?;
        Ok((status, deferred))
    }

    /// Writes the status when it changed, publishes the Events of what
    /// changed, and updates the metrics. A change that can wait (see
    /// [`STATUS_PACE`]) is not written yet: returns how long it waits.
    async fn publish_status(
        &self,
        mesh: &ClusterMesh,
        mesh_ref: &ObjectRef<ClusterMesh>,
        previous: &ClusterMeshStatus,
        status: &ClusterMeshStatus,
        labels: &MeshLabels,
    ) -> Result<Option<Duration>, Error> {
        for cluster in &status.clusters {
            let labels = ClusterLabels {
                mesh: labels.mesh.clone(),
                cluster: cluster.name.clone(),
            };
            self.metrics
                .cluster_reachable
                .get_or_create(&labels)
                .set(i64::from(cluster.reachable));
            self.metrics
                .cluster_peers
                .get_or_create(&labels)
                .set(i64::from(cluster.registered_peers));
            self.metrics
                .cluster_skipped_nodes
                .get_or_create(&labels)
                .set(i64::from(cluster.skipped_nodes));
        }
        if status == previous {
            return Ok(None);
        }
        let written = self
            .meshes()
            .get(mesh_ref)
            .and_then(|memory| memory.status_written);
        let wait = written.map_or(Duration::ZERO, |at| {
            STATUS_PACE.saturating_sub(at.elapsed())
        });
        if !wait.is_zero() && report::may_wait(previous, status) {
            return Ok(Some(wait));
        }
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Ready.as_str());
        tracing::info!(
            mesh = %labels.mesh,
            ready = ready.map(|c| c.status.as_str()),
            reason = ready.map(|c| c.reason.as_str()),
            message = ready.map(|c| c.message.as_str()),
            "status changed"
        );
        let name = mesh.name_any();
        let api = Api::<ClusterMesh>::namespaced(
            self.client.clone(),
            &mesh.namespace().unwrap_or_default(),
        );
        let patch = serde_json::json!({
            "apiVersion": ClusterMesh::api_version(&()),
            "kind": ClusterMesh::kind(&()),
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::Status {
            mesh: labels.mesh.clone(),
            source,
        })?;
        if let Some(memory) = self.meshes().get_mut(mesh_ref) {
            memory.status_written = Some(Instant::now());
        }
        let reference = mesh.object_ref(&());
        for event in mesh::transitions(previous, status) {
            let event = KubeEvent {
                type_: if event.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: event.reason,
                note: Some(event.message),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, &reference).await {
                tracing::warn!(%error, "publishing an Event failed");
            }
        }
        Ok(None)
    }

    /// Removes this mesh's Peers from every cluster that can be reached. A
    /// cluster whose credentials are gone is given up at once, an unreachable
    /// one after `cleanup_timeout`; both with a Warning Event saying which
    /// Peers to delete by hand.
    async fn cleanup(&self, mesh: &ClusterMesh) -> Result<Action, Error> {
        self.fence.check().await?;
        let mesh_ref = ObjectRef::from_obj(mesh);
        self.meshes().remove(&mesh_ref);
        // Nothing the mesh's writers still send may land after the removal.
        self.writers.stop(&mesh_ref).await;
        let on_delete = match apply::OnDelete::parse(
            mesh.annotations()
                .get(mesh::PEERS_ON_DELETE_ANNOTATION)
                .map(String::as_str),
        ) {
            Ok(on_delete) => on_delete,
            Err(why) => {
                self.publish(
                    mesh,
                    EventType::Warning,
                    "CleanupRefused",
                    why.clone(),
                    "Cleanup",
                )
                .await;
                return Err(Error::CleanupPolicy {
                    mesh: mesh_ref.to_string(),
                    why,
                });
            }
        };
        let namespace = mesh.namespace().unwrap_or_default();
        let selector = observe::identity(mesh).selector();
        let deleting_for = mesh
            .meta()
            .deletion_timestamp
            .as_ref()
            .map(|t| Timestamp::now().duration_since(t.0).unsigned_abs())
            .unwrap_or_default();
        let mut failed = Vec::new();
        let mut given_up = Vec::new();
        let now = Timestamp::now().as_second();
        let (_, removed) = removed::bookkeeping(&mesh.spec.clusters, mesh.annotations(), now);
        let removed = removed.iter().map(|r| r.cluster.entry());
        let written = mesh.spec.clusters.iter().cloned().chain(removed);
        for entry in written.filter(|entry| mesh.spec.writes_on(entry)) {
            let client = match self.entry_client(&entry, &namespace).await {
                Ok(client) => client,
                Err(why) => {
                    given_up.push(format!("{} ({why})", entry.name));
                    continue;
                }
            };
            match apply::remove_labelled_peers(
                &client,
                &entry.name,
                &selector,
                on_delete,
                self.settings.write_concurrency,
            )
            .await
            {
                Ok(_) => {}
                Err(error) if deleting_for >= self.settings.cleanup_timeout => {
                    given_up.push(format!("{} ({error})", entry.name));
                }
                Err(error) => {
                    tracing::warn!(%error, "cleanup failed; will retry");
                    failed.push(entry.name.clone());
                }
            }
        }
        if !failed.is_empty() {
            return Err(Error::Cleanup {
                mesh: mesh_ref.to_string(),
                clusters: failed.join(", "),
            });
        }
        for cluster in given_up {
            let note = format!(
                "Peers of this mesh on cluster {cluster} could not be removed; delete them there with \
                 `kubectl delete peers -l {selector}`"
            );
            self.publish(mesh, EventType::Warning, "CleanupGivenUp", note, "Cleanup")
                .await;
        }
        self.registry.set_used(mesh_ref, BTreeSet::new());
        Ok(Action::await_change())
    }
}
