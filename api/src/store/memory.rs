//! The embedded in-memory store: a global revision counter, a bounded event history for
//! watch-from-revision (older revisions are compacted) and broadcast channels for live
//! watchers — one per watched kind and one for all-kinds watchers, so a write wakes only the
//! watchers of its kind. All writes happen under one mutex, so revisions and event order agree.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use futures::StreamExt;
use tokio::sync::broadcast;

use super::{
    Error, EventType, KnownUpdate, ListOptions, Object, ObjectList, Outcome, Result, Store,
    WatchEvent, WatchStream, prepare_create, prepare_delete, prepare_update,
};
use crate::object::Kind;

/// Default number of events kept for watch-from-revision.
pub const DEFAULT_HISTORY: usize = 100_000;

/// Most events a one-kind live channel buffers for a slow watcher (which then gets
/// [`Error::Expired`] and relists). tokio's broadcast channel allocates its whole buffer at
/// once, so only the all-kinds channel buffers the full history.
const KIND_CHANNEL_BUFFER: usize = 16_384;

type Key = (Kind, String, String);

struct State {
    objects: BTreeMap<Key, Object>,
    revision: u64,
    history: VecDeque<Arc<WatchEvent>>,
    history_limit: usize,
    /// Lowest revision a watch can still start after (`from + 1 >= oldest`).
    oldest: u64,
    /// Live channels, created at the first watch of their kind (`None`: all kinds, buffering
    /// `history_limit` events; one kind: up to [`KIND_CHANNEL_BUFFER`]). Only watched kinds
    /// get one.
    channels: HashMap<Option<Kind>, broadcast::Sender<Arc<WatchEvent>>>,
}

/// The in-memory [`Store`].
pub struct MemoryStore {
    state: Mutex<State>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store keeping [`DEFAULT_HISTORY`] events.
    pub fn new() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// A store keeping `history` events for watch-from-revision and buffering as many for
    /// live watchers (a watcher that falls further behind gets [`Error::Expired`]).
    pub fn with_history(history: usize) -> Self {
        let history = history.max(16);
        Self {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                revision: 0,
                history: VecDeque::new(),
                history_limit: history,
                oldest: 1,
                channels: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-write; the map is still
        // structurally valid, so keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn key(kind: Kind, namespace: &str, name: &str) -> Key {
        let namespace = if kind.namespaced() { namespace } else { "" };
        (kind, namespace.to_string(), name.to_string())
    }

    fn key_of(obj: &Object) -> Key {
        Self::key(obj.kind(), &obj.metadata().namespace, &obj.metadata().name)
    }

    /// Records an event at `revision` (the caller already advanced the counter).
    fn emit(&self, state: &mut State, type_: EventType, object: Object, revision: u64) {
        let event = Arc::new(WatchEvent {
            type_,
            object,
            revision,
        });
        state.history.push_back(event.clone());
        while state.history.len() > state.history_limit {
            if let Some(old) = state.history.pop_front() {
                state.oldest = state.oldest.max(old.revision + 1);
            }
        }
        // No receivers is fine.
        for key in [Some(event.object.kind()), None] {
            if let Some(tx) = state.channels.get(&key) {
                let _ = tx.send(event.clone());
            }
        }
    }

    fn apply(&self, state: &mut State, outcome: Outcome, revision: u64) -> Object {
        match outcome {
            Outcome::Write(mut obj) => {
                obj.metadata_mut().resource_version = revision.to_string();
                let key = Self::key_of(&obj);
                let existed = state.objects.insert(key, obj.clone()).is_some();
                let type_ = if existed {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                self.emit(state, type_, obj.clone(), revision);
                obj
            }
            Outcome::Remove(mut obj) => {
                state.objects.remove(&Self::key_of(&obj));
                obj.metadata_mut().resource_version = revision.to_string();
                self.emit(state, EventType::Deleted, obj.clone(), revision);
                obj
            }
            Outcome::Unchanged(obj) => obj,
        }
    }

    fn not_found(kind: Kind, namespace: &str, name: &str) -> Error {
        let key = if kind.namespaced() {
            format!("{namespace}/{name}")
        } else {
            name.to_string()
        };
        Error::NotFound { kind, key }
    }

    /// Writes all of `writes` (object, status only) at one revision, or none of them.
    fn write_many(&self, writes: impl IntoIterator<Item = (Object, bool)>) -> Result<Vec<Object>> {
        let mut state = self.lock();
        let mut outcomes = Vec::new();
        for (obj, status_only) in writes {
            if obj.metadata().resource_version.is_empty() {
                return Err(Error::BadRequest(format!(
                    "update_many: {} {:?} has no resourceVersion precondition",
                    obj.kind(),
                    obj.key()
                )));
            }
            let key = Self::key_of(&obj);
            let old = state
                .objects
                .get(&key)
                .ok_or_else(|| Self::not_found(key.0, &key.1, &key.2))?;
            outcomes.push(prepare_update(old, obj, status_only)?);
        }
        state.revision += 1;
        let revision = state.revision;
        Ok(outcomes
            .into_iter()
            .map(|o| self.apply(&mut state, o, revision))
            .collect())
    }

    fn write_one(&self, obj: Object, status_only: bool) -> Result<Object> {
        let mut state = self.lock();
        let key = Self::key_of(&obj);
        let old = state
            .objects
            .get(&key)
            .ok_or_else(|| Self::not_found(key.0, &key.1, &key.2))?;
        let outcome = prepare_update(old, obj, status_only)?;
        state.revision += 1;
        let revision = state.revision;
        Ok(self.apply(&mut state, outcome, revision))
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object> {
        self.lock()
            .objects
            .get(&Self::key(kind, namespace, name))
            .cloned()
            .ok_or_else(|| Self::not_found(kind, namespace, name))
    }

    async fn list(&self, kind: Kind, options: &ListOptions) -> Result<ObjectList> {
        options.check(kind)?;
        let state = self.lock();
        let start = (kind, String::new(), String::new());
        let items = state
            .objects
            .range(start..)
            .take_while(|(key, _)| key.0 == kind)
            .map(|(_, obj)| obj)
            .filter(|obj| options.matches(obj))
            .cloned()
            .collect();
        Ok(ObjectList {
            items,
            revision: state.revision,
        })
    }

    async fn create(&self, obj: Object) -> Result<Object> {
        let obj = prepare_create(obj)?;
        let mut state = self.lock();
        let key = Self::key_of(&obj);
        if state.objects.contains_key(&key) {
            return Err(Error::AlreadyExists {
                kind: obj.kind(),
                key: obj.key(),
            });
        }
        state.revision += 1;
        let revision = state.revision;
        Ok(self.apply(&mut state, Outcome::Write(obj), revision))
    }

    async fn update(&self, obj: Object) -> Result<Object> {
        self.write_one(obj, false)
    }

    async fn update_status(&self, obj: Object) -> Result<Object> {
        self.write_one(obj, true)
    }

    async fn update_many(&self, objs: Vec<Object>) -> Result<Vec<Object>> {
        self.write_many(objs.into_iter().map(|obj| (obj, false)))
    }

    async fn update_many_from(&self, updates: Vec<KnownUpdate>) -> Result<Vec<Object>> {
        // The stored object is at hand under the lock: check against it, not the caller's copy.
        self.write_many(updates.into_iter().map(|update| {
            let status_only = update.status_only;
            (
                KnownUpdate::new(update.current, update.desired).desired,
                status_only,
            )
        }))
    }

    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<Option<Object>> {
        let mut state = self.lock();
        let key = Self::key(kind, namespace, name);
        let old = state
            .objects
            .get(&key)
            .ok_or_else(|| Self::not_found(kind, namespace, name))?;
        let outcome = prepare_delete(old, resource_version)?;
        let keep = !matches!(outcome, Outcome::Remove(_));
        if !matches!(outcome, Outcome::Unchanged(_)) {
            state.revision += 1;
        }
        let revision = state.revision;
        let obj = self.apply(&mut state, outcome, revision);
        Ok(keep.then_some(obj))
    }

    async fn watch(&self, kind: Option<Kind>, revision: u64) -> Result<WatchStream> {
        let mut state = self.lock();
        if revision + 1 < state.oldest {
            return Err(Error::Expired {
                requested: revision,
                oldest: state.oldest,
            });
        }
        let wanted = move |ev: &WatchEvent| kind.is_none_or(|k| ev.object.kind() == k);
        let backlog: Vec<Arc<WatchEvent>> = state
            .history
            .iter()
            .filter(|ev| ev.revision > revision && wanted(ev))
            .cloned()
            .collect();
        let last = backlog
            .last()
            .map_or(revision, |ev| ev.revision)
            .max(revision);
        // Subscribe under the lock: every later write is delivered through `rx`.
        let limit = if kind.is_some() {
            state.history_limit.min(KIND_CHANNEL_BUFFER)
        } else {
            state.history_limit
        };
        let rx = state
            .channels
            .entry(kind)
            .or_insert_with(|| broadcast::channel(limit).0)
            .subscribe();
        let oldest = state.oldest;
        drop(state);
        let live = futures::stream::unfold(Some(rx), move |rx| async move {
            let mut rx = rx?;
            loop {
                match rx.recv().await {
                    Ok(ev) if ev.revision > last && wanted(&ev) => return Some((Ok(ev), Some(rx))),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Some((
                            Err(Error::Expired {
                                requested: last,
                                oldest,
                            }),
                            None,
                        ));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let stream = futures::stream::iter(backlog.into_iter().map(Ok))
            .chain(live)
            .map(|res| res.map(|ev: Arc<WatchEvent>| Arc::unwrap_or_clone(ev)));
        Ok(stream.boxed())
    }

    async fn compact(&self, revision: u64) -> Result<()> {
        let mut state = self.lock();
        let revision = revision.min(state.revision);
        while state
            .history
            .front()
            .is_some_and(|ev| ev.revision < revision)
        {
            state.history.pop_front();
        }
        state.oldest = state.oldest.max(revision);
        Ok(())
    }

    async fn revision(&self) -> Result<u64> {
        Ok(self.lock().revision)
    }
}
