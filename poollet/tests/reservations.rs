//! The machinepoollet's reservation pass-through against iri-mock (in process), on the memory
//! store and on etcd: the supported annotation, Reservations passed down with their state
//! coming back up (other pools' entries kept), a Machine created against its reservation
//! (Bound), delete and relist GC release the holds, and a runtime without the extension.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{poll_until, wait_for};
use iri_mock::MockRuntime;
use iri_spec::{
    irikit::reservation::v1alpha1::{self as rsv, ReservationState as IriState},
    keys::RESERVATION_ID_ANNOTATION,
    reservation::ReservationClient,
};
use irikit_api::{
    Kind, Store, StoreExt,
    compute::{Machine, MachinePool},
    meta::{LocalObjectReference, ObjectMeta},
    reservation::{
        IRI_RESERVATION_NAME_LABEL, IRI_RESERVATION_NAMESPACE_LABEL, IRI_RESERVATION_UID_LABEL,
        RESERVATION_NAME_ANNOTATION, RESERVATION_SUPPORTED_ANNOTATION, Reservation,
        ReservationPoolStatus, ReservationState,
    },
    store::memory::MemoryStore,
};
use poollet::{Config, MachinePoollet};

const POOL: &str = "pool-r";
const NS: &str = "default";

fn config() -> Config {
    let mut config = Config::new(POOL, "ironcore://pool-r");
    config.pool.heartbeat_interval = Duration::from_millis(200);
    config.pool.status_timeout = Duration::from_millis(100);
    config.relist_period = Duration::from_millis(50);
    config.machine.converging_requeue = Duration::from_millis(20);
    config
}

async fn mock(reservations: bool) -> MockRuntime {
    iri_mock::MockRuntime::builder()
        .runtime_name("iri-mock")
        .machine_classes([
            iri_mock::classes::MachineClassConfig::new("small", 2, 4 << 30).quantity(2),
        ])
        .reservations(reservations)
        .start_in_process()
        .await
        .unwrap()
}

/// The machinepoollet of [`config`] on `store` and `mock`.
fn start(store: &Arc<dyn Store>, mock: MockRuntime) -> common::Env {
    let poollet = MachinePoollet::new(store.clone(), mock.machine_channel(), config());
    common::Env::spawn(store.clone(), mock, |token| poollet.run(token))
}

fn reservation(name: &str, pools: &[&str], machines: i64) -> Reservation {
    let mut r = Reservation {
        metadata: ObjectMeta::namespaced(NS, name),
        ..Reservation::default()
    };
    r.spec.pools = pools.iter().map(|p| (*p).to_owned()).collect();
    r.spec.resources.insert(
        "class/machine.small".into(),
        machines.to_string().parse().unwrap(),
    );
    r
}

fn state_is(state: ReservationState) -> impl Fn(&Reservation) -> bool {
    move |r| r.pool_state(POOL) == Some(state)
}

/// The runtime reservations labelled with the api Reservation's uid.
fn runtime_of(mock: &MockRuntime, uid: &str) -> Vec<rsv::Reservation> {
    mock.reservations()
        .into_iter()
        .filter(|r| {
            r.metadata
                .as_ref()
                .and_then(|m| m.labels.get(IRI_RESERVATION_UID_LABEL))
                .is_some_and(|u| u == uid)
        })
        .collect()
}

async fn pass_through(store: Arc<dyn Store>) {
    store
        .create_typed(common::machine_class("small", "2", "4Gi"))
        .await
        .unwrap();
    let env = start(&store, mock(true).await);
    let mock = &env.mock;
    wait_for(
        &store,
        "",
        POOL,
        |p: &MachinePool| {
            p.metadata.annotations.get(RESERVATION_SUPPORTED_ANNOTATION) == Some(&"true".to_owned())
        },
        "pool annotated supported=true",
    )
    .await;

    // One machine of 2 fits: Accepted, with another pool's entry kept.
    store.create_typed(reservation("r1", &[], 1)).await.unwrap();
    // Another pool's answer, written while this poollet writes its own (conflicts retried).
    loop {
        let mut r = store.get_typed::<Reservation>(NS, "r1").await.unwrap();
        r.status.pools.push(ReservationPoolStatus {
            name: "elsewhere".into(),
            state: ReservationState::Rejected,
        });
        match store
            .update_status(irikit_api::Resource::into_object(r))
            .await
        {
            Ok(_) => break,
            Err(irikit_api::store::Error::Conflict { .. }) => {}
            Err(err) => panic!("{err}"),
        }
    }
    let r1 = wait_for(
        &store,
        NS,
        "r1",
        state_is(ReservationState::Accepted),
        "r1 Accepted",
    )
    .await;
    assert_eq!(
        r1.pool_state("elsewhere"),
        Some(ReservationState::Rejected),
        "other pools' entries kept"
    );
    let held = runtime_of(mock, &r1.metadata.uid);
    assert_eq!(held.len(), 1, "one runtime reservation per Reservation");
    let md = held[0].metadata.clone().unwrap();
    assert_eq!(md.labels[IRI_RESERVATION_NAMESPACE_LABEL], NS);
    assert_eq!(md.labels[IRI_RESERVATION_NAME_LABEL], "r1");
    assert_eq!(held[0].spec.as_ref().unwrap().machine_classes["small"], 1);

    // Beyond what is left (1 held of 2): Rejected. Another pool only: not passed down.
    let r2 = store
        .create_typed(reservation("r2", &[POOL], 2))
        .await
        .unwrap();
    wait_for(
        &store,
        NS,
        "r2",
        state_is(ReservationState::Rejected),
        "r2 Rejected",
    )
    .await;
    let r3 = store
        .create_typed(reservation("r3", &["other-pool"], 1))
        .await
        .unwrap();

    // A Machine naming r1 is created against r1's runtime reservation: Bound.
    let mut m = Machine {
        metadata: ObjectMeta::namespaced(NS, "m1"),
        ..Machine::default()
    };
    m.spec.machine_class_ref = LocalObjectReference::new("small");
    m.spec.machine_pool_ref = Some(LocalObjectReference::new(POOL));
    m.metadata
        .annotations
        .insert(RESERVATION_NAME_ANNOTATION.to_owned(), "r1".to_owned());
    store.create_typed(m).await.unwrap();
    wait_for(
        &store,
        NS,
        "r1",
        state_is(ReservationState::Bound),
        "r1 Bound",
    )
    .await;
    let machines = mock.machines();
    assert_eq!(machines.len(), 1);
    assert_eq!(
        machines[0].metadata.as_ref().unwrap().annotations[RESERVATION_ID_ANNOTATION],
        md.id,
        "created against r1's runtime reservation"
    );
    assert!(runtime_of(mock, &r3.metadata.uid).is_empty());
    let r3 = store.get_typed::<Reservation>(NS, "r3").await.unwrap();
    assert!(r3.status.pools.is_empty(), "{:?}", r3.status);

    // Deleting a Reservation releases its hold.
    store
        .delete(Kind::Reservation, NS, "r2", None)
        .await
        .unwrap();
    store
        .delete(Kind::Reservation, NS, "r1", None)
        .await
        .unwrap();
    poll_until(
        || {
            runtime_of(mock, &r1.metadata.uid).is_empty()
                && runtime_of(mock, &r2.metadata.uid).is_empty()
        },
        "runtime reservations of deleted Reservations released",
    )
    .await;

    // A Reservation narrowed to another pool (as the scheduler does once it bound the Machine
    // elsewhere) releases the hold here.
    let r4 = store.create_typed(reservation("r4", &[], 1)).await.unwrap();
    wait_for(
        &store,
        NS,
        "r4",
        state_is(ReservationState::Accepted),
        "r4 Accepted",
    )
    .await;
    assert_eq!(runtime_of(mock, &r4.metadata.uid).len(), 1);
    loop {
        let mut r = store.get_typed::<Reservation>(NS, "r4").await.unwrap();
        r.spec.pools = vec!["other-pool".to_owned()];
        match store.update(irikit_api::Resource::into_object(r)).await {
            Ok(_) => break,
            Err(irikit_api::store::Error::Conflict { .. }) => {}
            Err(err) => panic!("{err}"),
        }
    }
    poll_until(
        || runtime_of(mock, &r4.metadata.uid).is_empty(),
        "the hold of a Reservation that no longer asks this pool released",
    )
    .await;

    // GC: a runtime reservation labelled for a Reservation the store does not have.
    let mut c = ReservationClient::new(mock.machine_channel());
    let stray = c
        .create(rsv::Reservation {
            metadata: Some(iri_spec::meta::v1alpha1::ObjectMetadata {
                labels: [
                    (IRI_RESERVATION_UID_LABEL.to_owned(), "gone-uid".to_owned()),
                    (IRI_RESERVATION_NAMESPACE_LABEL.to_owned(), NS.to_owned()),
                    (IRI_RESERVATION_NAME_LABEL.to_owned(), "gone".to_owned()),
                ]
                .into(),
                ..Default::default()
            }),
            spec: Some(rsv::ReservationSpec {
                machine_classes: [("small".to_owned(), 1)].into(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .unwrap()
        .served()
        .unwrap();
    assert_eq!(
        stray.status.unwrap().state,
        IriState::ReservationAccepted as i32
    );
    poll_until(
        || runtime_of(mock, "gone-uid").is_empty(),
        "stray runtime reservation deleted",
    )
    .await;

    env.stop().await;
}

async fn without_the_extension(store: Arc<dyn Store>) {
    let env = start(&store, mock(false).await);
    wait_for(
        &store,
        "",
        POOL,
        |p: &MachinePool| {
            p.metadata.annotations.get(RESERVATION_SUPPORTED_ANNOTATION)
                == Some(&"false".to_owned())
        },
        "pool annotated supported=false",
    )
    .await;
    store.create_typed(reservation("r1", &[], 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r1 = store.get_typed::<Reservation>(NS, "r1").await.unwrap();
    assert!(
        r1.status.pools.is_empty(),
        "no answer from a pool without reservations: {:?}",
        r1.status
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_memory() {
    pass_through(Arc::new(MemoryStore::new())).await;
    without_the_extension(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_etcd() {
    let Some((_etcd, store)) = common::etcd_store("/irikit-rsv-a").await else {
        return;
    };
    pass_through(store).await;
    let Some((_etcd, store)) = common::etcd_store("/irikit-rsv-b").await else {
        return;
    };
    without_the_extension(store).await;
}

#[cfg(not(feature = "etcd"))]
#[test]
fn pass_through_etcd() {
    common::etcd_unavailable();
}
