//! Overlapping declared ranges. Traffic to an address inside two clusters'
//! ranges cannot be routed to both, so an overlapping range is not routed
//! and the overlap is reported; the rest of the mesh keeps working.
//!
//! The range that is wrong is blamed: when one cluster's nodes live in a
//! range (its pod or WireGuard range) and another cluster only declares an
//! overlapping one (a service or additional range), only the declared one
//! is left out, so one cluster's typo never takes another cluster's nodes
//! out of the mesh. Two node-backed ranges, or two declared ones, are both
//! left out: there is no telling which is wrong.

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::{
    cidr::overlaps,
    spec::{ClusterSpec, RangeKind},
};

/// Two declared ranges that overlap.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    pub first: DeclaredRange,
    pub second: DeclaredRange,
    /// The one left out, when only one is; `None`: both are.
    pub blamed: Option<DeclaredRange>,
}

/// A range as the spec declares it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeclaredRange {
    pub cluster: String,
    pub kind: RangeKind,
    pub range: IpNet,
}

impl std::fmt::Display for DeclaredRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.cluster, self.kind.field(), self.range)
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} overlaps {}", self.first, self.second)?;
        match &self.blamed {
            Some(blamed) => write!(
                f,
                " ({blamed} is not routed: the other cluster's nodes live in that range)"
            ),
            None => write!(f, " (neither is routed)"),
        }
    }
}

/// Whether a cluster's nodes live in ranges of this kind (their pods and
/// WireGuard IPs), rather than the range being only declared.
fn node_backed(kind: RangeKind) -> bool {
    matches!(kind, RangeKind::Pod | RangeKind::WireGuard)
}

/// Within one cluster, these kinds must not overlap each other.
fn clash_within(a: RangeKind, b: RangeKind) -> bool {
    use RangeKind::*;
    matches!(
        (a, b),
        (Pod, WireGuard)
            | (WireGuard, Pod)
            | (Pod, Service)
            | (Service, Pod)
            | (WireGuard, Service)
            | (Service, WireGuard)
    )
}

/// Every overlap between two clusters' ranges (any kinds) and inside one
/// cluster between its pod, WireGuard and service ranges; and the set of
/// (cluster, range) that must therefore not be advertised.
pub fn find(clusters: &[ClusterSpec]) -> (Vec<Conflict>, BTreeSet<(String, IpNet)>) {
    let declared: Vec<DeclaredRange> = clusters
        .iter()
        .flat_map(|c| {
            c.ranges().map(|(kind, range)| DeclaredRange {
                cluster: c.name.clone(),
                kind,
                range,
            })
        })
        .collect();
    let mut conflicts = Vec::new();
    let mut blocked = BTreeSet::new();
    for (i, a) in declared.iter().enumerate() {
        for b in &declared[i + 1..] {
            let across = a.cluster != b.cluster;
            if !(across || clash_within(a.kind, b.kind)) || !overlaps(&a.range, &b.range) {
                continue;
            }
            let blamed = match (node_backed(a.kind), node_backed(b.kind)) {
                (true, false) if across => Some(b.clone()),
                (false, true) if across => Some(a.clone()),
                _ => None,
            };
            match &blamed {
                Some(range) => {
                    blocked.insert((range.cluster.clone(), range.range));
                }
                None => {
                    blocked.insert((a.cluster.clone(), a.range));
                    blocked.insert((b.cluster.clone(), b.range));
                }
            }
            let (first, second) = if a <= b {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            };
            conflicts.push(Conflict {
                first,
                second,
                blamed,
            });
        }
    }
    conflicts.sort();
    (conflicts, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, pod: &str, wireguard: &str, service: Option<&str>) -> ClusterSpec {
        ClusterSpec {
            name: name.into(),
            local: false,
            pod: vec![pod.parse().unwrap()],
            wireguard: wireguard.parse().unwrap(),
            service: service.map(|s| s.parse().unwrap()),
            additional: vec![],
        }
    }

    #[test]
    fn a_shared_service_cidr_is_a_conflict_naming_both_clusters() {
        let clusters = [
            cluster(
                "cluster-a",
                "10.1.0.0/16",
                "10.200.0.0/24",
                Some("10.96.0.0/12"),
            ),
            cluster(
                "cluster-b",
                "10.2.0.0/16",
                "10.200.1.0/24",
                Some("10.96.0.0/12"),
            ),
        ];
        let (conflicts, blocked) = find(&clusters);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(
            conflicts[0].to_string(),
            "cluster-a serviceCIDR 10.96.0.0/12 overlaps cluster-b serviceCIDR 10.96.0.0/12 (neither is routed)"
        );
        assert!(blocked.contains(&("cluster-a".into(), "10.96.0.0/12".parse().unwrap())));
        assert!(blocked.contains(&("cluster-b".into(), "10.96.0.0/12".parse().unwrap())));
        assert_eq!(blocked.len(), 2, "pod and WireGuard ranges stay advertised");
    }

    #[test]
    fn the_spec_examples_wireguard_ranges_lie_inside_its_service_cidr() {
        // The brief's example: 10.100.x.0/24 is inside 10.96.0.0/12 (10.96-10.111).
        let clusters = [
            cluster(
                "cluster-a",
                "10.1.0.0/16",
                "10.100.0.0/24",
                Some("10.96.0.0/12"),
            ),
            cluster(
                "cluster-b",
                "10.2.0.0/16",
                "10.100.1.0/24",
                Some("10.96.0.0/12"),
            ),
        ];
        let (conflicts, blocked) = find(&clusters);
        let described: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
        assert!(described.contains(&"cluster-a wireguardCIDR 10.100.0.0/24 overlaps cluster-a serviceCIDR 10.96.0.0/12 (neither is routed)".into()), "{described:#?}");
        assert!(described.contains(&"cluster-a serviceCIDR 10.96.0.0/12 overlaps cluster-b wireguardCIDR 10.100.1.0/24 (cluster-a serviceCIDR 10.96.0.0/12 is not routed: the other cluster's nodes live in that range)".into()), "{described:#?}");
        assert!(
            !blocked.contains(&("cluster-a".into(), "10.1.0.0/16".parse().unwrap())),
            "pod ranges stay advertised"
        );
    }

    #[test]
    fn a_declared_range_over_another_clusters_nodes_is_the_only_one_left_out() {
        let a = cluster("a", "10.1.0.0/16", "10.101.0.0/24", None);
        let mut b = cluster("b", "10.2.0.0/16", "10.102.0.0/24", None);
        b.additional.push("10.0.0.0/8".parse().unwrap());
        let (conflicts, blocked) = find(&[a, b]);
        assert_eq!(
            blocked,
            BTreeSet::from([("b".to_owned(), "10.0.0.0/8".parse().unwrap())]),
            "a's pod and WireGuard ranges, and b's own, stay routed"
        );
        assert!(
            conflicts
                .iter()
                .all(|c| c.blamed.as_ref().is_some_and(|r| r.cluster == "b")),
            "{conflicts:?}"
        );
    }

    #[test]
    fn overlaps_inside_one_cluster_between_pod_wireguard_and_service_are_conflicts() {
        let (conflicts, _) = find(&[cluster("a", "10.0.0.0/8", "10.4.0.0/16", None)]);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].first.kind, RangeKind::Pod);
        assert_eq!(conflicts[0].second.kind, RangeKind::WireGuard);
    }

    #[test]
    fn ipv6_overlaps_are_found_and_families_never_clash() {
        let mut a = cluster("a", "10.1.0.0/16", "10.100.0.0/24", None);
        let mut b = cluster("b", "10.2.0.0/16", "10.100.1.0/24", None);
        a.pod.push("fd00:1::/48".parse().unwrap());
        b.pod.push("fd00:1:0:2::/64".parse().unwrap());
        let (conflicts, _) = find(&[a, b]);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(
            conflicts[0].first.range,
            "fd00:1::/48".parse::<IpNet>().unwrap()
        );
    }
}
