//! The VMM boundary: one VMM process per VM behind the small [`Vmm`] trait.
//!
//! The runtime only talks to [`Vmm`]; [`CloudHypervisor`] implements it over CH's REST API
//! (private module `chapi`); [`Qemu`] implements it over QMP (module `qemu`, private client
//! `qmp`).
//! Process liveness is judged by pid *and* start time (from `/proc`), so a recycled pid is
//! never mistaken for our VMM.

mod chapi;
mod qemu;
mod qmp;

pub use qemu::{Qemu, QemuAccel, ROOT_PORTS, kvm_opens};

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long a step of a VMM's start took since `since` (target `ch_machine_runtime::timing`,
/// as the runtime's own steps).
fn spawn_timed(step: &'static str, since: Instant) {
    tracing::debug!(
        target: "ch_machine_runtime::timing",
        step,
        us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
    );
}

/// Errors of VMM operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The VMM process has exited (or its API socket is gone).
    #[error("vmm is not running")]
    Gone,
    /// The VMM refused a request; `chain` is its error chain, outermost first.
    #[error("vmm {operation} failed (http {status}): {}", chain.join(": "))]
    Refused {
        /// Which operation.
        operation: &'static str,
        /// The HTTP status code (0 for QMP errors).
        status: u16,
        /// The VMM's error chain.
        chain: Vec<String>,
    },
    /// The VMM did not answer in time.
    #[error("vmm {0} timed out")]
    Timeout(&'static str),
    /// Spawning the VMM process failed.
    #[error("spawn {binary:?}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The VMM process started but its API socket never appeared.
    #[error("vmm api socket {0:?} did not appear")]
    NoSocket(PathBuf),
    /// A transport-level failure.
    #[error("vmm api: {0}")]
    Transport(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<chapi::Error> for Error {
    fn from(e: chapi::Error) -> Self {
        match e {
            chapi::Error::Gone => Self::Gone,
            chapi::Error::Timeout { endpoint } => Self::Timeout(endpoint),
            chapi::Error::Api {
                endpoint,
                status,
                chain,
            } => Self::Refused {
                operation: endpoint,
                status,
                chain,
            },
            chapi::Error::Transport { endpoint, message } => {
                Self::Transport(format!("{endpoint}: {message}"))
            }
        }
    }
}

/// Files of one VM (all inside the machine's directory).
#[derive(Debug, Clone)]
pub struct VmPaths {
    /// The machine's directory.
    pub dir: PathBuf,
    /// The VMM's API socket.
    pub api_socket: PathBuf,
    /// Event-monitor output.
    pub event_monitor: PathBuf,
    /// The guest's serial console output (the current boot's for Cloud Hypervisor, which
    /// truncates it; earlier boots are kept in `serial.log.old`).
    pub serial: PathBuf,
    /// The VMM's log file.
    pub log: PathBuf,
    /// The guest's serial port as a unix socket the VMM listens on (CH `serial` mode
    /// `Socket`, QEMU `-chardev socket,server=on`); the runtime's console pump is its one
    /// client and writes `serial`.
    pub serial_socket: PathBuf,
}

impl VmPaths {
    /// The standard layout under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            api_socket: dir.join("api.sock"),
            event_monitor: dir.join("events.json"),
            serial: dir.join("serial.log"),
            log: dir.join("vmm.log"),
            serial_socket: dir.join("serial.sock"),
        }
    }
}

/// The most console history (`serial.log.old`) kept per machine; older output is dropped.
pub const SERIAL_HISTORY_MAX: u64 = 1 << 20;

/// Appends the guest's serial output so far (`serial`, at most its last
/// [`SERIAL_HISTORY_MAX`] bytes) to `<serial>.old`, keeps only the newest `SERIAL_HISTORY_MAX`
/// bytes there, and empties `serial`. Best effort: console history is a convenience, never a
/// reason to fail a boot.
async fn keep_serial_history(serial: &Path) {
    let serial = serial.to_owned();
    let kept = tokio::task::spawn_blocking(move || keep_serial_history_blocking(&serial)).await;
    if let Ok(Err(e)) = kept {
        tracing::warn!(error = %e, "keep serial history");
    }
}

pub(crate) fn read_tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Seek as _};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(std::io::SeekFrom::Start(len.saturating_sub(max)))?;
    let mut text = Vec::new();
    f.take(max).read_to_end(&mut text)?;
    Ok(text)
}

pub(crate) fn keep_serial_history_blocking(serial: &Path) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let text = match read_tail(serial, SERIAL_HISTORY_MAX) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if text.is_empty() {
        return Ok(());
    }
    let mut history = serial.as_os_str().to_owned();
    history.push(".old");
    let history = PathBuf::from(history);
    let old_len = std::fs::metadata(&history).map_or(0, |m| m.len());
    let total = old_len.saturating_add(text.len() as u64);
    if total > SERIAL_HISTORY_MAX {
        // Rewrite: the newest bytes of the old history, then the new text.
        let keep = SERIAL_HISTORY_MAX.saturating_sub(text.len() as u64);
        let mut all = if keep > 0 {
            read_tail(&history, keep).unwrap_or_default()
        } else {
            Vec::new()
        };
        all.extend_from_slice(&text);
        let tmp = history.with_extension("old.tmp");
        crate::private_file::replace(&tmp, &history, &all, false)?;
    } else {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&history)?;
        f.write_all(&text)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(serial)
        .map(drop)
}

/// Create (or keep) `path` as a file only the runtime's user can read: the guest's console and
/// the VMM's log hold tenant output.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// A VMM process the runtime supervises; persisted so that a restarted runtime can adopt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmProcess {
    /// Its pid.
    pub pid: i32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// Its API socket.
    pub api_socket: PathBuf,
}

impl VmmProcess {
    /// Whether this very process (pid and start time) is still alive (zombies count as dead).
    pub fn is_alive(&self) -> bool {
        proc_start_time(self.pid) == Some(self.start_time)
    }

    /// Send SIGKILL, if it is still our process.
    pub fn kill(&self) {
        if self.is_alive()
            && let Some(pid) = rustix::process::Pid::from_raw(self.pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }

    /// Wait up to `timeout` for the process to exit; true when it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_alive() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// The start time of a live, non-zombie process, from `/proc/<pid>/stat`.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); start time is field 22.
    if matches!(fields.first(), Some(&"Z" | &"X" | &"x")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A VMM started ahead of its machine (see `runtime::warm`) names its first directory on its
/// command line; this file in its directory names the process wherever the directory moved.
pub const PID_FILE: &str = "vmm.pid";

/// Writes [`PID_FILE`] for `process` into `dir`: `<pid> <start time>`.
pub fn write_pid_file(dir: &Path, process: &VmmProcess) -> std::io::Result<()> {
    std::fs::write(
        dir.join(PID_FILE),
        format!("{} {}\n", process.pid, process.start_time),
    )
}

/// The live process [`PID_FILE`] in `dir` names (pid and start time must both match).
fn pid_file_process(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join(PID_FILE)).ok()?;
    let mut fields = text.split_whitespace();
    let pid: i32 = fields.next()?.parse().ok()?;
    let start_time: u64 = fields.next()?.parse().ok()?;
    (proc_start_time(pid) == Some(start_time)).then_some(pid)
}

/// Kill every live process whose command line names `dir` (a machine's directory: its API socket,
/// serial file and disks live there) or that `dir`'s [`PID_FILE`] names, and wait up to `wait`
/// for them to exit. The safety net of machine teardown: a VMM spawned or respawned while the
/// record was being read is not leaked.
/// Returns the pids that were still alive at the end.
pub async fn kill_processes_in(dir: &Path, wait: Duration) -> Vec<i32> {
    // With the trailing slash a machine dir never matches a sibling whose name extends it.
    let needle = format!("{}/", dir.display());
    let me = std::process::id();
    let find = || -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<i32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| u32::try_from(*pid).ok() != Some(me))
            .filter(|pid| proc_start_time(*pid).is_some())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    c.split(|b| *b == 0)
                        .any(|arg| String::from_utf8_lossy(arg).contains(&needle))
                })
            })
            .collect();
        pids.extend(pid_file_process(dir).filter(|pid| !pids.contains(pid)));
        pids
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let pids = find();
        if pids.is_empty() || tokio::time::Instant::now() >= deadline {
            return pids;
        }
        for pid in &pids {
            if let Some(pid) = rustix::process::Pid::from_raw(*pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A freshly spawned VMM: its record and, when we are its parent, the child to reap.
#[derive(Debug)]
pub struct Spawned {
    /// What to persist.
    pub process: VmmProcess,
    /// The child handle (reap it, or it lingers as a zombie).
    pub child: tokio::process::Child,
}

/// Disk image formats we hand to the VMM explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageFormat {
    /// A raw image.
    Raw,
    /// A qcow2 image.
    Qcow2,
}

impl ImageFormat {
    /// The format named by a volume runtime's `format` access attribute: missing or empty is
    /// raw (a raw attachment never makes the VMM open another file), `raw` and `qcow2` are
    /// themselves, anything else is `None`.
    pub fn from_attribute(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or_default() {
            "" | "raw" => Some(Self::Raw),
            "qcow2" => Some(Self::Qcow2),
            _ => None,
        }
    }

    /// The format of an operator-provided image (from `--image-dir`, never a guest-writable
    /// file): qcow2 when it starts with the qcow2 magic. Guest-writable files (volumes, local
    /// disks) are never sniffed: their format is what the volume runtime reports or what this
    /// runtime created.
    pub fn of_operator_image(path: &Path) -> std::io::Result<Self> {
        crate::qcow2::sniff_operator_image(path, Self::Qcow2, Self::Raw)
    }

    /// The extension this runtime gives a local disk file of this format (the file name
    /// records the format the runtime created, so nothing is ever read back to learn it).
    pub fn local_disk_extension(self) -> &'static str {
        match self {
            Self::Raw => "img",
            Self::Qcow2 => "qcow2",
        }
    }
}

pub use crate::qcow2::check_plain_qcow2;

/// A disk to attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// The VMM device id.
    pub id: String,
    /// The image file.
    pub path: PathBuf,
    /// Its format.
    pub format: ImageFormat,
    /// Read-only attachment.
    pub readonly: bool,
}

/// A NIC to attach (a tap device the VMM creates under `tap`, no bridge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// The VMM device id.
    pub id: String,
    /// Its MAC address.
    pub mac: String,
    /// The host tap device's name (at most 15 characters).
    pub tap: String,
}

/// Everything needed to create a VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The platform UUID (the machine id, formatted as a UUID).
    pub uuid: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// The kernel (PVH ELF or bzImage).
    pub kernel: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// Disks.
    pub disks: Vec<DiskSpec>,
    /// NICs.
    pub nics: Vec<NicSpec>,
    /// SMBIOS OEM strings (IronCore puts base64 ignition here).
    pub oem_strings: Vec<String>,
    /// Where the serial console goes.
    pub serial_file: PathBuf,
}

/// The VM state as the VMM reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// The VMM runs but holds no VM (never created, or deleted).
    NotCreated,
    /// Created (or shut down: CH reports `Created` after `vm.shutdown`).
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Shut down.
    Shutdown,
}

/// What `info` returns.
#[derive(Debug, Clone)]
pub struct VmInfo {
    /// The state.
    pub state: VmState,
    /// Ids of the disks in the VM's config.
    pub disk_ids: Vec<String>,
    /// Ids of the NICs in the VM's config.
    pub nic_ids: Vec<String>,
}

/// One VMM process per VM, driven through this trait.
#[tonic::async_trait]
pub trait Vmm: Send + Sync + 'static {
    /// A short name for logs and `Version` (`cloud-hypervisor`, `qemu`).
    fn name(&self) -> &'static str;
    /// How many disks plus NICs one VM can have (its hot-pluggable device slots).
    fn max_devices(&self) -> usize;
    /// Start a VMM process for the VM in `paths`; returns once its API answers.
    async fn spawn(&self, paths: &VmPaths) -> Result<Spawned>;
    /// Start a VMM process that will hold the VM `spec` (what the runtime calls). A backend
    /// whose process is fixed to one VM shape at start (QEMU) needs `spec` here; the default
    /// ignores it and calls [`Vmm::spawn`].
    async fn spawn_for(&self, paths: &VmPaths, spec: &VmSpec) -> Result<Spawned> {
        let _ = spec;
        self.spawn(paths).await
    }
    /// Whether a VMM can be started before its VM is known ([`Vmm::spawn`] needs no spec) and
    /// keeps working when its directory is renamed: then the runtime keeps one started ahead.
    fn starts_ahead(&self) -> bool {
        false
    }
    /// Whether the VMM answers; returns the pid it reports, if any.
    async fn ping(&self, vmm: &VmmProcess) -> Result<Option<i64>>;
    /// Create the VM (not booted).
    async fn create(&self, vmm: &VmmProcess, spec: &VmSpec) -> Result<()>;
    /// Boot the created VM.
    async fn boot(&self, vmm: &VmmProcess) -> Result<()>;
    /// The VM's state and devices.
    async fn info(&self, vmm: &VmmProcess) -> Result<VmInfo>;
    /// Stop the VM (hard; the VM stays created and can boot again).
    async fn shutdown(&self, vmm: &VmmProcess) -> Result<()>;
    /// Press the ACPI power button (the guest decides).
    async fn power_button(&self, vmm: &VmmProcess) -> Result<()>;
    /// Delete the VM (idempotent).
    async fn delete(&self, vmm: &VmmProcess) -> Result<()>;
    /// Attach a disk (hot-plug when running).
    async fn attach_disk(&self, vmm: &VmmProcess, disk: &DiskSpec) -> Result<()>;
    /// Attach a NIC (hot-plug when running).
    async fn attach_nic(&self, vmm: &VmmProcess, nic: &NicSpec) -> Result<()>;
    /// Remove a device (disk or NIC) by id.
    async fn detach_device(&self, vmm: &VmmProcess, id: &str) -> Result<()>;
    /// Ask the VMM process to exit, then make sure it did (SIGKILL after `grace`).
    async fn terminate(&self, vmm: &VmmProcess, grace: Duration) -> Result<()>;
}

/// Disks plus NICs per Cloud Hypervisor VM: every virtio device takes a slot of PCI segment 0
/// (32 slots), of which the host bridge and the virtio-rng device take two.
pub const CH_MAX_DEVICES: usize = 30;

/// How a backend boots every VM, beyond the VM's spec; the same choices for every backend.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The initramfs every VM boots with (CH's `payload.initramfs`, QEMU's `-initrd`).
    pub initramfs: Option<PathBuf>,
    /// Whether the serial port is the socket `VmPaths::serial_socket` (the default, what the
    /// runtime's console pump reads) or, when `false`, the VMM writes `serial.log` itself.
    pub serial_socket: bool,
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            initramfs: None,
            serial_socket: true,
        }
    }
}

/// The builder methods of a backend's [`Launch`].
pub trait Launched: Sized {
    /// The backend's launch choices.
    fn launch_mut(&mut self) -> &mut Launch;

    /// Whether the serial port is the socket `VmPaths::serial_socket` (the default, what the
    /// runtime's console pump reads) or, with `false`, the VMM writes `serial.log` itself (a
    /// bare VMM with no pump, as `ch-runtime-bench`'s baseline).
    #[must_use]
    fn with_serial_socket(mut self, on: bool) -> Self {
        self.launch_mut().serial_socket = on;
        self
    }

    /// Boot every VM with this initramfs.
    #[must_use]
    fn with_initramfs(mut self, initramfs: Option<PathBuf>) -> Self {
        self.launch_mut().initramfs = initramfs;
        self
    }
}

/// The Cloud Hypervisor backend (also drives `ch-sim`, which takes the same arguments).
#[derive(Debug, Clone)]
pub struct CloudHypervisor {
    binary: PathBuf,
    launch: Launch,
}

impl Launched for CloudHypervisor {
    fn launch_mut(&mut self) -> &mut Launch {
        &mut self.launch
    }
}

impl CloudHypervisor {
    /// A backend spawning `binary`.
    pub fn new(binary: PathBuf) -> Self {
        Self {
            binary,
            launch: Launch::default(),
        }
    }

    fn client(vmm: &VmmProcess) -> Result<chapi::Client> {
        Ok(chapi::Client::new(&vmm.api_socket)?)
    }

    fn disk_json(disk: &DiskSpec) -> Value {
        json!({
            "id": disk.id,
            "path": disk.path,
            "readonly": disk.readonly,
            // Always explicit: CH would otherwise auto-detect the type from the (guest-writable)
            // bytes, and never follow a qcow2 backing file.
            "image_type": match disk.format { ImageFormat::Raw => "Raw", ImageFormat::Qcow2 => "Qcow2" },
            "backing_files": false,
        })
    }

    fn nic_json(nic: &NicSpec) -> Value {
        json!({ "id": nic.id, "mac": nic.mac, "tap": nic.tap })
    }

    /// The `vm.create` body for `spec`.
    pub fn vm_config(spec: &VmSpec) -> Value {
        let mut platform = json!({ "uuid": spec.uuid });
        if !spec.oem_strings.is_empty() {
            platform["oem_strings"] = json!(spec.oem_strings);
        }
        json!({
            "cpus": { "boot_vcpus": spec.cpus, "max_vcpus": spec.cpus },
            "memory": { "size": spec.memory_bytes },
            "payload": { "kernel": spec.kernel, "cmdline": spec.cmdline },
            "disks": spec.disks.iter().map(Self::disk_json).collect::<Vec<_>>(),
            "net": spec.nics.iter().map(Self::nic_json).collect::<Vec<_>>(),
            "rng": { "src": "/dev/urandom" },
            "serial": { "mode": "File", "file": spec.serial_file },
            "console": { "mode": "Off" },
            "platform": platform,
        })
    }
}

fn ids(config: &Value, list: &str) -> Vec<String> {
    config[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect()
}

#[tonic::async_trait]
impl Vmm for CloudHypervisor {
    fn name(&self) -> &'static str {
        "cloud-hypervisor"
    }

    fn max_devices(&self) -> usize {
        CH_MAX_DEVICES
    }

    // Cloud Hypervisor takes its VM at `vm.create`, and holds its log file, event monitor and
    // API socket open from its start.
    fn starts_ahead(&self) -> bool {
        true
    }

    async fn spawn(&self, paths: &VmPaths) -> Result<Spawned> {
        let _ = std::fs::remove_file(&paths.api_socket);
        let _ = std::fs::remove_file(&paths.serial_socket);
        for file in [&paths.log, &paths.serial, &paths.event_monitor] {
            private_file(file).map_err(|source| Error::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        }
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("--api-socket")
            .arg(format!("path={}", paths.api_socket.display()))
            .arg("--event-monitor")
            .arg(format!("path={}", paths.event_monitor.display()))
            .arg("--log-file")
            .arg(&paths.log)
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C meant for the runtime does not reach the VMs.
            .process_group(0)
            .kill_on_drop(false);
        let t0 = Instant::now();
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        spawn_timed("spawn.exec", t0);
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| Error::NoSocket(paths.api_socket.clone()))?;
        let start_time = proc_start_time(pid).unwrap_or_default();
        let process = VmmProcess {
            pid,
            start_time,
            api_socket: paths.api_socket.clone(),
        };
        let spawned = Spawned { process, child };
        // Wait for the socket to answer (CH: 3-5 ms after spawn).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if spawned.process.api_socket.exists()
                && let Ok(client) = Self::client(&spawned.process)
                && client.ping().await.is_ok()
            {
                spawn_timed("spawn.api_socket", t0);
                return Ok(spawned);
            }
            if Instant::now() >= deadline || proc_start_time(pid).is_none() {
                let mut child = spawned.child;
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(Error::NoSocket(paths.api_socket.clone()));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn ping(&self, vmm: &VmmProcess) -> Result<Option<i64>> {
        Ok(Self::client(vmm)?.ping().await?.pid)
    }

    async fn create(&self, vmm: &VmmProcess, spec: &VmSpec) -> Result<()> {
        let mut config = Self::vm_config(spec);
        if let Some(initramfs) = &self.launch.initramfs {
            config["payload"]["initramfs"] = json!(initramfs);
        }
        // The serial port is a socket CH binds at `vm.create` (and again at a boot after
        // `vm.shutdown`); the runtime's console pump connects before `vm.boot` and writes
        // `serial.log` (bounded) from it. CH refuses to bind over an existing file.
        if self.launch.serial_socket
            && let Some(dir) = vmm.api_socket.parent()
        {
            let socket = VmPaths::new(dir).serial_socket;
            let _ = std::fs::remove_file(&socket);
            config["serial"] = json!({ "mode": "Socket", "socket": socket });
        }
        // Cloud Hypervisor truncates its serial file at `vm.create` and again at every
        // `vm.boot` (also a re-boot in the same process): keep what earlier boots printed.
        keep_serial_history(&spec.serial_file).await;
        Ok(Self::client(vmm)?
            .vm(chapi::VmAction::Create, Some(&config))
            .await?)
    }

    async fn boot(&self, vmm: &VmmProcess) -> Result<()> {
        if let Some(dir) = vmm.api_socket.parent() {
            keep_serial_history(&VmPaths::new(dir).serial).await;
        }
        Ok(Self::client(vmm)?.vm(chapi::VmAction::Boot, None).await?)
    }

    async fn info(&self, vmm: &VmmProcess) -> Result<VmInfo> {
        match Self::client(vmm)?.info().await {
            Ok(info) => Ok(VmInfo {
                state: match info.state.as_str() {
                    "Running" => VmState::Running,
                    "Paused" | "BreakPoint" => VmState::Paused,
                    "Shutdown" => VmState::Shutdown,
                    _ => VmState::Created,
                },
                disk_ids: ids(&info.config, "disks"),
                nic_ids: ids(&info.config, "net"),
            }),
            // 404 = "VM is not created" (v53 and HEAD agree on 404 here).
            Err(chapi::Error::Api { status: 404, .. }) => Ok(VmInfo {
                state: VmState::NotCreated,
                disk_ids: Vec::new(),
                nic_ids: Vec::new(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn shutdown(&self, vmm: &VmmProcess) -> Result<()> {
        Ok(Self::client(vmm)?
            .vm(chapi::VmAction::Shutdown, None)
            .await?)
    }

    async fn power_button(&self, vmm: &VmmProcess) -> Result<()> {
        Ok(Self::client(vmm)?
            .vm(chapi::VmAction::PowerButton, None)
            .await?)
    }

    async fn delete(&self, vmm: &VmmProcess) -> Result<()> {
        Ok(Self::client(vmm)?.vm(chapi::VmAction::Delete, None).await?)
    }

    async fn attach_disk(&self, vmm: &VmmProcess, disk: &DiskSpec) -> Result<()> {
        let disk = Self::disk_json(disk);
        Ok(Self::client(vmm)?
            .vm(chapi::VmAction::AddDisk, Some(&disk))
            .await?)
    }

    async fn attach_nic(&self, vmm: &VmmProcess, nic: &NicSpec) -> Result<()> {
        let nic = Self::nic_json(nic);
        Ok(Self::client(vmm)?
            .vm(chapi::VmAction::AddNet, Some(&nic))
            .await?)
    }

    async fn detach_device(&self, vmm: &VmmProcess, id: &str) -> Result<()> {
        Ok(Self::client(vmm)?.remove_device(id).await?)
    }

    async fn terminate(&self, vmm: &VmmProcess, grace: Duration) -> Result<()> {
        if vmm.is_alive() {
            if let Ok(client) = Self::client(vmm) {
                let _ = client.shutdown_vmm().await;
            }
            if !vmm.wait_exit(grace).await {
                vmm.kill();
                vmm.wait_exit(Duration::from_secs(5)).await;
            }
        }
        let _ = std::fs::remove_file(&vmm.api_socket);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_attribute_only() {
        assert_eq!(ImageFormat::from_attribute(None), Some(ImageFormat::Raw));
        assert_eq!(
            ImageFormat::from_attribute(Some("")),
            Some(ImageFormat::Raw)
        );
        assert_eq!(
            ImageFormat::from_attribute(Some("raw")),
            Some(ImageFormat::Raw)
        );
        assert_eq!(
            ImageFormat::from_attribute(Some("qcow2")),
            Some(ImageFormat::Qcow2)
        );
        assert_eq!(ImageFormat::from_attribute(Some("vmdk")), None);
    }

    #[test]
    fn qcow2_with_backing_or_data_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("irikit-qcow2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("h.qcow2");
        let mut header = vec![0u8; 104];
        header[..4].copy_from_slice(b"QFI\xfb");
        header[7] = 3;
        std::fs::write(&file, &header).unwrap();
        assert!(check_plain_qcow2(&file).is_ok());
        header[15] = 0x68; // backing_file_offset
        std::fs::write(&file, &header).unwrap();
        assert!(check_plain_qcow2(&file).is_err());
        header[15] = 0;
        header[79] = 0b100; // incompatible feature: external data file
        std::fs::write(&file, &header).unwrap();
        assert!(check_plain_qcow2(&file).is_err());
        std::fs::write(&file, b"raw bytes").unwrap();
        assert!(check_plain_qcow2(&file).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn serial_history_is_bounded() {
        let dir = std::env::temp_dir().join(format!("irikit-serial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let serial = dir.join("serial.log");
        let old = dir.join("serial.log.old");
        for round in 0..3u8 {
            let mut text = vec![b'a' + round; SERIAL_HISTORY_MAX as usize];
            text.extend(format!("END-OF-ROUND-{round}\n").as_bytes());
            std::fs::write(&serial, &text).unwrap();
            keep_serial_history(&serial).await;
            let history = std::fs::read(&old).unwrap();
            assert!(
                history.len() as u64 <= SERIAL_HISTORY_MAX,
                "{}",
                history.len()
            );
            assert!(history.ends_with(format!("END-OF-ROUND-{round}\n").as_bytes()));
            assert_eq!(std::fs::metadata(&serial).unwrap().len(), 0);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn own_process_start_time_is_readable() {
        let pid = i32::try_from(std::process::id()).unwrap_or_default();
        assert!(proc_start_time(pid).is_some());
    }

    #[test]
    fn vm_config_sets_image_type_and_oem_strings() {
        let spec = VmSpec {
            uuid: "u".into(),
            cpus: 2,
            memory_bytes: 1 << 28,
            kernel: "/k".into(),
            cmdline: "c".into(),
            disks: vec![DiskSpec {
                id: "d".into(),
                path: "/d".into(),
                format: ImageFormat::Qcow2,
                readonly: false,
            }],
            nics: vec![],
            oem_strings: vec!["aWduaXRpb24=".into()],
            serial_file: "/s".into(),
        };
        let v = CloudHypervisor::vm_config(&spec);
        assert_eq!(v["disks"][0]["image_type"], "Qcow2");
        assert_eq!(v["disks"][0]["backing_files"], false);
        assert_eq!(v["platform"]["oem_strings"][0], "aWduaXRpb24=");
        assert_eq!(v["cpus"]["max_vcpus"], 2);
    }
}
