//! `ch-machine-runtime`: an IRI MachineRuntime running one Cloud Hypervisor VMM per machine
//! (or, with `--vmm qemu`, one QEMU per machine).
//!
//! args → config → tracing → serve. SIGINT/SIGTERM stop the server gracefully; VMs keep
//! running (like libvirt) unless `--stop-vms-on-exit`; a second signal exits at once.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use ch_machine_runtime::{
    config::{self, Config, MachineClass, NicMode, Payload},
    vmm::{CloudHypervisor, Launched as _, Qemu, QemuAccel, Vmm},
};
use clap::Parser;

#[path = "../../shared/cli.rs"]
mod cli;

/// IRI MachineRuntime backed by Cloud Hypervisor
#[derive(Debug, Parser)]
#[command(name = "ch-machine-runtime", version, about)]
struct Args {
    /// gRPC unix socket to listen on (a path, or unix:///path)
    #[arg(long, visible_alias = "address", env = "IRI_MACHINE_RUNTIME_SOCKET")]
    socket: Option<String>,
    /// Same as --socket, in endpoint form (unix:///path)
    #[arg(long, env = "IRI_MACHINE_RUNTIME_ENDPOINT", conflicts_with = "socket")]
    endpoint: Option<String>,
    /// State directory (machine records, per-VM sockets, serial logs, local disks)
    #[arg(long, env = "IRI_CH_STATE_DIR")]
    state_dir: PathBuf,
    /// The VMM backend
    #[arg(long, env = "IRI_VMM", value_enum, default_value = "cloud-hypervisor")]
    vmm: VmmKind,
    /// The cloud-hypervisor binary (or ch-sim); required with --vmm cloud-hypervisor
    #[arg(long, env = "IRIKIT_CH_BIN")]
    ch_binary: Option<PathBuf>,
    /// The QEMU binary for --vmm qemu (looked up on PATH)
    #[arg(long, env = "IRIKIT_QEMU_BIN", default_value = "qemu-system-x86_64")]
    qemu_binary: PathBuf,
    /// QEMU accelerator: auto (KVM where /dev/kvm opens and the guest can run under it), kvm, tcg
    #[arg(long, env = "IRI_QEMU_ACCEL", value_enum, default_value = "auto")]
    qemu_accel: QemuAccel,
    /// Initramfs every VM boots with (optional)
    #[arg(long, env = "IRI_CH_INITRAMFS")]
    initramfs: Option<PathBuf>,
    /// Guest kernel (PVH ELF or bzImage) every VM boots
    #[arg(long, env = "IRI_CH_KERNEL")]
    kernel: PathBuf,
    /// Guest kernel command line
    #[arg(long, env = "IRI_CH_CMDLINE", default_value = "console=ttyS0")]
    cmdline: String,
    /// Machine class `name,cpu,memoryBytes` (repeatable)
    #[arg(
        long = "machine-class",
        env = "IRI_CH_MACHINE_CLASSES",
        value_delimiter = ';'
    )]
    machine_classes: Vec<MachineClass>,
    /// YAML file with `machineClasses: [{name, cpu, memoryBytes}]`
    #[arg(long, env = "IRI_CH_MACHINE_CLASS_FILE")]
    machine_class_file: Option<PathBuf>,
    /// Directory local-file volume handles may point into (repeatable)
    #[arg(long = "volume-dir", env = "IRI_CH_VOLUME_DIRS", value_delimiter = ':')]
    volume_dirs: Vec<PathBuf>,
    /// Directory local_disk images may come from (repeatable)
    #[arg(long = "image-dir", env = "IRI_CH_IMAGE_DIRS", value_delimiter = ':')]
    image_dirs: Vec<PathBuf>,
    /// Size of a local_disk without size_bytes
    #[arg(long, env = "IRI_CH_DEFAULT_LOCAL_DISK_BYTES", default_value_t = 500 << 20)]
    default_local_disk_bytes: u64,
    /// NICs: `auto` (tap where root / CAP_NET_ADMIN and /dev/net/tun allow, else none), `tap`
    /// (the VMM creates a named tap per NIC) or `none` (NICs refused with FailedPrecondition)
    #[arg(long, env = "IRI_CH_NIC_MODE", value_enum, default_value = "auto")]
    nic_mode: NicMode,
    /// Tap device names: this prefix (1-7 of [a-z0-9-]) plus 8 hex digits
    #[arg(long, env = "IRI_CH_TAP_PREFIX", default_value = "iri")]
    tap_prefix: String,
    /// How often idle machines are re-probed
    #[arg(long, env = "IRI_CH_RESYNC_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    resync_interval: Duration,
    /// Power off via the ACPI power button, waiting this long before a hard stop (0s: hard stop)
    #[arg(long, env = "IRI_CH_GRACEFUL_POWER_OFF", default_value = "0s", value_parser = humantime::parse_duration)]
    graceful_power_off: Duration,
    /// Stop every VM when the runtime exits (default: keep them running for adoption)
    #[arg(long, env = "IRI_CH_STOP_VMS_ON_EXIT")]
    stop_vms_on_exit: bool,
    /// CPU overcommit factor for class quantities
    #[arg(long, env = "IRI_CH_CPU_OVERCOMMIT", default_value_t = 1)]
    cpu_overcommit: u32,
    /// VMMs kept started ahead of their machines, so that CreateMachine does not wait for a
    /// VMM to start (Cloud Hypervisor only: QEMU's process is shaped by its VM; 0: none)
    #[arg(long, env = "IRI_CH_WARM_VMMS", default_value_t = 1)]
    warm_vmms: usize,
    /// Where the Exec console endpoint listens (TCP; Exec answers
    /// `http://<this address>/exec/<one-time token>`, remotecommand v5.channel.k8s.io over
    /// WebSocket, bridged to the VM's serial port). Port 0 picks a free port.
    #[arg(long, env = "IRI_CH_CONSOLE_LISTEN", default_value = "127.0.0.1:0")]
    console_listen: std::net::SocketAddr,
    /// Log format
    #[arg(long, env = "IRI_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// The VMM backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum VmmKind {
    /// Cloud Hypervisor over its REST API (also ch-sim).
    CloudHypervisor,
    /// QEMU over QMP.
    Qemu,
}

fn build_config(args: &Args) -> anyhow::Result<Config> {
    let mut classes = args.machine_classes.clone();
    if let Some(file) = &args.machine_class_file {
        classes.extend(config::read_class_file(file)?);
    }
    let kernel = std::fs::canonicalize(&args.kernel)
        .with_context(|| format!("kernel {}", args.kernel.display()))?;
    let vmm_binary = match args.vmm {
        VmmKind::CloudHypervisor => args
            .ch_binary
            .clone()
            .context("--ch-binary (or IRIKIT_CH_BIN) is required with --vmm cloud-hypervisor")?,
        VmmKind::Qemu => args.qemu_binary.clone(),
    };
    Ok(Config {
        state_dir: args.state_dir.clone(),
        vmm_binary,
        payload: Payload {
            kernel,
            cmdline: args.cmdline.clone(),
        },
        classes,
        volume_dirs: config::canonical_dirs("volume dir", &args.volume_dirs)?,
        image_dirs: config::canonical_dirs("image dir", &args.image_dirs)?,
        default_local_disk_bytes: args.default_local_disk_bytes,
        nic_mode: args.nic_mode,
        tap_prefix: args.tap_prefix.clone(),
        resync_interval: args.resync_interval,
        graceful_power_off: args.graceful_power_off,
        stop_vms_on_exit: args.stop_vms_on_exit,
        cpu_overcommit: args.cpu_overcommit,
        warm_vmms: args.warm_vmms,
        console_listen: args.console_listen,
    }
    .validate()?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let log_format = args.log_format.clone();
    cli::main("ch-machine-runtime", &log_format, run(args)).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let socket = cli::socket_path(args.socket.as_deref(), args.endpoint.as_deref())?;
    let cfg = build_config(&args)?;
    if cfg.nic_mode == NicMode::None {
        tracing::info!("NICs are refused (--nic-mode none, or no CAP_NET_ADMIN / /dev/net/tun)");
    } else {
        tracing::info!(tap_prefix = %cfg.tap_prefix, "NICs are tap devices the VMM creates");
    }
    let initramfs = args
        .initramfs
        .as_ref()
        .map(|p| std::fs::canonicalize(p).with_context(|| format!("initramfs {}", p.display())))
        .transpose()?;
    let vmm: Arc<dyn Vmm> = match args.vmm {
        VmmKind::CloudHypervisor => {
            Arc::new(CloudHypervisor::new(cfg.vmm_binary.clone()).with_initramfs(initramfs))
        }
        VmmKind::Qemu => {
            Arc::new(Qemu::new(cfg.vmm_binary.clone(), args.qemu_accel).with_initramfs(initramfs))
        }
    };
    let token = cli::shutdown_token();
    ch_machine_runtime::serve(cfg, vmm, socket, token).await
}
