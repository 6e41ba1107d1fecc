//! Prometheus metrics and the health endpoints, served on one address.
//!
//! Metric names are documented in `docs/metrics.md`; keep both in step.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of per-mesh metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MeshLabels {
    pub mesh: String,
}

/// Labels of per-cluster metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub mesh: String,
    pub cluster: String,
}

/// Labels of Peer writes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub cluster: String,
    /// `apply` or `delete`.
    pub op: &'static str,
}

/// Labels of requests sent to an API server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `local`, or the `namespace/name` of the Secret a remote's client came from.
    pub client: String,
    /// `get` (also lists), `watch`, `create`, `patch`, `update`, `delete`.
    pub verb: &'static str,
}

/// Labels of the stages of a pass.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `observe`, `plan`, `apply` or `report`.
    pub stage: &'static str,
}

/// Labels of failures, by the error's `metric_label`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<MeshLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub stage_duration: Family<StageLabels, Histogram, fn() -> Histogram>,
    pub peer_writes: Family<WriteLabels, Counter>,
    pub peer_write_failures: Family<ClusterLabels, Counter>,
    pub cluster_reachable: Family<ClusterLabels, Gauge>,
    pub cluster_peers: Family<ClusterLabels, Gauge>,
    pub cluster_skipped_nodes: Family<ClusterLabels, Gauge>,
    pub cidr_conflicts: Family<MeshLabels, Gauge>,
    pub kube_requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kilo_clustermesh");
        let reconciles = Family::<MeshLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = pass_histogram();
        let stage_duration =
            Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                pass_histogram,
            );
        let peer_writes = Family::<WriteLabels, Counter>::default();
        let peer_write_failures = Family::<ClusterLabels, Counter>::default();
        let cluster_reachable = Family::<ClusterLabels, Gauge>::default();
        let cluster_peers = Family::<ClusterLabels, Gauge>::default();
        let cluster_skipped_nodes = Family::<ClusterLabels, Gauge>::default();
        let cidr_conflicts = Family::<MeshLabels, Gauge>::default();
        let kube_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconcile passes per mesh",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconcile passes by error",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            reconcile_duration.clone(),
        );
        registry.register(
            "stage_duration_seconds",
            "Time spent in each stage of reconcile passes",
            stage_duration.clone(),
        );
        registry.register(
            "peer_writes",
            "Peer applies and deletes sent, per target cluster",
            peer_writes.clone(),
        );
        registry.register(
            "peer_write_failures",
            "Batches of Peer writes that failed, per mesh and target cluster",
            peer_write_failures.clone(),
        );
        registry.register(
            "cluster_reachable",
            "1 when the cluster was read on the last attempt",
            cluster_reachable.clone(),
        );
        registry.register(
            "cluster_peers",
            "Peers of this cluster's nodes kept on the other clusters",
            cluster_peers.clone(),
        );
        registry.register(
            "cluster_skipped_nodes",
            "Nodes of this cluster that cannot be peered",
            cluster_skipped_nodes.clone(),
        );
        registry.register(
            "cidr_conflicts",
            "Overlapping CIDR pairs in the mesh's spec",
            cidr_conflicts.clone(),
        );
        registry.register(
            "kube_requests",
            "Requests sent to Kubernetes API servers, per client and verb",
            kube_requests.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            stage_duration,
            peer_writes,
            peer_write_failures,
            cluster_reachable,
            cluster_peers,
            cluster_skipped_nodes,
            cidr_conflicts,
            kube_requests,
        }
    }
}

/// Buckets for a pass or a stage of one: from a millisecond to a minute.
fn pass_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

impl Metrics {
    /// Records that `stage` of a pass took from `since` until now, and
    /// returns now, where the next stage starts.
    pub fn stage_done(&self, stage: &'static str, since: Instant) -> Instant {
        let now = Instant::now();
        self.stage_duration
            .get_or_create(&StageLabels { stage })
            .observe(now.duration_since(since).as_secs_f64());
        now
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Whether the operator is ready to serve: set once its caches have synced.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `/metrics`, `/healthz` (alive) and `/readyz` (caches synced).
pub fn router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
                    }
                }
            }),
        )
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_prefix_and_labels() {
        let metrics = Metrics::default();
        metrics
            .peer_writes
            .get_or_create(&WriteLabels {
                cluster: "cluster-b".into(),
                op: "apply",
            })
            .inc();
        let text = metrics.render();
        assert!(
            text.contains(
                "kilo_clustermesh_peer_writes_total{cluster=\"cluster-b\",op=\"apply\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("kilo_clustermesh_reconcile_duration_seconds"),
            "{text}"
        );
    }
}
