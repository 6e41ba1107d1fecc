//! What the plan reads of a cluster, kept up to date from its watches: each
//! Node and Peer is turned into the plan's view of it once, when its watch
//! reports it, and that view is shared with every pass that reads it; so
//! is the list of a cluster's views, until one of them changes. A pass
//! therefore copies neither objects nor lists, and the planner knows an
//! unchanged list, or object, by its address.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use api::Peer;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use mesh::{NodeView, ObservedPeer, Shared};

use crate::{lock, observe};

/// A change a watch reports.
pub enum Update<K> {
    /// An object was created or changed.
    Apply(K),
    /// An object was deleted.
    Delete(String),
    /// The watch listed the cluster again: these are all its objects now.
    Relisted(Vec<K>),
}

/// One cluster's Nodes and Peers as the plan reads them.
#[derive(Default)]
pub struct Views {
    nodes: Mutex<NodeViews>,
    peers: Mutex<PeerViews>,
}

#[derive(Default)]
struct NodeViews {
    /// Per node: Kilo's last check-in as the node gives it, and its view,
    /// whose check-in time is never earlier than `seeing_since`.
    nodes: BTreeMap<String, (Option<i64>, Arc<NodeView>)>,
    /// Per node whose endpoint is a DNS name: that name.
    endpoint_names: BTreeMap<String, String>,
    /// See [`crate::clusters::Health::seeing_since`].
    seeing_since: i64,
    /// The list handed to the passes, until a node changes.
    listed: Option<Shared<NodeView>>,
}

impl NodeViews {
    fn insert(&mut self, node: &Node) {
        let last_seen = observe::last_seen(node);
        let view = observe::node_view(node, self.seeing_since);
        match mesh::endpoint_name(&view) {
            Some(name) => self.endpoint_names.insert(view.name.clone(), name),
            None => self.endpoint_names.remove(&view.name),
        };
        self.nodes
            .insert(view.name.clone(), (last_seen, Arc::new(view)));
        self.listed = None;
    }

    fn remove(&mut self, name: &str) {
        self.nodes.remove(name);
        self.endpoint_names.remove(name);
        self.listed = None;
    }
}

#[derive(Default)]
struct PeerViews {
    peers: BTreeMap<String, Arc<ObservedPeer>>,
    /// The list handed to the passes, until a Peer changes.
    listed: Option<Shared<ObservedPeer>>,
}

impl Views {
    /// The cluster's nodes, by name; none checked in before `seeing_since`
    /// (the views that said so are replaced when it moves, once). The same
    /// list as the last call's while no node changed.
    pub fn nodes(&self, seeing_since: i64) -> Shared<NodeView> {
        let mut nodes = lock(&self.nodes);
        if nodes.seeing_since != seeing_since {
            nodes.seeing_since = seeing_since;
            let mut moved = false;
            for (last_seen, view) in nodes.nodes.values_mut() {
                let checked_in = last_seen.map(|seen| seen.max(seeing_since));
                if view.checked_in != checked_in {
                    Arc::make_mut(view).checked_in = checked_in;
                    moved = true;
                }
            }
            if moved {
                nodes.listed = None;
            }
        }
        let nodes = &mut *nodes;
        let list = nodes.nodes.values().map(|(_, view)| view.clone());
        nodes.listed.get_or_insert_with(|| list.collect()).clone()
    }

    /// The DNS names the cluster's nodes give as their endpoints.
    pub fn endpoint_names(&self) -> Vec<String> {
        lock(&self.nodes).endpoint_names.values().cloned().collect()
    }

    /// The cluster's Peers, by name; the same list as the last call's while
    /// no Peer changed.
    pub fn peers(&self) -> Shared<ObservedPeer> {
        let mut peers = lock(&self.peers);
        let peers = &mut *peers;
        let list = peers.peers.values().cloned();
        peers.listed.get_or_insert_with(|| list.collect()).clone()
    }

    pub fn update_nodes(&self, update: Update<Node>) {
        let mut nodes = lock(&self.nodes);
        match update {
            Update::Apply(node) => nodes.insert(&node),
            Update::Delete(name) => nodes.remove(&name),
            Update::Relisted(listed) => {
                nodes.nodes.clear();
                nodes.endpoint_names.clear();
                nodes.listed = None;
                listed.iter().for_each(|node| nodes.insert(node));
            }
        }
    }

    pub fn update_peers(&self, update: Update<Peer>) {
        let mut peers = lock(&self.peers);
        let view = |peer: &Peer| (peer.name_any(), Arc::new(observe::observed_peer(peer)));
        match update {
            Update::Apply(peer) => {
                let (name, view) = view(&peer);
                peers.peers.insert(name, view);
            }
            Update::Delete(name) => drop(peers.peers.remove(&name)),
            Update::Relisted(listed) => peers.peers = listed.iter().map(view).collect(),
        }
        peers.listed = None;
    }
}

#[cfg(test)]
mod tests {
    use api::fixtures::{kilo_annotations, ready_node};

    use super::*;

    fn node(name: &str, last_seen: i64) -> Node {
        let mut annotations = kilo_annotations(1, 0);
        annotations.insert(mesh::annotation::LAST_SEEN.into(), last_seen.to_string());
        ready_node(name, annotations, vec!["10.1.0.0/24".into()])
    }

    #[test]
    fn a_pass_shares_the_views_and_an_update_replaces_only_its_own() {
        let views = Views::default();
        views.update_nodes(Update::Relisted(vec![node("n1", 100), node("n2", 100)]));
        let first = views.nodes(0);
        let again = views.nodes(0);
        assert!(first.same(&again), "nothing changed: the same list");
        views.update_peers(Update::Relisted(vec![]));
        assert!(
            views.nodes(0).same(&again),
            "a Peer's change keeps the nodes' list"
        );
        views.update_nodes(Update::Apply(node("n2", 130)));
        let after = views.nodes(0);
        assert!(Arc::ptr_eq(&first[0], &after[0]), "n1 did not change");
        assert_eq!(after[1].checked_in, Some(130));
        assert!(
            !after[1]
                .annotations
                .contains_key(mesh::annotation::LAST_SEEN),
            "a heartbeat changes the check-in time only"
        );
        assert!(after[1].same_but_check_in(&first[1]));
        views.update_nodes(Update::Delete("n1".into()));
        assert_eq!(views.nodes(0).len(), 1);
        let mut named = node("n3", 100);
        if let Some(annotations) = named.metadata.annotations.as_mut() {
            annotations.insert(
                "kilo.squat.ai/endpoint".into(),
                "n3.example.org:51820".into(),
            );
        }
        views.update_nodes(Update::Apply(named));
        assert_eq!(views.endpoint_names(), ["n3.example.org"]);
        views.update_nodes(Update::Delete("n3".into()));
        assert!(views.endpoint_names().is_empty());
    }

    #[test]
    fn no_node_counts_as_checked_in_before_the_cluster_was_seen_again() {
        let views = Views::default();
        views.update_nodes(Update::Relisted(vec![
            node("a-new", 500),
            node("b-old", 100),
        ]));
        let before = views.nodes(0);
        let seen_again = views.nodes(300);
        assert_eq!(seen_again[0].checked_in, Some(500));
        assert_eq!(seen_again[1].checked_in, Some(300), "floored");
        assert!(Arc::ptr_eq(&before[0], &seen_again[0]), "unchanged: shared");
        views.update_nodes(Update::Apply(node("c-late", 200)));
        assert_eq!(views.nodes(300)[2].checked_in, Some(300));
    }
}
