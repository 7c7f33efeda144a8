//! `reservation-bench`: IronCore IEP-11's experiment as a benchmark. The same Machines go
//! through a two-level hierarchy (an upper plane whose pools are machine brokers, each over a
//! lower plane of iri-mock leaves; fragmented free capacity, see `machine_broker::workload`)
//! once with best-effort scheduling and once with reservation mode at both levels, each on a
//! fresh hierarchy, in one run. It reports per mode the Machines bound where they could not
//! run (misplaced: stuck or failed), those left unbound, time to Running p50/p99 and binds
//! per second, and the throughput ratio (goal: 0 misplaced with reservations, reservation
//! throughput ≥ 0.5× best-effort).

use std::{io::Write as _, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use machine_broker::{
    BrokerConfig,
    plane::{Hierarchy, plane_config},
    workload::{self, Outcome},
};

/// Best-effort against reservation scheduling through a broker hierarchy.
#[derive(Debug, Parser)]
#[command(name = "reservation-bench", version, about, long_about = None)]
struct Args {
    /// Brokers whose big leaves can host Machines (one broker of small leaves comes on top).
    #[arg(long, default_value_t = 3)]
    hosting_brokers: usize,
    /// Big leaves per hosting broker (each hosts 2 Machines).
    #[arg(long, default_value_t = 4)]
    big_leaves: usize,
    /// Machines per mode (default: as many as the hierarchy can host).
    #[arg(long)]
    machines: Option<usize>,
    /// A run ends when nothing changed for this long (stuck Machines never change).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    settle: Duration,
    /// A run ends after this long in any case.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "180s")]
    deadline: Duration,
    /// Reservation mode: how long a scheduler waits for the asked pools' answers.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    reservation_timeout: Duration,
    /// Reservation mode: first retry delay after every pool rejected (doubles up to 1 s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10ms")]
    reservation_retry: Duration,
    /// Reservation mode: how many pools a Machine's Reservation asks at once, upper scheduler
    /// (0: every pool).
    #[arg(long, default_value_t = 1)]
    reservation_fanout: usize,
    /// How many lower pools a broker's reservation asks at once (0: every pool).
    #[arg(long, default_value_t = 1)]
    broker_fanout: usize,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    })
}

async fn one(
    args: &Args,
    name: &str,
    mode: Option<scheduler::ReservationConfig>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Outcome> {
    let (nodes, hostable) = workload::fragmented(args.hosting_brokers, args.big_leaves);
    let n = args.machines.unwrap_or(hostable);
    let config = irikit_controlplane::PlaneConfig {
        reservations: mode,
        ..plane_config()
    };
    let h = Hierarchy::start(
        &nodes,
        config.clone(),
        config,
        BrokerConfig {
            reservation_decision_timeout: Duration::from_secs(1),
            reservation_fanout: args.broker_fanout,
            ..BrokerConfig::default()
        },
    )
    .await
    .with_context(|| format!("starting the {name} hierarchy"))?;
    h.wait_announced(Duration::from_secs(60))
        .await
        .with_context(|| format!("{name}: pools"))?;
    let outcome = workload::run(&h, "default", n, args.settle, args.deadline).await?;
    let failures = h.upper().failures();
    h.shutdown(Duration::from_secs(20)).await;
    anyhow::ensure!(failures.is_empty(), "{name}: {failures:?}");
    let _ = writeln!(
        out,
        "{name:<12} machines={} running={} misplaced={} unbound={} ttb_p50={} ttb_p99={} ttr_p50={} ttr_p99={} binds/s={:.1} running/s={:.1} wall={:.1}s per_pool={:?}",
        outcome.machines,
        outcome.running,
        outcome.misplaced,
        outcome.unbound,
        ms(outcome.ttb_quantile(0.5)),
        ms(outcome.ttb_quantile(0.99)),
        ms(outcome.ttr_quantile(0.5)),
        ms(outcome.ttr_quantile(0.99)),
        outcome.binds_per_sec(),
        outcome.running_per_sec(),
        outcome.wall.as_secs_f64(),
        outcome.per_pool,
    );
    Ok(outcome)
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    let (nodes, hostable) = workload::fragmented(args.hosting_brokers, args.big_leaves);
    let _ = writeln!(
        out,
        "hierarchy: {} brokers ({} hosting, 1 of small leaves only), {} leaves; {} Machines of class {} with a {} GiB local disk; room for {hostable}",
        nodes.len(),
        args.hosting_brokers,
        nodes.iter().map(|n| n.leaves.len()).sum::<usize>(),
        args.machines.unwrap_or(hostable),
        workload::CLASS,
        workload::DISK_BYTES >> 30,
    );
    let best = one(&args, "best-effort", None, &mut out).await?;
    let reservation = Some(scheduler::ReservationConfig {
        timeout: args.reservation_timeout,
        retry: args.reservation_retry,
        max_retry: Duration::from_secs(1),
        fanout: args.reservation_fanout,
        ..scheduler::ReservationConfig::default()
    });
    let rsv = one(&args, "reservation", reservation, &mut out).await?;
    let ratio = if best.binds_per_sec() > 0.0 {
        rsv.binds_per_sec() / best.binds_per_sec()
    } else {
        0.0
    };
    let running_ratio = if best.running_per_sec() > 0.0 {
        rsv.running_per_sec() / best.running_per_sec()
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "ratio reservation/best-effort binds/s = {ratio:.2}, running/s = {running_ratio:.2}; misplaced best-effort={} reservation={}",
        best.misplaced, rsv.misplaced
    );
    let goal = rsv.misplaced == 0 && ratio >= 0.5;
    let _ = writeln!(
        out,
        "goal (0 misplaced with reservations, throughput >= 0.5x): {}",
        if goal { "met" } else { "NOT met" }
    );
    Ok(goal)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    irikit_bootstrap::init_tracing(irikit_bootstrap::LogFormat::Text, "error");
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("reservation-bench: {err:#}");
            ExitCode::from(2)
        }
    }
}
