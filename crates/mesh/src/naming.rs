//! Peer names.

use sha2::{Digest, Sha256};

/// Longest object name Kubernetes accepts (a DNS-1123 subdomain).
const MAX: usize = 253;

/// Name of the Peer for node `node` of cluster `cluster`: `<cluster>.<node>`.
/// A name longer than 253 characters is cut and ends in `-` and 10 hex
/// digits of a hash of the full name, so it stays unique and stable.
pub fn peer_name(cluster: &str, node: &str) -> String {
    let full = format!("{cluster}.{node}");
    if full.len() <= MAX {
        return full;
    }
    let digest = Sha256::digest(full.as_bytes());
    let hash: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
    // Cut between characters: a name is whatever the Node object says.
    let cut = MAX - hash.len() - 1;
    let cut = (0..=cut)
        .rev()
        .find(|i| full.is_char_boundary(*i))
        .unwrap_or(0);
    let kept = full[..cut].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{kept}-{hash}")
}

#[cfg(test)]
mod tests {
    use api::is_dns1123_subdomain;

    use super::*;

    #[test]
    fn short_names_are_cluster_dot_node() {
        assert_eq!(peer_name("cluster-b", "node-1"), "cluster-b.node-1");
        assert_eq!(peer_name("b", "node.example.com"), "b.node.example.com");
    }

    #[test]
    fn long_names_are_cut_with_a_stable_hash() {
        let node = format!("{}.{}", "a".repeat(200), "b".repeat(52));
        let name = peer_name("cluster-b", &node);
        assert_eq!(name.len(), 253);
        assert!(is_dns1123_subdomain(&name), "{name}");
        assert_eq!(name, peer_name("cluster-b", &node));
        assert_ne!(name, peer_name("cluster-c", &node));
        // A cut landing on a dot still gives a valid name.
        let dotted = format!("{}.{}", "a".repeat(231), "b".repeat(30));
        assert!(is_dns1123_subdomain(&peer_name("x", &dotted)));
    }

    /// Found with the `node_eligibility` fuzz target's input format
    /// (`make fuzz`): the cut landed inside a character and panicked.
    #[test]
    fn a_long_name_is_cut_between_characters() {
        let node = format!("x{}", "é".repeat(200));
        let name = peer_name("b", &node);
        assert!(name.len() <= 253, "{name}");
        assert!(name.starts_with("b.x"), "{name}");
        assert_eq!(name, peer_name("b", &node));
        assert_ne!(name, peer_name("c", &node));
    }
}
