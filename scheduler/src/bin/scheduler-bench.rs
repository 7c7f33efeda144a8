//! `scheduler-bench`: scheduler_perf-style throughput runs of the machine scheduler, from
//! workloads in YAML (`scheduler/bench/workloads.yaml`). Prints binds/s, per-bind latency p50
//! and p99, the cost per bind as the pool count grows, and — on etcd — the raw etcd put
//! throughput measured in the same run, with the ratio.

use std::{
    io::Write,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use irikit_api::{
    Kind, ListOptions, Object, Resource, Store,
    compute::{Machine, MachinePool},
    meta::{Condition, LocalObjectReference, ObjectMeta},
    store::memory::MemoryStore,
};
use scheduler::{Config, MachineScheduler};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Run scheduler throughput workloads.
#[derive(Parser, Debug)]
#[command(name = "scheduler-bench", version, about)]
struct Args {
    /// Workload file.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/workloads.yaml"))]
    workloads: PathBuf,
    /// Only workloads whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Only this backend (`memory` or `etcd`).
    #[arg(long)]
    backend: Option<String>,
    /// Override the workload file's bind concurrency.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Most binds per store write (one etcd Txn); default: the scheduler's default.
    #[arg(long)]
    batch: Option<usize>,
    /// Where etcd keeps its data (a tmpfs such as /dev/shm is fastest); default: temp dir.
    #[arg(long)]
    etcd_data_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    workloads: Vec<Workload>,
    concurrency: usize,
    memory_concurrency: usize,
    /// Binds per store write on etcd (default: the scheduler's default).
    #[serde(default)]
    batch: Option<usize>,
    /// Binds per store write in memory (default 1: no round trip to save).
    #[serde(default)]
    memory_batch: Option<usize>,
    thresholds: Thresholds,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Thresholds {
    memory_binds_per_second5000_pools: f64,
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    etcd_ratio_to_raw_puts: f64,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Workload {
    name: String,
    pools: usize,
    machines: usize,
    capacity_per_pool: i64,
    backends: Vec<String>,
}

struct Outcome {
    binds_per_s: f64,
    us_per_bind: f64,
    p50_us: u64,
    p99_us: u64,
}

fn pool(i: usize, capacity: i64) -> Object {
    let mut pool = MachinePool {
        metadata: ObjectMeta::named(format!("pool-{i:05}")),
        ..Default::default()
    };
    pool.spec.provider_id = format!("bench://pool-{i:05}");
    pool.status.state = "Ready".into();
    pool.status.conditions = vec![Condition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: "HeartbeatReceived".into(),
        ..Default::default()
    }];
    pool.status.available_machine_classes = vec![LocalObjectReference::new("small")];
    let qty = capacity.to_string().parse().unwrap_or_default();
    pool.status
        .capacity
        .insert("class/machine.small".into(), qty);
    pool.status
        .allocatable
        .insert("class/machine.small".into(), qty);
    pool.into_object()
}

fn machine(i: usize) -> Object {
    let mut m = Machine {
        metadata: ObjectMeta::namespaced("bench", format!("machine-{i:06}")),
        ..Default::default()
    };
    m.metadata.labels.insert("app".into(), "bench".into());
    m.spec.machine_class_ref = LocalObjectReference::new("small");
    m.into_object()
}

async fn create_all(
    store: &Arc<dyn Store>,
    objects: Vec<Object>,
    concurrency: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(objects.into_iter().map(|obj| {
        let store = store.clone();
        async move { store.create(obj).await.map(|_| ()) }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<()>()
    .await
    .context("create objects")
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Creates the workload's pools, then its machines (not measured).
async fn setup_workload(
    out: &mut impl Write,
    store: &Arc<dyn Store>,
    w: &Workload,
    concurrency: usize,
) -> anyhow::Result<()> {
    let setup = Instant::now();
    create_all(
        store,
        (0..w.pools).map(|i| pool(i, w.capacity_per_pool)).collect(),
        concurrency,
    )
    .await?;
    create_all(store, (0..w.machines).map(machine).collect(), concurrency).await?;
    writeln!(
        out,
        "  setup: {} pools + {} machines created in {:.2?}",
        w.pools,
        w.machines,
        setup.elapsed()
    )?;
    Ok(())
}

/// Runs the scheduler on the set-up workload until every machine is bound.
async fn run_workload(
    out: &mut impl Write,
    store: Arc<dyn Store>,
    w: &Workload,
    concurrency: usize,
    batch: usize,
) -> anyhow::Result<Outcome> {
    let cancel = CancellationToken::new();
    let sched = MachineScheduler::new(
        store.clone(),
        Config {
            concurrency,
            batch,
            emit_events: false,
        },
    );
    let stats = sched.stats();
    let start = Instant::now();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { sched.run(cancel).await }
    });
    let deadline = start + Duration::from_secs(900);
    while stats.binds.load(Ordering::Relaxed) < w.machines as u64 {
        if Instant::now() > deadline {
            bail!(
                "timed out: {} of {} bound",
                stats.binds.load(Ordering::Relaxed),
                w.machines
            );
        }
        // A benchmark driver polling a counter; not a synchronisation in a test.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    cancel.cancel();
    task.await.context("join scheduler")?.context("scheduler")?;

    // Sanity: nothing overcommitted, everything bound.
    let list = store
        .list(Kind::Machine, &ListOptions::all().in_namespace("bench"))
        .await?;
    let mut per_pool = std::collections::HashMap::<String, i64>::new();
    for obj in &list.items {
        if let Some(pool) = obj
            .field("spec.machinePoolRef.name")
            .filter(|p| !p.is_empty())
        {
            *per_pool.entry(pool.to_string()).or_default() += 1;
        }
    }
    let bound: i64 = per_pool.values().sum();
    let max = per_pool.values().copied().max().unwrap_or(0);
    if bound != w.machines as i64 || max > w.capacity_per_pool {
        bail!(
            "bad result: {bound} bound, max {max} per pool (capacity {})",
            w.capacity_per_pool
        );
    }
    let mut lat = stats
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let binds = w.machines as f64;
    let sync = Duration::from_micros(stats.sync_us.load(Ordering::Relaxed));
    // Throughput of the scheduling phase (after the initial list/watch), as scheduler_perf
    // measures after its init ops; the sync time is printed too.
    let secs = elapsed.saturating_sub(sync).as_secs_f64().max(1e-9);
    let outcome = Outcome {
        binds_per_s: binds / secs,
        us_per_bind: secs * 1e6 / binds,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
    };
    writeln!(
        out,
        "  initial sync (list {} pools + {} machines, open watch): {sync:.2?}; total wall {elapsed:.2?}\n  SchedulingThroughput: {:.0} binds/s ({} binds in {:.2?}, {:.1} us/bind); per-bind latency p50 {} us, p99 {} us; conflicts {}, resyncs {}; max {} machines/pool (capacity {})",
        w.pools,
        w.machines,
        outcome.binds_per_s,
        w.machines,
        elapsed.saturating_sub(sync),
        outcome.us_per_bind,
        outcome.p50_us,
        outcome.p99_us,
        stats.conflicts.load(Ordering::Relaxed),
        stats.resyncs.load(Ordering::Relaxed),
        max,
        w.capacity_per_pool
    )?;
    Ok(outcome)
}

/// What the raw baseline writes, `n` times with `concurrency` in flight.
#[cfg(feature = "etcd")]
#[derive(Clone, Copy)]
enum Raw {
    /// Plain puts of a machine-sized value.
    Puts,
    /// One-key Txns (compare create_revision = 0, put the same value): what a single
    /// conditional write costs on this etcd, next to the plain puts.
    Txns,
}

/// Raw etcd writes per second, under `/raw/<tag>/`.
#[cfg(feature = "etcd")]
async fn raw(
    store: &irikit_api::store::etcd::EtcdStore,
    what: Raw,
    tag: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let value = serde_json::to_vec(&machine(0).to_json())?;
    let client = store.client().clone();
    let start = Instant::now();
    futures::stream::iter((0..n).map(|i| {
        let mut kv = client.kv_client();
        let key = format!("/raw/{tag}/{i:06}");
        let value = value.clone();
        async move {
            match what {
                Raw::Puts => kv.put(key, value, None).await.map(|_| ()),
                Raw::Txns => {
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key, value, None)]);
                    kv.txn(txn).await.map(|_| ())
                }
            }
        }
    }))
    .buffer_unordered(concurrency)
    .try_collect::<()>()
    .await
    .context("raw etcd writes")?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.workloads)
        .with_context(|| format!("read {}", args.workloads.display()))?;
    let mut file: File = serde_yaml::from_str(&text).context("parse workloads")?;
    if let Some(c) = args.concurrency {
        file.concurrency = c;
        file.memory_concurrency = c;
    }
    let memory_batch = args.batch.or(file.memory_batch).unwrap_or(1);
    let mut out = std::io::stdout().lock();
    let mut memory_results: Vec<(usize, Outcome)> = Vec::new();
    let mut failures = Vec::new();
    for w in &file.workloads {
        if args
            .filter
            .as_ref()
            .is_some_and(|f| !w.name.contains(f.as_str()))
        {
            continue;
        }
        for backend in &w.backends {
            if args.backend.as_ref().is_some_and(|b| b != backend) {
                continue;
            }
            writeln!(out, "== {} [{backend}]", w.name)?;
            match backend.as_str() {
                "memory" => {
                    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
                    setup_workload(&mut out, &store, w, file.memory_concurrency).await?;
                    let res =
                        run_workload(&mut out, store, w, file.memory_concurrency, memory_batch)
                            .await?;
                    if w.pools == 5000
                        && res.binds_per_s < file.thresholds.memory_binds_per_second5000_pools
                    {
                        failures.push(format!(
                            "expected SchedulingThroughput at 5000 pools in memory to be higher: got {:.0}, want {}",
                            res.binds_per_s, file.thresholds.memory_binds_per_second5000_pools
                        ));
                    }
                    memory_results.push((w.pools, res));
                }
                "etcd" => run_etcd(&mut out, &args, w, &file, &mut failures).await?,
                other => bail!("unknown backend {other:?}"),
            }
        }
    }
    if memory_results.len() > 1 {
        memory_results.sort_by_key(|(pools, _)| *pools);
        let base = memory_results[0].1.us_per_bind;
        writeln!(out, "== cost growth with pool count (memory)")?;
        for (pools, res) in &memory_results {
            writeln!(
                out,
                "  {pools:>6} pools: {:>7.1} us/bind ({:.2}x of {} pools), p99 {} us",
                res.us_per_bind,
                res.us_per_bind / base,
                memory_results[0].0,
                res.p99_us
            )?;
        }
    }
    if failures.is_empty() {
        writeln!(out, "== all thresholds met")?;
        Ok(())
    } else {
        for f in &failures {
            writeln!(out, "FAIL: {f}")?;
        }
        bail!("{} threshold(s) missed", failures.len())
    }
}

#[cfg(feature = "etcd")]
async fn run_etcd(
    out: &mut impl Write,
    args: &Args,
    w: &Workload,
    file: &File,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    use irikit_api::store::etcd::LocalEtcd;
    if LocalEtcd::binary().is_none() {
        writeln!(out, "  skip: etcd not on PATH")?;
        return Ok(());
    }
    let etcd = LocalEtcd::start(args.etcd_data_dir.as_deref()).await?;
    let raw_store = etcd.store("/raw-baseline").await?;
    let store: Arc<dyn Store> = Arc::new(etcd.store("/irikit").await?);
    setup_workload(out, &store, w, file.concurrency).await?;
    // The machine is shared: measure the baseline right before and right after the binds,
    // and compare with the mean.
    let n = w.machines / 2;
    let before = raw(&raw_store, Raw::Puts, "before", n, file.concurrency).await?;
    let txns = raw(&raw_store, Raw::Txns, "txn", n / 2, file.concurrency).await?;
    let batch = args.batch.or(file.batch).unwrap_or(Config::default().batch);
    let res = run_workload(out, store, w, file.concurrency, batch).await?;
    let after = raw(&raw_store, Raw::Puts, "after", n, file.concurrency).await?;
    let puts = (before + after) / 2.0;
    writeln!(
        out,
        "  raw etcd puts ({} in flight, machine-sized JSON): {before:.0} puts/s before, {after:.0} after, mean {puts:.0}",
        file.concurrency
    )?;
    writeln!(
        out,
        "  raw etcd one-key Txns (compare + put, {} in flight, before the binds): {txns:.0} txns/s ({:.2} x puts before)",
        file.concurrency,
        txns / before
    )?;
    let ratio = res.binds_per_s / puts;
    writeln!(
        out,
        "  ratio binds/s : raw puts/s = {ratio:.2} (a bind compares and writes the machine and the pool; up to {batch} binds per Txn)"
    )?;
    if ratio < file.thresholds.etcd_ratio_to_raw_puts {
        failures.push(format!(
            "expected etcd binds/s >= {} x raw puts: got {ratio:.2}",
            file.thresholds.etcd_ratio_to_raw_puts
        ));
    }
    Ok(())
}

#[cfg(not(feature = "etcd"))]
async fn run_etcd(
    out: &mut impl Write,
    _args: &Args,
    _w: &Workload,
    _file: &File,
    _failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "  skip: built without the `etcd` feature (cargo run --release -p scheduler --features etcd --bin scheduler-bench)"
    )?;
    Ok(())
}

// One thread: the in-memory store is synchronous, and cross-thread wake-ups for every bind
// would dominate; etcd round trips are pipelined on the same thread.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    irikit_bootstrap::init_tracing(irikit_bootstrap::LogFormat::Text, "warn");
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
