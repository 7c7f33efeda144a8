//! What the `iri-conformance` and `irikit` binaries share: the log format flag, tracing set-up,
//! endpoint parsing and the signal handling (first signal graceful, second exits at once).

use iri_spec::endpoint::Endpoint;
use tokio_util::sync::CancellationToken;

/// `--log-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the stderr subscriber: `RUST_LOG`, else `default_filter`.
pub(crate) fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `unix:///path`, `tcp://host:port`, or a bare socket path.
pub(crate) fn endpoint(s: &str) -> anyhow::Result<Endpoint> {
    if s.contains("://") || s.starts_with("unix:") {
        Ok(s.parse()?)
    } else {
        Ok(Endpoint::unix(s))
    }
}

/// Resolves on the next SIGINT or SIGTERM.
async fn signal() {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A token cancelled by the first SIGINT/SIGTERM (after printing `first`); a second signal
/// prints `second` and exits with 130.
pub(crate) fn cancel_on_signals(first: &'static str, second: &'static str) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        signal().await;
        if !first.is_empty() {
            eprintln!("{first}");
        }
        t.cancel();
        signal().await;
        eprintln!("{second}");
        std::process::exit(130);
    });
    token
}
