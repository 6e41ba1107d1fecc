//! The DNS names of node endpoints, resolved on the operator: with
//! `--endpoint-dns=resolve` their Peers carry the address, and with `keep`
//! a name the operator cannot resolve is a warning in the status.
//!
//! A pass that meets a name for the first time waits for its lookup (at most
//! [`LOOKUP_TIMEOUT`]); after that each name in use is looked up again every
//! [`REFRESH`] in the background, and a changed answer starts a pass of the
//! meshes that use it. A lookup that fails keeps the last address: a name
//! that stops resolving never takes a working Peer away.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use api::ClusterMesh;
use futures::{FutureExt, future::BoxFuture};
use kube::runtime::reflector::ObjectRef;
use mesh::{DnsAnswer, DnsAnswers};
use tokio::{sync::mpsc, time::Instant};

use crate::lock;

/// How often a name in use is looked up again (kg resolves at each of its
/// 30 s resyncs).
pub const REFRESH: Duration = Duration::from_secs(30);
/// How long one lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// A name no pass has asked for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The addresses of one name, or why there are none.
type Found = BoxFuture<'static, Result<Vec<IpAddr>, String>>;

/// Looks up one name.
#[derive(Clone)]
pub struct Lookup(Arc<dyn Fn(String) -> Found + Send + Sync>);

impl Lookup {
    /// The system's resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
    pub fn system() -> Self {
        Self::new(|name| {
            async move {
                let found = tokio::net::lookup_host((name.as_str(), 0))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(found.map(|address| address.ip()).collect())
            }
            .boxed()
        })
    }

    pub fn new(
        lookup: impl Fn(String) -> BoxFuture<'static, Result<Vec<IpAddr>, String>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self(Arc::new(lookup))
    }

    /// One address for `name`: the lowest IPv4 address, else the lowest
    /// IPv6 one, so that a name with several addresses does not make its
    /// Peers flap between them.
    async fn resolve(&self, name: &str) -> Result<IpAddr, String> {
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, (self.0)(name.to_owned()))
            .await
            .map_err(|_| format!("no answer within {LOOKUP_TIMEOUT:?}"))??;
        found
            .iter()
            .filter(|ip| ip.is_ipv4())
            .min()
            .or_else(|| found.iter().min())
            .copied()
            .ok_or_else(|| "no address".to_owned())
    }
}

impl fmt::Debug for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lookup")
    }
}

struct Entry {
    answer: DnsAnswer,
    /// The meshes whose last pass used the name.
    users: HashSet<ObjectRef<ClusterMesh>>,
    asked: Instant,
}

/// The answers, shared by every pass and the refresh task.
#[derive(Clone)]
pub struct Resolver {
    lookup: Lookup,
    names: Arc<Mutex<BTreeMap<String, Entry>>>,
}

impl Resolver {
    /// A resolver whose refresh task sends the meshes to pass again to
    /// `trigger`; the task ends with the last clone of the resolver.
    pub fn start(lookup: Lookup, trigger: mpsc::UnboundedSender<ObjectRef<ClusterMesh>>) -> Self {
        let resolver = Self {
            lookup,
            names: Arc::default(),
        };
        let names = Arc::downgrade(&resolver.names);
        let lookup = resolver.lookup.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tick.tick().await;
                let Some(names) = names.upgrade() else {
                    return;
                };
                let resolver = Self {
                    lookup: lookup.clone(),
                    names,
                };
                for mesh in resolver.refresh().await {
                    let _ = trigger.send(mesh);
                }
            }
        });
        resolver
    }

    /// The answers for the names `mesh` uses now; names met for the first
    /// time are looked up before this returns.
    pub async fn answers(
        &self,
        mesh: &ObjectRef<ClusterMesh>,
        used: BTreeSet<String>,
    ) -> DnsAnswers {
        let new: Vec<String> = {
            let names = lock(&self.names);
            used.iter()
                .filter(|name| !names.contains_key(*name))
                .cloned()
                .collect()
        };
        let looked_up = futures::future::join_all(new.into_iter().map(|name| async move {
            let answer = answer(self.lookup.resolve(&name).await, None);
            (name, answer)
        }))
        .await;
        let mut names = lock(&self.names);
        for (name, answer) in looked_up {
            names.entry(name).or_insert(Entry {
                answer,
                users: HashSet::new(),
                asked: Instant::now(),
            });
        }
        for (name, entry) in names.iter_mut() {
            if used.contains(name) {
                entry.users.insert(mesh.clone());
                entry.asked = Instant::now();
            } else {
                entry.users.remove(mesh);
            }
        }
        used.iter()
            .filter_map(|name| Some((name.clone(), names.get(name)?.answer.clone())))
            .collect()
    }

    /// Looks every name in use up again; returns the meshes whose answers
    /// changed.
    async fn refresh(&self) -> HashSet<ObjectRef<ClusterMesh>> {
        let in_use: Vec<(String, Option<IpAddr>)> = {
            let mut names = lock(&self.names);
            names.retain(|_, entry| entry.asked.elapsed() < FORGET_AFTER);
            names
                .iter()
                .map(|(name, entry)| (name.clone(), entry.answer.address))
                .collect()
        };
        let looked_up =
            futures::future::join_all(in_use.into_iter().map(|(name, last)| async move {
                let answer = answer(self.lookup.resolve(&name).await, last);
                (name, answer)
            }))
            .await;
        let mut changed = HashSet::new();
        let mut names = lock(&self.names);
        for (name, answer) in looked_up {
            let Some(entry) = names.get_mut(&name) else {
                continue;
            };
            if entry.answer != answer {
                tracing::info!(%name, address = ?answer.address, error = ?answer.error, "endpoint name resolves differently");
                entry.answer = answer;
                changed.extend(entry.users.iter().cloned());
            }
        }
        changed
    }
}

/// The answer after a lookup: a failure keeps the `last` address.
fn answer(found: Result<IpAddr, String>, last: Option<IpAddr>) -> DnsAnswer {
    match found {
        Ok(address) => DnsAnswer {
            address: Some(address),
            error: None,
        },
        Err(error) => DnsAnswer {
            address: last,
            error: Some(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> ObjectRef<ClusterMesh> {
        ObjectRef::new("mesh").within("kilo-system")
    }

    type Table = Arc<Mutex<BTreeMap<String, Vec<IpAddr>>>>;

    /// A lookup that answers from a table the test changes.
    fn table() -> (Lookup, Table) {
        let table: Table = Arc::default();
        let read = table.clone();
        let lookup = Lookup::new(move |name| {
            let found = lock(&read).get(&name).cloned();
            async move { found.ok_or_else(|| "NXDOMAIN".to_owned()) }.boxed()
        });
        (lookup, table)
    }

    #[tokio::test]
    async fn the_system_resolver_reads_the_hosts_file() {
        let address = Lookup::system().resolve("localhost").await.unwrap();
        assert!(address.is_loopback(), "{address}");
    }

    #[tokio::test]
    async fn a_name_that_stops_resolving_keeps_its_address_and_a_change_triggers_its_meshes() {
        let (lookup, table) = table();
        lock(&table).insert(
            "n.example".into(),
            vec!["192.0.2.9".parse().unwrap(), "192.0.2.3".parse().unwrap()],
        );
        let (trigger, _triggers) = mpsc::unbounded_channel();
        let resolver = Resolver::start(lookup, trigger);
        let used = BTreeSet::from(["n.example".to_owned(), "dead.example".to_owned()]);
        let answers = resolver.answers(&mesh(), used.clone()).await;
        assert_eq!(
            answers["n.example"].address,
            Some("192.0.2.3".parse().unwrap()),
            "the lowest address"
        );
        assert_eq!(answers["dead.example"].error.as_deref(), Some("NXDOMAIN"));

        lock(&table).clear();
        assert_eq!(resolver.refresh().await, HashSet::from([mesh()]));
        let answers = resolver.answers(&mesh(), used.clone()).await;
        assert_eq!(
            answers["n.example"].address,
            Some("192.0.2.3".parse().unwrap())
        );
        assert_eq!(answers["n.example"].error.as_deref(), Some("NXDOMAIN"));
        assert!(resolver.refresh().await.is_empty(), "nothing changed since");

        lock(&table).insert("n.example".into(), vec!["192.0.2.4".parse().unwrap()]);
        assert_eq!(resolver.refresh().await, HashSet::from([mesh()]));
        let answers = resolver.answers(&mesh(), used).await;
        assert_eq!(
            answers["n.example"],
            DnsAnswer {
                address: Some("192.0.2.4".parse().unwrap()),
                error: None
            }
        );
    }
}
