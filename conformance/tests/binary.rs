//! The `iri-conformance` binary against the standalone `iri-mock-runtime` on unix sockets: a clean
//! runtime passes (exit 0), a runtime started with `--mutant` fails (exit 1) with the expected case
//! ids in the `--json` report, and a runtime with only a machine socket skips the rest with reasons.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The `iri-mock-runtime` binary of the same profile and target dir (built on demand).
fn mock_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/binary-<hash> -> target/<profile>/iri-mock-runtime
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("iri-mock-runtime");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "iri-mock", "--bin", "iri-mock-runtime"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if std::env::var_os("CARGO_TARGET_DIR").is_none()
            && let Some(target) = dir.parent()
        {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd
            .status()
            .expect("running cargo build for iri-mock-runtime");
        assert!(status.success(), "building iri-mock-runtime failed");
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

struct Mock {
    child: Child,
    _dir: tempfile::TempDir,
    machine: String,
    volume: String,
    bucket: String,
}

impl Mock {
    /// `iri-conformance run` against the mock's machine and volume endpoints, then `extra`.
    fn run_machine_volume(&self, extra: &[&str]) -> Command {
        let mut run = Command::new(env!("CARGO_BIN_EXE_iri-conformance"));
        run.args(["run", "--machine-endpoint", &self.machine])
            .args(["--volume-endpoint", &self.volume])
            .args(extra);
        run
    }

    /// The arguments naming the mock's three endpoints, then `extra`.
    fn endpoints<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "--machine-endpoint",
            self.machine.as_str(),
            "--volume-endpoint",
            self.volume.as_str(),
            "--bucket-endpoint",
            self.bucket.as_str(),
        ];
        args.extend_from_slice(extra);
        args
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mock(extra: &[&str]) -> Mock {
    let dir = tempfile::tempdir().unwrap();
    let sock = |n: &str| dir.path().join(n);
    let (m, v, b) = (
        sock("machine.sock"),
        sock("volume.sock"),
        sock("bucket.sock"),
    );
    let child = Command::new(mock_binary())
        .arg("--machine-socket")
        .arg(&m)
        .arg("--volume-socket")
        .arg(&v)
        .arg("--bucket-socket")
        .arg(&b)
        .args([
            "--provision-delay",
            "5ms",
            "--apply-delay",
            "2ms",
            "--power-delay",
            "2ms",
            "--terminate-delay",
            "500ms",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while ![&m, &v, &b].iter().all(|p| p.exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "mock sockets did not appear"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let url = |p: &Path| format!("unix://{}", p.display());
    Mock {
        child,
        machine: url(&m),
        volume: url(&v),
        bucket: url(&b),
        _dir: dir,
    }
}

/// What `iri-conformance list` with `args` prints.
fn list(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_iri-conformance"))
        .arg("list")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_conformance(args: &[&str]) -> (i32, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let junit = dir.path().join("report.xml");
    let out = Command::new(env!("CARGO_BIN_EXE_iri-conformance"))
        .arg("run")
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .args(["--state-timeout", "5s", "--case-timeout", "20s"])
        .env_remove("IRI_MACHINE_RUNTIME_ENDPOINT")
        .env_remove("IRI_VOLUME_RUNTIME_ENDPOINT")
        .env_remove("IRI_BUCKET_RUNTIME_ENDPOINT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // stdout is a pipe here: never a progress line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("\r["),
        "progress line without a TTY: {stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_else(|e| {
            panic!(
                "no json report ({e}); stdout: {stdout}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }))
        .unwrap();
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.starts_with("<?xml") && xml.contains("<testsuite name=\""),
        "{xml}"
    );
    (out.status.code().unwrap_or(-1), report, stdout)
}

fn ids_with(report: &serde_json::Value, status: &str) -> Vec<String> {
    let mut ids: Vec<String> = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == status)
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn standalone_mock_passes() {
    // With its scripted console, so the Exec console cases run instead of skipping.
    let mock = start_mock(&["--console"]);
    let (code, report, stdout) = run_conformance(&mock.endpoints(&[]));
    assert_eq!(
        ids_with(&report, "failed"),
        Vec::<String>::new(),
        "{stdout}"
    );
    assert_eq!(
        ids_with(&report, "skipped"),
        Vec::<String>::new(),
        "{stdout}"
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(report["totals"]["passed"].as_u64().unwrap() >= 120);
    assert_eq!(
        report["runtime_versions"]["machine"]["runtime_name"],
        "iri-mock"
    );
    assert!(stdout.contains("PASS:"), "{stdout}");
}

#[test]
fn standalone_mock_with_mutant_fails_with_expected_ids() {
    let mock = start_mock(&["--mutant", "delete-unknown-ok"]);
    let (code, report, stdout) = run_conformance(&mock.endpoints(&[]));
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        ids_with(&report, "failed"),
        [
            "machine.delete.not_found_after_gone",
            "machine.delete.unknown_id_not_found",
            "poollet.machine.delete_unknown_not_found",
        ],
        "{stdout}"
    );
    assert!(stdout.contains("FAIL [must] machine.delete.unknown_id_not_found: DeleteMachine unknown id: expected NotFound, got OK"), "{stdout}");
}

/// Issue 14's acceptance: a runtime that differs from the mock only in the five behaviours a
/// runtime written from reference §1–§3 shows (unknown power values accepted, a machine volume
/// without a source, a volume with two data sources or an unknown snapshot source) fails only
/// `should` cases: exit 0 by default, exit 1 with `--strict`.
#[test]
fn five_should_deviations_pass_by_default_and_fail_strict() {
    let mock = start_mock(&[
        "--mutant",
        "invalid-power-accepted",
        "--mutant",
        "volume-source-unchecked",
        "--mutant",
        "volume-two-sources-accepted",
        "--mutant",
        "unknown-snapshot-source-accepted",
    ]);
    let endpoints = mock.endpoints(&["--level", "rpc"]);
    let five = [
        "machine.create.rejects_invalid_power",
        "machine.create.rejects_volume_without_source",
        "machine.power.invalid_value",
        "volume.create.rejects_two_data_sources",
        "volume.create.rejects_unknown_snapshot_source",
    ];
    let (code, report, stdout) = run_conformance(&endpoints);
    assert_eq!(ids_with(&report, "failed"), five, "{stdout}");
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(report["totals"]["failed_must"], 0);
    assert_eq!(report["totals"]["failed_should"], 5);
    assert_eq!(report["success"], true);
    for c in report["cases"].as_array().unwrap() {
        if c["status"] == "failed" {
            assert_eq!(c["requirement"], "should", "{c}");
            assert!(c["evidence"].as_str().unwrap().contains('§'), "{c}");
        }
    }
    assert!(
        stdout.contains("WARN [should] machine.power.invalid_value:")
            && stdout.contains("PASS with 5 should warnings"),
        "{stdout}"
    );
    let mut strict = endpoints.to_vec();
    strict.push("--strict");
    let (code, report, stdout) = run_conformance(&strict);
    assert_eq!(ids_with(&report, "failed"), five, "{stdout}");
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("FAIL [should] machine.power.invalid_value:"),
        "{stdout}"
    );
}

#[test]
fn machine_endpoint_alone_skips_the_rest_with_reasons() {
    let mock = start_mock(&[]);
    let (code, report, stdout) = run_conformance(&[
        "--machine-endpoint",
        &mock.machine,
        "--focus",
        "^(machine|volume|bucket)\\.(version|status|classes)\\.",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(ids_with(&report, "failed").is_empty(), "{stdout}");
    let skipped = ids_with(&report, "skipped");
    assert!(
        skipped.iter().all(|id| !id.starts_with("machine.")) && !skipped.is_empty(),
        "{skipped:?}"
    );
    assert!(
        stdout.contains("SKIP volume.version.name_and_version_set: no volume runtime endpoint"),
        "{stdout}"
    );
    // --fail-on-skip turns those skips into a failing exit status.
    let (code, _, _) = run_conformance(&[
        "--machine-endpoint",
        &mock.machine,
        "--focus",
        "^volume\\.version\\.",
        "--fail-on-skip",
    ]);
    assert_eq!(code, 1);
}

#[test]
fn hanging_standalone_runtime_ends_at_timeouts() {
    let mock = start_mock(&["--fault", "*:always:hang"]);
    let start = Instant::now();
    let out = mock
        .run_machine_volume(&[])
        .args([
            "--focus",
            "^machine\\.(version|create|delete)\\.",
            "--rpc-timeout",
            "200ms",
            "--case-timeout",
            "1s",
        ])
        .args(["--state-timeout", "300ms", "--cleanup-timeout", "1s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        stdout.contains("no answer within the RPC deadline"),
        "{stdout}"
    );
}

/// SIGINT and SIGTERM end a run against a runtime whose ListMachines hangs within 5 s plus the
/// cleanup budget, at the default RPC deadline (10 s): the cleanup never waits on the method.
#[test]
fn a_signal_ends_a_hanging_run_within_5s_plus_the_cleanup_budget() {
    // At 3 s the run is in its preflight (the leftover scan waits on ListMachines); at 13 s
    // cases are running and the cleanup has objects to delete.
    for (signal, after) in [("-INT", 3), ("-TERM", 13)] {
        let mock = start_mock(&["--fault", "ListMachines:always:hang"]);
        let mut child = mock
            .run_machine_volume(&["--cleanup-timeout", "2s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(after));
        let sent = Instant::now();
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            assert!(
                sent.elapsed() < Duration::from_secs(20),
                "{signal}: still running 20 s after the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = sent.elapsed();
        eprintln!("{signal} after {after} s: exited {code:?} {took:?} after the signal");
        assert_eq!(code, Some(130), "{signal}");
        assert!(took < Duration::from_secs(5 + 2), "{signal}: {took:?}");
    }
}

#[test]
fn list_and_bad_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_iri-conformance"))
        .args(["list", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().len() >= 120);
    // Every case states its level and evidence.
    for c in v.as_array().unwrap() {
        assert!(
            c["requirement"] == "must" || c["requirement"] == "should",
            "{c}"
        );
        assert!(!c["evidence"].as_str().unwrap().is_empty(), "{c}");
    }
    let text = list(&["--focus", "^machine\\.create\\.(rejects|unknown)_"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("machine.create.unknown_class_fails") && l.contains(" must "))
            && text
                .lines()
                .any(|l| l.starts_with("machine.create.rejects_invalid_power")
                    && l.contains(" should "))
            && text.contains("evidence: §"),
        "{text}"
    );
    let text = list(&["--profile", "go-poollet"]);
    assert!(
        text.lines().filter(|l| l.starts_with("poollet.")).count() >= 15,
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_iri-conformance"))
        .args(["run", "--machine-endpoint", "ftp://nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_iri-conformance"))
        .args(["run", "--focus", "^nothing$"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
