//! A decentralized mesh: three clusters, each running its own operator with
//! a ClusterMesh that names itself local and `peerPlacement: LocalCluster`,
//! each reaching the others through `connect --read-only` (a token that may
//! read nodes and nothing else). Each operator writes Peers on its own
//! cluster only.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::Duration;

use std::collections::BTreeMap;

use api::{ClusterEntry, ClusterMesh, ClusterMeshSpec, ClusterStatus, PeerPlacement, PeerWriter};
use common::*;
use k8s_openapi::api::{
    core::v1::Event,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{Api, api::PostParams};
use kube::{
    ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use mesh::{MESH_LABEL, MeshIdentity, PEERS_ON_DELETE_ANNOTATION, RELEASED};
use testkit::ControlPlane;

const CONVERGE: Duration = Duration::from_secs(30);
const NAMES: [&str; 3] = ["a", "b", "c"];

/// Each cluster's ClusterMesh: itself local, the others read through their
/// read-only Secrets.
async fn decentralized_mesh(planes: &[ControlPlane]) {
    for h in 0..NAMES.len() {
        own_mesh(planes, h).await;
    }
}

/// Cluster `h`'s own ClusterMesh, `LocalCluster`, reading the others through
/// read-only Secrets made by `connect --read-only`.
async fn own_mesh(planes: &[ControlPlane], h: usize) {
    let dir = tempfile::tempdir().unwrap();
    let contexts: Vec<(&str, &str)> = NAMES
        .iter()
        .zip(planes)
        .map(|(name, plane)| (*name, plane.admin_kubeconfig()))
        .collect();
    let config = contexts_file(dir.path(), &contexts);
    let hub = NAMES[h];
    ensure_namespace(&planes[h]).await;
    for remote in NAMES.iter().filter(|r| **r != hub) {
        let args = [
            "--hub-context",
            hub,
            "--remote-context",
            remote,
            "--name",
            remote,
            "--read-only",
            "--service-account",
            "kilo-clustermesh-reader",
            "--allow-loopback-server",
        ];
        let output = run_binary("connect", &config, &args).await;
        assert!(
            output.status.success(),
            "connect --read-only {hub} -> {remote}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut mesh = ClusterMesh::new(
        "mesh",
        ClusterMeshSpec {
            clusters: entries(h),
            peer_placement: PeerPlacement::LocalCluster,
        },
    );
    mesh.metadata.namespace = Some(NAMESPACE.into());
    Api::<ClusterMesh>::namespaced(planes[h].admin_client(), NAMESPACE)
        .create(&PostParams::default(), &mesh)
        .await
        .unwrap();
}

/// The three clusters' entries, `local` the one at index `local`.
fn entries(local: usize) -> Vec<ClusterEntry> {
    NAMES
        .iter()
        .enumerate()
        .map(|(k, name)| entry(name, k as u8 + 1, k == local))
        .collect()
}

fn others(cluster: usize, nodes: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = NAMES
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != cluster)
        .flat_map(|(_, name)| nodes.iter().map(move |n| format!("{name}.{n}")))
        .collect();
    names.sort();
    names
}

/// Clusters a, b and c, with one Kilo node each.
async fn three_clusters() -> Vec<ControlPlane> {
    let planes = ControlPlane::start_many(3).await.unwrap();
    for (k, plane) in planes.iter().enumerate() {
        create_node(plane, &kilo_node(k as u8 + 1, 0)).await;
    }
    planes
}

/// [`three_clusters`] meshed decentralized, each with its operator
/// running, once each holds the others' nodes.
async fn meshed_decentralized() -> (Vec<ControlPlane>, Vec<Option<Operator>>) {
    let planes = three_clusters().await;
    decentralized_mesh(&planes).await;
    let operators = planes.iter().map(|p| Some(start_operator(p))).collect();
    for (k, plane) in planes.iter().enumerate() {
        eventually(&format!("{}'s own Peers", NAMES[k]), CONVERGE, || async {
            peer_names(plane).await == others(k, &["node-0"])
        })
        .await;
    }
    (planes, operators)
}

/// Waits until cluster `k` holds Peer `peer`.
async fn peered_on(planes: &[ControlPlane], k: usize, peer: &str) {
    eventually(&format!("{peer} on {}", NAMES[k]), CONVERGE, || async {
        peer_names(&planes[k]).await.iter().any(|p| p == peer)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_operators_each_write_only_their_own_cluster_and_one_stopping_costs_nothing() {
    let (planes, mut operators) = meshed_decentralized().await;
    for plane in &planes {
        eventually("Ready", CONVERGE, || async {
            let status = mesh_status(plane, "mesh").await;
            condition(&status, "Ready").is_some_and(|c| c.status == "True")
        })
        .await;
    }
    // Every Peer on a cluster is its own operator's: none is in conflict.
    for plane in &planes {
        let status = mesh_status(plane, "mesh").await;
        assert!(condition(&status, "PeerConflict").is_some_and(|c| c.status == "False"));
    }

    // b's operator stops: a and c keep their Peers and still follow b's nodes.
    operators[1] = None;
    create_node(&planes[1], &kilo_node(2, 1)).await;
    create_node(&planes[0], &kilo_node(1, 1)).await;
    for k in [0, 2] {
        peered_on(&planes, k, "b.node-1").await;
    }
    peered_on(&planes, 2, "a.node-1").await;
    // Nobody else writes on b: its Peers stay as its operator left them.
    assert_eq!(peer_names(&planes[1]).await, others(1, &["node-0"]));
    drop(operators);
}

/// Every Peer of every cluster, `cluster/name` → uid: a Peer handed over
/// keeps its uid, one deleted and made again does not.
async fn peer_uids(planes: &[ControlPlane]) -> BTreeMap<String, String> {
    let mut uids = BTreeMap::new();
    for (name, plane) in NAMES.iter().zip(planes) {
        for (peer, object) in peers(plane).await {
            uids.insert(format!("{name}/{peer}"), object.uid().unwrap());
        }
    }
    uids
}

/// Fails unless every Peer of `uids` is still the same object.
async fn still_the_same(planes: &[ControlPlane], uids: &BTreeMap<String, String>) {
    let now = peer_uids(planes).await;
    for (peer, uid) in uids {
        assert_eq!(now.get(peer), Some(uid), "{peer} was made again");
    }
}

/// Whether every Peer on cluster `k` carries the mesh label its own
/// operator writes.
async fn written_by_own_operator(planes: &[ControlPlane], k: usize) -> bool {
    written_by(planes, k, k).await
}

/// Whether every Peer on cluster `k` carries the mesh label the operator on
/// cluster `writer` writes.
async fn written_by(planes: &[ControlPlane], k: usize, writer: usize) -> bool {
    let own = MeshIdentity {
        hub_cluster: NAMES[writer].into(),
        namespace: NAMESPACE.into(),
        name: "mesh".into(),
    }
    .label_value();
    let peers = peers(&planes[k]).await;
    !peers.is_empty()
        && peers
            .values()
            .all(|p| p.labels().get(MESH_LABEL) == Some(&own))
}

async fn set_placement(plane: &ControlPlane, placement: PeerPlacement) {
    let patch = serde_json::json!({"spec": {"peerPlacement": placement}});
    Api::<ClusterMesh>::namespaced(plane.admin_client(), NAMESPACE)
        .patch("mesh", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Who the hub's status says writes each cluster's Peers, and whether it
/// is Ready without a PeerConflict.
async fn hub_says(plane: &ControlPlane, writers: [PeerWriter; 3]) -> bool {
    let status = mesh_status(plane, "mesh").await;
    let said: Vec<Option<PeerWriter>> = status.clusters.iter().map(|c| c.peer_writer).collect();
    said == writers.map(Some)
        && condition(&status, "Ready").is_some_and(|c| c.status == "True")
        && condition(&status, "PeerConflict").is_some_and(|c| c.status == "False")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_mesh_moves_to_decentralized_and_back_handing_every_peer_over_in_place() {
    use PeerWriter::{OwnOperator, ThisOperator};
    let planes = three_clusters().await;
    connect(&planes[0], &planes[1], "b").await;
    connect(&planes[0], &planes[2], "c").await;
    create_mesh(&planes[0], "mesh", entries(0)).await;
    let mut operators = vec![Some(start_operator(&planes[0])), None, None];
    for (k, plane) in planes.iter().enumerate() {
        eventually(
            &format!("the hub's Peers on {}", NAMES[k]),
            CONVERGE,
            || async { peer_names(plane).await == others(k, &["node-0"]) },
        )
        .await;
    }
    let uids = peer_uids(&planes).await;

    // To decentralized: b and c get their own operators while the hub runs;
    // each takes its cluster's Peers over, and the hub steps back.
    for h in [1, 2] {
        own_mesh(&planes, h).await;
        operators[h] = Some(start_operator(&planes[h]));
    }
    for h in [1, 2] {
        let what = format!("{}'s own operator took its Peers over", NAMES[h]);
        eventually(&what, CONVERGE, || written_by_own_operator(&planes, h)).await;
    }
    let took_over = [ThisOperator, OwnOperator, OwnOperator];
    eventually("the hub says b and c write themselves", CONVERGE, || {
        hub_says(&planes[0], took_over)
    })
    .await;
    set_placement(&planes[0], PeerPlacement::LocalCluster).await;
    create_node(&planes[0], &kilo_node(1, 1)).await;
    for k in [1, 2] {
        peered_on(&planes, k, "a.node-1").await;
        assert!(written_by_own_operator(&planes, k).await);
    }
    still_the_same(&planes, &uids).await;

    // And back to a hub on a: b and c release their Peers as their meshes
    // are deleted, and the hub takes them over.
    set_placement(&planes[0], PeerPlacement::AllClusters).await;
    eventually(
        "the hub leaves b and c to their operators",
        CONVERGE,
        || hub_says(&planes[0], took_over),
    )
    .await;
    let uids = peer_uids(&planes).await;
    for h in [1, 2] {
        let meshes = Api::<ClusterMesh>::namespaced(planes[h].admin_client(), NAMESPACE);
        set_peers_on_delete(&meshes, "release").await;
        meshes
            .delete("mesh", &DeleteParams::default())
            .await
            .unwrap();
        eventually(&format!("{}'s mesh gone", NAMES[h]), CONVERGE, || async {
            meshes.get_opt("mesh").await.unwrap().is_none()
        })
        .await;
        operators[h] = None;
    }
    eventually("the hub writes every cluster again", CONVERGE, || {
        hub_says(&planes[0], [ThisOperator; 3])
    })
    .await;
    for k in [1, 2] {
        assert!(
            written_by(&planes, k, 0).await,
            "the hub's label on {}",
            NAMES[k]
        );
    }
    create_node(&planes[1], &kilo_node(2, 1)).await;
    for k in [0, 2] {
        peered_on(&planes, k, "b.node-1").await;
    }
    still_the_same(&planes, &uids).await;
    for plane in &planes {
        let deletes: Vec<_> = plane
            .audited_writes()
            .unwrap()
            .into_iter()
            .filter(|w| w.resource == "peers" && w.verb == "delete")
            .collect();
        assert!(deletes.is_empty(), "{}: {deletes:?}", plane.name());
    }
    drop(operators);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_revokes_its_readers_goes_stale_for_the_others_and_nothing_else_does() {
    let (planes, _operators) = meshed_decentralized().await;

    // b takes back the read access it gave a and c.
    Api::<ClusterRoleBinding>::all(planes[1].admin_client())
        .delete("kilo-clustermesh-remote-reader", &DeleteParams::default())
        .await
        .unwrap();
    for k in [0, 2] {
        eventually(
            &format!("{} says b's credentials are refused", NAMES[k]),
            CONVERGE,
            || async {
                let status = mesh_status(&planes[k], "mesh").await;
                condition(&status, "CredentialsInvalid").is_some_and(|c| {
                    c.status == "True"
                        && c.message.contains("cluster b")
                        && !c.message.contains("cluster c")
                        && !c.message.contains("cluster a")
                })
            },
        )
        .await;
    }
    // The others keep b's Peers, and follow each other; b follows them.
    create_node(&planes[0], &kilo_node(1, 1)).await;
    create_node(&planes[2], &kilo_node(3, 1)).await;
    let expect = |k: usize, names: &[&str]| {
        let mut all = others(k, &["node-0"]);
        all.extend(names.iter().map(|n| (*n).to_owned()));
        all.sort();
        all
    };
    let wanted = [
        expect(0, &["c.node-1"]),
        expect(1, &["a.node-1", "c.node-1"]),
        expect(2, &["a.node-1"]),
    ];
    for (k, wanted) in wanted.iter().enumerate() {
        eventually(
            &format!("{} follows what it can read", NAMES[k]),
            CONVERGE,
            || async { peer_names(&planes[k]).await == *wanted },
        )
        .await;
    }
    let b_status = mesh_status(&planes[1], "mesh").await;
    assert!(condition(&b_status, "Ready").is_some_and(|c| c.status == "True"));
}

/// Lets the read-only tokens of cluster `k`'s neighbours list its Peers, as
/// docs/topologies.md says.
async fn grant_peer_reads(plane: &ControlPlane) {
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kilo-clustermesh-peer-reader"},
        "rules": [{"apiGroups": ["kilo.squat.ai"], "resources": ["peers"], "verbs": ["get", "list"]}],
    }))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kilo-clustermesh-peer-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kilo-clustermesh-peer-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "kilo-clustermesh-reader", "namespace": NAMESPACE}],
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<ClusterRole>::all(plane.admin_client())
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(plane.admin_client())
        .create(&pp, &binding)
        .await
        .unwrap();
}

/// What cluster a's status says of cluster `name`.
async fn a_says_of(planes: &[ControlPlane], name: &str) -> ClusterStatus {
    let status = mesh_status(&planes[0], "mesh").await;
    status
        .clusters
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whether_a_neighbour_peered_us_back_is_told_where_its_peers_may_be_read() {
    // The census of a read-only cluster's Peers runs every 30 s.
    const CENSUS: Duration = Duration::from_secs(45);
    let (planes, mut operators) = meshed_decentralized().await;
    // `connect --read-only` may not read Peers: a cannot tell.
    for name in ["b", "c"] {
        let said = a_says_of(&planes, name).await;
        assert_eq!(said.peer_writer, Some(PeerWriter::OwnOperator), "{said:?}");
        assert_eq!(said.peered_back, None, "{said:?}");
    }

    grant_peer_reads(&planes[1]).await;
    eventually("a tells that b peered it back", CENSUS, || async {
        a_says_of(&planes, "b").await.peered_back == Some(1)
    })
    .await;
    assert_eq!(a_says_of(&planes, "c").await.peered_back, None);

    // b's operator stops; a's new node is not peered on b, and a says so.
    operators[1] = None;
    create_node(&planes[0], &kilo_node(1, 1)).await;
    eventually(
        "a tells that b did not peer its new node",
        CENSUS,
        || async {
            let said = a_says_of(&planes, "b").await;
            said.peered_back == Some(1)
                && said.message.as_deref().is_some_and(|m| {
                    m.contains(
                        "its own operator has peered 1 of the local cluster's 2 peered nodes",
                    )
                })
        },
    )
    .await;
    drop(operators);
}

/// In [`two_cluster_mesh`]: each cluster, and the Peer of the other's node.
const EACH_OTHERS_PEER: [(usize, &str); 2] = [(0, "b.node-0"), (1, "a.node-0")];

/// Sets ClusterMesh `mesh`'s `kilo-clustermesh.io/peers-on-delete` annotation.
async fn set_peers_on_delete(meshes: &Api<ClusterMesh>, value: &str) {
    let patch =
        serde_json::json!({"metadata": {"annotations": {PEERS_ON_DELETE_ANNOTATION: value}}});
    meshes
        .patch("mesh", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_deleted_with_an_unknown_policy_keeps_its_peers_until_told_release() {
    let planes = two_cluster_mesh().await;
    let _operator = start_operator(&planes[0]);
    for (k, peer) in EACH_OTHERS_PEER {
        peered_on(&planes, k, peer).await;
    }
    let meshes = Api::<ClusterMesh>::namespaced(planes[0].admin_client(), NAMESPACE);
    set_peers_on_delete(&meshes, "keep").await;
    meshes
        .delete("mesh", &DeleteParams::default())
        .await
        .unwrap();
    let events = Api::<Event>::namespaced(planes[0].admin_client(), NAMESPACE);
    eventually("a CleanupRefused Event", CONVERGE, || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items.iter().any(|e| {
            e.reason.as_deref() == Some("CleanupRefused")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("\"keep\" is neither \"delete\" nor \"release\""))
        })
    })
    .await;
    assert!(meshes.get_opt("mesh").await.unwrap().is_some());
    for (k, peer) in EACH_OTHERS_PEER {
        assert_eq!(peer_names(&planes[k]).await, [peer], "kept on {}", NAMES[k]);
    }

    set_peers_on_delete(&meshes, "release").await;
    eventually("the mesh gone", CONVERGE, || async {
        meshes.get_opt("mesh").await.unwrap().is_none()
    })
    .await;
    for (k, peer) in EACH_OTHERS_PEER {
        let left = peers(&planes[k]).await;
        let released = left
            .get(peer)
            .and_then(|p| p.labels().get(MESH_LABEL).cloned());
        assert_eq!(
            released.as_deref(),
            Some(RELEASED),
            "{peer} on {}",
            NAMES[k]
        );
    }
}
