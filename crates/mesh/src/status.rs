//! The status a report gives: counts per cluster and the conditions, without
//! times (the controller adds those).

use std::collections::BTreeMap;

use api::{ClusterMeshStatus, ClusterStatus, PeerWriter, SkippedNode as SkippedNodeStatus};

use crate::{
    condition::ConditionType,
    observe::Unreachable,
    plan::{ClusterWriter, PeerConflict, Report},
    writers::Writer,
};

/// Most skipped nodes listed per cluster in the status.
pub const SKIPPED_LISTED: usize = 20;

/// A condition without its times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshCondition {
    pub type_: ConditionType,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl MeshCondition {
    /// A condition that is True while `items` lists something: then its
    /// reason is its type and its message the items; else `ok_reason`.
    pub fn listing(type_: ConditionType, items: &[String], ok_reason: &str) -> Self {
        Self {
            type_,
            status: !items.is_empty(),
            reason: if items.is_empty() {
                ok_reason.to_owned()
            } else {
                type_.to_string()
            },
            message: items.join("; "),
        }
    }
}

/// Per cluster: why its Peer writes fail, while they do.
pub type FailingWrites = BTreeMap<String, String>;

/// Counts per cluster and in total. Times, `observedGeneration` and
/// conditions are left for the controller to fill.
pub fn status(report: &Report, failing_writes: &FailingWrites) -> ClusterMeshStatus {
    let clusters: Vec<ClusterStatus> = report
        .clusters
        .iter()
        .map(|c| ClusterStatus {
            name: c.name.clone(),
            nodes: count(c.nodes),
            registered_peers: count(c.registered_peers),
            skipped_nodes: count(c.skipped.len()),
            anchor_node: c.anchor.clone(),
            reachable: c.unreachable.is_none(),
            message: c.unreachable.as_ref().map(describe).or_else(|| {
                failing_writes
                    .get(&c.name)
                    .map(|why| describe_failing_writes(why))
                    .or_else(|| {
                        (c.writer == ClusterWriter::OwnOperatorTookOver).then(|| TOOK_OVER.into())
                    })
                    .or_else(|| {
                        let back = c.peered_back.filter(|back| back.peered < back.of)?;
                        Some(format!(
                            "its own operator has peered {} of the local cluster's {} peered nodes \
                             there; it and the others cannot reach each other until it does (is \
                             its operator running, and may it read this cluster's nodes?)",
                            back.peered, back.of
                        ))
                    })
            }),
            skipped: c
                .skipped
                .iter()
                .take(SKIPPED_LISTED)
                .map(|s| SkippedNodeStatus {
                    name: s.name.clone(),
                    reason: s.reason.reason().to_owned(),
                    message: s.reason.message(&c.name, &s.name),
                })
                .collect(),
            peered_back: c.peered_back.map(|back| count(back.peered)),
            peer_writer: Some(match c.writer {
                ClusterWriter::ThisOperator => PeerWriter::ThisOperator,
                ClusterWriter::OwnOperator | ClusterWriter::OwnOperatorTookOver => {
                    PeerWriter::OwnOperator
                }
            }),
            ..ClusterStatus::default()
        })
        .collect();
    ClusterMeshStatus {
        cluster_count: count(clusters.len()),
        registered_peers: clusters.iter().map(|c| c.registered_peers).sum(),
        skipped_nodes: clusters.iter().map(|c| c.skipped_nodes).sum(),
        clusters,
        ..ClusterMeshStatus::default()
    }
}

/// The message of a hub's cluster whose own operator took its Peers over.
const TOOK_OVER: &str = "the cluster's own operator of this mesh took its Peers over and keeps \
    them; this operator only reads it now (to finish moving to a decentralized mesh, set \
    spec.peerPlacement: LocalCluster here; docs/topologies.md)";

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn describe(cause: &Unreachable) -> String {
    match cause {
        Unreachable::Credentials(why) => format!("credentials: {why}"),
        Unreachable::Connection(why) => format!("unreachable, last known Peers kept: {why}"),
        Unreachable::Syncing => "not listed yet".to_owned(),
    }
}

/// A Peer in the mesh's way, naming both writers and what to do.
fn peer_conflict(conflict: &PeerConflict, local: &str) -> String {
    let PeerConflict {
        cluster,
        peer,
        writer,
    } = conflict;
    let this = format!("this mesh, written from cluster {local}");
    match writer {
        Writer::Sibling(from) => format!(
            "Peer {peer} on cluster {cluster} is written by this mesh's operator on cluster {from} \
             as well as by {this}: two hubs of one mesh; set spec.peerPlacement: LocalCluster on \
             one of them"
        ),
        Writer::OtherMesh {
            mesh,
            cluster: Some(from),
        } => format!(
            "Peer {peer} on cluster {cluster} is written by mesh {mesh}, from cluster {from}, and \
             wanted by {this}: only one mesh may write a cluster's Peers for a node; take cluster \
             {cluster} out of one of them"
        ),
        Writer::OtherMesh {
            mesh,
            cluster: None,
        } => format!(
            "Peer {peer} on cluster {cluster} is written by mesh {mesh} of another \
             kilo-clustermesh-operator, and wanted by {this}: only one mesh may write a cluster's \
             Peers for a node; take cluster {cluster} out of one of them"
        ),
        Writer::This | Writer::Released | Writer::Unmanaged => format!(
            "Peer {peer} on cluster {cluster} exists and was not written by a \
             kilo-clustermesh-operator; rename or delete it"
        ),
    }
}

fn describe_failing_writes(why: &str) -> String {
    format!("writing its Peers fails, retrying: {why}")
}

/// The conditions, `Ready` last. Each problem condition is True when there
/// is such a problem and names it.
pub fn conditions(report: &Report, failing_writes: &FailingWrites) -> Vec<MeshCondition> {
    let clusters_where = |pick: fn(&Unreachable) -> bool| -> Vec<String> {
        report
            .clusters
            .iter()
            .filter_map(|c| {
                c.unreachable
                    .as_ref()
                    .filter(|u| pick(u))
                    .map(|u| format!("cluster {}: {}", c.name, describe(u)))
            })
            .collect()
    };
    let problems = [
        (
            ConditionType::InvalidSpec,
            report
                .spec_errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            "no Peer is changed until the spec is fixed",
        ),
        (
            ConditionType::CredentialsInvalid,
            clusters_where(|u| matches!(u, Unreachable::Credentials(_))),
            "their Peers are kept as they are",
        ),
        (
            ConditionType::ClustersUnreachable,
            clusters_where(|u| !matches!(u, Unreachable::Credentials(_))),
            "their Peers are kept as they are",
        ),
        (
            ConditionType::PeerWritesFailing,
            failing_writes
                .iter()
                .map(|(cluster, why)| format!("cluster {cluster}: {why}"))
                .collect(),
            "they are retried, backing off up to 30 s; the other clusters are written meanwhile",
        ),
        (
            ConditionType::CIDRConflict,
            report.conflicts.iter().map(ToString::to_string).collect(),
            "give each cluster its own ranges",
        ),
        (
            ConditionType::PeerConflict,
            report
                .peer_conflicts
                .iter()
                .map(|p| peer_conflict(p, &report.local_cluster))
                .collect(),
            "neither writer touches the other's Peer",
        ),
    ];
    let listing = |(type_, items, consequence): (ConditionType, Vec<String>, &str)| {
        if items.is_empty() {
            MeshCondition {
                type_,
                status: false,
                reason: format!("No{type_}"),
                message: String::new(),
            }
        } else {
            MeshCondition {
                type_,
                status: true,
                reason: type_.to_string(),
                message: format!("{}; {consequence}", items.join("; ")),
            }
        }
    };
    let mut conditions: Vec<MeshCondition> = problems.into_iter().map(listing).collect();
    let skipped: Vec<String> = report
        .clusters
        .iter()
        .flat_map(|c| {
            c.skipped
                .iter()
                .map(move |s| format!("{}/{}: {}", c.name, s.name, s.reason.reason()))
        })
        .collect();
    conditions.push(MeshCondition {
        type_: ConditionType::NodesSkipped,
        status: !skipped.is_empty(),
        reason: if skipped.is_empty() {
            "AllNodesEligible".into()
        } else {
            "NodesSkipped".into()
        },
        message: match skipped.len() {
            0 => String::new(),
            n if n <= 10 => format!(
                "{n} nodes not peered: {}; see status.clusters[].skipped",
                skipped.join(", ")
            ),
            n => format!(
                "{n} nodes not peered, first: {}; see status.clusters[].skipped",
                skipped[..10].join(", ")
            ),
        },
    });
    conditions.push(listing((
        ConditionType::EndpointsUnresolvable,
        report.unresolvable_endpoints.clone(),
        "with --endpoint-dns=keep, kg fails its whole configuration on every cluster that cannot resolve one of them; \
         with resolve (the default), their Peers keep the last address found",
    )));
    let blocking = conditions
        .iter()
        .find(|c| c.status && c.type_.blocks_ready())
        .cloned();
    let peers: usize = report.clusters.iter().map(|c| c.registered_peers).sum();
    conditions.push(match blocking {
        Some(problem) => MeshCondition {
            type_: ConditionType::Ready,
            status: false,
            reason: problem.reason,
            message: problem.message,
        },
        None => MeshCondition {
            type_: ConditionType::Ready,
            status: true,
            reason: "Meshed".into(),
            message: format!(
                "{} clusters meshed, {peers} nodes peered",
                report.clusters.len()
            ),
        },
    });
    conditions
}
