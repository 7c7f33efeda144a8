//! A small kube-runtime-style controller framework over the [`Store`]: a watcher (list, then
//! watch from the list's revision, relist on `Expired`) feeding an object cache and a per-key
//! [`WorkQueue`], and a runner that reconciles keys with bounded concurrency, never twice at
//! once for one key, and requeues through an error policy with exponential backoff.
//!
//! The queue follows client-go's workqueue: a key is queued at most once; a key added while it
//! is being reconciled is marked dirty and queued again when that reconcile is done; delayed
//! adds keep only the earliest deadline per key.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock},
    time::Duration,
};

use futures::StreamExt;
use irikit_api::{
    Kind, ListOptions, Object, Store,
    store::{self, EventType},
};
use tokio::{sync::Notify, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

/// The identity of a namespaced (or cluster-scoped, with an empty namespace) object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// Namespace (empty for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// A reference to `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The reference of a stored object.
    pub fn of(obj: &Object) -> Self {
        let meta = obj.metadata();
        Self::new(meta.namespace.clone(), meta.name.clone())
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What to do with a key after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this delay (level-triggered resync).
    Requeue(Duration),
    /// Wait for the next change event.
    AwaitChange,
}

impl Action {
    /// Reconcile again after `after`.
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }

    /// Wait for a change event.
    pub fn await_change() -> Self {
        Action::AwaitChange
    }
}

/// Exponential backoff: `base * 2^retries`, capped at `max`, plus up to `jitter` (a fraction)
/// of random extra delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Upper bound.
    pub max: Duration,
    /// Random extra delay as a fraction of the computed delay (0 = deterministic).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        // controller-runtime's per-item limiter: 5 ms doubling, capped (here at 5 min).
        Self {
            base: Duration::from_millis(5),
            max: Duration::from_secs(300),
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retries` (0 = after the first failure).
    pub fn delay(&self, retries: u32) -> Duration {
        let factor = 2u32.saturating_pow(retries.min(31));
        let delay = self.base.saturating_mul(factor).min(self.max);
        if self.jitter > 0.0 {
            let extra = delay.mul_f64(self.jitter * rand::random::<f64>());
            (delay + extra).min(self.max)
        } else {
            delay
        }
    }
}

struct QueueInner<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    dirty: HashSet<K>,
    scheduled: HashMap<K, Instant>,
    closed: bool,
}

struct QueueShared<K> {
    inner: Mutex<QueueInner<K>>,
    notify: Notify,
}

/// A deduplicating work queue of keys (cheap to clone; clones share the queue).
pub struct WorkQueue<K> {
    shared: Arc<QueueShared<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// An empty, open queue.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(QueueShared {
                inner: Mutex::new(QueueInner {
                    ready: VecDeque::new(),
                    queued: HashSet::new(),
                    active: HashSet::new(),
                    dirty: HashSet::new(),
                    scheduled: HashMap::new(),
                    closed: false,
                }),
                notify: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueInner<K>> {
        // A panic while holding the lock leaves consistent sets behind; keep going.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `key` now (no-op if it is already queued; deferred if it is being reconciled).
    pub fn add(&self, key: K) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        if inner.active.contains(&key) {
            inner.dirty.insert(key);
            return;
        }
        if inner.queued.insert(key.clone()) {
            inner.ready.push_back(key);
            drop(inner);
            self.shared.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`. Only the earliest pending deadline per key is kept.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let deadline = Instant::now() + delay;
        {
            let mut inner = self.lock();
            if inner.closed {
                return;
            }
            if let Some(existing) = inner.scheduled.get(&key)
                && *existing <= deadline
            {
                return;
            }
            inner.scheduled.insert(key.clone(), deadline);
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let due = {
                let mut inner = queue.lock();
                if inner.scheduled.get(&key) == Some(&deadline) {
                    inner.scheduled.remove(&key);
                    true
                } else {
                    false
                }
            };
            if due {
                queue.add(key);
            }
        });
    }

    /// Takes the next key and marks it active; `None` once the queue is closed.
    pub async fn pop(&self) -> Option<K> {
        loop {
            {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                if let Some(key) = inner.ready.pop_front() {
                    inner.queued.remove(&key);
                    inner.active.insert(key.clone());
                    return Some(key);
                }
            }
            self.shared.notify.notified().await;
        }
    }

    /// Marks `key` as no longer active; queues it again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut inner = self.lock();
        inner.active.remove(key);
        if inner.dirty.remove(key) && !inner.closed && inner.queued.insert(key.clone()) {
            inner.ready.push_back(key.clone());
            drop(inner);
            self.shared.notify.notify_one();
        }
    }

    /// Closes the queue: adds are ignored and `pop` returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.notify.notify_waiters();
        self.shared.notify.notify_one();
    }

    /// Keys waiting to be taken.
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// Whether no key is waiting to be taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is being reconciled.
    pub fn is_active(&self, key: &K) -> bool {
        self.lock().active.contains(key)
    }

    /// Whether a delayed add of `key` is pending.
    pub fn is_scheduled(&self, key: &K) -> bool {
        self.lock().scheduled.contains_key(key)
    }
}

/// A reconciler of keys of type `K`.
#[async_trait::async_trait]
pub trait Reconciler<K>: Send + Sync + 'static {
    /// Reconcile errors (data: they go through [`Reconciler::error_policy`]).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Drives the object named by `key` toward its desired state. Idempotent.
    async fn reconcile(&self, key: &K) -> Result<Action, Self::Error>;

    /// What to do after a failed reconcile; `retries` counts the failures before this one
    /// since the last success. The default is exponential backoff.
    fn error_policy(&self, _key: &K, _error: &Self::Error, retries: u32) -> Action {
        Action::Requeue(Backoff::default().delay(retries))
    }
}

/// Runner settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Name for logs and spans.
    pub name: &'static str,
    /// Reconciles in flight at once (at least 1).
    pub concurrency: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            name: "controller",
            concurrency: 16,
        }
    }
}

/// Runs `reconciler` over the keys of `queue` until `token` is cancelled, then stops taking
/// keys, closes the queue and waits for in-flight reconciles to finish (graceful shutdown).
pub async fn run<K, R>(
    queue: WorkQueue<K>,
    reconciler: Arc<R>,
    config: ControllerConfig,
    token: CancellationToken,
) where
    K: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static,
    R: Reconciler<K>,
{
    let semaphore = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let failures: Arc<Mutex<HashMap<K, u32>>> = Arc::default();
    let mut tasks = JoinSet::new();
    loop {
        let permit = tokio::select! {
            biased;
            () = token.cancelled() => break,
            permit = semaphore.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let key = tokio::select! {
            biased;
            () = token.cancelled() => break,
            key = queue.pop() => match key {
                Some(key) => key,
                None => break,
            },
        };
        let queue = queue.clone();
        let reconciler = reconciler.clone();
        let failures = failures.clone();
        let span = tracing::debug_span!("reconcile", controller = config.name, object = %key);
        tasks.spawn(
            async move {
                let result = reconciler.reconcile(&key).await;
                let action = match result {
                    Ok(action) => {
                        lock(&failures).remove(&key);
                        action
                    }
                    Err(err) => {
                        let retries = {
                            let mut failures = lock(&failures);
                            let n = failures.entry(key.clone()).or_insert(0);
                            *n = n.saturating_add(1);
                            *n - 1
                        };
                        let action = reconciler.error_policy(&key, &err, retries);
                        warn!(error = %format!("{err:#}"), retries, ?action, "reconcile failed");
                        action
                    }
                };
                queue.done(&key);
                if let Action::Requeue(after) = action {
                    queue.add_after(key, after);
                }
                drop(permit);
            }
            .instrument(span),
        );
        while tasks.try_join_next().is_some() {}
    }
    queue.close();
    while tasks.join_next().await.is_some() {}
    debug!(controller = config.name, "controller stopped");
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A read cache of the objects of one kind, kept by [`watch`] (cheap to clone).
#[derive(Clone, Default)]
pub struct ObjectCache {
    objects: Arc<RwLock<HashMap<ObjectRef, Object>>>,
    synced: Arc<std::sync::atomic::AtomicBool>,
}

impl ObjectCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached object named by `key`.
    pub fn get(&self, key: &ObjectRef) -> Option<Object> {
        self.objects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// `f` of the cached object under `key`, under the read lock (no clone of the object);
    /// `None` when there is none.
    pub fn with<T>(&self, key: &ObjectRef, f: impl FnOnce(&Object) -> T) -> Option<T> {
        self.objects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(f)
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Object> {
        self.objects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// `f` of every cached object where it answers `Some`, under the read lock (no clones of
    /// the objects themselves).
    pub fn filter_map<T>(&self, f: impl FnMut(&Object) -> Option<T>) -> Vec<T> {
        self.objects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(f)
            .collect()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.objects
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`watch`] has filled the cache from a first list.
    pub fn is_synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjectRef, Object>> {
        self.objects.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps `cache` in sync with the objects of `kind` that match `options` and calls `on_change`
/// with every object that was listed, added, modified or deleted (and with the last state of
/// objects that vanished across a relist). Lists, watches from the list's revision, and relists
/// when the watch expires, ends or fails (with backoff on errors). Returns when `token` is
/// cancelled.
pub async fn watch(
    store: Arc<dyn Store>,
    kind: Kind,
    options: ListOptions,
    cache: ObjectCache,
    mut on_change: impl FnMut(&Object) + Send,
    token: CancellationToken,
) {
    let backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(10),
        jitter: 0.1,
    };
    let mut failures = 0u32;
    loop {
        if token.is_cancelled() {
            return;
        }
        let list = tokio::select! {
            () = token.cancelled() => return,
            list = store.list(kind, &options) => list,
        };
        let list = match list {
            Ok(list) => list,
            Err(err) => {
                warn!(%kind, error = %err, "list failed");
                if !sleep_or_cancel(backoff.delay(failures), &token).await {
                    return;
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        let mut stream = match store.watch(Some(kind), list.revision).await {
            Ok(stream) => stream,
            Err(err) => {
                warn!(%kind, error = %err, "watch failed");
                if !sleep_or_cancel(backoff.delay(failures), &token).await {
                    return;
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        failures = 0;
        let fresh: HashMap<ObjectRef, Object> = list
            .items
            .into_iter()
            .map(|obj| (ObjectRef::of(&obj), obj))
            .collect();
        let gone: Vec<Object> = {
            let mut cached = cache.write();
            let gone = cached
                .iter()
                .filter(|(key, _)| !fresh.contains_key(key))
                .map(|(_, obj)| obj.clone())
                .collect();
            *cached = fresh.clone();
            cache
                .synced
                .store(true, std::sync::atomic::Ordering::Release);
            gone
        };
        for obj in gone.iter().chain(fresh.values()) {
            on_change(obj);
        }
        loop {
            let event = tokio::select! {
                () = token.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                Some(Ok(event)) => {
                    let key = ObjectRef::of(&event.object);
                    let matches = options.matches(&event.object);
                    let known = {
                        let mut cached = cache.write();
                        if event.type_ == EventType::Deleted || !matches {
                            cached.remove(&key).is_some()
                        } else {
                            cached.insert(key, event.object.clone());
                            true
                        }
                    };
                    if matches || known {
                        on_change(&event.object);
                    }
                }
                Some(Err(store::Error::Expired { requested, oldest })) => {
                    debug!(%kind, requested, oldest, "watch expired; relisting");
                    break;
                }
                Some(Err(err)) => {
                    warn!(%kind, error = %err, "watch failed; relisting");
                    break;
                }
                None => {
                    debug!(%kind, "watch ended; relisting");
                    break;
                }
            }
        }
    }
}

/// Sleeps for `delay`; `false` when `token` was cancelled first.
pub(crate) async fn sleep_or_cancel(delay: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        () = token.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

impl WorkQueue<ObjectRef> {
    /// Queues every object in `cache` for which `pred` holds.
    pub(crate) fn add_matching(&self, cache: &ObjectCache, pred: impl Fn(&Object) -> bool) {
        for key in cache.filter_map(|obj| pred(obj).then(|| ObjectRef::of(obj))) {
            self.add(key);
        }
    }
}

/// The tasks of one poollet: controllers and watches on one store, all stopped by one token.
pub(crate) struct Tasks {
    set: JoinSet<()>,
    store: Arc<dyn Store>,
    token: CancellationToken,
}

impl Tasks {
    /// No tasks yet.
    pub(crate) fn new(store: Arc<dyn Store>, token: CancellationToken) -> Self {
        Self {
            set: JoinSet::new(),
            store,
            token,
        }
    }

    /// The token that stops the tasks.
    pub(crate) fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a task.
    pub(crate) fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.set.spawn(task);
    }

    /// Spawns [`run`] of `reconciler` over `queue`.
    pub(crate) fn controller<R: Reconciler<ObjectRef>>(
        &mut self,
        name: &'static str,
        concurrency: usize,
        queue: &WorkQueue<ObjectRef>,
        reconciler: Arc<R>,
    ) {
        let config = ControllerConfig { name, concurrency };
        let task = run(queue.clone(), reconciler, config, self.token.clone());
        self.set.spawn(task);
    }

    /// Spawns a [`watch`] of `kind` that keeps `cache`.
    pub(crate) fn watch(
        &mut self,
        kind: Kind,
        options: ListOptions,
        cache: ObjectCache,
        on_change: impl FnMut(&Object) + Send + 'static,
    ) {
        let store = self.store.clone();
        let task = watch(store, kind, options, cache, on_change, self.token.clone());
        self.set.spawn(task);
    }

    /// Waits until every task has ended.
    pub(crate) async fn join(mut self) {
        while self.set.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests;
