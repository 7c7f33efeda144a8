//! irikit's reservation extension on the mock: capacity held per class, cpu, memory and local
//! storage; holds count against later reservations; delete releases; a CreateMachine naming the
//! reservation consumes it; a mock without the extension reads as "no reservations".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use iri_mock::{Method, MockRuntime, Mutant, classes::MachineClassConfig};
use iri_spec::{
    irikit::reservation::v1alpha1::{self as rsv, ReservationState},
    keys::RESERVATION_ID_ANNOTATION,
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
    meta::v1alpha1::ObjectMetadata,
    reservation::{Reply, ReservationClient},
};
use tonic::Code;

const GI: i64 = 1 << 30;

fn mock() -> iri_mock::MockRuntimeBuilder {
    MockRuntime::builder()
        .machine_classes([
            MachineClassConfig::new("small", 2, 4 * GI).quantity(3),
            MachineClassConfig::new("big", 8, 32 * GI).quantity(1),
        ])
        .local_storage_bytes(100 * GI)
}

fn reservation(classes: &[(&str, i64)], local_per_machine: i64) -> rsv::Reservation {
    rsv::Reservation {
        metadata: Some(ObjectMetadata {
            id: "client-chosen".into(),
            labels: [("app".to_owned(), "web".to_owned())].into(),
            ..Default::default()
        }),
        spec: Some(rsv::ReservationSpec {
            machine_classes: classes.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect(),
            local_storage_bytes_per_machine: local_per_machine,
            ..Default::default()
        }),
        status: None,
    }
}

async fn create(c: &mut ReservationClient, r: rsv::Reservation) -> (String, ReservationState) {
    let r = c.create(r).await.unwrap().served().expect("served");
    let state = ReservationState::try_from(r.status.unwrap().state).unwrap();
    (r.metadata.unwrap().id, state)
}

fn machine_for(class: &str, reservation: Option<&str>) -> machine::Machine {
    let mut m = iri_mock::fixtures::machine();
    m.spec.as_mut().unwrap().class = class.to_owned();
    m.spec.as_mut().unwrap().volumes.clear();
    let md = m.metadata.get_or_insert_with(Default::default);
    if let Some(id) = reservation {
        md.annotations
            .insert(RESERVATION_ID_ANNOTATION.to_owned(), id.to_owned());
    }
    m
}

#[tokio::test]
async fn holds_rejects_releases_and_is_consumed() {
    let mock = mock().start_in_process().await.unwrap();
    let mut c = ReservationClient::new(mock.machine_channel());
    assert!(c.supported().await.unwrap());

    // Within capacity: accepted, fresh id, labels kept, created_at in ns.
    let r = c
        .create(reservation(&[("small", 2)], 10 * GI))
        .await
        .unwrap()
        .served()
        .unwrap();
    let md = r.metadata.clone().unwrap();
    assert_ne!(md.id, "client-chosen");
    assert_eq!(md.labels["app"], "web");
    assert!(md.created_at > 1_000_000_000_000_000_000);
    assert_eq!(
        r.status.unwrap().state,
        ReservationState::ReservationAccepted as i32
    );
    let first = md.id;
    // The hold blocks: 2 of 3 small held, 2 more do not fit; 1 does.
    assert_eq!(
        create(&mut c, reservation(&[("small", 2)], 0)).await.1,
        ReservationState::ReservationRejected
    );
    let (one, state) = create(&mut c, reservation(&[("small", 1)], 0)).await;
    assert_eq!(state, ReservationState::ReservationAccepted);
    // Beyond the class quantity, and beyond local storage (the dimension a pool's class
    // counts cannot express): 1 big machine fits by count, but not with 101 GiB of local disk.
    assert_eq!(
        create(&mut c, reservation(&[("big", 2)], 0)).await.1,
        ReservationState::ReservationRejected
    );
    assert_eq!(
        create(&mut c, reservation(&[("big", 1)], 81 * GI)).await.1,
        ReservationState::ReservationRejected,
        "2 × 10 GiB held + 81 GiB > 100 GiB"
    );
    // Delete releases.
    assert_eq!(c.delete(&first).await.unwrap(), Reply::Served(()));
    let (second, state) = create(&mut c, reservation(&[("small", 2)], 0)).await;
    assert_eq!(state, ReservationState::ReservationAccepted);
    assert_eq!(
        c.delete(&first).await.unwrap_err().code(),
        Code::NotFound,
        "a deleted reservation is gone"
    );

    // Consumed by a create that names it: BOUND, and the machine now takes the capacity.
    let mut mc = MachineRuntimeClient::new(mock.machine_channel());
    mc.create_machine(machine::CreateMachineRequest {
        machine: Some(machine_for("small", Some(&one))),
    })
    .await
    .unwrap();
    let listed = c
        .list(Some(rsv::ReservationFilter {
            id: one.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        listed[0].status.as_ref().unwrap().state,
        ReservationState::ReservationBound as i32
    );
    // All 3 small are taken (1 machine + 2 held): nothing more fits.
    assert_eq!(
        create(&mut c, reservation(&[("small", 1)], 0)).await.1,
        ReservationState::ReservationRejected
    );
    // A bound, unknown or rejected reservation cannot be consumed again.
    for id in [one.as_str(), "nope"] {
        let err = mc
            .create_machine(machine::CreateMachineRequest {
                machine: Some(machine_for("small", Some(id))),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{id}: {err:?}");
    }
    // The class must be one the reservation holds.
    let err = mc
        .create_machine(machine::CreateMachineRequest {
            machine: Some(machine_for("big", Some(&second))),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Label filter.
    let by_label = c
        .list(Some(rsv::ReservationFilter {
            label_selector: [("app".to_owned(), "other".to_owned())].into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(by_label.is_empty());
    assert_eq!(mock.reservations().len(), c.list(None).await.unwrap().len());
    assert_eq!(mock.call_count(Method::CreateReservation), 7);
}

#[tokio::test]
async fn running_machines_count_and_bad_requests_are_invalid() {
    let mock = mock().start_in_process().await.unwrap();
    let mut mc = MachineRuntimeClient::new(mock.machine_channel());
    mc.create_machine(machine::CreateMachineRequest {
        machine: Some(machine_for("big", None)),
    })
    .await
    .unwrap();
    let mut c = ReservationClient::new(mock.machine_channel());
    assert_eq!(
        create(&mut c, reservation(&[("big", 1)], 0)).await.1,
        ReservationState::ReservationRejected,
        "the one big machine runs"
    );
    for bad in [
        reservation(&[("nope", 1)], 0),
        reservation(&[("small", 0)], 0),
        reservation(&[], 0),
        reservation(&[("small", 1)], -1),
        rsv::Reservation::default(),
    ] {
        assert_eq!(
            c.create(bad).await.unwrap_err().code(),
            Code::InvalidArgument
        );
    }
    assert_eq!(
        c.delete("").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // Cpu and memory totals are checked against the host (here: the classes' sum, 14 cores).
    let cpu = rsv::Reservation {
        spec: Some(rsv::ReservationSpec {
            cpu_millis: 14_001,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        c.create(cpu)
            .await
            .unwrap()
            .served()
            .unwrap()
            .status
            .unwrap()
            .state,
        ReservationState::ReservationRejected as i32
    );
}

#[tokio::test]
async fn without_the_extension_there_are_no_reservations() {
    let mock = mock().reservations(false).start_in_process().await.unwrap();
    let mut c = ReservationClient::new(mock.machine_channel());
    assert!(!c.supported().await.unwrap());
    assert!(c.list(None).await.unwrap().is_empty());
    assert_eq!(
        c.create(reservation(&[("small", 1)], 0)).await.unwrap(),
        Reply::Unsupported
    );
    assert_eq!(c.delete("x").await.unwrap(), Reply::Unsupported);
    // A create naming a reservation is an ordinary create there.
    let mut mc = MachineRuntimeClient::new(mock.machine_channel());
    mc.create_machine(machine::CreateMachineRequest {
        machine: Some(machine_for("small", Some("whatever"))),
    })
    .await
    .unwrap();
}

/// One script, run without a mutant and under each reservation mutant: reserve all 3 small,
/// try 1 more, try 4, delete the first, reserve 1, create a machine against it.
async fn script(m: Option<Mutant>) -> (Vec<ReservationState>, i32) {
    let mock = mock().mutants(m).start_in_process().await.unwrap();
    let mut c = ReservationClient::new(mock.machine_channel());
    let mut states = Vec::new();
    let (a, s) = create(&mut c, reservation(&[("small", 3)], 0)).await;
    states.push(s);
    states.push(create(&mut c, reservation(&[("small", 1)], 0)).await.1);
    states.push(create(&mut c, reservation(&[("small", 4)], 0)).await.1);
    c.delete(&a).await.unwrap();
    let (b, s) = create(&mut c, reservation(&[("small", 1)], 0)).await;
    states.push(s);
    let mut mc = MachineRuntimeClient::new(mock.machine_channel());
    let _ = mc
        .create_machine(machine::CreateMachineRequest {
            machine: Some(machine_for("small", Some(&b))),
        })
        .await;
    let after = c
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.metadata.as_ref().unwrap().id == b);
    (states, after.map_or(-1, |r| r.status.unwrap().state))
}

#[tokio::test]
async fn mutants_break_what_they_name() {
    use ReservationState::{ReservationAccepted as A, ReservationRejected as R};
    const BOUND: i32 = ReservationState::ReservationBound as i32;
    const ACCEPTED: i32 = A as i32;
    const REJECTED: i32 = R as i32;
    let cases = [
        (None, vec![A, R, R, A], BOUND),
        (
            Some(Mutant::ReservationAlwaysRejected),
            vec![R, R, R, R],
            REJECTED,
        ),
        (
            Some(Mutant::ReservationCapacityUnchecked),
            vec![A, A, A, A],
            BOUND,
        ),
        (
            Some(Mutant::ReservationHoldsIgnored),
            vec![A, A, R, A],
            BOUND,
        ),
        (
            Some(Mutant::ReservationDeleteKeepsHold),
            vec![A, R, R, R],
            REJECTED,
        ),
        (
            Some(Mutant::ReservationNotConsumed),
            vec![A, R, R, A],
            ACCEPTED,
        ),
    ];
    for (m, want, want_after) in cases {
        assert_eq!(script(m).await, (want, want_after), "{m:?}");
    }
}

/// CreateMachine of a small machine: its id, or the error code's name.
async fn create_machine(
    mc: &mut MachineRuntimeClient<tonic::transport::Channel>,
    reservation: Option<&str>,
) -> String {
    match mc
        .create_machine(machine::CreateMachineRequest {
            machine: Some(machine_for("small", reservation)),
        })
        .await
    {
        Ok(r) => r.into_inner().machine.unwrap().metadata.unwrap().id,
        Err(e) => format!("{:?}", e.code()),
    }
}

/// A reservation of 2 small machines is consumed one machine at a time; while it (or any
/// reservation) holds capacity, a create that names no reservation gets only what is not held;
/// machine and reservation deletes give capacity back.
async fn consume_script(m: Option<Mutant>) -> Vec<String> {
    let mock = mock().mutants(m).start_in_process().await.unwrap();
    let mut c = ReservationClient::new(mock.machine_channel());
    let mut mc = MachineRuntimeClient::new(mock.machine_channel());
    let mut out = Vec::new();
    let state_of = |list: Vec<rsv::Reservation>, id: &str| {
        list.into_iter()
            .find(|r| r.metadata.as_ref().unwrap().id == id)
            .map_or("gone".to_owned(), |r| {
                ReservationState::try_from(r.status.unwrap().state)
                    .unwrap()
                    .as_str_name()
                    .to_owned()
            })
    };
    // 2 of 3 small held; one unreserved machine fits, a second does not.
    let (two, _) = create(&mut c, reservation(&[("small", 2)], 0)).await;
    let free = create_machine(&mut mc, None).await;
    out.push(if free.len() > 20 {
        "ok".into()
    } else {
        free.clone()
    });
    out.push(create_machine(&mut mc, None).await);
    // First machine against the reservation: still ACCEPTED, one left in the hold.
    let first = create_machine(&mut mc, Some(&two)).await;
    out.push(if first.len() > 20 { "ok".into() } else { first });
    out.push(state_of(c.list(None).await.unwrap(), &two));
    // The second: BOUND; a third against it is refused.
    let second = create_machine(&mut mc, Some(&two)).await;
    out.push(if second.len() > 20 {
        "ok".into()
    } else {
        second
    });
    out.push(state_of(c.list(None).await.unwrap(), &two));
    out.push(create_machine(&mut mc, Some(&two)).await);
    // All 3 small run: a new reservation is rejected until a machine is deleted.
    out.push(
        create(&mut c, reservation(&[("small", 1)], 0))
            .await
            .1
            .as_str_name()
            .to_owned(),
    );
    if free.len() > 20 {
        mc.delete_machine(machine::DeleteMachineRequest { machine_id: free })
            .await
            .unwrap();
    }
    out.push(
        create(&mut c, reservation(&[("small", 1)], 0))
            .await
            .1
            .as_str_name()
            .to_owned(),
    );
    out
}

#[tokio::test]
async fn consumed_one_machine_at_a_time_and_unreserved_creates_respect_holds() {
    let ok = |s: &str| s.to_owned();
    let want = |second_unreserved: &str, after_first: &str, second: &str, third: &str| {
        vec![
            ok("ok"),
            ok(second_unreserved),
            ok("ok"),
            ok(after_first),
            ok(second),
            ok("RESERVATION_BOUND"),
            ok(third),
            ok("RESERVATION_REJECTED"),
            ok("RESERVATION_ACCEPTED"),
        ]
    };
    assert_eq!(
        consume_script(None).await,
        want(
            "ResourceExhausted",
            "RESERVATION_ACCEPTED",
            "ok",
            "FailedPrecondition"
        )
    );
    // The first create consumes the whole reservation: the second is refused.
    let whole = consume_script(Some(Mutant::ReservationConsumedWhole)).await;
    assert_eq!(whole[3], "RESERVATION_BOUND", "{whole:?}");
    assert_eq!(whole[4], "FailedPrecondition", "{whole:?}");
    // The unreserved create takes held capacity.
    let takes = consume_script(Some(Mutant::ReservationUnreservedTakesHold)).await;
    assert_ne!(takes[1], "ResourceExhausted", "{takes:?}");
}
