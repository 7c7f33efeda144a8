//! Volume and snapshot records on disk: one JSON file each, written atomically
//! (tmp + fsync + rename + fsync dir), mode 0600.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::Format;

/// A stored volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Runtime-assigned id (also the file name).
    pub id: String,
    /// Unix ns.
    pub created_at: i64,
    /// Labels, verbatim.
    pub labels: HashMap<String, String>,
    /// Annotations, verbatim.
    pub annotations: HashMap<String, String>,
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

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Runtime-assigned id (also the file name).
    pub id: String,
    /// Unix ns.
    pub created_at: i64,
    /// Labels, verbatim.
    pub labels: HashMap<String, String>,
    /// Annotations, verbatim.
    pub annotations: HashMap<String, String>,
    /// The source volume id.
    pub volume_id: String,
    /// Size in bytes.
    pub size: i64,
    /// The copy's format.
    pub format: Format,
    /// The copy.
    pub path: PathBuf,
}

/// Write `value` as JSON to `dir/<id>.json` atomically.
pub fn write<T: Serialize>(dir: &Path, id: &str, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{id}.json.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(format!("{id}.json")))?;
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
