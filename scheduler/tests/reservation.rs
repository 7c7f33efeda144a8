//! The machine scheduler's reservation mode against a real store (memory, and etcd when
//! present): the test plays the pools (it writes the Reservations' `status.pools` as
//! machinepoollets would) and checks what the scheduler creates, binds and deletes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use irikit_api::{
    Kind, ListOptions, Object, Resource, Store, StoreExt,
    compute::{EmptyDisk, LocalDisk, Machine, MachineClass, Volume},
    core::Event,
    meta::{LocalObjectReference, ObjectMeta},
    reservation::{
        RESERVATION_MACHINE_LABEL, RESERVATION_NAME_ANNOTATION, RESERVATION_SUPPORTED_ANNOTATION,
        Reservation, ReservationPoolStatus, ReservationState,
    },
    store::{self, memory::MemoryStore},
};
use scheduler::{
    ReservationConfig, ReservationScheduler,
    reservation::{local_storage_bytes, reservation_for},
};
use tokio_util::sync::CancellationToken;

const NS: &str = "default";

fn pool(name: &str, capacity: i64, supported: Option<bool>) -> Object {
    let mut pool = common::machine_pool(name, capacity);
    if let Some(s) = supported {
        pool.metadata
            .annotations
            .insert(RESERVATION_SUPPORTED_ANNOTATION.to_owned(), s.to_string());
    }
    pool.into_object()
}

fn machine(name: &str) -> Machine {
    common::machine(name)
}

fn class() -> Object {
    MachineClass {
        metadata: ObjectMeta::named("small"),
        capabilities: common::resources(&[("cpu", "2"), ("memory", "4Gi")]),
        ..MachineClass::default()
    }
    .into_object()
}

fn config() -> ReservationConfig {
    ReservationConfig {
        timeout: Duration::from_millis(600),
        retry: Duration::from_millis(100),
        max_retry: Duration::from_millis(400),
        ..ReservationConfig::default()
    }
}

fn spawn(store: &Arc<dyn Store>, cancel: &CancellationToken) -> tokio::task::JoinHandle<()> {
    spawn_with(store, cancel, config())
}

fn spawn_with(
    store: &Arc<dyn Store>,
    cancel: &CancellationToken,
    config: ReservationConfig,
) -> tokio::task::JoinHandle<()> {
    let sched = ReservationScheduler::new(store.clone(), config);
    let cancel = cancel.clone();
    tokio::spawn(async move { sched.run(cancel).await.unwrap() })
}

/// Polls (on every store change, with a deadline) until `check` returns `Some`.
async fn eventually<T, F, Fut>(store: &Arc<dyn Store>, what: &str, check: F) -> T
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let rev = store.revision().await.unwrap();
    let mut stream = store.watch(None, rev).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(t) = check(store.clone()).await {
            return t;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.next()).await {
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => panic!("watch ended while waiting for {what}: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
    }
}

async fn get_reservation(store: &Arc<dyn Store>, name: &str) -> Option<Reservation> {
    match store.get_typed::<Reservation>(NS, name).await {
        Ok(r) => Some(r),
        Err(store::Error::NotFound { .. }) => None,
        Err(err) => panic!("{err}"),
    }
}

/// Asserts that the Machine `name` is not bound to a pool.
async fn assert_unbound(store: &Arc<dyn Store>, name: &str) {
    assert!(
        get_machine(store, name)
            .await
            .spec
            .machine_pool_ref
            .is_none(),
        "{name} is unbound"
    );
}

async fn get_machine(store: &Arc<dyn Store>, name: &str) -> Machine {
    store.get_typed::<Machine>(NS, name).await.unwrap()
}

/// Writes `pool`'s state into the Reservation's status, as that pool's poollet would.
async fn answer(store: &Arc<dyn Store>, name: &str, pool: &str, state: ReservationState) {
    loop {
        let mut r = get_reservation(store, name).await.expect("reservation");
        r.status.pools.retain(|p| p.name != pool);
        r.status.pools.push(ReservationPoolStatus {
            name: pool.to_owned(),
            state,
        });
        match store.update_status(r.into_object()).await {
            Ok(_) => return,
            Err(store::Error::Conflict { .. }) => {}
            Err(err) => panic!("{err}"),
        }
    }
}

/// `pool` answers Accepted for Machine `machine`'s Reservation, and the Machine is bound there.
async fn accepted_binds(store: &Arc<dyn Store>, machine: &'static str, pool: &str) {
    answer(store, machine, pool, ReservationState::Accepted).await;
    let bound = eventually(store, "the Machine bound", |s| async move {
        get_machine(&s, machine).await.spec.machine_pool_ref
    })
    .await;
    assert_eq!(bound.name, pool);
}

async fn events_for(store: &Arc<dyn Store>, machine: &str) -> Vec<Event> {
    store
        .list(
            Kind::Event,
            &ListOptions::all().field("reason", "OutOfCapacity"),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(Object::into_typed::<Event>)
        .filter(|e| e.involved_object.name == machine)
        .collect()
}

/// Reservation per Machine (shape), most-free Accepted pool, the name annotation, and the
/// Reservation deleted once the chosen pool reports it Bound.
async fn binds_where_accepted(store: Arc<dyn Store>) {
    store.create(class()).await.unwrap();
    store.create(pool("p1", 5, Some(true))).await.unwrap();
    store.create(pool("p2", 10, Some(true))).await.unwrap();
    store.create(pool("p3", 50, Some(true))).await.unwrap();
    let mut m = machine("m1");
    m.spec.volumes.push(Volume {
        name: "scratch".into(),
        empty_disk: Some(EmptyDisk {
            size_limit: Some("3Gi".parse().unwrap()),
        }),
        ..Volume::default()
    });
    let m = store.create_typed(m).await.unwrap();
    let cancel = CancellationToken::new();
    let task = spawn(&store, &cancel);
    let r = eventually(&store, "the Machine's Reservation", |s| async move {
        get_reservation(&s, "m1").await
    })
    .await;
    assert_eq!(r.metadata.labels[RESERVATION_MACHINE_LABEL], "m1");
    assert_eq!(r.metadata.owner_references[0].uid, m.metadata.uid);
    assert!(r.spec.pools.is_empty(), "all pools");
    let iri = r.spec.to_iri().unwrap();
    assert_eq!(iri.machine_classes["small"], 1);
    assert_eq!(
        (
            iri.cpu_millis,
            iri.memory_bytes,
            iri.local_storage_bytes_per_machine
        ),
        (2000, 4 << 30, 3 << 30)
    );
    // The first Accepted pool binds at once, though p3 (more capacity) has not answered.
    answer(&store, "m1", "p1", ReservationState::Accepted).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        get_machine(&store, "m1")
            .await
            .spec
            .machine_pool_ref
            .is_some(),
        "an Accepted pool binds at once"
    );
    let bound = get_machine(&store, "m1").await;
    assert_eq!(bound.spec.machine_pool_ref.unwrap().name, "p1");
    assert_eq!(
        bound.metadata.annotations[RESERVATION_NAME_ANNOTATION],
        "m1"
    );
    // Bound with a one-machine Reservation: it now asks only p1, so the other pools release
    // their holds.
    eventually(&store, "the Reservation narrowed to p1", |s| async move {
        get_reservation(&s, "m1")
            .await
            .filter(|r| r.spec.pools == ["p1"])
    })
    .await;
    // Accepted is not yet Bound: the Reservation stays.
    answer(&store, "m1", "p3", ReservationState::Rejected).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(get_reservation(&store, "m1").await.is_some());
    answer(&store, "m1", "p1", ReservationState::Bound).await;
    eventually(
        &store,
        "the Reservation deleted once Bound",
        |s| async move { get_reservation(&s, "m1").await.is_none().then_some(()) },
    )
    .await;

    // Two Accepted pools: the one with the most free capacity wins.
    store.create_typed(machine("m2")).await.unwrap();
    eventually(&store, "m2's Reservation", |s| async move {
        get_reservation(&s, "m2").await
    })
    .await;
    answer(&store, "m2", "p3", ReservationState::Rejected).await;
    answer(&store, "m2", "p1", ReservationState::Accepted).await;
    answer(&store, "m2", "p2", ReservationState::Accepted).await;
    let pool = eventually(&store, "m2 bound", |s| async move {
        get_machine(&s, "m2").await.spec.machine_pool_ref
    })
    .await;
    // p1 may have been the only Accepted pool when the scheduler looked; with both it is p2.
    assert!(pool.name == "p2" || pool.name == "p1", "{pool:?}");
    // A deleted Machine's Reservation goes with it.
    store.create_typed(machine("m3")).await.unwrap();
    eventually(&store, "m3's Reservation", |s| async move {
        get_reservation(&s, "m3").await
    })
    .await;
    store.delete(Kind::Machine, NS, "m3", None).await.unwrap();
    eventually(&store, "m3's Reservation deleted", |s| async move {
        get_reservation(&s, "m3").await.is_none().then_some(())
    })
    .await;
    cancel.cancel();
    task.await.unwrap();
}

/// Most-free among Accepted pools, decided in one look (both Accepted before the scheduler
/// starts).
async fn most_free_accepted(store: Arc<dyn Store>) {
    store.create(pool("p1", 5, Some(true))).await.unwrap();
    store.create(pool("p2", 10, Some(true))).await.unwrap();
    // A Reservation created by someone else, already answered; the Machine names it.
    let mut given = Reservation {
        metadata: ObjectMeta::namespaced(NS, "given"),
        ..Reservation::default()
    };
    given
        .spec
        .resources
        .insert("class/machine.small".into(), "1".parse().unwrap());
    store.create_typed(given).await.unwrap();
    answer(&store, "given", "p1", ReservationState::Accepted).await;
    answer(&store, "given", "p2", ReservationState::Accepted).await;
    let mut m = machine("m1");
    m.metadata
        .annotations
        .insert(RESERVATION_NAME_ANNOTATION.to_owned(), "given".to_owned());
    store.create_typed(m).await.unwrap();
    let cancel = CancellationToken::new();
    let task = spawn(&store, &cancel);
    let pool = eventually(&store, "m1 bound", |s| async move {
        get_machine(&s, "m1").await.spec.machine_pool_ref
    })
    .await;
    assert_eq!(pool.name, "p2", "most free");
    // A Reservation the scheduler did not create is never deleted, nor one of its own made.
    answer(&store, "given", "p2", ReservationState::Bound).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(get_reservation(&store, "given").await.is_some());
    assert!(get_reservation(&store, "m1").await.is_none());
    cancel.cancel();
    task.await.unwrap();
}

/// Every pool rejects: unbound, an OutOfCapacity event, and a fresh Reservation after the
/// backoff; then a pool accepts the fresh one and the Machine binds.
async fn all_rejected_stays_unbound(store: Arc<dyn Store>) {
    store.create(pool("p1", 5, Some(true))).await.unwrap();
    store.create(pool("p2", 5, Some(true))).await.unwrap();
    store.create_typed(machine("m1")).await.unwrap();
    let cancel = CancellationToken::new();
    let task = spawn(&store, &cancel);
    let first = eventually(&store, "the Reservation", |s| async move {
        get_reservation(&s, "m1").await
    })
    .await;
    answer(&store, "m1", "p1", ReservationState::Rejected).await;
    answer(&store, "m1", "p2", ReservationState::Rejected).await;
    let events = eventually(&store, "an OutOfCapacity event", |s| async move {
        let e = events_for(&s, "m1").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(
        events[0]
            .message
            .contains("no pool accepted Reservation default/m1")
            && events[0].message.contains("p1=Rejected"),
        "{}",
        events[0].message
    );
    assert_unbound(&store, "m1").await;
    let uid = first.metadata.uid.clone();
    let second = eventually(&store, "a fresh Reservation after the backoff", |s| {
        let uid = uid.clone();
        async move {
            get_reservation(&s, "m1")
                .await
                .filter(|r| r.metadata.uid != uid)
        }
    })
    .await;
    assert!(second.status.pools.is_empty());
    assert_unbound(&store, "m1").await;
    accepted_binds(&store, "m1", "p2").await;
    cancel.cancel();
    task.await.unwrap();
}

/// Pools without reservations are the fallback: when the pools that serve reservations
/// reject, or do not answer within the timeout.
async fn falls_back_to_pools_without_reservations(store: Arc<dyn Store>) {
    store.create(pool("with", 50, Some(true))).await.unwrap();
    store.create(pool("without", 5, Some(false))).await.unwrap();
    store.create(pool("unannotated", 3, None)).await.unwrap();
    store.create_typed(machine("rejected")).await.unwrap();
    let cancel = CancellationToken::new();
    let task = spawn(&store, &cancel);
    eventually(&store, "the Reservation", |s| async move {
        get_reservation(&s, "rejected").await
    })
    .await;
    answer(&store, "rejected", "with", ReservationState::Rejected).await;
    let m = eventually(&store, "bound best-effort", |s| async move {
        let m = get_machine(&s, "rejected").await;
        m.spec.machine_pool_ref.is_some().then_some(m)
    })
    .await;
    assert_eq!(
        m.spec.machine_pool_ref.unwrap().name,
        "without",
        "most free of the two"
    );
    assert!(
        !m.metadata
            .annotations
            .contains_key(RESERVATION_NAME_ANNOTATION),
        "no reservation behind a best-effort bind"
    );
    eventually(&store, "its Reservation deleted", |s| async move {
        get_reservation(&s, "rejected")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    // Nobody answers: the timeout (600 ms) passes, then best-effort.
    let started = std::time::Instant::now();
    store.create_typed(machine("silent")).await.unwrap();
    let m = eventually(&store, "bound after the timeout", |s| async move {
        let m = get_machine(&s, "silent").await;
        m.spec.machine_pool_ref.is_some().then_some(m)
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_ne!(m.spec.machine_pool_ref.unwrap().name, "with");
    cancel.cancel();
    task.await.unwrap();
}

/// With a fanout of 1, a Machine's Reservation asks one pool at a time, most free first;
/// when it rejects, `spec.pools` moves on to the next (the rejecting pool goes last for the
/// next Machine too), and the Machine binds where a pool accepted.
async fn asks_in_turns(store: Arc<dyn Store>) {
    store.create(class()).await.unwrap();
    store.create(pool("p1", 5, Some(true))).await.unwrap();
    store.create(pool("p2", 10, Some(true))).await.unwrap();
    store.create(pool("p3", 50, Some(true))).await.unwrap();
    store.create_typed(machine("m1")).await.unwrap();
    let cancel = CancellationToken::new();
    let task = spawn_with(
        &store,
        &cancel,
        ReservationConfig {
            fanout: 1,
            ..config()
        },
    );
    let r = eventually(&store, "m1's Reservation", |s| async move {
        get_reservation(&s, "m1").await
    })
    .await;
    assert_eq!(r.spec.pools, ["p3"], "the most free pool first");
    answer(&store, "m1", "p3", ReservationState::Rejected).await;
    eventually(&store, "the Reservation moved on to p2", |s| async move {
        get_reservation(&s, "m1")
            .await
            .filter(|r| r.spec.pools == ["p2"])
    })
    .await;
    assert_unbound(&store, "m1").await;
    accepted_binds(&store, "m1", "p2").await;
    // p3 rejected a moment ago: the next Machine asks another pool first.
    store.create_typed(machine("m2")).await.unwrap();
    let r = eventually(&store, "m2's Reservation", |s| async move {
        get_reservation(&s, "m2").await
    })
    .await;
    assert_eq!(r.spec.pools.len(), 1, "{:?}", r.spec.pools);
    assert_ne!(r.spec.pools, ["p3"], "a pool that just rejected goes last");
    cancel.cancel();
    task.await.unwrap();
}

async fn run_all(store: impl Fn() -> futures::future::BoxFuture<'static, Arc<dyn Store>>) {
    asks_in_turns(store().await).await;
    binds_where_accepted(store().await).await;
    most_free_accepted(store().await).await;
    all_rejected_stays_unbound(store().await).await;
    falls_back_to_pools_without_reservations(store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_mode_memory() {
    run_all(|| Box::pin(async { Arc::new(MemoryStore::new()) as Arc<dyn Store> })).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_mode_etcd() {
    let Some(etcd) = common::local_etcd().await else {
        return;
    };
    let etcd = Arc::new(etcd);
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    run_all(move || {
        let (etcd, n) = (etcd.clone(), n.clone());
        Box::pin(async move {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Arc::new(etcd.store(&format!("/irikit-rsv-{i}")).await.unwrap()) as Arc<dyn Store>
        })
    })
    .await;
}

#[cfg(not(feature = "etcd"))]
#[test]
fn reservation_mode_etcd() {
    common::etcd_unavailable();
}

#[test]
fn reservation_of_a_machine() {
    let mut m = Machine {
        metadata: ObjectMeta::namespaced("ns", "m1"),
        ..Machine::default()
    };
    m.metadata.uid = "u1".into();
    m.spec.machine_class_ref = LocalObjectReference::new("small");
    m.spec.volumes = vec![
        Volume {
            name: "a".into(),
            empty_disk: Some(EmptyDisk {
                size_limit: Some("1Gi".parse().unwrap()),
            }),
            ..Volume::default()
        },
        Volume {
            name: "b".into(),
            local_disk: Some(LocalDisk {
                size_limit: Some("2Gi".parse().unwrap()),
                image: String::new(),
            }),
            ..Volume::default()
        },
        Volume {
            name: "c".into(),
            ..Volume::default()
        },
    ];
    assert_eq!(local_storage_bytes(&m), 3 << 30);
    let class = MachineClass::from_object(class()).unwrap();
    let r = reservation_for(&m, Some(&class));
    assert_eq!(r.metadata.name, "m1");
    assert_eq!(r.metadata.labels["reservation.irikit.dev/machine"], "m1");
    assert_eq!(r.metadata.owner_references[0].uid, "u1");
    assert!(r.spec.pools.is_empty());
    let iri = r.spec.to_iri().unwrap();
    assert_eq!(iri.machine_classes["small"], 1);
    assert_eq!(iri.cpu_millis, 2000);
    assert_eq!(iri.memory_bytes, 4 << 30);
    assert_eq!(iri.local_storage_bytes_per_machine, 3 << 30);
    assert!(irikit_api::validation::validate(&irikit_api::Resource::into_object(r)).is_empty());
    let bare = reservation_for(&Machine::default(), None);
    assert_eq!(bare.spec.resources.len(), 1);
}
