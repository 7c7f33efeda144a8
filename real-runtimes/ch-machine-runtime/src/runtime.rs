//! The machine runtime core: desired state from IRI calls, observed state from the VMM.
//!
//! Each machine has a record (persisted, see [`crate::store`]) and one worker task that
//! reconciles it: prepare disks, spawn the VMM, create/boot the VM, hot-plug disks and NICs,
//! power off, tear down on delete. The state reported to IRI is what the VMM says
//! (`vm.info`, or "process gone"), never the desired spec. RPC handlers only validate,
//! update the record, persist it and wake the worker.
//!
//! [`reservation`] adds irikit's reservation extension: capacity holds that `CreateMachine`
//! consumes or respects.

mod reservation;

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use iri_spec::{event::v1alpha1 as event, machine::v1alpha1 as machine, meta::v1alpha1 as meta};
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::{
    config::{Config, HostResources, NicMode},
    console::{self, Consoles},
    store::{self, DeviceStatus, MachineRecord, PreparedDisk, Store},
    validate,
    vmm::{
        self, DiskSpec, ImageFormat, NicSpec, VmInfo, VmPaths, VmSpec, VmState, Vmm, VmmProcess,
    },
};

/// Errors of runtime operations; `crate::server` maps each to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No machine with that id.
    #[error("machine {0:?} not found")]
    MachineNotFound(String),
    /// No volume or NIC with that name.
    #[error("{kind} {name:?} not found in machine {machine_id:?}")]
    DeviceNotFound {
        /// `volume` or `network interface`.
        kind: &'static str,
        /// The name.
        name: String,
        /// The machine.
        machine_id: String,
    },
    /// A volume or NIC with that name already exists.
    #[error("{kind} {name:?} already exists in machine {machine_id:?}")]
    DeviceExists {
        /// `volume` or `network interface`.
        kind: &'static str,
        /// The name.
        name: String,
        /// The machine.
        machine_id: String,
    },
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A name or path failed confinement.
    #[error(transparent)]
    Confinement(#[from] validate::Error),
    /// A size no VMM or host can provide.
    #[error("{0}")]
    OutOfRange(String),
    /// More devices than the VMM has slots for.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The machine is being deleted.
    #[error("machine {0:?} is being deleted")]
    Deleting(String),
    /// A NIC was asked for but this runtime cannot create tap devices.
    #[error(
        "network interfaces are not supported here: the runtime cannot create tap devices \
         (it needs root or CAP_NET_ADMIN and /dev/net/tun; started with --nic-mode none or \
         without them)"
    )]
    NicsUnsupported,
    /// No reservation with that id.
    #[error("reservation {0:?} not found")]
    ReservationNotFound(String),
    /// A machine names a reservation it cannot consume.
    #[error("{0}")]
    Reservation(String),
    /// Persisting state failed.
    #[error("persist machine state")]
    Store(#[from] store::Error),
    /// The Exec console endpoint could not be bound.
    #[error("bind the console endpoint")]
    ConsoleBind(#[source] std::io::Error),
    /// Exec: the machine's console is not available (no VMM runs it).
    #[error(transparent)]
    ConsoleUnavailable(console::Error),
    /// Exec: a console of the machine is open.
    #[error(transparent)]
    ConsoleBusy(console::Error),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

const MAX_EVENTS: usize = 4096;
const TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// How long the same failure of a machine stays one event.
const WARNING_REPEAT: Duration = Duration::from_secs(600);

/// Logs how long one step of a machine's way to RUNNING took (target
/// `ch_machine_runtime::timing`, level debug): `RUST_LOG=ch_machine_runtime::timing=debug`
/// shows where a CreateMachine's time goes (`ch-runtime-bench --runtime-log` passes it on).
fn timed(step: &'static str, since: Instant) {
    debug!(
        target: "ch_machine_runtime::timing",
        step,
        us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
    );
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn new_id() -> String {
    loop {
        let id = format!("{:032x}", rand::random::<u128>());
        // IronCore's idgen never starts ids with 12 digits; neither do we.
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

/// The VMM device id for a volume. An attachment that continues keeps the id it was given
/// (`previous`); a new one gets the volume name plus the spec generation that attached it.
/// Cloud Hypervisor keeps a hot-unplugged device's id reserved (and its image locked) until the
/// guest acknowledges the eject, which a guest without ACPI hot-plug never does, so re-using
/// `vol-<name>` after a detach would fail with "Invalid identifier as it is not unique".
fn disk_id(volume_name: &str, generation: i64, previous: Option<&PreparedDisk>) -> String {
    previous.map_or_else(
        || format!("vol-{volume_name}-{generation}"),
        |d| d.disk.id.clone(),
    )
}

fn nic_id(nic_name: &str) -> String {
    format!("nic-{nic_name}")
}

/// A locally administered unicast MAC derived from machine id and NIC name.
fn nic_mac(machine_id: &str, nic_name: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    machine_id.hash(&mut h);
    nic_name.hash(&mut h);
    let b = h.finish().to_be_bytes();
    format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// The host tap device for a NIC: `prefix` plus 8 hex digits of a hash of machine id and NIC
/// name (Linux allows 15 characters; the prefix has at most 7).
fn tap_name(prefix: &str, machine_id: &str, nic_name: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    "tap".hash(&mut h);
    machine_id.hash(&mut h);
    nic_name.hash(&mut h);
    format!("{prefix}{:08x}", h.finish() & 0xffff_ffff)
}

/// The machine id as a UUID string for the VM platform (first 32 hex digits).
fn platform_uuid(id: &str) -> String {
    let hex: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(32)
        .collect();
    let hex = format!("{hex:0<32}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether a machine's record has reached the disk durably (its CreateMachine's write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// The create's durable write is under way (the worker starts the VMM meanwhile).
    Pending,
    /// Written.
    Yes,
    /// The write failed: the machine is torn down and never listed.
    Failed,
}

/// How far a write of a machine's record must get before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// fsync'ed (file and directory): what a client asked for (create, delete, power,
    /// annotations, devices), which must survive a host crash once answered.
    Durable,
    /// Renamed into place without fsync: what the runtime observed (VMM pid, states, statuses,
    /// prepared disks). Survives a kill -9 of the runtime; after a host crash no VMM survives
    /// and all of it is observed again.
    Volatile,
}

struct Entry {
    record: Mutex<MachineRecord>,
    /// Orders the writes of the durable file and, apart, those of the volatile one.
    persist: [tokio::sync::Mutex<()>; 2],
    stored: tokio::sync::watch::Sender<Stored>,
    wake: Notify,
    /// The last Warning event recorded for this machine: (reason, message, when).
    last_warning: Mutex<Option<(String, String, std::time::Instant)>>,
}

impl Entry {
    fn snapshot(&self) -> MachineRecord {
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn new(record: MachineRecord, stored: Stored) -> Self {
        Entry {
            record: Mutex::new(record),
            persist: [tokio::sync::Mutex::new(()), tokio::sync::Mutex::new(())],
            stored: tokio::sync::watch::Sender::new(stored),
            wake: Notify::new(),
            last_warning: Mutex::new(None),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut MachineRecord) -> R) -> R {
        let mut guard = self
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

struct Inner {
    cfg: Config,
    host: HostResources,
    vmm: Arc<dyn Vmm>,
    store: Store,
    reservations: reservation::Reservations,
    machines: Mutex<HashMap<String, Arc<Entry>>>,
    events: Mutex<VecDeque<event::Event>>,
    token: CancellationToken,
    tracker: TaskTracker,
    consoles: Consoles,
}

/// How long a boot waits for the console pump to reach the VM's serial socket.
const CONSOLE_CONNECT: Duration = Duration::from_secs(2);

/// The runtime. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("state_dir", &self.inner.cfg.state_dir)
            .finish_non_exhaustive()
    }
}

/// The IRI state for what the VMM reports (`None`: no VMM or no VM).
fn observed_state(vm: Option<VmState>, want_boot: bool) -> machine::MachineState {
    match vm {
        Some(VmState::Running) => machine::MachineState::MachineRunning,
        Some(VmState::Paused) => machine::MachineState::MachineSuspended,
        _ if want_boot => machine::MachineState::MachinePending,
        _ => machine::MachineState::MachineTerminated,
    }
}

/// What `validate_volume` resolved.
enum VolumeSource {
    File(PathBuf, ImageFormat),
    Local { image: Option<PathBuf>, size: u64 },
}

impl Runtime {
    /// Load the stored machines, adopt VMMs that still run, and start a worker per machine.
    pub async fn start(cfg: Config, vmm: Arc<dyn Vmm>, token: CancellationToken) -> Result<Self> {
        let store = Store::open(cfg.state_dir.join("machines"))?;
        let records = store.load_all()?;
        let reservations = reservation::Reservations::open(cfg.state_dir.join("reservations"))?;
        let consoles =
            Consoles::bind(cfg.console_listen, token.child_token()).map_err(Error::ConsoleBind)?;
        let inner = Arc::new(Inner {
            consoles,
            host: HostResources::probe(),
            cfg,
            vmm,
            store,
            reservations,
            machines: Mutex::new(HashMap::new()),
            events: Mutex::new(VecDeque::new()),
            token,
            tracker: TaskTracker::new(),
        });
        let runtime = Self { inner };
        runtime.sweep_orphans(&records).await;
        runtime.bind_named_at_start(&records);
        for mut record in records {
            if let Some(process) = record.vmm.clone() {
                let adopted = process.is_alive()
                    && match runtime.inner.vmm.ping(&process).await {
                        Ok(Some(pid)) => pid == i64::from(process.pid),
                        Ok(None) => true,
                        Err(_) => false,
                    };
                if adopted {
                    info!(machine.id = %record.id, pid = process.pid, "adopted running vmm");
                } else {
                    info!(machine.id = %record.id, pid = process.pid, "vmm no longer running");
                    record.vmm = None;
                }
            }
            if record.vmm.is_none() {
                // A VMM whose pid never reached the record (killed between its start and the
                // write) would run beside the one the worker starts now: it goes first.
                let dir = runtime.vm_dir(&record.id);
                let left = crate::vmm::kill_processes_in(&dir, TERMINATE_GRACE).await;
                if !left.is_empty() {
                    warn!(machine.id = %record.id, ?left, "unknown vmm processes survived");
                }
            }
            // The stored state may predate the last change (it is written after clients could
            // already see it, and a kill -9 can come in between): what the VMM reports now
            // wins, before the machine is listed again.
            if record.deleted_at == 0 {
                let vm_state = match &record.vmm {
                    Some(process) => runtime.inner.vmm.info(process).await.ok().map(|i| i.state),
                    None => None,
                };
                record.state = observed_state(vm_state, record.want_boot) as i32;
            }
            let entry = Arc::new(Entry::new(record.clone(), Stored::Yes));
            runtime.persist(&entry, Durability::Volatile).await?;
            runtime
                .lock_machines()
                .insert(record.id.clone(), Arc::clone(&entry));
            runtime.spawn_worker(record.id, entry);
        }
        Ok(runtime)
    }

    /// Kills the VMMs of machine directories no stored machine owns, and removes those
    /// directories: a runtime killed after starting a machine's VMM but before its
    /// CreateMachine's durable write (the two overlap) left a machine nobody was told about.
    async fn sweep_orphans(&self, records: &[MachineRecord]) {
        let vms = self.inner.cfg.state_dir.join("vms");
        let Ok(dirs) = std::fs::read_dir(&vms) else {
            return;
        };
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            if records.iter().any(|r| r.id == name) {
                continue;
            }
            let path = dir.path();
            let left = crate::vmm::kill_processes_in(&path, TERMINATE_GRACE).await;
            warn!(machine.id = %name, ?left, "killed the vmm of an unknown machine; removing its dir");
            let _ = tokio::task::spawn_blocking(move || remove_dir(&path)).await;
        }
    }

    fn lock_machines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.inner
            .machines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>> {
        self.lock_machines()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::MachineNotFound(id.to_owned()))
    }

    fn vm_dir(&self, id: &str) -> PathBuf {
        self.inner.cfg.state_dir.join("vms").join(id)
    }

    /// Writes the machine's record: a snapshot with the next `seq`, to the durable or the
    /// volatile file (the two writes may overlap; the loader takes the higher `seq`).
    async fn persist(&self, entry: &Entry, durability: Durability) -> Result<()> {
        let lock = match durability {
            Durability::Durable => &entry.persist[0],
            Durability::Volatile => &entry.persist[1],
        };
        let _guard = lock.lock().await;
        let (id, bytes) = entry.with(|r| {
            r.seq += 1;
            (r.id.clone(), Store::encode(r))
        });
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || match durability {
            Durability::Durable => store.write(&id, &bytes),
            Durability::Volatile => store.write_volatile(&id, &bytes),
        })
        .await
        .map_err(|e| store::Error::Io {
            what: "persist task",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })??;
        Ok(())
    }

    fn spawn_worker(&self, id: String, entry: Arc<Entry>) {
        if entry.with(|r| r.deleted_at == 0) {
            self.inner
                .consoles
                .ensure(&id, &VmPaths::new(&self.vm_dir(&id)));
        }
        let runtime = self.clone();
        let span = info_span!("machine", machine.id = %id);
        self.inner.tracker.spawn(
            async move {
                loop {
                    if runtime.reconcile(&entry).await {
                        break;
                    }
                    tokio::select! {
                        () = entry.wake.notified() => {}
                        () = tokio::time::sleep(runtime.inner.cfg.resync_interval) => {}
                        () = runtime.inner.token.cancelled() => break,
                    }
                }
            }
            .instrument(span),
        );
    }

    fn record_event(
        &self,
        record: &MachineRecord,
        kind: &str,
        reason: &str,
        action: &str,
        message: String,
    ) {
        let ev = event::Event {
            spec: Some(event::EventSpec {
                involved_object_meta: Some(Self::metadata(record)),
                reason: reason.to_owned(),
                message,
                r#type: kind.to_owned(),
                event_time: now_ns() / 1_000_000_000,
                action: action.to_owned(),
            }),
        };
        let mut events = self
            .inner
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if events.len() >= MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(ev);
    }

    /// A Warning event, unless the same (reason, message) was the machine's last warning less
    /// than [`WARNING_REPEAT`] ago: a machine that keeps failing at every reconcile yields one
    /// event per distinct failure, not one per resync.
    fn warning_event(
        &self,
        entry: &Entry,
        record: &MachineRecord,
        reason: &str,
        action: &str,
        message: String,
    ) {
        let now = std::time::Instant::now();
        let repeated = {
            let mut last = entry
                .last_warning
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let repeated = last.as_ref().is_some_and(|(r, m, at)| {
                r == reason && *m == message && now.duration_since(*at) < WARNING_REPEAT
            });
            if !repeated {
                *last = Some((reason.to_owned(), message.clone(), now));
            }
            repeated
        };
        if !repeated {
            self.record_event(record, "Warning", reason, action, message);
        }
    }

    fn metadata(record: &MachineRecord) -> meta::ObjectMetadata {
        meta::ObjectMetadata {
            id: record.id.clone(),
            annotations: record.annotations.clone(),
            labels: record.labels.clone(),
            generation: record.generation,
            created_at: record.created_at,
            deleted_at: record.deleted_at,
        }
    }

    fn to_proto(record: &MachineRecord) -> machine::Machine {
        let status = |d: &DeviceStatus| (d.name.clone(), d.handle.clone(), i32::from(d.attached));
        machine::Machine {
            metadata: Some(Self::metadata(record)),
            spec: Some(record.spec.clone()),
            status: Some(machine::MachineStatus {
                observed_generation: record.observed_generation,
                state: record.state,
                image_ref: String::new(),
                volumes: record
                    .volume_status
                    .iter()
                    .map(status)
                    .map(|(name, handle, state)| machine::VolumeStatus {
                        name,
                        handle,
                        state,
                    })
                    .collect(),
                network_interfaces: record
                    .nic_status
                    .iter()
                    .map(status)
                    .map(|(name, handle, state)| machine::NetworkInterfaceStatus {
                        name,
                        handle,
                        state,
                    })
                    .collect(),
                machine_conditions: Vec::new(),
            }),
        }
    }

    // ---- validation -------------------------------------------------------------------

    fn validate_volume(&self, volume: &machine::Volume) -> Result<VolumeSource> {
        validate::name("volume name", &volume.name)?;
        match (&volume.local_disk, &volume.connection) {
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "volume {:?} sets both local_disk and connection",
                volume.name
            ))),
            (None, None) => Err(Error::InvalidArgument(format!(
                "volume {:?} sets neither local_disk nor connection",
                volume.name
            ))),
            (None, Some(conn)) => {
                if conn.driver != "local-file" {
                    return Err(Error::InvalidArgument(format!(
                        "volume {:?}: driver {:?} is not supported (only local-file)",
                        volume.name, conn.driver
                    )));
                }
                let path = validate::confined_file(
                    "volume handle",
                    &conn.handle,
                    &self.inner.cfg.volume_dirs,
                )?;
                // The format is what the volume runtime reports (`format` access attribute,
                // passed through by the poollet), never the file's bytes: the guest writes them.
                let attribute = conn.attributes.get("format").map(String::as_str);
                let format = ImageFormat::from_attribute(attribute).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "volume {:?}: format attribute {:?} is not supported (raw or qcow2)",
                        volume.name,
                        attribute.unwrap_or_default()
                    ))
                })?;
                Ok(VolumeSource::File(path, format))
            }
            (Some(disk), None) => {
                if disk.size_bytes < 0 {
                    return Err(Error::InvalidArgument(format!(
                        "volume {:?}: size_bytes must not be negative",
                        volume.name
                    )));
                }
                let image = match disk.image.as_ref().map(|i| i.image.as_str()) {
                    Some(image) if !image.is_empty() => Some(validate::confined_file(
                        "local disk image",
                        image,
                        &self.inner.cfg.image_dirs,
                    )?),
                    _ => None,
                };
                let size = u64::try_from(disk.size_bytes).unwrap_or_default();
                let max = self.max_local_disk_bytes();
                if size > max {
                    return Err(Error::OutOfRange(format!(
                        "volume {:?}: local disk of {size} bytes is larger than the {max} bytes \
                         the state directory's filesystem can hold",
                        volume.name
                    )));
                }
                Ok(VolumeSource::Local {
                    image,
                    size: if size == 0 && image_is_none(&disk.image) {
                        self.inner.cfg.default_local_disk_bytes
                    } else {
                        size
                    },
                })
            }
        }
    }

    /// The largest local disk: the size of the filesystem holding the state directory (a
    /// sparse file can be created larger, but never filled).
    fn max_local_disk_bytes(&self) -> u64 {
        rustix::fs::statvfs(&self.inner.cfg.state_dir)
            .map_or(u64::MAX, |s| s.f_blocks.saturating_mul(s.f_frsize))
    }

    /// Refuse more disks plus NICs than the VMM has device slots (libvirt-provider answers
    /// ResourceExhausted for too many PCI devices too, reference §2.1).
    fn check_device_count(&self, volumes: usize, nics: usize) -> Result<()> {
        let max = self.inner.vmm.max_devices();
        if volumes.saturating_add(nics) > max {
            return Err(Error::ResourceExhausted(format!(
                "{volumes} volumes and {nics} network interfaces need more than the {max} \
                 device slots {} has per machine",
                self.inner.vmm.name()
            )));
        }
        Ok(())
    }

    /// NICs are refused, never left `Pending` forever, when no tap device can be made.
    fn nics_supported(&self) -> Result<()> {
        if self.inner.cfg.nic_mode == NicMode::Tap {
            Ok(())
        } else {
            Err(Error::NicsUnsupported)
        }
    }

    fn validate_nic(nic: &machine::NetworkInterface) -> Result<()> {
        validate::name("network interface name", &nic.name)?;
        Ok(())
    }

    fn validate_spec(&self, spec: &machine::MachineSpec) -> Result<()> {
        if spec.class.is_empty() {
            return Err(Error::InvalidArgument("spec.class is required".into()));
        }
        if !self.inner.cfg.classes.iter().any(|c| c.name == spec.class) {
            return Err(Error::InvalidArgument(format!(
                "machine class {:?} is not supported",
                spec.class
            )));
        }
        if machine::Power::try_from(spec.power).is_err() {
            return Err(Error::InvalidArgument(format!(
                "power {} is not a valid value",
                spec.power
            )));
        }
        self.check_device_count(spec.volumes.len(), spec.network_interfaces.len())?;
        let mut names = std::collections::HashSet::new();
        for volume in &spec.volumes {
            self.validate_volume(volume)?;
            if !names.insert(volume.name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "volume name {:?} is used twice",
                    volume.name
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for nic in &spec.network_interfaces {
            Self::validate_nic(nic)?;
            if !names.insert(nic.name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "network interface name {:?} is used twice",
                    nic.name
                )));
            }
        }
        if !spec.network_interfaces.is_empty() {
            self.nics_supported()?;
        }
        Ok(())
    }

    // ---- RPCs ---------------------------------------------------------------------------

    /// `CreateMachine`: validate, assign an id, persist, start the worker; returns PENDING.
    pub async fn create(&self, request: Option<machine::Machine>) -> Result<machine::Machine> {
        let request =
            request.ok_or_else(|| Error::InvalidArgument("machine is required".into()))?;
        let spec = request
            .spec
            .ok_or_else(|| Error::InvalidArgument("machine.spec is required".into()))?;
        self.validate_spec(&spec)?;
        let meta = request.metadata.unwrap_or_default();
        // Held until the machine is in the map, so a racing reservation or machine sees it.
        let mut admission = Some(self.inner.reservations.admission.lock().await);
        let consumes = self.admit(&meta, &spec)?;
        let id = new_id();
        let record = MachineRecord {
            id: id.clone(),
            created_at: now_ns(),
            deleted_at: 0,
            generation: 0,
            observed_generation: 0,
            labels: meta.labels,
            annotations: meta.annotations,
            want_boot: spec.power == machine::Power::On as i32,
            volume_status: spec
                .volumes
                .iter()
                .map(|v| DeviceStatus {
                    name: v.name.clone(),
                    handle: String::new(),
                    attached: false,
                })
                .collect(),
            nic_status: spec
                .network_interfaces
                .iter()
                .map(|n| DeviceStatus {
                    name: n.name.clone(),
                    handle: String::new(),
                    attached: false,
                })
                .collect(),
            seq: 0,
            spec,
            vmm: None,
            disks: Vec::new(),
            state: machine::MachineState::MachinePending as i32,
        };
        let entry = Arc::new(Entry::new(record.clone(), Stored::Pending));
        self.lock_machines().insert(id.clone(), Arc::clone(&entry));
        // The worker starts the VMM while the record is made durable: it writes nothing (and
        // boots nothing) before that write is done, and tears the machine down if it fails.
        self.spawn_worker(id.clone(), Arc::clone(&entry));
        if consumes.is_none() {
            // The machine is in the map (it counts for admission from now on).
            admission = None;
        }
        let t = Instant::now();
        let written = self.persist(&entry, Durability::Durable).await;
        timed("create.persist", t);
        if let Err(e) = written {
            entry.with(|r| r.deleted_at = now_ns());
            entry.stored.send_replace(Stored::Failed);
            entry.wake.notify_one();
            return Err(e);
        }
        entry.stored.send_replace(Stored::Yes);
        if let Some(reservation) = consumes {
            self.bind(&reservation, &id).await;
        }
        drop(admission);
        info!(machine.id = %id, class = %record.spec.class, "machine created");
        self.record_event(
            &record,
            "Normal",
            "Created",
            "Create",
            "machine created".into(),
        );
        Ok(Self::to_proto(&record))
    }

    /// `ListMachines`.
    pub fn list(&self, filter: Option<&machine::MachineFilter>) -> Vec<machine::Machine> {
        let entries: Vec<Arc<Entry>> = {
            let machines = self.lock_machines();
            match filter.map(|f| f.id.as_str()).filter(|id| !id.is_empty()) {
                Some(id) => machines.get(id).cloned().into_iter().collect(),
                None => machines.values().cloned().collect(),
            }
        };
        // A machine is listed once its CreateMachine's write is done.
        let entries = entries
            .into_iter()
            .filter(|e| *e.stored.borrow() == Stored::Yes);
        let mut records: Vec<MachineRecord> = entries
            .map(|entry| {
                let mut record = entry.snapshot();
                // A VMM that died since the last probe is reported at once.
                if record.state == machine::MachineState::MachineRunning as i32
                    && !record.vmm.as_ref().is_some_and(VmmProcess::is_alive)
                {
                    record.state = machine::MachineState::MachineTerminated as i32;
                    entry.wake.notify_one();
                }
                record
            })
            .filter(|r| {
                filter.is_none_or(|f| iri_spec::selector::matches(&f.label_selector, &r.labels))
            })
            .collect();
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        records.iter().map(Self::to_proto).collect()
    }

    /// `DeleteMachine`: mark deleting (TERMINATING), the worker tears down and forgets it.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let entry = self.entry(id)?;
        let first = entry.with(|r| {
            if r.deleted_at != 0 {
                return None;
            }
            r.deleted_at = now_ns();
            r.state = machine::MachineState::MachineTerminating as i32;
            Some(r.clone())
        });
        if let Some(record) = first {
            self.persist(&entry, Durability::Durable).await?;
            info!(machine.id = %id, "machine deleting");
            self.record_event(
                &record,
                "Normal",
                "Deleting",
                "Delete",
                "machine deleting".into(),
            );
        }
        entry.wake.notify_one();
        Ok(())
    }

    async fn mutate(
        &self,
        id: &str,
        f: impl FnOnce(&mut MachineRecord) -> Result<bool>,
    ) -> Result<()> {
        let entry = self.entry(id)?;
        let changed = entry.with(|r| {
            if r.deleted_at != 0 {
                return Err(Error::Deleting(r.id.clone()));
            }
            f(r)
        })?;
        if changed {
            self.persist(&entry, Durability::Durable).await?;
            entry.wake.notify_one();
        }
        Ok(())
    }

    /// `UpdateMachineAnnotations`: replace the whole map.
    pub async fn update_annotations(
        &self,
        id: &str,
        annotations: HashMap<String, String>,
    ) -> Result<()> {
        let entry = self.entry(id)?;
        entry.with(|r| r.annotations = annotations);
        self.persist(&entry, Durability::Durable).await
    }

    /// `UpdateMachinePower`.
    pub async fn update_power(&self, id: &str, power: i32) -> Result<()> {
        let power = machine::Power::try_from(power)
            .map_err(|_| Error::InvalidArgument(format!("power {power} is not a valid value")))?;
        self.mutate(id, |r| {
            if r.spec.power != power as i32 {
                r.spec.power = power as i32;
                r.generation += 1;
            }
            // Power on is also a request to start a machine whose guest powered itself off.
            r.want_boot = power == machine::Power::On;
            Ok(true)
        })
        .await?;
        let record = self.entry(id)?.snapshot();
        let action = if power == machine::Power::On {
            "PowerOn"
        } else {
            "PowerOff"
        };
        info!(machine.id = %id, power = ?power, "power requested");
        self.record_event(
            &record,
            "Normal",
            action,
            action,
            format!("power {power:?} requested"),
        );
        Ok(())
    }

    /// `AttachVolume`.
    pub async fn attach_volume(&self, id: &str, volume: Option<machine::Volume>) -> Result<()> {
        let volume = volume.ok_or_else(|| Error::InvalidArgument("volume is required".into()))?;
        self.entry(id)?;
        self.validate_volume(&volume)?;
        self.mutate(id, |r| {
            if r.spec.volumes.iter().any(|v| v.name == volume.name) {
                return Err(Error::DeviceExists {
                    kind: "volume",
                    name: volume.name.clone(),
                    machine_id: r.id.clone(),
                });
            }
            self.check_device_count(r.spec.volumes.len() + 1, r.spec.network_interfaces.len())?;
            r.volume_status.push(DeviceStatus {
                name: volume.name.clone(),
                handle: String::new(),
                attached: false,
            });
            r.spec.volumes.push(volume);
            r.generation += 1;
            Ok(true)
        })
        .await
    }

    /// `UpdateVolume`: replace the spec entry with that name.
    pub async fn update_volume(&self, id: &str, volume: Option<machine::Volume>) -> Result<()> {
        let volume = volume.ok_or_else(|| Error::InvalidArgument("volume is required".into()))?;
        self.entry(id)?;
        if !self
            .entry(id)?
            .snapshot()
            .spec
            .volumes
            .iter()
            .any(|v| v.name == volume.name)
        {
            return Err(Error::DeviceNotFound {
                kind: "volume",
                name: volume.name,
                machine_id: id.to_owned(),
            });
        }
        self.validate_volume(&volume)?;
        self.mutate(id, |r| {
            let Some(slot) = r.spec.volumes.iter_mut().find(|v| v.name == volume.name) else {
                return Err(Error::DeviceNotFound {
                    kind: "volume",
                    name: volume.name.clone(),
                    machine_id: r.id.clone(),
                });
            };
            if *slot != volume {
                *slot = volume;
                r.generation += 1;
            }
            Ok(true)
        })
        .await
    }

    /// `DetachVolume`.
    pub async fn detach_volume(&self, id: &str, name: &str) -> Result<()> {
        self.mutate(id, |r| {
            let before = r.spec.volumes.len();
            r.spec.volumes.retain(|v| v.name != name);
            if r.spec.volumes.len() == before {
                return Err(Error::DeviceNotFound {
                    kind: "volume",
                    name: name.to_owned(),
                    machine_id: r.id.clone(),
                });
            }
            r.generation += 1;
            Ok(true)
        })
        .await
    }

    /// `AttachNetworkInterface`.
    pub async fn attach_nic(&self, id: &str, nic: Option<machine::NetworkInterface>) -> Result<()> {
        let nic =
            nic.ok_or_else(|| Error::InvalidArgument("network_interface is required".into()))?;
        self.entry(id)?;
        Self::validate_nic(&nic)?;
        self.nics_supported()?;
        self.mutate(id, |r| {
            if r.spec.network_interfaces.iter().any(|n| n.name == nic.name) {
                return Err(Error::DeviceExists {
                    kind: "network interface",
                    name: nic.name.clone(),
                    machine_id: r.id.clone(),
                });
            }
            self.check_device_count(r.spec.volumes.len(), r.spec.network_interfaces.len() + 1)?;
            r.nic_status.push(DeviceStatus {
                name: nic.name.clone(),
                handle: String::new(),
                attached: false,
            });
            r.spec.network_interfaces.push(nic);
            r.generation += 1;
            Ok(true)
        })
        .await
    }

    /// `DetachNetworkInterface`.
    pub async fn detach_nic(&self, id: &str, name: &str) -> Result<()> {
        self.mutate(id, |r| {
            let before = r.spec.network_interfaces.len();
            r.spec.network_interfaces.retain(|n| n.name != name);
            if r.spec.network_interfaces.len() == before {
                return Err(Error::DeviceNotFound {
                    kind: "network interface",
                    name: name.to_owned(),
                    machine_id: r.id.clone(),
                });
            }
            r.generation += 1;
            Ok(true)
        })
        .await
    }

    /// `Status`: one entry per class, quantity from host CPUs and memory.
    pub fn status(&self) -> Vec<machine::MachineClassStatus> {
        self.inner
            .cfg
            .classes
            .iter()
            .map(|class| machine::MachineClassStatus {
                machine_class: Some(machine::MachineClass {
                    name: class.name.clone(),
                    capabilities: Some(machine::MachineClassCapabilities {
                        resources: HashMap::from([
                            ("cpu".to_owned(), i64::from(class.cpu)),
                            (
                                "memory".to_owned(),
                                i64::try_from(class.memory_bytes).unwrap_or(i64::MAX),
                            ),
                        ]),
                    }),
                }),
                quantity: self
                    .inner
                    .host
                    .quantity(class, self.inner.cfg.cpu_overcommit),
            })
            .collect()
    }

    /// `ListEvents`: filter by involved id, labels, and time when both bounds are > 0.
    pub fn events(&self, filter: Option<&machine::EventFilter>) -> Vec<event::Event> {
        let events = self
            .inner
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        events
            .iter()
            .filter(|ev| {
                let Some(f) = filter else { return true };
                let Some(spec) = ev.spec.as_ref() else {
                    return false;
                };
                let meta = spec.involved_object_meta.clone().unwrap_or_default();
                (f.id.is_empty() || f.id == meta.id)
                    && iri_spec::selector::matches(&f.label_selector, &meta.labels)
                    && (f.events_from_time <= 0
                        || f.events_to_time <= 0
                        || (spec.event_time >= f.events_from_time
                            && spec.event_time <= f.events_to_time))
            })
            .cloned()
            .collect()
    }

    /// `Exec`: a one-time URL of the machine's serial console (see [`crate::console`]).
    pub fn exec(&self, id: &str) -> Result<String> {
        let entry = self.entry(id)?;
        if entry.with(|r| r.deleted_at != 0) {
            return Err(Error::Deleting(id.to_owned()));
        }
        self.inner.consoles.exec(id).map_err(|e| match e {
            console::Error::NotRunning(_) => Error::ConsoleUnavailable(e),
            console::Error::Busy(_) => Error::ConsoleBusy(e),
        })
    }

    /// The base of this runtime's Exec URLs.
    pub fn console_base_url(&self) -> &str {
        self.inner.consoles.base_url()
    }

    /// The VMM backend's name.
    pub fn vmm_name(&self) -> &'static str {
        self.inner.vmm.name()
    }

    /// Stop the workers; with `stop_vms_on_exit`, also stop every VMM. Otherwise VMs keep
    /// running and a restarted runtime adopts them.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.token.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(timeout, self.inner.tracker.wait())
            .await
            .is_err()
        {
            warn!("machine workers did not stop in time");
        }
        if self.inner.cfg.stop_vms_on_exit {
            let entries: Vec<Arc<Entry>> = self.lock_machines().values().cloned().collect();
            for entry in entries {
                let record = entry.snapshot();
                if let Some(process) = record.vmm {
                    let _ = self.inner.vmm.terminate(&process, TERMINATE_GRACE).await;
                    entry.with(|r| {
                        r.vmm = None;
                        r.state = machine::MachineState::MachineTerminated as i32;
                    });
                    let _ = self.persist(&entry, Durability::Volatile).await;
                }
            }
        }
    }

    // ---- reconcile ----------------------------------------------------------------------

    /// One reconcile pass; returns true when the machine is gone.
    async fn reconcile(&self, entry: &Arc<Entry>) -> bool {
        let pass = Instant::now();
        let record = entry.snapshot();
        let paths = VmPaths::new(&self.vm_dir(&record.id));
        if record.deleted_at != 0 {
            self.teardown(&record, &paths).await;
            return true;
        }
        if !paths.dir.join("disks").is_dir()
            && let Err(e) = private_dirs(&paths.dir)
        {
            warn!(error = %e, "create machine dir");
            return false;
        }

        // Disks for every spec volume.
        let mut disks = Vec::new();
        let mut failures = Vec::new();
        for volume in &record.spec.volumes {
            match self.prepare_disk(&record, volume, &paths).await {
                Ok(disk) => disks.push(disk),
                Err(e) => failures.push(format!("volume {:?}: {e:#}", volume.name)),
            }
        }
        let nics: Vec<NicSpec> = match self.inner.cfg.nic_mode {
            NicMode::None | NicMode::Auto => Vec::new(),
            NicMode::Tap => record
                .spec
                .network_interfaces
                .iter()
                .map(|n| NicSpec {
                    id: nic_id(&n.name),
                    mac: nic_mac(&record.id, &n.name),
                    tap: tap_name(&self.inner.cfg.tap_prefix, &record.id, &n.name),
                })
                .collect(),
        };

        let mut process = record.vmm.clone().filter(VmmProcess::is_alive);
        let power_on = record.spec.power == machine::Power::On as i32;
        let mut want_boot = record.want_boot && power_on;
        let mut ok = failures.is_empty();

        timed("reconcile.prepare", pass);
        if want_boot && failures.is_empty() {
            let t = Instant::now();
            let res = self
                .power_on(entry, &record, &paths, &disks, &nics, &mut process)
                .await;
            timed("reconcile.power_on", t);
            match res {
                Ok(()) => want_boot = false,
                Err(e) => {
                    ok = false;
                    warn!(error = %e, "boot failed");
                    self.warning_event(entry, &record, "BootFailed", "PowerOn", format!("{e:#}"));
                }
            }
        }

        let t = Instant::now();
        let mut info = match &process {
            Some(p) => self.inner.vmm.info(p).await.ok(),
            None => None,
        };
        timed("reconcile.info", t);
        if info.is_none() {
            process = None;
        }

        if !power_on
            && let (Some(p), Some(i)) = (&process, &info)
            && matches!(i.state, VmState::Running | VmState::Paused)
        {
            match self.power_off(p).await {
                Ok(()) => {
                    info!("machine powered off");
                    self.record_event(
                        &record,
                        "Normal",
                        "PoweredOff",
                        "PowerOff",
                        "machine powered off".into(),
                    );
                }
                Err(e) => {
                    ok = false;
                    warn!(error = %e, "power off failed");
                }
            }
            info = self.inner.vmm.info(p).await.ok();
        }

        // Hot-plug while running (a created VM picks its devices up at the next boot).
        if let (Some(p), Some(i)) = (&process, &info)
            && matches!(i.state, VmState::Running | VmState::Paused)
        {
            match self.hotplug(p, i, &record.disks, &disks, &nics).await {
                Ok(changed) => {
                    if changed {
                        info = self.inner.vmm.info(p).await.ok();
                    }
                }
                Err(e) => {
                    ok = false;
                    warn!(error = %e, "hot-plug failed");
                    self.warning_event(entry, &record, "HotplugFailed", "Attach", format!("{e:#}"));
                }
            }
        }
        for failure in &failures {
            warn!(%failure, "volume not ready");
        }

        // Observed state.
        let state = observed_state(info.as_ref().map(|i| i.state), want_boot);
        let present: Vec<String> = info
            .as_ref()
            .map(|i| i.disk_ids.clone())
            .unwrap_or_default();
        let present_nics: Vec<String> =
            info.as_ref().map(|i| i.nic_ids.clone()).unwrap_or_default();
        let volume_status: Vec<DeviceStatus> = record
            .spec
            .volumes
            .iter()
            .map(|v| {
                let disk = disks.iter().find(|d| d.name == v.name);
                DeviceStatus {
                    name: v.name.clone(),
                    handle: disk
                        .map(|d| d.disk.path.display().to_string())
                        .unwrap_or_default(),
                    attached: disk.is_some_and(|d| present.contains(&d.disk.id)),
                }
            })
            .collect();
        let nic_status: Vec<DeviceStatus> = record
            .spec
            .network_interfaces
            .iter()
            .map(|n| {
                let id = nic_id(&n.name);
                let attached =
                    self.inner.cfg.nic_mode == NicMode::Tap && present_nics.contains(&id);
                DeviceStatus {
                    name: n.name.clone(),
                    handle: if attached {
                        nic_mac(&record.id, &n.name)
                    } else {
                        String::new()
                    },
                    attached,
                }
            })
            .collect();

        let old_state = record.state;
        let changed = entry.with(|r| {
            let before = (
                r.state,
                r.vmm.clone(),
                r.disks.clone(),
                r.volume_status.clone(),
                r.nic_status.clone(),
                r.want_boot,
                r.observed_generation,
            );
            if r.deleted_at == 0 {
                r.state = state as i32;
            }
            r.vmm = process.clone();
            r.disks = disks.clone();
            r.volume_status = volume_status;
            r.nic_status = nic_status;
            if r.generation == record.generation {
                r.want_boot = want_boot;
                if ok {
                    r.observed_generation = record.generation;
                }
            }
            before
                != (
                    r.state,
                    r.vmm.clone(),
                    r.disks.clone(),
                    r.volume_status.clone(),
                    r.nic_status.clone(),
                    r.want_boot,
                    r.observed_generation,
                )
        });
        timed("reconcile.observed", pass);
        let t = Instant::now();
        if changed && let Err(e) = self.persist(entry, Durability::Volatile).await {
            warn!(error = %e, "persist machine state");
        }
        timed("reconcile.persist", t);
        if old_state != state as i32 && record.deleted_at == 0 {
            debug!(from = old_state, to = ?state, "machine state changed");
            if state == machine::MachineState::MachineTerminated
                && old_state == machine::MachineState::MachineRunning as i32
                && power_on
            {
                info!("guest stopped (vmm exited or vm shut down)");
                self.record_event(
                    &record,
                    "Normal",
                    "Stopped",
                    "PowerOff",
                    "guest stopped".into(),
                );
            }
        }
        false
    }

    async fn power_on(
        &self,
        entry: &Arc<Entry>,
        record: &MachineRecord,
        paths: &VmPaths,
        disks: &[PreparedDisk],
        nics: &[NicSpec],
        process: &mut Option<VmmProcess>,
    ) -> vmm::Result<()> {
        let vmm = &self.inner.vmm;
        let fresh = process.is_none();
        if fresh {
            let t = Instant::now();
            let spawned = vmm
                .spawn_for(paths, &self.vm_spec(record, paths, disks, nics))
                .await?;
            timed("power_on.spawn", t);
            let p = spawned.process.clone();
            entry.with(|r| r.vmm = Some(p.clone()));
            let mut child = spawned.child;
            let waker = Arc::clone(entry);
            tokio::spawn(async move {
                let _ = child.wait().await;
                waker.wake.notify_one();
            });
            debug!(pid = p.pid, "vmm spawned");
            *process = Some(p);
        }
        let Some(p) = process.as_ref() else {
            return Err(vmm::Error::Gone);
        };
        let start_vm = async {
            let t = Instant::now();
            // A VMM spawned just now has no VM (CH) or no device attached yet (QEMU's
            // prelaunch): no need to ask, `create` is what it needs.
            let info = if fresh {
                None
            } else {
                Some(vmm.info(p).await?)
            };
            let state = info.as_ref().map_or(VmState::NotCreated, |i| i.state);
            timed("power_on.info", t);
            let t = Instant::now();
            let spec = self.vm_spec(record, paths, disks, nics);
            match state {
                VmState::Running | VmState::Paused => return Ok::<bool, vmm::Error>(false),
                VmState::NotCreated => vmm.create(p, &spec).await?,
                VmState::Created | VmState::Shutdown => {
                    let want: Vec<&str> = disks.iter().map(|d| d.disk.id.as_str()).collect();
                    let mut have: Vec<&str> = info
                        .iter()
                        .flat_map(|i| i.disk_ids.iter().map(String::as_str))
                        .collect();
                    let mut want_sorted = want.clone();
                    want_sorted.sort_unstable();
                    have.sort_unstable();
                    if want_sorted != have || record.disks != disks {
                        vmm.delete(p).await?;
                        vmm.create(p, &spec).await?;
                    }
                }
            }
            timed("power_on.create", t);
            let t = Instant::now();
            if !self
                .inner
                .consoles
                .wait_connected(&record.id, CONSOLE_CONNECT)
                .await
            {
                warn!("the console pump did not reach the serial socket before boot");
            }
            timed("power_on.console", t);
            let t = Instant::now();
            vmm.boot(p).await?;
            timed("power_on.boot", t);
            // The VMM took the boot (CH's vm.boot and QEMU's `cont` return once the vCPUs
            // run): listed as RUNNING at once; the pass's vm.info below confirms it.
            entry.with(|r| {
                if r.deleted_at == 0 && r.generation == record.generation {
                    r.state = machine::MachineState::MachineRunning as i32;
                }
            });
            Ok(true)
        };
        let booted = if fresh {
            // The new VMM's pid is written (volatile: it matters only while the host is up)
            // while the VM is created and booted. A runtime killed before the write lands
            // leaves a VMM it does not know: the restarted runtime kills the VMMs in the
            // directory of every machine whose VMM it does not adopt (and of machines it has
            // no record of, `sweep_orphans`) before it starts new ones.
            let t = Instant::now();
            let (written, booted) =
                tokio::join!(self.persist(entry, Durability::Volatile), start_vm);
            timed("power_on.pid_and_boot", t);
            if let Err(e) = written {
                warn!(error = %e, "persist vmm pid");
            }
            booted?
        } else {
            start_vm.await?
        };
        if booted {
            info!("machine booted");
            self.record_event(
                record,
                "Normal",
                "Booted",
                "PowerOn",
                "machine booted".into(),
            );
        }
        Ok(())
    }

    async fn power_off(&self, p: &VmmProcess) -> vmm::Result<()> {
        let vmm = &self.inner.vmm;
        let grace = self.inner.cfg.graceful_power_off;
        if !grace.is_zero() && vmm.power_button(p).await.is_ok() {
            let deadline = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < deadline {
                match vmm.info(p).await {
                    Ok(i) if i.state == VmState::Running => {}
                    _ => return Ok(()),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        match vmm.shutdown(p).await {
            Ok(()) | Err(vmm::Error::Gone) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn hotplug(
        &self,
        p: &VmmProcess,
        info: &VmInfo,
        previous: &[PreparedDisk],
        disks: &[PreparedDisk],
        nics: &[NicSpec],
    ) -> vmm::Result<bool> {
        let vmm = &self.inner.vmm;
        let mut changed = false;
        for id in &info.disk_ids {
            let desired = disks.iter().find(|d| &d.disk.id == id);
            let replaced = desired.is_some_and(|d| {
                previous
                    .iter()
                    .find(|old| &old.disk.id == id)
                    .is_some_and(|old| old.disk != d.disk)
            });
            if desired.is_none() || replaced {
                vmm.detach_device(p, id).await?;
                info!(disk = %id, "disk detached");
                changed = true;
            }
        }
        for disk in disks {
            let replaced = previous
                .iter()
                .any(|old| old.disk.id == disk.disk.id && old.disk != disk.disk);
            if !info.disk_ids.contains(&disk.disk.id) || replaced {
                vmm.attach_disk(p, &disk.disk).await?;
                info!(disk = %disk.disk.id, "disk attached");
                changed = true;
            }
        }
        if self.inner.cfg.nic_mode == NicMode::Tap {
            for id in &info.nic_ids {
                if !nics.iter().any(|n| &n.id == id) {
                    vmm.detach_device(p, id).await?;
                    changed = true;
                }
            }
            for nic in nics {
                if !info.nic_ids.contains(&nic.id) {
                    vmm.attach_nic(p, nic).await?;
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    fn vm_spec(
        &self,
        record: &MachineRecord,
        paths: &VmPaths,
        disks: &[PreparedDisk],
        nics: &[NicSpec],
    ) -> VmSpec {
        let class = self
            .inner
            .cfg
            .classes
            .iter()
            .find(|c| c.name == record.spec.class);
        let mut oem_strings = Vec::new();
        if !record.spec.ignition_data.is_empty() {
            oem_strings
                .push(base64::engine::general_purpose::STANDARD.encode(&record.spec.ignition_data));
        }
        VmSpec {
            uuid: platform_uuid(&record.id),
            cpus: class.map_or(1, |c| c.cpu.max(1)),
            memory_bytes: class.map_or(256 << 20, |c| c.memory_bytes),
            kernel: self.inner.cfg.payload.kernel.clone(),
            cmdline: self.inner.cfg.payload.cmdline.clone(),
            disks: disks.iter().map(|d| d.disk.clone()).collect(),
            nics: nics.to_vec(),
            oem_strings,
            serial_file: paths.serial.clone(),
        }
    }

    async fn prepare_disk(
        &self,
        record: &MachineRecord,
        volume: &machine::Volume,
        paths: &VmPaths,
    ) -> anyhow::Result<PreparedDisk> {
        use anyhow::Context as _;
        if let Some(existing) = record.disks.iter().find(|d| d.name == volume.name)
            && existing.owned
            && volume.local_disk.is_some()
            && existing.disk.path.exists()
        {
            return Ok(existing.clone());
        }
        let source = self.validate_volume(volume)?;
        let previous = |path: &Path| {
            record
                .disks
                .iter()
                .find(|d| d.name == volume.name && d.disk.path == path)
        };
        match source {
            VolumeSource::File(path, format) => {
                if format == ImageFormat::Qcow2 {
                    let checked = path.clone();
                    tokio::task::spawn_blocking(move || vmm::check_plain_qcow2(&checked))
                        .await
                        .context("qcow2 check task")??;
                }
                let id = disk_id(&volume.name, record.generation, previous(&path));
                Ok(PreparedDisk {
                    name: volume.name.clone(),
                    disk: DiskSpec {
                        id,
                        path,
                        format,
                        readonly: false,
                    },
                    owned: false,
                })
            }
            VolumeSource::Local { image, size } => {
                let disks = paths.dir.join("disks");
                let name = volume.name.clone();
                // The format of a local disk is the one this runtime created it in, kept in
                // its file name (`<name>.img` raw, `<name>.qcow2`): the guest writes the bytes.
                let (target, format) = tokio::task::spawn_blocking(
                    move || -> anyhow::Result<(PathBuf, ImageFormat)> {
                        for format in [ImageFormat::Raw, ImageFormat::Qcow2] {
                            let path =
                                disks.join(format!("{name}.{}", format.local_disk_extension()));
                            if path.exists() {
                                return Ok((path, format));
                            }
                        }
                        let format = match &image {
                            Some(image) => ImageFormat::of_operator_image(image)
                                .context("read local disk image")?,
                            None => ImageFormat::Raw,
                        };
                        if format == ImageFormat::Qcow2
                            && let Some(image) = &image
                        {
                            vmm::check_plain_qcow2(image)?;
                        }
                        let dest = disks.join(format!("{name}.{}", format.local_disk_extension()));
                        let tmp = dest.with_extension("tmp");
                        let file = {
                            use std::os::unix::fs::OpenOptionsExt as _;
                            let _ = std::fs::remove_file(&tmp);
                            let file = std::fs::OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .mode(0o600)
                                .open(&tmp)
                                .context("create local disk")?;
                            if let Some(image) = &image {
                                // Into the 0600 file (fs::copy would copy the image's mode).
                                let mut from =
                                    std::fs::File::open(image).context("open local disk image")?;
                                std::io::copy(&mut from, &mut &file)
                                    .context("copy local disk image")?;
                            }
                            file
                        };
                        if format == ImageFormat::Raw && file.metadata()?.len() < size {
                            file.set_len(size).context("size local disk")?;
                        }
                        file.sync_all()?;
                        std::fs::rename(&tmp, &dest).context("place local disk")?;
                        Ok((dest, format))
                    },
                )
                .await
                .context("local disk task")??;
                let id = disk_id(&volume.name, record.generation, previous(&target));
                Ok(PreparedDisk {
                    name: volume.name.clone(),
                    disk: DiskSpec {
                        id,
                        path: target,
                        format,
                        readonly: false,
                    },
                    owned: true,
                })
            }
        }
    }

    async fn teardown(&self, record: &MachineRecord, paths: &VmPaths) {
        let vmm = &self.inner.vmm;
        if let Some(p) = record.vmm.as_ref().filter(|p| p.is_alive()) {
            if let Ok(info) = vmm.info(p).await
                && matches!(info.state, VmState::Running | VmState::Paused)
            {
                let _ = vmm.shutdown(p).await;
            }
            let _ = vmm.delete(p).await;
            let _ = vmm.terminate(p, TERMINATE_GRACE).await;
        }
        let stray = crate::vmm::kill_processes_in(&paths.dir, TERMINATE_GRACE).await;
        if !stray.is_empty() {
            warn!(?stray, "vmm processes survived teardown");
        }
        let dir = paths.dir.clone();
        let _ = tokio::task::spawn_blocking(move || remove_dir(&dir)).await;
        if let Err(e) = self.inner.store.remove(&record.id) {
            warn!(error = %e, "remove machine state file");
        }
        self.lock_machines().remove(&record.id);
        self.inner.consoles.remove(&record.id);
        info!("machine deleted");
        self.record_event(
            record,
            "Normal",
            "Deleted",
            "Delete",
            "machine deleted".into(),
        );
    }
}

fn image_is_none(image: &Option<machine::ImageSpec>) -> bool {
    image.as_ref().is_none_or(|i| i.image.is_empty())
}

/// Create `<vms>/<id>/disks` with the machine dir and `vms` mode 0700 (disks, console and
/// ignition inside are the tenant's).
fn private_dirs(machine_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let disks = machine_dir.join("disks");
    std::fs::create_dir_all(&disks)?;
    for dir in [
        machine_dir.parent(),
        Some(machine_dir),
        Some(disks.as_path()),
    ]
    .into_iter()
    .flatten()
    {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            warn!(error = %e, dir = %dir.display(), "remove machine dir");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_and_not_digit_prefixed() {
        for _ in 0..100 {
            let id = new_id();
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(!id[..12].bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn platform_uuid_is_uuid_shaped() {
        let uuid = platform_uuid("0123456789abcdef0123456789abcdef");
        assert_eq!(uuid, "01234567-89ab-cdef-0123-456789abcdef");
    }

    #[test]
    fn macs_are_locally_administered_and_stable() {
        let a = nic_mac("m", "eth0");
        assert_eq!(a, nic_mac("m", "eth0"));
        assert!(a.starts_with("52:54:"));
        assert_ne!(a, nic_mac("m", "eth1"));
    }
}
