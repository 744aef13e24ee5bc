//! # Direct socket writes: the one place the persister bypasses actix
//!
//! A plain-TCP websocket connection (no TLS, no `Expect` header) is written to by us, not by
//! actix's HTTP/1 dispatcher. Why: measured for issue 17 (BENCHMARKS.md, "Object fanout"),
//! most of the server's CPU per delivery went into the dispatcher's turn for each
//! notification on each connection (a cross-thread task wakeup, a poll of the whole
//! dispatcher state machine, a copy into its write buffer) around one `send` per frame.
//! Written through, the fanout itself sends each subscriber the frames of one round (the
//! updates of one object announced together) in one vectored `send`, under the send
//! queue's lock, straight from the frames' shared buffers.
//!
//! How, with actix-web still accepting, parsing the upgrade request and reading the socket:
//! - The `/ws` handler does not return its response while the session lives. While a handler
//!   runs, the dispatcher only reads (it feeds the request's payload, which is the websocket
//!   input, with its usual backpressure) and writes nothing, so the socket's output is ours.
//!   The handler writes the `101 Switching Protocols` head itself, as the send queue's first
//!   frame, then waits for the writer below to end. (A request with `Expect` could have
//!   actix write `100 Continue`, so it takes the dispatcher path.)
//! - Frames are sent by whoever queues them ([`crate::persist::hub`]'s write-through)
//!   while the socket takes them; once it does not, the rest is queued and the writer task
//!   ([`writer`]) takes batches from the send queue and writes each with one vectored `sendmsg`.
//!   The socket is actix's, borrowed ([`crate::net::ConnSocket`]: one descriptor per
//!   connection). Its registration with the worker's reactor is actix's too, so to wait for
//!   writability the writer registers a duplicate of it (tokio `AsyncFd`), only while the
//!   socket is full, and closes it once the batch is out; if no descriptor is left for one,
//!   it retries every [`RETRY`] (the send queue's stall timeout still bounds the wait).
//! - End: after the close frame (once the session has released the send queue) or at once when
//!   aborted, the writer shuts the socket down both ways: the peer gets FIN, the dispatcher
//!   reads the end of input. The handler then returns a response that can no longer be
//!   written, and actix drops the connection.
//!
//! TLS connections keep the dispatcher path (the send queue as the response body, in `session`):
//! rustls owns the bytes on their socket.
//!
//! Owns: the handshake head, the per-connection writer task. Calls: [`SendQueue`],
//! [`ConnSocket`] (the borrowed socket), tokio's `AsyncFd`.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use actix_http::Response;
use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::net::ConnSocket;
use crate::persist::hub::{DirectSink, Next, SendQueue};

/// Most messages the writer takes from the send queue at once (and writes in one `sendmsg`).
const WRITE_BATCH: usize = 64;
/// How often a full socket is retried when no descriptor is left to wait on it with.
const RETRY: Duration = Duration::from_millis(5);

/// A connection's socket as the send queue's write-through target.
pub(super) struct Socket(pub ConnSocket);

impl DirectSink for Socket {
    fn send(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored(frames)
    }

    fn warm(&self) {
        self.0.warm();
    }
}

/// The head of actix's websocket handshake `response`, as it goes on the wire.
pub(super) fn head<B>(response: &Response<B>) -> Bytes {
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n");
    for (name, value) in response.headers() {
        if name == actix_http::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// The writer of one connection: writes what the send queue hands out (only while the socket is
/// full, or to close), then ends the connection. Runs on the connection's worker thread.
pub(super) async fn writer(outbox: Arc<SendQueue>, socket: ConnSocket) {
    drive(&outbox, &socket).await;
    // Whatever ended it, nothing more is written: the session must not wait for room.
    outbox.writer_gone();
    outbox.detach();
    // FIN to the peer (after what the kernel still holds), end of input to the dispatcher.
    socket.shutdown();
}

async fn drive(outbox: &SendQueue, socket: &ConnSocket) {
    loop {
        match outbox.next(WRITE_BATCH).await {
            Next::Batch(batch) => {
                if send_all(outbox, socket, &batch).await.is_err() {
                    return;
                }
            }
            Next::Close(kind) => {
                if send_all(outbox, socket, &[kind.frame()]).await.is_ok() {
                    // The session reads until the peer's close (bounded by its grace time).
                    poll_fn(|cx| outbox.poll_released(cx)).await;
                }
                return;
            }
            Next::Abort => return,
        }
    }
}

/// Writes `batch` whole, a vectored `sendmsg` at a time; while the socket is full, waits for
/// writability (or until the send queue is aborted: a connection dropped as too slow is not
/// waited for) on a duplicate descriptor held for this batch only.
async fn send_all(outbox: &SendQueue, socket: &ConnSocket, batch: &[Bytes]) -> io::Result<()> {
    let mut waiter: Option<AsyncFd<OwnedFd>> = None;
    // (message index, bytes of it already written)
    let (mut i, mut off) = (0, 0);
    while i < batch.len() {
        if batch[i].len() == off {
            i += 1;
            off = 0;
            continue;
        }
        let slices: Vec<IoSlice<'_>> = std::iter::once(&batch[i][off..])
            .chain(batch[i + 1..].iter().map(|b| &b[..]))
            .map(IoSlice::new)
            .collect();
        let sent = match &waiter {
            None => socket.send_vectored(&slices),
            Some(w) => {
                let mut ready = tokio::select! {
                    r = w.writable() => r?,
                    _ = outbox.aborted() => return Err(io::ErrorKind::ConnectionAborted.into()),
                };
                match ready.try_io(|_| socket.send_vectored(&slices)) {
                    Ok(r) => r,
                    // Not writable after all: readiness cleared, wait again.
                    Err(_) => continue,
                }
            }
        };
        let mut n = match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                waiter = match socket.duplicate().and_then(register) {
                    Ok(w) => Some(w),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return Err(e),
                    // Out of descriptors: try again shortly.
                    Err(_) => {
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY) => {}
                            _ = outbox.aborted() => {
                                return Err(io::ErrorKind::ConnectionAborted.into());
                            }
                        }
                        None
                    }
                };
                0
            }
            Err(e) => return Err(e),
        };
        while n > 0 {
            let left = batch[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(())
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor: it stays open, and the same, for as long as
    // the registration lives.
    unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE) }.map_err(|e| e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_is_a_complete_101() {
        let req = actix_web::test::TestRequest::default()
            .insert_header(("upgrade", "websocket"))
            .insert_header(("connection", "Upgrade"))
            .insert_header(("sec-websocket-version", "13"))
            .insert_header(("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="))
            .to_http_request();
        let res = actix_http::ws::handshake(req.head()).unwrap().finish();
        let h = head(&res);
        let text = std::str::from_utf8(&h).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("connection: upgrade\r\n"));
        assert!(text.contains("upgrade: websocket\r\n"));
        // RFC 6455 §1.3's example key and answer.
        assert!(text.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.ends_with("\r\n\r\n") && !text.ends_with("\r\n\r\n\r\n"));
    }
}
