//! `plan`: from the spec and the observed clusters to the Peers every cluster
//! must hold and the writes that get them there.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, hash_map::Entry},
    sync::Arc,
};

use rustc_hash::{FxHashMap, FxHashSet};

use api::{ClusterMeshSpec, PeerPlacement, PeerSpec};
use ipnet::IpNet;

use crate::{
    anchor, cidr, claims,
    conflict::{self, Conflict},
    endpoint::{DnsAnswers, EndpointDns},
    identity::{
        ANCHOR_LABEL, CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MEMBERS_ANNOTATION,
        MESH_ANNOTATION, MESH_LABEL, MeshIdentity, NODE_ANNOTATION,
    },
    naming::peer_name,
    node::{self, EligibleNode, Granularity, Liveness, SkipReason},
    observe::{ClusterView, NodeView, Observation, ObservedPeer, Unreachable},
    segment,
    spec::{self, ClusterSpec, SpecError},
    writers::{Writer, Writers},
};

/// Operator-wide choices that shape Peers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// persistentKeepalive for nodes without the Kilo annotation.
    pub default_persistent_keepalive: Option<i32>,
    /// Route each node's internal IP when it lies in the cluster's
    /// additionalCIDRs.
    pub advertise_internal_ips: bool,
    /// Take nodes whose Kilo agent stopped checking in out of the mesh;
    /// `None` judges nodes by their annotations only.
    pub liveness: Option<Liveness>,
    /// What the Peers of a node with a DNS endpoint carry.
    pub endpoint_dns: EndpointDns,
    /// What the operator's resolver found for the endpoints' names.
    pub dns_answers: DnsAnswers,
}

/// A Peer as the operator wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPeer {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: PeerSpec,
}

/// The writes one cluster needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterWrites {
    /// Peers to create or change (server-side apply); shared with
    /// [`Plan::desired`], since a cold start at scale writes every one.
    pub apply: Vec<Arc<DesiredPeer>>,
    /// Owned Peers to delete, sorted by name.
    pub delete: Vec<PeerDeletion>,
}

/// An owned Peer to delete, as it was observed: the delete only goes through
/// if the Peer is still that object, so a Peer re-created or adopted meanwhile
/// is never deleted by mistake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerDeletion {
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl ClusterWrites {
    pub fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.delete.is_empty()
    }
}

/// A Peer name the mesh needs on a cluster, taken by a Peer it may not
/// take over.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerConflict {
    pub cluster: String,
    pub peer: String,
    /// Who wrote the Peer in the way: another mesh, a second hub of this
    /// one, or not a kilo-clustermesh-operator.
    pub writer: Writer,
}

/// A node that is not peered, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SkippedNode {
    pub name: String,
    pub reason: SkipReason,
}

/// One cluster's part of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterReport {
    pub name: String,
    /// Why the cluster could not be read; `None` when it was.
    pub unreachable: Option<Unreachable>,
    /// Nodes seen (last known while unreachable).
    pub nodes: usize,
    /// Nodes peered on the other clusters.
    pub registered_peers: usize,
    pub skipped: Vec<SkippedNode>,
    pub anchor: Option<String>,
    /// Who writes the mesh's Peers on the cluster.
    pub writer: ClusterWriter,
    /// On a cluster whose own operator writes its Peers: how far it has
    /// peered the local cluster's nodes there. `None` where this operator
    /// writes, or may not read the cluster's Peers.
    pub peered_back: Option<PeeredBack>,
}

/// How many of the local cluster's peered nodes another cluster's own
/// operator has given a Peer on its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeeredBack {
    pub peered: usize,
    pub of: usize,
}

/// Who writes a mesh's Peers on one of its clusters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClusterWriter {
    /// This mesh's operator.
    #[default]
    ThisOperator,
    /// The cluster's own operator: the mesh's placement is `LocalCluster`.
    OwnOperator,
    /// The cluster's own operator of the mesh took its Peers over from this
    /// hub (on the way to a decentralized mesh).
    OwnOperatorTookOver,
}

/// Everything the status and the Events are made from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The cluster this mesh's operator writes from (its `local` entry).
    pub local_cluster: String,
    pub spec_errors: Vec<SpecError>,
    pub conflicts: Vec<Conflict>,
    pub peer_conflicts: Vec<PeerConflict>,
    pub clusters: Vec<ClusterReport>,
    /// Peered nodes whose endpoint's name the operator's latest lookup
    /// could not resolve: `cluster/node: name (why)`.
    pub unresolvable_endpoints: Vec<String>,
}

/// The outcome of [`plan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per cluster this mesh writes on (every cluster, or with
    /// `LocalCluster` placement only the local one): every Peer it wants
    /// there, by source cluster, then by node.
    pub desired: BTreeMap<String, Vec<Arc<DesiredPeer>>>,
    /// Per readable cluster: the writes that differ from what it holds.
    pub writes: BTreeMap<String, ClusterWrites>,
    pub report: Report,
    /// When a node that is live now would stop being so if its agent does
    /// not check in again (Unix seconds): plan again then.
    pub recheck_at: Option<i64>,
}

/// Plans one pass from scratch. `observations` holds one entry per cluster
/// name; a cluster without one counts as not yet read.
pub fn plan(
    spec: &ClusterMeshSpec,
    identity: &MeshIdentity,
    settings: &Settings,
    observations: &BTreeMap<String, Observation>,
) -> Plan {
    Planner::default().plan(spec, identity, settings, observations)
}

/// Plans pass after pass for one mesh, deriving again only what changed
/// since the pass before. It knows the nodes and Peers it was given by
/// their addresses (the operator shares them between passes): a node is
/// checked again when its view changed (not when only its check-in time
/// did), contested keys and ranges are settled by the nodes that came and
/// went ([`claims::Settled`]), a node's Peer is built again when its check
/// or its anchor ranges changed, who wrote a held Peer is found once per
/// Peer, and a desired Peer is compared with the one a cluster holds when
/// either changed. Locations, anchors and counts are decided afresh each
/// pass, from those. Anything the remembered results depend on beyond their
/// node (the mesh's identity, its clusters, ranges in conflict, the
/// settings but for the time of the pass) forgets them all when it changes.
///
/// The plan is always the one [`plan`] makes of the same inputs (a property
/// test checks it on random sequences of changes).
#[derive(Debug, Default)]
pub struct Planner {
    memo: Memo,
}

/// What a [`Planner`] remembers of the pass before.
#[derive(Debug, Default)]
struct Memo {
    /// What every result below depends on beyond its own node.
    context: Option<MemoContext>,
    /// Per cluster: each node's check.
    checks: HashMap<String, Checks>,
    /// Which node keeps each key and range.
    settled: claims::Settled,
    /// Per cluster: what the plan makes of each Peer it holds.
    held: HashMap<String, FxHashMap<usize, Held>>,
    /// Per source cluster, per checked node (or location), by address: the
    /// Peer built for it.
    built: HashMap<String, FxHashMap<usize, Built>>,
    /// Per target cluster: the pairs of desired and held Peer that were
    /// found to match.
    matching: HashMap<String, Matching>,
    /// The number of the last pass: each entry above records the last pass
    /// that used it, and those a pass did not use are let go.
    pass: u64,
}

/// Per desired Peer (by address): it, and the Peer a cluster holds that
/// matches it.
type Matching = FxHashMap<usize, Matched>;

#[derive(Debug)]
struct Matched {
    /// Held so that no other Peer takes its address (the key) meanwhile.
    _desired: Arc<DesiredPeer>,
    held: Arc<ObservedPeer>,
    pass: u64,
}

/// The address of a shared object: what the memos know it by. Each memo
/// holds the `Arc` it keys, so no other object can have its address while
/// the entry lives.
pub(crate) fn address<T>(shared: &Arc<T>) -> usize {
    Arc::as_ptr(shared) as usize
}

#[derive(Debug, PartialEq)]
struct MemoContext {
    identity: MeshIdentity,
    clusters: Vec<ClusterSpec>,
    blocked: BTreeSet<(String, IpNet)>,
    /// The settings without the time of the pass.
    settings: Settings,
}

/// One cluster's node checks, made at one granularity, by the address of
/// the view checked; and the cluster's nodes as the last pass found them.
#[derive(Debug, Default)]
struct Checks {
    granularity: Granularity,
    nodes: FxHashMap<usize, Checked>,
    /// The peerable nodes, by name.
    eligible: Arc<BTreeMap<String, Arc<EligibleNode>>>,
    /// The others, by name, with why.
    skipped: BTreeMap<String, SkipReason>,
}

impl Checks {
    fn skipped(&self) -> Vec<SkippedNode> {
        let skipped = self.skipped.iter();
        skipped
            .map(|(name, reason)| SkippedNode {
                name: name.clone(),
                reason: reason.clone(),
            })
            .collect()
    }
}

#[derive(Debug)]
struct Checked {
    view: Arc<NodeView>,
    outcome: Result<Arc<EligibleNode>, SkipReason>,
    /// The outcome, or why the node was silent, at the last pass that saw it.
    state: Result<Arc<EligibleNode>, SkipReason>,
    /// The last pass that saw it.
    pass: u64,
}

/// Whether two states of a node are the same: the same check, or the same
/// reason to skip it.
fn same_state(
    a: &Result<Arc<EligibleNode>, SkipReason>,
    b: &Result<Arc<EligibleNode>, SkipReason>,
) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => Arc::ptr_eq(a, b),
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

/// A Peer a cluster holds (kept alive: the memo knows it by its address),
/// who wrote it, and the anchor it carries, if it is one (source cluster
/// and node).
#[derive(Debug)]
struct Held {
    /// Held so that no other Peer takes its address (the key) meanwhile.
    _peer: Arc<ObservedPeer>,
    writer: Writer,
    anchor: Option<(String, String)>,
    pass: u64,
}

/// Brings `held` up to the Peers `view` holds: who wrote each, and which
/// anchor it carries, found for the Peers not seen before.
fn hold(view: &ClusterView, writers: &Writers, held: &mut FxHashMap<usize, Held>, pass: u64) {
    for peer in &view.peers {
        let known = held.entry(address(peer)).or_insert_with(|| {
            let label = |key: &str| peer.labels.get(key).map(String::as_str);
            let anchor = (label(ANCHOR_LABEL) == Some("true"))
                .then(|| {
                    Some((
                        label(CLUSTER_LABEL)?.to_owned(),
                        peer.annotations.get(NODE_ANNOTATION)?.clone(),
                    ))
                })
                .flatten();
            Held {
                _peer: peer.clone(),
                writer: writers.of(peer),
                anchor,
                pass,
            }
        });
        known.pass = pass;
    }
    if held.len() > view.peers.len() {
        held.retain(|_, known| known.pass == pass);
    }
}

/// A Peer built for one node, and what it was built from.
#[derive(Debug)]
struct Built {
    /// Held so that no other node takes its address (the key) meanwhile.
    _node: Arc<EligibleNode>,
    /// The ranges it carries as its cluster's anchor, if it is.
    anchor_ranges: Option<Vec<IpNet>>,
    peer: Arc<DesiredPeer>,
    pass: u64,
}

impl Planner {
    /// Plans one pass, as [`plan`] does.
    pub fn plan(
        &mut self,
        spec: &ClusterMeshSpec,
        identity: &MeshIdentity,
        settings: &Settings,
        observations: &BTreeMap<String, Observation>,
    ) -> Plan {
        plan_with(&mut self.memo, spec, identity, settings, observations)
    }
}

fn plan_with(
    memo: &mut Memo,
    spec: &ClusterMeshSpec,
    identity: &MeshIdentity,
    settings: &Settings,
    observations: &BTreeMap<String, Observation>,
) -> Plan {
    let syncing = Observation::Unreachable {
        cause: Unreachable::Syncing,
        last_known: None,
    };
    let observation = |name: &str| observations.get(name).unwrap_or(&syncing);
    let clusters = match spec::parse(spec).and_then(|clusters| {
        spec::one_entry_per_cluster(spec, |name| observation(name).view()?.uid.clone())?;
        Ok(clusters)
    }) {
        Ok(clusters) => clusters,
        Err(spec_errors) => {
            // Nothing is written while the spec is wrong.
            let clusters = spec
                .clusters
                .iter()
                .map(|entry| {
                    let obs = observation(&entry.name);
                    ClusterReport {
                        name: entry.name.clone(),
                        unreachable: unreachable(obs),
                        nodes: obs.view().map_or(0, |v| v.nodes.len()),
                        registered_peers: 0,
                        skipped: vec![],
                        anchor: None,
                        writer: match spec.writes_on(entry) {
                            true => ClusterWriter::ThisOperator,
                            false => ClusterWriter::OwnOperator,
                        },
                        peered_back: None,
                    }
                })
                .collect();
            return Plan {
                report: Report {
                    local_cluster: identity.hub_cluster.clone(),
                    spec_errors,
                    clusters,
                    ..Report::default()
                },
                ..Plan::default()
            };
        }
    };
    let (conflicts, blocked) = conflict::find(&clusters);
    let context = MemoContext {
        identity: identity.clone(),
        clusters: clusters.clone(),
        blocked: blocked.clone(),
        settings: Settings {
            liveness: None,
            ..settings.clone()
        },
    };
    if memo.context.as_ref() != Some(&context) {
        *memo = Memo {
            context: Some(context),
            ..Memo::default()
        };
    }
    memo.pass += 1;
    let pass = memo.pass;
    let mesh_label = identity.label_value();
    let mesh = mesh_label.as_str();
    let writers = Writers::new(identity, clusters.iter().map(|c| c.name.as_str()));
    memo.held.retain(|name, _| {
        observation(name).view().is_some() && clusters.iter().any(|c| c.name == *name)
    });
    for cluster in &clusters {
        if let Some(view) = observation(&cluster.name).view() {
            let held = memo.held.entry(cluster.name.clone()).or_default();
            hold(view, &writers, held, pass);
        }
    }
    let held = &memo.held;
    // Who wrote a Peer `target` holds.
    let writer_of = |target: &str, peer: &Arc<ObservedPeer>| {
        let known = held.get(target).and_then(|h| h.get(&address(peer)));
        known.map_or_else(|| writers.of(peer), |known| known.writer.clone())
    };
    // The Peers this mesh keeps on `target`: its own, released ones of the
    // mesh, and on its own cluster those another operator of the mesh wrote
    // there (a hub, before the mesh went decentralized): taken over in place.
    let keeps_written = |target: &str, writer: &Writer| match writer {
        Writer::This | Writer::Released => true,
        Writer::Sibling(_) => target == identity.hub_cluster,
        Writer::OtherMesh { .. } | Writer::Unmanaged => false,
    };
    let keeps =
        |target: &str, peer: &Arc<ObservedPeer>| keeps_written(target, &writer_of(target, peer));
    let keeps = &keeps;
    // A cluster whose own operator of this mesh writes its Peers is left to
    // it: always with `LocalCluster` placement; from a hub once that
    // operator has taken the cluster's Peers over.
    let cluster_writers: BTreeMap<&str, ClusterWriter> = clusters
        .iter()
        .map(|target| {
            let own = Writer::Sibling(target.name.clone());
            let held = held.get(target.name.as_str());
            let writes_itself = held.is_some_and(|held| held.values().any(|h| h.writer == own));
            let writer = if target.local {
                ClusterWriter::ThisOperator
            } else if spec.peer_placement == PeerPlacement::LocalCluster {
                ClusterWriter::OwnOperator
            } else if writes_itself {
                ClusterWriter::OwnOperatorTookOver
            } else {
                ClusterWriter::ThisOperator
            };
            (target.name.as_str(), writer)
        })
        .collect();
    let writer = |target: &ClusterSpec| {
        let writer = cluster_writers.get(target.name.as_str());
        writer.copied().unwrap_or_default()
    };

    // The Peers this mesh keeps on the readable clusters it writes: the
    // anchors they carry, by source cluster, for the anchor's stickiness;
    // all of one source's, for counting a source that cannot be read.
    let owned: Vec<(&str, &ClusterView)> = clusters
        .iter()
        .filter(|c| writer(c) == ClusterWriter::ThisOperator)
        .filter_map(|c| match observation(&c.name) {
            Observation::Observed(view) => Some((c.name.as_str(), view)),
            Observation::Unreachable { .. } => None,
        })
        .collect();
    let mut anchors: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (target, _) in &owned {
        let kept = held[*target]
            .values()
            .filter(|h| keeps_written(target, &h.writer));
        for (source, node) in kept.filter_map(|h| h.anchor.as_ref()) {
            anchors.entry(source).or_default().insert(node.clone());
        }
    }
    // The nodes of `source` that have Peers this mesh keeps.
    let kept_nodes = |source: &str| {
        let mut nodes = BTreeSet::new();
        for (target, view) in &owned {
            let of_source = view
                .peers
                .iter()
                .filter(|p| p.labels.get(CLUSTER_LABEL).is_some_and(|c| c == source));
            for peer in of_source.filter(|p| keeps(target, p)) {
                nodes.extend(peer_nodes(peer).into_iter().map(str::to_owned));
            }
        }
        nodes.len()
    };

    let mut eligible = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    let mut granularities = BTreeMap::new();
    memo.checks
        .retain(|name, _| clusters.iter().any(|c| c.name == *name));
    for cluster in &clusters {
        let checks = memo.checks.entry(cluster.name.clone()).or_default();
        let view = observation(&cluster.name).view();
        eligibility(cluster, view, &blocked, settings, checks, pass);
        eligible.insert(cluster.name.clone(), checks.eligible.clone());
        skipped.insert(cluster.name.clone(), checks.skipped());
        granularities.insert(cluster.name.as_str(), checks.granularity);
    }
    let unresolvable_endpoints = unresolvable(&eligible, &settings.dns_answers);
    for (cluster, lost) in claims::settle_again(&mut memo.settled, &mut eligible) {
        skipped.entry(cluster).or_default().extend(lost);
    }
    // A location's nodes are one Peer, its leader's.
    for cluster in &clusters {
        let Some(view) = observation(&cluster.name).view() else {
            continue;
        };
        if granularities.get(cluster.name.as_str()) == Some(&Granularity::Location) {
            let nodes = eligible.remove(&cluster.name).unwrap_or_default();
            let nodes = Arc::unwrap_or_clone(nodes);
            let (locations, lost) =
                segment::by_location(&view.nodes, nodes, settings.liveness.as_ref());
            eligible.insert(cluster.name.clone(), Arc::new(locations));
            skipped
                .entry(cluster.name.clone())
                .or_default()
                .extend(lost);
        }
    }
    for skips in skipped.values_mut() {
        skips.sort();
    }
    let mut sources = BTreeMap::new();
    let mut reports = Vec::new();
    for cluster in &clusters {
        let (source, mut report) = source(
            cluster,
            observation(&cluster.name),
            eligible.remove(&cluster.name).unwrap_or_default(),
            skipped.remove(&cluster.name).unwrap_or_default(),
            &blocked,
            anchors.get(cluster.name.as_str()),
            writer(cluster),
        );
        if report.unreachable.is_some() {
            report.registered_peers = kept_nodes(&cluster.name);
        }
        sources.insert(cluster.name.clone(), source);
        reports.push(report);
    }
    // Whether the clusters that write their own Peers have peered ours.
    let local_nodes: BTreeSet<&str> = sources
        .get(&identity.hub_cluster)
        .into_iter()
        .flat_map(|s| s.eligible.values())
        .flat_map(|entry| entry.members.iter().map(String::as_str))
        .collect();
    for report in &mut reports {
        let Observation::Observed(view) = observation(&report.name) else {
            continue;
        };
        if report.writer == ClusterWriter::ThisOperator || view.peers_unknown {
            continue;
        }
        let own = Writer::Sibling(report.name.clone());
        let peered: BTreeSet<&str> = view
            .peers
            .iter()
            .filter(|p| p.labels.get(CLUSTER_LABEL) == Some(&identity.hub_cluster))
            .filter(|p| writers.of(p) == own)
            .flat_map(|p| peer_nodes(p))
            .filter(|node| local_nodes.contains(node))
            .collect();
        report.peered_back = Some(PeeredBack {
            peered: peered.len(),
            of: local_nodes.len(),
        });
    }
    // No tunnel carries a tunnel's own packets: an anchor's service and
    // additional ranges are narrowed around every endpoint of the mesh
    // (a host network that holds the nodes' endpoints, say).
    let endpoints: Vec<std::net::IpAddr> = sources
        .values()
        .flat_map(|s| s.eligible.values())
        .filter_map(|node| node::endpoint_ip(node.endpoint.as_ref()?))
        .collect();
    for source in sources.values_mut() {
        source.anchor_ranges = source
            .anchor_ranges
            .iter()
            .flat_map(|range| cidr::exclude(*range, &endpoints))
            .collect();
    }

    // A node's Peer is the same on every other cluster: built once, shared.
    memo.built.retain(|name, _| {
        observation(name).is_observed() && clusters.iter().any(|c| c.name == *name)
    });
    let peers_of: BTreeMap<&str, Vec<Arc<DesiredPeer>>> = clusters
        .iter()
        .filter(|source| observation(&source.name).is_observed())
        .map(|source| {
            let built = memo.built.entry(source.name.clone()).or_default();
            let peers = build(identity, mesh, source, &sources[&source.name], built, pass);
            (source.name.as_str(), peers)
        })
        .collect();
    let mut desired = BTreeMap::new();
    let mut writes = BTreeMap::new();
    let mut peer_conflicts = Vec::new();
    for target in clusters
        .iter()
        .filter(|target| writer(target) == ClusterWriter::ThisOperator)
    {
        let wanted: Vec<Arc<DesiredPeer>> = peers_of
            .iter()
            .filter(|(source, _)| **source != target.name)
            .flat_map(|(_, peers)| peers.iter().cloned())
            .collect();
        if let Observation::Observed(view) = observation(&target.name) {
            let kept_source = |source: &str| {
                clusters.iter().any(|c| c.name == source) && !observation(source).is_observed()
            };
            let keeps = |peer: &Arc<ObservedPeer>| keeps(&target.name, peer);
            let writer_of = |peer: &Arc<ObservedPeer>| writer_of(&target.name, peer);
            let matching = memo.matching.entry(target.name.clone()).or_default();
            let held = &memo.held[&target.name];
            let (cluster_writes, conflicts) = diff(
                &target.name,
                view,
                &wanted,
                Known {
                    held,
                    matching,
                    pass,
                },
                writer_of,
                keeps,
                kept_source,
            );
            peer_conflicts.extend(conflicts);
            if !cluster_writes.is_empty() {
                writes.insert(target.name.clone(), cluster_writes);
            }
        }
        desired.insert(target.name.clone(), wanted);
    }
    peer_conflicts.sort();
    let recheck_at = settings.liveness.and_then(|liveness| {
        clusters
            .iter()
            .filter_map(|c| observation(&c.name).view())
            .flat_map(|view| &view.nodes)
            .filter_map(|node| liveness.expires(node))
            .min()
    });
    Plan {
        desired,
        writes,
        recheck_at,
        report: Report {
            local_cluster: identity.hub_cluster.clone(),
            spec_errors: vec![],
            conflicts,
            peer_conflicts,
            clusters: reports,
            unresolvable_endpoints,
        },
    }
}

/// Peerable nodes whose endpoint's name did not resolve at the latest
/// lookup (with `--endpoint-dns=resolve`, they keep the last address).
fn unresolvable(eligible: &claims::Eligible, answers: &DnsAnswers) -> Vec<String> {
    eligible
        .iter()
        .flat_map(|(cluster, nodes)| nodes.values().map(move |node| (cluster, node)))
        .filter_map(|(cluster, node)| {
            let name = node.endpoint_name.as_ref()?;
            let error = answers.get(name)?.error.as_ref()?;
            Some(format!("{cluster}/{}: {name} ({error})", node.name))
        })
        .collect()
}

/// One source cluster's nodes, checked, and its anchor.
struct Source {
    eligible: Arc<BTreeMap<String, Arc<EligibleNode>>>,
    anchor: Option<String>,
    /// Service and additional CIDRs the anchor routes (those not in conflict).
    anchor_ranges: Vec<IpNet>,
}

/// Brings `checks` up to the cluster's nodes in `view`: which can be
/// peered, and the others with why. A node whose view was checked before,
/// or one like it but for its check-in time, is not checked again, and only
/// the nodes whose state changed are changed in `checks.eligible` and
/// `checks.skipped`.
fn eligibility(
    cluster: &ClusterSpec,
    view: Option<&ClusterView>,
    blocked: &BTreeSet<(String, IpNet)>,
    settings: &Settings,
    checks: &mut Checks,
    pass: u64,
) {
    let empty = ClusterView::default();
    let view = view.unwrap_or(&empty);
    let granularity = Granularity::of(&view.nodes);
    if checks.granularity != granularity {
        *checks = Checks {
            granularity,
            ..Checks::default()
        };
    }
    let silent = |node: &NodeView| settings.liveness.and_then(|l| l.judge(node));
    // The nodes whose state changed, by name, and the views not seen before.
    let mut changed: Vec<(String, Result<Arc<EligibleNode>, SkipReason>)> = Vec::new();
    let mut unseen = Vec::new();
    for node in &view.nodes {
        let Some(known) = checks.nodes.get_mut(&address(node)) else {
            unseen.push(node);
            continue;
        };
        known.pass = pass;
        let state = silent(node).map_or_else(|| known.outcome.clone(), Err);
        if !same_state(&state, &known.state) {
            known.state = state.clone();
            changed.push((node.name.clone(), state));
        }
    }
    let mut new = Vec::with_capacity(unseen.len());
    if !unseen.is_empty() {
        // A node's view before, if it changed only in its check-in time.
        let gone: HashMap<&str, &Checked> = checks
            .nodes
            .values()
            .filter(|c| c.pass != pass)
            .map(|c| (c.view.name.as_str(), c))
            .collect();
        for node in unseen {
            let outcome = match gone.get(node.name.as_str()) {
                Some(known) if known.view.same_but_check_in(node) => known.outcome.clone(),
                _ => node::check(node, cluster, blocked, granularity, settings).map(Arc::new),
            };
            let state = silent(node).map_or_else(|| outcome.clone(), Err);
            changed.push((node.name.clone(), state.clone()));
            let checked = Checked {
                view: node.clone(),
                outcome,
                state,
                pass,
            };
            new.push((address(node), checked));
        }
    }
    let eligible = Arc::make_mut(&mut checks.eligible);
    if checks.nodes.len() + new.len() > view.nodes.len() {
        checks.nodes.retain(|_, known| {
            if known.pass != pass {
                eligible.remove(&known.view.name);
                checks.skipped.remove(&known.view.name);
            }
            known.pass == pass
        });
    }
    checks.nodes.extend(new);
    for (name, state) in changed {
        match state {
            Ok(node) => {
                checks.skipped.remove(&name);
                eligible.insert(name, node);
            }
            Err(reason) => {
                eligible.remove(&name);
                checks.skipped.insert(name, reason);
            }
        }
    }
}

/// The Peers of one source's eligible nodes, built again only where the
/// node or its anchor ranges differ from what `built` holds.
fn build(
    identity: &MeshIdentity,
    mesh: &str,
    cluster: &ClusterSpec,
    source: &Source,
    built: &mut FxHashMap<usize, Built>,
    pass: u64,
) -> Vec<Arc<DesiredPeer>> {
    let peers = source
        .eligible
        .iter()
        .map(|(name, node)| {
            let is_anchor = source.anchor.as_ref() == Some(name);
            let anchor_ranges = is_anchor.then_some(source.anchor_ranges.as_slice());
            let entry = built.entry(address(node));
            let known = match entry {
                Entry::Occupied(known) if known.get().anchor_ranges.as_deref() == anchor_ranges => {
                    known.into_mut()
                }
                _ => {
                    let peer = desired_peer(identity, mesh, cluster, node, anchor_ranges);
                    let fresh = Built {
                        _node: node.clone(),
                        anchor_ranges: anchor_ranges.map(<[IpNet]>::to_vec),
                        peer: Arc::new(peer),
                        pass,
                    };
                    match entry {
                        Entry::Occupied(mut stale) => {
                            stale.insert(fresh);
                            stale.into_mut()
                        }
                        Entry::Vacant(vacant) => vacant.insert(fresh),
                    }
                }
            };
            known.pass = pass;
            known.peer.clone()
        })
        .collect();
    if built.len() > source.eligible.len() {
        built.retain(|_, known| known.pass == pass);
    }
    peers
}

/// One cluster as a source of Peers: its eligible nodes (after the
/// cross-node checks), its anchor, and its part of the report.
fn source(
    cluster: &ClusterSpec,
    observation: &Observation,
    eligible: Arc<BTreeMap<String, Arc<EligibleNode>>>,
    skipped: Vec<SkippedNode>,
    blocked: &BTreeSet<(String, IpNet)>,
    anchors: Option<&BTreeSet<String>>,
    writer: ClusterWriter,
) -> (Source, ClusterReport) {
    let nodes = observation.view().map_or(0, |view| view.nodes.len());
    let anchor_ranges: Vec<IpNet> = cluster
        .service
        .iter()
        .chain(&cluster.additional)
        .filter(|range| !blocked.contains(&(cluster.name.clone(), **range)))
        .copied()
        .collect();
    let anchor = if anchor_ranges.is_empty() {
        None
    } else {
        anchor::choose(&eligible, anchors.unwrap_or(&BTreeSet::new()))
    };
    let unreachable = unreachable(observation);
    // Of a cluster that cannot be read, counted by the caller from the Peers
    // kept as they were.
    let registered_peers = eligible.values().map(|entry| entry.members.len()).sum();
    let report = ClusterReport {
        name: cluster.name.clone(),
        unreachable,
        nodes,
        registered_peers,
        skipped,
        anchor: anchor.clone(),
        writer,
        peered_back: None,
    };
    (
        Source {
            eligible,
            anchor,
            anchor_ranges,
        },
        report,
    )
}

/// The nodes a Peer carries: a location's members, else its node.
fn peer_nodes(peer: &ObservedPeer) -> Vec<&str> {
    match peer.annotations.get(MEMBERS_ANNOTATION) {
        Some(members) => members.split(',').collect(),
        None => peer
            .annotations
            .get(NODE_ANNOTATION)
            .map(String::as_str)
            .into_iter()
            .collect(),
    }
}

fn unreachable(observation: &Observation) -> Option<Unreachable> {
    match observation {
        Observation::Observed(_) => None,
        Observation::Unreachable { cause, .. } => Some(cause.clone()),
    }
}

/// The Peer of `node`, of `cluster`; `anchor_ranges` when it is its
/// cluster's anchor.
fn desired_peer(
    identity: &MeshIdentity,
    mesh: &str,
    cluster: &ClusterSpec,
    node: &EligibleNode,
    anchor_ranges: Option<&[IpNet]>,
) -> DesiredPeer {
    let is_anchor = anchor_ranges.is_some();
    let mut allowed: BTreeSet<IpNet> = node.allowed_ips.iter().copied().collect();
    allowed.extend(anchor_ranges.into_iter().flatten().copied());
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        (MESH_LABEL.to_owned(), mesh.to_owned()),
        (CLUSTER_LABEL.to_owned(), cluster.name.clone()),
    ]);
    if is_anchor {
        labels.insert(ANCHOR_LABEL.to_owned(), "true".to_owned());
    }
    let mut annotations = BTreeMap::from([
        (MESH_ANNOTATION.to_owned(), identity.annotation_value()),
        (NODE_ANNOTATION.to_owned(), node.name.clone()),
    ]);
    if node.members != [node.name.as_str()] {
        annotations.insert(MEMBERS_ANNOTATION.to_owned(), node.members.join(","));
    }
    DesiredPeer {
        name: peer_name(&cluster.name, &node.name),
        labels,
        annotations,
        spec: PeerSpec {
            allowed_ips: allowed.iter().map(ToString::to_string).collect(),
            endpoint: node.endpoint.clone(),
            persistent_keepalive: node.persistent_keepalive,
            preshared_key: None,
            public_key: node.key.to_string(),
        },
    }
}

/// What [`diff`] knows of a target from the passes before.
struct Known<'a> {
    /// The Peers it holds, by address.
    held: &'a FxHashMap<usize, Held>,
    /// The pairs of wanted and held Peer found to match.
    matching: &'a mut Matching,
    pass: u64,
}

/// The writes that turn what `target` holds into `wanted`. The Peers the
/// mesh `keeps` there are changed in place or deleted, but those of a source
/// that could not be read (`kept_source`), which are left as they are; any
/// other Peer in the way is a conflict. A pair of wanted and held Peer that
/// matched before, both still the same objects, is not compared again.
fn diff(
    target: &str,
    view: &ClusterView,
    wanted: &[Arc<DesiredPeer>],
    known: Known,
    writer_of: impl Fn(&Arc<ObservedPeer>) -> Writer,
    keeps: impl Fn(&Arc<ObservedPeer>) -> bool,
    kept_source: impl Fn(&str) -> bool,
) -> (ClusterWrites, Vec<PeerConflict>) {
    let Known {
        held,
        matching,
        pass,
    } = known;
    // Made on the first wanted Peer that did not match before.
    let mut by_name: Option<HashMap<&str, &Arc<ObservedPeer>>> = None;
    let mut writes = ClusterWrites::default();
    let mut conflicts = Vec::new();
    let mut matched = 0;
    for peer in wanted {
        if let Some(pair) = matching.get_mut(&address(peer))
            && held.contains_key(&address(&pair.held))
        {
            pair.pass = pass;
            matched += 1;
            continue;
        }
        let by_name = by_name
            .get_or_insert_with(|| view.peers.iter().map(|p| (p.name.as_str(), p)).collect());
        match by_name.get(peer.name.as_str()) {
            None => writes.apply.push(peer.clone()),
            Some(existing) if !keeps(existing) => conflicts.push(PeerConflict {
                cluster: target.to_owned(),
                peer: peer.name.clone(),
                writer: writer_of(existing),
            }),
            Some(existing) if matches(existing, peer) => {
                let pair = Matched {
                    _desired: peer.clone(),
                    held: Arc::clone(existing),
                    pass,
                };
                matching.insert(address(peer), pair);
                matched += 1;
            }
            Some(_) => writes.apply.push(peer.clone()),
        }
    }
    if matching.len() > matched {
        matching.retain(|_, pair| pair.pass == pass);
    }
    writes.apply.sort_by(|a, b| a.name.cmp(&b.name));
    // Held Peers no wanted Peer matched: the mesh's own are deleted unless
    // wanted (then they are being changed).
    if matched < view.peers.len() {
        let matched: FxHashSet<usize> = matching.values().map(|pair| address(&pair.held)).collect();
        let mut wanted_names: Option<HashSet<&str>> = None;
        for peer in view
            .peers
            .iter()
            .filter(|p| !matched.contains(&address(p)) && keeps(p))
        {
            let wanted_names = wanted_names
                .get_or_insert_with(|| wanted.iter().map(|p| p.name.as_str()).collect());
            if wanted_names.contains(peer.name.as_str()) {
                continue;
            }
            let source = peer
                .labels
                .get(CLUSTER_LABEL)
                .map(String::as_str)
                .unwrap_or_default();
            if !kept_source(source) {
                writes.delete.push(PeerDeletion {
                    name: peer.name.clone(),
                    uid: peer.uid.clone(),
                    resource_version: peer.resource_version.clone(),
                });
            }
        }
    }
    writes.delete.sort_by(|a, b| a.name.cmp(&b.name));
    (writes, conflicts)
}

/// True when `observed` already is `wanted`: same spec, and every label and
/// annotation the operator sets (other ones may be added by people).
fn matches(observed: &ObservedPeer, wanted: &DesiredPeer) -> bool {
    let has = |have: &BTreeMap<String, String>, want: &BTreeMap<String, String>| {
        want.iter().all(|(k, v)| have.get(k) == Some(v))
    };
    let stale_anchor =
        observed.labels.contains_key(ANCHOR_LABEL) && !wanted.labels.contains_key(ANCHOR_LABEL);
    observed.spec == wanted.spec
        && has(&observed.labels, &wanted.labels)
        && has(&observed.annotations, &wanted.annotations)
        && !stale_anchor
}

/// The Peers a cluster holds once `writes` are applied: what tests and
/// properties feed back into [`plan`].
pub fn applied(view: &ClusterView, writes: &ClusterWrites) -> Vec<Arc<ObservedPeer>> {
    let mut peers: BTreeMap<String, Arc<ObservedPeer>> = view
        .peers
        .iter()
        .map(|p| (p.name.clone(), p.clone()))
        .collect();
    for deletion in &writes.delete {
        peers.remove(&deletion.name);
    }
    for peer in &writes.apply {
        let observed = ObservedPeer {
            name: peer.name.clone(),
            labels: peer.labels.clone(),
            annotations: peer.annotations.clone(),
            spec: peer.spec.clone(),
            uid: None,
            resource_version: None,
        };
        peers.insert(peer.name.clone(), Arc::new(observed));
    }
    peers.into_values().collect()
}
