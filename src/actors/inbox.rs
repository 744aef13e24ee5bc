//! `AppInbox`: one app session's event mailbox, an actix actor. Follows the actix chat
//! example: the daemon's app registry ([`super::apps`]) holds the session's [`InboxSender`]
//! and sends to it without waiting, so the daemon never waits for an app; the session takes
//! the events one at a time with [`Inbox::recv`] (a [`Next`] message) as fast as its app
//! reads.
//!
//! Owns: the events the session has not taken yet, in arrival order. An object's updates
//! coalesce while they wait (the latest wins and takes the latest place), so an app that
//! reads slowly gets every object's final state and the inbox holds one update per object
//! at most. Bounded twice, by [`MAX_EVENTS`] events and [`MAX_BYTES`] of their variable
//! parts (object states, refusal messages): in the actix mailbox (counted by the sender,
//! [`InboxSender::send`]) and waiting in the actor (live events; a coalesced update counts
//! once). An app past a bound has stopped reading: the inbox closes (a warning) and
//! [`Inbox::recv`] says so, so its session closes the connection (the app reconnects and
//! reloads its objects) instead of the daemon holding more. What the inbox gives up then:
//! updates and deletes (the app reloads), share results and refusals (answers to that
//! session, logged); `share` events go back through the hook the daemon installed
//! ([`InboxSender::on_lost_share`]), which keeps them in the account as orphans for the
//! app's next session. A closed inbox refuses new events at the sender, so the registry
//! skips it.
//!
//! Messages: `AppEvent` (from the app registry: objects, pulls, shares, dispatch, drains) and
//! [`Next`] (from its session). It runs on the arbiter it is started on: the IPC session's own
//! worker, or any arbiter ([`Inbox::start_in`]). Calls: the lost-share hook.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use actix::dev::Request;
use actix::prelude::*;
use tokio::sync::oneshot;

use super::api::AppEvent;
use crate::golix::Ghid;

/// Events waiting for one app (an object's coalesced updates count once); the same bound
/// applies to the events in the actix mailbox in front of it.
pub const MAX_EVENTS: usize = 4096;
/// Bytes of object state and messages in the events waiting for one app (and, separately,
/// in its mailbox).
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// The next event, once there is one; `None` once the inbox closed.
#[derive(Message)]
#[rtype(result = "Option<AppEvent>")]
pub struct Next;

/// Why [`Inbox::recv`] has no more events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxClosed {
    /// The app did not read its events: an inbox bound was reached.
    Overrun,
    /// The inbox actor is gone (its arbiter stopped).
    Stopped,
}

/// Receives the `share` events a closed inbox gives up.
type LostShareHook = Box<dyn Fn(AppEvent) + Send + Sync>;

/// What the senders and the actor share.
#[derive(Default)]
struct Shared {
    closed: AtomicBool,
    /// Events (and their variable bytes) sent but not yet handled by the actor.
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    lost_share: OnceLock<LostShareHook>,
}

/// The variable part of an event's size (what a peer or app can make large).
fn event_len(e: &AppEvent) -> usize {
    match e {
        AppEvent::Update(v) => v.state.len(),
        AppEvent::RemoteRefused {
            remote,
            code,
            message,
            ..
        } => remote.len() + code.len() + message.len(),
        _ => 0,
    }
}

/// The daemon's side of an inbox: sends without waiting, refuses once the inbox closed.
#[derive(Clone)]
pub struct InboxSender {
    to: Addr<AppInbox>,
    shared: Arc<Shared>,
}

impl InboxSender {
    /// Queues `event`; gives it back if the inbox is closed or gone, or closes it (a warning)
    /// when its mailbox is over a bound (the app stopped reading).
    // The event is handed back as it came (by value, like every `AppEvent`).
    #[allow(clippy::result_large_err)]
    pub fn send(&self, event: AppEvent) -> Result<(), AppEvent> {
        let s = &self.shared;
        // Closed, or its actor is gone (the session ended): the caller keeps the event.
        if s.closed.load(Ordering::Acquire) || !self.to.connected() {
            return Err(event);
        }
        let len = event_len(&event);
        let n = s.queued.fetch_add(1, Ordering::AcqRel) + 1;
        let bytes = s.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        if n > MAX_EVENTS || bytes > MAX_BYTES {
            s.queued.fetch_sub(1, Ordering::AcqRel);
            s.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            s.closed.store(true, Ordering::Release);
            // The actor gives up what waits and wakes its session.
            self.to.do_send(Close);
            return Err(event);
        }
        self.to.do_send(event);
        Ok(())
    }

    /// Whether the inbox closed (the registry skips it).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Installs where the `share` events the inbox gives up after accepting them go (once).
    pub fn on_lost_share(&self, hook: impl Fn(AppEvent) + Send + Sync + 'static) {
        let _ = self.shared.lost_share.set(Box::new(hook));
    }
}

/// Closes the inbox (from a sender that found its mailbox over a bound).
#[derive(Message)]
#[rtype(result = "()")]
struct Close;

/// The waiting events, each in a numbered slot. Updates coalesce per ghid: the latest
/// takes a new slot and the older one turns stale (skipped when popped).
#[derive(Default)]
struct Waiting {
    order: VecDeque<(u64, Slot)>,
    /// The latest update of each ghid and the number of its slot.
    updates: HashMap<Ghid, (u64, AppEvent)>,
    next_seq: u64,
    /// Events in live slots.
    live: usize,
    /// Variable bytes of the live events.
    bytes: usize,
}

enum Slot {
    /// An update of this ghid; live while `updates` holds it under this slot's number.
    Update(Ghid),
    Other(AppEvent),
}

impl Waiting {
    fn push(&mut self, event: AppEvent) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += event_len(&event);
        match event {
            AppEvent::Update(view) => {
                let ghid = view.ghid;
                match self.updates.insert(ghid, (seq, AppEvent::Update(view))) {
                    Some((_, old)) => self.bytes -= event_len(&old),
                    None => self.live += 1,
                }
                self.order.push_back((seq, Slot::Update(ghid)));
            }
            other => {
                self.live += 1;
                self.order.push_back((seq, Slot::Other(other)));
            }
        }
        // Stale slots stay at most as many as live ones (plus a little), so the queue is
        // bounded by the live events.
        if self.order.len() > 2 * self.live + 64 {
            let updates = &self.updates;
            self.order.retain(|(seq, slot)| match slot {
                Slot::Update(g) => updates.get(g).is_some_and(|(s, _)| s == seq),
                Slot::Other(_) => true,
            });
        }
    }

    fn pop(&mut self) -> Option<AppEvent> {
        loop {
            let (seq, slot) = self.order.pop_front()?;
            let event = match slot {
                Slot::Other(e) => e,
                // A slot whose update was coalesced into a later one is stale: skip it.
                Slot::Update(g) => match self.updates.entry(g) {
                    Entry::Occupied(o) if o.get().0 == seq => o.remove().1,
                    _ => continue,
                },
            };
            self.live -= 1;
            self.bytes -= event_len(&event);
            return Some(event);
        }
    }

    fn over(&self) -> bool {
        self.live > MAX_EVENTS || self.bytes > MAX_BYTES
    }
}

/// The actor (see the module doc).
pub struct AppInbox {
    waiting: Waiting,
    /// The session's pending `Next`, while nothing waits.
    taker: Option<oneshot::Sender<Option<AppEvent>>>,
    shared: Arc<Shared>,
    log: slog::Logger,
}

impl Actor for AppInbox {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        // The session ended with events unread: its shares go back too.
        self.close();
    }
}

impl Handler<AppEvent> for AppInbox {
    type Result = ();

    fn handle(&mut self, event: AppEvent, _: &mut Context<Self>) {
        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
        self.shared
            .queued_bytes
            .fetch_sub(event_len(&event), Ordering::AcqRel);
        if self.is_closed() {
            self.give_up(vec![event]);
            return;
        }
        let event = match self.taker.take() {
            Some(taker) => match taker.send(Some(event)) {
                Ok(()) => return,
                // The session went away before taking it.
                Err(event) => event.expect("sent as Some"),
            },
            None => event,
        };
        self.waiting.push(event);
        if self.waiting.over() {
            slog::warn!(self.log, "app does not read its events; closing its inbox";
                "events" => self.waiting.live, "bytes" => self.waiting.bytes);
            self.close();
        }
    }
}

impl Handler<Close> for AppInbox {
    type Result = ();

    fn handle(&mut self, _: Close, _: &mut Context<Self>) {
        slog::warn!(self.log, "app does not read its events (mailbox full); closing its inbox";
            "events" => self.shared.queued.load(Ordering::Acquire),
            "bytes" => self.shared.queued_bytes.load(Ordering::Acquire));
        self.close();
    }
}

impl Handler<Next> for AppInbox {
    type Result = ResponseFuture<Option<AppEvent>>;

    fn handle(&mut self, _: Next, _: &mut Context<Self>) -> Self::Result {
        if self.is_closed() {
            self.close();
            return Box::pin(async { None });
        }
        if let Some(e) = self.waiting.pop() {
            return Box::pin(async move { Some(e) });
        }
        let (tx, rx) = oneshot::channel();
        // One `Next` at a time (see `Inbox::recv`); a newer one replaces an abandoned one.
        if let Some(old) = self.taker.replace(tx) {
            drop(old);
        }
        Box::pin(async move { rx.await.ok().flatten() })
    }
}

/// The session's side of its inbox: hands the daemon its [`InboxSender`] and takes events.
pub struct Inbox {
    addr: Addr<AppInbox>,
    shared: Arc<Shared>,
    /// The `Next` in flight: kept across calls, so a `recv` dropped in a `select!` loses no
    /// event (the next call awaits the same request).
    next: Option<Pin<Box<Request<AppInbox, Next>>>>,
}

impl Inbox {
    /// Starts an inbox on the current actix arbiter (the calling session's worker).
    pub fn start(log: slog::Logger) -> Inbox {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        Inbox::from_addr(AppInbox::create(|_| AppInbox::new(s, log)), shared)
    }

    /// Starts an inbox on `arbiter` (callers outside an actix system).
    pub fn start_in(arbiter: &actix_rt::ArbiterHandle, log: slog::Logger) -> Inbox {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let addr = AppInbox::start_in_arbiter(arbiter, |_| AppInbox::new(s, log));
        Inbox::from_addr(addr, shared)
    }

    fn from_addr(addr: Addr<AppInbox>, shared: Arc<Shared>) -> Inbox {
        Inbox {
            addr,
            shared,
            next: None,
        }
    }

    /// Where the daemon sends this app's events.
    pub fn sender(&self) -> InboxSender {
        InboxSender {
            to: self.addr.clone(),
            shared: self.shared.clone(),
        }
    }

    /// The next event, or why there is none any more (the app stopped reading: see the
    /// module doc; or the inbox actor is gone). Cancel-safe.
    pub async fn recv(&mut self) -> Result<AppEvent, InboxClosed> {
        let addr = &self.addr;
        let next = self.next.get_or_insert_with(|| Box::pin(addr.send(Next)));
        let got = next.as_mut().await;
        self.next = None;
        match got {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err(InboxClosed::Overrun),
            Err(_) => Err(InboxClosed::Stopped),
        }
    }
}

impl AppInbox {
    fn new(shared: Arc<Shared>, log: slog::Logger) -> AppInbox {
        AppInbox {
            waiting: Waiting::default(),
            taker: None,
            shared,
            log,
        }
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Refuses new events, gives up what waits and tells a waiting session.
    fn close(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        let mut dropped = Vec::new();
        while let Some(e) = self.waiting.pop() {
            dropped.push(e);
        }
        self.waiting = Waiting::default();
        self.give_up(dropped);
        if let Some(taker) = self.taker.take() {
            let _ = taker.send(None);
        }
    }

    /// Hands `share` events to the lost-share hook; the rest are this session's (logged).
    fn give_up(&self, events: Vec<AppEvent>) {
        let mut lost = 0usize;
        for e in events {
            match (&e, self.shared.lost_share.get()) {
                (AppEvent::Share { .. }, Some(hook)) => hook(e),
                (AppEvent::Update(_) | AppEvent::Delete(_), _) => {}
                _ => lost += 1,
            }
        }
        if lost > 0 {
            slog::warn!(self.log, "events for a closed app session dropped"; "events" => lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::api::ObjectView;
    use crate::golix::Algo;
    use std::sync::Mutex;
    use std::time::Duration;

    fn view(ghid: Ghid, state: Vec<u8>) -> AppEvent {
        AppEvent::Update(ObjectView {
            ghid,
            author: ghid,
            api_id: None,
            dynamic: true,
            private: false,
            state,
        })
    }

    fn share(ghid: Ghid) -> AppEvent {
        AppEvent::Share {
            ghid,
            origin: ghid,
            api_id: Some(ghid),
        }
    }

    fn any() -> Ghid {
        Ghid::pseudorandom(Algo::SHA512)
    }

    async fn drain(inbox: &mut Inbox) -> Vec<AppEvent> {
        let mut got = Vec::new();
        while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(100), inbox.recv()).await {
            got.push(e);
        }
        got
    }

    #[actix_rt::test]
    async fn updates_coalesce_while_nobody_takes_them_latest_wins() {
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.sender();
        let (a, b) = (any(), any());
        for i in 0..100u8 {
            to.send(view(a, vec![i])).unwrap();
            to.send(view(b, vec![i])).unwrap();
        }
        to.send(AppEvent::Delete(b)).unwrap();
        let got = drain(&mut inbox).await;
        assert_eq!(
            got,
            [view(a, vec![99]), view(b, vec![99]), AppEvent::Delete(b)]
        );
    }

    #[actix_rt::test]
    async fn a_coalesced_update_takes_the_latest_place() {
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.sender();
        let (a, b) = (any(), any());
        to.send(view(a, vec![1])).unwrap();
        to.send(AppEvent::Delete(b)).unwrap();
        to.send(view(a, vec![2])).unwrap();
        assert_eq!(
            drain(&mut inbox).await,
            [AppEvent::Delete(b), view(a, vec![2])]
        );
    }

    #[test]
    fn stale_slots_stay_bounded_by_the_live_ones() {
        let mut w = Waiting::default();
        let a = any();
        for i in 0..100_000u32 {
            w.push(view(a, i.to_le_bytes().to_vec()));
        }
        assert_eq!(w.live, 1);
        assert!(w.order.len() <= 2 + 64, "{} slots", w.order.len());
        assert_eq!(w.pop(), Some(view(a, 99_999u32.to_le_bytes().to_vec())));
        assert_eq!(w.pop(), None);
        assert_eq!((w.live, w.bytes), (0, 0));
    }

    #[actix_rt::test]
    async fn a_recv_dropped_mid_wait_loses_no_event() {
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.sender();
        let g = any();
        // Nothing waits: this `recv` is abandoned after its `Next` reached the inbox.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), inbox.recv())
                .await
                .is_err()
        );
        to.send(AppEvent::Delete(g)).unwrap();
        assert_eq!(drain(&mut inbox).await, [AppEvent::Delete(g)]);
    }

    #[actix_rt::test]
    async fn an_app_that_stops_reading_is_cut_off_at_the_bounds() {
        // By count: distinct events that cannot coalesce.
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.sender();
        for _ in 0..MAX_EVENTS {
            to.send(AppEvent::Delete(any())).unwrap();
        }
        assert!(to.send(AppEvent::Delete(any())).is_err());
        assert_eq!(inbox.recv().await, Err(InboxClosed::Overrun));
        // By bytes: updates of distinct objects, and refusal messages.
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.sender();
        let state = vec![0u8; 1024 * 1024];
        for _ in 0..(MAX_BYTES / state.len()) {
            to.send(view(any(), state.clone())).unwrap();
        }
        let refused = AppEvent::RemoteRefused {
            ghid: any(),
            remote: String::new(),
            code: String::new(),
            message: "x".into(),
        };
        assert!(to.send(refused).is_err());
        assert_eq!(inbox.recv().await, Err(InboxClosed::Overrun));
        // Just under both: everything arrives.
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.sender();
        for _ in 0..MAX_EVENTS {
            to.send(AppEvent::Delete(any())).unwrap();
        }
        assert_eq!(drain(&mut inbox).await.len(), MAX_EVENTS);
    }

    #[actix_rt::test]
    async fn the_waiting_bound_counts_live_events_and_closes() {
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.sender();
        // Let the actor take each batch, so the waiting bound (not the mailbox's) is hit.
        for _ in 0..=MAX_EVENTS / 512 {
            for _ in 0..512 {
                let _ = to.send(AppEvent::Delete(any()));
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(to.is_closed());
        assert_eq!(inbox.recv().await, Err(InboxClosed::Overrun));
    }

    #[actix_rt::test]
    async fn an_inbox_whose_actor_is_gone_says_so_not_overrun() {
        let arbiter = actix_rt::Arbiter::new();
        let mut inbox = Inbox::start_in(&arbiter.handle(), crate::logging::discard());
        assert!(arbiter.stop());
        tokio::task::spawn_blocking(move || arbiter.join())
            .await
            .unwrap()
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await;
        assert_eq!(got, Ok(Err(InboxClosed::Stopped)));
        // The daemon's side sees it too: a share sent now comes back to its caller.
        assert!(inbox.sender().send(share(any())).is_err());
    }

    #[actix_rt::test]
    async fn shares_a_closed_inbox_gives_up_go_to_the_hook() {
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.sender();
        let kept = Arc::new(Mutex::new(Vec::new()));
        let k = kept.clone();
        to.on_lost_share(move |e| k.lock().unwrap().push(e));
        let (s1, s2) = (any(), any());
        // s1 waits in the actor, s2 in the mailbox behind the updates that overflow it.
        to.send(share(s1)).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut n = 0;
        while to.send(view(any(), vec![0; 1024])).is_ok() {
            n += 1;
            if n == MAX_EVENTS / 2 {
                to.send(share(s2)).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(inbox.recv().await, Err(InboxClosed::Overrun));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut got = kept.lock().unwrap().clone();
        got.sort_by_key(|e| format!("{e:?}"));
        let mut want = vec![share(s1), share(s2)];
        want.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(got, want);
        // Closed: the sender gives new events back to its caller.
        assert_eq!(to.send(share(s1)), Err(share(s1)));
    }
}
