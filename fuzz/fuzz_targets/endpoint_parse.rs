//! `kilo.squat.ai/endpoint` as anyone with access to a Node may write it,
//! through the public path the controller takes (node eligibility, then
//! the Peer): an endpoint that parses must pass Kilo's Peer checks, the
//! resolver must be asked for exactly its DNS name, and writing it back as
//! an annotation must give the same endpoint.
#![no_main]

use std::collections::BTreeMap;

use api::PeerEndpoint;
use kcm_fuzz::{identity, mesh_spec};
use libfuzzer_sys::fuzz_target;
use mesh::{ClusterView, EndpointDns, NodeView, Observation, Settings, annotation};

const NODE: &str = "node-1";

/// Node node-1 of cluster b, valid but for its endpoint.
fn node(endpoint: &str) -> NodeView {
    let mut annotations = api::fixtures::kilo_annotations(2, 1);
    annotations.insert(annotation::ENDPOINT.into(), endpoint.into());
    NodeView {
        name: NODE.into(),
        pod_cidrs: vec!["10.2.1.0/24".into()],
        annotations,
        ready: true,
        ..NodeView::default()
    }
}

/// The endpoint of node-1's Peer on cluster a, if it is peered with one.
fn peered(endpoint: &str) -> Option<PeerEndpoint> {
    let view = ClusterView {
        nodes: vec![node(endpoint).into()].into(),
        ..ClusterView::default()
    };
    let observations = BTreeMap::from([
        (
            "a".to_owned(),
            Observation::Observed(ClusterView::default()),
        ),
        ("b".to_owned(), Observation::Observed(view)),
        (
            "c".to_owned(),
            Observation::Observed(ClusterView::default()),
        ),
    ]);
    // Keep: the Peer carries the name itself, as Kilo would.
    let settings = Settings {
        endpoint_dns: EndpointDns::Keep,
        ..Settings::default()
    };
    let plan = mesh::plan(mesh_spec(), &identity(), &settings, &observations);
    let peer = plan.desired.get("a")?.get(&mesh::peer_name("b", NODE))?;
    assert_eq!(
        peer.spec.validate(),
        Ok(()),
        "{endpoint:?} gave {:?}",
        peer.spec
    );
    peer.spec.endpoint.clone()
}

/// An endpoint as Kilo writes the annotation.
fn annotation_value(endpoint: &PeerEndpoint) -> String {
    match (&endpoint.dns_or_ip.ip, &endpoint.dns_or_ip.dns) {
        (Some(ip), _) if ip.contains(':') => format!("[{ip}]:{}", endpoint.port),
        (Some(ip), _) => format!("{ip}:{}", endpoint.port),
        (None, Some(dns)) => format!("{dns}:{}", endpoint.port),
        (None, None) => panic!("an endpoint with neither name nor address: {endpoint:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let endpoint = peered(value);
    let name = mesh::endpoint_name(&node(value));
    let Some(endpoint) = endpoint else {
        return;
    };
    assert_eq!(
        name, endpoint.dns_or_ip.dns,
        "the resolver would look up another name than the Peer carries"
    );
    let written = annotation_value(&endpoint);
    assert_eq!(
        peered(&written).as_ref(),
        Some(&endpoint),
        "{value:?} parsed as {written:?}, which does not parse back the same"
    );
});
