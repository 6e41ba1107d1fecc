//! How long the pure core takes per pass on a large mesh, without API
//! servers: `cargo run --release -p kilo-clustermesh-mesh --example
//! plan_scale -- [nodes per cluster] [clusters]`.

use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc, time::Instant};

use api::{ClusterEntry, ClusterMeshSpec, SecretKeyRef};
use base64::{Engine, engine::general_purpose::STANDARD};
use mesh::{ClusterView, MeshIdentity, NodeView, Observation, Planner, Settings, applied, plan};

/// Nodes per cluster and clusters the ranges below hold.
const MAX_NODES: u32 = 8192;
const MAX_CLUSTERS: usize = 55;

/// Cluster `c`: pods in `10.c.0.0/16` (a /29 per node), WireGuard in
/// `10.<100+c>.0.0/16`, services in `10.<200+c>.0.0/16`.
fn entry(c: usize) -> ClusterEntry {
    ClusterEntry {
        name: format!("c{c}"),
        local: c == 0,
        kubeconfig_secret_ref: (c != 0).then(|| SecretKeyRef {
            name: format!("c{c}-kubeconfig"),
            key: "kubeconfig".into(),
        }),
        pod_cidrs: vec![format!("10.{}.0.0/16", c)],
        wireguard_cidr: format!("10.{}.0.0/16", 100 + c),
        service_cidr: Some(format!("10.{}.0.0/16", 200 + c)),
        additional_cidrs: vec![],
    }
}

/// Node `i` of cluster `c`, as Kilo annotates it.
fn node(c: usize, i: u32) -> NodeView {
    let pod = u32::from(Ipv4Addr::new(10, c as u8, 0, 0)) + i * 8;
    let wg = u32::from(Ipv4Addr::new(10, 100 + c as u8, 0, 0)) + i + 1;
    let mut key = [9u8; 32];
    key[0] = c as u8;
    key[1..5].copy_from_slice(&i.to_be_bytes());
    NodeView {
        name: format!("node-{i}"),
        pod_cidrs: vec![format!("{}/29", Ipv4Addr::from(pod))],
        annotations: BTreeMap::from([
            ("kilo.squat.ai/key".to_owned(), STANDARD.encode(key)),
            (
                "kilo.squat.ai/endpoint".to_owned(),
                format!("192.0.2.{}:51820", c + 1),
            ),
            (
                "kilo.squat.ai/wireguard-ip".to_owned(),
                format!("{}/16", Ipv4Addr::from(wg)),
            ),
            ("kilo.squat.ai/granularity".to_owned(), "full".to_owned()),
        ]),
        ready: true,
        created: 1,
        ..NodeView::default()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let clusters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    if !(1..=MAX_NODES).contains(&n) || !(2..=MAX_CLUSTERS).contains(&clusters) {
        eprintln!("plan_scale: 1 to {MAX_NODES} nodes per cluster, 2 to {MAX_CLUSTERS} clusters");
        std::process::exit(2);
    }
    let spec = ClusterMeshSpec {
        clusters: (0..clusters).map(entry).collect(),
        ..Default::default()
    };
    let identity = MeshIdentity {
        hub_cluster: "c0".into(),
        namespace: "kilo-system".into(),
        name: "mesh".into(),
    };
    let settings = Settings::default();
    let mut observations: BTreeMap<String, Observation> = (0..clusters)
        .map(|c| {
            let view = ClusterView {
                nodes: (0..n).map(|i| Arc::new(node(c, i))).collect(),
                uid: Some(format!("uid-{c}")),
                ..ClusterView::default()
            };
            (format!("c{c}"), Observation::Observed(view))
        })
        .collect();
    let mut planner = Planner::default();
    let started = Instant::now();
    let mut passes = 0;
    loop {
        let plan = planner.plan(&spec, &identity, &settings, &observations);
        passes += 1;
        if plan.writes.is_empty() || passes == 5 {
            break;
        }
        apply(&mut observations, &plan);
    }
    println!(
        "{clusters}×{n} nodes: converged in {passes} passes, {:.1} ms",
        ms(started)
    );
    let full = time(20, || {
        plan(&spec, &identity, &settings, &observations);
    });
    println!("a pass from scratch (`plan`): {full}");
    let steady = time(20, || {
        planner.plan(&spec, &identity, &settings, &observations);
    });
    println!("a pass with nothing changed (`Planner`): {steady}");
    // One node joins cluster c1 and its Peers land, over and over: the pass
    // that plans them is timed.
    let mut took = Vec::new();
    for i in 0..20 {
        if let Some(Observation::Observed(view)) = observations.get_mut("c1") {
            view.nodes.make_mut().push(Arc::new(node(1, n + i)));
        }
        let started = Instant::now();
        let plan = planner.plan(&spec, &identity, &settings, &observations);
        took.push(ms(started));
        apply(&mut observations, &plan);
    }
    println!("a node joins (`Planner`): {}", summary(took));
}

fn apply(observations: &mut BTreeMap<String, Observation>, plan: &mesh::Plan) {
    for (cluster, writes) in &plan.writes {
        if let Some(Observation::Observed(view)) = observations.get_mut(cluster) {
            view.peers = applied(view, writes);
        }
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Runs `pass` `times` times: the median and the slowest, in ms.
fn time(times: usize, mut pass: impl FnMut()) -> String {
    let took = (0..times)
        .map(|_| {
            let started = Instant::now();
            pass();
            ms(started)
        })
        .collect();
    summary(took)
}

fn summary(mut took: Vec<f64>) -> String {
    took.sort_by(f64::total_cmp);
    format!(
        "median {:.2} ms, max {:.2} ms ({} passes)",
        took[took.len() / 2],
        took[took.len() - 1],
        took.len()
    )
}
