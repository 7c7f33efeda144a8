//! The host side of the runtime tests: which outside components run here (a skip line when
//! one is missing), the VMM binaries (ch-sim, a real CH, QEMU) and the PVH stub guest, child
//! processes (start, find, reap, kill) and host network devices.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use iri_spec::endpoint::Endpoint;
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

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in processes_mentioning(&self.0) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}
