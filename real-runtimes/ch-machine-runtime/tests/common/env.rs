//! A ch-machine-runtime environment in a temp dir: its directories, the runtime's arguments for
//! its VMM (ch-sim, a real CH or QEMU), starting and restarting the runtime, and what the runtime
//! leaves on the host (VM dirs, `vm.info`, serial logs, stored records, VMM processes and idle
//! warm VMMs).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iri_spec::machine::v1alpha1 as machine;

use super::{
    calls::{CLASS, Client, delete_and_wait, list_all, state_of},
    host::{
        Backend, Proc, Reaper, alive, eventually, guest_kernel, processes_mentioning, qemu_binary,
    },
};

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

    /// VMM processes of machines still running for this environment: every process naming
    /// the state dir, except an idle warm VMM (`--warm-vmms`: its `.warm-` directory, which a
    /// machine that takes it renames, still exists).
    pub fn vmm_processes(&self) -> Vec<i32> {
        processes_mentioning(&self.state_dir.join("vms").display().to_string())
            .into_iter()
            .filter(|pid| warm_dir_of(*pid).is_none_or(|dir| !dir.exists()))
            .collect()
    }

    /// The idle warm VMMs of this environment (their `.warm-` directories still exist).
    pub fn warm_vmms(&self) -> Vec<(i32, PathBuf)> {
        processes_mentioning(&self.state_dir.join("vms").display().to_string())
            .into_iter()
            .filter_map(|pid| Some((pid, warm_dir_of(pid).filter(|d| d.exists())?)))
            .collect()
    }
}

/// The `.warm-` directory a VMM's command line names (`--api-socket path=<dir>/api.sock`).
fn warm_dir_of(pid: i32) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline
        .split(|b| *b == 0)
        .filter_map(|arg| {
            String::from_utf8_lossy(arg)
                .strip_prefix("path=")
                .map(PathBuf::from)
        })
        .find_map(|socket| {
            let dir = socket.parent()?;
            dir.file_name()?
                .to_str()?
                .starts_with(".warm-")
                .then(|| dir.to_owned())
        })
}

impl Drop for Env {
    /// Its temp dir goes now: a VMM still naming it (an idle warm VMM of a runtime killed with
    /// -9, a machine a failed test left) would outlive the test.
    fn drop(&mut self) {
        for pid in processes_mentioning(&self.state_dir.display().to_string()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Reaper {
    /// A reaper of every process whose command line mentions `env`'s VM directory.
    pub fn for_env(env: &Env) -> Self {
        Self(env.state_dir.join("vms").display().to_string())
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
