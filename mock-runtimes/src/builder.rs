//! Configuring and starting a mock: [`MockRuntimeBuilder`], its defaults, and the start on each
//! transport.

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use iri_spec::{
    bucket::v1alpha1 as bucket, endpoint::Endpoint, machine::v1alpha1 as machine,
    serve::AnyAuthority, volume::v1alpha1 as volume,
};
use tokio::io::DuplexStream;
use tokio_stream::{StreamExt as _, wrappers::UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;

use crate::{
    Delays, FaultRule, Mutant,
    calls::CallLog,
    classes::{
        BucketClassConfig, MachineClassConfig, VolumeClassConfig, default_bucket_classes,
        default_machine_classes, default_volume_classes,
    },
    clock::{Clock, IdGen},
    conn::MockConn,
    core::{Config, Core},
    events::EventLogs,
    fault::FaultPlan,
    handle::MockHandle,
    mutant::MutantSet,
    server::{Error, InProcessDialer, MockRuntime, Result, Transport, bind_unix, spawn_server},
};

/// The default host local storage behind reservations (1 TiB).
pub const DEFAULT_LOCAL_STORAGE_BYTES: i64 = 1 << 40;

/// Configures and starts a mock. Defaults: the default classes, zero delays, faults off, no mutants.
#[derive(Debug, Clone)]
#[must_use]
pub struct MockRuntimeBuilder {
    machine_classes: Vec<MachineClassConfig>,
    volume_classes: Vec<VolumeClassConfig>,
    bucket_classes: Vec<BucketClassConfig>,
    delays: Delays,
    runtime_name: String,
    runtime_version: String,
    power_off_stopped: bool,
    exec_url_prefix: Option<String>,
    console: Option<crate::console::ConsoleServer>,
    event_capacity: usize,
    reservations: bool,
    local_storage_bytes: i64,
    host_resources: Option<(i64, i64)>,
    enforce_capacity: bool,
    call_log_capacity: usize,
    mutants: Vec<Mutant>,
    faults: Vec<FaultRule>,
    seed: Option<u64>,
    machines: Vec<machine::Machine>,
    volumes: Vec<volume::Volume>,
    buckets: Vec<bucket::Bucket>,
}

impl Default for MockRuntimeBuilder {
    fn default() -> Self {
        MockRuntimeBuilder {
            machine_classes: default_machine_classes(),
            volume_classes: default_volume_classes(),
            bucket_classes: default_bucket_classes(),
            delays: Delays::default(),
            runtime_name: "iri-mock".to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
            power_off_stopped: false,
            exec_url_prefix: None,
            console: None,
            event_capacity: 10_000,
            reservations: true,
            local_storage_bytes: DEFAULT_LOCAL_STORAGE_BYTES,
            host_resources: None,
            enforce_capacity: false,
            call_log_capacity: 100_000,
            mutants: Vec::new(),
            faults: Vec::new(),
            seed: None,
            machines: Vec::new(),
            volumes: Vec::new(),
            buckets: Vec::new(),
        }
    }
}

impl MockRuntimeBuilder {
    /// Replaces the machine classes.
    pub fn machine_classes(
        mut self,
        classes: impl IntoIterator<Item = MachineClassConfig>,
    ) -> Self {
        self.machine_classes = classes.into_iter().collect();
        self
    }

    /// Adds a machine class.
    pub fn machine_class(mut self, class: MachineClassConfig) -> Self {
        self.machine_classes.push(class);
        self
    }

    /// Replaces the volume classes.
    pub fn volume_classes(mut self, classes: impl IntoIterator<Item = VolumeClassConfig>) -> Self {
        self.volume_classes = classes.into_iter().collect();
        self
    }

    /// Adds a volume class.
    pub fn volume_class(mut self, class: VolumeClassConfig) -> Self {
        self.volume_classes.push(class);
        self
    }

    /// Replaces the bucket classes.
    pub fn bucket_classes(mut self, classes: impl IntoIterator<Item = BucketClassConfig>) -> Self {
        self.bucket_classes = classes.into_iter().collect();
        self
    }

    /// Adds a bucket class.
    pub fn bucket_class(mut self, class: BucketClassConfig) -> Self {
        self.bucket_classes.push(class);
        self
    }

    /// Sets the state machine's delays (see [`Delays`]).
    pub fn delays(mut self, delays: Delays) -> Self {
        self.delays = delays;
        self
    }

    /// The `runtime_name` Version answers (default `iri-mock`).
    pub fn runtime_name(mut self, name: impl Into<String>) -> Self {
        self.runtime_name = name.into();
        self
    }

    /// The `runtime_version` Version answers (default: this crate's version).
    pub fn runtime_version(mut self, version: impl Into<String>) -> Self {
        self.runtime_version = version.into();
        self
    }

    /// Report powered-off machines as MACHINE_STOPPED (5) instead of MACHINE_TERMINATED (3).
    /// Off by default, because current Go poollets cannot map STOPPED.
    pub fn power_off_stopped(mut self, stopped: bool) -> Self {
        self.power_off_stopped = stopped;
        self
    }

    /// Exec answers `prefix + machine_id` (default: an empty URL, "unsupported").
    pub fn exec_url_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.exec_url_prefix = Some(prefix.into());
        self
    }

    /// Exec answers a URL of this scripted console (see [`crate::console`]) instead of
    /// `exec_url_prefix`: one console per machine, single-use expiring tokens.
    pub fn console(mut self, console: crate::console::ConsoleServer) -> Self {
        self.console = Some(console);
        self
    }

    /// How many events each service keeps (oldest dropped first; default 10 000).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n;
        self
    }

    /// How many calls the log keeps (oldest dropped first; default 100 000; 0 keeps none).
    /// Expectations count every call regardless.
    pub fn call_log_capacity(mut self, n: usize) -> Self {
        self.call_log_capacity = n;
        self
    }

    /// Turns a mutant on.
    pub fn mutant(mut self, mutant: Mutant) -> Self {
        self.mutants.push(mutant);
        self
    }

    /// Turns several mutants on.
    pub fn mutants(mut self, mutants: impl IntoIterator<Item = Mutant>) -> Self {
        self.mutants.extend(mutants);
        self
    }

    /// Installs a fault rule from the start.
    pub fn fault(mut self, rule: FaultRule) -> Self {
        self.faults.push(rule);
        self
    }

    /// Seeds the id generator, for reproducible ids.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Seeds a machine, stored as given (a missing id, created_at, spec or status is filled in).
    pub fn machine(mut self, m: machine::Machine) -> Self {
        self.machines.push(m);
        self
    }

    /// Seeds a volume, stored as given.
    pub fn volume(mut self, v: volume::Volume) -> Self {
        self.volumes.push(v);
        self
    }

    /// Seeds a bucket, stored as given.
    pub fn bucket(mut self, b: bucket::Bucket) -> Self {
        self.buckets.push(b);
        self
    }

    /// Whether to serve irikit's `ReservationRuntime` extension (default: yes). Without it
    /// the reservation RPCs answer `Unimplemented`, as a runtime without reservations does.
    pub fn reservations(mut self, on: bool) -> Self {
        self.reservations = on;
        self
    }

    /// The host's local storage in bytes, the capacity behind reservations'
    /// `local_storage_bytes_per_machine` (default [`DEFAULT_LOCAL_STORAGE_BYTES`], 1 TiB).
    pub fn local_storage_bytes(mut self, bytes: i64) -> Self {
        self.local_storage_bytes = bytes;
        self
    }

    /// The host's cpu (millicores) and memory (bytes) that reservations are checked against
    /// (default: the sum of `quantity × cpu` and `quantity × memory` over the classes).
    pub fn host_resources(mut self, cpu_millis: i64, memory_bytes: i64) -> Self {
        self.host_resources = Some((cpu_millis, memory_bytes));
        self
    }

    /// Whether every CreateMachine that names no reservation must fit next to the machines
    /// and the holds (`ResourceExhausted` otherwise), as a real host's would (default: only
    /// while some reservation holds capacity). The broker's hierarchy harness turns it on, so
    /// that a machine placed where it does not fit fails instead of running.
    pub fn enforce_capacity(mut self, on: bool) -> Self {
        self.enforce_capacity = on;
        self
    }

    /// Builds the mock without a transport: serve [`MockHandle::machine_service`] etc. yourself.
    pub fn build(self) -> MockHandle {
        let config = Config {
            machine_classes: self.machine_classes,
            volume_classes: self.volume_classes,
            bucket_classes: self.bucket_classes,
            delays: self.delays,
            runtime_name: self.runtime_name,
            runtime_version: self.runtime_version,
            power_off_stopped: self.power_off_stopped,
            exec_url_prefix: self.exec_url_prefix,
            console: self.console,
            event_capacity: self.event_capacity,
            reservations: self.reservations,
            local_storage_bytes: self.local_storage_bytes,
            host_resources: self.host_resources,
            enforce_capacity: self.enforce_capacity,
        };
        let mutants = MutantSet::default();
        for m in self.mutants {
            mutants.set(m, true);
        }
        let mut faults = FaultPlan::default();
        for rule in self.faults {
            faults.add(rule);
        }
        let core = Arc::new(Core {
            clock: Clock::new(),
            started: tokio::time::Instant::now(),
            mutants,
            calls: Mutex::new(CallLog::new(self.call_log_capacity)),
            faults_on: (!faults.is_empty()).into(),
            faults: Mutex::new(faults),
            ids: Mutex::new(IdGen::new(self.seed)),
            machines: Mutex::default(),
            volumes: Mutex::default(),
            snapshots: Mutex::default(),
            buckets: Mutex::default(),
            events: EventLogs::new(config.event_capacity),
            duplicate_id: Mutex::default(),
            reservations: Mutex::default(),
            shutdown: CancellationToken::new(),
            config,
        });
        for m in self.machines {
            core.seed(m);
        }
        for v in self.volumes {
            core.seed(v);
        }
        for b in self.buckets {
            core.seed(b);
        }
        MockHandle { core }
    }

    /// Starts the mock on an in-process transport (tokio duplex streams, no sockets). Every new
    /// connection of [`MockRuntime::machine_channel`] and friends gets its own duplex pair.
    pub async fn start_in_process(self) -> Result<MockRuntime> {
        let handle = self.build();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<DuplexStream>();
        let core = handle.core.clone();
        let incoming = UnboundedReceiverStream::new(rx).map(move |s| {
            Ok::<_, io::Error>(MockConn::new(AnyAuthority::new(s, core.authority())))
        });
        let server = spawn_server(&handle, incoming);
        let dialer = InProcessDialer { tx };
        let channel = dialer.channel();
        Ok(MockRuntime::new(
            handle,
            server,
            Transport::InProcess { dialer, channel },
        ))
    }

    /// Starts the mock on a unix socket at `path` (mode 0600; a stale socket is removed first;
    /// the socket is removed again on shutdown).
    pub async fn start_unix(self, path: impl AsRef<Path>) -> Result<MockRuntime> {
        self.start_unix_inner(path.as_ref().to_owned(), None).await
    }

    /// Starts the mock on a unix socket in a fresh temporary directory.
    pub async fn start_unix_temp(self) -> Result<MockRuntime> {
        let dir = tempfile::Builder::new()
            .prefix("iri-mock-")
            .tempdir()
            .map_err(Error::TempDir)?;
        let path = dir.path().join("iri.sock");
        self.start_unix_inner(path, Some(dir)).await
    }

    async fn start_unix_inner(
        self,
        path: PathBuf,
        dir: Option<tempfile::TempDir>,
    ) -> Result<MockRuntime> {
        let listener = bind_unix(&path)?;
        let handle = self.build();
        let core = handle.core.clone();
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener)
            .map(move |s| s.map(|s| MockConn::new(AnyAuthority::new(s, core.authority()))));
        let server = spawn_server(&handle, incoming);
        let channel = iri_spec::endpoint::connect_lazy(&Endpoint::Unix(path.clone()));
        Ok(MockRuntime::new(
            handle,
            server,
            Transport::Unix {
                path,
                channel,
                _dir: dir,
            },
        ))
    }

    /// Starts the mock on TCP `127.0.0.1:0` (plaintext HTTP/2).
    pub async fn start_tcp(self) -> Result<MockRuntime> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Bind("127.0.0.1:0".to_owned(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Bind("127.0.0.1:0".to_owned(), e))?;
        let handle = self.build();
        let incoming =
            tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| s.map(MockConn::new));
        let server = spawn_server(&handle, incoming);
        let endpoint = Endpoint::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        let channel = iri_spec::endpoint::connect_lazy(&endpoint);
        Ok(MockRuntime::new(
            handle,
            server,
            Transport::Tcp { endpoint, channel },
        ))
    }
}

impl MockRuntime {
    /// A builder with the defaults (see [`MockRuntimeBuilder`]).
    pub fn builder() -> MockRuntimeBuilder {
        MockRuntimeBuilder::default()
    }
}
