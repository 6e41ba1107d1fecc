//! `plan`: from the spec and the observed clusters to the Peers every cluster
//! must hold and the writes that get them there.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use api::{ClusterMeshSpec, PeerPlacement, PeerSpec};
use ipnet::IpNet;

use crate::{
    anchor,
    changes::Tracked,
    cidr, claims,
    conflict::{self, Conflict},
    endpoint::{DnsAnswers, EndpointDns},
    identity::{
        ANCHOR_LABEL, CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MEMBERS_ANNOTATION,
        MESH_ANNOTATION, MESH_LABEL, MeshIdentity, NODE_ANNOTATION,
    },
    naming::peer_name,
    node::{self, EligibleNode, Granularity, Liveness, SkipReason},
    observe::{ClusterView, NodeView, Observation, ObservedPeer, Shared, Unreachable},
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
    pub desired: BTreeMap<String, DesiredPeers>,
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

/// Every Peer the mesh wants on one cluster: each other source cluster's,
/// in the order of the sources' names, then of their nodes. A source's
/// Peers are one list, shared by every cluster that wants them and kept
/// from pass to pass while that source does not change, so a pass copies
/// no Peer of an unchanged source.
#[derive(Clone, Debug, Default)]
pub struct DesiredPeers {
    sources: Vec<Arc<Vec<Arc<DesiredPeer>>>>,
}

impl DesiredPeers {
    pub fn iter(&self) -> impl Iterator<Item = &Arc<DesiredPeer>> {
        self.sources.iter().flat_map(|peers| peers.iter())
    }

    /// The Peer named `name`, if the mesh wants it there.
    pub fn get(&self, name: &str) -> Option<&Arc<DesiredPeer>> {
        self.iter().find(|peer| peer.name == name)
    }

    pub fn len(&self) -> usize {
        self.sources.iter().map(|peers| peers.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialEq for DesiredPeers {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for DesiredPeers {}

impl<'a> IntoIterator for &'a DesiredPeers {
    type Item = &'a Arc<DesiredPeer>;
    type IntoIter = Box<dyn Iterator<Item = &'a Arc<DesiredPeer>> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Plans pass after pass for one mesh, doing again only what the changes
/// since the pass before call for, so that a pass costs what changed, not
/// what the mesh holds. The operator shares nodes and Peers, and their
/// lists, between passes and hands them in the same order, so the planner
/// finds what changed on each cluster by skipping a list it saw before and
/// walking any other beside the last one (`changes.rs`). Then only the
/// nodes that changed are checked again (a
/// node changed in its check-in time only keeps its check), plus those whose
/// check-in went stale since; contested keys and ranges are settled by the
/// nodes that came and went ([`claims::Settled`]); only those nodes' Peers
/// are built again (and the anchor's, when it or its ranges change); and on
/// each cluster the planner writes, only the Peer names that changed (wanted
/// or held) are compared again, against a standing account of the writes
/// and conflicts the cluster needs. Counts the report and the anchors read
/// (members, endpoints, check-in times, the anchors held Peers carry, the
/// Peers another operator of the mesh wrote) are kept up to date the same
/// way. Anything the kept results depend on beyond their node (the mesh's
/// identity, its clusters and which of them can be read, ranges in
/// conflict, the settings but for the time of the pass, a clock gone back)
/// starts the planner afresh.
///
/// The plan is always the one [`plan`] makes of the same inputs (a property
/// test checks it on random sequences of changes).
#[derive(Debug, Default)]
pub struct Planner {
    memo: Memo,
}

/// What a [`Planner`] keeps from the pass before.
#[derive(Debug, Default)]
struct Memo {
    /// What everything below depends on beyond its own node.
    context: Option<MemoContext>,
    clusters: HashMap<String, ClusterMemo>,
    /// Which node keeps each key and range.
    settled: claims::Settled,
    /// The time of the pass before, when nodes are judged by their check-ins.
    now: Option<i64>,
    /// Every Peer built (of the clusters that can be read), by name: what
    /// every cluster but its source wants.
    wanted: HashMap<String, Arc<DesiredPeer>>,
}

/// The address of a shared object: how a pass tells it is the one the
/// pass before saw.
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
    /// Which clusters could be read: the Peers of the others are kept as
    /// they are, and none is built for them.
    observed: Vec<bool>,
}

/// What a [`Planner`] keeps of one cluster.
#[derive(Debug, Default)]
struct ClusterMemo {
    /// Its nodes, as the last pass read them.
    nodes: Tracked<NodeView>,
    /// How many of them say Kilo runs with `location` granularity.
    location_nodes: usize,
    /// Its nodes that have a check-in time, by that time.
    check_ins: BTreeSet<(i64, String)>,
    checks: Checks,
    /// Its peerable nodes (or locations), after the mesh-wide checks, each
    /// with its Peer once built (for a cluster that can be read).
    sourced: BTreeMap<String, Sourced>,
    /// The nodes the mesh-wide checks took out at the last pass.
    lost: Vec<String>,
    /// The anchor and the ranges its Peer carried at the last pass.
    anchor: Option<(String, Vec<IpNet>)>,
    /// The nodes the entries of `sourced` carry, counted.
    members: usize,
    /// The endpoint addresses of the entries of `sourced`, counted.
    endpoints: BTreeMap<IpAddr, usize>,
    /// The Peers of `sourced`, in order: what every other cluster wants of
    /// this one.
    peers: Arc<Vec<Arc<DesiredPeer>>>,
    /// Its Peers, as the last pass read them.
    held_list: Tracked<ObservedPeer>,
    /// Its Peers by name, with who wrote each.
    held: HashMap<String, Held>,
    /// How many of them the cluster's own operator of the mesh wrote.
    own_operator: usize,
    /// The anchors carried by the Peers the mesh keeps there, by source
    /// cluster and node, counted.
    anchors: BTreeMap<(String, String), usize>,
    /// The writes and conflicts the cluster needs, by Peer name, while this
    /// mesh writes its Peers; `None` until a pass accounts for it whole.
    pending: Option<BTreeMap<String, Pending>>,
}

/// One cluster's node checks, made at one granularity.
#[derive(Debug, Default)]
struct Checks {
    granularity: Granularity,
    /// By node name.
    nodes: HashMap<String, Checked>,
    /// The peerable nodes, by name.
    eligible: Arc<BTreeMap<String, Arc<EligibleNode>>>,
    /// The others, by name, with why.
    skipped: BTreeMap<String, SkipReason>,
    /// The peerable nodes whose endpoint is a DNS name.
    named: BTreeSet<String>,
}

#[derive(Debug)]
struct Checked {
    view: Arc<NodeView>,
    outcome: Result<Arc<EligibleNode>, SkipReason>,
}

/// A peerable node whose entry changed in a pass: what it was and is.
struct Changed {
    name: String,
    was: Option<Arc<EligibleNode>>,
    is: Option<Arc<EligibleNode>>,
}

impl Checks {
    /// Makes `name` peerable, skipped or gone, as `state` says, noting in
    /// `changed` when its peerable entry changed.
    fn set(
        &mut self,
        name: &str,
        state: Option<Result<Arc<EligibleNode>, SkipReason>>,
        changed: &mut Vec<Changed>,
    ) {
        let eligible = Arc::make_mut(&mut self.eligible);
        let (was, is) = match state {
            Some(Ok(node)) => {
                self.skipped.remove(name);
                match node.endpoint_name.is_some() {
                    true => self.named.insert(name.to_owned()),
                    false => self.named.remove(name),
                };
                (eligible.insert(name.to_owned(), node.clone()), Some(node))
            }
            Some(Err(reason)) => {
                self.named.remove(name);
                self.skipped.insert(name.to_owned(), reason);
                (eligible.remove(name), None)
            }
            None => {
                self.named.remove(name);
                self.skipped.remove(name);
                (eligible.remove(name), None)
            }
        };
        if !same_entry(&was, &is) {
            changed.push(Changed {
                name: name.to_owned(),
                was,
                is,
            });
        }
    }

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

fn same_entry(a: &Option<Arc<EligibleNode>>, b: &Option<Arc<EligibleNode>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// A peerable node (or location) of a source cluster, and its Peer.
#[derive(Debug)]
struct Sourced {
    node: Arc<EligibleNode>,
    built: Option<Built>,
}

impl AsRef<EligibleNode> for Sourced {
    fn as_ref(&self) -> &EligibleNode {
        &self.node
    }
}

/// A Peer built for one node, and what it was built from.
#[derive(Debug)]
struct Built {
    node: Arc<EligibleNode>,
    /// The ranges it carries as its cluster's anchor, if it is.
    anchor_ranges: Option<Vec<IpNet>>,
    peer: Arc<DesiredPeer>,
}

/// A Peer a cluster holds, who wrote it, and the anchor it carries, if it
/// is one (source cluster and node).
#[derive(Debug)]
struct Held {
    peer: Arc<ObservedPeer>,
    writer: Writer,
    anchor: Option<(String, String)>,
}

impl Held {
    fn of(peer: &Arc<ObservedPeer>, writers: &Writers) -> Self {
        let label = |key: &str| peer.labels.get(key).map(String::as_str);
        let anchor = (label(ANCHOR_LABEL) == Some("true"))
            .then(|| {
                Some((
                    label(CLUSTER_LABEL)?.to_owned(),
                    peer.annotations.get(NODE_ANNOTATION)?.clone(),
                ))
            })
            .flatten();
        Self {
            peer: peer.clone(),
            writer: writers.of(peer),
            anchor,
        }
    }
}

/// What a cluster needs done about one Peer name.
#[derive(Debug)]
enum Pending {
    Apply(Arc<DesiredPeer>),
    Delete(PeerDeletion),
    /// The name is taken by a Peer this writer wrote, which the mesh may
    /// not take over.
    Conflict(Writer),
}

/// The Peers a mesh keeps on `target` by who wrote them: its own, released
/// ones of the mesh, and on its own cluster those another operator of the
/// mesh wrote there (a hub, before the mesh went decentralized): taken over
/// in place.
fn keeps_written(identity: &MeshIdentity, target: &str, writer: &Writer) -> bool {
    match writer {
        Writer::This | Writer::Released => true,
        Writer::Sibling(_) => target == identity.hub_cluster,
        Writer::OtherMesh { .. } | Writer::Unmanaged => false,
    }
}

impl ClusterMemo {
    /// Brings `held` up to the Peers the cluster holds now; returns the
    /// names that changed.
    fn hold(
        &mut self,
        peers: &Shared<ObservedPeer>,
        writers: &Writers,
        identity: &MeshIdentity,
        target: &str,
    ) -> Vec<String> {
        let changes = self.held_list.update(peers);
        let own = Writer::Sibling(target.to_owned());
        let mut names = Vec::with_capacity(changes.left.len() + changes.came.len());
        let mut count = |held: &Held, by: isize| {
            if held.writer == own {
                self.own_operator = self.own_operator.saturating_add_signed(by);
            }
            if let Some(anchor) = &held.anchor
                && keeps_written(identity, target, &held.writer)
            {
                let count = self.anchors.entry(anchor.clone()).or_default();
                *count = count.saturating_add_signed(by);
                if *count == 0 {
                    self.anchors.remove(anchor);
                }
            }
        };
        for peer in changes.left {
            if let Some(held) = self.held.remove(&peer.name) {
                count(&held, -1);
            }
            names.push(peer.name.clone());
        }
        for peer in changes.came {
            let held = Held::of(&peer, writers);
            count(&held, 1);
            if let Some(before) = self.held.insert(peer.name.clone(), held) {
                count(&before, -1);
            }
            names.push(peer.name.clone());
        }
        names
    }

    /// Who wrote `peer`, which the cluster holds.
    fn writer_of(&self, peer: &Arc<ObservedPeer>, writers: &Writers) -> Writer {
        match self.held.get(&peer.name) {
            Some(held) if Arc::ptr_eq(&held.peer, peer) => held.writer.clone(),
            _ => writers.of(peer),
        }
    }

    /// Brings the checks up to the cluster's nodes: which can be peered,
    /// and the others with why. Only the nodes that changed are checked
    /// again (not those changed in their check-in time only), and only
    /// those and the nodes whose check-in went stale since `since` (the
    /// pass before) are judged again. Returns the peerable entries that
    /// changed, or `None` when the granularity changed and every node was
    /// checked again.
    fn check_nodes(
        &mut self,
        cluster: &ClusterSpec,
        nodes: &Shared<NodeView>,
        blocked: &BTreeSet<(String, IpNet)>,
        settings: &Settings,
        since: Option<i64>,
    ) -> Option<Vec<Changed>> {
        let changes = self.nodes.update(nodes);
        for node in &changes.left {
            if node::says_location(node) {
                self.location_nodes = self.location_nodes.saturating_sub(1);
            }
            if let Some(at) = node.checked_in {
                self.check_ins.remove(&(at, node.name.clone()));
            }
        }
        for node in &changes.came {
            if node::says_location(node) {
                self.location_nodes += 1;
            }
            if let Some(at) = node.checked_in {
                self.check_ins.insert((at, node.name.clone()));
            }
        }
        let granularity = match self.location_nodes {
            0 => Granularity::PerNode,
            _ => Granularity::Location,
        };
        let silent = |node: &NodeView| settings.liveness.and_then(|l| l.judge(node));
        let state = |node: &NodeView, outcome: &Result<Arc<EligibleNode>, SkipReason>| {
            silent(node).map_or_else(|| outcome.clone(), Err)
        };
        let mut changed = Vec::new();
        // At another granularity, every node is checked again.
        let regranulated = self.checks.granularity != granularity;
        if regranulated {
            self.checks = Checks {
                granularity,
                ..Checks::default()
            };
        }
        let came = match regranulated {
            true => nodes,
            false => changes.came.as_slice(),
        };
        // A node's check before, kept if it changed only in its check-in time.
        let mut before: HashMap<String, Checked> = changes
            .left
            .iter()
            .filter_map(|node| Some((node.name.clone(), self.checks.nodes.remove(&node.name)?)))
            .collect();
        for node in came {
            let outcome = match before.remove(&node.name) {
                Some(known) if known.view.same_but_check_in(node) => known.outcome,
                _ => node::check(node, cluster, blocked, granularity, settings).map(Arc::new),
            };
            self.checks
                .set(&node.name, Some(state(node, &outcome)), &mut changed);
            let checked = Checked {
                view: node.clone(),
                outcome,
            };
            self.checks.nodes.insert(node.name.clone(), checked);
        }
        if regranulated {
            return None;
        }
        for name in before.into_keys() {
            self.checks.set(&name, None, &mut changed);
        }
        // The nodes that were live at the pass before and may not be now.
        if let (Some(liveness), Some(since)) = (settings.liveness, since) {
            let stale = i128::from(liveness.stale_after_seconds);
            let clamp = |t: i128| i64::try_from(t.clamp(i64::MIN.into(), i64::MAX.into()));
            let (from, to) = (
                clamp(i128::from(since) - stale),
                clamp(i128::from(liveness.now) - stale - 1),
            );
            if let (Ok(from), Ok(to)) = (from, to)
                && from <= to
            {
                let due: Vec<String> = (self.check_ins.range((from, String::new())..))
                    .take_while(|(at, _)| *at <= to)
                    .map(|(_, name)| name.clone())
                    .collect();
                for name in due {
                    if let Some(known) = self.checks.nodes.get(&name) {
                        let state = state(&known.view, &known.outcome);
                        self.checks.set(&name, Some(state), &mut changed);
                    }
                }
            }
        }
        Some(changed)
    }

    /// Brings `sourced` up to the cluster's peerable nodes after the
    /// mesh-wide checks (`peered`), looking at `candidates` only (`None`:
    /// at every node). Returns the names whose node changed or came, and
    /// the Peers of the nodes that left.
    fn place(
        &mut self,
        peered: &BTreeMap<String, Arc<EligibleNode>>,
        candidates: Option<BTreeSet<String>>,
    ) -> (Vec<String>, Vec<Arc<DesiredPeer>>) {
        let candidates = candidates.unwrap_or_else(|| {
            let names = peered.keys().chain(self.sourced.keys());
            names.cloned().collect()
        });
        let mut touched = Vec::new();
        let mut dropped = Vec::new();
        for name in candidates {
            match (peered.get(&name), self.sourced.get(&name)) {
                (Some(node), Some(known)) if Arc::ptr_eq(&known.node, node) => {}
                (Some(node), known) => {
                    if let Some(before) = known.map(|known| known.node.clone()) {
                        self.account(&before, false);
                    }
                    self.account(node, true);
                    let entry = self.sourced.entry(name.clone());
                    entry
                        .and_modify(|entry| entry.node = node.clone())
                        .or_insert_with(|| Sourced {
                            node: node.clone(),
                            built: None,
                        });
                    touched.push(name);
                }
                (None, Some(_)) => {
                    if let Some(before) = self.sourced.remove(&name) {
                        self.account(&before.node, false);
                        dropped.extend(before.built.map(|built| built.peer));
                    }
                }
                (None, None) => {}
            }
        }
        (touched, dropped)
    }

    /// Counts `node`'s members and endpoint in, or out.
    fn account(&mut self, node: &EligibleNode, add: bool) {
        let members = node.members.len();
        self.members = match add {
            true => self.members + members,
            false => self.members.saturating_sub(members),
        };
        if let Some(ip) = node.endpoint.as_ref().and_then(node::endpoint_ip) {
            let count = self.endpoints.entry(ip).or_default();
            *count = match add {
                true => *count + 1,
                false => count.saturating_sub(1),
            };
            if *count == 0 {
                self.endpoints.remove(&ip);
            }
        }
    }

    /// The peerable entries, as `place` left them.
    fn peered(&self) -> impl Iterator<Item = &Arc<EligibleNode>> {
        self.sourced.values().map(|entry| &entry.node)
    }
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
        Err(spec_errors) => return spec_error_plan(spec, identity, spec_errors, observation),
    };
    let (conflicts, blocked) = conflict::find(&clusters);
    let context = MemoContext {
        identity: identity.clone(),
        clusters: clusters.clone(),
        blocked: blocked.clone(),
        settings: Settings {
            liveness: settings
                .liveness
                .map(|liveness| Liveness { now: 0, ..liveness }),
            ..settings.clone()
        },
        observed: clusters
            .iter()
            .map(|c| observation(&c.name).is_observed())
            .collect(),
    };
    let now = settings.liveness.map(|liveness| liveness.now);
    let clock_went_back = matches!((memo.now, now), (Some(before), Some(now)) if now < before);
    if memo.context.as_ref() != Some(&context) || clock_went_back {
        *memo = Memo {
            context: Some(context),
            ..Memo::default()
        };
    }
    let since = std::mem::replace(&mut memo.now, now);
    let mesh_label = identity.label_value();
    let mesh = mesh_label.as_str();
    let writers = Writers::new(identity, clusters.iter().map(|c| c.name.as_str()));
    let empty = ClusterView::default();
    let view_of = |name: &str| observation(name).view().unwrap_or(&empty);
    // The Peers each cluster holds, and who wrote them.
    let mut held_changes: HashMap<&str, Vec<String>> = HashMap::new();
    for cluster in &clusters {
        let known = memo.clusters.entry(cluster.name.clone()).or_default();
        let view = view_of(&cluster.name);
        let changed = known.hold(&view.peers, &writers, identity, &cluster.name);
        held_changes.insert(cluster.name.as_str(), changed);
    }
    // A cluster whose own operator of this mesh writes its Peers is left to
    // it: always with `LocalCluster` placement; from a hub once that
    // operator has taken the cluster's Peers over.
    let writers_of: BTreeMap<&str, ClusterWriter> = clusters
        .iter()
        .map(|target| {
            let writes_itself = memo
                .clusters
                .get(&target.name)
                .is_some_and(|m| m.own_operator > 0);
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
    let writer = |name: &str| writers_of.get(name).copied().unwrap_or_default();
    // The readable clusters this mesh writes.
    let owned: Vec<&ClusterSpec> = clusters
        .iter()
        .filter(|c| writer(&c.name) == ClusterWriter::ThisOperator)
        .filter(|c| observation(&c.name).is_observed())
        .collect();
    // The anchors the Peers this mesh keeps there carry, by source cluster,
    // for the anchor's stickiness.
    let mut anchors: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for target in &owned {
        let kept = memo
            .clusters
            .get(&target.name)
            .into_iter()
            .flat_map(|m| m.anchors.keys());
        for (source, node) in kept {
            anchors
                .entry(source.clone())
                .or_default()
                .insert(node.clone());
        }
    }
    // The nodes of `source` that have Peers this mesh keeps on the clusters
    // it writes: how a source that cannot be read is counted.
    let kept_nodes = |source: &str| {
        let mut nodes = BTreeSet::new();
        for target in &owned {
            let (view, known) = (view_of(&target.name), memo.clusters.get(&target.name));
            let of_source = view
                .peers
                .iter()
                .filter(|p| p.labels.get(CLUSTER_LABEL).is_some_and(|c| c == source));
            for peer in of_source {
                let writer =
                    known.map_or_else(|| writers.of(peer), |m| m.writer_of(peer, &writers));
                if keeps_written(identity, &target.name, &writer) {
                    nodes.extend(peer_nodes(peer).into_iter().map(str::to_owned));
                }
            }
        }
        nodes.len()
    };
    let registered_kept: BTreeMap<&str, usize> = clusters
        .iter()
        .filter(|c| !observation(&c.name).is_observed())
        .map(|c| (c.name.as_str(), kept_nodes(&c.name)))
        .collect();

    // Each cluster's nodes, checked where they changed.
    let mut eligible: claims::Eligible = BTreeMap::new();
    let mut changed: BTreeMap<&str, Option<Vec<Changed>>> = BTreeMap::new();
    for cluster in &clusters {
        let known = memo.clusters.entry(cluster.name.clone()).or_default();
        let nodes = &view_of(&cluster.name).nodes;
        let checked = known.check_nodes(cluster, nodes, &blocked, settings, since);
        eligible.insert(cluster.name.clone(), known.checks.eligible.clone());
        changed.insert(cluster.name.as_str(), checked);
    }
    let unresolvable_endpoints = unresolvable(&clusters, &memo.clusters, &settings.dns_answers);
    // Keys and ranges, settled by the nodes that came and went.
    if changed.values().any(Option::is_none) {
        memo.settled = claims::Settled::default();
    }
    let came_and_went: Vec<claims::CameOrWent> = changed
        .values()
        .flatten()
        .flatten()
        .map(|c| (c.was.as_ref(), c.is.as_ref()))
        .collect();
    let mut lost = claims::settle_again(&mut memo.settled, &mut eligible, &came_and_went);

    // Each cluster's peerable nodes after the mesh-wide checks: a
    // location's nodes are one Peer, its leader's.
    let mut skipped: BTreeMap<String, Vec<SkippedNode>> = BTreeMap::new();
    let mut touched: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut dropped: Vec<Arc<DesiredPeer>> = Vec::new();
    for cluster in &clusters {
        let known = memo.clusters.entry(cluster.name.clone()).or_default();
        let mut skips = known.checks.skipped();
        let losers = lost.remove(&cluster.name).unwrap_or_default();
        let peered = eligible.remove(&cluster.name).unwrap_or_default();
        let location = known.checks.granularity == Granularity::Location;
        let (peered, located) = match (location, observation(&cluster.name).view()) {
            (true, Some(view)) => {
                let nodes = Arc::unwrap_or_clone(peered);
                let (locations, lost) =
                    segment::by_location(&view.nodes, nodes, settings.liveness.as_ref());
                (Arc::new(locations), lost)
            }
            _ => (peered, Vec::new()),
        };
        let candidates = match changed.remove(cluster.name.as_str()).flatten() {
            Some(changes) if !location => {
                let names = changes.into_iter().map(|c| c.name);
                let losers_now = losers.iter().map(|s| s.name.clone());
                Some(
                    names
                        .chain(losers_now)
                        .chain(known.lost.drain(..))
                        .collect(),
                )
            }
            _ => None,
        };
        known.lost = losers.iter().map(|s| s.name.clone()).collect();
        let (names, gone) = known.place(&peered, candidates);
        touched.insert(cluster.name.as_str(), names);
        dropped.extend(gone);
        skips.extend(losers);
        skips.extend(located);
        skips.sort();
        skipped.insert(cluster.name.clone(), skips);
    }

    // Each cluster's anchor, and the ranges its Peer carries: its service
    // and additional CIDRs not in conflict, narrowed around every endpoint
    // of the mesh (no tunnel carries a tunnel's own packets: a host network
    // that holds the nodes' endpoints, say).
    let holes = |range: &IpNet| -> Vec<IpAddr> {
        let within = range.network()..=range.broadcast();
        let mut holes: Vec<IpAddr> = memo
            .clusters
            .values()
            .flat_map(|m| m.endpoints.range(within.clone()).map(|(ip, _)| *ip))
            .collect();
        holes.sort_unstable();
        holes.dedup();
        holes
    };
    let mut anchored: BTreeMap<&str, Option<(String, Vec<IpNet>)>> = BTreeMap::new();
    for cluster in &clusters {
        let Some(known) = memo.clusters.get(&cluster.name) else {
            continue;
        };
        let ranges: Vec<IpNet> = cluster
            .service
            .iter()
            .chain(&cluster.additional)
            .filter(|range| !blocked.contains(&(cluster.name.clone(), **range)))
            .flat_map(|range| cidr::exclude(*range, &holes(range)))
            .collect();
        let declared = cluster.service.iter().chain(&cluster.additional);
        let open = declared
            .clone()
            .any(|r| !blocked.contains(&(cluster.name.clone(), *r)));
        let held = anchors.get(&cluster.name);
        let anchor = open
            .then(|| anchor::choose(&known.sourced, held.unwrap_or(&BTreeSet::new())))
            .flatten();
        anchored.insert(cluster.name.as_str(), anchor.map(|name| (name, ranges)));
    }

    // A node's Peer is the same on every other cluster: built once, shared,
    // and built again only when its node or its anchor ranges change.
    let mut renamed: Vec<String> = Vec::new();
    for peer in dropped {
        if memo
            .wanted
            .get(&peer.name)
            .is_some_and(|p| Arc::ptr_eq(p, &peer))
        {
            memo.wanted.remove(&peer.name);
        }
        renamed.push(peer.name.clone());
    }
    for cluster in clusters
        .iter()
        .filter(|c| observation(&c.name).is_observed())
    {
        let known = memo.clusters.entry(cluster.name.clone()).or_default();
        let anchor = anchored.get(cluster.name.as_str()).cloned().flatten();
        let mut names = touched.remove(cluster.name.as_str()).unwrap_or_default();
        if known.anchor != anchor {
            names.extend(
                known
                    .anchor
                    .iter()
                    .chain(&anchor)
                    .map(|(name, _)| name.clone()),
            );
        }
        let mut rebuilt = false;
        for name in names {
            let Some(entry) = known.sourced.get_mut(&name) else {
                continue;
            };
            let ranges = anchor
                .as_ref()
                .filter(|(anchor, _)| *anchor == name)
                .map(|(_, ranges)| ranges.as_slice());
            if let Some(built) = &entry.built
                && Arc::ptr_eq(&built.node, &entry.node)
                && built.anchor_ranges.as_deref() == ranges
            {
                continue;
            }
            let peer = Arc::new(desired_peer(identity, mesh, cluster, &entry.node, ranges));
            memo.wanted.insert(peer.name.clone(), peer.clone());
            renamed.push(peer.name.clone());
            entry.built = Some(Built {
                node: entry.node.clone(),
                anchor_ranges: ranges.map(<[IpNet]>::to_vec),
                peer,
            });
            rebuilt = true;
        }
        known.anchor = anchor;
        if rebuilt || known.peers.len() != known.sourced.len() {
            let peers = known
                .sourced
                .values()
                .filter_map(|e| Some(e.built.as_ref()?.peer.clone()));
            known.peers = Arc::new(peers.collect());
        }
    }
    // The writes each cluster this mesh writes needs: the Peer names that
    // changed, wanted or held, compared again.
    let kept_source = |source: &str| {
        clusters.iter().any(|c| c.name == source) && !observation(source).is_observed()
    };
    let mut writes = BTreeMap::new();
    let mut peer_conflicts = Vec::new();
    let mut desired = BTreeMap::new();
    let mut sources: Vec<&ClusterSpec> = clusters
        .iter()
        .filter(|c| observation(&c.name).is_observed())
        .collect();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    for target in &clusters {
        if writer(&target.name) != ClusterWriter::ThisOperator {
            if let Some(known) = memo.clusters.get_mut(&target.name) {
                known.pending = None;
            }
            continue;
        }
        let wanted = sources
            .iter()
            .filter(|source| source.name != target.name)
            .filter_map(|source| Some(memo.clusters.get(&source.name)?.peers.clone()));
        desired.insert(
            target.name.clone(),
            DesiredPeers {
                sources: wanted.collect(),
            },
        );
        let observed = observation(&target.name).is_observed();
        let known = memo.clusters.entry(target.name.clone()).or_default();
        if !observed {
            known.pending = None;
            continue;
        }
        let names: BTreeSet<String> = match &known.pending {
            Some(_) => {
                let held = held_changes
                    .remove(target.name.as_str())
                    .unwrap_or_default();
                held.into_iter().chain(renamed.iter().cloned()).collect()
            }
            None => memo
                .wanted
                .keys()
                .chain(known.held.keys())
                .cloned()
                .collect(),
        };
        let pending = known.pending.get_or_insert_default();
        for name in names {
            let want = memo.wanted.get(&name).filter(|peer| {
                peer.labels.get(CLUSTER_LABEL).map(String::as_str) != Some(target.name.as_str())
            });
            let held = known.held.get(&name);
            let keeps = |held: &Held| keeps_written(identity, &target.name, &held.writer);
            let need = match (want, held) {
                (Some(want), None) => Some(Pending::Apply(want.clone())),
                (Some(_), Some(held)) if !keeps(held) => {
                    Some(Pending::Conflict(held.writer.clone()))
                }
                (Some(want), Some(held)) if matches(&held.peer, want) => None,
                (Some(want), Some(_)) => Some(Pending::Apply(want.clone())),
                (None, Some(held)) if keeps(held) => {
                    let source = held.peer.labels.get(CLUSTER_LABEL);
                    (!kept_source(source.map(String::as_str).unwrap_or_default())).then(|| {
                        Pending::Delete(PeerDeletion {
                            name: held.peer.name.clone(),
                            uid: held.peer.uid.clone(),
                            resource_version: held.peer.resource_version.clone(),
                        })
                    })
                }
                (None, _) => None,
            };
            match need {
                Some(need) => pending.insert(name, need),
                None => pending.remove(&name),
            };
        }
        let mut cluster_writes = ClusterWrites::default();
        for (name, need) in pending.iter() {
            match need {
                Pending::Apply(peer) => cluster_writes.apply.push(peer.clone()),
                Pending::Delete(deletion) => cluster_writes.delete.push(deletion.clone()),
                Pending::Conflict(writer) => peer_conflicts.push(PeerConflict {
                    cluster: target.name.clone(),
                    peer: name.clone(),
                    writer: writer.clone(),
                }),
            }
        }
        if !cluster_writes.is_empty() {
            writes.insert(target.name.clone(), cluster_writes);
        }
    }
    peer_conflicts.sort();

    let mut reports: Vec<ClusterReport> = clusters
        .iter()
        .map(|cluster| {
            let observation = observation(&cluster.name);
            let known = memo.clusters.get(&cluster.name);
            ClusterReport {
                name: cluster.name.clone(),
                unreachable: unreachable(observation),
                nodes: observation.view().map_or(0, |view| view.nodes.len()),
                registered_peers: match registered_kept.get(cluster.name.as_str()) {
                    Some(kept) => *kept,
                    None => known.map_or(0, |m| m.members),
                },
                skipped: skipped.remove(&cluster.name).unwrap_or_default(),
                anchor: anchored
                    .get(cluster.name.as_str())
                    .and_then(|anchor| Some(anchor.as_ref()?.0.clone())),
                writer: writer(&cluster.name),
                peered_back: None,
            }
        })
        .collect();
    // Whether the clusters that write their own Peers have peered ours.
    if reports
        .iter()
        .any(|r| r.writer != ClusterWriter::ThisOperator)
    {
        let local_nodes: BTreeSet<&str> = memo
            .clusters
            .get(&identity.hub_cluster)
            .into_iter()
            .flat_map(ClusterMemo::peered)
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
    }
    let recheck_at = settings.liveness.and_then(|liveness| {
        let from = i128::from(liveness.now) - i128::from(liveness.stale_after_seconds);
        let from = i64::try_from(from.max(i64::MIN.into())).ok()?;
        clusters
            .iter()
            .filter(|c| observation(&c.name).view().is_some())
            .filter_map(|c| {
                memo.clusters
                    .get(&c.name)?
                    .check_ins
                    .range((from, String::new())..)
                    .next()
            })
            .filter_map(|(at, _)| {
                let node = NodeView {
                    checked_in: Some(*at),
                    ..NodeView::default()
                };
                liveness.expires(&node)
            })
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

/// The plan of a spec in error: nothing is written, and the report says
/// why.
fn spec_error_plan<'a>(
    spec: &ClusterMeshSpec,
    identity: &MeshIdentity,
    spec_errors: Vec<SpecError>,
    observation: impl Fn(&str) -> &'a Observation,
) -> Plan {
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
    Plan {
        report: Report {
            local_cluster: identity.hub_cluster.clone(),
            spec_errors,
            clusters,
            ..Report::default()
        },
        ..Plan::default()
    }
}

/// Peerable nodes whose endpoint's name did not resolve at the latest
/// lookup (with `--endpoint-dns=resolve`, they keep the last address), by
/// cluster name, then node name.
fn unresolvable(
    clusters: &[ClusterSpec],
    memos: &HashMap<String, ClusterMemo>,
    answers: &DnsAnswers,
) -> Vec<String> {
    let mut names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let mut unresolvable = Vec::new();
    for cluster in names {
        let Some(known) = memos.get(cluster) else {
            continue;
        };
        for node in known
            .checks
            .named
            .iter()
            .filter_map(|n| known.checks.eligible.get(n))
        {
            let Some(name) = node.endpoint_name.as_ref() else {
                continue;
            };
            if let Some(error) = answers.get(name).and_then(|a| a.error.as_ref()) {
                unresolvable.push(format!("{cluster}/{}: {name} ({error})", node.name));
            }
        }
    }
    unresolvable
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
pub fn applied(view: &ClusterView, writes: &ClusterWrites) -> Shared<ObservedPeer> {
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
