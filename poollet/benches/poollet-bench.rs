//! `poollet-bench`: the machinepoollet against the in-process iri-mock.
//!
//! (a) **Rollout latency**: 1,000 Machines bound to the pool are applied at once; for each, the
//! time from its creation to its `Running` status (observed generation current, machineID set)
//! as seen through a store watch. p50/p99 in memory and on etcd (a throw-away etcd started as
//! the tests do). Same-run baseline: the store's own create → watch-event latency for the same
//! 1,000 creates, with the ratio.
//!
//! (b) **Idle CPU**: 10,000 Running machines, nothing changing; the process's CPU time
//! (`/proc/self/stat` utime+stime) over a window divided by the wall time, with the relist
//! period stated. The process holds the mock and the store too, so the baseline is the CPU
//! of the same number of raw unfiltered `ListMachines` calls of 10,000 machines (what the
//! relist alone costs both sides), with the ratio.
//!
//! The mock serves from a tokio runtime of its own (one worker thread), as a runtime process
//! would: on one shared runtime, tokio keeps a request/response ping-pong on the worker that
//! woke it (the LIFO slot), so the poollet and the mock would take turns on one core instead
//! of running side by side. `--shared-runtime` measures that setup too.
//!
//! Run: `cargo bench -p poollet --bench poollet-bench [--features etcd] -- [--machines N]
//! [--idle-machines N] [--idle-window 10s] [--relist-period 5s] [--backend memory|etcd]
//! [--shared-runtime]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use iri_mock::{Method, MockRuntime};
use iri_spec::machine::v1alpha1::{self as machine, machine_runtime_client::MachineRuntimeClient};
use irikit_api::{
    Kind, Resource, Store, StoreExt,
    compute::{Machine, MachineClass, MachinePool},
    meta::{LocalObjectReference, ObjectMeta, condition_status},
    store::memory::MemoryStore,
};
use poollet::{Config, MachinePoollet};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const POOL: &str = "bench-pool";
const NS: &str = "default";

/// Benchmark the machinepoollet against the in-process iri-mock.
#[derive(Parser, Debug)]
#[command(name = "poollet-bench")]
struct Args {
    /// Machines applied at once in the rollout run.
    #[arg(long, default_value_t = 1000)]
    machines: usize,
    /// Machines in the idle-CPU run (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    idle_machines: usize,
    /// Measurement window of the idle-CPU run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_window: Duration,
    /// Relist period of the poollet (IronCore's default is 5 s).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    relist_period: Duration,
    /// Machine reconciles in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Only this backend (`memory` or `etcd`).
    #[arg(long)]
    backend: Option<String>,
    /// Where etcd keeps its data (default: temp dir).
    #[arg(long)]
    etcd_data_dir: Option<std::path::PathBuf>,
    /// Serve the mock from the poollet's own tokio runtime instead of a runtime of its own.
    #[arg(long)]
    shared_runtime: bool,
    /// Skip the warm rollout (a second rollout after the first one's machines were deleted).
    #[arg(long)]
    no_warm: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn config(args: &Args) -> Config {
    let mut config = Config::new(POOL, "ironcore://bench");
    config.max_concurrent_reconciles = args.concurrency;
    config.relist_period = args.relist_period;
    config
}

fn new_machine(name: String, pool: &str) -> Machine {
    let mut m = Machine {
        metadata: ObjectMeta::namespaced(NS, name),
        ..Machine::default()
    };
    m.spec.machine_class_ref = LocalObjectReference::new("x3-small");
    m.spec.machine_pool_ref = Some(LocalObjectReference::new(pool));
    m
}

fn is_running(m: &Machine) -> bool {
    m.status.state == "Running"
        && !m.status.machine_id.is_empty()
        && m.status.observed_generation == m.metadata.generation
}

struct Running {
    poollet: tokio::task::JoinHandle<poollet::Result<()>>,
    token: CancellationToken,
    mock: MockRuntime,
    /// The mock's own runtime (unless `--shared-runtime`).
    mock_runtime: Option<tokio::runtime::Runtime>,
}

impl Running {
    async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        self.poollet.await??;
        drop(self.mock);
        if let Some(rt) = self.mock_runtime {
            rt.shutdown_background();
        }
        Ok(())
    }
}

/// Seeds the class, starts the poollet and waits for its pool to be Ready.
async fn start(store: &Arc<dyn Store>, args: &Args) -> anyhow::Result<Running> {
    let builder = MockRuntime::builder()
        .runtime_name("iri-mock")
        .machine_classes([iri_mock::classes::MachineClassConfig {
            quantity: 1_000_000,
            ..iri_mock::classes::MachineClassConfig::new("x3-small", 2, 8 << 30)
        }]);
    let (mock, mock_runtime) = if args.shared_runtime {
        (builder.start_in_process().await?, None)
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("iri-mock")
            .enable_all()
            .build()?;
        let mock = rt.spawn(builder.start_in_process()).await??;
        (mock, Some(rt))
    };
    store
        .create_typed(MachineClass {
            metadata: ObjectMeta::named("x3-small"),
            capabilities: [
                ("cpu".to_string(), "2".parse()?),
                ("memory".to_string(), "8Gi".parse()?),
            ]
            .into(),
            ..MachineClass::default()
        })
        .await?;
    let token = CancellationToken::new();
    let poollet = tokio::spawn(
        MachinePoollet::new(store.clone(), mock.machine_channel(), config(args)).run(token.clone()),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(pool) = store.get_typed::<MachinePool>("", POOL).await
            && condition_status(&pool.status.conditions, "Ready") == Some("True")
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the pool did not become Ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Running {
        poollet,
        token,
        mock,
        mock_runtime,
    })
}

/// Creates `n` machines at once (64 in flight) and returns, per machine, the latency from its
/// creation to the first watch event matching `done`.
async fn apply_and_observe(
    store: &Arc<dyn Store>,
    prefix: &str,
    pool: &str,
    n: usize,
    done: fn(&Machine) -> bool,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let observed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let revision = store.revision().await?;
    let mut watch = store.watch(Some(Kind::Machine), revision).await?;
    let (all_seen_tx, all_seen) = tokio::sync::oneshot::channel();
    let watcher = {
        let observed = observed.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut tx = Some(all_seen_tx);
            while let Some(Ok(event)) = watch.next().await {
                let at = Instant::now();
                let Some(m) = Machine::from_object(event.object) else {
                    continue;
                };
                if !m.metadata.name.starts_with(&prefix) || !done(&m) {
                    continue;
                }
                let mut observed = observed.lock().unwrap();
                observed.entry(m.metadata.name).or_insert(at);
                if observed.len() == n
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        })
    };
    let started = Instant::now();
    futures::stream::iter((0..n).map(|i| format!("{prefix}{i:05}")))
        .map(|name| {
            let store = store.clone();
            let created = created.clone();
            async move {
                let at = Instant::now();
                created.lock().unwrap().insert(name.clone(), at);
                store.create_typed(new_machine(name, pool)).await.map(drop)
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    tokio::time::timeout(Duration::from_secs(300), all_seen)
        .await
        .context("not every machine was observed within 300 s")??;
    let total = started.elapsed();
    watcher.abort();
    let created = created.lock().unwrap();
    let observed = observed.lock().unwrap();
    let mut latencies: Vec<Duration> = observed
        .iter()
        .map(|(name, at)| at.duration_since(created[name]))
        .collect();
    latencies.sort();
    Ok((latencies, total))
}

fn any_event(_: &Machine) -> bool {
    true
}

/// Deletes the Machines named `prefix*` and waits until the poollet has finalized them all
/// (runtime machines deleted, finalizers removed, objects gone).
async fn delete_all(store: &Arc<dyn Store>, prefix: &str) -> anyhow::Result<()> {
    let (machines, _) = store
        .list_typed::<Machine>(&irikit_api::ListOptions::all())
        .await?;
    let names: Vec<String> = machines
        .into_iter()
        .map(|m| m.metadata.name)
        .filter(|n| n.starts_with(prefix))
        .collect();
    futures::stream::iter(names)
        .map(|name| {
            let store = store.clone();
            async move { store.delete(Kind::Machine, NS, &name, None).await.map(drop) }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (left, _) = store
            .list_typed::<Machine>(&irikit_api::ListOptions::all())
            .await?;
        if !left.iter().any(|m| m.metadata.name.starts_with(prefix)) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the {prefix}* machines were not finalized within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rollout run (a) on one store: baseline first, then the poollet: a cold rollout (the first
/// in this process) and, unless `--no-warm`, a warm one after the cold one's machines were
/// deleted (a poollet that has run before: its maps and the allocator's pages exist already).
async fn rollout(
    out: &mut impl Write,
    store: Arc<dyn Store>,
    args: &Args,
    goal: Duration,
    failures: &mut Vec<String>,
    label: &str,
) -> anyhow::Result<()> {
    // Baseline: the same creates without a poollet, observed through the same watch (the
    // Machines are bound to another pool so the poollet later ignores them).
    let (base, _) =
        apply_and_observe(&store, "base-", "other-pool", args.machines, any_event).await?;
    let running = start(&store, args).await?;
    let (b50, b99) = (percentile(&base, 0.50), percentile(&base, 0.99));
    let rounds: &[(&str, &str)] = if args.no_warm {
        &[("cold", "vm-")]
    } else {
        &[("cold", "cold-"), ("warm", "vm-")]
    };
    for (i, (round, prefix)) in rounds.iter().enumerate() {
        if i > 0 {
            delete_all(&store, rounds[i - 1].1).await?;
        }
        // Counted per method before and after (the call log is not copied).
        let counts = || -> Vec<usize> {
            Method::ALL
                .iter()
                .map(|m| running.mock.call_count(*m))
                .collect()
        };
        let before = counts();
        let (lat, total) =
            apply_and_observe(&store, prefix, POOL, args.machines, is_running).await?;
        let by_method: std::collections::BTreeMap<&str, usize> = Method::ALL
            .iter()
            .zip(counts().iter().zip(&before))
            .filter(|(_, (after, before))| after > before)
            .map(|(m, (after, before))| (m.rpc(), after - before))
            .collect();
        eprintln!("  runtime calls during the {round} rollout: {by_method:?}");
        let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
        writeln!(
            out,
            "{label} ({round}): {} machines at once, create -> Running (store watch): p50 \
             {p50:.1?} p99 {p99:.1?} (all Running after {total:.1?}); baseline create -> watch \
             event: p50 {b50:.1?} p99 {b99:.1?}; ratio p99 {:.1}x; goal p99 <= {goal:?}",
            args.machines,
            p99.as_secs_f64() / b99.as_secs_f64().max(1e-9),
        )?;
        if p99 > goal {
            failures.push(format!(
                "{label} ({round}): p99 {p99:.1?} above the goal {goal:?}"
            ));
        }
    }
    running.stop().await
}

/// utime + stime of this process from `/proc/self/stat`.
fn process_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?))
        .context("no utime/stime in /proc/self/stat")?;
    // USER_HZ is 100 on Linux (the kernel ABI fixes it for /proc).
    Ok(Duration::from_millis(ticks * 10))
}

/// Idle run (b) in memory.
async fn idle(out: &mut impl Write, args: &Args) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let running = start(&store, args).await?;
    let (_, total) =
        apply_and_observe(&store, "idle-", POOL, args.idle_machines, is_running).await?;
    // Let the converging requeues and the first relist after the rollout pass.
    tokio::time::sleep(args.relist_period * 2).await;
    let cpu0 = process_cpu()?;
    let wall0 = Instant::now();
    tokio::time::sleep(args.idle_window).await;
    let cpu = process_cpu()? - cpu0;
    let wall = wall0.elapsed();
    let relists = (wall.as_secs_f64() / args.relist_period.as_secs_f64()).max(1.0);

    // Baseline: the same number of raw unfiltered ListMachines of all machines.
    let mut client = MachineRuntimeClient::new(running.mock.machine_channel())
        .max_decoding_message_size(256 << 20);
    let n_calls = relists.round() as usize;
    let base0 = process_cpu()?;
    let base_wall0 = Instant::now();
    let mut listed = 0;
    for _ in 0..n_calls {
        listed = client
            .list_machines(machine::ListMachinesRequest { filter: None })
            .await?
            .into_inner()
            .machines
            .len();
    }
    let base_wall = base_wall0.elapsed();
    let base = process_cpu()? - base0;
    writeln!(
        out,
        "idle: {} Running machines (rollout {total:.1?}), relist every {:?}, machine resync every \
         {:?}: CPU {cpu:.2?} over {wall:.1?} = {:.2}% of one core; baseline {n_calls} raw \
         ListMachines of {listed} machines: CPU {base:.2?} (wall {base_wall:.1?}) = {:.2}% over \
         the same window; ratio {:.1}x",
        args.idle_machines,
        args.relist_period,
        config(args).machine.resync,
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        100.0 * base.as_secs_f64() / wall.as_secs_f64(),
        cpu.as_secs_f64() / base.as_secs_f64().max(0.01),
    )?;
    running.stop().await
}

#[cfg(feature = "etcd")]
async fn rollout_etcd(
    out: &mut impl Write,
    args: &Args,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    use irikit_api::store::etcd::LocalEtcd;
    if LocalEtcd::binary().is_none() {
        writeln!(out, "etcd: skip: etcd not on PATH")?;
        return Ok(());
    }
    let etcd = LocalEtcd::start(args.etcd_data_dir.as_deref()).await?;
    let store: Arc<dyn Store> = Arc::new(etcd.store("/irikit").await?);
    rollout(out, store, args, Duration::from_secs(1), failures, "etcd").await
}

#[cfg(not(feature = "etcd"))]
async fn rollout_etcd(
    out: &mut impl Write,
    _args: &Args,
    _failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "etcd: skip: built without the `etcd` feature (cargo bench -p poollet --features etcd --bench poollet-bench)"
    )?;
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<Vec<String>> {
    let mut out = std::io::stdout().lock();
    let mut failures = Vec::new();
    let wants = |backend: &str| args.backend.as_deref().is_none_or(|b| b == backend);
    writeln!(
        out,
        "poollet-bench: machinepoollet (max {} reconciles) against the in-process iri-mock, the \
         mock on {}",
        args.concurrency,
        if args.shared_runtime {
            "the poollet's tokio runtime (--shared-runtime)"
        } else {
            "a tokio runtime of its own (one worker thread)"
        }
    )?;
    if wants("memory") {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        rollout(
            &mut out,
            store,
            &args,
            Duration::from_millis(100),
            &mut failures,
            "memory",
        )
        .await?;
    }
    if wants("etcd") {
        rollout_etcd(&mut out, &args, &mut failures).await?;
    }
    if wants("memory") && args.idle_machines > 0 {
        idle(&mut out, &args).await?;
    }
    Ok(failures)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    irikit_bootstrap::init_tracing(irikit_bootstrap::LogFormat::Text, "warn");
    match run(args).await {
        Ok(failures) if failures.is_empty() => std::process::ExitCode::SUCCESS,
        Ok(failures) => {
            for failure in failures {
                eprintln!("goal missed: {failure}");
            }
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
