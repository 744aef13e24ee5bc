//! # One connection's send queue
//!
//! [`SendQueue`]: bounded by a [`Budget`], latest-wins for the notifications about one
//! object, replies that wait for room, frames written through to a [`DirectSink`] while the
//! socket takes them and otherwise handed to the connection's writer task (the hub's module
//! docs say why).
//!
//! Owns: the queue's operations for the session (replies, single notifications, close and
//! abort) and for its writer. Calls: `queue_state` (what its lock guards) and the hub's
//! counters. A fanout's deliveries to it are in `round`.
use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use super::queue_state::{Budget, CloseKind, DirectSink, Entry, Flushed, SendQueueState, SlotKey};
use super::Counters;

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

/// One connection's bounded outbound queue of ready-to-write websocket frames. Shared (`Arc`)
/// between the hub (producers on any thread), the session's reader (replies) and the
/// connection's single consumer: its writer task (write-through, `server::direct`) or its
/// response body (polled by the HTTP dispatcher that owns the socket, over TLS). A std
/// `Mutex` guards the state: it is held only for queue operations and non-blocking sends,
/// never across an await.
pub struct SendQueue {
    pub(super) state: Mutex<SendQueueState>,
    /// Wakes the consumer (single waiter; registering before checking the state means no
    /// wakeup is lost).
    pub(super) readable: AtomicWaker,
    /// Wakes the reader waiting in `reserve` (single waiter).
    pub(super) room: Notify,
    /// Wakes everyone waiting in `aborted()` (`notify_waiters`).
    pub(super) abort_signal: Notify,
    pub(super) budget: Budget,
    pub(super) counters: Arc<Counters>,
    /// The write-through target (see [`DirectSink`]), set once; frames go to it while
    /// `state.attached`. Read without the lock too, to warm the cache ahead of a delivery
    /// ([`SendQueue::warm`]).
    pub(super) sink: OnceLock<Arc<dyn DirectSink>>,
}

impl SendQueue {
    pub(super) fn new(budget: Budget, counters: Arc<Counters>) -> SendQueue {
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

    /// A standalone outbox (tests, tools).
    pub fn standalone(budget: Budget) -> Arc<SendQueue> {
        Arc::new(SendQueue::new(budget, Arc::default()))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SendQueueState> {
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
    pub(super) fn weight(&self) -> (usize, Option<Instant>) {
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

    /// Aborts the send queue as too slow (counted in
    /// [`HubStats::slow_drops`](super::HubStats::slow_drops)).
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
        c.sent(&flushed);
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
    pub(super) fn offer(&self, key: Option<SlotKey>, msg: &Bytes) -> Push {
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
            self.counters.sent(&flushed);
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
        self.counters.sent(&flushed);
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
