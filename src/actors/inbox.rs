//! `AppInbox`: one app session's event mailbox, an actix actor. Follows the actix chat
//! example: the daemon's app registry ([`super::apps`]) holds the session's
//! `Recipient<AppEvent>` and `do_send`s to it, so the daemon never waits for an app; the
//! session takes the events one at a time with [`Inbox::recv`] (a [`Next`] message) as fast
//! as its app reads.
//!
//! Owns: the events the session has not taken yet, in arrival order. An object's updates
//! coalesce while they wait (latest wins, in the place of the first), so an app that reads
//! slowly gets every object's final state and the inbox holds one update per object at most.
//! Bounded: [`MAX_EVENTS`] waiting events and [`MAX_BYTES`] of their object states. An app
//! past either bound has stopped reading: the inbox closes (a warning; what waits is dropped)
//! and [`Inbox::recv`] says so, so its session closes the connection (the app reconnects and
//! reloads its objects) instead of the daemon holding more.
//!
//! Messages: `AppEvent` (from the app registry: objects, pulls, shares, dispatch, drains) and
//! [`Next`] (from its session). It runs on the arbiter it is started on: the IPC session's own
//! worker, or any arbiter ([`Inbox::start_in`]). Calls: nothing.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;

use actix::dev::Request;
use actix::prelude::*;
use tokio::sync::oneshot;

use super::api::AppEvent;
use crate::golix::Ghid;

/// Events waiting for one app (an object's coalesced updates count once).
pub const MAX_EVENTS: usize = 4096;
/// Bytes of object state in the updates waiting for one app.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// The next event, once there is one; `None` once the inbox closed.
#[derive(Message)]
#[rtype(result = "Option<AppEvent>")]
pub struct Next;

/// The waiting events. Updates coalesce per ghid.
#[derive(Default)]
struct Waiting {
    order: VecDeque<Slot>,
    updates: HashMap<Ghid, AppEvent>,
    /// Bytes of state in `updates`.
    bytes: usize,
}

enum Slot {
    /// The latest update of this ghid lives in `updates`.
    Update(Ghid),
    Other(AppEvent),
}

fn state_len(e: &AppEvent) -> usize {
    match e {
        AppEvent::Update(v) => v.state.len(),
        _ => 0,
    }
}

impl Waiting {
    fn push(&mut self, event: AppEvent) {
        match event {
            AppEvent::Update(view) => {
                let ghid = view.ghid;
                self.bytes += view.state.len();
                match self.updates.insert(ghid, AppEvent::Update(view)) {
                    Some(old) => self.bytes -= state_len(&old),
                    None => self.order.push_back(Slot::Update(ghid)),
                }
            }
            other => self.order.push_back(Slot::Other(other)),
        }
    }

    fn pop(&mut self) -> Option<AppEvent> {
        loop {
            match self.order.pop_front()? {
                Slot::Other(e) => return Some(e),
                Slot::Update(g) => {
                    if let Some(e) = self.updates.remove(&g) {
                        self.bytes -= state_len(&e);
                        return Some(e);
                    }
                }
            }
        }
    }

    fn over(&self) -> bool {
        self.order.len() > MAX_EVENTS || self.bytes > MAX_BYTES
    }
}

/// The actor (see the module doc).
pub struct AppInbox {
    waiting: Waiting,
    /// The session's pending `Next`, while nothing waits.
    taker: Option<oneshot::Sender<Option<AppEvent>>>,
    /// Overrun: nothing more is kept or handed out.
    closed: bool,
    log: slog::Logger,
}

impl Actor for AppInbox {
    type Context = Context<Self>;
}

impl Handler<AppEvent> for AppInbox {
    type Result = ();

    fn handle(&mut self, event: AppEvent, _: &mut Context<Self>) {
        if self.closed {
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
                "events" => self.waiting.order.len(), "bytes" => self.waiting.bytes);
            self.closed = true;
            self.waiting = Waiting::default();
        }
    }
}

impl Handler<Next> for AppInbox {
    type Result = ResponseFuture<Option<AppEvent>>;

    fn handle(&mut self, _: Next, _: &mut Context<Self>) -> Self::Result {
        if self.closed {
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

/// The session's side of its inbox: hands the daemon its `Recipient` and takes events.
pub struct Inbox {
    addr: Addr<AppInbox>,
    /// The `Next` in flight: kept across calls, so a `recv` dropped in a `select!` loses no
    /// event (the next call awaits the same request).
    next: Option<Pin<Box<Request<AppInbox, Next>>>>,
}

impl Inbox {
    /// Starts an inbox on the current actix arbiter (the calling session's worker).
    pub fn start(log: slog::Logger) -> Inbox {
        Inbox::from_addr(AppInbox::create(|_| AppInbox::new(log)))
    }

    /// Starts an inbox on `arbiter` (callers outside an actix system).
    pub fn start_in(arbiter: &actix_rt::ArbiterHandle, log: slog::Logger) -> Inbox {
        Inbox::from_addr(AppInbox::start_in_arbiter(arbiter, |_| AppInbox::new(log)))
    }

    fn from_addr(addr: Addr<AppInbox>) -> Inbox {
        Inbox { addr, next: None }
    }

    /// Where the daemon sends this app's events.
    pub fn recipient(&self) -> Recipient<AppEvent> {
        self.addr.clone().recipient()
    }

    /// The next event; `None` once the inbox closed (the app stopped reading: see the
    /// module doc). Cancel-safe.
    pub async fn recv(&mut self) -> Option<AppEvent> {
        let addr = &self.addr;
        let next = self.next.get_or_insert_with(|| Box::pin(addr.send(Next)));
        let got = next.as_mut().await;
        self.next = None;
        got.ok().flatten()
    }
}

impl AppInbox {
    fn new(log: slog::Logger) -> AppInbox {
        AppInbox {
            waiting: Waiting::default(),
            taker: None,
            closed: false,
            log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::api::ObjectView;
    use crate::golix::Algo;
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

    async fn drain(inbox: &mut Inbox) -> Vec<AppEvent> {
        let mut got = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), inbox.recv()).await
        {
            got.push(e);
        }
        got
    }

    #[actix_rt::test]
    async fn updates_coalesce_while_nobody_takes_them_latest_wins() {
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.recipient();
        let (a, b) = (
            Ghid::pseudorandom(Algo::SHA512),
            Ghid::pseudorandom(Algo::SHA512),
        );
        for i in 0..100u8 {
            to.do_send(view(a, vec![i]));
            to.do_send(view(b, vec![i]));
        }
        to.do_send(AppEvent::Delete(b));
        let got = drain(&mut inbox).await;
        assert_eq!(
            got,
            [view(a, vec![99]), view(b, vec![99]), AppEvent::Delete(b)]
        );
    }

    #[actix_rt::test]
    async fn a_recv_dropped_mid_wait_loses_no_event() {
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.recipient();
        let g = Ghid::pseudorandom(Algo::SHA512);
        // Nothing waits: this `recv` is abandoned after its `Next` reached the inbox.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), inbox.recv())
                .await
                .is_err()
        );
        to.do_send(AppEvent::Delete(g));
        assert_eq!(drain(&mut inbox).await, [AppEvent::Delete(g)]);
    }

    #[actix_rt::test]
    async fn an_app_that_stops_reading_is_cut_off_at_the_bounds() {
        // By count: distinct events that cannot coalesce.
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.recipient();
        for _ in 0..=MAX_EVENTS {
            to.do_send(AppEvent::Delete(Ghid::pseudorandom(Algo::SHA512)));
        }
        assert_eq!(inbox.recv().await, None);
        // By bytes: updates of distinct objects.
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.recipient();
        let state = vec![0u8; 1024 * 1024];
        for _ in 0..=(MAX_BYTES / state.len()) {
            to.do_send(view(Ghid::pseudorandom(Algo::SHA512), state.clone()));
        }
        assert_eq!(inbox.recv().await, None);
        // Just under both: everything arrives.
        let mut inbox = Inbox::start(crate::logging::discard());
        let to = inbox.recipient();
        for _ in 0..MAX_EVENTS {
            to.do_send(AppEvent::Delete(Ghid::pseudorandom(Algo::SHA512)));
        }
        assert_eq!(drain(&mut inbox).await.len(), MAX_EVENTS);
    }
}
