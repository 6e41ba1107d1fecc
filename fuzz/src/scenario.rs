//! A world of nodes and Peers written as text, so that a seed is a readable
//! file of real Kilo annotations and libFuzzer's mutations stay close to
//! what a Node can hold.
//!
//! ```text
//! # comment
//! @keepalive 25                  operator default persistentKeepalive
//! @advertise-internal-ips
//! @endpoint-dns keep|resolve
//! @now 1764115200                judge check-ins (liveness) at this time
//! @grace 30                      --node-check-in-grace, seconds
//! @seeing-since 1764110000       when the operator started seeing the clusters
//! @dns node-1.example.com 192.0.2.5
//! @dns-error node-2.example.com no such host
//! @unreachable c                 cluster c is not readable (last known kept)
//! @peer <cluster> <peer-name> <foreign|source-cluster> [anchor-node]
//! @node <cluster> <name>         the lines below describe this node
//! @ready
//! @created 1700000000
//! @region eu-west-1
//! @pod 10.2.1.0/24               one entry of spec.podCIDRs
//! kilo.squat.ai/key=<base64>     any other `key=value` line is an annotation
//! ```
//!
//! A node's check-in is read from its `kilo.squat.ai/last-seen` annotation
//! by the operator's own function, as the controller does.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use api::{PeerSpec, fixtures::wireguard_key};
use k8s_openapi::{api::core::v1::Node, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use mesh::{
    ANCHOR_LABEL, CLUSTER_LABEL, ClusterView, EndpointDns, KILO_READY_WITHIN_SECONDS, Liveness,
    MANAGED_BY, MANAGED_BY_LABEL, MESH_LABEL, NODE_ANNOTATION, NodeView, Observation, ObservedPeer,
    Settings, Unreachable,
};

/// The clusters of [`crate::mesh_spec`].
pub const CLUSTERS: [&str; 3] = ["a", "b", "c"];

/// What a scenario describes: the plan's settings and each cluster's
/// observation.
#[derive(Debug)]
pub struct Scenario {
    pub settings: Settings,
    pub observations: BTreeMap<String, Observation>,
}

/// Reads a scenario; lines it does not understand are ignored, so every
/// input is some world.
pub fn parse(text: &str) -> Scenario {
    let mut settings = Settings::default();
    let mut now = None;
    let mut grace: i64 = 0;
    let mut seeing_since: i64 = 0;
    let mut unreachable = BTreeSet::new();
    let mut views: BTreeMap<&str, ClusterView> = CLUSTERS
        .iter()
        .map(|name| {
            let view = ClusterView {
                uid: Some(format!("uid-{name}")),
                ..ClusterView::default()
            };
            (*name, view)
        })
        .collect();
    let mut current: Option<(&str, usize)> = None;
    let cluster = |name: &str| CLUSTERS.iter().copied().find(|c| *c == name);
    for line in text.split('\n') {
        let Some(directive) = line.strip_prefix('@') else {
            if let (Some((key, value)), Some((c, i))) = (line.split_once('='), current) {
                let node = Arc::make_mut(
                    &mut views.get_mut(c).expect("a known cluster").nodes.make_mut()[i],
                );
                node.annotations.insert(key.to_owned(), value.to_owned());
            }
            continue;
        };
        let (word, rest) = directive.split_once(' ').unwrap_or((directive, ""));
        match word {
            "keepalive" => settings.default_persistent_keepalive = rest.trim().parse().ok(),
            "advertise-internal-ips" => settings.advertise_internal_ips = true,
            "endpoint-dns" => {
                settings.endpoint_dns = match rest.trim() {
                    "keep" => EndpointDns::Keep,
                    _ => EndpointDns::Resolve,
                }
            }
            "now" => now = rest.trim().parse::<i64>().ok(),
            // As the controller turns --node-check-in-grace into seconds.
            "grace" => {
                grace = rest
                    .trim()
                    .parse::<u64>()
                    .map_or(0, |g| i64::try_from(g).unwrap_or(i64::MAX))
            }
            "seeing-since" => seeing_since = rest.trim().parse().unwrap_or(0),
            "dns" | "dns-error" => {
                let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
                let answer = settings.dns_answers.entry(name.to_owned()).or_default();
                match word {
                    "dns" => answer.address = value.trim().parse().ok(),
                    _ => answer.error = Some(value.to_owned()),
                }
            }
            "unreachable" => {
                unreachable.extend(cluster(rest.trim()));
            }
            "peer" => {
                let mut words = rest.split(' ');
                let (Some(on), Some(name), Some(owner)) =
                    (words.next().and_then(cluster), words.next(), words.next())
                else {
                    continue;
                };
                // A cluster holds one object of each name.
                let peers = views.get_mut(on).expect("a known cluster").peers.make_mut();
                if peers.iter().all(|p| p.name != name) {
                    peers.push(Arc::new(observed_peer(name, owner, words.next())));
                }
            }
            "node" => {
                let (c, name) = rest.split_once(' ').unwrap_or((rest, ""));
                // A cluster holds one Node of each name: a repeated name
                // describes the same node.
                current = cluster(c).map(|c| {
                    let nodes = views.get_mut(c).expect("a known cluster").nodes.make_mut();
                    let i = nodes
                        .iter()
                        .position(|n| n.name == name)
                        .unwrap_or_else(|| {
                            nodes.push(Arc::new(NodeView {
                                name: name.to_owned(),
                                ..NodeView::default()
                            }));
                            nodes.len() - 1
                        });
                    (c, i)
                });
            }
            "ready" | "created" | "region" | "pod" => {
                let Some((c, i)) = current else { continue };
                let node = Arc::make_mut(
                    &mut views.get_mut(c).expect("a known cluster").nodes.make_mut()[i],
                );
                match word {
                    "ready" => node.ready = true,
                    "created" => node.created = rest.trim().parse().unwrap_or(0),
                    "region" => node.region = Some(rest.to_owned()),
                    _ => node.pod_cidrs.push(rest.to_owned()),
                }
            }
            _ => {}
        }
    }
    settings.liveness = now.map(|now| Liveness {
        now,
        stale_after_seconds: KILO_READY_WITHIN_SECONDS.saturating_add(grace),
    });
    let observations = views
        .into_iter()
        .map(|(name, mut view)| {
            for node in view.nodes.make_mut().iter_mut().map(Arc::make_mut) {
                node.checked_in = last_seen(node).map(|seen| seen.max(seeing_since));
            }
            let observation = if unreachable.contains(name) {
                Observation::Unreachable {
                    cause: Unreachable::Connection("fuzzed outage".into()),
                    last_known: Some(view),
                }
            } else {
                Observation::Observed(view)
            };
            (name.to_owned(), observation)
        })
        .collect();
    Scenario {
        settings,
        observations,
    }
}

/// The node's check-in as the controller reads it from the Node object.
fn last_seen(node: &NodeView) -> Option<i64> {
    let object = Node {
        metadata: ObjectMeta {
            annotations: Some(node.annotations.clone()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    operator::observe::last_seen(&object)
}

/// A Peer found on a cluster: the mesh's own (labelled with its source
/// cluster, maybe as that cluster's anchor) or someone else's.
fn observed_peer(name: &str, owner: &str, anchor: Option<&str>) -> ObservedPeer {
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    if owner != "foreign" {
        labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
        labels.insert(MESH_LABEL.to_owned(), crate::identity().label_value());
        labels.insert(CLUSTER_LABEL.to_owned(), owner.to_owned());
        let node = name.split_once('.').map_or(name, |(_, node)| node);
        annotations.insert(
            NODE_ANNOTATION.to_owned(),
            anchor.unwrap_or(node).to_owned(),
        );
        if anchor.is_some() {
            labels.insert(ANCHOR_LABEL.to_owned(), "true".to_owned());
        }
    }
    ObservedPeer {
        name: name.to_owned(),
        labels,
        annotations,
        spec: PeerSpec {
            allowed_ips: vec!["10.9.0.0/24".into()],
            endpoint: None,
            persistent_keepalive: None,
            preshared_key: None,
            public_key: wireguard_key(9, 9),
        },
        uid: Some(format!("uid-{name}")),
        resource_version: Some("1".into()),
    }
}
