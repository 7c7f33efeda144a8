//! irikit's reservation extension (issue 15) on ch-machine-runtime over ch-sim: holds against
//! the host's real class quantities and the state directory's free space, a CreateMachine
//! without a reservation refused where capacity is held, consumption one machine at a time
//! (BOUND with the last), holds that
//! survive a kill -9 and restart, and release on DeleteReservation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Backend, Client, Env, Proc};
use iri_spec::{
    irikit::reservation::v1alpha1::{self as rsv, ReservationState},
    keys::RESERVATION_ID_ANNOTATION,
    machine::v1alpha1 as machine,
    meta::v1alpha1 as meta,
    reservation::{Reply, ReservationClient},
};
use tonic::Code;

const ACCEPTED: i32 = ReservationState::ReservationAccepted as i32;
const REJECTED: i32 = ReservationState::ReservationRejected as i32;
const BOUND: i32 = ReservationState::ReservationBound as i32;

fn reservation(classes: &[(&str, i64)], local: i64) -> rsv::Reservation {
    rsv::Reservation {
        metadata: Some(meta::ObjectMetadata {
            labels: common::labels(&[("suite", "reservation")]),
            ..Default::default()
        }),
        spec: Some(rsv::ReservationSpec {
            machine_classes: classes.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect(),
            local_storage_bytes_per_machine: local,
            ..Default::default()
        }),
        status: None,
    }
}

/// Creates a reservation; returns (id, state).
async fn create(c: &mut ReservationClient, r: rsv::Reservation) -> (String, i32) {
    let Reply::Served(r) = c.create(r).await.unwrap() else {
        panic!("CreateReservation answered Unimplemented");
    };
    let id = r.metadata.unwrap().id;
    assert!(!id.is_empty());
    (id, r.status.unwrap().state)
}

async fn state(c: &mut ReservationClient, id: &str) -> Option<i32> {
    let filter = rsv::ReservationFilter {
        id: id.to_owned(),
        ..Default::default()
    };
    let list = c.list(Some(filter)).await.unwrap();
    assert!(list.len() <= 1);
    list.first().map(|r| r.status.as_ref().unwrap().state)
}

/// CreateMachine of class `small`, naming `reservation` when given.
async fn create_machine(
    client: &mut Client,
    reservation: Option<&str>,
) -> Result<String, tonic::Status> {
    let mut request = common::machine_request(common::spec(vec![]));
    if let Some(id) = reservation {
        let md = request.machine.as_mut().unwrap().metadata.as_mut().unwrap();
        md.annotations
            .insert(RESERVATION_ID_ANNOTATION.to_owned(), id.to_owned());
    }
    let created = client.create_machine(request).await?.into_inner();
    Ok(created.machine.unwrap().metadata.unwrap().id)
}

fn start(env: &Env) -> Proc {
    // At least four machines of the small class (1 CPU) on any host.
    env.start_with(&["--cpu-overcommit", "4"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_hold_bind_survive_a_restart_and_release() {
    let env = Env::new(Backend::Sim, "halt").unwrap();
    let mut runtime = start(&env);
    let channel = runtime.channel().await;
    let mut client = Client::new(channel.clone());
    let mut rc = ReservationClient::new(channel);
    assert!(rc.supported().await.unwrap());

    let status = client
        .status(machine::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let q = status
        .machine_class_status
        .iter()
        .find(|s| s.machine_class.as_ref().unwrap().name == common::CLASS)
        .unwrap()
        .quantity;
    assert!(q >= 4, "small class quantity {q}");

    // Bad specs are InvalidArgument.
    for bad in [
        reservation(&[("nope", 1)], 0),
        reservation(&[(common::CLASS, 0)], 0),
        reservation(&[], 0),
        reservation(&[(common::CLASS, 1)], -1),
    ] {
        let err = rc.create(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }

    // The whole class is held; one more is rejected (and listed so, labels kept).
    let (full, st) = create(&mut rc, reservation(&[(common::CLASS, q)], 0)).await;
    assert_eq!(st, ACCEPTED);
    let (over, st) = create(&mut rc, reservation(&[(common::CLASS, 1)], 0)).await;
    assert_eq!(st, REJECTED);
    assert_eq!(state(&mut rc, &over).await, Some(REJECTED));
    let listed = rc
        .list(Some(rsv::ReservationFilter {
            label_selector: common::labels(&[("suite", "reservation")]),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);

    // A machine without a reservation may not take held capacity; a rejected reservation
    // cannot be consumed; an unknown one neither.
    let err = create_machine(&mut client, None).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let err = create_machine(&mut client, Some(&over)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = create_machine(&mut client, Some("no-such-reservation"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Consumed one machine at a time: after the first of q it is still ACCEPTED, and the
    // machine plus the rest of the hold still fill the class.
    let m1 = create_machine(&mut client, Some(&full)).await.unwrap();
    assert_eq!(state(&mut rc, &full).await, Some(ACCEPTED));
    let (extra, st) = create(&mut rc, reservation(&[(common::CLASS, 1)], 0)).await;
    assert_eq!(
        st, REJECTED,
        "the machine and the rest of the hold fill the class"
    );
    let err = create_machine(&mut client, None).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(rc.delete(&full).await.unwrap(), Reply::Served(()));

    // A reservation of two: ACCEPTED after the first machine, BOUND with the second, and a
    // bound reservation cannot be consumed again.
    let (pair, st) = create(&mut rc, reservation(&[(common::CLASS, 2)], 0)).await;
    assert_eq!(st, ACCEPTED);
    let m2 = create_machine(&mut client, Some(&pair)).await.unwrap();
    assert_eq!(state(&mut rc, &pair).await, Some(ACCEPTED));
    let m3 = create_machine(&mut client, Some(&pair)).await.unwrap();
    assert_eq!(state(&mut rc, &pair).await, Some(BOUND));
    let err = create_machine(&mut client, Some(&pair)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Three machines use three; hold the rest of the class.
    let (rest, st) = create(&mut rc, reservation(&[(common::CLASS, q - 3)], 0)).await;
    assert_eq!(st, ACCEPTED);
    let (extra2, st) = create(&mut rc, reservation(&[(common::CLASS, 1)], 0)).await;
    assert_eq!(st, REJECTED, "the machines and the hold fill the class");
    let err = create_machine(&mut client, None).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // kill -9 and restart: every reservation comes back with its state, and the hold holds.
    runtime.kill9();
    let runtime = start(&env);
    let channel = runtime.channel().await;
    let mut client = Client::new(channel.clone());
    let mut rc = ReservationClient::new(channel);
    assert_eq!(state(&mut rc, &pair).await, Some(BOUND));
    assert_eq!(state(&mut rc, &over).await, Some(REJECTED));
    assert_eq!(state(&mut rc, &rest).await, Some(ACCEPTED));
    assert_eq!(state(&mut rc, &extra).await, Some(REJECTED));
    assert_eq!(state(&mut rc, &extra2).await, Some(REJECTED));
    for m in [&m1, &m2, &m3] {
        assert!(common::get(&mut client, m).await.is_some());
    }
    let err = create_machine(&mut client, None).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Deleting the hold releases it.
    assert_eq!(rc.delete(&rest).await.unwrap(), Reply::Served(()));
    assert_eq!(state(&mut rc, &rest).await, None);
    let err = rc.delete(&rest).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Nothing is held: a machine without a reservation is created (best-effort).
    let m4 = create_machine(&mut client, None).await.unwrap();
    // The machines now use 4 of the class: a reservation of the rest fits, one more not.
    let (_, st) = create(&mut rc, reservation(&[(common::CLASS, q - 3)], 0)).await;
    assert_eq!(st, REJECTED, "four machines and q-3 exceed {q}");
    if q > 4 {
        let (id, st) = create(&mut rc, reservation(&[(common::CLASS, q - 4)], 0)).await;
        assert_eq!(st, ACCEPTED);
        rc.delete(&id).await.unwrap();
    }

    // Local storage: the state directory's free space, however many bytes that is here.
    let vfs = rustix::fs::statvfs(&env.state_dir).unwrap();
    let free = i64::try_from(vfs.f_bavail * vfs.f_frsize).unwrap();
    let (big, st) = create(&mut rc, reservation(&[], free / 4 * 3)).await;
    assert_eq!(st, ACCEPTED, "3/4 of the {free} free bytes");
    let (again, st) = create(&mut rc, reservation(&[], free / 4 * 3)).await;
    assert_eq!(st, REJECTED, "another 3/4 of the {free} free bytes");
    let (huge, st) = create(&mut rc, reservation(&[], 1 << 62)).await;
    assert_eq!(st, REJECTED, "4 EiB");
    for id in [big, again, huge] {
        rc.delete(&id).await.unwrap();
    }

    for id in [m1, m2, m3, m4] {
        common::delete_and_wait(&mut client, &id).await;
    }
}
