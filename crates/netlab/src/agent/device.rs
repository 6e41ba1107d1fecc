//! Puts a [`Topology`] on the node: the address of `kilo0`, its WireGuard
//! peers, the routes through it and the NAT rules, each changed only where
//! it differs (kg's `applyTopology`: no interface teardown on a change).

use std::collections::BTreeSet;

use anyhow::Context;
use ipnet::IpNet;
use serde::Deserialize;

use super::topology::{Endpoint, Topology};
use crate::sh::{run, run_with_input};

/// The interface and what was last written to it.
pub struct Device {
    pub interface: String,
    private_key: String,
    /// The config last given to `wg syncconf`.
    applied_conf: Option<String>,
    applied_nat: Option<Vec<String>>,
}

impl Device {
    pub fn new(interface: String, private_key: String) -> Self {
        Self {
            interface,
            private_key,
            applied_conf: None,
            applied_nat: None,
        }
    }

    /// Applies `topology`. `force` re-sends the WireGuard config even when
    /// it is the one last sent (the resync: someone may have changed it).
    pub async fn apply(&mut self, topology: &Topology, force: bool) -> anyhow::Result<Changes> {
        let address = self.address(topology.wireguard_cidr).await?;
        let conf = self.conf(topology).await?;
        let wireguard = self.applied_conf.as_ref() != Some(&conf);
        if force || wireguard {
            // syncconf changes only the peers that differ: sessions of the
            // others are kept.
            let args = ["syncconf", self.interface.as_str(), "/dev/stdin"];
            run_with_input("wg", &args, Some(&conf)).await?;
            self.applied_conf = Some(conf);
        }
        run("ip", &["link", "set", &self.interface, "up"]).await?;
        Ok(Changes {
            address,
            wireguard,
            routes: self.routes(topology).await?,
            nat: self.nat(topology).await?,
        })
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

    /// The `wg` config: resolves DNS endpoints, and like kg fails the whole
    /// apply when one name does not resolve.
    async fn conf(&self, topology: &Topology) -> anyhow::Result<String> {
        let mut conf = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {}\n",
            self.private_key, topology.listen_port
        );
        for peer in &topology.peers {
            conf.push_str(&format!("\n[Peer]\nPublicKey = {}\n", peer.key));
            if let Some(endpoint) = &peer.endpoint {
                conf.push_str(&format!("Endpoint = {}\n", resolve(endpoint).await?));
            }
            let allowed: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
            if !allowed.is_empty() {
                conf.push_str(&format!("AllowedIPs = {}\n", allowed.join(", ")));
            }
            if peer.persistent_keepalive > 0 {
                conf.push_str(&format!(
                    "PersistentKeepalive = {}\n",
                    peer.persistent_keepalive
                ));
            }
        }
        Ok(conf)
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
            let mut args = vec![
                "route",
                "del",
                destination.as_str(),
                "dev",
                &self.interface,
                "proto",
                "static",
            ];
            if let Some(via) = via {
                args.extend(["via", via.as_str()]);
            }
            run("ip", &args).await?;
        }
        for (destination, via) in wanted.difference(&current) {
            let mut args = vec![
                "route",
                "replace",
                destination.as_str(),
                "dev",
                &self.interface,
                "proto",
                "static",
            ];
            if let Some(via) = via {
                args.extend(["via", via.as_str(), "onlink"]);
            }
            run("ip", &args).await?;
        }
        Ok(current != wanted)
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
