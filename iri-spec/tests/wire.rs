//! Wire tests: every IRI message, fully populated, must encode to bytes written by hand from the
//! field tables of the IRI reference (§1), and those bytes must decode back to the same value.
//!
//! The expectations below never look at the generated code: each one is a list of
//! `(field number, value)` pairs copied from the reference tables and serialised by the tiny,
//! independent protobuf writer in this file (varint, `tag = field << 3 | wire type`,
//! length-delimited, map entries as nested messages with key = 1 and value = 2).
//! A coverage test fails if any message of the descriptor set has no expectation here, and
//! every expectation's top-level fields are compared with the descriptor (so a value that leaves
//! a field at its default, and thus off the wire, is caught too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;

use iri_spec::{
    bucket::v1alpha1 as b, event::v1alpha1 as ev, machine::v1alpha1 as m, meta::v1alpha1 as meta,
    volume::v1alpha1 as v,
};
use prost::Message;
use prost_types::{FileDescriptorSet, field_descriptor_proto::Type};

// ---------------------------------------------------------------------------------------------
// A tiny, independent protobuf writer.
// ---------------------------------------------------------------------------------------------

/// One encoded field value: wire type 0 (varint) or wire type 2 (length-delimited).
#[derive(Clone, Debug)]
enum V {
    Varint(u64),
    Len(Vec<u8>),
}

/// A field of a hand-written expectation: (field number from the reference table, value).
type F = (u32, V);

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Serialises the fields in the order given (the reference tables' order).
fn msg(fields: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    for (number, value) in fields {
        match value {
            V::Varint(n) => {
                put_varint(&mut out, u64::from(*number) << 3);
                put_varint(&mut out, *n);
            }
            V::Len(bytes) => {
                put_varint(&mut out, (u64::from(*number) << 3) | 2);
                put_varint(&mut out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
        }
    }
    out
}

/// int64 / enum value (all values used here are non-negative).
fn varint(n: u64) -> V {
    V::Varint(n)
}
fn str(s: &str) -> V {
    V::Len(s.as_bytes().to_vec())
}
fn bytes(b: &[u8]) -> V {
    V::Len(b.to_vec())
}
/// A nested message.
fn sub(fields: &[F]) -> V {
    V::Len(msg(fields))
}
/// One `map<string,string>` entry.
fn map_ss(k: &str, val: &str) -> V {
    sub(&[(1, str(k)), (2, str(val))])
}
/// One `map<string,bytes>` entry.
fn map_sb(k: &str, val: &[u8]) -> V {
    sub(&[(1, str(k)), (2, bytes(val))])
}
/// One `map<string,int64>` entry.
fn map_si(k: &str, val: u64) -> V {
    sub(&[(1, str(k)), (2, varint(val))])
}

#[test]
fn writer_matches_protobuf_spec_examples() {
    // From the protobuf encoding guide: field 1 = 150 is 08 96 01; field 2 = "testing".
    assert_eq!(msg(&[(1, varint(150))]), [0x08, 0x96, 0x01]);
    assert_eq!(
        msg(&[(2, str("testing"))]),
        [0x12, 0x07, 0x74, 0x65, 0x73, 0x74, 0x69, 0x6e, 0x67]
    );
    assert_eq!(msg(&[(16, varint(1))]), [0x80, 0x01, 0x01]);
}

// ---------------------------------------------------------------------------------------------
// Cases.
// ---------------------------------------------------------------------------------------------

/// Encodes a value, compares with the expectation, decodes the expectation back and compares.
type Check = Box<dyn Fn(&'static str, &[u8])>;

struct Case {
    /// Full protobuf name, e.g. `machine.v1alpha1.Machine`.
    name: &'static str,
    /// Hand-written expectation.
    expected: Vec<u8>,
    /// Encodes the value, compares, decodes the hand-made bytes back and compares.
    check: Check,
}

fn case<M>(name: &'static str, (value, fields): (M, Vec<F>)) -> Case
where
    M: Message + Default + PartialEq + Debug + 'static,
{
    // The Rust type must be the message the name says (guards against copy-paste slips here).
    let rust = std::any::type_name::<M>();
    let tail: Vec<&str> = rust.rsplit("::").take(3).collect();
    let rust_full = format!("{}.{}.{}", tail[2], tail[1], tail[0]);
    assert_eq!(rust_full, name, "case {name} built from Rust type {rust}");
    Case {
        name,
        expected: msg(&fields),
        check: Box::new(move |name, expected| {
            let encoded = value.encode_to_vec();
            assert_eq!(
                encoded, expected,
                "{name}: prost bytes differ from the hand-written expectation"
            );
            let decoded = M::decode(expected).expect("hand-made bytes decode");
            assert_eq!(decoded, value, "{name}: round trip");
        }),
    }
}

fn hm<K: Into<String>, T>(k: K, val: T) -> HashMap<String, T> {
    HashMap::from([(k.into(), val)])
}

// ---- meta / event ----------------------------------------------------------------------------

fn object_metadata() -> (meta::ObjectMetadata, Vec<F>) {
    (
        meta::ObjectMetadata {
            id: "a1b2c3".into(),
            annotations: hm("ann", "x".to_string()),
            labels: hm("lab", "y".to_string()),
            generation: 7,
            created_at: 1_700_000_000_000_000_000,
            deleted_at: 1_700_000_000_000_000_001,
        },
        vec![
            (1, str("a1b2c3")),
            (2, map_ss("ann", "x")),
            (3, map_ss("lab", "y")),
            (4, varint(7)),
            (5, varint(1_700_000_000_000_000_000)),
            (6, varint(1_700_000_000_000_000_001)),
        ],
    )
}

fn event_spec() -> (ev::EventSpec, Vec<F>) {
    let (mv, mf) = object_metadata();
    (
        ev::EventSpec {
            involved_object_meta: Some(mv),
            reason: "Pulled".into(),
            message: "image pulled".into(),
            r#type: "Normal".into(),
            event_time: 1_700_000_000,
            action: "Pull".into(),
        },
        vec![
            (1, sub(&mf)),
            (2, str("Pulled")),
            (3, str("image pulled")),
            (4, str("Normal")),
            (5, varint(1_700_000_000)),
            (6, str("Pull")),
        ],
    )
}

fn event() -> (ev::Event, Vec<F>) {
    let (sv, sf) = event_spec();
    (ev::Event { spec: Some(sv) }, vec![(2, sub(&sf))])
}

fn common_cases() -> Vec<Case> {
    vec![
        case("meta.v1alpha1.ObjectMetadata", object_metadata()),
        case("event.v1alpha1.EventSpec", event_spec()),
        case("event.v1alpha1.Event", event()),
    ]
}

/// Two events, for the `ListEventsResponse` of every package.
fn two_events() -> (Vec<ev::Event>, Vec<F>) {
    let (e, ef) = event();
    (vec![e.clone(), e], vec![(1, sub(&ef)), (1, sub(&ef))])
}

// ---- machine.v1alpha1 ------------------------------------------------------------------------

fn m_volume_spec() -> (m::VolumeSpec, Vec<F>) {
    (
        m::VolumeSpec {
            driver: "ceph".into(),
            handle: "h1".into(),
            attributes: hm("pool", "p".to_string()),
            secret_data: hm("key", b"s3cr3t".to_vec()),
        },
        vec![
            (1, str("ceph")),
            (2, str("h1")),
            (3, map_ss("pool", "p")),
            (4, map_sb("key", b"s3cr3t")),
        ],
    )
}

fn m_machine_filter() -> (m::MachineFilter, Vec<F>) {
    (
        m::MachineFilter {
            id: "m1".into(),
            label_selector: hm("machine-uid", "u".to_string()),
        },
        vec![(1, str("m1")), (2, map_ss("machine-uid", "u"))],
    )
}

fn m_event_filter() -> (m::EventFilter, Vec<F>) {
    (
        m::EventFilter {
            id: "e1".into(),
            label_selector: hm("k", "v".to_string()),
            events_from_time: 100,
            events_to_time: 200,
        },
        vec![
            (1, str("e1")),
            (2, map_ss("k", "v")),
            (3, varint(100)),
            (4, varint(200)),
        ],
    )
}

fn m_caps() -> (m::MachineClassCapabilities, Vec<F>) {
    (
        m::MachineClassCapabilities {
            resources: hm("cpu", 4),
        },
        vec![(1, map_si("cpu", 4))],
    )
}

fn m_image_spec() -> (m::ImageSpec, Vec<F>) {
    (
        m::ImageSpec {
            image: "ghcr.io/os:1".into(),
        },
        vec![(1, str("ghcr.io/os:1"))],
    )
}

fn m_local_disk() -> (m::LocalDisk, Vec<F>) {
    let (iv, if_) = m_image_spec();
    (
        m::LocalDisk {
            size_bytes: 1 << 30,
            image: Some(iv),
        },
        vec![(1, varint(1 << 30)), (2, sub(&if_))],
    )
}

fn m_volume_connection() -> (m::VolumeConnection, Vec<F>) {
    (
        m::VolumeConnection {
            driver: "ceph".into(),
            handle: "h2".into(),
            attributes: hm("monitors", "1.2.3.4".to_string()),
            secret_data: hm("userKey", b"k".to_vec()),
            encryption_data: hm("encryptionKey", b"e".to_vec()),
            effective_storage_bytes: 2 << 30,
        },
        vec![
            (1, str("ceph")),
            (2, str("h2")),
            (3, map_ss("monitors", "1.2.3.4")),
            (4, map_sb("userKey", b"k")),
            (5, map_sb("encryptionKey", b"e")),
            (6, varint(2 << 30)),
        ],
    )
}

fn m_volume() -> (m::Volume, Vec<F>) {
    let (dv, df) = m_local_disk();
    let (cv, cf) = m_volume_connection();
    (
        m::Volume {
            name: "root".into(),
            device: "oda".into(),
            local_disk: Some(dv),
            connection: Some(cv),
        },
        // Field 3 is unused (and not reserved).
        vec![
            (1, str("root")),
            (2, str("oda")),
            (4, sub(&df)),
            (5, sub(&cf)),
        ],
    )
}

fn m_network_interface() -> (m::NetworkInterface, Vec<F>) {
    (
        m::NetworkInterface {
            name: "eth0".into(),
            network_id: "net-1".into(),
            ips: vec!["10.0.0.1".into(), "10.0.0.2".into()],
            attributes: hm("mtu", "1500".to_string()),
        },
        vec![
            (1, str("eth0")),
            (2, str("net-1")),
            (3, str("10.0.0.1")),
            (3, str("10.0.0.2")),
            (4, map_ss("mtu", "1500")),
        ],
    )
}

fn m_guest_config() -> (m::GuestConfig, Vec<F>) {
    (
        m::GuestConfig {
            hostname: "vm-1".into(),
        },
        vec![(1, str("vm-1"))],
    )
}

fn m_machine_spec() -> (m::MachineSpec, Vec<F>) {
    let (vv, vf) = m_volume();
    let (nv, nf) = m_network_interface();
    let (gv, gf) = m_guest_config();
    (
        m::MachineSpec {
            power: m::Power::Off as i32,
            class: "x3-xlarge".into(),
            ignition_data: b"{\"ignition\":{}}".to_vec(),
            volumes: vec![vv.clone(), vv],
            network_interfaces: vec![nv.clone(), nv],
            guest_config: Some(gv),
        },
        vec![
            (1, varint(1)), // POWER_OFF = 1
            (2, str("x3-xlarge")),
            (3, bytes(b"{\"ignition\":{}}")),
            (4, sub(&vf)),
            (4, sub(&vf)),
            (5, sub(&nf)),
            (5, sub(&nf)),
            (6, sub(&gf)),
        ],
    )
}

fn m_conditions() -> (m::Conditions, Vec<F>) {
    (
        m::Conditions {
            r#type: "Ready".into(),
            status: "True".into(),
            reason: "Booted".into(),
            message: "up".into(),
            last_transition_time: 1_700_000_123,
        },
        vec![
            (1, str("Ready")),
            (2, str("True")),
            (3, str("Booted")),
            (4, str("up")),
            (5, varint(1_700_000_123)),
        ],
    )
}

fn m_volume_status() -> (m::VolumeStatus, Vec<F>) {
    (
        m::VolumeStatus {
            name: "root".into(),
            handle: "vh".into(),
            state: m::VolumeState::VolumeAttached as i32,
        },
        vec![(1, str("root")), (2, str("vh")), (3, varint(1))],
    )
}

fn m_nic_status() -> (m::NetworkInterfaceStatus, Vec<F>) {
    (
        m::NetworkInterfaceStatus {
            name: "eth0".into(),
            handle: "nh".into(),
            state: m::NetworkInterfaceState::NetworkInterfaceAttached as i32,
        },
        vec![(1, str("eth0")), (2, str("nh")), (3, varint(1))],
    )
}

fn m_machine_status() -> (m::MachineStatus, Vec<F>) {
    let (vv, vf) = m_volume_status();
    let (nv, nf) = m_nic_status();
    let (cv, cf) = m_conditions();
    (
        m::MachineStatus {
            observed_generation: 6,
            state: m::MachineState::MachineStopped as i32,
            image_ref: "sha256:abc".into(),
            volumes: vec![vv.clone(), vv],
            network_interfaces: vec![nv.clone(), nv],
            machine_conditions: vec![cv.clone(), cv],
        },
        vec![
            (1, varint(6)),
            (2, varint(5)), // MACHINE_STOPPED = 5
            (3, str("sha256:abc")),
            (4, sub(&vf)),
            (4, sub(&vf)),
            (5, sub(&nf)),
            (5, sub(&nf)),
            (6, sub(&cf)),
            (6, sub(&cf)),
        ],
    )
}

fn m_machine() -> (m::Machine, Vec<F>) {
    let (mv, mf) = object_metadata();
    let (sv, sf) = m_machine_spec();
    let (tv, tf) = m_machine_status();
    (
        m::Machine {
            metadata: Some(mv),
            spec: Some(sv),
            status: Some(tv),
        },
        vec![(1, sub(&mf)), (2, sub(&sf)), (3, sub(&tf))],
    )
}

fn m_machine_class() -> (m::MachineClass, Vec<F>) {
    let (cv, cf) = m_caps();
    (
        m::MachineClass {
            name: "x3-xlarge".into(),
            capabilities: Some(cv),
        },
        vec![(1, str("x3-xlarge")), (2, sub(&cf))],
    )
}

fn m_machine_class_status() -> (m::MachineClassStatus, Vec<F>) {
    let (cv, cf) = m_machine_class();
    (
        m::MachineClassStatus {
            machine_class: Some(cv),
            quantity: 12,
        },
        vec![(1, sub(&cf)), (2, varint(12))],
    )
}

fn machine_cases() -> Vec<Case> {
    let id = || "m-123".to_string();
    let (ma, mf) = m_machine();
    let (vol, volf) = m_volume();
    let (nic, nicf) = m_network_interface();
    let (evs, evf) = two_events();
    let (mcs, mcsf) = m_machine_class_status();
    vec![
        case("machine.v1alpha1.VolumeSpec", m_volume_spec()),
        case("machine.v1alpha1.MachineFilter", m_machine_filter()),
        case("machine.v1alpha1.EventFilter", m_event_filter()),
        case("machine.v1alpha1.MachineClassCapabilities", m_caps()),
        case("machine.v1alpha1.Machine", m_machine()),
        case("machine.v1alpha1.ImageSpec", m_image_spec()),
        case("machine.v1alpha1.LocalDisk", m_local_disk()),
        case("machine.v1alpha1.VolumeConnection", m_volume_connection()),
        case("machine.v1alpha1.Volume", m_volume()),
        case("machine.v1alpha1.NetworkInterface", m_network_interface()),
        case("machine.v1alpha1.MachineSpec", m_machine_spec()),
        case("machine.v1alpha1.GuestConfig", m_guest_config()),
        case("machine.v1alpha1.MachineStatus", m_machine_status()),
        case("machine.v1alpha1.Conditions", m_conditions()),
        case("machine.v1alpha1.VolumeStatus", m_volume_status()),
        case("machine.v1alpha1.NetworkInterfaceStatus", m_nic_status()),
        case("machine.v1alpha1.MachineClass", m_machine_class()),
        case(
            "machine.v1alpha1.MachineClassStatus",
            m_machine_class_status(),
        ),
        case(
            "machine.v1alpha1.VersionRequest",
            (
                m::VersionRequest {
                    version: "0.1".into(),
                },
                vec![(1, str("0.1"))],
            ),
        ),
        case(
            "machine.v1alpha1.VersionResponse",
            (
                m::VersionResponse {
                    runtime_name: "irikit".into(),
                    runtime_version: "0.1.0".into(),
                },
                vec![(1, str("irikit")), (2, str("0.1.0"))],
            ),
        ),
        case("machine.v1alpha1.ListMachinesRequest", {
            let (fv, ff) = m_machine_filter();
            (
                m::ListMachinesRequest { filter: Some(fv) },
                vec![(1, sub(&ff))],
            )
        }),
        case(
            "machine.v1alpha1.ListMachinesResponse",
            (
                m::ListMachinesResponse {
                    machines: vec![ma.clone(), ma.clone()],
                },
                vec![(1, sub(&mf)), (1, sub(&mf))],
            ),
        ),
        case("machine.v1alpha1.ListEventsRequest", {
            let (fv, ff) = m_event_filter();
            (
                m::ListEventsRequest { filter: Some(fv) },
                vec![(1, sub(&ff))],
            )
        }),
        case(
            "machine.v1alpha1.ListEventsResponse",
            (m::ListEventsResponse { events: evs }, evf),
        ),
        case(
            "machine.v1alpha1.CreateMachineRequest",
            (
                m::CreateMachineRequest {
                    machine: Some(ma.clone()),
                },
                vec![(1, sub(&mf))],
            ),
        ),
        case(
            "machine.v1alpha1.CreateMachineResponse",
            (
                m::CreateMachineResponse { machine: Some(ma) },
                vec![(1, sub(&mf))],
            ),
        ),
        case(
            "machine.v1alpha1.DeleteMachineRequest",
            (
                m::DeleteMachineRequest { machine_id: id() },
                vec![(1, str("m-123"))],
            ),
        ),
        case(
            "machine.v1alpha1.DeleteMachineResponse",
            (m::DeleteMachineResponse {}, vec![]),
        ),
        case(
            "machine.v1alpha1.UpdateMachineAnnotationsRequest",
            (
                m::UpdateMachineAnnotationsRequest {
                    machine_id: id(),
                    annotations: hm("ann", "z".to_string()),
                },
                vec![(1, str("m-123")), (2, map_ss("ann", "z"))],
            ),
        ),
        case(
            "machine.v1alpha1.UpdateMachineAnnotationsResponse",
            (m::UpdateMachineAnnotationsResponse {}, vec![]),
        ),
        case(
            "machine.v1alpha1.UpdateMachinePowerRequest",
            (
                m::UpdateMachinePowerRequest {
                    machine_id: id(),
                    power: m::Power::Off as i32,
                },
                vec![(1, str("m-123")), (2, varint(1))],
            ),
        ),
        case(
            "machine.v1alpha1.UpdateMachinePowerResponse",
            (m::UpdateMachinePowerResponse {}, vec![]),
        ),
        case(
            "machine.v1alpha1.AttachVolumeRequest",
            (
                m::AttachVolumeRequest {
                    machine_id: id(),
                    volume: Some(vol.clone()),
                },
                vec![(1, str("m-123")), (2, sub(&volf))],
            ),
        ),
        case(
            "machine.v1alpha1.AttachVolumeResponse",
            (m::AttachVolumeResponse {}, vec![]),
        ),
        case(
            "machine.v1alpha1.DetachVolumeRequest",
            (
                m::DetachVolumeRequest {
                    machine_id: id(),
                    name: "root".into(),
                },
                vec![(1, str("m-123")), (2, str("root"))],
            ),
        ),
        case(
            "machine.v1alpha1.DetachVolumeResponse",
            (m::DetachVolumeResponse {}, vec![]),
        ),
        case(
            "machine.v1alpha1.UpdateVolumeRequest",
            (
                m::UpdateVolumeRequest {
                    machine_id: id(),
                    volume: Some(vol),
                },
                vec![(1, str("m-123")), (2, sub(&volf))],
            ),
        ),
        case(
            "machine.v1alpha1.UpdateVolumeResponse",
            (m::UpdateVolumeResponse {}, vec![]),
        ),
        case(
            "machine.v1alpha1.AttachNetworkInterfaceRequest",
            (
                m::AttachNetworkInterfaceRequest {
                    machine_id: id(),
                    network_interface: Some(nic),
                },
                vec![(1, str("m-123")), (2, sub(&nicf))],
            ),
        ),
        case(
            "machine.v1alpha1.AttachNetworkInterfaceResponse",
            (m::AttachNetworkInterfaceResponse {}, vec![]),
        ),
        case(
            "machine.v1alpha1.DetachNetworkInterfaceRequest",
            (
                m::DetachNetworkInterfaceRequest {
                    machine_id: id(),
                    name: "eth0".into(),
                },
                vec![(1, str("m-123")), (2, str("eth0"))],
            ),
        ),
        case(
            "machine.v1alpha1.DetachNetworkInterfaceResponse",
            (m::DetachNetworkInterfaceResponse {}, vec![]),
        ),
        case(
            "machine.v1alpha1.StatusRequest",
            (m::StatusRequest {}, vec![]),
        ),
        case(
            "machine.v1alpha1.StatusResponse",
            (
                m::StatusResponse {
                    machine_class_status: vec![mcs.clone(), mcs],
                },
                vec![(1, sub(&mcsf)), (1, sub(&mcsf))],
            ),
        ),
        case(
            "machine.v1alpha1.ExecRequest",
            (m::ExecRequest { machine_id: id() }, vec![(1, str("m-123"))]),
        ),
        case(
            "machine.v1alpha1.ExecResponse",
            (
                m::ExecResponse {
                    url: "https://host/exec/abc".into(),
                },
                vec![(1, str("https://host/exec/abc"))],
            ),
        ),
    ]
}

// ---- volume.v1alpha1 -------------------------------------------------------------------------

fn v_volume_filter() -> (v::VolumeFilter, Vec<F>) {
    (
        v::VolumeFilter {
            id: "v1".into(),
            label_selector: hm("volume-uid", "u".to_string()),
        },
        vec![(1, str("v1")), (2, map_ss("volume-uid", "u"))],
    )
}

fn v_event_filter() -> (v::EventFilter, Vec<F>) {
    (
        v::EventFilter {
            id: "e2".into(),
            label_selector: hm("k2", "v2".to_string()),
            events_from_time: 300,
            events_to_time: 400,
        },
        vec![
            (1, str("e2")),
            (2, map_ss("k2", "v2")),
            (3, varint(300)),
            (4, varint(400)),
        ],
    )
}

fn v_resources() -> (v::VolumeResources, Vec<F>) {
    (
        v::VolumeResources {
            storage_bytes: 10 << 30,
        },
        vec![(1, varint(10 << 30))],
    )
}

fn v_encryption() -> (v::EncryptionSpec, Vec<F>) {
    (
        v::EncryptionSpec {
            secret_data: hm("encryptionKey", b"k".to_vec()),
        },
        vec![(1, map_sb("encryptionKey", b"k"))],
    )
}

fn v_image_ds() -> (v::ImageDataSource, Vec<F>) {
    (
        v::ImageDataSource {
            image: "ghcr.io/os:2".into(),
            architecture: "amd64".into(),
        },
        vec![(1, str("ghcr.io/os:2")), (2, str("amd64"))],
    )
}

fn v_snapshot_ds() -> (v::SnapshotDataSource, Vec<F>) {
    (
        v::SnapshotDataSource {
            snapshot_id: "snap-1".into(),
        },
        vec![(1, str("snap-1"))],
    )
}

fn v_data_source() -> (v::VolumeDataSource, Vec<F>) {
    // The convention is "at most one", but the wire carries both; populate both.
    let (iv, if_) = v_image_ds();
    let (sv, sf) = v_snapshot_ds();
    (
        v::VolumeDataSource {
            image_data_source: Some(iv),
            snapshot_data_source: Some(sv),
        },
        vec![(1, sub(&if_)), (2, sub(&sf))],
    )
}

fn v_volume_spec() -> (v::VolumeSpec, Vec<F>) {
    let (rv, rf) = v_resources();
    let (ev_, ef) = v_encryption();
    let (dv, df) = v_data_source();
    (
        v::VolumeSpec {
            class: "fast".into(),
            resources: Some(rv),
            encryption: Some(ev_),
            volume_data_source: Some(dv),
        },
        // Field 1 is reserved (old `image`).
        vec![
            (2, str("fast")),
            (3, sub(&rf)),
            (4, sub(&ef)),
            (5, sub(&df)),
        ],
    )
}

fn v_access() -> (v::VolumeAccess, Vec<F>) {
    (
        v::VolumeAccess {
            driver: "ceph".into(),
            handle: "vh".into(),
            attributes: hm("image", "pool/img".to_string()),
            secret_data: hm("userKey", b"u".to_vec()),
        },
        vec![
            (1, str("ceph")),
            (2, str("vh")),
            (3, map_ss("image", "pool/img")),
            (4, map_sb("userKey", b"u")),
        ],
    )
}

fn v_volume_status() -> (v::VolumeStatus, Vec<F>) {
    let (av, af) = v_access();
    let (rv, rf) = v_resources();
    (
        v::VolumeStatus {
            state: v::VolumeState::VolumeError as i32,
            access: Some(av),
            resources: Some(rv),
        },
        vec![(1, varint(2)), (2, sub(&af)), (3, sub(&rf))],
    )
}

fn v_volume() -> (v::Volume, Vec<F>) {
    let (mv, mf) = object_metadata();
    let (sv, sf) = v_volume_spec();
    let (tv, tf) = v_volume_status();
    (
        v::Volume {
            metadata: Some(mv),
            spec: Some(sv),
            status: Some(tv),
        },
        vec![(1, sub(&mf)), (2, sub(&sf)), (3, sub(&tf))],
    )
}

fn v_class_caps() -> (v::VolumeClassCapabilities, Vec<F>) {
    (
        v::VolumeClassCapabilities {
            tps: 1000,
            iops: 5000,
        },
        vec![(1, varint(1000)), (2, varint(5000))],
    )
}

fn v_class() -> (v::VolumeClass, Vec<F>) {
    let (cv, cf) = v_class_caps();
    (
        v::VolumeClass {
            name: "fast".into(),
            capabilities: Some(cv),
        },
        vec![(1, str("fast")), (2, sub(&cf))],
    )
}

fn v_class_status() -> (v::VolumeClassStatus, Vec<F>) {
    let (cv, cf) = v_class();
    (
        v::VolumeClassStatus {
            volume_class: Some(cv),
            quantity: 100 << 30,
        },
        vec![(1, sub(&cf)), (2, varint(100 << 30))],
    )
}

fn v_snapshot_spec() -> (v::VolumeSnapshotSpec, Vec<F>) {
    (
        v::VolumeSnapshotSpec {
            volume_id: "v1".into(),
        },
        vec![(1, str("v1"))],
    )
}

fn v_snapshot_status() -> (v::VolumeSnapshotStatus, Vec<F>) {
    (
        v::VolumeSnapshotStatus {
            state: v::VolumeSnapshotState::VolumeSnapshotReady as i32,
            size: 3 << 30,
        },
        vec![(1, varint(1)), (2, varint(3 << 30))],
    )
}

fn v_snapshot() -> (v::VolumeSnapshot, Vec<F>) {
    let (mv, mf) = object_metadata();
    let (sv, sf) = v_snapshot_spec();
    let (tv, tf) = v_snapshot_status();
    (
        v::VolumeSnapshot {
            metadata: Some(mv),
            spec: Some(sv),
            status: Some(tv),
        },
        vec![(1, sub(&mf)), (2, sub(&sf)), (3, sub(&tf))],
    )
}

fn v_snapshot_filter() -> (v::VolumeSnapshotFilter, Vec<F>) {
    (
        v::VolumeSnapshotFilter {
            id: "s1".into(),
            label_selector: hm("snap", "yes".to_string()),
        },
        vec![(1, str("s1")), (2, map_ss("snap", "yes"))],
    )
}

fn volume_cases() -> Vec<Case> {
    let (vol, volf) = v_volume();
    let (snap, snapf) = v_snapshot();
    let (res, resf) = v_resources();
    let (evs, evf) = two_events();
    let (vcs, vcsf) = v_class_status();
    vec![
        case("volume.v1alpha1.VolumeFilter", v_volume_filter()),
        case("volume.v1alpha1.EventFilter", v_event_filter()),
        case("volume.v1alpha1.VolumeResources", v_resources()),
        case("volume.v1alpha1.EncryptionSpec", v_encryption()),
        case("volume.v1alpha1.ImageDataSource", v_image_ds()),
        case("volume.v1alpha1.SnapshotDataSource", v_snapshot_ds()),
        case("volume.v1alpha1.VolumeDataSource", v_data_source()),
        case("volume.v1alpha1.VolumeSpec", v_volume_spec()),
        case("volume.v1alpha1.VolumeStatus", v_volume_status()),
        case("volume.v1alpha1.Volume", v_volume()),
        case("volume.v1alpha1.VolumeClassCapabilities", v_class_caps()),
        case("volume.v1alpha1.VolumeClass", v_class()),
        case("volume.v1alpha1.VolumeClassStatus", v_class_status()),
        case("volume.v1alpha1.VolumeAccess", v_access()),
        case(
            "volume.v1alpha1.VersionRequest",
            (
                v::VersionRequest {
                    version: "0.2".into(),
                },
                vec![(1, str("0.2"))],
            ),
        ),
        case(
            "volume.v1alpha1.VersionResponse",
            (
                v::VersionResponse {
                    runtime_name: "irikit-volume".into(),
                    runtime_version: "0.2.0".into(),
                },
                vec![(1, str("irikit-volume")), (2, str("0.2.0"))],
            ),
        ),
        case("volume.v1alpha1.ListEventsRequest", {
            let (fv, ff) = v_event_filter();
            (
                v::ListEventsRequest { filter: Some(fv) },
                vec![(1, sub(&ff))],
            )
        }),
        case(
            "volume.v1alpha1.ListEventsResponse",
            (v::ListEventsResponse { events: evs }, evf),
        ),
        case("volume.v1alpha1.ListVolumesRequest", {
            let (fv, ff) = v_volume_filter();
            (
                v::ListVolumesRequest { filter: Some(fv) },
                vec![(1, sub(&ff))],
            )
        }),
        case(
            "volume.v1alpha1.ListVolumesResponse",
            (
                v::ListVolumesResponse {
                    volumes: vec![vol.clone(), vol.clone()],
                },
                vec![(1, sub(&volf)), (1, sub(&volf))],
            ),
        ),
        case(
            "volume.v1alpha1.CreateVolumeRequest",
            (
                v::CreateVolumeRequest {
                    volume: Some(vol.clone()),
                },
                vec![(1, sub(&volf))],
            ),
        ),
        case(
            "volume.v1alpha1.CreateVolumeResponse",
            (
                v::CreateVolumeResponse { volume: Some(vol) },
                vec![(1, sub(&volf))],
            ),
        ),
        case(
            "volume.v1alpha1.ExpandVolumeRequest",
            (
                v::ExpandVolumeRequest {
                    volume_id: "v-9".into(),
                    resources: Some(res),
                },
                vec![(1, str("v-9")), (2, sub(&resf))],
            ),
        ),
        case(
            "volume.v1alpha1.ExpandVolumeResponse",
            (v::ExpandVolumeResponse {}, vec![]),
        ),
        case(
            "volume.v1alpha1.DeleteVolumeRequest",
            (
                v::DeleteVolumeRequest {
                    volume_id: "v-9".into(),
                },
                vec![(1, str("v-9"))],
            ),
        ),
        case(
            "volume.v1alpha1.DeleteVolumeResponse",
            (v::DeleteVolumeResponse {}, vec![]),
        ),
        case(
            "volume.v1alpha1.StatusRequest",
            (v::StatusRequest {}, vec![]),
        ),
        case(
            "volume.v1alpha1.StatusResponse",
            (
                v::StatusResponse {
                    volume_class_status: vec![vcs.clone(), vcs],
                },
                vec![(1, sub(&vcsf)), (1, sub(&vcsf))],
            ),
        ),
        case("volume.v1alpha1.VolumeSnapshotSpec", v_snapshot_spec()),
        case("volume.v1alpha1.VolumeSnapshotStatus", v_snapshot_status()),
        case("volume.v1alpha1.VolumeSnapshot", v_snapshot()),
        case("volume.v1alpha1.VolumeSnapshotFilter", v_snapshot_filter()),
        case("volume.v1alpha1.ListVolumeSnapshotsRequest", {
            let (fv, ff) = v_snapshot_filter();
            (
                v::ListVolumeSnapshotsRequest { filter: Some(fv) },
                vec![(1, sub(&ff))],
            )
        }),
        case(
            "volume.v1alpha1.ListVolumeSnapshotsResponse",
            (
                v::ListVolumeSnapshotsResponse {
                    volume_snapshots: vec![snap.clone(), snap.clone()],
                },
                vec![(1, sub(&snapf)), (1, sub(&snapf))],
            ),
        ),
        case(
            "volume.v1alpha1.CreateVolumeSnapshotRequest",
            (
                v::CreateVolumeSnapshotRequest {
                    volume_snapshot: Some(snap.clone()),
                },
                vec![(1, sub(&snapf))],
            ),
        ),
        case(
            "volume.v1alpha1.CreateVolumeSnapshotResponse",
            (
                v::CreateVolumeSnapshotResponse {
                    volume_snapshot: Some(snap),
                },
                vec![(1, sub(&snapf))],
            ),
        ),
        case(
            "volume.v1alpha1.DeleteVolumeSnapshotRequest",
            (
                v::DeleteVolumeSnapshotRequest {
                    volume_snapshot_id: "s-9".into(),
                },
                vec![(1, str("s-9"))],
            ),
        ),
        case(
            "volume.v1alpha1.DeleteVolumeSnapshotResponse",
            (v::DeleteVolumeSnapshotResponse {}, vec![]),
        ),
    ]
}

// ---- bucket.v1alpha1 -------------------------------------------------------------------------

fn b_filter() -> (b::BucketFilter, Vec<F>) {
    (
        b::BucketFilter {
            id: "b1".into(),
            label_selector: hm("bucket-uid", "u".to_string()),
        },
        vec![(1, str("b1")), (2, map_ss("bucket-uid", "u"))],
    )
}

fn b_event_filter() -> (b::EventFilter, Vec<F>) {
    (
        b::EventFilter {
            id: "e3".into(),
            label_selector: hm("k3", "v3".to_string()),
            events_from_time: 500,
            events_to_time: 600,
        },
        vec![
            (1, str("e3")),
            (2, map_ss("k3", "v3")),
            (3, varint(500)),
            (4, varint(600)),
        ],
    )
}

fn b_spec() -> (b::BucketSpec, Vec<F>) {
    (
        b::BucketSpec {
            class: "standard".into(),
        },
        // Only field 2; field 1 is unused.
        vec![(2, str("standard"))],
    )
}

fn b_access() -> (b::BucketAccess, Vec<F>) {
    (
        b::BucketAccess {
            endpoint: "https://s3.local".into(),
            secret_data: hm("AWS_SECRET_ACCESS_KEY", b"sk".to_vec()),
        },
        vec![
            (1, str("https://s3.local")),
            (2, map_sb("AWS_SECRET_ACCESS_KEY", b"sk")),
        ],
    )
}

fn b_status() -> (b::BucketStatus, Vec<F>) {
    let (av, af) = b_access();
    (
        b::BucketStatus {
            state: b::BucketState::BucketAvailable as i32,
            access: Some(av),
        },
        vec![(1, varint(1)), (2, sub(&af))],
    )
}

fn b_bucket() -> (b::Bucket, Vec<F>) {
    let (mv, mf) = object_metadata();
    let (sv, sf) = b_spec();
    let (tv, tf) = b_status();
    (
        b::Bucket {
            metadata: Some(mv),
            spec: Some(sv),
            status: Some(tv),
        },
        vec![(1, sub(&mf)), (2, sub(&sf)), (3, sub(&tf))],
    )
}

fn b_class_caps() -> (b::BucketClassCapabilities, Vec<F>) {
    (
        b::BucketClassCapabilities { tps: 10, iops: 20 },
        vec![(1, varint(10)), (2, varint(20))],
    )
}

fn b_class() -> (b::BucketClass, Vec<F>) {
    let (cv, cf) = b_class_caps();
    (
        b::BucketClass {
            name: "standard".into(),
            capabilities: Some(cv),
        },
        vec![(1, str("standard")), (2, sub(&cf))],
    )
}

fn bucket_cases() -> Vec<Case> {
    let (bk, bkf) = b_bucket();
    let (cls, clsf) = b_class();
    let (evs, evf) = two_events();
    vec![
        case("bucket.v1alpha1.BucketFilter", b_filter()),
        case("bucket.v1alpha1.EventFilter", b_event_filter()),
        case("bucket.v1alpha1.BucketSpec", b_spec()),
        case("bucket.v1alpha1.BucketStatus", b_status()),
        case("bucket.v1alpha1.Bucket", b_bucket()),
        case("bucket.v1alpha1.BucketClassCapabilities", b_class_caps()),
        case("bucket.v1alpha1.BucketClass", b_class()),
        case("bucket.v1alpha1.BucketAccess", b_access()),
        case(
            "bucket.v1alpha1.VersionRequest",
            (
                b::VersionRequest {
                    version: "0.3".into(),
                },
                vec![(1, str("0.3"))],
            ),
        ),
        case(
            "bucket.v1alpha1.VersionResponse",
            (
                b::VersionResponse {
                    runtime_name: "irikit-bucket".into(),
                    runtime_version: "0.3.0".into(),
                },
                vec![(1, str("irikit-bucket")), (2, str("0.3.0"))],
            ),
        ),
        case("bucket.v1alpha1.ListEventsRequest", {
            let (fv, ff) = b_event_filter();
            (
                b::ListEventsRequest { filter: Some(fv) },
                vec![(1, sub(&ff))],
            )
        }),
        case(
            "bucket.v1alpha1.ListEventsResponse",
            (b::ListEventsResponse { events: evs }, evf),
        ),
        case("bucket.v1alpha1.ListBucketsRequest", {
            let (fv, ff) = b_filter();
            (
                b::ListBucketsRequest { filter: Some(fv) },
                vec![(1, sub(&ff))],
            )
        }),
        case(
            "bucket.v1alpha1.ListBucketsResponse",
            (
                b::ListBucketsResponse {
                    buckets: vec![bk.clone(), bk.clone()],
                },
                vec![(1, sub(&bkf)), (1, sub(&bkf))],
            ),
        ),
        case(
            "bucket.v1alpha1.CreateBucketRequest",
            (
                b::CreateBucketRequest {
                    bucket: Some(bk.clone()),
                },
                vec![(1, sub(&bkf))],
            ),
        ),
        case(
            "bucket.v1alpha1.CreateBucketResponse",
            (
                b::CreateBucketResponse { bucket: Some(bk) },
                vec![(1, sub(&bkf))],
            ),
        ),
        case(
            "bucket.v1alpha1.DeleteBucketRequest",
            (
                b::DeleteBucketRequest {
                    bucket_id: "b-9".into(),
                },
                vec![(1, str("b-9"))],
            ),
        ),
        case(
            "bucket.v1alpha1.DeleteBucketResponse",
            (b::DeleteBucketResponse {}, vec![]),
        ),
        case(
            "bucket.v1alpha1.ListBucketClassesRequest",
            (b::ListBucketClassesRequest {}, vec![]),
        ),
        case(
            "bucket.v1alpha1.ListBucketClassesResponse",
            (
                b::ListBucketClassesResponse {
                    bucket_classes: vec![cls.clone(), cls],
                },
                vec![(1, sub(&clsf)), (1, sub(&clsf))],
            ),
        ),
    ]
}

fn all_cases() -> Vec<Case> {
    let mut all = common_cases();
    all.extend(machine_cases());
    all.extend(volume_cases());
    all.extend(bucket_cases());
    all
}

fn run(cases: Vec<Case>) -> usize {
    let n = cases.len();
    for c in cases {
        (c.check)(c.name, &c.expected);
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn meta_and_event_messages_encode_as_the_reference_says() {
    assert_eq!(run(common_cases()), 3);
}

#[test]
fn machine_messages_encode_as_the_reference_says() {
    assert_eq!(run(machine_cases()), 46);
}

#[test]
fn volume_messages_encode_as_the_reference_says() {
    assert_eq!(run(volume_cases()), 38);
}

#[test]
fn bucket_messages_encode_as_the_reference_says() {
    assert_eq!(run(bucket_cases()), 20);
}

#[test]
fn empty_messages_encode_to_zero_bytes() {
    let empties: Vec<Vec<u8>> = vec![
        m::DeleteMachineResponse {}.encode_to_vec(),
        m::UpdateMachineAnnotationsResponse {}.encode_to_vec(),
        m::UpdateMachinePowerResponse {}.encode_to_vec(),
        m::AttachVolumeResponse {}.encode_to_vec(),
        m::DetachVolumeResponse {}.encode_to_vec(),
        m::UpdateVolumeResponse {}.encode_to_vec(),
        m::AttachNetworkInterfaceResponse {}.encode_to_vec(),
        m::DetachNetworkInterfaceResponse {}.encode_to_vec(),
        m::StatusRequest {}.encode_to_vec(),
        v::StatusRequest {}.encode_to_vec(),
        v::ExpandVolumeResponse {}.encode_to_vec(),
        v::DeleteVolumeResponse {}.encode_to_vec(),
        v::DeleteVolumeSnapshotResponse {}.encode_to_vec(),
        b::DeleteBucketResponse {}.encode_to_vec(),
        b::ListBucketClassesRequest {}.encode_to_vec(),
    ];
    assert_eq!(empties.len(), 15);
    for (i, e) in empties.iter().enumerate() {
        assert!(e.is_empty(), "empty message #{i} encoded to {e:?}");
    }
    // The hand-written expectations of exactly these messages are empty too.
    let empty_cases: BTreeSet<&str> = all_cases()
        .into_iter()
        .filter(|c| c.expected.is_empty())
        .map(|c| c.name)
        .collect();
    assert_eq!(empty_cases.len(), 15, "{empty_cases:?}");
}

fn descriptor() -> FileDescriptorSet {
    FileDescriptorSet::decode(iri_spec::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

/// Every message of the descriptor set, by full name, with its `(field number, wire type)` set.
fn descriptor_messages() -> HashMap<String, BTreeSet<(u32, u8)>> {
    let mut out = HashMap::new();
    for file in descriptor().file {
        let package = file.package().to_string();
        for message in &file.message_type {
            // Map entry types are nested messages; the IRI has no other nested types.
            for nested in &message.nested_type {
                assert!(
                    nested.options.as_ref().and_then(|o| o.map_entry) == Some(true),
                    "unexpected nested message {}.{}",
                    message.name(),
                    nested.name()
                );
            }
            let fields = message
                .field
                .iter()
                .map(|f| {
                    let wire = match f.r#type() {
                        Type::Int64 | Type::Enum => 0,
                        Type::String | Type::Bytes | Type::Message => 2,
                        other => panic!("{}: unexpected field type {other:?}", message.name()),
                    };
                    (u32::try_from(f.number()).unwrap(), wire)
                })
                .collect();
            out.insert(format!("{package}.{}", message.name()), fields);
        }
    }
    out
}

/// Top-level `(field number, wire type)` pairs of hand-made bytes.
fn top_level_fields(mut bytes: &[u8]) -> BTreeSet<(u32, u8)> {
    fn read_varint(bytes: &mut &[u8]) -> u64 {
        let mut n = 0u64;
        let mut shift = 0;
        loop {
            let byte = bytes[0];
            *bytes = &bytes[1..];
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return n;
            }
            shift += 7;
        }
    }
    let mut out = BTreeSet::new();
    while !bytes.is_empty() {
        let tag = read_varint(&mut bytes);
        let wire = u8::try_from(tag & 7).unwrap();
        out.insert((u32::try_from(tag >> 3).unwrap(), wire));
        match wire {
            0 => {
                read_varint(&mut bytes);
            }
            2 => {
                let len = usize::try_from(read_varint(&mut bytes)).unwrap();
                bytes = &bytes[len..];
            }
            other => panic!("wire type {other} not used by the IRI"),
        }
    }
    out
}

#[test]
fn every_descriptor_message_has_a_wire_expectation() {
    let cases = all_cases();
    let covered: BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(covered.len(), cases.len(), "a message is listed twice");
    let in_descriptor = descriptor_messages();
    let described: BTreeSet<&str> = in_descriptor.keys().map(String::as_str).collect();
    let missing: Vec<_> = described.difference(&covered).collect();
    let extra: Vec<_> = covered.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "messages without a wire test: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "wire tests for unknown messages: {extra:?}"
    );
    assert_eq!(covered.len(), 107, "messages covered");
}

#[test]
fn every_expectation_puts_every_descriptor_field_on_the_wire() {
    let in_descriptor = descriptor_messages();
    for c in all_cases() {
        let want = top_level_fields(&c.expected);
        let got = &in_descriptor[c.name];
        assert_eq!(
            &want, got,
            "{}: fields of the hand-written expectation vs the descriptor",
            c.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Enum values.
// ---------------------------------------------------------------------------------------------

/// Hand-written from reference §1.4–§1.6: (full enum name, [(value name, number)]).
const ENUMS: &[(&str, &[(&str, i32)])] = &[
    (
        "machine.v1alpha1.Power",
        &[("POWER_ON", 0), ("POWER_OFF", 1)],
    ),
    (
        "machine.v1alpha1.VolumeState",
        &[("VOLUME_PENDING", 0), ("VOLUME_ATTACHED", 1)],
    ),
    (
        "machine.v1alpha1.NetworkInterfaceState",
        &[
            ("NETWORK_INTERFACE_PENDING", 0),
            ("NETWORK_INTERFACE_ATTACHED", 1),
        ],
    ),
    (
        "machine.v1alpha1.MachineState",
        &[
            ("MACHINE_PENDING", 0),
            ("MACHINE_RUNNING", 1),
            ("MACHINE_SUSPENDED", 2),
            ("MACHINE_TERMINATED", 3),
            ("MACHINE_TERMINATING", 4),
            ("MACHINE_STOPPED", 5),
        ],
    ),
    (
        "volume.v1alpha1.VolumeState",
        &[
            ("VOLUME_PENDING", 0),
            ("VOLUME_AVAILABLE", 1),
            ("VOLUME_ERROR", 2),
        ],
    ),
    (
        "volume.v1alpha1.VolumeSnapshotState",
        &[
            ("VOLUME_SNAPSHOT_PENDING", 0),
            ("VOLUME_SNAPSHOT_READY", 1),
            ("VOLUME_SNAPSHOT_FAILED", 2),
        ],
    ),
    (
        "bucket.v1alpha1.BucketState",
        &[
            ("BUCKET_PENDING", 0),
            ("BUCKET_AVAILABLE", 1),
            ("BUCKET_ERROR", 2),
        ],
    ),
];

#[test]
fn generated_enums_have_the_reference_numbers() {
    assert_eq!(m::Power::On as i32, 0);
    assert_eq!(m::Power::Off as i32, 1);

    assert_eq!(m::VolumeState::VolumePending as i32, 0);
    assert_eq!(m::VolumeState::VolumeAttached as i32, 1);

    assert_eq!(m::NetworkInterfaceState::NetworkInterfacePending as i32, 0);
    assert_eq!(m::NetworkInterfaceState::NetworkInterfaceAttached as i32, 1);

    assert_eq!(m::MachineState::MachinePending as i32, 0);
    assert_eq!(m::MachineState::MachineRunning as i32, 1);
    assert_eq!(m::MachineState::MachineSuspended as i32, 2);
    assert_eq!(m::MachineState::MachineTerminated as i32, 3);
    assert_eq!(m::MachineState::MachineTerminating as i32, 4);
    assert_eq!(m::MachineState::MachineStopped as i32, 5);

    assert_eq!(v::VolumeState::VolumePending as i32, 0);
    assert_eq!(v::VolumeState::VolumeAvailable as i32, 1);
    assert_eq!(v::VolumeState::VolumeError as i32, 2);

    assert_eq!(v::VolumeSnapshotState::VolumeSnapshotPending as i32, 0);
    assert_eq!(v::VolumeSnapshotState::VolumeSnapshotReady as i32, 1);
    assert_eq!(v::VolumeSnapshotState::VolumeSnapshotFailed as i32, 2);

    assert_eq!(b::BucketState::BucketPending as i32, 0);
    assert_eq!(b::BucketState::BucketAvailable as i32, 1);
    assert_eq!(b::BucketState::BucketError as i32, 2);

    // The proto names the generated code reports agree with the table as well.
    assert_eq!(
        m::MachineState::MachineStopped.as_str_name(),
        "MACHINE_STOPPED"
    );
    assert_eq!(
        m::MachineState::from_str_name("MACHINE_TERMINATING"),
        Some(m::MachineState::MachineTerminating)
    );
    assert_eq!(v::VolumeState::VolumeError.as_str_name(), "VOLUME_ERROR");
    assert_eq!(b::BucketState::BucketError.as_str_name(), "BUCKET_ERROR");
}

#[test]
fn descriptor_enums_have_the_reference_numbers() {
    let mut found = Vec::new();
    for file in descriptor().file {
        assert!(
            file.message_type.iter().all(|m| m.enum_type.is_empty()),
            "IRI enums are all top-level"
        );
        for e in &file.enum_type {
            let full = format!("{}.{}", file.package(), e.name());
            let values: Vec<(String, i32)> = e
                .value
                .iter()
                .map(|v| (v.name().to_string(), v.number()))
                .collect();
            found.push((full, values));
        }
    }
    let want: Vec<(String, Vec<(String, i32)>)> = ENUMS
        .iter()
        .map(|(n, vals)| {
            (
                (*n).to_string(),
                vals.iter().map(|(v, i)| ((*v).to_string(), *i)).collect(),
            )
        })
        .collect();
    found.sort();
    let mut want_sorted = want;
    want_sorted.sort();
    assert_eq!(found, want_sorted);
}
