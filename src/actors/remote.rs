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
//! A connection counts as up once the persister's `hello` names our protocol version and the
//! greeting (GIDC, subscriptions) went through. Each failure (refused, TLS, untrusted
//! certificate, handshake, version, lost) updates the remote's [`LinkTracker`], which decides
//! whether it is worth a warning (a change of state or of kind, never each retry); the
//! tracker is what `hgxd status` shows.
//!
//! Calls: the persist client, `pull`, the outbox, `DaemonCore`, `link_state`. Messages: subscribe,
//! unsubscribe, stop (unbounded mpsc); the connected client is published through a `watch`
//! so fetches (`get`) go straight to it without queueing behind the actor.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::daemon_core::DaemonCore;
use super::link_state::{Failure, LinkTracker, RemoteStatus, Report};
use super::pull;
use crate::golix::Ghid;
use crate::persist::client::{
    ClientError, ClientOptions, ConnectFailure, Notifications, PersisterClient as Client,
};
use crate::persist::wire::PROTOCOL_VERSION;

/// A persister to sync through: its websocket URL (`ws://` or `wss://`) and, for `wss://`,
/// the TLS configuration to trust it with (`None`: the public roots, see `persist::tls`).
#[derive(Clone)]
pub struct RemoteTarget {
    pub url: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl From<&str> for RemoteTarget {
    fn from(url: &str) -> RemoteTarget {
        RemoteTarget {
            url: url.to_owned(),
            tls: None,
        }
    }
}

impl From<String> for RemoteTarget {
    fn from(url: String) -> RemoteTarget {
        RemoteTarget { url, tls: None }
    }
}

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
    target: RemoteTarget,
    /// This remote's queue in the outbox.
    queue: usize,
    /// The connection's state for `hgxd status`; written by the actor only.
    tracker: Mutex<LinkTracker>,
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
    /// The handle of the remote `target` (outbox queue `queue`) and its inbox.
    pub fn channel(target: RemoteTarget, queue: usize) -> (RemoteHandle, RemoteInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ctx, crx) = watch::channel(Link::Starting);
        let shared = Arc::new(Shared {
            target,
            queue,
            tracker: Mutex::new(LinkTracker::new(SystemTime::now())),
            tx,
            client: crx,
        });
        (RemoteHandle { shared }, RemoteInbox { rx, client: ctx })
    }

    pub fn url(&self) -> &str {
        &self.shared.target.url
    }

    /// This remote's queue in the outbox.
    pub fn queue(&self) -> usize {
        self.shared.queue
    }

    fn tracker(&self) -> MutexGuard<'_, LinkTracker> {
        self.shared
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Its state for `hgxd status`, with `outbox` objects still queued for it.
    pub fn status(&self, outbox: usize) -> RemoteStatus {
        RemoteStatus::new(self.url(), &self.tracker(), outbox)
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
    /// The connection failed, during the greeting (`was_up` false) or later.
    Lost {
        was_up: bool,
        failure: Failure,
    },
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

    /// Records a failure; warns when it is news (see [`LinkTracker::failed`]).
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

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<RemoteMsg>) {
        let mut attempt = 0u32;
        loop {
            let (connector, target) = (self.connector.clone(), self.handle.shared.target.clone());
            let connected = tokio::select! {
                c = connector.connect(&target) => c,
                stop = self.idle(&mut rx) => {
                    let _ = stop.send(());
                    return;
                }
            };
            match connected {
                Ok((client, notes)) => match self.session(&mut rx, client, notes).await {
                    Ended::Stop(reply) => {
                        let _ = reply.send(());
                        return;
                    }
                    Ended::Lost { was_up, failure } => {
                        if was_up {
                            attempt = 0;
                        }
                        self.failed(failure);
                    }
                },
                Err(e) => {
                    let _ = self.client_tx.send(Link::Down);
                    self.failed(Failure::from_client(&e));
                }
            }
            let delay = backoff(attempt);
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
        if let Err(failure) = self.greet(&client).await {
            let _ = self.client_tx.send(Link::Down);
            client.close();
            return Ended::Lost {
                was_up: false,
                failure,
            };
        }
        self.connected();
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
                    None => break Ended::Lost {
                        was_up: true,
                        failure: Failure::new("lost", "the connection closed"),
                    },
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

    /// Checks the protocol version, then sends our GIDC and the subscriptions.
    async fn greet(&self, client: &Client) -> Result<(), Failure> {
        let failure = |e: ClientError| Failure::from_client(&e);
        let hello = timed(client.hello()).await.map_err(failure)?;
        check_version(hello.protocol)?;
        let gidc = self.core.identity.gidc().encode();
        timed(client.publish(&gidc)).await.map_err(failure)?;
        timed(client.subscribe(&self.core.fingerprint()))
            .await
            .map_err(failure)?;
        for g in &self.subs {
            timed(client.subscribe(g)).await.map_err(failure)?;
        }
        Ok(())
    }
}

/// Refuses a persister that speaks another protocol version than ours.
fn check_version(theirs: u32) -> Result<(), Failure> {
    if theirs == PROTOCOL_VERSION {
        return Ok(());
    }
    Err(Failure::new(
        "version",
        format!(
            "the persister speaks protocol version {theirs}, this daemon {PROTOCOL_VERSION}: \
             upgrade the older of the two"
        ),
    ))
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
type ConnectRequest = (RemoteTarget, oneshot::Sender<Connected>);

/// Opens persister connections on a dedicated thread running an actix system: the awc
/// websocket is `!Send`, so its I/O task must live on one; the returned client handle and
/// notification channel are `Send` and are used from any task. The thread ends when the
/// last `Connector` clone is dropped, closing every connection it opened.
#[derive(Clone)]
pub struct Connector {
    tx: mpsc::UnboundedSender<ConnectRequest>,
}

impl Connector {
    pub fn start() -> Result<Connector, std::io::Error> {
        let (tx, mut rx) = mpsc::unbounded_channel::<ConnectRequest>();
        std::thread::Builder::new()
            .name("hgx-remotes".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    while let Some((target, reply)) = rx.recv().await {
                        actix_rt::spawn(async move {
                            let opts = ClientOptions {
                                request_timeout: REQUEST_TIMEOUT,
                                connect_timeout: REQUEST_TIMEOUT,
                                tls: target.tls,
                                ..ClientOptions::default()
                            };
                            let _ = reply.send(Client::connect_with(&target.url, opts).await);
                        });
                    }
                })
            })?;
        Ok(Connector { tx })
    }

    /// Connects to `target`.
    pub async fn connect(&self, target: &RemoteTarget) -> Connected {
        let (reply, rx) = oneshot::channel();
        let closed = || ClientError::Connect {
            url: target.url.clone(),
            kind: ConnectFailure::Network,
            reason: "the connector thread stopped".into(),
        };
        self.tx
            .send((target.clone(), reply))
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

    #[test]
    fn another_protocol_version_is_refused_with_both_versions_named() {
        assert_eq!(check_version(PROTOCOL_VERSION), Ok(()));
        let f = check_version(PROTOCOL_VERSION + 1).unwrap_err();
        assert_eq!(f.kind, "version");
        assert!(
            f.reason
                .contains(&format!("version {}", PROTOCOL_VERSION + 1)),
            "{}",
            f.reason
        );
    }
}
