//! The lab's address plan: which clusters, nodes and pods exist and which
//! addresses they get. Pure: the lab (`lab.rs`) builds what this describes.
//!
//! Cluster `k` (1-based, at most 3) uses, like the test fixtures of the other
//! crates: pods `10.k.0.0/16` (node `n` gets `10.k.n.0/24`), WireGuard
//! `10.10k.0.0/24` (Kilo's `--subnet`), services `10.20k.0.0/16` (one
//! ClusterIP, `10.20k.0.10`). Its nodes sit on an underlay subnet from the
//! documentation ranges: `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`,
//! gateway `.1`, node `n` at `.(10+n)`. A node that has a private address
//! (what Kilo takes as its internal IP) gets it on the same link, from the
//! RFC 1918 range `172.(16+k).0.0/16`: `172.(16+k).l.(10+n)/24` for the
//! cluster's `l`-th location, so only the nodes of one location share a
//! private subnet.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Prefix of every network namespace the lab creates.
pub const NETNS_PREFIX: &str = "kcmlab-";
/// The namespace that plays the internet between nodes.
pub const UNDERLAY_NETNS: &str = "kcmlab-underlay";
/// The port every node's WireGuard listens on (Kilo's default).
pub const WIREGUARD_PORT: u16 = 51820;
/// The port of each cluster's demo service.
pub const SERVICE_PORT: u16 = 80;

const UNDERLAYS: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];

/// One cluster of the lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPlan {
    /// `cluster-a`, `cluster-b`, ...
    pub name: String,
    /// 1-based.
    pub k: u8,
    pub underlay: Ipv4Net,
    pub pods: Ipv4Net,
    pub wireguard: Ipv4Net,
    pub services: Ipv4Net,
}

/// One node of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    pub cluster: String,
    /// The Node's name: `node-1`, `node-2`, ...
    pub name: String,
    /// The node's network namespace: `kcmlab-a1`.
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    /// The node's private address with its mask, if it has one (see
    /// [`ClusterPlan::private_ip`]).
    pub private_ip: Option<Ipv4Net>,
    pub pod_cidr: Ipv4Net,
    pub pods: Vec<PodPlan>,
}

/// One pod: a network namespace behind a veth of its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    /// `kcmlab-a1-p1`.
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl ClusterPlan {
    /// Cluster `k` (1 to 3).
    pub fn new(k: u8) -> Self {
        let letter = char::from(b'a' + k - 1);
        let [a, b, c] = UNDERLAYS[usize::from(k - 1) % UNDERLAYS.len()];
        Self {
            name: format!("cluster-{letter}"),
            k,
            underlay: net(Ipv4Addr::new(a, b, c, 0), 24),
            pods: net(Ipv4Addr::new(10, k, 0, 0), 16),
            wireguard: net(Ipv4Addr::new(10, 100 + k, 0, 0), 24),
            services: net(Ipv4Addr::new(10, 200 + k, 0, 0), 16),
        }
    }

    /// The letter in the cluster's name, used in namespace names.
    pub fn letter(&self) -> char {
        char::from(b'a' + self.k - 1)
    }

    /// The underlay router's address on this cluster's subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        offset(self.underlay.network(), 1)
    }

    /// The ClusterIP of the cluster's service.
    pub fn service_ip(&self) -> Ipv4Addr {
        offset(self.services.network(), 10)
    }

    /// The private address of node `n` in the cluster's `location`-th
    /// (1-based) location, with its mask.
    pub fn private_ip(&self, location: u8, n: u8) -> Ipv4Net {
        net(Ipv4Addr::new(172, 16 + self.k, location, 10 + n), 24)
    }

    /// Node `n` (1-based) with `pods` pods, without a private address.
    pub fn node(&self, n: u8, pods: u8) -> NodePlan {
        let netns = format!("{NETNS_PREFIX}{}{n}", self.letter());
        let pod_cidr = net(Ipv4Addr::new(10, self.k, n, 0), 24);
        NodePlan {
            cluster: self.name.clone(),
            name: format!("node-{n}"),
            underlay_ip: offset(self.underlay.network(), 10 + u32::from(n)),
            private_ip: None,
            pods: (1..=pods)
                .map(|p| PodPlan {
                    netns: format!("{netns}-p{p}"),
                    ip: offset(pod_cidr.network(), 10 + u32::from(p)),
                })
                .collect(),
            pod_cidr,
            netns,
        }
    }
}

fn net(addr: Ipv4Addr, prefix: u8) -> Ipv4Net {
    // Every prefix here is a constant below 32.
    Ipv4Net::new(addr, prefix).unwrap_or_default()
}

fn offset(addr: Ipv4Addr, by: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) + by)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_get_disjoint_ranges_from_the_documented_plan() {
        let b = ClusterPlan::new(2);
        assert_eq!(b.name, "cluster-b");
        assert_eq!(b.underlay.to_string(), "198.51.100.0/24");
        assert_eq!(b.gateway().to_string(), "198.51.100.1");
        assert_eq!(b.wireguard.to_string(), "10.102.0.0/24");
        assert_eq!(b.service_ip().to_string(), "10.202.0.10");
        let node = b.node(3, 2);
        assert_eq!(node.netns, "kcmlab-b3");
        assert_eq!(node.underlay_ip.to_string(), "198.51.100.13");
        assert_eq!(node.pod_cidr.to_string(), "10.2.3.0/24");
        assert_eq!(node.pods[1].netns, "kcmlab-b3-p2");
        assert_eq!(node.pods[1].ip.to_string(), "10.2.3.12");
        assert_eq!(node.private_ip, None);
        assert_eq!(b.private_ip(2, 3).to_string(), "172.18.2.13/24");
        let a = ClusterPlan::new(1);
        assert!(!a.pods.contains(&b.pods) && !a.wireguard.contains(&b.wireguard));
        assert!(!a.private_ip(1, 1).contains(&b.private_ip(1, 1).addr()));
    }

    #[test]
    fn namespace_names_fit_interface_and_netns_limits() {
        let node = ClusterPlan::new(3).node(9, 9);
        assert!(node.pods[8].netns.len() <= 15, "{}", node.pods[8].netns);
    }
}
