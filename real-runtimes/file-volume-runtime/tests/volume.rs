//! The file-volume-runtime binary over gRPC: contract codes, confinement, expand, snapshots,
//! qcow2 through qemu-img, and recovery after kill -9.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashMap, process::Command};

use common::{Runtime, handle, id, qemu_img_or_skip, restore_spec, spec, with_image};
use iri_spec::volume::v1alpha1 as volume;
use rstest::rstest;
use tonic::Code;

#[derive(Debug, Clone, Copy)]
enum Call {
    CreateNoVolume,
    CreateNoSpec,
    CreateUnknownClass,
    CreateZeroSize,
    CreateNegativeSize,
    CreateImageOutside,
    CreateImageDotDot,
    CreateImageNul,
    CreateImageMissing,
    CreateBothSources,
    CreateUnknownSnapshot,
    CreateEncrypted,
    ExpandUnknown,
    ExpandShrink,
    ExpandEmptyId,
    DeleteUnknown,
    SnapshotUnknownVolume,
    SnapshotNoSpec,
    DeleteSnapshotUnknown,
}

async fn check(call: Call, want: Code) {
    let mut rt = Runtime::start().await;
    let outside = rt.dir.path().join("outside.img");
    std::fs::write(&outside, b"x").unwrap();
    let live = rt.create(spec("std", 1 << 20)).await.unwrap();
    let res: Result<(), tonic::Status> = match call {
        Call::CreateNoVolume => rt
            .client
            .create_volume(volume::CreateVolumeRequest { volume: None })
            .await
            .map(drop),
        Call::CreateNoSpec => rt
            .client
            .create_volume(volume::CreateVolumeRequest {
                volume: Some(volume::Volume::default()),
            })
            .await
            .map(drop),
        Call::CreateUnknownClass => rt.create(spec("nope", 1 << 20)).await.map(drop),
        Call::CreateZeroSize => rt.create(spec("std", 0)).await.map(drop),
        Call::CreateNegativeSize => rt.create(spec("std", -1)).await.map(drop),
        Call::CreateImageOutside => rt
            .create(with_image(1 << 20, outside.to_str().unwrap()))
            .await
            .map(drop),
        Call::CreateImageDotDot => rt
            .create(with_image(1 << 20, "../outside.img"))
            .await
            .map(drop),
        Call::CreateImageNul => rt.create(with_image(1 << 20, "a\0b")).await.map(drop),
        Call::CreateImageMissing => rt
            .create(with_image(1 << 20, "missing.img"))
            .await
            .map(drop),
        Call::CreateBothSources => {
            let mut s = with_image(1 << 20, "x.img");
            s.volume_data_source.as_mut().unwrap().snapshot_data_source =
                Some(volume::SnapshotDataSource {
                    snapshot_id: "s".into(),
                });
            rt.create(s).await.map(drop)
        }
        Call::CreateUnknownSnapshot => rt
            .create(restore_spec("std", 1 << 20, "nope"))
            .await
            .map(drop),
        Call::CreateEncrypted => {
            let mut s = spec("std", 1 << 20);
            s.encryption = Some(volume::EncryptionSpec {
                secret_data: HashMap::from([("key".into(), b"secret".to_vec())]),
            });
            rt.create(s).await.map(drop)
        }
        Call::ExpandUnknown => rt.expand("nope", 1 << 30).await,
        Call::ExpandShrink => rt.expand(&id(&live), 1).await,
        Call::ExpandEmptyId => rt
            .client
            .expand_volume(volume::ExpandVolumeRequest::default())
            .await
            .map(drop),
        Call::DeleteUnknown => rt.delete("nope").await,
        Call::SnapshotUnknownVolume => rt.snapshot("nope").await.map(drop),
        Call::SnapshotNoSpec => rt
            .client
            .create_volume_snapshot(volume::CreateVolumeSnapshotRequest {
                volume_snapshot: Some(volume::VolumeSnapshot::default()),
            })
            .await
            .map(drop),
        Call::DeleteSnapshotUnknown => rt.delete_snapshot("nope").await,
    };
    assert_eq!(res.err().map_or(Code::Ok, |s| s.code()), want, "{call:?}");
    // Nothing escaped the root: only our own files exist outside it.
    assert_eq!(std::fs::read(&outside).unwrap(), b"x");
}

#[rstest]
#[case::create_no_volume(Call::CreateNoVolume, Code::InvalidArgument)]
#[case::create_no_spec(Call::CreateNoSpec, Code::InvalidArgument)]
#[case::create_unknown_class(Call::CreateUnknownClass, Code::InvalidArgument)]
#[case::create_zero_size(Call::CreateZeroSize, Code::InvalidArgument)]
#[case::create_negative_size(Call::CreateNegativeSize, Code::InvalidArgument)]
#[case::create_image_outside(Call::CreateImageOutside, Code::InvalidArgument)]
#[case::create_image_dot_dot(Call::CreateImageDotDot, Code::InvalidArgument)]
#[case::create_image_nul(Call::CreateImageNul, Code::InvalidArgument)]
#[case::create_image_missing(Call::CreateImageMissing, Code::InvalidArgument)]
#[case::create_both_sources(Call::CreateBothSources, Code::InvalidArgument)]
#[case::create_unknown_snapshot(Call::CreateUnknownSnapshot, Code::NotFound)]
#[case::create_encrypted(Call::CreateEncrypted, Code::InvalidArgument)]
#[case::expand_unknown(Call::ExpandUnknown, Code::NotFound)]
#[case::expand_shrink(Call::ExpandShrink, Code::InvalidArgument)]
#[case::expand_empty_id(Call::ExpandEmptyId, Code::InvalidArgument)]
#[case::delete_unknown(Call::DeleteUnknown, Code::NotFound)]
#[case::snapshot_unknown_volume(Call::SnapshotUnknownVolume, Code::NotFound)]
#[case::snapshot_no_spec(Call::SnapshotNoSpec, Code::InvalidArgument)]
#[case::delete_snapshot_unknown(Call::DeleteSnapshotUnknown, Code::NotFound)]
#[tokio::test]
async fn error_codes(#[case] call: Call, #[case] want: Code) {
    check(call, want).await;
}

#[tokio::test]
async fn create_expand_snapshot_restore_delete() {
    let mut rt = Runtime::start().await;
    let v = rt.create(spec("std", 4 << 20)).await.unwrap();
    let path = handle(&v);
    let root = std::fs::canonicalize(rt.dir.path().join("root")).unwrap();
    assert!(path.starts_with(&root), "{} outside root", path.display());
    let status = v.status.as_ref().unwrap();
    assert_eq!(status.state, volume::VolumeState::VolumeAvailable as i32);
    assert_eq!(status.resources.as_ref().unwrap().storage_bytes, 4 << 20);
    assert_eq!(status.access.as_ref().unwrap().driver, "local-file");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 << 20);
    // Sparse: nothing allocated yet.
    use std::os::unix::fs::MetadataExt as _;
    assert!(std::fs::metadata(&path).unwrap().blocks() < 64);
    assert_eq!(
        v.metadata
            .as_ref()
            .unwrap()
            .labels
            .get("k")
            .map(String::as_str),
        Some("v")
    );

    // Write data, snapshot it, restore the snapshot into a new volume.
    let mut data = std::fs::read(&path).unwrap();
    data[..5].copy_from_slice(b"hello");
    std::fs::write(&path, &data).unwrap();
    let snap = rt.snapshot(&id(&v)).await.unwrap();
    let snap_status = snap.status.as_ref().unwrap();
    assert_eq!(
        snap_status.state,
        volume::VolumeSnapshotState::VolumeSnapshotReady as i32
    );
    assert_eq!(snap_status.size, 4 << 20);
    let snap_id = snap.metadata.as_ref().unwrap().id.clone();
    let restored = rt
        .create(restore_spec("std", 8 << 20, &snap_id))
        .await
        .unwrap();
    let restored_data = std::fs::read(handle(&restored)).unwrap();
    assert_eq!(&restored_data[..5], b"hello");
    assert_eq!(restored_data.len(), 8 << 20);

    // Expand grows the file; equal is a no-op; shrinking is refused.
    for size in [16 << 20, 16 << 20] {
        rt.expand(&id(&v), size).await.unwrap();
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 << 20);
    let listed = rt.list(&id(&v)).await;
    assert_eq!(common::spec_bytes(&listed[0]), 16 << 20);
    assert_eq!(
        listed[0]
            .status
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .storage_bytes,
        16 << 20
    );
    assert_eq!(&std::fs::read(&path).unwrap()[..5], b"hello");

    // Image data source from the image dir, relative or absolute.
    let image = rt.dir.path().join("images/base.raw");
    std::fs::write(&image, b"IMAGE-BYTES").unwrap();
    let from_image = rt.create(with_image(1 << 20, "base.raw")).await.unwrap();
    let bytes = std::fs::read(handle(&from_image)).unwrap();
    assert_eq!(&bytes[..11], b"IMAGE-BYTES");
    assert_eq!(bytes.len(), 1 << 20);

    // Status: every class, quantity = free bytes of the root filesystem (whole GiB).
    let status = rt
        .client
        .status(volume::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .volume_class_status;
    let std_class = status
        .iter()
        .find(|s| s.volume_class.as_ref().unwrap().name == "std")
        .unwrap();
    assert!(std_class.quantity > 0);
    assert!(
        std_class.quantity < 1 << 30 || std_class.quantity % (1 << 30) == 0,
        "{}",
        std_class.quantity
    );
    let caps = std_class
        .volume_class
        .as_ref()
        .unwrap()
        .capabilities
        .unwrap();
    assert_eq!((caps.tps, caps.iops), (1000, 100));

    // Delete removes the files; events were recorded.
    rt.delete(&id(&v)).await.unwrap();
    assert!(!path.exists());
    assert!(rt.list(&id(&v)).await.is_empty());
    rt.delete_snapshot(&snap_id).await.unwrap();
    let events = rt
        .client
        .list_events(volume::ListEventsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .events;
    let reasons: Vec<&str> = events
        .iter()
        .map(|e| e.spec.as_ref().unwrap().reason.as_str())
        .collect();
    for want in [
        "Created",
        "Expanded",
        "SnapshotCreated",
        "Deleted",
        "SnapshotDeleted",
    ] {
        assert!(reasons.contains(&want), "{want} not in {reasons:?}");
    }
}

#[tokio::test]
async fn state_survives_kill9() {
    let mut rt = Runtime::start().await;
    let keep = rt.create(spec("std", 2 << 20)).await.unwrap();
    let gone = rt.create(spec("std", 2 << 20)).await.unwrap();
    rt.delete(&id(&gone)).await.unwrap();
    let snap = rt.snapshot(&id(&keep)).await.unwrap();
    let dir = rt.kill9();
    // A stray file (e.g. a crash mid-create) is cleaned up at start.
    let stray = dir.path().join("root/volumes/stray.raw");
    std::fs::write(&stray, b"").unwrap();

    let mut rt = Runtime::start_in(dir).await;
    let listed = rt.list("").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].metadata, keep.metadata);
    assert_eq!(listed[0].spec, keep.spec);
    assert_eq!(listed[0].status, keep.status);
    assert!(handle(&keep).exists());
    assert!(!handle(&gone).exists());
    assert!(!stray.exists());
    let snaps = rt
        .client
        .list_volume_snapshots(volume::ListVolumeSnapshotsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .volume_snapshots;
    assert_eq!(snaps, vec![snap]);
}

#[tokio::test]
async fn qcow2_volumes_via_qemu_img() {
    if !qemu_img_or_skip() {
        return;
    }
    let mut rt = Runtime::start().await;
    let v = rt.create(spec("q", 8 << 20)).await.unwrap();
    let path = handle(&v);
    assert_eq!(
        v.status
            .as_ref()
            .unwrap()
            .access
            .as_ref()
            .unwrap()
            .attributes
            .get("format")
            .map(String::as_str),
        Some("qcow2")
    );
    assert_eq!(&std::fs::read(&path).unwrap()[..4], b"QFI\xfb");
    rt.expand(&id(&v), 32 << 20).await.unwrap();
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&path)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["virtual-size"], 32 << 20);
    let snap = rt.snapshot(&id(&v)).await.unwrap();
    assert_eq!(snap.status.unwrap().size, 32 << 20);
    // A raw volume restored from the qcow2 snapshot is converted.
    let snap_id = snap.metadata.unwrap().id;
    let raw = rt
        .create(restore_spec("std", 32 << 20, &snap_id))
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(handle(&raw)).unwrap().len(), 32 << 20);
}
