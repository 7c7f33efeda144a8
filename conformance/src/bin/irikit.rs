//! `irikit`: irikit's control-plane command. `irikit up` runs the store, both schedulers, the
//! machinepoollet and the volumepoollet in one process against the embedded mock runtimes
//! (default) or `--machine-endpoint`/`--volume-endpoint`, applies the seed's examples and
//! `-f` files, and prints every state change. `irikit controllers` runs the cluster-wide
//! controllers alone (both schedulers and the pool-liveness controller, as IronCore's
//! controller-manager does) against a shared store, for a deployment whose poollets run on
//! other hosts. SIGINT/SIGTERM stop either gracefully (exit 0); a second signal exits at once
//! (130).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use iri_conformance::{lifecycle::PlaneConfig, up};

mod shared;
use shared::{LogFormat, endpoint};

/// irikit's control plane: all in one process, or its cluster-wide controllers.
#[derive(Debug, Parser)]
#[command(name = "irikit", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format (logs go to stderr; RUST_LOG sets the filter, default warn).
    #[arg(
        long,
        env = "IRIKIT_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run store, schedulers and poollets in one process against the embedded mock runtimes
    /// or real runtime endpoints.
    Up(UpArgs),
    /// Run the cluster-wide controllers against a shared store: the machine and volume
    /// schedulers and the pool-liveness controller (marks a pool whose poollet went silent
    /// `Ready=Unknown`), as ironcore-controller-manager does.
    Controllers(ControllersArgs),
}

#[derive(Debug, Args)]
struct ControllersArgs {
    /// Store: `etcd://host:port[,host:port]` (or `memory`, which no other process can share).
    #[arg(long, env = "IRIKIT_STORE")]
    store: String,
    /// How long a pool's Ready condition and Lease may stand still before the pool is marked
    /// `Ready=Unknown` (IronCore's `--machine-pool-lifecycle-grace-period`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50s")]
    pool_grace_period: Duration,
    /// Store writes (each a batch of binds) in flight per scheduler.
    #[arg(long, default_value_t = 64)]
    scheduler_concurrency: usize,
    /// Machine scheduler in reservation mode (IEP-11): a Reservation per unbound Machine,
    /// bound only where a pool accepted it; pools without reservations are the best-effort
    /// fallback.
    #[arg(long)]
    reservations: bool,
    /// Reservation mode: how long to wait for the pools' answers before falling back.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    reservation_timeout: Duration,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Store: `memory` or `etcd://host:port[,host:port]` (irikitctl works against the same etcd).
    #[arg(long, env = "IRIKIT_STORE", default_value = "memory")]
    store: String,
    /// MachineRuntime endpoint (unix:///path); with neither endpoint the embedded mock runs.
    #[arg(long, env = "IRI_MACHINE_RUNTIME_ENDPOINT", value_name = "ENDPOINT")]
    machine_endpoint: Option<String>,
    /// VolumeRuntime endpoint.
    #[arg(long, env = "IRI_VOLUME_RUNTIME_ENDPOINT", value_name = "ENDPOINT")]
    volume_endpoint: Option<String>,
    /// YAML files to apply at start (repeatable, multi-document).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Do not apply the bundled examples (the seed's MachinePool and MachineClass, and a Machine).
    #[arg(long)]
    no_examples: bool,
    /// MachinePool the machinepoollet announces.
    #[arg(
        long,
        env = "POOLLET_MACHINE_POOL_NAME",
        default_value = "irikit-machinepool"
    )]
    machine_pool_name: String,
    /// VolumePool the volumepoollet announces.
    #[arg(
        long,
        env = "POOLLET_VOLUME_POOL_NAME",
        default_value = "irikit-volumepool"
    )]
    volume_pool_name: String,
    /// Poollet heartbeat / Status probe interval.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    heartbeat_interval: Duration,
    /// Machine scheduler in reservation mode (IEP-11): a Reservation per unbound Machine,
    /// bound only where a pool accepted it; pools without reservations are the best-effort
    /// fallback.
    #[arg(long)]
    reservations: bool,
    /// Reservation mode: how long to wait for the pools' answers before falling back.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    reservation_timeout: Duration,
}

fn config(args: &UpArgs) -> anyhow::Result<up::UpConfig> {
    let parse = |s: &Option<String>, flag: &str| {
        s.as_deref()
            .filter(|s| !s.is_empty())
            .map(endpoint)
            .transpose()
            .with_context(|| flag.to_owned())
    };
    let mut documents = Vec::new();
    if !args.no_examples {
        documents.push((
            "bundled seed examples".to_owned(),
            up::SEED_EXAMPLES.to_owned(),
        ));
        documents.push((
            "bundled machine example".to_owned(),
            up::MACHINE_EXAMPLE.to_owned(),
        ));
    }
    for file in &args.files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        documents.push((file.display().to_string(), text));
    }
    anyhow::ensure!(
        !args.heartbeat_interval.is_zero(),
        "--heartbeat-interval must be positive"
    );
    let plane = PlaneConfig {
        heartbeat_interval: args.heartbeat_interval,
        status_timeout: args.heartbeat_interval.mul_f64(0.8),
        // IronCore's 50 s grace against its 10 s heartbeat.
        pool_lifecycle_grace: args.heartbeat_interval * 5,
        reservations: reservation_config(args.reservations, args.reservation_timeout),
        ..PlaneConfig::default()
    };
    Ok(up::UpConfig {
        store: args.store.clone(),
        machine: parse(&args.machine_endpoint, "--machine-endpoint")?,
        volume: parse(&args.volume_endpoint, "--volume-endpoint")?,
        machine_pool: args.machine_pool_name.clone(),
        volume_pool: args.volume_pool_name.clone(),
        documents,
        plane,
    })
}

/// The reservation mode's settings when `--reservations` is on.
fn reservation_config(on: bool, timeout: Duration) -> Option<scheduler::ReservationConfig> {
    on.then(|| scheduler::ReservationConfig {
        timeout,
        ..scheduler::ReservationConfig::default()
    })
}

/// `irikit controllers`: both schedulers and the pool-liveness controller until `cancel`.
async fn controllers(
    args: ControllersArgs,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.pool_grace_period.is_zero(),
        "--pool-grace-period must be positive"
    );
    let store = irikit_api::store::open(&args.store)
        .await
        .with_context(|| format!("open store {}", args.store))?;
    let config = scheduler::Config {
        concurrency: args.scheduler_concurrency.max(1),
        ..scheduler::Config::default()
    };
    let machines = scheduler::run_machine_scheduler(
        store.clone(),
        config.clone(),
        reservation_config(args.reservations, args.reservation_timeout),
        cancel.clone(),
    );
    let volumes = scheduler::VolumeScheduler::new(store.clone(), config);
    tracing::info!(store = %args.store, grace = ?args.pool_grace_period, reservations = args.reservations, "controllers started");
    let (machines, volumes, ()) = tokio::join!(
        machines,
        volumes.run(cancel.clone()),
        poollet::lifecycle::run(store, args.pool_grace_period, cancel.clone()),
    );
    machines.context("machine scheduler")?;
    volumes.context("volume scheduler")?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    shared::init_tracing(cli.log_format, "warn");
    let res = match cli.command {
        Command::Controllers(args) => {
            let cancel =
                shared::cancel_on_signals("", "irikit: interrupted twice: exiting at once");
            controllers(args, cancel).await
        }
        Command::Up(args) => match config(&args) {
            Ok(config) => {
                let cancel =
                    shared::cancel_on_signals("", "irikit: interrupted twice: exiting at once");
                up::run(config, up::stdout_lines(), cancel).await
            }
            Err(err) => Err(err),
        },
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("irikit: {err:#}");
            ExitCode::from(2)
        }
    }
}
