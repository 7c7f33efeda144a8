//! What the poollet binaries share: the log set-up, opening store and runtime, and the signal
//! handling (a first SIGINT or SIGTERM cancels gracefully, a second one, or 30 s, ends the
//! wait). The signal handlers are registered before the poollet starts, so an early signal is
//! never lost to the default action.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

/// `--log-format`.
#[derive(Copy, Clone, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the tracing subscriber on stderr (`RUST_LOG`, default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Opens the store at `url` and connects to the runtime of `kind` (`endpoint`, or discovery
/// when empty, waiting up to `discovery_timeout` for a socket).
pub async fn open(
    url: &str,
    kind: iri_spec::endpoint::RuntimeKind,
    endpoint: &str,
    discovery_timeout: Duration,
) -> anyhow::Result<(
    std::sync::Arc<dyn irikit_api::Store>,
    tonic::transport::Channel,
)> {
    use anyhow::Context;
    let store = irikit_api::store::open(url)
        .await
        .with_context(|| format!("open store {url}"))?;
    let explicit = Some(endpoint).filter(|s| !s.is_empty());
    let endpoint = iri_spec::endpoint::discover(kind, explicit, discovery_timeout)
        .await
        .with_context(|| format!("find the {kind} runtime"))?;
    let channel = iri_spec::endpoint::connect(&endpoint)
        .await
        .with_context(|| format!("connect to {endpoint}"))?;
    Ok((store, channel))
}

/// SIGINT and SIGTERM, registered when created (so a signal that arrives while the poollet
/// starts is not lost to the default action).
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Resolves on the next SIGINT or SIGTERM (never, if neither could be registered).
    async fn next(&mut self) {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.interrupt) => {}
            () = recv(&mut self.terminate) => {}
        }
    }
}

/// Runs `poollet` (a future that stops when `token` is cancelled) until it ends or a signal
/// arrives; after the first signal it cancels and waits for in-flight work, until a second
/// signal or 30 s.
pub async fn run_until_signal<E>(
    poollet: impl Future<Output = Result<(), E>> + Send + 'static,
    token: CancellationToken,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut signals = Signals::register();
    let mut task = tokio::spawn(poollet);
    tokio::select! {
        res = &mut task => return Ok(res??),
        () = signals.next() => {}
    }
    info!("shutting down: finishing in-flight reconciles (send the signal again to exit at once)");
    token.cancel();
    tokio::select! {
        res = task => res??,
        () = signals.next() => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => {}
    }
    Ok(())
}
