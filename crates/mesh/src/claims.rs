//! Cross-node checks. Kilo indexes Peers by public key and WireGuard keeps
//! one peer per key and gives each allowed range to one peer only, so no two
//! Peers on any cluster may share a key or overlap in their ranges. When two
//! nodes of the mesh would, the older node keeps it (then the cluster's and
//! the node's names decide) and the other is skipped with a reason naming
//! the node that kept it.

use std::{collections::BTreeMap, sync::Arc};

use api::WireGuardKey;
use ipnet::IpNet;

use crate::{
    node::{EligibleNode, SkipReason},
    plan::SkippedNode,
};

/// A node of the mesh: its cluster and its name.
type Holder<'a> = (&'a str, &'a str);

/// Removes from `eligible` (per cluster, by node name) every node that
/// would share a key or a range with an older node anywhere in the mesh.
/// Returns the nodes removed, per cluster.
pub fn settle(
    eligible: &mut BTreeMap<String, BTreeMap<String, Arc<EligibleNode>>>,
) -> BTreeMap<String, Vec<SkippedNode>> {
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
            nodes.remove(&lost.name);
        }
        skipped.entry(cluster).or_default().push(lost);
    }
    skipped
}

/// Claimed ranges, pairwise disjoint, by family and first address: the one
/// that starts last at or before a range's end is the only one that can
/// overlap it.
#[derive(Default)]
struct Ranges<'a> {
    claimed: BTreeMap<(bool, u128), (u128, Holder<'a>)>,
}

impl<'a> Ranges<'a> {
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
    fn holder(&self, range: &IpNet) -> Option<Holder<'a>> {
        let (v6, first, last) = Self::bounds(range);
        let (&(family, _), (end, holder)) = self.claimed.range(..=(v6, last)).next_back()?;
        (family == v6 && *end >= first).then_some(*holder)
    }

    fn claim(&mut self, range: IpNet, holder: Holder<'a>) {
        let (v6, first, last) = Self::bounds(&range);
        self.claimed.insert((v6, first), (last, holder));
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
    ) -> BTreeMap<String, Arc<EligibleNode>> {
        nodes
            .iter()
            .map(|(name, key, pod, wireguard, created)| {
                let mut view = node(name, &[pod], wireguard);
                view.annotations
                    .insert(crate::node::annotation::KEY.into(), (*key).into());
                view.created = *created;
                let checked = check_full(&view, cluster, &Default::default(), false, None).unwrap();
                (name.to_string(), Arc::new(checked))
            })
            .collect()
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
