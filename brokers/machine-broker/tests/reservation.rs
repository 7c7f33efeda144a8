//! The broker's reservation pass-through against a lower store whose pools' answers the test
//! writes itself (a stand-in for the lower machinepoollets): the lower Reservation the broker
//! creates, the folding of the lower pools' states into one IRI state (BOUND > ACCEPTED >
//! every candidate REJECTED > PENDING), the wait for a decision, a CreateMachine that names a
//! reservation, and deletion; on a memory and on an etcd lower store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::BrokerUnderTest;
use iri_spec::{
    irikit::reservation::v1alpha1::{
        self as rsv, ReservationState as S, reservation_runtime_client::ReservationRuntimeClient,
    },
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
    meta::v1alpha1 as meta,
};
use irikit_api::{
    ListOptions, Resource as _, Store, StoreExt as _,
    compute::{Machine, MachinePool},
    meta::ObjectMeta,
    reservation::{
        RESERVATION_NAME_ANNOTATION, RESERVATION_SUPPORTED_ANNOTATION, Reservation,
        ReservationPoolStatus, ReservationState,
    },
};
use machine_broker::{BrokerConfig, convert, plane};
use tokio_util::sync::CancellationToken;

const NS: &str = "lower";

/// Lower pools `p1`, `p2` (serving reservations) and `p3` (not), and the mock's classes.
async fn seed(store: &dyn Store) {
    plane::ensure_classes(store, &iri_mock::classes::default_machine_classes())
        .await
        .unwrap();
    for (pool, supported) in [("p1", Some("true")), ("p2", Some("true")), ("p3", None)] {
        let mut p = MachinePool {
            metadata: ObjectMeta::named(pool),
            ..MachinePool::default()
        };
        if let Some(s) = supported {
            p.metadata
                .annotations
                .insert(RESERVATION_SUPPORTED_ANNOTATION.to_owned(), s.to_owned());
        }
        let created = store.create_typed(p).await.unwrap();
        let mut with_status = created.clone();
        with_status.status.state = "Ready".to_owned();
        for list in [
            &mut with_status.status.capacity,
            &mut with_status.status.allocatable,
        ] {
            list.insert(
                "class/machine.x3-small".to_owned(),
                irikit_api::Quantity::from_int(10, irikit_api::quantity::Format::DecimalSI),
            );
        }
        store
            .update_status(with_status.into_object())
            .await
            .unwrap();
    }
}

/// Stands in for the lower poollets: every new lower Reservation gets the pool states `decide`
/// returns for it (nothing when it returns an empty list).
fn answer(
    store: Arc<dyn Store>,
    token: CancellationToken,
    decide: impl Fn(&Reservation) -> Vec<(&'static str, ReservationState)> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !token.is_cancelled() {
            let (items, _) = store
                .list_typed::<Reservation>(&ListOptions::default().in_namespace(NS))
                .await
                .unwrap();
            for r in items.into_iter().filter(|r| r.status.pools.is_empty()) {
                let states = decide(&r);
                if states.is_empty() {
                    continue;
                }
                let mut next = r.clone();
                next.status.pools = states
                    .into_iter()
                    .map(|(name, state)| ReservationPoolStatus {
                        name: name.to_owned(),
                        state,
                    })
                    .collect();
                // A conflict or a deletion meanwhile: the next pass sees the new version.
                let _ = store.update_status(next.into_object()).await;
            }
            // Polling the store as a poollet's relist would.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

fn reservation(n: i64, local: i64, label: &str) -> rsv::Reservation {
    rsv::Reservation {
        metadata: Some(meta::ObjectMetadata {
            labels: [("case".to_owned(), label.to_owned())].into(),
            annotations: [("note".to_owned(), "kept".to_owned())].into(),
            ..Default::default()
        }),
        spec: Some(rsv::ReservationSpec {
            machine_classes: [("x3-small".to_owned(), n)].into(),
            local_storage_bytes_per_machine: local,
            ..Default::default()
        }),
        status: None,
    }
}

async fn create(
    c: &mut ReservationRuntimeClient<tonic::transport::Channel>,
    r: rsv::Reservation,
) -> (String, i32) {
    let r = c
        .create_reservation(rsv::CreateReservationRequest {
            reservation: Some(r),
        })
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap();
    (r.metadata.unwrap().id, r.status.unwrap().state)
}

/// The state of the listed reservation `id` (it must be listed).
async fn listed_state(
    c: &mut ReservationRuntimeClient<tonic::transport::Channel>,
    id: &str,
) -> i32 {
    listed(c, id).await.unwrap().status.unwrap().state
}

async fn listed(
    c: &mut ReservationRuntimeClient<tonic::transport::Channel>,
    id: &str,
) -> Option<rsv::Reservation> {
    c.list_reservations(rsv::ListReservationsRequest {
        filter: Some(rsv::ReservationFilter {
            id: id.to_owned(),
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .reservations
    .pop()
}

async fn set_pool_state(store: &dyn Store, id: &str, pool: &str, state: ReservationState) {
    for _ in 0..16 {
        let mut r: Reservation = store.get_typed(NS, id).await.unwrap();
        r.status.pools.retain(|p| p.name != pool);
        r.status.pools.push(ReservationPoolStatus {
            name: pool.to_owned(),
            state,
        });
        if store.update_status(r.into_object()).await.is_ok() {
            return;
        }
    }
    panic!("could not write the pool state");
}

async fn check(store: Arc<dyn Store>) {
    seed(&*store).await;
    let under_test = BrokerUnderTest::start(
        store.clone(),
        &[],
        BrokerConfig {
            namespace: NS.to_owned(),
            reservation_decision_timeout: Duration::from_millis(500),
            ..BrokerConfig::default()
        },
    )
    .await;
    let channel = iri_spec::endpoint::connect_lazy(&under_test.endpoint);
    let mut c = ReservationRuntimeClient::new(channel.clone());
    let mut mc = MachineRuntimeClient::new(channel);
    let token = CancellationToken::new();
    // p1 holds up to 2 machines without local storage above 10 GiB; p2 rejects everything.
    let answerer = answer(store.clone(), token.clone(), |r| {
        if r.metadata
            .annotations
            .get(convert::LABELS_ANNOTATION)
            .is_some_and(|l| l.contains("silent"))
        {
            return Vec::new();
        }
        let n = r.class_counts().first().map_or(0, |(_, n)| *n);
        let local = r
            .spec
            .resources
            .get("localStorage")
            .map_or(0, |q| q.value());
        let p1 = if n <= 2 && local <= 10 << 30 {
            ReservationState::Accepted
        } else {
            ReservationState::Rejected
        };
        vec![("p1", p1), ("p2", ReservationState::Rejected)]
    });

    // Accepted within capacity: the answer waits for the lower decision; the lower object
    // carries the resources, asks the pools serving reservations one at a time (fanout 1,
    // p1 first by name when none has more allocatable), keeps the one that accepted, and
    // keeps the labels and annotations.
    let (id, state) = create(&mut c, reservation(2, 1 << 30, "fits")).await;
    assert_eq!(state, S::ReservationAccepted as i32);
    let lower: Reservation = store.get_typed(NS, &id).await.unwrap();
    assert_eq!(
        lower.spec.pools,
        ["p1"],
        "asked in turns, kept where accepted"
    );
    assert_eq!(lower.class_counts(), vec![("x3-small", 2)]);
    let iri = lower.spec.to_iri().unwrap();
    assert_eq!(iri.local_storage_bytes_per_machine, 1 << 30);
    let listed_one = listed(&mut c, &id).await.unwrap();
    let md = listed_one.metadata.unwrap();
    assert_eq!(md.labels.get("case").map(String::as_str), Some("fits"));
    assert_eq!(md.annotations.get("note").map(String::as_str), Some("kept"));
    assert_eq!(
        listed_one.status.unwrap().state,
        S::ReservationAccepted as i32
    );
    let by_label = c
        .list_reservations(rsv::ListReservationsRequest {
            filter: Some(rsv::ReservationFilter {
                label_selector: [("case".to_owned(), "fits".to_owned())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .reservations;
    assert_eq!(by_label.len(), 1);

    // Rejected beyond capacity (p1 and p2 reject; p3 serves no reservations, so it is no
    // candidate), and beyond the local storage dimension.
    let (over, state) = create(&mut c, reservation(3, 0, "over")).await;
    assert_eq!(state, S::ReservationRejected as i32);
    let lower: Reservation = store.get_typed(NS, &over).await.unwrap();
    assert_eq!(
        lower.spec.pools,
        ["p1"],
        "p1 holds the reservation that fits (9 free, p2 10): p2 was asked first, rejected, \
         then p1"
    );
    let (disk, state) = create(&mut c, reservation(1, 20 << 30, "disk")).await;
    assert_eq!(state, S::ReservationRejected as i32);

    // No pool looks able to accept (nothing allocatable by their status): every pool is asked
    // in one turn instead of one after another.
    for pool in ["p1", "p2"] {
        let mut p: MachinePool = store.get_typed("", pool).await.unwrap();
        p.status.allocatable.insert(
            "class/machine.x3-small".to_owned(),
            irikit_api::Quantity::from_int(0, irikit_api::quantity::Format::DecimalSI),
        );
        store.update_status(p.into_object()).await.unwrap();
    }
    let (full, state) = create(&mut c, reservation(3, 0, "full")).await;
    assert_eq!(state, S::ReservationRejected as i32);
    let lower: Reservation = store.get_typed(NS, &full).await.unwrap();
    assert!(
        lower.spec.pools.is_empty(),
        "asked every pool at once: {:?}",
        lower.spec.pools
    );

    // Undecided within the timeout: PENDING; the decision travels up later.
    let (pending, state) = create(&mut c, reservation(1, 0, "silent")).await;
    assert_eq!(state, S::ReservationPending as i32);
    set_pool_state(&*store, &pending, "p2", ReservationState::Rejected).await;
    assert_eq!(
        listed_state(&mut c, &pending).await,
        S::ReservationPending as i32
    );
    set_pool_state(&*store, &pending, "p1", ReservationState::Rejected).await;
    assert_eq!(
        listed_state(&mut c, &pending).await,
        S::ReservationRejected as i32
    );

    // Consumed on create: the lower Machine names the lower Reservation, so the lower
    // scheduler places it on a pool that accepted; the pool's Bound travels up.
    let mut m = machine::Machine {
        metadata: Some(meta::ObjectMetadata {
            annotations: [(
                iri_spec::keys::RESERVATION_ID_ANNOTATION.to_owned(),
                id.clone(),
            )]
            .into(),
            ..Default::default()
        }),
        spec: Some(machine::MachineSpec {
            class: "x3-small".to_owned(),
            ..Default::default()
        }),
        status: None,
    };
    let created = mc
        .create_machine(machine::CreateMachineRequest {
            machine: Some(m.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .machine
        .unwrap();
    let lower_machine: Machine = store
        .get_typed(NS, &created.metadata.unwrap().id)
        .await
        .unwrap();
    assert_eq!(
        lower_machine
            .metadata
            .annotations
            .get(RESERVATION_NAME_ANNOTATION),
        Some(&id)
    );
    set_pool_state(&*store, &id, "p1", ReservationState::Bound).await;
    assert_eq!(listed_state(&mut c, &id).await, S::ReservationBound as i32);
    // A machine naming an unknown reservation is refused.
    if let Some(md) = m.metadata.as_mut() {
        md.annotations.insert(
            iri_spec::keys::RESERVATION_ID_ANNOTATION.to_owned(),
            "nope".to_owned(),
        );
    }
    let err = mc
        .create_machine(machine::CreateMachineRequest { machine: Some(m) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // Released on delete: the lower Reservation goes; a second delete is NotFound.
    for r in [&id, &over, &disk, &pending] {
        c.delete_reservation(rsv::DeleteReservationRequest {
            reservation_id: r.clone(),
        })
        .await
        .unwrap();
        assert!(store.get_typed::<Reservation>(NS, r).await.is_err());
        assert!(listed(&mut c, r).await.is_none());
    }
    let err = c
        .delete_reservation(rsv::DeleteReservationRequest {
            reservation_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Bad input.
    for (r, what) in [
        (
            rsv::Reservation {
                spec: Some(rsv::ReservationSpec {
                    machine_classes: [("nope".to_owned(), 1)].into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "unknown class",
        ),
        (
            rsv::Reservation {
                spec: Some(rsv::ReservationSpec::default()),
                ..Default::default()
            },
            "reserves nothing",
        ),
        (rsv::Reservation::default(), "no spec"),
    ] {
        let err = c
            .create_reservation(rsv::CreateReservationRequest {
                reservation: Some(r),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}");
    }
    token.cancel();
    answerer.await.unwrap();
    under_test.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_pass_one_level_down_on_memory() {
    check(Arc::new(irikit_api::store::memory::MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_pass_one_level_down_on_etcd() {
    let Some(etcd) = common::etcd().await else {
        return;
    };
    check(irikit_api::store::open(&etcd.url).await.unwrap()).await;
}
