//! The `volumepoollet` binary: flag validation (one line, non-zero exit), a run against
//! iri-mock on a unix socket, and graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_volumepoollet");

async fn fails_with_one_line(extra: &[&str]) -> String {
    let out = tokio::process::Command::new(BIN)
        .args(["--volume-pool-name", "p", "--provider-id", "ironcore://p"])
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "{extra:?} must fail");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.lines().count(), 1, "{extra:?}: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[tokio::test]
async fn bad_flags_print_one_line_and_fail() {
    let stderr = fails_with_one_line(&["--status-timeout", "20s"]).await;
    assert!(stderr.contains("status timeout"), "{stderr}");
    let stderr = fails_with_one_line(&["--controllers", "volume,bucket"]).await;
    assert!(stderr.contains("\"bucket\""), "{stderr}");
    let stderr = fails_with_one_line(&["--max-concurrent-reconciles", "0"]).await;
    assert!(stderr.contains("concurrent"), "{stderr}");
    let stderr = fails_with_one_line(&["--store", "nosuch://x"]).await;
    assert!(stderr.contains("store"), "{stderr}");
}

#[tokio::test]
async fn runs_against_a_unix_socket_and_stops_on_sigterm() {
    common::run_against_unix_mock(
        BIN,
        &[
            "--volume-pool-name",
            "p",
            "--provider-id",
            "ironcore://p",
            "--store",
            "memory",
            "--status-interval",
            "200ms",
            "--status-timeout",
            "100ms",
        ],
        "--volume-runtime-endpoint",
        "volume pool created",
    )
    .await;
}
