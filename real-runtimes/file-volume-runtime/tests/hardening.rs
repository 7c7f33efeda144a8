//! Hostile tenants and clients (issue 17): a raw volume holding a qcow2 header whose backing
//! file is a host secret is snapshotted and restored without ever reading the secret; sizes no
//! filesystem can hold are OutOfRange before anything is written; files are private.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use common::{Runtime, contains, handle, id, qemu_img_or_skip, restore_spec, spec, write_at_start};
use iri_spec::volume::v1alpha1 as volume;
use tonic::Code;

/// The id of a created snapshot.
fn id_of(snapshot: Result<volume::VolumeSnapshot, tonic::Status>) -> String {
    snapshot.unwrap().metadata.unwrap().id
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
    write_at_start(&handle(&v), &header);

    let snap = id_of(rt.snapshot(&id(&v)).await);
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
    for class in common::classes() {
        for size in [1i64 << 62, i64::MAX] {
            let err = rt.create(spec(class, size)).await.unwrap_err();
            assert_eq!(err.code(), Code::OutOfRange, "{class} {size}: {err:?}");
        }
        assert_eq!(std::fs::read_dir(&volumes).unwrap().count(), 0);
        let v = rt.create(spec(class, 1 << 20)).await.unwrap();
        let err = rt.expand(&id(&v), 1 << 62).await.unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{class}: {err:?}");
        assert_eq!(common::spec_bytes(&rt.list(&id(&v)).await[0]), 1 << 20);
        rt.delete(&id(&v)).await.unwrap();
    }
}

/// Volume and snapshot files are 0600 in 0700 directories.
#[tokio::test]
async fn volume_and_snapshot_files_are_private() {
    let mut rt = Runtime::start().await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for class in common::classes() {
        let v = rt.create(spec(class, 1 << 20)).await.unwrap();
        let snap = id_of(rt.snapshot(&id(&v)).await);
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
    write_at_start(&handle(&v), b"TENANT-DATA");
    let snap = id_of(rt.snapshot(&id(&v)).await);
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
    let snapshot =
        tokio::spawn(async move { common::snapshot(&mut snapshotter, &source_id).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let quick = std::time::Instant::now();
    rt.list(&source).await;
    let other = rt.create(spec("std", 1 << 20)).await.unwrap();
    let delete = rt.delete(&source).await.unwrap_err();
    let expand = rt.expand(&source, 2 << 20).await.unwrap_err();
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
    rt.delete(&source).await.unwrap();
    rt.delete(&id(&other)).await.unwrap();
}
