//! Shared harness for the file-volume-runtime tests: the runtime as a child process on a unix
//! socket in a temp dir (classes `std` raw and, where `qemu-img` runs, `q` qcow2).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use iri_spec::volume::v1alpha1::{self as volume, volume_runtime_client::VolumeRuntimeClient};
use tonic::transport::Channel;

pub type Client = VolumeRuntimeClient<Channel>;

pub struct Runtime {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub client: Client,
    pub socket: PathBuf,
}

pub fn required(component: &str) -> bool {
    std::env::var("IRIKIT_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|c| c.trim() == component)
}

pub fn has_qemu_img() -> bool {
    Command::new("qemu-img")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `qemu-img` runs; else one skip line (a failure when `IRIKIT_REQUIRE` names it).
pub fn qemu_img_or_skip() -> bool {
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

/// The classes of [`Runtime`]: `std` (raw) and, where `qemu-img` runs, `q` (qcow2).
pub fn classes() -> Vec<&'static str> {
    if has_qemu_img() {
        vec!["std", "q"]
    } else {
        vec!["std"]
    }
}

/// An empty volume of `class` and `size` bytes.
pub fn spec(class: &str, size: i64) -> volume::VolumeSpec {
    volume::VolumeSpec {
        class: class.into(),
        resources: Some(volume::VolumeResources {
            storage_bytes: size,
        }),
        ..Default::default()
    }
}

/// A `std` volume of `size` bytes from `image` (amd64).
pub fn with_image(size: i64, image: &str) -> volume::VolumeSpec {
    volume::VolumeSpec {
        volume_data_source: Some(volume::VolumeDataSource {
            image_data_source: Some(volume::ImageDataSource {
                image: image.into(),
                architecture: "amd64".into(),
            }),
            snapshot_data_source: None,
        }),
        ..spec("std", size)
    }
}

/// A volume of `class` and `size` bytes restored from snapshot `snapshot_id`.
pub fn restore_spec(class: &str, size: i64, snapshot_id: &str) -> volume::VolumeSpec {
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

/// The volume's file (its access handle).
pub fn handle(v: &volume::Volume) -> PathBuf {
    PathBuf::from(&v.status.as_ref().unwrap().access.as_ref().unwrap().handle)
}

/// The volume's id.
pub fn id(v: &volume::Volume) -> String {
    v.metadata.as_ref().unwrap().id.clone()
}

/// The spec's storage bytes of the volume.
pub fn spec_bytes(v: &volume::Volume) -> i64 {
    v.spec.as_ref().unwrap().resources.unwrap().storage_bytes
}

/// Whether `haystack` holds `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Write `bytes` at offset 0 of `path` (a tenant writing its volume) and sync.
pub fn write_at_start(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, 0).unwrap();
    file.sync_all().unwrap();
}

impl Runtime {
    pub async fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_with(dir, &[]).await
    }

    /// [`Runtime::start_in`] with `extra` flags.
    pub async fn start_with(dir: tempfile::TempDir, extra: &[String]) -> Self {
        let socket = dir.path().join("volume.sock");
        let _ = std::fs::remove_file(&socket);
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        let mut args: Vec<String> = vec![
            "--socket".into(),
            socket.display().to_string(),
            "--root".into(),
            dir.path().join("root").display().to_string(),
            "--image-dir".into(),
            dir.path().join("images").display().to_string(),
            "--volume-class".into(),
            "std,1000,100".into(),
        ];
        if has_qemu_img() {
            args.push("--volume-class".into());
            args.push("q,2000,200,qcow2".into());
        }
        args.extend(extra.iter().cloned());
        let child = Command::new(env!("CARGO_BIN_EXE_file-volume-runtime"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "runtime socket did not appear");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The socket file appears at bind(), before listen(): retry a refused connect.
        let endpoint = iri_spec::endpoint::Endpoint::unix(&socket);
        let channel = loop {
            match iri_spec::endpoint::connect(&endpoint).await {
                Ok(channel) => break channel,
                Err(e) => {
                    assert!(Instant::now() < deadline, "runtime did not accept: {e}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        Self {
            dir,
            child,
            client: Client::new(channel),
            socket,
        }
    }

    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// CreateVolume; checks the response is PENDING (an accepted request) and returns the
    /// volume as the next ListVolumes reports it.
    pub async fn create(
        &mut self,
        spec: volume::VolumeSpec,
    ) -> Result<volume::Volume, tonic::Status> {
        let created = self
            .client
            .create_volume(volume::CreateVolumeRequest {
                volume: Some(volume::Volume {
                    metadata: Some(iri_spec::meta::v1alpha1::ObjectMetadata {
                        labels: HashMap::from([("k".into(), "v".into())]),
                        ..Default::default()
                    }),
                    spec: Some(spec),
                    status: None,
                }),
            })
            .await?
            .into_inner()
            .volume
            .unwrap();
        assert_eq!(
            created.status.as_ref().unwrap().state,
            volume::VolumeState::VolumePending as i32
        );
        let id = created.metadata.as_ref().unwrap().id.clone();
        Ok(self.list(&id).await.pop().expect("created volume listed"))
    }

    /// CreateVolumeSnapshot of `volume_id`.
    pub async fn snapshot(
        &mut self,
        volume_id: &str,
    ) -> Result<volume::VolumeSnapshot, tonic::Status> {
        snapshot(&mut self.client, volume_id).await
    }

    /// ExpandVolume of `volume_id` to `bytes`.
    pub async fn expand(&mut self, volume_id: &str, bytes: i64) -> Result<(), tonic::Status> {
        self.client
            .expand_volume(volume::ExpandVolumeRequest {
                volume_id: volume_id.to_owned(),
                resources: Some(volume::VolumeResources {
                    storage_bytes: bytes,
                }),
            })
            .await
            .map(drop)
    }

    /// DeleteVolume.
    pub async fn delete(&mut self, volume_id: &str) -> Result<(), tonic::Status> {
        self.client
            .delete_volume(volume::DeleteVolumeRequest {
                volume_id: volume_id.to_owned(),
            })
            .await
            .map(drop)
    }

    /// DeleteVolumeSnapshot.
    pub async fn delete_snapshot(&mut self, snapshot_id: &str) -> Result<(), tonic::Status> {
        self.client
            .delete_volume_snapshot(volume::DeleteVolumeSnapshotRequest {
                volume_snapshot_id: snapshot_id.to_owned(),
            })
            .await
            .map(drop)
    }

    pub async fn list(&mut self, id: &str) -> Vec<volume::Volume> {
        self.client
            .list_volumes(volume::ListVolumesRequest {
                filter: Some(volume::VolumeFilter {
                    id: id.into(),
                    label_selector: HashMap::new(),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .volumes
    }
}

/// CreateVolumeSnapshot of `volume_id` through `client`.
pub async fn snapshot(
    client: &mut Client,
    volume_id: &str,
) -> Result<volume::VolumeSnapshot, tonic::Status> {
    Ok(client
        .create_volume_snapshot(volume::CreateVolumeSnapshotRequest {
            volume_snapshot: Some(volume::VolumeSnapshot {
                metadata: None,
                spec: Some(volume::VolumeSnapshotSpec {
                    volume_id: volume_id.to_owned(),
                }),
                status: None,
            }),
        })
        .await?
        .into_inner()
        .volume_snapshot
        .unwrap())
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
