//! Store faults under load (issue 17): the control plane's processes — `irikit-scheduler`,
//! `machinepoollet` and `iri-mock-runtime` — run against a real etcd while it goes away and
//! comes back. Three scenarios, one at a time:
//!
//! - **restart**: etcd is SIGKILLed during a rollout of 500 Machines, stays down 10 s, and is
//!   started again on the same data dir and ports;
//! - **partition + compaction**: the processes reach etcd through a TCP proxy that cuts every
//!   connection; while cut, more Machines are created and etcd's history is compacted past
//!   every watch's revision, so the watches cannot resume where they stopped;
//! - **half-open connection**: the proxy freezes the established connections without closing
//!   them (no FIN, no RST, as when a host or a NAT entry vanishes) while new connections work.
//!   Only the etcd client's HTTP/2 keep-alive can notice.
//!
//! Each scenario asserts that every process resumes by itself, that every Machine ends
//! Running with a correct status, and that the runtime holds exactly one IRI machine per
//! Machine (none lost, none twice). It prints when each process resumed.
//!
//! An etcd component test: without etcd (or the `etcd` feature) it prints one `skip:` line,
//! unless `IRIKIT_REQUIRE` names etcd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_faults() {
    common::etcd_unavailable();
}

#[cfg(feature = "etcd")]
mod faults {
    use std::{
        collections::HashMap,
        net::SocketAddr,
        path::PathBuf,
        process::Stdio,
        sync::{Arc, Mutex},
        time::{Duration, Instant},
    };

    use futures::{StreamExt, TryStreamExt};
    use iri_spec::{
        endpoint::Endpoint,
        keys,
        machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
    };
    use irikit_api::{
        ListOptions, Store, StoreExt,
        compute::Machine,
        meta::{LocalObjectReference, ObjectMeta},
        store::etcd::{DEFAULT_PREFIX, LocalEtcd},
    };
    use tokio::{
        net::{TcpListener, TcpStream},
        process::{Child, Command},
        sync::watch,
    };
    use tonic::transport::Channel;

    use super::common;

    const POOLLET: &str = env!("CARGO_BIN_EXE_machinepoollet");
    const POOL: &str = "pool-faults";
    const CLASS: &str = "faults-small";
    const NS: &str = "default";
    /// How long any phase may take before the test fails.
    const DEADLINE: Duration = Duration::from_secs(120);

    /// The scenarios share the machine's two cores: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn run(scenario: impl std::future::Future<Output = ()>) {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario);
    }

    #[test]
    fn etcd_restart_under_load() {
        run(restart());
    }

    #[test]
    fn etcd_partition_with_compaction() {
        run(partition_with_compaction());
    }

    #[test]
    fn etcd_half_open_connection() {
        run(half_open());
    }

    // --- a TCP proxy that injects connection faults ------------------------------------------

    /// What the proxy does with connections.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Mode {
        /// Forward bytes both ways.
        Pass,
        /// Close every connection and refuse new ones (a partition that resets).
        Cut,
        /// Connections opened before generation `.0` stop forwarding but stay open (half-open:
        /// no FIN, no RST); newer ones forward.
        Freeze(u64),
    }

    struct FaultProxy {
        addr: SocketAddr,
        mode: watch::Sender<Mode>,
        generation: Arc<std::sync::atomic::AtomicU64>,
        accept: tokio::task::JoinHandle<()>,
    }

    impl FaultProxy {
        async fn start(upstream: SocketAddr) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (mode, _) = watch::channel(Mode::Pass);
            let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let accept = {
                let mode = mode.clone();
                let generation = generation.clone();
                tokio::spawn(async move {
                    while let Ok((client, _)) = listener.accept().await {
                        if *mode.borrow() == Mode::Cut {
                            drop(client);
                            continue;
                        }
                        let born = generation.load(std::sync::atomic::Ordering::SeqCst);
                        tokio::spawn(pipe(client, upstream, mode.subscribe(), born));
                    }
                })
            };
            Self {
                addr,
                mode,
                generation,
                accept,
            }
        }

        fn set(&self, mode: Mode) {
            self.mode.send_replace(mode);
        }

        /// Freezes every connection open now; later ones forward.
        fn freeze_established(&self) {
            let generation = self
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            self.set(Mode::Freeze(generation));
        }
    }

    impl Drop for FaultProxy {
        fn drop(&mut self) {
            self.accept.abort();
            // Ends every connection task (their receivers see the sender go).
            self.set(Mode::Cut);
        }
    }

    async fn pipe(
        client: TcpStream,
        upstream: SocketAddr,
        mut mode: watch::Receiver<Mode>,
        born: u64,
    ) {
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        let frozen = {
            let mut copy = Box::pin(async {
                tokio::select! {
                    _ = tokio::io::copy(&mut client_rx, &mut server_tx) => {}
                    _ = tokio::io::copy(&mut server_rx, &mut client_tx) => {}
                }
            });
            loop {
                tokio::select! {
                    () = &mut copy => return,
                    changed = mode.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        match *mode.borrow_and_update() {
                            Mode::Pass => {}
                            Mode::Cut => return,
                            Mode::Freeze(generation) if born < generation => break true,
                            Mode::Freeze(_) => {}
                        }
                    }
                }
            }
        };
        // Frozen: hold both sockets open, forward nothing, until the proxy cuts or goes.
        if frozen {
            while mode.changed().await.is_ok() {
                if *mode.borrow_and_update() == Mode::Cut {
                    break;
                }
            }
        }
        drop((client_rx, client_tx, server_rx, server_tx));
    }

    // --- the processes -------------------------------------------------------------------------

    /// A child process whose stderr lines are kept (with the time they arrived).
    struct Proc {
        name: &'static str,
        child: Child,
        lines: Arc<Mutex<Vec<(Instant, String)>>>,
    }

    impl Proc {
        fn spawn(name: &'static str, mut cmd: Command) -> Self {
            cmd.env("POOLLET_LOG_FORMAT", "text").stdout(Stdio::null());
            let (child, mut stderr) = common::spawn_logging(cmd);
            let lines = Arc::new(Mutex::new(Vec::new()));
            let kept = lines.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = stderr.next_line().await {
                    kept.lock().unwrap().push((Instant::now(), line));
                }
            });
            Self { name, child, lines }
        }

        /// Lines containing `needle`, logged at or after `since`.
        fn count_since(&self, needle: &str, since: Instant) -> usize {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .filter(|(at, line)| *at >= since && line.contains(needle))
                .count()
        }

        /// Fails the test when the process has exited.
        fn assert_alive(&mut self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail: Vec<String> = {
                    let lines = self.lines.lock().unwrap();
                    lines
                        .iter()
                        .rev()
                        .take(20)
                        .rev()
                        .map(|(_, l)| l.clone())
                        .collect()
                };
                panic!(
                    "{} exited with {status}; last lines:\n{}",
                    self.name,
                    tail.join("\n")
                );
            }
        }
    }

    struct Plane {
        etcd: LocalEtcd,
        /// The test's own connection, straight to etcd (never through the proxy).
        store: Arc<dyn Store>,
        runtime: MachineRuntimeClient<Channel>,
        mock: Proc,
        scheduler: Proc,
        poollet: Proc,
        _dir: tempfile::TempDir,
    }

    /// The control plane's processes against a fresh etcd; `via` is the address they dial
    /// (the proxy's) or `None` for etcd's own.
    async fn plane(etcd: LocalEtcd, via: Option<SocketAddr>) -> Plane {
        let store: Arc<dyn Store> = Arc::new(etcd.store(DEFAULT_PREFIX).await.unwrap());
        let etcd_addr = via.map_or_else(
            || etcd.endpoint().trim_start_matches("http://").to_string(),
            |addr| addr.to_string(),
        );
        store
            .create_typed(common::machine_class(CLASS, "1", "1Gi"))
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("machine.sock");
        let mut mock_cmd = Command::new(mock_runtime_bin());
        mock_cmd.arg("--machine-socket").arg(&socket).args([
            "--machine-class",
            &format!("{CLASS}:cpu=1,memory=1Gi,quantity=100000"),
        ]);
        let mock = Proc::spawn("iri-mock-runtime", mock_cmd);
        let runtime = connect_runtime(&socket).await;

        let mut scheduler_cmd = Command::new(scheduler_bin());
        scheduler_cmd.args(["--store", &format!("etcd://{etcd_addr}")]);
        let scheduler = Proc::spawn("irikit-scheduler", scheduler_cmd);

        let mut poollet_cmd = Command::new(POOLLET);
        poollet_cmd
            .args([
                "--machine-pool-name",
                POOL,
                "--provider-id",
                "ironcore://faults",
            ])
            .args([
                "--machine-runtime-endpoint",
                &format!("unix://{}", socket.display()),
            ])
            .args(["--store", &format!("etcd://{etcd_addr}")])
            .args(["--max-concurrent-reconciles", "32", "--relist-period", "1s"]);
        let poollet = Proc::spawn("machinepoollet", poollet_cmd);

        Plane {
            etcd,
            store,
            runtime,
            mock,
            scheduler,
            poollet,
            _dir: dir,
        }
    }

    fn mock_runtime_bin() -> PathBuf {
        common::workspace_bin(
            "iri-mock",
            "iri-mock-runtime",
            &[],
            "IRIKIT_MOCK_RUNTIME_BIN",
        )
    }

    fn scheduler_bin() -> PathBuf {
        common::workspace_bin(
            "scheduler",
            "irikit-scheduler",
            &["etcd"],
            "IRIKIT_SCHEDULER_BIN",
        )
    }

    async fn connect_runtime(socket: &std::path::Path) -> MachineRuntimeClient<Channel> {
        let endpoint = Endpoint::Unix(socket.to_path_buf());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if socket.exists()
                && let Ok(channel) = iri_spec::endpoint::connect(&endpoint).await
            {
                return MachineRuntimeClient::new(channel);
            }
            assert!(Instant::now() < deadline, "iri-mock-runtime did not start");
            // Polling a child process's socket; there is no event to wait on.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates Machines `vm-<from>` .. `vm-<to - 1>` with no pool: the scheduler binds them.
    async fn create_machines(store: &Arc<dyn Store>, from: usize, to: usize) {
        futures::stream::iter(from..to)
            .map(|i| {
                let store = store.clone();
                async move {
                    let mut m = Machine {
                        metadata: ObjectMeta::namespaced(NS, format!("vm-{i:04}")),
                        ..Machine::default()
                    };
                    m.spec.machine_class_ref = LocalObjectReference::new(CLASS);
                    store.create_typed(m).await.map(drop)
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await
            .unwrap();
    }

    /// What the test saw of each Machine: when it was first seen bound and first seen Running.
    #[derive(Default, Clone)]
    struct Seen {
        bound: HashMap<String, Instant>,
        running: HashMap<String, Instant>,
    }

    /// Samples the Machines every 100 ms through the test's own store connection, ignoring
    /// the errors of an outage.
    fn follow(store: Arc<dyn Store>) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok((machines, _)) =
                        store.list_typed::<Machine>(&ListOptions::all()).await
                    {
                        let now = Instant::now();
                        let mut seen = seen.lock().unwrap();
                        for m in machines {
                            if m.spec.machine_pool_ref.is_some() {
                                seen.bound.entry(m.metadata.name.clone()).or_insert(now);
                            }
                            if m.status.state == "Running" && !m.status.machine_id.is_empty() {
                                seen.running.entry(m.metadata.name).or_insert(now);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        (seen, task)
    }

    impl Plane {
        fn assert_alive(&mut self) {
            self.mock.assert_alive();
            self.scheduler.assert_alive();
            self.poollet.assert_alive();
        }

        /// Waits until `n` Machines were seen Running.
        async fn wait_running(&mut self, seen: &Arc<Mutex<Seen>>, n: usize, what: &str) {
            let started = Instant::now();
            loop {
                let running = seen.lock().unwrap().running.len();
                if running >= n {
                    return;
                }
                self.assert_alive();
                assert!(
                    started.elapsed() < DEADLINE,
                    "{what}: only {running} of {n} Machines Running after {DEADLINE:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// The end state: `n` Machines, each Running on the pool with a machineID, and the
        /// runtime holding exactly the one IRI machine each machineID names.
        async fn assert_converged(&mut self, n: usize) {
            let (machines, _) = self
                .store
                .list_typed::<Machine>(&ListOptions::all())
                .await
                .unwrap();
            assert_eq!(machines.len(), n, "Machines in the store");
            let mut by_uid = HashMap::new();
            for m in &machines {
                assert_eq!(m.status.state, "Running", "{} state", m.metadata.name);
                assert_eq!(
                    m.spec.machine_pool_ref.as_ref().map(|r| r.name.as_str()),
                    Some(POOL),
                    "{} pool",
                    m.metadata.name
                );
                assert!(
                    m.status.machine_id.starts_with("iri-mock://"),
                    "{} machineID {:?}",
                    m.metadata.name,
                    m.status.machine_id
                );
                by_uid.insert(m.metadata.uid.clone(), m.status.machine_id.clone());
            }
            let iri = self
                .runtime
                .list_machines(machine::ListMachinesRequest { filter: None })
                .await
                .unwrap()
                .into_inner()
                .machines;
            let mut per_uid: HashMap<String, Vec<String>> = HashMap::new();
            for m in &iri {
                let meta = m.metadata.clone().unwrap_or_default();
                let uid = meta
                    .labels
                    .get(keys::MACHINE_UID_LABEL)
                    .cloned()
                    .unwrap_or_default();
                per_uid
                    .entry(uid)
                    .or_default()
                    .push(format!("iri-mock://{}", meta.id));
            }
            assert_eq!(
                iri.len(),
                n,
                "IRI machines on the runtime (none lost, none twice)"
            );
            for (uid, machine_id) in &by_uid {
                assert_eq!(
                    per_uid.get(uid).map(Vec::as_slice),
                    Some(std::slice::from_ref(machine_id)),
                    "exactly one IRI machine for uid {uid}, the one in machineID"
                );
            }
        }
    }

    /// The first time after `since` that the test saw a Machine bound / Running.
    /// The first bind and the first Running at or after `since`, as delays from it.
    fn firsts_after(seen: &Mutex<Seen>, since: Instant) -> (Option<Duration>, Option<Duration>) {
        let seen = seen.lock().unwrap();
        (
            first_after(&seen.bound, since),
            first_after(&seen.running, since),
        )
    }

    fn first_after(events: &HashMap<String, Instant>, since: Instant) -> Option<Duration> {
        events
            .values()
            .filter(|at| **at >= since)
            .map(|at| at.duration_since(since))
            .min()
    }

    async fn start_etcd() -> Option<LocalEtcd> {
        common::etcd_store(DEFAULT_PREFIX)
            .await
            .map(|(etcd, _)| etcd)
    }

    // --- the scenarios -------------------------------------------------------------------------

    async fn restart() {
        const N: usize = 500;
        const FIRST: usize = 300;
        let Some(etcd) = start_etcd().await else {
            return;
        };
        let mut plane = plane(etcd, None).await;
        let (seen, follower) = follow(plane.store.clone());
        let started = Instant::now();
        create_machines(&plane.store, 0, FIRST).await;
        plane
            .wait_running(&seen, FIRST / 3, "before the outage")
            .await;

        let running_at_cut = seen.lock().unwrap().running.len();
        let cut = Instant::now();
        plane.etcd.stop();
        tokio::time::sleep(Duration::from_secs(10)).await;
        plane.assert_alive();
        plane.etcd.restart().await.unwrap();
        let back = Instant::now();
        // New work only the resumed processes can do.
        create_machines(&plane.store, FIRST, N).await;
        plane.wait_running(&seen, N, "after the restart").await;
        let done = Instant::now();
        plane.assert_converged(N).await;
        follower.abort();

        let (bind, running) = firsts_after(&seen, back);
        let resyncs = plane.scheduler.count_since("relisting", cut);
        println!(
            "etcd restart: {N} machines, {running_at_cut} Running when etcd was killed; down \
             {:.1?}; after it was back: scheduler's first bind {bind:.1?}, poollet's first \
             Running {running:.1?}, all {N} Running {:.1?} (rollout {:.1?} in all); scheduler \
             relisted {resyncs} times",
            back.duration_since(cut),
            done.duration_since(back),
            done.duration_since(started),
        );
        assert!(bind.is_some() && running.is_some());
        assert!(resyncs >= 1, "the scheduler relisted after the outage");
    }

    /// A fresh etcd behind a [`FaultProxy`] and the plane that dials the proxy (`None` after
    /// the skip line when etcd is missing).
    async fn proxied_plane() -> Option<(FaultProxy, Plane)> {
        let etcd = start_etcd().await?;
        let upstream: SocketAddr = etcd
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        let proxy = FaultProxy::start(upstream).await;
        let plane = plane(etcd, Some(proxy.addr)).await;
        Some((proxy, plane))
    }

    async fn partition_with_compaction() {
        const FIRST: usize = 150;
        const DURING: usize = 100;
        let Some((proxy, mut plane)) = proxied_plane().await else {
            return;
        };
        let (seen, follower) = follow(plane.store.clone());
        create_machines(&plane.store, 0, FIRST).await;
        plane.wait_running(&seen, FIRST, "before the cut").await;

        let cut = Instant::now();
        proxy.set(Mode::Cut);
        // While cut off: new Machines, and the history every watch stopped at is compacted.
        create_machines(&plane.store, FIRST, FIRST + DURING).await;
        let revision = plane.store.revision().await.unwrap();
        plane.store.compact(revision).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        plane.assert_alive();
        assert_eq!(
            seen.lock().unwrap().bound.len(),
            FIRST,
            "nothing is bound while the scheduler is cut off"
        );

        proxy.set(Mode::Pass);
        let healed = Instant::now();
        plane
            .wait_running(&seen, FIRST + DURING, "after the cut healed")
            .await;
        let done = Instant::now();
        plane.assert_converged(FIRST + DURING).await;
        follower.abort();
        let (bind, running) = firsts_after(&seen, healed);
        println!(
            "etcd partition: cut {:.1?} with {DURING} Machines created and etcd compacted to \
             revision {revision} meanwhile; after the heal: scheduler's first bind {bind:.1?}, \
             poollet's first Running {running:.1?}, all {} Running {:.1?}",
            healed.duration_since(cut),
            FIRST + DURING,
            done.duration_since(healed),
        );
        assert!(plane.scheduler.count_since("relisting", cut) >= 1);
    }

    async fn half_open() {
        const FIRST: usize = 100;
        const DURING: usize = 50;
        let Some((proxy, mut plane)) = proxied_plane().await else {
            return;
        };
        let (seen, follower) = follow(plane.store.clone());
        create_machines(&plane.store, 0, FIRST).await;
        plane.wait_running(&seen, FIRST, "before the freeze").await;

        // Every established connection goes silent for good; a new one would work.
        proxy.freeze_established();
        let frozen = Instant::now();
        create_machines(&plane.store, FIRST, FIRST + DURING).await;
        plane
            .wait_running(&seen, FIRST + DURING, "with the old connections half-open")
            .await;
        let done = Instant::now();
        plane.assert_converged(FIRST + DURING).await;
        follower.abort();
        let (bind, running) = firsts_after(&seen, frozen);
        println!(
            "etcd half-open connection: after the freeze: scheduler's first bind {bind:.1?}, \
             poollet's first Running {running:.1?}, all {} Running {:.1?} (keep-alive {:?} + \
             {:?})",
            FIRST + DURING,
            done.duration_since(frozen),
            irikit_api::store::etcd::KEEP_ALIVE_INTERVAL,
            irikit_api::store::etcd::KEEP_ALIVE_TIMEOUT,
        );
    }
}
