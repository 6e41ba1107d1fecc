//! `kcm-netlab`: the lab's demo and the programs it runs inside its
//! namespaces (the node agent, the API forwarder, the echo server).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use kilo_clustermesh_netlab::{agent, echo, forward, mesh};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Three clusters meshed by the operator, packets across them, kept up
    /// until Ctrl-C or DEMO_SECONDS (`make demo`).
    Demo {
        /// Keep the lab up this long after the checks (default: until Ctrl-C).
        #[arg(long, env = "DEMO_SECONDS")]
        seconds: Option<u64>,
    },
    /// The Kilo-compatible node agent (runs inside a node's namespaces).
    Agent(agent::Args),
    /// Forward connections from `--listen` to `--to` (`host:port` or `unix:/path`).
    Forward {
        #[arg(long)]
        listen: forward::Address,
        #[arg(long)]
        to: forward::Address,
    },
    /// Answer every TCP connection with one line.
    Serve {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        reply: String,
    },
    /// Print the line a TCP server answers (a service probe from a pod).
    Fetch {
        address: String,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { seconds } => {
            mesh::demo(tool_path(), seconds.map(Duration::from_secs)).await
        }
        Command::Agent(args) => agent::run(args).await,
        Command::Forward { listen, to } => forward::forward(listen, to).await,
        Command::Serve { listen, reply } => echo::serve(&listen, &reply).await,
        Command::Fetch { address, timeout } => echo::fetch(&address, timeout)
            .await
            .map(|reply| println!("{reply}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// This binary: the lab runs it inside its namespaces.
fn tool_path() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kcm-netlab"))
}
