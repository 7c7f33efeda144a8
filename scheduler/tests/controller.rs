//! The controller against a real store: binds, exhaustion with stored OutOfCapacity events,
//! retry when pools change, the volume scheduler, and two schedulers racing on one store
//! without overcommitting (memory store; etcd too when present).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use irikit_api::{
    Kind, ListOptions, Object, Resource, Store,
    compute::{Machine, MachinePool},
    core::Event,
    meta::{Condition, LocalObjectReference, ObjectMeta},
    storage::{Volume, VolumePool},
    store::memory::MemoryStore,
};
use scheduler::{Config, MachineScheduler, VolumeScheduler};
use tokio_util::sync::CancellationToken;

fn ready() -> Vec<Condition> {
    vec![Condition {
        type_: "Ready".into(),
        status: "True".into(),
        ..Default::default()
    }]
}

fn machine_pool(name: &str, capacity: i64) -> Object {
    let mut pool = MachinePool {
        metadata: ObjectMeta::named(name),
        ..Default::default()
    };
    pool.status.conditions = ready();
    pool.status.capacity.insert(
        "class/machine.small".into(),
        capacity.to_string().parse().unwrap(),
    );
    pool.into_object()
}

fn machine(name: &str) -> Object {
    let mut m = Machine {
        metadata: ObjectMeta::namespaced("default", name),
        ..Default::default()
    };
    m.spec.machine_class_ref = LocalObjectReference::new("small");
    m.into_object()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_overcommit_memory() {
    race(Arc::new(MemoryStore::new()), 10, 3, 45).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_overcommit_etcd() {
    use irikit_api::store::etcd::LocalEtcd;
    if LocalEtcd::binary().is_none() {
        let required = std::env::var("IRIKIT_REQUIRE").unwrap_or_default();
        assert!(
            !required.split(',').any(|c| c.trim() == "etcd"),
            "etcd is required (IRIKIT_REQUIRE) but not on PATH"
        );
        eprintln!("skip: etcd not on PATH (install etcd-server)");
        return;
    }
    let etcd = LocalEtcd::start(None).await.unwrap();
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
fn two_schedulers_never_overcommit_etcd() {
    let required = std::env::var("IRIKIT_REQUIRE").unwrap_or_default();
    assert!(
        !required.split(',').any(|c| c.trim() == "etcd"),
        "etcd is required (IRIKIT_REQUIRE) but scheduler was built without the `etcd` feature"
    );
    eprintln!("skip: scheduler built without the `etcd` feature");
}
