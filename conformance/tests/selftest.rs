//! Self-test: the whole RPC level passes against iri-mock, and every case is caught by at least one
//! iri-mock mutant (a deliberate contract violation). The case × mutant sensitivity matrix is
//! printed and kept as an insta snapshot (case id → mutants that make it fail).
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::field_reassign_with_default
)]

use std::{collections::BTreeMap, time::Duration};

use iri_conformance::{
    cases,
    runner::{self, RunConfig, Targets},
};
use iri_mock::Mutant;

mod common;

fn config() -> RunConfig {
    let mut c = RunConfig::default();
    c.parallel = 64;
    c.case_timeout = Duration::from_secs(20);
    c.cleanup_timeout = Duration::from_secs(5);
    c.params.state_timeout = Duration::from_secs(5);
    c.params.rpc_timeout = Duration::from_secs(10);
    c
}

/// The embedded mock with a long terminating phase: delete-phase cases and mutants stay
/// observable even when the test machine is loaded (the default 100 ms suits an idle run).
fn slow_terminate() -> iri_mock::MockRuntimeBuilder {
    let delays = iri_mock::Delays {
        terminate: Duration::from_millis(1000),
        ..runner::embedded_delays()
    };
    runner::embedded_builder().delays(delays)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_passes_against_mock() {
    let targets = Targets::embedded_with(slow_terminate()).await.unwrap();
    let all = cases::rpc();
    let n = all.len();
    let report = runner::run(&config(), &targets, all, Default::default(), &|_| {}).await;
    let bad = common::not_passing(&report);
    assert!(
        bad.is_empty(),
        "cases not passing against iri-mock:\n{}",
        bad.join("\n")
    );
    assert!(n >= 120, "only {n} cases");
    assert!(report.cleanup.remaining.is_empty(), "{:?}", report.cleanup);
    let mock = targets.mock.as_ref().unwrap();
    assert_eq!(
        mock.machine_count(),
        0,
        "machines left: {:?}",
        mock.machines()
    );
    assert!(
        mock.volumes().is_empty()
            && mock.buckets().is_empty()
            && mock.volume_snapshots().is_empty()
    );
}

/// Runs the cases in `ids` (all when `None`) against a fresh mock with mutant `m`; returns
/// their outcomes.
async fn run_under(cfg: &RunConfig, m: Mutant, ids: Option<&[String]>) -> common::Outcomes {
    let delays = iri_mock::Delays {
        terminate: Duration::from_millis(500),
        ..runner::embedded_delays()
    };
    let builder = runner::embedded_builder().delays(delays).mutant(m);
    let targets = Targets::embedded_with(builder).await.unwrap();
    // These mutants let one case's creates clobber another case's objects, so outcomes would
    // depend on how cases interleave: run them one case at a time for a stable matrix.
    let mut cfg = cfg.clone();
    if matches!(m, Mutant::DuplicateIds | Mutant::ConcurrentCreateSameId) {
        cfg.parallel = 1;
    }
    let cfg = &cfg;
    let selected: Vec<_> = cases::rpc()
        .into_iter()
        .filter(|c| ids.is_none_or(|ids| ids.contains(&c.id)))
        .collect();
    let report = runner::run(cfg, &targets, selected, Default::default(), &|_| {}).await;
    common::outcomes(&report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_is_caught_by_a_mutant() {
    let mut cfg = config();
    // Mutants make cases wait for transitions that never come: keep those waits short (still far
    // above the mock's millisecond delays) and the RPC deadline generous, so that only the mutant,
    // never load, makes a case fail. Fewer repeats keep the 100+ suite runs cheap.
    cfg.parallel = 32;
    cfg.params.state_timeout = Duration::from_millis(1500);
    cfg.params.poll_interval = Duration::from_millis(50);
    cfg.params.idempotent_count = 2;
    cfg.params.parallel_creates = 3;
    cfg.case_timeout = Duration::from_secs(30);
    cfg.cleanup_timeout = Duration::from_millis(300);
    let cfg = &cfg;
    // The whole suite runs twice per mutant; a case failing in only one of them runs a third
    // time, alone, against a fresh mock: a catch is a majority of the three.
    let results = common::confirmed_catches(Mutant::ALL, |m, ids| async move {
        run_under(cfg, m, ids.as_deref()).await
    })
    .await;

    let matrix = common::matrix(cases::rpc().into_iter().map(|c| c.id), &results);
    let mutant_catches: BTreeMap<&'static str, usize> = results
        .iter()
        .map(|(m, failed)| (m.name(), failed.len()))
        .collect();

    println!(
        "case x mutant sensitivity matrix ({} cases, {} mutants):",
        matrix.len(),
        Mutant::ALL.len()
    );
    for (id, ms) in &matrix {
        println!("  {id:<58} {:>3}  {}", ms.len(), ms.join(" "));
    }
    println!("cases caught per mutant:");
    for (m, n) in &mutant_catches {
        println!("  {m:<36} {n}");
    }
    let uncaught_mutants: Vec<_> = mutant_catches
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(m, _)| *m)
        .collect();
    println!("mutants no case catches: {uncaught_mutants:?}");

    let uncaught = common::uncaught(&matrix);
    assert!(
        uncaught.is_empty(),
        "cases no mutant catches: {uncaught:#?}"
    );
    // The id-clobbering mutants catch a case or not depending on which objects earlier cases left
    // in the mock's event log, so they stay out of the snapshot (they still count above).
    let unstable = [
        Mutant::DuplicateIds.name(),
        Mutant::ConcurrentCreateSameId.name(),
    ];
    let stable: BTreeMap<&String, Vec<&str>> = matrix
        .iter()
        .map(|(id, ms)| {
            let kept = ms
                .iter()
                .copied()
                .filter(|m| !unstable.contains(m))
                .collect();
            (id, kept)
        })
        .collect();
    insta::assert_yaml_snapshot!("mutant_matrix", stable);

    // How each mutant is caught: by a must case (it fails a default run), only by should
    // cases (a warning by default, a failure with --strict), or not at all.
    let levels: BTreeMap<String, iri_conformance::Requirement> = cases::rpc()
        .into_iter()
        .map(|c| (c.id, c.requirement))
        .collect();
    let catch_levels: BTreeMap<&str, &str> = results
        .iter()
        .filter(|(m, _)| !unstable.contains(&m.name()))
        .map(|(m, failed)| {
            let level = if failed
                .iter()
                .any(|id| levels[id] == iri_conformance::Requirement::Must)
            {
                "must"
            } else if failed.is_empty() {
                "uncaught"
            } else {
                "should only"
            };
            (m.name(), level)
        })
        .collect();
    println!("mutants caught only by should cases:");
    for (m, level) in &catch_levels {
        if *level == "should only" {
            println!("  {m}");
        }
    }
    insta::assert_yaml_snapshot!("mutant_catch_levels", catch_levels);
}
