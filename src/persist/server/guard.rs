//! # Message size guard
//!
//! Wraps a websocket connection's raw request payload and watches the frame headers as the
//! bytes stream by (it never buffers a payload). A frame, or a fragmented message, whose
//! declared size exceeds the limit is caught at its *header*, before a byte of it is buffered:
//! the guard forwards the complete frames before it, then yields one error, and from then on
//! reads and discards everything (so that the connection can be closed cleanly, with the
//! error reply and close frame delivered rather than lost to a TCP reset) — still following
//! the frame headers, so that the peer's answering close frame ends the stream (and the
//! session closes at once instead of waiting out its grace period).
//!
//! Owns: a minimal RFC 6455 header tracker. Calls: nothing of ours. Used by the session,
//! which reads [`Oversize::tripped`] when the message stream reports an error.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;

/// Shared flag: did the guard trip? (Per connection; the session runs on one thread.)
#[derive(Clone, Default)]
pub struct Oversize(Rc<Cell<Option<u64>>>);

impl Oversize {
    /// The declared size of the offending message, if the guard tripped.
    pub fn tripped(&self) -> Option<u64> {
        self.0.get()
    }
}

enum Mode {
    /// Tracking frame headers.
    Track,
    /// Tripped: forwarded the prefix, now return `Pending` once (waking at once) so the
    /// message stream decodes the prefix frames before it sees the error.
    Yield,
    /// Return the error on the next poll.
    Fail,
    /// Read and drop everything until the peer's close frame.
    Discard,
    /// The peer's close frame came: the stream has ended.
    Ended,
}

/// The payload wrapper.
pub struct FrameGuard<S> {
    inner: S,
    max: u64,
    mode: Mode,
    /// Header bytes seen so far (a header is at most 14 bytes).
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    remaining: u64,
    /// Running size of the current (possibly fragmented) data message.
    message: u64,
    /// Tripped, and the peer's close frame was already in the tripping chunk.
    close_seen: bool,
    flag: Oversize,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, max: usize) -> (FrameGuard<S>, Oversize) {
        let flag = Oversize::default();
        let g = FrameGuard {
            inner,
            max: max as u64,
            mode: Mode::Track,
            header: [0; 14],
            have: 0,
            remaining: 0,
            message: 0,
            close_seen: false,
            flag: flag.clone(),
        };
        (g, flag)
    }

    /// Header length implied by the bytes so far, once the first two are known.
    fn header_len(&self) -> usize {
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    /// Scans `chunk`; returns the offsets where an oversize frame's header starts and ends,
    /// if any.
    fn scan(&mut self, chunk: &[u8]) -> Option<(usize, usize)> {
        let mut i = 0;
        while i < chunk.len() {
            if self.remaining > 0 {
                let skip = self.remaining.min((chunk.len() - i) as u64);
                self.remaining -= skip;
                i += skip as usize;
                continue;
            }
            // In a header. Remember where it started (it may have started in an earlier
            // chunk, in which case the prefix to forward ends at 0).
            let start = i.saturating_sub(self.have);
            while i < chunk.len() && (self.have < 2 || self.have < self.header_len()) {
                self.header[self.have] = chunk[i];
                self.have += 1;
                i += 1;
            }
            if self.have < 2 || self.have < self.header_len() {
                return None;
            }
            let len = match self.header[1] & 0x7f {
                126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.header[2..10]);
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let opcode = self.header[0] & 0x0f;
            let fin = self.header[0] & 0x80 != 0;
            let size = match opcode {
                0 => self.message.saturating_add(len),
                1 | 2 => len,
                _ => len, // control frames: the codec enforces 125 bytes; bound them here too
            };
            if size > self.max {
                self.flag.0.set(Some(size));
                // From here on only frame boundaries matter (see `skip_to_close`).
                self.have = 0;
                self.remaining = len;
                return Some((start, i));
            }
            if opcode < 8 {
                self.message = if fin { 0 } else { size };
            }
            self.have = 0;
            self.remaining = len;
        }
        None
    }
}

impl<S> FrameGuard<S> {
    /// Discard mode: skips frames (by their headers) and says whether `chunk` holds the start
    /// of a close frame.
    fn skip_to_close(&mut self, chunk: &[u8]) -> bool {
        let mut i = 0;
        while i < chunk.len() {
            if self.remaining > 0 {
                let skip = self.remaining.min((chunk.len() - i) as u64);
                self.remaining -= skip;
                i += skip as usize;
                continue;
            }
            while i < chunk.len() && (self.have < 2 || self.have < self.header_len()) {
                self.header[self.have] = chunk[i];
                self.have += 1;
                i += 1;
            }
            if self.have < 2 || self.have < self.header_len() {
                return false;
            }
            if self.header[0] & 0x0f == 8 {
                return true;
            }
            self.remaining = match self.header[1] & 0x7f {
                126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.header[2..10]);
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            self.have = 0;
        }
        false
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.mode {
                Mode::Track => {
                    return match Pin::new(&mut this.inner).poll_next(cx) {
                        Poll::Ready(Some(Ok(chunk))) => match this.scan(&chunk) {
                            None => Poll::Ready(Some(Ok(chunk))),
                            Some((at, rest)) => {
                                this.mode = Mode::Yield;
                                this.close_seen = this.skip_to_close(&chunk[rest..]);
                                if at > 0 {
                                    Poll::Ready(Some(Ok(chunk.slice(..at))))
                                } else {
                                    continue;
                                }
                            }
                        },
                        other => other,
                    };
                }
                Mode::Yield => {
                    this.mode = Mode::Fail;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Mode::Fail => {
                    this.mode = if this.close_seen {
                        Mode::Ended
                    } else {
                        Mode::Discard
                    };
                    return Poll::Ready(Some(Err(PayloadError::Overflow)));
                }
                Mode::Discard => loop {
                    match Pin::new(&mut this.inner).poll_next(cx) {
                        Poll::Ready(Some(Ok(chunk))) => {
                            if this.skip_to_close(&chunk) {
                                this.mode = Mode::Ended;
                                return Poll::Ready(None);
                            }
                        }
                        Poll::Ready(Some(Err(_))) => continue,
                        Poll::Ready(None) => return Poll::Ready(None),
                        Poll::Pending => return Poll::Pending,
                    }
                },
                Mode::Ended => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// A masked client frame header for a payload of `len` bytes.
    fn header(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
        let mut h = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= 0xffff {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
        let mut f = header(opcode, fin, len);
        f.extend(std::iter::repeat(0u8).take(len));
        f
    }

    async fn run(chunks: Vec<Vec<u8>>, max: usize) -> (Vec<Bytes>, bool, Oversize) {
        let s = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        let (mut g, flag) = FrameGuard::new(s, max);
        let mut out = Vec::new();
        let mut failed = false;
        while let Some(item) = g.next().await {
            match item {
                Ok(b) => out.push(b),
                Err(_) => failed = true,
            }
        }
        (out, failed, flag)
    }

    #[tokio::test]
    async fn passes_small_frames_split_anywhere() {
        let mut all = frame(2, true, 100);
        all.extend(frame(2, true, 300));
        all.extend(frame(9, true, 0));
        all.extend(frame(2, false, 200));
        all.extend(frame(0, true, 200));
        for split in [1usize, 3, 7, 150] {
            let chunks: Vec<Vec<u8>> = all.chunks(split).map(<[u8]>::to_vec).collect();
            let (out, failed, flag) = run(chunks, 400).await;
            assert!(!failed);
            assert_eq!(flag.tripped(), None);
            assert_eq!(out.concat(), all);
        }
    }

    #[tokio::test]
    async fn trips_at_the_header_and_forwards_the_prefix() {
        let small = frame(2, true, 10);
        let mut chunk = small.clone();
        chunk.extend(header(2, true, 1 << 40)); // a 1 TiB claim: never buffered
        let (out, failed, flag) = run(vec![chunk, vec![0; 5000]], 1000).await;
        assert!(failed);
        assert_eq!(flag.tripped(), Some(1 << 40));
        assert_eq!(out.concat(), small, "only the complete frames before it");
    }

    #[tokio::test]
    async fn after_tripping_the_peers_close_frame_ends_the_stream() {
        let mut all = header(2, true, 5000); // over the limit: its 5000 bytes are skipped
        all.extend(vec![0x88; 5000]); // payload bytes that look like close headers
        all.extend(frame(9, true, 3)); // a ping: skipped too
        all.extend(frame(8, true, 2)); // the close
        all.extend(vec![0; 100]);
        for split in [1usize, 7, 4096] {
            let chunks: Vec<Vec<u8>> = all.chunks(split).map(<[u8]>::to_vec).collect();
            let s = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))))
                .chain(futures_util::stream::pending());
            let (mut g, flag) = FrameGuard::new(Box::pin(s), 1000);
            // Bytes of the oversize header split over chunks may pass before the error.
            loop {
                match g.next().await {
                    Some(Ok(_)) => continue,
                    Some(Err(_)) => break,
                    None => panic!("no error"),
                }
            }
            assert_eq!(flag.tripped(), Some(5000));
            assert!(g.next().await.is_none(), "the close frame ends the stream");
        }
    }

    #[tokio::test]
    async fn fragmented_messages_count_as_a_whole() {
        let mut all = frame(2, false, 600);
        all.extend(frame(0, false, 600));
        let (_, failed, flag) = run(vec![all], 1000).await;
        assert!(failed);
        assert_eq!(flag.tripped(), Some(1200));
    }
}
