//! `irikit`: irikit's control plane, for its operators (as kubectl and the control-plane
//! binaries are Kubernetes'). `irikit up` runs the store, both schedulers, the pool-liveness
//! controller, the machinepoollet and the volumepoollet in one process against the embedded
//! mock runtimes (default) or `--machine-endpoint`/`--volume-endpoint`, applies the seed's
//! examples and `-f` files, and prints every state change. `irikit controllers` runs the
//! cluster-wide controllers alone (both schedulers and the pool-liveness controller, as
//! IronCore's controller-manager does) against a shared store, for a deployment whose poollets
//! run on other hosts. `irikit apply | get | delete | validate` read and change a store's
//! objects. SIGINT/SIGTERM stop `up` and `controllers` gracefully (exit 0); a second signal
//! exits at once (130). Errors are one line, `irikit: ...`, exit status 2.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use irikit_api::Kind;
use irikit_bootstrap::LogFormat;
use irikit_controlplane::{
    PlaneConfig, controllers,
    ctl::{self, Output},
    up,
};

/// irikit's control plane: run it (all in one process, or its cluster-wide controllers) and
/// read and change its objects.
#[derive(Debug, Parser)]
#[command(name = "irikit", version, long_about = None)]
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
    /// Create or update every object of (multi-document) YAML files; a non-empty status in a
    /// document is written too (there is no poollet to write it otherwise).
    Apply {
        /// YAML files (`-` for stdin).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Get one object or list a kind.
    Get {
        /// Kind or plural (`machines`, `volumes`, `machinepools`, `MachinePool`, ...).
        kind: String,
        /// Object name (all objects when absent).
        name: Option<String>,
        /// Namespace (namespaced kinds; `default` when getting one object).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Label selector `k=v,k2=v2`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Field selector, e.g. `spec.machinePoolRef.name=` for unscheduled machines.
        #[arg(long)]
        field_selector: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete an object (finalizers are honoured: it may only get a deletionTimestamp).
    Delete {
        /// Kind or plural.
        kind: String,
        /// Object name.
        name: String,
        /// Namespace (namespaced kinds).
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Parse and validate YAML files without a store, printing the canonical form.
    Validate {
        /// YAML files (`-` for stdin).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Yaml)]
        output: Output,
    },
}

/// The store `apply`, `get` and `delete` work on, and how they print.
#[derive(Debug, Args)]
struct StoreArgs {
    /// Store: `memory` (empty, per invocation) or `etcd://host:port[,host:port]`.
    #[arg(long, env = "IRIKIT_STORE", default_value = "memory")]
    store: String,
    /// YAML files applied before the command (useful with `--store memory`).
    #[arg(long)]
    preload: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Yaml)]
    output: Output,
}

impl StoreArgs {
    /// Opens the store and applies the `--preload` files.
    async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn irikit_api::Store>> {
        let store = irikit_api::store::open(&self.store)
            .await
            .with_context(|| format!("open store {}", self.store))?;
        ctl::apply_files(&*store, &self.preload).await?;
        Ok(store)
    }
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
    #[command(flatten)]
    reservation: ReservationArgs,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Store: `memory` or `etcd://host:port[,host:port]` (`irikit get` works against the same etcd).
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
    #[command(flatten)]
    reservation: ReservationArgs,
}

/// The machine scheduler's reservation mode, for `up` and `controllers`.
#[derive(Debug, Args)]
struct ReservationArgs {
    /// Machine scheduler in reservation mode (IEP-11): a Reservation per unbound Machine,
    /// bound only where a pool accepted it; pools without reservations are the best-effort
    /// fallback.
    #[arg(long)]
    reservations: bool,
    /// Reservation mode: how long to wait for the pools' answers before falling back.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    reservation_timeout: Duration,
    /// Reservation mode: how many pools a Machine's Reservation asks at once, most free
    /// first (0: every pool).
    #[arg(long, default_value_t = 0)]
    reservation_fanout: usize,
}

impl ReservationArgs {
    /// The reservation mode's settings when `--reservations` is on.
    fn config(&self) -> Option<scheduler::ReservationConfig> {
        self.reservations.then(|| scheduler::ReservationConfig {
            timeout: self.reservation_timeout,
            fanout: self.reservation_fanout,
            ..scheduler::ReservationConfig::default()
        })
    }
}

fn config(args: &UpArgs) -> anyhow::Result<up::UpConfig> {
    let parse = |s: &Option<String>, flag: &str| {
        s.as_deref()
            .filter(|s| !s.is_empty())
            .map(iri_spec::endpoint::Endpoint::from_flag)
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
        reservations: args.reservation.config(),
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

/// A token the first SIGINT/SIGTERM cancels; a second one exits at once (130).
fn cancel_on_signals() -> tokio_util::sync::CancellationToken {
    irikit_bootstrap::cancel_on_signals(
        || {},
        || eprintln!("irikit: interrupted twice: exiting at once"),
    )
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
    let config = controllers::ControllersConfig {
        pool_grace_period: args.pool_grace_period,
        scheduler: scheduler::Config {
            concurrency: args.scheduler_concurrency.max(1),
            ..scheduler::Config::default()
        },
        reservations: args.reservation.config(),
    };
    tracing::info!(store = %args.store, grace = ?args.pool_grace_period, reservations = args.reservation.reservations, "controllers started");
    controllers::run(store, config, cancel).await
}

/// `apply`, `get`, `delete` and `validate`: the store's objects in and out.
async fn objects(command: Command) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Up(_) | Command::Controllers(_) => Ok(()),
        Command::Validate { files, output } => {
            ctl::print(&mut out, output, &ctl::validate(&files)?)
        }
        Command::Apply { files, store: args } => {
            let store = args.open().await?;
            let applied = ctl::apply_files(&*store, &files).await?;
            ctl::print(&mut out, args.output, &applied)
        }
        Command::Get {
            kind,
            name,
            namespace,
            selector,
            field_selector,
            store: args,
        } => {
            let kind: Kind = kind.parse()?;
            let store = args.open().await?;
            let listing = name.is_none();
            let selection = ctl::Selection {
                name,
                namespace,
                labels: selector,
                fields: field_selector,
            };
            let objects = ctl::get(&*store, kind, selection).await?;
            if listing && objects.is_empty() {
                eprintln!("No resources found.");
                return Ok(());
            }
            ctl::print(&mut out, args.output, &objects)
        }
        Command::Delete {
            kind,
            name,
            namespace,
            store: args,
        } => {
            let kind: Kind = kind.parse()?;
            let store = args.open().await?;
            let line = ctl::delete(&*store, kind, &namespace, &name).await?;
            eprintln!("{line}");
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    irikit_bootstrap::init_tracing(cli.log_format, "warn");
    let res = match cli.command {
        Command::Controllers(args) => controllers(args, cancel_on_signals()).await,
        Command::Up(args) => match config(&args) {
            Ok(config) => up::run(config, up::stdout_lines(), cancel_on_signals()).await,
            Err(err) => Err(err),
        },
        command => objects(command).await,
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("irikit: {err:#}");
            ExitCode::from(2)
        }
    }
}
