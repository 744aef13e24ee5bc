//! `RemoteActor`: one tokio task per configured persister (a `ws://` or `wss://` URL of its
//! `/ws`).
//!
//! Owns: the connection (the persist client), reconnection with capped exponential backoff
//! and jitter, the set of subscribed dynamic ghids, the draining of this remote's durable
//! outbox queue, and catch-up. On every (re)connect it publishes our GIDC, subscribes our
//! fingerprint and every subscribed ghid, replays the outbox in order (an entry is removed
//! only once the remote acknowledged it; "already present" is success; a rule rejection is
//! logged and dropped so the queue never wedges), then fetches the current frame of every
//! subscribed ghid and pulls it, so updates made while we were offline arrive unasked.
//! Notifications are pulled in arrival order by a per-connection worker.
//!
//! A remote may be several front-ends of one persister cluster: the actor uses one at a time
//! and, when it loses it (or cannot reach it), moves to the next and runs the same reconnect
//! sequence there: resubscribe, replay the outbox (publishing is idempotent by ghid, so an
//! entry the lost front-end already stored is "already present", not a second object), catch
//! up.
//!
//! Calls: the persist client, `pull`, the outbox, `DaemonCore`. Messages: subscribe,
//! unsubscribe, stop (unbounded mpsc); the connected client is published through a `watch`
//! so fetches (`get`) go straight to it without queueing behind the actor.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::daemon_core::DaemonCore;
use super::pull;
use crate::golix::Ghid;
use crate::persist::client::{
    ClientError, ClientOptions, Notifications, PersisterClient as Client,
};

/// First reconnect delay; doubles per failed attempt.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest wait for one request's reply before the connection is considered broken.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before retrying an outbox entry the remote could not take right now.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

enum RemoteMsg {
    Subscribe(Ghid),
    Unsubscribe(Ghid),
    Stop { reply: oneshot::Sender<()> },
}

/// Talks to one `RemoteActor`. Cheap to clone.
#[derive(Clone)]
pub struct RemoteHandle {
    shared: Arc<Shared>,
}

struct Shared {
    /// The front-ends of this remote (one persister, or several front-ends of one cluster).
    urls: Vec<String>,
    /// The one in use (index into `urls`).
    current: std::sync::atomic::AtomicUsize,
    /// This remote's queue in the outbox.
    queue: usize,
    tx: mpsc::UnboundedSender<RemoteMsg>,
    /// The connection state (with the client while connected).
    client: watch::Receiver<Link>,
}

/// The receiving ends, consumed by [`spawn`].
pub struct RemoteInbox {
    rx: mpsc::UnboundedReceiver<RemoteMsg>,
    client: watch::Sender<Link>,
}

/// Where a remote's connection stands.
#[derive(Clone)]
enum Link {
    /// The first connection attempt has not finished.
    Starting,
    Up(Client),
    Down,
}

impl RemoteHandle {
    /// The handle of the remote at `url` (outbox queue `queue`) and its inbox. `url` may name
    /// several front-ends of one persister cluster, joined by `,`: one is used at a time.
    pub fn channel(url: &str, queue: usize) -> (RemoteHandle, RemoteInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ctx, crx) = watch::channel(Link::Starting);
        let shared = Arc::new(Shared {
            urls: url.split(',').map(str::to_owned).collect(),
            current: Default::default(),
            queue,
            tx,
            client: crx,
        });
        (RemoteHandle { shared }, RemoteInbox { rx, client: ctx })
    }

    /// The front-end in use.
    pub fn url(&self) -> &str {
        let i = self
            .shared
            .current
            .load(std::sync::atomic::Ordering::Relaxed);
        &self.shared.urls[i % self.shared.urls.len()]
    }

    /// Moves to the next front-end of this remote; returns whether there is another.
    fn fail_over(&self) -> bool {
        let n = self.shared.urls.len();
        if n > 1 {
            self.shared
                .current
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        n > 1
    }

    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.client.borrow(), Link::Up(_))
    }

    /// The connected client; while the first connection attempt is still running, waits for
    /// it (bounded), so fetches right after start do not miss a reachable remote.
    async fn client(&self) -> Option<Client> {
        let mut rx = self.shared.client.clone();
        let settled = tokio::time::timeout(
            REQUEST_TIMEOUT,
            rx.wait_for(|l| !matches!(l, Link::Starting)),
        )
        .await;
        match settled {
            Ok(Ok(link)) => match &*link {
                Link::Up(c) => Some(c.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Raw bytes of `ghid` (a dynamic ghid: its current frame) from this remote, if it is
    /// connected and has it.
    pub async fn get(&self, ghid: &Ghid) -> Option<Vec<u8>> {
        let client = self.client().await?;
        timed(client.get(ghid)).await.ok().map(|b| b.to_vec())
    }

    /// The bindings this remote lists for `ghid` (GOBS ghids, or dynamic ghids), if it is
    /// connected and answers.
    pub async fn bindings(&self, ghid: &Ghid) -> Option<Vec<Ghid>> {
        let client = self.client().await?;
        timed(client.list_bindings(ghid)).await.ok()
    }

    /// Keeps `ghid` subscribed (across reconnects) and catches up on it.
    pub fn subscribe(&self, ghid: Ghid) {
        let _ = self.shared.tx.send(RemoteMsg::Subscribe(ghid));
    }

    pub fn unsubscribe(&self, ghid: Ghid) {
        let _ = self.shared.tx.send(RemoteMsg::Unsubscribe(ghid));
    }

    /// Disconnects and stops the actor.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.shared.tx.send(RemoteMsg::Stop { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the `RemoteActor` of `handle`.
pub fn spawn(
    core: Arc<DaemonCore>,
    connector: Connector,
    handle: RemoteHandle,
    inbox: RemoteInbox,
) -> JoinHandle<()> {
    let actor = RemoteActor {
        core,
        connector,
        handle,
        subs: BTreeSet::new(),
        client_tx: inbox.client,
    };
    tokio::spawn(actor.run(inbox.rx))
}

struct RemoteActor {
    core: Arc<DaemonCore>,
    connector: Connector,
    handle: RemoteHandle,
    /// Dynamic ghids to keep subscribed.
    subs: BTreeSet<Ghid>,
    client_tx: watch::Sender<Link>,
}

/// Why a session ended.
enum Ended {
    Stop(oneshot::Sender<()>),
    Lost,
}

/// Delay before reconnect attempt `attempt` (0-based): 100 ms doubling, capped at 5 s, with
/// up to 50 % random jitter subtracted so that many daemons do not reconnect in step.
pub fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_START
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let jitter = rand::thread_rng().gen_range(0.0..0.5);
    base.mul_f64(1.0 - jitter)
}

impl RemoteActor {
    fn log(&self) -> &slog::Logger {
        &self.core.log
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<RemoteMsg>) {
        let mut attempt = 0u32;
        loop {
            let (connector, url) = (self.connector.clone(), self.handle.url().to_owned());
            let connected = tokio::select! {
                c = connector.connect(&url) => c,
                stop = self.idle(&mut rx) => {
                    let _ = stop.send(());
                    return;
                }
            };
            match connected {
                Ok((client, notes)) => {
                    attempt = 0;
                    slog::info!(self.log(), "remote connected"; "remote" => self.handle.url());
                    match self.session(&mut rx, client, notes).await {
                        Ended::Stop(reply) => {
                            let _ = reply.send(());
                            return;
                        }
                        Ended::Lost => {
                            slog::info!(self.log(), "remote connection lost"; "remote" => self.handle.url());
                            if self.handle.fail_over() {
                                slog::warn!(self.log(), "failing over"; "to" => self.handle.url());
                            }
                        }
                    }
                }
                Err(e) => {
                    let _ = self.client_tx.send(Link::Down);
                    slog::warn!(self.log(), "remote unreachable"; "remote" => self.handle.url(), "error" => %e);
                    self.handle.fail_over();
                }
            }
            // Back off once every front-end of the remote has been tried.
            let delay = backoff(attempt / self.handle.shared.urls.len().max(1) as u32);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                stop = self.idle(&mut rx) => {
                    let _ = stop.send(());
                    return;
                }
            }
        }
    }

    /// While disconnected: keeps the subscription set current until `Stop`.
    async fn idle(&mut self, rx: &mut mpsc::UnboundedReceiver<RemoteMsg>) -> oneshot::Sender<()> {
        loop {
            match rx.recv().await {
                Some(RemoteMsg::Subscribe(g)) => {
                    self.subs.insert(g);
                }
                Some(RemoteMsg::Unsubscribe(g)) => {
                    self.subs.remove(&g);
                }
                Some(RemoteMsg::Stop { reply }) => return reply,
                None => return oneshot::channel().0,
            }
        }
    }

    async fn session(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<RemoteMsg>,
        client: Client,
        mut notes: Notifications,
    ) -> Ended {
        if let Err(e) = self.greet(&client).await {
            slog::info!(self.log(), "remote setup failed"; "remote" => self.handle.url(), "error" => %e);
            let _ = self.client_tx.send(Link::Down);
            client.close();
            return Ended::Lost;
        }
        let _ = self.client_tx.send(Link::Up(client.clone()));
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let worker = tokio::spawn(pull_worker(self.core.clone(), self.handle.clone(), work_rx));
        let (caught_up_tx, caught_up_rx) = oneshot::channel();
        let drainer = tokio::spawn(drain(
            self.core.clone(),
            self.handle.clone(),
            client.clone(),
            caught_up_tx,
        ));
        let subs: Vec<Ghid> = self.subs.iter().copied().collect();
        let catch_up = {
            let work = work_tx.clone();
            let client = client.clone();
            tokio::spawn(async move {
                // Replay our own outbox first, so the remote's frames are not older than ours.
                let _ = caught_up_rx.await;
                for g in subs {
                    if let Ok(b) = timed(client.get(&g)).await {
                        let _ = work.send(Work::Frame(b.to_vec()));
                    }
                }
            })
        };
        let (sub_tx, sub_rx) = mpsc::unbounded_channel();
        let subscriber = tokio::spawn(subscriber(
            self.core.log.clone(),
            client.clone(),
            sub_rx,
            work_tx.clone(),
        ));
        let ended = loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(RemoteMsg::Subscribe(g)) => {
                        if self.subs.insert(g) {
                            let _ = sub_tx.send(SubOp::Subscribe(g));
                        }
                    }
                    Some(RemoteMsg::Unsubscribe(g)) => {
                        if self.subs.remove(&g) {
                            let _ = sub_tx.send(SubOp::Unsubscribe(g));
                        }
                    }
                    Some(RemoteMsg::Stop { reply }) => break Ended::Stop(reply),
                    None => break Ended::Stop(oneshot::channel().0),
                },
                note = notes.recv() => match note {
                    Some(n) => {
                        let _ = work_tx.send(Work::Note(n.subscription, n.object.to_vec()));
                    }
                    None => break Ended::Lost,
                },
            }
        };
        let _ = self.client_tx.send(Link::Down);
        drainer.abort();
        catch_up.abort();
        subscriber.abort();
        drop(work_tx);
        if matches!(ended, Ended::Stop(_)) {
            let _ = timed(client.disconnect()).await;
            client.close();
            worker.abort();
        }
        ended
    }

    /// Our GIDC, then the subscriptions.
    async fn greet(&self, client: &Client) -> Result<(), ClientError> {
        let gidc = self.core.identity.gidc().encode();
        timed(client.publish(&gidc)).await?;
        timed(client.subscribe(&self.core.fingerprint())).await?;
        for g in &self.subs {
            timed(client.subscribe(g)).await?;
        }
        Ok(())
    }
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .unwrap_or(Err(ClientError::Timeout))
}

/// A subscription change, applied in order on one connection.
enum SubOp {
    Subscribe(Ghid),
    Unsubscribe(Ghid),
}

/// Applies subscription changes in order; after each subscribe, catches up on that ghid.
async fn subscriber(
    log: slog::Logger,
    client: Client,
    mut ops: mpsc::UnboundedReceiver<SubOp>,
    work: mpsc::UnboundedSender<Work>,
) {
    while let Some(op) = ops.recv().await {
        match op {
            SubOp::Subscribe(g) => match timed(client.subscribe(&g)).await {
                Ok(()) => {
                    if let Ok(b) = timed(client.get(&g)).await {
                        let _ = work.send(Work::Frame(b.to_vec()));
                    }
                }
                Err(e) => slog::info!(log, "subscribe failed"; "ghid" => %g, "error" => %e),
            },
            SubOp::Unsubscribe(g) => {
                let _ = timed(client.unsubscribe(&g)).await;
            }
        }
    }
}

enum Work {
    Note(Ghid, Vec<u8>),
    Frame(Vec<u8>),
}

/// Pulls notifications and catch-up frames in arrival order.
async fn pull_worker(
    core: Arc<DaemonCore>,
    remote: RemoteHandle,
    mut rx: mpsc::UnboundedReceiver<Work>,
) {
    while let Some(w) = rx.recv().await {
        match w {
            Work::Note(subscription, object) => {
                pull::notification(&core, &remote, subscription, object).await
            }
            Work::Frame(bytes) => {
                if let Err(e) = pull::frame(&core, &remote, bytes).await {
                    slog::info!(core.log, "catch-up frame not applied"; "remote" => remote.url(), "error" => %e);
                }
            }
        }
    }
}

/// Whether a remote's refusal (its wire code) is final for this object (drop it) rather
/// than transient (retry).
fn is_rule_rejection(code: &str) -> bool {
    !matches!(code, "storage" | "unavailable" | "limit")
}

/// Replays this remote's outbox queue in order, forever (the session aborts it). Signals
/// `caught_up` the first time the queue is empty.
async fn drain(
    core: Arc<DaemonCore>,
    remote: RemoteHandle,
    client: Client,
    caught_up: oneshot::Sender<()>,
) {
    let q = remote.shared.queue;
    let mut caught_up = Some(caught_up);
    loop {
        let entry = match core.outbox.first(q) {
            Ok(Some(e)) => e,
            Ok(None) => {
                if let Some(c) = caught_up.take() {
                    let _ = c.send(());
                }
                core.outbox.wait(q).await;
                continue;
            }
            Err(e) => {
                slog::warn!(core.log, "outbox entry unreadable; dropped"; "remote" => remote.url(), "error" => %e);
                continue;
            }
        };
        match timed(client.publish(&entry.object)).await {
            Ok(_) => {}
            Err(e @ ClientError::Server { .. }) if e.code().is_some_and(is_rule_rejection) => {
                slog::warn!(core.log, "remote refused an object; dropped from the outbox";
                    "remote" => remote.url(), "error" => %e);
            }
            Err(e @ ClientError::Server { .. }) => {
                slog::debug!(core.log, "remote busy; will retry"; "remote" => remote.url(), "error" => %e);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(e) => {
                slog::debug!(core.log, "publish failed; connection presumed lost"; "remote" => remote.url(), "error" => %e);
                client.close();
                return;
            }
        }
        if let Err(e) = core.outbox.remove(q, entry.seq) {
            slog::warn!(core.log, "cannot remove an acknowledged outbox entry"; "error" => %e);
        }
    }
}

type Connected = Result<(Client, Notifications), ClientError>;

/// Opens persister connections on a dedicated thread running an actix system: the awc
/// websocket is `!Send`, so its I/O task must live on one; the returned client handle and
/// notification channel are `Send` and are used from any task. The thread ends when the
/// last `Connector` clone is dropped, closing every connection it opened.
#[derive(Clone)]
pub struct Connector {
    tx: mpsc::UnboundedSender<(String, oneshot::Sender<Connected>)>,
}

impl Connector {
    pub fn start() -> Result<Connector, std::io::Error> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, oneshot::Sender<Connected>)>();
        std::thread::Builder::new()
            .name("hgx-remotes".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    while let Some((url, reply)) = rx.recv().await {
                        actix_rt::spawn(async move {
                            let opts = ClientOptions {
                                request_timeout: REQUEST_TIMEOUT,
                                connect_timeout: REQUEST_TIMEOUT,
                                ..ClientOptions::default()
                            };
                            let _ = reply.send(Client::connect_with(&url, opts).await);
                        });
                    }
                })
            })?;
        Ok(Connector { tx })
    }

    /// Connects to `url`.
    pub async fn connect(&self, url: &str) -> Connected {
        let (reply, rx) = oneshot::channel();
        let closed = || ClientError::Connect {
            url: url.to_owned(),
            reason: "the connector thread stopped".into(),
        };
        self.tx
            .send((url.to_owned(), reply))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_caps_at_5s_with_jitter() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            let base = BACKOFF_START
                .saturating_mul(1 << attempt.min(16))
                .min(BACKOFF_MAX);
            assert!(
                d <= base && d >= base / 2,
                "attempt {attempt}: {d:?} vs {base:?}"
            );
        }
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(30) >= Duration::from_millis(2500));
    }
}
