//! What both real runtimes' binaries do alike around their own configuration (included with
//! `#[path]` by ch-machine-runtime's and file-volume-runtime's `main.rs`, so neither depends on
//! the other): the listening socket from `--socket` / `--endpoint`, tracing and the exit code,
//! and the shutdown token of SIGINT/SIGTERM.

use std::{future::Future, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// The unix socket to listen on: `--socket`, else `--endpoint`; a path, `unix:///absolute/path`
/// or `unix:path` (no other scheme).
pub(crate) fn socket_path(socket: Option<&str>, endpoint: Option<&str>) -> anyhow::Result<PathBuf> {
    let raw = socket
        .or(endpoint)
        .context("--socket (or --endpoint unix:///path) is required")?;
    if let Some(path) = raw.strip_prefix("unix://") {
        anyhow::ensure!(
            path.starts_with('/'),
            "endpoint {raw:?}: use unix:///absolute/path"
        );
        return Ok(PathBuf::from(path));
    }
    if let Some(path) = raw.strip_prefix("unix:") {
        return Ok(PathBuf::from(path));
    }
    anyhow::ensure!(
        !raw.contains("://"),
        "endpoint {raw:?}: only unix sockets are supported"
    );
    Ok(PathBuf::from(raw))
}

/// Tracing in `log_format` (`text` or `json`, level `info` unless `RUST_LOG` says), then `run`;
/// its error is printed as `<name>: <error>` and fails the process.
pub(crate) async fn main(
    name: &str,
    log_format: &str,
    run: impl Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    irikit_bootstrap::init_tracing(irikit_bootstrap::LogFormat::from_flag(log_format), "info");
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Cancelled at the first SIGINT or SIGTERM (the server stops gracefully); a second one exits
/// at once.
pub(crate) fn shutdown_token() -> CancellationToken {
    irikit_bootstrap::cancel_on_signals(
        || tracing::info!("shutting down (a second signal exits at once)"),
        || {},
    )
}
