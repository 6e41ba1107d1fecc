//! The spec, checked and parsed: the controller re-checks everything the
//! CRD's schema and CEL rules check, because a CRD can be older than the
//! operator and a bad spec must never cost the mesh its Peers.

use std::collections::BTreeSet;

use api::{ClusterMeshSpec, is_dns1123_label};
use ipnet::IpNet;

use crate::cidr::{CidrError, parse_canonical};

/// A problem in the spec, naming the field and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// Path of the field, e.g. `spec.clusters[1].podCIDRs[0]`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Which declared range of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RangeKind {
    Pod,
    WireGuard,
    Service,
    Additional,
}

impl RangeKind {
    /// The spec field holding such ranges.
    pub fn field(self) -> &'static str {
        match self {
            Self::Pod => "podCIDRs",
            Self::WireGuard => "wireguardCIDR",
            Self::Service => "serviceCIDR",
            Self::Additional => "additionalCIDRs",
        }
    }
}

/// One cluster of a valid spec, its ranges parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    pub local: bool,
    pub pod: Vec<IpNet>,
    pub wireguard: IpNet,
    pub service: Option<IpNet>,
    pub additional: Vec<IpNet>,
}

impl ClusterSpec {
    /// Every declared range with its kind.
    pub fn ranges(&self) -> impl Iterator<Item = (RangeKind, IpNet)> + '_ {
        let pod = self.pod.iter().map(|n| (RangeKind::Pod, *n));
        let wireguard = std::iter::once((RangeKind::WireGuard, self.wireguard));
        let service = self.service.iter().map(|n| (RangeKind::Service, *n));
        let additional = self.additional.iter().map(|n| (RangeKind::Additional, *n));
        pod.chain(wireguard).chain(service).chain(additional)
    }
}

/// Refuses two entries that reach the same cluster, as `uid` (what
/// identifies the cluster an entry reaches, when known) tells: the mesh
/// would write a cluster's Peers of its own nodes onto itself.
pub fn one_entry_per_cluster(
    spec: &ClusterMeshSpec,
    uid: impl Fn(&str) -> Option<String>,
) -> Result<(), Vec<SpecError>> {
    let mut first_with: std::collections::BTreeMap<String, (usize, &str)> = Default::default();
    let mut errors = Vec::new();
    for (i, entry) in spec.clusters.iter().enumerate() {
        let Some(uid) = uid(&entry.name) else {
            continue;
        };
        match first_with.get(&uid) {
            Some((first, name)) => errors.push(SpecError {
                field: format!("spec.clusters[{i}]"),
                message: format!(
                    "entries {name:?} (spec.clusters[{first}]) and {:?} reach the same cluster \
                     (its kube-system namespace has uid {uid}); each entry must be its own \
                     cluster: fix the kubeconfig Secret of one of them",
                    entry.name
                ),
            }),
            None => {
                first_with.insert(uid, (i, &entry.name));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks `spec` and parses its ranges, or lists every problem found.
pub fn parse(spec: &ClusterMeshSpec) -> Result<Vec<ClusterSpec>, Vec<SpecError>> {
    let mut errors = Vec::new();
    let mut error = |field: String, message: String| errors.push(SpecError { field, message });
    if spec.clusters.len() < 2 {
        error(
            "spec.clusters".into(),
            "a mesh needs at least 2 clusters".into(),
        );
    }
    let locals = spec.clusters.iter().filter(|c| c.local).count();
    if locals != 1 {
        error(
            "spec.clusters".into(),
            format!(
                "exactly one cluster must have local: true (the one the operator runs in); found {locals}"
            ),
        );
    }
    let mut names = BTreeSet::new();
    let mut clusters = Vec::new();
    for (i, entry) in spec.clusters.iter().enumerate() {
        let at = |field: &str| format!("spec.clusters[{i}].{field}");
        if !is_dns1123_label(&entry.name) {
            error(
                at("name"),
                format!(
                    "{:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)",
                    entry.name
                ),
            );
        }
        if !names.insert(entry.name.as_str()) {
            error(
                at("name"),
                format!(
                    "{:?} is used by two clusters; names must be unique",
                    entry.name
                ),
            );
        }
        if !entry.local && entry.kubeconfig_secret_ref.is_none() {
            error(at("kubeconfigSecretRef"), "required for a cluster that is not local; create it with `kilo-clustermesh-operator connect`".into());
        }
        if entry.pod_cidrs.is_empty() {
            error(at("podCIDRs"), "at least one pod CIDR is required".into());
        }
        let mut parse_at = |field: String, value: &str| match parse_canonical(value) {
            Ok(net) => Some(net),
            Err(CidrError::Unparsable) => {
                error(
                    field,
                    format!("{value:?} is not a CIDR such as 10.1.0.0/16 or fd00:1::/64"),
                );
                None
            }
            Err(CidrError::HostBits(canonical)) => {
                error(
                    field,
                    format!("{value} has host bits set; write {canonical}"),
                );
                None
            }
        };
        let pod: Vec<_> = entry
            .pod_cidrs
            .iter()
            .enumerate()
            .map(|(j, v)| parse_at(at(&format!("podCIDRs[{j}]")), v))
            .collect();
        let wireguard = parse_at(at("wireguardCIDR"), &entry.wireguard_cidr);
        let service = entry
            .service_cidr
            .as_deref()
            .map(|v| parse_at(at("serviceCIDR"), v));
        let additional: Vec<_> = entry
            .additional_cidrs
            .iter()
            .enumerate()
            .map(|(j, v)| parse_at(at(&format!("additionalCIDRs[{j}]")), v))
            .collect();
        // Routed through the anchor: a /0 would take every address.
        let anchor_ranges = service.iter().map(|net| (at("serviceCIDR"), net)).chain(
            additional
                .iter()
                .enumerate()
                .map(|(j, net)| (at(&format!("additionalCIDRs[{j}]")), net)),
        );
        for (field, net) in anchor_ranges {
            if let Some(net) = net.filter(|net| net.prefix_len() == 0) {
                error(
                    field,
                    format!(
                        "{net} would route every address into this cluster; name the ranges it really serves"
                    ),
                );
            }
        }
        clusters.push((entry, pod, wireguard, service, additional));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // No error was recorded, so every range parsed.
    Ok(clusters
        .into_iter()
        .filter_map(|(entry, pod, wireguard, service, additional)| {
            Some(ClusterSpec {
                name: entry.name.clone(),
                local: entry.local,
                pod: pod.into_iter().flatten().collect(),
                wireguard: wireguard?,
                service: service.flatten(),
                additional: additional.into_iter().flatten().collect(),
            })
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use api::ClusterEntry;

    use super::*;

    /// A test entry with the given pod and WireGuard ranges.
    pub fn entry(name: &str, local: bool, pod: &str, wireguard: &str) -> ClusterEntry {
        let mut entry = api::fixtures::cluster_entry(name, 1, local);
        entry.pod_cidrs = vec![pod.into()];
        entry.wireguard_cidr = wireguard.into();
        entry.service_cidr = None;
        entry
    }

    fn fields(spec: ClusterMeshSpec) -> Vec<String> {
        parse(&spec)
            .unwrap_err()
            .into_iter()
            .map(|e| format!("{} | {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn a_valid_spec_parses() {
        let spec = ClusterMeshSpec {
            clusters: vec![
                entry("a", true, "10.1.0.0/16", "10.100.0.0/24"),
                entry("b", false, "10.2.0.0/16", "10.100.1.0/24"),
            ],
            ..Default::default()
        };
        let clusters = parse(&spec).unwrap();
        assert_eq!(
            clusters[1].pod,
            vec!["10.2.0.0/16".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn every_problem_is_named_with_its_field_and_fix() {
        let mut b = entry("B_bad", false, "10.2.0.1/16", "nope");
        b.kubeconfig_secret_ref = None;
        b.service_cidr = Some("10.96.0.0/12".into());
        let errors = fields(ClusterMeshSpec {
            clusters: vec![entry("a", false, "10.1.0.0/16", "10.100.0.0/24"), b],
            ..Default::default()
        });
        let expected = [
            "spec.clusters | exactly one cluster must have local: true",
            "spec.clusters[1].name | \"B_bad\" is not a DNS-1123 label",
            "spec.clusters[1].kubeconfigSecretRef | required",
            "spec.clusters[1].podCIDRs[0] | 10.2.0.1/16 has host bits set; write 10.2.0.0/16",
            "spec.clusters[1].wireguardCIDR | \"nope\" is not a CIDR",
        ];
        for want in expected {
            assert!(
                errors.iter().any(|e| e.starts_with(want)),
                "missing {want:?} in {errors:#?}"
            );
        }
    }

    #[test]
    fn a_range_routing_every_address_through_an_anchor_is_refused() {
        let mut b = entry("b", false, "10.2.0.0/16", "10.100.1.0/24");
        b.additional_cidrs = vec!["192.168.0.0/16".into(), "0.0.0.0/0".into()];
        b.service_cidr = Some("::/0".into());
        let errors = fields(ClusterMeshSpec {
            clusters: vec![entry("a", true, "10.1.0.0/16", "10.100.0.0/24"), b],
            ..Default::default()
        });
        assert_eq!(
            errors,
            [
                "spec.clusters[1].serviceCIDR | ::/0 would route every address into this cluster; name the ranges it really serves",
                "spec.clusters[1].additionalCIDRs[1] | 0.0.0.0/0 would route every address into this cluster; name the ranges it really serves",
            ]
        );
    }

    #[test]
    fn duplicate_names_and_a_single_cluster_are_refused() {
        let errors = fields(ClusterMeshSpec {
            clusters: vec![entry("a", true, "10.1.0.0/16", "10.100.0.0/24")],
            ..Default::default()
        });
        assert!(errors[0].contains("at least 2 clusters"));
        let errors = fields(ClusterMeshSpec {
            clusters: vec![
                entry("a", true, "10.1.0.0/16", "10.100.0.0/24"),
                entry("a", false, "10.2.0.0/16", "10.100.1.0/24"),
            ],
            ..Default::default()
        });
        assert!(
            errors.iter().any(|e| e.contains("used by two clusters")),
            "{errors:?}"
        );
    }
}
