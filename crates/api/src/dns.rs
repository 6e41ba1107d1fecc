//! DNS-1123 name rules, as Kubernetes' `validation.IsDNS1123Label` and
//! `IsDNS1123Subdomain` define them.

/// Longest DNS-1123 label (a cluster name, a segment of a subdomain).
pub const LABEL_MAX: usize = 63;
/// Longest DNS-1123 subdomain (an object name such as a Peer's).
pub const SUBDOMAIN_MAX: usize = 253;

/// True when `s` is a DNS-1123 label: 1 to 63 lowercase alphanumerics or `-`,
/// starting and ending with an alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= LABEL_MAX
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// True when `s` is a DNS-1123 subdomain: at most 253 characters of
/// dot-separated parts, each of lowercase alphanumerics or `-`, starting and
/// ending with an alphanumeric. (Kubernetes does not cap a part at 63 here.)
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SUBDOMAIN_MAX
        && s.split('.').all(|part| {
            let bytes = part.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            bytes.first().is_some_and(alnum)
                && bytes.last().is_some_and(alnum)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "cluster-a", "0", "a1-b2", &"x".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok:?} should be a label");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"x".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad:?} should not be a label");
        }
    }

    #[test]
    fn subdomains() {
        for ok in [
            "a",
            "a.b",
            "cluster-a.node-1",
            "node.example.com",
            &"x".repeat(253),
        ] {
            assert!(is_dns1123_subdomain(ok), "{ok:?} should be a subdomain");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "A.b",
            "a_b.c",
            "-a.b",
            &"x".repeat(254),
        ] {
            assert!(
                !is_dns1123_subdomain(bad),
                "{bad:?} should not be a subdomain"
            );
        }
    }
}
