//! Puts a [`Topology`] on the node: the address of `kilo0`, its WireGuard
//! peers, the routes through it and the NAT rules, each changed only where
//! it differs (kg's `applyTopology`: no interface teardown on a change).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use ipnet::IpNet;
use serde::Deserialize;

use super::topology::{Endpoint, Topology};
use crate::sh::{run, run_with_input};

/// The interface and what was last written to it.
pub struct Device {
    pub interface: String,
    private_key: String,
    applied_nat: Option<Vec<String>>,
}

impl Device {
    pub fn new(interface: String, private_key: String) -> Self {
        Self {
            interface,
            private_key,
            applied_nat: None,
        }
    }

    /// Applies `topology`, comparing each part with what the node has now.
    pub async fn apply(&mut self, topology: &Topology) -> anyhow::Result<Changes> {
        let address = self.address(topology.wireguard_cidr).await?;
        let wireguard = self.wireguard(topology).await?;
        run("ip", &["link", "set", &self.interface, "up"]).await?;
        Ok(Changes {
            address,
            wireguard,
            routes: self.routes(topology).await?,
            nat: self.nat(topology).await?,
        })
    }

    /// kg's `Conf.Equal` against the device, then only the differences, one
    /// peer at a time (`wg set`): peers whose config is unchanged keep their
    /// sessions. (`wg syncconf` would also re-send the listen port, and
    /// wireguard-go re-binds its socket on every listen-port write.)
    async fn wireguard(&self, topology: &Topology) -> anyhow::Result<bool> {
        let dump = run("wg", &["show", &self.interface, "dump"]).await?;
        let current = WireGuardState::parse(&dump);
        let mut args: Vec<String> = Vec::new();
        let identity =
            current.private_key != self.private_key || current.listen_port != topology.listen_port;
        if identity {
            args.extend([
                "private-key".into(),
                "/dev/stdin".into(),
                "listen-port".into(),
                topology.listen_port.to_string(),
            ]);
        }
        let wanted: BTreeSet<&str> = topology.peers.iter().map(|p| p.key.as_str()).collect();
        for key in current
            .peers
            .keys()
            .filter(|k| !wanted.contains(k.as_str()))
        {
            args.extend(["peer".into(), key.clone(), "remove".into()]);
        }
        for peer in &topology.peers {
            let endpoint = match &peer.endpoint {
                Some(endpoint) => Some(resolve(endpoint).await?),
                None => None,
            };
            let allowed: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
            let wanted = PeerState {
                endpoint: endpoint.clone(),
                allowed_ips: allowed.iter().cloned().collect(),
                persistent_keepalive: peer.persistent_keepalive,
            };
            let same = current.peers.get(&peer.key).is_some_and(|now| {
                now.allowed_ips == wanted.allowed_ips
                    && now.persistent_keepalive == wanted.persistent_keepalive
                    && (wanted.endpoint.is_none() || now.endpoint == wanted.endpoint)
            });
            if same {
                continue;
            }
            args.extend(["peer".into(), peer.key.clone()]);
            if let Some(endpoint) = endpoint {
                args.extend(["endpoint".into(), endpoint]);
            }
            args.extend([
                "allowed-ips".into(),
                allowed.join(","),
                "persistent-keepalive".into(),
                match peer.persistent_keepalive {
                    0 => "off".into(),
                    seconds => seconds.to_string(),
                },
            ]);
        }
        if args.is_empty() {
            return Ok(false);
        }
        tracing::info!(changes = %args.join(" "), "wg set");
        let mut full = vec!["set", self.interface.as_str()];
        full.extend(args.iter().map(String::as_str));
        // `private-key /dev/stdin`: the key never shows in a command line.
        let input = identity.then_some(self.private_key.as_str());
        run_with_input("wg", &full, input).await?;
        Ok(true)
    }

    async fn address(&self, wanted: IpNet) -> anyhow::Result<bool> {
        #[derive(Deserialize)]
        struct Link {
            #[serde(default)]
            addr_info: Vec<AddrInfo>,
        }
        #[derive(Deserialize)]
        struct AddrInfo {
            local: String,
            prefixlen: u8,
        }
        let shown = run("ip", &["-j", "addr", "show", "dev", &self.interface]).await?;
        let links: Vec<Link> = serde_json::from_str(&shown).context("reading `ip -j addr`")?;
        let current: Vec<String> = links
            .iter()
            .flat_map(|l| &l.addr_info)
            .map(|a| format!("{}/{}", a.local, a.prefixlen))
            .collect();
        if current == [wanted.to_string()] {
            return Ok(false);
        }
        // kg's SetAddress: this address and no other.
        run("ip", &["addr", "flush", "dev", &self.interface]).await?;
        run(
            "ip",
            &["addr", "add", &wanted.to_string(), "dev", &self.interface],
        )
        .await?;
        Ok(true)
    }

    /// Routes through the interface with `proto static`, as kg adds them:
    /// missing ones added, ones no longer wanted removed.
    async fn routes(&self, topology: &Topology) -> anyhow::Result<bool> {
        #[derive(Deserialize)]
        struct Shown {
            dst: String,
            gateway: Option<String>,
        }
        let shown = run(
            "ip",
            &[
                "-j",
                "route",
                "show",
                "dev",
                &self.interface,
                "proto",
                "static",
            ],
        )
        .await?;
        let shown: Vec<Shown> = serde_json::from_str(&shown).context("reading `ip -j route`")?;
        let current: BTreeSet<(String, Option<String>)> =
            shown.into_iter().map(|r| (r.dst, r.gateway)).collect();
        let wanted: BTreeSet<(String, Option<String>)> = topology
            .routes
            .iter()
            .map(|r| {
                (
                    route_destination(r.destination),
                    r.via.map(|v| v.to_string()),
                )
            })
            .collect();
        for (destination, via) in current.difference(&wanted) {
            self.route("del", destination, via.as_deref()).await?;
        }
        for (destination, via) in wanted.difference(&current) {
            self.route("replace", destination, via.as_deref()).await?;
        }
        Ok(current != wanted)
    }

    /// `ip route <verb>` of one `proto static` route on the interface.
    async fn route(&self, verb: &str, destination: &str, via: Option<&str>) -> anyhow::Result<()> {
        let mut args = vec![
            "route",
            verb,
            destination,
            "dev",
            &self.interface,
            "proto",
            "static",
        ];
        if let Some(via) = via {
            args.extend(["via", via, "onlink"]);
        }
        run("ip", &args).await.map(drop)
    }

    /// `Topology.Rules` with `--cni=false`: nat POSTROUTING sends what comes
    /// from a Peer's ranges to `KILO-NAT`, which returns for the mesh's
    /// ranges and masquerades the rest.
    async fn nat(&mut self, topology: &Topology) -> anyhow::Result<bool> {
        let mut chain: Vec<String> = topology
            .nat_returns
            .iter()
            .map(|range| format!("-A KILO-NAT -d {range} -j RETURN"))
            .collect();
        chain.push("-A KILO-NAT -j MASQUERADE".into());
        let jumps: Vec<String> = topology
            .nat_sources
            .iter()
            .map(|range| {
                format!("-s {range} -m comment --comment \"Kilo: jump to NAT chain\" -j KILO-NAT")
            })
            .collect();
        let wanted: Vec<String> = chain.iter().chain(&jumps).cloned().collect();
        if self.applied_nat.as_ref() == Some(&wanted) {
            return Ok(false);
        }
        // Drop the old jumps, then rebuild the chain and insert the new jumps.
        let existing = run("iptables", &["-t", "nat", "-S", "POSTROUTING"]).await?;
        let mut restore = String::from("*nat\n:KILO-NAT - [0:0]\n");
        for line in existing.lines().filter(|l| l.ends_with("-j KILO-NAT")) {
            restore.push_str(&format!(
                "{}\n",
                line.replacen("-A POSTROUTING", "-D POSTROUTING", 1)
            ));
        }
        restore.push_str(&chain.join("\n"));
        restore.push('\n');
        for jump in &jumps {
            restore.push_str(&format!("-I POSTROUTING 1 {jump}\n"));
        }
        restore.push_str("COMMIT\n");
        run_with_input("iptables-restore", &["--noflush"], Some(&restore)).await?;
        self.applied_nat = Some(wanted);
        Ok(true)
    }
}

/// What `wg show <interface> dump` says.
struct WireGuardState {
    private_key: String,
    listen_port: u16,
    peers: BTreeMap<String, PeerState>,
}

#[derive(PartialEq, Eq)]
struct PeerState {
    endpoint: Option<String>,
    allowed_ips: BTreeSet<String>,
    persistent_keepalive: u32,
}

impl WireGuardState {
    /// The interface line (private key, public key, port, fwmark), then one
    /// line a peer (key, preshared key, endpoint, allowed IPs, handshake,
    /// rx, tx, keepalive), tab-separated.
    fn parse(dump: &str) -> Self {
        let mut lines = dump.lines();
        let interface: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
        let none = |v: &str| v != "(none)";
        let peers = lines
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                let state = PeerState {
                    endpoint: fields
                        .get(2)
                        .copied()
                        .filter(|v| none(v))
                        .map(str::to_owned),
                    allowed_ips: fields
                        .get(3)
                        .copied()
                        .filter(|v| none(v))
                        .map(|v| v.split(',').map(str::to_owned).collect())
                        .unwrap_or_default(),
                    persistent_keepalive: fields.get(7).and_then(|v| v.parse().ok()).unwrap_or(0),
                };
                Some(((*fields.first()?).to_owned(), state))
            })
            .collect();
        Self {
            private_key: interface.first().copied().unwrap_or_default().to_owned(),
            listen_port: interface.get(2).and_then(|p| p.parse().ok()).unwrap_or(0),
            peers,
        }
    }
}

/// What one apply changed.
#[derive(Debug, Default)]
pub struct Changes {
    pub address: bool,
    pub wireguard: bool,
    pub routes: bool,
    pub nat: bool,
}

impl Changes {
    pub fn any(&self) -> bool {
        self.address || self.wireguard || self.routes || self.nat
    }
}

/// `ip route` prints a host route without its prefix length.
fn route_destination(net: IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.trunc().to_string()
    }
}

async fn resolve(endpoint: &Endpoint) -> anyhow::Result<String> {
    match endpoint {
        Endpoint::Ip(..) => Ok(endpoint.to_string()),
        Endpoint::Dns(name, port) => {
            let mut addresses = tokio::net::lookup_host((name.as_str(), *port))
                .await
                .with_context(|| format!("resolving the endpoint {name}"))?;
            let address = addresses
                .next()
                .with_context(|| format!("the endpoint {name} has no address"))?;
            Ok(address.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_of_wg_show_reads_as_the_device_state() {
        let dump = "cHJpdmF0ZQ==\tcHVibGlj\t51820\toff\n\
                    a2V5MQ==\t(none)\t198.51.100.11:51820\t10.2.1.0/24,10.102.0.1/32\t1764094105\t148\t240\t25\n\
                    a2V5Mg==\t(none)\t(none)\t(none)\t0\t0\t0\toff\n";
        let state = WireGuardState::parse(dump);
        assert_eq!(state.private_key, "cHJpdmF0ZQ==");
        assert_eq!(state.listen_port, 51820);
        let first = &state.peers["a2V5MQ=="];
        assert_eq!(first.endpoint.as_deref(), Some("198.51.100.11:51820"));
        assert_eq!(
            first.allowed_ips,
            BTreeSet::from(["10.2.1.0/24".to_owned(), "10.102.0.1/32".to_owned()])
        );
        assert_eq!(first.persistent_keepalive, 25);
        let second = &state.peers["a2V5Mg=="];
        assert!(second.endpoint.is_none() && second.allowed_ips.is_empty());
        assert_eq!(second.persistent_keepalive, 0);
    }

    #[test]
    fn host_routes_are_written_as_ip_route_prints_them() {
        assert_eq!(
            route_destination("10.102.0.1/32".parse().unwrap()),
            "10.102.0.1"
        );
        assert_eq!(
            route_destination("10.2.1.0/24".parse().unwrap()),
            "10.2.1.0/24"
        );
    }
}
