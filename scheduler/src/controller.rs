//! The scheduler controller: lists and watches pools and unscheduled objects through the
//! [`Store`], decides with the pure [`Cache`], and binds with resourceVersion preconditions.
//!
//! One ordered watch stream (all kinds, in revision order) feeds the cache, so when the cache
//! holds a pool at resourceVersion `Y` it has also seen every bind that touched that pool up
//! to `Y`. A bind is one atomic [`Store::update_many`] of the object (`spec.*PoolRef`, with the
//! object's resourceVersion) and the pool (an annotation, with the pool's resourceVersion
//! `Y`). A concurrent scheduler that bound to the same pool changed its resourceVersion, so
//! our bind fails with Conflict, the assumed instance is forgotten, and the object is retried
//! once the watch has delivered the other bind. Two schedulers therefore never overcommit.
//! Within one scheduler, the assume cache counts in-flight binds, and at most one bind per
//! pool is in flight (its resourceVersion is the precondition of the next).

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
    store::{self, EventType, now_rfc3339},
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    core::{Cache, Decision},
    flavor::{BIND_ANNOTATION, Flavor},
};

/// Controller settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Binds in flight at once (pipelining for remote stores).
    pub concurrency: usize,
    /// Whether to store OutOfCapacity events.
    pub emit_events: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            concurrency: 64,
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
}

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed in a way that a relist does not fix.
    #[error("store")]
    Store(#[source] store::Error),
}

struct BindDone {
    key: String,
    uid: String,
    pool: String,
    object_revision: u64,
    pool_revision: u64,
    started: Instant,
    result: store::Result<Vec<Object>>,
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
    /// Pools whose version lost a bind race: skipped until the watch shows a newer version.
    stale: HashMap<String, u64>,
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
            stale: HashMap::new(),
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
            return;
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
            self.cache.set_busy(&name, false);
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
            return;
        }
        if let Some((pool, class, demand)) = F::bound(&obj) {
            self.cache.add_instance(&uid, &pool, &class, demand);
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
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.run_once(&cancel).await {
                Ok(()) => return Ok(()),
                Err(store::Error::Expired { .. }) => {
                    self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                    info!(component = F::COMPONENT, "watch expired; relisting");
                }
                Err(err) => {
                    warn!(component = F::COMPONENT, error = %err, "store error; relisting after backoff");
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

    async fn run_once(&self, cancel: &CancellationToken) -> store::Result<()> {
        let sync_started = Instant::now();
        let mut state = State::<F>::new();
        let pools = self.store.list(F::POOL, &ListOptions::all()).await?;
        let objects = self.store.list(F::OBJECT, &ListOptions::all()).await?;
        for pool in pools.items {
            state.apply_pool(pool, false);
        }
        state.objects_listed_at = objects.revision;
        for obj in objects.items {
            state.apply_object(obj, false);
        }
        let mut stream = self.store.watch(None, pools.revision).await?;
        let sync_us = u64::try_from(sync_started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.sync_us.store(sync_us, Ordering::Relaxed);
        info!(
            component = F::COMPONENT,
            pools = state.cache.pool_count(),
            pending = state.pending.len(),
            "scheduler synced"
        );
        let mut inflight: JoinSet<BindDone> = JoinSet::new();
        let mut events: JoinSet<()> = JoinSet::new();
        loop {
            while inflight.len() < self.config.concurrency.max(1) {
                let Some(key) = state.queue.pop_front() else {
                    break;
                };
                state.queued.remove(&key);
                self.attempt(&mut state, key, &mut inflight, &mut events);
            }
            while events.try_join_next().is_some() {}
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    // Finish in-flight binds so the store and our counters agree.
                    while let Some(done) = inflight.join_next().await {
                        if let Ok(done) = done { self.finish(&mut state, done).await; }
                    }
                    while events.join_next().await.is_some() {}
                    return Ok(());
                }
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Ok(done) = done {
                        self.finish(&mut state, done).await;
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

    fn attempt(
        &self,
        state: &mut State<F>,
        key: String,
        inflight: &mut JoinSet<BindDone>,
        events: &mut JoinSet<()>,
    ) {
        let Some(obj) = state.pending.get(&key) else {
            return;
        };
        let Some(req) = F::request(obj) else {
            state.pending.remove(&key);
            return;
        };
        if state.cache.has_instance(&req.uid) || state.inflight_keys.contains(&key) {
            return;
        }
        let started = Instant::now();
        match state.cache.schedule(&req) {
            Decision::Bind { pool, .. } => {
                let Some(pool_obj) = state.pools.get(&pool) else {
                    state.waiting.insert(key);
                    return;
                };
                let mut pool_obj = pool_obj.clone();
                pool_obj
                    .metadata_mut()
                    .annotations
                    .insert(BIND_ANNOTATION.to_string(), key.clone());
                let bound = F::bind(obj, &pool);
                state.cache.assume(&req.uid, &pool, &req.class, req.demand);
                state.cache.set_busy(&pool, true);
                state.inflight_keys.insert(key.clone());
                debug!(component = F::COMPONENT, object = %key, pool = %pool, "binding");
                let store = self.store.clone();
                let uid = req.uid.clone();
                let object_revision = obj.revision();
                let pool_revision = pool_obj.revision();
                inflight.spawn(async move {
                    let result = store.update_many(vec![bound, pool_obj]).await;
                    BindDone {
                        key,
                        uid,
                        pool,
                        object_revision,
                        pool_revision,
                        started,
                        result,
                    }
                });
            }
            Decision::Unschedulable { message, filtered } => {
                if filtered.busy > 0 || state.cache.any_busy() {
                    // A pool may free up or be the answer once its bind completes: no event yet.
                    state.waiting.insert(key);
                    return;
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
            }
        }
    }

    async fn finish(&self, state: &mut State<F>, done: BindDone) {
        let BindDone {
            key,
            uid,
            pool,
            object_revision,
            pool_revision,
            started,
            result,
        } = done;
        state.inflight_keys.remove(&key);
        if !state.stale.contains_key(&pool) {
            state.cache.set_busy(&pool, false);
        }
        match result {
            Ok(objs) => {
                let elapsed = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.stats.binds.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut lat) = self.stats.latencies_us.lock() {
                    lat.push(elapsed);
                }
                let mut objs = objs.into_iter();
                if let Some(bound) = objs.next() {
                    state.apply_object(bound, false);
                }
                if let Some(pool_obj) = objs.next() {
                    // Our own txn: nothing touched the pool between the version we saw and this
                    // one, so the cache stays consistent with it.
                    state.apply_pool(pool_obj, false);
                }
            }
            Err(err) => {
                state.cache.forget(&uid);
                if matches!(err, store::Error::Conflict { .. }) {
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                } else {
                    warn!(component = F::COMPONENT, object = %key, error = %err, "bind failed");
                }
                // Refresh the object from the store (never the pool: its version must come from
                // the ordered watch). The pool's own change arrives through the watch.
                let (namespace, name) = key.split_once('/').unwrap_or(("", key.as_str()));
                match self.store.get(F::OBJECT, namespace, name).await {
                    Ok(fresh) => {
                        let pool_is_stale = fresh.revision() == object_revision
                            && state
                                .pools
                                .get(&pool)
                                .is_some_and(|p| p.revision() == pool_revision);
                        if pool_is_stale {
                            // The pool moved on (another scheduler bound to it): skip it until
                            // the watch delivers that change.
                            state.stale.insert(pool.clone(), pool_revision);
                            state.cache.set_busy(&pool, true);
                        }
                        if F::bound(&fresh).is_some() {
                            state.apply_object(fresh, false);
                        } else {
                            state.pending.insert(key.clone(), fresh);
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
        state.requeue_set(false);
    }
}

fn out_of_capacity_event<F: Flavor>(obj: &Object, message: String) -> Object {
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
