//! Report: the status a pass writes, with its times.

use std::collections::BTreeMap;

use api::{ClusterMesh, ClusterMeshStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use mesh::Plan;

use crate::observe::ClusterHealth;

/// The status of `mesh` after a pass: the plan's counts and conditions, plus
/// `observedGeneration` and the times. A time is carried over from
/// `previous` unless what it dates changed, so an unchanged mesh gets an
/// unchanged status and no write.
pub fn status(
    mesh: &ClusterMesh,
    plan: &Plan,
    health: &BTreeMap<String, ClusterHealth>,
    written: &BTreeMap<String, usize>,
    previous: &ClusterMeshStatus,
    now: &Time,
) -> ClusterMeshStatus {
    let generation = mesh.metadata.generation;
    let mut status = mesh::status(&plan.report);
    status.observed_generation = generation;
    for cluster in &mut status.clusters {
        let before = previous.clusters.iter().find(|c| c.name == cluster.name);
        let health = health.get(&cluster.name).cloned().unwrap_or_default();
        cluster.stale_since = if cluster.reachable {
            None
        } else {
            before
                .and_then(|b| b.stale_since.clone())
                .or(health.unreachable_since)
                .or_else(|| Some(now.clone()))
        };
        let synced_now = cluster.reachable
            && (written.get(&cluster.name).is_some_and(|n| *n > 0)
                || before.is_none_or(|b| !b.reachable));
        cluster.last_sync_time = if synced_now {
            Some(now.clone())
        } else {
            before.and_then(|b| b.last_sync_time.clone())
        };
        cluster.credentials_expire = health.credentials_expire;
    }
    status.conditions = mesh::conditions(&plan.report)
        .into_iter()
        .map(|condition| {
            let value = if condition.status { "True" } else { "False" };
            let before = previous
                .conditions
                .iter()
                .find(|c| c.type_ == condition.type_);
            let since = match before {
                Some(b) if b.status == value => b.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: condition.type_.to_owned(),
                status: value.to_owned(),
                reason: condition.reason,
                message: condition.message,
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect();
    status
}
