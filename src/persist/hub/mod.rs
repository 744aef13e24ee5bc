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
//! way. No task wakeup, no lock held across an await, no per-subscriber allocation. Only
//! when the socket does not take everything does the connection's writer task take over
//! (it alone writes while `blocked`, waiting for writability, and hands the socket back once
//! the queue is empty); from then on notifications queue and coalesce as above, so every
//! bound holds.
//!
//! Large rounds: with helper threads ([`Hub::send_with`]), a round reaching hundreds of
//! subscribers is cut into parts sent side by side, the caller waiting for all of them
//! before the next round (so the order per connection holds). Every delivery fetches the
//! next subscribers' memory ahead of its own send ([`crate::hint`]).
//!
//! Owns: the subscription map, the connections' send queues, fanout counters. Calls:
//! [`super::wire`] (notify encoding), [`super::wsframe`], `golix` (to key GDXX notifications
//! by their target), [`crate::beside`] and [`crate::work_pool`] (the helpers) and
//! [`crate::hint`].
//! Sans-IO apart from task wakeups, the [`DirectSink`] it is handed and the helpers'
//! threads; the websocket session in [`super::server`] drives it.
//!
//! Layout, each layer calling only those before it: `queue_state` ([`Budget`],
//! [`DirectSink`], what a send queue's lock guards, and the write-through sends), `queue`
//! ([`SendQueue`]), `round` (a fanout round and how it is sent); this file holds the
//! subscription map ([`Hub`], [`Subscriber`]) and the counters.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use bytes::Bytes;

use super::Notification;
use super::{wire, wsframe};
use crate::golix::{Ghid, Object, Policy};

mod queue;
mod queue_state;
mod round;
#[cfg(test)]
mod tests;

pub use queue::{Next, NoRoom, Push, SendQueue, WRITE_BATCH_BYTES};
pub use queue_state::{
    Budget, CloseKind, DirectSink, SlotKey, DEFAULT_OUTBOUND_BYTES, DEFAULT_OUTBOUND_BYTES_TOTAL,
    DEFAULT_SEND_TIMEOUT,
};
use queue_state::{Flushed, Frame};
pub use round::Helpers;
use round::{send_part, send_split, Round, Tally, Warm, SPLIT_AT, WARM_AHEAD};

/// Identifies one connection inside the hub.
pub type ConnId = u64;

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

    /// Takes what a write-through flush sent off the gauges.
    fn sent(&self, flushed: &Flushed) {
        self.queued
            .fetch_sub(flushed.messages as u64, Ordering::Relaxed);
        self.queued_bytes
            .fetch_sub(flushed.bytes as u64, Ordering::Relaxed);
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
    helpers: OnceLock<Helpers>,
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

    /// Lets `helpers` send parts of rounds of 256 subscribers or more (`SPLIT_AT`) beside
    /// the fanout's caller (once; later calls are ignored). On two cores, a round of 1,000
    /// paced notifications then reached its last subscriber about a seventh sooner
    /// (BENCHMARKS.md, "Session 21").
    pub fn send_with(&self, helpers: Helpers) {
        let _ = self.helpers.set(helpers);
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
                Some(helpers) if r.targets.len() >= SPLIT_AT => send_split(helpers, r),
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
