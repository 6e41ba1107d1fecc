//! Cross-node checks. Kilo indexes Peers by public key and WireGuard keeps
//! one peer per key and gives each allowed range to one peer only, so no two
//! Peers on any cluster may share a key or overlap in their ranges. When two
//! nodes of the mesh would, the older node keeps it (then the cluster's and
//! the node's names decide) and the other is skipped with a reason naming
//! the node that kept it.

use std::{collections::BTreeMap, sync::Arc};

use api::WireGuardKey;
use ipnet::IpNet;
use rustc_hash::FxHashMap;

use crate::{
    node::{EligibleNode, SkipReason},
    plan::{SkippedNode, address},
};

/// A node of the mesh: its cluster and its name.
type Holder<'a> = (&'a str, &'a str);

/// Every cluster's eligible nodes (or locations), by name.
pub type Eligible = BTreeMap<String, Arc<BTreeMap<String, Arc<EligibleNode>>>>;

/// The claims the pass before settled, to settle the next one by the nodes
/// that changed only. While no node of the mesh shares a key or a range
/// with another, the claims of the nodes that left are let go and those of
/// the nodes that came are checked against the rest; a node that would
/// take another's claim, or a mesh where some node already lost one, is
/// settled again whole, since which node keeps a claim then depends on age.
/// The first pass settles the mesh whole too.
#[derive(Debug)]
pub struct Settled {
    /// The nodes settled, by address (kept alive: the address is their
    /// holder in `keys` and `ranges`).
    nodes: FxHashMap<usize, Arc<EligibleNode>>,
    keys: BTreeMap<WireGuardKey, usize>,
    ranges: Ranges<usize>,
    /// Settle the whole mesh next: nothing is settled yet, or some node
    /// lost a claim.
    whole: bool,
}

impl Default for Settled {
    fn default() -> Self {
        Self {
            nodes: FxHashMap::default(),
            keys: BTreeMap::new(),
            ranges: Ranges::default(),
            whole: true,
        }
    }
}

impl Settled {
    /// Whether `node` may claim its key and ranges: none taken, and its own
    /// ranges apart.
    fn claimable(&self, node: &EligibleNode) -> bool {
        let apart = node.allowed_ips.iter().enumerate().all(|(i, a)| {
            node.allowed_ips[i + 1..]
                .iter()
                .all(|b| !a.contains(b) && !b.contains(a))
        });
        apart
            && !self.keys.contains_key(&node.key)
            && node
                .allowed_ips
                .iter()
                .all(|r| self.ranges.holder(r).is_none())
    }

    fn claim(&mut self, node: &Arc<EligibleNode>) {
        let holder = address(node);
        self.keys.insert(node.key.clone(), holder);
        for range in &node.allowed_ips {
            self.ranges.claim(*range, holder);
        }
        self.nodes.insert(holder, node.clone());
    }

    fn release(&mut self, node: &EligibleNode, holder: usize) {
        if self.keys.get(&node.key) == Some(&holder) {
            self.keys.remove(&node.key);
        }
        for range in &node.allowed_ips {
            self.ranges.release(range, holder);
        }
    }

    /// The claims of `eligible`, settled with no node skipped.
    fn of(eligible: &Eligible) -> Self {
        let mut settled = Self {
            whole: false,
            ..Self::default()
        };
        for node in eligible.values().flat_map(|nodes| nodes.values()) {
            if !settled.claimable(node) {
                return Self::default();
            }
            settled.claim(node);
        }
        settled
    }
}

/// A peerable node's entry at the pass before and now, when it changed.
pub type CameOrWent<'a> = (Option<&'a Arc<EligibleNode>>, Option<&'a Arc<EligibleNode>>);

/// [`settle`], by the nodes that changed since `before` where it can (see
/// [`Settled`]): `came_and_went` holds, per peerable node whose entry
/// changed since that pass, the entry it had and the one it has.
/// `before` becomes this pass's.
pub fn settle_again(
    before: &mut Settled,
    eligible: &mut Eligible,
    came_and_went: &[CameOrWent],
) -> BTreeMap<String, Vec<SkippedNode>> {
    if !before.whole {
        for (went, _) in came_and_went {
            let Some(holder) = went.map(address) else {
                continue;
            };
            if let Some(node) = before.nodes.remove(&holder) {
                before.release(&node, holder);
            }
        }
        let mut clean = true;
        for node in came_and_went.iter().filter_map(|(_, came)| *came) {
            if !before.nodes.contains_key(&address(node)) {
                if !before.claimable(node) {
                    clean = false;
                    break;
                }
                before.claim(node);
            }
        }
        if clean {
            return BTreeMap::new();
        }
    }
    let skipped = settle(eligible);
    *before = match skipped.is_empty() {
        true => Settled::of(eligible),
        false => Settled::default(),
    };
    skipped
}

/// Removes from `eligible` (per cluster, by node name) every node that
/// would share a key or a range with an older node anywhere in the mesh.
/// Returns the nodes removed, per cluster.
pub fn settle(eligible: &mut Eligible) -> BTreeMap<String, Vec<SkippedNode>> {
    let mut order: Vec<(i64, Holder, &EligibleNode)> = eligible
        .iter()
        .flat_map(|(cluster, nodes)| {
            nodes
                .values()
                .map(move |n| (n.created, (cluster.as_str(), n.name.as_str()), &**n))
        })
        .collect();
    order.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut keys: BTreeMap<&WireGuardKey, Holder> = BTreeMap::new();
    let mut ranges = Ranges::default();
    let mut losers: Vec<(String, SkippedNode)> = Vec::new();
    let named = |(cluster, name): Holder| format!("{cluster}/{name}");
    for (_, holder, node) in order {
        let reason = if let Some(older) = keys.get(&node.key) {
            Some(SkipReason::DuplicateKey(named(*older)))
        } else {
            node.allowed_ips
                .iter()
                .find_map(|range| ranges.holder(range).map(|older| (range, older)))
                .map(|(range, older)| {
                    if Some(*range) == node.wireguard_ip {
                        SkipReason::DuplicateWireGuardIP(named(older))
                    } else {
                        SkipReason::PodCIDROverlapsNode {
                            cidr: range.to_string(),
                            holder: named(older),
                        }
                    }
                })
        };
        match reason {
            Some(reason) => losers.push((
                holder.0.to_owned(),
                SkippedNode {
                    name: holder.1.to_owned(),
                    reason,
                },
            )),
            None => {
                keys.insert(&node.key, holder);
                for range in &node.allowed_ips {
                    ranges.claim(*range, holder);
                }
            }
        }
    }
    let mut skipped: BTreeMap<String, Vec<SkippedNode>> = BTreeMap::new();
    for (cluster, lost) in losers {
        if let Some(nodes) = eligible.get_mut(&cluster) {
            Arc::make_mut(nodes).remove(&lost.name);
        }
        skipped.entry(cluster).or_default().push(lost);
    }
    skipped
}

/// Claimed ranges, pairwise disjoint, by family and first address: the one
/// that starts last at or before a range's end is the only one that can
/// overlap it.
#[derive(Debug)]
struct Ranges<H> {
    claimed: BTreeMap<(bool, u128), (u128, H)>,
}

impl<H> Default for Ranges<H> {
    fn default() -> Self {
        Self {
            claimed: BTreeMap::new(),
        }
    }
}

impl<H: Copy + PartialEq> Ranges<H> {
    fn bounds(range: &IpNet) -> (bool, u128, u128) {
        match range {
            IpNet::V4(v4) => (
                false,
                u32::from(v4.network()).into(),
                u32::from(v4.broadcast()).into(),
            ),
            IpNet::V6(v6) => (true, v6.network().into(), v6.broadcast().into()),
        }
    }

    /// Who claimed a range overlapping `range`, if anyone.
    fn holder(&self, range: &IpNet) -> Option<H> {
        let (v6, first, last) = Self::bounds(range);
        let (&(family, _), (end, holder)) = self.claimed.range(..=(v6, last)).next_back()?;
        (family == v6 && *end >= first).then_some(*holder)
    }

    fn claim(&mut self, range: IpNet, holder: H) {
        let (v6, first, last) = Self::bounds(&range);
        self.claimed.insert((v6, first), (last, holder));
    }

    /// Lets go of `range`, if `holder` holds it.
    fn release(&mut self, range: &IpNet, holder: H) {
        let (v6, first, _) = Self::bounds(range);
        if self
            .claimed
            .get(&(v6, first))
            .is_some_and(|(_, h)| *h == holder)
        {
            self.claimed.remove(&(v6, first));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{node::tests::check_full, node::tests::node, spec::ClusterSpec};

    fn cluster(name: &str, pod: &str, wireguard: &str) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            local: false,
            pod: vec![pod.parse().unwrap()],
            wireguard: wireguard.parse().unwrap(),
            service: None,
            additional: vec![],
        }
    }

    fn eligible(
        cluster: &ClusterSpec,
        nodes: &[(&str, &str, &str, &str, i64)],
    ) -> Arc<BTreeMap<String, Arc<EligibleNode>>> {
        let nodes = nodes
            .iter()
            .map(|(name, key, pod, wireguard, created)| {
                let mut view = node(name, &[pod], wireguard);
                view.annotations
                    .insert(crate::node::annotation::KEY.into(), (*key).into());
                view.created = *created;
                let checked = check_full(&view, cluster, &Default::default(), false, None).unwrap();
                (name.to_string(), Arc::new(checked))
            })
            .collect();
        Arc::new(nodes)
    }

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K3: &str = "AgECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn the_older_node_keeps_a_key_an_ip_or_a_range_and_the_other_is_named() {
        let a = cluster("a", "10.1.0.0/16", "10.101.0.0/24");
        let b = cluster("b", "10.2.0.0/16", "10.102.0.0/24");
        let mut all = BTreeMap::from([
            (
                "a".to_owned(),
                eligible(&a, &[("old", K1, "10.1.0.0/24", "10.101.0.1/32", 10)]),
            ),
            (
                "b".to_owned(),
                eligible(
                    &b,
                    &[
                        // Same key as a/old, though older by name: created later.
                        ("aaa", K1, "10.2.9.0/24", "10.102.0.9/32", 20),
                        ("x", K2, "10.2.0.0/24", "10.102.0.1/32", 10),
                        ("y", K3, "10.2.0.0/25", "10.102.0.2/32", 11),
                    ],
                ),
            ),
        ]);
        let skipped = settle(&mut all);
        assert_eq!(all["a"].keys().collect::<Vec<_>>(), ["old"]);
        assert_eq!(all["b"].keys().collect::<Vec<_>>(), ["x"]);
        assert!(!skipped.contains_key("a"));
        let reasons: Vec<_> = skipped["b"]
            .iter()
            .map(|s| (s.name.as_str(), &s.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "y",
                    &SkipReason::PodCIDROverlapsNode {
                        cidr: "10.2.0.0/25".into(),
                        holder: "b/x".into()
                    }
                ),
                ("aaa", &SkipReason::DuplicateKey("a/old".into())),
            ]
        );
    }

    /// Cluster b's nodes, to change.
    fn nodes(all: &mut Eligible) -> &mut BTreeMap<String, Arc<EligibleNode>> {
        Arc::make_mut(all.get_mut("b").unwrap())
    }

    #[test]
    fn a_newcomer_is_settled_alone_unless_it_takes_an_older_nodes_claim() {
        let b = cluster("b", "10.2.0.0/16", "10.102.0.0/24");
        let node = |spec| eligible(&b, &[spec]).values().next().cloned().unwrap();
        let x = node(("x", K1, "10.2.0.0/24", "10.102.0.1/32", 10));
        let mut all = BTreeMap::from([(
            "b".to_owned(),
            Arc::new(BTreeMap::from([("x".to_owned(), x.clone())])),
        )]);
        let mut settled = Settled::default();
        assert!(settle_again(&mut settled, &mut all, &[(None, Some(&x))]).is_empty());
        assert!(!settled.whole, "a mesh without contest is remembered");
        // A newcomer that contests nothing: claims its own, x keeps its.
        let y = node(("y", K2, "10.2.1.0/24", "10.102.0.2/32", 5));
        nodes(&mut all).insert("y".into(), y.clone());
        assert!(settle_again(&mut settled, &mut all, &[(None, Some(&y))]).is_empty());
        assert!(!settled.whole);
        assert_eq!(settled.nodes.len(), 2);
        assert!(settled.nodes.contains_key(&address(&x)));
        // One that takes x's range, and is older: the whole mesh, by age.
        let z = node(("z", K3, "10.2.0.0/25", "10.102.0.3/32", 1));
        nodes(&mut all).insert("z".into(), z.clone());
        let skipped = settle_again(&mut settled, &mut all, &[(None, Some(&z))]);
        assert_eq!(skipped["b"][0].name, "x", "z is older");
        assert!(settled.whole, "contested: settled whole from now on");
        // x leaves: uncontested again.
        nodes(&mut all).remove("x");
        assert!(settle_again(&mut settled, &mut all, &[(Some(&x), None)]).is_empty());
        assert!(!settled.whole);
        // y leaves and comes back changed: its old claims go first.
        let y2 = node(("y", K2, "10.2.1.0/24", "10.102.0.2/32", 5));
        nodes(&mut all).insert("y".into(), y2.clone());
        assert!(settle_again(&mut settled, &mut all, &[(Some(&y), Some(&y2))]).is_empty());
        assert!(!settled.whole);
        assert!(settled.nodes.contains_key(&address(&y2)));
        assert!(!settled.nodes.contains_key(&address(&y)));
    }

    #[test]
    fn a_shared_wireguard_ip_is_named_as_such() {
        let b = cluster("b", "10.2.0.0/16", "10.102.0.0/24");
        let mut all = BTreeMap::from([(
            "b".to_owned(),
            eligible(
                &b,
                &[
                    ("x", K1, "10.2.0.0/24", "10.102.0.1/32", 1),
                    ("y", K2, "10.2.1.0/24", "10.102.0.1/32", 2),
                ],
            ),
        )]);
        let skipped = settle(&mut all);
        assert_eq!(
            skipped["b"][0].reason,
            SkipReason::DuplicateWireGuardIP("b/x".into())
        );
    }
}
