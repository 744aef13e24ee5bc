//! `RemoteActor`: one tokio task per configured persister (a `ws://` or `wss://` URL of its
//! `/ws`).
//!
//! Owns: the connection (the persist client), reconnection with capped exponential backoff
//! and jitter, the set of subscribed dynamic ghids, the remote's size limit, and catch-up. On
//! every (re)connect it asks the remote's `hello` for its `max_frame` (remembered through
//! [`super::limits`]), publishes our GIDC, authenticates the connection as us (so the share
//! requests we send count against our own key in the persister's mailboxes; skipped for a
//! persister without `auth`), subscribes our fingerprint and every subscribed ghid, replays
//! the outbox in order ([`super::drain`]), then fetches the current frame of every subscribed
//! ghid and pulls it, so updates made while we were offline arrive unasked.
//! Notifications are pulled in arrival order by a per-connection worker.
//!
//! A remote may be several front-ends of one persister cluster ([`RemoteEntry`]): the actor
//! uses one at a time and, when it loses it (or cannot reach it), moves to the next and runs
//! the same reconnect sequence there: resubscribe, replay the outbox (publishing is idempotent
//! by ghid, so an entry the lost front-end already stored is "already present", not a second
//! object), catch up. The outbox queue and the remembered limit belong to the remote (keyed by
//! its first front-end), not to the front-end in use.
//!
//! A connection counts as up once the persister's `hello` names our protocol version and the
//! greeting (GIDC, subscriptions) went through. Each failure (refused, TLS, untrusted
//! certificate, handshake, version, lost) updates the remote's [`LinkTracker`], which decides
//! whether it is worth a warning (a change of state or of kind, never each retry); the
//! tracker is what `hgxd status` shows.
//!
//! Calls: the persist client, `pull`, `drain`, `limits`, `DaemonCore`, `link_state`. Messages:
//! subscribe,
//! unsubscribe, stop (unbounded mpsc); the connected client is published through a `watch`
//! so fetches (`get`) go straight to it without queueing behind the actor.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::daemon_core::DaemonCore;
use super::link_state::{Failure, LinkTracker, RemoteStatus, Report};
use super::{drain, limits, pull};
use crate::golix::Ghid;
use crate::persist::client::{
    ClientError, ClientOptions, ConnectFailure, Notifications, PersisterClient as Client,
};
use crate::persist::wire::{self, PROTOCOL_VERSION};

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

/// One configured remote: the front-ends of one persister (one, or several of a persister
/// cluster), each with its own TLS configuration, used one at a time; the first is the
/// primary and names the remote (outbox queue, remembered limit).
#[derive(Clone)]
pub struct RemoteEntry {
    pub targets: Vec<RemoteTarget>,
}

impl RemoteEntry {
    /// The primary front-end's URL: what the remote is known by.
    pub fn url(&self) -> &str {
        self.targets.first().map_or("", |t| t.url.as_str())
    }
}

impl From<RemoteTarget> for RemoteEntry {
    fn from(target: RemoteTarget) -> RemoteEntry {
        RemoteEntry {
            targets: vec![target],
        }
    }
}

impl From<&str> for RemoteEntry {
    fn from(url: &str) -> RemoteEntry {
        RemoteTarget::from(url).into()
    }
}

impl From<String> for RemoteEntry {
    fn from(url: String) -> RemoteEntry {
        RemoteTarget::from(url).into()
    }
}

/// First reconnect delay; doubles per failed attempt.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest wait for one request's reply before the connection is considered broken.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

enum RemoteMsg {
    Subscribe(Ghid),
    Unsubscribe(Ghid),
    Stop { reply: oneshot::Sender<()> },
}

/// Talks to one `RemoteActor`. Cheap to clone.
#[derive(Clone)]
pub struct RemoteHandle {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    /// Never empty (see [`RemoteHandle::channel`]).
    entry: RemoteEntry,
    /// The front-end in use: an index into `entry.targets`.
    current: AtomicUsize,
    /// Moves to another front-end since start.
    failovers: AtomicU32,
    /// This remote's queue in the outbox.
    pub(super) queue: usize,
    /// The connection's state for `hgxd status`; written by the actor only.
    tracker: Mutex<LinkTracker>,
    tx: mpsc::UnboundedSender<RemoteMsg>,
    /// The connection state (with the client while connected).
    client: watch::Receiver<Link>,
    /// The largest object this remote takes: from its last `hello` (see [`super::limits`]).
    max_object: AtomicU64,
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
    /// The handle of the remote `entry` (outbox queue `queue`, last known to take objects
    /// of up to `max_object` bytes) and its inbox. An entry without front-ends gets one that
    /// cannot connect (it shows as failing in `hgxd status`).
    pub fn channel(
        entry: impl Into<RemoteEntry>,
        queue: usize,
        max_object: u64,
    ) -> (RemoteHandle, RemoteInbox) {
        let mut entry = entry.into();
        if entry.targets.is_empty() {
            entry.targets.push(RemoteTarget::from(""));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (ctx, crx) = watch::channel(Link::Starting);
        let shared = Arc::new(Shared {
            entry,
            current: AtomicUsize::new(0),
            failovers: AtomicU32::new(0),
            queue,
            tracker: Mutex::new(LinkTracker::new(SystemTime::now())),
            tx,
            client: crx,
            max_object: AtomicU64::new(max_object),
        });
        (RemoteHandle { shared }, RemoteInbox { rx, client: ctx })
    }

    /// The front-end in use.
    pub fn url(&self) -> &str {
        &self.target().url
    }

    /// The remote's name: its primary front-end's URL (outbox queue, remembered limit).
    pub fn primary_url(&self) -> &str {
        self.shared.entry.url()
    }

    fn target(&self) -> &RemoteTarget {
        let targets = &self.shared.entry.targets;
        &targets[self.shared.current.load(Ordering::Relaxed) % targets.len()]
    }

    /// Moves to the next front-end of this remote; whether there is another.
    fn fail_over(&self) -> bool {
        let n = self.shared.entry.targets.len();
        if n > 1 {
            let next = (self.shared.current.load(Ordering::Relaxed) + 1) % n;
            self.shared.current.store(next, Ordering::Relaxed);
            self.shared.failovers.fetch_add(1, Ordering::Relaxed);
        }
        n > 1
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
        let front_ends = self.shared.entry.targets.iter().map(|t| t.url.clone());
        RemoteStatus::new(self.url(), &self.tracker(), outbox).with_front_ends(
            front_ends.collect(),
            self.shared.failovers.load(Ordering::Relaxed),
        )
    }

    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.client.borrow(), Link::Up(_))
    }

    /// The largest object this remote takes, as last announced (or assumed, see
    /// [`super::limits`]).
    pub fn max_object(&self) -> u64 {
        self.shared.max_object.load(Ordering::Relaxed)
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

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<RemoteMsg>) {
        let mut attempt = 0u32;
        loop {
            let (connector, target) = (self.connector.clone(), self.handle.target().clone());
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
                        self.fail_over();
                    }
                },
                Err(e) => {
                    let _ = self.client_tx.send(Link::Down);
                    self.failed(Failure::from_client(&e));
                    self.fail_over();
                }
            }
            // Back off once every front-end of the remote has been tried.
            let front_ends = self.handle.shared.entry.targets.len().max(1) as u32;
            let delay = backoff(attempt / front_ends);
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
        let max_object = match self.greet(&client).await {
            Ok(max) => max,
            Err(failure) => {
                let _ = self.client_tx.send(Link::Down);
                client.close();
                return Ended::Lost {
                    was_up: false,
                    failure,
                };
            }
        };
        self.connected();
        let _ = self.client_tx.send(Link::Up(client.clone()));
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let worker = tokio::spawn(pull_worker(self.core.clone(), self.handle.clone(), work_rx));
        let (caught_up_tx, caught_up_rx) = oneshot::channel();
        let drainer = tokio::spawn(drain::drain(
            self.core.clone(),
            self.handle.clone(),
            client.clone(),
            max_object,
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

    /// Checks the protocol version, learns the remote's limits (remembered, see
    /// [`super::limits`]), then sends our GIDC, authenticates, and sends the subscriptions. Returns the largest
    /// object the remote takes.
    async fn greet(&self, client: &Client) -> Result<u64, Failure> {
        let failure = |e: ClientError| Failure::from_client(&e);
        let hello = timed(client.hello()).await.map_err(failure)?;
        check_version(hello.protocol)?;
        let max_object = wire::max_publish_object(hello.limits.max_frame);
        let previous = self
            .handle
            .shared
            .max_object
            .swap(max_object, Ordering::Relaxed);
        if previous != max_object {
            let remembered =
                limits::remember(&self.core.vault, self.handle.primary_url(), max_object);
            if let Err(e) = async {
                remembered?;
                self.core.vault.flush().await
            }
            .await
            {
                slog::warn!(self.log(), "cannot remember a remote's limit"; "error" => %e);
            }
            slog::info!(self.log(), "remote size limit"; "remote" => self.handle.url(),
                "max_object" => max_object, "was" => previous);
        }
        let gidc = self.core.identity.gidc().encode();
        timed(client.publish(&gidc)).await.map_err(failure)?;
        // Our share requests then count against our own key, not against the anonymous
        // sender that anyone can fill (an older persister does not know the op).
        match timed(client.authenticate(&self.core.identity)).await {
            Ok(()) => {}
            Err(e) if e.code() == Some("unknown_op") => {
                slog::info!(self.log(), "remote does not authenticate connections";
                    "remote" => self.handle.url());
            }
            // Refused: carry on anonymously (our requests then share the anonymous quota).
            Err(e @ ClientError::Server { .. }) => {
                slog::warn!(self.log(), "remote refused our authentication";
                    "remote" => self.handle.url(), "error" => %e);
            }
            Err(e) => return Err(failure(e)),
        }
        timed(client.subscribe(&self.core.fingerprint()))
            .await
            .map_err(failure)?;
        for g in &self.subs {
            timed(client.subscribe(g)).await.map_err(failure)?;
        }
        Ok(max_object)
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

pub(super) async fn timed<T>(
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
