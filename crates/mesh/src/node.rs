//! Node eligibility: whether a node can be peered, and what its Peer routes.

use std::collections::BTreeSet;

use api::{PeerEndpoint, WireGuardKey};
use ipnet::IpNet;

use crate::{
    cidr::{contains, host_route, parse_canonical},
    endpoint,
    observe::NodeView,
    plan::Settings,
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
    pub const LOCATION: &str = "kilo.squat.ai/location";
    pub const LAST_SEEN: &str = "kilo.squat.ai/last-seen";
}

/// The label Kilo reads a node's location from when it has no
/// `kilo.squat.ai/location` annotation.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// Keepalive of a Peer without endpoint when neither the node nor the
/// operator gives one: Kilo reads a non-zero keepalive as "behind NAT, may
/// roam", and re-applies every resync for a Peer with neither.
pub const NAT_KEEPALIVE_SECONDS: i32 = 25;

/// Why a node is not peered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    MissingKey,
    InvalidKey(String),
    /// In a `location` cluster, Kilo does not count a node without an
    /// endpoint as ready.
    MissingEndpoint,
    InvalidEndpoint(String),
    MissingPodCIDR,
    InvalidPodCIDR(String),
    PodCIDROutsideCluster(String),
    MissingWireGuardIP,
    InvalidWireGuardIP(String),
    WireGuardIPOutsideCluster(String),
    /// Its Kilo agent last checked in (`kilo.squat.ai/last-seen`, Unix
    /// seconds) longer ago than Kilo's readiness window and the grace.
    NotCheckingIn {
        last_seen: i64,
    },
    /// Its location's leader (Kilo's choice) cannot be peered, and only the
    /// leader holds the location's tunnel.
    LeaderNotPeered {
        leader: String,
    },
    /// `--endpoint-dns=resolve`, and its endpoint's name never resolved.
    EndpointUnresolvable {
        name: String,
        error: Option<String>,
    },
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
            Self::NotCheckingIn { .. } => "NotCheckingIn",
            Self::LeaderNotPeered { .. } => "LeaderNotPeered",
            Self::EndpointUnresolvable { .. } => "EndpointUnresolvable",
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
                    "{it} has no kilo.squat.ai/endpoint, and Kilo with location granularity does not count such a node as ready: \
                     is Kilo running on it? Set kilo.squat.ai/force-endpoint to host:port if it cannot find its own"
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
            Self::NotCheckingIn { last_seen } => format!(
                "{it}: its Kilo agent last checked in at {} (kilo.squat.ai/last-seen), so Kilo counts it as not ready; \
                 it is peered again as soon as kg checks in (is kg running on it?)",
                unix_time(*last_seen)
            ),
            Self::EndpointUnresolvable { name, error } => format!(
                "{it}: its endpoint's name {name} has not resolved on the operator ({}); \
                 it is peered as soon as it does. Fix the name, or give the node an IP endpoint (kilo.squat.ai/force-endpoint)",
                error.as_deref().unwrap_or("not looked up yet")
            ),
            Self::LeaderNotPeered { leader } => format!(
                "{it}: the leader of its location, {leader}, cannot be peered (see its own reason), and only a leader carries its location's traffic; \
                 fix {leader} or make another node leader with the kilo.squat.ai/leader annotation"
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

/// A node that can be peered, or (`location` granularity) a location whose
/// leader can: what one Peer describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EligibleNode {
    /// The node's name, or the location's segment name
    /// ([`crate::segment::location_name`]).
    pub name: String,
    pub key: WireGuardKey,
    /// `None` for a node behind NAT: the other side learns its address when
    /// it calls in.
    pub endpoint: Option<PeerEndpoint>,
    /// Routes of its Peer, sorted: pod CIDRs, WireGuard IP, internal IP.
    pub allowed_ips: Vec<IpNet>,
    pub persistent_keepalive: Option<i32>,
    pub ready: bool,
    pub leader: bool,
    /// Its WireGuard IP as a host route (also in `allowed_ips` unless the
    /// cluster's WireGuard range is in conflict). Kilo gives one to leaders
    /// only: with `location` granularity the other nodes have none.
    pub wireguard_ip: Option<IpNet>,
    /// Its `kilo.squat.ai/internal-ip` (`force-internal-ip` first), whether
    /// routed or not: with `location` granularity a node without one is a
    /// location of its own.
    pub internal_ip: Option<IpNet>,
    /// Its location: the `kilo.squat.ai/location` annotation, else the
    /// region label.
    pub location: String,
    /// When its Node was created (Unix seconds).
    pub created: i64,
    /// The nodes whose traffic its Peer carries: the node itself, or every
    /// peered node of the location, its leader first, then by name.
    pub members: Vec<String>,
    /// The DNS name its endpoint annotation gives, if any (with
    /// `--endpoint-dns=resolve`, `endpoint` holds the address instead).
    pub endpoint_name: Option<String>,
}

/// Kilo's idea of a live node: its agent rewrites `kilo.squat.ai/last-seen`
/// every 30 s, and Kilo counts a node as ready while that is under
/// [`KILO_READY_WITHIN_SECONDS`] old.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// The time of the pass (Unix seconds).
    pub now: i64,
    /// How long after its last check-in a node stops being peered: Kilo's
    /// window plus a grace period.
    pub stale_after_seconds: i64,
}

/// Kilo's readiness window (`Node.Ready`: twice kg's 30 s check-in).
pub const KILO_READY_WITHIN_SECONDS: i64 = 60;

impl Liveness {
    /// `Some(reason)` when the node's agent stopped checking in. A node
    /// without a check-in time (no `last-seen`, e.g. Kilo not yet started)
    /// is judged by its other annotations only.
    pub fn judge(&self, node: &NodeView) -> Option<SkipReason> {
        let last_seen = node.checked_in?;
        // In i128: a check-in time and a grace are whatever a Node and a
        // flag say, and their differences and sums may not fit an i64.
        let silent = i128::from(self.now) - i128::from(last_seen);
        (silent > i128::from(self.stale_after_seconds))
            .then_some(SkipReason::NotCheckingIn { last_seen })
    }

    /// When a node that is live now stops being so, if nothing changes;
    /// `None` also when that is past the last time an i64 holds.
    pub fn expires(&self, node: &NodeView) -> Option<i64> {
        let last_seen = node.checked_in?;
        let at = i128::from(last_seen) + i128::from(self.stale_after_seconds) + 1;
        i64::try_from(at).ok().filter(|at| *at > self.now)
    }
}

/// How a cluster's Kilo lays out its mesh (`--mesh-granularity`, as its
/// agents annotate their Nodes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Granularity {
    /// Every node is its own leader: one Peer per node (`full`, and `cross`,
    /// where nodes of one location are simply not peers of each other).
    #[default]
    PerNode,
    /// One leader per location carries the whole location: one Peer per
    /// location.
    Location,
}

/// Whether `node`'s agent says Kilo runs with `location` granularity.
pub fn says_location(node: &NodeView) -> bool {
    node.annotations
        .get(annotation::GRANULARITY)
        .is_some_and(|g| g.trim() == "location")
}

/// Checks one node against its cluster's declared ranges. `blocked` ranges
/// (in conflict) are left out of the routes.
pub fn check(
    node: &NodeView,
    cluster: &ClusterSpec,
    blocked: &BTreeSet<(String, IpNet)>,
    granularity: Granularity,
    settings: &Settings,
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
    let endpoint = match get(annotation::FORCE_ENDPOINT).or_else(|| get(annotation::ENDPOINT)) {
        Some(value) => Some(
            endpoint::parse(value).ok_or_else(|| SkipReason::InvalidEndpoint(value.to_owned()))?,
        ),
        None if granularity == Granularity::Location => return Err(SkipReason::MissingEndpoint),
        None => None,
    };
    let endpoint_name = endpoint
        .as_ref()
        .and_then(endpoint::dns_name)
        .map(str::to_owned);
    let endpoint = match endpoint {
        Some(endpoint) => Some(
            endpoint::under_policy(endpoint, settings.endpoint_dns, &settings.dns_answers)
                .map_err(|error| SkipReason::EndpointUnresolvable {
                    name: endpoint_name.clone().unwrap_or_default(),
                    error,
                })?,
        ),
        None => None,
    };

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
    let wireguard = match get(annotation::WIREGUARD_IP) {
        Some(value) => {
            let ip: IpNet = value
                .parse()
                .map_err(|_| SkipReason::InvalidWireGuardIP(value.to_owned()))?;
            Some(host_route(&ip))
        }
        // Kilo gives WireGuard IPs to location leaders only.
        None if granularity == Granularity::Location => None,
        None => return Err(SkipReason::MissingWireGuardIP),
    };
    if let Some(wireguard) = wireguard {
        if !contains(&cluster.wireguard, &wireguard) {
            return Err(SkipReason::WireGuardIPOutsideCluster(
                wireguard.addr().to_string(),
            ));
        }
        if advertised(&cluster.wireguard) {
            allowed_ips.insert(wireguard);
        }
    }
    let internal_ip = internal_ip(node);
    let own_endpoint = endpoint.as_ref().and_then(endpoint_ip);
    if settings.advertise_internal_ips {
        let routed = internal_ip.filter(|ip| {
            cluster
                .additional
                .iter()
                .any(|a| contains(a, ip) && advertised(a))
        });
        // Its own endpoint is never routed into its own tunnel.
        let routed = routed.filter(|ip| own_endpoint.is_none_or(|e| !ip.contains(&e)));
        allowed_ips.extend(routed);
    }
    if allowed_ips.is_empty() {
        return Err(SkipReason::RangesInConflict);
    }
    let inside = own_endpoint
        .and_then(|ip| Some((ip, allowed_ips.iter().find(|range| range.contains(&ip))?)));
    if let Some((ip, range)) = inside {
        return Err(SkipReason::EndpointInsideRoutes {
            endpoint: ip.to_string(),
            range: range.to_string(),
        });
    }
    let keepalive = get(annotation::PERSISTENT_KEEPALIVE)
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|k| *k >= 0)
        .or(settings.default_persistent_keepalive)
        .filter(|k| *k > 0);
    // Without an endpoint, a keepalive tells Kilo the peer is behind NAT.
    let keepalive = match endpoint {
        Some(_) => keepalive,
        None => keepalive.or(Some(NAT_KEEPALIVE_SECONDS)),
    };
    Ok(EligibleNode {
        name: node.name.clone(),
        key,
        endpoint,
        allowed_ips: allowed_ips.into_iter().collect(),
        persistent_keepalive: keepalive,
        ready: node.ready,
        leader: node.annotations.contains_key(annotation::LEADER),
        wireguard_ip: wireguard,
        internal_ip,
        location: location(node),
        created: node.created,
        members: vec![node.name.clone()],
        endpoint_name,
    })
}

/// A node's internal IP as a host route: `force-internal-ip` (where `-` or
/// an empty value means none), else `internal-ip`.
pub fn internal_ip(node: &NodeView) -> Option<IpNet> {
    let value = match node.annotations.get(annotation::FORCE_INTERNAL_IP) {
        Some(forced) => forced.trim(),
        None => node.annotations.get(annotation::INTERNAL_IP)?.trim(),
    };
    value.parse::<IpNet>().ok().map(|n| host_route(&n))
}

/// Whether Kilo counts the node as ready (`Node.Ready`): a valid key, an
/// endpoint, a pod CIDR and a recent check-in.
pub fn kilo_ready(node: &NodeView, liveness: Option<&Liveness>) -> bool {
    let get = |key: &str| node.annotations.get(key).map(|v| v.trim());
    let key = get(annotation::KEY).is_some_and(|k| k.parse::<WireGuardKey>().is_ok());
    let endpoint = get(annotation::FORCE_ENDPOINT)
        .filter(|v| !v.is_empty())
        .or_else(|| get(annotation::ENDPOINT))
        .is_some_and(|e| endpoint::parse(e).is_some());
    let live = liveness.is_none_or(|l| l.judge(node).is_none());
    key && endpoint && !node.pod_cidrs.is_empty() && live
}

/// The DNS name in a node's endpoint annotation (`force-endpoint` first),
/// if it gives one: what the operator's resolver looks up.
pub fn endpoint_name(node: &NodeView) -> Option<String> {
    let get = |key: &str| node.annotations.get(key).map(|v| v.trim());
    let value = get(annotation::FORCE_ENDPOINT)
        .filter(|v| !v.is_empty())
        .or_else(|| get(annotation::ENDPOINT))?;
    endpoint::parse(value)?.dns_or_ip.dns
}

/// A node's location as Kilo reads it (`translateNode`): the annotation,
/// else the region label, else the empty location.
pub fn location(node: &NodeView) -> String {
    node.annotations
        .get(annotation::LOCATION)
        .or(node.region.as_ref())
        .cloned()
        .unwrap_or_default()
}

/// The address of an endpoint given as an IP (not as a DNS name).
pub fn endpoint_ip(endpoint: &PeerEndpoint) -> Option<std::net::IpAddr> {
    endpoint.dns_or_ip.ip.as_deref()?.parse().ok()
}

/// A Unix time as RFC 3339, for messages.
fn unix_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds).map_or_else(|_| seconds.to_string(), |t| t.to_string())
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
            ..NodeView::default()
        }
    }

    /// [`check`] in a `full` cluster.
    pub fn check_full(
        node: &NodeView,
        cluster: &ClusterSpec,
        blocked: &BTreeSet<(String, IpNet)>,
        advertise_internal_ips: bool,
        default_persistent_keepalive: Option<i32>,
    ) -> Result<EligibleNode, SkipReason> {
        let settings = Settings {
            default_persistent_keepalive,
            advertise_internal_ips,
            ..Settings::default()
        };
        check(node, cluster, blocked, Granularity::PerNode, &settings)
    }

    /// Cluster b with one pod range and no other declared range.
    pub fn plain_cluster() -> ClusterSpec {
        ClusterSpec {
            name: "b".into(),
            local: false,
            pod: vec!["10.2.0.0/16".parse().unwrap()],
            wireguard: "10.100.1.0/24".parse().unwrap(),
            service: None,
            additional: vec![],
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
        check_full(node, &cluster(), &BTreeSet::new(), false, Some(25))
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
    fn a_node_without_endpoint_is_peered_as_behind_nat_except_in_a_location_cluster() {
        let mut n = node("n1", &["10.2.1.0/24"], "10.100.1.5/24");
        n.annotations.remove(annotation::ENDPOINT);
        let nat = check_full(&n, &cluster(), &BTreeSet::new(), false, None).unwrap();
        assert_eq!(nat.endpoint, None);
        assert_eq!(
            nat.persistent_keepalive,
            Some(NAT_KEEPALIVE_SECONDS),
            "a keepalive lets Kilo learn the address when the node calls in"
        );
        assert_eq!(checked(&n).unwrap().persistent_keepalive, Some(25));
        let location = check(
            &n,
            &cluster(),
            &BTreeSet::new(),
            Granularity::Location,
            &Settings::default(),
        );
        assert_eq!(location, Err(SkipReason::MissingEndpoint));
    }

    #[test]
    fn a_node_whose_agent_stopped_checking_in_is_judged_after_the_grace() {
        let liveness = Liveness {
            now: 1_000,
            stale_after_seconds: 90,
        };
        let mut n = node("n1", &["10.2.1.0/24"], "10.100.1.5/24");
        assert_eq!(liveness.judge(&n), None, "no last-seen: not judged");
        n.checked_in = Some(910);
        assert_eq!(liveness.judge(&n), None);
        assert_eq!(liveness.expires(&n), Some(1_001));
        n.checked_in = Some(909);
        assert_eq!(
            liveness.judge(&n),
            Some(SkipReason::NotCheckingIn { last_seen: 909 })
        );
        assert_eq!(liveness.expires(&n), None);
        assert!(
            SkipReason::NotCheckingIn { last_seen: 909 }
                .message("b", "n1")
                .contains("1970-01-01T00:15:09Z")
        );
    }

    /// Found by the `node_eligibility` fuzz target (`make fuzz`): a time
    /// far from today, or a grace of centuries, overflowed.
    #[test]
    fn check_ins_at_the_ends_of_time_are_judged_without_overflow() {
        let seen = |at| NodeView {
            checked_in: Some(at),
            ..NodeView::default()
        };
        let long_ago = Liveness {
            now: i64::MIN,
            stale_after_seconds: 90,
        };
        assert_eq!(long_ago.judge(&seen(1_764_114_000)), None);
        assert_eq!(long_ago.expires(&seen(1_764_114_000)), Some(1_764_114_091));
        let far_future = Liveness {
            now: i64::MAX,
            stale_after_seconds: 90,
        };
        assert_eq!(
            far_future.judge(&seen(i64::MIN)),
            Some(SkipReason::NotCheckingIn {
                last_seen: i64::MIN
            })
        );
        assert_eq!(far_future.expires(&seen(i64::MIN)), None);
        let forever = Liveness {
            now: 1_764_115_200,
            stale_after_seconds: i64::MAX,
        };
        assert_eq!(forever.judge(&seen(1_764_114_000)), None);
        assert_eq!(
            forever.expires(&seen(1_764_114_000)),
            None,
            "not within the times an i64 holds"
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
            eligible.endpoint.as_ref().unwrap().dns_or_ip.ip.as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(eligible.endpoint.as_ref().unwrap().port, 4000);
        assert_eq!(eligible.persistent_keepalive, Some(10));
    }

    #[test]
    fn internal_ips_are_routed_only_when_asked_and_inside_additional_cidrs() {
        let mut n = node("n1", &["10.2.1.0/24"], "10.100.1.5/24");
        n.annotations
            .insert(annotation::INTERNAL_IP.into(), "192.0.2.7/24".into());
        let off = check_full(&n, &cluster(), &BTreeSet::new(), false, None).unwrap();
        assert_eq!(off.allowed_ips.len(), 2);
        let on = check_full(&n, &cluster(), &BTreeSet::new(), true, None).unwrap();
        assert!(on.allowed_ips.contains(&"192.0.2.7/32".parse().unwrap()));
        n.annotations
            .insert(annotation::INTERNAL_IP.into(), "198.51.100.7/24".into());
        let outside = check_full(&n, &cluster(), &BTreeSet::new(), true, None).unwrap();
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
        let eligible = check_full(&n, &cluster(), &blocked, false, None).unwrap();
        assert_eq!(
            eligible.allowed_ips,
            vec!["10.100.1.5/32".parse::<IpNet>().unwrap()]
        );
        let mut all = blocked.clone();
        all.insert(("b".to_owned(), "10.100.1.0/24".parse().unwrap()));
        assert_eq!(
            check_full(&n, &cluster(), &all, false, None),
            Err(SkipReason::RangesInConflict)
        );
    }
}
