//! Volume and snapshot records: what is kept of each (on disk one JSON file, written atomically:
//! tmp + fsync + rename + fsync dir, mode 0600) and the IRI object it is served as.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use iri_spec::{kind::IriKind, meta::v1alpha1 as meta, volume::v1alpha1 as volume};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::Format;

/// What every record has: the IRI object's metadata as this runtime keeps it. Flattened into
/// the record's JSON, so the files are what they were before the records shared it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Runtime-assigned id (also the file name).
    pub id: String,
    /// Unix ns.
    pub created_at: i64,
    /// Labels, verbatim.
    pub labels: HashMap<String, String>,
    /// Annotations, verbatim.
    pub annotations: HashMap<String, String>,
}

impl Meta {
    /// A new object's metadata: `id`, created now, with the labels and annotations sent.
    pub fn new(id: String, sent: meta::ObjectMetadata) -> Self {
        Self {
            id,
            created_at: now_ns(),
            labels: sent.labels,
            annotations: sent.annotations,
        }
    }

    /// As IRI metadata (generation 0: these objects have no spec updates to count).
    pub fn to_proto(&self) -> meta::ObjectMetadata {
        meta::ObjectMetadata {
            id: self.id.clone(),
            annotations: self.annotations.clone(),
            labels: self.labels.clone(),
            generation: 0,
            created_at: self.created_at,
            deleted_at: 0,
        }
    }
}

/// Unix ns now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// What the service does alike to volumes and snapshots: store, list, serve and delete them.
pub trait Record: Clone + Serialize + DeserializeOwned {
    /// The IRI object a record is served as.
    type Proto: IriKind;
    /// The directory below the root holding the files, and below `<root>/state` the records.
    const DIR: &'static str;
    /// Prefix of the event reasons and actions (`Snapshot`: `SnapshotCreated`, `CreateSnapshot`).
    const EVENT_PREFIX: &'static str;

    /// The metadata.
    fn meta(&self) -> &Meta;
    /// The file.
    fn path(&self) -> &Path;
    /// The file, to re-base after the root moved.
    fn path_mut(&mut self) -> &mut PathBuf;
    /// The IRI object.
    fn to_proto(&self) -> Self::Proto;
}

/// [`Record`]'s accessors of the `meta` and `path` fields.
macro_rules! record_fields {
    () => {
        fn meta(&self) -> &Meta {
            &self.meta
        }
        fn path(&self) -> &Path {
            &self.path
        }
        fn path_mut(&mut self) -> &mut PathBuf {
            &mut self.path
        }
    };
}

/// A stored volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Id, time and labels.
    #[serde(flatten)]
    pub meta: Meta,
    /// The class.
    pub class: String,
    /// Size in bytes (spec and effective).
    pub storage_bytes: i64,
    /// Image data source as sent (for the spec echo).
    pub image: String,
    /// Image architecture as sent.
    pub architecture: String,
    /// Snapshot data source as sent.
    pub snapshot_id: String,
    /// The file's format.
    pub format: Format,
    /// The file.
    pub path: PathBuf,
}

impl Record for VolumeRecord {
    type Proto = volume::Volume;
    const DIR: &'static str = "volumes";
    const EVENT_PREFIX: &'static str = "";

    record_fields!();
    /// AVAILABLE, with the access `{driver: local-file, handle: <path>}` and the format.
    fn to_proto(&self) -> volume::Volume {
        let data_source = if self.image.is_empty() && self.snapshot_id.is_empty() {
            None
        } else {
            Some(volume::VolumeDataSource {
                image_data_source: (!self.image.is_empty()).then(|| volume::ImageDataSource {
                    image: self.image.clone(),
                    architecture: self.architecture.clone(),
                }),
                snapshot_data_source: (!self.snapshot_id.is_empty()).then(|| {
                    volume::SnapshotDataSource {
                        snapshot_id: self.snapshot_id.clone(),
                    }
                }),
            })
        };
        let resources = volume::VolumeResources {
            storage_bytes: self.storage_bytes,
        };
        volume::Volume {
            metadata: Some(self.meta.to_proto()),
            spec: Some(volume::VolumeSpec {
                class: self.class.clone(),
                resources: Some(resources),
                encryption: None,
                volume_data_source: data_source,
            }),
            status: Some(volume::VolumeStatus {
                state: volume::VolumeState::VolumeAvailable as i32,
                access: Some(volume::VolumeAccess {
                    driver: "local-file".into(),
                    handle: self.path.display().to_string(),
                    attributes: HashMap::from([
                        ("format".to_owned(), self.format.as_str().to_owned()),
                        ("path".to_owned(), self.path.display().to_string()),
                    ]),
                    secret_data: HashMap::new(),
                }),
                resources: Some(resources),
            }),
        }
    }
}

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Id, time and labels.
    #[serde(flatten)]
    pub meta: Meta,
    /// The source volume id.
    pub volume_id: String,
    /// Size in bytes.
    pub size: i64,
    /// The copy's format.
    pub format: Format,
    /// The copy.
    pub path: PathBuf,
}

impl Record for SnapshotRecord {
    type Proto = volume::VolumeSnapshot;
    const DIR: &'static str = "snapshots";
    const EVENT_PREFIX: &'static str = "Snapshot";

    record_fields!();
    /// READY, with the source volume's size.
    fn to_proto(&self) -> volume::VolumeSnapshot {
        volume::VolumeSnapshot {
            metadata: Some(self.meta.to_proto()),
            spec: Some(volume::VolumeSnapshotSpec {
                volume_id: self.volume_id.clone(),
            }),
            status: Some(volume::VolumeSnapshotStatus {
                state: volume::VolumeSnapshotState::VolumeSnapshotReady as i32,
                size: self.size,
            }),
        }
    }
}

/// Write `value` as JSON to `dir/<id>.json` atomically.
pub fn write<T: Serialize>(dir: &Path, id: &str, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{id}.json.tmp"));
    crate::private_file::replace(&tmp, &dir.join(format!("{id}.json")), &bytes, true)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Remove `dir/<id>.json` (missing is fine).
pub fn remove(dir: &Path, id: &str) -> std::io::Result<()> {
    match fs::remove_file(dir.join(format!("{id}.json"))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Load every `*.json` in `dir`.
pub fn load<T: DeserializeOwned>(dir: &Path) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let bytes = fs::read(entry.path())?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("decode {}: {e}", entry.path().display()))?;
        out.push(value);
    }
    Ok(out)
}
