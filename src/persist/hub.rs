//! # Fanout hub
//!
//! The subscription hub of the persister (DESIGN.md §3): a map Ghid -> subscribers, and one
//! bounded [`Outbox`] per connection. A notification is encoded **once**, as a complete
//! websocket frame ([`wsframe`]: server frames are unmasked, so the same bytes are valid on
//! every connection), into a shared [`Bytes`]; every subscriber's outbox gets a clone of the
//! same reference-counted buffer, and the session writes it to the socket as it is.
//!
//! Slow readers: an outbox holds at most `capacity` messages. Notifications about the state
//! of a dynamic object (its frames, and the GDXX that removes it) are *latest-wins*: while one
//! for the same (subscription, object) is still queued, a newer one replaces it in place, so a
//! stalled reader holds at most one pending notification per dynamic object and never delays
//! anyone else. Notifications that must not be merged (GARQs: mail) take a queue slot each;
//! when a connection's queue is full it is dropped as too slow ([`Push::Overflow`]) — its
//! client reconnects and re-subscribes, which redelivers stored mail.
//!
//! Owns: the subscription map, outboxes, fanout counters. Calls: [`super::wire`] (notify
//! encoding), [`super::wsframe`], and `golix` (to key GDXX notifications by their target).
//! Sans-IO apart from task wakeups; the websocket session in [`super::server`] drives it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use super::Notification;
use super::{wire, wsframe};
use crate::golix::{Ghid, Object, Policy};

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

/// How an outbox was asked to end.
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

/// Outcome of queueing a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
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
    /// Connections dropped because their queue overflowed.
    pub slow_drops: u64,
    /// Messages waiting in outboxes right now (all connections).
    pub queued: u64,
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
}

enum Entry {
    Msg(Bytes),
    Latest(SlotKey),
}

#[derive(Default)]
struct OutboxState {
    /// Messages in send order. `Latest` entries point into `latest`.
    queue: VecDeque<Entry>,
    /// The newest pending bytes of each latest-wins key present in `queue`.
    latest: SlotMap,
    /// Set by `close`: accept nothing more, drain, then tell the writer to close.
    closing: Option<CloseKind>,
    /// Set by `release`: the session is done reading; the writer may end the response.
    released: bool,
    /// Set by `abort` or on overflow: the writer stops at once.
    aborted: bool,
}

/// One connection's bounded outbound queue of ready-to-write websocket frames. Shared (`Arc`)
/// between the hub (producers on any thread), the session's reader (replies) and the
/// connection's response body (the single consumer, polled by the HTTP dispatcher that owns
/// the socket). A std `Mutex` guards the state: it is held only for queue operations, never
/// across an await.
pub struct Outbox {
    state: Mutex<OutboxState>,
    /// Wakes the consumer (single waiter; registering before checking the state means no
    /// wakeup is lost).
    readable: AtomicWaker,
    /// Wakes the reader waiting in `reserve` (single waiter).
    room: Notify,
    /// Wakes everyone waiting in `aborted()` (`notify_waiters`).
    abort_signal: Notify,
    capacity: usize,
    counters: Arc<Counters>,
}

impl Outbox {
    fn new(capacity: usize, counters: Arc<Counters>) -> Outbox {
        Outbox {
            state: Mutex::new(OutboxState::default()),
            readable: AtomicWaker::new(),
            room: Notify::new(),
            abort_signal: Notify::new(),
            capacity: capacity.max(1),
            counters,
        }
    }

    /// A standalone outbox (tests, tools).
    pub fn standalone(capacity: usize) -> Arc<Outbox> {
        Arc::new(Outbox::new(capacity, Arc::default()))
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
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

    /// Waits until there is room for one more message (or the outbox is closing). Replies go
    /// through here first, so a client that sends requests without reading replies is slowed
    /// down by TCP backpressure instead of growing the queue.
    pub async fn reserve(&self) {
        self.reserve_below(self.capacity).await;
    }

    /// Waits until fewer than `limit` messages are queued (or the outbox is closing). Bulk
    /// senders (stored mail re-delivered at subscribe) use half the capacity, so the other
    /// half stays free for live notifications and the connection is not dropped as too slow
    /// for reading its own mailbox.
    pub async fn reserve_below(&self, limit: usize) {
        let limit = limit.clamp(1, self.capacity);
        loop {
            let wait = self.room.notified();
            {
                let st = self.lock();
                if st.queue.len() < limit || st.closing.is_some() || st.aborted {
                    return;
                }
            }
            wait.await;
        }
    }

    /// Most messages this outbox holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues a reply (or any frame that must not be merged nor dropped, such as a pong).
    /// Call [`Outbox::reserve`] first to respect the bound. Returns false if closing.
    pub fn push_reply(&self, msg: Bytes) -> bool {
        let mut st = self.lock();
        if st.closing.is_some() || st.aborted {
            return false;
        }
        st.queue.push_back(Entry::Msg(msg));
        drop(st);
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        self.readable.wake();
        true
    }

    /// Queues a notification. With a key, a pending notification for the same key is
    /// replaced (latest-wins) and takes no new slot. A full queue aborts the connection.
    pub fn push_notify(&self, key: Option<SlotKey>, msg: Bytes) -> Push {
        let push = self.offer(key, msg);
        let c = &self.counters;
        match push {
            Push::Queued => {
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
        push
    }

    /// [`Outbox::push_notify`] without touching the shared counters (the hub's fanout adds
    /// them up once per notification instead of once per subscriber).
    fn offer(&self, key: Option<SlotKey>, msg: Bytes) -> Push {
        let mut st = self.lock();
        if st.closing.is_some() || st.aborted {
            return Push::Closed;
        }
        if let Some(k) = key {
            if let Some(slot) = st.latest.get_mut(&k) {
                *slot = msg;
                return Push::Coalesced;
            }
        }
        if st.queue.len() >= self.capacity {
            drop(st);
            self.abort();
            return Push::Overflow;
        }
        match key {
            Some(k) => {
                st.latest.insert(k, msg);
                st.queue.push_back(Entry::Latest(k));
            }
            None => st.queue.push_back(Entry::Msg(msg)),
        }
        drop(st);
        self.readable.wake();
        Push::Queued
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
        st.queue.clear();
        st.latest.clear();
        drop(st);
        self.counters.queued.fetch_sub(dropped, Ordering::Relaxed);
        self.readable.wake();
        self.room.notify_one();
        self.abort_signal.notify_waiters();
    }

    pub fn is_aborted(&self) -> bool {
        self.lock().aborted
    }

    /// Resolves once the outbox is aborted.
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

    /// The writer's side: takes up to `max` messages at once (one lock per batch), or says
    /// that the outbox is closed or aborted; `Pending` registers the consumer's waker.
    pub fn poll_next(&self, cx: &mut Context<'_>, max: usize) -> Poll<Next> {
        self.readable.register(cx.waker());
        let mut st = self.lock();
        if st.aborted {
            return Poll::Ready(Next::Abort);
        }
        if !st.queue.is_empty() {
            let n = st.queue.len().min(max.max(1));
            let mut batch = Vec::with_capacity(n);
            for _ in 0..n {
                match st.queue.pop_front() {
                    Some(Entry::Msg(b)) => batch.push(b),
                    Some(Entry::Latest(k)) => {
                        if let Some(b) = st.latest.remove(&k) {
                            batch.push(b);
                        }
                    }
                    None => break,
                }
            }
            drop(st);
            self.counters.queued.fetch_sub(n as u64, Ordering::Relaxed);
            self.room.notify_one();
            return Poll::Ready(Next::Batch(batch));
        }
        match st.closing {
            Some(kind) => Poll::Ready(Next::Close(kind)),
            None => Poll::Pending,
        }
    }

    /// [`Outbox::poll_next`] as a future.
    pub async fn next(&self, max: usize) -> Next {
        poll_fn(|cx| self.poll_next(cx, max)).await
    }

    /// Ready once the session has released the outbox (or it was aborted).
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
    subs: RwLock<HashMap<Ghid, HashMap<ConnId, Arc<Outbox>>>>,
    next_id: AtomicU64,
    counters: Arc<Counters>,
    outbound_queue: usize,
    max_subscriptions: usize,
    /// Told (under the map's write lock, so in order) when a ghid gains its first subscriber
    /// here (`true`) or loses its last (`false`): the cluster link subscribes to other
    /// front-ends' notifications for exactly those ghids.
    interest: std::sync::OnceLock<InterestHook>,
}

/// See [`Hub::on_interest`].
pub type InterestHook = Box<dyn Fn(Ghid, bool) + Send + Sync>;

/// Error of [`Subscriber::subscribe`]: the connection holds `max_subscriptions` already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitReached(pub usize);

impl Hub {
    pub fn new(outbound_queue: usize, max_subscriptions: usize) -> Arc<Hub> {
        Arc::new(Hub {
            subs: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            counters: Arc::default(),
            outbound_queue,
            max_subscriptions,
            interest: std::sync::OnceLock::new(),
        })
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
        Subscriber {
            id,
            outbox: Arc::new(Outbox::new(self.outbound_queue, self.counters.clone())),
            subscriptions: Mutex::new(HashSet::new()),
            hub: self.clone(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Ghid, HashMap<ConnId, Arc<Outbox>>>> {
        self.subs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<Ghid, HashMap<ConnId, Arc<Outbox>>>> {
        self.subs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers each notification to every subscriber of its subscription except `exclude`
    /// (the uploader). Each notification is encoded once. Returns how many messages were
    /// queued or coalesced.
    pub fn fanout(&self, notifications: &[Notification], exclude: Option<ConnId>) -> usize {
        let mut sent = 0;
        for n in notifications {
            let subs = self.read();
            let Some(targets) = subs.get(&n.subscription) else {
                continue;
            };
            if targets.len() <= usize::from(exclude.is_some_and(|e| targets.contains_key(&e))) {
                continue;
            }
            let bytes = notify_frame(&n.subscription, &n.object);
            let key = slot_key(&n.subscription, &n.object);
            // Straight into each outbox under the read lock: no per-subscriber allocation
            // or reference-count traffic; the counters are added up once below.
            let c = &self.counters;
            // Counted as queued up front so that a writer popping meanwhile never takes the
            // gauge below zero; the difference is returned below.
            let upper = targets.len() as u64;
            c.queued.fetch_add(upper, Ordering::Relaxed);
            let (mut queued, mut coalesced, mut dropped) = (0, 0, 0);
            for (id, o) in targets {
                if Some(*id) == exclude {
                    continue;
                }
                match o.offer(key, bytes.clone()) {
                    Push::Queued => queued += 1,
                    Push::Coalesced => coalesced += 1,
                    Push::Overflow => dropped += 1,
                    Push::Closed => {}
                }
            }
            drop(subs);
            c.queued.fetch_sub(upper - queued, Ordering::Relaxed);
            c.encoded.fetch_add(1, Ordering::Relaxed);
            c.delivered.fetch_add(queued, Ordering::Relaxed);
            c.coalesced.fetch_add(coalesced, Ordering::Relaxed);
            c.slow_drops.fetch_add(dropped, Ordering::Relaxed);
            sent += (queued + coalesced) as usize;
        }
        sent
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
        }
    }
}

/// One connection's registration in the hub (an RAII guard: dropping it unsubscribes
/// everything). Owned by the connection's session.
pub struct Subscriber {
    id: ConnId,
    outbox: Arc<Outbox>,
    /// This connection's subscriptions, for `list_subscriptions`, the limit, and cleanup.
    subscriptions: Mutex<HashSet<Ghid>>,
    hub: Arc<Hub>,
}

impl Subscriber {
    pub fn id(&self) -> ConnId {
        self.id
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
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
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::Algo;

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

    async fn drain(o: &Outbox) -> Vec<Bytes> {
        match o.next(usize::MAX).await {
            Next::Batch(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn one_encoding_shared_by_all_subscribers_and_uploader_skipped() {
        let hub = Hub::new(16, 8);
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

    #[tokio::test]
    async fn stalled_reader_keeps_only_the_newest_frame() {
        let hub = Hub::new(4, 8);
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
        let hub = Hub::new(3, 8);
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
        let hub = Hub::new(4, 2);
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
        let o = Outbox::standalone(2);
        assert!(o.push_reply(Bytes::from_static(b"a")));
        assert!(o.push_reply(Bytes::from_static(b"b")));
        let reserve = o.reserve();
        let mut reserve = pin!(reserve);
        assert!(futures_util::FutureExt::now_or_never(reserve.as_mut()).is_none());
        assert_eq!(drain(&o).await.len(), 2);
        reserve.await;
        o.close(CloseKind::Normal);
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
}
