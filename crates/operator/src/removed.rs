//! Clusters removed from a mesh's spec. The plan takes their Peers off the
//! clusters that stay; the Peers the mesh wrote *on* a removed cluster are
//! removed here, as a deleted mesh's are, but for that cluster only.
//!
//! Once an entry is gone from the spec, nothing names its Secret any more,
//! so the operator remembers a mesh's clusters in an annotation of the
//! ClusterMesh, and the removed ones, with when they were removed, in
//! another, until their cleanup is done or given up.

use std::{collections::BTreeMap, time::Duration};

use api::{ClusterEntry, SecretKeyRef};
use k8s_openapi::jiff::Timestamp;
use mesh::{ConditionType, MeshCondition};
use serde::{Deserialize, Serialize};

/// The clusters of the spec at the last pass (JSON list of [`Remembered`]).
pub const CLUSTERS_ANNOTATION: &str = "kilo-clustermesh.io/clusters";
/// Removed clusters whose cleanup is pending (JSON list of [`Removed`]).
pub const REMOVED_ANNOTATION: &str = "kilo-clustermesh.io/removed-clusters";

/// What it takes to reach a cluster again: its name and where its
/// credentials are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Remembered {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,
}

impl Remembered {
    fn of(entry: &ClusterEntry) -> Self {
        Self {
            name: entry.name.clone(),
            local: entry.local,
            kubeconfig_secret_ref: entry.kubeconfig_secret_ref.clone(),
        }
    }

    /// An entry that reaches the cluster (its ranges are not needed to
    /// remove Peers).
    pub fn entry(&self) -> ClusterEntry {
        ClusterEntry {
            name: self.name.clone(),
            local: self.local,
            kubeconfig_secret_ref: self.kubeconfig_secret_ref.clone(),
            ..ClusterEntry::default()
        }
    }
}

/// A removed cluster whose Peers are still to be removed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    #[serde(flatten)]
    pub cluster: Remembered,
    /// Unix seconds of the pass that found it removed.
    pub since: i64,
}

/// The annotations' values after this pass: the clusters of the spec now,
/// and the removed ones still to clean (those pending before, less those
/// back in the spec, plus those gone from the spec since the last pass).
pub fn bookkeeping(
    clusters: &[ClusterEntry],
    annotations: &BTreeMap<String, String>,
    now: i64,
) -> (Vec<Remembered>, Vec<Removed>) {
    let current: Vec<Remembered> = clusters.iter().map(Remembered::of).collect();
    let in_spec = |name: &str| current.iter().any(|c| c.name == name);
    let read = |key: &str| annotations.get(key).map(String::as_str).unwrap_or("[]");
    let before: Vec<Remembered> =
        serde_json::from_str(read(CLUSTERS_ANNOTATION)).unwrap_or_default();
    let mut pending: Vec<Removed> =
        serde_json::from_str(read(REMOVED_ANNOTATION)).unwrap_or_default();
    pending.retain(|r| !in_spec(&r.cluster.name));
    for gone in before.into_iter().filter(|c| !in_spec(&c.name)) {
        if !pending.iter().any(|r| r.cluster.name == gone.name) {
            pending.push(Removed {
                cluster: gone,
                since: now,
            });
        }
    }
    (current, pending)
}

/// The annotation values to write for `current` and `pending` (`None`
/// removes the annotation).
pub fn annotations(
    current: &[Remembered],
    pending: &[Removed],
) -> BTreeMap<&'static str, Option<String>> {
    let json = |value: serde_json::Result<String>| value.unwrap_or_else(|_| "[]".into());
    BTreeMap::from([
        (
            CLUSTERS_ANNOTATION,
            Some(json(serde_json::to_string(current))),
        ),
        (
            REMOVED_ANNOTATION,
            (!pending.is_empty()).then(|| json(serde_json::to_string(pending))),
        ),
    ])
}

/// A removed cluster whose cleanup has not succeeded yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub name: String,
    /// Unix seconds of the pass that found it removed.
    pub since: i64,
    /// Why the last attempt failed, if one did.
    pub why: Option<String>,
}

/// `CleanupPending`: True while the Peers of this mesh on a removed cluster
/// are still there. A warning: the clusters that stay are meshed. The
/// message changes only when an attempt fails differently, not as the
/// clock runs.
pub fn condition(pending: &[Pending], timeout: Duration) -> MeshCondition {
    let at = |seconds: i64| {
        Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
    };
    let timeout = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
    let items: Vec<String> = pending
        .iter()
        .map(|p| {
            let why = p
                .why
                .as_ref()
                .map(|why| format!(" (last attempt: {why})"))
                .unwrap_or_default();
            format!(
                "cluster {} left the mesh at {}; this mesh's Peers there are not removed yet{why}; \
                 retried until {}, then given up with a CleanupGivenUp Event",
                p.name,
                at(p.since),
                at(p.since.saturating_add(timeout))
            )
        })
        .collect();
    MeshCondition::listing(ConditionType::CleanupPending, &items, "NoCleanupPending")
}

#[cfg(test)]
mod tests {
    use api::fixtures::cluster_entry as entry;

    use super::*;

    fn written(current: &[Remembered], pending: &[Removed]) -> BTreeMap<String, String> {
        annotations(current, pending)
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .collect()
    }

    #[test]
    fn a_cluster_gone_from_the_spec_is_pending_until_it_is_back() {
        let three = [
            entry("a", 1, true),
            entry("b", 2, false),
            entry("c", 3, false),
        ];
        let (current, pending) = bookkeeping(&three, &BTreeMap::new(), 100);
        assert!(pending.is_empty(), "nothing removed on the first pass");
        let stored = written(&current, &pending);
        assert!(!stored.contains_key(REMOVED_ANNOTATION));

        let (current, pending) = bookkeeping(&three[..2], &stored, 200);
        assert_eq!(pending.len(), 1);
        assert_eq!(
            pending[0].cluster.entry().kubeconfig_secret_ref,
            three[2].kubeconfig_secret_ref
        );
        assert_eq!(pending[0].since, 200);
        let stored = written(&current, &pending);

        let (_, still) = bookkeeping(&three[..2], &stored, 300);
        assert_eq!(still, pending, "the time it was removed is kept");
        let (_, back) = bookkeeping(&three, &stored, 300);
        assert!(back.is_empty(), "a cluster back in the spec is not cleaned");
    }

    #[test]
    fn unreadable_annotations_remember_nothing() {
        let annotations =
            BTreeMap::from([(CLUSTERS_ANNOTATION.to_owned(), "{not json".to_owned())]);
        let (current, pending) = bookkeeping(&[entry("a", 1, true)], &annotations, 1);
        assert_eq!(current.len(), 1);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_pending_cleanup_says_since_when_why_and_until_when() {
        let pending = [Pending {
            name: "c".into(),
            since: 1_700_000_000,
            why: Some("the API server did not answer within 10 s".into()),
        }];
        let condition = condition(&pending, Duration::from_secs(600));
        assert!(condition.status);
        assert_eq!(condition.type_, ConditionType::CleanupPending);
        assert_eq!(
            condition.message,
            "cluster c left the mesh at 2023-11-14T22:13:20Z; this mesh's Peers there are not \
             removed yet (last attempt: the API server did not answer within 10 s); retried until \
             2023-11-14T22:23:20Z, then given up with a CleanupGivenUp Event"
        );
        assert!(!super::condition(&[], Duration::from_secs(600)).status);
    }
}
