//! The request head timeout of HTTP/1.1, from a head's first byte to the request it makes.
//!
//! hyper's own header read timeout also runs while a kept-alive connection waits for its next
//! request, so it closes an idle connection after the head timeout (10 s for clients) rather
//! than the idle timeout: a client whose pool keeps connections longer than that (reqwest's and
//! Go's keep them 90 s) sometimes sends its next request just as the connection closes, and
//! gets no answer to it. So hyper's is off, and this reader times heads instead: the clock
//! starts with the first byte read while no request is in flight, and stops when a request
//! begins (the head was read in full). A head that takes longer fails the read, and hyper
//! closes the connection. The wait before a head is the listener's idle timeout, before the
//! first request as after it.
//!
//! An HTTP/2 connection (its preface) is left alone: its requests are streams, and an idle
//! HTTP/2 client sending pings is normal.

use super::Conn;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What a connection's first bytes are when it speaks HTTP/2.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

enum Clock {
    /// Nothing read yet.
    Start,
    /// HTTP/2: not timed here.
    Off,
    /// No head being read.
    Stopped,
    /// A head is being read; `requests` were begun on the connection before its first byte.
    Running {
        requests: u64,
        until: Pin<Box<Sleep>>,
    },
}

/// `io`, whose reads fail once a request head has taken longer than `timeout`.
pub(super) struct HeadTimed<I> {
    io: I,
    conn: Arc<Conn>,
    timeout: Duration,
    clock: Clock,
}

impl<I> HeadTimed<I> {
    pub(super) fn new(io: I, conn: Arc<Conn>, timeout: Duration) -> HeadTimed<I> {
        HeadTimed {
            io,
            conn,
            timeout,
            clock: Clock::Start,
        }
    }

    fn start(&mut self) {
        self.clock = Clock::Running {
            requests: self.conn.requests.load(Ordering::Acquire),
            until: Box::pin(tokio::time::sleep_until(Instant::now() + self.timeout)),
        };
    }

    /// Looks at what a read brought.
    fn read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.clock {
            Clock::Start if http2(bytes) => self.clock = Clock::Off,
            Clock::Start => self.start(),
            // Bytes while a request is in flight are its body (or a pipelined head, which is
            // timed once the request before it is done).
            Clock::Stopped if self.conn.in_flight.load(Ordering::Acquire) == 0 => self.start(),
            _ => {}
        }
    }
}

/// Whether a connection's first bytes are HTTP/2's preface (as far as they go: three bytes at
/// least tell it from every HTTP/1.1 method).
fn http2(first: &[u8]) -> bool {
    first.len() >= 3 && H2_PREFACE.starts_with(&first[..first.len().min(H2_PREFACE.len())])
}

impl<I: AsyncRead + Unpin> AsyncRead for HeadTimed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // A request begun since the head's first byte: the head was read in full.
        if let Clock::Running { requests, .. } = this.clock
            && this.conn.requests.load(Ordering::Acquire) != requests
        {
            this.clock = Clock::Stopped;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                this.read(&filled[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match &mut this.clock {
                Clock::Running { until, .. } => match until.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request head did not arrive in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                },
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for HeadTimed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::http2;

    #[test]
    fn the_http2_preface_is_told_from_http1_methods() {
        assert!(http2(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(http2(b"PRI"));
        assert!(!http2(b"POST /mcp HTTP/1.1\r\n"));
        assert!(!http2(b"PUT / HTTP/1.1\r\n"));
        assert!(!http2(b"PR"), "too short to tell: timed as HTTP/1.1");
    }
}
