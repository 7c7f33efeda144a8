//! Starting a mock: the builder, the control handle, and the in-process, unix and TCP transports.

use std::{
    collections::HashMap,
    fmt, io,
    ops::Deref,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread::ThreadId,
};

use iri_spec::{
    bucket::v1alpha1 as bucket, endpoint::Endpoint, event::v1alpha1 as event, kind::Service,
    machine::v1alpha1 as machine, serve::AnyAuthority, volume::v1alpha1 as volume,
};
use tokio::{io::DuplexStream, task::JoinHandle};
use tokio_stream::{StreamExt as _, wrappers::UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    BucketService, Call, Delays, Expectation, FaultId, FaultRule, MachineService, Method, Mutant,
    ReservationService, VolumeService,
    calls::{CallLog, ExpectationState},
    classes::{
        BucketClassConfig, MachineClassConfig, VolumeClassConfig, default_bucket_classes,
        default_machine_classes, default_volume_classes,
    },
    clock::{Clock, IdGen},
    conn::MockConn,
    core::{Config, Core},
    events::EventLogs,
    fault::FaultPlan,
    lock,
    mutant::MutantSet,
    objects::MockKind,
};

/// Errors of starting or stopping a mock.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating a temporary directory for the socket failed.
    #[error("create temporary directory")]
    TempDir(#[source] io::Error),
    /// Binding the listener failed.
    #[error("bind {0}")]
    Bind(String, #[source] io::Error),
    /// Binding the unix socket failed (a live server or a non-socket at the path, or IO).
    #[error(transparent)]
    Socket(#[from] iri_spec::serve::BindError),
    /// The server task failed.
    #[error("serve")]
    Serve(#[source] tonic::transport::Error),
    /// The server task panicked or was aborted.
    #[error("server task ended abnormally")]
    Join(#[source] tokio::task::JoinError),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
        let connector_tx = tx.clone();
        let channel = tonic::transport::Endpoint::from_static("http://iri-mock.local")
            .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let tx = connector_tx.clone();
                async move {
                    let (client, server) = tokio::io::duplex(256 * 1024);
                    tx.send(server).map_err(|_| {
                        io::Error::new(io::ErrorKind::ConnectionRefused, "iri-mock runtime stopped")
                    })?;
                    Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(client))
                }
            }));
        Ok(MockRuntime::new(
            handle,
            server,
            Transport::InProcess { tx, channel },
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

/// Binds a unix listener at `path` with [`iri_spec::serve::bind_unix`]: mode 0600 from the
/// start; a stale socket is replaced, a live one or anything that is not a socket refused.
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    Ok(iri_spec::serve::bind_unix(path)?)
}

fn spawn_server<S, IO>(
    handle: &MockHandle,
    incoming: S,
) -> JoinHandle<Result<(), tonic::transport::Error>>
where
    S: tokio_stream::Stream<Item = io::Result<MockConn<IO>>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let router = iri_spec::serve::builder()
        .add_service(handle.machine_service().into_server())
        .add_service(handle.volume_service().into_server())
        .add_service(handle.bucket_service().into_server())
        .add_service(handle.reservation_service().into_server());
    let token = handle.core.shutdown.clone();
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await
    })
}

enum Transport {
    InProcess {
        tx: tokio::sync::mpsc::UnboundedSender<DuplexStream>,
        channel: Channel,
    },
    Unix {
        path: PathBuf,
        channel: Channel,
        _dir: Option<tempfile::TempDir>,
    },
    Tcp {
        endpoint: Endpoint,
        channel: Channel,
    },
}

/// Opens in-process connections to a mock started with
/// [`MockRuntimeBuilder::start_in_process`] (see [`MockRuntime::in_process_dialer`]).
#[derive(Debug, Clone)]
pub struct InProcessDialer {
    tx: tokio::sync::mpsc::UnboundedSender<DuplexStream>,
}

impl InProcessDialer {
    /// A new connection (the client half of a duplex pair); an error once the mock stopped.
    pub fn dial(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(256 * 1024);
        self.tx.send(server).map_err(|_| {
            io::Error::new(io::ErrorKind::ConnectionRefused, "iri-mock runtime stopped")
        })?;
        Ok(client)
    }
}

/// A running mock. Control it through the [`MockHandle`] it derefs to; talk to it through
/// [`machine_channel`](Self::machine_channel) and friends.
///
/// Dropping it shuts the server down and verifies the expectations: a failed expectation panics
/// when the drop happens on the thread that started the mock and that thread is not already
/// panicking; otherwise the failure is printed to stderr.
pub struct MockRuntime {
    handle: MockHandle,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    transport: Transport,
    owner: ThreadId,
}

impl fmt::Debug for MockRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockRuntime")
            .field("endpoint", &self.endpoint())
            .field("mutants", &self.handle.mutants())
            .finish_non_exhaustive()
    }
}

impl MockRuntime {
    /// A builder with the defaults (see [`MockRuntimeBuilder`]).
    pub fn builder() -> MockRuntimeBuilder {
        MockRuntimeBuilder::default()
    }

    fn new(
        handle: MockHandle,
        server: JoinHandle<Result<(), tonic::transport::Error>>,
        transport: Transport,
    ) -> Self {
        MockRuntime {
            handle,
            server: Some(server),
            transport,
            owner: std::thread::current().id(),
        }
    }

    fn channel(&self) -> Channel {
        match &self.transport {
            Transport::InProcess { channel, .. }
            | Transport::Unix { channel, .. }
            | Transport::Tcp { channel, .. } => channel.clone(),
        }
    }

    /// A channel for `MachineRuntimeClient` (a clone of the mock's shared lazy channel).
    pub fn machine_channel(&self) -> Channel {
        self.channel()
    }

    /// A channel for `VolumeRuntimeClient`.
    pub fn volume_channel(&self) -> Channel {
        self.channel()
    }

    /// A channel for `BucketRuntimeClient`.
    pub fn bucket_channel(&self) -> Channel {
        self.channel()
    }

    /// A channel on a connection of its own (not shared with the other channels).
    pub fn new_channel(&self) -> Channel {
        match &self.transport {
            Transport::InProcess { tx, .. } => {
                let tx = tx.clone();
                tonic::transport::Endpoint::from_static("http://iri-mock.local")
                    .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                        let tx = tx.clone();
                        async move {
                            let (client, server) = tokio::io::duplex(256 * 1024);
                            tx.send(server).map_err(|_| {
                                io::Error::new(
                                    io::ErrorKind::ConnectionRefused,
                                    "iri-mock runtime stopped",
                                )
                            })?;
                            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(client))
                        }
                    }))
            }
            Transport::Unix { path, .. } => {
                iri_spec::endpoint::connect_lazy(&Endpoint::Unix(path.clone()))
            }
            Transport::Tcp { endpoint, .. } => iri_spec::endpoint::connect_lazy(endpoint),
        }
    }

    /// A dialer of new in-process connections to the mock's server, for clients that need
    /// their own connector (e.g. a proxy a test can cut); `None` for the unix and TCP
    /// transports, whose [`endpoint`](Self::endpoint) is dialled instead.
    pub fn in_process_dialer(&self) -> Option<InProcessDialer> {
        match &self.transport {
            Transport::InProcess { tx, .. } => Some(InProcessDialer { tx: tx.clone() }),
            Transport::Unix { .. } | Transport::Tcp { .. } => None,
        }
    }

    /// The endpoint out-of-process clients use (`None` for the in-process transport).
    pub fn endpoint(&self) -> Option<Endpoint> {
        match &self.transport {
            Transport::InProcess { .. } => None,
            Transport::Unix { path, .. } => Some(Endpoint::Unix(path.clone())),
            Transport::Tcp { endpoint, .. } => Some(endpoint.clone()),
        }
    }

    /// The control handle (cloneable, e.g. to move into a task).
    pub fn handle(&self) -> MockHandle {
        self.handle.clone()
    }

    /// Stops serving gracefully (in-flight calls finish; hanging calls end with Unavailable),
    /// removes the socket, and verifies the expectations.
    pub async fn shutdown(mut self) -> Result<()> {
        self.handle.core.shutdown.cancel();
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
                Ok(Ok(res)) => res.map_err(Error::Serve)?,
                Ok(Err(join)) => return Err(Error::Join(join)),
                Err(_elapsed) => {
                    tracing::warn!("mock runtime did not stop within 5s; abandoning it")
                }
            }
        }
        Ok(())
    }
}

impl Deref for MockRuntime {
    type Target = MockHandle;

    fn deref(&self) -> &MockHandle {
        &self.handle
    }
}

impl Drop for MockRuntime {
    fn drop(&mut self) {
        self.handle.core.shutdown.cancel();
        if let Transport::Unix { path, .. } = &self.transport {
            let _ = std::fs::remove_file(path);
        }
        if let Err(failures) = self.handle.verify() {
            let message = format!("iri-mock: unmet expectations:\n{failures}");
            if std::thread::panicking() || std::thread::current().id() != self.owner {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// Unmet expectations, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct VerifyError(pub Vec<String>);

/// Controls and inspects a mock: call log, expectations, faults, mutants and the stored objects.
/// Cheap to clone; does not verify on drop (only [`MockRuntime`] does).
#[derive(Clone)]
pub struct MockHandle {
    pub(crate) core: Arc<Core>,
}

impl fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHandle")
            .field("core", &self.core)
            .finish()
    }
}

impl MockHandle {
    /// The `MachineRuntime` service, to serve on a transport of your own.
    pub fn machine_service(&self) -> MachineService {
        MachineService {
            core: self.core.clone(),
        }
    }

    /// The `VolumeRuntime` service.
    pub fn volume_service(&self) -> VolumeService {
        VolumeService {
            core: self.core.clone(),
        }
    }

    /// The `BucketRuntime` service.
    pub fn bucket_service(&self) -> BucketService {
        BucketService {
            core: self.core.clone(),
        }
    }

    /// irikit's `ReservationRuntime` extension, served next to the `MachineRuntime`.
    pub fn reservation_service(&self) -> ReservationService {
        ReservationService {
            core: self.core.clone(),
        }
    }

    /// Every reservation, in creation order (deleted ones are gone).
    pub fn reservations(&self) -> Vec<iri_spec::irikit::reservation::v1alpha1::Reservation> {
        lock(&self.core.reservations).items.clone()
    }

    // --- mutants

    /// Switches a mutant on or off while the mock runs.
    pub fn set_mutant(&self, mutant: Mutant, on: bool) {
        self.core.mutants.set(mutant, on);
    }

    /// The mutants that are on.
    pub fn mutants(&self) -> Vec<Mutant> {
        self.core.mutants.active()
    }

    // --- call log

    /// The recorded calls, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.core.calls).calls.iter().cloned().collect()
    }

    /// The recorded calls of `method`.
    pub fn calls_to(&self, method: Method) -> Vec<Call> {
        lock(&self.core.calls)
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// How many recorded calls of `method` there are.
    pub fn call_count(&self, method: Method) -> usize {
        lock(&self.core.calls)
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// Forgets the recorded calls (expectation counts are kept).
    pub fn clear_calls(&self) {
        lock(&self.core.calls).calls.clear();
    }

    /// Panics unless exactly `n` calls of `method` were recorded.
    #[track_caller]
    pub fn assert_called(&self, method: Method, n: usize) {
        let calls = self.calls_to(method);
        assert!(
            calls.len() == n,
            "expected {n} call(s) of {}, got {}: {calls:#?}",
            method.name(),
            calls.len()
        );
    }

    /// Panics unless the recorded calls, in order, have exactly these methods.
    #[track_caller]
    pub fn assert_calls(&self, methods: &[Method]) {
        let got: Vec<Method> = self.calls().iter().map(|c| c.method).collect();
        assert!(
            got == methods,
            "expected calls {:?}, got {:?}",
            methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
            got.iter().map(|m| m.name()).collect::<Vec<_>>()
        );
    }

    /// Panics unless some recorded call of `method` ended with `code`.
    #[track_caller]
    pub fn assert_any_code(&self, method: Method, code: tonic::Code) {
        let calls = self.calls_to(method);
        assert!(
            calls.iter().any(|c| c.code == Some(code)),
            "expected a call of {} with code {code:?}, got {calls:#?}",
            method.name()
        );
    }

    // --- expectations

    /// Registers an expectation on `method` (at least one call unless refined), checked when the
    /// [`MockRuntime`] drops or by [`verify`](Self::verify).
    pub fn expect(&self, method: Method) -> Expectation {
        let state = Arc::new(Mutex::new(ExpectationState {
            method,
            name: None,
            min: 1,
            max: None,
            code: None,
            predicate: None,
            matched: 0,
        }));
        lock(&self.core.calls).expectations.push(state.clone());
        Expectation { state }
    }

    /// Checks every expectation now.
    pub fn verify(&self) -> Result<(), VerifyError> {
        let failures: Vec<String> = lock(&self.core.calls)
            .expectations
            .iter()
            .filter_map(|e| lock(e).failure())
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(VerifyError(failures))
        }
    }

    /// Removes every expectation (e.g. after verifying one phase of a test).
    pub fn reset_expectations(&self) {
        lock(&self.core.calls).expectations.clear();
    }

    // --- faults

    /// Installs a fault rule.
    pub fn add_fault(&self, rule: FaultRule) -> FaultId {
        let id = lock(&self.core.faults).add(rule);
        self.core
            .faults_on
            .store(true, std::sync::atomic::Ordering::Relaxed);
        id
    }

    /// Removes a fault rule; false if it was not installed.
    pub fn remove_fault(&self, id: FaultId) -> bool {
        lock(&self.core.faults).remove(id)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.core.faults).clear();
    }

    /// Every stored object of a kind, in creation order, as List shows it.
    fn all<K: MockKind>(&self) -> Vec<K> {
        self.core.list("", &HashMap::new()).unwrap_or_default()
    }

    // --- machines

    /// The stored machine `id` (as stored, without output mutants).
    pub fn machine(&self, id: &str) -> Option<machine::Machine> {
        self.core.get(id)
    }

    /// Every stored machine, in creation order.
    pub fn machines(&self) -> Vec<machine::Machine> {
        self.all()
    }

    /// How many machines are stored (terminating ones included).
    pub fn machine_count(&self) -> usize {
        self.core.count::<machine::Machine>()
    }

    /// Stores a machine as given and returns its id.
    pub fn insert_machine(&self, m: machine::Machine) -> String {
        self.core.seed(m)
    }

    /// Forces a machine's state (cancelling pending provisioning/power transitions) and records
    /// a state-change event. False if the machine is unknown.
    pub fn set_machine_state(&self, id: &str, state: machine::MachineState) -> bool {
        self.core.force_state::<machine::Machine>(id, state as i32)
    }

    /// Changes a stored machine in place. False if unknown.
    pub fn modify_machine(&self, id: &str, f: impl FnOnce(&mut machine::Machine)) -> bool {
        self.core.modify(id, f)
    }

    /// Adds an event to the machine service's event list.
    pub fn inject_machine_event(&self, ev: event::Event) {
        self.core.inject_event(Service::Machine, ev);
    }

    // --- volumes, snapshots

    /// The stored volume `id`.
    pub fn volume(&self, id: &str) -> Option<volume::Volume> {
        self.core.get(id)
    }

    /// Every stored volume, in creation order.
    pub fn volumes(&self) -> Vec<volume::Volume> {
        self.all()
    }

    /// Stores a volume as given and returns its id.
    pub fn insert_volume(&self, v: volume::Volume) -> String {
        self.core.seed(v)
    }

    /// Forces a volume's state. False if unknown.
    pub fn set_volume_state(&self, id: &str, state: volume::VolumeState) -> bool {
        self.core.force_state::<volume::Volume>(id, state as i32)
    }

    /// Changes a stored volume in place (e.g. to give its access `secret_data`). False if
    /// unknown.
    pub fn modify_volume(&self, id: &str, f: impl FnOnce(&mut volume::Volume)) -> bool {
        self.core.modify(id, f)
    }

    /// Every stored volume snapshot.
    pub fn volume_snapshots(&self) -> Vec<volume::VolumeSnapshot> {
        self.all()
    }

    /// Forces a snapshot's state. False if unknown.
    pub fn set_volume_snapshot_state(&self, id: &str, state: volume::VolumeSnapshotState) -> bool {
        self.core
            .force_state::<volume::VolumeSnapshot>(id, state as i32)
    }

    /// Adds an event to the volume service's event list.
    pub fn inject_volume_event(&self, ev: event::Event) {
        self.core.inject_event(Service::Volume, ev);
    }

    // --- buckets

    /// Every stored bucket, in creation order.
    pub fn buckets(&self) -> Vec<bucket::Bucket> {
        self.all()
    }

    /// Stores a bucket as given and returns its id.
    pub fn insert_bucket(&self, b: bucket::Bucket) -> String {
        self.core.seed(b)
    }

    /// Forces a bucket's state. False if unknown.
    pub fn set_bucket_state(&self, id: &str, state: bucket::BucketState) -> bool {
        self.core.force_state::<bucket::Bucket>(id, state as i32)
    }

    /// Adds an event to the bucket service's event list.
    pub fn inject_bucket_event(&self, ev: event::Event) {
        self.core.inject_event(Service::Bucket, ev);
    }
}
