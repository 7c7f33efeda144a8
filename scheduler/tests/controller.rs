//! The controller against a real store: binds, exhaustion with stored OutOfCapacity events,
//! retry when pools change, the volume scheduler, and two schedulers racing on one store
//! without overcommitting (memory store; etcd too when present).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use irikit_api::{
    Kind, ListOptions, Object, Resource, Store,
    compute::{Machine, MachinePool},
    core::Event,
    meta::{LocalObjectReference, ObjectMeta},
    storage::{Volume, VolumePool},
    store::{self, KnownUpdate, ObjectList, WatchStream, memory::MemoryStore},
};
use scheduler::{Config, MachineScheduler, VolumeScheduler};
use tokio_util::sync::CancellationToken;

fn machine_pool(name: &str, capacity: i64) -> Object {
    common::machine_pool(name, capacity).into_object()
}

fn machine(name: &str) -> Object {
    common::machine(name).into_object()
}

/// Waits (driven by watch events, with a deadline) until `done` holds for the store.
async fn eventually<F, Fut>(store: &Arc<dyn Store>, what: &str, done: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let rev = store.revision().await.unwrap();
    let mut stream = store.watch(None, rev).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if done(store.clone()).await {
            return;
        }
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("watch ended while waiting for {what}: {other:?}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

async fn bound_per_pool(store: Arc<dyn Store>) -> BTreeMap<String, usize> {
    let list = store
        .list(Kind::Machine, &ListOptions::all())
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for obj in list.items {
        let m: Machine = obj.into_typed().unwrap();
        if let Some(pool) = m.spec.machine_pool_ref {
            *out.entry(pool.name).or_default() += 1;
        }
    }
    out
}

async fn out_of_capacity_events(store: Arc<dyn Store>) -> Vec<Event> {
    let list = store
        .list(
            Kind::Event,
            &ListOptions::all().field("reason", "OutOfCapacity"),
        )
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter_map(Object::into_typed)
        .collect()
}

fn spawn_machine_scheduler(
    store: &Arc<dyn Store>,
    cancel: &CancellationToken,
    concurrency: usize,
) -> tokio::task::JoinHandle<()> {
    let sched = MachineScheduler::new(
        store.clone(),
        Config {
            concurrency,
            batch: 4,
            emit_events: true,
        },
    );
    let cancel = cancel.clone();
    tokio::spawn(async move { sched.run(cancel).await.unwrap() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_events_and_retry_on_pool_change() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store.create(machine_pool("p1", 2)).await.unwrap();
    store.create(machine_pool("p2", 2)).await.unwrap();
    for i in 0..5 {
        store.create(machine(&format!("m{i}"))).await.unwrap();
    }
    let cancel = CancellationToken::new();
    let task = spawn_machine_scheduler(&store, &cancel, 4);
    eventually(
        &store,
        "4 bound and one OutOfCapacity event",
        |s| async move {
            bound_per_pool(s.clone()).await.values().sum::<usize>() == 4
                && !out_of_capacity_events(s).await.is_empty()
        },
    )
    .await;
    assert_eq!(
        bound_per_pool(store.clone()).await,
        BTreeMap::from([("p1".into(), 2), ("p2".into(), 2)])
    );
    let events = out_of_capacity_events(store.clone()).await;
    assert_eq!(events[0].type_, "Normal");
    assert!(
        events[0]
            .message
            .starts_with("No nodes available after filtering to schedule default/m"),
        "{}",
        events[0].message
    );
    assert_eq!(
        events[0].source.as_ref().unwrap().component,
        "machine-scheduler"
    );
    // More capacity on p2: the parked machine is retried and binds there.
    let mut p2: MachinePool = store
        .get(Kind::MachinePool, "", "p2")
        .await
        .unwrap()
        .into_typed()
        .unwrap();
    p2.status
        .capacity
        .insert("class/machine.small".into(), "3".parse().unwrap());
    store.update_status(p2.into_object()).await.unwrap();
    eventually(&store, "5 bound", |s| async move {
        bound_per_pool(s).await.values().sum::<usize>() == 5
    })
    .await;
    assert_eq!(bound_per_pool(store.clone()).await["p2"], 3);
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_bound_machine_frees_capacity() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store.create(machine_pool("p1", 1)).await.unwrap();
    store.create(machine("a")).await.unwrap();
    store.create(machine("b")).await.unwrap();
    let cancel = CancellationToken::new();
    let task = spawn_machine_scheduler(&store, &cancel, 1);
    eventually(&store, "one bound, one event", |s| async move {
        bound_per_pool(s.clone()).await.values().sum::<usize>() == 1
            && !out_of_capacity_events(s).await.is_empty()
    })
    .await;
    let bound = if store
        .get(Kind::Machine, "default", "a")
        .await
        .unwrap()
        .field("spec.machinePoolRef.name")
        == Some("p1")
    {
        "a"
    } else {
        "b"
    };
    store
        .delete(Kind::Machine, "default", bound, None)
        .await
        .unwrap();
    eventually(&store, "the other bound", |s| async move {
        bound_per_pool(s).await.values().sum::<usize>() == 1
    })
    .await;
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_scheduler_binds_by_bytes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    for (name, size) in [("vp1", "100Gi"), ("vp2", "40Gi")] {
        let mut pool = VolumePool {
            metadata: ObjectMeta::named(name),
            ..Default::default()
        };
        pool.status
            .capacity
            .insert("class/volume.fast".into(), size.parse().unwrap());
        store.create(pool.into_object()).await.unwrap();
    }
    for (name, size, class) in [
        ("v1", "50Gi", Some("fast")),
        ("v2", "50Gi", Some("fast")),
        ("v3", "50Gi", Some("fast")),
        ("ext", "1Gi", None),
    ] {
        let mut v = Volume {
            metadata: ObjectMeta::namespaced("default", name),
            ..Default::default()
        };
        v.spec.volume_class_ref = class.map(LocalObjectReference::new);
        v.spec
            .resources
            .insert("storage".into(), size.parse().unwrap());
        store.create(v.into_object()).await.unwrap();
    }
    let cancel = CancellationToken::new();
    let sched = VolumeScheduler::new(store.clone(), Config::default());
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { sched.run(cancel).await.unwrap() }
    });
    let pools_of = |s: Arc<dyn Store>| async move {
        let list = s.list(Kind::Volume, &ListOptions::all()).await.unwrap();
        list.items
            .iter()
            .map(|o| {
                (
                    o.metadata().name.clone(),
                    o.field("spec.volumePoolRef.name").unwrap().to_string(),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    eventually(&store, "two volumes bound and an event", |s| async move {
        pools_of(s.clone())
            .await
            .values()
            .filter(|p| !p.is_empty())
            .count()
            == 2
            && !out_of_capacity_events(s).await.is_empty()
    })
    .await;
    let placed = pools_of(store.clone()).await;
    // vp1 (100Gi) takes two 50Gi volumes; vp2 (40Gi) is too small for the third.
    let on_vp1 = placed.values().filter(|p| *p == "vp1").count();
    assert_eq!(on_vp1, 2, "{placed:?}");
    assert_eq!(
        placed["ext"], "",
        "classless volumes are left to external provisioning"
    );
    let events = out_of_capacity_events(store.clone()).await;
    assert_eq!(
        events[0].source.as_ref().unwrap().component,
        "volume-scheduler"
    );
    cancel.cancel();
    task.await.unwrap();
}

async fn race(store: Arc<dyn Store>, n_pools: usize, capacity: i64, n_machines: usize) {
    for p in 0..n_pools {
        store
            .create(machine_pool(&format!("pool-{p:02}"), capacity))
            .await
            .unwrap();
    }
    let cancel = CancellationToken::new();
    let a = spawn_machine_scheduler(&store, &cancel, 8);
    let b = spawn_machine_scheduler(&store, &cancel, 8);
    for i in 0..n_machines {
        store.create(machine(&format!("m{i:03}"))).await.unwrap();
    }
    let total = n_pools * usize::try_from(capacity).unwrap();
    let unschedulable = n_machines - total;
    eventually(
        &store,
        "capacity exhausted and every leftover reported",
        |s| async move {
            if bound_per_pool(s.clone()).await.values().sum::<usize>() < total {
                return false;
            }
            let events = out_of_capacity_events(s).await;
            let reported: std::collections::BTreeSet<_> = events
                .iter()
                .map(|e| e.involved_object.name.clone())
                .collect();
            reported.len() >= unschedulable
        },
    )
    .await;
    cancel.cancel();
    a.await.unwrap();
    b.await.unwrap();
    let per_pool = bound_per_pool(store.clone()).await;
    assert_eq!(per_pool.values().sum::<usize>(), total);
    for (pool, n) in &per_pool {
        assert!(
            *n <= usize::try_from(capacity).unwrap(),
            "pool {pool} overcommitted: {n} > {capacity}"
        );
    }
}

/// A store that, before every `every`-th bind, writes the bind's pool itself (a poollet
/// heartbeat racing with the scheduler), so that bind fails with Conflict in the middle of a
/// pipeline of binds.
struct Meddling {
    inner: Arc<dyn Store>,
    every: usize,
    binds: AtomicUsize,
    meddled: AtomicUsize,
}

#[async_trait::async_trait]
impl Store for Meddling {
    async fn get(&self, kind: Kind, namespace: &str, name: &str) -> store::Result<Object> {
        self.inner.get(kind, namespace, name).await
    }
    async fn list(&self, kind: Kind, options: &ListOptions) -> store::Result<ObjectList> {
        self.inner.list(kind, options).await
    }
    async fn create(&self, obj: Object) -> store::Result<Object> {
        self.inner.create(obj).await
    }
    async fn update(&self, obj: Object) -> store::Result<Object> {
        self.inner.update(obj).await
    }
    async fn update_status(&self, obj: Object) -> store::Result<Object> {
        self.inner.update_status(obj).await
    }
    async fn update_many(&self, objs: Vec<Object>) -> store::Result<Vec<Object>> {
        self.inner.update_many(objs).await
    }
    async fn update_many_from(&self, updates: Vec<KnownUpdate>) -> store::Result<Vec<Object>> {
        let n = self.binds.fetch_add(1, Ordering::SeqCst);
        if n.is_multiple_of(self.every)
            && let Some(pool) = updates
                .iter()
                .find(|u| u.current.kind() == Kind::MachinePool)
        {
            let mut heartbeat: MachinePool = self
                .inner
                .get(Kind::MachinePool, "", &pool.current.metadata().name)
                .await?
                .into_typed()
                .unwrap();
            heartbeat.status.conditions[0].message = format!("heartbeat {n}");
            heartbeat.metadata.resource_version.clear();
            self.inner.update_status(heartbeat.into_object()).await?;
            self.meddled.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.update_many_from(updates).await
    }
    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> store::Result<Option<Object>> {
        self.inner
            .delete(kind, namespace, name, resource_version)
            .await
    }
    async fn watch(&self, kind: Option<Kind>, revision: u64) -> store::Result<WatchStream> {
        self.inner.watch(kind, revision).await
    }
    async fn compact(&self, revision: u64) -> store::Result<()> {
        self.inner.compact(revision).await
    }
    async fn revision(&self) -> store::Result<u64> {
        self.inner.revision().await
    }
}

/// Conflicts in the middle of a pipeline of binds: each loser forgets its assumption and
/// retries, every machine ends up bound exactly once, and — with capacity for exactly the
/// machines there are — nothing is counted twice (a double count would leave one unbound).
async fn conflicts_mid_pipeline(inner: Arc<dyn Store>) {
    const POOLS: usize = 4;
    const CAPACITY: i64 = 10;
    let n_machines = POOLS * usize::try_from(CAPACITY).unwrap();
    let meddling = Arc::new(Meddling {
        inner: inner.clone(),
        every: 3,
        binds: AtomicUsize::new(0),
        meddled: AtomicUsize::new(0),
    });
    let store: Arc<dyn Store> = meddling.clone();
    for p in 0..POOLS {
        store
            .create(machine_pool(&format!("pool-{p}"), CAPACITY))
            .await
            .unwrap();
    }
    for i in 0..n_machines {
        store.create(machine(&format!("m{i:03}"))).await.unwrap();
    }
    let cancel = CancellationToken::new();
    let sched = MachineScheduler::new(
        store.clone(),
        Config {
            concurrency: 8,
            batch: 4,
            emit_events: true,
        },
    );
    let stats = sched.stats();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { sched.run(cancel).await.unwrap() }
    });
    eventually(&store, "every machine bound", |s| async move {
        bound_per_pool(s).await.values().sum::<usize>() == n_machines
    })
    .await;
    cancel.cancel();
    task.await.unwrap();
    let per_pool = bound_per_pool(store.clone()).await;
    assert_eq!(
        per_pool,
        (0..POOLS)
            .map(|p| (format!("pool-{p}"), usize::try_from(CAPACITY).unwrap()))
            .collect::<BTreeMap<_, _>>()
    );
    let meddled = meddling.meddled.load(Ordering::SeqCst);
    assert!(meddled >= n_machines / 3, "meddled only {meddled} times");
    let conflicts = stats.conflicts.load(Ordering::SeqCst);
    assert!(
        conflicts >= u64::try_from(meddled).unwrap(),
        "{conflicts} conflicts for {meddled} racing writes"
    );
    assert_eq!(
        stats.binds.load(Ordering::SeqCst),
        u64::try_from(n_machines).unwrap(),
        "every bound machine counted once"
    );
    assert!(out_of_capacity_events(store).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_mid_pipeline_memory() {
    conflicts_mid_pipeline(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_mid_pipeline_etcd() {
    let Some(etcd) = common::local_etcd().await else {
        return;
    };
    conflicts_mid_pipeline(Arc::new(etcd.store("/irikit-meddle").await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_overcommit_memory() {
    race(Arc::new(MemoryStore::new()), 10, 3, 45).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_overcommit_etcd() {
    let Some(etcd) = common::local_etcd().await else {
        return;
    };
    race(
        Arc::new(etcd.store("/irikit-race").await.unwrap()),
        10,
        3,
        45,
    )
    .await;
}

#[cfg(not(feature = "etcd"))]
#[test]
fn conflicts_mid_pipeline_etcd() {
    two_schedulers_never_overcommit_etcd();
}

#[cfg(not(feature = "etcd"))]
#[test]
fn two_schedulers_never_overcommit_etcd() {
    common::etcd_unavailable();
}
