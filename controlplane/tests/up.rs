//! `irikit up` as a user runs it: it starts the control plane against the embedded mock,
//! applies the bundled seed examples and a `-f` file, both Machines reach Running, and
//! SIGTERM stops it with exit status 0. Bad flags print one line and exit 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

fn irikit() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_irikit"));
    cmd.env_remove("IRI_MACHINE_RUNTIME_ENDPOINT")
        .env_remove("IRI_VOLUME_RUNTIME_ENDPOINT")
        .env_remove("IRIKIT_STORE");
    cmd
}

const MACHINE: &str = "apiVersion: compute.ironcore.dev/v1alpha1
kind: Machine
metadata:
  namespace: default
  name: vm-from-file
spec:
  machineClassRef:
    name: machineclass-sample
";

/// Reads lines from `rx` until `done` holds for all `wanted` substrings, or the deadline.
fn wait_for_lines(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, wanted: &[&[&str]]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let matched = |seen: &[String]| {
        wanted
            .iter()
            .all(|parts| seen.iter().any(|l| parts.iter().all(|p| l.contains(p))))
    };
    while !matched(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "irikit up did not print {wanted:?}; output:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[test]
fn up_runs_the_seed_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("machine.yaml");
    std::fs::write(&file, MACHINE).unwrap();
    let mut child = irikit()
        .args(["up", "--heartbeat-interval", "200ms", "-f"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    wait_for_lines(
        &rx,
        &mut seen,
        &[
            &["applied MachinePool machinepool-sample"],
            &["applied MachineClass machineclass-sample"],
            &["applied Machine default/vm-from-file"],
            &[
                "MachinePool irikit-machinepool: Ready=True",
                "machineclass-sample",
            ],
            &[
                "Machine default/machine-sample:",
                "pool=irikit-machinepool",
                "state=Running",
            ],
            &[
                "Machine default/vm-from-file:",
                "state=Running",
                "machineID=iri-mock://",
            ],
        ],
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let exit = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("irikit up exits after SIGTERM")
        .unwrap();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    assert_eq!(exit.code(), Some(0), "output:\n{}", seen.join("\n"));
    assert!(
        seen.iter().any(|l| l == "up: shutting down"),
        "{}",
        seen.join("\n")
    );
}

#[test]
fn up_bad_input_prints_one_line_and_exits_2() {
    for args in [
        &["up", "--machine-endpoint", "ftp://nope"][..],
        &["up", "--no-examples", "-f", "/nonexistent/irikit.yaml"][..],
        &["up", "--store", "mysql://x"][..],
    ] {
        let out = irikit().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("irikit: "), "{args:?}: {err}");
    }
    // A file that does not parse stops `up` after start-up: still one line and exit 2.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: compute.ironcore.dev/v1alpha1\nkind: Nope\n",
    )
    .unwrap();
    let out = irikit()
        .args(["up", "--no-examples", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.yaml"), "{err}");
}
