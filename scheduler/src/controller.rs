//! The scheduler controller: lists and watches pools and unscheduled objects through the
//! [`Store`], decides with the pure [`Cache`], and binds with resourceVersion preconditions.
//!
//! **Pipelined, batched binds.** Up to [`Config::concurrency`] store writes are in flight at
//! once. A bind compares the versions the scheduler already holds (the object's and the pool's,
//! from the list, the watch or its own last bind) and writes the object (`spec.*PoolRef`) and
//! the pool (an annotation); up to [`Config::batch`] binds to distinct pools share one
//! [`Store::update_many_from`] call — on etcd one Txn of compares and puts, with no read
//! before it. Batching is what makes etcd 3.4 fast here: every Txn with compares pays for a
//! concurrent read view of the backend (a copy of its uncommitted write buffer), which makes
//! a one-key Txn several times dearer than a plain put under write load; a batch pays it once.
//! A batch is all or nothing, so a conflicting batch is retried one bind per write
//! (`solo`), and only a failed single bind re-reads its object — inside its own task: the
//! controller loop never awaits a store call.
//!
//! **Why concurrent schedulers never overcommit.** One ordered watch stream (all kinds, in
//! revision order; within one revision a bind's object comes before its pool, the order of
//! the writes) feeds the cache, so when the cache holds a usable pool at resourceVersion `Y`
//! it has also seen every bind that touched that pool up to `Y` (every bind writes the pool;
//! pools listed at a version the watch has not reached yet are unusable until it does).
//! A bind commits only if the pool is still at `Y`, i.e. no bind by anyone (and no capacity
//! change) happened since the cache counted the pool's instances; otherwise it fails with
//! Conflict, the assumed instance is forgotten, the pool is skipped until the watch delivers
//! its newer version, and the object is retried. Within one scheduler, the assume cache counts
//! in-flight binds, and at most one bind per pool is in flight: the next bind's precondition
//! is the pool version this one produces. The pool must be written by every bind, not only
//! compared: comparing alone would let two schedulers that both saw `Y` both commit. Every
//! bound object counts once, because its bind and its own echo on the watch carry the same
//! uid (the cache replaces the assumed instance).
//!
//! A per-pool claim key written instead of the pool object would shrink each bind's second
//! write but not remove it (two schedulers must collide on some key), so the pool object
//! stays in the Txn and no new kind is needed.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use irikit_api::{
    ListOptions, Object, Resource, Store,
    core::{Event, EventSource, ObjectReference},
    meta::ObjectMeta,
    store::{self, EventType, KnownUpdate, now_rfc3339},
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    core::{Cache, Decision},
    flavor::{BIND_ANNOTATION, Flavor},
};

/// Most binds per write: etcd's default `--max-txn-ops` is 128 and each bind compares and
/// writes two keys.
pub const MAX_BATCH: usize = 64;

/// Controller settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Store writes in flight at once (pipelining for remote stores); each carries up to
    /// `batch` binds.
    pub concurrency: usize,
    /// Most binds committed by one store write (one etcd Txn). Binds of one batch go to
    /// distinct pools; a conflicting batch is retried one bind per write.
    pub batch: usize,
    /// Whether to store OutOfCapacity events.
    pub emit_events: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            concurrency: 64,
            batch: 16,
            emit_events: true,
        }
    }
}

/// Counters and per-bind latencies, shared with the caller.
#[derive(Debug, Default)]
pub struct Stats {
    /// Successful binds.
    pub binds: AtomicU64,
    /// Binds lost to a conflict (retried).
    pub conflicts: AtomicU64,
    /// OutOfCapacity decisions.
    pub unschedulable: AtomicU64,
    /// Relists after an expired watch.
    pub resyncs: AtomicU64,
    /// Duration of the last initial list + watch set-up, in microseconds.
    pub sync_us: AtomicU64,
    /// Per-bind latency (decision start → bind acknowledged), in microseconds.
    pub latencies_us: Mutex<Vec<u64>>,
    /// Reservation mode: Reservations created.
    pub reservations: AtomicU64,
    /// Reservation mode: best-effort binds to pools without reservations.
    pub fallbacks: AtomicU64,
}

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed in a way that a relist does not fix.
    #[error("store")]
    Store(#[source] store::Error),
}

/// One decided bind: the object to its pool, both at the versions the cache holds.
struct Bind {
    key: String,
    uid: String,
    pool: String,
    object_revision: u64,
    pool_revision: u64,
    started: Instant,
    /// Object, then pool (moved into the store write when the batch is spawned).
    updates: Vec<KnownUpdate>,
}

/// A committed (or failed) batch of binds.
struct BatchDone {
    binds: Vec<Bind>,
    result: store::Result<Vec<Object>>,
    /// For a failed single bind: the object re-read.
    fresh: Option<store::Result<Object>>,
}

struct State<F: Flavor> {
    cache: Cache,
    /// Latest pool objects (the resourceVersion is the bind precondition).
    pools: HashMap<String, Object>,
    /// Unbound objects by key.
    pending: HashMap<String, Object>,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Unschedulable: retried when a pool changes.
    parked: HashSet<String>,
    /// Waiting for a busy or stale pool: retried on the next pool event or bind completion.
    waiting: HashSet<String>,
    /// Keys with a bind in flight.
    inflight_keys: HashSet<String>,
    /// Keys whose batch conflicted: their next bind is a write of its own, so one stale
    /// pool does not fail the others again.
    solo: HashSet<String>,
    /// Pools whose version lost a bind race: skipped until the watch shows a newer version.
    stale: HashMap<String, u64>,
    /// Pools listed at a version newer than the watch start: skipped until the watch delivers
    /// that version (only then has the cache seen every bind that touched them).
    syncing: HashMap<String, u64>,
    /// Object events at or below this revision are already in the list.
    objects_listed_at: u64,
    _flavor: std::marker::PhantomData<F>,
}

impl<F: Flavor> State<F> {
    fn new() -> Self {
        Self {
            cache: Cache::new(),
            pools: HashMap::new(),
            pending: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            parked: HashSet::new(),
            waiting: HashSet::new(),
            inflight_keys: HashSet::new(),
            solo: HashSet::new(),
            stale: HashMap::new(),
            syncing: HashMap::new(),
            objects_listed_at: 0,
            _flavor: std::marker::PhantomData,
        }
    }

    fn enqueue(&mut self, key: String) {
        if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
    }

    fn requeue_set(&mut self, parked: bool) {
        let keys: Vec<String> = if parked {
            self.parked.drain().collect()
        } else {
            self.waiting.drain().collect()
        };
        for key in keys {
            self.enqueue(key);
        }
    }

    fn apply_pool(&mut self, obj: Object, deleted: bool) {
        let name = obj.metadata().name.clone();
        if deleted {
            self.cache.remove_pool(&name);
            self.pools.remove(&name);
            self.stale.remove(&name);
            self.syncing.remove(&name);
            return;
        }
        if let Some(listed_at) = self.syncing.get(&name)
            && obj.revision() >= *listed_at
        {
            self.syncing.remove(&name);
            if !self.stale.contains_key(&name) {
                self.cache.set_busy(&name, false);
            }
            self.requeue_set(false);
        }
        if let Some(known) = self.pools.get(&name)
            && known.revision() >= obj.revision()
        {
            return;
        }
        let Some(info) = F::pool_info(&obj) else {
            return;
        };
        if let Some(stale_at) = self.stale.get(&name)
            && obj.revision() > *stale_at
        {
            self.stale.remove(&name);
            if !self.syncing.contains_key(&name) {
                self.cache.set_busy(&name, false);
            }
        }
        self.pools.insert(name, obj);
        if self.cache.upsert_pool(info) {
            self.requeue_set(true);
        }
        self.requeue_set(false);
    }

    fn apply_object(&mut self, obj: Object, deleted: bool) {
        let key = obj.key();
        let uid = obj.metadata().uid.clone();
        if deleted {
            if self.cache.has_instance(&uid) {
                // Freed capacity: retry the unschedulable ones.
                self.cache.remove_instance(&uid);
                self.requeue_set(true);
            }
            self.pending.remove(&key);
            self.parked.remove(&key);
            self.waiting.remove(&key);
            self.solo.remove(&key);
            return;
        }
        if let Some((pool, class, demand)) = F::bound(&obj) {
            self.cache.add_instance(&uid, &pool, &class, demand);
            self.solo.remove(&key);
            self.pending.remove(&key);
            self.parked.remove(&key);
            self.waiting.remove(&key);
            return;
        }
        if F::request(&obj).is_none() {
            self.pending.remove(&key);
            return;
        }
        if let Some(known) = self.pending.get(&key)
            && known.revision() > obj.revision()
        {
            return;
        }
        self.pending.insert(key.clone(), obj);
        self.parked.remove(&key);
        self.waiting.remove(&key);
        if !self.inflight_keys.contains(&key) {
            self.enqueue(key);
        }
    }
}

/// A machine or volume scheduler over a store.
pub struct Scheduler<F: Flavor> {
    store: Arc<dyn Store>,
    config: Config,
    stats: Arc<Stats>,
    _flavor: std::marker::PhantomData<F>,
}

impl<F: Flavor> Scheduler<F> {
    /// A scheduler over `store`.
    pub fn new(store: Arc<dyn Store>, config: Config) -> Self {
        Self {
            store,
            config,
            stats: Arc::new(Stats::default()),
            _flavor: std::marker::PhantomData,
        }
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `cancel` fires. Expired watches relist (resync); other store errors are
    /// retried with backoff.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), Error> {
        relist_loop(F::COMPONENT, &self.stats, &cancel, || {
            self.run_once(&cancel)
        })
        .await
    }

    async fn run_once(&self, cancel: &CancellationToken) -> store::Result<()> {
        let sync_started = Instant::now();
        let mut state = State::<F>::new();
        // Objects first, then pools, then a watch from the objects' revision: the watch never
        // replays the objects already listed (etcd 3.4 catches a watch up from old revisions
        // in rounds that each re-read the whole backlog). A pool listed at a newer version
        // than the watch start may have bound objects the list missed, so it is skipped
        // until the watch delivers that version (its own write is on the watch, so it will).
        let objects = self.store.list(F::OBJECT, &ListOptions::all()).await?;
        let pools = self.store.list(F::POOL, &ListOptions::all()).await?;
        state.objects_listed_at = objects.revision;
        for obj in objects.items {
            state.apply_object(obj, false);
        }
        for pool in pools.items {
            let (name, revision) = (pool.metadata().name.clone(), pool.revision());
            state.apply_pool(pool, false);
            if revision > objects.revision {
                state.cache.set_busy(&name, true);
                state.syncing.insert(name, revision);
            }
        }
        let mut stream = self.store.watch(None, objects.revision).await?;
        let sync_us = u64::try_from(sync_started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.sync_us.store(sync_us, Ordering::Relaxed);
        info!(
            component = F::COMPONENT,
            pools = state.cache.pool_count(),
            pending = state.pending.len(),
            "scheduler synced"
        );
        let mut inflight: JoinSet<BatchDone> = JoinSet::new();
        let mut events: JoinSet<()> = JoinSet::new();
        let concurrency = self.config.concurrency.max(1);
        let batch_size = self.config.batch.clamp(1, MAX_BATCH);
        loop {
            // Up to `concurrency` store writes in flight, each of up to `batch_size` binds; the
            // batch being filled holds a slot.
            let mut batch = Vec::new();
            loop {
                let used = inflight.len() + usize::from(!batch.is_empty());
                let room_in_batch = !batch.is_empty() && batch.len() < batch_size;
                if used >= concurrency && !room_in_batch {
                    break;
                }
                let Some(key) = state.queue.pop_front() else {
                    break;
                };
                state.queued.remove(&key);
                let solo = state.solo.contains(&key);
                if solo && used >= concurrency {
                    state.enqueue(key);
                    break;
                }
                let Some(bind) = self.attempt(&mut state, key, &mut events) else {
                    continue;
                };
                if solo {
                    state.solo.remove(&bind.key);
                    self.spawn_batch(&mut inflight, vec![bind]);
                    continue;
                }
                batch.push(bind);
                if batch.len() == batch_size {
                    self.spawn_batch(&mut inflight, std::mem::take(&mut batch));
                }
            }
            if !batch.is_empty() {
                self.spawn_batch(&mut inflight, batch);
            }
            while events.try_join_next().is_some() {}
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    // Finish in-flight binds so the store and our counters agree.
                    while let Some(done) = inflight.join_next().await {
                        if let Ok(done) = done { self.finish(&mut state, done); }
                    }
                    while events.join_next().await.is_some() {}
                    return Ok(());
                }
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Ok(done) = done {
                        self.finish(&mut state, done);
                    }
                }
                ev = stream.next() => {
                    let Some(ev) = ev else {
                        return Err(store::Error::Backend("watch ended".into()));
                    };
                    let ev = ev?;
                    self.apply_event(&mut state, ev);
                }
            }
        }
    }

    fn apply_event(&self, state: &mut State<F>, ev: store::WatchEvent) {
        let deleted = ev.type_ == EventType::Deleted;
        let kind = ev.object.kind();
        if kind == F::POOL {
            state.apply_pool(ev.object, deleted);
        } else if kind == F::OBJECT && ev.revision > state.objects_listed_at {
            state.apply_object(ev.object, deleted);
        }
    }

    /// Decides for `key`; a bind decision is assumed in the cache and returned for writing.
    fn attempt(&self, state: &mut State<F>, key: String, events: &mut JoinSet<()>) -> Option<Bind> {
        let obj = state.pending.get(&key)?;
        let Some(req) = F::request(obj) else {
            state.pending.remove(&key);
            return None;
        };
        if state.cache.has_instance(&req.uid) || state.inflight_keys.contains(&key) {
            return None;
        }
        let started = Instant::now();
        match state.cache.schedule(&req) {
            Decision::Bind { pool, .. } => {
                let Some(pool_obj) = state.pools.get(&pool) else {
                    state.waiting.insert(key);
                    return None;
                };
                let mut claimed = pool_obj.clone();
                claimed
                    .metadata_mut()
                    .annotations
                    .insert(BIND_ANNOTATION.to_string(), key.clone());
                let updates = vec![
                    KnownUpdate::new(obj.clone(), F::bind(obj, &pool)),
                    KnownUpdate::new(pool_obj.clone(), claimed),
                ];
                let object_revision = obj.revision();
                let pool_revision = pool_obj.revision();
                state.cache.assume(&req.uid, &pool, &req.class, req.demand);
                state.cache.set_busy(&pool, true);
                state.inflight_keys.insert(key.clone());
                debug!(component = F::COMPONENT, object = %key, pool = %pool, "binding");
                Some(Bind {
                    key,
                    uid: req.uid,
                    pool,
                    object_revision,
                    pool_revision,
                    started,
                    updates,
                })
            }
            Decision::Unschedulable { message, filtered } => {
                if filtered.busy > 0 || state.cache.any_busy() {
                    // A pool may free up or be the answer once its bind completes: no event yet.
                    state.waiting.insert(key);
                    return None;
                }
                self.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                info!(component = F::COMPONENT, object = %key, %message, "OutOfCapacity");
                state.parked.insert(key);
                if self.config.emit_events {
                    let event = out_of_capacity_event::<F>(obj, message);
                    let store = self.store.clone();
                    events.spawn(async move {
                        if let Err(err) = store.create(event).await {
                            warn!(component = F::COMPONENT, error = %err, "could not store event");
                        }
                    });
                }
                None
            }
        }
    }

    /// Writes `binds` with one [`Store::update_many_from`]: object then pool for each bind.
    fn spawn_batch(&self, inflight: &mut JoinSet<BatchDone>, mut binds: Vec<Bind>) {
        let store = self.store.clone();
        let updates: Vec<KnownUpdate> = binds
            .iter_mut()
            .flat_map(|bind| std::mem::take(&mut bind.updates))
            .collect();
        inflight.spawn(async move {
            let result = store.update_many_from(updates).await;
            // A failed single bind refreshes its object here, off the controller loop (never
            // the pool: its version must come from the ordered watch).
            let fresh = match (&result, binds.as_slice()) {
                (Err(_), [bind]) => {
                    let (namespace, name) =
                        bind.key.split_once('/').unwrap_or(("", bind.key.as_str()));
                    Some(store.get(F::OBJECT, namespace, name).await)
                }
                _ => None,
            };
            BatchDone {
                binds,
                result,
                fresh,
            }
        });
    }

    fn finish(&self, state: &mut State<F>, done: BatchDone) {
        let BatchDone {
            binds,
            result,
            fresh,
        } = done;
        for bind in &binds {
            state.inflight_keys.remove(&bind.key);
            if !state.stale.contains_key(&bind.pool) && !state.syncing.contains_key(&bind.pool) {
                state.cache.set_busy(&bind.pool, false);
            }
        }
        match result {
            Ok(objs) => {
                let mut objs = objs.into_iter();
                for bind in &binds {
                    let elapsed =
                        u64::try_from(bind.started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.stats.binds.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut lat) = self.stats.latencies_us.lock() {
                        lat.push(elapsed);
                    }
                    if let Some(bound) = objs.next() {
                        state.apply_object(bound, false);
                    }
                    if let Some(pool_obj) = objs.next() {
                        // Our own txn: nothing touched the pool between the version we saw and
                        // this one, so the cache stays consistent with it.
                        state.apply_pool(pool_obj, false);
                    }
                }
            }
            Err(err) => {
                let conflict = matches!(err, store::Error::Conflict { .. });
                for bind in &binds {
                    state.cache.forget(&bind.uid);
                    if conflict {
                        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        warn!(component = F::COMPONENT, object = %bind.key, error = %err, "bind failed");
                    }
                }
                match (binds.as_slice(), fresh) {
                    ([bind], Some(fresh)) => Self::refresh(state, bind, fresh),
                    _ => {
                        // Some bind of the batch is stale, but which one is unknown: retry each
                        // in a write of its own.
                        for bind in binds {
                            state.solo.insert(bind.key.clone());
                            state.waiting.insert(bind.key);
                        }
                    }
                }
            }
        }
        state.requeue_set(false);
    }

    /// After a failed single bind: learn from the re-read object whether the pool moved on.
    fn refresh(state: &mut State<F>, bind: &Bind, fresh: store::Result<Object>) {
        let key = bind.key.clone();
        match fresh {
            Ok(fresh) => {
                let pool_is_stale = fresh.revision() == bind.object_revision
                    && state
                        .pools
                        .get(&bind.pool)
                        .is_some_and(|p| p.revision() == bind.pool_revision);
                if pool_is_stale {
                    // The pool moved on (another scheduler bound to it): skip it until the
                    // watch delivers that change.
                    state.stale.insert(bind.pool.clone(), bind.pool_revision);
                    state.cache.set_busy(&bind.pool, true);
                }
                if F::bound(&fresh).is_some() {
                    state.apply_object(fresh, false);
                } else if state
                    .pending
                    .get(&key)
                    .is_none_or(|known| known.revision() <= fresh.revision())
                {
                    state.pending.insert(key.clone(), fresh);
                    state.waiting.insert(key);
                } else {
                    // The watch already delivered a newer version.
                    state.waiting.insert(key);
                }
            }
            Err(store::Error::NotFound { .. }) => {
                state.pending.remove(&key);
            }
            Err(_) => {
                state.waiting.insert(key);
            }
        }
    }
}

/// Calls `run_once` (list, then watch) until it returns or `cancel` fires: after an expired
/// watch at once (a resync, counted in `stats`), after another store error with a backoff
/// (100 ms doubling up to 10 s, plus up to 255 ms of jitter).
pub(crate) async fn relist_loop<Fut>(
    component: &'static str,
    stats: &Stats,
    cancel: &CancellationToken,
    mut run_once: impl FnMut() -> Fut,
) -> Result<(), Error>
where
    Fut: std::future::Future<Output = store::Result<()>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match run_once().await {
            Ok(()) => return Ok(()),
            Err(store::Error::Expired { .. }) => {
                stats.resyncs.fetch_add(1, Ordering::Relaxed);
                info!(component, "watch expired; relisting");
            }
            Err(err) => {
                warn!(component, error = %err, "store error; relisting after backoff");
                let jitter = Duration::from_millis(u64::from(rand::random::<u8>()));
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(backoff + jitter) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// The `OutOfCapacity` Event of a flavour's scheduler for `obj`.
pub(crate) fn out_of_capacity_event<F: Flavor>(obj: &Object, message: String) -> Object {
    let meta = obj.metadata();
    let suffix: u64 = rand::random();
    let now = now_rfc3339();
    Event {
        metadata: ObjectMeta::namespaced(
            if meta.namespace.is_empty() {
                "default"
            } else {
                meta.namespace.as_str()
            },
            format!("{}.{suffix:016x}", meta.name),
        ),
        involved_object: ObjectReference {
            api_version: obj.kind().api_version().to_string(),
            kind: obj.kind().as_str().to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        },
        reason: "OutOfCapacity".into(),
        message,
        type_: "Normal".into(),
        source: Some(EventSource {
            component: F::COMPONENT.into(),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: 1,
        ..Default::default()
    }
    .into_object()
}
