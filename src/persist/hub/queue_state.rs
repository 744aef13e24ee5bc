//! # A send queue's parts: its bounds, its socket, and what its lock guards
//!
//! [`Budget`] (the bounds), [`CloseKind`], [`DirectSink`] (the socket written through),
//! [`SlotKey`] (the coalescing key), and `SendQueueState`: the queued frames in order, the
//! newest frame of each latest-wins key, the byte count and its stall clock, and the
//! connection's flags (closing, aborted, written through or blocked). Also the
//! write-through sends themselves: the queue's (`SendQueueState::flush`) and a round's
//! straight from its shared buffers (`send_frames`), a vectored `send` of up to 64 frames
//! at a time.
//!
//! The bottom layer of the hub: calls only the [`DirectSink`] it is handed and
//! [`wsframe`]. Used by `queue` and `round`, under the send queue's lock.
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::golix::Ghid;
use crate::persist::wsframe;

/// Coalescing key of a latest-wins notification: (subscription, the object whose newest
/// state it carries), with its hash computed once per notification rather than once per
/// subscriber's queue operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotKey {
    hash: u64,
    subscription: Ghid,
    object: Ghid,
}

impl SlotKey {
    pub fn new(subscription: Ghid, object: Ghid) -> SlotKey {
        let mut h = DefaultHasher::new();
        (subscription, object).hash(&mut h);
        SlotKey {
            hash: h.finish(),
            subscription,
            object,
        }
    }
}

impl Hash for SlotKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes [`SlotKey`]'s precomputed hash through.
#[derive(Default)]
pub(super) struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(super) type SlotMap = HashMap<SlotKey, Bytes, BuildHasherDefault<PrehashedHasher>>;

/// The bounds of one connection's outbound queue (`server.outbound_queue`,
/// `server.outbound_bytes`, `server.send_timeout_s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most messages queued.
    pub messages: usize,
    /// Most bytes queued. Replies wait while half of it is used; a notification that does
    /// not fit drops the connection.
    pub bytes: usize,
    /// A queue holding half of `bytes` or more for this long is dropped as too slow.
    pub stall: Duration,
    /// Bytes queued in all send queues of a hub together (`server.outbound_bytes_total`); 0 =
    /// no bound beyond each connection's.
    pub total: usize,
}

impl Budget {
    /// Queued bytes at or above which replies wait and the stall clock runs.
    pub(super) fn reply_share(&self) -> usize {
        (self.bytes / 2).max(1)
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            messages: 4096,
            bytes: DEFAULT_OUTBOUND_BYTES,
            stall: DEFAULT_SEND_TIMEOUT,
            total: DEFAULT_OUTBOUND_BYTES_TOTAL,
        }
    }
}

/// Default [`Budget::bytes`]: 64 MiB, four of the largest messages (16 MiB `max_frame`).
pub const DEFAULT_OUTBOUND_BYTES: usize = 64 * 1024 * 1024;
/// Default [`Budget::total`]: 1 GiB, about twenty connections stalled at their reply share
/// (32 MiB of replies plus one 16 MiB message each).
pub const DEFAULT_OUTBOUND_BYTES_TOTAL: usize = 1 << 30;
/// Default [`Budget::stall`].
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How a send queue was asked to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    /// `disconnect` or the peer's own close: normal closure.
    Normal,
    /// A message over the size limit.
    TooLarge,
    /// The server is shutting down.
    Away,
    /// Dropped for being too slow.
    Slow,
    /// Protocol violation or timeout.
    Protocol,
}

impl CloseKind {
    /// The websocket close frame for this ending.
    pub fn frame(self) -> Bytes {
        let (code, reason) = match self {
            CloseKind::Normal => (1000, "bye"),
            CloseKind::TooLarge => (1009, "message too large"),
            CloseKind::Away => (1001, "server shutting down"),
            CloseKind::Slow => (1008, "too slow"),
            CloseKind::Protocol => (1002, "protocol error"),
        };
        wsframe::close(code, reason)
    }
}

/// A connection's socket, written to directly by whoever queues a frame (write-through; see
/// the module docs). Implemented by `server::direct`.
pub trait DirectSink: Send + Sync {
    /// Sends what the socket takes of `frames` now, in order, without blocking: the bytes
    /// taken (`WouldBlock` when none).
    fn send(&self, frames: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Starts loading what `send` reads first ([`crate::hint::prefetch`]); a fanout calls
    /// it one delivery ahead.
    fn warm(&self) {}
}

/// One notification of a fanout round, as it goes to each subscriber: its frame (shared by
/// all) and its latest-wins key.
pub(super) struct Frame {
    pub(super) key: Option<SlotKey>,
    pub(super) bytes: Bytes,
}

pub(super) enum Entry {
    Msg(Bytes),
    Latest(SlotKey),
}

#[derive(Default)]
pub(super) struct SendQueueState {
    /// Messages in send order. `Latest` entries point into `latest`.
    pub(super) queue: VecDeque<Entry>,
    /// The newest pending bytes of each latest-wins key present in `queue`.
    pub(super) latest: SlotMap,
    /// Bytes of every message in `queue` (latest-wins ones at their newest size).
    pub(super) bytes: usize,
    /// Since when `bytes` has been at or above the budget's reply share.
    pub(super) heavy_since: Option<Instant>,
    /// Set by `close`: accept nothing more, drain, then tell the writer to close.
    pub(super) closing: Option<CloseKind>,
    /// Set by `release`: the session is done reading; the writer may end the response.
    pub(super) released: bool,
    /// Set by `abort` or on overflow: the writer stops at once.
    pub(super) aborted: bool,
    /// Set by `writer_gone`: aborted because the connection itself ended.
    pub(super) writer_gone: bool,
    /// Write-through is on: [`SendQueue::sink`](super::SendQueue::sink) is set and its
    /// writer has not detached; unset, the writer takes everything.
    pub(super) attached: bool,
    /// Write-through mode: the socket did not take everything, so the writer task owns it
    /// until the queue is empty again. While unset, the queue holds at most a fanout's
    /// staged batch, which that fanout flushes before it returns.
    pub(super) blocked: bool,
}

/// What [`SendQueueState::flush`] wrote.
#[derive(Default)]
pub(super) struct Flushed {
    pub(super) messages: usize,
    pub(super) bytes: usize,
    /// The socket is dead.
    pub(super) gone: bool,
}

impl SendQueueState {
    /// Adds `n` queued bytes (and starts the stall clock when the reply share is reached).
    pub(super) fn grow(&mut self, n: usize, budget: &Budget) {
        self.bytes += n;
        if self.bytes >= budget.reply_share() && self.heavy_since.is_none() {
            self.heavy_since = Some(Instant::now());
        }
    }

    /// Removes `n` queued bytes (and stops the stall clock below the reply share).
    pub(super) fn shrink(&mut self, n: usize, budget: &Budget) {
        self.bytes = self.bytes.saturating_sub(n);
        if self.bytes < budget.reply_share() {
            self.heavy_since = None;
        }
    }

    pub(super) fn has_room(&self, messages: usize, budget: &Budget) -> bool {
        self.queue.len() < messages && self.bytes < budget.reply_share()
    }

    /// Write-through: whether frames go to the socket by [`SendQueueState::flush`] now.
    pub(super) fn through(&self) -> bool {
        self.attached && !self.blocked
    }

    /// Queues one notification behind what is queued (latest-wins with a key: a pending one
    /// for the same key is replaced in place). Counters are the caller's.
    pub(super) fn enqueue(
        &mut self,
        key: Option<SlotKey>,
        msg: &Bytes,
        budget: &Budget,
    ) -> Enqueued {
        let n = msg.len();
        if let Some(k) = key {
            if let Some(slot) = self.latest.get_mut(&k) {
                let old = std::mem::replace(slot, msg.clone()).len();
                self.shrink(old, budget);
                self.grow(n, budget);
                return Enqueued::Replaced(old);
            }
        }
        if self.queue.len() >= budget.messages || self.bytes + n > budget.bytes {
            return Enqueued::Full;
        }
        match key {
            Some(k) => {
                self.latest.insert(k, msg.clone());
                self.queue.push_back(Entry::Latest(k));
            }
            None => self.queue.push_back(Entry::Msg(msg.clone())),
        }
        self.grow(n, budget);
        Enqueued::New
    }

    /// Write-through: sends the queue to the socket, as much as it takes, a vectored `send`
    /// at a time. What it does not take stays queued and the writer task takes over
    /// (`blocked`). Counters are the caller's.
    pub(super) fn flush(&mut self, sink: Option<&Arc<dyn DirectSink>>, budget: &Budget) -> Flushed {
        const IOV: usize = 64;
        let mut done = Flushed::default();
        let SendQueueState {
            queue,
            latest,
            attached,
            blocked,
            ..
        } = self;
        let Some(sink) = sink.filter(|_| *attached) else {
            return done;
        };
        while !*blocked && !queue.is_empty() {
            let mut iov = [IoSlice::new(&[]); IOV];
            let mut n = 0;
            let mut offered = 0;
            for e in queue.iter().take(IOV) {
                let b: &[u8] = match e {
                    Entry::Msg(b) => b,
                    Entry::Latest(k) => latest.get(k).map_or(&[], |b| &b[..]),
                };
                iov[n] = IoSlice::new(b);
                n += 1;
                offered += b.len();
            }
            let mut sent = match sink.send(&iov[..n]) {
                Ok(sent) => sent,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    0
                }
                Err(_) => {
                    done.gone = true;
                    break;
                }
            };
            if sent < offered {
                *blocked = true;
            }
            done.bytes += sent;
            // Drop what went out whole; keep the rest of a message cut short.
            while sent > 0 {
                let Some(front) = queue.pop_front() else {
                    break;
                };
                let b = match front {
                    Entry::Msg(b) => b,
                    Entry::Latest(k) => latest.remove(&k).unwrap_or_default(),
                };
                if sent >= b.len() {
                    sent -= b.len();
                    done.messages += 1;
                } else {
                    queue.push_front(Entry::Msg(b.slice(sent..)));
                    sent = 0;
                }
            }
        }
        self.shrink(done.bytes, budget);
        done
    }
}

/// What [`SendQueueState::enqueue`] did.
pub(super) enum Enqueued {
    New,
    /// Replaced a pending notification of this many bytes.
    Replaced(usize),
    Full,
}

/// How far the socket took a round's frames: `whole` frames, then `partial` bytes of the
/// next.
#[derive(Default)]
pub(super) struct Taken {
    pub(super) whole: usize,
    pub(super) partial: usize,
}

/// Sends `frames` in order, a vectored `send` of up to 64 at a time, until the socket takes
/// less than offered. Returns how far it got, and whether the socket is dead.
pub(super) fn send_frames(sink: &dyn DirectSink, frames: &[Frame]) -> (Taken, bool) {
    const IOV: usize = 64;
    let mut taken = Taken::default();
    while taken.whole < frames.len() {
        let mut iov = [IoSlice::new(&[]); IOV];
        let mut n = 0;
        let mut offered = 0;
        for f in frames[taken.whole..].iter().take(IOV) {
            iov[n] = IoSlice::new(&f.bytes);
            n += 1;
            offered += f.bytes.len();
        }
        let mut sent = match sink.send(&iov[..n]) {
            Ok(sent) => sent,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                0
            }
            Err(_) => return (taken, true),
        };
        let short = sent < offered;
        while sent > 0 {
            let len = frames[taken.whole].bytes.len();
            if sent >= len {
                sent -= len;
                taken.whole += 1;
            } else {
                taken.partial = sent;
                sent = 0;
            }
        }
        if short {
            break;
        }
    }
    (taken, false)
}
