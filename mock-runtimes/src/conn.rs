//! A transport wrapper that lets a fault close the connection a call came in on.
//!
//! Every accepted stream (duplex half, unix or TCP stream) is wrapped in [`MockConn`], whose
//! `ConnectInfo` ([`ConnHandle`]) tonic puts into each request's extensions. Killing the handle
//! makes every further read and write of that stream fail, so hyper drops the connection and the
//! client sees a transport error.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

#[derive(Debug, Default)]
struct ConnState {
    killed: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
}

/// Handle to one server-side connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnHandle(Arc<ConnState>);

impl ConnHandle {
    pub(crate) fn kill(&self) {
        self.0.killed.store(true, Ordering::SeqCst);
        self.0.read_waker.wake();
        self.0.write_waker.wake();
    }

    fn killed(&self) -> bool {
        self.0.killed.load(Ordering::SeqCst)
    }
}

/// A server-side stream that can be killed through its [`ConnHandle`].
#[derive(Debug)]
pub(crate) struct MockConn<IO> {
    io: IO,
    handle: ConnHandle,
}

impl<IO> MockConn<IO> {
    pub(crate) fn new(io: IO) -> Self {
        MockConn {
            io,
            handle: ConnHandle::default(),
        }
    }
}

fn reset() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection dropped by iri-mock fault injection",
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for MockConn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.handle.0.read_waker.register(cx.waker());
        if self.handle.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for MockConn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.handle.0.write_waker.register(cx.waker());
        if self.handle.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.handle.0.write_waker.register(cx.waker());
        if self.handle.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // Without this hyper would flatten every frame into one buffer first (a copy per write).
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.handle.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<IO: Send + 'static> Connected for MockConn<IO> {
    type ConnectInfo = ConnHandle;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.handle.clone()
    }
}
