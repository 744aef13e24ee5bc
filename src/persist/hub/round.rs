//! # A fanout round: one subscription's notifications, sent to its subscribers
//!
//! [`super::Hub::fanout`] cuts its notifications into rounds; each subscriber of a round gets
//! its frames in one `SendQueue::deliver` (one lock; write-through, one vectored `send`
//! straight from the shared buffers). While the kernel takes one send, the next subscribers'
//! memory is fetched ahead ([`crate::hint`]). A round of hundreds of subscribers is cut into
//! parts sent side by side by the hub's helper threads ([`Helpers`]: bound to the other
//! cores when they can be) and the caller, which waits for every part, so each connection
//! still gets its rounds in order.
//!
//! Owns: `Round`, `Frame`, the sending of a round (`send_part`, `send_split`) and
//! `SendQueue`'s fanout-facing side. Calls: `queue_state` (under the queue's lock),
//! [`crate::beside`], [`crate::work_pool`], [`crate::hint`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::queue::{Push, SendQueue};
use super::queue_state::{send_frames, Enqueued, Entry, Frame, Taken};
use crate::beside::{Beside, Job};
use crate::golix::Ghid;
use crate::work_pool::WorkPool;

/// How many subscribers ahead [`Hub::fanout`](super::Hub::fanout) starts fetching a send
/// queue while it lists a round's subscribers.
pub(super) const WARM_AHEAD: usize = 4;

/// A fanout round reaching at least this many subscribers is sent in parts side by side,
/// when the hub has helper threads ([`Hub::send_with`](super::Hub::send_with)).
pub(super) const SPLIT_AT: usize = 256;

/// Subscribers per part of a split round, at least: a part is worth a thread's wake-up.
pub(super) const PART_MIN: usize = 128;

/// A run of one subscription's consecutive notifications and the subscribers it goes to
/// ([`Hub::fanout`](super::Hub::fanout)).
pub(super) struct Round {
    pub(super) subscription: Ghid,
    pub(super) targets: Vec<Arc<SendQueue>>,
    pub(super) frames: Vec<Frame>,
}

/// How far a fanout has warmed a subscriber's memory (see [`send_part`]): each stage
/// reads what the stage before it brought into the cache.
#[derive(Clone, Copy)]
pub(super) enum Warm {
    /// The send queue itself (its lock, state and reference count).
    Queue,
    /// The socket object the send queue's sink points to.
    Sink,
    /// What the socket reads first when sending.
    Socket,
}

/// What [`SendQueue::deliver`] did with a round's frames.
#[derive(Default)]
pub(super) struct Delivered {
    /// Sent or queued.
    pub(super) delivered: usize,
    /// Replaced a pending one (latest-wins).
    pub(super) coalesced: usize,
    /// Did not fit the budget: the connection is aborted as too slow.
    pub(super) overflow: bool,
}

/// What a fanout's deliveries did, added up.
#[derive(Clone, Copy, Default)]
pub(super) struct Tally {
    pub(super) delivered: u64,
    pub(super) coalesced: u64,
    /// Connections aborted as too slow.
    pub(super) dropped: u64,
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
pub(super) fn send_part(targets: &[Arc<SendQueue>], frames: &[Frame]) -> Tally {
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

/// Who sends a split round's parts beside the fanout's caller
/// ([`Hub::send_with`](super::Hub::send_with)).
pub enum Helpers {
    /// Threads bound to the other cores, each handed one part ([`crate::beside`]): a part
    /// runs on another core than the caller's, or on the caller once its own part is sent.
    Beside(Arc<Beside>),
    /// A pool whose threads the kernel places (where bound threads would crowd onto some
    /// cores: a CPU quota).
    Pool(WorkPool),
}

impl Helpers {
    /// Parts a round may be cut into: one per core (bound threads: the caller's core's own
    /// thread is passed over, the caller sends that part), or the caller's and one per
    /// pool thread.
    fn parts(&self) -> usize {
        match self {
            Helpers::Beside(b) => b.threads().max(1),
            Helpers::Pool(p) => p.threads() + 1,
        }
    }
}

/// Sends a large round in parts side by side: the first here, the others on `helpers`'
/// threads (or here, when none is free). Returns once every part is sent, so rounds still
/// reach each connection in order, and a fanout still returns with everything sent or
/// queued.
///
/// Why bound threads when there are: a pool thread woken by the fanout's caller was placed
/// on the caller's core, and the two parts started 1.4 ms apart (median; BENCHMARKS.md,
/// "Session 23"), one waiting for the other.
pub(super) fn send_split(helpers: &Helpers, round: Round) -> Tally {
    let parts = helpers.parts().min(round.targets.len() / PART_MIN).max(1);
    let targets: Arc<[Arc<SendQueue>]> = round.targets.into();
    let frames: Arc<[Frame]> = round.frames.into();
    let size = targets.len().div_ceil(parts);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut handed = Vec::new();
    for k in 1..parts {
        let (targets, frames, tx) = (targets.clone(), frames.clone(), tx.clone());
        let part = k * size..((k + 1) * size).min(targets.len());
        let job = move || {
            let _ = tx.send(send_part(&targets[part], &frames));
        };
        let left = match helpers {
            Helpers::Beside(b) => b.hand(Box::new(job)).map(|h| handed.push(h)).err(),
            Helpers::Pool(p) => p.try_submit(job).err().map(|j| Box::new(j) as Job),
        };
        if let Some(job) = left {
            job();
        }
    }
    drop(tx);
    let mut tally = send_part(&targets[..size], &frames);
    for h in handed {
        h.finish();
    }
    // Ends once every part's sender is gone: each sends its tally first (a part that
    // panicked, reported by the panic hook, adds nothing).
    for part in rx {
        tally += part;
    }
    tally
}

impl SendQueue {
    /// Starts loading one stage of what a delivery to this queue reads ([`Warm`]).
    pub(super) fn warm(self: &Arc<SendQueue>, stage: Warm) {
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

    /// Queues (or, write-through, sends) one fanout round's frames for this connection, in
    /// order, under one lock: while the socket takes them and nothing is queued, straight
    /// from the shared buffers in one vectored `send` (no queue entry, no buffer clone);
    /// what it does not take is queued (latest-wins from then on) for the writer task.
    /// Otherwise each frame is queued as by [`SendQueue::push_notify`]. The hub's fanout
    /// adds up the shared message counters once per round; the gauges are kept here.
    pub(super) fn deliver(&self, frames: &[Frame]) -> Delivered {
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
}
