//! The `spec.clusters[]` entry `connect` prints, with the ranges read from
//! the remote where they show, and notes on what to check.

use std::collections::BTreeSet;

use api::{ClusterEntry, SecretKeyRef};
use ipnet::IpNet;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    networking::v1::ServiceCIDR,
};
use kube::{Api, Client, ResourceExt, api::ListParams};

use super::{ConnectArgs, KILO_DEFAULT_SUBNET, side::Side};

/// The `spec.clusters[]` entry for the remote, with its ranges read from its
/// nodes where they show, and notes on what to check.
pub(super) async fn entry(
    args: &ConnectArgs,
    remote: &Side,
    secret_name: &str,
) -> (ClusterEntry, Vec<String>) {
    let mut notes = Vec::new();
    let nodes = match Api::<Node>::all(remote.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            notes.push(format!(
                "could not list the remote's nodes ({error}); fill in the ranges"
            ));
            Vec::new()
        }
    };
    let pod_cidrs = ranges(&nodes, |node| {
        node.spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.clone())
            .unwrap_or_default()
    });
    let wireguard = ranges(&nodes, |node| {
        node.annotations()
            .get(mesh::annotation::WIREGUARD_IP)
            .cloned()
            .into_iter()
            .collect()
    });
    let pod_cidrs = if pod_cidrs.is_empty() {
        notes.push(
            "no node has spec.podCIDRs: set podCIDRs to the cluster's pod range (--cluster-cidr)"
                .into(),
        );
        vec!["<pod CIDR>".to_owned()]
    } else {
        notes.push(format!(
            "podCIDRs is the smallest range holding the nodes' podCIDRs; if the cluster's \
             --cluster-cidr is wider, use it, or nodes added outside {} are skipped",
            pod_cidrs.join(", ")
        ));
        pod_cidrs
    };
    let wireguard_cidr = match wireguard.as_slice() {
        [] => {
            notes.push(format!(
                "no node has kilo.squat.ai/wireguard-ip: is Kilo running there? Set \
                 wireguardCIDR to its --subnet (Kilo's default {KILO_DEFAULT_SUBNET} collides \
                 across clusters)"
            ));
            "<Kilo --subnet>".to_owned()
        }
        [only] => {
            if only == KILO_DEFAULT_SUBNET {
                notes.push(format!(
                    "wireguardCIDR is Kilo's default {KILO_DEFAULT_SUBNET}, the same in every \
                     cluster that keeps it: give each cluster its own --subnet (docs/cidr-planning.md)"
                ));
            }
            only.clone()
        }
        several => {
            notes.push(format!(
                "the nodes' WireGuard IPs span {}; set wireguardCIDR to Kilo's --subnet",
                several.join(", ")
            ));
            several[0].clone()
        }
    };
    let service_cidr = service_cidr(&remote.client, &mut notes).await;
    let entry = ClusterEntry {
        name: args.name.clone(),
        local: false,
        kubeconfig_secret_ref: Some(SecretKeyRef {
            name: secret_name.to_owned(),
            key: args.secret_key.clone(),
        }),
        pod_cidrs,
        wireguard_cidr,
        service_cidr,
        additional_cidrs: Vec::new(),
    };
    (entry, notes)
}

/// The covering ranges, per address family, of what `pick` reads from each
/// node.
fn ranges(nodes: &[Node], pick: impl Fn(&Node) -> Vec<String>) -> Vec<String> {
    let nets = nodes
        .iter()
        .flat_map(&pick)
        .filter_map(|s| s.parse::<IpNet>().ok());
    mesh::covering(nets)
        .into_iter()
        .map(|n| n.to_string())
        .collect()
}

/// The service range: from the ServiceCIDR objects (Kubernetes 1.33+), else
/// only a hint from the `kubernetes` Service's address.
async fn service_cidr(client: &Client, notes: &mut Vec<String>) -> Option<String> {
    if let Ok(list) = Api::<ServiceCIDR>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        let cidrs: BTreeSet<String> = list
            .items
            .iter()
            .filter_map(|s| s.spec.as_ref())
            .flat_map(|s| s.cidrs.clone().unwrap_or_default())
            .collect();
        if let Some(first) = cidrs.first() {
            if cidrs.len() > 1 {
                notes.push(format!(
                    "the remote has several service ranges ({}); the first is routed, add the \
                     others to additionalCIDRs",
                    cidrs.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            return Some(first.clone());
        }
    }
    let address = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .ok()
        .and_then(|s| s.spec)
        .and_then(|s| s.cluster_ip);
    notes.push(match address {
        Some(ip) => format!(
            "serviceCIDR left out: set it to the remote's --service-cluster-ip-range (it holds {ip})"
        ),
        None => "serviceCIDR left out: set it to the remote's --service-cluster-ip-range".into(),
    });
    None
}

/// The entry as YAML to paste under `spec.clusters`, with the notes as
/// comments.
pub(super) fn render_entry(namespace: &str, entry: &ClusterEntry, notes: &[String]) -> String {
    let mut out =
        format!("# Add this entry to spec.clusters of the ClusterMesh in namespace {namespace}.\n");
    for note in notes {
        out.push_str(&format!("# - {note}\n"));
    }
    // A plain struct of strings always serializes.
    out.push_str(&serde_yaml::to_string(&[entry]).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_is_yaml_for_spec_clusters_with_notes_as_comments() {
        let entry = ClusterEntry {
            name: "b".into(),
            kubeconfig_secret_ref: Some(SecretKeyRef {
                name: "b-kubeconfig".into(),
                key: "kubeconfig".into(),
            }),
            pod_cidrs: vec!["10.2.0.0/16".into()],
            wireguard_cidr: "10.102.0.0/24".into(),
            ..Default::default()
        };
        let text = render_entry("kilo-system", &entry, &["check this".into()]);
        assert!(text.contains("# - check this\n"), "{text}");
        let parsed: Vec<ClusterEntry> = serde_yaml::from_str(&text).unwrap();
        assert_eq!(parsed, vec![entry]);
    }
}
