//! File-backed IRI VolumeRuntime: every volume is a sparse raw file (or a qcow2 file made by
//! `qemu-img`) under one root directory, handed to machine runtimes as
//! `{driver: "local-file", handle: <absolute path>}`.
//!
//! Ids are generated here and are the only thing that names files, so nothing a client sends
//! can escape the root; image data sources must resolve (canonically) inside `--image-dir`.
//! State is one JSON file per volume and per snapshot, written atomically, and reloaded at
//! start. Capacity (`Status.quantity`) is the root filesystem's free space in bytes, rounded
//! down to whole GiB.

pub mod error;
#[path = "../../shared/events.rs"]
mod events;
mod files;
mod grpc;
#[path = "../../shared/private_file.rs"]
mod private_file;
#[path = "../../shared/qcow2.rs"]
mod qcow2;
pub mod service;
pub mod store;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Deserialize;

/// A disk file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Sparse raw file.
    Raw,
    /// qcow2 via `qemu-img`.
    Qcow2,
}

impl Format {
    /// The format of an operator-provided image (from `--image-dir`): qcow2 when it starts
    /// with the qcow2 magic. Tenant-writable files (volumes, snapshots) are never sniffed: their
    /// format is the one recorded when this runtime made them.
    pub fn of_operator_image(path: &Path) -> std::io::Result<Self> {
        qcow2::sniff_operator_image(path, Self::Qcow2, Self::Raw)
    }

    /// The name used in attributes and file extensions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

/// A volume class: IRI capabilities plus the file format volumes of this class get.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VolumeClass {
    /// The class name.
    pub name: String,
    /// Throughput capability (bytes/s), reported as given.
    pub tps: i64,
    /// IOPS capability, reported as given.
    pub iops: i64,
    /// File format (default: the runtime's `--format`).
    #[serde(default)]
    pub format: Option<Format>,
}

impl std::str::FromStr for VolumeClass {
    type Err = anyhow::Error;

    /// `name,tps,iops[,raw|qcow2]`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        anyhow::ensure!(
            (3..=4).contains(&parts.len()) && !parts[0].is_empty(),
            "volume class {s:?}: expected name,tps,iops[,raw|qcow2]"
        );
        let format = match parts.get(3) {
            None => None,
            Some(&"raw") => Some(Format::Raw),
            Some(&"qcow2") => Some(Format::Qcow2),
            Some(other) => anyhow::bail!("volume class {s:?}: unknown format {other:?}"),
        };
        let tps: i64 = parts[1]
            .parse()
            .with_context(|| format!("volume class {s:?}: tps"))?;
        let iops: i64 = parts[2]
            .parse()
            .with_context(|| format!("volume class {s:?}: iops"))?;
        anyhow::ensure!(
            tps >= 0 && iops >= 0,
            "volume class {s:?}: tps and iops must be >= 0"
        );
        Ok(Self {
            name: parts[0].to_owned(),
            tps,
            iops,
            format,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClassFile {
    volume_classes: Vec<VolumeClass>,
}

/// Read `volumeClasses: [{name, tps, iops, format?}]` from a YAML file.
pub fn read_class_file(path: &Path) -> anyhow::Result<Vec<VolumeClass>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let file: ClassFile =
        serde_yaml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    Ok(file.volume_classes)
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root directory (canonical): `volumes/`, `snapshots/`, `state/` live below it.
    pub root: PathBuf,
    /// Volume classes.
    pub classes: Vec<VolumeClass>,
    /// Default file format.
    pub format: Format,
    /// Directories image data sources may come from (canonical).
    pub image_dirs: Vec<PathBuf>,
    /// The `qemu-img` binary, if one was found.
    pub qemu_img: Option<PathBuf>,
    /// The largest volume (`None`: the size of the root's filesystem).
    pub max_volume_bytes: Option<u64>,
}

impl Config {
    /// Check classes and formats, create and canonicalize the root.
    pub fn validate(mut self) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !self.classes.is_empty(),
            "no volume classes configured: pass --volume-class or --volume-class-file"
        );
        let mut seen = std::collections::HashSet::new();
        for class in &self.classes {
            anyhow::ensure!(
                seen.insert(&class.name),
                "volume class {:?} is defined twice",
                class.name
            );
            if class.format.unwrap_or(self.format) == Format::Qcow2 {
                anyhow::ensure!(
                    self.qemu_img.is_some(),
                    "volume class {:?} wants qcow2 but qemu-img was not found",
                    class.name
                );
            }
        }
        for sub in ["volumes", "snapshots", "state/volumes", "state/snapshots"] {
            let dir = self.root.join(sub);
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        }
        self.root = std::fs::canonicalize(&self.root)
            .with_context(|| format!("canonicalize {}", self.root.display()))?;
        // Tenant data and state are private to the runtime's user (the VMMs run as it too).
        for sub in ["", "volumes", "snapshots", "state"] {
            let dir = self.root.join(sub);
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("chmod 0700 {}", dir.display()))?;
        }
        self.image_dirs = self
            .image_dirs
            .iter()
            .map(|d| std::fs::canonicalize(d).with_context(|| format!("image dir {}", d.display())))
            .collect::<anyhow::Result<_>>()?;
        Ok(self)
    }
}

pub use qcow2::check_plain_qcow2;

/// Find `qemu-img` on `PATH`.
pub fn find_qemu_img() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-img"))
        .find(|p| p.is_file())
}

/// Serve the VolumeRuntime on `socket` until `token` is cancelled.
pub async fn serve(
    cfg: Config,
    socket: &Path,
    token: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use iri_spec::volume::v1alpha1::volume_runtime_server::VolumeRuntimeServer;
    let service = service::VolumeService::start(cfg).context("load volume state")?;
    if let Some(parent) = socket.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let listener = iri_spec::serve::bind_unix(socket)?;
    tracing::info!(socket = %socket.display(), "serving VolumeRuntime");
    // Any :authority a gRPC client stack sends on a unix socket is accepted (issue 13).
    let incoming = iri_spec::serve::incoming(listener, iri_spec::serve::AuthorityPolicy::Any);
    let res = iri_spec::serve::builder()
        .add_service(VolumeRuntimeServer::new(service))
        .serve_with_incoming_shutdown(incoming, token.cancelled())
        .await
        .context("serve grpc");
    let _ = std::fs::remove_file(socket);
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("fast,100,200", Some(("fast", 100, 200, None)))]
    #[case("q,1,2,qcow2", Some(("q", 1, 2, Some(Format::Qcow2))))]
    #[case("r,1,2,raw", Some(("r", 1, 2, Some(Format::Raw))))]
    #[case("x,1", None)]
    #[case(",1,2", None)]
    #[case("x,-1,2", None)]
    #[case("x,1,2,vhdx", None)]
    fn parses_classes(#[case] input: &str, #[case] want: Option<(&str, i64, i64, Option<Format>)>) {
        let got = input.parse::<VolumeClass>().ok();
        assert_eq!(
            got.map(|c| (c.name, c.tps, c.iops, c.format)),
            want.map(|(n, t, i, f)| (n.to_owned(), t, i, f))
        );
    }
}
