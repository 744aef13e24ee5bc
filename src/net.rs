//! # Listening sockets
//!
//! Both servers (the persister and the daemon's IPC endpoint) listen on sockets bound here
//! rather than by actix, so that every accepted connection inherits one option from its
//! listener: `TCP_USER_TIMEOUT`, the kernel's limit on how long data we sent may stay
//! unacknowledged — including a peer that keeps its receive window shut, i.e. never reads.
//! The kernel then drops such a connection by itself (its buffers freed, the server's write
//! woken with an error), whatever the server was doing with it: no connection can pin what
//! it was sent for longer than that, even one the server already gave up on and that only
//! waits for its last bytes to drain.
//!
//! The connection's socket, borrowed ([`ConnSocket`]): what `on_connect` sees of an accepted
//! connection is kept in the connection's data, **without a second file descriptor** (a
//! persister at 10,000 connections must not need 20,000). The descriptor stays actix's; we
//! use it only while the connection's data lives. actix-http's HTTP/1 dispatcher drops the
//! connection's data (its own reference, and the request's with the service's state) before
//! it drops — closes — the socket, and the value `on_connect` stored revokes every clone's
//! use when dropped. Every use holds a shared lock that the revocation takes exclusively, so
//! none overlaps the close, and none can reach a descriptor number reused by another
//! connection. (The HTTP/2 dispatcher drops the socket first; nothing uses the handle on
//! HTTP/2 — websockets and their end of reading are HTTP/1 only.)
//!
//! Ending a connection: once a websocket session is over (close handshake done, last frame
//! handed to the HTTP layer), actix keeps the TCP connection until the peer closes its side —
//! and a well-behaved websocket client waits for the server to close first (RFC 6455 §7.1.1),
//! so both wait (seen: never, or until the client's own timeout). A [`TappedBody`] with
//! [`EndReading`] wraps such a response body: when it ends, it shuts the *reading* side of
//! the socket ([`ConnSocket::end_reading`]), which the HTTP layer sees as the peer's end of
//! input: it then writes what it still holds and closes (FIN) at once.
//!
//! Owns: socket creation and options, the per-connection socket handle. Calls: nothing of
//! ours (socket2, libc).

use std::any::Any;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// A listening TCP socket on `addr` (`SO_REUSEADDR`, `backlog`) whose accepted connections
/// time out when sent data stays unacknowledged for `send_timeout`.
pub fn listener(addr: SocketAddr, backlog: i32, send_timeout: Duration) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    set_send_timeout(&socket, send_timeout)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn set_send_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    // Zero would mean "the system default" (about 15 minutes of retransmissions, and no limit
    // at all on a shut window): keep at least a millisecond.
    socket.set_tcp_user_timeout(Some(timeout.max(Duration::from_millis(1))))
}

/// The `TCP_USER_TIMEOUT` of a connected or listening socket (tests; `None` = the system's).
pub fn send_timeout_of(stream: &impl std::os::fd::AsFd) -> io::Result<Option<Duration>> {
    let socket = socket2::SockRef::from(stream);
    socket.tcp_user_timeout()
}

/// One accepted connection's socket, borrowed from the HTTP layer that owns it (see the
/// module docs). The value [`ConnSocket::of`] returns belongs in the connection's data
/// (`on_connect`); clones of it (what handlers take from `conn_data`) may outlive the
/// connection, but once that value is dropped every use fails with `NotConnected`.
pub struct ConnSocket {
    shared: Arc<Borrowed>,
    /// Plain TCP (no TLS layer between the HTTP layer and the socket).
    plain: bool,
    /// The value in the connection's data: dropping it ends the borrow.
    lender: bool,
}

struct Borrowed {
    /// The descriptor, until the connection's data is dropped.
    fd: RwLock<Option<RawFd>>,
}

impl Clone for ConnSocket {
    /// Another user of the same borrow (not a lender: dropping it ends nothing).
    fn clone(&self) -> ConnSocket {
        ConnSocket {
            shared: self.shared.clone(),
            plain: self.plain,
            lender: false,
        }
    }
}

impl Drop for ConnSocket {
    fn drop(&mut self) {
        if self.lender {
            *self.shared.fd.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

impl ConnSocket {
    /// The socket of an accepted connection as actix's `on_connect` hands it over (plain TCP
    /// or rustls); `None` for anything else. Store it in the connection's data.
    pub fn of(io: &dyn Any) -> Option<ConnSocket> {
        use actix_tls::accept::rustls_0_23::TlsStream;
        use actix_web::rt::net::TcpStream;
        let (tcp, plain): (&TcpStream, bool) = match io.downcast_ref::<TcpStream>() {
            Some(t) => (t, true),
            None => (
                io.downcast_ref::<TlsStream<TcpStream>>()?.get_ref().0,
                false,
            ),
        };
        Some(ConnSocket {
            shared: Arc::new(Borrowed {
                fd: RwLock::new(Some(tcp.as_raw_fd())),
            }),
            plain,
            lender: true,
        })
    }

    /// A handle on the socket when bytes written to it reach the peer as they are (plain
    /// TCP, not TLS): what the persister's direct writer needs.
    pub fn plain(&self) -> Option<ConnSocket> {
        self.plain.then(|| self.clone())
    }

    /// Runs `f` on the descriptor while the connection holds it; `NotConnected` after.
    fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> io::Result<R>) -> io::Result<R> {
        let fd = self.shared.fd.read().unwrap_or_else(|e| e.into_inner());
        match *fd {
            // SAFETY: the descriptor is open while the lock is held (module docs).
            Some(raw) => f(unsafe { BorrowedFd::borrow_raw(raw) }),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// One vectored `sendmsg` (never blocks: the socket is non-blocking; a peer that is gone
    /// is an error, not a SIGPIPE).
    pub fn send_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.with_fd(|fd| SockRef::from(&fd).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL))
    }

    /// Starts loading what [`ConnSocket::send_vectored`] reads first (the descriptor's lock),
    /// so that a send a little later does not wait on memory ([`crate::hint`]).
    pub fn warm(&self) {
        crate::hint::prefetch(Arc::as_ptr(&self.shared), std::mem::size_of::<Borrowed>());
    }

    /// A second descriptor for the socket, for as long as the caller needs one (to wait for
    /// writability in a reactor that already has the first).
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        self.with_fd(|fd| fd.try_clone_to_owned())
    }

    /// Shuts the socket down both ways (FIN to the peer, end of input to the HTTP layer).
    pub fn shutdown(&self) {
        let _ = self.with_fd(|fd| SockRef::from(&fd).shutdown(std::net::Shutdown::Both));
    }

    /// Ends reading: the HTTP layer sees the end of the peer's input, writes what it still
    /// holds, and closes the connection.
    pub fn end_reading(&self) {
        let _ = self.with_fd(|fd| SockRef::from(&fd).shutdown(std::net::Shutdown::Read));
    }
}

/// What a [`TappedBody`] is told: each chunk the HTTP layer takes from it, and its end.
pub trait BodyTap: Unpin {
    fn taken(&mut self, _bytes: usize) {}
    fn ended(&mut self) {}
}

/// A response body that tells its [`BodyTap`] what the HTTP layer takes and when it ends.
pub struct TappedBody<B, T> {
    inner: B,
    tap: T,
}

impl<B, T> TappedBody<B, T> {
    pub fn new(inner: B, tap: T) -> TappedBody<B, T> {
        TappedBody { inner, tap }
    }
}

impl<B: MessageBody + Unpin, T: BodyTap> MessageBody for TappedBody<B, T> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let next = Pin::new(&mut this.inner).poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => this.tap.taken(chunk.len()),
            Poll::Ready(None) => this.tap.ended(),
            _ => {}
        }
        next
    }
}

/// The tap that ends its connection's reading side once the body is over (see the module
/// docs). Without a socket it does nothing.
pub struct EndReading(pub Option<ConnSocket>);

impl BodyTap for EndReading {
    fn ended(&mut self) {
        if let Some(s) = self.0.take() {
            s.end_reading();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_inherit_the_send_timeout() {
        let l = listener(
            "127.0.0.1:0".parse().unwrap(),
            16,
            Duration::from_millis(2500),
        )
        .unwrap();
        let addr = l.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert_eq!(
            send_timeout_of(&accepted).unwrap(),
            Some(Duration::from_millis(2500))
        );
    }
}
