//! `machine-broker`: serves an IRI MachineRuntime (and irikit's ReservationRuntime) whose
//! machines are Machines of a lower irikit control plane. With `--store etcd://…` the lower
//! plane runs elsewhere (`irikit controllers` and machinepoollets against the same etcd); with
//! `--store memory` the broker embeds one: a scheduler and a machinepoollet per in-process
//! iri-mock leaf. SIGINT/SIGTERM stop it gracefully; a second signal exits at once (130).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use irikit_bootstrap::LogFormat;
use machine_broker::{
    Broker, BrokerConfig,
    plane::{LeafConfig, LowerPlane, plane_config},
};
use tokio_util::sync::CancellationToken;

/// An IRI MachineRuntime over a lower irikit control plane.
#[derive(Debug, Parser)]
#[command(name = "machine-broker", version, about, long_about = None)]
struct Args {
    /// Unix socket to serve on (mode 0600).
    #[arg(
        long,
        env = "IRI_MACHINE_BROKER_SOCKET",
        default_value = "/var/run/iri-machinebroker.sock"
    )]
    socket: PathBuf,
    /// The lower plane's store: `memory` (an embedded lower plane over iri-mock leaves) or
    /// `etcd://host:port[,host:port]` (a lower plane running elsewhere).
    #[arg(long, env = "IRI_MACHINE_BROKER_STORE", default_value = "memory")]
    store: String,
    /// Lower namespace of the broker's objects.
    #[arg(long, env = "IRI_MACHINE_BROKER_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Equality selector on lower MachinePool labels (`k=v,k2=v2`): the pools aggregated in
    /// Status and the lower Machines' pool selector.
    #[arg(long, env = "IRI_MACHINE_BROKER_POOL_SELECTOR", default_value = "")]
    pool_selector: String,
    /// `runtime_name` of Version (the `<name>://` prefix of the upper machineID).
    #[arg(
        long,
        env = "IRI_MACHINE_BROKER_RUNTIME_NAME",
        default_value = "machinebroker"
    )]
    runtime_name: String,
    /// How long CreateReservation waits for the lower pools' decision before answering
    /// PENDING.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    reservation_decision_timeout: Duration,
    /// Do not reserve a machine in the lower plane for a CreateMachine that names no
    /// reservation (such a machine is then queued there even when no pool can host it).
    #[arg(long)]
    no_reserve_unreserved: bool,
    /// How many lower pools a reservation asks at once, most free first (0: all at once).
    #[arg(long, default_value_t = 1)]
    reservation_fanout: usize,
    /// Embedded lower plane: run its scheduler in reservation mode.
    #[arg(long)]
    lower_reservations: bool,
    /// Embedded lower plane (`--store memory`): the number of iri-mock leaf pools.
    #[arg(long, default_value_t = 2)]
    leaves: usize,
    /// Embedded lower plane: a leaf class `NAME:cpu=4,memory=16Gi[,quantity=10]`
    /// (repeatable; default: iri-mock's classes).
    #[arg(long = "leaf-class", value_name = "CLASS")]
    leaf_classes: Vec<String>,
    /// Embedded lower plane: each leaf's local storage in bytes (reservations' localStorage).
    #[arg(long, default_value_t = iri_mock::DEFAULT_LOCAL_STORAGE_BYTES)]
    leaf_local_storage_bytes: i64,
    /// Log format (logs go to stderr; RUST_LOG sets the filter, default info).
    #[arg(long, env = "IRI_MACHINE_BROKER_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

async fn run(args: Args, token: CancellationToken) -> anyhow::Result<()> {
    let pool_selector = irikit_api::meta::parse_selector(&args.pool_selector)
        .map_err(anyhow::Error::msg)
        .context("--pool-selector")?;
    let store = irikit_api::store::open(&args.store)
        .await
        .with_context(|| format!("opening the lower store {}", args.store))?;
    let embedded = if args.store.starts_with("memory") {
        let classes = if args.leaf_classes.is_empty() {
            iri_mock::classes::default_machine_classes()
        } else {
            args.leaf_classes
                .iter()
                .map(|c| iri_mock::classes::parse_machine_class_flag(c))
                .collect::<Result<_, _>>()
                .context("--leaf-class")?
        };
        let leaves: Vec<LeafConfig> = (0..args.leaves.max(1))
            .map(|i| LeafConfig {
                classes: classes.clone(),
                local_storage_bytes: args.leaf_local_storage_bytes,
                ..LeafConfig::new(format!("leaf-{i}"))
            })
            .collect();
        Some(
            LowerPlane::start(
                store.clone(),
                irikit_controlplane::PlaneConfig {
                    reservations: args
                        .lower_reservations
                        .then(scheduler::ReservationConfig::default),
                    ..plane_config()
                },
                &leaves,
            )
            .await
            .context("starting the embedded lower plane")?,
        )
    } else {
        None
    };
    let broker = Broker::new(
        store,
        BrokerConfig {
            namespace: args.namespace,
            pool_selector,
            runtime_name: args.runtime_name,
            reservation_decision_timeout: args.reservation_decision_timeout,
            reserve_unreserved: !args.no_reserve_unreserved,
            reservation_fanout: args.reservation_fanout,
        },
    );
    let res = machine_broker::serve(broker, &args.socket, token).await;
    if let Some(lower) = embedded {
        lower.shutdown(Duration::from_secs(20)).await;
    }
    res
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    irikit_bootstrap::init_tracing(LogFormat::from_flag(&args.log_format), "info");
    let token = irikit_bootstrap::cancel_on_signals(
        || {},
        || eprintln!("machine-broker: interrupted twice: exiting at once"),
    );
    match run(args, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("machine-broker: {err:#}");
            ExitCode::from(2)
        }
    }
}
