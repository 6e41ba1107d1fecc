//! What Kilo's `kg` computes from its cluster's ready Nodes and Peers: the
//! segments and their leaders (`NewTopology`, `findLeader`), the WireGuard
//! IPs it allocates (the allocator of `pkg/mesh/ip.go`), and for the local
//! node its WireGuard config (`Topology.Conf`), its routes (`Routes`, as with
//! `--local=true --encapsulate=never`) and its NAT rules (`Topology.Rules`
//! with `--cni=false`). Pure; the names are Kilo's (pkg/mesh at 944dff57;
//! `cross` from its unmerged PR #490), and `docs/netlab.md` lists every
//! difference.
//!
//! A segment is the set of nodes behind one WireGuard peer, led by one of
//! them; only leaders hold WireGuard peers:
//! - `full`: every node is a segment of its own, keyed `node:<name>`;
//! - `location`: the nodes of a location share a segment keyed
//!   `location:<location>`, but a node without an internal IP is a segment
//!   of its own;
//! - `cross`: every node is a segment of its own, and remembers its location:
//!   nodes of one location are not WireGuard peers of each other, they reach
//!   each other's pods over their internal IPs.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use super::backend::{Endpoint, KiloNode, KiloPeer};

/// kg's `--mesh-granularity`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Granularity {
    /// One segment per location (kg's default).
    #[default]
    Location,
    /// One segment per node.
    Full,
    /// One segment per node, no tunnel inside a location (Kilo PR #490).
    Cross,
}

impl Granularity {
    /// The flag's value, and what kg writes in `kilo.squat.ai/granularity`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Location => "location",
            Self::Full => "full",
            Self::Cross => "cross",
        }
    }
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Granularity {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        [Self::Location, Self::Full, Self::Cross]
            .into_iter()
            .find(|g| g.as_str() == value)
            .ok_or_else(|| {
                format!(
                    "mesh granularity {value} unknown; possible values are: location, full, cross"
                )
            })
    }
}

/// Kilo's `isPublic`: not RFC 1918 and, for IPv6, not in `fd00::/16` (the
/// code tests the first two bytes). An IPv4-mapped IPv6 address counts as
/// IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(a == 10 || (a == 172 && b & 0xf0 == 16) || (a == 192 && b == 168))
        }
        IpAddr::V6(v6) => {
            let [a, b, ..] = v6.octets();
            !(a == 0xfd && b == 0)
        }
    }
}

/// One of Kilo's segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// `location:<location>` or `node:<name>`; segments are sorted, and
    /// given WireGuard IPs, in key order.
    pub key: String,
    /// `cross` only (PR #490's `nodeLocation`): `location:<location>`.
    /// Segments with the same one are not WireGuard peers of each other.
    pub location: Option<String>,
    /// In name order.
    pub nodes: Vec<&'a KiloNode>,
    /// Index in `nodes` of the node that holds the segment's WireGuard peer.
    pub leader: usize,
    pub wireguard_ip: IpAddr,
}

impl Segment<'_> {
    pub fn leader(&self) -> &KiloNode {
        // `segments` makes no empty segment and picks an index within it.
        self.nodes[self.leader]
    }

    /// The allowed IPs of the segment's WireGuard peer: each node's pod CIDR
    /// then internal IP as a /32, then the leader's WireGuard IP as a /32.
    pub fn allowed_ips(&self) -> Vec<IpNet> {
        let mut allowed: Vec<IpNet> = self
            .nodes
            .iter()
            .flat_map(|n| n.subnet.into_iter().chain(n.internal_ip.map(host)))
            .collect();
        allowed.push(IpNet::from(self.wireguard_ip));
        allowed
    }

    fn contains(&self, name: &str) -> bool {
        self.nodes.iter().any(|n| n.name == name)
    }
}

/// Why there is nothing to apply yet.
#[derive(Debug, PartialEq, Eq)]
pub enum NotReady {
    LocalNodeNotReady,
    OutOfAddresses,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LocalNodeNotReady => write!(
                f,
                "the local node is not ready (no check-in yet, or no key, endpoint or podCIDR)"
            ),
            Self::OutOfAddresses => write!(f, "ran out of IP addresses in --subnet"),
        }
    }
}

impl std::error::Error for NotReady {}

/// `NewTopology`'s grouping: the ready `nodes` in segments sorted by key,
/// each with its leader (`findLeader`) and its WireGuard IP from `subnet`.
pub fn segments(
    granularity: Granularity,
    nodes: &[KiloNode],
    subnet: IpNet,
) -> Result<Vec<Segment<'_>>, NotReady> {
    let mut grouped: BTreeMap<String, (Option<String>, Vec<&KiloNode>)> = BTreeMap::new();
    for node in nodes {
        let (key, location) = placement(granularity, node);
        grouped
            .entry(key)
            .or_insert_with(|| (location, Vec::new()))
            .1
            .push(node);
    }
    grouped
        .into_iter()
        .enumerate()
        .map(|(index, (key, (location, mut nodes)))| {
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Segment {
                key,
                location,
                leader: find_leader(&nodes),
                nodes,
                wireguard_ip: allocated(subnet, index).ok_or(NotReady::OutOfAddresses)?,
            })
        })
        .collect()
}

/// The segment key of `node` and, in `cross`, its location.
fn placement(granularity: Granularity, node: &KiloNode) -> (String, Option<String>) {
    let own = format!("node:{}", node.name);
    let location = format!("location:{}", node.location);
    match (granularity, node.internal_ip.is_some()) {
        (Granularity::Full, _) | (Granularity::Location | Granularity::Cross, false) => (own, None),
        (Granularity::Location, true) => (location, None),
        (Granularity::Cross, true) => (own, Some(location)),
    }
}

/// `findLeader` over a segment's nodes in name order: the first with the
/// `leader` annotation and a public endpoint IP, else the first with the
/// annotation, else the first with a public endpoint IP, else the first.
pub fn find_leader(nodes: &[&KiloNode]) -> usize {
    let public = |n: &&KiloNode| {
        n.endpoint
            .as_ref()
            .and_then(Endpoint::ip)
            .is_some_and(is_public)
    };
    nodes
        .iter()
        .position(|n| n.leader && public(n))
        .or_else(|| nodes.iter().position(|n| n.leader))
        .or_else(|| nodes.iter().position(public))
        .unwrap_or(0)
}

/// Kilo's allocator: the `index`-th address after the subnet's network
/// address (so from network + 1 up to its last address, broadcast included).
fn allocated(subnet: IpNet, index: usize) -> Option<IpAddr> {
    let offset = u128::try_from(index).ok()?.checked_add(1)?;
    let ip = match subnet.network() {
        IpAddr::V4(network) => {
            let ip = u128::from(u32::from(network)).checked_add(offset)?;
            IpAddr::V4(u32::try_from(ip).ok()?.into())
        }
        IpAddr::V6(network) => IpAddr::V6(u128::from(network).checked_add(offset)?.into()),
    };
    subnet.contains(&ip).then_some(ip)
}

/// One WireGuard `[Peer]` of the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireGuardPeer {
    pub key: String,
    pub endpoint: Option<Endpoint>,
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: u32,
}

/// What a leader holds on its WireGuard interface (`Topology.Conf`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireGuardConf {
    /// The segment's WireGuard IP with the subnet's mask: on the interface
    /// and in the node's `kilo.squat.ai/wireguard-ip`.
    pub address: IpNet,
    /// From the local node's endpoint (`handleLocal`), not from `--port`.
    pub listen_port: u16,
    pub peers: Vec<WireGuardPeer>,
}

/// The interface a route leaves by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteDevice {
    /// The WireGuard interface (`kilo0`).
    WireGuard,
    /// The interface that holds the local node's internal IP.
    Private,
}

/// A `proto static` route (`onlink` when it has a gateway).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub destination: IpNet,
    pub via: Option<IpAddr>,
    pub device: RouteDevice,
    /// The preferred source: the local node's internal IP, on a leader's
    /// routes through WireGuard.
    pub source: Option<IpAddr>,
}

/// What the local node must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// `Some` on a segment leader: the WireGuard interface is up with this
    /// config. `None`: the interface is set down and left as it is.
    pub wireguard: Option<WireGuardConf>,
    /// The local node's internal IP: [`RouteDevice::Private`] routes leave
    /// by the interface that holds it.
    pub private_ip: Option<IpAddr>,
    pub routes: Vec<Route>,
    /// nat POSTROUTING jumps to `KILO-NAT` (`-s <Peer range>`).
    pub nat_sources: Vec<IpNet>,
    /// `KILO-NAT` RETURN destinations, before the final MASQUERADE.
    pub nat_returns: Vec<IpNet>,
}

impl Topology {
    /// What the node writes in `kilo.squat.ai/wireguard-ip`: its address
    /// with the subnet's mask on a leader, nothing on the others.
    pub fn wireguard_ip(&self) -> Option<IpNet> {
        self.wireguard.as_ref().map(|w| w.address)
    }
}

/// `NewTopology` + `Conf` + `Routes` + `Rules` for the node `hostname`.
/// `nodes` and `peers` are the ready ones.
pub fn topology(
    granularity: Granularity,
    hostname: &str,
    nodes: &[KiloNode],
    peers: &[KiloPeer],
    subnet: IpNet,
) -> Result<Topology, NotReady> {
    let segments = segments(granularity, nodes, subnet)?;
    let local_segment = segments
        .iter()
        .position(|s| s.contains(hostname))
        .ok_or(NotReady::LocalNodeNotReady)?;
    let local_node = segments[local_segment]
        .nodes
        .iter()
        .copied()
        .find(|n| n.name == hostname)
        .ok_or(NotReady::LocalNodeNotReady)?;
    let view = View {
        segments,
        local_segment,
        local_node,
        peers: deduplicate_peer_ips(peers),
    };
    let wireguard = match view.is_leader() {
        true => Some(view.conf(subnet.prefix_len())?),
        false => None,
    };
    let routes = match view.is_leader() {
        true => view.leader_routes(),
        false => view.follower_routes(),
    };
    let (nat_sources, nat_returns) = view.nat();
    Ok(Topology {
        wireguard,
        private_ip: local_node.internal_ip.map(|ip| ip.addr()),
        routes,
        nat_sources,
        nat_returns,
    })
}

/// The cluster as the local node sees it.
struct View<'a> {
    segments: Vec<Segment<'a>>,
    local_segment: usize,
    local_node: &'a KiloNode,
    /// In name order, identical allowed IPs removed.
    peers: Vec<KiloPeer>,
}

impl View<'_> {
    fn local(&self) -> &Segment<'_> {
        &self.segments[self.local_segment]
    }

    fn is_leader(&self) -> bool {
        self.local().leader().name == self.local_node.name
    }

    fn local_ip(&self) -> Option<IpAddr> {
        self.local_node.internal_ip.map(|ip| ip.addr())
    }

    /// Reached over the private network rather than WireGuard: the local
    /// segment and, in `cross`, the segments of the same location.
    fn is_near(&self, segment: &Segment<'_>) -> bool {
        let local = self.local();
        segment.key == local.key || (local.location.is_some() && segment.location == local.location)
    }

    /// `Topology.Conf`: a peer per segment not near, then one per Peer;
    /// every peer gets the local node's keepalive.
    fn conf(&self, prefix_len: u8) -> Result<WireGuardConf, NotReady> {
        let keepalive = self.local_node.persistent_keepalive;
        let segments = self
            .segments
            .iter()
            .filter(|s| !self.is_near(s))
            .map(|s| WireGuardPeer {
                key: s.leader().key.clone().unwrap_or_default(),
                endpoint: s.leader().endpoint.clone(),
                allowed_ips: s.allowed_ips(),
                persistent_keepalive: keepalive,
            });
        let peers = self.peers.iter().map(|p| WireGuardPeer {
            key: p.key.clone(),
            endpoint: p.endpoint.clone(),
            allowed_ips: p.allowed_ips.clone(),
            persistent_keepalive: keepalive,
        });
        Ok(WireGuardConf {
            address: IpNet::new(self.local().wireguard_ip, prefix_len)
                .map_err(|_| NotReady::OutOfAddresses)?,
            listen_port: self
                .local_node
                .endpoint
                .as_ref()
                .map_or(51820, Endpoint::port),
            peers: segments.chain(peers).collect(),
        })
    }

    /// `Routes` on a leader: near nodes' pod CIDRs via their internal IPs;
    /// the other segments' pod CIDRs and internal IPs via their WireGuard
    /// IP; every Peer range straight into WireGuard.
    fn leader_routes(&self) -> Vec<Route> {
        let source = self.local_ip();
        let mut routes = Vec::new();
        for segment in &self.segments {
            if self.is_near(segment) {
                // A node without internal IP is in a segment of its own.
                if let Some(own) = source {
                    routes.extend(self.near_routes(segment, own));
                }
                continue;
            }
            let through_wireguard = |destination| Route {
                destination,
                via: Some(segment.wireguard_ip),
                device: RouteDevice::WireGuard,
                source,
            };
            // An internal IP that is the leader's endpoint stays outside
            // the tunnel, or the tunnel would carry itself.
            let endpoint_ip = segment.leader().endpoint.as_ref().and_then(Endpoint::ip);
            for node in &segment.nodes {
                routes.extend(node.subnet.map(through_wireguard));
                let internal = node.internal_ip.filter(|ip| Some(ip.addr()) != endpoint_ip);
                routes.extend(internal.map(host).map(through_wireguard));
            }
        }
        routes.extend(self.peer_ranges().map(|destination| Route {
            destination,
            via: None,
            device: RouteDevice::WireGuard,
            source,
        }));
        routes
    }

    /// `Routes` on a non-leader (`location` only): everything beyond the
    /// location via the leader's internal IP; the WireGuard IPs of every
    /// segment too; the location's pod CIDRs via each node's internal IP.
    fn follower_routes(&self) -> Vec<Route> {
        let local = self.local();
        // Every node of a `location:` segment has an internal IP; a
        // non-leader is always in one.
        let (Some(gateway), Some(own)) = (local.leader().internal_ip, self.local_ip()) else {
            return Vec::new();
        };
        let via_leader = |destination| Route {
            destination,
            via: Some(gateway.addr()),
            device: RouteDevice::Private,
            source: None,
        };
        let mut routes = Vec::new();
        for segment in &self.segments {
            routes.push(via_leader(IpNet::from(segment.wireguard_ip)));
            if segment.key == local.key {
                routes.extend(self.near_routes(segment, own));
                continue;
            }
            routes.extend(
                segment
                    .nodes
                    .iter()
                    .filter_map(|n| n.subnet)
                    .map(via_leader),
            );
            routes.extend(
                segment
                    .nodes
                    .iter()
                    .filter_map(|n| n.internal_ip)
                    .map(host)
                    .map(via_leader),
            );
        }
        routes.extend(self.peer_ranges().map(via_leader));
        routes
    }

    /// kg's `--local` routes: the pod CIDR of each other node of `segment`
    /// via its internal IP (`own` is the local node's).
    fn near_routes<'s>(
        &self,
        segment: &'s Segment<'_>,
        own: IpAddr,
    ) -> impl Iterator<Item = Route> + 's {
        segment.nodes.iter().filter_map(move |node| {
            let internal = node.internal_ip?.addr();
            (internal != own).then_some(Route {
                destination: node.subnet?,
                via: Some(internal),
                device: RouteDevice::Private,
                source: None,
            })
        })
    }

    /// `Topology.Rules` with `--cni=false`: what comes from a Peer's ranges
    /// is masqueraded unless it goes to a segment's or a Peer's range.
    fn nat(&self) -> (Vec<IpNet>, Vec<IpNet>) {
        let mut returns = Vec::new();
        for segment in &self.segments {
            returns.push(IpNet::from(segment.wireguard_ip));
            for node in &segment.nodes {
                returns.extend(node.subnet);
                returns.extend(node.internal_ip.map(host));
            }
        }
        let sources: Vec<IpNet> = self.peer_ranges().collect();
        returns.extend(sources.iter().copied());
        (sources, returns)
    }

    fn peer_ranges(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied())
    }
}

/// `deduplicatePeerIPs`: an allowed IP written as the same string in two
/// Peers stays with the first by name. Overlaps that are not identical
/// strings, and overlaps with nodes' ranges, are kept.
fn deduplicate_peer_ips(peers: &[KiloPeer]) -> Vec<KiloPeer> {
    let mut sorted: Vec<KiloPeer> = peers.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut seen = BTreeSet::new();
    for peer in &mut sorted {
        peer.allowed_ips.retain(|ip| seen.insert(ip.to_string()));
    }
    sorted
}

/// The address alone, as a /32 or /128 (`oneAddressCIDR`).
fn host(ip: IpNet) -> IpNet {
    IpNet::from(ip.addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::backend::{
        PeerIndex,
        tests::{NOW, key, node, peer},
    };

    fn subnet() -> IpNet {
        "10.102.0.0/24".parse().unwrap()
    }

    /// `node(name, i)` in `location`, with the internal IP `172.18.0.<i>/24`.
    fn located(name: &str, i: u8, location: &str) -> KiloNode {
        KiloNode {
            location: location.into(),
            internal_ip: Some(format!("172.18.0.{i}/24").parse().unwrap()),
            ..node(name, i)
        }
    }

    fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
        items.into_iter().map(|i| i.to_string()).collect()
    }

    fn routes(topology: &Topology) -> Vec<String> {
        topology
            .routes
            .iter()
            .map(|r| {
                let mut line = r.destination.to_string();
                if let Some(via) = r.via {
                    line.push_str(&format!(" via {via}"));
                }
                line.push_str(match r.device {
                    RouteDevice::WireGuard => " dev kilo0",
                    RouteDevice::Private => " dev private",
                });
                if let Some(source) = r.source {
                    line.push_str(&format!(" src {source}"));
                }
                line
            })
            .collect()
    }

    fn peers(topology: &Topology) -> Vec<(String, Vec<String>)> {
        topology
            .wireguard
            .iter()
            .flat_map(|w| &w.peers)
            .map(|p| (p.key.clone(), strings(&p.allowed_ips)))
            .collect()
    }

    fn leaders<'a>(segments: &'a [Segment<'_>]) -> Vec<(&'a str, &'a str)> {
        segments
            .iter()
            .map(|s| (s.key.as_str(), s.leader().name.as_str()))
            .collect()
    }

    /// Two locations of two nodes in cluster-b: node-1 (forced leader) and
    /// node-2 in `loc-1`, node-3 and node-4 in `loc-2`.
    fn two_locations() -> Vec<KiloNode> {
        let mut first = located("node-1", 1, "loc-1");
        first.leader = true;
        vec![
            first,
            located("node-2", 2, "loc-1"),
            located("node-3", 3, "loc-2"),
            located("node-4", 4, "loc-2"),
        ]
    }

    #[test]
    fn granularities_parse_as_kg_spells_them() {
        for granularity in [Granularity::Location, Granularity::Full, Granularity::Cross] {
            assert_eq!(granularity.as_str().parse(), Ok(granularity));
        }
        assert!("Full".parse::<Granularity>().is_err());
        assert_eq!(Granularity::default(), Granularity::Location);
    }

    #[test]
    fn public_means_not_rfc1918_and_not_fd00_slash_16() {
        let cases = [
            ("10.0.0.1", false),
            ("172.16.0.1", false),
            ("172.31.255.1", false),
            ("172.15.0.1", true),
            ("172.32.0.1", true),
            ("192.168.1.1", false),
            ("192.0.2.11", true),
            ("::ffff:10.0.0.1", false),
            ("fd00::1", false),
            ("fd12::1", true),
            ("fc00::1", true),
            ("2001:db8::1", true),
        ];
        for (ip, public) in cases {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }

    #[test]
    fn the_leader_is_the_first_annotated_public_node_then_annotated_then_public_then_first() {
        let private = |name: &str, i: u8| KiloNode {
            endpoint: Some(Endpoint::Ip(format!("10.0.0.{i}").parse().unwrap(), 51820)),
            ..node(name, i)
        };
        let annotated = |mut n: KiloNode| {
            n.leader = true;
            n
        };
        let dns = KiloNode {
            endpoint: Some(Endpoint::Dns("node.example.com".into(), 51820)),
            ..node("a", 9)
        };
        let cases: [(Vec<KiloNode>, usize); 5] = [
            (vec![private("a", 1), private("b", 2)], 0),
            (vec![private("a", 1), node("b", 2), node("c", 3)], 1),
            (
                vec![private("a", 1), annotated(private("b", 2)), node("c", 3)],
                1,
            ),
            (
                vec![
                    annotated(private("a", 1)),
                    node("b", 2),
                    annotated(node("c", 3)),
                ],
                2,
            ),
            // A DNS endpoint is never public.
            (vec![dns, private("b", 2)], 0),
        ];
        for (nodes, leader) in cases {
            let refs: Vec<&KiloNode> = nodes.iter().collect();
            assert_eq!(find_leader(&refs), leader, "{nodes:?}");
        }
    }

    #[test]
    fn addresses_follow_the_sorted_segment_keys_from_the_network_plus_one() {
        let nodes = [node("node-2", 2), node("node-1", 1), node("node-10", 3)];
        let topology = topology(Granularity::Full, "node-2", &nodes, &[], subnet()).unwrap();
        // "node:node-1" < "node:node-10" < "node:node-2"
        assert_eq!(
            topology.wireguard_ip().map(|ip| ip.to_string()),
            Some("10.102.0.3/24".into())
        );
        assert_eq!(
            routes(&topology),
            [
                "10.1.1.0/24 via 10.102.0.1 dev kilo0",
                "10.1.3.0/24 via 10.102.0.2 dev kilo0"
            ]
        );
        assert_eq!(
            peers(&topology)[0].1,
            ["10.1.1.0/24", "10.102.0.1/32"],
            "pod CIDR, then WireGuard IP"
        );
    }

    #[test]
    fn the_allocator_runs_to_the_last_address_of_the_subnet_then_fails() {
        let small: IpNet = "10.102.0.0/30".parse().unwrap();
        let three = [node("a", 1), node("b", 2), node("c", 3)];
        let segments = segments(Granularity::Full, &three, small).unwrap();
        assert_eq!(
            strings(segments.iter().map(|s| s.wireguard_ip)),
            ["10.102.0.1", "10.102.0.2", "10.102.0.3"]
        );
        let four = [node("a", 1), node("b", 2), node("c", 3), node("d", 4)];
        assert_eq!(
            super::segments(Granularity::Full, &four, small),
            Err(NotReady::OutOfAddresses)
        );
        let v6: IpNet = "fd10::/64".parse().unwrap();
        assert_eq!(
            allocated(v6, 0).map(|ip| ip.to_string()),
            Some("fd10::1".into())
        );
    }

    #[test]
    fn the_local_keepalive_applies_to_every_peer_and_duplicates_stay_with_the_first_name() {
        let mut local = node("node-1", 1);
        local.persistent_keepalive = 7;
        let mut index = PeerIndex::default();
        index.apply(peer("b.node-1", 20, &["10.2.1.0/24", "10.102.0.1/32"]));
        index.apply(peer("a.node-9", 21, &["10.2.1.0/24"]));
        let topology = topology(
            Granularity::Full,
            "node-1",
            &[local],
            &index.ready(),
            subnet(),
        )
        .unwrap();
        let conf = topology.wireguard.unwrap();
        let peers: Vec<(String, Vec<String>, u32)> = conf
            .peers
            .iter()
            .map(|p| {
                (
                    p.key.clone(),
                    strings(&p.allowed_ips),
                    p.persistent_keepalive,
                )
            })
            .collect();
        assert_eq!(
            peers,
            [
                (key(21), vec!["10.2.1.0/24".to_owned()], 7),
                (key(20), vec!["10.102.0.1/32".to_owned()], 7)
            ]
        );
    }

    #[test]
    fn locations_group_nodes_with_internal_ips_and_the_others_stand_alone() {
        let mut nodes = two_locations();
        nodes.push(KiloNode {
            location: "loc-1".into(),
            ..node("node-5", 5)
        });
        nodes.push(located("node-6", 6, ""));
        let segments = segments(Granularity::Location, &nodes, subnet()).unwrap();
        assert_eq!(
            leaders(&segments),
            [
                ("location:", "node-6"),
                ("location:loc-1", "node-1"),
                ("location:loc-2", "node-3"),
                ("node:node-5", "node-5"),
            ]
        );
        assert_eq!(
            strings(segments.iter().map(|s| s.wireguard_ip)),
            ["10.102.0.1", "10.102.0.2", "10.102.0.3", "10.102.0.4"]
        );
    }

    #[test]
    fn a_location_leader_peers_with_the_other_locations_and_routes_its_own_over_internal_ips() {
        let mut index = PeerIndex::default();
        index.apply(peer(
            "cluster-c.node-1",
            20,
            &["10.3.1.0/24", "10.103.0.1/32"],
        ));
        let topology = topology(
            Granularity::Location,
            "node-1",
            &two_locations(),
            &index.ready(),
            subnet(),
        )
        .unwrap();
        assert_eq!(
            topology.wireguard_ip().map(|ip| ip.to_string()),
            Some("10.102.0.1/24".into())
        );
        assert_eq!(
            peers(&topology),
            [
                (
                    key(3),
                    strings([
                        "10.1.3.0/24",
                        "172.18.0.3/32",
                        "10.1.4.0/24",
                        "172.18.0.4/32",
                        "10.102.0.2/32"
                    ])
                ),
                (key(20), strings(["10.3.1.0/24", "10.103.0.1/32"])),
            ]
        );
        assert_eq!(
            routes(&topology),
            [
                "10.1.2.0/24 via 172.18.0.2 dev private",
                "10.1.3.0/24 via 10.102.0.2 dev kilo0 src 172.18.0.1",
                "172.18.0.3/32 via 10.102.0.2 dev kilo0 src 172.18.0.1",
                "10.1.4.0/24 via 10.102.0.2 dev kilo0 src 172.18.0.1",
                "172.18.0.4/32 via 10.102.0.2 dev kilo0 src 172.18.0.1",
                "10.3.1.0/24 dev kilo0 src 172.18.0.1",
                "10.103.0.1/32 dev kilo0 src 172.18.0.1",
            ]
        );
        assert_eq!(
            strings(&topology.nat_sources),
            ["10.3.1.0/24", "10.103.0.1/32"]
        );
        assert_eq!(
            strings(&topology.nat_returns),
            [
                "10.102.0.1/32",
                "10.1.1.0/24",
                "172.18.0.1/32",
                "10.1.2.0/24",
                "172.18.0.2/32",
                "10.102.0.2/32",
                "10.1.3.0/24",
                "172.18.0.3/32",
                "10.1.4.0/24",
                "172.18.0.4/32",
                "10.3.1.0/24",
                "10.103.0.1/32",
            ]
        );
    }

    #[test]
    fn a_location_non_leader_has_no_wireguard_and_routes_everything_through_its_leader() {
        let mut index = PeerIndex::default();
        index.apply(peer("cluster-c.node-1", 20, &["10.3.1.0/24"]));
        let topology = topology(
            Granularity::Location,
            "node-4",
            &two_locations(),
            &index.ready(),
            subnet(),
        )
        .unwrap();
        assert_eq!(topology.wireguard, None);
        assert_eq!(
            topology.private_ip.map(|ip| ip.to_string()),
            Some("172.18.0.4".into())
        );
        assert_eq!(
            routes(&topology),
            [
                "10.102.0.1/32 via 172.18.0.3 dev private",
                "10.1.1.0/24 via 172.18.0.3 dev private",
                "10.1.2.0/24 via 172.18.0.3 dev private",
                "172.18.0.1/32 via 172.18.0.3 dev private",
                "172.18.0.2/32 via 172.18.0.3 dev private",
                "10.102.0.2/32 via 172.18.0.3 dev private",
                "10.1.3.0/24 via 172.18.0.3 dev private",
                "10.3.1.0/24 via 172.18.0.3 dev private",
            ]
        );
        assert_eq!(strings(&topology.nat_sources), ["10.3.1.0/24"]);
    }

    #[test]
    fn when_the_leader_stops_checking_in_the_next_node_leads_with_the_same_address() {
        let mut nodes = two_locations();
        let leader_of_loc_1 = |nodes: &[KiloNode], now: i64| {
            let ready: Vec<KiloNode> = nodes.iter().filter(|n| n.ready(now)).cloned().collect();
            let node_2 = topology(Granularity::Location, "node-2", &ready, &[], subnet()).unwrap();
            let node_3 = topology(Granularity::Location, "node-3", &ready, &[], subnet()).unwrap();
            (
                node_2.wireguard_ip().map(|ip| ip.to_string()),
                peers(&node_3),
            )
        };
        assert_eq!(
            leader_of_loc_1(&nodes, NOW),
            (
                None,
                vec![(
                    key(1),
                    strings([
                        "10.1.1.0/24",
                        "172.18.0.1/32",
                        "10.1.2.0/24",
                        "172.18.0.2/32",
                        "10.102.0.1/32"
                    ])
                )]
            )
        );

        // node-1's agent dies: its last check-in ages past 60 s while the
        // others go on checking in.
        let later = NOW + 61;
        for node in nodes.iter_mut().filter(|n| n.name != "node-1") {
            node.last_seen = later;
        }
        assert_eq!(
            leader_of_loc_1(&nodes, later),
            (
                Some("10.102.0.1/24".into()),
                vec![(
                    key(2),
                    strings(["10.1.2.0/24", "172.18.0.2/32", "10.102.0.1/32"])
                )]
            ),
            "node-2 leads loc-1, node-1's ranges are gone"
        );

        // Back, node-1 leads again: its annotation wins.
        nodes[0].last_seen = later;
        assert_eq!(leader_of_loc_1(&nodes, later).0, None);
    }

    #[test]
    fn an_internal_ip_that_is_the_leaders_endpoint_is_not_routed_through_the_tunnel() {
        let mut remote = located("node-2", 2, "loc-2");
        remote.endpoint = Some(Endpoint::Ip("172.18.0.2".parse().unwrap(), 51820));
        let nodes = [located("node-1", 1, "loc-1"), remote];
        let topology = topology(Granularity::Location, "node-1", &nodes, &[], subnet()).unwrap();
        assert_eq!(
            routes(&topology),
            ["10.1.2.0/24 via 10.102.0.2 dev kilo0 src 172.18.0.1"]
        );
        assert_eq!(
            peers(&topology)[0].1,
            ["10.1.2.0/24", "172.18.0.2/32", "10.102.0.2/32"],
            "the allowed IPs keep it"
        );
    }

    #[test]
    fn cross_makes_every_node_a_leader_peered_only_with_other_locations() {
        let mut nodes = two_locations();
        // No internal IP: reachable only through WireGuard, so a peer of all.
        nodes.push(KiloNode {
            location: "loc-1".into(),
            ..node("node-5", 5)
        });
        let mut index = PeerIndex::default();
        index.apply(peer("cluster-c.node-1", 20, &["10.3.1.0/24"]));
        let ready = index.ready();
        let of = |name: &str| topology(Granularity::Cross, name, &nodes, &ready, subnet()).unwrap();
        let peer_keys = |topology: &Topology| {
            peers(topology)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };

        let node_2 = of("node-2");
        assert_eq!(
            node_2.wireguard_ip().map(|ip| ip.to_string()),
            Some("10.102.0.2/24".into()),
            "its own address: segments node:node-1 … node:node-5"
        );
        assert_eq!(peer_keys(&node_2), [key(3), key(4), key(5), key(20)]);
        assert_eq!(
            routes(&node_2),
            [
                "10.1.1.0/24 via 172.18.0.1 dev private",
                "10.1.3.0/24 via 10.102.0.3 dev kilo0 src 172.18.0.2",
                "172.18.0.3/32 via 10.102.0.3 dev kilo0 src 172.18.0.2",
                "10.1.4.0/24 via 10.102.0.4 dev kilo0 src 172.18.0.2",
                "172.18.0.4/32 via 10.102.0.4 dev kilo0 src 172.18.0.2",
                "10.1.5.0/24 via 10.102.0.5 dev kilo0 src 172.18.0.2",
                "10.3.1.0/24 dev kilo0 src 172.18.0.2",
            ]
        );
        assert_eq!(peer_keys(&of("node-3")), [key(1), key(2), key(5), key(20)]);
        assert_eq!(
            peer_keys(&of("node-5")),
            [key(1), key(2), key(3), key(4), key(20)]
        );
    }
}
