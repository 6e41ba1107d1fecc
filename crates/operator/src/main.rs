//! `kilo-clustermesh-operator`: the one binary of the project.

use std::{io::Write, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use kilo_clustermesh_operator::{connect, crd, run, status};

/// Joins two or more Kubernetes clusters into one Kilo WireGuard mesh.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: watch ClusterMesh resources and keep every
    /// cluster's Kilo Peers in step with the other clusters' nodes.
    Run(run::RunArgs),
    /// Give the hub's operator least-privilege access to a remote cluster:
    /// a ServiceAccount token there, stored as a kubeconfig Secret on the
    /// hub. Prints the ClusterMesh entry to add. Run it again to rotate the
    /// token.
    Connect(connect::ConnectArgs),
    /// Show the health of a mesh: per cluster reachability, nodes, Peers,
    /// skipped nodes, anchor and token expiry, then problems and warnings.
    ///
    /// Exit code: 0 Ready, 1 not Ready, 2 the status could not be read,
    /// 3 Ready with warnings.
    Status(status::StatusArgs),
    /// Print the ClusterMesh CustomResourceDefinition as YAML.
    ///
    /// The chart ships the same file: `kubectl apply -f` either one.
    Crd,
}

#[tokio::main]
async fn main() -> ExitCode {
    let (outcome, failed) = match Cli::parse().command {
        Command::Run(args) => (run::run(args).await.map(|()| ExitCode::SUCCESS), 1),
        Command::Connect(args) => (connect::connect(args).await.map(|()| ExitCode::SUCCESS), 1),
        Command::Status(args) => (status::status(args).await, 2),
        Command::Crd => (print_crd().map(|()| ExitCode::SUCCESS), 1),
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        for cause in error.chain().skip(1) {
            eprintln!("  because: {cause}");
        }
        ExitCode::from(failed)
    })
}

fn print_crd() -> anyhow::Result<()> {
    let yaml = crd::clustermesh_crd_yaml()?;
    std::io::stdout()
        .write_all(yaml.as_bytes())
        .context("writing the CRD to stdout")
}
