//! The user guides run as written: every `sh` block of the pages below is
//! executed with bash, the pinned kubectl and helm and the operator's binary,
//! against real API servers whose kubeconfig contexts are named as in the
//! docs (`hub`, `cluster-b`). A block no test can run here is listed in
//! [`NOT_RUN`] with the reason, and a test fails for any other block.
//! `tests/install.rs` runs the air-gapped install, upgrade and uninstall
//! ([`guide::INSTALL_PATH`]).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    guide::{INSTALL_PATH, REPO, blocks, script, sh_blocks},
    *,
};
use testkit::ControlPlane;

/// [`guide::run`] with nothing added to the environment.
async fn run(script: &str, kubeconfig: &Path, home: &Path) -> String {
    guide::run(script, kubeconfig, home, &[]).await
}

/// Sections whose commands need what this machine cannot give, and why.
const NOT_RUN: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "# kilo-clustermesh-operator",
        "`make test` is what CI runs; `make demo` keeps its lab up until Ctrl-C (its checks run in `make e2e`)",
    ),
    (
        "docs/netlab.md",
        "# The network lab",
        "`make demo` and `make e2e` themselves; `make test` runs `make e2e`",
    ),
    (
        "docs/netlab.md",
        "## What it builds",
        "commands to look inside the lab while `make demo` keeps it up",
    ),
    (
        "docs/netlab.md",
        "## Running Kilo's own",
        "needs a `kg` binary, which cannot be built on the project's machines",
    ),
    (
        "docs/install.md",
        "## The image",
        "`make image` runs before `make test-install`, whose test loads the archive it writes; the \
         Dockerfile's base images come from a container registry, which the build machines do not reach",
    ),
    (
        "docs/install.md",
        "## From an OCI registry",
        "needs a container registry, which the build machines do not reach",
    ),
    (
        "docs/performance.md",
        "# Performance",
        "the benchmark takes about 18 minutes on 2 cores: `make bench` runs it, `make test` does not",
    ),
    (
        "docs/performance.md",
        "## The curves",
        "redraws the figure with the release build `make bench` makes; the drawing and the reading \
         of results files are tested in crates/bench (`plot::tests`)",
    ),
    (
        "docs/troubleshooting.md",
        "## By reason",
        "reads the operator's pod; the tests run the operator in-process",
    ),
];

/// A user's path from nothing to a checked mesh, an upgrade, and back to
/// nothing: the sections run, in order.
const INSTALL_AND_CONNECT: &[(&str, &str)] = &[
    ("docs/install.md", "## On the hub"),
    ("docs/install.md", "## On each remote cluster"),
    ("docs/connect.md", "## 1. Connect the remote"),
    ("docs/connect.md", "## 2. Declare the mesh"),
    ("docs/connect.md", "## 3. Check it"),
    ("docs/status.md", "# Reading a ClusterMesh's status"),
    ("docs/troubleshooting.md", "# Troubleshooting"),
    ("docs/install.md", "## Upgrade"),
    ("docs/install.md", "## Uninstall"),
];

/// The same without the operator's `connect`.
const BY_HAND: &[(&str, &str)] = &[
    ("docs/connect.md", "## By hand"),
    ("docs/connect.md", "## 2. Declare the mesh"),
    ("docs/connect.md", "## 3. Check it"),
];

/// One cluster of a decentralized mesh, set up as the docs say.
const DECENTRALIZED: &[(&str, &str)] = &[("docs/topologies.md", "## A decentralized mesh")];

/// Letting the neighbours' read-only tokens list a cluster's Peers.
const PEER_READS: &[(&str, &str)] = &[("docs/topologies.md", "## Has a neighbour peered us back?")];

/// A hub and a remote with Kilo-annotated nodes whose ranges match the
/// docs' example mesh, and a kubeconfig with the docs' context names.
async fn clusters(dir: &Path) -> (Vec<ControlPlane>, PathBuf) {
    let planes = ControlPlane::start_many(2).await.unwrap();
    create_node(&planes[0], &kilo_node(1, 0)).await;
    create_node(&planes[1], &kilo_node(2, 0)).await;
    create_node(&planes[1], &kilo_node(2, 1)).await;
    let kubeconfig = contexts_file(
        dir,
        &[
            ("hub", planes[0].admin_kubeconfig()),
            ("cluster-b", planes[1].admin_kubeconfig()),
        ],
    );
    (planes, kubeconfig)
}

async fn assert_meshed(planes: &[ControlPlane]) {
    eventually("the docs' mesh peered", Duration::from_secs(30), || async {
        peer_names(&planes[0]).await == ["cluster-b.node-0", "cluster-b.node-1"]
            && peer_names(&planes[1]).await == ["hub.node-0"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_then_connect_then_check_as_the_docs_say() {
    let dir = tempfile::tempdir().unwrap();
    let (planes, kubeconfig) = clusters(dir.path()).await;
    let commands = script(INSTALL_AND_CONNECT);
    // These control planes have no node, so the chart's Deployment runs no
    // pod; the operator runs in-process against the hub instead
    // (`tests/install.rs` runs the chart's pod on the test kit's node).
    let _operator = start_operator(&planes[0]);
    let said = run(&commands, &kubeconfig, dir.path()).await;
    assert!(
        said.contains("ClusterMesh kilo-system/mesh: Ready (2 clusters, 3 peers, 0 nodes skipped)"),
        "{said}"
    );
    // The uninstall deleted the mesh, and its finalizer its Peers everywhere.
    assert!(peer_names(&planes[0]).await.is_empty(), "{said}");
    assert!(peer_names(&planes[1]).await.is_empty(), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manual_procedure_works_as_the_docs_say() {
    let dir = tempfile::tempdir().unwrap();
    let (planes, kubeconfig) = clusters(dir.path()).await;
    ensure_namespace(&planes[0]).await;
    let commands = script(BY_HAND);
    let _operator = start_operator(&planes[0]);
    run(&commands, &kubeconfig, dir.path()).await;
    assert_meshed(&planes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decentralized_mesh_as_the_docs_say() {
    let dir = tempfile::tempdir().unwrap();
    let planes = ControlPlane::start_many(3).await.unwrap();
    for (k, plane) in planes.iter().enumerate() {
        create_node(plane, &kilo_node(k as u8 + 1, 0)).await;
    }
    let kubeconfig = contexts_file(
        dir.path(),
        &[
            ("cluster-a", planes[0].admin_kubeconfig()),
            ("cluster-b", planes[1].admin_kubeconfig()),
            ("cluster-c", planes[2].admin_kubeconfig()),
        ],
    );
    run(&script(DECENTRALIZED), &kubeconfig, dir.path()).await;
    let (_, manifest) = blocks("docs/topologies.md", "```yaml")
        .into_iter()
        .find(|(heading, _)| heading.starts_with(DECENTRALIZED[0].1))
        .unwrap();
    let apply = format!("kubectl --context cluster-a apply -f - <<'EOF'\n{manifest}EOF\n");
    run(&apply, &kubeconfig, dir.path()).await;
    // No node here (see above): the operator runs in-process against
    // cluster-a instead.
    let _operator = start_operator(&planes[0]);
    eventually(
        "cluster-a peered with b and c",
        Duration::from_secs(30),
        || async { peer_names(&planes[0]).await == ["cluster-b.node-0", "cluster-c.node-0"] },
    )
    .await;
    assert!(
        peer_names(&planes[1]).await.is_empty(),
        "the read-only tokens write nothing"
    );
    // With the grant the docs give, cluster-a can tell that cluster-b (no
    // operator of its own here) has not peered it back.
    run(&script(PEER_READS), &kubeconfig, dir.path()).await;
    eventually(
        "cluster-a tells cluster-b has not peered it back",
        Duration::from_secs(45),
        || async {
            let status = mesh_status(&planes[0], "mesh").await;
            status
                .clusters
                .iter()
                .any(|c| c.name == "cluster-b" && c.peered_back == Some(0))
        },
    )
    .await;
}

#[test]
fn every_command_in_the_docs_is_run_or_says_why_not() {
    let mut pages = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(format!("{REPO}/docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            pages.push(format!("docs/{name}"));
        }
    }
    let mut unrun = Vec::new();
    for page in &pages {
        for (heading, _) in sh_blocks(page) {
            let run = INSTALL_AND_CONNECT
                .iter()
                .chain(BY_HAND)
                .chain(INSTALL_PATH)
                .chain(DECENTRALIZED)
                .chain(PEER_READS)
                .any(|(p, s)| p == page && heading.starts_with(s));
            let excused = NOT_RUN
                .iter()
                .any(|(p, s, _)| p == page && heading.starts_with(s));
            if !run && !excused {
                unrun.push(format!("{page}: {heading}"));
            }
        }
    }
    assert!(
        unrun.is_empty(),
        "sh blocks no test runs (run them in tests/docs.rs, or list them in NOT_RUN with why): {unrun:#?}"
    );
}
