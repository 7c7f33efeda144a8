//! `irikit-scheduler`: runs the machine and the volume scheduler against a store until
//! SIGINT/SIGTERM (a second signal exits at once).

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use irikit_api::{Store, store};
use irikit_bootstrap::{LogFormat, Signals};
use scheduler::{Config, ReservationConfig, VolumeScheduler};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, info};

/// Run IronCore-style machine and volume schedulers against an irikit store.
#[derive(Parser, Debug)]
#[command(name = "irikit-scheduler", version, about)]
struct Args {
    /// Store: `memory` or `etcd://host:port[,host:port]`.
    #[arg(long, env = "IRIKIT_STORE", default_value = "memory")]
    store: String,
    /// Store writes (each a batch of binds) in flight per scheduler.
    #[arg(long, env = "IRIKIT_SCHEDULER_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Most binds per store write (one etcd Txn), at most 64.
    #[arg(long, env = "IRIKIT_SCHEDULER_BATCH", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    batch: u16,
    /// Machine scheduler in reservation mode (IEP-11): a Reservation per unbound Machine,
    /// bind only where a pool accepted it; pools without reservations are the best-effort
    /// fallback.
    #[arg(long, env = "IRIKIT_SCHEDULER_RESERVATIONS")]
    reservations: bool,
    /// Reservation mode: how long to wait for the pools' answers before falling back.
    #[arg(long, env = "IRIKIT_SCHEDULER_RESERVATION_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    reservation_timeout: Duration,
    /// Reservation mode: how many pools a Machine's Reservation asks at once, most free
    /// first (0: every pool).
    #[arg(long, env = "IRIKIT_SCHEDULER_RESERVATION_FANOUT", default_value_t = 0)]
    reservation_fanout: usize,
    /// YAML files applied to the store at start (for `--store memory`).
    #[arg(long, env = "IRIKIT_SCHEDULER_PRELOAD")]
    preload: Vec<PathBuf>,
    /// Log format.
    #[arg(long, env = "IRIKIT_LOG_FORMAT", value_parser = LogFormat::plain_parser(), default_value = "text")]
    log_format: LogFormat,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = store::open(&args.store)
        .await
        .with_context(|| format!("open store {}", args.store))?;
    for file in &args.preload {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        for obj in irikit_api::parse_yaml_documents(&text)
            .with_context(|| format!("parse {}", file.display()))?
        {
            store.create(obj).await.context("preload")?;
        }
    }
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let config = Config {
        concurrency: args.concurrency,
        batch: usize::from(args.batch),
        ..Config::default()
    };
    let reservations = args.reservations.then(|| ReservationConfig {
        timeout: args.reservation_timeout,
        fanout: args.reservation_fanout,
        ..ReservationConfig::default()
    });
    let machines = scheduler::run_machine_scheduler(
        store.clone(),
        config.clone(),
        reservations,
        cancel.clone(),
    );
    let volumes = VolumeScheduler::new(store.clone(), config);
    for (name, fut) in [
        (
            "machine-scheduler",
            Box::pin(machines) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
        ),
        ("volume-scheduler", Box::pin(volumes.run(cancel.clone()))),
    ] {
        tracker.spawn(async move {
            if let Err(err) = fut.await {
                error!(component = name, error = %format!("{err:#}"), "scheduler stopped");
            }
        });
    }
    tracker.close();
    let mut signals = Signals::register();
    info!(store = %args.store, reservations = args.reservations, "schedulers running");
    signals.next().await;
    info!("shutting down (send the signal again to exit at once)");
    cancel.cancel();
    signals.drain(tracker.wait(), Duration::from_secs(30)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    irikit_bootstrap::init_tracing(args.log_format, "info");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
