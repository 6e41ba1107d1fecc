//! When objects appear and disappear, as the API servers' own watch events
//! tell the harness: the clock of every latency and convergence figure.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::watcher::{self, Event},
};
use serde::de::DeserializeOwned;
use tokio::{sync::Notify, task::AbortHandle};

/// The names of one kind of object on one cluster, with when each last
/// appeared or disappeared.
pub struct Arrivals {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: AbortHandle,
}

#[derive(Default)]
struct State {
    present: HashMap<String, Instant>,
    gone: HashMap<String, Instant>,
}

impl Arrivals {
    /// Starts watching every object of kind `K` on the cluster of `client`.
    pub fn start<K>(client: Client) -> Self
    where
        K: Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        // Names are all it needs: metadata only, so the harness stays light.
        let api = Api::<PartialObjectMeta<K>>::all(client);
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let task = tokio::spawn(follow(api, state.clone(), changed.clone())).abort_handle();
        Self {
            state,
            changed,
            task,
        }
    }

    /// How many objects are present.
    pub fn count(&self) -> usize {
        lock(&self.state).present.len()
    }

    /// When `name` appeared, if it is present.
    pub fn appeared(&self, name: &str) -> Option<Instant> {
        lock(&self.state).present.get(name).copied()
    }

    /// When `name` disappeared, if it is gone.
    pub fn disappeared(&self, name: &str) -> Option<Instant> {
        lock(&self.state).gone.get(name).copied()
    }

    /// Waits until `done` holds, for at most `timeout`; false on timeout.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return true;
            }
            // A change between the check and here is not lost: `notified`
            // was created before the check.
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(self);
            }
        }
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow<K>(api: Api<K>, state: Arc<Mutex<State>>, changed: Arc<Notify>)
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
{
    let events = watcher::watcher(api, watcher::Config::default());
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let now = Instant::now();
        {
            let mut state = lock(&state);
            match event {
                Ok(Event::Apply(object) | Event::InitApply(object)) => {
                    let name = object.name_any();
                    state.gone.remove(&name);
                    state.present.entry(name).or_insert(now);
                }
                Ok(Event::Delete(object)) => {
                    let name = object.name_any();
                    state.present.remove(&name);
                    state.gone.insert(name, now);
                }
                Ok(Event::Init | Event::InitDone) | Err(_) => {}
            }
        }
        changed.notify_waiters();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
