//! A connection between a poollet and its runtime that the suite can cut and restore: the
//! poollet's channel dials the runtime through a [`Gate`], and cutting the gate severs every
//! open connection and refuses new ones, as a crashed runtime or a broken network would. It
//! works the same for a runtime on a unix socket or TCP and for the embedded mock (dialled in
//! process), so the unreachable-runtime cases run against real endpoints too.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use iri_spec::endpoint::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::Channel;

/// Where a gate forwards to.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// A runtime endpoint (unix socket or TCP).
    Endpoint(Endpoint),
    /// The embedded mock, dialled in process.
    InProcess(iri_mock::InProcessDialer),
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Endpoint(e) => write!(f, "{e}"),
            Upstream::InProcess(_) => f.write_str("embedded iri-mock (in-process)"),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

#[derive(Debug)]
struct Inner {
    upstream: Upstream,
    /// `Some(token)` while open (cancelled on cut); `None` while cut.
    open: Mutex<Option<CancellationToken>>,
}

/// A cuttable connection to one runtime. Cheap to clone (clones share the state).
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl Gate {
    /// An open gate to `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        Gate {
            inner: Arc::new(Inner {
                upstream,
                open: Mutex::new(Some(CancellationToken::new())),
            }),
        }
    }

    /// What the gate forwards to.
    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    /// Severs every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        if let Some(token) = self.lock().take() {
            token.cancel();
        }
        tracing::info!(upstream = %self.inner.upstream, "gate cut");
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        let mut open = self.lock();
        if open.is_none() {
            *open = Some(CancellationToken::new());
            tracing::info!(upstream = %self.inner.upstream, "gate restored");
        }
    }

    /// Whether the gate is cut.
    pub fn is_cut(&self) -> bool {
        self.lock().is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CancellationToken>> {
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A lazily connected channel through the gate (re-dials after a cut is restored).
    pub fn channel(&self) -> Channel {
        let gate = self.clone();
        tonic::transport::Endpoint::from_static("http://gate.iri-conformance.local")
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let gate = gate.clone();
                async move { gate.dial().await.map(hyper_util::rt::TokioIo::new) }
            }))
    }

    async fn dial(&self) -> io::Result<GatedStream> {
        let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "gate is cut");
        let token = self.lock().clone().ok_or_else(refused)?;
        let io: Box<dyn Io> = match &self.inner.upstream {
            Upstream::Endpoint(Endpoint::Unix(path)) => {
                Box::new(tokio::net::UnixStream::connect(path).await?)
            }
            Upstream::Endpoint(Endpoint::Tcp { host, port }) => {
                Box::new(tokio::net::TcpStream::connect((host.as_str(), *port)).await?)
            }
            Upstream::InProcess(dialer) => Box::new(dialer.dial()?),
        };
        // A cut while dialling wins.
        if token.is_cancelled() {
            return Err(refused());
        }
        Ok(GatedStream {
            io,
            read_cut: Box::pin(token.clone().cancelled_owned()),
            write_cut: Box::pin(token.cancelled_owned()),
        })
    }
}

/// A client stream that fails every read and write once its gate is cut.
struct GatedStream {
    io: Box<dyn Io>,
    read_cut: Pin<Box<WaitForCancellationFutureOwned>>,
    write_cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

fn severed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "gate cut the connection")
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
