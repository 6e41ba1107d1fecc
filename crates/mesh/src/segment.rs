//! Kilo's `location` granularity, seen from another cluster: only each
//! location's leader holds a WireGuard interface, so the location is one
//! Peer, with the leader's key and endpoint, routing every peered node of
//! the location (Kilo's `NewTopology`: nodes grouped in segments, one
//! leader each, chosen without election).

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::{
    node::{self, EligibleNode, Liveness, SkipReason, annotation},
    observe::NodeView,
    plan::SkippedNode,
};

/// Name of a location's Peer entry (the part after `<cluster>.` in the Peer
/// name): `location-<location>`, lower-cased, with characters a name cannot
/// hold replaced by `-` and then a hash of the location, so that two
/// locations never share a name.
pub fn location_name(location: &str) -> String {
    let clean: String = location
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_lowercase(),
            false => '-',
        })
        .collect();
    let clean = clean.trim_matches('-');
    let mut name = String::from("location");
    if !clean.is_empty() {
        name.push('-');
        name.push_str(clean);
    }
    if clean != location {
        let digest = Sha256::digest(location.as_bytes());
        name.push('-');
        name.extend(digest[..4].iter().map(|b| format!("{b:02x}")));
    }
    name
}

/// One of Kilo's segments: a location, or a node without internal IP (a
/// location of its own).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Location(String),
    Node(String),
}

/// Groups a `location` cluster's peerable nodes (`eligible`, checked and
/// settled) into one entry per segment, led by the node Kilo makes leader
/// among those it counts as ready (`nodes`). The other peerable nodes of a
/// segment whose leader is not peerable are returned as skipped.
pub fn by_location(
    nodes: &[Arc<NodeView>],
    mut eligible: BTreeMap<String, Arc<EligibleNode>>,
    liveness: Option<&Liveness>,
) -> (BTreeMap<String, Arc<EligibleNode>>, Vec<SkippedNode>) {
    let mut segments: BTreeMap<Segment, Vec<&NodeView>> = BTreeMap::new();
    for view in nodes.iter().filter(|n| node::kilo_ready(n, liveness)) {
        let segment = match node::internal_ip(view) {
            Some(_) => Segment::Location(node::location(view)),
            None => Segment::Node(view.name.clone()),
        };
        segments.entry(segment).or_default().push(view);
    }
    let mut entries = BTreeMap::new();
    let mut skipped = Vec::new();
    for (segment, mut members) in segments {
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let Some(leader) = leader(&members) else {
            continue;
        };
        let peered: Vec<Arc<EligibleNode>> = members
            .iter()
            .filter_map(|m| eligible.remove(&m.name))
            .collect();
        let Some(leading) = peered.iter().find(|n| n.name == leader.name) else {
            skipped.extend(peered.iter().map(|n| SkippedNode {
                name: n.name.clone(),
                reason: SkipReason::LeaderNotPeered {
                    leader: leader.name.clone(),
                },
            }));
            continue;
        };
        // The leader's WireGuard IP only: another member's is a leftover
        // of a time it led.
        let mut allowed: Vec<IpNet> = peered
            .iter()
            .flat_map(|n| {
                let own_wireguard_ip = n.wireguard_ip.filter(|_| n.name != leader.name);
                n.allowed_ips
                    .iter()
                    .filter(move |range| Some(**range) != own_wireguard_ip)
            })
            .copied()
            .collect();
        allowed.sort();
        allowed.dedup();
        let mut entry = EligibleNode::clone(leading);
        entry.allowed_ips = allowed;
        // The leader first: whose key and endpoint the Peer carries.
        entry.members = peered.iter().map(|n| n.name.clone()).collect();
        entry.members.sort_by_key(|name| *name != leader.name);
        if let Segment::Location(location) = &segment {
            entry.name = location_name(location);
        }
        entries.insert(entry.name.clone(), Arc::new(entry));
    }
    (entries, skipped)
}

/// Kilo's leader of a segment (members sorted by name): the first with the
/// `kilo.squat.ai/leader` annotation and a public endpoint IP, else the first
/// with the annotation, else the first with a public endpoint IP, else the
/// first.
fn leader<'a>(members: &[&'a NodeView]) -> Option<&'a NodeView> {
    let annotated = |n: &&&NodeView| n.annotations.contains_key(annotation::LEADER);
    let public = |n: &&&NodeView| public_endpoint(n);
    members
        .iter()
        .filter(annotated)
        .find(public)
        .or_else(|| members.iter().find(annotated))
        .or_else(|| members.iter().find(public))
        .or_else(|| members.first())
        .copied()
}

/// Whether the node's endpoint is an IP Kilo calls public (`isPublic`): not
/// RFC 1918 and not in `fd00::/16` (Kilo's comment says `/8`, its code
/// compares two bytes).
fn public_endpoint(node: &NodeView) -> bool {
    let get = |key: &str| node.annotations.get(key).map(|v| v.trim());
    let endpoint = get(annotation::FORCE_ENDPOINT)
        .filter(|v| !v.is_empty())
        .or_else(|| get(annotation::ENDPOINT));
    let ip = endpoint
        .and_then(crate::endpoint::parse)
        .as_ref()
        .and_then(node::endpoint_ip);
    // An IPv4-mapped IPv6 address counts as IPv4 (Go's `To4`).
    let ip = ip.map(|ip| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    });
    match ip {
        Some(IpAddr::V4(v4)) => !v4.is_private(),
        Some(IpAddr::V6(v6)) => v6.segments()[0] != 0xfd00,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use api::is_dns1123_subdomain;

    use super::*;
    use crate::{
        node::Granularity,
        node::tests::{node, plain_cluster as cluster},
        plan::Settings,
    };

    /// Node `i` of location `location`, with an internal IP, a distinct key
    /// and a WireGuard IP only when `leads` (as Kilo writes them).
    fn member(i: u8, location: &str, endpoint: &str, wireguard_ip: &str) -> NodeView {
        let mut n = node(
            &format!("node-{i}"),
            &[&format!("10.2.{i}.0/24")],
            wireguard_ip,
        );
        let key = api::fixtures::wireguard_key(2, i);
        n.annotations.insert(annotation::KEY.into(), key);
        n.annotations
            .insert(annotation::ENDPOINT.into(), endpoint.into());
        n.annotations
            .insert(annotation::INTERNAL_IP.into(), format!("172.16.0.{i}/24"));
        n.annotations
            .insert(annotation::LOCATION.into(), location.into());
        if wireguard_ip.is_empty() {
            n.annotations.remove(annotation::WIREGUARD_IP);
        }
        n
    }

    fn group(nodes: &[NodeView]) -> (BTreeMap<String, Arc<EligibleNode>>, Vec<SkippedNode>) {
        group_judged(nodes, None)
    }

    /// The plan's steps for a `location` cluster: liveness, checks, grouping.
    fn group_judged(
        nodes: &[NodeView],
        liveness: Option<&Liveness>,
    ) -> (BTreeMap<String, Arc<EligibleNode>>, Vec<SkippedNode>) {
        let settings = Settings::default();
        let nodes: Vec<Arc<NodeView>> = nodes.iter().cloned().map(Arc::new).collect();
        let eligible = nodes
            .iter()
            .filter(|n| liveness.is_none_or(|l| l.judge(n).is_none()))
            .filter_map(|n| {
                node::check(
                    n,
                    &cluster(),
                    &BTreeSet::new(),
                    Granularity::Location,
                    &settings,
                )
                .ok()
            })
            .map(|n| (n.name.clone(), Arc::new(n)))
            .collect();
        by_location(&nodes, eligible, liveness)
    }

    #[test]
    fn one_entry_per_location_with_the_leaders_key_and_every_members_ranges() {
        let (entries, skipped) = group(&[
            member(1, "rack-1", "192.0.2.11:51820", "10.100.1.1/24"),
            member(2, "rack-1", "192.0.2.12:51820", ""),
            member(3, "rack-2", "192.0.2.13:51820", "10.100.1.2/24"),
        ]);
        assert!(skipped.is_empty());
        let names: Vec<&str> = entries.keys().map(String::as_str).collect();
        assert_eq!(names, ["location-rack-1", "location-rack-2"]);
        let rack1 = &entries["location-rack-1"];
        assert_eq!(rack1.members, ["node-1", "node-2"]);
        assert_eq!(rack1.key.to_string(), api::fixtures::wireguard_key(2, 1));
        let allowed: Vec<String> = rack1.allowed_ips.iter().map(ToString::to_string).collect();
        assert_eq!(allowed, ["10.2.1.0/24", "10.2.2.0/24", "10.100.1.1/32"]);
    }

    #[test]
    fn the_leader_is_kilos_choice() {
        let private = |i| member(i, "rack", &format!("10.0.0.{i}:51820"), "");
        let public = |i| member(i, "rack", &format!("192.0.2.{i}:51820"), "");
        let annotated = |mut n: NodeView| {
            n.annotations
                .insert(annotation::LEADER.into(), "false".into());
            n
        };
        let leader_of = |nodes: &[NodeView]| {
            let views: Vec<&NodeView> = nodes.iter().collect();
            leader(&views).map(|n| n.name.clone())
        };
        // First by name, when nothing tells them apart.
        assert_eq!(
            leader_of(&[private(1), private(2)]).as_deref(),
            Some("node-1")
        );
        // A public endpoint first.
        assert_eq!(
            leader_of(&[private(1), public(2)]).as_deref(),
            Some("node-2")
        );
        // The annotation (even "false") before a public endpoint.
        assert_eq!(
            leader_of(&[annotated(private(1)), public(2)]).as_deref(),
            Some("node-1")
        );
        // Annotated and public before annotated only.
        assert_eq!(
            leader_of(&[annotated(private(1)), annotated(public(2))]).as_deref(),
            Some("node-2")
        );
    }

    #[test]
    fn a_leader_that_stopped_checking_in_hands_over_to_the_next() {
        let mut old = member(1, "rack", "192.0.2.11:51820", "10.100.1.1/24");
        old.checked_in = Some(1_000);
        let mut next = member(2, "rack", "192.0.2.12:51820", "");
        next.checked_in = Some(2_000);
        let nodes = [old, next];
        let liveness = Liveness {
            now: 2_010,
            stale_after_seconds: 90,
        };
        let (entries, _) = group_judged(&nodes, Some(&liveness));
        let rack = &entries["location-rack"];
        assert_eq!(rack.key.to_string(), api::fixtures::wireguard_key(2, 2));
        assert_eq!(rack.members, ["node-2"]);
        assert_eq!(rack.wireguard_ip, None, "until node-2's kg writes its own");
    }

    #[test]
    fn a_leader_that_cannot_be_peered_takes_its_location_out_with_a_reason() {
        let mut bad = member(1, "rack", "192.0.2.11:51820", "10.100.1.1/24");
        bad.pod_cidrs = vec!["10.9.0.0/24".into()];
        let (entries, skipped) = group(&[bad, member(2, "rack", "192.0.2.12:51820", "")]);
        assert!(entries.is_empty());
        assert_eq!(
            skipped,
            [SkippedNode {
                name: "node-2".into(),
                reason: SkipReason::LeaderNotPeered {
                    leader: "node-1".into()
                }
            }]
        );
    }

    #[test]
    fn a_node_without_internal_ip_is_a_location_of_its_own() {
        let mut alone = member(3, "rack", "192.0.2.13:51820", "10.100.1.2/24");
        alone.annotations.remove(annotation::INTERNAL_IP);
        let (entries, _) = group(&[
            member(1, "rack", "192.0.2.11:51820", "10.100.1.1/24"),
            alone,
        ]);
        let names: Vec<&str> = entries.keys().map(String::as_str).collect();
        assert_eq!(names, ["location-rack", "node-3"]);
    }

    #[test]
    fn location_names_are_valid_and_distinct() {
        assert_eq!(location_name("rack-1"), "location-rack-1");
        assert_eq!(location_name(""), "location");
        let odd = ["eu/West 1", "eu-west-1.", "EU-WEST-1", "_"];
        let names: BTreeSet<String> = odd.iter().map(|l| location_name(l)).collect();
        assert_eq!(names.len(), odd.len());
        for name in names.iter().chain([&location_name("rack-1")]) {
            assert!(is_dns1123_subdomain(&format!("cluster-b.{name}")), "{name}");
        }
    }
}
