//! What connect writes: the remote's grants, a token in a kubeconfig of its
//! own (proven to work), and that kubeconfig as the hub's Secret.

use anyhow::{Context as _, anyhow};
use api::Peer;
use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Namespace, Node, Secret, ServiceAccount},
        rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};

use super::{
    ConnectArgs, FIELD_MANAGER, WRITTEN_BY,
    side::{Endpoint, Side, with_causes},
};
use crate::kubeconfig::{self, KubeconfigPolicy};

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
pub(super) async fn grant(
    args: &ConnectArgs,
    remote: &Side,
    create_namespace: bool,
) -> anyhow::Result<()> {
    let client = &remote.client;
    let ns = args.service_account_namespace.as_str();
    // No labels: the chart's remote mode makes the same objects with its own,
    // and two owners agree only on identical fields.
    let role = args.role();
    let role_name = role.metadata.name.clone().unwrap_or_default();
    apply(remote, Api::all(client.clone()), &role).await?;
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
            name: Some(role_name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role_name,
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
pub(super) async fn mint_token(
    args: &ConnectArgs,
    remote: &Side,
) -> anyhow::Result<(String, Option<String>)> {
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
pub(super) fn token_kubeconfig(
    name: &str,
    server: &str,
    endpoint: &Endpoint,
    token: &str,
) -> String {
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
pub(super) async fn prove(
    yaml: &str,
    server: &str,
    server_given: bool,
    read_only: bool,
) -> anyhow::Result<()> {
    let config = kubeconfig::client_config(yaml, KubeconfigPolicy::default())
        .await
        .context("the kubeconfig built for the operator")?;
    let client = Client::try_from(config).context("a client for the new kubeconfig")?;
    let first = ListParams::default().limit(1);
    let checks = async {
        Api::<Node>::all(client.clone())
            .list_metadata(&first)
            .await?;
        if !read_only {
            Api::<Peer>::all(client.clone())
                .list_metadata(&first)
                .await?;
        }
        Ok::<_, kube::Error>(())
    };
    match checks.await {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) => Err(anyhow!(
            "the new token cannot list what the operator reads on {server}: {}",
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

pub(super) async fn write_secret(
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

#[cfg(test)]
mod tests {
    use kube::config::Kubeconfig;

    use super::*;

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
}
