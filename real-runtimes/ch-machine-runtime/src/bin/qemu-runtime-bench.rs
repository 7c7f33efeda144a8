//! `qemu-runtime-bench`: the machine runtime on QEMU against bare QEMU, in one run.
//!
//! For each guest (the PVH stub under KVM where `/dev/kvm` opens, the stub under TCG, and the
//! Debian Linux guest under TCG when `IRIKIT_GUEST_DIR` is set) it starts a
//! `ch-machine-runtime --vmm qemu` (the binary next to this one) and measures
//! CreateMachine → RUNNING and CreateMachine → the guest's serial marker, sequentially, over
//! `--machines` machines (Linux: `--linux-machines`). Beside that it spawns the same QEMU
//! command line bare (without `-S`) and measures spawn → QMP `running` and spawn → serial
//! marker. It prints p50/p99 per column and the runtime/bare ratio of the p50s.
#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::{
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ch_machine_runtime::vmm::{Qemu, QemuAccel, VmPaths, VmSpec};
use clap::Parser;
use iri_spec::machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

#[path = "../../tests/guest/guests.rs"]
mod guests;

/// Benchmark the machine runtime on QEMU against bare QEMU
#[derive(Debug, Parser)]
#[command(name = "qemu-runtime-bench", about)]
struct Args {
    /// The QEMU binary
    #[arg(long, env = "IRIKIT_QEMU_BIN", default_value = "qemu-system-x86_64")]
    qemu_binary: PathBuf,
    /// Machines per stub row
    #[arg(long, default_value_t = 20)]
    machines: usize,
    /// Machines for the Linux row (each boots for seconds under TCG)
    #[arg(long, default_value_t = 3)]
    linux_machines: usize,
    /// Unpacked Debian guest parts (see ci/install.sh); the Linux row is skipped without it
    #[arg(long, env = "IRIKIT_GUEST_DIR")]
    guest_dir: Option<PathBuf>,
}

struct Row {
    name: &'static str,
    accel: &'static str,
    kernel: PathBuf,
    initramfs: Option<PathBuf>,
    cmdline: &'static str,
    memory_bytes: u64,
    marker: &'static str,
    n: usize,
}

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

/// Bare QEMU: the runtime's command line without `-S`; spawn → running, spawn → marker.
async fn bare(
    qemu: &Qemu,
    binary: &Path,
    row: &Row,
    dir: &Path,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut running, mut marker) = (Vec::new(), Vec::new());
    for i in 0..row.n {
        let vm_dir = dir.join(format!("bare{i}"));
        std::fs::create_dir_all(&vm_dir)?;
        let paths = VmPaths::new(&vm_dir);
        let spec = VmSpec {
            uuid: format!("00000000-0000-4000-8000-{i:012}"),
            cpus: 1,
            memory_bytes: row.memory_bytes,
            kernel: row.kernel.clone(),
            cmdline: row.cmdline.into(),
            disks: vec![],
            nics: vec![],
            oem_strings: vec![],
            serial_file: paths.serial.clone(),
        };
        let args: Vec<String> = qemu
            .args(&paths, &spec)
            .into_iter()
            .filter(|a| a != "-S")
            .collect();
        let start = Instant::now();
        let mut child = tokio::process::Command::new(binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let timeout = Duration::from_secs(120);
        wait_for("bare qemu running", timeout, || async {
            qmp_running(&paths.api_socket).await.then_some(())
        })
        .await?;
        running.push(start.elapsed());
        wait_for("bare guest marker", timeout, || async {
            serial_has(&paths.serial, row.marker).then_some(())
        })
        .await?;
        marker.push(start.elapsed());
        child.start_kill()?;
        child.wait().await?;
    }
    Ok((running, marker))
}

/// The runtime: CreateMachine → RUNNING and → marker, sequentially; then delete all.
async fn runtime(
    binary: &Path,
    row: &Row,
    dir: &Path,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let runtime_bin = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("ch-machine-runtime");
    let state = dir.join("state");
    let socket = dir.join("machine.sock");
    let mut args: Vec<String> = vec![
        "--socket".into(),
        socket.display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
        "--vmm".into(),
        "qemu".into(),
        "--qemu-binary".into(),
        binary.display().to_string(),
        "--qemu-accel".into(),
        row.accel.into(),
        "--kernel".into(),
        row.kernel.display().to_string(),
        "--cmdline".into(),
        row.cmdline.into(),
        "--machine-class".into(),
        format!("bench,1,{}", row.memory_bytes),
        "--stop-vms-on-exit".into(),
    ];
    if let Some(initrd) = &row.initramfs {
        args.extend(["--initramfs".into(), initrd.display().to_string()]);
    }
    let mut child = tokio::process::Command::new(&runtime_bin)
        .args(&args)
        .env("RUST_LOG", "warn")
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
    let (mut running, mut marker, mut ids) = (Vec::new(), Vec::new(), Vec::new());
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
        let timeout = Duration::from_secs(120);
        wait_for("RUNNING", timeout, || {
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
        running.push(start.elapsed());
        wait_for("guest marker", timeout, || async {
            serial_has(&serial, row.marker).then_some(())
        })
        .await?;
        marker.push(start.elapsed());
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
    Ok((running, marker))
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

async fn run(args: Args) -> anyhow::Result<()> {
    let version = std::process::Command::new(&args.qemu_binary)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version", args.qemu_binary.display()))?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let work = WorkDir(std::env::temp_dir().join(format!("qbench{}", std::process::id())));
    std::fs::create_dir_all(work.path())?;
    let stub = guests::assemble_stub(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest"),
        work.path(),
    )
    .map_err(anyhow::Error::msg)?;
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let mut rows = Vec::new();
    if kvm {
        rows.push(Row {
            name: "PVH stub",
            accel: "kvm",
            kernel: stub.clone(),
            initramfs: None,
            cmdline: "halt",
            memory_bytes: 128 << 20,
            marker: "PVH-HELLO",
            n: args.machines,
        });
    } else {
        println!("(no /dev/kvm: the KVM row is left out)");
    }
    rows.push(Row {
        name: "PVH stub",
        accel: "tcg",
        kernel: stub,
        initramfs: None,
        cmdline: "halt",
        memory_bytes: 128 << 20,
        marker: "PVH-HELLO",
        n: args.machines,
    });
    match &args.guest_dir {
        Some(guest) => {
            let initrd = work.path().join("initramfs.cpio.gz");
            guests::build_initramfs(guest, &initrd).map_err(anyhow::Error::msg)?;
            rows.push(Row {
                name: "Debian Linux",
                accel: "tcg",
                kernel: std::fs::canonicalize(guest.join("vmlinuz"))?,
                initramfs: Some(initrd),
                cmdline: "console=ttyS0 quiet panic=-1",
                memory_bytes: 256 << 20,
                marker: "IRIKIT-GUEST-READY",
                n: args.linux_machines,
            });
        }
        None => println!("(IRIKIT_GUEST_DIR not set: the Linux row is left out)"),
    }

    println!(
        "qemu-runtime-bench: {version}; {} cpus; sequential machines",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<13} {:<5} {:>3} | {:>21} {:>21} | {:>21} {:>21} | {:>7} {:>7}",
        "guest",
        "accel",
        "n",
        "runtime→RUNNING p50/p99",
        "bare→running p50/p99",
        "runtime→marker p50/p99",
        "bare→marker p50/p99",
        "ratio R",
        "ratio M",
    );
    for (i, row) in rows.iter().enumerate() {
        let dir = work.path().join(format!("row{i}"));
        std::fs::create_dir_all(dir.join("bare"))?;
        let accel = if row.accel == "kvm" {
            QemuAccel::Kvm
        } else {
            QemuAccel::Tcg
        };
        let qemu = Qemu::new(args.qemu_binary.clone(), accel).with_initramfs(row.initramfs.clone());
        let (mut bare_run, mut bare_mark) =
            bare(&qemu, &args.qemu_binary, row, &dir.join("bare")).await?;
        let (mut rt_run, mut rt_mark) = runtime(&args.qemu_binary, row, &dir).await?;
        let (rr50, rr99) = (pct(&mut rt_run, 50.0), pct(&mut rt_run, 99.0));
        let (br50, br99) = (pct(&mut bare_run, 50.0), pct(&mut bare_run, 99.0));
        let (rm50, rm99) = (pct(&mut rt_mark, 50.0), pct(&mut rt_mark, 99.0));
        let (bm50, bm99) = (pct(&mut bare_mark, 50.0), pct(&mut bare_mark, 99.0));
        println!(
            "{:<13} {:<5} {:>3} | {:>21} {:>21} | {:>21} {:>21} | {:>6.2}x {:>6.2}x",
            row.name,
            row.accel,
            row.n,
            format!("{} / {} ms", ms(rr50), ms(rr99)),
            format!("{} / {} ms", ms(br50), ms(br99)),
            format!("{} / {} ms", ms(rm50), ms(rm99)),
            format!("{} / {} ms", ms(bm50), ms(bm99)),
            rr50.as_secs_f64() / br50.as_secs_f64().max(1e-9),
            rm50.as_secs_f64() / bm50.as_secs_f64().max(1e-9),
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qemu-runtime-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
