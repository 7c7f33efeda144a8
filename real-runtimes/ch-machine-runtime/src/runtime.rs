//! The machine runtime core: desired state from IRI calls, observed state from the VMM.
//!
//! Each machine has a record (persisted, see [`crate::store`]) and one worker task that
//! reconciles it: prepare disks, spawn the VMM, create/boot the VM, hot-plug disks and NICs,
//! power off, tear down on delete. The state reported to IRI is what the VMM says
//! (`vm.info`, or "process gone"), never the desired spec. RPC handlers only validate,
//! update the record, persist it and wake the worker.
//!
//! This file holds the record, the runtime's start (adoption of running VMMs, the orphan
//! sweep) and persistence; `rpc` the RPCs' effects on records, `reconcile` the worker's pass,
//! `warm` the VMMs started ahead of their machines (`--warm-vmms`), and [`reservation`]
//! irikit's reservation extension: capacity holds that `CreateMachine` consumes or respects.

mod reconcile;
mod reservation;
mod rpc;
mod warm;

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
        self, DiskSpec, ImageFormat, NicSpec, Spawned, VmInfo, VmPaths, VmSpec, VmState, Vmm,
        VmmProcess,
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
    /// VMMs started ahead of their machines (`--warm-vmms`), if the backend can.
    warm: Option<Arc<warm::WarmVmms>>,
}

/// How long a boot waits for the console pump to reach the VM's serial socket.
const CONSOLE_CONNECT: Duration = Duration::from_secs(2);
/// How long a new machine waits for a warm VMM that is being started when none is ready
/// (one that takes longer than this is slower than starting one: the machine does that).
const WARM_WAIT: Duration = Duration::from_millis(50);

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
        let store = Store::open_with_spares(cfg.state_dir.join("machines"))?;
        let records = store.load_all()?;
        let reservations = reservation::Reservations::open(cfg.state_dir.join("reservations"))?;
        let consoles =
            Consoles::bind(cfg.console_listen, token.child_token()).map_err(Error::ConsoleBind)?;
        let warm = (cfg.warm_vmms > 0 && vmm.starts_ahead()).then(|| {
            Arc::new(warm::WarmVmms::new(
                cfg.warm_vmms,
                cfg.state_dir.join("vms"),
            ))
        });
        let inner = Arc::new(Inner {
            warm,
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
        if let Some(warm) = &runtime.inner.warm {
            runtime.inner.tracker.spawn(Arc::clone(warm).run(
                Arc::clone(&runtime.inner.vmm),
                runtime.inner.token.child_token(),
            ));
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
            if name.starts_with(".warm-") {
                info!(dir = %name, ?left, "stopped a vmm an earlier run started ahead");
            } else {
                warn!(machine.id = %name, ?left, "killed the vmm of an unknown machine; removing its dir");
            }
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
        crate::events::select(events.iter(), filter)
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
