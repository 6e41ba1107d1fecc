//! ServiceAccount tokens signed with a control plane's own signing key, for
//! expiry times the TokenRequest API refuses (it gives at least 10 minutes):
//! a test can watch a token expire.
//!
//! kube-apiserver accepts a token up to 60 s past its `exp` (the leeway of
//! the JWT library it validates with), so a token is refused from
//! [`ACCEPTED_PAST_EXPIRY`] after it expires.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use k8s_openapi::jiff::Timestamp;
use rcgen::{KeyPair, SigningKey};

/// How long past its `exp` kube-apiserver still accepts a token.
pub const ACCEPTED_PAST_EXPIRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Who a token is for and when it expires.
pub struct Claims<'a> {
    pub issuer: &'a str,
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub uid: &'a str,
    pub expires: Timestamp,
}

/// A JWT as kube-apiserver issues for a ServiceAccount (ES256, the bound
/// token's claims), signed with `key` (PEM, PKCS#8, P-256).
pub fn sign(key_pem: &str, claims: &Claims<'_>) -> Result<String, rcgen::Error> {
    // Issued before it expires, whenever that is.
    let issued = Timestamp::now().as_second().min(claims.expires.as_second()) - 120;
    let header = serde_json::json!({ "alg": "ES256", "typ": "JWT" });
    let body = serde_json::json!({
        "iss": claims.issuer,
        "aud": [claims.issuer],
        "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
        "iat": issued,
        "nbf": issued,
        "exp": claims.expires.as_second(),
        "kubernetes.io": {
            "namespace": claims.namespace,
            "serviceaccount": { "name": claims.service_account, "uid": claims.uid },
        },
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(body.to_string())
    );
    let der = KeyPair::from_pem(key_pem)?.sign(signed.as_bytes())?;
    let signature = der_to_jose(&der).ok_or(rcgen::Error::CouldNotParseKeyPair)?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// An ECDSA P-256 signature from ASN.1 DER (`SEQUENCE { r, s }`) to the
/// 64 bytes `r || s` a JWT carries.
fn der_to_jose(der: &[u8]) -> Option<[u8; 64]> {
    let (&tag, rest) = der.split_first()?;
    let (_, rest) = rest.split_first()?; // the sequence's length: < 128 here
    if tag != 0x30 {
        return None;
    }
    let mut out = [0u8; 64];
    let mut rest = rest;
    for half in out.chunks_mut(32) {
        let (&tag, after) = rest.split_first()?;
        let (&len, after) = after.split_first()?;
        if tag != 0x02 || after.len() < usize::from(len) {
            return None;
        }
        let (integer, after) = after.split_at(usize::from(len));
        // A leading 0 keeps a DER integer positive; a short one is padded.
        let integer = integer.strip_prefix(&[0]).unwrap_or(integer);
        if integer.len() > 32 {
            return None;
        }
        half[32 - integer.len()..].copy_from_slice(integer);
        rest = after;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_signatures_become_fixed_width() {
        // r with a sign byte, s shorter than 32 bytes.
        let mut der = vec![0x30, 0x44, 0x02, 0x21, 0x00];
        der.extend([0xAA; 32]);
        der.extend([0x02, 0x1F]);
        der.extend([0x55; 31]);
        let jose = der_to_jose(&der).unwrap_or([0; 64]);
        assert_eq!(jose[..32], [0xAA; 32]);
        assert_eq!(jose[32], 0);
        assert_eq!(jose[33..], [0x55; 31]);
        assert_eq!(der_to_jose(&[0x31, 0x00]), None);
    }
}
