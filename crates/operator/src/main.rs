//! `kilo-clustermesh-operator`: the one binary of the project.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Joins two or more Kubernetes clusters into one Kilo WireGuard mesh.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ClusterMesh CustomResourceDefinition as YAML.
    ///
    /// The chart ships the same file: `kubectl apply -f` either one.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            let yaml = kilo_clustermesh_operator::crd::clustermesh_crd_yaml()?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("writing the CRD to stdout")?;
        }
    }
    Ok(())
}
