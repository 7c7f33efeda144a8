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

/// A serial port in mode `Socket`: a listener with at most one client.
struct SerialSocket {
    path: PathBuf,
    listener: Arc<std::os::unix::net::UnixListener>,
    client: Arc<Mutex<Option<std::os::unix::net::UnixStream>>>,
    /// The guest echoes what it receives (the stub booted with a cmdline starting with `e`).
    echo: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SerialSocket {
    fn bind(path: &Path) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = Arc::new(std::os::unix::net::UnixListener::bind(path)?);
        listener.set_nonblocking(true)?;
        let client: Arc<Mutex<Option<std::os::unix::net::UnixStream>>> = Arc::default();
        let echo = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let socket = Self {
            path: path.to_owned(),
            listener,
            client,
            echo,
            stop,
        };
        let (l, c, e, st) = (
            Arc::clone(&socket.listener),
            Arc::clone(&socket.client),
            Arc::clone(&socket.echo),
            Arc::clone(&socket.stop),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if !Self::accept(&l, &c, &e) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Ok(socket)
    }

    /// Take a pending connection as the client (replacing the previous one, as CH does);
    /// whether there was one.
    fn accept(
        listener: &std::os::unix::net::UnixListener,
        client: &Arc<Mutex<Option<std::os::unix::net::UnixStream>>>,
        echo: &Arc<std::sync::atomic::AtomicBool>,
    ) -> bool {
        let Ok((stream, _)) = listener.accept() else {
            return false;
        };
        let _ = stream.set_nonblocking(false);
        let Ok(reader) = stream.try_clone() else {
            return true;
        };
        let previous = client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(stream);
        if let Some(previous) = previous {
            let _ = previous.shutdown(std::net::Shutdown::Both);
        }
        let (c, e) = (Arc::clone(client), Arc::clone(echo));
        std::thread::spawn(move || Self::read(reader, &c, &e));
        true
    }

    /// The guest side of one client: what it writes reaches the stub, which echoes it back
    /// when it was booted to.
    fn read(
        mut reader: std::os::unix::net::UnixStream,
        client: &Mutex<Option<std::os::unix::net::UnixStream>>,
        echo: &std::sync::atomic::AtomicBool,
    ) {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) if echo.load(std::sync::atomic::Ordering::Relaxed) => {
                    if let Some(out) = client
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .as_mut()
                    {
                        let _ = out.write_all(&buf[..n]);
                    }
                }
                Ok(_) => {}
            }
        }
    }

    /// Guest output: to the client, or nowhere. A client that connected before counts (CH's
    /// serial thread accepts as soon as it connects, long before a guest boots).
    fn write(&self, data: &[u8]) {
        while Self::accept(&self.listener, &self.client, &self.echo) {}
        if let Some(out) = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            let _ = out.write_all(data);
        }
    }
}

impl Drop for SerialSocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = fs::remove_file(&self.path);
        if let Some(c) = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

struct Sim {
    cfg: SimConfig,
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
        if let Some(path) = &self.cfg.log_file {
            let elapsed = self.started.elapsed();
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(
                    f,
                    "cloud-hypervisor-sim: {:.6}s: {msg}",
                    elapsed.as_secs_f64()
                );
            }
        }
    }

    fn event(&self, source: &str, event: &str) {
        let Some(path) = &self.cfg.event_monitor else {
            return;
        };
        let t = self.started.elapsed();
        let obj = json!({
            "timestamp": {"secs": t.as_secs(), "nanos": t.subsec_nanos()},
            "source": source,
            "event": event,
            "properties": null,
        });
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let text = serde_json::to_string_pretty(&obj).unwrap_or_default();
            let _ = writeln!(f, "{text}");
        }
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

    async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> HttpResponse {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return err(StatusCode::BAD_REQUEST, &["Bad Request"]),
        };
        if self.cfg.verbosity > 0 {
            self.log(&format!("API request: {method} {path}"));
        }
        let Some(endpoint) = path.strip_prefix("/api/v1/") else {
            return err(StatusCode::NOT_FOUND, &["Not Found"]);
        };
        // The error is the HTTP response itself; boxing it would only add noise here.
        #[allow(clippy::result_large_err)]
        let parse = |body: &Bytes| -> std::result::Result<Value, HttpResponse> {
            serde_json::from_slice::<Value>(body).map_err(|e| {
                err(
                    StatusCode::BAD_REQUEST,
                    &["Failed to deserialize JSON", &e.to_string()],
                )
            })
        };
        let known = matches!(
            endpoint,
            "vmm.ping"
                | "vmm.shutdown"
                | "vm.info"
                | "vm.counters"
                | "vm.create"
                | "vm.boot"
                | "vm.shutdown"
                | "vm.power-button"
                | "vm.reboot"
                | "vm.pause"
                | "vm.resume"
                | "vm.delete"
                | "vm.add-disk"
                | "vm.add-net"
                | "vm.remove-device"
                | "vm.resize"
                | "vm.snapshot"
        );
        if !known {
            return err(StatusCode::NOT_FOUND, &["Not Found"]);
        }
        let is_get = matches!(endpoint, "vmm.ping" | "vm.info" | "vm.counters");
        if (is_get && method != Method::GET) || (!is_get && method != Method::PUT) {
            return err(StatusCode::BAD_REQUEST, &["Bad Request"]);
        }
        let mut guard = self.vm.lock().unwrap_or_else(|e| e.into_inner());
        match endpoint {
            "vmm.ping" => reply(
                StatusCode::OK,
                Some(json!({
                    "build_version": "v53.0.0-ch-sim",
                    "version": "53.0.0",
                    "pid": std::process::id(),
                    "features": ["kvm"],
                })),
            ),
            "vmm.shutdown" => {
                if let Some(vm) = guard.as_mut()
                    && vm.state.is_some()
                {
                    if matches!(vm.state, Some(VmState::Running | VmState::Paused)) {
                        self.event("vm", "shutdown");
                    }
                    self.event("vm", "deleted");
                }
                *guard = None;
                self.event("vmm", "shutdown");
                self.log("VMM shutdown requested");
                let _ = self.exit.send(0);
                reply(StatusCode::OK, None)
            }
            "vm.info" => match guard.as_ref() {
                Some(Vm {
                    config,
                    state: Some(state),
                    bdfs,
                    ..
                }) => {
                    let mut body = json!({
                        "config": config,
                        "state": state.as_str(),
                        "memory_actual_size": config["memory"]["size"],
                    });
                    // Cloud Hypervisor has a device tree once the VM is booted (it omits the
                    // field before, and again after `vm.shutdown`).
                    if *state != VmState::Created {
                        body["device_tree"] = Self::device_tree(config, bdfs);
                    }
                    reply(StatusCode::OK, Some(body))
                }
                _ => api_err(
                    StatusCode::NOT_FOUND,
                    "The VM info is not available",
                    "VM is not created",
                ),
            },
            "vm.counters" => match guard.as_ref() {
                Some(Vm {
                    state: Some(VmState::Running | VmState::Paused),
                    config,
                    ..
                }) => {
                    // Cloud Hypervisor's counters of an idle device: the latency minima and
                    // maxima start at u64::MAX, the averages at u64::MAX / 10_000.
                    let max = u64::MAX;
                    let avg = u64::MAX / 10_000;
                    let mut counters = serde_json::Map::new();
                    for disk in config["disks"].as_array().into_iter().flatten() {
                        if let Some(id) = disk["id"].as_str() {
                            counters.insert(
                                id.to_owned(),
                                json!({
                                    "read_ops": 0, "write_ops": 0, "read_bytes": 0,
                                    "write_bytes": 0, "read_latency_min": max,
                                    "read_latency_max": max, "read_latency_avg": avg,
                                    "write_latency_min": max, "write_latency_max": max,
                                    "write_latency_avg": avg,
                                }),
                            );
                        }
                    }
                    for net in config["net"].as_array().into_iter().flatten() {
                        if let Some(id) = net["id"].as_str() {
                            counters.insert(
                                id.to_owned(),
                                json!({"rx_bytes": 0, "rx_frames": 0, "tx_bytes": 0, "tx_frames": 0}),
                            );
                        }
                    }
                    reply(StatusCode::OK, Some(Value::Object(counters)))
                }
                _ => api_err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The VM info is not available",
                    "VM is not running",
                ),
            },
            "vm.create" => {
                let config = match parse(&body) {
                    Ok(v) => v,
                    Err(resp) => return resp,
                };
                if !config.is_object() || config.get("payload").is_none() {
                    return err(
                        StatusCode::BAD_REQUEST,
                        &["Failed to deserialize JSON", "missing field `payload`"],
                    );
                }
                if guard.as_ref().is_some_and(|vm| vm.state.is_some()) {
                    return api_err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The VM could not be created",
                        "VM is already created",
                    );
                }
                let config = Self::normalise(config);
                let ids = Self::device_ids(&config);
                let mut seen = std::collections::HashSet::new();
                if let Some(dup) = ids.iter().find(|id| !seen.insert(*id)) {
                    return api_err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The VM could not be created",
                        &format!("Identifier {dup} is not unique"),
                    );
                }
                Self::truncate_serial(&config);
                // CH binds the serial socket here (`pre_create_console_devices`).
                let serial = Self::bind_serial(&config);
                // As on Cloud Hypervisor v53: a serial socket that cannot be bound fails the
                // create, yet the VM config stays (state Created, `vm.create` again answers
                // "VM is already created"; `vm.boot` binds the socket, `vm.delete` clears it).
                let (serial, failed) = match serial {
                    Ok(serial) => (serial, None),
                    Err(e) => (None, Some(e)),
                };
                *guard = Some(Vm {
                    config,
                    state: Some(VmState::Created),
                    pending_eject: Vec::new(),
                    bdfs: std::collections::BTreeMap::new(),
                    serial,
                });
                if let Some(e) = failed {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            "The VM could not be created",
                            "Error creating console devices",
                            "Error creating console device",
                            &e.to_string(),
                        ],
                    );
                }
                self.log("VM created");
                reply(StatusCode::NO_CONTENT, None)
            }
            "vm.boot" => {
                let Some(vm) = guard.as_mut() else {
                    return api_err(
                        StatusCode::NOT_FOUND,
                        "The VM could not boot",
                        "VM config is missing",
                    );
                };
                match vm.state {
                    None => {
                        return api_err(
                            StatusCode::NOT_FOUND,
                            "The VM could not boot",
                            "VM config is missing",
                        );
                    }
                    Some(VmState::Running | VmState::Paused) => {
                        return api_err(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "The VM could not boot",
                            "VM is already created",
                        );
                    }
                    Some(VmState::Created) => {}
                }
                let payload = &vm.config["payload"];
                let cmdline = payload["cmdline"].as_str().unwrap_or_default().to_owned();
                let image = payload["kernel"]
                    .as_str()
                    .or_else(|| payload["firmware"].as_str());
                let Some(image) = image else {
                    return api_err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The VM could not boot",
                        "No kernel or firmware in payload",
                    );
                };
                if let Err(e) = File::open(image) {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            "The VM could not boot",
                            "Cannot open kernel file",
                            &e.to_string(),
                        ],
                    );
                }
                if vm.serial.is_none() {
                    // After `vm.shutdown` CH binds the serial socket again at boot.
                    match Self::bind_serial(&vm.config) {
                        Ok(serial) => vm.serial = serial,
                        Err(e) => {
                            return err(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                &[
                                    "Error from API",
                                    "The VM could not boot",
                                    "Error creating console devices",
                                    &e.to_string(),
                                ],
                            );
                        }
                    }
                }
                self.event("vm", "booting");
                vm.state = Some(VmState::Running);
                vm.pending_eject.clear();
                vm.bdfs.clear();
                for id in Self::virtio_ids(&vm.config) {
                    let bdf = Self::free_bdf(&vm.bdfs);
                    vm.bdfs.insert(id, bdf);
                }
                if let Some(nets) = vm.config.get_mut("net").and_then(Value::as_array_mut) {
                    for net in nets {
                        let id = net["id"].as_str().unwrap_or_default().to_owned();
                        Self::fill(net, &json!({"host_mac": Self::host_mac(&id)}));
                    }
                }
                Self::truncate_serial(&vm.config);
                Self::serial_line(vm, &format!("PVH-HELLO cmdline={cmdline}"));
                if let Some(serial) = &vm.serial {
                    serial.echo.store(
                        cmdline.starts_with('e'),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                self.event("vm", "booted");
                self.log("VM booted");
                if cmdline.starts_with('p') {
                    // The stub guest writes S5 to the ACPI port right after its banner: the VM
                    // shuts down, is deleted and the VMM exits 0.
                    self.event("vm", "shutdown");
                    self.event("vm", "deleted");
                    self.event("vmm", "shutdown");
                    self.log("guest requested power-off: VM exit event");
                    *guard = None;
                    let _ = self.exit.send(0);
                }
                reply(StatusCode::NO_CONTENT, None)
            }
            "vm.shutdown" | "vm.power-button" | "vm.reboot" | "vm.pause" | "vm.resume" => {
                // Recorded on Cloud Hypervisor v53: these need a booted VM. Without one, reboot
                // answers 404 "VM is not created" and the others 500 "VM is not running"; an
                // impossible pause or resume answers the state machine's error chain.
                let what = match endpoint {
                    "vm.shutdown" => "The VM could not shutdown",
                    "vm.power-button" => "Error triggering power button",
                    "vm.reboot" => "The VM could not reboot",
                    "vm.pause" => "The VM could not be paused",
                    _ => "The VM could not resume",
                };
                let booted = guard
                    .as_mut()
                    .filter(|vm| matches!(vm.state, Some(VmState::Running | VmState::Paused)));
                let Some(vm) = booted else {
                    return if endpoint == "vm.reboot" {
                        api_err(StatusCode::NOT_FOUND, what, "VM is not created")
                    } else {
                        api_err(StatusCode::INTERNAL_SERVER_ERROR, what, "VM is not running")
                    };
                };
                let state = vm.state.unwrap_or(VmState::Running);
                match (endpoint, state) {
                    ("vm.shutdown", _) => {
                        vm.state = Some(VmState::Created);
                        // CH drops its serial manager (and removes the socket) here.
                        vm.serial = None;
                        vm.pending_eject.clear();
                        vm.bdfs.clear();
                        self.event("vm", "shutdown");
                        self.log("VM shut down");
                        reply(StatusCode::NO_CONTENT, None)
                    }
                    ("vm.power-button", _) => reply(StatusCode::NO_CONTENT, None),
                    ("vm.reboot", _) => {
                        self.event("vm", "rebooting");
                        self.event("vm", "rebooted");
                        reply(StatusCode::NO_CONTENT, None)
                    }
                    ("vm.pause", VmState::Running) => {
                        vm.state = Some(VmState::Paused);
                        self.event("vm", "paused");
                        reply(StatusCode::NO_CONTENT, None)
                    }
                    ("vm.resume", VmState::Paused) => {
                        vm.state = Some(VmState::Running);
                        self.event("vm", "resumed");
                        reply(StatusCode::NO_CONTENT, None)
                    }
                    (_, from) => {
                        let (verb, to) = if endpoint == "vm.pause" {
                            ("pause", "Paused")
                        } else {
                            ("resume", "Running")
                        };
                        err(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &[
                                "Error from API",
                                what,
                                &format!("Cannot {verb} VM"),
                                &format!("Failed to {verb} migratable component"),
                                &format!(
                                    "Invalid transition: InvalidStateTransition({}, {to})",
                                    from.as_str()
                                ),
                            ],
                        )
                    }
                }
            }
            "vm.resize" => {
                let req = match parse(&body) {
                    Ok(v) => v,
                    Err(resp) => return resp,
                };
                let what = "The VM could not be resized";
                let Some(vm) = guard.as_mut().filter(|vm| vm.state.is_some()) else {
                    return api_err(StatusCode::NOT_FOUND, what, "VM is not created");
                };
                // Like v53, the new sizes are taken as given (a later boot validates them).
                if let Some(vcpus) = req["desired_vcpus"].as_u64() {
                    vm.config["cpus"]["boot_vcpus"] = json!(vcpus);
                }
                if let Some(ram) = req["desired_ram"].as_u64() {
                    vm.config["memory"]["size"] = json!(ram);
                }
                reply(StatusCode::NO_CONTENT, None)
            }
            "vm.snapshot" => {
                if let Err(resp) = parse(&body) {
                    return resp;
                }
                let what = "The VM could not be snapshotted";
                let cause = match guard.as_ref().and_then(|vm| vm.state) {
                    Some(VmState::Running) => "Trying to snapshot while VM is running",
                    Some(VmState::Paused) => "ch-sim does not write snapshots",
                    _ => {
                        return api_err(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            what,
                            "VM is not running",
                        );
                    }
                };
                err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &[
                        "Error from API",
                        what,
                        "Cannot snapshot VM",
                        "Failed to snapshot migratable component",
                        cause,
                    ],
                )
            }
            "vm.delete" => {
                if let Some(vm) = guard.as_ref()
                    && vm.state.is_some()
                {
                    if matches!(vm.state, Some(VmState::Running | VmState::Paused)) {
                        self.event("vm", "shutdown");
                    }
                    self.event("vm", "deleted");
                    self.log("VM deleted");
                }
                *guard = None;
                reply(StatusCode::NO_CONTENT, None)
            }
            "vm.add-disk" | "vm.add-net" => {
                let mut device = match parse(&body) {
                    Ok(v) => v,
                    Err(resp) => return resp,
                };
                let what = if endpoint == "vm.add-disk" {
                    "The disk could not be added to the VM"
                } else {
                    "The network device could not be added to the VM"
                };
                let Some(vm) = guard.as_mut().filter(|vm| vm.state.is_some()) else {
                    return api_err(StatusCode::NOT_FOUND, what, "VM is not created");
                };
                if !device.is_object() {
                    return err(
                        StatusCode::BAD_REQUEST,
                        &["Failed to deserialize JSON", "expected a JSON object"],
                    );
                }
                let list = if endpoint == "vm.add-disk" {
                    "disks"
                } else {
                    "net"
                };
                let existing = Self::device_ids(&vm.config);
                let taken = |id: &str| {
                    existing.iter().any(|e| e == id)
                        || vm.pending_eject.iter().any(|(p, _)| p == id)
                };
                let id = match device["id"].as_str() {
                    Some(id) => id.to_owned(),
                    None => {
                        // Like Cloud Hypervisor: the first free `_disk<n>` / `_net<n>`.
                        let prefix = if list == "disks" { "_disk" } else { "_net" };
                        let id = (0u32..)
                            .map(|n| format!("{prefix}{n}"))
                            .find(|id| !taken(id))
                            .unwrap_or_default();
                        device["id"] = json!(id);
                        id
                    }
                };
                Self::fill(
                    &mut device,
                    &if list == "disks" {
                        Self::disk_defaults()
                    } else {
                        Self::net_defaults()
                    },
                );
                if existing.contains(&id) || vm.pending_eject.iter().any(|(p, _)| *p == id) {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            what,
                            "Error from device manager",
                            &format!("Invalid identifier as it is not unique: {id}"),
                        ],
                    );
                }
                if list == "disks"
                    && let Some(path) = device["path"].as_str()
                    && let Err(e) = File::open(path)
                {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            what,
                            "Failed to open disk image",
                            &e.to_string(),
                        ],
                    );
                }
                let running = matches!(vm.state, Some(VmState::Running | VmState::Paused));
                if running
                    && list == "disks"
                    && let Some(path) = device["path"].as_str()
                    && (Self::disk_paths(&vm.config).any(|p| p == path)
                        || vm
                            .pending_eject
                            .iter()
                            .any(|(_, p)| p.as_deref() == Some(path)))
                {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            what,
                            "Error from device manager",
                            "Cannot lock images of all block devices",
                            &format!("Failed to get Write lock for disk image: {path}"),
                            "The file is already locked",
                        ],
                    );
                }
                if running && list == "net" {
                    Self::fill(&mut device, &json!({"host_mac": Self::host_mac(&id)}));
                }
                if let Some(arr) = vm.config.get_mut(list).and_then(Value::as_array_mut) {
                    arr.push(device);
                } else {
                    vm.config[list] = json!([device]);
                }
                if running {
                    let bdf = Self::free_bdf(&vm.bdfs);
                    // Like Cloud Hypervisor, the node stays in the device tree after
                    // `vm.remove-device` until the guest ejects it (never, for the stub).
                    vm.bdfs.insert(id.clone(), bdf.clone());
                    self.event("vm", "device-added");
                    reply(StatusCode::OK, Some(json!({"id": id, "bdf": bdf})))
                } else {
                    reply(StatusCode::NO_CONTENT, None)
                }
            }
            "vm.remove-device" => {
                let req = match parse(&body) {
                    Ok(v) => v,
                    Err(resp) => return resp,
                };
                let what = "The device could not be removed from the VM";
                let Some(vm) = guard.as_mut().filter(|vm| vm.state.is_some()) else {
                    return api_err(StatusCode::NOT_FOUND, what, "VM is not created");
                };
                let id = req["id"].as_str().unwrap_or_default().to_owned();
                let running = matches!(vm.state, Some(VmState::Running | VmState::Paused));
                let mut found = false;
                for list in ["disks", "net"] {
                    if let Some(arr) = vm.config.get_mut(list).and_then(Value::as_array_mut) {
                        let before = arr.len();
                        let mut removed = Vec::new();
                        arr.retain(|d| {
                            let keep = d["id"].as_str() != Some(id.as_str());
                            if !keep {
                                removed.push(d["path"].as_str().map(str::to_owned));
                            }
                            keep
                        });
                        found |= arr.len() != before;
                        if running {
                            vm.pending_eject
                                .extend(removed.into_iter().map(|path| (id.clone(), path)));
                        }
                    }
                }
                if !found && running {
                    return err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &[
                            "Error from API",
                            what,
                            "Error from device manager",
                            &format!(
                                "Failed to find device corresponding to the given identifier: {id}"
                            ),
                        ],
                    );
                }
                if !found {
                    // Not booted: Cloud Hypervisor edits the stored config only.
                    return api_err(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        what,
                        &format!("No device with id \"{id}\" to remove"),
                    );
                }
                // Like Cloud Hypervisor, an emptied list stays as `[]`.
                self.event("vm", "device-removed");
                reply(StatusCode::NO_CONTENT, None)
            }
            _ => err(StatusCode::NOT_FOUND, &["Not Found"]),
        }
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
    let sim = Arc::new(Sim {
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
