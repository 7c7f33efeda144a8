//! Machine state on disk: one JSON file per machine, written atomically (tmp + fsync + rename).
//! Reservations (irikit's extension) are kept the same way, one file each in their own
//! directory.
//!
//! A machine's first durable write (the one CreateMachine answers after) goes to a spare
//! file instead ([`Store::open_with_spares`]): one made ahead, already as long as a record may
//! be, zero-filled and synced with its directory. Writing the record over its start and
//! `fdatasync` then changes no file system metadata, so it does not wait for a journal commit
//! (the tmp + fsync + rename + directory fsync did, together with every other pending
//! metadata change on the disk: 2.5 to 5 ms while VMMs start next to it). The spare is then
//! cut to the record's length and renamed to `<id>.json`; neither needs to be durable: after
//! a host crash [`Store::open_with_spares`] finds the record in a `.spare-` file (not yet
//! renamed) or zero padding after it (not yet cut), and adopts or trims it.
//!
//! The IRI `MachineSpec` is kept verbatim as base64 protobuf (`spec`), so every field the
//! poollet sent (including ones this runtime does not act on) comes back unchanged after a
//! restart. The file is mode 0600: it may hold ignition and volume secrets.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
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
    /// Spare files for first writes (machine records only).
    spares: Option<Arc<Spares>>,
}

/// Length of a spare file: the longest record a first write puts there (longer ones take the
/// tmp + rename path).
const SPARE_BYTES: usize = 64 << 10;
/// Spare files kept ready.
const SPARES: usize = 2;
/// Name prefix of a spare file (dot-files are not records to [`Store::load_all`]).
const SPARE_PREFIX: &str = ".spare-";

/// The spare files of a [`Store`] and their refill.
#[derive(Debug, Default)]
struct Spares {
    ready: Mutex<Vec<PathBuf>>,
    refilling: AtomicBool,
    next: AtomicU64,
}

impl Spares {
    fn ready(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `bytes` without the zero padding a spare file leaves after a record that a crash kept
/// from being cut to length (JSON never ends with a NUL).
fn without_padding(bytes: &mut Vec<u8>) {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    bytes.truncate(end);
}

/// Whether `id` can name a record file (one path component, no dot-file).
fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
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
        Ok(Self { dir, spares: None })
    }

    /// Open (create) `dir` for machine records, whose first durable writes go to spare files
    /// (module documentation). Spares left by a host crash are adopted first: one holding a
    /// record becomes (or, when newer, replaces) `<id>.json`; a torn one is removed. Then
    /// [`SPARES`] are made ready.
    pub fn open_with_spares(dir: PathBuf) -> Result<Self> {
        let mut store = Self::open(dir)?;
        let spares = Arc::new(Spares::default());
        store.spares = Some(Arc::clone(&spares));
        let entries = fs::read_dir(&store.dir).map_err(|source| Error::Io {
            what: "read store dir",
            path: store.dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(SPARE_PREFIX)
            {
                store.adopt_spare(&entry.path())?;
            }
        }
        store.sync_dir();
        while spares.ready().len() < SPARES {
            let spare = store.make_spare()?;
            spares.ready().push(spare);
        }
        Ok(store)
    }

    /// What a spare file found at start holds: nothing (kept as a spare), a record (renamed
    /// to its `<id>.json` unless that one is as new), or torn bytes (removed).
    fn adopt_spare(&self, path: &Path) -> Result<()> {
        let io = |what, source| Error::Io {
            what,
            path: path.to_owned(),
            source,
        };
        let mut bytes = fs::read(path).map_err(|e| io("read spare", e))?;
        let full = bytes.len() == SPARE_BYTES;
        without_padding(&mut bytes);
        if bytes.is_empty() && full {
            if let Some(spares) = &self.spares {
                spares.ready().push(path.to_owned());
            }
            return Ok(());
        }
        let record = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
        let id = record.as_ref().and_then(|v| v["id"].as_str()).unwrap_or("");
        if !is_plain_id(id) {
            // Torn by the crash (the create it held was never answered), or not ours.
            return fs::remove_file(path).map_err(|e| io("remove torn spare", e));
        }
        let seq = |v: &serde_json::Value| v["seq"].as_u64().unwrap_or(0);
        let newer = record.as_ref().map_or(0, seq);
        let target = self.path(id);
        let existing = fs::read(&target).ok().and_then(|mut b| {
            without_padding(&mut b);
            serde_json::from_slice::<serde_json::Value>(&b).ok()
        });
        if existing.is_some_and(|v| seq(&v) >= newer) {
            return fs::remove_file(path).map_err(|e| io("remove adopted spare", e));
        }
        // Cut to the record (the bytes before stay as they are: a crash here loses nothing).
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(bytes.len() as u64))
            .map_err(|e| io("trim spare", e))?;
        fs::rename(path, &target).map_err(|e| io("adopt spare", e))
    }

    /// A new spare: [`SPARE_BYTES`] zeros, 0600, synced with its directory.
    fn make_spare(&self) -> Result<PathBuf> {
        let next = || {
            self.spares
                .as_ref()
                .map_or(0, |s| s.next.fetch_add(1, Ordering::Relaxed))
        };
        let (path, mut f) = loop {
            // A name no spare has (one adopted at start may have this process's pid).
            let path = self
                .dir
                .join(format!("{SPARE_PREFIX}{}-{}", std::process::id(), next()));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(Error::Io {
                        what: "create spare",
                        path,
                        source,
                    });
                }
            }
        };
        let io = |what, source| Error::Io {
            what,
            path: path.clone(),
            source,
        };
        f.write_all(&[0u8; SPARE_BYTES])
            .map_err(|e| io("write spare", e))?;
        f.sync_all().map_err(|e| io("fsync spare", e))?;
        drop(f);
        self.sync_dir();
        Ok(path)
    }

    /// Make the spares ready again, on a thread of its own (one at a time).
    fn refill(&self) {
        let Some(spares) = self.spares.clone() else {
            return;
        };
        if spares.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        std::thread::spawn(move || {
            while spares.ready().len() < SPARES {
                match store.make_spare() {
                    Ok(spare) => spares.ready().push(spare),
                    Err(e) => {
                        tracing::warn!(error = %e, "make a spare record file");
                        break;
                    }
                }
            }
            spares.refilling.store(false, Ordering::Release);
        });
    }

    /// The first durable write of `id` into a spare, if one is ready and the record fits:
    /// whether it was written.
    fn write_spare(&self, id: &str, bytes: &[u8]) -> bool {
        let Some(spares) = &self.spares else {
            return false;
        };
        if bytes.len() > SPARE_BYTES || self.path(id).exists() {
            return false;
        }
        let Some(spare) = spares.ready().pop() else {
            return false;
        };
        let written = (|| -> std::io::Result<()> {
            let f = fs::OpenOptions::new().write(true).open(&spare)?;
            f.write_all_at(bytes, 0)?;
            f.sync_data()?;
            // Neither needs to be durable (module documentation).
            f.set_len(bytes.len() as u64)?;
            fs::rename(&spare, self.path(id))
        })();
        if let Err(e) = &written {
            tracing::warn!(error = %e, "write a record into a spare file; writing it anew");
            let _ = fs::remove_file(&spare);
        }
        self.refill();
        written.is_ok()
    }

    fn sync_dir(&self) {
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
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

    /// Write bytes for `id` durably and atomically: the first write into a spare file where
    /// there is one (module documentation), any other by tmp file, fsync, rename, fsync dir.
    pub fn write(&self, id: &str, bytes: &[u8]) -> Result<()> {
        if self.write_spare(id, bytes) {
            return Ok(());
        }
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        replace(&tmp, &self.path(id), bytes, true)?;
        self.sync_dir();
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
            let mut bytes = fs::read(&path).map_err(|source| Error::Io {
                what: "read",
                path: path.clone(),
                source,
            })?;
            without_padding(&mut bytes);
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
            state,
            ..bare_record("abc", seq)
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

    fn bare_record(id: &str, seq: u64) -> MachineRecord {
        MachineRecord {
            id: id.into(),
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
            state: 0,
            volume_status: vec![],
            nic_status: vec![],
            seq,
        }
    }

    fn spare_files(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(SPARE_PREFIX))
            })
            .collect();
        out.sort();
        out
    }

    fn seqs(store: &Store) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = store
            .load_all()
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.seq))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_first_write_goes_to_a_spare_and_becomes_the_plain_record_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        let store = Store::open_with_spares(m.clone()).unwrap();
        let spares = spare_files(&m);
        assert_eq!(spares.len(), SPARES, "{spares:?}");
        let bytes = Store::encode(&bare_record("abc", 1));
        store.write("abc", &bytes).unwrap();
        // The spare was renamed and cut: `<id>.json` is the record and nothing else, 0600.
        assert_eq!(fs::read(m.join("abc.json")).unwrap(), bytes);
        let mode = fs::metadata(m.join("abc.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(spares.iter().filter(|p| p.exists()).count() < SPARES);
        // A later write of the same machine replaces the file the usual way.
        store
            .write("abc", &Store::encode(&bare_record("abc", 2)))
            .unwrap();
        assert_eq!(seqs(&store), vec![("abc".to_owned(), 2)]);
        // The spares are made ready again behind the writes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while spare_files(&m).len() < SPARES {
            assert!(std::time::Instant::now() < deadline, "no spare made again");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // A record longer than a spare takes the tmp + rename path.
        let mut big = bare_record("big", 1);
        big.labels.insert("pad".into(), "x".repeat(SPARE_BYTES + 1));
        store.write("big", &Store::encode(&big)).unwrap();
        assert_eq!(fs::read(m.join("big.json")).unwrap(), Store::encode(&big));
    }

    /// What a host crash may leave of first writes into spares, and what a restart makes of
    /// it: nothing stored is lost, nothing torn is loaded.
    #[test]
    fn a_restart_adopts_the_records_a_crash_left_in_spares() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        fs::create_dir_all(&m).unwrap();
        let padded = |record: &MachineRecord| {
            let mut bytes = Store::encode(record);
            bytes.resize(SPARE_BYTES, 0);
            bytes
        };
        // Written and synced, the rename lost.
        fs::write(m.join(".spare-1-0"), padded(&bare_record("kept", 1))).unwrap();
        // Renamed, the cut lost.
        fs::write(m.join("cut.json"), padded(&bare_record("cut", 1))).unwrap();
        // Torn: the crash came during the write (the create was never answered).
        let mut torn = padded(&bare_record("torn", 1));
        torn[20..].fill(0);
        torn[40] = b'x';
        fs::write(m.join(".spare-1-1"), torn).unwrap();
        // Older than the record file that a later write made (both renames lost: not
        // possible on a journalled file system, but the newer must win anyway).
        fs::write(m.join(".spare-1-2"), padded(&bare_record("newer", 1))).unwrap();
        fs::write(
            m.join("newer.json"),
            Store::encode(&bare_record("newer", 5)),
        )
        .unwrap();
        // Never used.
        fs::write(m.join(".spare-1-3"), vec![0u8; SPARE_BYTES]).unwrap();
        // A name that would leave the directory.
        let mut escape = bare_record("../x", 1);
        escape.id = "../x".into();
        fs::write(m.join(".spare-1-4"), padded(&escape)).unwrap();

        let store = Store::open_with_spares(m.clone()).unwrap();
        assert_eq!(
            seqs(&store),
            vec![
                ("cut".to_owned(), 1),
                ("kept".to_owned(), 1),
                ("newer".to_owned(), 5)
            ]
        );
        assert_eq!(
            fs::read(m.join("kept.json")).unwrap(),
            Store::encode(&bare_record("kept", 1)),
            "adopted and cut to length"
        );
        assert!(!dir.path().join("x.json").exists());
        // The unused spare is kept; the others are gone; as many as wanted are ready.
        let spares = spare_files(&m);
        assert!(spares.contains(&m.join(".spare-1-3")), "{spares:?}");
        for gone in [".spare-1-0", ".spare-1-1", ".spare-1-2", ".spare-1-4"] {
            assert!(!m.join(gone).exists(), "{gone}");
        }
        assert_eq!(spares.len(), SPARES);
    }
}
