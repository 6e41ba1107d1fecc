//! The `connect` command: gives a hub's operator least-privilege access to a
//! remote cluster and prints the ClusterMesh entry for it.
//!
//! What it does, in order, so that a refusal changes nothing:
//! 1. check: both clusters answer, the remote runs Kilo (has the Peer CRD),
//!    the server URL is one the operator can use, the hub Secret is not
//!    someone else's, and the caller may do every step below;
//! 2. on the remote: the ClusterRole `kilo-clustermesh-remote`, the operator's
//!    namespace and ServiceAccount, and the binding (server-side apply, so a
//!    second run changes nothing);
//! 3. a token for that ServiceAccount from the TokenRequest API, wrapped in a
//!    kubeconfig holding only the token, the server URL and its CA, proven to
//!    list the remote's nodes and Peers;
//! 4. that kubeconfig as a Secret in the hub's namespace;
//! 5. the `spec.clusters[]` entry, with ranges read from the remote's nodes.
//!
//! Running it again mints a new token and replaces the Secret: that is how
//! credentials are rotated.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use api::{ClusterEntry, Peer, SecretKeyRef};
use base64::{Engine, engine::general_purpose::STANDARD};
use clap::Args;
use ipnet::IpNet;
use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        },
        core::v1::{Namespace, Node, Secret, Service, ServiceAccount},
        networking::v1::ServiceCIDR,
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::kubeconfig::{self, KubeconfigPolicy};

/// The ClusterRole a remote cluster grants the hub's operator.
pub const REMOTE_ROLE: &str = "kilo-clustermesh-remote";
/// The field manager of everything `connect` writes.
const FIELD_MANAGER: &str = "kilo-clustermesh-connect";
/// Marks the hub Secrets `connect` wrote, which it may replace.
const WRITTEN_BY: (&str, &str) = ("app.kubernetes.io/managed-by", FIELD_MANAGER);
/// Kilo's default `--subnet`: the same in every cluster that keeps it.
const KILO_DEFAULT_SUBNET: &str = "10.4.0.0/16";
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
}

/// The rules of [`REMOTE_ROLE`]: read nodes, manage Peers. Nothing else.
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

/// One side of the connection: a client and where it came from.
struct Side {
    what: &'static str,
    context: String,
    server: String,
    client: Client,
}

impl Side {
    /// Reads a context from a kubeconfig and builds its client.
    async fn open(
        what: &'static str,
        kubeconfig: &Kubeconfig,
        context: Option<&str>,
    ) -> anyhow::Result<(Self, Endpoint)> {
        let ((_, cluster), _) = kubeconfig::selected(kubeconfig, context)
            .with_context(|| format!("the {what}'s kubeconfig"))?;
        let endpoint = Endpoint::of(cluster)?;
        let context = context
            .map(str::to_owned)
            .or(kubeconfig.current_context.clone())
            .unwrap_or_default();
        let options = KubeConfigOptions {
            context: Some(context.clone()).filter(|c| !c.is_empty()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
            .await
            .with_context(|| format!("the {what}'s kubeconfig (context {context:?})"))?;
        let client = Client::try_from(config)
            .with_context(|| format!("a client for the {what} (context {context:?})"))?;
        Ok((
            Self {
                what,
                context,
                server: endpoint.server.clone(),
                client,
            },
            endpoint,
        ))
    }

    /// Says what went wrong with a request to this side, and what to check.
    fn explain(&self, doing: &str, error: kube::Error) -> anyhow::Error {
        let (what, context, server) = (self.what, &self.context, &self.server);
        match error {
            kube::Error::Api(status) if status.code == 401 => anyhow!(
                "{doing}: the {what} ({server}) refuses the credentials of context {context:?}; log in again"
            ),
            kube::Error::Api(status) if status.code == 403 => anyhow!(
                "{doing}: the {what}'s context {context:?} is not allowed to: {}",
                status.message
            ),
            kube::Error::Api(status) if status.code == 409 => anyhow!(
                "{doing}: on the {what}, {}; align or delete that object, then run connect again",
                status.message
            ),
            kube::Error::Api(status) => anyhow!("{doing}: the {what} answered: {}", status.message),
            other => anyhow!(
                "{doing}: cannot reach the {what} at {server} (context {context:?}): {}",
                with_causes(&other)
            ),
        }
    }
}

/// An error and its causes on one line: a connection error's own message
/// ("client error (Connect)") does not say what failed.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// A server URL and the CA to trust it with, as a kubeconfig gives them.
struct Endpoint {
    server: String,
    ca_data: Option<String>,
    tls_server_name: Option<String>,
}

impl Endpoint {
    fn of(cluster: &kube::config::Cluster) -> anyhow::Result<Self> {
        let server = cluster.server.clone().unwrap_or_default();
        let ca_data = match (
            &cluster.certificate_authority_data,
            &cluster.certificate_authority,
        ) {
            (Some(data), _) if !data.is_empty() => Some(data.clone()),
            (_, Some(path)) if !path.is_empty() => Some(
                std::fs::read(path)
                    .map(|pem| STANDARD.encode(pem))
                    .with_context(|| format!("reading the CA file {path}"))?,
            ),
            _ => None,
        };
        if ca_data.is_none() && cluster.insecure_skip_tls_verify == Some(true) {
            bail!(
                "the remote context skips TLS verification and names no CA; the operator \
                 verifies the server, so use a context with certificate-authority(-data)"
            );
        }
        Ok(Self {
            server,
            ca_data,
            tls_server_name: cluster.tls_server_name.clone(),
        })
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
        "remote {}: granting ClusterRole {REMOTE_ROLE} to ServiceAccount {}/{}",
        remote.server, args.service_account_namespace, args.service_account
    );
    grant(&args, &remote, plan.create_namespace).await?;

    // 3. The token and the kubeconfig around it.
    let (token, expires) = mint_token(&args, &remote).await?;
    let yaml = token_kubeconfig(&args.name, &server, &endpoint, &token);
    prove(&yaml, &server, args.server.is_some())
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
    let (entry, notes) = entry(&args, &remote, &secret_name).await;
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

/// What the checks found that the writes need to know.
struct Preflight {
    create_namespace: bool,
}

async fn preflight(
    args: &ConnectArgs,
    hub: &Side,
    remote: &Side,
    secret_name: &str,
) -> anyhow::Result<Preflight> {
    Api::<Peer>::all(remote.client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(|e| match e {
            kube::Error::Api(status) if status.code == 404 => anyhow!(
                "the remote has no Kilo Peer CRD (peers.kilo.squat.ai): install Kilo there first"
            ),
            other => remote.explain("listing the remote's Peers", other),
        })?;
    let namespaces = Api::<Namespace>::all(hub.client.clone());
    if let Err(kube::Error::Api(status)) = namespaces.get_metadata(&args.namespace).await
        && status.code == 404
    {
        bail!(
            "namespace {} does not exist on the hub: install the operator there first \
             (docs/install.md), or pass --namespace",
            args.namespace
        );
    }
    let secrets = Api::<Secret>::namespaced(hub.client.clone(), &args.namespace);
    match secrets.get_metadata_opt(secret_name).await {
        Ok(Some(existing)) if !written_by_connect(&existing.metadata) => bail!(
            "Secret {}/{secret_name} exists on the hub and was not written by connect; \
             delete it, or pass --secret-name",
            args.namespace
        ),
        Ok(_) => {}
        Err(error) => return Err(hub.explain("reading the hub's Secrets", error)),
    }
    let create_namespace = matches!(
        Api::<Namespace>::all(remote.client.clone())
            .get_metadata(&args.service_account_namespace)
            .await,
        Err(kube::Error::Api(status)) if status.code == 404
    );

    let ns = args.service_account_namespace.as_str();
    let mut needed = vec![
        (
            remote,
            Access::cluster("rbac.authorization.k8s.io", "clusterroles"),
        ),
        (
            remote,
            Access::cluster("rbac.authorization.k8s.io", "clusterrolebindings"),
        ),
        (remote, Access::namespaced("", "serviceaccounts", ns)),
        (
            remote,
            Access {
                verbs: &["create"],
                subresource: Some("token"),
                ..Access::namespaced("", "serviceaccounts", ns)
            },
        ),
        (hub, Access::namespaced("", "secrets", &args.namespace)),
    ];
    if create_namespace {
        needed.push((remote, Access::cluster("", "namespaces")));
    }
    let mut missing = Vec::new();
    for (side, access) in &needed {
        for verb in access.verbs {
            if !allowed(side, access, verb).await? {
                missing.push(format!(
                    "{verb} {}{} on the {} (context {:?})",
                    access.describe(),
                    access
                        .namespace
                        .map(|ns| format!(" in namespace {ns}"))
                        .unwrap_or_default(),
                    side.what,
                    side.context
                ));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "nothing was changed: connect needs permissions the given contexts lack:\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(Preflight { create_namespace })
}

/// Access to a kind of object that a step needs.
struct Access<'a> {
    group: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    namespace: Option<&'a str>,
    verbs: &'static [&'static str],
}

impl<'a> Access<'a> {
    /// Create and server-side apply (which is a patch) of cluster objects.
    fn cluster(group: &'static str, resource: &'static str) -> Self {
        Self {
            group,
            resource,
            subresource: None,
            namespace: None,
            verbs: &["create", "patch"],
        }
    }

    fn namespaced(group: &'static str, resource: &'static str, namespace: &'a str) -> Self {
        Self {
            namespace: Some(namespace),
            verbs: &["get", "create", "patch"],
            ..Self::cluster(group, resource)
        }
    }

    fn describe(&self) -> String {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        match self.subresource {
            Some(sub) => format!("{}{group}/{sub}", self.resource),
            None => format!("{}{group}", self.resource),
        }
    }
}

async fn allowed(side: &Side, access: &Access<'_>, verb: &str) -> anyhow::Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(access.group.to_owned()),
                resource: Some(access.resource.to_owned()),
                subresource: access.subresource.map(str::to_owned),
                namespace: access.namespace.map(str::to_owned),
                verb: Some(verb.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(side.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| side.explain("asking what the context may do", e))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

fn written_by_connect(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(WRITTEN_BY.0))
        .is_some_and(|v| v == WRITTEN_BY.1)
}

/// Server-side applies `object` as the connect field manager.
async fn apply<K>(side: &Side, api: Api<K>, object: &K) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize + serde::de::DeserializeOwned,
    K: std::fmt::Debug,
{
    let name = object.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(object),
    )
    .await
    .map_err(|e| side.explain(&format!("applying {} {name}", K::kind(&())), e))?;
    Ok(())
}

/// The remote's ClusterRole, namespace, ServiceAccount and binding. The
/// ClusterRole goes first: if the caller may not grant its rules, nothing
/// else is written.
async fn grant(args: &ConnectArgs, remote: &Side, create_namespace: bool) -> anyhow::Result<()> {
    let client = &remote.client;
    let ns = args.service_account_namespace.as_str();
    // No labels: the chart's remote mode makes the same objects with its own,
    // and two owners agree only on identical fields.
    apply(remote, Api::all(client.clone()), &remote_role()).await?;
    if create_namespace {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        apply(remote, Api::all(client.clone()), &namespace).await?;
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(args.service_account.clone()),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    apply(remote, Api::namespaced(client.clone(), ns), &account).await?;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(REMOTE_ROLE.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: REMOTE_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: args.service_account.clone(),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        }]),
    };
    apply(remote, Api::all(client.clone()), &binding).await
}

/// A new token for the ServiceAccount, and when it expires (RFC 3339).
async fn mint_token(args: &ConnectArgs, remote: &Side) -> anyhow::Result<(String, Option<String>)> {
    let seconds = i64::try_from(args.token_duration.as_secs()).unwrap_or(i64::MAX);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(seconds),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued =
        Api::<ServiceAccount>::namespaced(remote.client.clone(), &args.service_account_namespace)
            .create_token_request(&args.service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| remote.explain("requesting a ServiceAccount token", e))?;
    let status = issued
        .status
        .ok_or_else(|| anyhow!("the remote issued no token (empty TokenRequest status)"))?;
    let expires = status.expiration_timestamp.0;
    let asked =
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(seconds);
    if expires.as_second() + 60 < asked.as_second() {
        eprintln!(
            "note: the remote API server caps tokens; this one expires {expires} \
             (its --service-account-max-token-expiration). Run connect again before then."
        );
    }
    Ok((status.token, Some(expires.to_string())))
}

/// A kubeconfig holding only the token, the server URL and its CA.
fn token_kubeconfig(name: &str, server: &str, endpoint: &Endpoint, token: &str) -> String {
    let mut cluster = serde_json::json!({ "server": server });
    if let Some(ca) = &endpoint.ca_data {
        cluster["certificate-authority-data"] = ca.clone().into();
    }
    if let Some(tls_name) = &endpoint.tls_server_name {
        cluster["tls-server-name"] = tls_name.clone().into();
    }
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": name, "cluster": cluster }],
        "users": [{ "name": "kilo-clustermesh", "user": { "token": token } }],
        "contexts": [{ "name": name, "context": { "cluster": name, "user": "kilo-clustermesh" } }],
        "current-context": name,
    });
    // A JSON value of strings always serializes to YAML.
    serde_yaml::to_string(&config).unwrap_or_default()
}

/// Shows that the operator will accept the kubeconfig and that its token may
/// list what the operator watches. A server given with --server may not be
/// reachable from here; then that part is only warned about.
async fn prove(yaml: &str, server: &str, server_given: bool) -> anyhow::Result<()> {
    let config = kubeconfig::client_config(yaml, KubeconfigPolicy::default())
        .await
        .context("the kubeconfig built for the operator")?;
    let client = Client::try_from(config).context("a client for the new kubeconfig")?;
    let first = ListParams::default().limit(1);
    let checks = async {
        Api::<Node>::all(client.clone())
            .list_metadata(&first)
            .await?;
        Api::<Peer>::all(client.clone())
            .list_metadata(&first)
            .await?;
        Ok::<_, kube::Error>(())
    };
    match checks.await {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) => Err(anyhow!(
            "the new token cannot list nodes and Peers on {server}: {}",
            status.message
        )),
        Err(error) if server_given => {
            eprintln!(
                "note: {server} does not answer from here ({}); make sure the hub's operator can reach it",
                with_causes(&error)
            );
            Ok(())
        }
        Err(error) => Err(anyhow!(
            "the new kubeconfig cannot reach {server}: {}",
            with_causes(&error)
        )),
    }
}

async fn write_secret(
    args: &ConnectArgs,
    hub: &Side,
    name: &str,
    kubeconfig: &str,
    expires: Option<&str>,
) -> anyhow::Result<()> {
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(
        "kilo-clustermesh.io/cluster-name".to_owned(),
        args.name.clone(),
    );
    if let Some(expires) = expires {
        annotations.insert(
            "kilo-clustermesh.io/token-expires".to_owned(),
            expires.to_owned(),
        );
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(args.namespace.clone()),
            labels: Some([(WRITTEN_BY.0.into(), WRITTEN_BY.1.into())].into()),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [(
                args.secret_key.clone(),
                ByteString(kubeconfig.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    apply(
        hub,
        Api::namespaced(hub.client.clone(), &args.namespace),
        &secret,
    )
    .await
}

/// The `spec.clusters[]` entry for the remote, with its ranges read from its
/// nodes where they show, and notes on what to check.
async fn entry(
    args: &ConnectArgs,
    remote: &Side,
    secret_name: &str,
) -> (ClusterEntry, Vec<String>) {
    let mut notes = Vec::new();
    let nodes = match Api::<Node>::all(remote.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            notes.push(format!(
                "could not list the remote's nodes ({error}); fill in the ranges"
            ));
            Vec::new()
        }
    };
    let pod_cidrs = ranges(&nodes, |node| {
        node.spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.clone())
            .unwrap_or_default()
    });
    let wireguard = ranges(&nodes, |node| {
        node.annotations()
            .get(mesh::annotation::WIREGUARD_IP)
            .cloned()
            .into_iter()
            .collect()
    });
    let pod_cidrs = if pod_cidrs.is_empty() {
        notes.push(
            "no node has spec.podCIDRs: set podCIDRs to the cluster's pod range (--cluster-cidr)"
                .into(),
        );
        vec!["<pod CIDR>".to_owned()]
    } else {
        notes.push(format!(
            "podCIDRs is the smallest range holding the nodes' podCIDRs; if the cluster's \
             --cluster-cidr is wider, use it, or nodes added outside {} are skipped",
            pod_cidrs.join(", ")
        ));
        pod_cidrs
    };
    let wireguard_cidr = match wireguard.as_slice() {
        [] => {
            notes.push(format!(
                "no node has kilo.squat.ai/wireguard-ip: is Kilo running there? Set \
                 wireguardCIDR to its --subnet (Kilo's default {KILO_DEFAULT_SUBNET} collides \
                 across clusters)"
            ));
            "<Kilo --subnet>".to_owned()
        }
        [only] => {
            if only == KILO_DEFAULT_SUBNET {
                notes.push(format!(
                    "wireguardCIDR is Kilo's default {KILO_DEFAULT_SUBNET}, the same in every \
                     cluster that keeps it: give each cluster its own --subnet (docs/cidr-planning.md)"
                ));
            }
            only.clone()
        }
        several => {
            notes.push(format!(
                "the nodes' WireGuard IPs span {}; set wireguardCIDR to Kilo's --subnet",
                several.join(", ")
            ));
            several[0].clone()
        }
    };
    let service_cidr = service_cidr(&remote.client, &mut notes).await;
    let entry = ClusterEntry {
        name: args.name.clone(),
        local: false,
        kubeconfig_secret_ref: Some(SecretKeyRef {
            name: secret_name.to_owned(),
            key: args.secret_key.clone(),
        }),
        pod_cidrs,
        wireguard_cidr,
        service_cidr,
        additional_cidrs: Vec::new(),
    };
    (entry, notes)
}

/// The covering ranges, per address family, of what `pick` reads from each
/// node.
fn ranges(nodes: &[Node], pick: impl Fn(&Node) -> Vec<String>) -> Vec<String> {
    let nets = nodes
        .iter()
        .flat_map(&pick)
        .filter_map(|s| s.parse::<IpNet>().ok());
    mesh::covering(nets)
        .into_iter()
        .map(|n| n.to_string())
        .collect()
}

/// The service range: from the ServiceCIDR objects (Kubernetes 1.33+), else
/// only a hint from the `kubernetes` Service's address.
async fn service_cidr(client: &Client, notes: &mut Vec<String>) -> Option<String> {
    if let Ok(list) = Api::<ServiceCIDR>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        let cidrs: BTreeSet<String> = list
            .items
            .iter()
            .filter_map(|s| s.spec.as_ref())
            .flat_map(|s| s.cidrs.clone().unwrap_or_default())
            .collect();
        if let Some(first) = cidrs.first() {
            if cidrs.len() > 1 {
                notes.push(format!(
                    "the remote has several service ranges ({}); the first is routed, add the \
                     others to additionalCIDRs",
                    cidrs.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            return Some(first.clone());
        }
    }
    let address = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .ok()
        .and_then(|s| s.spec)
        .and_then(|s| s.cluster_ip);
    notes.push(match address {
        Some(ip) => format!(
            "serviceCIDR left out: set it to the remote's --service-cluster-ip-range (it holds {ip})"
        ),
        None => "serviceCIDR left out: set it to the remote's --service-cluster-ip-range".into(),
    });
    None
}

/// The entry as YAML to paste under `spec.clusters`, with the notes as
/// comments.
fn render_entry(namespace: &str, entry: &ClusterEntry, notes: &[String]) -> String {
    let mut out =
        format!("# Add this entry to spec.clusters of the ClusterMesh in namespace {namespace}.\n");
    for note in notes {
        out.push_str(&format!("# - {note}\n"));
    }
    // A plain struct of strings always serializes.
    out.push_str(&serde_yaml::to_string(&[entry]).unwrap_or_default());
    out
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

    #[test]
    fn the_kubeconfig_holds_only_the_token_server_and_ca() {
        let endpoint = Endpoint {
            server: "https://10.0.0.1:6443".into(),
            ca_data: Some("Q0E=".into()),
            tls_server_name: None,
        };
        let yaml = token_kubeconfig("b", "https://b.example:6443", &endpoint, "tok");
        let parsed = Kubeconfig::from_yaml(&yaml).unwrap();
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://b.example:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.client_certificate_data.is_none() && user.exec.is_none());
        assert_eq!(kubeconfig::bearer_token(&yaml).as_deref(), Some("tok"));
    }

    #[test]
    fn the_entry_is_yaml_for_spec_clusters_with_notes_as_comments() {
        let entry = ClusterEntry {
            name: "b".into(),
            kubeconfig_secret_ref: Some(SecretKeyRef {
                name: "b-kubeconfig".into(),
                key: "kubeconfig".into(),
            }),
            pod_cidrs: vec!["10.2.0.0/16".into()],
            wireguard_cidr: "10.102.0.0/24".into(),
            ..Default::default()
        };
        let text = render_entry("kilo-system", &entry, &["check this".into()]);
        assert!(text.contains("# - check this\n"), "{text}");
        let parsed: Vec<ClusterEntry> = serde_yaml::from_str(&text).unwrap();
        assert_eq!(parsed, vec![entry]);
    }
}
