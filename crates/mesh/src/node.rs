//! Node eligibility: whether a node can be peered, and what its Peer routes.

use std::collections::BTreeSet;

use api::{PeerEndpoint, WireGuardKey};
use ipnet::IpNet;

use crate::{
    cidr::{contains, host_route, parse_canonical},
    endpoint,
    observe::NodeView,
    spec::ClusterSpec,
};

/// Kilo's node annotations the plan reads.
pub mod annotation {
    pub const KEY: &str = "kilo.squat.ai/key";
    pub const ENDPOINT: &str = "kilo.squat.ai/endpoint";
    pub const FORCE_ENDPOINT: &str = "kilo.squat.ai/force-endpoint";
    pub const WIREGUARD_IP: &str = "kilo.squat.ai/wireguard-ip";
    pub const INTERNAL_IP: &str = "kilo.squat.ai/internal-ip";
    pub const FORCE_INTERNAL_IP: &str = "kilo.squat.ai/force-internal-ip";
    pub const PERSISTENT_KEEPALIVE: &str = "kilo.squat.ai/persistent-keepalive";
    pub const LEADER: &str = "kilo.squat.ai/leader";
    pub const GRANULARITY: &str = "kilo.squat.ai/granularity";
}

/// Why a node is not peered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    MissingKey,
    InvalidKey(String),
    MissingEndpoint,
    InvalidEndpoint(String),
    MissingPodCIDR,
    InvalidPodCIDR(String),
    PodCIDROutsideCluster(String),
    MissingWireGuardIP,
    InvalidWireGuardIP(String),
    WireGuardIPOutsideCluster(String),
    /// The cluster's Kilo runs with `--mesh-granularity=location`.
    LocationGranularity,
    /// Every range the node would route overlaps another cluster's.
    RangesInConflict,
    /// An older node (cluster/node) has the same WireGuard public key.
    DuplicateKey(String),
    /// An older node (cluster/node) has the same WireGuard IP.
    DuplicateWireGuardIP(String),
    /// The pod CIDR overlaps one of an older node (cluster/node).
    PodCIDROverlapsNode {
        cidr: String,
        holder: String,
    },
    /// Its endpoint lies in a range its Peer would route: the tunnel's own
    /// packets would be sent into the tunnel.
    EndpointInsideRoutes {
        endpoint: String,
        range: String,
    },
}

impl SkipReason {
    /// CamelCase reason for status and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingKey => "MissingKey",
            Self::InvalidKey(_) => "InvalidKey",
            Self::MissingEndpoint => "MissingEndpoint",
            Self::InvalidEndpoint(_) => "InvalidEndpoint",
            Self::MissingPodCIDR => "MissingPodCIDR",
            Self::InvalidPodCIDR(_) => "InvalidPodCIDR",
            Self::PodCIDROutsideCluster(_) => "PodCIDROutsideCluster",
            Self::MissingWireGuardIP => "MissingWireGuardIP",
            Self::InvalidWireGuardIP(_) => "InvalidWireGuardIP",
            Self::WireGuardIPOutsideCluster(_) => "WireGuardIPOutsideCluster",
            Self::LocationGranularity => "LocationGranularity",
            Self::RangesInConflict => "RangesInConflict",
            Self::DuplicateKey(_) => "DuplicateKey",
            Self::DuplicateWireGuardIP(_) => "DuplicateWireGuardIP",
            Self::PodCIDROverlapsNode { .. } => "PodCIDROverlapsNode",
            Self::EndpointInsideRoutes { .. } => "EndpointInsideRoutes",
        }
    }

    /// What is wrong with node `node` of cluster `cluster`, and the fix.
    pub fn message(&self, cluster: &str, node: &str) -> String {
        let it = format!("node {node} of cluster {cluster}");
        match self {
            Self::MissingKey => {
                format!("{it} has no kilo.squat.ai/key annotation: is Kilo running on it?")
            }
            Self::InvalidKey(why) => {
                format!("{it}: kilo.squat.ai/key is not a WireGuard public key ({why})")
            }
            Self::MissingEndpoint => {
                format!(
                    "{it} has no kilo.squat.ai/endpoint: is Kilo running on it? Set kilo.squat.ai/force-endpoint to host:port if it cannot find its own"
                )
            }
            Self::InvalidEndpoint(value) => {
                format!("{it}: endpoint {value:?} is not host:port (IPv6 as [addr]:port)")
            }
            Self::MissingPodCIDR => format!("{it} has no spec.podCIDRs: its pods cannot be routed"),
            Self::InvalidPodCIDR(value) => format!("{it}: pod CIDR {value:?} is not a CIDR"),
            Self::PodCIDROutsideCluster(value) => {
                format!(
                    "{it}: pod CIDR {value} lies outside the cluster's podCIDRs; add the range to spec.clusters[].podCIDRs or fix the node"
                )
            }
            Self::MissingWireGuardIP => format!(
                "{it} has no kilo.squat.ai/wireguard-ip: is Kilo running on it with full or cross granularity?"
            ),
            Self::InvalidWireGuardIP(value) => {
                format!("{it}: kilo.squat.ai/wireguard-ip {value:?} is not a CIDR")
            }
            Self::WireGuardIPOutsideCluster(value) => format!(
                "{it}: WireGuard IP {value} lies outside the cluster's wireguardCIDR; set Kilo's --subnet and spec.clusters[].wireguardCIDR to the same range"
            ),
            Self::LocationGranularity => format!(
                "{it}: Kilo runs with --mesh-granularity=location, where one Peer per node would mis-route; run Kilo with --mesh-granularity=full (or cross)"
            ),
            Self::RangesInConflict => format!(
                "{it}: every range it would route overlaps another cluster's (see the CIDRConflict condition)"
            ),
            Self::DuplicateKey(holder) => format!(
                "{it} has the same WireGuard public key as the older node {holder}, and WireGuard keeps one peer per key; \
                 give each node its own key (delete /var/lib/kilo/key on the copy and restart its kg)"
            ),
            Self::DuplicateWireGuardIP(holder) => format!(
                "{it} has the same WireGuard IP as the older node {holder}; restart its kg so that Kilo allocates it another"
            ),
            Self::PodCIDROverlapsNode { cidr, holder } => format!(
                "{it}: pod CIDR {cidr} overlaps one of the older node {holder}; give each node its own spec.podCIDRs"
            ),
            Self::EndpointInsideRoutes { endpoint, range } => format!(
                "{it}: its endpoint {endpoint} lies in {range}, which its Peer routes: the tunnel would carry its own packets; \
                 give the node an endpoint outside its pod and WireGuard ranges (kilo.squat.ai/force-endpoint)"
            ),
        }
    }
}

/// A node that can be peered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EligibleNode {
    pub name: String,
    pub key: WireGuardKey,
    pub endpoint: PeerEndpoint,
    /// Routes of its Peer, sorted: pod CIDRs, WireGuard IP, internal IP.
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: Option<i32>,
    pub ready: bool,
    pub leader: bool,
    /// Its WireGuard IP as a host route (also in `allowed_ips` unless the
    /// cluster's WireGuard range is in conflict).
    pub wireguard_ip: IpNet,
    /// When its Node was created (Unix seconds).
    pub created: i64,
}

/// Checks one node against its cluster's declared ranges. `blocked` ranges
/// (in conflict) are left out of the routes.
pub fn check(
    node: &NodeView,
    cluster: &ClusterSpec,
    blocked: &BTreeSet<(String, IpNet)>,
    advertise_internal_ip: bool,
    default_keepalive: Option<i32>,
) -> Result<EligibleNode, SkipReason> {
    let get = |key: &str| {
        node.annotations
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let key = get(annotation::KEY).ok_or(SkipReason::MissingKey)?;
    let key: WireGuardKey = key
        .parse()
        .map_err(|e: api::InvalidKey| SkipReason::InvalidKey(e.to_string()))?;
    let endpoint = get(annotation::FORCE_ENDPOINT)
        .or_else(|| get(annotation::ENDPOINT))
        .ok_or(SkipReason::MissingEndpoint)?;
    let endpoint = endpoint::parse(endpoint)
        .ok_or_else(|| SkipReason::InvalidEndpoint(endpoint.to_owned()))?;

    let advertised = |declared: &IpNet| !blocked.contains(&(cluster.name.clone(), *declared));
    if node.pod_cidrs.is_empty() {
        return Err(SkipReason::MissingPodCIDR);
    }
    let mut allowed_ips = BTreeSet::new();
    for value in &node.pod_cidrs {
        let pod = parse_canonical(value).map_err(|_| SkipReason::InvalidPodCIDR(value.clone()))?;
        let declared = cluster.pod.iter().find(|declared| contains(declared, &pod));
        let declared = declared.ok_or_else(|| SkipReason::PodCIDROutsideCluster(value.clone()))?;
        if advertised(declared) {
            allowed_ips.insert(pod);
        }
    }
    let wireguard = get(annotation::WIREGUARD_IP).ok_or(SkipReason::MissingWireGuardIP)?;
    let wireguard: IpNet = wireguard
        .parse()
        .map_err(|_| SkipReason::InvalidWireGuardIP(wireguard.to_owned()))?;
    let wireguard = host_route(&wireguard);
    if !contains(&cluster.wireguard, &wireguard) {
        return Err(SkipReason::WireGuardIPOutsideCluster(
            wireguard.addr().to_string(),
        ));
    }
    if advertised(&cluster.wireguard) {
        allowed_ips.insert(wireguard);
    }
    if advertise_internal_ip {
        let internal = match get(annotation::FORCE_INTERNAL_IP) {
            Some("-") => None,
            Some(forced) => Some(forced),
            None if node.annotations.contains_key(annotation::FORCE_INTERNAL_IP) => None,
            None => get(annotation::INTERNAL_IP),
        };
        let internal = internal
            .and_then(|v| v.parse::<IpNet>().ok())
            .map(|n| host_route(&n));
        let inside = internal.filter(|ip| {
            cluster
                .additional
                .iter()
                .any(|a| contains(a, ip) && advertised(a))
        });
        // Its own endpoint is never routed into its own tunnel.
        let inside = inside.filter(|ip| endpoint_ip(&endpoint).is_none_or(|e| !ip.contains(&e)));
        allowed_ips.extend(inside);
    }
    if allowed_ips.is_empty() {
        return Err(SkipReason::RangesInConflict);
    }
    let own_endpoint = endpoint_ip(&endpoint)
        .and_then(|ip| Some((ip, allowed_ips.iter().find(|range| range.contains(&ip))?)));
    if let Some((ip, range)) = own_endpoint {
        return Err(SkipReason::EndpointInsideRoutes {
            endpoint: ip.to_string(),
            range: range.to_string(),
        });
    }
    let keepalive = get(annotation::PERSISTENT_KEEPALIVE)
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|k| *k >= 0);
    Ok(EligibleNode {
        name: node.name.clone(),
        key,
        endpoint,
        allowed_ips: allowed_ips.into_iter().collect(),
        persistent_keepalive: keepalive.or(default_keepalive).filter(|k| *k > 0),
        ready: node.ready,
        leader: node.annotations.contains_key(annotation::LEADER),
        wireguard_ip: wireguard,
        created: node.created,
    })
}

/// The address of an endpoint given as an IP (not as a DNS name).
pub fn endpoint_ip(endpoint: &PeerEndpoint) -> Option<std::net::IpAddr> {
    endpoint.dns_or_ip.ip.as_deref()?.parse().ok()
}

/// True when the cluster's Kilo says it runs with location granularity.
pub fn location_granularity(nodes: &[NodeView]) -> bool {
    nodes.iter().any(|n| {
        n.annotations
            .get(annotation::GRANULARITY)
            .is_some_and(|g| g.trim() == "location")
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    pub const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    pub fn node(name: &str, pod: &[&str], wireguard_ip: &str) -> NodeView {
        NodeView {
            name: name.into(),
            pod_cidrs: pod.iter().map(|p| p.to_string()).collect(),
            annotations: BTreeMap::from([
                (annotation::KEY.into(), KEY.into()),
                (annotation::ENDPOINT.into(), "192.0.2.10:51820".into()),
                (annotation::WIREGUARD_IP.into(), wireguard_ip.into()),
            ]),
            ready: true,
            created: 0,
        }
    }

    fn cluster() -> ClusterSpec {
        ClusterSpec {
            name: "b".into(),
            local: false,
            pod: vec![
                "10.2.0.0/16".parse().unwrap(),
                "fd00:2::/48".parse().unwrap(),
            ],
            wireguard: "10.100.1.0/24".parse().unwrap(),
            service: None,
            additional: vec!["192.0.2.0/24".parse().unwrap()],
        }
    }

    fn checked(node: &NodeView) -> Result<EligibleNode, SkipReason> {
        check(node, &cluster(), &BTreeSet::new(), false, Some(25))
    }

    #[test]
    fn a_kilo_node_routes_its_pod_cidrs_and_wireguard_ip() {
        let eligible = checked(&node(
            "n1",
            &["10.2.1.0/24", "fd00:2:0:1::/64"],
            "10.100.1.5/24",
        ))
        .unwrap();
        let allowed: Vec<String> = eligible
            .allowed_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["10.2.1.0/24", "10.100.1.5/32", "fd00:2:0:1::/64"]);
        assert_eq!(eligible.persistent_keepalive, Some(25));
    }

    #[test]
    fn every_skip_reason_is_detected() {
        let with = |f: &dyn Fn(&mut NodeView)| {
            let mut n = node("n1", &["10.2.1.0/24"], "10.100.1.5/24");
            f(&mut n);
            checked(&n).unwrap_err()
        };
        use SkipReason::*;
        assert_eq!(
            with(&|n| drop(n.annotations.remove(annotation::KEY))),
            MissingKey
        );
        assert!(matches!(
            with(&|n| drop(n.annotations.insert(annotation::KEY.into(), "AAAA".into()))),
            InvalidKey(_)
        ));
        assert_eq!(
            with(&|n| drop(n.annotations.remove(annotation::ENDPOINT))),
            MissingEndpoint
        );
        assert!(matches!(
            with(&|n| drop(
                n.annotations
                    .insert(annotation::ENDPOINT.into(), "nope".into())
            )),
            InvalidEndpoint(_)
        ));
        assert_eq!(with(&|n| n.pod_cidrs.clear()), MissingPodCIDR);
        assert!(matches!(
            with(&|n| n.pod_cidrs = vec!["x".into()]),
            InvalidPodCIDR(_)
        ));
        assert_eq!(
            with(&|n| n.pod_cidrs = vec!["0.0.0.0/0".into()]),
            PodCIDROutsideCluster("0.0.0.0/0".into())
        );
        assert_eq!(
            with(&|n| n.pod_cidrs.push("10.9.0.0/24".into())),
            PodCIDROutsideCluster("10.9.0.0/24".into()),
            "every entry of a dual-stack node is checked, not only the first"
        );
        assert_eq!(
            with(&|n| drop(n.annotations.remove(annotation::WIREGUARD_IP))),
            MissingWireGuardIP
        );
        assert!(matches!(
            with(&|n| drop(
                n.annotations
                    .insert(annotation::WIREGUARD_IP.into(), "x".into())
            )),
            InvalidWireGuardIP(_)
        ));
        assert_eq!(
            with(&|n| drop(
                n.annotations
                    .insert(annotation::WIREGUARD_IP.into(), "10.4.0.1/16".into())
            )),
            WireGuardIPOutsideCluster("10.4.0.1".into())
        );
    }

    #[test]
    fn force_endpoint_wins_and_keepalive_annotation_overrides_the_default() {
        let mut n = node("n1", &["10.2.1.0/24"], "10.100.1.5/24");
        n.annotations.insert(
            annotation::FORCE_ENDPOINT.into(),
            "[2001:db8::1]:4000".into(),
        );
        n.annotations
            .insert(annotation::PERSISTENT_KEEPALIVE.into(), "10".into());
        let eligible = checked(&n).unwrap();
        assert_eq!(
            eligible.endpoint.dns_or_ip.ip.as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(eligible.endpoint.port, 4000);
        assert_eq!(eligible.persistent_keepalive, Some(10));
    }

    #[test]
    fn internal_ips_are_routed_only_when_asked_and_inside_additional_cidrs() {
        let mut n = node("n1", &["10.2.1.0/24"], "10.100.1.5/24");
        n.annotations
            .insert(annotation::INTERNAL_IP.into(), "192.0.2.7/24".into());
        let off = check(&n, &cluster(), &BTreeSet::new(), false, None).unwrap();
        assert_eq!(off.allowed_ips.len(), 2);
        let on = check(&n, &cluster(), &BTreeSet::new(), true, None).unwrap();
        assert!(on.allowed_ips.contains(&"192.0.2.7/32".parse().unwrap()));
        n.annotations
            .insert(annotation::INTERNAL_IP.into(), "198.51.100.7/24".into());
        let outside = check(&n, &cluster(), &BTreeSet::new(), true, None).unwrap();
        assert_eq!(
            outside.allowed_ips.len(),
            2,
            "an internal IP outside the declared ranges is never routed"
        );
    }

    #[test]
    fn blocked_ranges_are_left_out_and_a_node_with_nothing_left_is_skipped() {
        let n = node("n1", &["10.2.1.0/24"], "10.100.1.5/24");
        let blocked = BTreeSet::from([("b".to_owned(), "10.2.0.0/16".parse().unwrap())]);
        let eligible = check(&n, &cluster(), &blocked, false, None).unwrap();
        assert_eq!(
            eligible.allowed_ips,
            vec!["10.100.1.5/32".parse::<IpNet>().unwrap()]
        );
        let mut all = blocked.clone();
        all.insert(("b".to_owned(), "10.100.1.0/24".parse().unwrap()));
        assert_eq!(
            check(&n, &cluster(), &all, false, None),
            Err(SkipReason::RangesInConflict)
        );
    }
}
