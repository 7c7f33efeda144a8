//! The volume and snapshot operations of file-volume-runtime: the in-memory state (records,
//! events, the sources of copies in flight) and what each VolumeRuntime call does to it and to
//! the files under the root (`grpc` serves them).
//!
//! Every call takes one lock over the in-memory state, so the on-disk state and the records stay
//! consistent without a journal; copies (snapshots, images) run without it, their sources pinned.

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
};

use iri_spec::{event::v1alpha1 as event, kind::IriKind, volume::v1alpha1 as volume};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::{
    Config, Format,
    error::{Error, Result, io_err},
    files::{self, Files},
    store::{self, Meta, Record, SnapshotRecord, VolumeRecord},
};

fn new_id() -> String {
    loop {
        let id = format!("{:032x}", rand::random::<u128>());
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

const MAX_EVENTS: usize = 4096;

pub(crate) struct State {
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

    /// The record `id` of kind `R`, unless it is the source of a copy in progress.
    fn get_idle<R: Stored>(&self, id: &str) -> Result<R> {
        let kind = R::Proto::NAME;
        if self.copying_from.contains_key(id) {
            return Err(Error::Busy {
                kind,
                id: id.to_owned(),
            });
        }
        self.get(id)
    }

    /// The record `id` of kind `R`.
    fn get<R: Stored>(&self, id: &str) -> Result<R> {
        R::table(self)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: R::Proto::NAME,
                id: id.to_owned(),
            })
    }

    /// Record an event about `record`: reason `<prefix><past>`, action `<verb><prefix>`.
    fn event<R: Record>(&mut self, record: &R, past: &str, verb: &str, message: String) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        let prefix = R::EVENT_PREFIX;
        self.events.push_back(event::Event {
            spec: Some(event::EventSpec {
                involved_object_meta: Some(record.meta().to_proto()),
                reason: format!("{prefix}{past}"),
                message,
                r#type: "Normal".to_owned(),
                event_time: store::now_ns() / 1_000_000_000,
                action: format!("{verb}{prefix}"),
            }),
        });
    }
}

/// A record kind and its map in the state.
pub(crate) trait Stored: Record {
    fn table(state: &State) -> &HashMap<String, Self>;
    fn table_mut(state: &mut State) -> &mut HashMap<String, Self>;
}

impl Stored for VolumeRecord {
    fn table(state: &State) -> &HashMap<String, Self> {
        &state.volumes
    }
    fn table_mut(state: &mut State) -> &mut HashMap<String, Self> {
        &mut state.volumes
    }
}

impl Stored for SnapshotRecord {
    fn table(state: &State) -> &HashMap<String, Self> {
        &state.snapshots
    }
    fn table_mut(state: &mut State) -> &mut HashMap<String, Self> {
        &mut state.snapshots
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

/// Load the records of kind `R` under `root`. A record's file is `<root>/<dir>/<its file
/// name>`, whatever root it was written under: after `--root` moved, the files are re-found
/// instead of deleted as orphans. Files that never got a record (a crash mid-create) are removed.
fn load<R: Record>(root: &Path) -> anyhow::Result<HashMap<String, R>> {
    let mut records: Vec<R> = store::load(&root.join("state").join(R::DIR))?;
    for record in &mut records {
        let path = record.path_mut();
        if let Some(name) = path.file_name() {
            let here = root.join(R::DIR).join(name);
            if *path != here {
                info!(from = %path.display(), to = %here.display(), "root moved: re-basing");
                *path = here;
            }
        }
    }
    let known: Vec<&Path> = records.iter().map(R::path).collect();
    for entry in std::fs::read_dir(root.join(R::DIR))?.flatten() {
        if !known.contains(&entry.path().as_path()) {
            warn!(file = %entry.path().display(), "removing orphaned file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(records
        .into_iter()
        .map(|r| (r.meta().id.clone(), r))
        .collect())
}

impl VolumeService {
    /// Load the records under `cfg.root`; files of volumes that never got a record (a crash
    /// mid-create) are removed.
    pub fn start(cfg: Config) -> anyhow::Result<Self> {
        let volumes: HashMap<_, VolumeRecord> = load(&cfg.root)?;
        let snapshots: HashMap<_, SnapshotRecord> = load(&cfg.root)?;
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

    fn files(&self) -> Files<'_> {
        Files {
            qemu_img: self.cfg.qemu_img.as_deref(),
        }
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

    /// Where a new file of kind `R` goes: `<root>/<dir>/<id>.<format>`.
    fn new_path<R: Record>(&self, id: &str, format: Format) -> PathBuf {
        self.cfg
            .root
            .join(R::DIR)
            .join(format!("{id}.{}", format.as_str()))
    }

    fn records_dir<R: Record>(&self) -> PathBuf {
        self.cfg.root.join("state").join(R::DIR)
    }

    fn persist<R: Record>(&self, record: &R) -> Result<()> {
        let what = format!("persist {}", R::Proto::NAME);
        store::write(&self.records_dir::<R>(), &record.meta().id, record).map_err(io_err(&what))
    }

    /// Persist a record whose file is in place and add it to the state, with a `Created` event;
    /// its file is removed when the record cannot be written.
    fn insert<R: Stored>(&self, state: &mut State, record: R) -> Result<R::Proto> {
        if let Err(e) = self.persist(&record) {
            let _ = std::fs::remove_file(record.path());
            return Err(e);
        }
        let kind = R::Proto::NAME;
        info!(id = %record.meta().id, "{kind} created");
        state.event(&record, "Created", "Create", format!("{kind} created"));
        let proto = record.to_proto();
        R::table_mut(state).insert(record.meta().id.clone(), record);
        Ok(proto)
    }

    pub(crate) async fn create(&self, request: Option<volume::Volume>) -> Result<volume::Volume> {
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
        let sent = request.metadata.unwrap_or_default();
        let mut state = self.state.lock().await;
        let source_path = match (&image, &snapshot) {
            (Some(image), _) => {
                let path = self.image_path(&image.image)?;
                let format = Format::of_operator_image(&path).map_err(io_err("read image"))?;
                Some((path, format))
            }
            (_, Some(snap)) => {
                let s: SnapshotRecord = state.get(&snap.snapshot_id)?;
                Some((s.path, s.format))
            }
            _ => None,
        };
        if requested == 0 && source_path.is_none() {
            return Err(Error::InvalidArgument(
                "resources.storage_bytes must be > 0 for an empty volume".into(),
            ));
        }
        let id = new_id();
        let path = self.new_path::<VolumeRecord>(&id, format);
        let size = u64::try_from(requested).unwrap_or_default();
        // The copy runs without the state lock; the snapshot it reads is pinned meanwhile.
        let pinned = snapshot.as_ref().map(|s| s.snapshot_id.clone());
        if let Some(pinned) = &pinned {
            state.pin(pinned);
        }
        drop(state);
        let made = self
            .files()
            .make(
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
        let actual = i64::try_from(files::virtual_size(&path, format)).unwrap_or(i64::MAX);
        let record = VolumeRecord {
            meta: Meta::new(id, sent),
            class: spec.class,
            storage_bytes: actual.max(requested),
            image: image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
            architecture: image.map(|i| i.architecture).unwrap_or_default(),
            snapshot_id: snapshot.map(|s| s.snapshot_id).unwrap_or_default(),
            format,
            path,
        };
        let proto = self.insert(&mut state, record)?;
        // The response carries the empty status of an accepted request (state PENDING, no
        // access yet), as IronCore's runtimes answer CreateVolume (reference §2.4); the file is
        // already in place, so the first ListVolumes reports AVAILABLE with its access.
        Ok(volume::Volume {
            status: Some(volume::VolumeStatus::default()),
            ..proto
        })
    }

    pub(crate) async fn expand(
        &self,
        id: &str,
        resources: Option<volume::VolumeResources>,
    ) -> Result<()> {
        let mut state = self.state.lock().await;
        let mut record: VolumeRecord = state.get_idle(id)?;
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
        self.files()
            .grow(
                &record.path,
                record.format,
                u64::try_from(want).unwrap_or_default(),
            )
            .await?;
        record.storage_bytes = want;
        self.persist(&record)?;
        info!(volume.id = %id, size = want, "volume expanded");
        let message = format!("volume expanded to {want} bytes");
        state.event(&record, "Expanded", "Expand", message);
        state.volumes.insert(id.to_owned(), record);
        Ok(())
    }

    /// Delete the volume or snapshot `id`: its file, its record, then the state's entry.
    pub(crate) async fn delete<R: Stored>(&self, id: &str) -> Result<()> {
        let kind = R::Proto::NAME;
        let mut state = self.state.lock().await;
        let record: R = state.get_idle(id)?;
        match std::fs::remove_file(record.path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Io(format!("remove {kind} file: {e}")));
            }
            _ => {}
        }
        let what = format!("remove {kind} record");
        store::remove(&self.records_dir::<R>(), id).map_err(io_err(&what))?;
        R::table_mut(&mut state).remove(id);
        info!(id = %id, "{kind} deleted");
        state.event(&record, "Deleted", "Delete", format!("{kind} deleted"));
        Ok(())
    }

    pub(crate) async fn create_snapshot(
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
        let sent = request.metadata.unwrap_or_default();
        let mut state = self.state.lock().await;
        let source: VolumeRecord = state.get(&volume_id)?;
        let id = new_id();
        let path = self.new_path::<SnapshotRecord>(&id, source.format);
        // The copy runs without the state lock; the volume it reads is pinned meanwhile.
        state.pin(&volume_id);
        drop(state);
        let format = source.format;
        let copy = match format {
            Format::Qcow2 => {
                crate::check_plain_qcow2(&source.path).map_err(|e| Error::Io(e.to_string()))
            }
            Format::Raw => Ok(()),
        };
        let copy = match copy {
            Ok(()) => {
                self.files()
                    .copy(&source.path, format, &path, format, "copy volume")
                    .await
            }
            Err(e) => Err(e),
        };
        let copy = copy.and_then(|()| files::chmod_private(&path, "chmod snapshot file"));
        let mut state = self.state.lock().await;
        state.unpin(&volume_id);
        let record = SnapshotRecord {
            meta: Meta::new(id, sent),
            volume_id,
            size: source.storage_bytes,
            format,
            path,
        };
        if let Err(e) = copy {
            let _ = std::fs::remove_file(&record.path);
            return Err(e);
        }
        self.insert(&mut state, record)
    }

    /// The records of kind `R` matching `filter` (an id, empty for any, and a label selector),
    /// oldest first, as IRI objects.
    pub(crate) async fn list<R: Stored>(
        &self,
        filter: Option<(&str, &HashMap<String, String>)>,
    ) -> Vec<R::Proto> {
        let state = self.state.lock().await;
        let mut records: Vec<&R> = R::table(&state)
            .values()
            .filter(|r| {
                let meta = r.meta();
                filter.is_none_or(|(id, selector)| {
                    (id.is_empty() || id == meta.id)
                        && iri_spec::selector::matches(selector, &meta.labels)
                })
            })
            .collect();
        records.sort_by(|a, b| {
            let (a, b) = (a.meta(), b.meta());
            (a.created_at, &a.id).cmp(&(b.created_at, &b.id))
        });
        records.into_iter().map(R::to_proto).collect()
    }

    /// The events matching `filter`; the time window counts only when both bounds are > 0.
    pub(crate) async fn events(&self, filter: Option<volume::EventFilter>) -> Vec<event::Event> {
        let state = self.state.lock().await;
        crate::events::select(state.events.iter(), filter.as_ref())
    }

    /// Every class with its capabilities and, as quantity, the root filesystem's free space,
    /// rounded down to whole GiB once there is at least one: `Status.quantity` becomes the
    /// VolumePool's capacity, and without rounding every write to the filesystem (by anyone)
    /// would change it and rewrite the pool at every probe.
    pub(crate) fn class_status(&self) -> Vec<volume::VolumeClassStatus> {
        const GIB: u64 = 1 << 30;
        let free = rustix::fs::statvfs(&self.cfg.root)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .map(|b| if b >= GIB { b - b % GIB } else { b })
            .map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX));
        self.cfg
            .classes
            .iter()
            .map(|c| volume::VolumeClassStatus {
                volume_class: Some(volume::VolumeClass {
                    name: c.name.clone(),
                    capabilities: Some(volume::VolumeClassCapabilities {
                        tps: c.tps,
                        iops: c.iops,
                    }),
                }),
                quantity: free,
            })
            .collect()
    }
}
