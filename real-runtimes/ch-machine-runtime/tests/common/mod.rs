//! Shared harness for the runtime tests: VMM backends (ch-sim, or a real CH named by
//! `IRIKIT_CH_BIN`), the PVH stub guest, runtime processes and gRPC helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use iri_spec::{
    endpoint::Endpoint,
    machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient},
    volume::v1alpha1::{self as volume, volume_runtime_client::VolumeRuntimeClient},
};
use tonic::transport::Channel;

/// Whether `IRIKIT_REQUIRE` names `component`.
pub fn required(component: &str) -> bool {
    std::env::var("IRIKIT_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .any(|c| c.trim() == component)
}

/// Print one skip line, or fail when the component is required.
pub fn skip(component: &str, reason: &str) {
    assert!(
        !required(component),
        "{component} is required (IRIKIT_REQUIRE) but {reason}"
    );
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("skip: {reason}\n"));
}

/// Which VMM binary the runtime drives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The simulator built with this package.
    Sim,
    /// A real cloud-hypervisor.
    RealCh(PathBuf),
}

impl Backend {
    pub fn binary(&self) -> PathBuf {
        match self {
            Self::Sim => PathBuf::from(env!("CARGO_BIN_EXE_ch-sim")),
            Self::RealCh(p) => p.clone(),
        }
    }

    /// The real CH named by `IRIKIT_CH_BIN`, when it exists and /dev/kvm opens; else a skip line.
    pub fn real_ch() -> Option<Self> {
        let Some(bin) = std::env::var_os("IRIKIT_CH_BIN").filter(|v| !v.is_empty()) else {
            skip(
                "cloud-hypervisor",
                "IRIKIT_CH_BIN is not set (no cloud-hypervisor binary)",
            );
            return None;
        };
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            skip(
                "cloud-hypervisor",
                &format!("IRIKIT_CH_BIN {} is not a file", bin.display()),
            );
            return None;
        }
        if !kvm_opens() {
            skip("cloud-hypervisor", "/dev/kvm cannot be opened");
            return None;
        }
        Some(Self::RealCh(bin))
    }
}

/// Assemble the PVH stub guest into `dir`; with ch-sim any file will do when binutils is missing.
pub fn guest_kernel(dir: &Path, backend: &Backend) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest");
    let obj = dir.join("pvh-hello.o");
    let elf = dir.join("pvh-hello.elf");
    let assembled = Command::new("as")
        .arg("--64")
        .arg("-o")
        .arg(&obj)
        .arg(src.join("pvh-hello.S"))
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("ld")
            .args(["-m", "elf_x86_64", "-nostdlib", "-T"])
            .arg(src.join("link.ld"))
            .arg("-o")
            .arg(&elf)
            .arg(&obj)
            .status()
            .is_ok_and(|s| s.success());
    if assembled {
        return Some(elf);
    }
    match backend {
        Backend::Sim => {
            std::fs::write(&elf, b"not an ELF: ch-sim only opens it").unwrap();
            Some(elf)
        }
        Backend::RealCh(_) => {
            skip("binutils", "as/ld could not assemble the PVH stub guest");
            None
        }
    }
}

/// Write `bytes` at offset 0 of `path` (a guest writing its disk) and sync.
pub fn write_at_start(path: impl AsRef<Path>, bytes: &[u8]) {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, 0).unwrap();
    file.sync_all().unwrap();
}

/// Is `pid` alive (not a zombie)?
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Live processes whose command line mentions `needle` (e.g. a test's state dir).
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).ok() != Some(me))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Poll `f` every 5 ms until it returns Some, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait until `path` exists.
pub async fn wait_for_path(path: &Path, timeout: Duration) {
    eventually(&format!("{}", path.display()), timeout, || async {
        path.exists().then_some(())
    })
    .await;
}

/// A runtime child process; killed on drop.
pub struct Proc {
    pub child: Child,
    pub socket: PathBuf,
}

impl Proc {
    pub fn spawn(binary: &Path, args: &[String], socket: &Path) -> Self {
        let _ = std::fs::remove_file(socket);
        let child = Command::new(binary)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        Self {
            child,
            socket: socket.to_owned(),
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// A channel to the runtime. A killed predecessor leaves its socket file behind, and a
    /// socket file exists from bind() on, a moment before listen(): retry a refused connect.
    pub async fn channel(&self) -> Channel {
        wait_for_path(&self.socket, Duration::from_secs(20)).await;
        let endpoint = Endpoint::unix(&self.socket);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match iri_spec::endpoint::connect(&endpoint).await {
                Ok(channel) => return channel,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("connect to the runtime: {e:?}"),
            }
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit without blocking the async runtime (client
    /// connections must keep running so the server's graceful shutdown can finish).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_raw(self.pid()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        eventually("runtime exit", Duration::from_secs(60), || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill9();
        }
    }
}

/// Where `cargo test --workspace` puts another package's binary; built on demand.
pub fn sibling_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let path = dir.join(bin);
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p {package} failed");
    }
    path
}

/// A ch-machine-runtime environment in a temp dir.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    pub kernel: PathBuf,
    pub state_dir: PathBuf,
    pub volume_dir: PathBuf,
    pub image_dir: PathBuf,
    pub socket: PathBuf,
    pub cmdline: String,
    /// `Some(qemu)`: the runtime drives this QEMU (`--vmm qemu`), else the `backend` CH.
    pub qemu: Option<PathBuf>,
}

pub const CLASS: &str = "small";

impl Env {
    pub fn new(backend: Backend, cmdline: &str) -> Option<Self> {
        // Short paths: unix socket paths are limited to 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("chrt")
            .tempdir_in("/tmp")
            .unwrap();
        let kernel = guest_kernel(dir.path(), &backend)?;
        let state_dir = dir.path().join("state");
        let volume_dir = dir.path().join("vols");
        let image_dir = dir.path().join("images");
        for d in [&volume_dir, &image_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        let socket = dir.path().join("machine.sock");
        Some(Self {
            dir,
            backend,
            kernel,
            state_dir,
            volume_dir,
            image_dir,
            socket,
            cmdline: cmdline.to_owned(),
            qemu: None,
        })
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--socket".into(),
            self.socket.display().to_string(),
            "--state-dir".into(),
            self.state_dir.display().to_string(),
            "--ch-binary".into(),
            self.backend.binary().display().to_string(),
            "--kernel".into(),
            self.kernel.display().to_string(),
            "--cmdline".into(),
            self.cmdline.clone(),
            "--machine-class".into(),
            format!("{CLASS},1,134217728"),
            "--machine-class".into(),
            "large,2,268435456".into(),
            "--volume-dir".into(),
            self.volume_dir.display().to_string(),
            "--image-dir".into(),
            self.image_dir.display().to_string(),
            "--resync-interval".into(),
            "200ms".into(),
        ]
    }

    /// The runtime's arguments for this environment's VMM ([`Env::args`], or
    /// [`Env::qemu_args`] for a QEMU environment), then `extra`.
    pub fn runtime_args(&self, extra: &[&str]) -> Vec<String> {
        if let Some(qemu) = &self.qemu {
            return self.qemu_args(qemu, extra);
        }
        let mut args = self.args();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Start the runtime.
    pub fn start(&self) -> Proc {
        self.start_with(&[])
    }

    /// Start the runtime with `extra` arguments.
    pub fn start_with(&self, extra: &[&str]) -> Proc {
        self.spawn_runtime(&self.runtime_args(extra))
    }

    /// Start the runtime with exactly `args`.
    pub fn spawn_runtime(&self, args: &[String]) -> Proc {
        Proc::spawn(
            Path::new(env!("CARGO_BIN_EXE_ch-machine-runtime")),
            args,
            &self.socket,
        )
    }

    /// Start the runtime and connect a client.
    pub async fn start_client(&self, extra: &[&str]) -> (Proc, Client) {
        let runtime = self.start_with(extra);
        let client = Client::new(runtime.channel().await);
        (runtime, client)
    }

    /// kill -9 `runtime` (and drop its `client`): the VMMs `pids` must outlive it. Returns a
    /// new runtime started with `extra`, and its client.
    pub async fn kill9_and_restart(
        &self,
        runtime: &mut Proc,
        client: Client,
        pids: &[i32],
        extra: &[&str],
    ) -> (Proc, Client) {
        runtime.kill9();
        drop(client);
        for pid in pids {
            assert!(alive(*pid), "vmm {pid} died with the runtime");
        }
        self.start_client(extra).await
    }

    /// [`Env::kill9_and_restart`] with machines on the runtime: the new runtime lists the same
    /// machines (metadata, spec and state) as the killed one did. Returns the new runtime, its
    /// client and its listing.
    pub async fn kill9_and_adopt(
        &self,
        runtime: &mut Proc,
        mut client: Client,
        pids: &[i32],
    ) -> (Proc, Client, Vec<machine::Machine>) {
        let before = list_all(&mut client).await;
        let (runtime, mut client) = self.kill9_and_restart(runtime, client, pids, &[]).await;
        let after = list_all(&mut client).await;
        assert_eq!(after.len(), before.len());
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(old.metadata, new.metadata);
            assert_eq!(old.spec, new.spec);
            assert_eq!(state_of(old), state_of(new));
        }
        (runtime, client, after)
    }

    /// The machine's directory: its VMM's sockets, logs and local disks.
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("vms").join(id)
    }

    /// The machine's VMM API socket.
    pub fn api_socket(&self, id: &str) -> PathBuf {
        self.vm_dir(id).join("api.sock")
    }

    /// `vm.info` of the machine's VMM (ch-sim or a real CH).
    pub async fn vm_info(&self, id: &str) -> serde_json::Value {
        reqwest::Client::builder()
            .unix_socket(self.api_socket(id).as_path())
            .build()
            .unwrap()
            .get("http://localhost/api/v1/vm.info")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Wait until the machine's serial log holds `needle` `count` times.
    pub async fn wait_serial(&self, id: &str, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.serial_log(id);
            if log.matches(needle).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count}x {needle:?} on the serial console:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until no VMM of this environment runs.
    pub async fn wait_no_vmm(&self, what: &str, timeout: Duration) {
        eventually(what, timeout, || async {
            self.vmm_processes().is_empty().then_some(())
        })
        .await;
    }

    /// Delete the machine and wait until it is gone: no VMM process and no directory is left.
    pub async fn delete_and_check(&self, client: &mut Client, id: &str) {
        delete_and_wait(client, id).await;
        let vm_dir = self.vm_dir(id);
        assert_eq!(
            processes_mentioning(&vm_dir.display().to_string()),
            Vec::<i32>::new(),
            "vmm processes left"
        );
        assert!(!vm_dir.exists(), "machine dir left");
    }

    /// The guest's serial output over all its boots: Cloud Hypervisor truncates `serial.log` at
    /// every boot and the runtime keeps earlier boots in `serial.log.old`.
    pub fn serial_log(&self, id: &str) -> String {
        let dir = self.state_dir.join("vms").join(id);
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        read("serial.log.old") + &read("serial.log")
    }

    /// The machine's stored record as the runtime loads it: the newer (higher `seq`) of its
    /// durable `<id>.json` and its volatile `<id>.json.vol`.
    pub fn stored_record(&self, id: &str) -> Option<serde_json::Value> {
        let dir = self.state_dir.join("machines");
        let read = |name: String| -> Option<serde_json::Value> {
            serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
        };
        let durable = read(format!("{id}.json"))?;
        let seq = |v: &serde_json::Value| v["seq"].as_u64().unwrap_or(0);
        match read(format!("{id}.json.vol")) {
            Some(v) if seq(&v) > seq(&durable) => Some(v),
            _ => Some(durable),
        }
    }

    /// The VMM pid recorded in the machine's state.
    pub fn recorded_pid(&self, id: &str) -> Option<i32> {
        let v = self.stored_record(id)?;
        v["vmm"]["pid"].as_i64().and_then(|p| i32::try_from(p).ok())
    }

    /// VMM processes still running for this environment.
    pub fn vmm_processes(&self) -> Vec<i32> {
        processes_mentioning(&self.state_dir.join("vms").display().to_string())
    }
}

pub type Client = MachineRuntimeClient<Channel>;

pub fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn machine_request(spec: machine::MachineSpec) -> machine::CreateMachineRequest {
    machine::CreateMachineRequest {
        machine: Some(machine::Machine {
            metadata: Some(iri_spec::meta::v1alpha1::ObjectMetadata {
                labels: labels(&[("test", "yes")]),
                annotations: labels(&[("note", "kept")]),
                ..Default::default()
            }),
            spec: Some(spec),
            status: None,
        }),
    }
}

pub fn spec(volumes: Vec<machine::Volume>) -> machine::MachineSpec {
    machine::MachineSpec {
        class: CLASS.into(),
        volumes,
        ..Default::default()
    }
}

pub fn file_volume(name: &str, handle: &str) -> machine::Volume {
    machine::Volume {
        name: name.into(),
        device: "oda".into(),
        local_disk: None,
        connection: Some(machine::VolumeConnection {
            driver: "local-file".into(),
            handle: handle.into(),
            ..Default::default()
        }),
    }
}

pub fn local_disk(name: &str, size: i64) -> machine::Volume {
    machine::Volume {
        name: name.into(),
        device: "odb".into(),
        local_disk: Some(machine::LocalDisk {
            size_bytes: size,
            image: None,
        }),
        connection: None,
    }
}

pub async fn get(client: &mut Client, id: &str) -> Option<machine::Machine> {
    client
        .list_machines(machine::ListMachinesRequest {
            filter: Some(machine::MachineFilter {
                id: id.into(),
                label_selector: HashMap::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .machines
        .pop()
}

pub fn state_of(m: &machine::Machine) -> machine::MachineState {
    machine::MachineState::try_from(m.status.as_ref().unwrap().state).unwrap()
}

/// Wait until the machine reaches `state`; returns it.
pub async fn wait_state(
    client: &mut Client,
    id: &str,
    state: machine::MachineState,
) -> machine::Machine {
    let timeout = Duration::from_secs(30);
    let deadline = Instant::now() + timeout;
    loop {
        let m = get(client, id).await.expect("machine listed");
        if state_of(&m) == state {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "machine {id} stuck in {:?}, want {state:?}",
            state_of(&m)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wait until the machine is no longer listed.
pub async fn wait_gone(client: &mut Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(client, id).await.is_some() {
        assert!(Instant::now() < deadline, "machine {id} not deleted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Poll until NIC `name` of machine `id` is (not) attached; returns the machine.
pub async fn wait_for_nic(
    client: &mut Client,
    id: &str,
    name: &str,
    attached: bool,
) -> machine::Machine {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = get(client, id).await.expect("machine exists");
        let nic = m
            .status
            .as_ref()
            .and_then(|s| s.network_interfaces.iter().find(|n| n.name == name));
        let now = nic.is_some_and(|n| {
            n.state == machine::NetworkInterfaceState::NetworkInterfaceAttached as i32
                && !n.handle.is_empty()
        });
        if now == attached {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "nic {name} of {id} not attached={attached}: {nic:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tap prefix unique to this test run (`t` + 5 hex digits), so parallel runs don't clash.
pub fn unique_tap_prefix() -> String {
    format!("t{:05x}", rand_u32() & 0xf_ffff)
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    #[allow(clippy::cast_possible_truncation)]
    let v = h.finish() as u32;
    v
}

/// The host network devices whose names start with `prefix` (from `/sys/class/net`).
pub fn net_devices(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A volume status by name: (handle, attached).
pub fn volume_status(m: &machine::Machine, name: &str) -> Option<(String, bool)> {
    m.status
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .find(|v| v.name == name)
        .map(|v| {
            (
                v.handle.clone(),
                v.state == machine::VolumeState::VolumeAttached as i32,
            )
        })
}

/// A file-volume-runtime on `<env>/volume.sock` with its root at the env's volume dir and the
/// class [`VOLUME_CLASS`] (raw), then `extra` arguments.
fn spawn_volume_runtime(env: &Env, extra: &[String]) -> Proc {
    let socket = env.dir.path().join("volume.sock");
    let mut args = vec![
        "--socket".into(),
        socket.display().to_string(),
        "--root".into(),
        env.volume_dir.display().to_string(),
        "--volume-class".into(),
        format!("{VOLUME_CLASS},1000,100"),
    ];
    args.extend_from_slice(extra);
    Proc::spawn(
        &sibling_binary("file-volume-runtime", "file-volume-runtime"),
        &args,
        &socket,
    )
}

/// Start a file-volume-runtime and create one raw volume; returns (process, client, handle).
pub async fn file_volume_runtime(
    env: &Env,
    size: i64,
) -> (Proc, VolumeRuntimeClient<Channel>, String) {
    let proc = spawn_volume_runtime(env, &[]);
    let mut client = VolumeRuntimeClient::new(proc.channel().await);
    let created = client
        .create_volume(volume::CreateVolumeRequest {
            volume: Some(volume::Volume {
                metadata: None,
                spec: Some(volume::VolumeSpec {
                    class: VOLUME_CLASS.into(),
                    resources: Some(volume::VolumeResources {
                        storage_bytes: size,
                    }),
                    ..Default::default()
                }),
                status: None,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    // The create response is PENDING without access; the listed volume has it.
    let vol = client
        .list_volumes(volume::ListVolumesRequest {
            filter: Some(volume::VolumeFilter {
                id: created.metadata.unwrap().id,
                label_selector: HashMap::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .volumes
        .pop()
        .unwrap();
    let access = vol.status.unwrap().access.unwrap();
    assert_eq!(access.driver, "local-file");
    (proc, client, access.handle)
}

// ---- QEMU ------------------------------------------------------------------------------------

/// The QEMU binary (`IRIKIT_QEMU_BIN` or `qemu-system-x86_64` on `PATH`), or a skip line.
pub fn qemu_binary() -> Option<PathBuf> {
    let bin = std::env::var_os("IRIKIT_QEMU_BIN")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("qemu-system-x86_64"), PathBuf::from);
    let runs = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        Some(bin)
    } else {
        skip(
            "qemu",
            &format!("{} does not run (install qemu-system-x86)", bin.display()),
        );
        None
    }
}

pub use ch_machine_runtime::vmm::kvm_opens;

/// Kills an environment's VMM processes when dropped, also when a test fails (the runtime is
/// then SIGKILLed and, by design, leaves its VMs running for adoption).
pub struct Reaper(pub String);

impl Reaper {
    /// A reaper of every process whose command line mentions `env`'s VM directory.
    pub fn for_env(env: &Env) -> Self {
        Self(env.state_dir.join("vms").display().to_string())
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in processes_mentioning(&self.0) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// A runtime environment driving QEMU; the guest is the PVH stub with `cmdline`.
pub fn qemu_env(cmdline: &str) -> Option<(Env, Reaper)> {
    let qemu = qemu_binary()?;
    let mut env = Env::new(Backend::RealCh(qemu.clone()), cmdline)?;
    env.qemu = Some(qemu);
    let reaper = Reaper::for_env(&env);
    Some((env, reaper))
}

impl Env {
    /// The runtime's arguments for QEMU: the common ones with `--vmm qemu` instead of
    /// `--ch-binary`, then `extra`.
    pub fn qemu_args(&self, qemu: &Path, extra: &[&str]) -> Vec<String> {
        let mut args = Vec::new();
        let mut common_args = self.args().into_iter();
        while let Some(arg) = common_args.next() {
            if arg == "--ch-binary" {
                common_args.next();
                continue;
            }
            args.push(arg);
        }
        args.extend([
            "--vmm".into(),
            "qemu".into(),
            "--qemu-binary".into(),
            qemu.display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }
}

// ---- runtime stacks for suites ---------------------------------------------------------------

/// The VMM a [`Runtimes`] stack drives.
#[derive(Debug, Clone)]
pub enum Vmm {
    /// `ch-sim` (or the real CH in `Backend`) through `--vmm cloud-hypervisor`.
    CloudHypervisor(Backend),
    /// `--vmm qemu` with this binary and `--qemu-accel` value.
    Qemu {
        binary: PathBuf,
        accel: &'static str,
    },
}

/// A machine runtime and a file-volume-runtime as child processes on unix sockets in one temp
/// dir, sharing the volume dir (the volume runtime's `local-file` handles attach as disks) and
/// an image dir holding one image file. Dropping it kills both runtimes and every VMM they
/// started. This is what suites (the conformance RPC level, and later its lifecycle level) run
/// against: [`Runtimes::machine`] and [`Runtimes::volume`] are their endpoints.
pub struct Runtimes {
    /// The machine runtime's endpoint.
    pub machine: Endpoint,
    /// The volume runtime's endpoint.
    pub volume: Endpoint,
    /// A local-disk image file inside both runtimes' image dirs.
    pub image: PathBuf,
    /// The machine runtime's environment (dirs, serial logs, recorded pids).
    pub env: Env,
    machine_proc: Proc,
    volume_proc: Proc,
    _reaper: Reaper,
}

/// The machine runtime stack's volume class (raw files).
pub const VOLUME_CLASS: &str = "std";

impl Runtimes {
    /// Starts both runtimes and waits until they answer; `None` (after one skip line) when the
    /// PVH stub cannot be assembled for a real VMM. `extra` is appended to the machine runtime's
    /// arguments.
    pub async fn start(vmm: Vmm, extra: &[&str]) -> Option<Self> {
        Self::start_with_cmdline(vmm, "halt", extra).await
    }

    /// [`Runtimes::start`] with the guest's `cmdline` (`echo`: the stub echoes its serial input).
    pub async fn start_with_cmdline(vmm: Vmm, cmdline: &str, extra: &[&str]) -> Option<Self> {
        let backend = match &vmm {
            Vmm::CloudHypervisor(backend) => backend.clone(),
            Vmm::Qemu { binary, .. } => Backend::RealCh(binary.clone()),
        };
        let mut env = Env::new(backend, cmdline)?;
        let reaper = Reaper::for_env(&env);
        let image = env.image_dir.join("root.img");
        std::fs::write(&image, vec![0x5a; 1 << 20]).unwrap();
        let mut all = Vec::new();
        if let Vmm::Qemu { binary, accel } = &vmm {
            env.qemu = Some(binary.clone());
            all.extend(["--qemu-accel", accel]);
        }
        all.extend_from_slice(extra);
        let machine_proc = env.start_with(&all);
        let volume_proc = spawn_volume_runtime(
            &env,
            &["--image-dir".into(), env.image_dir.display().to_string()],
        );
        let runtimes = Self {
            machine: Endpoint::unix(&env.socket),
            volume: Endpoint::unix(&volume_proc.socket),
            image,
            env,
            machine_proc,
            volume_proc,
            _reaper: reaper,
        };
        for endpoint in [&runtimes.machine, &runtimes.volume] {
            accepting(endpoint).await;
        }
        Some(runtimes)
    }

    /// The machine runtime's pid.
    pub fn machine_pid(&self) -> i32 {
        self.machine_proc.pid()
    }

    /// The volume runtime's pid.
    pub fn volume_pid(&self) -> i32 {
        self.volume_proc.pid()
    }
}

/// Wait until `endpoint` accepts a gRPC connection (the socket file appears at bind(), a moment
/// before listen(), so refused connects are retried).
pub async fn accepting(endpoint: &Endpoint) -> Channel {
    eventually(
        &format!("{endpoint} accepting"),
        Duration::from_secs(30),
        || async { iri_spec::endpoint::connect(endpoint).await.ok() },
    )
    .await
}

// ---- machine calls ---------------------------------------------------------------------------

/// Two tests of `$run(backend)`: `$sim` on ch-sim, `$real` on the real CH named by
/// `IRIKIT_CH_BIN` (one skip line without one).
#[allow(unused_macros)]
macro_rules! on_ch_sim_and_real_ch {
    ($run:ident: $sim:ident, $real:ident) => {
        #[tokio::test]
        async fn $sim() {
            $run($crate::common::Backend::Sim).await;
        }

        #[tokio::test]
        async fn $real() {
            if let Some(backend) = $crate::common::Backend::real_ch() {
                $run(backend).await;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_ch_sim_and_real_ch;

/// The labels of a request's machine, to add to.
pub fn labels_mut(request: &mut machine::CreateMachineRequest) -> &mut HashMap<String, String> {
    &mut request
        .machine
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .labels
}

/// The id of a machine.
pub fn id_of(m: &machine::Machine) -> String {
    m.metadata.as_ref().unwrap().id.clone()
}

/// CreateMachine of `request`; the machine as answered.
pub async fn create_request(
    client: &mut Client,
    request: machine::CreateMachineRequest,
) -> machine::Machine {
    client
        .create_machine(request)
        .await
        .unwrap()
        .into_inner()
        .machine
        .unwrap()
}

/// CreateMachine of `spec` (with [`machine_request`]'s labels); the new machine's id.
pub async fn create(client: &mut Client, spec: machine::MachineSpec) -> String {
    id_of(&create_request(client, machine_request(spec)).await)
}

/// A machine of class [`CLASS`] with `volumes`, once RUNNING; its id.
pub async fn create_running(client: &mut Client, volumes: Vec<machine::Volume>) -> String {
    let id = create(client, spec(volumes)).await;
    wait_state(client, &id, machine::MachineState::MachineRunning).await;
    id
}

/// Every machine listed.
pub async fn list_all(client: &mut Client) -> Vec<machine::Machine> {
    client
        .list_machines(machine::ListMachinesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .machines
}

/// UpdateMachinePower.
pub async fn set_power(client: &mut Client, id: &str, power: machine::Power) {
    client
        .update_machine_power(machine::UpdateMachinePowerRequest {
            machine_id: id.to_owned(),
            power: power as i32,
        })
        .await
        .unwrap();
}

/// DeleteMachine.
pub async fn delete(client: &mut Client, id: &str) {
    client
        .delete_machine(machine::DeleteMachineRequest {
            machine_id: id.to_owned(),
        })
        .await
        .unwrap();
}

/// DeleteMachine, then wait until it is no longer listed.
pub async fn delete_and_wait(client: &mut Client, id: &str) {
    delete(client, id).await;
    wait_gone(client, id).await;
}

/// AttachVolume.
pub async fn attach_volume(client: &mut Client, id: &str, volume: machine::Volume) {
    client
        .attach_volume(machine::AttachVolumeRequest {
            machine_id: id.to_owned(),
            volume: Some(volume),
        })
        .await
        .unwrap();
}

/// DetachVolume.
pub async fn detach_volume(client: &mut Client, id: &str, name: &str) {
    client
        .detach_volume(machine::DetachVolumeRequest {
            machine_id: id.to_owned(),
            name: name.to_owned(),
        })
        .await
        .unwrap();
}

/// A NIC on network `net` with one address.
pub fn nic(name: &str) -> machine::NetworkInterface {
    machine::NetworkInterface {
        name: name.to_owned(),
        network_id: "net".into(),
        ips: vec!["10.0.0.2".into()],
        ..Default::default()
    }
}

/// AttachNetworkInterface of [`nic`]`(name)`.
pub async fn attach_nic(client: &mut Client, id: &str, name: &str) {
    client
        .attach_network_interface(machine::AttachNetworkInterfaceRequest {
            machine_id: id.to_owned(),
            network_interface: Some(nic(name)),
        })
        .await
        .unwrap();
}

/// DetachNetworkInterface.
pub async fn detach_nic(client: &mut Client, id: &str, name: &str) {
    client
        .detach_network_interface(machine::DetachNetworkInterfaceRequest {
            machine_id: id.to_owned(),
            name: name.to_owned(),
        })
        .await
        .unwrap();
}

/// The reasons of the events about machine `id`, oldest first.
pub async fn event_reasons(client: &mut Client, id: &str) -> Vec<String> {
    client
        .list_events(machine::ListEventsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .events
        .iter()
        .filter_map(|e| e.spec.as_ref())
        .filter(|s| s.involved_object_meta.as_ref().is_some_and(|m| m.id == id))
        .map(|s| s.reason.clone())
        .collect()
}

/// Poll machine `id` every 5 ms until `check` returns Some, or panic after `timeout`.
pub async fn wait_machine<T>(
    client: &Client,
    id: &str,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&machine::Machine) -> Option<T>,
) -> T {
    let mut client = client.clone();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = get(&mut client, id).await.as_ref().and_then(&mut check) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What [`wait_volume`] waits for; either at the machine's current generation (observed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeIs {
    /// Attached in the status.
    Attached,
    /// Neither in the spec nor in the status.
    Gone,
}

/// Wait until volume `name` of machine `id` is `want` and the runtime has observed the
/// machine's current generation; returns the machine.
pub async fn wait_volume(
    client: &Client,
    id: &str,
    name: &str,
    want: VolumeIs,
    timeout: Duration,
) -> machine::Machine {
    let what = format!("volume {name} {want:?}");
    wait_machine(client, id, &what, timeout, |m| {
        let observed = m.status.as_ref()?.observed_generation == m.metadata.as_ref()?.generation;
        let now = match want {
            VolumeIs::Attached => volume_status(m, name).is_some_and(|(_, a)| a),
            VolumeIs::Gone => {
                volume_status(m, name).is_none()
                    && !m.spec.as_ref()?.volumes.iter().any(|v| v.name == name)
            }
        };
        (observed && now).then(|| m.clone())
    })
    .await
}
