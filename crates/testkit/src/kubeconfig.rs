//! Kubeconfig YAML for a control plane's identities.

use base64::{Engine, engine::general_purpose::STANDARD};

/// Who a kubeconfig authenticates as.
pub enum Credentials<'a> {
    ClientCertificate { cert: &'a str, key: &'a str },
    Token(&'a str),
}

/// A one-context kubeconfig with everything inline.
pub fn yaml(cluster: &str, server: &str, ca_pem: &str, credentials: Credentials<'_>) -> String {
    let user = match credentials {
        Credentials::ClientCertificate { cert, key } => serde_json::json!({
            "client-certificate-data": STANDARD.encode(cert),
            "client-key-data": STANDARD.encode(key),
        }),
        Credentials::Token(token) => serde_json::json!({ "token": token }),
    };
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": cluster, "cluster": {
            "server": server,
            "certificate-authority-data": STANDARD.encode(ca_pem),
        }}],
        "users": [{ "name": cluster, "user": user }],
        "contexts": [{ "name": cluster, "context": { "cluster": cluster, "user": cluster } }],
        "current-context": cluster,
    });
    // A JSON value always serializes to YAML.
    serde_yaml::to_string(&config).unwrap_or_default()
}

/// One kubeconfig with a context per `(name, kubeconfig YAML)`, each
/// context, cluster and user named `name`, the first context current: what
/// a user's merged `~/.kube/config` holds.
pub fn merged(contexts: &[(&str, &str)]) -> Result<String, serde_yaml::Error> {
    let mut clusters = Vec::new();
    let mut users = Vec::new();
    let mut named = Vec::new();
    for (name, yaml) in contexts {
        let config: serde_yaml::Value = serde_yaml::from_str(yaml)?;
        clusters
            .push(serde_json::json!({ "name": name, "cluster": config["clusters"][0]["cluster"] }));
        users.push(serde_json::json!({ "name": name, "user": config["users"][0]["user"] }));
        named.push(
            serde_json::json!({ "name": name, "context": { "cluster": name, "user": name } }),
        );
    }
    serde_yaml::to_string(&serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": clusters, "users": users, "contexts": named,
        "current-context": contexts.first().map(|c| c.0).unwrap_or_default(),
    }))
}
