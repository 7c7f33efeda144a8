//! The exported descriptor set holds exactly the services and methods of reference §1, in
//! declaration order, with the right request/response types, no streaming, and the reserved and
//! unused field numbers the reference calls out. Expectations are written by hand from the tables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// (gRPC path, input type, output type), in the declaration order of §1.4, §1.5 and §1.6.
#[rustfmt::skip]
const RPCS: &[(&str, &str, &str)] = &[
    // §1.4 machine.v1alpha1.MachineRuntime
    ("/machine.v1alpha1.MachineRuntime/Version", "machine.v1alpha1.VersionRequest", "machine.v1alpha1.VersionResponse"),
    ("/machine.v1alpha1.MachineRuntime/ListEvents", "machine.v1alpha1.ListEventsRequest", "machine.v1alpha1.ListEventsResponse"),
    ("/machine.v1alpha1.MachineRuntime/ListMachines", "machine.v1alpha1.ListMachinesRequest", "machine.v1alpha1.ListMachinesResponse"),
    ("/machine.v1alpha1.MachineRuntime/CreateMachine", "machine.v1alpha1.CreateMachineRequest", "machine.v1alpha1.CreateMachineResponse"),
    ("/machine.v1alpha1.MachineRuntime/DeleteMachine", "machine.v1alpha1.DeleteMachineRequest", "machine.v1alpha1.DeleteMachineResponse"),
    ("/machine.v1alpha1.MachineRuntime/UpdateMachineAnnotations", "machine.v1alpha1.UpdateMachineAnnotationsRequest", "machine.v1alpha1.UpdateMachineAnnotationsResponse"),
    ("/machine.v1alpha1.MachineRuntime/UpdateMachinePower", "machine.v1alpha1.UpdateMachinePowerRequest", "machine.v1alpha1.UpdateMachinePowerResponse"),
    ("/machine.v1alpha1.MachineRuntime/AttachVolume", "machine.v1alpha1.AttachVolumeRequest", "machine.v1alpha1.AttachVolumeResponse"),
    ("/machine.v1alpha1.MachineRuntime/DetachVolume", "machine.v1alpha1.DetachVolumeRequest", "machine.v1alpha1.DetachVolumeResponse"),
    ("/machine.v1alpha1.MachineRuntime/UpdateVolume", "machine.v1alpha1.UpdateVolumeRequest", "machine.v1alpha1.UpdateVolumeResponse"),
    ("/machine.v1alpha1.MachineRuntime/AttachNetworkInterface", "machine.v1alpha1.AttachNetworkInterfaceRequest", "machine.v1alpha1.AttachNetworkInterfaceResponse"),
    ("/machine.v1alpha1.MachineRuntime/DetachNetworkInterface", "machine.v1alpha1.DetachNetworkInterfaceRequest", "machine.v1alpha1.DetachNetworkInterfaceResponse"),
    ("/machine.v1alpha1.MachineRuntime/Status", "machine.v1alpha1.StatusRequest", "machine.v1alpha1.StatusResponse"),
    ("/machine.v1alpha1.MachineRuntime/Exec", "machine.v1alpha1.ExecRequest", "machine.v1alpha1.ExecResponse"),
    // §1.5 volume.v1alpha1.VolumeRuntime
    ("/volume.v1alpha1.VolumeRuntime/Version", "volume.v1alpha1.VersionRequest", "volume.v1alpha1.VersionResponse"),
    ("/volume.v1alpha1.VolumeRuntime/ListEvents", "volume.v1alpha1.ListEventsRequest", "volume.v1alpha1.ListEventsResponse"),
    ("/volume.v1alpha1.VolumeRuntime/ListVolumes", "volume.v1alpha1.ListVolumesRequest", "volume.v1alpha1.ListVolumesResponse"),
    ("/volume.v1alpha1.VolumeRuntime/CreateVolume", "volume.v1alpha1.CreateVolumeRequest", "volume.v1alpha1.CreateVolumeResponse"),
    ("/volume.v1alpha1.VolumeRuntime/ExpandVolume", "volume.v1alpha1.ExpandVolumeRequest", "volume.v1alpha1.ExpandVolumeResponse"),
    ("/volume.v1alpha1.VolumeRuntime/DeleteVolume", "volume.v1alpha1.DeleteVolumeRequest", "volume.v1alpha1.DeleteVolumeResponse"),
    ("/volume.v1alpha1.VolumeRuntime/CreateVolumeSnapshot", "volume.v1alpha1.CreateVolumeSnapshotRequest", "volume.v1alpha1.CreateVolumeSnapshotResponse"),
    ("/volume.v1alpha1.VolumeRuntime/DeleteVolumeSnapshot", "volume.v1alpha1.DeleteVolumeSnapshotRequest", "volume.v1alpha1.DeleteVolumeSnapshotResponse"),
    ("/volume.v1alpha1.VolumeRuntime/ListVolumeSnapshots", "volume.v1alpha1.ListVolumeSnapshotsRequest", "volume.v1alpha1.ListVolumeSnapshotsResponse"),
    ("/volume.v1alpha1.VolumeRuntime/Status", "volume.v1alpha1.StatusRequest", "volume.v1alpha1.StatusResponse"),
    // §1.6 bucket.v1alpha1.BucketRuntime
    ("/bucket.v1alpha1.BucketRuntime/Version", "bucket.v1alpha1.VersionRequest", "bucket.v1alpha1.VersionResponse"),
    ("/bucket.v1alpha1.BucketRuntime/ListEvents", "bucket.v1alpha1.ListEventsRequest", "bucket.v1alpha1.ListEventsResponse"),
    ("/bucket.v1alpha1.BucketRuntime/ListBuckets", "bucket.v1alpha1.ListBucketsRequest", "bucket.v1alpha1.ListBucketsResponse"),
    ("/bucket.v1alpha1.BucketRuntime/CreateBucket", "bucket.v1alpha1.CreateBucketRequest", "bucket.v1alpha1.CreateBucketResponse"),
    ("/bucket.v1alpha1.BucketRuntime/DeleteBucket", "bucket.v1alpha1.DeleteBucketRequest", "bucket.v1alpha1.DeleteBucketResponse"),
    ("/bucket.v1alpha1.BucketRuntime/ListBucketClasses", "bucket.v1alpha1.ListBucketClassesRequest", "bucket.v1alpha1.ListBucketClassesResponse"),
];

fn descriptor() -> FileDescriptorSet {
    FileDescriptorSet::decode(iri_spec::FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

fn message(full_name: &str) -> DescriptorProto {
    let (package, name) = full_name.rsplit_once('.').unwrap();
    descriptor()
        .file
        .into_iter()
        .filter(|f| f.package() == package)
        .flat_map(|f| f.message_type)
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("message {full_name} not in the descriptor set"))
}

fn field_numbers(full_name: &str) -> Vec<i32> {
    message(full_name)
        .field
        .iter()
        .map(|f| f.number())
        .collect()
}

#[test]
fn descriptor_holds_exactly_the_reference_rpcs_in_order() {
    let mut got = Vec::new();
    let mut services = Vec::new();
    for file in descriptor().file {
        for service in &file.service {
            services.push(format!("{}.{}", file.package(), service.name()));
            for method in &service.method {
                assert!(
                    !method.client_streaming() && !method.server_streaming(),
                    "{}.{} streams",
                    service.name(),
                    method.name()
                );
                got.push((
                    format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    // Descriptor type names are fully qualified with a leading dot.
                    method.input_type().trim_start_matches('.').to_string(),
                    method.output_type().trim_start_matches('.').to_string(),
                ));
            }
        }
    }
    services.sort();
    assert_eq!(
        services,
        [
            "bucket.v1alpha1.BucketRuntime",
            "machine.v1alpha1.MachineRuntime",
            "volume.v1alpha1.VolumeRuntime",
        ]
    );
    // Order the services as the reference does (machine, volume, bucket); methods keep their
    // declaration order within each service.
    let rank = |path: &str| {
        ["/machine.", "/volume.", "/bucket."]
            .iter()
            .position(|p| path.starts_with(p))
            .unwrap()
    };
    got.sort_by_key(|(path, _, _)| rank(path));
    let want: Vec<(String, String, String)> = RPCS
        .iter()
        .map(|(p, i, o)| ((*p).to_string(), (*i).to_string(), (*o).to_string()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 30);
    assert_eq!(
        RPCS.iter().filter(|r| r.0.starts_with("/machine.")).count(),
        14
    );
    assert_eq!(
        RPCS.iter().filter(|r| r.0.starts_with("/volume.")).count(),
        10
    );
    assert_eq!(
        RPCS.iter().filter(|r| r.0.starts_with("/bucket.")).count(),
        6
    );
}

#[test]
fn descriptor_packages_files_and_imports_match_the_reference() {
    let set = descriptor();
    let mut files: Vec<(String, String, Vec<String>, String)> = set
        .file
        .iter()
        .map(|f| {
            let mut deps = f.dependency.clone();
            deps.sort();
            (
                f.name().to_string(),
                f.package().to_string(),
                deps,
                f.syntax().to_string(),
            )
        })
        .collect();
    files.sort();
    let both = || {
        vec![
            "event/v1alpha1/api.proto".to_string(),
            "meta/v1alpha1/api.proto".to_string(),
        ]
    };
    let want = vec![
        (
            "bucket/v1alpha1/api.proto".into(),
            "bucket.v1alpha1".into(),
            both(),
            "proto3".into(),
        ),
        (
            "event/v1alpha1/api.proto".into(),
            "event.v1alpha1".into(),
            vec!["meta/v1alpha1/api.proto".into()],
            "proto3".into(),
        ),
        (
            "machine/v1alpha1/api.proto".into(),
            "machine.v1alpha1".into(),
            both(),
            "proto3".into(),
        ),
        (
            "meta/v1alpha1/api.proto".into(),
            "meta.v1alpha1".into(),
            vec![],
            "proto3".into(),
        ),
        (
            "volume/v1alpha1/api.proto".into(),
            "volume.v1alpha1".into(),
            both(),
            "proto3".into(),
        ),
    ];
    assert_eq!(files, want);
    // No `optional` / `oneof` anywhere (§1.1).
    for file in &set.file {
        for m in &file.message_type {
            assert!(m.oneof_decl.is_empty(), "{} has a oneof", m.name());
            assert!(
                m.field.iter().all(|f| !f.proto3_optional()),
                "{} has an optional field",
                m.name()
            );
        }
    }
}

#[test]
fn volume_spec_reserves_field_1_and_the_name_image() {
    let spec = message("volume.v1alpha1.VolumeSpec");
    let ranges: Vec<(i32, i32)> = spec
        .reserved_range
        .iter()
        .map(|r| (r.start(), r.end()))
        .collect();
    // Descriptor reserved ranges are end-exclusive: `reserved 1;` is [1, 2).
    assert_eq!(ranges, [(1, 2)]);
    assert_eq!(spec.reserved_name, ["image"]);
    assert_eq!(field_numbers("volume.v1alpha1.VolumeSpec"), [2, 3, 4, 5]);
}

#[test]
fn machine_volume_has_no_field_3() {
    let volume = message("machine.v1alpha1.Volume");
    assert_eq!(field_numbers("machine.v1alpha1.Volume"), [1, 2, 4, 5]);
    // Unused, but not reserved either (reference §1.4).
    assert!(volume.reserved_range.is_empty());
    assert!(volume.reserved_name.is_empty());
}

#[test]
fn event_has_only_field_2() {
    let event = message("event.v1alpha1.Event");
    assert_eq!(field_numbers("event.v1alpha1.Event"), [2]);
    assert_eq!(event.field[0].name(), "spec");
    assert_eq!(event.field[0].type_name(), ".event.v1alpha1.EventSpec");
}

#[test]
fn bucket_spec_has_only_field_2() {
    let spec = message("bucket.v1alpha1.BucketSpec");
    assert_eq!(field_numbers("bucket.v1alpha1.BucketSpec"), [2]);
    assert_eq!(spec.field[0].name(), "class");
}

#[test]
fn machine_spec_uses_the_post_c6a8ace3_numbering() {
    // The 2025-11 wire break: image removed, class 3→2, ignition_data 4→3, volumes 5→4,
    // network_interfaces 6→5; guest_config = 6 added later.
    let names: Vec<(i32, String)> = message("machine.v1alpha1.MachineSpec")
        .field
        .iter()
        .map(|f| (f.number(), f.name().to_string()))
        .collect();
    let want: Vec<(i32, String)> = [
        (1, "power"),
        (2, "class"),
        (3, "ignition_data"),
        (4, "volumes"),
        (5, "network_interfaces"),
        (6, "guest_config"),
    ]
    .iter()
    .map(|(n, s)| (*n, (*s).to_string()))
    .collect();
    assert_eq!(names, want);
}
