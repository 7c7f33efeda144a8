//! `ch-runtime-bench`: CreateMachine → RUNNING through the machine runtime's gRPC API against
//! the bare VMM start, in one run, for every VMM the runtime drives.
//!
//! Columns (`--columns`, default all): `ch-sim`; a real Cloud Hypervisor (`--ch-binary` /
//! `IRIKIT_CH_BIN`, needs `/dev/kvm`); QEMU with the PVH stub under KVM (`/dev/kvm`) and under
//! TCG; QEMU with the Debian Linux guest under TCG (`IRIKIT_GUEST_DIR`, `--linux-machines`).
//! A column whose parts are missing prints `skipped: <reason>`.
//!
//! For each column it starts a `ch-machine-runtime` (the binary next to this one) and measures
//! CreateMachine → RUNNING and CreateMachine → the guest's serial marker, sequentially, over
//! `--machines` machines. Beside that, in the same run, it starts the same VMM bare the same
//! number of times: Cloud Hypervisor (and ch-sim) spawn → `vm.create` → `vm.boot` → `vm.info`
//! Running over its API socket; QEMU the runtime's command line without `-S`, spawn → QMP
//! `query-status` running. On both sides every VM runs until the column ends, so the n-th
//! start happens beside n-1 running VMs either way. It prints p50/p99 per measure and the
//! runtime/bare ratio of the p50s.
#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::{
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ch_machine_runtime::vmm::{
    CloudHypervisor, Launched, Qemu, QemuAccel, VmPaths, VmSpec, VmState, Vmm as _, kvm_opens,
};
use clap::{Parser, ValueEnum};
use iri_spec::machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

#[path = "../../tests/guest/guests.rs"]
mod guests;

/// One column of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Column {
    /// ch-machine-runtime on ch-sim (the Cloud Hypervisor API simulator).
    ChSim,
    /// ch-machine-runtime on a real Cloud Hypervisor booting the PVH stub.
    Ch,
    /// `--vmm qemu`, the PVH stub under KVM.
    QemuKvm,
    /// `--vmm qemu`, the PVH stub under TCG.
    QemuTcg,
    /// `--vmm qemu`, the Debian Linux guest under TCG.
    QemuLinux,
}

/// Benchmark CreateMachine → RUNNING through ch-machine-runtime against the bare VMM
#[derive(Debug, Parser)]
#[command(name = "ch-runtime-bench", about)]
struct Args {
    /// Columns to measure (comma-separated)
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ch-sim,ch,qemu-kvm,qemu-tcg,qemu-linux"
    )]
    columns: Vec<Column>,
    /// Machines per column (each column except qemu-linux)
    #[arg(long, default_value_t = 20)]
    machines: usize,
    /// Machines for the qemu-linux column (each boots for seconds under TCG)
    #[arg(long, default_value_t = 3)]
    linux_machines: usize,
    /// A real cloud-hypervisor binary; the ch column is skipped without it
    #[arg(long, env = "IRIKIT_CH_BIN")]
    ch_binary: Option<PathBuf>,
    /// The QEMU binary
    #[arg(long, env = "IRIKIT_QEMU_BIN", default_value = "qemu-system-x86_64")]
    qemu_binary: PathBuf,
    /// Unpacked Debian guest parts (see ci/install.sh); qemu-linux is skipped without it
    #[arg(long, env = "IRIKIT_GUEST_DIR")]
    guest_dir: Option<PathBuf>,
    /// The runtime's log filter (its stderr is passed through); for example
    /// `ch_machine_runtime::timing=debug` prints how long each step of a create took
    #[arg(long, default_value = "warn")]
    runtime_log: String,
    /// The runtime's `--warm-vmms` in the Cloud Hypervisor columns (each also runs cold, with 0)
    #[arg(long, default_value_t = 1)]
    warm_vmms: usize,
}

/// The VMM of a column.
#[derive(Debug, Clone)]
enum VmmKind {
    /// Cloud Hypervisor or ch-sim (the same API and arguments).
    CloudHypervisor(PathBuf),
    /// QEMU with an accelerator.
    Qemu(PathBuf, QemuAccel),
}

/// A column ready to run.
struct Row {
    vmm: VmmKind,
    kernel: PathBuf,
    initramfs: Option<PathBuf>,
    cmdline: &'static str,
    memory_bytes: u64,
    marker: &'static str,
    n: usize,
}

/// Samples of one side (runtime or bare): start → running, start → serial marker.
#[derive(Default)]
struct Samples {
    running: Vec<Duration>,
    marker: Vec<Duration>,
}

impl Samples {
    /// Records start → running now, then waits for `marker` in `serial` and records that.
    async fn record(&mut self, start: Instant, serial: &Path, marker: &str) -> anyhow::Result<()> {
        self.running.push(start.elapsed());
        wait_for("guest serial marker", TIMEOUT, || async {
            serial_has(serial, marker).then_some(())
        })
        .await?;
        self.marker.push(start.elapsed());
        Ok(())
    }
}

const TIMEOUT: Duration = Duration::from_secs(120);

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn serial_has(path: &Path, marker: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains(marker))
}

/// One QMP `query-status` on a fresh connection; true when running.
async fn qmp_running(socket: &Path) -> bool {
    let Ok(stream) = tokio::net::UnixStream::connect(socket).await else {
        return false;
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let exchange = async {
        lines.next_line().await.ok()??;
        write
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\"}\n")
            .await
            .ok()?;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("\"status\"") {
                return Some(line.contains("\"running\""));
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn vm_spec(row: &Row, paths: &VmPaths, i: usize) -> VmSpec {
    VmSpec {
        uuid: format!("00000000-0000-4000-8000-{i:012}"),
        cpus: 1,
        memory_bytes: row.memory_bytes,
        kernel: row.kernel.clone(),
        cmdline: row.cmdline.into(),
        disks: vec![],
        nics: vec![],
        oem_strings: vec![],
        serial_file: paths.serial.clone(),
    }
}

/// A backend for a bare VMM of `row`: its initramfs, and `serial.log` written by the VMM (no
/// console pump).
fn bare<B: Launched>(backend: B, row: &Row) -> B {
    backend
        .with_initramfs(row.initramfs.clone())
        .with_serial_socket(false)
}

/// The directory of the `i`-th bare VM, made.
fn bare_paths(dir: &Path, i: usize) -> anyhow::Result<VmPaths> {
    let vm_dir = dir.join(format!("bare{i}"));
    std::fs::create_dir_all(&vm_dir)?;
    Ok(VmPaths::new(&vm_dir))
}

/// Bare Cloud Hypervisor: spawn → `vm.create` → `vm.boot` → `vm.info` Running, then → marker.
/// Every VM runs until the column ends, as the runtime's machines do (the n-th VM starts beside
/// n-1 running ones on both sides: on a 2-core host a boot beside running VMs is slower).
async fn bare_ch(binary: &Path, row: &Row, dir: &Path) -> anyhow::Result<Samples> {
    let ch = bare(CloudHypervisor::new(binary.to_owned()), row);
    let mut samples = Samples::default();
    let mut running = Vec::new();
    for i in 0..row.n {
        let paths = bare_paths(dir, i)?;
        let spec = vm_spec(row, &paths, i);
        let start = Instant::now();
        let spawned = ch.spawn(&paths).await?;
        let vmm = spawned.process.clone();
        let child = spawned.child;
        ch.create(&vmm, &spec).await?;
        ch.boot(&vmm).await?;
        wait_for("bare vm.info Running", TIMEOUT, || async {
            ch.info(&vmm)
                .await
                .ok()
                .filter(|info| info.state == VmState::Running)
        })
        .await?;
        samples.record(start, &paths.serial, row.marker).await?;
        running.push((vmm, child));
    }
    for (vmm, mut child) in running {
        ch.terminate(&vmm, Duration::from_secs(5)).await?;
        let _ = child.wait().await;
    }
    Ok(samples)
}

/// Bare QEMU: the runtime's command line without `-S`; spawn → QMP running, then → marker.
/// Every VM runs until the column ends, as in [`bare_ch`].
async fn bare_qemu(
    binary: &Path,
    accel: QemuAccel,
    row: &Row,
    dir: &Path,
) -> anyhow::Result<Samples> {
    let qemu = bare(Qemu::new(binary.to_owned(), accel), row);
    let mut samples = Samples::default();
    let mut running = Vec::new();
    for i in 0..row.n {
        let paths = bare_paths(dir, i)?;
        let args: Vec<String> = qemu
            .args(&paths, &vm_spec(row, &paths, i))
            .into_iter()
            .filter(|a| a != "-S")
            .collect();
        let start = Instant::now();
        let child = tokio::process::Command::new(binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        wait_for("bare qemu running", TIMEOUT, || async {
            qmp_running(&paths.api_socket).await.then_some(())
        })
        .await?;
        samples.record(start, &paths.serial, row.marker).await?;
        running.push(child);
    }
    for mut child in running {
        child.start_kill()?;
        child.wait().await?;
    }
    Ok(samples)
}

/// The runtime's arguments for `row`, its state in `state`, listening on `socket`, with `warm`
/// VMMs started ahead.
fn runtime_args(row: &Row, state: &Path, socket: &Path, warm: usize) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--socket".into(),
        socket.display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
        "--kernel".into(),
        row.kernel.display().to_string(),
        "--cmdline".into(),
        row.cmdline.into(),
        "--machine-class".into(),
        format!("bench,1,{}", row.memory_bytes),
        "--stop-vms-on-exit".into(),
        "--warm-vmms".into(),
        warm.to_string(),
    ];
    match &row.vmm {
        VmmKind::CloudHypervisor(binary) => {
            args.extend(["--ch-binary".into(), binary.display().to_string()]);
        }
        VmmKind::Qemu(binary, accel) => args.extend([
            "--vmm".into(),
            "qemu".into(),
            "--qemu-binary".into(),
            binary.display().to_string(),
            "--qemu-accel".into(),
            match accel {
                QemuAccel::Auto => "auto",
                QemuAccel::Kvm => "kvm",
                QemuAccel::Tcg => "tcg",
            }
            .into(),
        ]),
    }
    if let Some(initrd) = &row.initramfs {
        args.extend(["--initramfs".into(), initrd.display().to_string()]);
    }
    args
}

/// The runtime with `warm` VMMs started ahead: CreateMachine → RUNNING and → marker,
/// sequentially; then delete all.
async fn runtime(row: &Row, dir: &Path, log: &str, warm: usize) -> anyhow::Result<Samples> {
    let runtime_bin = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("ch-machine-runtime");
    let state = dir.join("state");
    let socket = dir.join("machine.sock");
    let mut child = tokio::process::Command::new(&runtime_bin)
        .args(runtime_args(row, &state, &socket, warm))
        .env("RUST_LOG", log)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {}", runtime_bin.display()))?;
    wait_for("runtime socket", Duration::from_secs(20), || async {
        socket.exists().then_some(())
    })
    .await?;
    // The socket file appears at bind(), a moment before listen(): retry refused connects.
    let endpoint = iri_spec::endpoint::Endpoint::unix(&socket);
    let channel = wait_for("runtime accepting", Duration::from_secs(20), || async {
        iri_spec::endpoint::connect(&endpoint).await.ok()
    })
    .await?;
    let mut client = MachineRuntimeClient::new(channel);
    let (mut samples, mut ids) = (Samples::default(), Vec::new());
    for _ in 0..row.n {
        let start = Instant::now();
        let created = client
            .create_machine(machine::CreateMachineRequest {
                machine: Some(machine::Machine {
                    metadata: None,
                    spec: Some(machine::MachineSpec {
                        class: "bench".into(),
                        power: machine::Power::On as i32,
                        ..Default::default()
                    }),
                    status: None,
                }),
            })
            .await?
            .into_inner();
        let id = created
            .machine
            .and_then(|m| m.metadata)
            .map(|m| m.id)
            .context("no id")?;
        let serial = state.join("vms").join(&id).join("serial.log");
        wait_for("RUNNING", TIMEOUT, || {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                let m = client
                    .list_machines(machine::ListMachinesRequest {
                        filter: Some(machine::MachineFilter {
                            id,
                            ..Default::default()
                        }),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .machines
                    .pop()?;
                (m.status?.state == machine::MachineState::MachineRunning as i32).then_some(())
            }
        })
        .await?;
        samples.record(start, &serial, row.marker).await?;
        ids.push(id);
    }
    for id in ids {
        client
            .delete_machine(machine::DeleteMachineRequest { machine_id: id })
            .await?;
    }
    if let Some(pid) = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    child.wait().await?;
    Ok(samples)
}

/// A scratch directory removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the columns share: the stub guest (or why it is missing), and whether QEMU and KVM work.
struct Parts {
    stub: Result<PathBuf, String>,
    qemu: Result<PathBuf, String>,
    kvm: bool,
}

/// The first line of `binary --version`, or why it does not run.
fn version_of(binary: &Path) -> Result<String, String> {
    match std::process::Command::new(binary).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()),
        Ok(out) => Err(format!(
            "{} --version exited {}",
            binary.display(),
            out.status
        )),
        Err(e) => Err(format!("{} does not run: {e}", binary.display())),
    }
}

/// The row of `column`, or the reason it is skipped.
fn row_for(
    column: Column,
    args: &Args,
    parts: &Parts,
    work: &Path,
) -> anyhow::Result<Result<Row, String>> {
    let stub_row = |vmm, stub: &PathBuf| Row {
        vmm,
        kernel: stub.clone(),
        initramfs: None,
        cmdline: "halt",
        memory_bytes: 128 << 20,
        marker: "PVH-HELLO",
        n: args.machines,
    };
    let stub = parts.stub.as_ref().map_err(Clone::clone);
    let qemu = parts.qemu.as_ref().map_err(Clone::clone);
    let need_kvm = || {
        if parts.kvm {
            Ok(())
        } else {
            Err("/dev/kvm cannot be opened".to_owned())
        }
    };
    Ok(match column {
        Column::ChSim => {
            let sim = std::env::current_exe()?
                .parent()
                .context("exe dir")?
                .join("ch-sim");
            // ch-sim only opens the kernel: any file does when as/ld are missing.
            let kernel = match stub {
                Ok(stub) => stub.clone(),
                Err(_) => {
                    let dummy = work.join("not-a-kernel");
                    std::fs::write(&dummy, b"ch-sim only opens it")?;
                    dummy
                }
            };
            Ok(stub_row(VmmKind::CloudHypervisor(sim), &kernel))
        }
        Column::Ch => match &args.ch_binary {
            None => Err("IRIKIT_CH_BIN is not set (no cloud-hypervisor binary)".to_owned()),
            Some(ch) if !ch.is_file() => {
                Err(format!("IRIKIT_CH_BIN {} is not a file", ch.display()))
            }
            Some(ch) => {
                need_kvm().and_then(|()| Ok(stub_row(VmmKind::CloudHypervisor(ch.clone()), stub?)))
            }
        },
        Column::QemuKvm => need_kvm().and_then(|()| {
            Ok(stub_row(
                VmmKind::Qemu(qemu?.clone(), QemuAccel::Kvm),
                stub?,
            ))
        }),
        Column::QemuTcg => {
            qemu.and_then(|qemu| Ok(stub_row(VmmKind::Qemu(qemu.clone(), QemuAccel::Tcg), stub?)))
        }
        Column::QemuLinux => match (&args.guest_dir, qemu) {
            (_, Err(e)) => Err(e),
            (None, _) => Err(
                "IRIKIT_GUEST_DIR is not set (ci/install.sh fetches the Debian guest parts)"
                    .to_owned(),
            ),
            (Some(guest), Ok(qemu)) => {
                let initrd = work.join("initramfs.cpio.gz");
                guests::build_initramfs(guest, &initrd).map_err(anyhow::Error::msg)?;
                Ok(Row {
                    vmm: VmmKind::Qemu(qemu.clone(), QemuAccel::Tcg),
                    kernel: std::fs::canonicalize(guest.join("vmlinuz"))?,
                    initramfs: Some(initrd),
                    cmdline: "console=ttyS0 quiet panic=-1",
                    memory_bytes: 256 << 20,
                    marker: "IRIKIT-GUEST-READY",
                    n: args.linux_machines,
                })
            }
        },
    })
}

/// `runtime / bare` of the p50s, with both p50/p99 pairs.
fn cells(runtime: &mut [Duration], bare: &mut [Duration]) -> [String; 3] {
    let (r50, r99) = (pct(runtime, 50.0), pct(runtime, 99.0));
    let (b50, b99) = (pct(bare, 50.0), pct(bare, 99.0));
    [
        format!("{} / {} ms", ms(r50), ms(r99)),
        format!("{} / {} ms", ms(b50), ms(b99)),
        format!("{:.2}x", r50.as_secs_f64() / b50.as_secs_f64().max(1e-9)),
    ]
}

/// The bench's scratch directory (every VMM it or its runtimes start runs in there).
fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("chbench{}", std::process::id()))
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let work = WorkDir(work_dir());
    std::fs::create_dir_all(work.path())?;
    let parts = Parts {
        stub: guests::assemble_stub(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest"),
            work.path(),
        ),
        qemu: version_of(&args.qemu_binary).map(|_| args.qemu_binary.clone()),
        kvm: kvm_opens(),
    };
    let qemu_version = version_of(&args.qemu_binary).unwrap_or_else(|e| e);
    println!(
        "ch-runtime-bench: {} cpus; {qemu_version}; /dev/kvm {}; machines started one after another",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if parts.kvm { "opens" } else { "absent" },
    );
    println!(
        "{:<16} {:>3} | {:>21} {:>21} {:>7} | {:>21} {:>21} {:>7}",
        "column",
        "n",
        "runtime→RUNNING p50/p99",
        "bare→running p50/p99",
        "ratio",
        "runtime→marker p50/p99",
        "bare→marker p50/p99",
        "ratio",
    );
    let mut ok = true;
    for (i, column) in args.columns.iter().enumerate() {
        let dir = work.path().join(format!("col{i}"));
        std::fs::create_dir_all(dir.join("bare"))?;
        let name = column
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned());
        let row = match row_for(*column, &args, &parts, &dir)? {
            Ok(row) => row,
            Err(reason) => {
                println!("{name:<16} skipped: {reason}");
                continue;
            }
        };
        let bare = match &row.vmm {
            VmmKind::CloudHypervisor(binary) => bare_ch(binary, &row, &dir.join("bare")).await,
            VmmKind::Qemu(binary, accel) => {
                bare_qemu(binary, *accel, &row, &dir.join("bare")).await
            }
        };
        let mut bare = match bare {
            Ok(bare) => bare,
            Err(e) => {
                println!("{name:<16} failed: {e:#}");
                ok = false;
                continue;
            }
        };
        // Cloud Hypervisor's VMM starts without its VM: the runtime keeps some started ahead
        // (`--warm-vmms`, default 1 as the runtime's); the `cold` row starts each VMM on the create path,
        // as the bare side does. QEMU's process is shaped by its VM: cold only.
        let variants: &[(usize, &str)] = match &row.vmm {
            VmmKind::CloudHypervisor(_) => &[(args.warm_vmms, ""), (0, " cold")],
            VmmKind::Qemu(..) => &[(0, "")],
        };
        for &(warm, suffix) in variants {
            let label = format!("{name}{suffix}");
            let run_dir = dir.join(format!("runtime-warm{warm}"));
            std::fs::create_dir_all(&run_dir)?;
            match runtime(&row, &run_dir, &args.runtime_log, warm).await {
                Ok(mut rt) => {
                    let [rr, br, ratio_r] = cells(&mut rt.running, &mut bare.running);
                    let [rm, bm, ratio_m] = cells(&mut rt.marker, &mut bare.marker);
                    println!(
                        "{label:<16} {:>3} | {rr:>21} {br:>21} {ratio_r:>7} | {rm:>21} {bm:>21} {ratio_m:>7}",
                        row.n
                    );
                }
                Err(e) => {
                    println!("{label:<16} failed: {e:#}");
                    ok = false;
                }
            }
        }
    }
    Ok(ok)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = run(args).await;
    // A column that failed half-way leaves its runtime's VMs running (the runtime is killed,
    // and VMs outlive their runtime by design): stop whatever still runs in the scratch dir.
    ch_machine_runtime::vmm::kill_processes_in(&work_dir(), Duration::from_secs(5)).await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ch-runtime-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
