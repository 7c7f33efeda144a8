//! Hostile runtimes end fast (issue 14): the per-method circuit breaker stops calling a method
//! after `breaker_threshold` deadline-exceeded calls, so a full run against a runtime whose
//! ListMachines, CreateMachine or Status hangs ends within 90 s at the default timeouts. The
//! tests scale every timeout down by 20 (RPC 10 s → 500 ms, case 30 s → 1.5 s, cleanup 60 s →
//! 3 s), so the 90 s target becomes 4.5 s.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::field_reassign_with_default
)]

use std::time::{Duration, Instant};

use iri_conformance::{
    Outcome, RunConfig, cases,
    runner::{self, Targets},
};
use iri_mock::{Effect, FaultRule, Method, Trigger};
use tokio_util::sync::CancellationToken;

/// Default timeouts / 20.
const SCALE: u32 = 20;

fn scaled() -> RunConfig {
    let mut c = RunConfig::default();
    c.case_timeout = Duration::from_secs(30) / SCALE;
    c.cleanup_timeout = Duration::from_secs(60) / SCALE;
    c.params.rpc_timeout = Duration::from_secs(10) / SCALE;
    c.params.state_timeout = Duration::from_secs(60) / SCALE;
    c
}

async fn run_with_hang(method: Method, config: &RunConfig) -> (runner::RunReport, Duration) {
    let builder =
        runner::embedded_builder().fault(FaultRule::new(method, Trigger::Always, Effect::Hang));
    let targets = Targets::embedded_with(builder).await.unwrap();
    let started = Instant::now();
    let report = runner::run(
        config,
        &targets,
        cases::all(),
        CancellationToken::new(),
        &|_| {},
    )
    .await;
    (report, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_method_ends_the_full_run_within_90s_at_default_timeouts() {
    let target = Duration::from_secs(90) / SCALE;
    for (method, rpc) in [
        (Method::ListMachines, "ListMachines"),
        (Method::CreateMachine, "CreateMachine"),
        (Method::MachineStatus, "Status"),
    ] {
        let (report, took) = run_with_hang(method, &scaled()).await;
        let failed: Vec<_> = report
            .results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .collect();
        let opened = failed
            .iter()
            .filter(|r| {
                r.outcome
                    .message()
                    .unwrap()
                    .contains(&format!("{rpc} timed out "))
                    && r.outcome
                        .message()
                        .unwrap()
                        .contains("times; not called again")
            })
            .count();
        println!(
            "{rpc} hangs: {} cases, {} failed ({opened} naming the open breaker) in {took:?} (target {target:?} = 90 s / {SCALE}); cleanup {:?}",
            report.results.len(),
            failed.len(),
            report.cleanup.duration
        );
        assert!(took < target, "{rpc} hangs: the run took {took:?}");
        assert!(!report.success(false), "{rpc} hangs but the run passed");
        assert!(opened > 0, "{rpc} hangs: no case names the open breaker");
        // Every failure says why: the deadline, the breaker, a case timeout, or a consequence
        // named by the failed call.
        for r in &failed {
            let msg = r.outcome.message().unwrap();
            assert!(
                msg.contains("deadline")
                    || msg.contains("timed out")
                    || msg.contains("not called again")
                    || msg.contains(rpc),
                "{rpc} hangs: {} fails without a clear reason: {msg}",
                r.id
            );
        }
        // The breaker spends at most a few deadlines per method: no case waited out its own.
        let slow = report
            .results
            .iter()
            .filter(|r| r.duration >= scaled().case_timeout)
            .count();
        let rpc_level = report
            .results
            .iter()
            .filter(|r| r.level == iri_conformance::Level::Rpc)
            .map(|r| r.duration)
            .max()
            .unwrap_or_default();
        println!(
            "  cases that hit their case timeout: {slow}; slowest RPC-level case {rpc_level:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_ends_the_run_within_5s_plus_the_cleanup_budget() {
    // Default RPC deadline (10 s): the cleanup must not wait for the hanging ListMachines.
    let mut config = RunConfig::default();
    config.cleanup_timeout = Duration::from_secs(2);
    let builder = runner::embedded_builder().fault(FaultRule::new(
        Method::ListMachines,
        Trigger::Always,
        Effect::Hang,
    ));
    let targets = Targets::embedded_with(builder).await.unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let report = runner::run(&config, &targets, cases::all(), cancel, &|_| {}).await;
    let after_cancel = started.elapsed().saturating_sub(Duration::from_secs(1));
    println!(
        "cancelled after 1 s: the run ended {after_cancel:?} later (cleanup {:?})",
        report.cleanup.duration
    );
    assert!(report.interrupted);
    assert!(
        after_cancel < Duration::from_secs(5) + config.cleanup_timeout,
        "{after_cancel:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_threshold_zero_never_opens() {
    let mut config = scaled();
    config.params.breaker_threshold = 0;
    config.selection.focus = vec![regex::Regex::new(r"^machine\.list\.").unwrap()];
    let builder = runner::embedded_builder().fault(FaultRule::new(
        Method::ListMachines,
        Trigger::Always,
        Effect::Hang,
    ));
    let targets = Targets::embedded_with(builder).await.unwrap();
    let selected = config.selection.apply(cases::all());
    let report = runner::run(
        &config,
        &targets,
        selected,
        CancellationToken::new(),
        &|_| {},
    )
    .await;
    assert!(report.results.iter().all(|r| {
        !r.outcome
            .message()
            .unwrap_or_default()
            .contains("not called again")
    }));
    assert!(report.count("failed") > 0);
}
