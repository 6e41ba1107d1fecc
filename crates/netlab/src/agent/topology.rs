//! What Kilo's `kg` computes from its cluster's Nodes and Peers, for
//! `--mesh-granularity=full`: which nodes are ready (`Node.Ready`), the
//! WireGuard IPs it allocates, the WireGuard peers (`Topology.Conf`), the
//! routes (`Routes`) and the NAT rules (`Topology.Rules`). Pure; the names in
//! the docs are Kilo's (pkg/mesh, pkg/k8s at 944dff57), and
//! `docs/netlab.md` lists every difference.
//!
//! Room for `location`: nodes are grouped in segments keyed like Kilo's
//! (`node:<name>`; a location would be `location:<name>` with a leader).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use api::Peer;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

/// Seconds after its last check-in that a node stops being ready
/// (`Node.Ready`: twice kg's 30 s check-in period).
pub const READY_WITHIN_SECONDS: i64 = 60;

/// Kilo's annotations, as kg reads and writes them.
pub mod annotation {
    pub const KEY: &str = "kilo.squat.ai/key";
    pub const ENDPOINT: &str = "kilo.squat.ai/endpoint";
    pub const FORCE_ENDPOINT: &str = "kilo.squat.ai/force-endpoint";
    pub const INTERNAL_IP: &str = "kilo.squat.ai/internal-ip";
    pub const FORCE_INTERNAL_IP: &str = "kilo.squat.ai/force-internal-ip";
    pub const WIREGUARD_IP: &str = "kilo.squat.ai/wireguard-ip";
    pub const LAST_SEEN: &str = "kilo.squat.ai/last-seen";
    pub const PERSISTENT_KEEPALIVE: &str = "kilo.squat.ai/persistent-keepalive";
    pub const GRANULARITY: &str = "kilo.squat.ai/granularity";
}

/// A UDP endpoint: an IP or a DNS name, and a port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Ip(IpAddr, u16),
    Dns(String, u16),
}

impl Endpoint {
    /// Go's `SplitHostPort` then an IP or a DNS name (`kilo.squat.ai/endpoint`).
    pub fn parse(value: &str) -> Option<Self> {
        let (host, port) = match value.strip_prefix('[') {
            Some(rest) => rest.split_once("]:")?,
            None => value.rsplit_once(':').filter(|(h, _)| !h.contains(':'))?,
        };
        let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
        match host.parse::<IpAddr>() {
            Ok(ip) => Some(Self::Ip(ip, port)),
            Err(_) if api::is_dns1123_subdomain(host) => Some(Self::Dns(host.to_owned(), port)),
            Err(_) => None,
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            Self::Ip(_, port) | Self::Dns(_, port) => *port,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(IpAddr::V6(ip), port) => write!(f, "[{ip}]:{port}"),
            Self::Ip(ip, port) => write!(f, "{ip}:{port}"),
            Self::Dns(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// A Node as kg sees it (`translateNode`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KiloNode {
    pub name: String,
    pub endpoint: Option<Endpoint>,
    pub key: Option<String>,
    /// `spec.podCIDR`: the singular field; `podCIDRs` is not read.
    pub subnet: Option<IpNet>,
    pub internal_ip: Option<IpNet>,
    pub last_seen: i64,
    pub persistent_keepalive: u32,
}

impl KiloNode {
    pub fn from_node(node: &Node) -> Self {
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        let get = |key: &str| {
            annotations
                .get(key)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let internal_ip = match annotations
            .get(annotation::FORCE_INTERNAL_IP)
            .map(String::as_str)
        {
            Some("" | "-") => None,
            Some(forced) => forced.parse().ok(),
            None => get(annotation::INTERNAL_IP).and_then(|v| v.parse().ok()),
        };
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            endpoint: get(annotation::FORCE_ENDPOINT)
                .or_else(|| get(annotation::ENDPOINT))
                .and_then(Endpoint::parse),
            key: get(annotation::KEY)
                .filter(|k| valid_key(k))
                .map(str::to_owned),
            subnet: node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_deref())
                .and_then(|c| c.parse().ok()),
            internal_ip,
            last_seen: get(annotation::LAST_SEEN)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            persistent_keepalive: get(annotation::PERSISTENT_KEEPALIVE)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }
    }

    /// `Node.Ready`: an endpoint, a key, a pod CIDR, and a recent check-in.
    pub fn ready(&self, now: i64) -> bool {
        self.endpoint.is_some()
            && self.key.is_some()
            && self.subnet.is_some()
            && now - self.last_seen < READY_WITHIN_SECONDS
    }
}

/// A valid Peer as kg keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KiloPeer {
    pub name: String,
    pub key: String,
    pub endpoint: Option<Endpoint>,
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: u32,
}

impl KiloPeer {
    /// `Peer.Validate`: `None` for a Peer kg ignores.
    pub fn from_peer(peer: &Peer) -> Option<Self> {
        let spec = &peer.spec;
        let allowed_ips = spec
            .allowed_ips
            .iter()
            .map(|ip| ip.parse::<IpNet>().ok())
            .collect::<Option<Vec<_>>>()?;
        let endpoint = match &spec.endpoint {
            None => None,
            Some(endpoint) => {
                let port = u16::try_from(endpoint.port).ok().filter(|p| *p > 0)?;
                let dns = endpoint.dns_or_ip.dns.as_deref().filter(|d| !d.is_empty());
                let ip = endpoint.dns_or_ip.ip.as_deref().filter(|i| !i.is_empty());
                if dns.is_some_and(|d| !api::is_dns1123_subdomain(d)) {
                    return None;
                }
                let ip = match ip {
                    Some(ip) => Some(ip.parse::<IpAddr>().ok()?),
                    None => None,
                };
                // Kilo prefers the DNS name when both are set.
                match (dns, ip) {
                    (Some(dns), _) => Some(Endpoint::Dns(dns.to_owned(), port)),
                    (None, Some(ip)) => Some(Endpoint::Ip(ip, port)),
                    (None, None) => return None,
                }
            }
        };
        let keepalive = spec.persistent_keepalive.unwrap_or(0);
        if keepalive < 0 || !valid_key(&spec.public_key) {
            return None;
        }
        Some(Self {
            name: peer.metadata.name.clone().unwrap_or_default(),
            key: spec.public_key.clone(),
            endpoint,
            allowed_ips,
            persistent_keepalive: u32::try_from(keepalive).unwrap_or(0),
        })
    }

    /// `mesh.Peer.Ready`: some allowed IPs and a key.
    pub fn ready(&self) -> bool {
        !self.allowed_ips.is_empty()
    }
}

fn valid_key(key: &str) -> bool {
    key.parse::<api::WireGuardKey>().is_ok()
}

/// One WireGuard `[Peer]` of the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireGuardPeer {
    pub key: String,
    pub endpoint: Option<Endpoint>,
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: u32,
}

/// A route on `kilo0`: via another segment's WireGuard IP, or a device route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub destination: IpNet,
    pub via: Option<IpAddr>,
}

/// What the local node must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// The local node's WireGuard IP with the subnet's mask: on `kilo0` and
    /// in its `kilo.squat.ai/wireguard-ip`.
    pub wireguard_cidr: IpNet,
    /// From the local node's endpoint (`handleLocal`), not from `--port`.
    pub listen_port: u16,
    pub peers: Vec<WireGuardPeer>,
    pub routes: Vec<Route>,
    /// nat POSTROUTING jumps to `KILO-NAT` (`-s <Peer range>`).
    pub nat_sources: Vec<IpNet>,
    /// `KILO-NAT` RETURN destinations, before the final MASQUERADE.
    pub nat_returns: Vec<IpNet>,
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

/// A segment: the nodes routed through one WireGuard peer. With `full`
/// granularity every node is its own segment, and its leader.
struct Segment<'a> {
    key: String,
    leader: &'a KiloNode,
    wireguard_ip: IpAddr,
}

/// `NewTopology` + `Conf` + `Routes` + `Rules` for `full` granularity.
/// `nodes` and `peers` are the ready ones; `peers` in name order.
pub fn full_mesh(
    hostname: &str,
    nodes: &[KiloNode],
    peers: &[KiloPeer],
    subnet: IpNet,
) -> Result<Topology, NotReady> {
    let mut sorted: Vec<&KiloNode> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut keyed: Vec<(String, &KiloNode)> = sorted
        .into_iter()
        .map(|n| (format!("node:{}", n.name), n))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    // Kilo's allocator: the network address + 1, + 2, ...
    let mut addresses = subnet.hosts();
    let mut segments = Vec::new();
    for (key, leader) in keyed {
        let wireguard_ip = addresses.next().ok_or(NotReady::OutOfAddresses)?;
        segments.push(Segment {
            key,
            leader,
            wireguard_ip,
        });
    }
    let local = segments
        .iter()
        .find(|s| s.leader.name == hostname)
        .ok_or(NotReady::LocalNodeNotReady)?;
    let listen_port = local
        .leader
        .endpoint
        .as_ref()
        .map(Endpoint::port)
        .unwrap_or(51820);
    let keepalive = local.leader.persistent_keepalive;
    let wireguard_cidr = IpNet::new(local.wireguard_ip, subnet.prefix_len())
        .map_err(|_| NotReady::OutOfAddresses)?;

    let mut wireguard_peers = Vec::new();
    let mut routes = Vec::new();
    let mut nat_returns = Vec::new();
    for segment in &segments {
        let node = segment.leader;
        let host = host_net(segment.wireguard_ip);
        let mut allowed: Vec<IpNet> = node.subnet.into_iter().collect();
        allowed.extend(node.internal_ip.map(|ip| host_net(ip.addr())));
        nat_returns.push(host);
        nat_returns.extend(allowed.iter().copied());
        if segment.key == local.key {
            continue;
        }
        for destination in &allowed {
            routes.push(Route {
                destination: *destination,
                via: Some(segment.wireguard_ip),
            });
        }
        allowed.push(host);
        wireguard_peers.push(WireGuardPeer {
            key: node.key.clone().unwrap_or_default(),
            endpoint: node.endpoint.clone(),
            allowed_ips: allowed,
            persistent_keepalive: keepalive,
        });
    }
    let mut nat_sources = Vec::new();
    for peer in deduplicate_peer_ips(peers) {
        for range in &peer.allowed_ips {
            routes.push(Route {
                destination: *range,
                via: None,
            });
            nat_sources.push(*range);
            nat_returns.push(*range);
        }
        wireguard_peers.push(WireGuardPeer {
            key: peer.key.clone(),
            endpoint: peer.endpoint.clone(),
            allowed_ips: peer.allowed_ips.clone(),
            persistent_keepalive: keepalive,
        });
    }
    Ok(Topology {
        wireguard_cidr,
        listen_port,
        peers: wireguard_peers,
        routes,
        nat_sources,
        nat_returns,
    })
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

/// Peers indexed by public key, fed by watch events the way kg's informer
/// handlers feed `Mesh.peers` (`peerBackend.Init`, `Mesh.syncPeers`).
#[derive(Debug, Default)]
pub struct PeerIndex {
    /// The last object seen for each name, valid or not (the informer's cache).
    seen: BTreeMap<String, Peer>,
    by_key: BTreeMap<String, KiloPeer>,
}

impl PeerIndex {
    /// A Peer added or updated. An invalid Peer is dropped without a word,
    /// and so is an update whose previous version was invalid: that Peer
    /// stays out until kg restarts.
    pub fn apply(&mut self, peer: Peer) {
        let name = peer.metadata.name.clone().unwrap_or_default();
        let new = KiloPeer::from_peer(&peer);
        let old = self.seen.insert(name, peer);
        let Some(new) = new else { return };
        let old = match old {
            None => None,
            Some(old) => match KiloPeer::from_peer(&old) {
                None => return,
                Some(old) => Some(old),
            },
        };
        if let Some(old) = old.filter(|old| old.key != new.key) {
            self.by_key.remove(&old.key);
        }
        self.by_key.insert(new.key.clone(), new);
    }

    /// A Peer deleted.
    pub fn delete(&mut self, peer: &Peer) {
        let name = peer.metadata.name.clone().unwrap_or_default();
        self.seen.remove(&name);
        if let Some(gone) = KiloPeer::from_peer(peer) {
            self.by_key.remove(&gone.key);
        }
    }

    /// After a re-list: anything not listed again was deleted meanwhile.
    pub fn retain_names(&mut self, listed: &BTreeSet<String>) {
        let gone: Vec<Peer> = self
            .seen
            .iter()
            .filter(|(name, _)| !listed.contains(*name))
            .map(|(_, p)| p.clone())
            .collect();
        for peer in gone {
            self.delete(&peer);
        }
    }

    /// The ready Peers, in name order.
    pub fn ready(&self) -> Vec<KiloPeer> {
        let mut ready: Vec<KiloPeer> = self
            .by_key
            .values()
            .filter(|p| p.ready())
            .cloned()
            .collect();
        ready.sort_by(|a, b| a.name.cmp(&b.name));
        ready
    }
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn key(i: u8) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([i; 32])
    }

    fn node(name: &str, i: u8) -> KiloNode {
        KiloNode {
            name: name.into(),
            endpoint: Some(Endpoint::Ip(format!("192.0.2.{i}").parse().unwrap(), 51820)),
            key: Some(key(i)),
            subnet: Some(format!("10.1.{i}.0/24").parse().unwrap()),
            internal_ip: None,
            last_seen: NOW,
            persistent_keepalive: 0,
        }
    }

    fn peer(name: &str, i: u8, allowed: &[&str]) -> Peer {
        Peer::new(
            name,
            api::PeerSpec {
                allowed_ips: allowed.iter().map(|s| (*s).to_owned()).collect(),
                endpoint: None,
                persistent_keepalive: Some(25),
                preshared_key: None,
                public_key: key(i),
            },
        )
    }

    #[test]
    fn addresses_follow_the_sorted_segment_keys_from_the_network_plus_one() {
        let subnet: IpNet = "10.101.0.0/24".parse().unwrap();
        let nodes = [node("node-2", 2), node("node-1", 1), node("node-10", 3)];
        let topology = full_mesh("node-2", &nodes, &[], subnet).unwrap();
        // "node:node-1" < "node:node-10" < "node:node-2"
        assert_eq!(topology.wireguard_cidr.to_string(), "10.101.0.3/24");
        let routes: Vec<String> = topology
            .routes
            .iter()
            .map(|r| format!("{} via {:?}", r.destination, r.via.map(|v| v.to_string())))
            .collect();
        assert_eq!(
            routes,
            [
                "10.1.1.0/24 via Some(\"10.101.0.1\")",
                "10.1.3.0/24 via Some(\"10.101.0.2\")"
            ]
        );
        assert_eq!(
            topology.peers[0]
                .allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.1.1.0/24", "10.101.0.1/32"]
        );
    }

    #[test]
    fn a_node_without_a_recent_check_in_is_not_ready() {
        let mut stale = node("node-1", 1);
        stale.last_seen = NOW - READY_WITHIN_SECONDS;
        assert!(!stale.ready(NOW));
        assert!(node("node-1", 1).ready(NOW));
        let mut singular_only = node("node-1", 1);
        singular_only.subnet = None;
        assert!(!singular_only.ready(NOW));
    }

    #[test]
    fn the_local_keepalive_applies_to_every_peer_and_duplicates_stay_with_the_first_name() {
        let mut local = node("node-1", 1);
        local.persistent_keepalive = 7;
        let mut index = PeerIndex::default();
        index.apply(peer("b.node-1", 20, &["10.2.1.0/24", "10.102.0.1/32"]));
        index.apply(peer("a.node-9", 21, &["10.2.1.0/24"]));
        let topology = full_mesh(
            "node-1",
            &[local],
            &index.ready(),
            "10.101.0.0/24".parse().unwrap(),
        )
        .unwrap();
        let peers: Vec<(String, Vec<String>, u32)> = topology
            .peers
            .iter()
            .map(|p| {
                (
                    p.key.clone(),
                    p.allowed_ips.iter().map(ToString::to_string).collect(),
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
    fn peers_are_indexed_by_key_and_an_invalid_version_blocks_later_updates() {
        let mut index = PeerIndex::default();
        index.apply(peer("x", 1, &["10.2.0.0/24"]));
        index.apply(peer("y", 1, &["10.3.0.0/24"]));
        assert_eq!(index.ready().len(), 1, "one key, one peer");
        let mut invalid = peer("z", 2, &["not-a-cidr"]);
        index.apply(invalid.clone());
        assert_eq!(index.ready().len(), 1);
        invalid.spec.allowed_ips = vec!["10.4.0.0/24".into()];
        index.apply(invalid);
        assert_eq!(
            index.ready().len(),
            1,
            "an update from invalid to valid is dropped"
        );
        index.retain_names(&BTreeSet::from(["z".to_owned()]));
        assert!(index.ready().is_empty());
    }

    #[test]
    fn endpoints_parse_as_kilo_writes_them() {
        assert_eq!(
            Endpoint::parse("192.0.2.1:51820")
                .map(|e| e.to_string())
                .as_deref(),
            Some("192.0.2.1:51820")
        );
        assert_eq!(
            Endpoint::parse("[2001:db8::1]:51820")
                .map(|e| e.to_string())
                .as_deref(),
            Some("[2001:db8::1]:51820")
        );
        assert!(matches!(
            Endpoint::parse("node.example.com:1"),
            Some(Endpoint::Dns(..))
        ));
        assert_eq!(Endpoint::parse("192.0.2.1"), None);
        assert_eq!(Endpoint::parse("2001:db8::1:51820"), None);
    }
}
