//! The start-up every irikit binary shares, written once: the tracing subscriber (stderr,
//! `RUST_LOG` else a per-binary default filter, `--log-format text|json`) and the SIGINT/SIGTERM
//! handling of STYLE.md (a first signal is graceful: cancel and let in-flight work finish; a
//! second one is forceful).
//!
//! - [`LogFormat`] and [`init_tracing`]: the subscriber.
//! - [`Signals`]: SIGINT and SIGTERM, registered when created, so a signal that arrives while
//!   the binary starts is never lost to the default action; [`Signals::drain`] waits for the
//!   in-flight work after the first one.
//! - [`cancel_on_signals`]: a token the first signal cancels; the second exits with 130.
//!
//! It depends on nothing of ours; what a binary prints or logs on a signal stays in the binary
//! (through the callbacks), so log targets and messages are the binary's own.

use std::{convert::Infallible, time::Duration};

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The format a free-form flag names: `json`, else text (the binaries whose flag is a
    /// plain string).
    pub fn from_flag(flag: &str) -> Self {
        if flag == "json" {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }

    /// A value parser listing `text, json` without descriptions (the `--help` of binaries whose
    /// flag never described them).
    pub fn plain_parser() -> impl clap::builder::TypedValueParser<Value = LogFormat> {
        PossibleValuesParser::new(["text", "json"]).map(|name| LogFormat::from_flag(&name))
    }

    /// A value parser taking any string (`json`, else text), listing no values.
    pub fn lenient_parser(flag: &str) -> Result<LogFormat, Infallible> {
        Ok(LogFormat::from_flag(flag))
    }
}

/// Installs the stderr subscriber: the filter from `RUST_LOG`, else `default_filter` (e.g.
/// `info`, `warn,poollet=error`).
pub fn init_tracing(format: LogFormat, default_filter: &str) {
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

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// SIGINT and SIGTERM, registered when created. Needs a tokio runtime.
#[derive(Debug)]
pub struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Registers both; one that cannot be registered never arrives.
    pub fn register() -> Self {
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Registers both, or fails.
    pub fn try_register() -> std::io::Result<Self> {
        Ok(Signals {
            interrupt: Some(signal(SignalKind::interrupt())?),
            terminate: Some(signal(SignalKind::terminate())?),
        })
    }

    /// Resolves on the next SIGINT or SIGTERM (never, if neither could be registered).
    pub async fn next(&mut self) -> Signal {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.interrupt) => Signal::Interrupt,
            () = recv(&mut self.terminate) => Signal::Terminate,
        }
    }

    /// Waits for `work` (the in-flight work after a cancel) until it ends, the next signal
    /// arrives or `grace` passes; true when `work` ended.
    pub async fn drain(&mut self, work: impl Future<Output = ()>, grace: Duration) -> bool {
        tokio::select! {
            () = work => true,
            _ = self.next() => false,
            () = tokio::time::sleep(grace) => false,
        }
    }
}

/// A token the first SIGINT/SIGTERM cancels (after `on_first`); a second signal calls
/// `on_second` and exits with status 130. The handlers are registered before this returns.
pub fn cancel_on_signals(
    on_first: impl FnOnce() + Send + 'static,
    on_second: impl FnOnce() + Send + 'static,
) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut signals = Signals::register();
    tokio::spawn(async move {
        signals.next().await;
        on_first();
        cancel.cancel();
        signals.next().await;
        on_second();
        std::process::exit(130);
    });
    token
}
