//! What the poollet binaries share: opening store and runtime, and the shutdown on a signal
//! (a first SIGINT or SIGTERM cancels gracefully, a second one, or 30 s, ends the wait), on
//! `irikit-bootstrap`'s log set-up and signal handlers. The signal handlers are registered
//! before the poollet starts, so an early signal is never lost to the default action.

use std::time::Duration;

pub use irikit_bootstrap::LogFormat;
use irikit_bootstrap::Signals;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Installs the tracing subscriber on stderr (`RUST_LOG`, default `info`).
pub fn init_tracing(format: LogFormat) {
    irikit_bootstrap::init_tracing(format, "info");
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
        _ = signals.next() => {}
    }
    info!("shutting down: finishing in-flight reconciles (send the signal again to exit at once)");
    token.cancel();
    tokio::select! {
        res = task => res??,
        _ = signals.next() => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => {}
    }
    Ok(())
}
