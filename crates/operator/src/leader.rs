//! Leader election on a Lease, so that replicas > 1 never write at once, and
//! the fence every write goes through.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_openapi::{
    api::coordination::v1::Lease,
    jiff::{SignedDuration, Timestamp},
};
use kube::Api;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// How the Lease is held.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's name in the Lease (the pod's name in a cluster).
    pub identity: String,
    /// How long the Lease holds without a renewal; a standby takes over this
    /// long after the leader stops renewing.
    pub duration: Duration,
}

/// Whether this replica may still write. Every batch of writes asks first,
/// so a leader that was frozen past its Lease and then resumed learns that
/// it lost the Lease before it writes, not after.
#[derive(Clone, Default)]
pub struct Fence {
    lease: Option<Arc<LeaseFence>>,
}

struct LeaseFence {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// Until when the Lease, as last read, is certainly still ours.
    ours_until: Mutex<Option<Instant>>,
    /// Set when the Lease was found held by another replica.
    lost: watch::Sender<bool>,
}

/// Why a write may not be sent.
#[derive(Debug, thiserror::Error)]
pub enum Fenced {
    #[error("this replica no longer holds the leader-election Lease {lease} (held by {holder:?})")]
    Deposed {
        lease: String,
        holder: Option<String>,
    },
    #[error(
        "the leader-election Lease {lease} has not been renewed in time; waiting for the renewal"
    )]
    Expired { lease: String },
    #[error("reading the leader-election Lease {lease}: {source}")]
    Unconfirmed { lease: String, source: kube::Error },
}

/// How long before the Lease's end, as last read, the fence reads it again:
/// room for the renewal to land and for clocks that differ a little.
const MARGIN: Duration = Duration::from_secs(2);

/// The Lease is renewed a third of its duration before it ends, and at
/// least this many seconds before: more than [`MARGIN`], so the fence
/// finds it renewed rather than ending.
const RENEW_AHEAD_MIN: u64 = 3;

impl Fence {
    /// A fence that always lets writes through: leader election is off.
    pub fn open() -> Self {
        Self::default()
    }

    /// Ok while this replica holds the Lease. The Lease is read again only
    /// when the last reading no longer proves it: at most about once per
    /// renewal, and at once after the process was frozen.
    pub async fn check(&self) -> Result<(), Fenced> {
        let Some(fence) = &self.lease else {
            return Ok(());
        };
        let still_ours = crate::lock(&fence.ours_until).is_some_and(|until| Instant::now() < until);
        if still_ours {
            return Ok(());
        }
        let settings = &fence.settings;
        let lease_name = format!("{}/{}", settings.namespace, settings.name);
        let lease = fence
            .api
            .get(&settings.name)
            .await
            .map_err(|source| Fenced::Unconfirmed {
                lease: lease_name.clone(),
                source,
            })?;
        let spec = lease.spec.unwrap_or_default();
        let holder = spec.holder_identity;
        let ends = spec
            .renew_time
            .or(spec.acquire_time)
            .map(|t| t.0)
            .zip(spec.lease_duration_seconds)
            .map(|(renewed, seconds)| renewed + SignedDuration::from_secs(seconds.into()));
        let left = ends
            .map(|end| end.duration_since(Timestamp::now()))
            .and_then(|left| Duration::try_from(left).ok())
            .unwrap_or_default();
        if holder.as_deref() != Some(settings.identity.as_str()) {
            fence.lost.send_replace(true);
            return Err(Fenced::Deposed {
                lease: lease_name,
                holder,
            });
        }
        if left.is_zero() {
            return Err(Fenced::Expired { lease: lease_name });
        }
        *crate::lock(&fence.ours_until) = Some(Instant::now() + left.saturating_sub(MARGIN));
        Ok(())
    }
}

/// Waits until this replica holds the Lease, then runs `work` with a
/// [`Fence`] while it does. Losing the Lease, as the renewals or a fence
/// check find out, drops `work` (passes in flight are cancelled) and ends
/// the process with an error, so Kubernetes restarts it as a follower.
pub async fn while_leader<F, W>(
    client: kube::Client,
    settings: LeaseSettings,
    work: W,
) -> anyhow::Result<()>
where
    W: FnOnce(Fence) -> F,
    F: Future<Output = anyhow::Result<()>>,
{
    let lease_name = format!("{}/{}", settings.namespace, settings.name);
    let seconds = settings.duration.as_secs().max(RENEW_AHEAD_MIN + 1);
    let manager = LeaseManagerBuilder::new(client.clone(), &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(settings.identity.clone())
        .with_field_manager("kilo-clustermesh-operator")
        .with_duration(seconds)
        .with_grace((seconds / 3).clamp(RENEW_AHEAD_MIN, seconds - 1))
        .build()
        .await
        .with_context(|| format!("preparing the leader-election Lease {lease_name}"))?;
    let (mut leading, _manager) = manager.watch().await;
    tracing::info!(identity = %settings.identity, lease = %lease_name, "waiting for leadership");
    while !*leading.borrow_and_update() {
        leading
            .changed()
            .await
            .context("the leader-election task stopped")?;
    }
    tracing::info!(identity = %settings.identity, "leading");
    let (lost, mut deposed) = watch::channel(false);
    let fence = Fence {
        lease: Some(Arc::new(LeaseFence {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            ours_until: Mutex::new(None),
            lost,
        })),
    };
    let work = work(fence);
    tokio::pin!(work);
    let lost = || {
        anyhow::anyhow!(
            "lost the leader-election Lease {lease_name}; exiting so that only the leader writes"
        )
    };
    loop {
        tokio::select! {
            result = &mut work => return result,
            changed = leading.changed() => {
                if changed.is_err() || !*leading.borrow_and_update() {
                    return Err(lost());
                }
            }
            Ok(()) = deposed.changed() => bail!(lost()),
        }
    }
}
