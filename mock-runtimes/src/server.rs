//! A running mock, [`MockRuntime`], on its transport: in-process duplex streams, a unix socket
//! or loopback TCP; serving, shutdown and the verification of expectations on drop.

use std::{
    fmt, io,
    ops::Deref,
    path::{Path, PathBuf},
    thread::ThreadId,
};

use iri_spec::endpoint::Endpoint;
use tokio::{io::DuplexStream, task::JoinHandle};
use tonic::transport::Channel;

use crate::{conn::MockConn, handle::MockHandle};

/// Errors of starting or stopping a mock.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating a temporary directory for the socket failed.
    #[error("create temporary directory")]
    TempDir(#[source] io::Error),
    /// Binding the listener failed.
    #[error("bind {0}")]
    Bind(String, #[source] io::Error),
    /// Binding the unix socket failed (a live server or a non-socket at the path, or IO).
    #[error(transparent)]
    Socket(#[from] iri_spec::serve::BindError),
    /// The server task failed.
    #[error("serve")]
    Serve(#[source] tonic::transport::Error),
    /// The server task panicked or was aborted.
    #[error("server task ended abnormally")]
    Join(#[source] tokio::task::JoinError),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Binds a unix listener at `path` with [`iri_spec::serve::bind_unix`]: mode 0600 from the
/// start; a stale socket is replaced, a live one or anything that is not a socket refused.
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    Ok(iri_spec::serve::bind_unix(path)?)
}

pub(crate) fn spawn_server<S, IO>(
    handle: &MockHandle,
    incoming: S,
) -> JoinHandle<Result<(), tonic::transport::Error>>
where
    S: tokio_stream::Stream<Item = io::Result<MockConn<IO>>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let router = iri_spec::serve::builder()
        .add_service(handle.machine_service().into_server())
        .add_service(handle.volume_service().into_server())
        .add_service(handle.bucket_service().into_server())
        .add_service(handle.reservation_service().into_server());
    let token = handle.core.shutdown.clone();
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
            .await
    })
}

/// Where a running mock listens, and the shared channel to it.
pub(crate) enum Transport {
    InProcess {
        dialer: InProcessDialer,
        channel: Channel,
    },
    Unix {
        path: PathBuf,
        channel: Channel,
        _dir: Option<tempfile::TempDir>,
    },
    Tcp {
        endpoint: Endpoint,
        channel: Channel,
    },
}

/// Opens in-process connections to a mock started with
/// [`MockRuntimeBuilder::start_in_process`] (see [`MockRuntime::in_process_dialer`]).
#[derive(Debug, Clone)]
pub struct InProcessDialer {
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<DuplexStream>,
}

impl InProcessDialer {
    /// A lazy channel whose every connection is a new in-process one.
    pub(crate) fn channel(&self) -> Channel {
        let dialer = self.clone();
        tonic::transport::Endpoint::from_static("http://iri-mock.local")
            .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let dialer = dialer.clone();
                async move { Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(dialer.dial()?)) }
            }))
    }

    /// A new connection (the client half of a duplex pair); an error once the mock stopped.
    pub fn dial(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(256 * 1024);
        self.tx.send(server).map_err(|_| {
            io::Error::new(io::ErrorKind::ConnectionRefused, "iri-mock runtime stopped")
        })?;
        Ok(client)
    }
}

/// A running mock. Control it through the [`MockHandle`] it derefs to; talk to it through
/// [`machine_channel`](Self::machine_channel) and friends.
///
/// Dropping it shuts the server down and verifies the expectations: a failed expectation panics
/// when the drop happens on the thread that started the mock and that thread is not already
/// panicking; otherwise the failure is printed to stderr.
pub struct MockRuntime {
    handle: MockHandle,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    transport: Transport,
    owner: ThreadId,
}

impl fmt::Debug for MockRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockRuntime")
            .field("endpoint", &self.endpoint())
            .field("mutants", &self.handle.mutants())
            .finish_non_exhaustive()
    }
}

impl MockRuntime {
    pub(crate) fn new(
        handle: MockHandle,
        server: JoinHandle<Result<(), tonic::transport::Error>>,
        transport: Transport,
    ) -> Self {
        MockRuntime {
            handle,
            server: Some(server),
            transport,
            owner: std::thread::current().id(),
        }
    }

    fn channel(&self) -> Channel {
        match &self.transport {
            Transport::InProcess { channel, .. }
            | Transport::Unix { channel, .. }
            | Transport::Tcp { channel, .. } => channel.clone(),
        }
    }

    /// A channel for `MachineRuntimeClient` (a clone of the mock's shared lazy channel).
    pub fn machine_channel(&self) -> Channel {
        self.channel()
    }

    /// A channel for `VolumeRuntimeClient`.
    pub fn volume_channel(&self) -> Channel {
        self.channel()
    }

    /// A channel for `BucketRuntimeClient`.
    pub fn bucket_channel(&self) -> Channel {
        self.channel()
    }

    /// A channel on a connection of its own (not shared with the other channels).
    pub fn new_channel(&self) -> Channel {
        match &self.transport {
            Transport::InProcess { dialer, .. } => dialer.channel(),
            Transport::Unix { path, .. } => {
                iri_spec::endpoint::connect_lazy(&Endpoint::Unix(path.clone()))
            }
            Transport::Tcp { endpoint, .. } => iri_spec::endpoint::connect_lazy(endpoint),
        }
    }

    /// A dialer of new in-process connections to the mock's server, for clients that need
    /// their own connector (e.g. a proxy a test can cut); `None` for the unix and TCP
    /// transports, whose [`endpoint`](Self::endpoint) is dialled instead.
    pub fn in_process_dialer(&self) -> Option<InProcessDialer> {
        match &self.transport {
            Transport::InProcess { dialer, .. } => Some(dialer.clone()),
            Transport::Unix { .. } | Transport::Tcp { .. } => None,
        }
    }

    /// The endpoint out-of-process clients use (`None` for the in-process transport).
    pub fn endpoint(&self) -> Option<Endpoint> {
        match &self.transport {
            Transport::InProcess { .. } => None,
            Transport::Unix { path, .. } => Some(Endpoint::Unix(path.clone())),
            Transport::Tcp { endpoint, .. } => Some(endpoint.clone()),
        }
    }

    /// The control handle (cloneable, e.g. to move into a task).
    pub fn handle(&self) -> MockHandle {
        self.handle.clone()
    }

    /// Stops serving gracefully (in-flight calls finish; hanging calls end with Unavailable),
    /// removes the socket, and verifies the expectations.
    pub async fn shutdown(mut self) -> Result<()> {
        self.handle.core.shutdown.cancel();
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
                Ok(Ok(res)) => res.map_err(Error::Serve)?,
                Ok(Err(join)) => return Err(Error::Join(join)),
                Err(_elapsed) => {
                    tracing::warn!("mock runtime did not stop within 5s; abandoning it")
                }
            }
        }
        Ok(())
    }
}

impl Deref for MockRuntime {
    type Target = MockHandle;

    fn deref(&self) -> &MockHandle {
        &self.handle
    }
}

impl Drop for MockRuntime {
    fn drop(&mut self) {
        self.handle.core.shutdown.cancel();
        if let Transport::Unix { path, .. } = &self.transport {
            let _ = std::fs::remove_file(path);
        }
        if let Err(failures) = self.handle.verify() {
            let message = format!("iri-mock: unmet expectations:\n{failures}");
            if std::thread::panicking() || std::thread::current().id() != self.owner {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}
