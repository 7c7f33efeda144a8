//! A multi-host partition suite in network namespaces (issue 17). Each "host" is a network
//! namespace with its own address on one bridge (itself inside a namespace of the test's):
//!
//! - `e1`, `e2`, `e3`: a 3-member etcd cluster;
//! - `cp`: `irikit controllers` (both schedulers and the pool-liveness controller);
//! - `h1`, `h2`: a `machinepoollet` with its `iri-mock-runtime` each (pools `pool-h1`,
//!   `pool-h2`); the poollet reaches its runtime on a unix socket and etcd over the bridge.
//!
//! The test itself reaches the cluster through a veth of its own on the bridge. It:
//! 1. rolls out Machines while SIGKILLing one etcd member: nothing is lost;
//! 2. cuts `h1` off (its link goes down: no FIN, no RST): its pool's Lease stops being
//!    renewed, the pool-liveness controller marks it `Ready=Unknown`, and new Machines are
//!    bound only to `pool-h2`;
//! 3. heals the cut: `pool-h1` turns Ready again, and every Machine is Running with exactly
//!    one IRI machine on the runtime of its pool (none lost, none twice).
//!
//! It prints the timeline (cut → Unknown → healed → Ready). Everything it starts is killed and
//! every namespace and link it made is deleted, also when it fails. It needs root (to make
//! namespaces), `ip` (iproute2) and etcd: without them it prints one `skip:` line, unless
//! `IRIKIT_REQUIRE` names `netns` (or `etcd`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use iri_spec::{
    endpoint::Endpoint,
    keys,
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
};
use irikit_api::{
    ListOptions, Store, StoreExt,
    compute::{Machine, MachineClass, MachinePool},
    meta::{LocalObjectReference, ObjectMeta},
};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

const IRIKIT: &str = env!("CARGO_BIN_EXE_irikit");
const CLASS: &str = "part-small";
const NS: &str = "default";
const DEADLINE: Duration = Duration::from_secs(120);
/// The pool-liveness grace period the controllers run with (IronCore: 50 s against a 10 s
/// heartbeat; here 6 s against 1 s).
const GRACE: &str = "6s";

fn required(component: &str) -> bool {
    std::env::var("IRIKIT_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|c| c.trim() == component)
}

fn skip(reason: &str) {
    assert!(
        !required("netns"),
        "netns is required (IRIKIT_REQUIRE) but {reason}"
    );
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("skip: partition suite: {reason}\n"),
    );
}

/// Runs `ip` with `args`; panics with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The namespaces and links of one run; dropping it deletes them (also on a panic).
struct Net {
    prefix: String,
    subnet: String,
    hosts: Vec<String>,
    root_veth: String,
}

impl Net {
    /// The switch namespace with a bridge, one namespace per host name with `eth0` on the
    /// bridge at `<subnet>.<10 + i>`, and a veth from the test's own namespace at
    /// `<subnet>.254`.
    fn build(hosts: &[&str]) -> Self {
        let pid = std::process::id();
        let prefix = format!("irk{pid}");
        let subnet = format!("10.213.{}", 20 + pid % 200);
        let mut net = Self {
            prefix: prefix.clone(),
            subnet: subnet.clone(),
            hosts: Vec::new(),
            root_veth: format!("{prefix}t"),
        };
        let sw = net.ns("sw");
        ip(&["netns", "add", &sw]);
        net.hosts.push("sw".into());
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for (i, host) in hosts.iter().enumerate() {
            let ns = net.ns(host);
            ip(&["netns", "add", &ns]);
            net.hosts.push((*host).to_string());
            let (inner, outer) = (format!("{prefix}{host}"), format!("{prefix}{host}b"));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"]);
            ip(&["link", "set", &outer, "netns", &sw]);
            ip(&["-n", &sw, "link", "set", &outer, "master", "br0", "up"]);
            let addr = format!("{subnet}.{}/24", 10 + i);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let (inner, outer) = (net.root_veth.clone(), format!("{prefix}tb"));
        ip(&[
            "link", "add", &inner, "type", "veth", "peer", "name", &outer,
        ]);
        ip(&["link", "set", &outer, "netns", &sw]);
        ip(&["-n", &sw, "link", "set", &outer, "master", "br0", "up"]);
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &inner]);
        ip(&["link", "set", &inner, "up"]);
        net
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn addr(&self, hosts: &[&str], host: &str) -> String {
        let i = hosts.iter().position(|h| *h == host).unwrap();
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// `cmd` run inside `host`'s namespace (`ip netns exec` execs it: killing the child kills
    /// the process itself).
    fn exec(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host)]).arg(program);
        cmd
    }

    fn set_link(&self, host: &str, up: bool) {
        ip(&[
            "-n",
            &self.ns(host),
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.root_veth])
            .stderr(Stdio::null())
            .status();
        for host in &self.hosts {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &format!("{}-{host}", self.prefix)])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A binary of this workspace, built next to this test's target directory with cargo.
fn workspace_bin(package: &str, bin: &str, features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let mut build = std::process::Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", target_dir);
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "building {bin} failed");
    profile_dir.join(bin)
}

/// On a failure, prints the last lines of every process's log (the logs live in a temp dir
/// that goes with the test).
struct LogsOnFailure(PathBuf);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.0) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                eprintln!("--- {} (last lines)\n{tail}", path.display());
            }
        }
    }
}

fn spawn(mut cmd: Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("POOLLET_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn connect_runtime(socket: &Path) -> MachineRuntimeClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if socket.exists()
            && let Ok(channel) =
                iri_spec::endpoint::connect(&Endpoint::Unix(socket.to_path_buf())).await
        {
            return MachineRuntimeClient::new(channel);
        }
        assert!(Instant::now() < deadline, "iri-mock-runtime did not start");
        // Polling a child process's socket; there is no event to wait on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates Machines `vm-<from>` .. `vm-<to - 1>` with no pool, as a client would: a create
/// that fails on the store's side (a leader election after a member died) is retried, and
/// `AlreadyExists` on a retry means the first attempt was committed.
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
                for attempt in 0..50 {
                    match store.create_typed(m.clone()).await {
                        Ok(_) => return,
                        Err(irikit_api::store::Error::AlreadyExists { .. }) if attempt > 0 => {
                            return;
                        }
                        Err(irikit_api::store::Error::Backend(_)) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(err) => panic!("create {}: {err}", m.metadata.name),
                    }
                }
                panic!("create {}: the store kept failing", m.metadata.name);
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// Machines by name, or `None` while the store does not answer.
async fn machines(store: &Arc<dyn Store>) -> Option<Vec<Machine>> {
    store
        .list_typed::<Machine>(&ListOptions::all())
        .await
        .ok()
        .map(|(items, _)| items)
}

/// Machines, retrying while the store does not answer (a request may go to the member that
/// was killed until the client's balancer has noticed).
async fn machines_now(store: &Arc<dyn Store>) -> Vec<Machine> {
    let started = Instant::now();
    loop {
        if let Some(ms) = machines(store).await {
            return ms;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the store did not answer a list"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn running(ms: &[Machine]) -> usize {
    ms.iter()
        .filter(|m| m.status.state == "Running" && !m.status.machine_id.is_empty())
        .count()
}

/// The status of `pool`'s Ready condition (a store error is retried: the store may be
/// electing a leader).
async fn pool_ready(store: &Arc<dyn Store>, pool: &str) -> String {
    let started = Instant::now();
    loop {
        match store.get_typed::<MachinePool>("", pool).await {
            Ok(pool) => {
                return pool
                    .status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.status.clone())
                    .unwrap_or_default();
            }
            Err(err) => {
                assert!(started.elapsed() < DEADLINE, "get {pool}: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Polls `check` every 100 ms until it holds; fails after [`DEADLINE`] naming `what`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < DEADLINE, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_suite() {
    if !is_root() {
        return skip("not root (network namespaces need CAP_SYS_ADMIN)");
    }
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        return skip("`ip` (iproute2) is not installed");
    }
    let etcd_bin = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    });
    let Some(etcd_bin) = etcd_bin else {
        return skip("etcd is not on PATH (install etcd-server)");
    };
    let probe = irikit_api::store::open("etcd://127.0.0.1:1").await;
    if let Err(err) = &probe
        && err.to_string().contains("feature")
    {
        return skip("irikit-api was built without the `etcd` feature");
    }

    let hosts = ["e1", "e2", "e3", "cp", "h1", "h2"];
    let net = Net::build(&hosts);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path();
    let _dump = LogsOnFailure(logs.to_path_buf());

    // The etcd cluster.
    let members = ["e1", "e2", "e3"];
    let cluster = members
        .iter()
        .map(|m| format!("{m}=http://{}:2380", net.addr(&hosts, m)))
        .collect::<Vec<_>>()
        .join(",");
    let mut etcd: HashMap<&str, Child> = HashMap::new();
    for m in members {
        let addr = net.addr(&hosts, m);
        let mut cmd = net.exec(m, &etcd_bin);
        cmd.args(["--name", m, "--data-dir"])
            .arg(dir.path().join(m))
            .args(["--listen-client-urls", &format!("http://{addr}:2379")])
            .args(["--advertise-client-urls", &format!("http://{addr}:2379")])
            .args(["--listen-peer-urls", &format!("http://{addr}:2380")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{addr}:2380"),
            ])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &net.prefix])
            .args(["--log-level", "warn"]);
        etcd.insert(m, spawn(cmd, &logs.join(format!("{m}.log"))));
    }
    let endpoints = members
        .iter()
        .map(|m| format!("{}:2379", net.addr(&hosts, m)))
        .collect::<Vec<_>>()
        .join(",");
    let store_url = format!("etcd://{endpoints}");
    let store: Arc<dyn Store> = {
        let started = Instant::now();
        loop {
            if let Ok(store) = irikit_api::store::open(&store_url).await
                && store.revision().await.is_ok()
            {
                break store;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the etcd cluster did not serve"
            );
            // Polling child processes for readiness; there is no event to wait on.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    store
        .create_typed(MachineClass {
            metadata: ObjectMeta::named(CLASS),
            capabilities: [
                ("cpu".to_string(), "1".parse().unwrap()),
                ("memory".to_string(), "1Gi".parse().unwrap()),
            ]
            .into(),
            ..MachineClass::default()
        })
        .await
        .unwrap();

    // The controllers, and a poollet with its runtime on each of h1 and h2.
    let mut cmd = net.exec("cp", IRIKIT);
    cmd.args([
        "controllers",
        "--store",
        &store_url,
        "--pool-grace-period",
        GRACE,
    ]);
    let _controllers = spawn(cmd, &logs.join("controllers.log"));
    let mock_bin = workspace_bin("iri-mock", "iri-mock-runtime", &[]);
    let poollet_bin = workspace_bin("poollet", "machinepoollet", &["etcd"]);
    let mut runtimes = HashMap::new();
    let mut children = Vec::new();
    for host in ["h1", "h2"] {
        let socket = dir.path().join(format!("{host}.sock"));
        let mut cmd = net.exec(host, &mock_bin);
        cmd.arg("--machine-socket").arg(&socket).args([
            "--machine-class",
            &format!("{CLASS}:cpu=1,memory=1Gi,quantity=100000"),
        ]);
        children.push(spawn(cmd, &logs.join(format!("{host}-runtime.log"))));
        runtimes.insert(host, connect_runtime(&socket).await);
        let mut cmd = net.exec(host, &poollet_bin);
        cmd.args(["--machine-pool-name", &format!("pool-{host}")])
            .args(["--provider-id", &format!("ironcore://{host}")])
            .args([
                "--machine-runtime-endpoint",
                &format!("unix://{}", socket.display()),
            ])
            .args(["--store", &store_url])
            .args([
                "--heartbeat-interval",
                "1s",
                "--heartbeat-lease-duration",
                "4s",
            ])
            .args(["--heartbeat-status-timeout", "800ms"])
            .args(["--max-concurrent-reconciles", "8", "--relist-period", "2s"]);
        children.push(spawn(cmd, &logs.join(format!("{host}-poollet.log"))));
    }
    for pool in ["pool-h1", "pool-h2"] {
        until(&format!("{pool} Ready"), || async {
            pool_ready(&store, pool).await == "True"
        })
        .await;
    }

    // 1. A rollout during which one etcd member is SIGKILLed.
    let started = Instant::now();
    create_machines(&store, 0, 60).await;
    until("30 Machines Running", || async {
        machines(&store).await.is_some_and(|ms| running(&ms) >= 30)
    })
    .await;
    let mut victim = etcd.remove("e3").unwrap();
    victim.kill().await.unwrap();
    let killed_at = Instant::now();
    create_machines(&store, 60, 120).await;
    until("120 Machines Running with a member down", || async {
        machines(&store).await.is_some_and(|ms| running(&ms) >= 120)
    })
    .await;
    let rollout = started.elapsed();
    let after_kill = killed_at.elapsed();

    // 2. Cut h1 off.
    net.set_link("h1", false);
    let cut = Instant::now();
    until("pool-h1 Ready=Unknown", || async {
        pool_ready(&store, "pool-h1").await == "Unknown"
    })
    .await;
    let unknown = Instant::now();
    assert_eq!(
        pool_ready(&store, "pool-h2").await,
        "True",
        "pool-h2 stays Ready"
    );
    create_machines(&store, 120, 160).await;
    until("the 40 Machines made during the cut Running", || async {
        machines(&store).await.is_some_and(|ms| running(&ms) >= 160)
    })
    .await;
    let during: Vec<Machine> = machines_now(&store)
        .await
        .into_iter()
        .filter(|m| m.metadata.name.as_str() >= "vm-0120")
        .collect();
    assert_eq!(during.len(), 40);
    for m in &during {
        assert_eq!(
            m.spec.machine_pool_ref.as_ref().map(|r| r.name.as_str()),
            Some("pool-h2"),
            "{} was bound to a pool that is cut off",
            m.metadata.name
        );
    }

    // 3. Heal.
    net.set_link("h1", true);
    let healed = Instant::now();
    until("pool-h1 Ready again", || async {
        pool_ready(&store, "pool-h1").await == "True"
    })
    .await;
    let ready = Instant::now();

    // The end state: every Machine Running on its pool's runtime, one IRI machine each.
    let all = machines_now(&store).await;
    assert_eq!(all.len(), 160);
    let mut iri_by_uid: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (host, client) in &mut runtimes {
        let listed = client
            .list_machines(machine::ListMachinesRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .machines;
        for m in listed {
            let meta = m.metadata.unwrap_or_default();
            let uid = meta
                .labels
                .get(keys::MACHINE_UID_LABEL)
                .cloned()
                .unwrap_or_default();
            iri_by_uid
                .entry(uid)
                .or_default()
                .push((format!("pool-{host}"), format!("iri-mock://{}", meta.id)));
        }
    }
    let mut per_pool: HashMap<String, usize> = HashMap::new();
    for m in &all {
        assert_eq!(m.status.state, "Running", "{}", m.metadata.name);
        let pool = m.spec.machine_pool_ref.as_ref().unwrap().name.clone();
        assert_eq!(
            iri_by_uid.get(&m.metadata.uid).map(Vec::as_slice),
            Some([(pool.clone(), m.status.machine_id.clone())].as_slice()),
            "{}: exactly one IRI machine, on its pool's runtime, the one in machineID",
            m.metadata.name
        );
        *per_pool.entry(pool).or_default() += 1;
    }
    assert_eq!(iri_by_uid.len(), 160, "no IRI machine without its Machine");
    assert!(
        per_pool.get("pool-h1").copied().unwrap_or(0) > 0,
        "the rollout used both pools: {per_pool:?}"
    );
    println!(
        "partition suite: rollout of 120 Machines over 2 pools {rollout:.1?} (etcd member e3 \
         SIGKILLed at 30 Running; the rest took {after_kill:.1?}); cut h1 → pool-h1 \
         Ready=Unknown {:.1?} (grace {GRACE}); 40 Machines during the cut all bound to pool-h2; \
         healed → pool-h1 Ready {:.1?}; end: {per_pool:?}, 160 Running, one IRI machine each",
        unknown.duration_since(cut),
        ready.duration_since(healed),
    );
    drop(children);
    drop(net);
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
