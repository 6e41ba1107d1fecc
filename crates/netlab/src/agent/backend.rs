//! What kg reads from its cluster: Nodes and Peers as Kilo's Kubernetes
//! backend translates them (`pkg/k8s/backend.go`: `translateNode`,
//! `translatePeer`, `Peer.Validate`), and the Peers kept the way kg's
//! informer handlers keep them (`Mesh.syncPeers`). Pure.

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

/// Kilo's annotations and the label it groups nodes by, as kg reads and
/// writes them.
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
    /// Present (whatever its value): the node leads its location.
    pub const LEADER: &str = "kilo.squat.ai/leader";
    /// Present (even empty): the node's location, over the topology label.
    pub const LOCATION: &str = "kilo.squat.ai/location";
    /// kg's default `--topology-label`.
    pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
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

    /// The IP, if the endpoint is one (`Endpoint.IP`: nil for a DNS name).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Ip(ip, _) => Some(*ip),
            Self::Dns(..) => None,
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KiloNode {
    pub name: String,
    pub endpoint: Option<Endpoint>,
    pub key: Option<String>,
    /// `spec.podCIDR`: the singular field; `podCIDRs` is not read.
    pub subnet: Option<IpNet>,
    /// The address with its interface's mask (`172.16.0.11/24`).
    pub internal_ip: Option<IpNet>,
    /// `force-internal-ip` is `""` or `-`: the node has no internal IP,
    /// and its agent must not write the one it found.
    pub no_internal_ip: bool,
    /// The `location` annotation, else the topology label, else `""`.
    pub location: String,
    /// The `leader` annotation is present.
    pub leader: bool,
    pub last_seen: i64,
    pub persistent_keepalive: u32,
}

impl KiloNode {
    /// `translateNode`, with `topology_label` kg's `--topology-label`.
    pub fn from_node(node: &Node, topology_label: &str) -> Self {
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        let get = |key: &str| {
            annotations
                .get(key)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let forced_internal_ip = annotations
            .get(annotation::FORCE_INTERNAL_IP)
            .map(String::as_str);
        let no_internal_ip = matches!(forced_internal_ip, Some("" | "-"));
        // An unparsable forced address falls back to the written one.
        let internal_ip = forced_internal_ip
            .and_then(|v| v.parse().ok())
            .or_else(|| get(annotation::INTERNAL_IP).and_then(|v| v.parse().ok()))
            .filter(|_| !no_internal_ip);
        let location = match annotations.get(annotation::LOCATION) {
            Some(location) => location.clone(),
            None => node
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(topology_label))
                .cloned()
                .unwrap_or_default(),
        };
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            endpoint: get(annotation::FORCE_ENDPOINT)
                .and_then(Endpoint::parse)
                .or_else(|| get(annotation::ENDPOINT).and_then(Endpoint::parse)),
            key: get(annotation::KEY)
                .filter(|k| valid_key(k))
                .map(str::to_owned),
            subnet: node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_deref())
                .and_then(|c| c.parse().ok()),
            internal_ip,
            no_internal_ip,
            location,
            leader: annotations.contains_key(annotation::LEADER),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    pub const NOW: i64 = 1_000_000;

    pub fn key(i: u8) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([i; 32])
    }

    /// A ready node `node-<i>` at `192.0.2.<i>` (public), pods `10.1.<i>.0/24`.
    pub fn node(name: &str, i: u8) -> KiloNode {
        KiloNode {
            name: name.into(),
            endpoint: Some(Endpoint::Ip(format!("192.0.2.{i}").parse().unwrap(), 51820)),
            key: Some(key(i)),
            subnet: Some(format!("10.1.{i}.0/24").parse().unwrap()),
            last_seen: NOW,
            ..KiloNode::default()
        }
    }

    pub fn peer(name: &str, i: u8, allowed: &[&str]) -> Peer {
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

    fn k8s_node(annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> Node {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        Node {
            metadata: ObjectMeta {
                name: Some("node-1".into()),
                annotations: map(annotations),
                labels: map(labels),
                ..Default::default()
            },
            ..Default::default()
        }
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
    fn the_location_annotation_wins_over_the_topology_label_even_when_empty() {
        let region = annotation::REGION_LABEL;
        let labelled = k8s_node(&[], &[(region, "eu")]);
        assert_eq!(KiloNode::from_node(&labelled, region).location, "eu");
        let both = k8s_node(&[(annotation::LOCATION, "dc-1")], &[(region, "eu")]);
        assert_eq!(KiloNode::from_node(&both, region).location, "dc-1");
        let empty = k8s_node(&[(annotation::LOCATION, "")], &[(region, "eu")]);
        assert_eq!(KiloNode::from_node(&empty, region).location, "");
        assert_eq!(KiloNode::from_node(&labelled, "other/label").location, "");
    }

    #[test]
    fn the_leader_annotation_counts_by_presence() {
        let region = annotation::REGION_LABEL;
        let forced = k8s_node(&[(annotation::LEADER, "false")], &[]);
        assert!(KiloNode::from_node(&forced, region).leader);
        assert!(!KiloNode::from_node(&k8s_node(&[], &[]), region).leader);
    }

    #[test]
    fn a_forced_internal_ip_wins_and_an_empty_one_means_none() {
        let region = annotation::REGION_LABEL;
        let internal = |annotations: &[(&str, &str)]| {
            let node = KiloNode::from_node(&k8s_node(annotations, &[]), region);
            (
                node.internal_ip.map(|ip| ip.to_string()),
                node.no_internal_ip,
            )
        };
        let written = (annotation::INTERNAL_IP, "172.16.0.11/24");
        assert_eq!(internal(&[written]), (Some("172.16.0.11/24".into()), false));
        assert_eq!(
            internal(&[written, (annotation::FORCE_INTERNAL_IP, "10.9.0.1/16")]),
            (Some("10.9.0.1/16".into()), false)
        );
        assert_eq!(
            internal(&[written, (annotation::FORCE_INTERNAL_IP, "not-an-ip")]),
            (Some("172.16.0.11/24".into()), false),
            "an unparsable forced address falls back to the written one"
        );
        for none in ["", "-"] {
            assert_eq!(
                internal(&[written, (annotation::FORCE_INTERNAL_IP, none)]),
                (None, true)
            );
        }
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
