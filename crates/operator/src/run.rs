//! The `run` command: flags, logging, leader election, and the controller.

use std::{net::SocketAddr, num::NonZeroU32, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{
    client,
    controller::{self, Settings},
    kubeconfig::KubeconfigPolicy,
    leader::{self, Fence, LeaseSettings},
    metrics::{self, Metrics, Readiness},
    rate_limit::Limits,
    resolver::Lookup,
};

/// Flags of `kilo-clustermesh-operator run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Watch ClusterMesh resources (and their Secrets) in this namespace only.
    /// All namespaces when unset.
    #[arg(long, env = "KCM_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", env = "KCM_METRICS_ADDRESS")]
    pub metrics_address: SocketAddr,

    /// Elect a leader through a Lease so that only one replica writes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "KCM_LEADER_ELECTION")]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease; the pod's own namespace in a
    /// cluster (POD_NAMESPACE), else `default`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, default_value = "kilo-clustermesh-operator")]
    pub leader_election_lease: String,

    /// How long the Lease holds without a renewal: a standby takes over this
    /// long after the leader stops (renewals come every two thirds of it).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// persistentKeepalive (seconds) of Peers whose node has no
    /// `kilo.squat.ai/persistent-keepalive` annotation; 0 disables it.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(i32).range(0..=65535))]
    pub default_persistent_keepalive: i32,

    /// Also route each node's internal IP (kilo.squat.ai/internal-ip) through
    /// its Peer, when it lies inside the cluster's additionalCIDRs.
    #[arg(long)]
    pub advertise_internal_ips: bool,

    /// Accept kubeconfigs that run exec or auth-provider credential plugins.
    #[arg(long)]
    pub allow_kubeconfig_exec: bool,

    /// Accept kubeconfigs that point to files in the operator's pod.
    #[arg(long)]
    pub allow_kubeconfig_files: bool,

    /// Accept kubeconfigs with insecure-skip-tls-verify.
    #[arg(long)]
    pub allow_insecure_kubeconfig: bool,

    /// Requests per second each cluster's client may send (as client-go's
    /// QPS). 200 lets a large mesh converge as fast as its API servers write
    /// (docs/performance.md#client-limits).
    #[arg(long, default_value = "200")]
    pub kube_api_qps: NonZeroU32,

    /// Requests a client may send at once above the QPS (as client-go's burst).
    #[arg(long, default_value = "400")]
    pub kube_api_burst: NonZeroU32,

    /// Peer writes in flight at once per cluster.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub write_concurrency: u16,

    /// How long the deletion of a ClusterMesh may wait for an unreachable
    /// cluster before its Peers there are given up (with a Warning Event).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub cleanup_timeout: Duration,

    /// Set the CredentialsExpiring condition (and a Warning Event) this long
    /// before a cluster's ServiceAccount token expires.
    #[arg(long, default_value = "14d", value_parser = humantime::parse_duration)]
    pub credentials_expiry_warning: Duration,

    /// Kilo counts a node as gone 60 s after its agent last checked in
    /// (`kilo.squat.ai/last-seen`); the operator takes it out of the other
    /// clusters' Peers this much later, and back in when it checks in.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub node_check_in_grace: Duration,

    /// What the Peers of a node whose endpoint is a DNS name carry: the
    /// address the operator resolves (again every 30 s), or the name, for
    /// Kilo on each cluster to resolve.
    #[arg(long, value_enum, default_value_t = EndpointDns::Resolve)]
    pub endpoint_dns: EndpointDns,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "KCM_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// `--endpoint-dns`: see [`mesh::EndpointDns`].
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointDns {
    /// Peers carry the address the operator resolved: one name that stops
    /// resolving costs only its node.
    Resolve,
    /// Peers carry the name: kg resolves it on each cluster, and one name it
    /// cannot resolve stops its whole configuration there.
    Keep,
}

/// How logs are written to stderr.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let limits = Limits {
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
    };
    let config = kube::Config::infer()
        .await
        .context("finding the local cluster (in-cluster config or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());
    let client = client::build(config, limits, &metrics.kube_requests, "local")
        .context("building the local cluster's client")?;
    let readiness = Readiness::default();

    let listener = tokio::net::TcpListener::bind(args.metrics_address)
        .await
        .with_context(|| format!("binding the metrics address {}", args.metrics_address))?;
    let router = metrics::router(metrics.clone(), readiness.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });

    let settings = Settings {
        namespace: args.namespace.clone(),
        default_persistent_keepalive: args.default_persistent_keepalive,
        advertise_internal_ips: args.advertise_internal_ips,
        kubeconfig_policy: KubeconfigPolicy {
            allow_exec: args.allow_kubeconfig_exec,
            allow_files: args.allow_kubeconfig_files,
            allow_insecure_tls: args.allow_insecure_kubeconfig,
        },
        write_concurrency: usize::from(args.write_concurrency),
        limits,
        cleanup_timeout: args.cleanup_timeout,
        credentials_expiry_warning: args.credentials_expiry_warning,
        check_in_grace: args.node_check_in_grace,
        endpoint_dns: match args.endpoint_dns {
            EndpointDns::Resolve => mesh::EndpointDns::Resolve,
            EndpointDns::Keep => mesh::EndpointDns::Keep,
        },
        lookup: Lookup::system(),
    };
    if !args.leader_election {
        return controller::run(client, settings, Fence::open(), metrics, readiness).await;
    }
    // A replica waiting for the Lease is ready to take over. Were it not
    // Ready, a rolling update (the chart's Deployment) would wait for the new
    // pod while the old one holds the Lease, for ever.
    readiness.set_ready();
    let lease = LeaseSettings {
        namespace: args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        name: args.leader_election_lease.clone(),
        identity: client::identity(),
        duration: args.leader_election_lease_duration,
    };
    leader::while_leader(client.clone(), lease, |fence| {
        controller::run(client, settings, fence, metrics, readiness)
    })
    .await
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt::layer()).init(),
        LogFormat::Json => registry.with(fmt::layer().json()).init(),
    }
}
