//! Kubeconfigs read from Secrets: only self-contained ones are accepted.
//!
//! A kubeconfig in a Secret is written by someone other than the operator's
//! admin. Left unchecked it could make the operator run a program (`exec`,
//! `auth-provider`), read a file of its own pod (`tokenFile`,
//! `certificate-authority`, ...), or skip TLS verification. Each is refused
//! unless the operator was started with the matching opt-in flag.

use kube::config::{AuthInfo, Cluster, KubeConfigOptions, Kubeconfig};

/// What a kubeconfig from a Secret may use beyond inline credentials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KubeconfigPolicy {
    /// Allow `exec` and `auth-provider` credential plugins.
    pub allow_exec: bool,
    /// Allow paths to files (CA, client certificate and key, token file).
    pub allow_files: bool,
    /// Allow `insecure-skip-tls-verify: true`.
    pub allow_insecure_tls: bool,
}

/// Why a kubeconfig cannot be used. Each message names the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("not a kubeconfig: {0}")]
    Parse(String),
    #[error(
        "the kubeconfig has no current-context and not exactly one context; set current-context"
    )]
    NoContext,
    #[error("context {0:?} is not in the kubeconfig")]
    UnknownContext(String),
    #[error("context {context:?} names cluster {cluster:?}, which the kubeconfig does not define")]
    UnknownCluster { context: String, cluster: String },
    #[error("cluster {0:?} has no server URL; set clusters[].cluster.server")]
    NoServer(String),
    #[error(
        "user {0:?} uses an exec or auth-provider plugin, which the operator does not run; \
         use a ServiceAccount token (`kilo-clustermesh-operator connect`) or start the operator with --allow-kubeconfig-exec"
    )]
    Plugin(String),
    #[error(
        "{field} points to a file, which does not exist in the operator's pod; \
         inline it as {field}-data (or token), or start the operator with --allow-kubeconfig-files"
    )]
    File { field: &'static str },
    #[error(
        "cluster {0:?} sets insecure-skip-tls-verify; give its CA as certificate-authority-data, \
         or start the operator with --allow-insecure-kubeconfig"
    )]
    Insecure(String),
    #[error("cannot build a client from the kubeconfig: {0}")]
    Client(String),
}

impl KubeconfigError {
    /// A short CamelCase label for metrics and status reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Parse(_) => "Unparsable",
            Self::NoContext | Self::UnknownContext(_) | Self::UnknownCluster { .. } => "NoContext",
            Self::NoServer(_) => "NoServer",
            Self::Plugin(_) => "PluginRefused",
            Self::File { .. } => "FileRefused",
            Self::Insecure(_) => "InsecureRefused",
            Self::Client(_) => "ClientConfig",
        }
    }
}

/// Parses `yaml`, checks the context it would use against `policy`, and
/// returns a client configuration for it.
pub async fn client_config(
    yaml: &str,
    policy: KubeconfigPolicy,
) -> Result<kube::Config, KubeconfigError> {
    let kubeconfig =
        Kubeconfig::from_yaml(yaml).map_err(|e| KubeconfigError::Parse(e.to_string()))?;
    check(&kubeconfig, policy)?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| KubeconfigError::Client(e.to_string()))
}

/// The bearer token of the context a kubeconfig would use, if it has one.
pub fn bearer_token(yaml: &str) -> Option<String> {
    use secrecy::ExposeSecret;
    let kubeconfig = Kubeconfig::from_yaml(yaml).ok()?;
    let (_, user) = selected(&kubeconfig, None).ok()?;
    user.and_then(|(_, u)| u.token.as_ref())
        .map(|t| t.expose_secret().to_owned())
}

/// When the bearer token of a kubeconfig expires, from its JWT `exp` claim.
/// `None` for a token that is not a JWT or has no expiry.
pub fn token_expiry(yaml: &str) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let token = bearer_token(yaml)?;
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?)
            .ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    k8s_openapi::jiff::Timestamp::from_second(exp)
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

/// Refuses what `policy` does not allow in the context a client would use:
/// a credential plugin, a path to a file, skipped TLS verification.
pub fn check(kubeconfig: &Kubeconfig, policy: KubeconfigPolicy) -> Result<(), KubeconfigError> {
    let (cluster, user) = selected(kubeconfig, None)?;
    let (cluster_name, cluster) = cluster;
    if cluster.server.as_deref().is_none_or(str::is_empty) {
        return Err(KubeconfigError::NoServer(cluster_name.to_owned()));
    }
    if !policy.allow_insecure_tls && cluster.insecure_skip_tls_verify == Some(true) {
        return Err(KubeconfigError::Insecure(cluster_name.to_owned()));
    }
    let mut files = vec![("certificate-authority", &cluster.certificate_authority)];
    if let Some((user_name, user)) = user {
        if !policy.allow_exec && (user.exec.is_some() || user.auth_provider.is_some()) {
            return Err(KubeconfigError::Plugin(user_name.to_owned()));
        }
        files.extend([
            ("client-certificate", &user.client_certificate),
            ("client-key", &user.client_key),
            ("tokenFile", &user.token_file),
        ]);
    }
    let file = files
        .into_iter()
        .find(|(_, path)| path.as_deref().is_some_and(|p| !p.is_empty()));
    if let Some((field, _)) = file.filter(|_| !policy.allow_files) {
        return Err(KubeconfigError::File { field });
    }
    Ok(())
}

/// The selected cluster and user, each with its name in the kubeconfig.
pub type Selected<'a> = ((&'a str, &'a Cluster), Option<(&'a str, &'a AuthInfo)>);

/// The cluster and user of `context`, or else of the context a client would
/// use: `current-context`, or the only context when there is one.
pub fn selected<'a>(
    kubeconfig: &'a Kubeconfig,
    context: Option<&str>,
) -> Result<Selected<'a>, KubeconfigError> {
    let name = context.or(kubeconfig.current_context.as_deref());
    let context = match name {
        Some(name) if !name.is_empty() => kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| KubeconfigError::UnknownContext(name.to_owned()))?,
        _ => match kubeconfig.contexts.as_slice() {
            [only] => only,
            _ => return Err(KubeconfigError::NoContext),
        },
    };
    let spec = context.context.as_ref().ok_or(KubeconfigError::NoContext)?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == spec.cluster)
        .and_then(|c| c.cluster.as_ref().map(|cluster| (c.name.as_str(), cluster)))
        .ok_or_else(|| KubeconfigError::UnknownCluster {
            context: context.name.clone(),
            cluster: spec.cluster.clone(),
        })?;
    let user = spec
        .user
        .as_ref()
        .and_then(|name| kubeconfig.auth_infos.iter().find(|a| &a.name == name))
        .and_then(|a| a.auth_info.as_ref().map(|user| (a.name.as_str(), user)));
    Ok((cluster, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cluster: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: remote\n\
             contexts:\n- name: remote\n  context:\n    cluster: remote\n    user: remote\n\
             clusters:\n- name: remote\n  cluster:\n    server: https://127.0.0.1:6443\n{cluster}\
             users:\n- name: remote\n  user:\n{user}"
        )
    }

    const CA: &str = "    certificate-authority-data: Zm9v\n";
    const TOKEN: &str = "    token: abc.def.ghi\n";

    fn checked(yaml: &str, policy: KubeconfigPolicy) -> Result<(), KubeconfigError> {
        check(
            &Kubeconfig::from_yaml(yaml).map_err(|e| KubeconfigError::Parse(e.to_string()))?,
            policy,
        )
    }

    #[test]
    fn inline_token_and_ca_are_accepted() {
        assert!(checked(&kubeconfig(CA, TOKEN), KubeconfigPolicy::default()).is_ok());
        assert_eq!(
            bearer_token(&kubeconfig(CA, TOKEN)).as_deref(),
            Some("abc.def.ghi")
        );
    }

    #[test]
    fn unsafe_kubeconfigs_are_refused_unless_allowed() {
        let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n";
        let provider = "    auth-provider:\n      name: gcp\n";
        let cases = [
            (
                kubeconfig(CA, exec),
                "PluginRefused",
                KubeconfigPolicy {
                    allow_exec: true,
                    ..Default::default()
                },
            ),
            (
                kubeconfig(CA, provider),
                "PluginRefused",
                KubeconfigPolicy {
                    allow_exec: true,
                    ..Default::default()
                },
            ),
            (
                kubeconfig("    certificate-authority: /etc/ca.crt\n", TOKEN),
                "FileRefused",
                KubeconfigPolicy {
                    allow_files: true,
                    ..Default::default()
                },
            ),
            (
                kubeconfig(CA, "    tokenFile: /var/run/token\n"),
                "FileRefused",
                KubeconfigPolicy {
                    allow_files: true,
                    ..Default::default()
                },
            ),
            (
                kubeconfig(
                    CA,
                    "    client-certificate: /a.crt\n    client-key: /a.key\n",
                ),
                "FileRefused",
                KubeconfigPolicy {
                    allow_files: true,
                    ..Default::default()
                },
            ),
            (
                kubeconfig("    insecure-skip-tls-verify: true\n", TOKEN),
                "InsecureRefused",
                KubeconfigPolicy {
                    allow_insecure_tls: true,
                    ..Default::default()
                },
            ),
        ];
        for (yaml, label, allowing) in cases {
            let Err(err) = checked(&yaml, KubeconfigPolicy::default()) else {
                panic!("accepted:\n{yaml}")
            };
            assert_eq!(err.metric_label(), label, "{yaml}");
            assert!(
                checked(&yaml, allowing).is_ok(),
                "the opt-in flag should allow:\n{yaml}"
            );
        }
    }

    #[test]
    fn token_expiry_is_read_from_the_jwt() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let payload =
            URL_SAFE_NO_PAD.encode(r#"{"exp":1800000000,"sub":"system:serviceaccount:x:y"}"#);
        let yaml = kubeconfig(
            CA,
            &format!("    token: eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln\n"),
        );
        let expiry = token_expiry(&yaml).unwrap();
        assert_eq!(expiry.0.as_second(), 1_800_000_000);
        assert!(token_expiry(&kubeconfig(CA, TOKEN)).is_none(), "not a JWT");
    }

    #[test]
    fn broken_kubeconfigs_name_what_is_missing() {
        assert!(matches!(
            checked("{{{", KubeconfigPolicy::default()),
            Err(KubeconfigError::Parse(_))
        ));
        let no_server = kubeconfig(CA, TOKEN).replace("    server: https://127.0.0.1:6443\n", "");
        assert!(matches!(
            checked(&no_server, KubeconfigPolicy::default()),
            Err(KubeconfigError::NoServer(_))
        ));
        let wrong_context =
            kubeconfig(CA, TOKEN).replace("current-context: remote", "current-context: other");
        let err = checked(&wrong_context, KubeconfigPolicy::default()).unwrap_err();
        assert!(err.to_string().contains("\"other\""), "{err}");
    }
}
