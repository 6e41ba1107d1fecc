//! Kilo's endpoint annotation (`host:port`) as a Peer endpoint, and what
//! becomes of a DNS name in it.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
};

use api::{DnsOrIp, PeerEndpoint, is_dns1123_subdomain};

/// What the Peers of a node whose endpoint is a DNS name carry
/// (`--endpoint-dns`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EndpointDns {
    /// The address the operator resolved: one name that stops resolving
    /// costs only that node, never kg's whole configuration on a cluster.
    #[default]
    Resolve,
    /// The name, as Kilo writes it: kg on each cluster resolves it at every
    /// apply, and one name it cannot resolve stops that apply altogether.
    Keep,
}

/// What the operator's resolver found for one name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The last address it resolved to, kept while lookups fail.
    pub address: Option<IpAddr>,
    /// Why the latest lookup failed; `None` when it succeeded.
    pub error: Option<String>,
}

/// Every DNS name of an endpoint the resolver has looked up.
pub type DnsAnswers = BTreeMap<String, DnsAnswer>;

/// The DNS name of an endpoint, if it is given as one.
pub fn dns_name(endpoint: &PeerEndpoint) -> Option<&str> {
    endpoint.dns_or_ip.dns.as_deref()
}

/// The endpoint a Peer carries under `policy`: with `Resolve`, a name
/// becomes the address it last resolved to; `Err` holds why there is none.
pub fn under_policy(
    endpoint: PeerEndpoint,
    policy: EndpointDns,
    answers: &DnsAnswers,
) -> Result<PeerEndpoint, Option<String>> {
    let Some(name) = dns_name(&endpoint) else {
        return Ok(endpoint);
    };
    if policy == EndpointDns::Keep {
        return Ok(endpoint);
    }
    let answer = answers.get(name);
    match answer.and_then(|a| a.address) {
        Some(address) => Ok(PeerEndpoint {
            dns_or_ip: DnsOrIp {
                dns: None,
                ip: Some(address.to_string()),
            },
            port: endpoint.port,
        }),
        None => Err(answer.and_then(|a| a.error.clone())),
    }
}

/// Parses `192.0.2.1:51820`, `[2001:db8::1]:51820` or `node.example.com:51820`
/// as Kilo does (Go's `SplitHostPort`, then an IP or a DNS-1123 subdomain,
/// and a port from 1 to 65535).
pub fn parse(value: &str) -> Option<PeerEndpoint> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        (IpAddr::V6(host.parse::<Ipv6Addr>().ok()?).to_string(), port)
    } else {
        let (host, port) = value.rsplit_once(':')?;
        if host.contains(':') {
            return None; // a bare IPv6 address needs brackets
        }
        (host.to_owned(), port)
    };
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let dns_or_ip = match host.parse::<IpAddr>() {
        Ok(ip) => DnsOrIp {
            dns: None,
            ip: Some(ip.to_string()),
        },
        Err(_) if is_dns1123_subdomain(&host) => DnsOrIp {
            dns: Some(host),
            ip: None,
        },
        Err(_) => return None,
    };
    Some(PeerEndpoint {
        dns_or_ip,
        port: i32::from(port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(ip: &str, port: i32) -> Option<PeerEndpoint> {
        Some(PeerEndpoint {
            dns_or_ip: DnsOrIp {
                dns: None,
                ip: Some(ip.into()),
            },
            port,
        })
    }

    #[test]
    fn kilo_endpoint_forms_parse() {
        assert_eq!(parse("192.0.2.1:51820"), ip("192.0.2.1", 51820));
        assert_eq!(parse("[2001:db8::1]:51820"), ip("2001:db8::1", 51820));
        assert_eq!(
            parse("node-1.example.com:4000"),
            Some(PeerEndpoint {
                dns_or_ip: DnsOrIp {
                    dns: Some("node-1.example.com".into()),
                    ip: None
                },
                port: 4000
            })
        );
    }

    #[test]
    fn malformed_endpoints_are_refused() {
        for bad in [
            "192.0.2.1",
            "192.0.2.1:0",
            "192.0.2.1:70000",
            "2001:db8::1:51820",
            "[2001:db8::1]",
            "Bad_Host:1",
            ":51820",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
