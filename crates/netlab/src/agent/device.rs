//! Puts a [`Topology`] on the node: on a leader the address of `kilo0`, its
//! WireGuard peers and the interface up, on a non-leader the interface down;
//! then the routes and the NAT rules; each changed only where it differs
//! (kg's `applyTopology`: no interface teardown on a change). Also kg's
//! look for the node's private IP (`getIP`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde::Deserialize;

use super::{
    backend::Endpoint,
    topology::{RouteDevice, Topology, WireGuardConf, is_public},
};
use crate::sh::{run, run_with_input};

/// The interface and what was last written to it.
pub struct Device {
    pub interface: String,
    private_key: String,
    applied_nat: Option<Vec<String>>,
    /// The interfaces whose `proto static` routes are this agent's: the
    /// WireGuard interface and every private interface routes left by.
    route_devices: BTreeSet<String>,
}

impl Device {
    pub fn new(interface: String, private_key: String) -> Self {
        Self {
            route_devices: BTreeSet::from([interface.clone()]),
            interface,
            private_key,
            applied_nat: None,
        }
    }

    /// Applies `topology`, comparing each part with what the node has now.
    /// The routes come last: a leader's need the interface up.
    pub async fn apply(&mut self, topology: &Topology) -> anyhow::Result<Changes> {
        let (address, wireguard) = match &topology.wireguard {
            Some(conf) => (
                self.address(conf.address).await?,
                self.wireguard(conf).await?,
            ),
            None => (false, false),
        };
        let link = self.set_up(topology.wireguard.is_some()).await?;
        Ok(Changes {
            address,
            wireguard,
            link,
            routes: self.routes(topology).await?,
            nat: self.nat(topology).await?,
        })
    }

    /// kg's `getIP`, for the private address only: among the addresses of
    /// every interface but this one, leaving out loopback and link-local
    /// ones, the first that is not public (IPv4 first, then in text order),
    /// with its mask. kg looks first at the addresses the hostname resolves
    /// to and at the default route's interface; the lab's nodes have
    /// neither.
    pub async fn private_ip(&self) -> anyhow::Result<Option<IpNet>> {
        let addresses = interface_addresses().await?;
        Ok(private_ip_among(&addresses, &self.interface))
    }

    /// Sets the interface up (a leader) or down (kg's `iproute.Set`): the
    /// kernel then drops the routes through it; its address and WireGuard
    /// config stay as they are.
    async fn set_up(&self, up: bool) -> anyhow::Result<bool> {
        #[derive(Deserialize)]
        struct Link {
            #[serde(default)]
            flags: Vec<String>,
        }
        let shown = run("ip", &["-j", "link", "show", "dev", &self.interface]).await?;
        let links: Vec<Link> = serde_json::from_str(&shown).context("reading `ip -j link`")?;
        let is_up = links.iter().any(|l| l.flags.iter().any(|f| f == "UP"));
        if is_up == up {
            return Ok(false);
        }
        let state = if up { "up" } else { "down" };
        run("ip", &["link", "set", &self.interface, state]).await?;
        Ok(true)
    }

    /// kg's `Conf.Equal` against the device, then only the differences, one
    /// peer at a time (`wg set`): peers whose config is unchanged keep their
    /// sessions. (`wg syncconf` would also re-send the listen port, and
    /// wireguard-go re-binds its socket on every listen-port write.)
    async fn wireguard(&self, conf: &WireGuardConf) -> anyhow::Result<bool> {
        let dump = run("wg", &["show", &self.interface, "dump"]).await?;
        let current = WireGuardState::parse(&dump);
        let mut args: Vec<String> = Vec::new();
        let identity =
            current.private_key != self.private_key || current.listen_port != conf.listen_port;
        if identity {
            args.extend([
                "private-key".into(),
                "/dev/stdin".into(),
                "listen-port".into(),
                conf.listen_port.to_string(),
            ]);
        }
        let wanted: BTreeSet<&str> = conf.peers.iter().map(|p| p.key.as_str()).collect();
        for key in current
            .peers
            .keys()
            .filter(|k| !wanted.contains(k.as_str()))
        {
            args.extend(["peer".into(), key.clone(), "remove".into()]);
        }
        for peer in &conf.peers {
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

    /// Routes with `proto static`, as kg adds them, on the WireGuard
    /// interface and on the interface of the node's private IP: missing ones
    /// added, ones no longer wanted removed.
    async fn routes(&mut self, topology: &Topology) -> anyhow::Result<bool> {
        let private = self.private_interface(topology).await?;
        if let Some(private) = &private {
            self.route_devices.insert(private.clone());
        }
        let mut wanted = BTreeSet::new();
        for route in &topology.routes {
            let device = match (route.device, &private) {
                (RouteDevice::Private, Some(private)) => private.clone(),
                _ => self.interface.clone(),
            };
            wanted.insert(ShownRoute {
                dst: route_destination(route.destination),
                gateway: route.via.map(|v| v.to_string()),
                dev: device,
                prefsrc: route.source.map(|s| s.to_string()),
            });
        }
        let shown = run("ip", &["-j", "route", "show", "proto", "static"]).await?;
        let shown: Vec<ShownRoute> =
            serde_json::from_str(&shown).context("reading `ip -j route`")?;
        let current: BTreeSet<ShownRoute> = shown
            .into_iter()
            .filter(|r| self.route_devices.contains(&r.dev))
            .collect();
        for route in current.difference(&wanted) {
            ip_route("del", route).await?;
        }
        for route in wanted.difference(&current) {
            ip_route("replace", route).await?;
        }
        Ok(current != wanted)
    }

    /// The interface that holds the node's internal IP (not the WireGuard
    /// one), when a route leaves by it.
    async fn private_interface(&self, topology: &Topology) -> anyhow::Result<Option<String>> {
        if !topology
            .routes
            .iter()
            .any(|r| r.device == RouteDevice::Private)
        {
            return Ok(None);
        }
        let Some(ip) = topology.private_ip else {
            bail!("routes leave by the private interface, and the node has no internal IP");
        };
        let name = interface_addresses()
            .await?
            .into_iter()
            .find(|(name, address)| *name != self.interface && address.addr() == ip)
            .map(|(name, _)| name)
            .with_context(|| format!("no interface holds the node's internal IP {ip}"))?;
        Ok(Some(name))
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

/// A `proto static` route as `ip -j route` shows it.
#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct ShownRoute {
    dst: String,
    gateway: Option<String>,
    dev: String,
    prefsrc: Option<String>,
}

/// `ip route <verb>` of one `proto static` route.
async fn ip_route(verb: &str, route: &ShownRoute) -> anyhow::Result<()> {
    let mut args = vec![
        "route", verb, &route.dst, "dev", &route.dev, "proto", "static",
    ];
    if let Some(via) = &route.gateway {
        args.extend(["via", via, "onlink"]);
    }
    if let Some(source) = &route.prefsrc {
        args.extend(["src", source]);
    }
    run("ip", &args).await.map(drop)
}

/// Every address of every interface, with its interface's name.
async fn interface_addresses() -> anyhow::Result<Vec<(String, IpNet)>> {
    #[derive(Deserialize)]
    struct Link {
        ifname: String,
        #[serde(default)]
        addr_info: Vec<AddrInfo>,
    }
    #[derive(Deserialize)]
    struct AddrInfo {
        local: IpAddr,
        prefixlen: u8,
    }
    let shown = run("ip", &["-j", "addr", "show"]).await?;
    let links: Vec<Link> = serde_json::from_str(&shown).context("reading `ip -j addr`")?;
    Ok(links
        .into_iter()
        .flat_map(|link| {
            link.addr_info.into_iter().filter_map(move |a| {
                let address = IpNet::new(a.local, a.prefixlen).ok()?;
                Some((link.ifname.clone(), address))
            })
        })
        .collect())
}

/// The choice of [`Device::private_ip`] among `(interface, address)` pairs.
fn private_ip_among(addresses: &[(String, IpNet)], ignored_interface: &str) -> Option<IpNet> {
    let ignored: BTreeSet<IpAddr> = addresses
        .iter()
        .filter(|(name, _)| name == ignored_interface)
        .map(|(_, address)| address.addr())
        .collect();
    // Go's IsLoopback, IsLinkLocalUnicast, IsLinkLocalMulticast (`isLocal`).
    let local = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback() || v4.is_link_local() || (a, b, c) == (224, 0, 0)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unicast_link_local() || v6.segments()[0] & 0xff0f == 0xff02
        }
    };
    let mut private: Vec<IpNet> = addresses
        .iter()
        .map(|(_, address)| *address)
        .filter(|a| !ignored.contains(&a.addr()) && !local(a.addr()) && !is_public(a.addr()))
        .collect();
    // kg's `sortIPs`: IPv4 first, then by text.
    private.sort_by_key(|a| (a.addr().is_ipv6(), a.to_string()));
    private.into_iter().next()
}

/// What one apply changed.
#[derive(Debug, Default)]
pub struct Changes {
    pub address: bool,
    pub wireguard: bool,
    /// The interface was set up or down.
    pub link: bool,
    pub routes: bool,
    pub nat: bool,
}

impl Changes {
    pub fn any(&self) -> bool {
        self.address || self.wireguard || self.link || self.routes || self.nat
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

    #[test]
    fn the_private_ip_is_the_first_non_public_address_off_the_wireguard_interface() {
        let addresses = |pairs: &[(&str, &str)]| -> Vec<(String, IpNet)> {
            pairs
                .iter()
                .map(|(name, net)| ((*name).to_owned(), net.parse().unwrap()))
                .collect()
        };
        let node = addresses(&[
            ("lo", "127.0.0.1/8"),
            ("eth0", "198.51.100.11/24"),
            ("eth0", "172.18.1.11/24"),
            ("eth0", "fd00::11/64"),
            ("eth0", "fe80::1/64"),
            ("kilo0", "10.102.0.1/24"),
        ]);
        assert_eq!(
            private_ip_among(&node, "kilo0").map(|ip| ip.to_string()),
            Some("172.18.1.11/24".into())
        );
        let public_only = addresses(&[("eth0", "198.51.100.11/24"), ("kilo0", "10.102.0.1/24")]);
        assert_eq!(private_ip_among(&public_only, "kilo0"), None);
        let sorted_as_text = addresses(&[("eth1", "172.18.1.11/24"), ("eth0", "10.9.0.1/16")]);
        assert_eq!(
            private_ip_among(&sorted_as_text, "kilo0").map(|ip| ip.to_string()),
            Some("10.9.0.1/16".into())
        );
    }
}
