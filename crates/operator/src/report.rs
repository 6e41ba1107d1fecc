//! Report: the status a pass writes, with its times.

use std::{collections::BTreeMap, time::Duration};

use api::{ClusterMesh, ClusterMeshStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use mesh::{ConditionType, FailingWrites, MeshCondition, Plan};

use crate::observe::ClusterHealth;

/// The status of `mesh` after a pass: the plan's counts and conditions, plus
/// `observedGeneration` and the times. A time is carried over from
/// `previous` unless what it dates changed, so an unchanged mesh gets an
/// unchanged status and no write.
pub fn status(
    mesh: &ClusterMesh,
    plan: &Plan,
    health: &BTreeMap<String, ClusterHealth>,
    cleanup: MeshCondition,
    previous: &ClusterMeshStatus,
    now: &Time,
    expiry_warning: Duration,
) -> ClusterMeshStatus {
    let generation = mesh.metadata.generation;
    // A cluster that cannot be read is not written either: it is reported
    // as unreachable, not as failing writes.
    let failing_writes: FailingWrites = plan
        .report
        .clusters
        .iter()
        .filter(|c| c.unreachable.is_none())
        .filter_map(|c| {
            let why = health.get(&c.name)?.writes.failing.clone()?;
            Some((c.name.clone(), why))
        })
        .collect();
    let mut status = mesh::status(&plan.report, &failing_writes);
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
        let became_reachable = cluster.reachable && before.is_none_or(|b| !b.reachable);
        let written = health.writes.last_written.as_ref().map(whole_seconds);
        cluster.last_sync_time = if became_reachable {
            Some(now.clone())
        } else {
            [before.and_then(|b| b.last_sync_time.clone()), written]
                .into_iter()
                .flatten()
                .max_by_key(|t| t.0)
        };
        cluster.credentials_expire = health.credentials_expire;
    }
    let mut conditions = mesh::conditions(&plan.report, &failing_writes);
    // Ready stays last; neither warning makes the mesh not Ready.
    let ready_at = conditions.len().saturating_sub(1);
    conditions.splice(
        ready_at..ready_at,
        [
            credentials_expiring(&status.clusters, now, expiry_warning),
            cleanup,
        ],
    );
    status.conditions = conditions
        .into_iter()
        .map(|condition| {
            let value = if condition.status { "True" } else { "False" };
            let before = previous
                .conditions
                .iter()
                .find(|c| c.type_ == condition.type_.as_str());
            let since = match before {
                Some(b) if b.status == value => b.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: condition.type_.to_string(),
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

/// Now, in whole seconds: the API keeps whole seconds, and so does the
/// status, or it would never compare equal to what was read back.
pub fn now() -> Time {
    whole_seconds(&Time(Timestamp::now()))
}

/// Whether `status` can wait to be written in place of `previous`: it is of
/// the same generation, and every condition keeps its state and reason
/// (what alerts, `kubectl wait` and GitOps tools read); only counts, times
/// and messages differ.
pub fn may_wait(previous: &ClusterMeshStatus, status: &ClusterMeshStatus) -> bool {
    let states = |status: &ClusterMeshStatus| -> Vec<(String, String, String)> {
        let conditions = status.conditions.iter();
        conditions
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    };
    previous.observed_generation == status.observed_generation && states(previous) == states(status)
}

fn whole_seconds(time: &Time) -> Time {
    Time(Timestamp::from_second(time.0.as_second()).unwrap_or(time.0))
}

/// `CredentialsExpiring`: True while some cluster's token expires within
/// `window` of `now` (or has expired). The message gives absolute times only,
/// so it changes when a token does, not as the clock runs.
fn credentials_expiring(
    clusters: &[api::ClusterStatus],
    now: &Time,
    window: Duration,
) -> MeshCondition {
    let horizon = now.0 + SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX);
    let expiring: Vec<String> = clusters
        .iter()
        .filter_map(|c| {
            let expiry = c.credentials_expire.as_ref()?.0;
            (expiry <= horizon).then(|| {
                let verb = if expiry <= now.0 { "expired" } else { "expires" };
                format!(
                    "cluster {}: its token {verb} at {expiry}; run `kilo-clustermesh-operator connect --name {}` again to rotate it",
                    c.name, c.name
                )
            })
        })
        .collect();
    MeshCondition::listing(
        ConditionType::CredentialsExpiring,
        &expiring,
        "CredentialsValid",
    )
}

/// How long until some cluster's token enters the warning window, so the
/// mesh is looked at again then. `None` when no token will.
pub fn until_expiry_warning(
    status: &ClusterMeshStatus,
    now: Timestamp,
    window: Duration,
) -> Option<Duration> {
    let window = SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX);
    status
        .clusters
        .iter()
        .filter_map(|c| c.credentials_expire.as_ref())
        .map(|t| t.0.duration_since(now).saturating_sub(window))
        .filter(|left| left.is_positive())
        .min()
        .and_then(|left| Duration::try_from(left).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, expires: Option<i64>) -> api::ClusterStatus {
        api::ClusterStatus {
            name: name.into(),
            credentials_expire: expires.map(|s| Time(Timestamp::from_second(s).unwrap())),
            ..Default::default()
        }
    }

    #[test]
    fn tokens_near_or_past_expiry_are_warned_about_with_absolute_times() {
        let now = Time(Timestamp::from_second(1_000_000).unwrap());
        let day = 86_400;
        let window = Duration::from_secs(14 * day as u64);
        let clusters = [
            cluster("a", None),
            cluster("b", Some(1_000_000 + 30 * day)),
            cluster("c", Some(1_000_000 + 3 * day)),
            cluster("d", Some(1_000_000 - 1)),
        ];
        let condition = credentials_expiring(&clusters, &now, window);
        assert!(condition.status);
        assert!(
            !condition.message.contains("cluster b"),
            "{}",
            condition.message
        );
        assert!(
            condition
                .message
                .contains("cluster c: its token expires at 1970-01-"),
            "{}",
            condition.message
        );
        assert!(
            condition
                .message
                .contains("cluster d: its token expired at"),
            "{}",
            condition.message
        );
        assert!(!credentials_expiring(&clusters[..2], &now, window).status);

        let status = ClusterMeshStatus {
            clusters: clusters[..2].to_vec(),
            ..Default::default()
        };
        assert_eq!(
            until_expiry_warning(&status, now.0, window),
            Some(Duration::from_secs(16 * day as u64))
        );
        assert_eq!(
            until_expiry_warning(&ClusterMeshStatus::default(), now.0, window),
            None
        );
    }

    #[test]
    fn only_counts_times_and_messages_may_wait_to_be_written() {
        let condition = |status: &str, reason: &str, message: &str| Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        };
        let status = |generation, nodes, ready: Condition| ClusterMeshStatus {
            observed_generation: Some(generation),
            clusters: vec![api::ClusterStatus {
                nodes,
                ..cluster("a", None)
            }],
            conditions: vec![ready],
            ..ClusterMeshStatus::default()
        };
        let before = status(
            1,
            20,
            condition("True", "Meshed", "2 clusters meshed, 20 nodes"),
        );
        let more = status(
            1,
            21,
            condition("True", "Meshed", "2 clusters meshed, 21 nodes"),
        );
        assert!(may_wait(&before, &more));
        let turned = status(1, 21, condition("False", "ClustersUnreachable", "b"));
        assert!(!may_wait(&before, &turned));
        let new_spec = status(
            2,
            20,
            condition("True", "Meshed", "2 clusters meshed, 20 nodes"),
        );
        assert!(!may_wait(&before, &new_spec));
    }
}
