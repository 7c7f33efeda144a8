//! Input generation: hostile but well-typed requests, wire-level mangling, and the
//! bookkeeping of the objects a run created.

use std::collections::{HashMap, VecDeque};

use iri_spec::{
    bucket::v1alpha1 as bucket, machine::v1alpha1 as machine, meta::v1alpha1 as meta,
    volume::v1alpha1 as volume,
};
use prost::Message;
use rand::{Rng, rngs::StdRng, seq::IndexedRandom};

use crate::{Input, Live, MAX_LIVE, Service};

/// Strings that have broken path handling, parsers and loggers somewhere.
const HOSTILE: &[&str] = &[
    "",
    ".",
    "..",
    "../",
    "../../../../etc/passwd",
    "/etc/shadow",
    "/",
    "//",
    "a/b",
    "a\\b",
    "\0",
    "a\0b",
    "%2e%2e%2f",
    "file:///etc/passwd",
    "http://127.0.0.1:1/x",
    "-rf",
    "--help",
    "$(id)",
    "`id`",
    "😀",
    "\u{202e}",
    "\r\n",
    " ",
    "x86_64",
    "amd64",
    "raw",
    "qcow2",
];

/// Integers at and around every boundary.
const NUMBERS: &[i64] = &[
    0,
    1,
    -1,
    2,
    511,
    512,
    4096,
    1 << 20,
    1 << 30,
    10 << 30,
    1 << 40,
    1 << 62,
    i64::MAX,
    i64::MIN,
    i64::MAX - 1,
    -(1 << 30),
];

fn string(rng: &mut StdRng) -> String {
    match rng.random_range(0..20) {
        0 => "a".repeat(rng.random_range(64..70_000)),
        1 => (0..rng.random_range(1..64))
            .map(|_| char::from(rng.random_range(0u8..128)))
            .collect(),
        2 => format!("{}/{}", string_small(rng), string_small(rng)),
        _ => HOSTILE.choose(rng).copied().unwrap_or_default().to_string(),
    }
}

fn string_small(rng: &mut StdRng) -> String {
    HOSTILE.choose(rng).copied().unwrap_or_default().to_string()
}

fn number(rng: &mut StdRng) -> i64 {
    if rng.random_bool(0.8) {
        NUMBERS.choose(rng).copied().unwrap_or_default()
    } else {
        rng.random()
    }
}

fn enum_value(rng: &mut StdRng, max: i32) -> i32 {
    match rng.random_range(0..4) {
        0 => [-1, i32::MAX, i32::MIN, max + 1, 100]
            .choose(rng)
            .copied()
            .unwrap_or_default(),
        _ => rng.random_range(0..=max),
    }
}

fn map(rng: &mut StdRng) -> HashMap<String, String> {
    match rng.random_range(0..10) {
        // Many short entries.
        0 => (0..rng.random_range(100..2_000))
            .map(|i| (format!("k{i}"), string_small(rng)))
            .collect(),
        1..=4 => HashMap::new(),
        _ => (0..rng.random_range(1..4))
            .map(|i| {
                let k = if i == 0 {
                    string_small(rng)
                } else {
                    string(rng)
                };
                (k, string(rng))
            })
            .collect(),
    }
}

fn bytes(rng: &mut StdRng) -> Vec<u8> {
    let n = match rng.random_range(0..6) {
        0 => rng.random_range(100_000..400_000),
        _ => rng.random_range(0..64),
    };
    (0..n).map(|_| rng.random()).collect()
}

/// An id: one the run created, or a hostile string.
fn id(rng: &mut StdRng, live: &VecDeque<String>) -> String {
    match live.iter().collect::<Vec<_>>().choose(rng) {
        Some(id) if rng.random_bool(0.6) => (*id).clone(),
        _ => string(rng),
    }
}

fn metadata(rng: &mut StdRng) -> Option<meta::ObjectMetadata> {
    rng.random_bool(0.9).then(|| meta::ObjectMetadata {
        id: string(rng),
        annotations: map(rng),
        labels: map(rng),
        generation: number(rng),
        created_at: number(rng),
        deleted_at: if rng.random_bool(0.1) { number(rng) } else { 0 },
    })
}

fn class(rng: &mut StdRng) -> String {
    // The classes the runtimes under test usually offer, and anything else.
    match rng.random_range(0..4) {
        0 => string(rng),
        _ => [
            "mock-small",
            "t3-small",
            "small",
            "large",
            "x3-xlarge",
            "slow",
            "fast",
            "raw",
            "qcow2",
            "economy",
            "premium",
        ]
        .choose(rng)
        .copied()
        .unwrap_or_default()
        .to_string(),
    }
}

fn machine_volume(rng: &mut StdRng, live: &Live) -> machine::Volume {
    let local_disk = rng.random_bool(0.5).then(|| machine::LocalDisk {
        size_bytes: number(rng),
        image: rng
            .random_bool(0.5)
            .then(|| machine::ImageSpec { image: string(rng) }),
    });
    let connection = rng.random_bool(0.5).then(|| machine::VolumeConnection {
        driver: string(rng),
        handle: match live.volumes.front() {
            Some(v) if rng.random_bool(0.3) => v.clone(),
            _ => string(rng),
        },
        attributes: map(rng),
        secret_data: HashMap::new(),
        encryption_data: HashMap::new(),
        effective_storage_bytes: number(rng),
    });
    machine::Volume {
        name: string(rng),
        device: string(rng),
        local_disk,
        connection,
    }
}

fn nic(rng: &mut StdRng) -> machine::NetworkInterface {
    machine::NetworkInterface {
        name: string(rng),
        network_id: string(rng),
        ips: (0..rng.random_range(0..4)).map(|_| string(rng)).collect(),
        attributes: map(rng),
    }
}

/// A small, plausible volume: thousands of them make a machine no VMM can boot.
fn bulk_volume(i: usize) -> machine::Volume {
    machine::Volume {
        name: format!("v{i}"),
        device: String::new(),
        local_disk: Some(machine::LocalDisk {
            size_bytes: 1 << 30,
            image: None,
        }),
        connection: None,
    }
}

fn machine_object(rng: &mut StdRng, live: &Live) -> machine::Machine {
    let (volumes, nics): (Vec<machine::Volume>, Vec<machine::NetworkInterface>) =
        match rng.random_range(0..20) {
            0 => (
                (0..rng.random_range(100..10_001))
                    .map(bulk_volume)
                    .collect(),
                Vec::new(),
            ),
            1 => (
                Vec::new(),
                (0..rng.random_range(100..2_000))
                    .map(|i| machine::NetworkInterface {
                        name: format!("n{i}"),
                        network_id: "net".into(),
                        ips: Vec::new(),
                        attributes: HashMap::new(),
                    })
                    .collect(),
            ),
            _ => (
                (0..rng.random_range(0..4))
                    .map(|_| machine_volume(rng, live))
                    .collect(),
                (0..rng.random_range(0..3)).map(|_| nic(rng)).collect(),
            ),
        };
    machine::Machine {
        metadata: metadata(rng),
        spec: rng.random_bool(0.95).then(|| machine::MachineSpec {
            power: enum_value(rng, 1),
            class: class(rng),
            ignition_data: bytes(rng),
            volumes,
            network_interfaces: nics,
            guest_config: rng.random_bool(0.3).then(|| machine::GuestConfig {
                hostname: string(rng),
            }),
        }),
        status: None,
    }
}

fn volume_object(rng: &mut StdRng, live: &Live) -> volume::Volume {
    let source = rng.random_bool(0.5).then(|| volume::VolumeDataSource {
        image_data_source: rng.random_bool(0.5).then(|| volume::ImageDataSource {
            image: string(rng),
            architecture: string(rng),
        }),
        snapshot_data_source: rng.random_bool(0.5).then(|| volume::SnapshotDataSource {
            snapshot_id: id(rng, &live.snapshots),
        }),
    });
    volume::Volume {
        metadata: metadata(rng),
        spec: rng.random_bool(0.95).then(|| volume::VolumeSpec {
            class: class(rng),
            resources: rng.random_bool(0.9).then(|| volume::VolumeResources {
                storage_bytes: number(rng),
            }),
            encryption: rng.random_bool(0.2).then(|| volume::EncryptionSpec {
                secret_data: HashMap::from([("encryptionKey".into(), bytes(rng))]),
            }),
            volume_data_source: source,
        }),
        status: None,
    }
}

fn event_filter_parts(rng: &mut StdRng) -> (String, HashMap<String, String>, i64, i64) {
    (string(rng), map(rng), number(rng), number(rng))
}

fn input(service: Service, method: &'static str, msg: &impl Message) -> Input {
    Input {
        service,
        method,
        bytes: msg.encode_to_vec(),
        garbage: false,
    }
}

/// A random well-typed request of one of `service`'s methods.
pub fn request(service: Service, rng: &mut StdRng, live: &Live) -> Input {
    match service {
        Service::Machine => machine_request(rng, live),
        Service::Volume => volume_request(rng, live),
        Service::Bucket => bucket_request(rng, live),
    }
}

fn machine_request(rng: &mut StdRng, live: &Live) -> Input {
    let s = Service::Machine;
    let mid = |rng: &mut StdRng| id(rng, &live.machines);
    match rng.random_range(0..15) {
        0 => input(
            s,
            "Version",
            &machine::VersionRequest {
                version: string(rng),
            },
        ),
        1 => {
            let (id, label_selector, from, to) = event_filter_parts(rng);
            input(
                s,
                "ListEvents",
                &machine::ListEventsRequest {
                    filter: rng.random_bool(0.8).then_some(machine::EventFilter {
                        id,
                        label_selector,
                        events_from_time: from,
                        events_to_time: to,
                    }),
                },
            )
        }
        2 => input(
            s,
            "ListMachines",
            &machine::ListMachinesRequest {
                filter: rng.random_bool(0.8).then(|| machine::MachineFilter {
                    id: mid(rng),
                    label_selector: map(rng),
                }),
            },
        ),
        3 | 4 => input(
            s,
            "CreateMachine",
            &machine::CreateMachineRequest {
                machine: rng.random_bool(0.95).then(|| machine_object(rng, live)),
            },
        ),
        5 => input(
            s,
            "DeleteMachine",
            &machine::DeleteMachineRequest {
                machine_id: mid(rng),
            },
        ),
        6 => input(
            s,
            "UpdateMachineAnnotations",
            &machine::UpdateMachineAnnotationsRequest {
                machine_id: mid(rng),
                annotations: map(rng),
            },
        ),
        7 => input(
            s,
            "UpdateMachinePower",
            &machine::UpdateMachinePowerRequest {
                machine_id: mid(rng),
                power: enum_value(rng, 1),
            },
        ),
        8 => input(
            s,
            "AttachVolume",
            &machine::AttachVolumeRequest {
                machine_id: mid(rng),
                volume: rng.random_bool(0.95).then(|| machine_volume(rng, live)),
            },
        ),
        9 => input(
            s,
            "DetachVolume",
            &machine::DetachVolumeRequest {
                machine_id: mid(rng),
                name: string(rng),
            },
        ),
        10 => input(
            s,
            "UpdateVolume",
            &machine::UpdateVolumeRequest {
                machine_id: mid(rng),
                volume: rng.random_bool(0.95).then(|| machine_volume(rng, live)),
            },
        ),
        11 => input(
            s,
            "AttachNetworkInterface",
            &machine::AttachNetworkInterfaceRequest {
                machine_id: mid(rng),
                network_interface: rng.random_bool(0.95).then(|| nic(rng)),
            },
        ),
        12 => input(
            s,
            "DetachNetworkInterface",
            &machine::DetachNetworkInterfaceRequest {
                machine_id: mid(rng),
                name: string(rng),
            },
        ),
        13 => input(s, "Status", &machine::StatusRequest {}),
        _ => input(
            s,
            "Exec",
            &machine::ExecRequest {
                machine_id: mid(rng),
            },
        ),
    }
}

fn volume_request(rng: &mut StdRng, live: &Live) -> Input {
    let s = Service::Volume;
    match rng.random_range(0..11) {
        0 => input(
            s,
            "Version",
            &volume::VersionRequest {
                version: string(rng),
            },
        ),
        1 => {
            let (id, label_selector, from, to) = event_filter_parts(rng);
            input(
                s,
                "ListEvents",
                &volume::ListEventsRequest {
                    filter: rng.random_bool(0.8).then_some(volume::EventFilter {
                        id,
                        label_selector,
                        events_from_time: from,
                        events_to_time: to,
                    }),
                },
            )
        }
        2 => input(
            s,
            "ListVolumes",
            &volume::ListVolumesRequest {
                filter: rng.random_bool(0.8).then(|| volume::VolumeFilter {
                    id: id(rng, &live.volumes),
                    label_selector: map(rng),
                }),
            },
        ),
        3 | 4 => input(
            s,
            "CreateVolume",
            &volume::CreateVolumeRequest {
                volume: rng.random_bool(0.95).then(|| volume_object(rng, live)),
            },
        ),
        5 => input(
            s,
            "ExpandVolume",
            &volume::ExpandVolumeRequest {
                volume_id: id(rng, &live.volumes),
                resources: rng.random_bool(0.9).then(|| volume::VolumeResources {
                    storage_bytes: number(rng),
                }),
            },
        ),
        6 => input(
            s,
            "DeleteVolume",
            &volume::DeleteVolumeRequest {
                volume_id: id(rng, &live.volumes),
            },
        ),
        7 => input(
            s,
            "ListVolumeSnapshots",
            &volume::ListVolumeSnapshotsRequest {
                filter: rng.random_bool(0.8).then(|| volume::VolumeSnapshotFilter {
                    id: id(rng, &live.snapshots),
                    label_selector: map(rng),
                }),
            },
        ),
        8 => input(
            s,
            "CreateVolumeSnapshot",
            &volume::CreateVolumeSnapshotRequest {
                volume_snapshot: rng.random_bool(0.95).then(|| volume::VolumeSnapshot {
                    metadata: metadata(rng),
                    spec: rng.random_bool(0.95).then(|| volume::VolumeSnapshotSpec {
                        volume_id: id(rng, &live.volumes),
                    }),
                    status: None,
                }),
            },
        ),
        9 => input(
            s,
            "DeleteVolumeSnapshot",
            &volume::DeleteVolumeSnapshotRequest {
                volume_snapshot_id: id(rng, &live.snapshots),
            },
        ),
        _ => input(s, "Status", &volume::StatusRequest {}),
    }
}

fn bucket_request(rng: &mut StdRng, live: &Live) -> Input {
    let s = Service::Bucket;
    match rng.random_range(0..6) {
        0 => input(
            s,
            "Version",
            &bucket::VersionRequest {
                version: string(rng),
            },
        ),
        1 => {
            let (id, label_selector, from, to) = event_filter_parts(rng);
            input(
                s,
                "ListEvents",
                &bucket::ListEventsRequest {
                    filter: rng.random_bool(0.8).then_some(bucket::EventFilter {
                        id,
                        label_selector,
                        events_from_time: from,
                        events_to_time: to,
                    }),
                },
            )
        }
        2 => input(
            s,
            "ListBuckets",
            &bucket::ListBucketsRequest {
                filter: rng.random_bool(0.8).then(|| bucket::BucketFilter {
                    id: id(rng, &live.buckets),
                    label_selector: map(rng),
                }),
            },
        ),
        3 => input(
            s,
            "CreateBucket",
            &bucket::CreateBucketRequest {
                bucket: rng.random_bool(0.95).then(|| bucket::Bucket {
                    metadata: metadata(rng),
                    spec: rng
                        .random_bool(0.95)
                        .then(|| bucket::BucketSpec { class: class(rng) }),
                    status: None,
                }),
            },
        ),
        4 => input(
            s,
            "DeleteBucket",
            &bucket::DeleteBucketRequest {
                bucket_id: id(rng, &live.buckets),
            },
        ),
        _ => input(s, "ListBucketClasses", &bucket::ListBucketClassesRequest {}),
    }
}

/// Mangles an encoded message: truncates it, flips, inserts or deletes bytes, or changes
/// the wire type of its first field.
pub fn mangle(bytes: &mut Vec<u8>, rng: &mut StdRng) {
    if bytes.is_empty() {
        bytes.push(rng.random());
        return;
    }
    match rng.random_range(0..5) {
        0 => {
            let at = rng.random_range(0..bytes.len());
            bytes.truncate(at);
        }
        1 => {
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
        }
        2 => {
            let at = rng.random_range(0..=bytes.len());
            let junk: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
            bytes.splice(at..at, junk);
        }
        3 => {
            let at = rng.random_range(0..bytes.len());
            let end = (at + rng.random_range(1..16)).min(bytes.len());
            bytes.drain(at..end);
        }
        _ => {
            // A tag's low three bits are its wire type: make it a different one.
            bytes[0] = (bytes[0] & !0x07) | (((bytes[0] & 0x07) + rng.random_range(1..6)) % 6);
        }
    }
}

/// Records the id a successful create returned.
pub fn remember(service: Service, method: &str, response: &[u8], live: &mut Live) {
    let id = |md: Option<&meta::ObjectMetadata>| md.map(|m| m.id.clone()).unwrap_or_default();
    let (list, created) = match (service, method) {
        (Service::Machine, "CreateMachine") => (
            &mut live.machines,
            machine::CreateMachineResponse::decode(response)
                .ok()
                .and_then(|r| r.machine)
                .map(|m| id(m.metadata.as_ref())),
        ),
        (Service::Volume, "CreateVolume") => (
            &mut live.volumes,
            volume::CreateVolumeResponse::decode(response)
                .ok()
                .and_then(|r| r.volume)
                .map(|v| id(v.metadata.as_ref())),
        ),
        (Service::Volume, "CreateVolumeSnapshot") => (
            &mut live.snapshots,
            volume::CreateVolumeSnapshotResponse::decode(response)
                .ok()
                .and_then(|r| r.volume_snapshot)
                .map(|v| id(v.metadata.as_ref())),
        ),
        (Service::Bucket, "CreateBucket") => (
            &mut live.buckets,
            bucket::CreateBucketResponse::decode(response)
                .ok()
                .and_then(|r| r.bucket)
                .map(|b| id(b.metadata.as_ref())),
        ),
        _ => return,
    };
    if let Some(created) = created.filter(|id| !id.is_empty()) {
        list.push_back(created);
    }
}

fn delete(service: Service, kind: usize, id: String) -> Input {
    match (service, kind) {
        (Service::Machine, _) => input(
            service,
            "DeleteMachine",
            &machine::DeleteMachineRequest { machine_id: id },
        ),
        (Service::Volume, 0) => input(
            service,
            "DeleteVolume",
            &volume::DeleteVolumeRequest { volume_id: id },
        ),
        (Service::Volume, _) => input(
            service,
            "DeleteVolumeSnapshot",
            &volume::DeleteVolumeSnapshotRequest {
                volume_snapshot_id: id,
            },
        ),
        (Service::Bucket, _) => input(
            service,
            "DeleteBucket",
            &bucket::DeleteBucketRequest { bucket_id: id },
        ),
    }
}

fn lists(service: Service, live: &mut Live) -> Vec<&mut VecDeque<String>> {
    match service {
        Service::Machine => vec![&mut live.machines],
        // Snapshots first: a volume with snapshots may refuse deletion.
        Service::Volume => vec![&mut live.volumes, &mut live.snapshots],
        Service::Bucket => vec![&mut live.buckets],
    }
}

/// A delete of the oldest object of a kind that holds more than [`MAX_LIVE`].
pub fn cleanup(service: Service, live: &mut Live) -> Option<Input> {
    for (kind, list) in lists(service, live).into_iter().enumerate() {
        if list.len() > MAX_LIVE {
            let id = list.pop_front()?;
            return Some(delete(service, kind, id));
        }
    }
    None
}

/// A delete of any object still alive (at the end of a run).
pub fn drain(service: Service, live: &mut Live) -> Option<Input> {
    let mut found = None;
    for (kind, list) in lists(service, live).into_iter().enumerate().rev() {
        if let Some(id) = list.pop_front() {
            found = Some(delete(service, kind, id));
            break;
        }
    }
    found
}
