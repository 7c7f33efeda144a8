//! `iri-conformance`: run the IRI conformance suite (or its benchmark) against a runtime's
//! sockets, or against the embedded iri-mock when no endpoint is given.
//!
//! Endpoint rule: `--machine-endpoint`/`--volume-endpoint`/`--bucket-endpoint` (or the IronCore
//! env vars `IRI_{MACHINE,VOLUME,BUCKET}_RUNTIME_ENDPOINT`) select the runtime; services without an
//! endpoint are skipped with a reason. With none given, `--discover` polls IronCore's well-known
//! sockets (`/var/run/iri-machinebroker.sock`, ...) like the Go tools; otherwise the embedded
//! iri-mock runs in-process. Exit status: 0 all selected cases passed (skips allowed unless
//! `--fail-on-skip`), 1 a case failed, 2 usage or setup error, 130 interrupted.

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use iri_conformance::{
    bench,
    case::{Level, Profile},
    cases,
    lifecycle::LifecycleConfig,
    report,
    runner::{self, LevelFilter, ProfileFilter, RunConfig, Selection, Targets},
};
use iri_spec::endpoint::RuntimeKind;
use regex::Regex;

use irikit_bootstrap::LogFormat;

/// Conformance suite and benchmark for IRI runtimes (IronCore machine/volume/bucket runtimes).
#[derive(Debug, Parser)]
#[command(name = "iri-conformance", version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `run` flags, accepted without the subcommand too.
    #[command(flatten)]
    run: RunArgs,
    /// Log format (logs go to stderr; RUST_LOG sets the filter, default `warn,poollet=error`).
    #[arg(
        long,
        env = "IRI_CONFORMANCE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the suite (the default when no subcommand is given).
    Run(Box<RunArgs>),
    /// List the cases with their ids and rules.
    List(ListArgs),
    /// Measure per-RPC latency (p50/p90/p99) and throughput.
    Bench(Box<BenchArgs>),
}

#[derive(Debug, Clone, Args)]
struct TargetArgs {
    /// MachineRuntime endpoint (unix:///path or a socket path).
    #[arg(long, env = "IRI_MACHINE_RUNTIME_ENDPOINT", value_name = "ENDPOINT")]
    machine_endpoint: Option<String>,
    /// VolumeRuntime endpoint.
    #[arg(long, env = "IRI_VOLUME_RUNTIME_ENDPOINT", value_name = "ENDPOINT")]
    volume_endpoint: Option<String>,
    /// BucketRuntime endpoint.
    #[arg(long, env = "IRI_BUCKET_RUNTIME_ENDPOINT", value_name = "ENDPOINT")]
    bucket_endpoint: Option<String>,
    /// With no endpoint given: find IronCore's well-known sockets instead of using the embedded mock.
    #[arg(long, env = "IRI_CONFORMANCE_DISCOVER")]
    discover: bool,
    /// How long --discover polls for the well-known sockets.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    discover_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
struct SelectArgs {
    /// Run only cases whose id matches this regex (repeatable: any match).
    #[arg(long, short = 'f', value_name = "REGEX")]
    focus: Vec<Regex>,
    /// Skip cases whose id matches this regex (repeatable).
    #[arg(long, short = 's', value_name = "REGEX")]
    skip: Vec<Regex>,
    /// Which profile.
    #[arg(
        long,
        value_enum,
        default_value = "all",
        env = "IRI_CONFORMANCE_PROFILE"
    )]
    profile: ProfileFilter,
    /// Which level: `rpc` (the runtime alone), `lifecycle` (irikit's store, schedulers and
    /// poollet drive the runtime) or both.
    #[arg(long, value_enum, default_value = "all", env = "IRI_CONFORMANCE_LEVEL")]
    level: LevelFilter,
}

impl SelectArgs {
    fn selection(&self) -> Selection {
        Selection {
            focus: self.focus.clone(),
            skip: self.skip.clone(),
            profile: self.profile,
            level: self.level,
        }
    }
}

#[derive(Debug, Clone, Args)]
struct ParamArgs {
    /// Machine class for created machines (default: the first class Status reports).
    #[arg(long, env = "IRI_CONFORMANCE_CLASS")]
    class: Option<String>,
    /// Volume class (default: the first class volume Status reports).
    #[arg(long, env = "IRI_CONFORMANCE_VOLUME_CLASS")]
    volume_class: Option<String>,
    /// Bucket class (default: the first class ListBucketClasses reports).
    #[arg(long, env = "IRI_CONFORMANCE_BUCKET_CLASS")]
    bucket_class: Option<String>,
    /// Image for local disks that carry one.
    #[arg(long, env = "IRI_CONFORMANCE_IMAGE")]
    image: Option<String>,
    /// Size of volumes and local disks (bytes, or 1Gi, 500Mi, 10G).
    #[arg(long, env = "IRI_CONFORMANCE_SIZE", value_parser = parse_size, default_value = "1Gi")]
    size: i64,
    /// Size volumes are expanded to (default: twice --size).
    #[arg(long, value_parser = parse_size)]
    expand_size: Option<i64>,
    /// Budget of one state transition (PENDING -> RUNNING, deletion, attach).
    #[arg(long, env = "IRI_CONFORMANCE_STATE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    state_timeout: Duration,
    /// Deadline of every single RPC.
    #[arg(long, env = "IRI_CONFORMANCE_RPC_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    rpc_timeout: Duration,
    /// Upper bound of the polling interval while waiting for a transition.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms")]
    poll_interval: Duration,
    /// After this many calls of one RPC method ran into --rpc-timeout, later calls of it fail
    /// at once ("ListMachines timed out 2 times; not called again"); 0 = never.
    #[arg(long, env = "IRI_CONFORMANCE_BREAKER_THRESHOLD", default_value_t = iri_conformance::breaker::DEFAULT_THRESHOLD)]
    breaker_threshold: usize,
    /// How often idempotency cases repeat a call (csi-sanity's IdempotentCount).
    #[arg(long, default_value_t = 10)]
    idempotent_count: usize,
    /// How many objects concurrency cases create at once.
    #[arg(long, default_value_t = 8)]
    parallel_creates: usize,
    /// Optional features whose absence fails the cases instead of skipping them: `exec` (the
    /// Exec console cases; otherwise skipped when Exec answers an empty URL)
    #[arg(long = "require", value_delimiter = ',')]
    require: Vec<String>,
}

impl ParamArgs {
    fn params(&self) -> iri_conformance::Params {
        let mut p = iri_conformance::Params {
            machine_class: self.class.clone(),
            volume_class: self.volume_class.clone(),
            bucket_class: self.bucket_class.clone(),
            volume_size: self.size,
            expand_size: self.expand_size.unwrap_or(self.size.saturating_mul(2)),
            state_timeout: self.state_timeout,
            rpc_timeout: self.rpc_timeout,
            breaker_threshold: self.breaker_threshold,
            poll_interval: self.poll_interval,
            idempotent_count: self.idempotent_count,
            parallel_creates: self.parallel_creates.max(1),
            require_exec: self.require.iter().any(|r| r == "exec"),
            ..Default::default()
        };
        if let Some(image) = &self.image {
            p.image.clone_from(image);
        }
        p
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    select: SelectArgs,
    #[command(flatten)]
    params: ParamArgs,
    /// Cases running at once (default: CPUs x 4; cases mostly wait on the runtime).
    #[arg(long, short = 'p', env = "IRI_CONFORMANCE_PARALLEL")]
    parallel: Option<usize>,
    /// Timeout of each case.
    #[arg(long, env = "IRI_CONFORMANCE_CASE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    case_timeout: Duration,
    /// Budget of the final cleanup (delete everything of the run and wait until gone).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    cleanup_timeout: Duration,
    /// Only report objects of earlier runs instead of deleting them.
    #[arg(long)]
    keep_leftovers: bool,
    /// Treat skipped cases as failures for the exit status.
    #[arg(long)]
    fail_on_skip: bool,
    /// Failed `should` cases fail the run too (by default only `must` failures do; `should`
    /// failures are warnings).
    #[arg(long, env = "IRI_CONFORMANCE_STRICT")]
    strict: bool,
    /// Use this run id instead of a generated one.
    #[arg(long)]
    run_id: Option<String>,
    /// Store of the lifecycle level: `memory` or `etcd://host:port[,host:port]` (needs the
    /// `etcd` feature).
    #[arg(long, env = "IRIKIT_STORE", default_value = "memory")]
    store: String,
    /// Write a JUnit XML report.
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Write a JSON report.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Print a line for every case, including passes.
    #[arg(long, short = 'v')]
    verbose: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    select: SelectArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    output: ListFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ListFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    params: ParamArgs,
    /// Iterations per RPC.
    #[arg(long, short = 'n', default_value_t = 200)]
    iterations: usize,
    /// Calls in flight per RPC.
    #[arg(long, short = 'c', default_value_t = 4)]
    concurrency: usize,
    /// Only RPCs whose name matches (e.g. `CreateMachine|ListVolumes`).
    #[arg(long, value_name = "REGEX")]
    focus: Option<Regex>,
    /// Write the results as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, mult) = [
        ("Ki", 1i64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use bytes or 1Gi, 500Mi, 10G"))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("size {s:?} must be positive and fit in int64"))
}

async fn targets(t: &TargetArgs) -> anyhow::Result<Targets> {
    let given = [&t.machine_endpoint, &t.volume_endpoint, &t.bucket_endpoint];
    let parse = |s: &Option<String>| {
        s.as_deref()
            .filter(|s| !s.is_empty())
            .map(iri_spec::endpoint::Endpoint::from_flag)
            .transpose()
    };
    if given
        .iter()
        .any(|s| s.as_deref().is_some_and(|s| !s.is_empty()))
    {
        let (m, v, b) = (
            parse(&t.machine_endpoint).context("--machine-endpoint")?,
            parse(&t.volume_endpoint).context("--volume-endpoint")?,
            parse(&t.bucket_endpoint).context("--bucket-endpoint")?,
        );
        return Ok(Targets::connect(m.as_ref(), v.as_ref(), b.as_ref()));
    }
    if t.discover {
        let (m, v, b) = tokio::join!(
            iri_spec::endpoint::discover(RuntimeKind::Machine, None, t.discover_timeout),
            iri_spec::endpoint::discover(RuntimeKind::Volume, None, t.discover_timeout),
            iri_spec::endpoint::discover(RuntimeKind::Bucket, None, t.discover_timeout),
        );
        let (m, v, b) = (m.ok(), v.ok(), b.ok());
        anyhow::ensure!(
            m.is_some() || v.is_some() || b.is_some(),
            "--discover found no IRI runtime socket (env vars or well-known paths)"
        );
        return Ok(Targets::connect(m.as_ref(), v.as_ref(), b.as_ref()));
    }
    Targets::embedded().await
}

fn write_file(path: &PathBuf, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let targets = targets(&args.target).await?;
    let config = RunConfig {
        selection: args.select.selection(),
        params: args.params.params(),
        parallel: args
            .parallel
            .unwrap_or_else(|| RunConfig::default().parallel)
            .max(1),
        case_timeout: args.case_timeout,
        cleanup_timeout: args.cleanup_timeout,
        keep_leftovers: args.keep_leftovers,
        run_id: args.run_id.clone(),
        lifecycle: LifecycleConfig {
            store: args.store.clone(),
            ..LifecycleConfig::default()
        },
        strict: args.strict,
        running: runner::Running::default(),
    };
    let selected = config.selection.apply(cases::all());
    if selected.is_empty() {
        anyhow::bail!("no case matches the selection (see `iri-conformance list`)");
    }
    // The progress line: only on a terminal (stdout and stderr), never in CI logs.
    let tty = report::progress_wanted(
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
        std::env::var_os("CI").as_deref(),
    );
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let total = selected.len();
    let verbose = args.verbose;
    let on_progress = {
        let (done, failed) = (done.clone(), failed.clone());
        move |p: runner::Progress<'_>| {
            if p.result.outcome.status() == "failed" {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            done.fetch_add(1, Ordering::Relaxed);
            if verbose {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "{:<7} {} ({:.3}s)",
                    p.result.outcome.status().to_uppercase(),
                    p.result.id,
                    p.result.duration.as_secs_f64()
                );
            }
        }
    };
    let cancel = cancel_on_signals();
    // Redrawn every 250 ms once the run has lasted a second.
    let ticker = (tty && !verbose).then(|| {
        let (done, failed, running) = (done.clone(), failed.clone(), config.running.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            loop {
                let slowest = running.slowest();
                let line = report::progress_line(
                    done.load(Ordering::Relaxed),
                    total,
                    failed.load(Ordering::Relaxed),
                    slowest.as_ref().map(|(id, age)| (id.as_str(), *age)),
                );
                {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "{line}");
                    let _ = err.flush();
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    });
    let report = runner::run(&config, &targets, selected, cancel, &on_progress).await;
    if let Some(ticker) = ticker {
        ticker.abort();
        eprint!("\r{:100}\r", "");
    }
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", report::human_summary(&report));
    if let Some(path) = &args.junit {
        write_file(path, &report::junit(&report))?;
    }
    if let Some(path) = &args.json {
        write_file(path, &serde_json::to_string_pretty(&report::json(&report))?)?;
    }
    if let Some(mock) = targets.mock {
        let _ = mock.shutdown().await;
    }
    Ok(if report.interrupted {
        ExitCode::from(130)
    } else if report.success(args.fail_on_skip) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let selected = args.select.selection().apply(cases::all());
    let mut out = std::io::stdout().lock();
    match args.output {
        ListFormat::Json => {
            let v: Vec<_> = selected
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "id": c.id, "service": c.service, "profile": c.profile.name(), "level": c.level.name(),
                        "requirement": c.requirement.name(), "evidence": c.evidence, "description": c.description,
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        ListFormat::Text => {
            for c in &selected {
                let tag = match (c.profile, c.level) {
                    (Profile::GoPoollet, _) => " [go-poollet]",
                    (_, Level::Lifecycle) => " [lifecycle]",
                    _ => "",
                };
                writeln!(
                    out,
                    "{:<58} {:<6} {}{tag}\n{:<58} {:<6} evidence: {}",
                    c.id,
                    c.requirement.name(),
                    c.description,
                    "",
                    "",
                    c.evidence
                )?;
            }
            let musts = selected
                .iter()
                .filter(|c| c.requirement == iri_conformance::Requirement::Must)
                .count();
            writeln!(
                out,
                "{} cases ({musts} must, {} should)",
                selected.len(),
                selected.len() - musts
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let targets = targets(&args.target).await?;
    let cfg = bench::BenchConfig {
        iterations: args.iterations.max(1),
        concurrency: args.concurrency.max(1),
        focus: args.focus.clone(),
        params: args.params.params(),
        run_id: None,
    };
    let cancel = cancel_on_signals();
    let report = bench::run(&cfg, &targets, cancel).await?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", bench::table(&report))?;
    if let Some(path) = &args.json {
        write_file(path, &serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(mock) = targets.mock {
        let _ = mock.shutdown().await;
    }
    Ok(if report.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A token the first SIGINT/SIGTERM cancels (the run stops its cases and cleans up); a second
/// signal exits at once (130).
fn cancel_on_signals() -> tokio_util::sync::CancellationToken {
    irikit_bootstrap::cancel_on_signals(
        || {
            eprintln!(
                "\ninterrupted: stopping cases and cleaning up (press Ctrl-C again to exit at once)"
            );
        },
        || eprintln!("interrupted twice: exiting without cleanup"),
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The lifecycle level's poollet warns about the runtime it is deliberately cut off from.
    irikit_bootstrap::init_tracing(cli.log_format, "warn,poollet=error");
    let res = match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(*args).await,
        Some(Command::List(args)) => list(&args),
        Some(Command::Bench(args)) => run_bench(*args).await,
    };
    match res {
        Ok(code) => code,
        Err(err) => {
            eprintln!("iri-conformance: {err:#}");
            ExitCode::from(2)
        }
    }
}
