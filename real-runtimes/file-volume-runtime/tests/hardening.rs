//! Hostile tenants and clients (issue 17): a raw volume holding a qcow2 header whose backing
//! file is a host secret is snapshotted and restored without ever reading the secret; sizes no
//! filesystem can hold are OutOfRange before anything is written; files are private.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    os::unix::fs::{FileExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use common::{Runtime, has_qemu_img, required};
use iri_spec::volume::v1alpha1 as volume;
use tonic::Code;

fn spec(class: &str, size: i64) -> volume::VolumeSpec {
    volume::VolumeSpec {
        class: class.into(),
        resources: Some(volume::VolumeResources {
            storage_bytes: size,
        }),
        ..Default::default()
    }
}

fn handle(v: &volume::Volume) -> PathBuf {
    PathBuf::from(&v.status.as_ref().unwrap().access.as_ref().unwrap().handle)
}

fn id(v: &volume::Volume) -> String {
    v.metadata.as_ref().unwrap().id.clone()
}

fn qemu_img_or_skip() -> bool {
    if has_qemu_img() {
        return true;
    }
    assert!(
        !required("qemu-img"),
        "qemu-img is required (IRIKIT_REQUIRE) but missing"
    );
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("skip: qemu-img is not installed\n"),
    );
    false
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn snapshot(rt: &mut Runtime, volume_id: &str) -> String {
    rt.client
        .create_volume_snapshot(volume::CreateVolumeSnapshotRequest {
            volume_snapshot: Some(volume::VolumeSnapshot {
                metadata: None,
                spec: Some(volume::VolumeSnapshotSpec {
                    volume_id: volume_id.to_owned(),
                }),
                status: None,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .volume_snapshot
        .unwrap()
        .metadata
        .unwrap()
        .id
}

fn restore_spec(class: &str, size: i64, snapshot_id: &str) -> volume::VolumeSpec {
    volume::VolumeSpec {
        volume_data_source: Some(volume::VolumeDataSource {
            image_data_source: None,
            snapshot_data_source: Some(volume::SnapshotDataSource {
                snapshot_id: snapshot_id.to_owned(),
            }),
        }),
        ..spec(class, size)
    }
}

/// The guest data of a volume file as raw bytes (qcow2 decoded by qemu-img with its format
/// given, so nothing is probed here either).
fn guest_bytes(path: &Path, format: &str, dir: &Path) -> Vec<u8> {
    if format == "raw" {
        return std::fs::read(path).unwrap();
    }
    let out = dir.join("decoded.raw");
    let _ = std::fs::remove_file(&out);
    let ok = Command::new("qemu-img")
        .args(["convert", "-q", "-f", format, "-O", "raw"])
        .arg(path)
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "qemu-img convert {}", path.display());
    std::fs::read(&out).unwrap()
}

/// A tenant writes a qcow2 header naming a host secret as backing file into its raw volume;
/// snapshot and restore (into raw and into qcow2) copy the tenant's bytes verbatim and never
/// the secret.
#[tokio::test]
async fn snapshot_restore_never_reads_a_backing_file_named_by_tenant_data() {
    if !qemu_img_or_skip() {
        return;
    }
    let mut rt = Runtime::start().await;
    let secret_marker = b"HOST-SECRET-7f3a9c";
    let secret = rt.dir.path().join("secret");
    std::fs::write(&secret, secret_marker.repeat(4096)).unwrap();
    let header_file = rt.dir.path().join("hostile.qcow2");
    assert!(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&secret)
            .arg(&header_file)
            .arg("8M")
            .status()
            .unwrap()
            .success()
    );
    let header = std::fs::read(&header_file).unwrap();

    let v = rt.create(spec("std", 8 << 20)).await.unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(handle(&v))
        .unwrap();
    file.write_all_at(&header, 0).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let snap = snapshot(&mut rt, &id(&v)).await;
    for (class, format) in [("std", "raw"), ("q", "qcow2")] {
        let restored = rt
            .create(restore_spec(class, 8 << 20, &snap))
            .await
            .unwrap();
        let bytes = guest_bytes(&handle(&restored), format, rt.dir.path());
        assert!(
            !contains(&bytes, secret_marker),
            "{format} restore holds the host secret"
        );
        assert_eq!(
            &bytes[..header.len()],
            &header[..],
            "{format} restore lost the tenant's bytes"
        );
    }
}

/// Sizes beyond what the root's filesystem can hold: OutOfRange, and nothing is written.
#[tokio::test]
async fn impossible_sizes_are_out_of_range() {
    let mut rt = Runtime::start().await;
    let volumes = rt.dir.path().join("root/volumes");
    let classes: &[&str] = if has_qemu_img() {
        &["std", "q"]
    } else {
        &["std"]
    };
    for class in classes {
        for size in [1i64 << 62, i64::MAX] {
            let err = rt.create(spec(class, size)).await.unwrap_err();
            assert_eq!(err.code(), Code::OutOfRange, "{class} {size}: {err:?}");
        }
        assert_eq!(std::fs::read_dir(&volumes).unwrap().count(), 0);
        let v = rt.create(spec(class, 1 << 20)).await.unwrap();
        let err = rt
            .client
            .expand_volume(volume::ExpandVolumeRequest {
                volume_id: id(&v),
                resources: Some(volume::VolumeResources {
                    storage_bytes: 1 << 62,
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{class}: {err:?}");
        assert_eq!(
            rt.list(&id(&v)).await[0]
                .spec
                .as_ref()
                .unwrap()
                .resources
                .unwrap()
                .storage_bytes,
            1 << 20
        );
        rt.client
            .delete_volume(volume::DeleteVolumeRequest { volume_id: id(&v) })
            .await
            .unwrap();
    }
}

/// Volume and snapshot files are 0600 in 0700 directories.
#[tokio::test]
async fn volume_and_snapshot_files_are_private() {
    let mut rt = Runtime::start().await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut classes = vec!["std"];
    if has_qemu_img() {
        classes.push("q");
    }
    for class in classes {
        let v = rt.create(spec(class, 1 << 20)).await.unwrap();
        let snap = snapshot(&mut rt, &id(&v)).await;
        let restored = rt
            .create(restore_spec(class, 1 << 20, &snap))
            .await
            .unwrap();
        for path in [handle(&v), handle(&restored)] {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        for entry in std::fs::read_dir(rt.dir.path().join("root/snapshots")).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    for dir in ["root", "root/volumes", "root/snapshots", "root/state"] {
        assert_eq!(mode(&rt.dir.path().join(dir)), 0o700, "{dir}");
    }
}

/// Moving `--root` (the whole tree, e.g. to another mount point) keeps every volume and
/// snapshot: the records are re-based onto the new root instead of their files being taken
/// for orphans and deleted.
#[tokio::test]
async fn moving_the_root_keeps_every_volume() {
    let mut rt = Runtime::start().await;
    let v = rt.create(spec("std", 1 << 20)).await.unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(handle(&v))
        .unwrap()
        .write_all_at(b"TENANT-DATA", 0)
        .unwrap();
    let snap = snapshot(&mut rt, &id(&v)).await;
    let old = rt.kill9();
    let new = tempfile::tempdir().unwrap();
    std::fs::rename(old.path().join("root"), new.path().join("root")).unwrap();

    let mut rt = Runtime::start_in(new).await;
    let listed = rt.list(&id(&v)).await;
    assert_eq!(listed.len(), 1, "volume lost after moving the root");
    let path = handle(&listed[0]);
    assert!(path.starts_with(rt.dir.path()), "{}", path.display());
    assert!(std::fs::read(&path).unwrap().starts_with(b"TENANT-DATA"));
    let restored = rt
        .create(restore_spec("std", 1 << 20, &snap))
        .await
        .unwrap();
    assert!(
        std::fs::read(handle(&restored))
            .unwrap()
            .starts_with(b"TENANT-DATA")
    );
}

/// A long copy (here a snapshot whose `qemu-img convert` takes 3 s) holds no lock: other calls
/// answer meanwhile, while the copy's source is pinned (delete and expand of it answer
/// FailedPrecondition until the copy is done). One global lock used to stall every call for
/// as long as any copy ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_copy_stalls_no_other_call_and_pins_its_source() {
    if !qemu_img_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow-qemu-img");
    std::fs::write(
        &slow,
        "#!/bin/sh\ncase \"$1\" in convert) sleep 3;; esac\nexec qemu-img \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut rt = Runtime::start_with(dir, &["--qemu-img".into(), slow.display().to_string()]).await;
    let source = id(&rt.create(spec("q", 1 << 20)).await.unwrap());

    let mut snapshotter = rt.client.clone();
    let source_id = source.clone();
    let started = std::time::Instant::now();
    let snapshot = tokio::spawn(async move {
        snapshotter
            .create_volume_snapshot(volume::CreateVolumeSnapshotRequest {
                volume_snapshot: Some(volume::VolumeSnapshot {
                    metadata: None,
                    spec: Some(volume::VolumeSnapshotSpec {
                        volume_id: source_id,
                    }),
                    status: None,
                }),
            })
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let quick = std::time::Instant::now();
    rt.list(&source).await;
    let other = rt.create(spec("std", 1 << 20)).await.unwrap();
    let delete = rt
        .client
        .delete_volume(volume::DeleteVolumeRequest {
            volume_id: source.clone(),
        })
        .await
        .unwrap_err();
    let expand = rt
        .client
        .expand_volume(volume::ExpandVolumeRequest {
            volume_id: source.clone(),
            resources: Some(volume::VolumeResources {
                storage_bytes: 2 << 20,
            }),
        })
        .await
        .unwrap_err();
    let meanwhile = quick.elapsed();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the calls during the copy finished after it: {:?}",
        started.elapsed()
    );
    assert!(
        meanwhile < std::time::Duration::from_millis(1500),
        "{meanwhile:?}"
    );
    assert_eq!(delete.code(), Code::FailedPrecondition, "{delete:?}");
    assert_eq!(expand.code(), Code::FailedPrecondition, "{expand:?}");

    snapshot.await.unwrap().unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    rt.client
        .delete_volume(volume::DeleteVolumeRequest { volume_id: source })
        .await
        .unwrap();
    rt.client
        .delete_volume(volume::DeleteVolumeRequest {
            volume_id: id(&other),
        })
        .await
        .unwrap();
}
