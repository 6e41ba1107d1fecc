//! Leader election on a Lease, so that replicas > 1 never write at once.

use std::future::Future;

use anyhow::{Context as _, bail};
use kube_lease_manager::LeaseManagerBuilder;

/// Waits until this replica holds the Lease `namespace/lease`, then runs
/// `work` while it does. Losing the Lease ends the process with an error, so
/// Kubernetes restarts it as a follower: a former leader never keeps writing.
pub async fn while_leader(
    client: kube::Client,
    namespace: &str,
    lease: &str,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("kilo-clustermesh-operator-{}", std::process::id()));
    let manager = LeaseManagerBuilder::new(client, lease)
        .with_namespace(namespace)
        .with_identity(identity.clone())
        .with_field_manager("kilo-clustermesh-operator")
        .build()
        .await
        .with_context(|| format!("preparing the leader-election Lease {namespace}/{lease}"))?;
    let (mut leading, _manager) = manager.watch().await;
    tracing::info!(%identity, lease = %format!("{namespace}/{lease}"), "waiting for leadership");
    while !*leading.borrow_and_update() {
        leading
            .changed()
            .await
            .context("the leader-election task stopped")?;
    }
    tracing::info!(%identity, "leading");
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            changed = leading.changed() => {
                if changed.is_err() || !*leading.borrow_and_update() {
                    bail!("lost the leader-election Lease {namespace}/{lease}; exiting so that only the leader writes");
                }
            }
        }
    }
}
