//! The anchor: the one node of a cluster whose Peer also routes the
//! cluster's service and additional CIDRs. It is never a separate Peer:
//! WireGuard keeps one peer per public key, so two Peers with one key would
//! overwrite each other's routes.

use std::collections::{BTreeMap, BTreeSet};

use crate::node::EligibleNode;

/// Chooses the anchor among `eligible` nodes. Sticky: a node that is anchor
/// now (`current`, read from the Peers written before) stays anchor while it
/// is eligible. Otherwise Ready nodes come first, then Kilo leaders, then the
/// lowest name.
pub fn choose<N: AsRef<EligibleNode>>(
    eligible: &BTreeMap<String, N>,
    current: &BTreeSet<String>,
) -> Option<String> {
    if let Some(kept) = current.iter().find(|name| eligible.contains_key(*name)) {
        return Some(kept.clone());
    }
    eligible
        .values()
        .map(AsRef::as_ref)
        .min_by_key(|n| (!n.ready, !n.leader, &n.name))
        .map(|n| n.name.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::node::tests::{check_full, node, plain_cluster};

    fn eligible(nodes: &[(&str, bool, bool)]) -> BTreeMap<String, Arc<EligibleNode>> {
        let cluster = plain_cluster();
        nodes
            .iter()
            .enumerate()
            .map(|(i, (name, ready, leader))| {
                let mut view = node(
                    name,
                    &[&format!("10.2.{i}.0/24")],
                    &format!("10.100.1.{}/24", i + 1),
                );
                view.ready = *ready;
                if *leader {
                    view.annotations
                        .insert("kilo.squat.ai/leader".into(), "true".into());
                }
                let node = check_full(&view, &cluster, &BTreeSet::new(), false, None).unwrap();
                (name.to_string(), Arc::new(node))
            })
            .collect()
    }

    #[test]
    fn ready_then_leader_then_lowest_name() {
        let none = BTreeSet::new();
        assert_eq!(
            choose(
                &eligible(&[("a", false, true), ("b", true, false), ("c", true, true)]),
                &none
            ),
            Some("c".into())
        );
        assert_eq!(
            choose(&eligible(&[("a", false, true), ("b", true, false)]), &none),
            Some("b".into())
        );
        assert_eq!(
            choose(&eligible(&[("b", true, false), ("a", true, false)]), &none),
            Some("a".into())
        );
        assert_eq!(
            choose(&BTreeMap::<String, Arc<EligibleNode>>::new(), &none),
            None
        );
    }

    #[test]
    fn the_current_anchor_stays_while_eligible() {
        let nodes = eligible(&[("a", true, true), ("z", false, false)]);
        assert_eq!(
            choose(&nodes, &BTreeSet::from(["z".to_owned()])),
            Some("z".into())
        );
        assert_eq!(
            choose(&nodes, &BTreeSet::from(["gone".to_owned()])),
            Some("a".into())
        );
    }
}
