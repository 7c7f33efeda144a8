//! The `machinepoollet` binary: flag validation, a run against iri-mock on a unix socket, and
//! graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_machinepoollet");

#[tokio::test]
async fn bad_flags_print_one_line_and_fail() {
    let out = tokio::process::Command::new(BIN)
        .args([
            "--machine-pool-name",
            "p",
            "--provider-id",
            "ironcore://p",
            "--heartbeat-status-timeout",
            "20s",
        ])
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[tokio::test]
async fn runs_against_a_unix_socket_and_stops_on_sigterm() {
    common::run_against_unix_mock(
        BIN,
        &[
            "--machine-pool-name",
            "p",
            "--provider-id",
            "ironcore://p",
            "--store",
            "memory",
            "--heartbeat-interval",
            "200ms",
            "--heartbeat-status-timeout",
            "100ms",
        ],
        "--machine-runtime-endpoint",
        "machine pool created",
    )
    .await;
}
