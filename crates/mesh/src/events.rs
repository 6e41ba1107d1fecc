//! Events on transitions only: a state that stays the same from one pass to
//! the next says nothing new.

use std::collections::BTreeSet;

use api::ClusterMeshStatus;

use crate::condition::ConditionType;

/// An Event to publish on the ClusterMesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshEvent {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// The Events that tell what changed from `previous` to `next`.
pub fn transitions(previous: &ClusterMeshStatus, next: &ClusterMeshStatus) -> Vec<MeshEvent> {
    let mut events = Vec::new();
    let mut event = |warning: bool, reason: &str, message: String| {
        events.push(MeshEvent {
            warning,
            reason: reason.to_owned(),
            message,
        });
    };
    for cluster in &next.clusters {
        let before = previous.clusters.iter().find(|c| c.name == cluster.name);
        let was_reachable = before.is_none_or(|c| c.reachable);
        if was_reachable && !cluster.reachable {
            let why = cluster.message.clone().unwrap_or_default();
            event(
                true,
                "ClusterUnreachable",
                format!("cluster {}: {why}", cluster.name),
            );
        }
        if !was_reachable && cluster.reachable {
            event(
                false,
                "ClusterRecovered",
                format!("cluster {} is reachable again", cluster.name),
            );
        }
        let skipped_before: BTreeSet<(&str, &str)> = before
            .map(|c| {
                c.skipped
                    .iter()
                    .map(|s| (s.name.as_str(), s.reason.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let skipped_now: BTreeSet<(&str, &str)> = cluster
            .skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_str()))
            .collect();
        for skipped in &cluster.skipped {
            if !skipped_before.contains(&(skipped.name.as_str(), skipped.reason.as_str())) {
                event(true, "NodeSkipped", skipped.message.clone());
            }
        }
        let names_now: BTreeSet<&str> = skipped_now.iter().map(|(name, _)| *name).collect();
        for (name, _) in skipped_before
            .iter()
            .filter(|(name, _)| !names_now.contains(name))
        {
            event(
                false,
                "NodeRestored",
                format!(
                    "node {name} of cluster {} is no longer skipped",
                    cluster.name
                ),
            );
        }
    }
    for type_ in ConditionType::ALL.into_iter().filter(|t| t.told_as_event()) {
        let (was, message_before) = condition_true(previous, type_);
        let (is, message) = condition_true(next, type_);
        if is && (!was || message != message_before) {
            event(true, type_.as_str(), message.to_owned());
        }
        if was && !is {
            event(
                false,
                &format!("{type_}Resolved"),
                format!("{type_} resolved"),
            );
        }
    }
    events
}

/// Whether condition `type_` is True, and its message.
fn condition_true(status: &ClusterMeshStatus, type_: ConditionType) -> (bool, &str) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_.as_str())
        .map_or((false, ""), |c| (c.status == "True", c.message.as_str()))
}
