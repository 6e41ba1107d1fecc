//! `kilo-clustermesh-operator`: the one binary of the project.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kilo_clustermesh_operator::{crd, run};

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
    /// Print the ClusterMesh CustomResourceDefinition as YAML.
    ///
    /// The chart ships the same file: `kubectl apply -f` either one.
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run::run(args).await,
        Command::Crd => {
            let yaml = crd::clustermesh_crd_yaml()?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("writing the CRD to stdout")
        }
    }
}
