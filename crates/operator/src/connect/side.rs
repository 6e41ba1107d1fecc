//! One side of the connection, the hub or the remote: its client, and what
//! to tell the user when a request to it fails.

use anyhow::{Context as _, anyhow, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::kubeconfig;

/// One side of the connection: a client and where it came from.
pub(super) struct Side {
    pub what: &'static str,
    pub context: String,
    pub server: String,
    pub client: Client,
}

impl Side {
    /// Reads a context from a kubeconfig and builds its client.
    pub async fn open(
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
    pub fn explain(&self, doing: &str, error: kube::Error) -> anyhow::Error {
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
pub(super) fn with_causes(error: &dyn std::error::Error) -> String {
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
pub(super) struct Endpoint {
    pub server: String,
    pub ca_data: Option<String>,
    pub tls_server_name: Option<String>,
}

impl Endpoint {
    pub fn of(cluster: &kube::config::Cluster) -> anyhow::Result<Self> {
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
