//! # Fanout hub
//!
//! The subscription hub of the persister (docs/persister-protocol.md): a map Ghid -> subscribers,
//! and one bounded [`SendQueue`] per connection. A notification is encoded **once**, as a complete
//! websocket frame ([`wsframe`]: server frames are unmasked, so the same bytes are valid on every
//! connection), into a shared [`Bytes`]; every subscriber's send queue gets a clone of the same
//! reference-counted buffer, and the session writes it to the socket as it is.
//!
//! Slow readers: a send queue is bounded by a [`Budget`]: at most `messages` messages and
//! `bytes` bytes. Replies (a `get` of a 16 MiB object included) wait in [`SendQueue::reserve`]
//! until less than half the byte budget is queued, so a client that sends requests without
//! reading the replies stops being read (TCP backpressure) instead of growing the queue.
//! Notifications about the state of a dynamic object (its frames, and the GDXX that removes
//! it) are *latest-wins*: while one for the same (subscription, object) is still queued, a
//! newer one replaces it in place, so a stalled reader holds at most one pending notification
//! per dynamic object and never delays anyone else. Notifications that must not be merged
//! (GARQs: mail) take a queue slot each; one that does not fit the budget drops the
//! connection as too slow ([`Push::Overflow`]) — its client reconnects and re-subscribes,
//! which redelivers stored mail. A queue that stays over half its byte budget for
//! `Budget::stall` is dropped too ([`SendQueue::stalled`]). Across connections, the bytes queued
//! in all send queues are bounded by `Budget::total`: past it, the connection that has been
//! over half its own budget the longest (else the one holding the most) is dropped, until
//! the total fits again — many stalled connections cannot add up to more than that.
//!
//! Write-through: a send queue may be given a [`DirectSink`] (the connection's socket, see
//! `server::direct`). Then frames are not handed to a writer task while the socket takes
//! them: [`Hub::fanout`] writes each subscriber the frames of a round (the call's
//! consecutive notifications of one subscription: several when a group commit made several
//! updates durable at once) itself, straight from the shared buffers, with one lock and one
//! vectored `send` per subscriber, and queues nothing; a reply is written at once the same
//! way. No task wakeup, no lock held across an await, no per-subscriber allocation. Only when the socket
//! does not take everything does the connection's writer task take over (it alone writes
//! while `blocked`, waiting for writability, and hands the socket back once the queue is
//! empty); from then on notifications queue and coalesce as above, so every bound holds.
//!
//! Large rounds: with helper threads ([`Hub::send_with`]), a round reaching hundreds of
//! subscribers is cut into parts sent side by side, the caller waiting for all of them
//! before the next round (so the order per connection holds). Every delivery fetches the
//! next subscribers' memory ahead of its own send ([`crate::hint`]).
//!
//! Owns: the subscription map, the connections' send queues, fanout counters. Calls: [`super::wire`] (notify
//! encoding), [`super::wsframe`], `golix` (to key GDXX notifications by their target),
//! [`crate::work_pool`] (the helpers) and [`crate::hint`].
//! Sans-IO apart from task wakeups, the [`DirectSink`] it is handed and the helpers'
//! threads; the websocket session in [`super::server`] drives it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::io::{self, IoSlice};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use super::Notification;
use super::{wire, wsframe};
use crate::golix::{Ghid, Object, Policy};
use crate::work_pool::WorkPool;

/// How many subscribers ahead [`Hub::fanout`] starts fetching a send queue while it lists a
/// round's subscribers.
const WARM_AHEAD: usize = 4;

/// A fanout round reaching at least this many subscribers is sent in parts side by side,
/// when the hub has helper threads ([`Hub::send_with`]).
const SPLIT_AT: usize = 256;

/// Subscribers per part of a split round, at least: a part is worth a thread's wake-up.
const PART_MIN: usize = 128;

/// Identifies one connection inside the hub.
pub type ConnId = u64;

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
struct PrehashedHasher(u64);

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

type SlotMap = HashMap<SlotKey, Bytes, BuildHasherDefault<PrehashedHasher>>;

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
    fn reply_share(&self) -> usize {
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
/// Most bytes the writer takes from a send queue at once (at least one message): what sits
/// between the send queue and the socket stays small and is not counted twice.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Why [`SendQueue::reserve`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoom {
    /// The outbox is closing or aborted: nothing more will be sent.
    Closed,
    /// The queue stayed over its reply share for [`Budget::stall`]: the send queue is now
    /// aborted as too slow.
    Stalled,
}

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

/// Outcome of queueing a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Write-through: queued for the caller to [`SendQueue::flush`] once its batch is queued
    /// (returned for the first message of a batch only; the others are `Queued`).
    Staged,
    /// Took a new slot in the queue.
    Queued,
    /// Replaced a still-pending notification for the same key.
    Coalesced,
    /// The queue was full: the connection is aborted as too slow.
    Overflow,
    /// The outbox is closing or closed; dropped.
    Closed,
}

/// What the writer should do next.
#[derive(Debug)]
pub enum Next {
    /// Send these messages, in order.
    Batch(Vec<Bytes>),
    /// Everything queued before the close has been handed out: send a close frame.
    Close(CloseKind),
    /// Stop at once (too slow, or the session is gone).
    Abort,
}

/// Fanout counters, cumulative since start except the gauges `connections`,
/// `subscriptions` and `queued`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Open connections.
    pub connections: u64,
    /// (connection, ghid) subscription pairs.
    pub subscriptions: u64,
    /// Notifications encoded (once each, whatever the number of subscribers).
    pub encoded: u64,
    /// Notification messages queued to subscribers.
    pub delivered: u64,
    /// Pending notifications replaced by a newer one (latest-wins).
    pub coalesced: u64,
    /// Connections dropped as too slow (queue overflowed or stalled over its budget).
    pub slow_drops: u64,
    /// Messages waiting in send queues right now (all connections).
    pub queued: u64,
    /// Bytes waiting in send queues right now (all connections).
    pub queued_bytes: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    subscriptions: AtomicU64,
    encoded: AtomicU64,
    delivered: AtomicU64,
    coalesced: AtomicU64,
    slow_drops: AtomicU64,
    queued: AtomicU64,
    queued_bytes: AtomicU64,
    /// [`Budget::total`] (0 = none), and every live outbox, for shedding past it.
    total: usize,
    outboxes: Mutex<HashMap<ConnId, std::sync::Weak<SendQueue>>>,
}

impl Counters {
    fn new(total: usize) -> Counters {
        Counters {
            total,
            ..Counters::default()
        }
    }

    /// While the bytes queued in all send queues exceed the total, drops the connection that
    /// has been over its reply share the longest (else the one holding the most bytes).
    fn shed(&self) {
        if self.total == 0 {
            return;
        }
        while self.queued_bytes.load(Ordering::Relaxed) > self.total as u64 {
            let victim = {
                let all = self.outboxes.lock().unwrap_or_else(|e| e.into_inner());
                all.values()
                    .filter_map(std::sync::Weak::upgrade)
                    .filter_map(|o| {
                        let (bytes, since) = o.weight();
                        (bytes > 0).then_some((since, bytes, o))
                    })
                    // Oldest `heavy_since` first (`Some` before `None`), then most bytes.
                    .min_by(|a, b| match (a.0, b.0) {
                        (Some(x), Some(y)) => x.cmp(&y),
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => b.1.cmp(&a.1),
                    })
                    .map(|(_, _, o)| o)
            };
            match victim {
                Some(o) => o.drop_slow(),
                None => return,
            }
        }
    }
}

enum Entry {
    Msg(Bytes),
    Latest(SlotKey),
}

#[derive(Default)]
struct SendQueueState {
    /// Messages in send order. `Latest` entries point into `latest`.
    queue: VecDeque<Entry>,
    /// The newest pending bytes of each latest-wins key present in `queue`.
    latest: SlotMap,
    /// Bytes of every message in `queue` (latest-wins ones at their newest size).
    bytes: usize,
    /// Since when `bytes` has been at or above the budget's reply share.
    heavy_since: Option<Instant>,
    /// Set by `close`: accept nothing more, drain, then tell the writer to close.
    closing: Option<CloseKind>,
    /// Set by `release`: the session is done reading; the writer may end the response.
    released: bool,
    /// Set by `abort` or on overflow: the writer stops at once.
    aborted: bool,
    /// Set by `writer_gone`: aborted because the connection itself ended.
    writer_gone: bool,
    /// Write-through is on: [`SendQueue::sink`] is set and its writer has not detached;
    /// unset, the writer takes everything.
    attached: bool,
    /// Write-through mode: the socket did not take everything, so the writer task owns it
    /// until the queue is empty again. While unset, the queue holds at most a fanout's
    /// staged batch, which that fanout flushes before it returns.
    blocked: bool,
}

/// What [`SendQueueState::flush`] wrote.
#[derive(Default)]
struct Flushed {
    messages: usize,
    bytes: usize,
    /// The socket is dead.
    gone: bool,
}

/// One connection's bounded outbound queue of ready-to-write websocket frames. Shared (`Arc`)
/// between the hub (producers on any thread), the session's reader (replies) and the
/// connection's single consumer: its writer task (write-through, `server::direct`) or its
/// response body (polled by the HTTP dispatcher that owns the socket, over TLS). A std
/// `Mutex` guards the state: it is held only for queue operations and non-blocking sends,
/// never across an await.
pub struct SendQueue {
    state: Mutex<SendQueueState>,
    /// Wakes the consumer (single waiter; registering before checking the state means no
    /// wakeup is lost).
    readable: AtomicWaker,
    /// Wakes the reader waiting in `reserve` (single waiter).
    room: Notify,
    /// Wakes everyone waiting in `aborted()` (`notify_waiters`).
    abort_signal: Notify,
    budget: Budget,
    counters: Arc<Counters>,
    /// The write-through target (see [`DirectSink`]), set once; frames go to it while
    /// `state.attached`. Read without the lock too, to warm the cache ahead of a delivery
    /// ([`SendQueue::warm`]).
    sink: OnceLock<Arc<dyn DirectSink>>,
}

/// How far a fanout has warmed a subscriber's memory (see [`send_part`]): each stage
/// reads what the stage before it brought into the cache.
#[derive(Clone, Copy)]
enum Warm {
    /// The send queue itself (its lock, state and reference count).
    Queue,
    /// The socket object the send queue's sink points to.
    Sink,
    /// What the socket reads first when sending.
    Socket,
}

impl SendQueueState {
    /// Adds `n` queued bytes (and starts the stall clock when the reply share is reached).
    fn grow(&mut self, n: usize, budget: &Budget) {
        self.bytes += n;
        if self.bytes >= budget.reply_share() && self.heavy_since.is_none() {
            self.heavy_since = Some(Instant::now());
        }
    }

    /// Removes `n` queued bytes (and stops the stall clock below the reply share).
    fn shrink(&mut self, n: usize, budget: &Budget) {
        self.bytes = self.bytes.saturating_sub(n);
        if self.bytes < budget.reply_share() {
            self.heavy_since = None;
        }
    }

    fn has_room(&self, messages: usize, budget: &Budget) -> bool {
        self.queue.len() < messages && self.bytes < budget.reply_share()
    }

    /// Write-through: whether frames go to the socket by [`SendQueueState::flush`] now.
    fn through(&self) -> bool {
        self.attached && !self.blocked
    }

    /// Queues one notification behind what is queued (latest-wins with a key: a pending one
    /// for the same key is replaced in place). Counters are the caller's.
    fn enqueue(&mut self, key: Option<SlotKey>, msg: &Bytes, budget: &Budget) -> Enqueued {
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
    fn flush(&mut self, sink: Option<&Arc<dyn DirectSink>>, budget: &Budget) -> Flushed {
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

/// One notification of a fanout round, as it goes to each subscriber: its frame (shared by
/// all) and its latest-wins key.
struct Frame {
    key: Option<SlotKey>,
    bytes: Bytes,
}

/// A run of one subscription's consecutive notifications and the subscribers it goes to
/// ([`Hub::fanout`]).
struct Round {
    subscription: Ghid,
    targets: Vec<Arc<SendQueue>>,
    frames: Vec<Frame>,
}

/// What [`SendQueue::deliver`] did with a round's frames.
#[derive(Default)]
struct Delivered {
    /// Sent or queued.
    delivered: usize,
    /// Replaced a pending one (latest-wins).
    coalesced: usize,
    /// Did not fit the budget: the connection is aborted as too slow.
    overflow: bool,
}

/// What a fanout's deliveries did, added up.
#[derive(Clone, Copy, Default)]
struct Tally {
    delivered: u64,
    coalesced: u64,
    /// Connections aborted as too slow.
    dropped: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.delivered += o.delivered;
        self.coalesced += o.coalesced;
        self.dropped += o.dropped;
    }
}

/// Sends `frames` to each of `targets`, in order.
///
/// Each send waits for the kernel; meanwhile the CPU fetches the next subscribers' memory,
/// a chain of three pointers (send queue -> sink -> socket), one link per delivery ahead
/// (each link is read from the one before, fetched a delivery earlier). Without it each
/// delivery of a large round waited on three cache misses: a sixth of the fanout thread's
/// time at N = 1000 (BENCHMARKS.md, "Session 21").
fn send_part(targets: &[Arc<SendQueue>], frames: &[Frame]) -> Tally {
    let mut tally = Tally::default();
    for (i, o) in targets.iter().enumerate() {
        for (ahead, stage) in [(3, Warm::Queue), (2, Warm::Sink), (1, Warm::Socket)] {
            if let Some(q) = targets.get(i + ahead) {
                q.warm(stage);
            }
        }
        let d = o.deliver(frames);
        tally.delivered += d.delivered as u64;
        tally.coalesced += d.coalesced as u64;
        tally.dropped += u64::from(d.overflow);
    }
    tally
}

/// Sends a large round in parts side by side: all but the first on `pool`'s threads (or on
/// this one, should the pool have no room), the first here. Returns once every part is
/// sent, so rounds still reach each connection in order, and a fanout still returns with
/// everything sent or queued.
fn send_split(pool: &WorkPool, round: Round) -> Tally {
    let parts = (pool.threads() + 1)
        .min(round.targets.len() / PART_MIN)
        .max(1);
    let targets: Arc<[Arc<SendQueue>]> = round.targets.into();
    let frames: Arc<[Frame]> = round.frames.into();
    let size = targets.len().div_ceil(parts);
    let (tx, rx) = std::sync::mpsc::channel();
    for k in 1..parts {
        let (targets, frames, tx) = (targets.clone(), frames.clone(), tx.clone());
        let part = k * size..((k + 1) * size).min(targets.len());
        let job = move || {
            let _ = tx.send(send_part(&targets[part], &frames));
        };
        if let Err(job) = pool.try_submit(job) {
            job();
        }
    }
    drop(tx);
    let mut tally = send_part(&targets[..size], &frames);
    // Ends once every part's sender is gone: each sends its tally first (a part that
    // panicked, reported by the panic hook, adds nothing).
    for part in rx {
        tally += part;
    }
    tally
}

/// What [`SendQueueState::enqueue`] did.
enum Enqueued {
    New,
    /// Replaced a pending notification of this many bytes.
    Replaced(usize),
    Full,
}

/// How far the socket took a round's frames: `whole` frames, then `partial` bytes of the
/// next.
#[derive(Default)]
struct Taken {
    whole: usize,
    partial: usize,
}

/// Sends `frames` in order, a vectored `send` of up to 64 at a time, until the socket takes
/// less than offered. Returns how far it got, and whether the socket is dead.
fn send_frames(sink: &dyn DirectSink, frames: &[Frame]) -> (Taken, bool) {
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

impl SendQueue {
    fn new(budget: Budget, counters: Arc<Counters>) -> SendQueue {
        SendQueue {
            state: Mutex::new(SendQueueState::default()),
            readable: AtomicWaker::new(),
            room: Notify::new(),
            abort_signal: Notify::new(),
            budget: Budget {
                messages: budget.messages.max(1),
                bytes: budget.bytes.max(1),
                ..budget
            },
            counters,
            sink: OnceLock::new(),
        }
    }

    /// Starts loading one stage of what a delivery to this queue reads ([`Warm`]).
    fn warm(self: &Arc<SendQueue>, stage: Warm) {
        match stage {
            // From the reference count (two words before the value) to the end.
            Warm::Queue => crate::hint::prefetch(
                Arc::as_ptr(self)
                    .cast::<u8>()
                    .wrapping_sub(2 * std::mem::size_of::<usize>()),
                std::mem::size_of::<SendQueue>() + 2 * std::mem::size_of::<usize>(),
            ),
            Warm::Sink => {
                if let Some(sink) = self.sink.get() {
                    crate::hint::prefetch(Arc::as_ptr(sink), 1);
                }
            }
            Warm::Socket => {
                if let Some(sink) = self.sink.get() {
                    sink.warm();
                }
            }
        }
    }

    /// A standalone outbox (tests, tools).
    pub fn standalone(budget: Budget) -> Arc<SendQueue> {
        Arc::new(SendQueue::new(budget, Arc::default()))
    }

    fn lock(&self) -> MutexGuard<'_, SendQueueState> {
        // A poisoned lock only means another thread panicked mid-push; the queue itself is
        // always structurally valid, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages queued and not yet handed to the writer.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes queued and not yet handed to the writer.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Waits until there is room for one more reply: fewer than the budget's messages and
    /// less than half its bytes queued. The session calls it before it executes a request,
    /// so a client that sends requests without reading the replies is not read any further
    /// (TCP backpressure) instead of growing the queue. Gives up when the send queue closes, or
    /// aborts it when the queue stays over its reply share for [`Budget::stall`].
    pub async fn reserve(&self) -> Result<(), NoRoom> {
        self.reserve_below(self.budget.messages).await
    }

    /// [`SendQueue::reserve`] with room meaning fewer than `limit` messages. Bulk senders
    /// (stored mail re-delivered at subscribe) use half the message budget, so the other half
    /// stays free for live notifications and the connection is not dropped as too slow for
    /// reading its own mailbox.
    pub async fn reserve_below(&self, limit: usize) -> Result<(), NoRoom> {
        let limit = limit.clamp(1, self.budget.messages);
        loop {
            let wait = self.room.notified();
            let heavy_since = {
                let st = self.lock();
                if st.closing.is_some() || st.aborted {
                    return Err(NoRoom::Closed);
                }
                if st.has_room(limit, &self.budget) {
                    return Ok(());
                }
                st.heavy_since
            };
            match heavy_since {
                // Over the byte share: wait for room, at most until the stall deadline.
                Some(since) => {
                    let deadline = tokio::time::Instant::from_std(since + self.budget.stall);
                    if tokio::time::timeout_at(deadline, wait).await.is_err() && self.stalled() {
                        self.drop_slow();
                        return Err(NoRoom::Stalled);
                    }
                }
                // Only the message count is full: the writer frees it as it goes.
                None => wait.await,
            }
        }
    }

    /// Bytes queued, and since when they have been over the reply share.
    fn weight(&self) -> (usize, Option<Instant>) {
        let st = self.lock();
        (st.bytes, st.heavy_since)
    }

    /// Whether [`SendQueue::reserve`] would return at once with room (false once closing).
    pub fn has_room(&self) -> bool {
        let st = self.lock();
        st.closing.is_none() && !st.aborted && st.has_room(self.budget.messages, &self.budget)
    }

    /// Whether the queue has held its reply share of bytes or more for [`Budget::stall`].
    pub fn stalled(&self) -> bool {
        self.lock()
            .heavy_since
            .is_some_and(|t| t.elapsed() >= self.budget.stall)
    }

    /// Aborts the send queue as too slow (counted in [`HubStats::slow_drops`]).
    pub fn drop_slow(&self) {
        if !self.is_aborted() {
            self.counters.slow_drops.fetch_add(1, Ordering::Relaxed);
        }
        self.abort();
    }

    /// Queues a reply (or any frame that must not be merged nor dropped, such as a pong).
    /// Call [`SendQueue::reserve`] first to respect the bound. Returns false if closing.
    /// Write-through: sent at once, behind whatever a fanout has staged.
    pub fn push_reply(&self, msg: Bytes) -> bool {
        let n = msg.len();
        let mut st = self.lock();
        if st.closing.is_some() || st.aborted {
            return false;
        }
        st.queue.push_back(Entry::Msg(msg));
        st.grow(n, &self.budget);
        // Counted while the lock is held, before a flush or the writer can take it off the
        // queue and subtract it: the gauges never dip below zero.
        let c = &self.counters;
        c.queued.fetch_add(1, Ordering::Relaxed);
        c.queued_bytes.fetch_add(n as u64, Ordering::Relaxed);
        let through = st.through();
        let flushed = if through {
            st.flush(self.sink.get(), &self.budget)
        } else {
            Flushed::default()
        };
        let blocked = st.blocked;
        drop(st);
        c.queued
            .fetch_sub(flushed.messages as u64, Ordering::Relaxed);
        c.queued_bytes
            .fetch_sub(flushed.bytes as u64, Ordering::Relaxed);
        if flushed.gone {
            self.writer_gone();
            return false;
        }
        if !through || blocked {
            self.readable.wake();
            self.counters.shed();
        }
        true
    }

    /// Queues a notification. With a key, a pending notification for the same key is
    /// replaced (latest-wins) and takes no new slot. One that does not fit the budget aborts
    /// the connection. Write-through: sent at once.
    pub fn push_notify(&self, key: Option<SlotKey>, msg: Bytes) -> Push {
        let push = self.offer(key, &msg);
        let c = &self.counters;
        match push {
            Push::Staged | Push::Queued => {
                c.delivered.fetch_add(1, Ordering::Relaxed);
                c.queued.fetch_add(1, Ordering::Relaxed);
            }
            Push::Coalesced => {
                c.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            Push::Overflow => {
                c.slow_drops.fetch_add(1, Ordering::Relaxed);
            }
            Push::Closed => {}
        }
        if push == Push::Staged {
            self.flush();
        }
        push
    }

    /// [`SendQueue::push_notify`] without touching the shared message counters (the hub's
    /// fanout adds them up once per notification instead of once per subscriber); the byte
    /// gauge is kept here. Write-through, nothing is merged: the batch is flushed by the
    /// caller right after (`Push::Staged`).
    fn offer(&self, key: Option<SlotKey>, msg: &Bytes) -> Push {
        let n = msg.len();
        let mut st = self.lock();
        if st.closing.is_some() || st.aborted {
            return Push::Closed;
        }
        let through = st.through();
        if let Some(k) = key.filter(|_| !through) {
            if let Some(slot) = st.latest.get_mut(&k) {
                let old = std::mem::replace(slot, msg.clone()).len();
                st.shrink(old, &self.budget);
                st.grow(n, &self.budget);
                // Under the lock, like every add (see `push_reply`).
                let c = &self.counters.queued_bytes;
                c.fetch_add(n as u64, Ordering::Relaxed);
                c.fetch_sub(old as u64, Ordering::Relaxed);
                drop(st);
                if n > old {
                    self.counters.shed();
                }
                return Push::Coalesced;
            }
        }
        let full = |st: &SendQueueState| {
            st.queue.len() >= self.budget.messages || st.bytes + n > self.budget.bytes
        };
        if through && full(&st) {
            // Write-through stages a whole fanout call before sending it: send the staged
            // frames now rather than count a reader that keeps up as a slow one.
            let flushed = st.flush(self.sink.get(), &self.budget);
            let c = &self.counters;
            c.queued
                .fetch_sub(flushed.messages as u64, Ordering::Relaxed);
            c.queued_bytes
                .fetch_sub(flushed.bytes as u64, Ordering::Relaxed);
            if flushed.gone {
                drop(st);
                self.writer_gone();
                return Push::Closed;
            }
        }
        if full(&st) {
            drop(st);
            self.abort();
            return Push::Overflow;
        }
        let through = st.through();
        let first = st.queue.is_empty();
        match key.filter(|_| !through) {
            Some(k) => {
                st.latest.insert(k, msg.clone());
                st.queue.push_back(Entry::Latest(k));
            }
            None => st.queue.push_back(Entry::Msg(msg.clone())),
        }
        st.grow(n, &self.budget);
        self.counters
            .queued_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        drop(st);
        if through {
            return if first { Push::Staged } else { Push::Queued };
        }
        self.readable.wake();
        self.counters.shed();
        Push::Queued
    }

    /// Queues (or, write-through, sends) one fanout round's frames for this connection, in
    /// order, under one lock: while the socket takes them and nothing is queued, straight
    /// from the shared buffers in one vectored `send` (no queue entry, no buffer clone);
    /// what it does not take is queued (latest-wins from then on) for the writer task.
    /// Otherwise each frame is queued as by [`SendQueue::push_notify`]. The hub's fanout
    /// adds up the shared message counters once per round; the gauges are kept here.
    fn deliver(&self, frames: &[Frame]) -> Delivered {
        let mut st = self.lock();
        if st.closing.is_some() || st.aborted {
            return Delivered::default();
        }
        if !(st.through() && st.queue.is_empty()) {
            drop(st);
            return self.offer_each(frames);
        }
        let (taken, gone) = match self.sink.get() {
            Some(sink) => send_frames(sink.as_ref(), frames),
            None => (Taken::default(), false),
        };
        if gone {
            drop(st);
            self.writer_gone();
            return Delivered::default();
        }
        let mut out = Delivered {
            delivered: taken.whole,
            ..Delivered::default()
        };
        if taken.whole == frames.len() {
            return out;
        }
        // The socket is full: the rest waits for the writer task, which owns the socket until
        // the queue is empty again.
        st.blocked = true;
        let (mut added, mut added_bytes, mut overflow) = (0u64, 0i64, false);
        let mut rest = &frames[taken.whole..];
        if taken.partial > 0 {
            // The frame cut short must go on whole and first: never merged with a newer one.
            let tail = rest[0].bytes.slice(taken.partial..);
            added += 1;
            added_bytes += tail.len() as i64;
            st.grow(tail.len(), &self.budget);
            st.queue.push_back(Entry::Msg(tail));
            out.delivered += 1;
            rest = &rest[1..];
        }
        for f in rest {
            match st.enqueue(f.key, &f.bytes, &self.budget) {
                Enqueued::New => {
                    added += 1;
                    added_bytes += f.bytes.len() as i64;
                    out.delivered += 1;
                }
                Enqueued::Replaced(old) => {
                    added_bytes += f.bytes.len() as i64 - old as i64;
                    out.coalesced += 1;
                }
                Enqueued::Full => {
                    overflow = true;
                    break;
                }
            }
        }
        // Counted under the lock, before the writer can take them off (see `push_reply`).
        let c = &self.counters;
        c.queued.fetch_add(added, Ordering::Relaxed);
        if added_bytes >= 0 {
            c.queued_bytes
                .fetch_add(added_bytes as u64, Ordering::Relaxed);
        } else {
            c.queued_bytes
                .fetch_sub(added_bytes.unsigned_abs(), Ordering::Relaxed);
        }
        drop(st);
        if overflow {
            out.overflow = true;
            self.abort();
            return out;
        }
        self.readable.wake();
        self.counters.shed();
        out
    }

    /// [`SendQueue::deliver`] when the frames cannot go straight to the socket: each queued
    /// on its own (and flushed, if write-through).
    fn offer_each(&self, frames: &[Frame]) -> Delivered {
        let mut out = Delivered::default();
        let mut staged = false;
        // Counted as queued up front, so that a writer taking them meanwhile never takes the
        // gauge below zero; what was not queued is given back below.
        let upper = frames.len() as u64;
        self.counters.queued.fetch_add(upper, Ordering::Relaxed);
        for f in frames {
            match self.offer(f.key, &f.bytes) {
                Push::Staged => {
                    staged = true;
                    out.delivered += 1;
                }
                Push::Queued => out.delivered += 1,
                Push::Coalesced => out.coalesced += 1,
                Push::Overflow => {
                    out.overflow = true;
                    break;
                }
                Push::Closed => break,
            }
        }
        self.counters
            .queued
            .fetch_sub(upper - out.delivered as u64, Ordering::Relaxed);
        if staged {
            self.flush();
        }
        out
    }

    /// Write-through: sends what is queued, as far as the socket takes it (see
    /// [`Push::Staged`]); the writer task takes over the rest.
    pub fn flush(&self) {
        let mut st = self.lock();
        if !st.through() {
            return;
        }
        let flushed = st.flush(self.sink.get(), &self.budget);
        let blocked = st.blocked;
        drop(st);
        let c = &self.counters;
        c.queued
            .fetch_sub(flushed.messages as u64, Ordering::Relaxed);
        c.queued_bytes
            .fetch_sub(flushed.bytes as u64, Ordering::Relaxed);
        if flushed.gone {
            self.writer_gone();
        } else if blocked {
            self.readable.wake();
            self.counters.shed();
        }
    }

    /// Accept nothing more; the writer sends what is queued, then a close frame.
    pub fn close(&self, kind: CloseKind) {
        let mut st = self.lock();
        if st.closing.is_none() {
            st.closing = Some(kind);
        }
        drop(st);
        self.readable.wake();
        self.room.notify_one();
    }

    /// The session has finished reading (the peer answered our close, or is gone): once the
    /// close frame is out, the writer may end the connection.
    pub fn release(&self) {
        self.lock().released = true;
        self.readable.wake();
    }

    /// Stop at once, dropping whatever is queued.
    pub fn abort(&self) {
        let mut st = self.lock();
        st.aborted = true;
        let dropped = st.queue.len() as u64;
        let bytes = st.bytes as u64;
        st.queue.clear();
        st.latest.clear();
        st.bytes = 0;
        st.heavy_since = None;
        drop(st);
        self.counters.queued.fetch_sub(dropped, Ordering::Relaxed);
        self.counters
            .queued_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
        self.readable.wake();
        self.room.notify_one();
        self.abort_signal.notify_waiters();
    }

    pub fn is_aborted(&self) -> bool {
        self.lock().aborted
    }

    /// The writer is gone (the connection closed or was reset): abort, remembering that the
    /// peer left rather than fell behind.
    pub fn writer_gone(&self) {
        self.lock().writer_gone = true;
        self.abort();
    }

    /// Whether the send queue was aborted by [`SendQueue::writer_gone`].
    pub fn is_writer_gone(&self) -> bool {
        self.lock().writer_gone
    }

    /// Resolves once the send queue is aborted.
    pub async fn aborted(&self) {
        let mut wait = pin!(self.abort_signal.notified());
        loop {
            wait.as_mut().enable();
            if self.is_aborted() {
                return;
            }
            wait.as_mut().await;
            wait.set(self.abort_signal.notified());
        }
    }

    /// The writer's side: takes up to `max` messages but about [`WRITE_BATCH_BYTES`] at most
    /// (always at least one), one lock per batch, or says that the send queue is closed or
    /// aborted; `Pending` registers the consumer's waker.
    pub fn poll_next(&self, cx: &mut Context<'_>, max: usize) -> Poll<Next> {
        self.readable.register(cx.waker());
        let mut st = self.lock();
        if st.aborted {
            return Poll::Ready(Next::Abort);
        }
        if st.through() && !st.queue.is_empty() {
            if st.closing.is_none() {
                // A fanout's batch, about to be flushed by the fanout itself.
                return Poll::Pending;
            }
            // Closing: the writer takes the socket for the rest and the close frame.
            st.blocked = true;
        }
        if !st.queue.is_empty() {
            let mut batch = Vec::new();
            let mut taken = 0;
            while batch.len() < max.max(1) && taken < WRITE_BATCH_BYTES {
                let msg = match st.queue.pop_front() {
                    Some(Entry::Msg(b)) => b,
                    Some(Entry::Latest(k)) => match st.latest.remove(&k) {
                        Some(b) => b,
                        None => continue,
                    },
                    None => break,
                };
                taken += msg.len();
                batch.push(msg);
            }
            st.shrink(taken, &self.budget);
            drop(st);
            self.counters
                .queued
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            self.counters
                .queued_bytes
                .fetch_sub(taken as u64, Ordering::Relaxed);
            self.room.notify_one();
            return Poll::Ready(Next::Batch(batch));
        }
        match st.closing {
            Some(kind) => Poll::Ready(Next::Close(kind)),
            None => {
                // The writer asks for more only once it has written what it took: with the
                // queue empty, senders may write through again.
                st.blocked = false;
                Poll::Pending
            }
        }
    }

    /// Write-through mode: from now on, frames go to `sink` at once while nothing is
    /// queued (see [`DirectSink`]). Set once, before the connection's first frame; a later
    /// call changes nothing.
    pub fn write_through(&self, sink: Arc<dyn DirectSink>) {
        if self.sink.set(sink).is_ok() {
            self.lock().attached = true;
        }
    }

    /// Ends write-through (the writer is done with the socket): nothing is sent to the sink
    /// from now on.
    pub fn detach(&self) {
        self.lock().attached = false;
    }

    /// [`SendQueue::poll_next`] as a future.
    pub async fn next(&self, max: usize) -> Next {
        poll_fn(|cx| self.poll_next(cx, max)).await
    }

    /// Ready once the session has released the send queue (or it was aborted).
    pub fn poll_released(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.readable.register(cx.waker());
        let st = self.lock();
        if st.released || st.aborted {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The coalescing key of a notification, if it is about the state of one object: a GOBD
/// frame (keyed by its subscription, the dynamic ghid) or a GDXX (keyed by its target, so
/// the removal of a dynamic object replaces its pending frame). GARQs are mail: never merged.
pub fn slot_key(subscription: &Ghid, object: &[u8]) -> Option<SlotKey> {
    match object.get(..4) {
        Some(b"GOBD") => Some(SlotKey::new(*subscription, *subscription)),
        Some(b"GDXX") => match Object::decode(object, Policy::STRICT) {
            Ok(Object::Gdxx(d)) => Some(SlotKey::new(*subscription, d.target)),
            _ => None,
        },
        _ => None,
    }
}

/// A notification as it goes on the wire: its msgpack envelope in one websocket frame.
pub fn notify_frame(subscription: &Ghid, object: &[u8]) -> Bytes {
    wsframe::binary(&wire::encode_notify(subscription, object))
}

/// The subscription map. Cheap to share (`Arc<Hub>`); every method takes `&self`.
pub struct Hub {
    /// Ghid -> (connection -> its outbox). A std `RwLock`: fanout takes the read lock just
    /// long enough to clone the subscribers' `Arc`s; (un)subscribe takes the write lock.
    subs: RwLock<HashMap<Ghid, HashMap<ConnId, Arc<SendQueue>>>>,
    next_id: AtomicU64,
    counters: Arc<Counters>,
    budget: Budget,
    max_subscriptions: usize,
    /// Told (under the map's write lock, so in order) when a ghid gains its first subscriber
    /// here (`true`) or loses its last (`false`): the cluster link subscribes to other
    /// front-ends' notifications for exactly those ghids.
    interest: OnceLock<InterestHook>,
    /// Threads that send parts of large rounds beside the fanout's caller ([`send_split`]).
    helpers: OnceLock<WorkPool>,
}

/// See [`Hub::on_interest`].
pub type InterestHook = Box<dyn Fn(Ghid, bool) + Send + Sync>;

/// Error of [`Subscriber::subscribe`]: the connection holds `max_subscriptions` already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitReached(pub usize);

impl Hub {
    pub fn new(budget: Budget, max_subscriptions: usize) -> Arc<Hub> {
        Arc::new(Hub {
            subs: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            counters: Arc::new(Counters::new(budget.total)),
            budget,
            max_subscriptions,
            interest: OnceLock::new(),
            helpers: OnceLock::new(),
        })
    }

    /// Lets `pool`'s threads send parts of rounds of 256 subscribers or more (`SPLIT_AT`)
    /// beside the fanout's caller (once; later calls are ignored). On two cores, a round of
    /// 1,000 paced notifications then reached its last subscriber about a seventh sooner
    /// (BENCHMARKS.md, "Session 21").
    pub fn send_with(&self, pool: WorkPool) {
        let _ = self.helpers.set(pool);
    }

    /// Installs the interest hook (once; later calls are ignored). It must not block.
    pub fn on_interest(&self, hook: InterestHook) {
        let _ = self.interest.set(hook);
    }

    fn interest_changed(&self, ghid: Ghid, watched: bool) {
        if let Some(hook) = self.interest.get() {
            hook(ghid, watched);
        }
    }

    /// Registers a connection: its id, its outbox, its subscription set. Dropping the
    /// returned [`Subscriber`] removes every subscription it holds.
    pub fn connect(self: &Arc<Hub>) -> Subscriber {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(SendQueue::new(self.budget, self.counters.clone()));
        self.counters
            .outboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::downgrade(&outbox));
        Subscriber {
            id,
            outbox,
            subscriptions: Mutex::new(HashSet::new()),
            hub: self.clone(),
        }
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<Ghid, HashMap<ConnId, Arc<SendQueue>>>> {
        self.subs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<Ghid, HashMap<ConnId, Arc<SendQueue>>>> {
        self.subs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers each notification to every subscriber of its subscription except `exclude`
    /// (the uploader). Each notification is encoded once. Returns how many messages were
    /// sent, queued or coalesced.
    ///
    /// A round is a run of consecutive notifications of the same subscription (a group
    /// commit's updates of one object): each of its subscribers gets them in one
    /// `SendQueue::deliver` (one lock, one vectored `send` when written through).
    /// Rounds go out in order, so every connection sees the notifications in the order
    /// given. Sockets are written without the subscription lock: (un)subscribing never
    /// waits for a fanout's sends.
    pub fn fanout(&self, notifications: &[Notification], exclude: Option<ConnId>) -> usize {
        let rounds = self.rounds(notifications, exclude, usize::MAX);
        rounds.map_or(0, |r| self.deliver(r))
    }

    /// [`Hub::fanout`] if it reaches at most `max_targets` subscribers in all (counted per
    /// round); else `None`, and nothing is sent.
    pub fn fanout_within(
        &self,
        notifications: &[Notification],
        exclude: Option<ConnId>,
        max_targets: usize,
    ) -> Option<usize> {
        let rounds = self.rounds(notifications, exclude, max_targets)?;
        Some(self.deliver(rounds))
    }

    /// The rounds of a fanout: each notification encoded once, each run of one
    /// subscription's notifications with the subscribers it goes to; `None` as soon as
    /// they would reach more than `max_targets` subscribers in all.
    fn rounds(
        &self,
        notifications: &[Notification],
        exclude: Option<ConnId>,
        max_targets: usize,
    ) -> Option<Vec<Round>> {
        let mut rounds: Vec<Round> = Vec::new();
        let mut reached = 0usize;
        let subs = self.read();
        for n in notifications {
            let Some(targets) = subs.get(&n.subscription) else {
                continue;
            };
            let excluded = usize::from(exclude.is_some_and(|e| targets.contains_key(&e)));
            if targets.len() <= excluded {
                continue;
            }
            let frame = Frame {
                key: slot_key(&n.subscription, &n.object),
                bytes: notify_frame(&n.subscription, &n.object),
            };
            match rounds.last_mut() {
                Some(r) if r.subscription == n.subscription => r.frames.push(frame),
                _ => {
                    reached += targets.len() - excluded;
                    if reached > max_targets {
                        return None;
                    }
                    // Fetch a few queues ahead of taking each one's reference.
                    let mut ahead = targets.values().skip(WARM_AHEAD);
                    let targets = targets
                        .iter()
                        .filter(|(id, _)| Some(**id) != exclude)
                        .map(|(_, o)| {
                            if let Some(a) = ahead.next() {
                                a.warm(Warm::Queue);
                            }
                            o.clone()
                        })
                        .collect();
                    rounds.push(Round {
                        subscription: n.subscription,
                        targets,
                        frames: vec![frame],
                    });
                }
            }
        }
        Some(rounds)
    }

    /// Sends the rounds, in order, and counts what happened. A round of at least
    /// [`SPLIT_AT`] subscribers is cut into parts sent side by side ([`send_split`]) when
    /// the hub has helper threads.
    fn deliver(&self, rounds: Vec<Round>) -> usize {
        let (mut tally, mut encoded) = (Tally::default(), 0);
        for r in rounds {
            encoded += r.frames.len() as u64;
            tally += match self.helpers.get() {
                Some(pool) if r.targets.len() >= SPLIT_AT => send_split(pool, r),
                _ => send_part(&r.targets, &r.frames),
            };
        }
        let c = &self.counters;
        c.encoded.fetch_add(encoded, Ordering::Relaxed);
        c.delivered.fetch_add(tally.delivered, Ordering::Relaxed);
        c.coalesced.fetch_add(tally.coalesced, Ordering::Relaxed);
        c.slow_drops.fetch_add(tally.dropped, Ordering::Relaxed);
        (tally.delivered + tally.coalesced) as usize
    }

    /// Number of connections subscribed to `ghid`.
    pub fn subscriber_count(&self, ghid: &Ghid) -> usize {
        self.read().get(ghid).map_or(0, |m| m.len())
    }

    pub fn stats(&self) -> HubStats {
        let c = &self.counters;
        HubStats {
            connections: c.connections.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            encoded: c.encoded.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            slow_drops: c.slow_drops.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            queued_bytes: c.queued_bytes.load(Ordering::Relaxed),
        }
    }
}

/// One connection's registration in the hub (an RAII guard: dropping it unsubscribes
/// everything). Owned by the connection's session.
pub struct Subscriber {
    id: ConnId,
    outbox: Arc<SendQueue>,
    /// This connection's subscriptions, for `list_subscriptions`, the limit, and cleanup.
    subscriptions: Mutex<HashSet<Ghid>>,
    hub: Arc<Hub>,
}

impl Subscriber {
    pub fn id(&self) -> ConnId {
        self.id
    }

    pub fn outbox(&self) -> &Arc<SendQueue> {
        &self.outbox
    }

    fn set(&self) -> MutexGuard<'_, HashSet<Ghid>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes; `Ok(false)` if it already was.
    pub fn subscribe(&self, ghid: Ghid) -> Result<bool, LimitReached> {
        let mut set = self.set();
        if set.contains(&ghid) {
            return Ok(false);
        }
        if set.len() >= self.hub.max_subscriptions {
            return Err(LimitReached(self.hub.max_subscriptions));
        }
        set.insert(ghid);
        let mut map = self.hub.write();
        let subs = map.entry(ghid).or_default();
        if subs.is_empty() {
            self.hub.interest_changed(ghid, true);
        }
        subs.insert(self.id, self.outbox.clone());
        drop(map);
        self.hub
            .counters
            .subscriptions
            .fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Unsubscribes; false if it was not subscribed.
    pub fn unsubscribe(&self, ghid: &Ghid) -> bool {
        if !self.set().remove(ghid) {
            return false;
        }
        self.remove_from_hub(std::iter::once(*ghid));
        true
    }

    /// Drops every subscription (the `disconnect` op, and on drop).
    pub fn unsubscribe_all(&self) {
        let all: Vec<Ghid> = self.set().drain().collect();
        self.remove_from_hub(all.into_iter());
    }

    fn remove_from_hub(&self, ghids: impl Iterator<Item = Ghid>) {
        let mut map = self.hub.write();
        for g in ghids {
            if let Some(m) = map.get_mut(&g) {
                if m.remove(&self.id).is_some() {
                    self.hub
                        .counters
                        .subscriptions
                        .fetch_sub(1, Ordering::Relaxed);
                }
                if m.is_empty() {
                    map.remove(&g);
                    self.hub.interest_changed(g, false);
                }
            }
        }
    }

    /// This connection's subscriptions, sorted.
    pub fn subscriptions(&self) -> Vec<Ghid> {
        let mut v: Vec<Ghid> = self.set().iter().copied().collect();
        v.sort();
        v
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.unsubscribe_all();
        self.hub
            .counters
            .outboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        self.hub
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::Algo;

    /// A budget of `n` messages (bytes and stall at their defaults).
    fn msgs(n: usize) -> Budget {
        Budget {
            messages: n,
            ..Budget::default()
        }
    }

    fn g() -> Ghid {
        Ghid::pseudorandom(Algo::SHA512)
    }

    fn frame_bytes(tag: u8) -> Bytes {
        let mut v = b"GOBD".to_vec();
        v.push(tag);
        Bytes::from(v)
    }

    fn note(sub: Ghid, object: Bytes) -> Notification {
        Notification {
            subscription: sub,
            object,
        }
    }

    async fn drain(o: &SendQueue) -> Vec<Bytes> {
        match o.next(usize::MAX).await {
            Next::Batch(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn one_encoding_shared_by_all_subscribers_and_uploader_skipped() {
        let hub = Hub::new(msgs(16), 8);
        let dynamic = g();
        let subs: Vec<Subscriber> = (0..3).map(|_| hub.connect()).collect();
        for s in &subs {
            assert_eq!(s.subscribe(dynamic), Ok(true));
        }
        assert_eq!(subs[0].subscribe(dynamic), Ok(false));
        assert_eq!(hub.subscriber_count(&dynamic), 3);
        let sent = hub.fanout(&[note(dynamic, frame_bytes(1))], Some(subs[0].id()));
        assert_eq!(sent, 2);
        assert!(subs[0].outbox().is_empty(), "the uploader is not notified");
        let a = drain(subs[1].outbox()).await;
        let b = drain(subs[2].outbox()).await;
        assert_eq!(a[0].as_ptr(), b[0].as_ptr(), "same buffer, encoded once");
        assert_eq!(hub.stats().encoded, 1);
    }

    /// A fanout within a bound sends everything or nothing: the uploader is not counted,
    /// and the subscribers of every round are.
    #[tokio::test]
    async fn a_fanout_within_a_bound_sends_all_or_nothing() {
        let hub = Hub::new(msgs(16), 8);
        let (one, two) = (g(), g());
        let subs: Vec<Subscriber> = (0..4).map(|_| hub.connect()).collect();
        for s in &subs[..3] {
            s.subscribe(one).unwrap();
        }
        subs[3].subscribe(two).unwrap();
        let notes = [note(one, frame_bytes(1)), note(two, frame_bytes(2))];
        let me = Some(subs[0].id());
        assert_eq!(hub.fanout_within(&notes, me, 2), None);
        assert!(subs.iter().all(|s| s.outbox().is_empty()), "nothing sent");
        assert_eq!(hub.fanout_within(&notes, me, 3), Some(3));
        assert!(subs[0].outbox().is_empty(), "the uploader is not notified");
        for s in &subs[1..] {
            assert_eq!(drain(s.outbox()).await.len(), 1);
        }
    }

    #[tokio::test]
    async fn stalled_reader_keeps_only_the_newest_frame() {
        let hub = Hub::new(msgs(4), 8);
        let (d1, d2) = (g(), g());
        let s = hub.connect();
        s.subscribe(d1).unwrap();
        s.subscribe(d2).unwrap();
        for i in 0..100u8 {
            hub.fanout(&[note(d1, frame_bytes(i)), note(d2, frame_bytes(i))], None);
        }
        assert_eq!(s.outbox().len(), 2, "one pending slot per dynamic ghid");
        assert_eq!(hub.stats().queued, 2);
        let got = drain(s.outbox()).await;
        assert_eq!(got.len(), 2);
        for (b, d) in got.iter().zip([d1, d2]) {
            assert_eq!(b, &notify_frame(&d, &frame_bytes(99)));
        }
        assert_eq!(hub.stats().coalesced, 2 * 99);
        assert_eq!(hub.stats().queued, 0);
        assert!(!s.outbox().is_aborted());
    }

    #[tokio::test]
    async fn mail_overflow_drops_the_slow_connection() {
        let hub = Hub::new(msgs(3), 8);
        let me = g();
        let s = hub.connect();
        let other = hub.connect();
        s.subscribe(me).unwrap();
        other.subscribe(me).unwrap();
        for i in 0..4u8 {
            hub.fanout(
                &[note(me, Bytes::from(vec![b'G', b'A', b'R', b'Q', i]))],
                None,
            );
            if i < 3 {
                drain(other.outbox()).await;
            }
        }
        assert!(s.outbox().is_aborted());
        s.outbox().aborted().await;
        assert!(matches!(s.outbox().next(8).await, Next::Abort));
        assert!(!other.outbox().is_aborted(), "others are unaffected");
        assert_eq!(hub.stats().slow_drops, 1);
    }

    #[tokio::test]
    async fn limits_listing_and_cleanup() {
        let hub = Hub::new(msgs(4), 2);
        let s = hub.connect();
        let (a, b, c) = (g(), g(), g());
        s.subscribe(a).unwrap();
        s.subscribe(b).unwrap();
        assert_eq!(s.subscribe(c), Err(LimitReached(2)));
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(s.subscriptions(), want);
        assert!(s.unsubscribe(&a));
        assert!(!s.unsubscribe(&a));
        assert_eq!(hub.stats().subscriptions, 1);
        drop(s);
        assert_eq!(hub.subscriber_count(&b), 0);
        assert_eq!(
            hub.stats(),
            HubStats {
                subscriptions: 0,
                connections: 0,
                ..hub.stats()
            }
        );
    }

    #[tokio::test]
    async fn close_drains_then_closes_and_reserve_waits_for_room() {
        let o = SendQueue::standalone(msgs(2));
        assert!(o.push_reply(Bytes::from_static(b"a")));
        assert!(o.push_reply(Bytes::from_static(b"b")));
        let reserve = o.reserve();
        let mut reserve = pin!(reserve);
        assert!(futures_util::FutureExt::now_or_never(reserve.as_mut()).is_none());
        assert_eq!(drain(&o).await.len(), 2);
        reserve.await.unwrap();
        o.close(CloseKind::Normal);
        assert_eq!(o.reserve().await, Err(NoRoom::Closed));
        assert!(!o.push_reply(Bytes::from_static(b"c")));
        assert!(matches!(o.next(8).await, Next::Close(CloseKind::Normal)));
    }

    #[test]
    fn slot_keys() {
        let sub = g();
        assert_eq!(slot_key(&sub, b"GOBD...."), Some(SlotKey::new(sub, sub)));
        assert_eq!(slot_key(&sub, b"GARQ...."), None);
        assert_eq!(
            slot_key(&sub, b"GDXX junk"),
            None,
            "undecodable GDXX is not merged"
        );
        assert_eq!(slot_key(&sub, b""), None);
    }

    #[tokio::test]
    async fn replies_wait_below_half_the_bytes_and_the_writer_takes_small_batches() {
        let budget = Budget {
            messages: 1000,
            bytes: 1000,
            stall: Duration::from_secs(60),
            total: 0,
        };
        let o = SendQueue::standalone(budget);
        // One reply of any size is admitted while under half the budget...
        o.reserve().await.unwrap();
        assert!(o.push_reply(Bytes::from(vec![1; 400])));
        o.reserve().await.unwrap();
        assert!(o.push_reply(Bytes::from(vec![2; 300])));
        assert_eq!(o.bytes(), 700);
        // ... then replies wait.
        let mut reserve = pin!(o.reserve());
        assert!(futures_util::FutureExt::now_or_never(reserve.as_mut()).is_none());
        // Notifications fit up to the whole budget; past it the connection is dropped.
        assert_eq!(o.push_notify(None, Bytes::from(vec![3; 300])), Push::Queued);
        assert_eq!(o.bytes(), 1000);
        let batch = drain(&o).await;
        assert_eq!(batch.len(), 3, "small messages come in one batch");
        assert_eq!(o.bytes(), 0);
        reserve.await.unwrap();
        assert_eq!(
            o.push_notify(None, Bytes::from(vec![4; 1001])),
            Push::Overflow
        );
        assert!(o.is_aborted());

        let big = SendQueue::standalone(Budget {
            bytes: 1 << 30,
            ..budget
        });
        for _ in 0..4 {
            big.push_reply(Bytes::from(vec![0; WRITE_BATCH_BYTES / 2 + 1]));
        }
        assert_eq!(
            drain(&big).await.len(),
            2,
            "a batch stops at WRITE_BATCH_BYTES"
        );
    }

    #[tokio::test]
    async fn a_queue_over_its_reply_share_for_the_stall_time_is_dropped() {
        let o = SendQueue::standalone(Budget {
            messages: 1000,
            bytes: 100,
            stall: Duration::from_millis(200),
            total: 0,
        });
        o.push_reply(Bytes::from(vec![0; 60]));
        assert!(!o.stalled());
        let t = Instant::now();
        assert_eq!(o.reserve().await, Err(NoRoom::Stalled));
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
        assert!(o.is_aborted());
        assert_eq!(o.bytes(), 0, "the queue is freed");

        // Draining in time stops the clock.
        let o = SendQueue::standalone(Budget {
            messages: 1000,
            bytes: 100,
            stall: Duration::from_millis(200),
            total: 0,
        });
        o.push_reply(Bytes::from(vec![0; 60]));
        tokio::time::sleep(Duration::from_millis(150)).await;
        drain(&o).await;
        o.push_reply(Bytes::from(vec![0; 60]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !o.stalled(),
            "the clock restarted when the queue went below its share"
        );
    }

    #[tokio::test]
    async fn coalescing_keeps_the_byte_count_true() {
        let hub = Hub::new(msgs(8), 8);
        let d = g();
        let s = hub.connect();
        s.subscribe(d).unwrap();
        hub.fanout(&[note(d, frame_bytes(1))], None);
        let one = s.outbox().bytes();
        assert_eq!(one, notify_frame(&d, &frame_bytes(1)).len());
        let mut bigger = b"GOBD".to_vec();
        bigger.extend_from_slice(&[7; 100]);
        let want = notify_frame(&d, &bigger).len();
        hub.fanout(&[note(d, Bytes::from(bigger))], None);
        assert_eq!(
            s.outbox().bytes(),
            want,
            "the replaced frame no longer counts"
        );
        assert_eq!(hub.stats().queued_bytes, want as u64);
        drain(s.outbox()).await;
        assert_eq!(hub.stats().queued_bytes, 0);
    }

    #[tokio::test]
    async fn past_the_total_the_longest_stalled_connection_is_dropped() {
        let hub = Hub::new(
            Budget {
                messages: 1000,
                bytes: 100,
                stall: Duration::from_secs(60),
                total: 250,
            },
            8,
        );
        let (old, light, new) = (hub.connect(), hub.connect(), hub.connect());
        old.outbox().push_reply(Bytes::from(vec![0; 90])); // over its share first
        tokio::time::sleep(Duration::from_millis(20)).await;
        light.outbox().push_reply(Bytes::from(vec![0; 20]));
        new.outbox().push_reply(Bytes::from(vec![0; 90]));
        assert_eq!(hub.stats().queued_bytes, 200);
        assert!(!old.outbox().is_aborted());
        // 60 more bytes take the total to 260: the oldest heavy one goes.
        new.outbox().push_reply(Bytes::from(vec![0; 60]));
        assert!(old.outbox().is_aborted());
        assert!(!new.outbox().is_aborted() && !light.outbox().is_aborted());
        assert_eq!(hub.stats().queued_bytes, 170);
        assert_eq!(hub.stats().slow_drops, 1);
    }

    /// A real 127.0.0.1 TCP connection as a write-through sink (server end non-blocking,
    /// both buffers small so that it fills quickly), and its client end.
    struct Tcp(std::net::TcpStream);

    impl DirectSink for Tcp {
        fn send(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
            use std::io::Write;
            (&self.0).write_vectored(frames)
        }
    }

    /// A write-through sink that keeps what it is sent, and which threads sent it.
    #[derive(Default)]
    struct Recorder(Mutex<(Vec<u8>, HashSet<std::thread::ThreadId>)>);

    impl DirectSink for Recorder {
        fn send(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut r = self.0.lock().unwrap();
            r.1.insert(std::thread::current().id());
            for f in frames {
                r.0.extend_from_slice(f);
            }
            Ok(frames.iter().map(|f| f.len()).sum())
        }
    }

    /// A round of 601 subscribers goes out in three parts, the caller's and the helpers',
    /// side by side; every connection gets every notification, whole and in order. A round
    /// below [`SPLIT_AT`] stays on the caller.
    #[test]
    fn a_large_round_is_sent_in_parts_side_by_side_and_in_order() {
        let hub = Hub::new(msgs(16), 8);
        hub.send_with(WorkPool::new(2, "test-fanout").unwrap());
        let (large, small) = (g(), g());
        let sinks: Vec<Arc<Recorder>> = (0..601).map(|_| Arc::default()).collect();
        let subs: Vec<Subscriber> = sinks
            .iter()
            .map(|sink| {
                let s = hub.connect();
                s.outbox().write_through(sink.clone());
                s.subscribe(large).unwrap();
                s
            })
            .collect();
        for i in 1..=5 {
            assert_eq!(hub.fanout(&[note(large, frame_bytes(i))], None), 601);
        }
        let want: Vec<u8> = (1..=5)
            .flat_map(|i| notify_frame(&large, &frame_bytes(i)).to_vec())
            .collect();
        let mut senders = HashSet::new();
        for sink in &sinks {
            let mut r = sink.0.lock().unwrap();
            assert!(r.0 == want, "every frame, whole and in order");
            senders.extend(r.1.drain());
        }
        let me = std::thread::current().id();
        assert!(senders.contains(&me) && senders.len() >= 2, "{senders:?}");
        assert_eq!(hub.stats().delivered, 5 * 601);

        for s in &subs[..SPLIT_AT - 1] {
            s.subscribe(small).unwrap();
        }
        assert_eq!(
            hub.fanout(&[note(small, frame_bytes(6))], None),
            SPLIT_AT - 1
        );
        for sink in &sinks[..SPLIT_AT - 1] {
            assert_eq!(sink.0.lock().unwrap().1, HashSet::from([me]));
        }
    }

    fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(64 * 1024)
            .unwrap();
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(64 * 1024)
            .unwrap();
        server.set_nonblocking(true).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        (server, client)
    }

    /// A hub with a `messages` budget and one write-through subscriber to a fresh ghid on a
    /// real socket: the hub, the subscriber, the ghid, the subscriber's socket (server end,
    /// for the writer's use) and the reading end.
    fn through_subscriber(
        messages: usize,
    ) -> (
        Arc<Hub>,
        Subscriber,
        Ghid,
        std::net::TcpStream,
        std::net::TcpStream,
    ) {
        let (server, client) = tcp_pair();
        let hub = Hub::new(msgs(messages), 8);
        let d = g();
        let s = hub.connect();
        s.outbox()
            .write_through(Arc::new(Tcp(server.try_clone().unwrap())));
        s.subscribe(d).unwrap();
        (hub, s, d, server, client)
    }

    /// Bytes in the socket's send queue (not yet acknowledged by the peer).
    fn unsent(s: &std::net::TcpStream) -> i32 {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int; the fd is open.
        unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        n
    }

    /// Reads `n` bytes on another thread.
    fn read_n(mut client: std::net::TcpStream, n: usize) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut got = vec![0; n];
            client.read_exact(&mut got).unwrap();
            got
        })
    }

    /// A fanout call larger than the message budget, to a reader that keeps up: sent in
    /// parts as the budget fills, never counted as a slow reader's backlog.
    #[tokio::test]
    async fn write_through_batch_larger_than_the_budget_is_sent_not_dropped() {
        let (hub, s, d, _server, client) = through_subscriber(4);
        let batch: Vec<_> = (1..=10).map(|i| note(d, frame_bytes(i))).collect();
        assert_eq!(hub.fanout(&batch, None), 10);
        let stats = hub.stats();
        assert_eq!((stats.delivered, stats.slow_drops), (10, 0));
        assert_eq!((stats.queued, stats.queued_bytes), (0, 0));
        assert!(!s.outbox().is_aborted());
        let want: Vec<u8> = (1..=10)
            .flat_map(|i| notify_frame(&d, &frame_bytes(i)).to_vec())
            .collect();
        assert_eq!(read_n(client, want.len()).join().unwrap(), want);
    }

    #[tokio::test]
    async fn write_through_sends_a_whole_batch_at_once_and_merges_nothing() {
        let (hub, s, d, _server, client) = through_subscriber(16);
        let batch = [note(d, frame_bytes(1)), note(d, frame_bytes(2))];
        assert_eq!(hub.fanout(&batch, None), 2);
        let stats = hub.stats();
        assert_eq!(
            (stats.delivered, stats.coalesced),
            (2, 0),
            "both frames go out"
        );
        assert_eq!(
            (stats.queued, stats.queued_bytes),
            (0, 0),
            "nothing left queued"
        );
        assert!(s.outbox().is_empty());
        let want = [
            notify_frame(&d, &frame_bytes(1)),
            notify_frame(&d, &frame_bytes(2)),
        ]
        .concat();
        assert_eq!(read_n(client, want.len()).join().unwrap(), want);
    }

    /// A round the socket takes only part of: the frame cut short goes on first and whole,
    /// the rest of the round queues behind it, and the peer reads every byte in order,
    /// nothing interleaved (mail, so nothing may be merged either).
    /// The writer's side, as `direct::writer` does it: what the send queue hands out,
    /// written to the socket until the queue is empty.
    async fn write_out(o: &SendQueue, socket: &std::net::TcpStream) {
        use std::io::Write;
        while !o.is_empty() {
            let Next::Batch(batch) = o.next(64).await else {
                panic!("expected a batch");
            };
            for b in batch {
                let mut at = 0;
                while at < b.len() {
                    match (&*socket).write(&b[at..]) {
                        Ok(n) => at += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            tokio::time::sleep(Duration::from_millis(1)).await
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
    }

    /// Fans out `n` frames of about 200 KiB starting with `kind` (so the socket's buffers
    /// fill part way through the round), drains the queue into the socket as `direct::writer`
    /// does, then ends the stream. Returns the frames, everything the peer read, and the stats.
    async fn cut_round(kind: &[u8; 4], n: u8) -> (Vec<Bytes>, Vec<u8>, HubStats) {
        let (hub, s, d, writer_end, mut client) = through_subscriber(64);
        let o = s.outbox();
        let big = |tag: u8| {
            let mut v = kind.to_vec();
            v.resize(200 * 1024, tag);
            Bytes::from(v)
        };
        let batch: Vec<_> = (1..=n).map(|i| note(d, big(i))).collect();
        hub.fanout(&batch, None);
        assert!(o.bytes() > 0, "the socket took the whole round");
        let frames: Vec<Bytes> = (1..=n).map(|i| notify_frame(&d, &big(i))).collect();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        write_out(o, &writer_end).await;
        writer_end.shutdown(std::net::Shutdown::Write).unwrap();
        (frames, reader.join().unwrap(), hub.stats())
    }

    /// Frames that never merge (share requests): all arrive, whole and in order.
    #[tokio::test]
    async fn a_round_cut_short_queues_its_rest_in_order() {
        let (frames, got, stats) = cut_round(b"GARQ", 3).await;
        assert!(
            got == frames.concat(),
            "not the three frames whole, in order"
        );
        assert_eq!(
            (stats.delivered, stats.queued, stats.queued_bytes),
            (3, 0, 0)
        );
    }

    /// Frames of one dynamic object: the frame the socket took part of is finished whole,
    /// however many newer frames of the same object follow (never replaced by one: that would
    /// tear the websocket stream), and of those only the newest is sent (latest-wins).
    #[tokio::test]
    async fn a_cut_frame_is_finished_whole_and_the_newer_ones_merge() {
        let (frames, got, stats) = cut_round(b"GOBD", 5).await;
        // `cut`: the last frame the socket took (part or all) of during the round.
        let cut = (0..4)
            .find(|&c| {
                let mut want = frames[..=c].concat();
                want.extend_from_slice(&frames[4]);
                got == want
            })
            .unwrap_or_else(|| {
                panic!("{} bytes read: not whole frames then the newest", got.len())
            });
        assert!(
            cut < 3,
            "the socket took frames 0..={cut}: none left to merge"
        );
        assert_eq!(stats.coalesced, 3 - cut as u64);
        assert_eq!((stats.queued, stats.queued_bytes), (0, 0));
    }

    #[tokio::test]
    async fn a_full_socket_hands_over_to_the_writer_and_back() {
        let (hub, s, d, writer_end, client) = through_subscriber(64);
        let o = s.outbox();

        // A reply larger than the socket's buffers: it takes part, the rest is queued.
        let big = Bytes::from(vec![0xab; 4 << 20]);
        assert!(o.push_reply(big.clone()));
        assert!(o.bytes() > 0 && o.bytes() < big.len(), "{}", o.bytes());
        // Behind it, notifications queue and merge (latest-wins) while the socket is full.
        for i in 0..10 {
            hub.fanout(&[note(d, frame_bytes(i))], None);
        }
        assert_eq!(o.len(), 2, "the rest of the reply and one pending frame");
        assert_eq!(hub.stats().coalesced, 9);

        // The writer's side: what the send queue hands out, written as the peer reads.
        let last = notify_frame(&d, &frame_bytes(9));
        let after = notify_frame(&d, &frame_bytes(42));
        let reader = read_n(client, big.len() + last.len() + after.len());
        write_out(o, &writer_end).await;
        // Emptied: the writer waits, and the send queue writes through again (once the peer has
        // read what the kernel still holds, so that the socket takes the next one whole).
        assert!(futures_util::FutureExt::now_or_never(o.next(64)).is_none());
        let t = Instant::now();
        while unsent(&writer_end) > 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "the peer reads");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        hub.fanout(&[note(d, frame_bytes(42))], None);
        assert!(o.is_empty(), "sent at once");
        let got = reader.join().unwrap();
        assert_eq!(&got[..big.len()], &big[..], "the reply, whole and first");
        assert_eq!(&got[big.len()..big.len() + last.len()], &last[..]);
        assert_eq!(&got[big.len() + last.len()..], &after[..]);
        assert_eq!(hub.stats().queued, 0);
    }
}
