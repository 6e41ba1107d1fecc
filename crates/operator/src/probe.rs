//! The health probe of every cluster: two cheap authenticated reads (one
//! Node, one Peer), bounded in time, every few seconds. Watches alone cannot
//! tell a frozen API server (connections open, no answers) or a revoked
//! token (old watches keep streaming) from a quiet cluster. On a cluster
//! whose Peers are not watched, the probe also takes a census of the Peers
//! kilo-clustermesh-operators wrote there, now and then, where the token
//! may list them: whether that cluster's own operator peered us back.

use std::{sync::Arc, time::Duration};

use api::{Peer, PeerSpec};
use k8s_openapi::{
    api::core::v1::{Namespace, Node},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, Client, api::ListParams};
use mesh::ObservedPeer;

/// How often each cluster is probed.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How long one probe may take.
pub const TIMEOUT: Duration = Duration::from_secs(4);
/// Failed probes in a row before a cluster counts as unreachable; a rejected
/// token, missing permissions or a missing Peer CRD count at once. With the
/// interval and timeout above, a frozen API server is reported within 14 s.
pub const FAILURES_BEFORE_UNREACHABLE: u32 = 2;

/// Why a probe failed, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeFailure {
    TimedOut,
    /// No connection: refused, reset, or no route.
    Unreachable(String),
    /// 401: the token was revoked or has expired.
    TokenRejected,
    /// 403 on `resource`.
    Forbidden {
        resource: &'static str,
    },
    /// 404 on Peers: no Peer CRD.
    KiloNotInstalled,
    /// Any other answer.
    Failed(String),
}

impl ProbeFailure {
    /// Whether one failure is enough to tell: the answer will not change
    /// by itself.
    pub fn is_definite(&self) -> bool {
        matches!(
            self,
            Self::TokenRejected | Self::Forbidden { .. } | Self::KiloNotInstalled
        )
    }

    /// Whether the cluster's credentials are at fault (`CredentialsInvalid`).
    pub fn is_credentials(&self) -> bool {
        matches!(self, Self::TokenRejected | Self::Forbidden { .. })
    }

    pub fn message(&self) -> String {
        match self {
            Self::TimedOut => format!(
                "the API server did not answer within {} s (partitioned, frozen or overloaded)",
                TIMEOUT.as_secs()
            ),
            Self::Unreachable(why) => format!("cannot connect to the API server: {why}"),
            Self::TokenRejected => {
                "the API server rejected the token (401): it was revoked or has \
                 expired; run `kilo-clustermesh-operator connect` again to mint a new one"
                    .to_owned()
            }
            Self::Forbidden { resource } if *resource == "peers" => format!(
                "the token may not list {resource} (403), which a mesh that writes Peers on this cluster needs: \
                 bind it to the kilo-clustermesh-remote ClusterRole (`kilo-clustermesh-operator connect` does), \
                 or, if this cluster runs its own operator, set spec.peerPlacement: LocalCluster"
            ),
            Self::Forbidden { resource } => format!(
                "the token may not list {resource} (403): bind it to the kilo-clustermesh-remote \
                 ClusterRole (`kilo-clustermesh-operator connect` does)"
            ),
            Self::KiloNotInstalled => "Kilo is not installed: the cluster has no Peer CRD \
                 (peers.kilo.squat.ai); install Kilo there first"
                .to_owned(),
            Self::Failed(why) => format!("the API server answered with an error: {why}"),
        }
    }
}

/// Probes the cluster behind `client` once: it must answer a read of what
/// the operator reads there (Nodes, and Peers where it writes them).
pub async fn probe(client: &Client, peers: bool) -> Result<(), ProbeFailure> {
    let params = ListParams::default().limit(1);
    let reads = async {
        Api::<Node>::all(client.clone())
            .list_metadata(&params)
            .await
            .map_err(|e| classify(e, "nodes"))?;
        if peers {
            Api::<Peer>::all(client.clone())
                .list_metadata(&params)
                .await
                .map_err(|e| classify(e, "peers"))?;
        }
        Ok(())
    };
    tokio::time::timeout(TIMEOUT, reads)
        .await
        .unwrap_or(Err(ProbeFailure::TimedOut))
}

/// How often the Peers of a cluster the operator only reads are listed: to
/// tell whether its own operator peered the local cluster back.
pub const CENSUS_INTERVAL: Duration = Duration::from_secs(30);

/// What a kilo-clustermesh-operator wrote on a cluster this operator only
/// reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Census {
    /// Not listed yet.
    #[default]
    NotYet,
    /// The token may not list Peers (a `connect --read-only` token may not).
    Forbidden,
    /// The Peers as the plan reads them, with their names, labels and
    /// annotations only (no spec); shared by every pass until the next
    /// census.
    Read(mesh::Shared<ObservedPeer>),
}

/// Lists the metadata of the Peers a kilo-clustermesh-operator wrote on the
/// cluster behind `client`. `None` when it could not tell (no answer in
/// time, another error): the last census stands.
pub async fn census(client: &Client) -> Option<Census> {
    let selector = format!("{}={}", mesh::MANAGED_BY_LABEL, mesh::MANAGED_BY);
    let params = ListParams::default().labels(&selector);
    let peers = Api::<Peer>::all(client.clone());
    match tokio::time::timeout(TIMEOUT, peers.list_metadata(&params))
        .await
        .ok()?
    {
        Ok(peers) => {
            let mut peers: Vec<Arc<ObservedPeer>> = peers
                .items
                .into_iter()
                .map(|peer| Arc::new(census_peer(peer.metadata)))
                .collect();
            peers.sort_by(|a, b| a.name.cmp(&b.name));
            Some(Census::Read(peers.into()))
        }
        Err(kube::Error::Api(status)) if status.code == 403 => Some(Census::Forbidden),
        Err(_) => None,
    }
}

/// A Peer the census found, as the plan reads it: name, labels and
/// annotations, no spec.
fn census_peer(meta: ObjectMeta) -> ObservedPeer {
    ObservedPeer {
        name: meta.name.unwrap_or_default(),
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        spec: PeerSpec {
            allowed_ips: Vec::new(),
            endpoint: None,
            persistent_keepalive: None,
            preshared_key: None,
            public_key: String::new(),
        },
        uid: None,
        resource_version: None,
    }
}

/// What identifies the cluster behind `client`: the uid of its
/// `kube-system` namespace, which lives as long as the cluster. `None` when
/// it cannot be read (the operator's role lacks `get` on it, or no answer).
pub async fn cluster_uid(client: &Client) -> Option<String> {
    let namespaces = Api::<Namespace>::all(client.clone());
    let read = namespaces.get_metadata("kube-system");
    let namespace = tokio::time::timeout(TIMEOUT, read).await.ok()?.ok()?;
    namespace.metadata.uid
}

fn classify(error: kube::Error, resource: &'static str) -> ProbeFailure {
    match error {
        kube::Error::Api(status) => match status.code {
            401 => ProbeFailure::TokenRejected,
            403 => ProbeFailure::Forbidden { resource },
            404 if resource == "peers" => ProbeFailure::KiloNotInstalled,
            code => ProbeFailure::Failed(format!("{code} {}", status.message.trim())),
        },
        other => ProbeFailure::Unreachable(root_cause(&other)),
    }
}

/// The innermost cause of an error: "Connection refused (os error 111)"
/// rather than "ServiceError: client error (Connect)".
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn answers_become_causes_a_user_can_act_on() {
        assert_eq!(
            classify(api_error(401, "Unauthorized"), "nodes"),
            ProbeFailure::TokenRejected
        );
        assert_eq!(
            classify(api_error(404, "404 page not found"), "peers"),
            ProbeFailure::KiloNotInstalled
        );
        let forbidden = classify(api_error(403, "forbidden"), "peers");
        assert!(forbidden.is_credentials() && forbidden.is_definite());
        assert!(forbidden.message().contains("kilo-clustermesh-remote"));
        assert!(
            ProbeFailure::KiloNotInstalled
                .message()
                .contains("Kilo is not installed")
        );
        assert!(!ProbeFailure::TimedOut.is_definite());
        assert_eq!(
            classify(api_error(500, " etcd down "), "nodes"),
            ProbeFailure::Failed("500 etcd down".into())
        );
    }
}
