//! Which mesh a Peer belongs to: the labels and annotations the operator
//! writes, and the identity they carry.

use std::fmt::Write;

use sha2::{Digest, Sha256};

/// `app.kubernetes.io/managed-by` on every Peer the operator writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "kilo-clustermesh-operator";
/// The mesh a Peer belongs to: a hash of the hub cluster, namespace and name.
pub const MESH_LABEL: &str = "kilo-clustermesh.io/mesh";
/// The cluster whose node the Peer describes.
pub const CLUSTER_LABEL: &str = "kilo-clustermesh.io/cluster";
/// Present (`"true"`) on the Peer that carries its cluster's service and
/// additional CIDRs.
pub const ANCHOR_LABEL: &str = "kilo-clustermesh.io/anchor";
/// `namespace/name` of the mesh, readable by people.
pub const MESH_ANNOTATION: &str = "kilo-clustermesh.io/mesh-name";
/// The node the Peer describes (its name may be shortened in the Peer name),
/// or for a location of a `location` cluster, `location-<location>`.
pub const NODE_ANNOTATION: &str = "kilo-clustermesh.io/node";
/// On a location's Peer: the nodes it carries, comma-separated, its leader
/// (whose key and endpoint it has) first.
pub const MEMBERS_ANNOTATION: &str = "kilo-clustermesh.io/nodes";

/// A mesh, told apart from every other: same-named meshes in two namespaces,
/// or two hubs writing to the same remote cluster, never share Peers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MeshIdentity {
    /// Name of the local (hub) cluster's entry.
    pub hub_cluster: String,
    pub namespace: String,
    pub name: String,
}

impl MeshIdentity {
    /// Value of [`MESH_LABEL`]: `m-` and 20 hex digits of a SHA-256 of the
    /// hub cluster, namespace and name (a label value holds at most 63
    /// characters, a namespace/name pair does not fit).
    pub fn label_value(&self) -> String {
        let digest = Sha256::digest(format!(
            "{}\n{}\n{}",
            self.hub_cluster, self.namespace, self.name
        ));
        let mut value = String::from("m-");
        for byte in &digest[..10] {
            let _ = write!(value, "{byte:02x}");
        }
        value
    }

    /// Label selector matching exactly this mesh's Peers.
    pub fn selector(&self) -> String {
        format!("{MESH_LABEL}={}", self.label_value())
    }

    /// Value of [`MESH_ANNOTATION`].
    pub fn annotation_value(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(hub: &str, ns: &str, name: &str) -> MeshIdentity {
        MeshIdentity {
            hub_cluster: hub.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn same_named_meshes_in_other_namespaces_or_hubs_get_other_labels() {
        let a = id("hub", "kilo-system", "mesh");
        let others = [
            id("hub", "other", "mesh"),
            id("other-hub", "kilo-system", "mesh"),
            id("hub", "kilo-system", "mesh2"),
        ];
        for other in others {
            assert_ne!(a.label_value(), other.label_value(), "{other:?}");
        }
        assert_eq!(
            a.label_value(),
            id("hub", "kilo-system", "mesh").label_value()
        );
        assert_eq!(a.label_value().len(), 22);
    }
}
