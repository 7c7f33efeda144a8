//! Reports: the human summary (result lines for failures and skips, a per-service table), JUnit
//! XML as CI systems read it, and a JSON document with everything the run knows.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::Serialize;

use crate::case::verdict::{Level, Outcome, Profile, Requirement, Service};

/// Serializes a duration as fractional seconds.
pub(crate) fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// Case id.
    pub id: String,
    /// Service.
    pub service: Service,
    /// Profile.
    pub profile: Profile,
    /// Level.
    pub level: Level,
    /// Rule.
    pub description: String,
    /// Must or should.
    pub requirement: Requirement,
    /// Why the level holds (reference section or what breaks).
    pub evidence: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Wall time.
    pub duration: Duration,
}

/// An object of an earlier run found at start.
#[derive(Debug, Clone, Serialize)]
pub struct Leftover {
    /// `machine`, `volume`, `volume-snapshot` or `bucket`.
    pub kind: &'static str,
    /// Object id.
    pub id: String,
    /// The run id label value.
    pub run_id: String,
    /// Whether it was deleted (false with `--keep-leftovers` or on error).
    pub deleted: bool,
}

/// What the final cleanup did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    /// Delete calls that returned OK.
    pub deleted: usize,
    /// Objects of the run still listed when the cleanup budget ran out (`kind/id`).
    pub remaining: Vec<String>,
    /// Errors other than NotFound.
    pub errors: Vec<String>,
    /// Wall time.
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
}

/// Versions reported by the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeVersion {
    /// `runtime_name`.
    pub name: String,
    /// `runtime_version`.
    pub version: String,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Run id (the value of the run-id label).
    pub run_id: String,
    /// Endpoints per service.
    pub endpoints: BTreeMap<Service, String>,
    /// Version answers per service (or the error).
    pub versions: BTreeMap<Service, Result<RuntimeVersion, String>>,
    /// Per case, in selection order.
    pub results: Vec<CaseResult>,
    /// Leftovers of earlier runs found at start.
    pub leftovers: Vec<Leftover>,
    /// The final cleanup.
    pub cleanup: CleanupReport,
    /// Whether the run was cancelled before all cases finished.
    pub interrupted: bool,
    /// Whether failed `should` cases count for the verdict (`RunConfig::strict`).
    pub strict: bool,
    /// Wall time.
    pub duration: Duration,
}

impl RunReport {
    /// Count of results with `status`.
    pub fn count(&self, status: &str) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome.status() == status)
            .count()
    }

    /// Failed cases of `level`.
    pub fn failed_at(&self, level: Requirement) -> usize {
        self.results
            .iter()
            .filter(|r| r.requirement == level && matches!(r.outcome, Outcome::Failed(_)))
            .count()
    }

    /// The verdict: true when no `must` case failed (no case at all when [`RunReport::strict`]) and the run
    /// was not interrupted (skips allowed unless `fail_on_skip`). Failed `should` cases are
    /// warnings unless `strict`.
    pub fn success(&self, fail_on_skip: bool) -> bool {
        !self.interrupted
            && self.failed_at(Requirement::Must) == 0
            && (!self.strict || self.failed_at(Requirement::Should) == 0)
            && (!fail_on_skip || self.count("skipped") == 0)
    }

    /// Ids of failed cases.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .map(|r| r.id.as_str())
            .collect()
    }
}

/// One progress line for a TTY (overwritten in place with `\r`): cases done/total, failures
/// so far and the slowest case still running with its age.
pub fn progress_line(
    done: usize,
    total: usize,
    failed: usize,
    slowest: Option<(&str, Duration)>,
) -> String {
    let running = slowest.map_or(String::new(), |(id, age)| {
        format!("  slowest running: {id} ({:.0}s)", age.as_secs_f64())
    });
    let line = format!("[{done}/{total}] failed {failed}{running}");
    format!("\r{line:<100.100}")
}

/// Whether to show the progress line: only when stdout and stderr are terminals and the `CI`
/// env var is unset (CI logs never get one).
pub fn progress_wanted(stdout_tty: bool, stderr_tty: bool, ci: Option<&std::ffi::OsStr>) -> bool {
    stdout_tty && stderr_tty && ci.is_none()
}

/// A result line for a failed or skipped case (`None` for a pass). A failed `should` case is a
/// `WARN` line unless the run is strict.
pub fn result_line(
    id: &str,
    requirement: Requirement,
    outcome: &Outcome,
    strict: bool,
) -> Option<String> {
    match outcome {
        Outcome::Passed => None,
        Outcome::Skipped(reason) => Some(format!("SKIP {id}: {reason}")),
        Outcome::Failed(err) if requirement == Requirement::Should && !strict => {
            Some(format!("WARN [should] {id}: {err}"))
        }
        Outcome::Failed(err) => Some(format!("FAIL [{requirement}] {id}: {err}")),
    }
}

/// The human summary: failures and skips, leftovers, cleanup, and a per-service table.
pub fn human_summary(r: &RunReport) -> String {
    let mut out = String::new();
    for res in &r.results {
        if let Some(line) = result_line(&res.id, res.requirement, &res.outcome, r.strict) {
            let _ = writeln!(out, "{line}");
            if matches!(res.outcome, Outcome::Failed(_)) {
                let _ = writeln!(out, "    {} because: {}", res.requirement, res.evidence);
            }
        }
    }
    if !r.leftovers.is_empty() {
        let deleted = r.leftovers.iter().filter(|l| l.deleted).count();
        let _ = writeln!(
            out,
            "leftovers of earlier runs: {} found, {deleted} deleted",
            r.leftovers.len()
        );
        for l in &r.leftovers {
            let _ = writeln!(
                out,
                "  {} {} (run {}){}",
                l.kind,
                l.id,
                l.run_id,
                if l.deleted { "" } else { " kept" }
            );
        }
    }
    if !r.cleanup.remaining.is_empty() || !r.cleanup.errors.is_empty() {
        let _ = writeln!(
            out,
            "cleanup: {} objects of run {} still listed, {} errors",
            r.cleanup.remaining.len(),
            r.run_id,
            r.cleanup.errors.len()
        );
        for e in r.cleanup.remaining.iter().chain(&r.cleanup.errors) {
            let _ = writeln!(out, "  {e}");
        }
    }
    let _ = writeln!(
        out,
        "\n{:<10} {:>9} {:>9} {:>11} {:>11} {:>7} {:>7}",
        "SERVICE", "MUST-PASS", "MUST-FAIL", "SHOULD-PASS", "SHOULD-FAIL", "SKIPPED", "TOTAL"
    );
    let row = |out: &mut String, name: &str, of: &[&CaseResult]| {
        let c = |req: Requirement, st: &str| {
            of.iter()
                .filter(|x| x.requirement == req && x.outcome.status() == st)
                .count()
        };
        let skipped = of
            .iter()
            .filter(|x| x.outcome.status() == "skipped")
            .count();
        let _ = writeln!(
            out,
            "{name:<10} {:>9} {:>9} {:>11} {:>11} {skipped:>7} {:>7}",
            c(Requirement::Must, "passed"),
            c(Requirement::Must, "failed"),
            c(Requirement::Should, "passed"),
            c(Requirement::Should, "failed"),
            of.len()
        );
    };
    for s in Service::ALL {
        let of: Vec<_> = r.results.iter().filter(|x| x.service == s).collect();
        if !of.is_empty() {
            row(&mut out, s.name(), &of);
        }
    }
    let all: Vec<_> = r.results.iter().collect();
    row(&mut out, "total", &all);
    let (must, should) = (
        r.failed_at(Requirement::Must),
        r.failed_at(Requirement::Should),
    );
    let verdict = if r.interrupted {
        "INTERRUPTED".to_owned()
    } else if !r.success(false) {
        "FAIL".to_owned()
    } else if should > 0 {
        format!("PASS with {should} should warnings (--strict fails them)")
    } else {
        "PASS".to_owned()
    };
    let _ = writeln!(
        out,
        "\n{verdict}: {} cases, {must} must and {should} should failed, in {:.3}s (run id {}, cleanup {:.3}s, {} deleted)",
        r.results.len(),
        r.duration.as_secs_f64(),
        r.run_id,
        r.cleanup.duration.as_secs_f64(),
        r.cleanup.deleted
    );
    out
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `<testsuite>` per service, `classname` = service, `name` = case id.
pub fn junit(r: &RunReport) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    // A failed should case of a non-strict run is written as a skip (a warning).
    let junit_status = |x: &CaseResult| match x.outcome.status() {
        "failed" if x.requirement == Requirement::Should && !r.strict => "skipped",
        st => st,
    };
    let count = |st: &str| r.results.iter().filter(|x| junit_status(x) == st).count();
    let _ = writeln!(
        out,
        "<testsuites name=\"iri-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{:.6}\">",
        r.results.len(),
        count("failed"),
        count("skipped"),
        r.duration.as_secs_f64()
    );
    for s in Service::ALL {
        let of: Vec<_> = r.results.iter().filter(|x| x.service == s).collect();
        if of.is_empty() {
            continue;
        }
        let c = |st: &str| of.iter().filter(|x| junit_status(x) == st).count();
        let time: f64 = of.iter().map(|x| x.duration.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{time:.6}\">",
            s.name(),
            of.len(),
            c("failed"),
            c("skipped")
        );
        let _ = writeln!(
            out,
            "    <properties><property name=\"run-id\" value=\"{}\"/><property name=\"endpoint\" value=\"{}\"/></properties>",
            xml_escape(&r.run_id),
            xml_escape(r.endpoints.get(&s).map_or("", String::as_str))
        );
        for x in of {
            let head = format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.6}\"",
                s.name(),
                xml_escape(&x.id),
                x.duration.as_secs_f64()
            );
            let props = format!(
                "      <properties><property name=\"requirement\" value=\"{}\"/><property name=\"evidence\" value=\"{}\"/></properties>",
                x.requirement,
                xml_escape(&x.evidence)
            );
            match &x.outcome {
                Outcome::Passed => {
                    let _ = writeln!(out, "{head}>\n{props}\n    </testcase>");
                }
                Outcome::Skipped(m) => {
                    let _ = writeln!(
                        out,
                        "{head}>\n{props}\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml_escape(m)
                    );
                }
                // A should failure of a non-strict run is a warning: reported as a skip with
                // the message, so CI dashboards do not paint the run red.
                Outcome::Failed(m) if x.requirement == Requirement::Should && !r.strict => {
                    let _ = writeln!(
                        out,
                        "{head}>\n{props}\n      <skipped message=\"should-level warning: {}\"/>\n      <system-out>{}\nrule: {}</system-out>\n    </testcase>",
                        xml_escape(m.lines().next().unwrap_or_default()),
                        xml_escape(m),
                        xml_escape(&x.description)
                    );
                }
                Outcome::Failed(m) => {
                    let first = m.lines().next().unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{head}>\n{props}\n      <failure message=\"{}\" type=\"conformance-{}\">{}\nrule: {}</failure>\n    </testcase>",
                        xml_escape(first),
                        x.requirement,
                        xml_escape(m),
                        xml_escape(&x.description)
                    );
                }
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}

/// One case in the JSON report.
#[derive(Debug, Serialize)]
pub struct JsonCase<'a> {
    /// Case id.
    pub id: &'a str,
    /// Service.
    pub service: Service,
    /// Profile name.
    pub profile: &'static str,
    /// Level name (`rpc`, `lifecycle`).
    pub level: &'static str,
    /// Rule.
    pub description: &'a str,
    /// `must` or `should`.
    pub requirement: Requirement,
    /// Why the level holds.
    pub evidence: &'a str,
    /// passed / failed / skipped.
    pub status: &'static str,
    /// Seconds.
    pub duration: f64,
    /// Skip reason or failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
}

/// Totals in the JSON report.
#[derive(Debug, Serialize)]
pub struct Totals {
    /// Cases.
    pub total: usize,
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Failed must cases (these fail the run).
    pub failed_must: usize,
    /// Failed should cases (warnings, unless the run is strict).
    pub failed_should: usize,
    /// Skipped.
    pub skipped: usize,
}

/// The JSON report.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    /// Run id.
    pub run_id: &'a str,
    /// Endpoints per service.
    pub endpoints: &'a BTreeMap<Service, String>,
    /// Version answer (or error) per service.
    pub runtime_versions: BTreeMap<Service, serde_json::Value>,
    /// Whether the run was interrupted.
    pub interrupted: bool,
    /// Whether should failures count (`--strict`).
    pub strict: bool,
    /// The verdict without `--fail-on-skip`: no must failure (no failure at all when strict).
    pub success: bool,
    /// Wall seconds.
    pub duration: f64,
    /// Totals.
    pub totals: Totals,
    /// Per case.
    pub cases: Vec<JsonCase<'a>>,
    /// Leftovers of earlier runs.
    pub leftovers: &'a [Leftover],
    /// Cleanup.
    pub cleanup: &'a CleanupReport,
}

/// Builds the JSON report.
pub fn json(r: &RunReport) -> JsonReport<'_> {
    let count = |st: &str| {
        r.results
            .iter()
            .filter(|x| x.outcome.status() == st)
            .count()
    };
    JsonReport {
        run_id: &r.run_id,
        endpoints: &r.endpoints,
        runtime_versions: r
            .versions
            .iter()
            .map(|(s, v)| {
                let v = match v {
                    Ok(RuntimeVersion { name, version }) => {
                        serde_json::json!({ "runtime_name": name, "runtime_version": version })
                    }
                    Err(e) => serde_json::json!({ "error": e }),
                };
                (*s, v)
            })
            .collect(),
        interrupted: r.interrupted,
        strict: r.strict,
        success: r.success(false),
        duration: r.duration.as_secs_f64(),
        totals: Totals {
            total: r.results.len(),
            passed: count("passed"),
            failed: count("failed"),
            failed_must: r.failed_at(Requirement::Must),
            failed_should: r.failed_at(Requirement::Should),
            skipped: count("skipped"),
        },
        cases: r
            .results
            .iter()
            .map(|x| JsonCase {
                id: &x.id,
                service: x.service,
                profile: x.profile.name(),
                level: x.level.name(),
                description: &x.description,
                requirement: x.requirement,
                evidence: &x.evidence,
                status: x.outcome.status(),
                duration: x.duration.as_secs_f64(),
                message: x.outcome.message(),
            })
            .collect(),
        leftovers: &r.leftovers,
        cleanup: &r.cleanup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunReport {
        let r = |id: &str, service, outcome, ms| CaseResult {
            id: id.to_owned(),
            service,
            profile: Profile::Core,
            level: Level::Rpc,
            description: format!("rule of {id}"),
            requirement: if id.contains("invalid_power") {
                Requirement::Should
            } else {
                Requirement::Must
            },
            evidence: format!("evidence of {id}"),
            outcome,
            duration: Duration::from_millis(ms),
        };
        RunReport {
            run_id: "icr-test".to_owned(),
            endpoints: [(Service::Machine, "unix:///run/m.sock".to_owned())].into(),
            versions: [(
                Service::Machine,
                Ok(RuntimeVersion {
                    name: "iri-mock".to_owned(),
                    version: "0.1.0".to_owned(),
                }),
            )]
            .into(),
            results: vec![
                r(
                    "machine.version.name_and_version_set",
                    Service::Machine,
                    Outcome::Passed,
                    3,
                ),
                r(
                    "machine.delete.unknown_id_not_found",
                    Service::Machine,
                    Outcome::Failed(
                        "DeleteMachine unknown id: expected NotFound, got OK (<&>)".to_owned(),
                    ),
                    5,
                ),
                r(
                    "machine.create.rejects_invalid_power",
                    Service::Machine,
                    Outcome::Failed(
                        "CreateMachine power 7: expected InvalidArgument, got OK".to_owned(),
                    ),
                    4,
                ),
                r(
                    "volume.version.name_and_version_set",
                    Service::Volume,
                    Outcome::Skipped("no volume runtime endpoint".to_owned()),
                    0,
                ),
            ],
            leftovers: vec![Leftover {
                kind: "machine",
                id: "abc".to_owned(),
                run_id: "icr-old".to_owned(),
                deleted: true,
            }],
            cleanup: CleanupReport {
                deleted: 7,
                duration: Duration::from_millis(12),
                ..Default::default()
            },
            interrupted: false,
            strict: false,
            duration: Duration::from_millis(250),
        }
    }

    #[test]
    fn should_failures_are_warnings_unless_strict() {
        let mut r = sample();
        r.results.remove(1); // the must failure
        assert!(r.success(false));
        assert!(human_summary(&r).contains("WARN [should] machine.create.rejects_invalid_power"));
        assert!(junit(&r).contains("failures=\"0\""));
        r.strict = true;
        assert!(!r.success(false));
        assert!(human_summary(&r).contains("FAIL [should] machine.create.rejects_invalid_power"));
        assert!(junit(&r).contains("type=\"conformance-should\""));
    }

    #[test]
    fn progress_line_shows_done_failures_and_the_slowest_case() {
        let line = progress_line(
            7,
            120,
            2,
            Some(("machine.state.pending_to_running", Duration::from_secs(12))),
        );
        assert!(line.starts_with("\r[7/120] failed 2"), "{line}");
        assert!(
            line.contains("slowest running: machine.state.pending_to_running (12s)"),
            "{line}"
        );
        assert_eq!(progress_line(0, 3, 0, None).trim_end(), "\r[0/3] failed 0");
    }

    #[test]
    fn progress_only_on_a_terminal_outside_ci() {
        assert!(progress_wanted(true, true, None));
        assert!(!progress_wanted(false, true, None));
        assert!(!progress_wanted(true, false, None));
        assert!(!progress_wanted(
            true,
            true,
            Some(std::ffi::OsStr::new("true"))
        ));
    }

    #[test]
    fn strict_junit_report() {
        let mut r = sample();
        r.strict = true;
        insta::assert_snapshot!(junit(&r));
    }

    #[test]
    fn junit_report() {
        insta::assert_snapshot!(junit(&sample()));
    }

    #[test]
    fn human_report() {
        insta::assert_snapshot!(human_summary(&sample()));
    }

    #[test]
    fn json_report() {
        insta::assert_yaml_snapshot!(json(&sample()));
    }
}
