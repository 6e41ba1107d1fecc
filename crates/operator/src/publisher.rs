//! Publishes each mesh's status off the pass: a pass hands its status over
//! and goes on, and the mesh's publisher writes the latest status handed
//! over (one handed over while a write is under way replaces the one
//! waiting), then the Events of what changed since the status it wrote
//! before. A node change therefore never waits for the status write of the
//! pass before it: on a hub whose API server is slow to answer, that write
//! is most of a pass.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use api::{ClusterMesh, ClusterMeshStatus};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        events::{Event as KubeEvent, EventType, Recorder},
        reflector::ObjectRef,
    },
};
use mesh::ConditionType;
use tokio::{sync::watch, task::AbortHandle};

use crate::{
    leader::Fence,
    metrics::{ErrorLabels, Metrics},
};

/// The field manager of the status the operator writes.
const FIELD_MANAGER: &str = crate::apply::FIELD_MANAGER;

/// How long a failed status write waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The status publishers of every mesh.
pub struct Publishers {
    client: Client,
    recorder: Recorder,
    fence: Fence,
    metrics: Arc<Metrics>,
    meshes: Mutex<HashMap<ObjectRef<ClusterMesh>, Publisher>>,
}

/// One mesh's publisher.
struct Publisher {
    /// The mesh object it publishes for: a mesh deleted and created again
    /// under its name starts afresh.
    uid: Option<String>,
    /// The last status a pass handed over: what the next pass's status is
    /// compared with.
    handed: ClusterMeshStatus,
    latest: watch::Sender<ClusterMeshStatus>,
    task: AbortHandle,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Publishers {
    pub fn new(client: Client, recorder: Recorder, fence: Fence, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            recorder,
            fence,
            metrics,
            meshes: Mutex::default(),
        }
    }

    /// The status of `mesh` as far as this operator knows: the last one
    /// handed over, else the one the mesh holds.
    pub fn previous(&self, mesh: &ClusterMesh) -> ClusterMeshStatus {
        let meshes = self.meshes();
        match meshes.get(&ObjectRef::from_obj(mesh)) {
            Some(publisher) if publisher.uid == mesh.uid() => publisher.handed.clone(),
            _ => mesh.status.clone().unwrap_or_default(),
        }
    }

    /// Hands `status` over to be written, if it differs from `previous`
    /// (what [`Self::previous`] returned for this pass).
    pub fn hand_over(
        &self,
        mesh: &ClusterMesh,
        previous: &ClusterMeshStatus,
        status: &ClusterMeshStatus,
    ) {
        if status == previous {
            return;
        }
        let mut meshes = self.meshes();
        let mesh_ref = ObjectRef::from_obj(mesh);
        let current = meshes
            .get(&mesh_ref)
            .is_some_and(|publisher| publisher.uid == mesh.uid());
        if !current {
            let publisher = self.start(mesh, previous.clone());
            meshes.insert(mesh_ref.clone(), publisher);
        }
        if let Some(publisher) = meshes.get_mut(&mesh_ref) {
            publisher.handed = status.clone();
            publisher.latest.send_replace(status.clone());
        }
    }

    /// Stops publishing for a mesh being deleted: a write under way may still
    /// land, none starts after this.
    pub fn stop(&self, mesh: &ObjectRef<ClusterMesh>) {
        self.meshes().remove(mesh);
    }

    fn meshes(&self) -> MutexGuard<'_, HashMap<ObjectRef<ClusterMesh>, Publisher>> {
        self.meshes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A publisher for `mesh`, whose status is `written` so far.
    fn start(&self, mesh: &ClusterMesh, written: ClusterMeshStatus) -> Publisher {
        let (latest, handed) = watch::channel(written.clone());
        let writing = Writing {
            api: Api::namespaced(self.client.clone(), &mesh.namespace().unwrap_or_default()),
            name: mesh.name_any(),
            reference: mesh.object_ref(&()),
            recorder: self.recorder.clone(),
            fence: self.fence.clone(),
            metrics: self.metrics.clone(),
        };
        let task = tokio::spawn(writing.run(handed, written.clone())).abort_handle();
        Publisher {
            uid: mesh.uid(),
            handed: written,
            latest,
            task,
        }
    }
}

/// What one mesh's publisher writes with.
struct Writing {
    api: Api<ClusterMesh>,
    name: String,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    recorder: Recorder,
    fence: Fence,
    metrics: Arc<Metrics>,
}

impl Writing {
    /// Writes each status handed over, the latest first, until aborted.
    async fn run(
        self,
        mut handed: watch::Receiver<ClusterMeshStatus>,
        mut written: ClusterMeshStatus,
    ) {
        loop {
            let status = handed.borrow_and_update().clone();
            if status != written {
                match self.write(&status).await {
                    Ok(()) => {
                        self.publish_events(&written, &status).await;
                        written = status;
                    }
                    Err(error) => {
                        tracing::warn!(mesh = %self.name, %error, "writing the status failed; retrying");
                        let labels = ErrorLabels {
                            error: "StatusWrite",
                        };
                        self.metrics.reconcile_errors.get_or_create(&labels).inc();
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                }
            }
            if handed.changed().await.is_err() {
                return;
            }
        }
    }

    async fn write(&self, status: &ClusterMeshStatus) -> Result<(), String> {
        self.fence
            .check()
            .await
            .map_err(|fenced| fenced.to_string())?;
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Ready.as_str());
        tracing::info!(
            mesh = %self.name,
            ready = ready.map(|c| c.status.as_str()),
            reason = ready.map(|c| c.reason.as_str()),
            message = ready.map(|c| c.message.as_str()),
            "status changed"
        );
        let patch = serde_json::json!({
            "apiVersion": ClusterMesh::api_version(&()),
            "kind": ClusterMesh::kind(&()),
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api
            .patch_status(&self.name, &params, &Patch::Apply(&patch))
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    async fn publish_events(&self, before: &ClusterMeshStatus, after: &ClusterMeshStatus) {
        for event in mesh::transitions(before, after) {
            let event = KubeEvent {
                type_: if event.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: event.reason,
                note: Some(event.message),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(error) = self.recorder.publish(&event, &self.reference).await {
                tracing::warn!(%error, "publishing an Event failed");
            }
        }
    }
}
