//! The manual procedure Kilo documents for multi-cluster (its
//! docs/multi-cluster-services.md), as a user's shell loop runs it: for every
//! ordered pair of clusters, for every node of the source,
//!
//! ```sh
//! kgctl --kubeconfig $SRC showconf node $n --as-peer -o yaml --allowed-ips $SERVICECIDR \
//!   | kubectl --kubeconfig $DST apply -f -
//! ```
//!
//! `kgctl` cannot be built here (the Go module proxy refuses Kilo's module),
//! so each `kgctl` is stood in for by one `kubectl get nodes,peers -o json`
//! on the source, which makes the two cluster-wide lists `kgctl showconf`
//! makes (it lists every node and every Peer to build the topology), and the
//! harness renders the Peer from that output with the fields `kgctl` prints.
//! It skips kgctl's CRD read and its two watches, so the figure is a lower
//! bound of the real procedure's cost.

use std::{path::Path, time::Instant};

use anyhow::Context;
use serde::Serialize;

use crate::fleet::{Fleet, entry};

#[derive(Clone, Debug, Serialize)]
pub struct Manual {
    /// Clusters of the mesh, and nodes on each.
    pub clusters: usize,
    pub nodes_per_cluster: u32,
    /// Pipelines run (one per node and destination cluster).
    pub pipelines: usize,
    pub seconds: f64,
}

/// Runs the procedure for every ordered pair of clusters, one pipeline
/// after the other, as the documented loop does.
pub async fn run(fleet: &Fleet) -> anyhow::Result<Manual> {
    let kubectl = testkit::tool("kubectl")?;
    let cache = tempfile::tempdir()?;
    let clusters = fleet.names().len();
    let started = Instant::now();
    let mut pipelines = 0;
    for source in 0..clusters {
        let src = fleet.kubeconfig(source);
        let service_cidr = entry(source).service_cidr.unwrap_or_default();
        for destination in (0..clusters).filter(|d| *d != source) {
            let dst = fleet.kubeconfig(destination);
            let listed = kubectl_run(
                &kubectl,
                cache.path(),
                src,
                &["get", "nodes", "-o", "name"],
                None,
            )
            .await?;
            for node in listed.lines().filter_map(|l| l.strip_prefix("node/")) {
                let topology = kubectl_run(
                    &kubectl,
                    cache.path(),
                    src,
                    &["get", "nodes,peers", "-o", "json"],
                    None,
                )
                .await?;
                let peer = as_peer(&topology, node, &fleet.names()[source], &service_cidr)?;
                kubectl_run(
                    &kubectl,
                    cache.path(),
                    dst,
                    &["apply", "-f", "-"],
                    Some(&peer),
                )
                .await?;
                pipelines += 1;
            }
        }
    }
    Ok(Manual {
        clusters: fleet.names().len(),
        nodes_per_cluster: fleet.node_count(),
        pipelines,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs kubectl with a discovery cache kept between runs, as a user's
/// `~/.kube/cache` is; returns its stdout.
async fn kubectl_run(
    kubectl: &Path,
    cache: &Path,
    kubeconfig: &Path,
    args: &[&str],
    input: Option<&str>,
) -> anyhow::Result<String> {
    let mut full: Vec<&std::ffi::OsStr> = vec![
        "--kubeconfig".as_ref(),
        kubeconfig.as_os_str(),
        "--cache-dir".as_ref(),
        cache.as_os_str(),
    ];
    full.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
    Ok(testkit::command::output(kubectl, &full, input).await?)
}

/// The Peer `kgctl showconf node <node> --as-peer --allowed-ips <extra>`
/// prints for a node in full granularity: pod subnet, WireGuard IP as a
/// host route, the extra ranges; endpoint and key from the annotations. The
/// name gets the source cluster's prefix: every cluster here has a `node-0`,
/// and the same name from two sources would overwrite each other.
fn as_peer(topology: &str, node: &str, cluster: &str, extra: &str) -> anyhow::Result<String> {
    let list: serde_json::Value = serde_json::from_str(topology)?;
    let found = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|item| item["kind"] == "Node" && item["metadata"]["name"] == node)
        .with_context(|| format!("node {node} is not in the listing"))?;
    let annotation = |key: &str| {
        found["metadata"]["annotations"][format!("kilo.squat.ai/{key}")]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let endpoint = annotation("endpoint");
    let (ip, port) = endpoint
        .rsplit_once(':')
        .with_context(|| format!("node {node} has no endpoint"))?;
    let wireguard_ip = annotation("wireguard-ip");
    let host = wireguard_ip.split('/').next().unwrap_or_default();
    let peer = serde_json::json!({
        "apiVersion": "kilo.squat.ai/v1alpha1",
        "kind": "Peer",
        "metadata": { "name": format!("{cluster}-{node}") },
        "spec": {
            "allowedIPs": [found["spec"]["podCIDR"], format!("{host}/32"), extra],
            "endpoint": { "dnsOrIP": { "ip": ip }, "port": port.parse::<u16>()? },
            "publicKey": annotation("key"),
        },
    });
    Ok(peer.to_string())
}
