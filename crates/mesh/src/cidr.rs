//! CIDRs: parsing in canonical form, containment, overlap.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a string is not a usable CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrError {
    /// Not `address/prefix`.
    Unparsable,
    /// Host bits are set; the canonical form is given.
    HostBits(IpNet),
}

/// Parses `s` as a CIDR whose host bits are zero (`10.1.0.0/16`, not
/// `10.1.0.1/16`).
pub fn parse_canonical(s: &str) -> Result<IpNet, CidrError> {
    let net: IpNet = s.trim().parse().map_err(|_| CidrError::Unparsable)?;
    if net.trunc() == net {
        Ok(net)
    } else {
        Err(CidrError::HostBits(net.trunc()))
    }
}

/// True when `inner` lies wholly inside `outer` (same address family).
pub fn contains(outer: &IpNet, inner: &IpNet) -> bool {
    outer.contains(inner)
}

/// True when two CIDRs share an address: for CIDRs, one contains the other.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// `range` without the addresses `holes`: the fewest CIDRs that cover the
/// rest (none for a host route that is a hole).
pub fn exclude(range: IpNet, holes: &[IpAddr]) -> Vec<IpNet> {
    if !holes.iter().any(|hole| range.contains(hole)) {
        return vec![range];
    }
    match range.subnets(range.prefix_len() + 1) {
        Ok(halves) => halves.flat_map(|half| exclude(half, holes)).collect(),
        // A host route, and a hole.
        Err(_) => vec![],
    }
}

/// The single-address CIDR of `net`'s address (`/32` or `/128`).
pub fn host_route(net: &IpNet) -> IpNet {
    IpNet::from(net.addr())
}

/// The smallest CIDR of each address family that contains every one of
/// `nets` of that family, IPv4 first.
pub fn covering(nets: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    let mut families: [Option<IpNet>; 2] = [None, None];
    for net in nets {
        let slot = &mut families[usize::from(matches!(net, IpNet::V6(_)))];
        let mut cover = slot.unwrap_or(net.trunc());
        while !cover.contains(&net) {
            match cover.supernet() {
                Some(wider) => cover = wider,
                None => break,
            }
        }
        *slot = Some(cover);
    }
    families.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn canonical_cidrs_parse_and_others_say_why() {
        assert_eq!(parse_canonical("10.1.0.0/16"), Ok(net("10.1.0.0/16")));
        assert_eq!(parse_canonical("fd00:1::/64"), Ok(net("fd00:1::/64")));
        assert_eq!(
            parse_canonical("10.1.0.1/16"),
            Err(CidrError::HostBits(net("10.1.0.0/16")))
        );
        assert_eq!(parse_canonical("10.1.0.0"), Err(CidrError::Unparsable));
        assert_eq!(parse_canonical("banana"), Err(CidrError::Unparsable));
    }

    #[test]
    fn overlap_is_containment_either_way_and_never_across_families() {
        assert!(overlaps(&net("10.0.0.0/8"), &net("10.1.0.0/16")));
        assert!(overlaps(&net("10.1.0.0/16"), &net("10.0.0.0/8")));
        assert!(!overlaps(&net("10.1.0.0/16"), &net("10.2.0.0/16")));
        assert!(!overlaps(&net("0.0.0.0/0"), &net("::/0")));
        assert!(contains(&net("10.1.0.0/16"), &net("10.1.2.0/24")));
        assert!(!contains(&net("10.1.0.0/16"), &net("0.0.0.0/0")));
        assert_eq!(host_route(&net("10.4.0.1/16")), net("10.4.0.1/32"));
        assert_eq!(host_route(&net("fd00::1/64")), net("fd00::1/128"));
    }

    #[test]
    fn covering_is_the_smallest_cidr_per_family() {
        let nets = ["10.2.0.0/24", "10.2.3.0/24", "fd00:2::/64", "10.2.1.0/24"].map(net);
        assert_eq!(covering(nets), vec![net("10.2.0.0/22"), net("fd00:2::/64")]);
        assert_eq!(covering([net("10.4.0.1/16")]), vec![net("10.4.0.0/16")]);
        assert_eq!(
            covering([net("10.0.0.0/24"), net("192.168.0.0/24")]),
            vec![net("0.0.0.0/0")]
        );
        assert!(covering([]).is_empty());
    }

    #[test]
    fn excluding_addresses_keeps_the_fewest_cidrs_around_them() {
        let holes: Vec<IpAddr> = vec!["192.168.1.10".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        let rest = exclude(net("192.168.0.0/16"), &holes);
        assert_eq!(rest.len(), 16, "{rest:?}");
        assert!(rest.iter().all(|r| !r.contains(&holes[0])));
        let covered: u32 = rest.iter().map(|r| 1u32 << (32 - r.prefix_len())).sum();
        assert_eq!(covered, 65_535, "every address but the hole");
        assert_eq!(exclude(net("10.2.0.0/16"), &holes), [net("10.2.0.0/16")]);
        assert!(exclude(net("10.0.0.1/32"), &holes).is_empty());
    }
}
