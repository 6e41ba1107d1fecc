//! Everything that could refuse, checked before anything is changed: both
//! clusters answer, the remote runs Kilo, the hub Secret is not someone
//! else's, and the caller may do every step.

use anyhow::{anyhow, bail};
use api::Peer;
use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::{Namespace, Secret},
};
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};

use super::{ConnectArgs, WRITTEN_BY, side::Side};

/// What the checks found that the writes need to know.
pub(super) struct Preflight {
    pub create_namespace: bool,
}

pub(super) async fn preflight(
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

pub(super) fn written_by_connect(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(WRITTEN_BY.0))
        .is_some_and(|v| v == WRITTEN_BY.1)
}
