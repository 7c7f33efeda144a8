//! The IRI `VolumeRuntime` service: volumes and snapshots as files under the root.
//!
//! Every RPC takes one lock over the in-memory state, so file work (copy, `qemu-img`) is
//! serialised; that keeps the on-disk state and the records consistent without a journal.

use std::{
    collections::{HashMap, VecDeque},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use iri_spec::{
    event::v1alpha1 as event,
    meta::v1alpha1 as meta,
    volume::v1alpha1::{self as volume, volume_runtime_server::VolumeRuntime},
};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::{
    Config, Format,
    store::{self, SnapshotRecord, VolumeRecord},
};

mod files;
mod grpc;

use files::{copy_sparse, create_private, file_virtual_size, qcow2_virtual_size};

/// Errors of volume operations; mapped to gRPC codes in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unknown volume or snapshot id.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `volume` or `volume snapshot`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A size beyond what the root's filesystem (or `--max-volume-bytes`) allows.
    #[error("{0}")]
    OutOfRange(String),
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
    /// The object is the source of a copy in progress (a snapshot being taken, a volume being
    /// restored); delete or expand it once the copy has finished.
    #[error("{kind} {id:?} is the source of a copy in progress; try again when it has finished")]
    Busy {
        /// `volume` or `volume snapshot`.
        kind: &'static str,
        /// The id.
        id: String,
    },
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::NotFound { .. } => Status::not_found(message),
            Error::InvalidArgument(_) => Status::invalid_argument(message),
            Error::Busy { .. } => Status::failed_precondition(message),
            Error::OutOfRange(_) => Status::out_of_range(message),
            Error::Io(_) => {
                warn!(error = %message, "volume operation failed");
                Status::internal(message)
            }
        }
    }
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn new_id() -> String {
    loop {
        let id = format!("{:032x}", rand::random::<u128>());
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io(format!("{what}: {e}"))
}

const MAX_EVENTS: usize = 4096;

struct State {
    volumes: HashMap<String, VolumeRecord>,
    snapshots: HashMap<String, SnapshotRecord>,
    events: VecDeque<event::Event>,
    /// Ids of the volumes and snapshots a copy reads from right now. Copies run without the
    /// state lock (one large image copy must not stall every other call); their sources are
    /// pinned here instead, so they are neither deleted nor expanded under the copy.
    copying_from: HashMap<String, usize>,
}

impl State {
    fn pin(&mut self, id: &str) {
        *self.copying_from.entry(id.to_owned()).or_default() += 1;
    }

    fn unpin(&mut self, id: &str) {
        if let Some(n) = self.copying_from.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                self.copying_from.remove(id);
            }
        }
    }

    fn check_not_copying(&self, kind: &'static str, id: &str) -> Result<()> {
        if self.copying_from.contains_key(id) {
            return Err(Error::Busy {
                kind,
                id: id.to_owned(),
            });
        }
        Ok(())
    }
}

/// The service. Cheap to clone.
#[derive(Clone)]
pub struct VolumeService {
    cfg: Arc<Config>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for VolumeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeService")
            .field("root", &self.cfg.root)
            .finish_non_exhaustive()
    }
}

impl VolumeService {
    /// Load the records under `cfg.root`; files of volumes that never got a record (a crash
    /// mid-create) are removed.
    pub fn start(cfg: Config) -> anyhow::Result<Self> {
        let mut volumes: Vec<VolumeRecord> = store::load(&cfg.root.join("state/volumes"))?;
        let mut snapshots: Vec<SnapshotRecord> = store::load(&cfg.root.join("state/snapshots"))?;
        // A record's file is `<root>/<dir>/<its file name>`, whatever root it was written
        // under: after `--root` moved, the files are re-found instead of deleted as orphans.
        let rebase = |path: &mut PathBuf, dir: &str| {
            if let Some(name) = path.file_name() {
                let here = cfg.root.join(dir).join(name);
                if *path != here {
                    info!(from = %path.display(), to = %here.display(), "root moved: re-basing");
                    *path = here;
                }
            }
        };
        for v in &mut volumes {
            rebase(&mut v.path, "volumes");
        }
        for s in &mut snapshots {
            rebase(&mut s.path, "snapshots");
        }
        let volumes: HashMap<_, _> = volumes.into_iter().map(|v| (v.id.clone(), v)).collect();
        let snapshots: HashMap<_, _> = snapshots.into_iter().map(|s| (s.id.clone(), s)).collect();
        for (dir, known) in [
            (
                "volumes",
                volumes.values().map(|v| v.path.clone()).collect::<Vec<_>>(),
            ),
            (
                "snapshots",
                snapshots.values().map(|s| s.path.clone()).collect(),
            ),
        ] {
            for entry in std::fs::read_dir(cfg.root.join(dir))?.flatten() {
                if !known.contains(&entry.path()) {
                    warn!(file = %entry.path().display(), "removing orphaned file");
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        info!(
            volumes = volumes.len(),
            snapshots = snapshots.len(),
            "state loaded"
        );
        Ok(Self {
            cfg: Arc::new(cfg),
            state: Arc::new(Mutex::new(State {
                volumes,
                snapshots,
                events: VecDeque::new(),
                copying_from: HashMap::new(),
            })),
        })
    }

    fn class(&self, name: &str) -> Option<&crate::VolumeClass> {
        self.cfg.classes.iter().find(|c| c.name == name)
    }

    fn volume_proto(record: &VolumeRecord) -> volume::Volume {
        let data_source = if record.image.is_empty() && record.snapshot_id.is_empty() {
            None
        } else {
            Some(volume::VolumeDataSource {
                image_data_source: (!record.image.is_empty()).then(|| volume::ImageDataSource {
                    image: record.image.clone(),
                    architecture: record.architecture.clone(),
                }),
                snapshot_data_source: (!record.snapshot_id.is_empty()).then(|| {
                    volume::SnapshotDataSource {
                        snapshot_id: record.snapshot_id.clone(),
                    }
                }),
            })
        };
        volume::Volume {
            metadata: Some(meta::ObjectMetadata {
                id: record.id.clone(),
                annotations: record.annotations.clone(),
                labels: record.labels.clone(),
                generation: 0,
                created_at: record.created_at,
                deleted_at: 0,
            }),
            spec: Some(volume::VolumeSpec {
                class: record.class.clone(),
                resources: Some(volume::VolumeResources {
                    storage_bytes: record.storage_bytes,
                }),
                encryption: None,
                volume_data_source: data_source,
            }),
            status: Some(volume::VolumeStatus {
                state: volume::VolumeState::VolumeAvailable as i32,
                access: Some(volume::VolumeAccess {
                    driver: "local-file".into(),
                    handle: record.path.display().to_string(),
                    attributes: HashMap::from([
                        ("format".to_owned(), record.format.as_str().to_owned()),
                        ("path".to_owned(), record.path.display().to_string()),
                    ]),
                    secret_data: HashMap::new(),
                }),
                resources: Some(volume::VolumeResources {
                    storage_bytes: record.storage_bytes,
                }),
            }),
        }
    }

    fn snapshot_proto(record: &SnapshotRecord) -> volume::VolumeSnapshot {
        volume::VolumeSnapshot {
            metadata: Some(meta::ObjectMetadata {
                id: record.id.clone(),
                annotations: record.annotations.clone(),
                labels: record.labels.clone(),
                generation: 0,
                created_at: record.created_at,
                deleted_at: 0,
            }),
            spec: Some(volume::VolumeSnapshotSpec {
                volume_id: record.volume_id.clone(),
            }),
            status: Some(volume::VolumeSnapshotStatus {
                state: volume::VolumeSnapshotState::VolumeSnapshotReady as i32,
                size: record.size,
            }),
        }
    }

    fn event(
        state: &mut State,
        meta: meta::ObjectMetadata,
        reason: &str,
        action: &str,
        message: String,
    ) {
        if state.events.len() >= MAX_EVENTS {
            state.events.pop_front();
        }
        state.events.push_back(event::Event {
            spec: Some(event::EventSpec {
                involved_object_meta: Some(meta),
                reason: reason.to_owned(),
                message,
                r#type: "Normal".to_owned(),
                event_time: now_ns() / 1_000_000_000,
                action: action.to_owned(),
            }),
        });
    }

    async fn qemu_img(&self, args: &[&std::ffi::OsStr]) -> Result<()> {
        let bin = self
            .cfg
            .qemu_img
            .as_ref()
            .ok_or_else(|| Error::Io("qemu-img is not available".into()))?;
        let out = tokio::process::Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io_err("run qemu-img"))?;
        if !out.status.success() {
            return Err(Error::Io(format!(
                "qemu-img {:?}: {}",
                args,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Make `dest` a `format` file of `size` bytes, from `source` (in its recorded format) if
    /// given. `qemu-img` always gets `-f`: it never probes a format from tenant-written bytes,
    /// and a qcow2 source that names a backing or data file is refused.
    async fn make_file(
        &self,
        dest: &Path,
        format: Format,
        size: u64,
        source: Option<(&Path, Format)>,
    ) -> Result<()> {
        match (format, source) {
            (Format::Raw, None) => {
                let f = create_private(dest).map_err(io_err("create volume file"))?;
                f.set_len(size).map_err(io_err("size volume file"))?;
                f.sync_all().map_err(io_err("sync volume file"))?;
            }
            (Format::Qcow2, None) => {
                self.qemu_img(&[
                    "create".as_ref(),
                    "-q".as_ref(),
                    "-f".as_ref(),
                    "qcow2".as_ref(),
                    dest.as_os_str(),
                    size.to_string().as_ref(),
                ])
                .await?;
            }
            (Format::Raw, Some((source, Format::Raw))) => {
                let (s, d) = (source.to_owned(), dest.to_owned());
                tokio::task::spawn_blocking(move || copy_sparse(&s, &d))
                    .await
                    .map_err(|e| Error::Io(e.to_string()))?
                    .map_err(io_err("copy image"))?;
                self.grow(dest, format, size).await?;
            }
            (format, Some((source, source_format))) => {
                if source_format == Format::Qcow2 {
                    crate::check_plain_qcow2(source)
                        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                }
                self.qemu_img(&[
                    "convert".as_ref(),
                    "-q".as_ref(),
                    "-f".as_ref(),
                    source_format.as_str().as_ref(),
                    "-O".as_ref(),
                    format.as_str().as_ref(),
                    source.as_os_str(),
                    dest.as_os_str(),
                ])
                .await?;
                self.grow(dest, format, size).await?;
            }
        }
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod volume file"))
    }

    /// The largest volume: `--max-volume-bytes`, else the size of the root's filesystem (a
    /// sparse file can be made larger, but never filled).
    fn max_volume_bytes(&self) -> u64 {
        self.cfg.max_volume_bytes.unwrap_or_else(|| {
            rustix::fs::statvfs(&self.cfg.root)
                .map_or(u64::MAX, |s| s.f_blocks.saturating_mul(s.f_frsize))
        })
    }

    fn check_size(&self, bytes: i64) -> Result<()> {
        let max = self.max_volume_bytes();
        if u64::try_from(bytes).is_ok_and(|b| b > max) {
            return Err(Error::OutOfRange(format!(
                "storage_bytes {bytes} is larger than the largest volume this runtime can hold \
                 ({max} bytes)"
            )));
        }
        Ok(())
    }

    /// Grow `path` to at least `size` bytes (virtual size for qcow2).
    async fn grow(&self, path: &Path, format: Format, size: u64) -> Result<()> {
        match format {
            Format::Raw => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err("open volume file"))?;
                let len = f.metadata().map_err(io_err("stat volume file"))?.len();
                if len < size {
                    f.set_len(size).map_err(io_err("grow volume file"))?;
                }
                f.sync_all().map_err(io_err("sync volume file"))?;
            }
            Format::Qcow2 => {
                if qcow2_virtual_size(path).unwrap_or(0) < size {
                    self.qemu_img(&[
                        "resize".as_ref(),
                        "-q".as_ref(),
                        "-f".as_ref(),
                        "qcow2".as_ref(),
                        path.as_os_str(),
                        size.to_string().as_ref(),
                    ])
                    .await?;
                }
            }
        }
        Ok(())
    }

    fn image_path(&self, image: &str) -> Result<PathBuf> {
        let bad = |why: &str| Error::InvalidArgument(format!("image {image:?} {why}"));
        if image.contains('\0') {
            return Err(bad("contains NUL"));
        }
        let given = Path::new(image);
        let candidates: Vec<PathBuf> = if given.is_absolute() {
            vec![given.to_owned()]
        } else {
            self.cfg.image_dirs.iter().map(|d| d.join(given)).collect()
        };
        for candidate in candidates {
            if let Ok(real) = std::fs::canonicalize(&candidate)
                && self.cfg.image_dirs.iter().any(|d| real.starts_with(d))
                && real.is_file()
            {
                return Ok(real);
            }
        }
        Err(bad("is not a file inside the image directories"))
    }

    fn persist_volume(&self, record: &VolumeRecord) -> Result<()> {
        store::write(&self.cfg.root.join("state/volumes"), &record.id, record)
            .map_err(io_err("persist volume"))
    }

    fn persist_snapshot(&self, record: &SnapshotRecord) -> Result<()> {
        store::write(&self.cfg.root.join("state/snapshots"), &record.id, record)
            .map_err(io_err("persist snapshot"))
    }

    async fn create(&self, request: Option<volume::Volume>) -> Result<volume::Volume> {
        let request = request.ok_or_else(|| Error::InvalidArgument("volume is required".into()))?;
        let spec = request
            .spec
            .ok_or_else(|| Error::InvalidArgument("volume.spec is required".into()))?;
        let class = self.class(&spec.class).ok_or_else(|| {
            Error::InvalidArgument(format!("volume class {:?} is not supported", spec.class))
        })?;
        let format = class.format.unwrap_or(self.cfg.format);
        if spec
            .encryption
            .as_ref()
            .is_some_and(|e| !e.secret_data.is_empty())
        {
            return Err(Error::InvalidArgument(
                "encryption is not supported by file-volume-runtime".into(),
            ));
        }
        let requested = spec.resources.as_ref().map_or(0, |r| r.storage_bytes);
        if requested < 0 {
            return Err(Error::InvalidArgument(
                "storage_bytes must not be negative".into(),
            ));
        }
        let source = spec.volume_data_source.unwrap_or_default();
        let image = source.image_data_source.filter(|i| !i.image.is_empty());
        let snapshot = source
            .snapshot_data_source
            .filter(|s| !s.snapshot_id.is_empty());
        if image.is_some() && snapshot.is_some() {
            return Err(Error::InvalidArgument(
                "set at most one of image_data_source and snapshot_data_source".into(),
            ));
        }
        self.check_size(requested)?;
        let meta = request.metadata.unwrap_or_default();
        let mut state = self.state.lock().await;
        let source_path = match (&image, &snapshot) {
            (Some(image), _) => {
                let path = self.image_path(&image.image)?;
                let format = Format::of_operator_image(&path).map_err(io_err("read image"))?;
                Some((path, format))
            }
            (_, Some(snap)) => Some(
                state
                    .snapshots
                    .get(&snap.snapshot_id)
                    .map(|s| (s.path.clone(), s.format))
                    .ok_or_else(|| Error::NotFound {
                        kind: "volume snapshot",
                        id: snap.snapshot_id.clone(),
                    })?,
            ),
            _ => None,
        };
        if requested == 0 && source_path.is_none() {
            return Err(Error::InvalidArgument(
                "resources.storage_bytes must be > 0 for an empty volume".into(),
            ));
        }
        let id = new_id();
        let path = self
            .cfg
            .root
            .join("volumes")
            .join(format!("{id}.{}", format.as_str()));
        let size = u64::try_from(requested).unwrap_or_default();
        // The copy runs without the state lock; the snapshot it reads is pinned meanwhile.
        let pinned = snapshot.as_ref().map(|s| s.snapshot_id.clone());
        if let Some(pinned) = &pinned {
            state.pin(pinned);
        }
        drop(state);
        let made = self
            .make_file(
                &path,
                format,
                size,
                source_path.as_ref().map(|(p, f)| (p.as_path(), *f)),
            )
            .await;
        let mut state = self.state.lock().await;
        if let Some(pinned) = &pinned {
            state.unpin(pinned);
        }
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let actual = i64::try_from(file_virtual_size(&path, format)).unwrap_or(i64::MAX);
        let record = VolumeRecord {
            id: id.clone(),
            created_at: now_ns(),
            labels: meta.labels,
            annotations: meta.annotations,
            class: spec.class,
            storage_bytes: actual.max(requested),
            image: image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
            architecture: image.map(|i| i.architecture).unwrap_or_default(),
            snapshot_id: snapshot.map(|s| s.snapshot_id).unwrap_or_default(),
            format,
            path,
        };
        if let Err(e) = self.persist_volume(&record) {
            let _ = std::fs::remove_file(&record.path);
            return Err(e);
        }
        info!(volume.id = %id, size = record.storage_bytes, format = format.as_str(), "volume created");
        let proto = Self::volume_proto(&record);
        Self::event(
            &mut state,
            proto.metadata.clone().unwrap_or_default(),
            "Created",
            "Create",
            "volume created".into(),
        );
        state.volumes.insert(id, record);
        // The response carries the empty status of an accepted request (state PENDING, no
        // access yet), as IronCore's runtimes answer CreateVolume (reference §2.4); the file is
        // already in place, so the first ListVolumes reports AVAILABLE with its access.
        Ok(volume::Volume {
            status: Some(volume::VolumeStatus::default()),
            ..proto
        })
    }

    async fn expand(&self, id: &str, resources: Option<volume::VolumeResources>) -> Result<()> {
        let mut state = self.state.lock().await;
        state.check_not_copying("volume", id)?;
        let record = state
            .volumes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "volume",
                id: id.to_owned(),
            })?;
        let want = resources
            .ok_or_else(|| Error::InvalidArgument("resources are required".into()))?
            .storage_bytes;
        if want < record.storage_bytes {
            return Err(Error::InvalidArgument(format!(
                "volumes only grow: {want} < current {}",
                record.storage_bytes
            )));
        }
        if want == record.storage_bytes {
            return Ok(());
        }
        self.check_size(want)?;
        self.grow(
            &record.path,
            record.format,
            u64::try_from(want).unwrap_or_default(),
        )
        .await?;
        let mut updated = record;
        updated.storage_bytes = want;
        self.persist_volume(&updated)?;
        info!(volume.id = %id, size = want, "volume expanded");
        let meta = Self::volume_proto(&updated).metadata.unwrap_or_default();
        Self::event(
            &mut state,
            meta,
            "Expanded",
            "Expand",
            format!("volume expanded to {want} bytes"),
        );
        state.volumes.insert(id.to_owned(), updated);
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let mut state = self.state.lock().await;
        state.check_not_copying("volume", id)?;
        let record = state
            .volumes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "volume",
                id: id.to_owned(),
            })?;
        match std::fs::remove_file(&record.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Io(format!("remove volume file: {e}")));
            }
            _ => {}
        }
        store::remove(&self.cfg.root.join("state/volumes"), id)
            .map_err(io_err("remove volume record"))?;
        state.volumes.remove(id);
        info!(volume.id = %id, "volume deleted");
        let meta = Self::volume_proto(&record).metadata.unwrap_or_default();
        Self::event(
            &mut state,
            meta,
            "Deleted",
            "Delete",
            "volume deleted".into(),
        );
        Ok(())
    }

    async fn create_snapshot(
        &self,
        request: Option<volume::VolumeSnapshot>,
    ) -> Result<volume::VolumeSnapshot> {
        let request =
            request.ok_or_else(|| Error::InvalidArgument("volume_snapshot is required".into()))?;
        let volume_id = request
            .spec
            .map(|s| s.volume_id)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Error::InvalidArgument("volume_snapshot.spec.volume_id is required".into())
            })?;
        let meta = request.metadata.unwrap_or_default();
        let mut state = self.state.lock().await;
        let source = state
            .volumes
            .get(&volume_id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "volume",
                id: volume_id.clone(),
            })?;
        let id = new_id();
        let path = self
            .cfg
            .root
            .join("snapshots")
            .join(format!("{id}.{}", source.format.as_str()));
        // The copy runs without the state lock; the volume it reads is pinned meanwhile.
        state.pin(&volume_id);
        drop(state);
        let copy = match source.format {
            Format::Raw => {
                let (s, d) = (source.path.clone(), path.clone());
                tokio::task::spawn_blocking(move || copy_sparse(&s, &d))
                    .await
                    .map_err(|e| Error::Io(e.to_string()))?
                    .map_err(io_err("copy volume"))
            }
            Format::Qcow2 => match crate::check_plain_qcow2(&source.path) {
                Err(e) => Err(Error::Io(e.to_string())),
                Ok(()) => {
                    self.qemu_img(&[
                        "convert".as_ref(),
                        "-q".as_ref(),
                        "-f".as_ref(),
                        "qcow2".as_ref(),
                        "-O".as_ref(),
                        "qcow2".as_ref(),
                        source.path.as_os_str(),
                        path.as_os_str(),
                    ])
                    .await
                }
            },
        };
        let copy = copy.and_then(|()| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err("chmod snapshot file"))
        });
        let mut state = self.state.lock().await;
        state.unpin(&volume_id);
        let record = SnapshotRecord {
            id: id.clone(),
            created_at: now_ns(),
            labels: meta.labels,
            annotations: meta.annotations,
            volume_id,
            size: source.storage_bytes,
            format: source.format,
            path,
        };
        if let Err(e) = copy.and_then(|()| self.persist_snapshot(&record)) {
            let _ = std::fs::remove_file(&record.path);
            return Err(e);
        }
        info!(snapshot.id = %id, volume.id = %record.volume_id, "snapshot created");
        let proto = Self::snapshot_proto(&record);
        Self::event(
            &mut state,
            proto.metadata.clone().unwrap_or_default(),
            "SnapshotCreated",
            "CreateSnapshot",
            "volume snapshot created".into(),
        );
        state.snapshots.insert(id, record);
        Ok(proto)
    }

    async fn delete_snapshot(&self, id: &str) -> Result<()> {
        let mut state = self.state.lock().await;
        state.check_not_copying("volume snapshot", id)?;
        let record = state
            .snapshots
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: "volume snapshot",
                id: id.to_owned(),
            })?;
        match std::fs::remove_file(&record.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Io(format!("remove snapshot file: {e}")));
            }
            _ => {}
        }
        store::remove(&self.cfg.root.join("state/snapshots"), id)
            .map_err(io_err("remove snapshot record"))?;
        state.snapshots.remove(id);
        let meta = Self::snapshot_proto(&record).metadata.unwrap_or_default();
        Self::event(
            &mut state,
            meta,
            "SnapshotDeleted",
            "DeleteSnapshot",
            "volume snapshot deleted".into(),
        );
        Ok(())
    }

    /// The root filesystem's free space, rounded down to whole GiB once there is at least one:
    /// `Status.quantity` becomes the VolumePool's capacity, and without rounding every write to
    /// the filesystem (by anyone) would change it and rewrite the pool at every probe.
    fn free_bytes(&self) -> i64 {
        const GIB: u64 = 1 << 30;
        rustix::fs::statvfs(&self.cfg.root)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .map(|b| if b >= GIB { b - b % GIB } else { b })
            .map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX))
    }
}
