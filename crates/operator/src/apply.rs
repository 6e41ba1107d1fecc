//! Apply: send the Peer writes a plan asks for, and nothing else.

use std::sync::Arc;

use api::Peer;
use futures::{StreamExt, TryStreamExt, stream};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, Preconditions},
};
use mesh::{DesiredPeer, PeerDeletion};

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "kilo-clustermesh-operator";

/// A failed write to one cluster.
#[derive(Debug, thiserror::Error)]
#[error("writing Peer {peer} on cluster {cluster}: {source}")]
pub struct WriteError {
    pub cluster: String,
    pub peer: String,
    #[source]
    pub source: kube::Error,
}

/// A change one write made to a Peer, as the cluster's watch will report
/// it: how a writer tells its own writes' echoes from anyone else's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerChange {
    /// Created or changed, now at `version` (its resourceVersion).
    Applied {
        name: String,
        version: String,
    },
    Deleted {
        name: String,
    },
}

impl PeerChange {
    pub fn name(&self) -> &str {
        match self {
            Self::Applied { name, .. } | Self::Deleted { name } => name,
        }
    }
}

/// Applies `apply` (server-side apply, forced: the operator owns every field
/// it sets, so a hand edit is put back) and deletes `delete`, at most
/// `concurrency` requests at a time. Returns the changes made (a Peer
/// already gone, or changed since it was observed, is not deleted).
pub async fn write_peers(
    client: &Client,
    cluster: &str,
    apply: Vec<Arc<DesiredPeer>>,
    delete: Vec<PeerDeletion>,
    concurrency: usize,
) -> Result<Vec<PeerChange>, WriteError> {
    let api = Api::<Peer>::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let fail = |peer: String| {
        move |source| WriteError {
            cluster: cluster.to_owned(),
            peer,
            source,
        }
    };
    // Each planned Peer is let go once sent: a long batch does not keep a
    // whole plan alive while later passes plan anew.
    let applies = stream::iter(apply).map(|desired| {
        let (api, params) = (&api, &params);
        async move {
            // Built as it is sent: at scale, every Peer at once would be
            // the largest allocation of a pass.
            let peer = to_peer(&desired);
            let written = api
                .patch(&desired.name, params, &Patch::Apply(&peer))
                .await
                .map_err(fail(desired.name.clone()))?;
            Ok(PeerChange::Applied {
                name: desired.name.clone(),
                version: written.resource_version().unwrap_or_default(),
            })
        }
    });
    let mut changes: Vec<PeerChange> = applies.buffer_unordered(concurrency).try_collect().await?;
    let deletes = stream::iter(delete).map(|deletion| {
        let api = &api;
        async move {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: deletion.uid,
                    resource_version: deletion.resource_version,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&deletion.name, &params).await {
                Ok(_) => Ok(Some(PeerChange::Deleted {
                    name: deletion.name,
                })),
                // Gone already, or changed since it was observed: the next
                // pass sees the new state.
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                    Ok(None)
                }
                Err(source) => Err(fail(deletion.name)(source)),
            }
        }
    });
    let deleted: Vec<PeerChange> = deletes
        .buffer_unordered(concurrency)
        .try_filter_map(|change| async move { Ok(change) })
        .try_collect()
        .await?;
    changes.extend(deleted);
    Ok(changes)
}

/// What a mesh's deletion does to its Peers: the ClusterMesh's
/// `kilo-clustermesh.io/peers-on-delete` annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDelete {
    /// Delete them (the default).
    Delete,
    /// Leave them in place, labelled released, for another operator of the
    /// same mesh to take over (docs/topologies.md).
    Release,
}

impl OnDelete {
    /// The policy an annotation value names; an error message naming the
    /// annotation and its values for anything else.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("delete") => Ok(Self::Delete),
            Some("release") => Ok(Self::Release),
            Some(other) => Err(format!(
                "annotation {}: {other:?} is neither \"delete\" nor \"release\"; fix it, the Peers \
                 are kept until then",
                mesh::PEERS_ON_DELETE_ANNOTATION
            )),
        }
    }
}

/// Deletes, or with [`OnDelete::Release`] releases, every Peer on the
/// cluster that carries `selector` (this mesh's label). Returns how many.
pub async fn remove_labelled_peers(
    client: &Client,
    cluster: &str,
    selector: &str,
    on_delete: OnDelete,
    concurrency: usize,
) -> Result<usize, WriteError> {
    let api = Api::<Peer>::all(client.clone());
    let fail = |peer: String| {
        move |source| WriteError {
            cluster: cluster.to_owned(),
            peer,
            source,
        }
    };
    let peers = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map_err(fail(format!("(all with {selector})")))?;
    let count = peers.items.len();
    match on_delete {
        OnDelete::Delete => {
            let deletions = peers
                .items
                .into_iter()
                .map(|peer| PeerDeletion {
                    name: peer.name_any(),
                    uid: peer.metadata.uid,
                    resource_version: None,
                })
                .collect();
            write_peers(client, cluster, Vec::new(), deletions, concurrency).await?;
        }
        OnDelete::Release => {
            // Only the label changes: the Peer, and the routes Kilo built
            // from it, stay as they are.
            let patch = serde_json::json!({
                "metadata": {"labels": {mesh::MESH_LABEL: mesh::RELEASED}}
            });
            let params = PatchParams::default();
            stream::iter(peers.items)
                .map(|peer| {
                    let (api, patch, params) = (&api, &patch, &params);
                    async move {
                        let name = peer.name_any();
                        match api.patch(&name, params, &Patch::Merge(patch)).await {
                            Ok(_) => Ok(()),
                            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                            Err(source) => Err(fail(name)(source)),
                        }
                    }
                })
                .buffer_unordered(concurrency)
                .try_collect::<()>()
                .await?;
        }
    }
    Ok(count)
}

/// The Peer object for a planned Peer.
fn to_peer(desired: &DesiredPeer) -> Peer {
    let mut peer = Peer::new(&desired.name, desired.spec.clone());
    peer.metadata = ObjectMeta {
        name: Some(desired.name.clone()),
        labels: Some(desired.labels.clone()),
        annotations: Some(desired.annotations.clone()),
        ..ObjectMeta::default()
    };
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deletion_policy_is_read_from_its_annotation_and_a_typo_is_refused() {
        assert_eq!(OnDelete::parse(None), Ok(OnDelete::Delete));
        assert_eq!(OnDelete::parse(Some("delete")), Ok(OnDelete::Delete));
        assert_eq!(OnDelete::parse(Some("release")), Ok(OnDelete::Release));
        let refused = OnDelete::parse(Some("keep")).unwrap_err();
        assert!(
            refused.contains("kilo-clustermesh.io/peers-on-delete: \"keep\" is neither"),
            "{refused}"
        );
    }
}
