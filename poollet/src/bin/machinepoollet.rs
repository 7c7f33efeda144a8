//! `machinepoollet`: announces a MachinePool and reconciles its Machines against an IRI
//! machine runtime, with state in an irikit store. SIGINT/SIGTERM stop it gracefully (a second
//! signal exits at once).

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use iri_spec::endpoint::RuntimeKind;
use poollet::{
    Config, MachinePoollet,
    cli::{self, LogFormat},
};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Announce a machine pool and reconcile its machines against an IRI machine runtime.
#[derive(Parser, Debug)]
#[command(name = "machinepoollet", version)]
struct Args {
    /// Name of the MachinePool to announce and serve.
    #[arg(long, env = "POOLLET_MACHINE_POOL_NAME")]
    machine_pool_name: String,
    /// `MachinePool.spec.providerID`.
    #[arg(long, env = "POOLLET_PROVIDER_ID")]
    provider_id: String,
    /// IRI endpoint (`unix:///path`); empty = discovery (env var, then well-known sockets).
    #[arg(long, env = "POOLLET_MACHINE_RUNTIME_ENDPOINT", default_value = "")]
    machine_runtime_endpoint: String,
    /// How long to wait for a discovered runtime socket.
    #[arg(long, env = "POOLLET_MACHINE_RUNTIME_SOCKET_DISCOVERY_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    machine_runtime_socket_discovery_timeout: Duration,
    /// Store: `memory` or `etcd://host:port[,host:port]`.
    #[arg(long, env = "POOLLET_STORE", default_value = "memory")]
    store: String,
    /// Value of the `topology.ironcore.dev/region` pool label.
    #[arg(long, env = "POOLLET_TOPOLOGY_REGION_LABEL", default_value = "")]
    topology_region_label: String,
    /// Value of the `topology.ironcore.dev/zone` pool label.
    #[arg(long, env = "POOLLET_TOPOLOGY_ZONE_LABEL", default_value = "")]
    topology_zone_label: String,
    /// Interval of the runtime Status heartbeat (also refreshes classes and capacity).
    #[arg(long, env = "POOLLET_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// `leaseDurationSeconds` of the pool Lease renewed with every heartbeat.
    #[arg(long, env = "POOLLET_HEARTBEAT_LEASE_DURATION", default_value = "40s", value_parser = humantime::parse_duration)]
    heartbeat_lease_duration: Duration,
    /// Interval of the runtime event mapper (ListEvents → Events on Machines).
    #[arg(long, env = "POOLLET_EVENT_RESYNC_PERIOD", default_value = "1m", value_parser = humantime::parse_duration)]
    event_resync_period: Duration,
    /// Timeout of one heartbeat Status probe and of every other runtime call.
    #[arg(long, env = "POOLLET_HEARTBEAT_STATUS_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat_status_timeout: Duration,
    /// Interval of the unfiltered runtime relist.
    #[arg(long, env = "POOLLET_RELIST_PERIOD", default_value = "5s", value_parser = humantime::parse_duration)]
    relist_period: Duration,
    /// Machine reconciles in flight at once.
    #[arg(long, env = "POOLLET_MAX_CONCURRENT_RECONCILES", default_value_t = 1)]
    max_concurrent_reconciles: usize,
    /// Serve the machine exec endpoint (`/apis/compute.ironcore.dev/namespaces/<ns>/machines/
    /// <name>/exec`, proxied to the runtime's Exec console) on this address, e.g.
    /// `127.0.0.1:20250` (port 0: any free port, logged). Off when not given.
    #[arg(long, env = "POOLLET_EXEC_LISTEN")]
    exec_listen: Option<std::net::SocketAddr>,
    /// Log format.
    #[arg(long, env = "POOLLET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config::new(args.machine_pool_name.clone(), args.provider_id.clone());
    config
        .pool
        .topology_region
        .clone_from(&args.topology_region_label);
    config
        .pool
        .topology_zone
        .clone_from(&args.topology_zone_label);
    config.pool.heartbeat_interval = args.heartbeat_interval;
    config.pool.status_timeout = args.heartbeat_status_timeout;
    config.machine.rpc_timeout = args.heartbeat_status_timeout;
    config.relist_period = args.relist_period;
    config.pool.lease_duration = args.heartbeat_lease_duration;
    config.event_resync_period = args.event_resync_period;
    config.max_concurrent_reconciles = args.max_concurrent_reconciles;
    if args.provider_id.is_empty() {
        anyhow::bail!("--provider-id must not be empty");
    }
    if args.relist_period.is_zero()
        || args.event_resync_period.is_zero()
        || args.max_concurrent_reconciles == 0
    {
        anyhow::bail!(
            "--relist-period, --event-resync-period and --max-concurrent-reconciles must be positive"
        );
    }
    config.pool.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = config(&args)?;
    let (store, channel) = cli::open(
        &args.store,
        RuntimeKind::Machine,
        &args.machine_runtime_endpoint,
        args.machine_runtime_socket_discovery_timeout,
    )
    .await?;
    let token = CancellationToken::new();
    if let Some(addr) = args.exec_listen {
        let exec = poollet::ExecServer::bind(addr, channel.clone(), config.machine.rpc_timeout)
            .await
            .with_context(|| format!("bind the exec server on {addr}"))?;
        tokio::spawn(exec.serve(token.clone()));
    }
    let poollet = MachinePoollet::new(store, channel, config).run(token.clone());
    cli::run_until_signal(poollet, token)
        .await
        .context("machinepoollet")
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
