//! `ch-sim`: a Cloud Hypervisor REST API simulator, so CI can test the runtime without a real CH.
//!
//! It takes the same command-line arguments the runtime passes to `cloud-hypervisor`
//! (`--api-socket path=P`, `--event-monitor path=F`, `--log-file F`, `-v`) and serves the
//! endpoints the runtime uses with the behaviour observed on CH v53 (see the crate README):
//! string-array errors, 404 for a VM that is not created or has no config, 500 for the rest,
//! 400 for malformed JSON, `vmm.shutdown` → 200 and exit 0, state `Created` after
//! `vm.shutdown`, idempotent `vm.delete`, `add-disk` → 200 `{id,bdf}`, a flock on
//! `<socket>.lock`, serial-file and event-monitor output, and a guest power-off (payload
//! cmdline starting with `p`) that makes the process exit 0 and remove its socket.
//!
//! A serial port in mode `Socket` behaves as Cloud Hypervisor's serial manager: the socket is
//! bound at `vm.create` (refused if the path exists), again at a boot after `vm.shutdown`, and
//! removed at `vm.shutdown`, `vm.delete` and exit; one client at a time (a new connection
//! replaces the old one), output with no client is dropped. The emulated guest is the PVH stub:
//! its banner at boot, and with a cmdline starting with `e` it echoes every byte it receives.

mod api;
mod serial;

use serial::SerialSocket;

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::UnixListener, sync::mpsc};

/// Errors that stop the simulator before it serves.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another live instance holds `<socket>.lock` (CH's `ApiSocketInUse`).
    #[error("API socket {0:?} is already in use by another running instance")]
    SocketInUse(PathBuf),
    /// An argument could not be parsed.
    #[error("invalid argument {0:?}")]
    BadArgument(String),
    /// A file or socket operation failed.
    #[error("{what} {path:?}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the simulator was started with.
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    /// The API socket path.
    pub api_socket: PathBuf,
    /// Where event-monitor JSON objects go.
    pub event_monitor: Option<PathBuf>,
    /// Where log lines go.
    pub log_file: Option<PathBuf>,
    /// Verbosity (`-v` count).
    pub verbosity: u8,
}

/// Parse a CH-style `path=P[,k=v...]` or bare `P` socket/file option.
pub fn parse_path_option(value: &str) -> Result<PathBuf> {
    if value.is_empty() {
        return Err(Error::BadArgument(value.to_owned()));
    }
    if !value.contains('=') {
        return Ok(PathBuf::from(value));
    }
    value
        .split(',')
        .find_map(|part| part.strip_prefix("path="))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| Error::BadArgument(value.to_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmState {
    Created,
    Running,
    Paused,
}

impl VmState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Running => "Running",
            Self::Paused => "Paused",
        }
    }
}

struct Vm {
    config: Value,
    /// `None` after `vm.delete`; the config is kept after `vm.shutdown`.
    state: Option<VmState>,
    /// Disks hot-unplugged from the running VM: like Cloud Hypervisor with a guest that never
    /// acknowledges the ACPI eject (the PVH stub), the device keeps its id and its image lock
    /// until the VM shuts down. `(id, path)`.
    pending_eject: Vec<(String, Option<String>)>,
    /// The PCI address of each virtio device of the booted VM, by device id (what Cloud
    /// Hypervisor's device tree reports as the `_virtio-pci-<id>` node's `pci_bdf`).
    bdfs: std::collections::BTreeMap<String, String>,
    /// The serial port's socket (mode `Socket`) while CH would hold it.
    serial: Option<SerialSocket>,
}

struct Sim {
    cfg: SimConfig,
    /// The log file and the event monitor, opened once at start as Cloud Hypervisor does: the
    /// process keeps writing to them when their directory is renamed (a runtime hands a
    /// pre-started VMM to a machine by renaming its directory).
    log_file: Option<Mutex<File>>,
    event_monitor: Option<Mutex<File>>,
    started: Instant,
    vm: Mutex<Option<Vm>>,
    exit: mpsc::UnboundedSender<i32>,
}

type HttpResponse = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: Option<Value>) -> HttpResponse {
    let mut builder = Response::builder().status(status);
    let bytes = match body {
        Some(v) => {
            builder = builder.header("Content-Type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    builder.body(Full::new(bytes)).unwrap_or_else(|_| {
        // Only reachable with an invalid header, and ours are static.
        Response::new(Full::new(Bytes::new()))
    })
}

fn err(status: StatusCode, chain: &[&str]) -> HttpResponse {
    reply(status, Some(json!(chain)))
}

fn api_err(status: StatusCode, what: &str, cause: &str) -> HttpResponse {
    err(status, &["Error from API", what, cause])
}

impl Sim {
    fn log(&self, msg: &str) {
        if let Some(file) = &self.log_file {
            let elapsed = self.started.elapsed();
            if let Ok(mut f) = file.lock() {
                let _ = writeln!(
                    f,
                    "cloud-hypervisor-sim: {:.6}s: {msg}",
                    elapsed.as_secs_f64()
                );
            }
        }
    }

    fn event(&self, source: &str, event: &str) {
        let Some(file) = &self.event_monitor else {
            return;
        };
        let t = self.started.elapsed();
        let obj = json!({
            "timestamp": {"secs": t.as_secs(), "nanos": t.subsec_nanos()},
            "source": source,
            "event": event,
            "properties": null,
        });
        if let Ok(mut f) = file.lock() {
            let text = serde_json::to_string_pretty(&obj).unwrap_or_default();
            let _ = writeln!(f, "{text}");
        }
    }

    /// The VMM exits 0 (`vmm.shutdown`, or a guest's power-off): the VM's `shutdown` event when
    /// it was running or paused and its `deleted` event when it was created, then the VMM's
    /// `shutdown`, with `why` in the log.
    fn vmm_exit(&self, vm: &mut Option<Vm>, why: &str) {
        if let Some(vm) = vm.as_ref()
            && vm.state.is_some()
        {
            if matches!(vm.state, Some(VmState::Running | VmState::Paused)) {
                self.event("vm", "shutdown");
            }
            self.event("vm", "deleted");
        }
        *vm = None;
        self.event("vmm", "shutdown");
        self.log(why);
        let _ = self.exit.send(0);
    }

    fn serial_line(vm: &Vm, line: &str) {
        if let Some(socket) = &vm.serial {
            socket.write(format!("{line}\n").as_bytes());
            return;
        }
        let serial = &vm.config["serial"];
        if serial["mode"].as_str() == Some("File")
            && let Some(path) = serial["file"].as_str()
            && let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// The serial socket of `config` (mode `Socket`), bound; `None` for other modes.
    fn bind_serial(config: &Value) -> std::io::Result<Option<SerialSocket>> {
        let serial = &config["serial"];
        if serial["mode"].as_str() != Some("Socket") {
            return Ok(None);
        }
        let path = serial["socket"].as_str().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "serial socket path missing",
            )
        })?;
        SerialSocket::bind(Path::new(path)).map(Some)
    }

    /// Cloud Hypervisor opens its serial file with truncation at `vm.create` and every boot.
    fn truncate_serial(config: &Value) {
        let serial = &config["serial"];
        if serial["mode"].as_str() == Some("File")
            && let Some(path) = serial["file"].as_str()
        {
            let _ = File::create(path);
        }
    }

    /// Image paths of the disks in the VM config.
    fn disk_paths(config: &Value) -> impl Iterator<Item = &str> {
        config["disks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["path"].as_str())
    }

    /// The lowest PCI slot on segment 0 that no device of the booted VM holds (slot 0 is the
    /// host bridge); a hot-unplugged device the guest never ejected keeps its slot.
    fn free_bdf(bdfs: &std::collections::BTreeMap<String, String>) -> String {
        let slot = (1u32..)
            .find(|slot| {
                let bdf = format!("0000:00:{slot:02x}.0");
                !bdfs.values().any(|b| *b == bdf)
            })
            .unwrap_or(1);
        format!("0000:00:{slot:02x}.0")
    }

    /// Add each of `defaults`' fields that `object` lacks.
    fn fill(object: &mut Value, defaults: &Value) {
        if let (Some(object), Some(defaults)) = (object.as_object_mut(), defaults.as_object()) {
            for (key, value) in defaults {
                object.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    }

    /// Cloud Hypervisor v53's defaults for one `disks[]` entry (`DiskConfig`).
    fn disk_defaults() -> Value {
        json!({
            "pci_segment": 0, "readonly": false, "direct": false, "num_queues": 1,
            "queue_size": 128, "vhost_user": false, "disable_io_uring": false,
            "disable_aio": false, "backing_files": false, "sparse": true,
            "image_type": "Unknown", "lock_granularity": "ByteRange",
        })
    }

    /// Cloud Hypervisor v53's defaults for one `net[]` entry (`NetConfig`).
    fn net_defaults() -> Value {
        json!({
            "pci_segment": 0, "num_queues": 2, "queue_size": 256, "vhost_user": false,
            "vhost_mode": "Client", "offload_tso": true, "offload_ufo": true, "offload_csum": true,
        })
    }

    /// Fill in CH's defaults so `vm.info` shows the config as the real thing does: every
    /// field of `VmConfig` with its default (recorded from a v53 build), no `disks`/`net` key
    /// when there are none, and `platform.uuid` under its real name `system_uuid`.
    fn normalise(mut config: Value) -> Value {
        let boot = config["cpus"]["boot_vcpus"].as_u64().unwrap_or(1);
        if config.get("cpus").is_none() {
            config["cpus"] = json!({});
        }
        Self::fill(
            &mut config["cpus"],
            &json!({
                "boot_vcpus": boot, "max_vcpus": boot, "kvm_hyperv": false, "max_phys_bits": 46,
                "features": {"amx": false}, "nested": true, "core_scheduling": "Vm",
                "profile": "Host",
            }),
        );
        if config.get("memory").is_none() {
            config["memory"] = json!({});
        }
        Self::fill(
            &mut config["memory"],
            &json!({
                "size": 536_870_912u64, "mergeable": false, "hotplug_method": "Acpi",
                "shared": false, "hugepages": false, "prefault": false, "reserve": false,
                "thp": true,
            }),
        );
        if config.get("rng").is_none() {
            config["rng"] = json!({});
        }
        Self::fill(
            &mut config["rng"],
            &json!({"pci_segment": 0, "src": "/dev/urandom"}),
        );
        if config.get("serial").is_none() {
            config["serial"] = json!({"mode": "Null"});
        }
        if config.get("console").is_none() {
            config["console"] = json!({"mode": "Tty"});
        }
        Self::fill(&mut config["console"], &json!({"pci_segment": 0}));
        Self::fill(
            &mut config,
            &json!({
                "debug_console": {"mode": "Off", "iobase": 233},
                "pvpanic": false, "iommu": false, "watchdog": false, "landlock_enable": false,
            }),
        );
        if let Some(platform) = config.get_mut("platform").and_then(Value::as_object_mut)
            && let Some(uuid) = platform.remove("uuid")
        {
            platform.insert("system_uuid".into(), uuid);
        }
        if config.get("platform").is_some() {
            Self::fill(
                &mut config["platform"],
                &json!({
                    "num_pci_segments": 1, "iommu_address_width_bits": 64, "iommufd": false,
                    "vfio_p2p_dma": true,
                }),
            );
        }
        for (list, defaults) in [
            ("disks", Self::disk_defaults()),
            ("net", Self::net_defaults()),
        ] {
            match config.get_mut(list) {
                Some(Value::Array(items)) => {
                    for item in items.iter_mut() {
                        Self::fill(item, &defaults);
                    }
                }
                Some(Value::Null) => {
                    if let Some(obj) = config.as_object_mut() {
                        obj.remove(list);
                    }
                }
                _ => {}
            }
        }
        config
    }

    /// The MAC Cloud Hypervisor reads back from the tap it opened (`host_mac`), set on every
    /// `net[]` entry when the device is created: at boot, or at `vm.add-net` on a booted VM.
    fn host_mac(id: &str) -> String {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        std::process::id().hash(&mut h);
        let b = h.finish().to_be_bytes();
        // Locally administered, unicast.
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            (b[0] | 0x02) & 0xfe,
            b[1],
            b[2],
            b[3],
            b[4],
            b[5]
        )
    }

    fn device_ids(config: &Value) -> Vec<String> {
        ["disks", "net"]
            .iter()
            .filter_map(|k| config[*k].as_array())
            .flatten()
            .filter_map(|d| d["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// The virtio devices a booted VM has, in the order Cloud Hypervisor v53 gives them PCI
    /// slots (recorded: disks 01, nets next, rng last): console (unless off), disks, nets, rng.
    fn virtio_ids(config: &Value) -> Vec<String> {
        let mut ids = Vec::new();
        if config["console"]["mode"]
            .as_str()
            .is_some_and(|mode| mode != "Off")
        {
            ids.push("__console".to_owned());
        }
        ids.extend(Self::device_ids(config));
        ids.push("__rng".to_owned());
        ids
    }

    /// `vm.info`'s `device_tree` in Cloud Hypervisor v53's shape: a map from device id to
    /// `{id, resources, parent?, children, pci_bdf?}` (`DeviceNode`, `None` fields omitted),
    /// `resources` a list of externally tagged `Resource`s. Each virtio device is a child of
    /// its `_virtio-pci-<id>` node, which holds the BAR and the PCI address.
    fn device_tree(config: &Value, bdfs: &std::collections::BTreeMap<String, String>) -> Value {
        let mut tree = serde_json::Map::new();
        let leaf = |id: &str| json!({"id": id, "resources": [], "children": []});
        tree.insert("__ioapic".into(), leaf("__ioapic"));
        if config["serial"]["mode"]
            .as_str()
            .is_some_and(|mode| mode != "Off")
        {
            tree.insert("__serial".into(), leaf("__serial"));
        }
        for (index, (id, bdf)) in (0u64..).zip(bdfs) {
            let pci = format!("_virtio-pci-{id}");
            let mut node = leaf(id);
            node["parent"] = json!(pci);
            tree.insert(id.clone(), node);
            let bar = json!({"PciBar": {
                "index": 0,
                "base": 0xe000_0000u64 + index * 0x8_0000,
                "size": 0x8_0000,
                "type_": "Mmio32",
                "prefetchable": false,
            }});
            tree.insert(
                pci.clone(),
                json!({"id": pci, "resources": [bar], "children": [id], "pci_bdf": bdf}),
            );
        }
        Value::Object(tree)
    }
}

/// Take the `<socket>.lock` flock, or fail with [`Error::SocketInUse`] when a live instance has it.
fn lock_socket(api_socket: &Path) -> Result<File> {
    let mut lock_path = api_socket.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| Error::Io {
            what: "open lock file",
            path: lock_path.clone(),
            source,
        })?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| Error::SocketInUse(api_socket.to_owned()))?;
    Ok(file)
}

/// Run the simulator until it is asked to exit; returns the process exit code.
///
/// The caller (the `ch-sim` binary) exits with it. The API socket is removed on every exit
/// path this function controls; the `.lock` file is left behind, as CH does.
pub async fn run(cfg: SimConfig) -> Result<i32> {
    let _lock = lock_socket(&cfg.api_socket)?;
    match fs::remove_file(&cfg.api_socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                what: "remove stale socket",
                path: cfg.api_socket.clone(),
                source,
            });
        }
    }
    let listener = UnixListener::bind(&cfg.api_socket).map_err(|source| Error::Io {
        what: "bind API socket",
        path: cfg.api_socket.clone(),
        source,
    })?;
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
    let append = |path: &Option<PathBuf>| {
        path.as_ref()
            .and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok())
            .map(Mutex::new)
    };
    let sim = Arc::new(Sim {
        log_file: append(&cfg.log_file),
        event_monitor: append(&cfg.event_monitor),
        cfg: cfg.clone(),
        started: Instant::now(),
        vm: Mutex::new(None),
        exit: exit_tx,
    });
    sim.event("vmm", "starting");
    sim.log("cloud-hypervisor simulator started");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| Error::Io {
            what: "install SIGTERM handler",
            path: cfg.api_socket.clone(),
            source,
        })?;
    let code = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let sim = Arc::clone(&sim);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let sim = Arc::clone(&sim);
                        async move { Ok::<_, std::convert::Infallible>(sim.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            code = exit_rx.recv() => {
                // Let the response that triggered the exit reach the client first.
                tokio::time::sleep(Duration::from_millis(2)).await;
                break code.unwrap_or(0);
            }
            _ = sigterm.recv() => {
                sim.event("vmm", "shutdown");
                break 0;
            }
        }
    };
    drop(listener);
    let _ = fs::remove_file(&cfg.api_socket);
    sim.log("VMM exited");
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("path=/tmp/a.sock", "/tmp/a.sock")]
    #[case("/tmp/b.sock", "/tmp/b.sock")]
    #[case("fd=3,path=/tmp/c.sock", "/tmp/c.sock")]
    fn parses_path_options(#[case] input: &str, #[case] want: &str) {
        assert_eq!(parse_path_option(input).ok(), Some(PathBuf::from(want)));
    }

    #[rstest]
    #[case("")]
    #[case("fd=3")]
    #[case("path=")]
    fn rejects_bad_path_options(#[case] input: &str) {
        assert!(parse_path_option(input).is_err());
    }
}
