//! Behaviour of the runtimes beyond status codes: the state machine with delays (paused tokio
//! clock), generations, deletion phases, events, class status, filters and test-control handles.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{class_resources, labels, start};
use iri_mock::{Delays, MockRuntime, classes::MachineClassConfig, fixtures};
use iri_spec::{
    bucket::v1alpha1 as bucket,
    machine::v1alpha1::{self as machine, MachineState},
    volume::v1alpha1 as volume,
};

const SEC: Duration = Duration::from_secs(1);

/// The id of the object an event is about.
fn involved_id(e: &iri_spec::event::v1alpha1::Event) -> &str {
    &e.spec
        .as_ref()
        .unwrap()
        .involved_object_meta
        .as_ref()
        .unwrap()
        .id
}

fn state(m: &machine::Machine) -> MachineState {
    MachineState::try_from(m.status.as_ref().unwrap().state).unwrap()
}

#[tokio::test(start_paused = true)]
async fn machine_lifecycle_follows_delays() {
    let (_mock, mut c) = start(MockRuntime::builder().delays(Delays {
        provision: 10 * SEC,
        apply: 2 * SEC,
        power: 3 * SEC,
        terminate: 5 * SEC,
    }))
    .await;
    let id = c.create_machine(fixtures::machine()).await;

    tokio::time::advance(9 * SEC).await;
    assert_eq!(c.machine_state(&id).await, MachineState::MachinePending);
    tokio::time::advance(SEC).await;
    assert_eq!(c.machine_state(&id).await, MachineState::MachineRunning);

    // Power off: generation bumps at once, observed_generation and state follow later.
    c.power(&id, machine::Power::Off).await;
    let m = c.get_machine(&id).await.unwrap();
    assert_eq!(m.metadata.as_ref().unwrap().generation, 1);
    assert_eq!(m.status.as_ref().unwrap().observed_generation, 0);
    assert_eq!(state(&m), MachineState::MachineRunning);
    tokio::time::advance(2 * SEC).await;
    let m = c.get_machine(&id).await.unwrap();
    assert_eq!(m.status.as_ref().unwrap().observed_generation, 1);
    assert_eq!(state(&m), MachineState::MachineRunning);
    tokio::time::advance(SEC).await;
    assert_eq!(c.machine_state(&id).await, MachineState::MachineTerminated);

    // Delete: listed as TERMINATING with deleted_at until the delay passed; repeat delete is OK.
    c.delete_machine(&id).await.unwrap();
    let m = c.get_machine(&id).await.unwrap();
    assert_eq!(state(&m), MachineState::MachineTerminating);
    let deleted_at = m.metadata.as_ref().unwrap().deleted_at;
    assert!(
        deleted_at > 1_000_000_000_000_000_000,
        "deleted_at in ns: {deleted_at}"
    );
    tokio::time::advance(4 * SEC).await;
    c.delete_machine(&id).await.unwrap();
    tokio::time::advance(SEC).await;
    assert!(c.get_machine(&id).await.is_none());
    let err = c.delete_machine(&id).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn power_off_stopped_is_an_option() {
    let (_mock, mut c) = start(MockRuntime::builder().power_off_stopped(true)).await;
    let mut m = fixtures::machine();
    m.spec.as_mut().unwrap().power = machine::Power::Off as i32;
    let id = c.create_machine(m).await;
    assert_eq!(c.machine_state(&id).await, MachineState::MachineStopped);
}

#[tokio::test]
async fn created_off_machine_is_terminated_and_powers_on() {
    let (_mock, mut c) = start(MockRuntime::builder()).await;
    let mut m = fixtures::machine();
    m.spec.as_mut().unwrap().power = machine::Power::Off as i32;
    let id = c.create_machine(m).await;
    assert_eq!(c.machine_state(&id).await, MachineState::MachineTerminated);
    c.power(&id, machine::Power::On).await;
    assert_eq!(c.machine_state(&id).await, MachineState::MachineRunning);
}

#[tokio::test]
async fn attach_detach_reflect_in_spec_status_and_generation() {
    let (_mock, mut c) = start(MockRuntime::builder()).await;
    let id = c.create_machine(fixtures::machine()).await;
    c.attach_volume(&id, fixtures::local_disk("root"))
        .await
        .unwrap();
    c.machine
        .attach_network_interface(machine::AttachNetworkInterfaceRequest {
            machine_id: id.clone(),
            network_interface: Some(fixtures::nic("eth0")),
        })
        .await
        .unwrap();
    let m = c.get_machine(&id).await.unwrap();
    assert_eq!(m.metadata.as_ref().unwrap().generation, 2);
    let status = m.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, 2);
    assert_eq!(status.volumes.len(), 1);
    assert_eq!(status.volumes[0].name, "root");
    assert!(!status.volumes[0].handle.is_empty());
    assert_eq!(
        status.volumes[0].state,
        machine::VolumeState::VolumeAttached as i32
    );
    assert_eq!(
        status.network_interfaces[0].state,
        machine::NetworkInterfaceState::NetworkInterfaceAttached as i32
    );
    assert_eq!(
        m.spec.as_ref().unwrap().volumes,
        vec![fixtures::local_disk("root")]
    );

    c.machine
        .detach_volume(machine::DetachVolumeRequest {
            machine_id: id.clone(),
            name: "root".into(),
        })
        .await
        .unwrap();
    let m = c.get_machine(&id).await.unwrap();
    assert!(m.spec.as_ref().unwrap().volumes.is_empty());
    assert!(m.status.as_ref().unwrap().volumes.is_empty());
    assert_eq!(m.metadata.as_ref().unwrap().generation, 3);
}

#[tokio::test]
async fn annotations_are_replaced_and_labels_kept_verbatim() {
    let (_mock, mut c) = start(MockRuntime::builder()).await;
    let mut m = fixtures::machine_with_labels(&[
        ("machinepoollet.ironcore.dev/machine-uid", "u-1"),
        ("empty", ""),
    ]);
    m.metadata.as_mut().unwrap().annotations = [("old".to_owned(), "1".to_owned())].into();
    let id = c.create_machine(m.clone()).await;
    let got = c.get_machine(&id).await.unwrap();
    assert_eq!(
        got.metadata.as_ref().unwrap().labels,
        m.metadata.as_ref().unwrap().labels
    );
    c.machine
        .update_machine_annotations(machine::UpdateMachineAnnotationsRequest {
            machine_id: id.clone(),
            annotations: [("new".to_owned(), "2".to_owned())].into(),
        })
        .await
        .unwrap();
    let got = c.get_machine(&id).await.unwrap();
    assert_eq!(
        got.metadata.as_ref().unwrap().annotations,
        [("new".to_owned(), "2".to_owned())].into()
    );
    // Annotations are not spec: the generation stays.
    assert_eq!(got.metadata.as_ref().unwrap().generation, 0);
}

#[tokio::test]
async fn label_selector_filters() {
    let (_mock, mut c) = start(MockRuntime::builder()).await;
    c.create_machine(fixtures::machine_with_labels(&[("a", "1")]))
        .await;
    c.create_machine(fixtures::machine_with_labels(&[("a", "2"), ("b", "x")]))
        .await;
    c.create_machine(fixtures::machine_with_labels(&[])).await;
    for (selector, want) in [
        (vec![], 3),
        (vec![("a", "1")], 1),
        (vec![("a", "2"), ("b", "x")], 1),
        (vec![("a", "3")], 0),
        (vec![("b", "")], 0),
    ] {
        let filter = machine::MachineFilter {
            id: String::new(),
            label_selector: labels(&selector),
        };
        let machines = c.find_machines(Some(filter)).await;
        assert_eq!(machines.len(), want, "{selector:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn events_carry_labels_seconds_and_filter() {
    let (_mock, mut c) = start(MockRuntime::builder()).await;
    let id = c
        .create_machine(fixtures::machine_with_labels(&[("team", "a")]))
        .await;
    tokio::time::advance(Duration::from_secs(100)).await;
    let other = c
        .create_machine(fixtures::machine_with_labels(&[("team", "b")]))
        .await;
    c.list_machines().await;
    let all = c.machine_events().await;
    assert!(
        all.len() >= 4,
        "created + running for two machines: {all:?}"
    );
    for ev in &all {
        let spec = ev.spec.as_ref().unwrap();
        assert!(
            spec.event_time > 1_600_000_000 && spec.event_time < 10_000_000_000,
            "seconds"
        );
        assert!(!spec.action.is_empty());
        assert!(
            !spec
                .involved_object_meta
                .as_ref()
                .unwrap()
                .labels
                .is_empty()
        );
    }
    let mut query = async |f: machine::EventFilter| c.machine_events_by(Some(f)).await;
    let by_id = query(machine::EventFilter {
        id: id.clone(),
        ..Default::default()
    })
    .await;
    assert!(!by_id.is_empty());
    assert!(by_id.iter().all(|e| involved_id(e) == id));
    let by_label = query(machine::EventFilter {
        label_selector: [("team".to_owned(), "b".to_owned())].into(),
        ..Default::default()
    })
    .await;
    assert!(by_label.iter().all(|e| involved_id(e) == other));
    let first_time = all[0].spec.as_ref().unwrap().event_time;
    let window = query(machine::EventFilter {
        events_from_time: first_time,
        events_to_time: first_time + 10,
        ..Default::default()
    })
    .await;
    assert!(
        !window.is_empty() && window.len() < all.len(),
        "window {} of {}",
        window.len(),
        all.len()
    );
    // Only one bound set: the window is not applied.
    let half = query(machine::EventFilter {
        events_from_time: first_time + 50,
        ..Default::default()
    })
    .await;
    assert_eq!(half.len(), all.len());
}

#[tokio::test]
async fn status_reports_classes_in_cores_and_bytes() {
    let (_mock, mut c) = start(
        MockRuntime::builder()
            .machine_classes([MachineClassConfig::new("big", 16, 64 << 30).quantity(3)]),
    )
    .await;
    let status = c.machine_status().await;
    assert_eq!(status.machine_class_status.len(), 1);
    let class = &status.machine_class_status[0];
    assert_eq!(class.quantity, 3);
    let caps = class_resources(class);
    assert_eq!(caps["cpu"], 16);
    assert_eq!(caps["memory"], 64 << 30);
    let version = c.machine_version().await;
    assert_eq!(version.runtime_name, "iri-mock");
    assert!(!version.runtime_version.is_empty());
}

#[tokio::test(start_paused = true)]
async fn volumes_become_available_expand_and_snapshot() {
    let (mock, mut c) = start(MockRuntime::builder().delays(Delays {
        provision: SEC,
        apply: SEC,
        ..Default::default()
    }))
    .await;
    let id = c.create_volume(fixtures::volume()).await;
    let v = c.get_volume(&id).await.unwrap();
    assert_eq!(
        v.status.as_ref().unwrap().state,
        volume::VolumeState::VolumePending as i32
    );
    tokio::time::advance(SEC).await;
    let v = c.get_volume(&id).await.unwrap();
    let status = v.status.as_ref().unwrap();
    assert_eq!(status.state, volume::VolumeState::VolumeAvailable as i32);
    let access = status.access.as_ref().unwrap();
    assert!(!access.driver.is_empty() && !access.handle.is_empty());
    assert_eq!(status.resources.unwrap().storage_bytes, 1 << 30);

    c.expand_volume(&id, 2 << 30).await.unwrap();
    let v = c.get_volume(&id).await.unwrap();
    assert_eq!(
        v.spec.as_ref().unwrap().resources.unwrap().storage_bytes,
        2 << 30
    );
    assert_eq!(
        v.status.as_ref().unwrap().resources.unwrap().storage_bytes,
        1 << 30
    );
    tokio::time::advance(SEC).await;
    let v = c.get_volume(&id).await.unwrap();
    assert_eq!(
        v.status.as_ref().unwrap().resources.unwrap().storage_bytes,
        2 << 30
    );

    let snap = c.create_snapshot(&id).await;
    assert_eq!(
        snap.status.as_ref().unwrap().state,
        volume::VolumeSnapshotState::VolumeSnapshotPending as i32
    );
    tokio::time::advance(SEC).await;
    let snaps = mock.volume_snapshots();
    assert_eq!(
        snaps[0].status.as_ref().unwrap().state,
        volume::VolumeSnapshotState::VolumeSnapshotReady as i32
    );
    assert_eq!(snaps[0].status.as_ref().unwrap().size, 2 << 30);

    let status = c.volume_status().await;
    assert_eq!(status.volume_class_status.len(), 2);
    assert!(
        status.volume_class_status.iter().all(|s| s
            .volume_class
            .as_ref()
            .unwrap()
            .capabilities
            .is_some())
    );
}

#[tokio::test]
async fn buckets_become_available() {
    let (_mock, mut c) = start(MockRuntime::builder()).await;
    let b = c.create_bucket(fixtures::bucket()).await;
    assert_eq!(
        b.status.as_ref().unwrap().state,
        bucket::BucketState::BucketPending as i32
    );
    let listed = c.list_buckets().await;
    let status = listed[0].status.as_ref().unwrap();
    assert_eq!(status.state, bucket::BucketState::BucketAvailable as i32);
    assert!(!status.access.as_ref().unwrap().endpoint.is_empty());
    let classes = c.bucket_classes().await;
    assert_eq!(classes[0].name, "regular");
}

#[tokio::test]
async fn handles_seed_read_and_force_state() {
    let seeded = machine::Machine {
        metadata: Some(iri_spec::meta::v1alpha1::ObjectMetadata {
            id: "seeded".into(),
            ..Default::default()
        }),
        spec: Some(machine::MachineSpec {
            class: "x3-small".into(),
            ..Default::default()
        }),
        status: Some(machine::MachineStatus {
            state: MachineState::MachineRunning as i32,
            ..Default::default()
        }),
    };
    let (mock, mut c) = start(MockRuntime::builder().machine(seeded).seed(1)).await;
    assert_eq!(
        c.machine_state("seeded").await,
        MachineState::MachineRunning
    );
    assert!(mock.set_machine_state("seeded", MachineState::MachineSuspended));
    assert_eq!(
        c.machine_state("seeded").await,
        MachineState::MachineSuspended
    );
    assert!(!mock.set_machine_state("nope", MachineState::MachineSuspended));
    assert!(
        mock.modify_machine("seeded", |m| m.status.as_mut().unwrap().image_ref =
            "img@sha".into())
    );
    assert_eq!(
        mock.machine("seeded").unwrap().status.unwrap().image_ref,
        "img@sha"
    );
    mock.inject_machine_event(iri_spec::event::v1alpha1::Event {
        spec: Some(iri_spec::event::v1alpha1::EventSpec {
            reason: "Injected".into(),
            ..Default::default()
        }),
    });
    let events = c.machine_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.spec.as_ref().unwrap().reason == "Injected")
    );
    assert_eq!(mock.machine_count(), 1);

    let vid = mock.insert_volume(fixtures::volume());
    assert!(mock.set_volume_state(&vid, volume::VolumeState::VolumeError));
    assert_eq!(
        mock.volume(&vid).unwrap().status.unwrap().state,
        volume::VolumeState::VolumeError as i32
    );
    let bid = mock.insert_bucket(fixtures::bucket());
    assert!(mock.set_bucket_state(&bid, bucket::BucketState::BucketError));
    assert_eq!(
        mock.buckets()[0].status.as_ref().unwrap().state,
        bucket::BucketState::BucketError as i32
    );
}

#[tokio::test]
async fn seeded_ids_are_reproducible() {
    let ids = |seed| async move {
        let (_mock, mut c) = start(MockRuntime::builder().seed(seed)).await;
        c.create_machine(fixtures::machine()).await
    };
    assert_eq!(ids(5).await, ids(5).await);
    assert_ne!(ids(5).await, ids(6).await);
}
