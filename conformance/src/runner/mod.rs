//! The runner: selects cases (profile, focus, skip), resolves classes at preflight, scans for
//! leftovers of earlier runs, runs cases in parallel with a timeout each, and deletes everything
//! the run created (by run-id label and by recorded id) even on failure, timeout or cancellation.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use iri_spec::endpoint::Endpoint;
use regex::Regex;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::Code;

mod cleanup;
mod preflight;

pub use self::cleanup::{cleanup, count_run_objects};
use self::{cleanup::scan_leftovers, preflight::preflight};
pub use crate::report::{CaseResult, CleanupReport, Leftover, RunReport, RuntimeVersion};
use crate::{
    case::{Case, Level, Outcome, Profile, Service, Skip},
    ctx::{Clients, Created, Ctx, Params, Resolved},
    lifecycle::{Env, LifecycleConfig, Upstream},
};

/// Which profiles to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileFilter {
    /// Only the core IRI contract.
    Core,
    /// Only the go-poollet compatibility profile.
    GoPoollet,
    /// Both.
    #[default]
    All,
}

impl ProfileFilter {
    /// Whether a case of `p` is selected.
    pub fn includes(self, p: Profile) -> bool {
        matches!(
            (self, p),
            (ProfileFilter::All, _)
                | (ProfileFilter::Core, Profile::Core)
                | (ProfileFilter::GoPoollet, Profile::GoPoollet)
        )
    }
}

/// Which levels to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LevelFilter {
    /// Only the RPC level.
    Rpc,
    /// Only the lifecycle level.
    Lifecycle,
    /// Both.
    #[default]
    All,
}

impl LevelFilter {
    /// Whether a case of `level` is selected.
    pub fn includes(self, level: Level) -> bool {
        matches!(
            (self, level),
            (LevelFilter::All, _)
                | (LevelFilter::Rpc, Level::Rpc)
                | (LevelFilter::Lifecycle, Level::Lifecycle)
        )
    }
}

/// Case selection.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Run only cases whose id matches one of these (none = all).
    pub focus: Vec<Regex>,
    /// Drop cases whose id matches one of these.
    pub skip: Vec<Regex>,
    /// Profiles.
    pub profile: ProfileFilter,
    /// Levels.
    pub level: LevelFilter,
}

impl Selection {
    /// Applies the selection to `cases`, keeping their order.
    pub fn apply(&self, cases: Vec<Case>) -> Vec<Case> {
        cases
            .into_iter()
            .filter(|c| self.profile.includes(c.profile))
            .filter(|c| self.level.includes(c.level))
            .filter(|c| self.focus.is_empty() || self.focus.iter().any(|r| r.is_match(&c.id)))
            .filter(|c| !self.skip.iter().any(|r| r.is_match(&c.id)))
            .collect()
    }
}

/// The cases running right now, with their start times (read by a progress display).
#[derive(Debug, Clone, Default)]
pub struct Running(Arc<std::sync::Mutex<HashMap<String, Instant>>>);

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start(&self, id: &str) {
        self.lock().insert(id.to_owned(), Instant::now());
    }

    fn finish(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The case running longest, with its age.
    pub fn slowest(&self) -> Option<(String, Duration)> {
        self.lock()
            .iter()
            .min_by_key(|(_, started)| **started)
            .map(|(id, started)| (id.clone(), started.elapsed()))
    }
}

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Which cases.
    pub selection: Selection,
    /// Case parameters.
    pub params: Params,
    /// Cases running at once.
    pub parallel: usize,
    /// Timeout of each case (including its waits).
    pub case_timeout: Duration,
    /// Budget for the final cleanup (deletes + waiting until gone).
    pub cleanup_timeout: Duration,
    /// Only report leftovers of earlier runs instead of deleting them.
    pub keep_leftovers: bool,
    /// A fixed run id (default: generated).
    pub run_id: Option<String>,
    /// The lifecycle level's store and control-plane timings.
    pub lifecycle: LifecycleConfig,
    /// Failed `should` cases fail the run too (`--strict`); by default they are warnings.
    pub strict: bool,
    /// Filled with the cases running at any moment (for a progress display).
    pub running: Running,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            selection: Selection::default(),
            params: Params::default(),
            parallel: std::thread::available_parallelism().map_or(8, |n| n.get() * 4),
            case_timeout: Duration::from_secs(30),
            cleanup_timeout: Duration::from_secs(60),
            keep_leftovers: false,
            run_id: None,
            lifecycle: LifecycleConfig::default(),
            strict: false,
            running: Running::default(),
        }
    }
}

/// What the runtime under test is reached through.
#[derive(Debug)]
pub struct Targets {
    /// The clients.
    pub clients: Clients,
    /// Endpoint descriptions per service for the report.
    pub endpoints: BTreeMap<Service, String>,
    /// The embedded mock, kept alive for the run.
    pub mock: Option<iri_mock::MockRuntime>,
    /// What the lifecycle level's poollets dial per service (the same runtime as `clients`).
    pub upstreams: BTreeMap<Service, Upstream>,
}

/// The embedded mock as the runner uses it, the same as `irikit up`'s (tests add mutants or
/// faults to the builder).
pub use irikit_controlplane::up::{embedded_builder, embedded_delays};

impl Targets {
    /// The embedded default: iri-mock in-process (all three services) over a duplex channel.
    pub async fn embedded() -> anyhow::Result<Self> {
        Self::embedded_with(embedded_builder()).await
    }

    /// An in-process mock built from `builder`.
    pub async fn embedded_with(builder: iri_mock::MockRuntimeBuilder) -> anyhow::Result<Self> {
        let mock = builder
            .start_in_process()
            .await
            .context("starting the embedded iri-mock")?;
        let clients = Clients::new(
            Some(mock.machine_channel()),
            Some(mock.volume_channel()),
            Some(mock.bucket_channel()),
        );
        let endpoints = Service::ALL
            .iter()
            .map(|s| (*s, "embedded iri-mock (in-process)".to_owned()))
            .collect();
        let upstreams = match mock.in_process_dialer() {
            Some(dialer) => Service::ALL
                .iter()
                .map(|s| (*s, Upstream::InProcess(dialer.clone())))
                .collect(),
            None => BTreeMap::new(),
        };
        Ok(Targets {
            clients,
            endpoints,
            mock: Some(mock),
            upstreams,
        })
    }

    /// Lazily connected clients for the given endpoints (any subset).
    pub fn connect(
        machine: Option<&Endpoint>,
        volume: Option<&Endpoint>,
        bucket: Option<&Endpoint>,
    ) -> Self {
        let mut endpoints = BTreeMap::new();
        let mut upstreams = BTreeMap::new();
        for (s, e) in [
            (Service::Machine, machine),
            (Service::Volume, volume),
            (Service::Bucket, bucket),
        ] {
            if let Some(e) = e {
                endpoints.insert(s, e.to_string());
                upstreams.insert(s, Upstream::Endpoint(e.clone()));
            }
        }
        Targets {
            clients: Clients::new(
                machine.map(iri_spec::endpoint::connect_lazy),
                volume.map(iri_spec::endpoint::connect_lazy),
                bucket.map(iri_spec::endpoint::connect_lazy),
            ),
            endpoints,
            mock: None,
            upstreams,
        }
    }

    fn has(&self, s: Service) -> bool {
        match s {
            Service::Machine => self.clients.machine.is_some(),
            Service::Volume => self.clients.volume.is_some(),
            Service::Bucket => self.clients.bucket.is_some(),
        }
    }
}

/// A progress notification (one per finished case).
#[derive(Debug)]
pub struct Progress<'a> {
    /// The finished case.
    pub result: &'a CaseResult,
    /// Finished so far.
    pub done: usize,
    /// Selected.
    pub total: usize,
}

/// A new run id: `icr-<unix seconds in hex>-<6 random hex>`.
pub fn new_run_id() -> String {
    use rand::Rng as _;
    format!(
        "icr-{:x}-{:06x}",
        crate::ctx::unix_secs(),
        rand::rng().random_range(0..0x0100_0000u32)
    )
}

fn classify(
    res: Result<anyhow::Result<Outcome>, tokio::time::error::Elapsed>,
    t: Duration,
) -> Outcome {
    match res {
        Err(_) => Outcome::Failed(format!("case timed out after {t:?}")),
        Ok(Ok(o)) => o,
        Ok(Err(e)) => match e.downcast_ref::<Skip>() {
            Some(Skip(reason)) => Outcome::Skipped(reason.clone()),
            None => Outcome::Failed(format!("{e:#}")),
        },
    }
}

/// The context of a run against `targets` (run id `run_id`, the ids it creates recorded in
/// `created`), as case `case_id`, without the lifecycle environment.
pub(crate) fn base_ctx(
    targets: &Targets,
    params: &Params,
    resolved: Resolved,
    (run_id, case_id): (&str, &str),
    created: Arc<Created>,
) -> Ctx {
    Ctx {
        clients: targets.clients.clone(),
        params: Arc::new(params.clone()),
        resolved: Arc::new(resolved),
        run_id: Arc::from(run_id),
        case_id: Arc::from(case_id),
        created,
        lifecycle: None,
        upstreams: Arc::new(targets.upstreams.clone()),
    }
}

fn result_of(case: &Case, outcome: Outcome, duration: Duration) -> CaseResult {
    CaseResult {
        id: case.id.clone(),
        service: case.service,
        profile: case.profile,
        level: case.level,
        description: case.description.clone(),
        requirement: case.requirement,
        evidence: case.evidence.clone(),
        outcome,
        duration,
    }
}

/// What every case of a run shares.
struct Shared<'a> {
    cases: &'a [Case],
    base: Ctx,
    case_timeout: Duration,
    cancel: &'a CancellationToken,
    on_progress: &'a (dyn Fn(Progress<'_>) + Send + Sync),
    running: &'a Running,
}

/// Runs the cases at `indices` with at most `parallel` at once, filling `slots`; returns
/// false when the run was cancelled meanwhile.
async fn run_phase(
    shared: &Shared<'_>,
    indices: &[usize],
    parallel: usize,
    slots: &mut [Option<CaseResult>],
    done: &mut usize,
) -> bool {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = JoinSet::new();
    for &index in indices {
        let case = &shared.cases[index];
        let mut ctx = shared.base.clone();
        ctx.case_id = Arc::from(case.id.as_str());
        let body = case.run.clone();
        let semaphore = semaphore.clone();
        let t = shared.case_timeout;
        let running = shared.running.clone();
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let start = Instant::now();
            running.start(&ctx.case_id);
            let id = ctx.case_id.clone();
            let res = tokio::time::timeout(t, body(ctx)).await;
            running.finish(&id);
            (index, classify(res, t), start.elapsed())
        });
    }
    let mut completed = true;
    loop {
        tokio::select! {
            biased;
            () = shared.cancel.cancelled() => {
                completed = false;
                set.abort_all();
                break;
            }
            joined = set.join_next() => {
                let Some(joined) = joined else { break };
                let Ok((index, outcome, duration)) = joined else { continue };
                record(shared, index, outcome, duration, slots, done);
            }
        }
    }
    while set.join_next().await.is_some() {}
    completed
}

/// Records the result of the case at `index` in `slots` and reports the progress.
fn record(
    shared: &Shared<'_>,
    index: usize,
    outcome: Outcome,
    duration: Duration,
    slots: &mut [Option<CaseResult>],
    done: &mut usize,
) {
    let r = result_of(&shared.cases[index], outcome, duration);
    *done += 1;
    let total = shared.cases.len();
    (shared.on_progress)(Progress {
        result: &r,
        done: *done,
        total,
    });
    slots[index] = Some(r);
}

/// Records every case at `indices` as failed with `message`, without running it.
fn fail_unrun(
    shared: &Shared<'_>,
    indices: &[usize],
    message: &str,
    slots: &mut [Option<CaseResult>],
    done: &mut usize,
) {
    for &index in indices {
        let outcome = Outcome::Failed(message.to_owned());
        record(shared, index, outcome, Duration::ZERO, slots, done);
    }
}

/// The report of a run cancelled during its preflight: every case unfinished, nothing created.
fn interrupted_at_start(
    config: &RunConfig,
    targets: &Targets,
    cases: &[Case],
    run_id: String,
    started: Instant,
) -> RunReport {
    RunReport {
        run_id,
        endpoints: targets.endpoints.clone(),
        versions: BTreeMap::new(),
        results: cases
            .iter()
            .map(|c| {
                result_of(
                    c,
                    Outcome::Failed("interrupted before the case started".to_owned()),
                    Duration::ZERO,
                )
            })
            .collect(),
        leftovers: Vec::new(),
        cleanup: CleanupReport::default(),
        interrupted: true,
        strict: config.strict,
        duration: started.elapsed(),
    }
}

/// Runs `cases` (already selected) against `targets`. Progress goes to `on_progress`.
/// The RPC level runs first; when lifecycle cases are selected, the lifecycle environment
/// ([`Env`]) then starts on `config.lifecycle.store`, its cases run (exclusive ones alone, at
/// the end), and it is torn down. Cancelling `cancel` stops the run: running cases are
/// dropped, unfinished ones are reported as failed ("interrupted"), and the cleanup still runs.
pub async fn run(
    config: &RunConfig,
    targets: &Targets,
    cases: Vec<Case>,
    cancel: CancellationToken,
    on_progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> RunReport {
    let started = Instant::now();
    let run_id = config.run_id.clone().unwrap_or_else(new_run_id);
    let clients = targets.clients.clone();
    let d = config.params.rpc_timeout;
    clients
        .breaker
        .configure(d, config.params.breaker_threshold);
    tracing::info!(run.id = %run_id, cases = cases.len(), "conformance run starting");

    // A signal during the preflight (a runtime whose Status or ListMachines hangs) ends the run
    // at once: nothing was created yet.
    let start = async {
        tokio::join!(
            preflight(&clients, &config.params),
            scan_leftovers(&clients, &run_id, d)
        )
    };
    let ((versions, resolved), found) = tokio::select! {
        biased;
        () = cancel.cancelled() => {
            return interrupted_at_start(config, targets, &cases, run_id, started);
        }
        r = start => r,
    };
    let mut leftovers = Vec::new();
    for (kind, id, run) in found {
        let deleted = !config.keep_leftovers
            && match kind.delete(&clients, id.clone(), d).await {
                Ok(()) => true,
                Err(st) => st.code() == Code::NotFound,
            };
        let kind = kind.slug();
        tracing::warn!(kind, id = %id, run.id = %run, deleted, "leftover of an earlier run");
        leftovers.push(Leftover {
            kind,
            id,
            run_id: run,
            deleted,
        });
    }

    let created = Arc::new(Created::default());
    let machine_class = resolved.machine_class.clone().ok();
    let volume_class = resolved.volume_class.clone().ok();
    let total = cases.len();
    let mut slots: Vec<Option<CaseResult>> = vec![None; total];
    let (mut rpc_cases, mut lifecycle_cases, mut exclusive) = (Vec::new(), Vec::new(), Vec::new());
    for (index, case) in cases.iter().enumerate() {
        if !targets.has(case.service) {
            let reason = format!("no {} runtime endpoint", case.service);
            slots[index] = Some(result_of(case, Outcome::Skipped(reason), Duration::ZERO));
            continue;
        }
        match (case.level, case.exclusive) {
            (Level::Rpc, false) => rpc_cases.push(index),
            (Level::Lifecycle, false) => lifecycle_cases.push(index),
            (_, true) => exclusive.push(index),
        }
    }
    let mut done = slots.iter().filter(|s| s.is_some()).count();
    for r in slots.iter().flatten() {
        on_progress(Progress {
            result: r,
            done: 0,
            total,
        });
    }
    let mut shared = Shared {
        cases: &cases,
        base: base_ctx(
            targets,
            &config.params,
            resolved,
            (&run_id, ""),
            created.clone(),
        ),
        case_timeout: config.case_timeout,
        cancel: &cancel,
        on_progress,
        running: &config.running,
    };
    let (rpc_exclusive, lifecycle_exclusive): (Vec<usize>, Vec<usize>) = exclusive
        .into_iter()
        .partition(|i| cases[*i].level == Level::Rpc);
    let mut interrupted =
        !run_phase(&shared, &rpc_cases, config.parallel, &mut slots, &mut done).await;
    for index in &rpc_exclusive {
        if interrupted {
            break;
        }
        interrupted = !run_phase(&shared, &[*index], 1, &mut slots, &mut done).await;
    }

    let mut lifecycle_cleanup = None;
    let all_lifecycle: Vec<usize> = lifecycle_cases
        .iter()
        .chain(&lifecycle_exclusive)
        .copied()
        .collect();
    let any_lifecycle = !all_lifecycle.is_empty();
    // The lifecycle level's poollets call every method of the runtime: when the RPC level
    // already found methods that hang, its cases fail at once naming them.
    let open = clients.breaker.open_methods();
    let open_breaker = (!open.is_empty()).then(|| {
        let names: Vec<String> = open
            .iter()
            .map(|(m, n)| format!("{m} timed out {n} times"))
            .collect();
        format!(
            "not run: the poollets need every RPC, and {}; not called again",
            names.join(", ")
        )
    });
    if let (false, true, Some(message)) = (interrupted, any_lifecycle, &open_breaker) {
        fail_unrun(&shared, &all_lifecycle, message, &mut slots, &mut done);
    } else if !interrupted && any_lifecycle {
        let upstreams = &targets.upstreams;
        let env = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                interrupted = true;
                Err(anyhow::anyhow!("interrupted while the lifecycle environment started"))
            }
            env = Env::start(
                &config.lifecycle,
                &clients,
                upstreams,
                (machine_class.as_deref(), volume_class.as_deref()),
                &run_id,
                d,
            ) => env,
        };
        match env {
            Ok(env) => {
                let env = Arc::new(env);
                shared.base.lifecycle = Some(env.clone());
                interrupted = !run_phase(
                    &shared,
                    &lifecycle_cases,
                    config.parallel,
                    &mut slots,
                    &mut done,
                )
                .await;
                for index in &lifecycle_exclusive {
                    if interrupted {
                        break;
                    }
                    interrupted = !run_phase(&shared, &[*index], 1, &mut slots, &mut done).await;
                }
                shared.base.lifecycle = None;
                lifecycle_cleanup = Some(env.teardown(&clients, d, config.cleanup_timeout).await);
            }
            Err(err) => {
                let message = format!("the lifecycle environment did not start: {err:#}");
                fail_unrun(&shared, &all_lifecycle, &message, &mut slots, &mut done);
            }
        }
    }
    let results: Vec<CaseResult> = cases
        .iter()
        .zip(slots)
        .map(|(case, slot)| {
            slot.unwrap_or_else(|| {
                result_of(
                    case,
                    Outcome::Failed("interrupted before the case finished".to_owned()),
                    Duration::ZERO,
                )
            })
        })
        .collect();

    config.running.lock().clear();
    // One cleanup budget for the whole run: the lifecycle teardown spent part of it already.
    let budget = config.cleanup_timeout.saturating_sub(
        lifecycle_cleanup
            .as_ref()
            .map_or(Duration::ZERO, |lc: &CleanupReport| lc.duration),
    );
    let mut cleanup = cleanup(&clients, &run_id, &created, d, budget).await;
    let open = clients.breaker.open_methods();
    if !open.is_empty() {
        tracing::warn!(methods = ?open, "RPC methods not called again after repeated timeouts");
    }
    if let Some(lc) = lifecycle_cleanup {
        cleanup.deleted += lc.deleted;
        cleanup.remaining.extend(lc.remaining);
        cleanup.errors.extend(lc.errors);
        cleanup.duration += lc.duration;
    }
    if !cleanup.remaining.is_empty() {
        tracing::warn!(
            remaining = cleanup.remaining.len(),
            "objects of this run are still listed after cleanup"
        );
    }
    tracing::info!(run.id = %run_id, "conformance run finished");
    RunReport {
        run_id,
        endpoints: targets.endpoints.clone(),
        versions,
        results,
        leftovers,
        cleanup,
        interrupted,
        strict: config.strict,
        duration: started.elapsed(),
    }
}

/// Runs the lifecycle level alone against `targets` (e.g. [`Targets::connect`] on the
/// endpoints of child-process runtimes): the lifecycle cases `config.selection` keeps, on
/// `config.lifecycle.store`, with the runner's reports and cleanup.
pub async fn run_lifecycle(
    config: &RunConfig,
    targets: &Targets,
    cancel: CancellationToken,
    on_progress: &(dyn Fn(Progress<'_>) + Send + Sync),
) -> RunReport {
    let mut config = config.clone();
    config.selection.level = LevelFilter::Lifecycle;
    let selected = config.selection.apply(crate::cases::all());
    run(&config, targets, selected, cancel, on_progress).await
}
