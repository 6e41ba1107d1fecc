//! `make e2e`: packets across a mesh the operator configured, in the network
//! lab (three clusters, real WireGuard, the operator binary as its own
//! process): first three `full` clusters of two nodes through faults, then a
//! mesh of every Kilo granularity through a location leader's failover, then
//! a hub mesh moved to a decentralized one and back while pods ping.
//! Needs root. Prints its figures as JSON at the end.
//!
//! Each step waits at most a fixed deadline; on a failure the lab's state
//! (Peers, `wg show`, routes, agent and operator logs) is printed.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use api::Peer;
use k8s_openapi::api::core::v1::Node;
use kilo_clustermesh_netlab::{
    lab::{host, plan::ClusterPlan},
    mesh::{HUB, Layout, MESH, Mesh, NAMESPACE},
    probe,
};
use kube::{Api, ResourceExt, api::ListParams};

/// Figures collected along the way, printed as JSON at the end.
type Figures = BTreeMap<&'static str, serde_json::Value>;

#[tokio::test]
async fn packets_cross_the_mesh_and_survive_its_faults() {
    let tool = PathBuf::from(env!("CARGO_BIN_EXE_kcm-netlab"));
    let operator = sibling_binary("kilo-clustermesh-operator");
    let started = Instant::now();
    let say = |step: &str| eprintln!("[e2e {:>5.1}s] {step}", started.elapsed().as_secs_f64());
    let mut figures = Figures::new();
    let lab = Lab {
        tool: &tool,
        operator: &operator,
        say: &say,
    };

    let mut mesh = lab.start("the meshed lab", Layout::full()).await;
    figures.insert("setup_seconds", started.elapsed().as_secs_f64().into());
    let result = scenarios(&mut mesh, &mut figures, &say).await;
    lab.end(mesh, result).await;

    say(
        "10. a second lab: cluster-a full, cluster-b location (two locations of two nodes), cluster-c cross",
    );
    let mixed = Instant::now();
    let mut mesh = lab.start("the mixed lab", Layout::mixed()).await;
    figures.insert("mixed_setup_seconds", mixed.elapsed().as_secs_f64().into());
    let result = granularities(&mut mesh, &mut figures, &say).await;
    lab.end(mesh, result).await;

    say("15. a third lab: a hub mesh, moved to a decentralized one while pods ping across it");
    let third = Instant::now();
    let mut mesh = lab.start("the third lab", Layout::full()).await;
    figures.insert("third_setup_seconds", third.elapsed().as_secs_f64().into());
    let result = decentralized(&mut mesh, &mut figures, &say).await;
    lab.end(mesh, result).await;

    figures.insert("total_seconds", started.elapsed().as_secs_f64().into());
    println!("{}", serde_json::to_string_pretty(&figures).unwrap());
}

/// What every lab of the run is built from.
struct Lab<'a> {
    tool: &'a Path,
    operator: &'a Path,
    say: &'a dyn Fn(&str),
}

impl Lab<'_> {
    /// A meshed lab of `layout`; a lab that does not start fails the test.
    async fn start(&self, what: &str, layout: Layout) -> Mesh {
        let started = Mesh::start_with(self.tool.into(), self.operator.into(), layout, self.say);
        match started.await {
            Ok(mesh) => mesh,
            Err(error) => panic!("{what} did not start: {error:#}"),
        }
    }

    /// Fails the test with the lab's state when its scenario failed, then
    /// removes the lab and checks that nothing of it is left.
    async fn end(&self, mesh: Mesh, result: anyhow::Result<()>) {
        if let Err(error) = result {
            eprintln!("{}", mesh.describe().await);
            panic!("{error:#}");
        }
        drop(mesh);
        let left = host::leftovers();
        assert!(left.is_empty(), "the lab left behind: {left:?}");
    }
}

async fn scenarios(
    mesh: &mut Mesh,
    figures: &mut Figures,
    say: &dyn Fn(&str),
) -> anyhow::Result<()> {
    say("1. every pod reaches every pod of the other clusters");
    let matrix = probe::settled_ping_matrix(&mesh.lab, Duration::from_secs(30)).await;
    eprintln!("{}", probe::render_matrix(&matrix));
    anyhow::ensure!(
        matrix.iter().all(probe::Ping::reached),
        "a pair never answered within 30 s"
    );
    let rtts: Vec<f64> = matrix.iter().filter_map(|p| p.rtt_ms).collect();
    figures.insert("ping_pairs", matrix.len().into());
    figures.insert(
        "ping_rtt_ms_max",
        rtts.iter().copied().fold(0.0, f64::max).into(),
    );
    check_wireguard_peers(mesh).await?;

    say("2. each cluster's service through its ClusterIP from the other clusters");
    let services = probe::settled_service_matrix(&mesh.lab, Duration::from_secs(20)).await;
    eprintln!("{}", probe::render_services(&services));
    for probe in &services {
        let reply = probe.reply.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        anyhow::ensure!(
            reply.ends_with("/node-2"),
            "{} answered by {reply}",
            probe.service
        );
    }

    say("3. a node joins cluster-b");
    mesh.lab.add_node("cluster-b", 3, 1).await?;
    let joined = mesh
        .lab
        .nodes("cluster-b")
        .into_iter()
        .find(|n| n.name == "node-3")
        .unwrap();
    let b = mesh.plane("cluster-b")?.admin_client();
    let checked_in = within(
        Duration::from_secs(30),
        "node-3's first check-in",
        || async {
            let node = Api::<Node>::all(b.clone()).get("node-3").await.ok()?;
            node.annotations()
                .contains_key("kilo.squat.ai/key")
                .then(Instant::now)
        },
    )
    .await?;
    let target = joined.pods[0].ip;
    let mut reached = Vec::new();
    for from in ["kcmlab-a1-p1", "kcmlab-c1-p1"] {
        within(
            Duration::from_secs(60),
            &format!("{from} reaching the new node's pod"),
            || async { probe::ping(from, target, 1).await.map(|_| ()) },
        )
        .await?;
        reached.push(checked_in.elapsed().as_secs_f64());
    }
    figures.insert(
        "node_join_to_first_packet_seconds",
        reached.iter().copied().fold(0.0, f64::max).into(),
    );

    say("4. the node leaves: its Peers and WireGuard peers are gone everywhere");
    let key = node_key(mesh, "cluster-b", "node-3").await?;
    mesh.lab.remove_node("cluster-b", "node-3").await?;
    within(
        Duration::from_secs(30),
        "node-3 gone from every Peer list and wg",
        || async {
            for plane in &mesh.planes {
                let peers = Api::<Peer>::all(plane.admin_client())
                    .list(&ListParams::default())
                    .await
                    .ok()?;
                if peers.items.iter().any(|p| p.spec.public_key == key) {
                    return None;
                }
            }
            for node in mesh.lab.all_nodes() {
                if probe::wireguard_peers(&mesh.lab, &node.netns)
                    .await
                    .ok()?
                    .contains_key(&key)
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;

    say(
        "6. cluster-b's API server stops: traffic keeps flowing, status says stale, then Ready again",
    );
    let b_pod = pod_ip(mesh, "cluster-b", "node-1");
    let ping = probe::ContinuousPing::start(
        "kcmlab-a1-p1",
        b_pod,
        Duration::from_millis(200),
        Duration::from_secs(120),
    )?;
    mesh.plane_mut("cluster-b")?.stop_apiserver();
    let stopped = Instant::now();
    within(
        Duration::from_secs(60),
        "the status saying cluster-b is unreachable",
        || async {
            let status = mesh.status().await.ok()?;
            let b = status.clusters.iter().find(|c| c.name == "cluster-b")?;
            (!b.reachable && b.stale_since.is_some()).then_some(())
        },
    )
    .await?;
    figures.insert(
        "apiserver_stop_detected_seconds",
        stopped.elapsed().as_secs_f64().into(),
    );
    say("cluster-b reported unreachable; starting its API server again");
    tokio::time::sleep(Duration::from_secs(3)).await;
    mesh.plane_mut("cluster-b")?.start_apiserver().await?;
    say("cluster-b's API server is back");
    let back = Instant::now();
    mesh.wait_ready().await?;
    figures.insert(
        "apiserver_back_to_ready_seconds",
        back.elapsed().as_secs_f64().into(),
    );
    let loss = ping.stop().await?;
    figures.insert("apiserver_outage_ping", serde_json::to_value(loss)?);
    anyhow::ensure!(
        loss.lost() == 0,
        "pings lost while cluster-b's API server was down: {loss:?}"
    );

    say("7. the operator is killed (SIGKILL) and restarted: no packet lost, no Peer written");
    let ping = probe::ContinuousPing::start(
        "kcmlab-c1-p1",
        pod_ip(mesh, HUB, "node-2"),
        Duration::from_millis(200),
        Duration::from_secs(60),
    )?;
    if let Some(operator) = mesh.operator.take() {
        operator.kill().await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    mesh.start_operator()?;
    mesh.wait_ready().await?;
    // Passes after the restart have read every cluster; give them time to write.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = match &mesh.operator {
        Some(operator) => operator.peer_writes().await,
        None => anyhow::bail!("the operator did not restart"),
    };
    let loss = ping.stop().await?;
    figures.insert("operator_restart_peer_writes", (writes as u64).into());
    figures.insert("operator_restart_ping", serde_json::to_value(loss)?);
    anyhow::ensure!(
        writes == 0.0,
        "the restarted operator wrote {writes} Peers into an unchanged world"
    );
    anyhow::ensure!(
        loss.lost() == 0,
        "pings lost across the operator's restart: {loss:?}"
    );

    say("8. a node's key changes (its agent makes a new one): traffic resumes");
    let target = pod_ip(mesh, "cluster-b", "node-2");
    let old_key = node_key(mesh, "cluster-b", "node-2").await?;
    let ping = probe::ContinuousPing::start(
        "kcmlab-a1-p1",
        target,
        Duration::from_millis(100),
        Duration::from_secs(90),
    )?;
    mesh.lab.regenerate_key("cluster-b", "node-2").await?;
    let changed = Instant::now();
    let hub = mesh.plane(HUB)?.admin_client();
    within(
        Duration::from_secs(60),
        "the new key on the interface, the Node, the hub's Peer, and a reply",
        || async {
            let new_key = node_key(mesh, "cluster-b", "node-2").await.ok()?;
            let on_interface = mesh
                .lab
                .on_node("kcmlab-b2", &["wg", "show", "kilo0", "public-key"])
                .await
                .ok()?;
            let peer = Api::<Peer>::all(hub.clone())
                .get("cluster-b.node-2")
                .await
                .ok()?;
            let switched = new_key != old_key
                && on_interface.trim() == new_key
                && peer.spec.public_key == new_key;
            (switched && probe::ping("kcmlab-a1-p1", target, 1).await.is_some()).then_some(())
        },
    )
    .await?;
    let loss = ping.stop().await?;
    figures.insert("key_change_ping", serde_json::to_value(loss)?);
    // Every other node needs a new handshake with it: the whole matrix again.
    let matrix = probe::settled_ping_matrix(&mesh.lab, Duration::from_secs(60)).await;
    anyhow::ensure!(
        matrix.iter().all(probe::Ping::reached),
        "a pair never answered again after the key change:\n{}",
        probe::render_matrix(&matrix)
    );
    figures.insert(
        "key_change_full_matrix_seconds",
        changed.elapsed().as_secs_f64().into(),
    );

    say(
        "9. cluster-c declares cluster-b's service range: both are held back, the rest keeps passing traffic",
    );
    let ping = probe::ContinuousPing::start(
        "kcmlab-a1-p1",
        pod_ip(mesh, "cluster-c", "node-1"),
        Duration::from_millis(200),
        Duration::from_secs(90),
    )?;
    set_service_cidr(mesh, "cluster-c", "10.202.0.0/16").await?;
    within(
        Duration::from_secs(30),
        "the CIDRConflict condition",
        || async {
            let status = mesh.status().await.ok()?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "CIDRConflict" && c.status == "True")
                .then_some(())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let matrix = probe::ping_matrix(&mesh.lab).await;
    let loss = ping.stop().await?;
    figures.insert("range_conflict_ping", serde_json::to_value(loss)?);
    anyhow::ensure!(
        matrix.iter().all(probe::Ping::reached),
        "a pod lost a path during the conflict:\n{}",
        probe::render_matrix(&matrix)
    );
    anyhow::ensure!(
        loss.lost() == 0,
        "pings between cluster-a and cluster-c lost during the conflict: {loss:?}"
    );
    set_service_cidr(mesh, "cluster-c", "10.203.0.0/16").await?;
    mesh.wait_ready().await?;

    say("5. cluster-b's anchor node leaves: its service range moves to another node");
    let b_service = ClusterPlan::new(2).service_ip();
    service_answers(mesh, "kcmlab-a1-p1", b_service).await?;
    let anchor = anchor_of(mesh, "cluster-b").await?;
    let requests = probe::ContinuousFetch::start(
        mesh.lab.tool(),
        "kcmlab-a1-p1",
        b_service,
        Duration::from_millis(100),
    );
    mesh.lab.remove_node("cluster-b", &anchor).await?;
    let moved = within(
        Duration::from_secs(60),
        "a new anchor for cluster-b",
        || async {
            let now = anchor_of(mesh, "cluster-b").await.ok()?;
            (now != anchor).then_some(now)
        },
    )
    .await?;
    service_answers(mesh, "kcmlab-c1-p1", b_service).await?;
    // Until the fetcher too is answered through the new anchor: a request
    // caught in the move waits out its timeout first.
    let before = requests.answered();
    within(
        Duration::from_secs(30),
        "an answer through the new anchor",
        || async { (requests.answered() > before).then_some(()) },
    )
    .await?;
    let gaps = requests.stop().await;
    eprintln!("anchor {anchor} -> {moved}: {gaps:?}");
    anyhow::ensure!(
        gaps.answered > 0,
        "cluster-b's service never answered across the anchor's move: {gaps:?}"
    );
    figures.insert("anchor_move_service", serde_json::to_value(gaps)?);
    Ok(())
}

/// A mesh of every granularity: one Peer per location of cluster-b, one per
/// node of a and c; every pod reaches every other cluster's pods and
/// services; a location leader's death hands its location to the next node.
async fn granularities(
    mesh: &mut Mesh,
    figures: &mut Figures,
    say: &dyn Fn(&str),
) -> anyhow::Result<()> {
    say("11. Peers: one per location of cluster-b, one per node of cluster-a and cluster-c");
    let expected_on_a = [
        "cluster-b.location-rack-1",
        "cluster-b.location-rack-2",
        "cluster-c.node-1",
        "cluster-c.node-2",
    ];
    within(
        Duration::from_secs(30),
        "the Peers on cluster-a",
        || async { (peer_names(mesh, HUB).await == expected_on_a).then_some(()) },
    )
    .await?;
    let rack1 = rack1_peer(mesh).await?;
    anyhow::ensure!(
        rack1.spec.public_key == node_key(mesh, "cluster-b", "node-1").await?,
        "rack-1's Peer does not carry its leader node-1's key"
    );
    // Peers written into the location cluster are per node: Kilo puts them on its leaders.
    let on_b = peer_names(mesh, "cluster-b").await;
    anyhow::ensure!(
        on_b == [
            "cluster-a.node-1",
            "cluster-a.node-2",
            "cluster-c.node-1",
            "cluster-c.node-2"
        ],
        "Peers on cluster-b: {on_b:?}"
    );

    say("12. every pod reaches every pod and service of the other clusters");
    let matrix = probe::settled_ping_matrix(&mesh.lab, Duration::from_secs(60)).await;
    eprintln!("{}", probe::render_matrix(&matrix));
    anyhow::ensure!(
        matrix.iter().all(probe::Ping::reached),
        "a pair never answered within 60 s"
    );
    figures.insert("mixed_ping_pairs", matrix.len().into());
    let services = probe::settled_service_matrix(&mesh.lab, Duration::from_secs(30)).await;
    eprintln!("{}", probe::render_services(&services));
    for probe in &services {
        let reply = probe.reply.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        anyhow::ensure!(
            reply.ends_with("/node-2"),
            "{} answered by {reply}",
            probe.service
        );
    }

    say(
        "13. rack-1's leader node-1 dies (its agent stops): node-2 leads rack-1, traffic to node-2 resumes",
    );
    let target = pod_ip(mesh, "cluster-b", "node-2");
    let ping = probe::ContinuousPing::start(
        "kcmlab-a1-p1",
        target,
        Duration::from_millis(200),
        Duration::from_secs(150),
    )?;
    mesh.lab.stop_agent("cluster-b", "node-1").await?;
    let died = Instant::now();
    let node2_key = node_key(mesh, "cluster-b", "node-2").await?;
    within(
        Duration::from_secs(120),
        "rack-1's Peer carrying node-2's key, and an answer from node-2's pod",
        || async {
            let moved = rack1_peer(mesh).await.ok()?.spec.public_key == node2_key;
            (moved && probe::ping("kcmlab-a1-p1", target, 1).await.is_some()).then_some(())
        },
    )
    .await?;
    figures.insert(
        "leader_failover_seconds",
        died.elapsed().as_secs_f64().into(),
    );
    let loss = ping.stop().await?;
    eprintln!("a1 -> b2 across the failover: {loss:?}");
    figures.insert("leader_failover_ping", serde_json::to_value(loss)?);
    let status = mesh.status().await?;
    let b = status.clusters.iter().find(|c| c.name == "cluster-b");
    let skipped: Vec<&str> = b
        .iter()
        .flat_map(|b| &b.skipped)
        .map(|s| s.reason.as_str())
        .collect();
    anyhow::ensure!(
        skipped == ["NotCheckingIn"],
        "cluster-b's skipped nodes: {skipped:?}"
    );
    // Every pod but the dead node's.
    let matrix: Vec<probe::Ping> = probe::settled_ping_matrix(&mesh.lab, Duration::from_secs(30))
        .await
        .into_iter()
        .filter(|p| !p.from.starts_with("kcmlab-b1-") && !p.to.starts_with("kcmlab-b1-"))
        .collect();
    anyhow::ensure!(
        matrix.iter().all(probe::Ping::reached),
        "a pair lost its path after the failover:\n{}",
        probe::render_matrix(&matrix)
    );

    say(
        "14. node-1's agent comes back: it leads rack-1 again (the leader annotation), every pair answers",
    );
    mesh.lab.restart_agent("cluster-b", "node-1").await?;
    let back = Instant::now();
    let node1_key = node_key(mesh, "cluster-b", "node-1").await?;
    within(
        Duration::from_secs(60),
        "rack-1's Peer back on node-1",
        || async { (rack1_peer(mesh).await.ok()?.spec.public_key == node1_key).then_some(()) },
    )
    .await?;
    let matrix = probe::settled_ping_matrix(&mesh.lab, Duration::from_secs(60)).await;
    anyhow::ensure!(
        matrix.iter().all(probe::Ping::reached),
        "a pair never answered after node-1 came back:\n{}",
        probe::render_matrix(&matrix)
    );
    figures.insert(
        "leader_back_full_matrix_seconds",
        back.elapsed().as_secs_f64().into(),
    );
    Ok(())
}

/// A decentralized mesh: every pod reaches every other cluster's; one
/// cluster's operator stopping costs no packet, and the others keep
/// following each other.
async fn decentralized(
    mesh: &mut Mesh,
    figures: &mut Figures,
    say: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let uids = peer_uids(mesh).await?;
    let pings = Pings::start(mesh)?;
    let moving = Instant::now();
    mesh.decentralize(say).await?;
    figures.insert(
        "to_decentralized_seconds",
        moving.elapsed().as_secs_f64().into(),
    );
    let loss = pings.stop().await?;
    figures.insert("to_decentralized_ping", serde_json::to_value(&loss)?);
    anyhow::ensure!(
        loss.iter().all(|l| l.lost() == 0),
        "pings lost while the mesh moved to decentralized: {loss:?}"
    );
    same_peers(mesh, &uids).await?;

    say(
        "16. every pod reaches every pod of the other clusters; each cluster holds only its own operator's Peers",
    );
    let matrix = probe::settled_ping_matrix(&mesh.lab, Duration::from_secs(60)).await;
    eprintln!("{}", probe::render_matrix(&matrix));
    anyhow::ensure!(
        matrix.iter().all(probe::Ping::reached),
        "a pair never answered within 60 s"
    );
    check_wireguard_peers(mesh).await?;
    let labels = writers(mesh).await?;
    anyhow::ensure!(
        labels.len() == 3 && labels.values().all(|on_this| on_this.len() == 1),
        "three writers, one per cluster, expected; found {labels:?}"
    );

    say(
        "17. cluster-b's operator stops: no packet lost; a node joins cluster-a and cluster-c reaches it",
    );
    let ping = probe::ContinuousPing::start(
        "kcmlab-a1-p1",
        pod_ip(mesh, "cluster-b", "node-1"),
        Duration::from_millis(200),
        Duration::from_secs(60),
    )?;
    let stopped = mesh
        .local_operators
        .remove("cluster-b")
        .context("cluster-b's operator")?;
    stopped.kill().await?;
    mesh.lab.add_node("cluster-a", 3, 1).await?;
    let target = pod_ip(mesh, "cluster-a", "node-3");
    let joined = Instant::now();
    within(
        Duration::from_secs(60),
        "kcmlab-c1-p1 reaching cluster-a's new node",
        || async { probe::ping("kcmlab-c1-p1", target, 1).await.map(|_| ()) },
    )
    .await?;
    figures.insert(
        "decentralized_join_seconds",
        joined.elapsed().as_secs_f64().into(),
    );
    let loss = ping.stop().await?;
    figures.insert(
        "decentralized_operator_stop_ping",
        serde_json::to_value(loss)?,
    );
    anyhow::ensure!(
        loss.lost() == 0,
        "pings lost after cluster-b's operator stopped: {loss:?}"
    );

    say(
        "18. back to a hub while pods ping: cluster-b's operator back; the hub gets write access and AllClusters; b and c release their Peers as their meshes go",
    );
    mesh.start_own_operator("cluster-b", say).await?;
    let uids = peer_uids(mesh).await?;
    let pings = Pings::start(mesh)?;
    let moving = Instant::now();
    mesh.centralize(say).await?;
    figures.insert("to_hub_seconds", moving.elapsed().as_secs_f64().into());
    let loss = pings.stop().await?;
    figures.insert("to_hub_ping", serde_json::to_value(&loss)?);
    anyhow::ensure!(
        loss.iter().all(|l| l.lost() == 0),
        "pings lost while the mesh moved back to a hub: {loss:?}"
    );
    same_peers(mesh, &uids).await?;
    let labels = writers(mesh).await?;
    let hub = labels.get("cluster-a").cloned().unwrap_or_default();
    anyhow::ensure!(
        hub.len() == 1 && labels.values().all(|on_this| *on_this == hub),
        "every Peer the hub's expected; found {labels:?}"
    );
    Ok(())
}

/// Pings across the mesh while it changes hands: a pod of each cluster
/// pings one of the next cluster's, every 200 ms.
struct Pings(Vec<probe::ContinuousPing>);

impl Pings {
    /// How long they go on once the move is done: a late write by an
    /// operator that has not noticed the move yet would show meanwhile.
    const AFTER: Duration = Duration::from_secs(5);

    fn start(mesh: &Mesh) -> anyhow::Result<Self> {
        let pairs = [
            ("kcmlab-a1-p1", "cluster-b"),
            ("kcmlab-b1-p1", "cluster-c"),
            ("kcmlab-c1-p1", "cluster-a"),
        ];
        let pings = pairs
            .into_iter()
            .map(|(from, to)| {
                probe::ContinuousPing::start(
                    from,
                    pod_ip(mesh, to, "node-1"),
                    Duration::from_millis(200),
                    Duration::from_secs(300),
                )
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self(pings))
    }

    /// Stops them after [`Pings::AFTER`] more, and counts.
    async fn stop(self) -> anyhow::Result<Vec<probe::Loss>> {
        tokio::time::sleep(Self::AFTER).await;
        let mut losses = Vec::new();
        for ping in self.0 {
            losses.push(ping.stop().await?);
        }
        Ok(losses)
    }
}

/// Every Peer of every cluster, `cluster/name` → uid.
async fn peer_uids(mesh: &Mesh) -> anyhow::Result<BTreeMap<String, String>> {
    let mut uids = BTreeMap::new();
    for plane in &mesh.planes {
        let peers = Api::<Peer>::all(plane.admin_client())
            .list(&ListParams::default())
            .await?;
        for peer in peers.items {
            let uid = peer.uid().unwrap_or_default();
            uids.insert(format!("{}/{}", plane.name(), peer.name_any()), uid);
        }
    }
    Ok(uids)
}

/// Fails unless every Peer of `before` is still the same object: handed
/// over, not deleted and made again.
async fn same_peers(mesh: &Mesh, before: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let now = peer_uids(mesh).await?;
    let changed: Vec<&String> = before
        .iter()
        .filter(|(peer, uid)| now.get(*peer) != Some(uid))
        .map(|(peer, _)| peer)
        .collect();
    anyhow::ensure!(changed.is_empty(), "Peers made again: {changed:?}");
    Ok(())
}

/// The mesh labels of each cluster's Peers: who wrote them.
async fn writers(mesh: &Mesh) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut labels = BTreeMap::new();
    for plane in &mesh.planes {
        let peers = Api::<Peer>::all(plane.admin_client())
            .list(&ListParams::default())
            .await?;
        let on_this: BTreeSet<String> = peers
            .items
            .iter()
            .filter_map(|p| p.labels().get("kilo-clustermesh.io/mesh").cloned())
            .collect();
        labels.insert(plane.name().to_owned(), on_this);
    }
    Ok(labels)
}

async fn peer_names(mesh: &Mesh, cluster: &str) -> Vec<String> {
    let Ok(plane) = mesh.plane(cluster) else {
        return vec![];
    };
    let peers = Api::<Peer>::all(plane.admin_client())
        .list(&ListParams::default())
        .await;
    let mut names: Vec<String> = peers
        .map(|l| l.items.iter().map(|p| p.name_any()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

async fn rack1_peer(mesh: &Mesh) -> anyhow::Result<Peer> {
    Ok(Api::<Peer>::all(mesh.plane(HUB)?.admin_client())
        .get("cluster-b.location-rack-1")
        .await?)
}

/// Every node's `wg show kilo0`: exactly the other nodes of its cluster and
/// the Peers on its cluster, with their allowed IPs; a recent handshake
/// with every node of the other clusters (the ping matrix just crossed them).
async fn check_wireguard_peers(mesh: &Mesh) -> anyhow::Result<()> {
    for plane in &mesh.planes {
        let nodes = Api::<Node>::all(plane.admin_client())
            .list(&ListParams::default())
            .await?;
        let peers = Api::<Peer>::all(plane.admin_client())
            .list(&ListParams::default())
            .await?;
        for node in mesh.lab.nodes(plane.name()) {
            let shown = probe::wireguard_peers(&mesh.lab, &node.netns).await?;
            let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for other in nodes.items.iter().filter(|n| n.name_any() != node.name) {
                let annotations = other.annotations();
                let key = annotations
                    .get("kilo.squat.ai/key")
                    .cloned()
                    .unwrap_or_default();
                let wireguard_ip: ipnet::IpNet = annotations
                    .get("kilo.squat.ai/wireguard-ip")
                    .and_then(|ip| ip.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("{} has no WireGuard IP", other.name_any()))?;
                let pod_cidr = other
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_cidr.clone())
                    .unwrap_or_default();
                expected.insert(
                    key,
                    BTreeSet::from([pod_cidr, format!("{}/32", wireguard_ip.addr())]),
                );
            }
            for peer in &peers.items {
                expected.insert(
                    peer.spec.public_key.clone(),
                    peer.spec.allowed_ips.iter().cloned().collect(),
                );
            }
            let actual: BTreeMap<String, BTreeSet<String>> = shown
                .iter()
                .map(|(k, (ips, _))| (k.clone(), ips.iter().cloned().collect()))
                .collect();
            anyhow::ensure!(
                actual == expected,
                "{}/{}: wg show lists {actual:?}, the cluster's nodes and Peers imply {expected:?}",
                node.cluster,
                node.name
            );
            for peer in &peers.items {
                let (_, handshake) = &shown[&peer.spec.public_key];
                anyhow::ensure!(
                    handshake.is_some_and(|age| age < 180),
                    "{}/{}: no recent handshake with {}",
                    node.cluster,
                    node.name,
                    peer.name_any()
                );
            }
        }
    }
    Ok(())
}

/// Waits until the service at `ip` answers a request from pod `from`.
async fn service_answers(mesh: &Mesh, from: &str, ip: Ipv4Addr) -> anyhow::Result<String> {
    let what = format!("{ip} answering {from}");
    within(Duration::from_secs(30), &what, || async {
        probe::fetch(&mesh.lab, from, ip).await.ok()
    })
    .await
}

/// Edits a cluster's `serviceCIDR` in the ClusterMesh, as a user would.
async fn set_service_cidr(mesh: &Mesh, cluster: &str, cidr: &str) -> anyhow::Result<()> {
    let index = ["cluster-a", "cluster-b", "cluster-c"]
        .iter()
        .position(|c| *c == cluster)
        .ok_or_else(|| anyhow::anyhow!("no cluster {cluster}"))?;
    let patch = format!(
        r#"[{{"op":"replace","path":"/spec/clusters/{index}/serviceCIDR","value":"{cidr}"}}]"#
    );
    let args = [
        "--context",
        HUB,
        "-n",
        NAMESPACE,
        "patch",
        "clustermesh",
        MESH,
        "--type=json",
        "-p",
        &patch,
    ];
    mesh.kubectl(&args).await.map(drop)
}

/// The node of `cluster` whose Peers carry its service range.
async fn anchor_of(mesh: &Mesh, cluster: &str) -> anyhow::Result<String> {
    let status = mesh.status().await?;
    status
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.anchor_node.clone())
        .ok_or_else(|| anyhow::anyhow!("{cluster} has no anchor in the status"))
}

async fn node_key(mesh: &Mesh, cluster: &str, node: &str) -> anyhow::Result<String> {
    let node = Api::<Node>::all(mesh.plane(cluster)?.admin_client())
        .get(node)
        .await?;
    Ok(node
        .annotations()
        .get("kilo.squat.ai/key")
        .cloned()
        .unwrap_or_default())
}

fn pod_ip(mesh: &Mesh, cluster: &str, node: &str) -> Ipv4Addr {
    let nodes = mesh.lab.nodes(cluster);
    nodes.iter().find(|n| n.name == node).unwrap().pods[0].ip
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `limit`.
async fn within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A binary of another package of the workspace, built into the same
/// target directory (`make e2e` builds it first).
fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-<hash> → target/<profile>/<name>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join(name)
}
