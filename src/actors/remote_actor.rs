//! `RemoteActor`: one actix actor per configured remote, run under an `actix::Supervisor` on
//! one of the daemon's arbiters ([`super::arbiters`]).
//!
//! Owns: the connection to the front-end in use (the persist client), the set of subscribed
//! dynamic ghids, and the connection's tasks. One actor life is one connection attempt and,
//! if it comes up, that connection:
//!
//! - `started`: after the backoff [`restarting`](actix::Supervised::restarting) chose (none
//!   on the first start), connects to the current front-end and greets it (protocol version,
//!   `max_frame` remembered through [`super::limits`], our GIDC, authentication, our
//!   fingerprint and every subscribed ghid), off the actor's thread.
//! - once up: notifications arrive through `ctx.add_stream` and go, in arrival order, to a
//!   pull worker ([`super::pull`]) through a queue of [`PULL_QUEUE`] (while it is full the
//!   actor waits; once the client's own buffer is full too, the client closes the
//!   connection, an `overloaded` loss); the outbox drain ([`super::drain`]), the catch-up after it
//!   (the current frame of every subscribed ghid, or its debinding if the remote has that) and the subscription changes run as tasks
//!   whose guards the actor holds, so they end with it.
//! - on loss (the connection closes, the greeting or the connection attempt fails) the actor
//!   stops itself; the supervisor restarts it, and `restarting` records the failure in the
//!   remote's [`LinkTracker`](super::link_state::LinkTracker) (a warning only when it is
//!   news), moves to the next front-end of the remote's failover list and sets the backoff
//!   (after an `overloaded` loss: the same front-end, after 1 s doubling to 30 s).
//!   The subscription set survives.
//!
//! Messages (defined in [`super::remote`]): `Subscribe`, `Unsubscribe` (from whoever holds
//! the [`Upstream`]: objects, the GC, follows, `DaemonHandle`) and `Stop` (from
//! `DaemonHandle::shutdown`; afterwards the actor stays idle until its arbiter stops).
//! `DaemonHandle` owns its address; everyone else holds its [`RemoteHandle`] (weak
//! `Recipient`s set at start), which also serves fetches straight from the connected client
//! without queueing behind the actor.
//!
//! Peers ([`RemotePeers`]): the [`Local`] state (outbox, vault, identity), the app registry
//! (refusal events) and the [`Puller`] (objects, GC and share actors, reached by `pull`).
//! Calls: the persist client (through [`Connector`]), `pull`, `drain`, `limits`,
//! `link_state`.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::apps::AppRegistry;
use super::arbiters::Arbiters;
use super::link_state::{Failure, Report};
use super::local::Local;
use super::pull::{self, Puller};
use super::remote::{
    backoff, check_version, timed, ActorInbox, Connector, Link, RemoteHandle, Stop, Subscribe,
    Unsubscribe,
};
use super::upstream::Upstream;
use super::{drain, limits};
use crate::golix::Ghid;
use bytes::Bytes;

use crate::persist::client::{ClientError, Held, Notification, PersisterClient as Client};
use crate::persist::wire;
use crate::persist::wire::codes;

/// What a remote's actor reaches (see the module doc). Cheap to clone.
#[derive(Clone)]
pub struct RemotePeers {
    pub local: Arc<Local>,
    pub apps: Arc<AppRegistry>,
    pub puller: Puller,
}

pub struct RemoteActor {
    peers: RemotePeers,
    runtime: tokio::runtime::Handle,
    log: slog::Logger,
    connector: Connector,
    handle: RemoteHandle,
    /// Dynamic ghids to keep subscribed.
    subs: BTreeSet<Ghid>,
    client_tx: watch::Sender<Link>,
    /// Failed attempts since the last connection that came up (drives the backoff).
    attempt: u32,
    /// Wait before this life's connection attempt.
    delay: Duration,
    /// Why this life ended (reported by `restarting`).
    lost: Option<Failure>,
    /// Connections in a row closed because we did not keep up with their notifications
    /// (`overloaded`; drives a longer pause, see [`overload_pause`]), and when the last
    /// connection came up.
    overloads: u32,
    up_at: Option<std::time::Instant>,
    session: Option<Session>,
    /// After `Stop`: no more connection attempts.
    stopped: bool,
}

/// One live connection and its tasks (aborted when the session is dropped).
struct Session {
    client: Client,
    sub_tx: mpsc::UnboundedSender<SubOp>,
    work_tx: mpsc::Sender<Work>,
    tasks: Vec<Guard>,
    /// The pull worker: on loss it finishes what was queued; on `Stop` it is aborted.
    worker: Option<JoinHandle<()>>,
}

/// Aborts its task when dropped.
struct Guard(JoinHandle<()>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The subscription changes and notifications of one connection, applied in order.
enum SubOp {
    Subscribe(Ghid),
    Unsubscribe(Ghid),
}

/// Notifications and catch-up frames waiting for the pull worker, per connection. While it
/// is full the actor stops reading notifications, so the client's buffer fills, and then
/// the client closes the connection (README, daemon-side limits). The worker records what it finds waiting
/// ([`RemoteHandle::pull_backlog`]); `tests/pull_backlog.rs` holds the bound.
pub const PULL_QUEUE: usize = 1024;

/// The failure kind of a connection we closed because we did not handle its notifications
/// in time (the client's `close_when_full`).
const OVERLOADED: &str = "overloaded";
/// After an `overloaded` loss the next connection waits 1 s, doubling while they follow each
/// other, up to 30 s; a connection that lasted this long starts the count over.
const OVERLOAD_FORGOTTEN: Duration = Duration::from_secs(60);

fn overload_pause(overloads: u32) -> Duration {
    Duration::from_secs(1)
        .saturating_mul(1u32 << overloads.min(5))
        .min(Duration::from_secs(30))
}

/// Each holds its bytes' place in the connection's notification budget (README,
/// daemon-side limits) until it is pulled.
enum Work {
    Note(Notification),
    Frame(Bytes, Held),
    /// The debinding of a subscribed ghid the remote no longer has (found at a catch-up:
    /// its notification may have been lost with a connection).
    Debound(Ghid, Bytes, Held),
}

/// Starts the supervised `RemoteActor` of `handle` on one of `arbiters`, hands the handle
/// its (weak) inbox, and returns the owning address.
pub fn start(
    arbiters: &Arbiters,
    peers: RemotePeers,
    connector: Connector,
    handle: RemoteHandle,
) -> Addr<RemoteActor> {
    let client_tx = handle.take_link_sender();
    let arbiter = arbiters.next();
    let actor = RemoteActor {
        runtime: peers.local.runtime.clone(),
        log: peers.local.log.clone(),
        peers,
        connector,
        handle: handle.clone(),
        subs: BTreeSet::new(),
        client_tx,
        attempt: 0,
        overloads: 0,
        up_at: None,
        delay: Duration::ZERO,
        lost: None,
        session: None,
        stopped: false,
    };
    let addr = actix::Supervisor::start_in_arbiter(&arbiter, move |_| actor);
    handle.set_actor(ActorInbox {
        subscribe: addr.clone().recipient().downgrade(),
        unsubscribe: addr.clone().recipient().downgrade(),
    });
    addr
}

impl Actor for RemoteActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        ctx.run_later(self.delay, |act, ctx| act.connect(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self.client_tx.send(Link::Down);
        if let Some(mut s) = self.session.take() {
            s.client.close();
            // Loss: queued notifications are still applied; stop: nothing more is.
            if let Some(w) = s.worker.take() {
                if self.stopped {
                    w.abort();
                }
            }
        }
    }
}

impl actix::Supervised for RemoteActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        if self.stopped {
            return;
        }
        let failure = self
            .lost
            .take()
            .unwrap_or_else(|| Failure::new("lost", "the connection ended"));
        let overloaded = failure.kind == OVERLOADED;
        self.failed(failure);
        if overloaded {
            // The remote is fine; we were behind. Same front-end, after a pause that grows
            // while it keeps happening (a connection that lasted a while starts it over).
            if self.up_at.is_some_and(|t| t.elapsed() > OVERLOAD_FORGOTTEN) {
                self.overloads = 0;
            }
            self.delay = overload_pause(self.overloads);
            self.overloads = self.overloads.saturating_add(1);
            return;
        }
        self.fail_over();
        // Back off once every front-end of the remote has been tried.
        let front_ends = self.handle.front_ends().max(1) as u32;
        self.delay = backoff(self.attempt / front_ends);
        self.attempt = self.attempt.saturating_add(1);
    }
}

impl RemoteActor {
    fn log(&self) -> &slog::Logger {
        &self.log
    }

    /// Records a failure; warns when it is news (see [`super::link_state::LinkTracker::failed`]).
    fn failed(&self, failure: Failure) {
        let report = self.handle.tracker().failed(failure, SystemTime::now());
        let url = self.handle.url();
        match report {
            Report::Failing(f) => slog::warn!(self.log(), "remote unreachable; retrying";
                "remote" => url, "kind" => &f.kind, "error" => &f.reason),
            Report::StillFailing(f) => slog::debug!(self.log(), "remote still unreachable";
                "remote" => url, "kind" => &f.kind, "error" => &f.reason),
            Report::Connected | Report::Recovered { .. } => {}
        }
    }

    /// Moves to the remote's next front-end, if it has another; says so at warning.
    fn fail_over(&self) {
        let from = self.handle.url().to_owned();
        if self.handle.fail_over() {
            slog::warn!(self.log(), "failing over to another front-end of the remote";
                "from" => from, "to" => self.handle.url());
        }
    }

    /// Records a connection; says so at info.
    fn connected(&self) {
        let report = self.handle.tracker().connected(SystemTime::now());
        let url = self.handle.url();
        match report {
            Report::Recovered { down_for, last } => slog::info!(self.log(), "remote reconnected";
                "remote" => url, "down_s" => down_for.as_secs(), "last_error" => &last.reason),
            _ => slog::info!(self.log(), "remote connected"; "remote" => url),
        }
    }

    /// Connects and greets on the daemon's runtime; the task ends with this actor's life.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        let (connector, target) = (self.connector.clone(), self.handle.target().clone());
        let local = self.peers.local.clone();
        let handle = self.handle.clone();
        let subs: Vec<Ghid> = self.subs.iter().copied().collect();
        let (tx, rx) = oneshot::channel();
        let task = self.runtime.spawn(async move {
            let result = match connector.connect(&target).await {
                Err(e) => Err(Failure::from_client(&e)),
                Ok((client, notes)) => match greet(&local, &handle, &client, &subs).await {
                    Ok(max_object) => Ok((client, notes, max_object, subs)),
                    Err(f) => {
                        client.close();
                        Err(f)
                    }
                },
            };
            let _ = tx.send(result);
        });
        let guard = Guard(task);
        ctx.spawn(
            async move {
                let _guard = guard;
                rx.await
            }
            .into_actor(self)
            .map(|res, act, ctx| match res {
                Ok(Ok((client, notes, max_object, greeted))) => {
                    act.up(ctx, client, notes, max_object, greeted)
                }
                Ok(Err(failure)) => act.lose(ctx, failure),
                Err(_) => act.lose(ctx, Failure::new("setup", "the connection task ended")),
            }),
        );
    }

    /// Ends this life for `failure`; the supervisor restarts the actor.
    fn lose(&mut self, ctx: &mut Context<Self>, failure: Failure) {
        let _ = self.client_tx.send(Link::Down);
        self.lost = Some(failure);
        ctx.stop();
    }

    /// The connection is up: publish it, start the drain, the catch-up, the subscription
    /// changes and the pull worker, and listen to its notifications.
    fn up(
        &mut self,
        ctx: &mut Context<Self>,
        client: Client,
        notes: crate::persist::client::Notifications,
        max_object: u64,
        greeted: Vec<Ghid>,
    ) {
        self.attempt = 0;
        self.up_at = Some(std::time::Instant::now());
        self.connected();
        let _ = self.client_tx.send(Link::Up(client.clone()));
        let rt = self.runtime.clone();
        let (work_tx, work_rx) = mpsc::channel(PULL_QUEUE);
        let worker = rt.spawn(pull_worker(
            self.peers.puller.clone(),
            self.handle.clone(),
            work_rx,
        ));
        let (caught_up_tx, caught_up_rx) = oneshot::channel();
        let drainer = rt.spawn(drain::drain(
            self.peers.local.clone(),
            self.peers.apps.clone(),
            self.handle.clone(),
            client.clone(),
            max_object,
            caught_up_tx,
        ));
        let catch_up = {
            let work = work_tx.clone();
            let client = client.clone();
            let subs = greeted.clone();
            rt.spawn(async move {
                // Replay our own outbox first, so the remote's frames are not older than ours.
                let _ = caught_up_rx.await;
                for g in subs {
                    catch_up(&client, &g, &work).await;
                }
            })
        };
        let (sub_tx, sub_rx) = mpsc::unbounded_channel();
        let subscriber = rt.spawn(subscriber(
            self.log.clone(),
            client.clone(),
            sub_rx,
            work_tx.clone(),
        ));
        // Subscription changes that arrived while the greeting ran.
        let greeted: BTreeSet<Ghid> = greeted.into_iter().collect();
        for g in self.subs.difference(&greeted) {
            let _ = sub_tx.send(SubOp::Subscribe(*g));
        }
        for g in greeted.difference(&self.subs) {
            let _ = sub_tx.send(SubOp::Unsubscribe(*g));
        }
        self.session = Some(Session {
            client,
            sub_tx,
            work_tx,
            tasks: vec![Guard(drainer), Guard(catch_up), Guard(subscriber)],
            worker: Some(worker),
        });
        let mut notes = notes;
        ctx.add_stream(futures_util::stream::poll_fn(move |cx| notes.poll_recv(cx)));
    }
}

impl StreamHandler<Notification> for RemoteActor {
    fn handle(&mut self, n: Notification, ctx: &mut Context<Self>) {
        let Some(s) = &self.session else { return };
        let work = Work::Note(n);
        if let Err(mpsc::error::TrySendError::Full(work)) = s.work_tx.try_send(work) {
            // Backpressure: nothing else (the stream included) runs until the worker takes it.
            let tx = s.work_tx.clone();
            ctx.wait(
                async move {
                    let _ = tx.send(work).await;
                }
                .into_actor(self),
            );
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        let failure = match self
            .session
            .as_ref()
            .and_then(|s| s.client.closed_because())
        {
            Some(why) => Failure::new(OVERLOADED, why),
            None => Failure::new("lost", "the connection closed"),
        };
        self.lose(ctx, failure);
    }
}

impl Handler<Subscribe> for RemoteActor {
    type Result = ();

    fn handle(&mut self, Subscribe(g): Subscribe, _: &mut Context<Self>) {
        if self.subs.insert(g) {
            if let Some(s) = &self.session {
                let _ = s.sub_tx.send(SubOp::Subscribe(g));
            }
        }
    }
}

impl Handler<Unsubscribe> for RemoteActor {
    type Result = ();

    fn handle(&mut self, Unsubscribe(g): Unsubscribe, _: &mut Context<Self>) {
        if self.subs.remove(&g) {
            if let Some(s) = &self.session {
                let _ = s.sub_tx.send(SubOp::Unsubscribe(g));
            }
        }
    }
}

impl Handler<Stop> for RemoteActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, _: &mut Context<Self>) -> Self::Result {
        self.stopped = true;
        let _ = self.client_tx.send(Link::Down);
        let client = self.session.as_mut().map(|s| {
            s.tasks.clear();
            s.client.clone()
        });
        let rt = self.runtime.clone();
        Box::pin(
            async move {
                if let Some(c) = client {
                    let _ = rt
                        .spawn(async move {
                            let _ = timed(c.disconnect()).await;
                            c.close();
                        })
                        .await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}

/// Checks the protocol version, learns the remote's limits (remembered, see
/// [`super::limits`]), then sends our GIDC, authenticates, and subscribes our fingerprint and
/// `subs`. Returns the largest object the remote takes.
async fn greet(
    local: &Local,
    handle: &RemoteHandle,
    client: &Client,
    subs: &[Ghid],
) -> Result<u64, Failure> {
    let log = &local.log;
    let failure = |e: ClientError| Failure::from_client(&e);
    let hello = timed(client.hello()).await.map_err(failure)?;
    check_version(hello.protocol)?;
    let max_object = wire::max_publish_object(hello.limits.max_frame);
    let previous = handle.shared.max_object.swap(max_object, Ordering::Relaxed);
    if previous != max_object {
        let remembered = limits::remember(&local.vault, handle.primary_url(), max_object);
        if let Err(e) = async {
            remembered?;
            local.vault.flush().await
        }
        .await
        {
            slog::warn!(log, "cannot remember a remote's limit"; "error" => %e);
        }
        slog::info!(log, "remote size limit"; "remote" => handle.url(),
            "max_object" => max_object, "was" => previous);
    }
    let gidc = local.identity.gidc().encode();
    timed(client.publish(&gidc)).await.map_err(failure)?;
    // Our share requests then count against our own key, not against the anonymous
    // sender that anyone can fill (an older persister does not know the op).
    match timed(client.authenticate(&local.identity)).await {
        Ok(()) => {}
        Err(e) if e.code() == Some("unknown_op") => {
            slog::info!(log, "remote does not authenticate connections";
                "remote" => handle.url());
        }
        // Refused: carry on anonymously (our requests then share the anonymous quota).
        Err(e @ ClientError::Server { .. }) => {
            slog::warn!(log, "remote refused our authentication";
                "remote" => handle.url(), "error" => %e);
        }
        Err(e) => return Err(failure(e)),
    }
    timed(client.subscribe(&local.fingerprint()))
        .await
        .map_err(failure)?;
    for g in subs {
        timed(client.subscribe(g)).await.map_err(failure)?;
    }
    Ok(max_object)
}

/// Queues the remote's current frame of `g` for the pull worker, or its debinding if the
/// remote has that instead (nothing if it has neither or cannot be asked: its notifications
/// still come).
async fn catch_up(client: &Client, g: &Ghid, work: &mpsc::Sender<Work>) {
    match timed(client.get(g)).await {
        Ok(b) => {
            let held = client.hold(b.len()).await;
            let _ = work.send(Work::Frame(b, held)).await;
        }
        Err(e) if e.code() == Some(codes::NOT_FOUND) => {
            let Ok(Some(gdxx)) = timed(client.query_debinding(g)).await else {
                return;
            };
            if let Ok(b) = timed(client.get(&gdxx)).await {
                let held = client.hold(b.len()).await;
                let _ = work.send(Work::Debound(*g, b, held)).await;
            }
        }
        Err(_) => {}
    }
}

/// Applies subscription changes in order; after each subscribe, catches up on that ghid.
async fn subscriber(
    log: slog::Logger,
    client: Client,
    mut ops: mpsc::UnboundedReceiver<SubOp>,
    work: mpsc::Sender<Work>,
) {
    while let Some(op) = ops.recv().await {
        match op {
            SubOp::Subscribe(g) => match timed(client.subscribe(&g)).await {
                Ok(()) => catch_up(&client, &g, &work).await,
                // Updates of that object stop coming from this remote: the user must know.
                Err(e) => slog::warn!(log, "subscribe failed"; "ghid" => %g, "error" => %e),
            },
            SubOp::Unsubscribe(g) => {
                let _ = timed(client.unsubscribe(&g)).await;
            }
        }
    }
}

/// Pulls notifications and catch-up frames in arrival order.
async fn pull_worker(puller: Puller, handle: RemoteHandle, mut rx: mpsc::Receiver<Work>) {
    let remote = Upstream::new(vec![handle.clone()]);
    loop {
        handle.record_pull_backlog(rx.len());
        let Some(w) = rx.recv().await else { break };
        match w {
            Work::Note(n) => {
                let (subscription, object, _held) = n.into_parts();
                pull::notification(&puller, &remote, subscription, object.to_vec()).await
            }
            Work::Debound(subscription, gdxx, _held) => {
                pull::notification(&puller, &remote, subscription, gdxx.to_vec()).await
            }
            Work::Frame(bytes, _held) => {
                if let Err(e) = pull::frame(&puller, &remote, bytes.to_vec(), None).await {
                    slog::info!(puller.store.local.log, "catch-up frame not applied";
                        "remote" => remote.name(), "error" => %e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_pauses_double_from_one_second_to_thirty() {
        let secs: Vec<u64> = (0..8).map(|n| overload_pause(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
