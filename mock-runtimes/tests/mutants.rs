//! Every mutant changes observable behaviour: a scenario that touches every rule is run once
//! without mutants and once per mutant, and the normalised transcripts of the answers must differ.
//! (The conformance suite then names *which* case catches each mutant; this test only proves
//! that every mutant is wired up.)
#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashMap, time::Duration};

use common::{
    Clients, Reply, bucket_json, created, done, event_json, labels, machine_json,
    machine_status_json, outcome, snapshot_json, snapshot_of, volume_json, volume_status_json,
};
use iri_mock::{Delays, MockRuntime, Mutant, fixtures};
use iri_spec::{
    bucket::v1alpha1 as bucket, machine::v1alpha1 as machine, volume::v1alpha1 as volume,
};
use iri_spec::{
    irikit::reservation::v1alpha1 as rsv, meta::v1alpha1::ObjectMetadata,
    reservation::ReservationClient,
};
use serde_json::{Value, json};

const UNKNOWN: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba987654321";

fn classify_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if matches!(k.as_str(), "created_at" | "deleted_at" | "event_time") {
                    if let Some(n) = v.as_i64() {
                        *v = json!(match n {
                            0 => "zero",
                            n if n < 100_000_000_000 => "seconds",
                            _ => "nanoseconds",
                        });
                    }
                } else {
                    classify_times(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(classify_times),
        _ => {}
    }
}

/// The id in what a successful call answered (`meta` picks the metadata), or `""`.
fn id_from<T>(res: &Reply<T>, meta: impl FnOnce(&T) -> Option<&ObjectMetadata>) -> String {
    res.as_ref()
        .ok()
        .and_then(|r| meta(r.get_ref()))
        .map(|m| m.id.clone())
        .unwrap_or_default()
}

/// A List request of `$svc::$list` whose filter (`$svc::$filter`) has `id` and the label selector
/// of `pairs`.
macro_rules! by_id_and_labels {
    ($svc:ident::$list:ident, $filter:ident, $id:expr, $pairs:expr) => {
        $svc::$list {
            filter: Some($svc::$filter {
                id: $id.to_owned(),
                label_selector: labels($pairs),
            }),
        }
    };
}

/// The items as a JSON array.
fn json_list<T>(items: &[T], to_json: fn(&T) -> Value) -> Value {
    json!(items.iter().map(to_json).collect::<Vec<_>>())
}

/// The id in `md`, or `""`.
fn id_or_empty(md: Option<ObjectMetadata>) -> String {
    md.map(|m| m.id).unwrap_or_default()
}

/// The id of the machine a Create answered, or `""`.
fn created_id(res: &Reply<machine::CreateMachineResponse>) -> String {
    id_from(res, |r| r.machine.as_ref()?.metadata.as_ref())
}

fn create(m: machine::Machine) -> machine::CreateMachineRequest {
    machine::CreateMachineRequest { machine: Some(m) }
}

fn create_volume(v: volume::Volume) -> volume::CreateVolumeRequest {
    volume::CreateVolumeRequest { volume: Some(v) }
}

fn create_bucket(b: bucket::Bucket) -> bucket::CreateBucketRequest {
    bucket::CreateBucketRequest { bucket: Some(b) }
}

/// `m` placed against reservation `id`.
fn reserved(mut m: machine::Machine, id: &str) -> machine::Machine {
    let annotations = &mut m.metadata.get_or_insert_with(Default::default).annotations;
    annotations.insert(
        iri_spec::keys::RESERVATION_ID_ANNOTATION.to_owned(),
        id.to_owned(),
    );
    m
}

/// The states of the reservations listed under `id` (empty when List fails).
async fn reservation_states(r: &mut ReservationClient, id: String) -> Vec<i32> {
    let filter = rsv::ReservationFilter {
        id,
        ..Default::default()
    };
    r.list(Some(filter))
        .await
        .map(|l| {
            l.iter()
                .map(|x| x.status.as_ref().map_or(-1, |s| s.state))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
}

async fn transcript(mutants: &[Mutant]) -> String {
    let mock = MockRuntime::builder()
        .mutants(mutants.iter().copied())
        .delays(Delays {
            terminate: Duration::from_secs(10),
            ..Default::default()
        })
        .seed(7)
        .start_in_process()
        .await
        .unwrap();
    let c = Clients::new(&mock);
    let mut out: Vec<Value> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let m = &mut c.machine.clone();
    let cl = &mut c.clone();
    let list_by = |id: &str, pairs: &[(&str, &str)]| {
        by_id_and_labels!(machine::ListMachinesRequest, MachineFilter, id, pairs)
    };
    let machines = |r: &machine::ListMachinesResponse| json_list(&r.machines, machine_json);

    // --- machine service
    out.push(outcome(
        m.version(machine::VersionRequest::default()).await,
        |r| json!([r.runtime_name, r.runtime_version]),
    ));
    out.push(outcome(
        m.status(machine::StatusRequest {}).await,
        machine_status_json,
    ));
    let mut first = fixtures::machine_with_labels(&[("a", "1")]);
    first.metadata.as_mut().unwrap().id = "client-chosen".into();
    first.metadata.as_mut().unwrap().annotations = [("x".to_owned(), "1".to_owned())].into();
    first.status = Some(machine::MachineStatus {
        state: machine::MachineState::MachineRunning as i32,
        ..Default::default()
    });
    let spec = first.spec.as_mut().unwrap();
    spec.volumes.push(fixtures::local_disk("vol-1"));
    spec.network_interfaces.push(fixtures::nic("nic-1"));
    let res = m.create_machine(create(first)).await;
    let m1 = created_id(&res);
    ids.push(m1.clone());
    out.push(json!({ "fresh_idgen_id": iri_mock::is_idgen_id(&m1) }));
    out.push(outcome(res, |r| machine_json(r.machine.as_ref().unwrap())));
    let mut second = fixtures::machine_with_labels(&[("a", "2")]);
    second.spec.as_mut().unwrap().power = machine::Power::Off as i32;
    let res = m.create_machine(create(second)).await;
    let m2 = created_id(&res);
    ids.push(m2.clone());
    out.push(outcome(res, |r| machine_json(r.machine.as_ref().unwrap())));
    for (id, pairs) in [
        ("", &[][..]),
        (&m1, &[]),
        (UNKNOWN, &[]),
        ("", &[("a", "2")]),
    ] {
        out.push(outcome(m.list_machines(list_by(id, pairs)).await, machines));
    }
    let annotate =
        |id: &str, annotations: HashMap<String, String>| machine::UpdateMachineAnnotationsRequest {
            machine_id: id.to_owned(),
            annotations,
        };
    let power = |id: &str, power: i32| machine::UpdateMachinePowerRequest {
        machine_id: id.to_owned(),
        power,
    };
    let y2 = [("y".to_owned(), "2".to_owned())].into();
    out.push(done(m.update_machine_annotations(annotate(&m1, y2)).await));
    let off = machine::Power::Off as i32;
    out.push(done(m.update_machine_power(power(&m1, off)).await));
    out.push(outcome(m.list_machines(list_by(&m1, &[])).await, machines));
    let attach = |id: &str, v: Option<machine::Volume>| machine::AttachVolumeRequest {
        machine_id: id.to_owned(),
        volume: v,
    };
    out.push(done(
        m.attach_volume(attach(&m1, Some(fixtures::local_disk("vol-2"))))
            .await,
    ));
    out.push(done(
        m.attach_volume(attach(&m1, Some(fixtures::local_disk("vol-1"))))
            .await,
    ));
    out.push(done(m.attach_volume(attach(&m1, None)).await));
    out.push(done(
        m.attach_volume(attach(UNKNOWN, Some(fixtures::local_disk("vol-3"))))
            .await,
    ));
    let attach_nic = |id: &str, n: &str| machine::AttachNetworkInterfaceRequest {
        machine_id: id.to_owned(),
        network_interface: Some(fixtures::nic(n)),
    };
    out.push(done(
        m.attach_network_interface(attach_nic(&m1, "nic-2")).await,
    ));
    out.push(done(
        m.attach_network_interface(attach_nic(&m1, "nic-1")).await,
    ));
    out.push(outcome(m.list_machines(list_by(&m1, &[])).await, machines));
    let detach = |id: &str, n: &str| machine::DetachVolumeRequest {
        machine_id: id.to_owned(),
        name: n.to_owned(),
    };
    out.push(done(m.detach_volume(detach(&m1, "vol-1")).await));
    out.push(done(m.detach_volume(detach(&m1, "nope")).await));
    let detach_nic = |id: &str, n: &str| machine::DetachNetworkInterfaceRequest {
        machine_id: id.to_owned(),
        name: n.to_owned(),
    };
    out.push(done(
        m.detach_network_interface(detach_nic(&m1, "nic-1")).await,
    ));
    out.push(done(
        m.detach_network_interface(detach_nic(&m1, "nope")).await,
    ));
    let mut changed = fixtures::local_disk("vol-2");
    changed.local_disk.as_mut().unwrap().size_bytes = 2 << 30;
    let update = |id: &str, v: machine::Volume| machine::UpdateVolumeRequest {
        machine_id: id.to_owned(),
        volume: Some(v),
    };
    out.push(done(m.update_volume(update(&m1, changed)).await));
    out.push(done(
        m.update_volume(update(&m1, fixtures::local_disk("nope")))
            .await,
    ));
    out.push(outcome(m.list_machines(list_by(&m1, &[])).await, machines));
    out.push(outcome(cl.exec(&m1).await, |r| json!(r.url)));
    out.push(outcome(cl.exec(UNKNOWN).await, |r| json!(r.url)));
    let mut no_spec = fixtures::machine();
    no_spec.spec = None;
    out.push(created(m.create_machine(create(no_spec)).await));
    let mut bad_class = fixtures::machine();
    bad_class.spec.as_mut().unwrap().class = "nope".into();
    out.push(created(m.create_machine(create(bad_class)).await));
    let mut no_source = fixtures::machine();
    no_source.spec.as_mut().unwrap().volumes = vec![machine::Volume {
        name: "no-source".into(),
        ..Default::default()
    }];
    out.push(created(m.create_machine(create(no_source)).await));
    let none = HashMap::new();
    out.push(done(
        m.update_machine_annotations(annotate(UNKNOWN, none)).await,
    ));
    out.push(done(m.update_machine_power(power(UNKNOWN, 1)).await));
    out.push(done(cl.delete_machine(UNKNOWN).await));
    out.push(done(cl.delete_machine("").await));
    out.push(done(cl.delete_machine(&m1).await));
    out.push(outcome(m.list_machines(list_by(&m1, &[])).await, machines));
    out.push(done(cl.delete_machine(&m1).await));
    let events = |f: machine::EventFilter| machine::ListEventsRequest { filter: Some(f) };
    let event_list = |r: &machine::ListEventsResponse| json_list(&r.events, event_json);
    for filter in [
        machine::EventFilter::default(),
        machine::EventFilter {
            id: m2.clone(),
            ..Default::default()
        },
        machine::EventFilter {
            label_selector: [("a".to_owned(), "2".to_owned())].into(),
            ..Default::default()
        },
        machine::EventFilter {
            events_from_time: 1,
            events_to_time: 2,
            ..Default::default()
        },
    ] {
        out.push(outcome(m.list_events(events(filter)).await, event_list));
    }

    // --- volume service
    let v = &mut c.volume.clone();
    out.push(outcome(
        v.version(volume::VersionRequest::default()).await,
        |r| json!([r.runtime_name, r.runtime_version]),
    ));
    out.push(outcome(
        v.status(volume::StatusRequest {}).await,
        volume_status_json,
    ));
    let res = v
        .create_volume(create_volume(fixtures::volume_with_labels(&[("v", "1")])))
        .await;
    let v1 = id_from(&res, |r| {
        Some(r.volume.as_ref().unwrap().metadata.as_ref().unwrap())
    });
    ids.push(v1.clone());
    out.push(outcome(res, |r| volume_json(r.volume.as_ref().unwrap())));
    let mut bad = fixtures::volume();
    bad.spec.as_mut().unwrap().class = "nope".into();
    out.push(created(v.create_volume(create_volume(bad)).await));
    let mut zero = fixtures::volume();
    zero.spec.as_mut().unwrap().resources = None;
    out.push(created(v.create_volume(create_volume(zero)).await));
    out.push(created(
        v.create_volume(create_volume(volume::Volume {
            spec: None,
            ..fixtures::volume()
        }))
        .await,
    ));
    let list_volumes = |id: &str, pairs: &[(&str, &str)]| {
        by_id_and_labels!(volume::ListVolumesRequest, VolumeFilter, id, pairs)
    };
    let volumes = |r: &volume::ListVolumesResponse| json_list(&r.volumes, volume_json);
    for (id, pairs) in [("", &[][..]), (UNKNOWN, &[]), ("", &[("v", "2")])] {
        out.push(outcome(
            v.list_volumes(list_volumes(id, pairs)).await,
            volumes,
        ));
    }
    out.push(done(cl.expand_volume(&v1, 4 << 30).await));
    out.push(done(cl.expand_volume(&v1, 1 << 20).await));
    out.push(done(cl.expand_volume(&v1, 4 << 30).await));
    out.push(done(cl.expand_volume(UNKNOWN, 8 << 30).await));
    out.push(outcome(
        v.list_volumes(list_volumes(&v1, &[])).await,
        volumes,
    ));
    let res = v.create_volume_snapshot(snapshot_of(&v1)).await;
    ids.push(id_from(&res, |r| {
        Some(
            r.volume_snapshot
                .as_ref()
                .unwrap()
                .metadata
                .as_ref()
                .unwrap(),
        )
    }));
    let s1 = ids.last().cloned().unwrap_or_default();
    out.push(outcome(res, |r| {
        snapshot_json(r.volume_snapshot.as_ref().unwrap())
    }));
    out.push(created(
        v.create_volume_snapshot(snapshot_of(UNKNOWN)).await,
    ));
    let snapshots =
        |r: &volume::ListVolumeSnapshotsResponse| json_list(&r.volume_snapshots, snapshot_json);
    out.push(outcome(
        v.list_volume_snapshots(volume::ListVolumeSnapshotsRequest::default())
            .await,
        snapshots,
    ));
    out.push(outcome(
        v.list_volume_snapshots(volume::ListVolumeSnapshotsRequest {
            filter: Some(volume::VolumeSnapshotFilter {
                id: UNKNOWN.into(),
                ..Default::default()
            }),
        })
        .await,
        snapshots,
    ));
    out.push(done(cl.delete_snapshot(UNKNOWN).await));
    out.push(done(cl.delete_snapshot(&s1).await));
    out.push(done(cl.delete_volume(UNKNOWN).await));
    out.push(done(cl.delete_volume(&v1).await));
    out.push(outcome(
        v.list_volumes(list_volumes(&v1, &[])).await,
        volumes,
    ));

    // --- bucket service
    let b = &mut c.bucket.clone();
    out.push(outcome(
        b.version(bucket::VersionRequest::default()).await,
        |r| json!([r.runtime_name, r.runtime_version]),
    ));
    let res = b.create_bucket(create_bucket(fixtures::bucket())).await;
    let b1 = id_from(&res, |r| {
        Some(r.bucket.as_ref().unwrap().metadata.as_ref().unwrap())
    });
    ids.push(b1.clone());
    out.push(outcome(res, |r| bucket_json(r.bucket.as_ref().unwrap())));
    out.push(created(
        b.create_bucket(create_bucket(bucket::Bucket {
            spec: Some(bucket::BucketSpec {
                class: "nope".into(),
            }),
            ..fixtures::bucket()
        }))
        .await,
    ));
    let list_buckets = |id: &str, pairs: &[(&str, &str)]| {
        by_id_and_labels!(bucket::ListBucketsRequest, BucketFilter, id, pairs)
    };
    let buckets = |r: &bucket::ListBucketsResponse| json_list(&r.buckets, bucket_json);
    for (id, pairs) in [("", &[][..]), (UNKNOWN, &[]), ("", &[("app", "other")])] {
        out.push(outcome(
            b.list_buckets(list_buckets(id, pairs)).await,
            buckets,
        ));
    }
    out.push(outcome(
        b.list_bucket_classes(bucket::ListBucketClassesRequest {})
            .await,
        |r| json!(r.bucket_classes.len()),
    ));
    out.push(done(cl.delete_bucket(UNKNOWN).await));
    out.push(done(cl.delete_bucket(&b1).await));
    out.push(outcome(
        b.list_buckets(list_buckets(&b1, &[])).await,
        buckets,
    ));

    // --- after the terminate delay, deleted objects are gone
    tokio::time::advance(Duration::from_secs(11)).await;
    out.push(outcome(m.list_machines(list_by(&m1, &[])).await, machines));
    out.push(outcome(
        v.list_volume_snapshots(volume::ListVolumeSnapshotsRequest::default())
            .await,
        snapshots,
    ));

    // --- concurrency: five creates at once get five distinct ids
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let mut client = c.machine.clone();
        tasks.push(tokio::spawn(async move {
            created_id(&client.create_machine(create(fixtures::machine())).await)
        }));
    }
    let mut concurrent = std::collections::HashSet::new();
    for t in tasks {
        concurrent.insert(t.await.unwrap());
    }
    out.push(json!({ "distinct_concurrent_ids": concurrent.len() }));

    // --- probes for the mutants added by the conformance self-test (codes and flags only)
    {
        fn code<T>(r: &Result<tonic::Response<T>, tonic::Status>) -> Value {
            match r {
                Ok(_) => json!("OK"),
                Err(st) => json!(format!("{:?}", st.code())),
            }
        }
        let (mut m, mut v, mut b) = (c.machine.clone(), c.volume.clone(), c.bucket.clone());
        let mut bad_power = fixtures::machine();
        bad_power.spec.as_mut().unwrap().power = 7;
        let mut dup = fixtures::machine();
        dup.spec.as_mut().unwrap().volumes =
            vec![fixtures::local_disk("d"), fixtures::local_disk("d")];
        let r1 = m.create_machine(create(bad_power)).await;
        let r2 = m.create_machine(create(dup)).await;
        let probe = created_id(&m.create_machine(create(fixtures::machine())).await);
        let r3 = m
            .detach_volume(machine::DetachVolumeRequest {
                machine_id: probe.clone(),
                name: String::new(),
            })
            .await;
        let r4 = m
            .update_volume(machine::UpdateVolumeRequest {
                machine_id: probe,
                volume: None,
            })
            .await;
        let mut vol = fixtures::volume();
        vol.metadata.as_mut().unwrap().annotations = [("n".to_owned(), "1".to_owned())].into();
        vol.metadata.as_mut().unwrap().id = "client-vol".into();
        let created = v
            .create_volume(create_volume(vol))
            .await
            .unwrap()
            .into_inner();
        let vid = id_or_empty(created.volume.and_then(|x| x.metadata));
        let by_id = volume::VolumeFilter {
            id: vid.clone(),
            ..Default::default()
        };
        let listed = cl.find_volumes(Some(by_id)).await;
        let annotations_kept = listed.iter().any(|x| {
            x.metadata
                .as_ref()
                .is_some_and(|md| !md.annotations.is_empty())
        });
        let mut two = fixtures::volume();
        two.spec.as_mut().unwrap().volume_data_source = Some(volume::VolumeDataSource {
            image_data_source: Some(volume::ImageDataSource {
                image: "img".into(),
                architecture: String::new(),
            }),
            snapshot_data_source: Some(volume::SnapshotDataSource {
                snapshot_id: "s".into(),
            }),
        });
        let r5 = v.create_volume(create_volume(two)).await;
        let mut restored = fixtures::volume();
        restored.spec.as_mut().unwrap().volume_data_source = Some(volume::VolumeDataSource {
            image_data_source: None,
            snapshot_data_source: Some(volume::SnapshotDataSource {
                snapshot_id: UNKNOWN.into(),
            }),
        });
        let r14 = v.create_volume(create_volume(restored)).await;
        let r6 = cl.delete_volume("").await;
        let r7 = v
            .expand_volume(volume::ExpandVolumeRequest {
                volume_id: vid.clone(),
                resources: None,
            })
            .await;
        let r8 = v
            .create_volume_snapshot(volume::CreateVolumeSnapshotRequest {
                volume_snapshot: None,
            })
            .await;
        let mut snap = volume::VolumeSnapshot {
            metadata: Some(Default::default()),
            spec: Some(volume::VolumeSnapshotSpec {
                volume_id: vid.clone(),
            }),
            status: None,
        };
        snap.metadata.as_mut().unwrap().labels = [("s".to_owned(), "1".to_owned())].into();
        let snap = v
            .create_volume_snapshot(volume::CreateVolumeSnapshotRequest {
                volume_snapshot: Some(snap),
            })
            .await
            .unwrap()
            .into_inner();
        let snap_labels_kept = snap
            .volume_snapshot
            .and_then(|x| x.metadata)
            .is_some_and(|md| !md.labels.is_empty());
        let r9 = cl.delete_volume(&vid).await;
        let r10 = cl.delete_volume(&vid).await;
        let r11 = b
            .create_bucket(bucket::CreateBucketRequest { bucket: None })
            .await;
        let bid = b
            .create_bucket(create_bucket(fixtures::bucket()))
            .await
            .unwrap()
            .into_inner()
            .bucket
            .and_then(|x| x.metadata);
        let bid = id_or_empty(bid);
        let r12 = cl.delete_bucket(&bid).await;
        let r13 = cl.delete_bucket(&bid).await;
        out.push(json!({
            "conformance_probes": [code(&r1), code(&r2), code(&r3), code(&r4), code(&r5), code(&r6), code(&r7), code(&r8), code(&r9), code(&r10), code(&r11), code(&r12), code(&r13), code(&r14)],
            "volume_annotations_kept": annotations_kept,
            "client_volume_id_kept": vid == "client-vol",
            "snapshot_labels_kept": snap_labels_kept,
        }));
    }

    // --- transport: a Version call with the raw socket path as :authority (grpc-java's form)
    let answer = iri_spec::serve::probe::call(
        mock.in_process_dialer().unwrap().dial().unwrap(),
        "/machine.v1alpha1.MachineRuntime/Version",
        Some(b"/run/iri-machine.sock"),
        &[],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    out.push(json!({ "raw_path_authority": format!("{answer:?}").split(['{', '(']).next() }));
    // --- irikit's reservation extension: fill x3-large (quantity 20), compete, release, consume
    {
        let mut r = ReservationClient::new(mock.machine_channel());
        let large = |n: i64| rsv::Reservation {
            spec: Some(rsv::ReservationSpec {
                machine_classes: [("x3-large".to_owned(), n)].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let state = |res: Result<iri_spec::reservation::Reply<rsv::Reservation>, tonic::Status>| {
            res.ok()
                .and_then(iri_spec::reservation::Reply::served)
                .map(|x| {
                    (
                        x.status.map_or(-1, |s| s.state),
                        x.metadata.map(|md| md.id).unwrap_or_default(),
                    )
                })
                .unwrap_or((-2, String::new()))
        };
        // Earlier steps left no x3-large machine: 20 fit, the 21st does not.
        let (s_all, all) = state(r.create(large(20)).await);
        let (s_more, _) = state(r.create(large(1)).await);
        let (s_over, _) = state(r.create(large(21)).await);
        let deleted = r.delete(&all).await.is_ok();
        let (s_again, again) = state(r.create(large(1)).await);
        let mut plain = fixtures::machine();
        plain.spec.as_mut().unwrap().class = "x3-large".to_owned();
        let spec = reserved(plain.clone(), &again);
        let consumed = m.create_machine(create(spec)).await.is_ok();
        let after = reservation_states(&mut r, again).await;
        // One machine runs: hold the other 19, then an unreserved create is ResourceExhausted
        // and the first create against the 19 leaves it ACCEPTED (consumed one at a time).
        let (s_rest, rest) = state(r.create(large(19)).await);
        let against = reserved(plain.clone(), &rest);
        let unreserved = m
            .create_machine(create(plain))
            .await
            .map_or_else(|e| format!("{:?}", e.code()), |_| "ok".to_owned());
        let one_of_19 = m.create_machine(create(against)).await.is_ok();
        let rest_after = reservation_states(&mut r, rest.clone()).await;
        let _ = r.delete(&rest).await;
        out.push(json!({
            "reservations": [s_all, s_more, s_over, deleted, s_again, consumed, after],
            "consume_one_at_a_time": [s_rest, unreserved, one_of_19, rest_after],
        }));
    }

    let mut value = Value::Array(out);
    classify_times(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap();
    for (i, id) in ids.iter().enumerate().filter(|(_, id)| !id.is_empty()) {
        text = text.replace(id.as_str(), &format!("<id{i}>"));
    }
    text
}

#[tokio::test(start_paused = true)]
async fn every_mutant_changes_the_transcript() {
    let baseline = transcript(&[]).await;
    assert_eq!(
        baseline,
        transcript(&[]).await,
        "the scenario is deterministic"
    );
    let unchanged: Vec<&str> = {
        let mut v = Vec::new();
        // The console mutants act on the Exec console, not on RPCs: `tests/console.rs`
        // (`console_mutants_change_the_console`) shows their effect.
        for &mutant in Mutant::ALL
            .iter()
            .filter(|m| !m.name().starts_with("console-"))
        {
            if transcript(&[mutant]).await == baseline {
                v.push(mutant.name());
            }
        }
        v
    };
    assert!(
        unchanged.is_empty(),
        "mutants without an observable effect: {unchanged:?}"
    );
}
