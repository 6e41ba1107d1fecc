//! Kilo's endpoint annotation (`host:port`) as a Peer endpoint.

use std::net::{IpAddr, Ipv6Addr};

use api::{DnsOrIp, PeerEndpoint, is_dns1123_subdomain};

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
