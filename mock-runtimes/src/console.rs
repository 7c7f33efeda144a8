//! A scripted serial console served the way IronCore's Exec URLs are: the Kubernetes
//! remotecommand streaming protocol over WebSocket, subprotocol `v5.channel.k8s.io`.
//!
//! The protocol, the one-time tokens and the one-console-per-machine rule are `iri-exec`'s
//! [`iri_exec::server::ConsoleServer`] (the same code the real machine runtime serves its VMs'
//! serial ports with); this module plugs in the scripted backend: the console prints
//! [`banner`] on stdout, then echoes every stdin byte back on stdout. Closing stdin ends the
//! session with a `Success` status.
//!
//! [`ConsoleServer::start`] binds loopback TCP; [`ConsoleServer::issue`] mints the URL Exec
//! answers, `<base-url>/exec/<token>`: a token works once and expires after [`TOKEN_TTL`], and
//! a machine has at most one console at a time (a second Exec while one is open is
//! FailedPrecondition).

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

use iri_exec::server::{Attached, Opener};
pub use iri_exec::{
    CLOSE, ERROR, RESIZE, STDIN, STDOUT, SUBPROTOCOL,
    server::{TOKEN_TTL, Violations},
};
use tokio::sync::mpsc;
use tonic::Status;

/// The banner the scripted console prints first.
#[must_use]
pub fn banner(machine_id: &str) -> String {
    format!("iri-mock console of machine {machine_id}\r\n")
}

/// The scripted backend: banner, then echo (or drop, with `no_echo`) every stdin chunk.
fn scripted() -> Opener {
    Arc::new(|machine_id: &str, violations: Violations| {
        let (out_tx, output) = mpsc::channel::<Vec<u8>>(64);
        let (input, mut in_rx) = mpsc::channel::<Vec<u8>>(64);
        let banner = banner(machine_id).into_bytes();
        tokio::spawn(async move {
            if out_tx.send(banner).await.is_err() {
                return;
            }
            while let Some(data) = in_rx.recv().await {
                if !violations.no_echo && out_tx.send(data).await.is_err() {
                    return;
                }
            }
        });
        Ok(Attached { output, input })
    })
}

/// The console endpoint; cheap to clone.
#[derive(Clone, Debug)]
pub struct ConsoleServer(iri_exec::server::ConsoleServer);

impl ConsoleServer {
    /// Bind `127.0.0.1:0` and serve consoles until the runtime exits.
    ///
    /// # Errors
    /// The bind fails.
    pub async fn start() -> std::io::Result<Self> {
        Ok(Self(
            iri_exec::server::ConsoleServer::start(loopback(), scripted()).await?,
        ))
    }

    /// Bind `127.0.0.1:0` without a runtime; consoles are served from the first
    /// [`Self::issue`] on (which runs inside one).
    ///
    /// # Errors
    /// The bind fails.
    pub fn bind() -> std::io::Result<Self> {
        Ok(Self(iri_exec::server::ConsoleServer::bind(
            loopback(),
            scripted(),
        )?))
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn base_url(&self) -> &str {
        self.0.base_url()
    }

    /// The URL Exec answers for `machine_id`, or FailedPrecondition while its console is open.
    ///
    /// # Errors
    /// A console of that machine is open.
    pub fn issue(&self, machine_id: &str) -> Result<String, Status> {
        self.0.issue(machine_id)
    }

    /// [`Self::issue`] with deliberate violations (mutants).
    ///
    /// # Errors
    /// A console of that machine is open (unless `violations.second_allowed`).
    pub fn issue_with(&self, machine_id: &str, violations: Violations) -> Result<String, Status> {
        self.0.issue_with(machine_id, violations)
    }

    /// Whether `machine_id` has an open console.
    #[must_use]
    pub fn is_open(&self, machine_id: &str) -> bool {
        self.0.is_open(machine_id)
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}
