//! Kilo's `Peer` resource (`kilo.squat.ai/v1alpha1`, cluster-scoped), as Kilo
//! publishes it in `manifests/crds.yaml`, with the checks Kilo's
//! `Peer.Validate` applies before it uses a Peer.

use std::{fmt, net::IpAddr, str::FromStr};

use base64::{Engine, engine::general_purpose::STANDARD};
use ipnet::IpNet;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dns::is_dns1123_subdomain;

/// A WireGuard peer that Kilo adds to its mesh: a public key, the ranges routed
/// to it and, optionally, where to reach it.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "kilo.squat.ai",
    version = "v1alpha1",
    kind = "Peer",
    doc = "Peer is a WireGuard peer that should have access to the VPN."
)]
#[serde(rename_all = "camelCase")]
pub struct PeerSpec {
    /// Ranges routed through this peer's tunnel.
    #[serde(rename = "allowedIPs")]
    pub allowed_ips: Vec<String>,
    /// Initial endpoint for connections to the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<PeerEndpoint>,
    /// Seconds between keepalive packets; absent or 0 disables them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<i32>,
    /// Optional symmetric key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<String>,
    /// The peer's WireGuard public key, base64.
    pub public_key: String,
}

/// Where a peer can be reached.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PeerEndpoint {
    /// A DNS name or an IP address.
    #[serde(rename = "dnsOrIP")]
    pub dns_or_ip: DnsOrIp,
    /// UDP port, 1 to 65535.
    pub port: i32,
}

/// A DNS name or an IP address; Kilo uses `ip` when both are set.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct DnsOrIp {
    /// A DNS-1123 subdomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<String>,
    /// An IPv4 or IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// Why Kilo would ignore a Peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPeer {
    #[error("allowedIPs entry {0:?} is not a CIDR")]
    AllowedIp(String),
    #[error("endpoint has neither a DNS name nor an IP address")]
    EndpointEmpty,
    #[error("endpoint DNS name {0:?} is not a DNS-1123 subdomain")]
    EndpointDns(String),
    #[error("endpoint IP {0:?} is not an IP address")]
    EndpointIp(String),
    #[error("endpoint port {0} is outside 1-65535")]
    EndpointPort(i32),
    #[error("persistentKeepalive {0} is negative")]
    Keepalive(i32),
    #[error("publicKey: {0}")]
    PublicKey(#[from] InvalidKey),
}

impl PeerSpec {
    /// The checks of Kilo's `Peer.Validate`: a Peer failing them is ignored
    /// by Kilo, so the operator must never write one.
    pub fn validate(&self) -> Result<(), InvalidPeer> {
        if let Some(bad) = self
            .allowed_ips
            .iter()
            .find(|ip| ip.parse::<IpNet>().is_err())
        {
            return Err(InvalidPeer::AllowedIp(bad.clone()));
        }
        if let Some(endpoint) = &self.endpoint {
            let DnsOrIp { dns, ip } = &endpoint.dns_or_ip;
            let dns = dns.as_deref().filter(|d| !d.is_empty());
            let ip = ip.as_deref().filter(|i| !i.is_empty());
            if dns.is_none() && ip.is_none() {
                return Err(InvalidPeer::EndpointEmpty);
            }
            if let Some(dns) = dns.filter(|d| !is_dns1123_subdomain(d)) {
                return Err(InvalidPeer::EndpointDns(dns.to_owned()));
            }
            if let Some(ip) = ip.filter(|i| i.parse::<IpAddr>().is_err()) {
                return Err(InvalidPeer::EndpointIp(ip.to_owned()));
            }
            if !(1..=65535).contains(&endpoint.port) {
                return Err(InvalidPeer::EndpointPort(endpoint.port));
            }
        }
        if let Some(keepalive) = self.persistent_keepalive.filter(|k| *k < 0) {
            return Err(InvalidPeer::Keepalive(keepalive));
        }
        WireGuardKey::from_str(&self.public_key)?;
        Ok(())
    }
}

/// A WireGuard public key: standard base64 of exactly 32 bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WireGuardKey(String);

/// Why a string is not a WireGuard key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidKey {
    #[error("key is empty")]
    Empty,
    #[error("key is not standard base64")]
    NotBase64,
    #[error("key decodes to {0} bytes, WireGuard keys have 32")]
    Length(usize),
}

impl FromStr for WireGuardKey {
    type Err = InvalidKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidKey::Empty);
        }
        let bytes = STANDARD.decode(s).map_err(|_| InvalidKey::NotBase64)?;
        if bytes.len() != 32 {
            return Err(InvalidKey::Length(bytes.len()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl WireGuardKey {
    /// The key as Kilo and WireGuard write it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WireGuardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WireGuardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WireGuardKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn valid() -> PeerSpec {
        PeerSpec {
            allowed_ips: vec![
                "10.1.0.0/24".into(),
                "10.100.0.1/32".into(),
                "fd00::/64".into(),
            ],
            endpoint: Some(PeerEndpoint {
                dns_or_ip: DnsOrIp {
                    dns: None,
                    ip: Some("192.0.2.1".into()),
                },
                port: 51820,
            }),
            persistent_keepalive: Some(25),
            preshared_key: None,
            public_key: KEY.into(),
        }
    }

    #[test]
    fn a_complete_peer_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
        let mut no_endpoint = valid();
        no_endpoint.endpoint = None;
        assert_eq!(no_endpoint.validate(), Ok(()));
    }

    #[test]
    fn kilo_rejections_are_mirrored() {
        type BreakIt = fn(&mut PeerSpec);
        let cases: Vec<(BreakIt, InvalidPeer)> = vec![
            (
                |p| p.allowed_ips.push("10.0.0.1".into()),
                InvalidPeer::AllowedIp("10.0.0.1".into()),
            ),
            (
                |p| p.endpoint.as_mut().unwrap().dns_or_ip = DnsOrIp::default(),
                InvalidPeer::EndpointEmpty,
            ),
            (
                |p| {
                    p.endpoint.as_mut().unwrap().dns_or_ip = DnsOrIp {
                        dns: Some("Bad_Name".into()),
                        ip: None,
                    }
                },
                InvalidPeer::EndpointDns("Bad_Name".into()),
            ),
            (
                |p| {
                    p.endpoint.as_mut().unwrap().dns_or_ip = DnsOrIp {
                        dns: None,
                        ip: Some("1.2.3".into()),
                    }
                },
                InvalidPeer::EndpointIp("1.2.3".into()),
            ),
            (
                |p| p.endpoint.as_mut().unwrap().port = 0,
                InvalidPeer::EndpointPort(0),
            ),
            (
                |p| p.endpoint.as_mut().unwrap().port = 65536,
                InvalidPeer::EndpointPort(65536),
            ),
            (
                |p| p.persistent_keepalive = Some(-1),
                InvalidPeer::Keepalive(-1),
            ),
            (
                |p| p.public_key = String::new(),
                InvalidPeer::PublicKey(InvalidKey::Empty),
            ),
            (
                |p| p.public_key = "not base64!".into(),
                InvalidPeer::PublicKey(InvalidKey::NotBase64),
            ),
            (
                |p| p.public_key = "AAAA".into(),
                InvalidPeer::PublicKey(InvalidKey::Length(3)),
            ),
        ];
        for (break_it, expected) in cases {
            let mut peer = valid();
            break_it(&mut peer);
            assert_eq!(peer.validate(), Err(expected));
        }
    }

    #[test]
    fn serializes_with_kilo_field_names() {
        let json = serde_json::to_value(valid()).unwrap();
        assert_eq!(json["allowedIPs"][0], "10.1.0.0/24");
        assert_eq!(json["endpoint"]["dnsOrIP"]["ip"], "192.0.2.1");
        assert_eq!(json["persistentKeepalive"], 25);
        assert_eq!(json["publicKey"], KEY);
        assert!(json.get("presharedKey").is_none());
    }
}
