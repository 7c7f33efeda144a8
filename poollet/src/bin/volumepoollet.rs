//! `volumepoollet`: announces a VolumePool and reconciles its Volumes and VolumeSnapshots
//! against an IRI volume runtime, with state in an irikit store. SIGINT/SIGTERM stop it
//! gracefully (a second signal exits at once).

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use iri_spec::endpoint::RuntimeKind;
use poollet::{
    VolumePoollet, VolumePoolletConfig,
    cli::{self, LogFormat},
};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Announce a volume pool and reconcile its volumes against an IRI volume runtime.
#[derive(Parser, Debug)]
#[command(name = "volumepoollet", version)]
struct Args {
    /// Name of the VolumePool to announce and serve.
    #[arg(long, env = "POOLLET_VOLUME_POOL_NAME")]
    volume_pool_name: String,
    /// `VolumePool.spec.providerID`.
    #[arg(long, env = "POOLLET_PROVIDER_ID")]
    provider_id: String,
    /// IRI endpoint (`unix:///path`); empty = discovery (env var, then well-known sockets).
    #[arg(long, env = "POOLLET_VOLUME_RUNTIME_ENDPOINT", default_value = "")]
    volume_runtime_endpoint: String,
    /// How long to wait for a discovered runtime socket.
    #[arg(long, env = "POOLLET_VOLUME_RUNTIME_DISCOVERY_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    volume_runtime_discovery_timeout: Duration,
    /// Store: `memory` or `etcd://host:port[,host:port]`.
    #[arg(long, env = "POOLLET_STORE", default_value = "memory")]
    store: String,
    /// Value of the `topology.ironcore.dev/region` pool label.
    #[arg(long, env = "POOLLET_TOPOLOGY_REGION_LABEL", default_value = "")]
    topology_region_label: String,
    /// Value of the `topology.ironcore.dev/zone` pool label.
    #[arg(long, env = "POOLLET_TOPOLOGY_ZONE_LABEL", default_value = "")]
    topology_zone_label: String,
    /// Interval of the runtime Status probe (classes and capacity).
    #[arg(long, env = "POOLLET_STATUS_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    status_interval: Duration,
    /// Timeout of one Status probe and of every other runtime call.
    #[arg(long, env = "POOLLET_STATUS_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    status_timeout: Duration,
    /// Timeout of CreateVolume and CreateVolumeSnapshot, which copy an image or a snapshot
    /// before they answer (a create abandoned in mid-copy starts over on the next try).
    #[arg(long, env = "POOLLET_CREATE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    create_timeout: Duration,
    /// Interval of the unfiltered runtime relist.
    #[arg(long, env = "POOLLET_RELIST_PERIOD", default_value = "5s", value_parser = humantime::parse_duration)]
    relist_period: Duration,
    /// Interval of the ListEvents → Event mapper.
    #[arg(long, env = "POOLLET_EVENT_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    event_interval: Duration,
    /// Reconciles in flight at once per controller.
    #[arg(long, env = "POOLLET_MAX_CONCURRENT_RECONCILES", default_value_t = 1)]
    max_concurrent_reconciles: usize,
    /// Controllers to run (comma list of `volume`, `volumesnapshot`).
    #[arg(
        long,
        env = "POOLLET_CONTROLLERS",
        value_delimiter = ',',
        default_value = "volume,volumesnapshot"
    )]
    controllers: Vec<String>,
    /// Log format.
    #[arg(long, env = "POOLLET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn config(args: &Args) -> anyhow::Result<VolumePoolletConfig> {
    let mut config =
        VolumePoolletConfig::new(args.volume_pool_name.clone(), args.provider_id.clone());
    config
        .pool
        .topology_region
        .clone_from(&args.topology_region_label);
    config
        .pool
        .topology_zone
        .clone_from(&args.topology_zone_label);
    config.pool.status_interval = args.status_interval;
    config.pool.status_timeout = args.status_timeout;
    config.volume.rpc_timeout = args.status_timeout;
    config.volume.create_timeout = args.create_timeout;
    config.relist_period = args.relist_period;
    config.event_interval = args.event_interval;
    config.max_concurrent_reconciles = args.max_concurrent_reconciles;
    config.volume_controller = false;
    config.snapshot_controller = false;
    for name in &args.controllers {
        match name.trim() {
            "volume" => config.volume_controller = true,
            "volumesnapshot" => config.snapshot_controller = true,
            other => anyhow::bail!(
                "--controllers: unknown controller {other:?} (want volume, volumesnapshot)"
            ),
        }
    }
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = config(&args)?;
    let (store, channel) = cli::open(
        &args.store,
        RuntimeKind::Volume,
        &args.volume_runtime_endpoint,
        args.volume_runtime_discovery_timeout,
    )
    .await?;
    let token = CancellationToken::new();
    let poollet = VolumePoollet::new(store, channel, config).run(token.clone());
    cli::run_until_signal(poollet, token)
        .await
        .context("volumepoollet")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_tracing(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
