//! The operator: everything that talks to Kubernetes. What it does to the
//! mesh is decided by the pure `mesh` crate; this crate observes the
//! clusters, applies the plan and reports.

pub mod apply;
pub mod client;
pub mod clusters;
pub mod connect;
pub mod controller;
pub mod crd;
pub mod kubeconfig;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod probe;
pub mod rate_limit;
pub mod removed;
pub mod report;
pub mod resolver;
pub mod run;
pub mod status;
pub mod views;
pub mod writer;

/// Locks `mutex`, also after a panic elsewhere poisoned it: every value
/// behind one is whole between two statements.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
