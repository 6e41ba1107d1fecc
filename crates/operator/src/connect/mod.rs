//! The `connect` command: gives a hub's operator least-privilege access to a
//! remote cluster and prints the ClusterMesh entry for it.
//!
//! What it does, in order, so that a refusal changes nothing:
//! 1. check: both clusters answer, the remote runs Kilo (has the Peer CRD),
//!    the server URL is one the operator can use, the hub Secret is not
//!    someone else's, and the caller may do every step below (`preflight`);
//! 2. on the remote: the ClusterRole `kilo-clustermesh-remote`, the operator's
//!    namespace and ServiceAccount, and the binding (server-side apply, so a
//!    second run changes nothing; `writes`);
//! 3. a token for that ServiceAccount from the TokenRequest API, wrapped in a
//!    kubeconfig holding only the token, the server URL and its CA, proven to
//!    list the remote's nodes and Peers;
//! 4. that kubeconfig as a Secret in the hub's namespace;
//! 5. the `spec.clusters[]` entry, with ranges read from the remote's nodes
//!    (`entry`).
//!
//! `side` holds the two clusters' clients and turns their errors into what
//! to do about them.
//!
//! Running it again mints a new token and replaces the Secret: that is how
//! credentials are rotated.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::{api::ObjectMeta, config::Kubeconfig};

use self::{
    entry::{entry, render_entry},
    preflight::preflight,
    side::Side,
    writes::{grant, mint_token, prove, token_kubeconfig, write_secret},
};

mod entry;
mod preflight;
mod side;
mod writes;

/// The ClusterRole a remote cluster grants the hub's operator.
pub const REMOTE_ROLE: &str = "kilo-clustermesh-remote";
/// The ClusterRole `connect --read-only` grants on the remote: read nodes
/// only, for a mesh with `peerPlacement: LocalCluster`.
pub const REMOTE_READER_ROLE: &str = "kilo-clustermesh-remote-reader";
/// The field manager of everything `connect` writes.
pub(super) const FIELD_MANAGER: &str = "kilo-clustermesh-connect";
/// Marks the hub Secrets `connect` wrote, which it may replace.
pub(super) const WRITTEN_BY: (&str, &str) = ("app.kubernetes.io/managed-by", FIELD_MANAGER);
/// Kilo's default `--subnet`: the same in every cluster that keeps it.
pub(super) const KILO_DEFAULT_SUBNET: &str = "10.4.0.0/16";
/// The shortest token the TokenRequest API issues.
const SHORTEST_TOKEN: Duration = Duration::from_secs(600);

/// Flags of `kilo-clustermesh-operator connect`.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The remote cluster's name in the ClusterMesh (`spec.clusters[].name`).
    #[arg(long)]
    pub name: String,

    /// Kubeconfig context of the remote cluster (an admin of it).
    #[arg(long)]
    pub remote_context: Option<String>,

    /// Kubeconfig file of the remote cluster, when it is not in --kubeconfig.
    #[arg(long)]
    pub remote_kubeconfig: Option<PathBuf>,

    /// Kubeconfig context of the hub, the cluster the operator runs in.
    /// Defaults to the current context.
    #[arg(long)]
    pub hub_context: Option<String>,

    /// Kubeconfig file; defaults to $KUBECONFIG, then ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Hub namespace of the ClusterMesh (and so of its Secrets).
    #[arg(long, default_value = "kilo-system")]
    pub namespace: String,

    /// Name of the hub Secret; defaults to `<name>-kubeconfig`.
    #[arg(long)]
    pub secret_name: Option<String>,

    /// Key of the kubeconfig in the hub Secret.
    #[arg(long, default_value = "kubeconfig")]
    pub secret_key: String,

    /// Namespace of the ServiceAccount on the remote.
    #[arg(long, default_value = "kilo-system")]
    pub service_account_namespace: String,

    /// ServiceAccount the operator authenticates as on the remote.
    #[arg(long, default_value = "kilo-clustermesh")]
    pub service_account: String,

    /// Lifetime of the token. The remote API server may cap it (its
    /// --service-account-max-token-expiration); the ClusterMesh status shows
    /// the real expiry. Run `connect` again before then.
    #[arg(long, default_value = "8760h", value_parser = humantime::parse_duration)]
    pub token_duration: Duration,

    /// The remote API server's URL as the hub's operator reaches it, when the
    /// remote kubeconfig's is not (a tunnel, a name only this machine
    /// resolves).
    #[arg(long)]
    pub server: Option<String>,

    /// Accept a loopback server URL (127.0.0.1, ::1, localhost). Right only
    /// when the operator runs on the remote API server's own host, as in
    /// tests; from a pod, loopback is the pod itself.
    #[arg(long, env = "KCM_ALLOW_LOOPBACK_SERVER")]
    pub allow_loopback_server: bool,

    /// Grant only what a mesh with `peerPlacement: LocalCluster` needs on
    /// the remote: reading its nodes (ClusterRole
    /// kilo-clustermesh-remote-reader). The hub then cannot change the
    /// remote's routes; the remote runs its own operator. Use a
    /// ServiceAccount of its own (--service-account), so that no earlier
    /// binding lends it more.
    #[arg(long)]
    pub read_only: bool,
}

impl ConnectArgs {
    /// The ClusterRole granted on the remote.
    pub fn role(&self) -> ClusterRole {
        match self.read_only {
            true => remote_reader_role(),
            false => remote_role(),
        }
    }
}

/// The rules of [`REMOTE_READER_ROLE`]: read nodes, and the `kube-system`
/// namespace (its uid identifies the cluster). Nothing else.
pub fn remote_reader_role() -> ClusterRole {
    let mut role = remote_role();
    role.metadata.name = Some(REMOTE_READER_ROLE.into());
    if let Some(rules) = role.rules.as_mut() {
        rules.retain(|rule| {
            let groups = rule.api_groups.as_deref().unwrap_or_default();
            !groups.iter().any(|group| group == "kilo.squat.ai")
        });
    }
    role
}

/// The rules of [`REMOTE_ROLE`]: read nodes, manage Peers, and read the
/// `kube-system` namespace (its uid identifies the cluster). Nothing else.
pub fn remote_role() -> ClusterRole {
    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    };
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(REMOTE_ROLE.into()),
            ..Default::default()
        },
        rules: Some(vec![
            rule("", "nodes", &["get", "list", "watch"]),
            PolicyRule {
                resource_names: Some(vec!["kube-system".into()]),
                ..rule("", "namespaces", &["get"])
            },
            rule(
                "kilo.squat.ai",
                "peers",
                &[
                    "get", "list", "watch", "create", "update", "patch", "delete",
                ],
            ),
        ]),
        ..Default::default()
    }
}

/// Runs `connect`: see the module documentation.
pub async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    if args.remote_context.is_none() && args.remote_kubeconfig.is_none() {
        bail!(
            "name the remote cluster with --remote-context (and --remote-kubeconfig if it is in another file)"
        );
    }
    if args.token_duration < SHORTEST_TOKEN {
        bail!("--token-duration must be at least 10m, the shortest token Kubernetes issues");
    }
    let secret_name = args
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-kubeconfig", args.name));

    let hub_kubeconfig = read_kubeconfig(args.kubeconfig.as_deref())?;
    let remote_kubeconfig = match &args.remote_kubeconfig {
        Some(path) => read_kubeconfig(Some(path))?,
        None => hub_kubeconfig.clone(),
    };
    let (hub, _) = Side::open("hub", &hub_kubeconfig, args.hub_context.as_deref()).await?;
    let (remote, endpoint) =
        Side::open("remote", &remote_kubeconfig, args.remote_context.as_deref()).await?;
    let server = args.server.clone().unwrap_or(endpoint.server.clone());
    check_server(&server, args.allow_loopback_server)?;
    if hub.server == remote.server {
        bail!(
            "the hub and the remote are the same API server ({}): the hub is the mesh's local \
             cluster and needs no Secret; pick the remote with --remote-context",
            hub.server
        );
    }

    // 1. Everything that could refuse, before anything is changed.
    let plan = preflight(&args, &hub, &remote, &secret_name).await?;

    // 2. The remote's side.
    eprintln!(
        "remote {}: granting ClusterRole {} to ServiceAccount {}/{}",
        remote.server,
        args.role().metadata.name.unwrap_or_default(),
        args.service_account_namespace,
        args.service_account
    );
    grant(&args, &remote, plan.create_namespace).await?;

    // 3. The token and the kubeconfig around it.
    let (token, expires) = mint_token(&args, &remote).await?;
    let yaml = token_kubeconfig(&args.name, &server, &endpoint, &token);
    prove(&yaml, &server, args.server.is_some(), args.read_only)
        .await
        .map_err(|e| {
            e.context(
                "the remote's ClusterRole, ServiceAccount and binding are in place; nothing was \
             written on the hub",
            )
        })?;

    // 4. The hub's Secret.
    write_secret(&args, &hub, &secret_name, &yaml, expires.as_deref())
        .await
        .map_err(|e| {
            e.context("the remote's access is in place; run connect again once the hub is fixed")
        })?;
    eprintln!(
        "hub {}: wrote Secret {}/{secret_name} (key {}), token expires {}",
        hub.server,
        args.namespace,
        args.secret_key,
        expires.as_deref().unwrap_or("never")
    );

    // 5. The entry to add.
    let (entry, mut notes) = entry(&args, &remote, &secret_name).await;
    if args.read_only {
        notes.push(
            "the token only reads nodes: the mesh needs spec.peerPlacement: LocalCluster, and this \
             cluster its own operator and ClusterMesh (docs/topologies.md)"
                .into(),
        );
    }
    print!("{}", render_entry(&args.namespace, &entry, &notes));
    Ok(())
}

fn read_kubeconfig(path: Option<&Path>) -> anyhow::Result<Kubeconfig> {
    match path {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("reading the kubeconfig {}", path.display())),
        None => Kubeconfig::read().context(
            "reading the kubeconfig ($KUBECONFIG or ~/.kube/config); or pass --kubeconfig",
        ),
    }
}

/// Refuses a server URL the operator could not use from the hub.
fn check_server(server: &str, allow_loopback: bool) -> anyhow::Result<()> {
    let url: http::Uri = server
        .parse()
        .map_err(|e| anyhow!("the remote server URL {server:?} is not a URL: {e}"))?;
    if url.scheme_str() != Some("https") {
        bail!("the remote server URL {server:?} is not https://; the operator only talks TLS");
    }
    let host = url.host().unwrap_or_default();
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let loopback = host.eq_ignore_ascii_case("localhost") || ip.is_some_and(|ip| ip.is_loopback());
    if loopback && !allow_loopback {
        bail!(
            "the remote server URL {server} is loopback: from the hub's operator pod that is the \
             pod itself. Pass --server with the address the hub reaches the remote API server on \
             (or --allow-loopback-server when the operator runs on the remote API server's host)"
        );
    }
    if ip.is_some_and(|ip| ip.is_unspecified()) {
        bail!("the remote server URL {server} is an unspecified address; pass --server");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_plain_http_servers_are_refused() {
        for server in [
            "https://127.0.0.1:6443",
            "https://127.3.4.5",
            "https://localhost:6443",
            "https://[::1]:6443",
        ] {
            let err = check_server(server, false).unwrap_err().to_string();
            assert!(
                err.contains("loopback") && err.contains("--server"),
                "{err}"
            );
            assert!(check_server(server, true).is_ok());
        }
        assert!(check_server("http://10.0.0.1:6443", true).is_err());
        assert!(check_server("https://0.0.0.0:6443", true).is_err());
        assert!(check_server("not a url", true).is_err());
        assert!(check_server("https://api.b.example:6443", false).is_ok());
        assert!(check_server("https://[fd00::1]:6443", false).is_ok());
    }
}
