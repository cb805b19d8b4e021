//! A deadline on the HTTP part of a connection: a client must have its WebSocket upgrade
//! answered within [`crate::BrokerConfig::upgrade_timeout`] of connecting, or the
//! connection fails. axum serves HTTP without a header-read timeout, so a client that
//! sends half a request header and stops held its connection (and a slot of the
//! per-address cap) for as long as it liked.
//!
//! The deadline is lifted when the server writes its `101 Switching Protocols`: from then
//! on the connection is a WebSocket, watched by the signalling task's keepalive.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// Accepts TCP connections whose HTTP exchange must end in an upgrade in time.
pub(super) struct DeadlineListener {
    pub(super) inner: TcpListener,
    pub(super) timeout: Duration,
}

impl Listener for DeadlineListener {
    type Io = UpgradeDeadline;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        let io = UpgradeDeadline {
            stream,
            deadline: Some(Box::pin(tokio::time::sleep(self.timeout))),
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that fails its reads and writes once its deadline passes, until it has
/// written an upgrade answer.
pub(super) struct UpgradeDeadline {
    stream: TcpStream,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl UpgradeDeadline {
    pub(super) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether the deadline passed (polling it also wakes the task when it does).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }
}

fn too_slow() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the HTTP upgrade did not complete in time",
    )
}

impl AsyncRead for UpgradeDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(too_slow()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpgradeDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.deadline.is_some() {
            if buf.starts_with(b"HTTP/1.1 101 ") {
                // The upgrade is answered: the WebSocket's own keepalive takes over.
                self.deadline = None;
            } else if self.expired(cx) {
                return Poll::Ready(Err(too_slow()));
            }
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.deadline.is_some()
            && bufs
                .first()
                .is_some_and(|b| b.starts_with(b"HTTP/1.1 101 "))
        {
            self.deadline = None;
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
