//! The conformance check both real-runtime crates run in `cargo test` (included by path from
//! their `tests/`): the suite's cases of one service, profile and level against child-process
//! runtimes (the lifecycle level drives irikit's store, schedulers and poollets against them), asserting that every selected case passed (a skipped case counts as a failure:
//! cases that do not apply are removed from the selection up front, with their reason), except
//! a deletion-phase case that found the object already gone, which is printed as a skip.
#![allow(dead_code, unreachable_pub, clippy::print_stderr)]

use std::time::Duration;

use iri_conformance::{
    Outcome, Params, RunConfig, Service, cases,
    runner::{self, LevelFilter, ProfileFilter, Selection, Targets},
};
use tokio_util::sync::CancellationToken;

/// One run of the suite.
pub struct Suite {
    /// The service whose cases run.
    pub service: Service,
    /// The profile.
    pub profile: ProfileFilter,
    /// The level: `Rpc` (default) or `Lifecycle`.
    pub level: LevelFilter,
    /// Case parameters (class, image, state timeout, ...).
    pub params: Params,
    /// Cases at once.
    pub parallel: usize,
    /// Timeout of one case.
    pub case_timeout: Duration,
    /// Cases removed from the selection: (id regex, why it does not apply).
    pub not_applicable: Vec<(&'static str, &'static str)>,
    /// Id regexes the selection is narrowed to (empty: every case).
    pub focus: Vec<&'static str>,
}

impl Suite {
    /// The core profile of `service` with the runner's default parameters.
    pub fn new(service: Service, profile: ProfileFilter) -> Self {
        Suite {
            service,
            profile,
            level: LevelFilter::Rpc,
            params: Params::default(),
            parallel: 4,
            case_timeout: Duration::from_secs(60),
            not_applicable: Vec::new(),
            focus: Vec::new(),
        }
    }

    /// Runs the suite against `targets`; panics listing every case that did not pass.
    pub async fn check(self, targets: &Targets) -> runner::RunReport {
        let skip = self
            .not_applicable
            .iter()
            .map(|(id, reason)| {
                eprintln!("not applicable: {id}: {reason}");
                regex::Regex::new(id).expect("case id regex")
            })
            .collect();
        let config = RunConfig {
            selection: Selection {
                focus: self
                    .focus
                    .iter()
                    .map(|f| regex::Regex::new(f).expect("case id regex"))
                    .collect(),
                skip,
                profile: self.profile,
                level: self.level,
            },
            params: self.params,
            parallel: self.parallel,
            case_timeout: self.case_timeout,
            cleanup_timeout: Duration::from_secs(120),
            keep_leftovers: false,
            run_id: None,
            lifecycle: Default::default(),
            // irikit's own runtimes are held to the should cases too.
            strict: true,
            running: Default::default(),
        };
        let selected: Vec<_> = config
            .selection
            .apply(cases::all())
            .into_iter()
            // The lifecycle level needs both runtimes: its machine cases attach storage volumes.
            .filter(|c| c.service == self.service || self.level == LevelFilter::Lifecycle)
            .collect();
        let n_selected = selected.len();
        assert!(n_selected > 0, "no {} case selected", self.service);
        let report = runner::run(
            &config,
            targets,
            selected,
            CancellationToken::new(),
            &|_| {},
        )
        .await;
        // A deletion-phase case skips when the runtime forgot the object before the next List
        // could see it: legal (a real runtime may tear down in microseconds) and a race with the
        // scheduler, so that skip is printed, not failed. Every other skip fails.
        let unobservable = |r: &&runner::CaseResult| r.outcome.is_gone_at_once();
        for r in report.results.iter().filter(unobservable) {
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("skip: {}: {:?}\n", r.id, r.outcome),
            );
        }
        let not_passed: Vec<String> = report
            .results
            .iter()
            .filter(|r| r.outcome != Outcome::Passed && !unobservable(r))
            .map(|r| format!("{} [{}]: {:?}", r.id, r.outcome.status(), r.outcome))
            .collect();
        eprintln!(
            "conformance {} {:?} {:?}: {} cases, {} passed in {:.1}s (cleanup: {} deleted, {} left)",
            self.service,
            self.level,
            self.profile,
            n_selected,
            report.count("passed"),
            report.duration.as_secs_f64(),
            report.cleanup.deleted,
            report.cleanup.remaining.len(),
        );
        assert!(
            not_passed.is_empty() && !report.interrupted,
            "{} of {n_selected} cases did not pass:\n{}",
            not_passed.len(),
            not_passed.join("\n")
        );
        assert_eq!(report.results.len(), n_selected);
        assert!(
            report.cleanup.remaining.is_empty() && report.cleanup.errors.is_empty(),
            "cleanup: {:?}",
            report.cleanup
        );
        report
    }
}
