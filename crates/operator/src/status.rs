//! The `status` command: a mesh's health as a person or a script reads it,
//! from the ClusterMesh status the operator writes on the hub.
//!
//! Exit codes: 0 every mesh is Ready with nothing to warn about, 1 some mesh
//! is not Ready (or the operator has not reconciled its latest spec), 2 the
//! status could not be read, 3 Ready but with warnings (skipped nodes,
//! expiring credentials).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use api::{ClusterMesh, ClusterMeshStatus, PeerWriter};
use clap::{Args, ValueEnum};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use mesh::ConditionType;

/// Flags of `kilo-clustermesh-operator status`.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The ClusterMesh to show; all in the namespace when left out.
    pub name: Option<String>,

    /// Namespace of the ClusterMesh on the hub.
    #[arg(long, short = 'n', default_value = "kilo-system")]
    pub namespace: String,

    /// Kubeconfig context of the hub; defaults to the current context.
    #[arg(long)]
    pub context: Option<String>,

    /// Kubeconfig file; defaults to $KUBECONFIG, then ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Wait up to this long (e.g. 2m) for every mesh to be Ready before
    /// showing it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// How healthy one mesh is, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ready,
    ReadyWithWarnings,
    NotReady,
}

impl Verdict {
    fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Self::Ready => 0,
            Self::NotReady => 1,
            Self::ReadyWithWarnings => 3,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::ReadyWithWarnings => "Ready, with warnings",
            Self::NotReady => "NOT READY",
        }
    }
}

/// What a mesh's status says, judged.
#[derive(Debug)]
pub struct Assessment {
    pub verdict: Verdict,
    /// Why it is not Ready: each True problem condition, or that the operator
    /// has not caught up with the spec.
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Judges a mesh from its status alone.
pub fn assess(mesh: &ClusterMesh) -> Assessment {
    let status = mesh.status.clone().unwrap_or_default();
    let generation = mesh.metadata.generation;
    let true_conditions = status
        .conditions
        .iter()
        .filter(|c| c.type_ != ConditionType::Ready.as_str() && c.status == "True");
    // A type this version does not know counts as a problem.
    let (warnings, problems): (Vec<_>, Vec<_>) = true_conditions
        .partition(|c| ConditionType::parse(&c.type_).is_some_and(|type_| !type_.blocks_ready()));
    let describe = |c: &&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition| {
        format!("{}: {}", c.type_, c.message)
    };
    let mut problems: Vec<String> = problems.iter().map(describe).collect();
    let warnings: Vec<String> = warnings.iter().map(describe).collect();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_str())
        .filter(|c| c.status == "True")
        .is_some();
    if status.observed_generation.is_none() || status.observed_generation < generation {
        problems.insert(
            0,
            format!(
                "the operator has not reconciled generation {} yet: is it running? \
                 (kubectl -n <operator namespace> logs deploy/kilo-clustermesh-operator)",
                generation.unwrap_or_default()
            ),
        );
    }
    let verdict = if !ready || !problems.is_empty() {
        Verdict::NotReady
    } else if !warnings.is_empty() {
        Verdict::ReadyWithWarnings
    } else {
        Verdict::Ready
    };
    Assessment {
        verdict,
        problems,
        warnings,
    }
}

/// Runs `status` and says how it went as an exit code.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = hub_client(&args).await?;
    let api = Api::<ClusterMesh>::namespaced(client, &args.namespace);
    let deadline = args.wait.map(|w| tokio::time::Instant::now() + w);
    let meshes = loop {
        let meshes = read(&api, args.name.as_deref()).await?;
        let worst = meshes.iter().map(|m| assess(m).verdict).max();
        let settled = worst.is_some_and(|v| v != Verdict::NotReady);
        match deadline {
            Some(deadline) if !settled && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => break meshes,
        }
    };
    if meshes.is_empty() {
        anyhow::bail!(
            "no ClusterMesh in namespace {}; create one (docs/connect.md), or pass --namespace",
            args.namespace
        );
    }
    let now = Timestamp::now();
    let mut worst = Verdict::Ready;
    let mut json = Vec::new();
    for mesh in &meshes {
        let assessment = assess(mesh);
        worst = worst.max(assessment.verdict);
        match args.output {
            Output::Text => print!("{}", render(mesh, &assessment, now)),
            Output::Json => json.push(serde_json::json!({
                "namespace": mesh.namespace(),
                "name": mesh.name_any(),
                "verdict": format!("{:?}", assessment.verdict),
                "problems": assessment.problems,
                "warnings": assessment.warnings,
                "status": mesh.status,
            })),
        }
    }
    if let Output::Json = args.output {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(worst.exit_code())
}

async fn hub_client(args: &StatusArgs) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .context("the hub's kubeconfig")?;
    Client::try_from(config).context("a client for the hub")
}

async fn read(api: &Api<ClusterMesh>, name: Option<&str>) -> anyhow::Result<Vec<ClusterMesh>> {
    let meshes = match name {
        Some(name) => vec![
            api.get_opt(name)
                .await
                .with_context(|| format!("reading ClusterMesh {name}"))?
                .with_context(|| format!("there is no ClusterMesh {name}"))?,
        ],
        None => {
            api.list(&ListParams::default())
                .await
                .context("listing ClusterMeshes")?
                .items
        }
    };
    Ok(meshes)
}

/// The text report of one mesh.
pub fn render(mesh: &ClusterMesh, assessment: &Assessment, now: Timestamp) -> String {
    let status: ClusterMeshStatus = mesh.status.clone().unwrap_or_default();
    let local = mesh
        .spec
        .clusters
        .iter()
        .find(|c| c.local)
        .map(|c| c.name.as_str());
    let mut out = format!(
        "ClusterMesh {}/{}: {} ({} clusters, {} peers, {} nodes skipped)\n",
        mesh.namespace().unwrap_or_default(),
        mesh.name_any(),
        assessment.verdict.label(),
        status.cluster_count,
        status.registered_peers,
        status.skipped_nodes,
    );
    let mut rows = vec![
        [
            "CLUSTER",
            "REACHABLE",
            "NODES",
            "PEERS",
            "SKIPPED",
            "ANCHOR",
            "LAST SYNC",
            "CREDENTIALS",
            "PEERS WRITTEN BY",
        ]
        .map(str::to_owned),
    ];
    let local_peered = status
        .clusters
        .iter()
        .find(|c| Some(c.name.as_str()) == local)
        .map_or(0, |c| c.registered_peers);
    for cluster in &status.clusters {
        let name = if Some(cluster.name.as_str()) == local {
            format!("{} (local)", cluster.name)
        } else {
            cluster.name.clone()
        };
        let reachable = match (&cluster.reachable, &cluster.stale_since) {
            (true, _) => "yes".to_owned(),
            (false, Some(since)) => format!("no, stale {}", ago(since, now)),
            (false, None) => "no".to_owned(),
        };
        let synced = cluster
            .last_sync_time
            .as_ref()
            .map_or("-".to_owned(), |t| format!("{} ago", ago(t, now)));
        let credentials = cluster
            .credentials_expire
            .as_ref()
            .map_or("-".to_owned(), |t| {
                if t.0 <= now {
                    "EXPIRED".to_owned()
                } else {
                    format!("expire in {}", span(t.0.duration_since(now)))
                }
            });
        let writer = match (cluster.peer_writer, cluster.peered_back) {
            (None, _) => "-".to_owned(),
            (Some(PeerWriter::ThisOperator), _) => "this operator".to_owned(),
            (Some(PeerWriter::OwnOperator), Some(back)) => {
                format!("its own operator (peered back {back}/{local_peered})")
            }
            (Some(PeerWriter::OwnOperator), None) => {
                "its own operator (peered back: cannot tell)".to_owned()
            }
        };
        rows.push([
            name,
            reachable,
            cluster.nodes.to_string(),
            cluster.registered_peers.to_string(),
            cluster.skipped_nodes.to_string(),
            cluster
                .anchor_node
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
            synced,
            credentials,
            writer,
        ]);
    }
    out.push_str(&table(&rows));
    let skipped: Vec<String> = status
        .clusters
        .iter()
        .flat_map(|c| {
            c.skipped
                .iter()
                .map(move |s| format!("{}/{}: {}: {}", c.name, s.name, s.reason, s.message))
        })
        .collect();
    for (title, lines) in [
        ("Problems", &assessment.problems),
        ("Warnings", &assessment.warnings),
        ("Skipped nodes", &skipped),
    ] {
        if !lines.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for line in lines {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    out.push('\n');
    out
}

/// Rows as left-aligned columns two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn ago(time: &Time, now: Timestamp) -> String {
    span(now.duration_since(time.0))
}

/// A duration in its largest whole unit: 45s, 12m, 5h, 364d.
fn span(duration: k8s_openapi::jiff::SignedDuration) -> String {
    let seconds = duration.as_secs().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{ClusterMeshSpec, ClusterStatus, SkippedNode, fixtures::cluster_entry};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn condition(type_: &str, status: bool, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: type_.into(),
            message: message.into(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: Some(1),
        }
    }

    fn mesh(conditions: Vec<Condition>, observed: Option<i64>) -> ClusterMesh {
        let mut mesh = ClusterMesh::new(
            "m",
            ClusterMeshSpec {
                clusters: vec![cluster_entry("a", 1, true), cluster_entry("b", 2, false)],
                ..Default::default()
            },
        );
        mesh.metadata.namespace = Some("kilo-system".into());
        mesh.metadata.generation = Some(2);
        let at = |s| Some(Time(Timestamp::from_second(s).unwrap()));
        mesh.status = Some(ClusterMeshStatus {
            observed_generation: observed,
            cluster_count: 2,
            registered_peers: 3,
            skipped_nodes: 1,
            clusters: vec![
                ClusterStatus {
                    name: "a".into(),
                    nodes: 1,
                    registered_peers: 1,
                    reachable: true,
                    anchor_node: Some("node-0".into()),
                    last_sync_time: at(1_000_000 - 300),
                    peer_writer: Some(PeerWriter::ThisOperator),
                    ..Default::default()
                },
                ClusterStatus {
                    name: "b".into(),
                    nodes: 3,
                    registered_peers: 2,
                    skipped_nodes: 1,
                    reachable: false,
                    stale_since: at(1_000_000 - 7200),
                    credentials_expire: at(1_000_000 + 3 * 86_400),
                    peer_writer: Some(PeerWriter::OwnOperator),
                    peered_back: Some(1),
                    skipped: vec![SkippedNode {
                        name: "node-9".into(),
                        reason: "InvalidPodCIDR".into(),
                        message: "fix it".into(),
                    }],
                    ..Default::default()
                },
            ],
            conditions,
        });
        mesh
    }

    #[test]
    fn the_verdict_follows_ready_problems_warnings_and_generation() {
        let ready = || condition("Ready", true, "");
        let skipped = condition("NodesSkipped", true, "1 node");
        let cases = [
            (vec![ready()], Some(2), Verdict::Ready, 0),
            (
                vec![skipped.clone(), ready()],
                Some(2),
                Verdict::ReadyWithWarnings,
                3,
            ),
            (
                vec![
                    condition("ClustersUnreachable", true, "b down"),
                    condition("Ready", false, "b down"),
                ],
                Some(2),
                Verdict::NotReady,
                1,
            ),
            (vec![ready()], Some(1), Verdict::NotReady, 1),
            (vec![], None, Verdict::NotReady, 1),
        ];
        for (conditions, observed, verdict, code) in cases {
            let assessment = assess(&mesh(conditions.clone(), observed));
            assert_eq!(assessment.verdict, verdict, "{conditions:?} {observed:?}");
            assert_eq!(assessment.verdict.exit_code(), ExitCode::from(code));
        }
        let stale = assess(&mesh(vec![ready()], Some(1)));
        assert!(stale.problems[0].contains("has not reconciled generation 2"));
    }

    #[test]
    fn the_text_report_shows_every_cluster_and_what_to_fix() {
        let mesh = mesh(
            vec![
                condition("ClustersUnreachable", true, "cluster b: unreachable"),
                condition("NodesSkipped", true, "1 nodes not peered"),
                condition("Ready", false, ""),
            ],
            Some(2),
        );
        let text = render(
            &mesh,
            &assess(&mesh),
            Timestamp::from_second(1_000_000).unwrap(),
        );
        let expected = "\
ClusterMesh kilo-system/m: NOT READY (2 clusters, 3 peers, 1 nodes skipped)
  CLUSTER    REACHABLE     NODES  PEERS  SKIPPED  ANCHOR  LAST SYNC  CREDENTIALS   PEERS WRITTEN BY
  a (local)  yes           1      1      0        node-0  5m ago     -             this operator
  b          no, stale 2h  3      2      1        -       -          expire in 3d  its own operator (peered back 1/1)
Problems:
  ClustersUnreachable: cluster b: unreachable
Warnings:
  NodesSkipped: 1 nodes not peered
Skipped nodes:
  b/node-9: InvalidPodCIDR: fix it

";
        assert_eq!(text, expected);
    }
}
