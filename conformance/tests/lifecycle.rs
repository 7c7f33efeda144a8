//! Run lifecycle against the in-process mock: nothing with the run id survives a passed, a failed
//! (mutant) or an interrupted run; leftovers of earlier runs are found and deleted (or kept); a
//! hanging, disconnecting or erroring runtime ends every case at its timeout without hanging the run.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use std::time::Duration;

use iri_conformance::{
    Outcome, RunConfig, cases,
    ctx::RUN_ID_LABEL,
    runner::{self, RunReport, Targets},
};
use iri_mock::{Effect, FaultRule, Mutant, Trigger};
use iri_spec::kind::IriKind;
use tokio_util::sync::CancellationToken;

fn config(run_id: &str) -> RunConfig {
    let mut c = RunConfig::default();
    c.run_id = Some(run_id.to_owned());
    c.case_timeout = Duration::from_secs(20);
    c.params.state_timeout = Duration::from_secs(3);
    c
}

/// Objects in the mock (any kind) carrying `run_id`, counted through the mock's own API.
fn objects_with_run(mock: &iri_mock::MockRuntime, run_id: &str) -> usize {
    fn with_run<K: IriKind>(objects: &[K], run_id: &str) -> usize {
        objects
            .iter()
            .filter(|o| o.label(RUN_ID_LABEL) == Some(run_id))
            .count()
    }
    with_run(&mock.machines(), run_id)
        + with_run(&mock.volumes(), run_id)
        + with_run(&mock.volume_snapshots(), run_id)
        + with_run(&mock.buckets(), run_id)
}

/// Nothing of run `run_id` (nor anything else) is left in the mock after `report`'s cleanup.
fn assert_nothing_left(mock: &iri_mock::MockRuntime, run_id: &str, report: &RunReport) {
    assert_eq!(objects_with_run(mock, run_id), 0, "{:?}", report.cleanup);
    assert_eq!(total_objects(mock), 0);
}

/// Runs the cases of `cfg`'s selection.
async fn run_selected(cfg: &RunConfig, targets: &Targets) -> RunReport {
    let selected = cfg.selection.apply(cases::rpc());
    runner::run(cfg, targets, selected, CancellationToken::new(), &|_| {}).await
}

fn total_objects(mock: &iri_mock::MockRuntime) -> usize {
    mock.machines().len()
        + mock.volumes().len()
        + mock.volume_snapshots().len()
        + mock.buckets().len()
        + mock.reservations().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passed_run_leaves_nothing() {
    let targets = Targets::embedded().await.unwrap();
    let report = runner::run(
        &config("run-passed"),
        &targets,
        cases::rpc(),
        CancellationToken::new(),
        &|_| {},
    )
    .await;
    assert!(report.success(true), "{:?}", report.failed_ids());
    assert!(report.cleanup.deleted > 50, "{:?}", report.cleanup);
    let mock = targets.mock.as_ref().unwrap();
    assert_eq!(objects_with_run(mock, "run-passed"), 0);
    assert_eq!(total_objects(mock), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_run_leaves_nothing() {
    // Two mutants: one breaks lookups by label (the cleanup must not trust the selector), one
    // keeps deleted machines terminating longer than usual.
    let builder = runner::embedded_builder()
        .mutant(Mutant::LabelSelectorIgnored)
        .mutant(Mutant::AnnotationsMerged);
    let targets = Targets::embedded_with(builder).await.unwrap();
    let report = runner::run(
        &config("run-failed"),
        &targets,
        cases::rpc(),
        CancellationToken::new(),
        &|_| {},
    )
    .await;
    assert!(!report.success(false));
    assert!(report.failed_ids().contains(&"machine.list.by_label"));
    assert_nothing_left(targets.mock.as_ref().unwrap(), "run-failed", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_run_leaves_nothing() {
    // Slow transitions keep cases in flight when the run is cancelled.
    let delays = iri_mock::Delays {
        provision: Duration::from_millis(300),
        ..runner::embedded_delays()
    };
    let targets = Targets::embedded_with(runner::embedded_builder().delays(delays))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let mock = targets.mock.as_ref().unwrap().handle();
    tokio::spawn(async move {
        // Cancel once objects exist (like Ctrl-C in the middle of a run).
        while mock.machine_count() < 5 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        trigger.cancel();
    });
    let report = runner::run(
        &config("run-interrupted"),
        &targets,
        cases::rpc(),
        cancel,
        &|_| {},
    )
    .await;
    assert!(report.interrupted);
    assert!(!report.success(false));
    assert!(
        report.results.iter().any(
            |r| r.outcome == Outcome::Failed("interrupted before the case finished".to_owned())
        ),
        "no case was cut short"
    );
    assert!(report.cleanup.deleted > 0);
    assert_nothing_left(targets.mock.as_ref().unwrap(), "run-interrupted", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_earlier_runs_are_deleted_or_kept() {
    let targets = Targets::embedded().await.unwrap();
    let mock = targets.mock.as_ref().unwrap();
    let mut old = iri_mock::fixtures::machine();
    old.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert(RUN_ID_LABEL.to_owned(), "icr-old".to_owned());
    let foreign = iri_mock::fixtures::machine(); // not ours: never touched
    mock.insert_machine(old.clone());
    mock.insert_machine(foreign);

    let mut cfg = config("run-new");
    cfg.selection.focus = vec![regex::Regex::new("^machine\\.version\\.").unwrap()];
    cfg.keep_leftovers = true;
    let report = run_selected(&cfg, &targets).await;
    assert_eq!(report.leftovers.len(), 1);
    assert!(!report.leftovers[0].deleted);
    assert_eq!(report.leftovers[0].run_id, "icr-old");
    assert_eq!(mock.machine_count(), 2);

    cfg.keep_leftovers = false;
    let report = run_selected(&cfg, &targets).await;
    assert!(report.leftovers[0].deleted);
    assert!(
        iri_conformance::report::human_summary(&report)
            .contains("leftovers of earlier runs: 1 found, 1 deleted")
    );
    let start = std::time::Instant::now();
    while mock.machine_count() != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "leftover not gone"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn run_against_fault(effect: Effect) -> runner::RunReport {
    let builder = runner::embedded_builder().fault(FaultRule::any_method(Trigger::Always, effect));
    let targets = Targets::embedded_with(builder).await.unwrap();
    let mut cfg = config("run-faulty");
    cfg.case_timeout = Duration::from_millis(800);
    cfg.cleanup_timeout = Duration::from_secs(1);
    cfg.params.rpc_timeout = Duration::from_millis(200);
    cfg.params.state_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        runner::run(
            &cfg,
            &targets,
            cases::rpc(),
            CancellationToken::new(),
            &|_| {},
        ),
    )
    .await
    .expect("the run hung");
    assert!(started.elapsed() < Duration::from_secs(60));
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_runtime_fails_every_case_at_its_timeout() {
    let report = run_against_fault(Effect::Hang).await;
    assert_eq!(report.count("passed"), 0);
    assert!(!report.success(false));
    for r in &report.results {
        let msg = r.outcome.message().unwrap_or_default();
        assert!(
            msg.contains("deadline")
                || msg.contains("timed out")
                || msg.contains("skip")
                || matches!(r.outcome, Outcome::Skipped(_)),
            "{}: {msg}",
            r.id
        );
        assert!(
            r.duration < Duration::from_secs(5),
            "{} took {:?}",
            r.id,
            r.duration
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_fail_cases_without_hanging() {
    for effect in [
        Effect::DropConnection,
        Effect::error(tonic::Code::Internal, "garbage"),
    ] {
        let report = run_against_fault(effect.clone()).await;
        assert!(!report.success(false), "{effect}");
        // Cases that need a class skip (Status failed at preflight); every other case fails.
        assert_eq!(report.count("passed"), 0, "{effect}");
        assert!(
            report.count("failed") > 40,
            "{effect}: {}",
            report.count("failed")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_every_rpc_with_defaults_and_cleans_up() {
    let targets = Targets::embedded().await.unwrap();
    let cfg = iri_conformance::bench::BenchConfig {
        iterations: 20,
        run_id: Some("bench-run".to_owned()),
        ..Default::default()
    };
    let report = iri_conformance::bench::run(&cfg, &targets, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.errors, 0, "{:#?}", report.rpcs);
    let names: Vec<&str> = report.rpcs.iter().map(|s| s.rpc.as_str()).collect();
    for rpc in [
        "Version",
        "Status",
        "CreateMachine",
        "DeleteMachine",
        "UpdateMachinePower",
        "CreateVolume",
        "ExpandVolume",
        "CreateBucket",
    ] {
        assert!(names.contains(&rpc), "{rpc} not measured: {names:?}");
    }
    for s in &report.rpcs {
        assert_eq!(s.calls, 20);
        assert!(
            s.p50_ms <= s.p90_ms && s.p90_ms <= s.p99_ms && s.p99_ms <= s.max_ms,
            "{s:?}"
        );
    }
    let table = iri_conformance::bench::table(&report);
    assert!(
        table.contains("P99 ms") && table.contains("CreateMachine"),
        "{table}"
    );
    let start = std::time::Instant::now();
    let mock = targets.mock.as_ref().unwrap();
    while total_objects(mock) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "bench objects left"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(objects_with_run(mock, "bench-run"), 0);
}
