//! The `exp` claim of a kubeconfig's bearer token (`kubeconfig::token_expiry`),
//! which the status reports as `CredentialsExpiring`. The token is placed in
//! a kubeconfig the way `connect` writes one. The first byte chooses the
//! token: the rest of the input as is, a JWT whose payload is the rest, or a
//! JWT whose payload has a known `exp` (the next 8 bytes): then the expiry
//! read must be exactly that second, when it is a representable time.
#![no_main]

use base64::{
    Engine,
    engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD},
};
use libfuzzer_sys::fuzz_target;
use operator::kubeconfig;

/// A kubeconfig holding only `token`, as `connect` writes it.
fn kubeconfig_with(token: &str) -> String {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "remote", "cluster": {
            "server": "https://192.0.2.1:6443",
            "certificate-authority-data": "Zm9v",
        }}],
        "users": [{ "name": "kilo-clustermesh", "user": { "token": token } }],
        "contexts": [{ "name": "remote", "context": {
            "cluster": "remote", "user": "kilo-clustermesh",
        }}],
        "current-context": "remote",
    });
    serde_yaml::to_string(&config).expect("a JSON value is YAML")
}

/// A ServiceAccount token's shape: header, payload, signature.
fn jwt(payload: &[u8], padded: bool) -> String {
    let payload = match padded {
        true => URL_SAFE.encode(payload),
        false => URL_SAFE_NO_PAD.encode(payload),
    };
    format!("eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.{payload}.c2lnbmF0dXJl")
}

/// Whether `Time` (a jiff timestamp) can hold second `exp`.
fn representable(exp: i64) -> bool {
    use k8s_openapi::jiff::Timestamp;
    (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second()).contains(&exp)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (token, expected) = match mode % 3 {
        0 => (String::from_utf8_lossy(rest).into_owned(), None),
        1 => (jwt(rest, mode & 4 != 0), None),
        _ => {
            let Some((exp, claims)) = rest.split_first_chunk::<8>() else {
                return;
            };
            let exp = i64::from_le_bytes(*exp);
            let subject = String::from_utf8_lossy(claims);
            let payload = serde_json::json!({ "exp": exp, "sub": subject });
            let token = jwt(payload.to_string().as_bytes(), mode & 4 != 0);
            (token, Some(representable(exp).then_some(exp)))
        }
    };
    let yaml = kubeconfig_with(&token);
    assert_eq!(
        kubeconfig::bearer_token(&yaml).as_deref(),
        Some(token.as_str()),
        "the token does not come back out of the kubeconfig"
    );
    let expiry = kubeconfig::token_expiry(&yaml).map(|t| t.0.as_second());
    if let Some(expected) = expected {
        assert_eq!(expiry, expected, "token {token}");
    }
});
