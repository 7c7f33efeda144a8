//! Machine state on disk: one JSON file per machine, written atomically (tmp + fsync + rename).
//! Reservations (irikit's extension) are kept the same way, one file each in their own
//! directory.
//!
//! The IRI `MachineSpec` is kept verbatim as base64 protobuf (`spec`), so every field the
//! poollet sent (including ones this runtime does not act on) comes back unchanged after a
//! restart. The file is mode 0600: it may hold ignition and volume secrets.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use base64::Engine as _;
use iri_spec::{irikit::reservation::v1alpha1 as rsv, machine::v1alpha1 as machine};
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::vmm::{DiskSpec, VmmProcess};

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{what} {path:?}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A state file could not be decoded.
    #[error("decode state file {path:?}: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Observed status of one volume or NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The IRI name.
    pub name: String,
    /// The handle reported.
    pub handle: String,
    /// Attached (true) or pending.
    pub attached: bool,
}

/// One machine as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineRecord {
    /// Runtime-assigned id.
    pub id: String,
    /// Creation time, Unix ns.
    pub created_at: i64,
    /// Deletion time, Unix ns (0 = not deleting).
    pub deleted_at: i64,
    /// Spec generation (bumped on every spec change).
    pub generation: i64,
    /// Generation the last completed reconcile applied.
    pub observed_generation: i64,
    /// Labels, verbatim.
    pub labels: HashMap<String, String>,
    /// Annotations, verbatim.
    pub annotations: HashMap<String, String>,
    /// The IRI spec, base64 protobuf.
    #[serde(with = "spec_codec")]
    pub spec: machine::MachineSpec,
    /// Boot requested (create, power on) and not yet done.
    pub want_boot: bool,
    /// The VMM process, while one is known.
    pub vmm: Option<VmmProcess>,
    /// Disks prepared for the VM, by volume name.
    pub disks: Vec<PreparedDisk>,
    /// Last observed IRI machine state (0-4).
    pub state: i32,
    /// Last observed volume statuses.
    pub volume_status: Vec<DeviceStatus>,
    /// Last observed NIC statuses.
    pub nic_status: Vec<DeviceStatus>,
    /// Write counter: of the durable file and the volatile one, the higher `seq` is newer.
    #[serde(default)]
    pub seq: u64,
}

/// A disk made ready for a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedDisk {
    /// The IRI volume name.
    pub name: String,
    /// What the VMM gets.
    pub disk: DiskSpec,
    /// Whether the runtime created the file (a `local_disk`) and deletes it with the machine.
    pub owned: bool,
}

mod spec_codec {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        spec: &machine::MachineSpec,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(spec.encode_to_vec()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<machine::MachineSpec, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        machine::MachineSpec::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
    }
}

/// The directory of machine state files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Put `bytes` at `path` by way of the 0600 file `tmp` (written, with `fsync` when `durable`,
/// then renamed over `path`).
fn replace(tmp: &Path, path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { what, path, source }
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io("create", tmp))?;
    f.write_all(bytes).map_err(io("write", tmp))?;
    if durable {
        f.sync_all().map_err(io("fsync", tmp))?;
    }
    drop(f);
    fs::rename(tmp, path).map_err(io("rename", path))
}

impl Store {
    /// Open (create) `dir`.
    pub fn open(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: "create store dir",
            path: dir.clone(),
            source,
        })?;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        Ok(Self { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn volatile_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json.vol"))
    }

    /// Write bytes for `id` atomically for a crash of this process, without waiting for the
    /// disk: tmp file, rename to `<id>.json.vol`, no fsync. For what the runtime observed (a
    /// VMM's pid, states, statuses): it survives a kill -9 of the runtime (the page cache
    /// does), and after a host crash, when no VMM survives anyway, the loader falls back to
    /// the durable file where this one is torn or missing. The durable file is never replaced
    /// by a volatile write.
    pub fn write_volatile(&self, id: &str, bytes: &[u8]) -> Result<()> {
        let tmp = self.dir.join(format!(".{id}.vol.tmp"));
        replace(&tmp, &self.volatile_path(id), bytes, false)
    }

    /// Serialize a record (call under the record's lock; write with [`Store::write`]).
    pub fn encode(record: &MachineRecord) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec_pretty(record).unwrap_or_default()
    }

    /// Write bytes for `id` atomically: tmp file, fsync, rename, fsync dir.
    pub fn write(&self, id: &str, bytes: &[u8]) -> Result<()> {
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        replace(&tmp, &self.path(id), bytes, true)?;
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Remove the files of `id` (missing is fine): the volatile one first, so that a crash in
    /// between never leaves it alone.
    pub fn remove(&self, id: &str) -> Result<()> {
        for path in [self.volatile_path(id), self.path(id)] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Io {
                        what: "remove",
                        path,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Serialize a reservation (irikit's extension): its protobuf, base64, in a JSON object.
    pub fn encode_reservation(r: &rsv::Reservation) -> Vec<u8> {
        let text = base64::engine::general_purpose::STANDARD.encode(r.encode_to_vec());
        serde_json::to_vec(&serde_json::json!({ "reservation": text })).unwrap_or_default()
    }

    /// Every stored reservation, in creation order.
    pub fn load_reservations(&self) -> Result<Vec<rsv::Reservation>> {
        let mut out = Vec::new();
        for (path, bytes) in self.files()? {
            let decode = || -> std::result::Result<rsv::Reservation, String> {
                let value: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                let text = value["reservation"]
                    .as_str()
                    .ok_or("no \"reservation\" string")?;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| e.to_string())?;
                rsv::Reservation::decode(raw.as_slice()).map_err(|e| e.to_string())
            };
            out.push(decode().map_err(|message| Error::Decode { path, message })?);
        }
        out.sort_by_key(|r| r.metadata.as_ref().map_or(0, |m| m.created_at));
        Ok(out)
    }

    /// Every stored record: per machine the newer (higher `seq`) of its durable file and its
    /// volatile one; a volatile file that does not decode (torn by a host crash) is ignored.
    pub fn load_all(&self) -> Result<Vec<MachineRecord>> {
        let mut out = Vec::new();
        for (path, bytes) in self.files()? {
            let mut record: MachineRecord =
                serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let volatile = fs::read(self.volatile_path(&record.id))
                .ok()
                .and_then(|b| serde_json::from_slice::<MachineRecord>(&b).ok())
                .filter(|v| v.id == record.id && v.seq > record.seq);
            if let Some(newer) = volatile {
                record = newer;
            }
            out.push(record);
        }
        Ok(out)
    }

    /// The path and content of every stored file.
    fn files(&self) -> Result<Vec<(PathBuf, Vec<u8>)>> {
        let entries = fs::read_dir(&self.dir).map_err(|source| Error::Io {
            what: "read store dir",
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(|source| Error::Io {
                what: "read",
                path: path.clone(),
                source,
            })?;
            out.push((path, bytes));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_the_spec_verbatim() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path().join("m")).unwrap_or_else(|e| panic!("{e}"));
        let spec = machine::MachineSpec {
            class: "small".into(),
            ignition_data: b"secret".to_vec(),
            guest_config: Some(machine::GuestConfig {
                hostname: "h".into(),
            }),
            ..Default::default()
        };
        let record = MachineRecord {
            id: "abc".into(),
            created_at: 1,
            deleted_at: 0,
            generation: 2,
            observed_generation: 2,
            labels: HashMap::from([("a".into(), "b".into())]),
            annotations: HashMap::new(),
            spec: spec.clone(),
            want_boot: true,
            vmm: None,
            disks: vec![],
            state: 0,
            volume_status: vec![],
            nic_status: vec![],
            seq: 0,
        };
        store
            .write("abc", &Store::encode(&record))
            .unwrap_or_else(|e| panic!("{e}"));
        let all = store.load_all().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].spec, spec);
        assert_eq!(all[0].labels, record.labels);
        let mode = fs::metadata(dir.path().join("m/abc.json"))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_default();
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_newer_of_durable_and_volatile_wins_and_a_torn_volatile_is_ignored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path().join("m")).unwrap_or_else(|e| panic!("{e}"));
        let record = |seq: u64, state: i32| MachineRecord {
            id: "abc".into(),
            created_at: 1,
            deleted_at: 0,
            generation: 0,
            observed_generation: 0,
            labels: HashMap::new(),
            annotations: HashMap::new(),
            spec: machine::MachineSpec::default(),
            want_boot: false,
            vmm: None,
            disks: vec![],
            state,
            volume_status: vec![],
            nic_status: vec![],
            seq,
        };
        let load = |store: &Store| {
            let all = store.load_all().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(all.len(), 1);
            (all[0].seq, all[0].state)
        };
        let ok = |r: Result<()>| r.unwrap_or_else(|e| panic!("{e}"));
        ok(store.write("abc", &Store::encode(&record(1, 0))));
        assert_eq!(load(&store), (1, 0));
        ok(store.write_volatile("abc", &Store::encode(&record(2, 2))));
        assert_eq!(load(&store), (2, 2), "the newer volatile write");
        ok(store.write("abc", &Store::encode(&record(3, 1))));
        assert_eq!(load(&store), (3, 1), "a later durable write");
        // A volatile file torn by a host crash.
        ok(store.write_volatile("abc", b"{\"id\": \"abc\", \"se"));
        assert_eq!(load(&store), (3, 1));
        ok(store.remove("abc"));
        assert!(
            store
                .load_all()
                .unwrap_or_else(|e| panic!("{e}"))
                .is_empty()
        );
        assert!(!dir.path().join("m/abc.json.vol").exists());
    }
}
