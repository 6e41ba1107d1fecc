//! A seeded chaos run on real control planes: three clusters (b and c
//! reached through fault proxies), the operator as a real process, and a
//! random but reproducible sequence of events (nodes added, removed and
//! edited, valid and not; Secrets rotated and deleted; API servers
//! partitioned and restarted; the operator killed; owned Peers deleted or
//! edited by hand; foreign Peers added; clusters taken out of the spec and
//! put back; a service range changed). After each round of events every
//! fault is healed, and once the mesh is quiet the world is checked against
//! the truth:
//! - every cluster of the spec holds exactly the Peers a fresh plan of the
//!   world as it is now implies (`mesh::plan` finds nothing to write), and a
//!   cluster out of the spec none of the mesh's;
//! - no foreign Peer was touched;
//! - at most one anchor per cluster;
//! - no Peer was removed for a cluster while it was partitioned;
//! - the status is Ready and counts what the plan counts.
//!
//! `make chaos SEED=<n> DURATION=<seconds>` runs it as long as asked; `make
//! test` runs a short one with a new seed each time. A failure prints the
//! seed and the event log that reproduce it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use api::{ClusterMesh, Peer, PeerSpec};
use common::*;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use kilo_clustermesh_operator::observe::{node_view, observed_peer};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use mesh::{ClusterView, MESH_LABEL, MeshIdentity, Observation};
use testkit::{ControlPlane, Fault, FaultProxy};

/// How long the mesh may take to settle after a round's faults are healed:
/// a partition's probes, a watch's backoff and a restarted operator's
/// listing and Lease included.
const SETTLE: Duration = Duration::from_secs(90);
const NAMES: [&str; 3] = ["a", "b", "c"];

/// splitmix64: small, seedable, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    AddNode,
    AddBrokenNode,
    RemoveNode,
    MoveEndpoint,
    RotateSecret,
    DeleteSecret,
    Partition,
    RestartApiServer,
    KillOperator,
    DeleteOwnedPeer,
    EditOwnedPeer,
    AddForeignPeer,
    DropClusterC,
    ChangeServiceCidr,
}

const EVENTS: [(Event, usize); 14] = [
    (Event::AddNode, 4),
    (Event::AddBrokenNode, 2),
    (Event::RemoveNode, 3),
    (Event::MoveEndpoint, 2),
    (Event::RotateSecret, 1),
    (Event::DeleteSecret, 1),
    (Event::Partition, 2),
    (Event::RestartApiServer, 1),
    (Event::KillOperator, 1),
    (Event::DeleteOwnedPeer, 2),
    (Event::EditOwnedPeer, 2),
    (Event::AddForeignPeer, 1),
    (Event::DropClusterC, 1),
    (Event::ChangeServiceCidr, 1),
];

/// The world the run changes, and what it must not forget.
struct World {
    planes: Vec<ControlPlane>,
    /// b's and c's API servers as the operator reaches them.
    proxies: BTreeMap<&'static str, FaultProxy>,
    operator: Option<tokio::process::Child>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    next_node: u8,
    /// Foreign Peers made by hand: (cluster, name) → spec.
    foreign: BTreeMap<(usize, String), PeerSpec>,
    /// Peers of a partitioned source cluster, per target, when it was cut.
    partitioned: BTreeMap<&'static str, BTreeMap<usize, BTreeSet<String>>>,
    /// Remotes whose Secret is deleted until the round heals.
    secret_deleted: BTreeSet<&'static str>,
    /// Peers deleted by hand since the round began, (cluster, name): not
    /// removed by the operator, whatever was partitioned meanwhile.
    deleted_by_hand: BTreeSet<(usize, String)>,
    c_in_spec: bool,
    /// Whether c was out of the spec at some time since the round began:
    /// the mesh's Peers on c, and c's elsewhere, were then removed on purpose.
    c_taken_out_this_round: bool,
    /// The events and checks, each with the seconds since the run began.
    log: Vec<String>,
    began: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_run_of_faults_leaves_the_mesh_right() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| unix_now() ^ u64::from(std::process::id()));
    let duration = Duration::from_secs(
        std::env::var("CHAOS_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(75),
    );
    println!(
        "chaos: seed {seed}, {} s of events (CHAOS_SEED={seed} to replay)",
        duration.as_secs()
    );
    let mut rng = Rng(seed);
    let mut world = World::start().await;
    let started = Instant::now();
    let (mut rounds, mut events, mut checks) = (0, 0, 0);
    while started.elapsed() < duration {
        rounds += 1;
        world.note(format!("-- round {rounds}"));
        for _ in 0..(3 + rng.below(4)) {
            let event = weighted(&mut rng);
            world.apply(event, &mut rng).await;
            events += 1;
            tokio::time::sleep(Duration::from_millis(rng.below(1500) as u64)).await;
        }
        if let Err(failure) = world.heal().await {
            world.fail(seed, &failure).await;
        }
        match world.settled().await {
            Ok(count) => checks += count,
            Err(failure) => world.fail(seed, &failure).await,
        }
    }
    let restarts = world
        .log
        .iter()
        .filter(|l| l.contains("had exited"))
        .count();
    println!(
        "figure: chaos seed {seed}: {rounds} rounds, {events} events, {checks} checks passed in {:.0} s; \
         the operator exited on its own {restarts} times",
        started.elapsed().as_secs_f64()
    );
}

fn weighted(rng: &mut Rng) -> Event {
    let total: usize = EVENTS.iter().map(|(_, w)| w).sum();
    let mut at = rng.below(total);
    for (event, weight) in EVENTS {
        if at < weight {
            return event;
        }
        at -= weight;
    }
    Event::AddNode
}

impl World {
    async fn start() -> Self {
        let planes = ControlPlane::start_many(3).await.unwrap();
        for (k, plane) in planes.iter().enumerate() {
            for i in 0..2 {
                create_node(plane, &kilo_node(k as u8 + 1, i)).await;
            }
        }
        let mut proxies = BTreeMap::new();
        for (index, name) in [(1, "b"), (2, "c")] {
            connect(&planes[0], &planes[index], name).await;
            let proxy = FaultProxy::start(planes[index].port()).await.unwrap();
            proxies.insert(name, proxy);
        }
        let mut world = Self {
            planes,
            proxies,
            operator: None,
            kubeconfig: PathBuf::new(),
            _dir: tempfile::tempdir().unwrap(),
            next_node: 2,
            foreign: BTreeMap::new(),
            partitioned: BTreeMap::new(),
            secret_deleted: BTreeSet::new(),
            deleted_by_hand: BTreeSet::new(),
            c_in_spec: true,
            c_taken_out_this_round: false,
            log: vec![],
            began: Instant::now(),
        };
        for name in ["b", "c"] {
            world.put_secret(name).await;
        }
        create_mesh(&world.planes[0], "mesh", world.spec_entries()).await;
        world.kubeconfig = world._dir.path().join("hub.kubeconfig");
        std::fs::write(&world.kubeconfig, world.planes[0].admin_kubeconfig()).unwrap();
        world.start_operator();
        world
    }

    fn start_operator(&mut self) {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kilo-clustermesh-operator"))
            .args([
                "run",
                "--namespace",
                NAMESPACE,
                "--leader-election-namespace",
                NAMESPACE,
            ])
            // CHAOS_LEASE shortens the Lease, to try more hand-overs.
            .args(["--metrics-address", "127.0.0.1:0"])
            .arg(format!(
                "--leader-election-lease-duration={}",
                std::env::var("CHAOS_LEASE").unwrap_or_else(|_| "15s".into())
            ))
            // The test's nodes check in once, at creation.
            .args(["--node-check-in-grace", "1h"])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("POD_NAME", "chaos")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.operator = Some(child);
    }

    /// Starts the operator again if it exited, as its Deployment would (it
    /// exits on purpose when it cannot prove it still leads).
    fn supervise(&mut self) {
        let exited = self
            .operator
            .as_mut()
            .is_none_or(|o| o.try_wait().ok().flatten().is_some());
        if exited {
            self.note("the operator had exited: started again, as its Deployment would".into());
            self.start_operator();
        }
    }

    fn note(&mut self, line: String) {
        let at = self.began.elapsed().as_secs_f64();
        self.log.push(format!("{at:>6.1}s {line}"));
    }

    fn index(name: &str) -> usize {
        NAMES.iter().position(|n| *n == name).unwrap()
    }

    fn spec_entries(&self) -> Vec<api::ClusterEntry> {
        let mut entries = vec![entry("a", 1, true), entry("b", 2, false)];
        if self.c_in_spec {
            entries.push(entry("c", 3, false));
        }
        entries
    }

    /// The remote's kubeconfig Secret, with a fresh token, through its proxy.
    async fn put_secret(&self, name: &str) {
        let plane = &self.planes[Self::index(name)];
        let kubeconfig = plane
            .service_account_kubeconfig(
                NAMESPACE,
                "kilo-clustermesh",
                Some(Duration::from_secs(3600)),
            )
            .await
            .unwrap()
            .replace(&plane.server_url(), &self.proxies[name].url());
        put_secret(&self.planes[0], &format!("{name}-kubeconfig"), &kubeconfig).await;
    }

    async fn apply(&mut self, event: Event, rng: &mut Rng) {
        let k = rng.below(3);
        let remote = *rng.pick(&["b", "c"]).unwrap();
        let plane = &self.planes[k];
        let nodes = Api::<Node>::all(plane.admin_client());
        let peers = Api::<Peer>::all(plane.admin_client());
        let line = match event {
            Event::AddNode | Event::AddBrokenNode => {
                self.next_node += 1;
                let mut node = kilo_node(k as u8 + 1, self.next_node);
                let broken = matches!(event, Event::AddBrokenNode);
                if broken {
                    let annotations = node.metadata.annotations.as_mut().unwrap();
                    match rng.below(3) {
                        0 => {
                            drop(annotations.insert("kilo.squat.ai/key".into(), "not-a-key".into()))
                        }
                        1 => {
                            node.spec.as_mut().unwrap().pod_cidrs =
                                Some(vec!["172.31.0.0/24".into()])
                        }
                        _ => drop(
                            annotations.insert("kilo.squat.ai/endpoint".into(), "no port".into()),
                        ),
                    }
                }
                let name = node.name_any();
                let result = nodes.create(&PostParams::default(), &node).await;
                format!(
                    "add {}node {}/{name}: {}",
                    if broken { "broken " } else { "" },
                    NAMES[k],
                    ok(result)
                )
            }
            Event::RemoveNode => {
                let list = names(&nodes).await;
                match rng.pick(&list) {
                    Some(name) => {
                        let result = nodes.delete(name, &DeleteParams::default()).await;
                        format!("remove node {}/{name}: {}", NAMES[k], ok(result))
                    }
                    None => format!("remove node on {}: none left", NAMES[k]),
                }
            }
            Event::MoveEndpoint => {
                let list = names(&nodes).await;
                match rng.pick(&list) {
                    Some(name) => {
                        let port = 40_000 + rng.below(1000);
                        let patch = serde_json::json!({"metadata": {"annotations": {"kilo.squat.ai/endpoint": format!("192.0.2.{}:{port}", 100 + rng.below(100))}}});
                        let result = nodes
                            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await;
                        format!("move endpoint of {}/{name}: {}", NAMES[k], ok(result))
                    }
                    None => format!("move an endpoint on {}: no node", NAMES[k]),
                }
            }
            Event::RotateSecret => {
                self.put_secret(remote).await;
                self.secret_deleted.remove(remote);
                format!("rotate {remote}'s Secret")
            }
            Event::DeleteSecret => {
                let secrets = Api::<Secret>::namespaced(self.planes[0].admin_client(), NAMESPACE);
                let result = secrets
                    .delete(&format!("{remote}-kubeconfig"), &DeleteParams::default())
                    .await;
                self.secret_deleted.insert(remote);
                format!("delete {remote}'s Secret: {}", ok(result))
            }
            Event::Partition => {
                if !self.partitioned.contains_key(remote) {
                    let kept = self.peers_of_source(remote).await;
                    self.partitioned.insert(remote, kept);
                }
                self.proxies[remote].set(Fault::Blackhole);
                format!("partition {remote}")
            }
            Event::RestartApiServer => {
                let plane = &mut self.planes[k];
                plane.stop_apiserver();
                tokio::time::sleep(Duration::from_millis(500)).await;
                let result = plane.start_apiserver().await;
                format!("restart {}'s API server: {}", NAMES[k], ok(result))
            }
            Event::KillOperator => {
                if let Some(mut operator) = self.operator.take() {
                    let _ = operator.kill().await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.start_operator();
                "kill the operator (SIGKILL) and start it again".to_owned()
            }
            Event::DeleteOwnedPeer | Event::EditOwnedPeer => {
                let owned = names_with(&peers, MESH_LABEL).await;
                match rng.pick(&owned) {
                    Some(name) if matches!(event, Event::DeleteOwnedPeer) => {
                        let result = peers.delete(name, &DeleteParams::default()).await;
                        if result.is_ok() {
                            self.deleted_by_hand.insert((k, name.clone()));
                        }
                        format!(
                            "delete owned Peer {}/{name} by hand: {}",
                            NAMES[k],
                            ok(result)
                        )
                    }
                    Some(name) => {
                        let patch = serde_json::json!({"spec": {"allowedIPs": ["10.99.0.0/24"]}});
                        let result = peers
                            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await;
                        format!(
                            "edit owned Peer {}/{name} by hand: {}",
                            NAMES[k],
                            ok(result)
                        )
                    }
                    None => format!("touch an owned Peer on {}: none", NAMES[k]),
                }
            }
            Event::AddForeignPeer => {
                let name = format!("foreign-{}", rng.below(1_000_000));
                let spec = PeerSpec {
                    allowed_ips: vec![format!("10.250.{}.0/24", rng.below(250))],
                    endpoint: None,
                    persistent_keepalive: Some(10),
                    preshared_key: None,
                    public_key: api::fixtures::wireguard_key(9, rng.below(250) as u8),
                };
                let peer = Peer {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    spec: spec.clone(),
                };
                let result = peers.create(&PostParams::default(), &peer).await;
                if result.is_ok() {
                    self.foreign.insert((k, name.clone()), spec);
                }
                format!("add foreign Peer {}/{name}: {}", NAMES[k], ok(result))
            }
            Event::DropClusterC => {
                self.c_in_spec = !self.c_in_spec;
                self.c_taken_out_this_round |= !self.c_in_spec;
                let result = self
                    .patch_spec(serde_json::json!({"clusters": self.spec_entries()}))
                    .await;
                format!(
                    "{} cluster c: {}",
                    if self.c_in_spec {
                        "put back"
                    } else {
                        "take out"
                    },
                    ok(result)
                )
            }
            Event::ChangeServiceCidr => {
                let cidr = *rng.pick(&["10.202.0.0/16", "10.212.0.0/16"]).unwrap();
                let mut entries = self.spec_entries();
                entries[1].service_cidr = Some(cidr.to_owned());
                let result = self
                    .patch_spec(serde_json::json!({"clusters": entries}))
                    .await;
                format!("b's serviceCIDR to {cidr}: {}", ok(result))
            }
        };
        self.note(format!("{event:?}: {line}"));
    }

    async fn patch_spec(&self, spec: serde_json::Value) -> kube::Result<ClusterMesh> {
        Api::<ClusterMesh>::namespaced(self.planes[0].admin_client(), NAMESPACE)
            .patch(
                "mesh",
                &PatchParams::default(),
                &Patch::Merge(&serde_json::json!({"spec": spec})),
            )
            .await
    }

    /// The names of the mesh's Peers describing `source`'s nodes, per target.
    async fn peers_of_source(&self, source: &str) -> BTreeMap<usize, BTreeSet<String>> {
        let mut found = BTreeMap::new();
        for (k, plane) in self.planes.iter().enumerate() {
            let list = Api::<Peer>::all(plane.admin_client())
                .list(
                    &ListParams::default().labels(&format!("kilo-clustermesh.io/cluster={source}")),
                )
                .await;
            if let Ok(list) = list {
                found.insert(k, list.items.iter().map(|p| p.name_any()).collect());
            }
        }
        found
    }

    /// Ends every fault: partitions, deleted Secrets, a stopped operator.
    async fn heal(&mut self) -> Result<(), String> {
        // Checked before the partitions end: nothing was removed for them.
        let partitioned = std::mem::take(&mut self.partitioned);
        let deleted_by_hand = std::mem::take(&mut self.deleted_by_hand);
        let c_taken_out = std::mem::replace(&mut self.c_taken_out_this_round, !self.c_in_spec);
        for (remote, before) in &partitioned {
            let now = self.peers_of_source(remote).await;
            for (k, names) in before {
                let lost: Vec<_> = names
                    .difference(now.get(k).unwrap_or(&BTreeSet::new()))
                    .filter(|name| !deleted_by_hand.contains(&(*k, (*name).clone())))
                    .cloned()
                    .collect();
                // Taking c out of the spec removes its Peers, and the
                // mesh's Peers on c, on purpose.
                let on_purpose = c_taken_out && (*remote == "c" || NAMES[*k] == "c");
                if !lost.is_empty() && !on_purpose {
                    return Err(format!(
                        "Peers of partitioned {remote} removed from {}: {lost:?}",
                        NAMES[*k]
                    ));
                }
            }
        }
        for proxy in self.proxies.values() {
            proxy.set(Fault::Pass);
        }
        for remote in std::mem::take(&mut self.secret_deleted) {
            self.put_secret(remote).await;
        }
        self.supervise();
        self.note("heal: partitions ended, Secrets back, the operator running".into());
        Ok(())
    }

    /// Waits until every invariant holds (they are eventually true once the
    /// faults are healed); returns how many were checked.
    async fn settled(&mut self) -> Result<usize, String> {
        let deadline = Instant::now() + SETTLE;
        let started = Instant::now();
        loop {
            match self.check().await {
                Ok(count) => {
                    self.note(format!(
                        "settled in {:.1} s: {count} checks passed",
                        started.elapsed().as_secs_f64()
                    ));
                    return Ok(count);
                }
                Err(failure) if Instant::now() > deadline => {
                    return Err(format!(
                        "not settled {} s after healing: {failure}",
                        SETTLE.as_secs()
                    ));
                }
                Err(_) => {
                    self.supervise();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn check(&self) -> Result<usize, String> {
        let mut checks = 0;
        let mesh = Api::<ClusterMesh>::namespaced(self.planes[0].admin_client(), NAMESPACE)
            .get("mesh")
            .await
            .map_err(|e| e.to_string())?;
        let identity = MeshIdentity {
            hub_cluster: "a".into(),
            namespace: NAMESPACE.into(),
            name: "mesh".into(),
        };
        let mut observations = BTreeMap::new();
        let mut all_peers = BTreeMap::new();
        for (k, plane) in self.planes.iter().enumerate() {
            let client = plane.admin_client();
            let nodes = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let peers = Api::<Peer>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let uid = Api::<Namespace>::all(client)
                .get("kube-system")
                .await
                .ok()
                .and_then(|n| n.uid());
            let view = ClusterView {
                nodes: nodes
                    .items
                    .iter()
                    .map(|n| Arc::new(node_view(n, 0)))
                    .collect(),
                peers: peers
                    .items
                    .iter()
                    .map(|p| Arc::new(observed_peer(p)))
                    .collect(),
                uid,
                peers_unknown: false,
            };
            observations.insert(NAMES[k].to_owned(), Observation::Observed(view));
            all_peers.insert(k, peers.items);
        }
        let settings = mesh::Settings {
            default_persistent_keepalive: Some(25),
            ..mesh::Settings::default()
        };
        let plan = mesh::plan(&mesh.spec, &identity, &settings, &observations);
        // Every cluster of the spec holds exactly what a fresh plan implies.
        if !plan.writes.is_empty() {
            let pending: Vec<String> = plan
                .writes
                .iter()
                .map(|(c, w)| {
                    format!(
                        "{c}: {} to apply, {} to delete",
                        w.apply.len(),
                        w.delete.len()
                    )
                })
                .collect();
            return Err(format!(
                "the clusters differ from a fresh plan: {}",
                pending.join("; ")
            ));
        }
        checks += 1;
        let label = identity.label_value();
        for (k, peers) in &all_peers {
            let owned = peers
                .iter()
                .filter(|p| p.labels().get(MESH_LABEL) == Some(&label));
            // A cluster out of the spec holds none of the mesh's Peers.
            if NAMES[*k] == "c" && !self.c_in_spec && owned.clone().count() > 0 {
                return Err("cluster c is out of the spec and still holds the mesh's Peers".into());
            }
            // At most one anchor per source cluster.
            let mut anchors: BTreeMap<String, usize> = BTreeMap::new();
            for peer in owned.filter(|p| p.labels().contains_key(mesh::ANCHOR_LABEL)) {
                *anchors
                    .entry(peer.labels()[mesh::CLUSTER_LABEL].clone())
                    .or_default() += 1;
            }
            if let Some((source, count)) = anchors.iter().find(|(_, count)| **count > 1) {
                return Err(format!("{count} anchors of {source} on {}", NAMES[*k]));
            }
            checks += 1;
        }
        // No foreign Peer was touched.
        for ((k, name), spec) in &self.foreign {
            let found = all_peers[k].iter().find(|p| p.name_any() == *name);
            if found.map(|p| &p.spec) != Some(spec) {
                return Err(format!(
                    "foreign Peer {}/{name} was changed or removed",
                    NAMES[*k]
                ));
            }
            checks += 1;
        }
        // The status is current, Ready, and counts what the plan counts.
        let status = mesh.status.unwrap_or_default();
        if status.observed_generation != mesh.metadata.generation {
            return Err("the status is not of the current generation".into());
        }
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        if ready.is_none_or(|c| c.status != "True") {
            return Err(format!("not Ready: {:?}", ready.map(|c| &c.message)));
        }
        for report in &plan.report.clusters {
            let shown = status.clusters.iter().find(|c| c.name == report.name);
            let counted = shown.map(|c| (c.nodes, c.registered_peers, c.skipped_nodes));
            let expected = (
                report.nodes as i32,
                report.registered_peers as i32,
                report.skipped.len() as i32,
            );
            if counted != Some(expected) {
                return Err(format!(
                    "status of {} says {counted:?}, the world {expected:?}",
                    report.name
                ));
            }
            checks += 1;
        }
        Ok(checks)
    }

    async fn fail(&self, seed: u64, failure: &str) -> ! {
        let mut report = String::new();
        let _ = writeln!(report, "chaos seed {seed} failed: {failure}");
        let _ = writeln!(
            report,
            "replay: CHAOS_SEED={seed} make chaos (the events, in order):"
        );
        for line in &self.log {
            let _ = writeln!(report, "  {line}");
        }
        for plane in &self.planes {
            let _ = writeln!(
                report,
                "Peers on {}: {:?}",
                plane.name(),
                peer_names(plane).await
            );
        }
        panic!("{report}");
    }
}

fn ok<T>(result: Result<T, impl std::fmt::Display>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(error) => format!("refused ({error})"),
    }
}

async fn names<K>(api: &Api<K>) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items.iter().map(|o| o.name_any()).collect())
        .unwrap_or_default()
}

async fn names_with<K>(api: &Api<K>, label: &str) -> Vec<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default().labels(label))
        .await
        .map(|l| l.items.iter().map(|o| o.name_any()).collect())
        .unwrap_or_default()
}
