//! What a remote is and how the daemon reaches its `RemoteActor` ([`super::remote_actor`]):
//! the configured front-ends ([`RemoteEntry`], [`RemoteTarget`]: a `ws://` or `wss://` URL of
//! a persister's `/ws`), the [`RemoteHandle`] every caller holds, the reconnect [`backoff`],
//! and the [`Connector`] that opens persister connections on an arbiter.
//!
//! Owns, per remote (shared between the handle and the actor): the front-end in use and the
//! failovers so far, the link state ([`LinkTracker`], what `hgxd status` shows), the
//! connection state with the connected client (a `watch`, so fetches (`get`, `bindings`) go
//! straight to the client without queueing behind the actor), the remote's size limit (from
//! its last `hello`, see [`super::limits`]) and its outbox queue number.
//!
//! A remote may be several front-ends of one persister cluster ([`RemoteEntry`]): the actor
//! uses one at a time and, when it loses it (or cannot reach it; not when we closed it for
//! being behind on its notifications, an `overloaded` loss), moves to the next and runs
//! the same reconnect sequence there: resubscribe, replay the outbox (publishing is idempotent
//! by ghid, so an entry the lost front-end already stored is "already present", not a second
//! object), catch up. The outbox queue and the remembered limit belong to the remote (keyed by
//! its first front-end), not to the front-end in use.
//!
//! [`RemoteHandle`] turns its callers' calls into the actor's typed messages, defined here:
//! [`Subscribe`] and [`Unsubscribe`], sent through the `WeakRecipient`s the actor hands it
//! when it starts, so this module does not name the actor; [`Stop`] is sent by
//! `DaemonHandle` through the actor's owning address. Calls: the persist client,
//! `link_state`. Used by [`super::upstream`] (all remotes as one), `DaemonHandle`, `boot`,
//! `drain` and `RemoteActor`.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use actix::{Message, WeakRecipient};
use rand::Rng;
use tokio::sync::{oneshot, watch};

use super::error::DaemonError;
use super::link_state::{Failure, LinkTracker, RemoteStatus};
use crate::golix::Ghid;
use crate::persist::client::{
    ClientError, ClientOptions, ConnectFailure, Notifications, PersisterClient as Client,
};
use crate::persist::wire::{codes, PROTOCOL_VERSION};

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

/// Keeps `ghid` subscribed on this remote (across reconnects) and catches up on it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Ghid);

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe(pub Ghid);

/// Disconnects; the actor stays idle afterwards.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Where a remote's actor takes its subscription changes (set once it starts). Weak: the
/// actor's owner is `DaemonHandle` (which alone sends it [`Stop`]).
pub struct ActorInbox {
    pub subscribe: WeakRecipient<Subscribe>,
    pub unsubscribe: WeakRecipient<Unsubscribe>,
}

/// First reconnect delay; doubles per failed attempt.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest wait for one request's reply before the connection is considered broken.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The actor's inbox, once it started ([`super::remote_actor::start`]).
    actor: OnceLock<ActorInbox>,
    /// The sending end of `client`, until the actor takes it.
    link_tx: Mutex<Option<watch::Sender<Link>>>,
    /// The connection state (with the client while connected).
    client: watch::Receiver<Link>,
    /// The largest object this remote takes: from its last `hello` (see [`super::limits`]).
    pub(super) max_object: AtomicU64,
    /// Notifications and catch-up frames waiting to be pulled, as the pull worker last saw
    /// them, and the most it ever saw (bounded by `remote_actor::PULL_QUEUE`).
    pull_backlog: AtomicUsize,
    pull_peak: AtomicUsize,
    /// The last object it refused for good ([`RemoteHandle::note_refusal`]).
    last_refusal: Mutex<Option<Failure>>,
}

/// Where a remote's connection stands.
#[derive(Clone)]
pub(super) enum Link {
    /// The first connection attempt has not finished.
    Starting,
    Up(Client),
    Down,
}

impl RemoteHandle {
    /// The handle of the remote `entry` (outbox queue `queue`, last known to take objects
    /// of up to `max_object` bytes), before its actor starts. An entry without front-ends
    /// gets one that cannot connect (it shows as failing in `hgxd status`).
    pub fn new(entry: impl Into<RemoteEntry>, queue: usize, max_object: u64) -> RemoteHandle {
        let mut entry = entry.into();
        if entry.targets.is_empty() {
            entry.targets.push(RemoteTarget::from(""));
        }
        let (ctx, crx) = watch::channel(Link::Starting);
        let shared = Arc::new(Shared {
            entry,
            current: AtomicUsize::new(0),
            failovers: AtomicU32::new(0),
            queue,
            tracker: Mutex::new(LinkTracker::new(SystemTime::now())),
            actor: OnceLock::new(),
            link_tx: Mutex::new(Some(ctx)),
            client: crx,
            max_object: AtomicU64::new(max_object),
            pull_backlog: AtomicUsize::new(0),
            pull_peak: AtomicUsize::new(0),
            last_refusal: Mutex::new(None),
        });
        RemoteHandle { shared }
    }

    /// The connection state's sending end, for the actor (a second call gets a closed one).
    pub(super) fn take_link_sender(&self) -> watch::Sender<Link> {
        let taken = lock(&self.shared.link_tx).take();
        taken.unwrap_or_else(|| watch::channel(Link::Down).0)
    }

    pub(super) fn set_actor(&self, inbox: ActorInbox) {
        let _ = self.shared.actor.set(inbox);
    }

    /// How many front-ends the remote has.
    pub(super) fn front_ends(&self) -> usize {
        self.shared.entry.targets.len()
    }

    /// The front-end in use.
    pub fn url(&self) -> &str {
        &self.target().url
    }

    /// The remote's name: its primary front-end's URL (outbox queue, remembered limit).
    pub fn primary_url(&self) -> &str {
        self.shared.entry.url()
    }

    pub(super) fn target(&self) -> &RemoteTarget {
        let targets = &self.shared.entry.targets;
        &targets[self.shared.current.load(Ordering::Relaxed) % targets.len()]
    }

    /// Moves to the next front-end of this remote; whether there is another.
    pub(super) fn fail_over(&self) -> bool {
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

    pub(super) fn tracker(&self) -> MutexGuard<'_, LinkTracker> {
        lock(&self.shared.tracker)
    }

    /// Its state for `hgxd status`, with `outbox` objects still queued for it.
    pub fn status(&self, outbox: usize) -> RemoteStatus {
        let front_ends = self.shared.entry.targets.iter().map(|t| t.url.clone());
        let mut status = RemoteStatus::new(self.url(), &self.tracker(), outbox).with_front_ends(
            front_ends.collect(),
            self.shared.failovers.load(Ordering::Relaxed),
        );
        status.last_refusal = lock(&self.shared.last_refusal).clone();
        status
    }

    /// Records that this remote refused an object for good (`code`, `message`), for status.
    pub(super) fn note_refusal(&self, code: &str, message: &str) {
        *lock(&self.shared.last_refusal) =
            Some(Failure::new("refused", format!("{code}: {message}")));
    }

    /// Records how many items the pull worker found waiting before taking the next.
    pub(super) fn record_pull_backlog(&self, waiting: usize) {
        self.shared.pull_backlog.store(waiting, Ordering::Relaxed);
        self.shared.pull_peak.fetch_max(waiting, Ordering::Relaxed);
    }

    /// (waiting to be pulled now, the most that ever waited) for this remote.
    pub fn pull_backlog(&self) -> (usize, usize) {
        (
            self.shared.pull_backlog.load(Ordering::Relaxed),
            self.shared.pull_peak.load(Ordering::Relaxed),
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
        self.get_checked(ghid).await.ok().flatten()
    }

    /// [`RemoteHandle::get`] that tells "this remote answered that it does not have it"
    /// (`Ok(None)`) from "this remote could not answer" (`unavailable_upstream` naming it and
    /// why: not connected, timed out, the connection failed, the persister could not serve it).
    pub async fn get_checked(&self, ghid: &Ghid) -> Result<Option<Vec<u8>>, DaemonError> {
        let ghid = *ghid;
        let got = self.checked(|c| async move { c.get(&ghid).await }).await?;
        Ok(got.map(|b| b.to_vec()))
    }

    /// The bindings this remote lists for `ghid` (GOBS ghids, or dynamic ghids), with the
    /// same distinction as [`RemoteHandle::get_checked`].
    pub async fn bindings_checked(&self, ghid: &Ghid) -> Result<Option<Vec<Ghid>>, DaemonError> {
        let ghid = *ghid;
        self.checked(|c| async move { c.list_bindings(&ghid).await })
            .await
    }

    /// Subscribes to `ghid` anew on the current connection (unsubscribe, subscribe), so
    /// the remote delivers its stored mail for it again (it does so only for a new
    /// subscription). If either fails (or times out), the connection is closed: the next one
    /// subscribes again as it greets.
    pub async fn resubscribe(&self, ghid: &Ghid) -> Result<(), DaemonError> {
        let client = self.connected().await?;
        let done = match timed(client.unsubscribe(ghid)).await {
            Ok(_) => timed(client.subscribe(ghid)).await,
            Err(e) => Err(e),
        };
        done.map_err(|e| {
            // The unsubscribe may have been applied: a new connection subscribes again.
            client.close();
            self.unavailable(&e.to_string())
        })
    }

    /// The connected client, or `unavailable_upstream` naming this remote.
    async fn connected(&self) -> Result<Client, DaemonError> {
        self.client()
            .await
            .ok_or_else(|| self.unavailable("not connected"))
    }

    fn unavailable(&self, why: &str) -> DaemonError {
        DaemonError::UnavailableUpstream(format!("{}: {why}", self.url()))
    }

    /// `op` on the connected client: `not_found` is `Ok(None)`, anything that kept this remote
    /// from answering is `unavailable_upstream` naming it and why.
    async fn checked<T, F>(&self, op: impl FnOnce(Client) -> F) -> Result<Option<T>, DaemonError>
    where
        F: std::future::Future<Output = Result<T, ClientError>>,
    {
        let client = self.connected().await?;
        match timed(op(client)).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code() == Some(codes::NOT_FOUND) => Ok(None),
            Err(e) => Err(self.unavailable(&e.to_string())),
        }
    }

    /// Keeps `ghid` subscribed (across reconnects) and catches up on it.
    pub fn subscribe(&self, ghid: Ghid) {
        if let Some(a) = self.shared.actor.get().and_then(|a| a.subscribe.upgrade()) {
            a.do_send(Subscribe(ghid));
        }
    }

    pub fn unsubscribe(&self, ghid: Ghid) {
        if let Some(a) = self
            .shared
            .actor
            .get()
            .and_then(|a| a.unsubscribe.upgrade())
        {
            a.do_send(Unsubscribe(ghid));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

/// Refuses a persister that speaks another protocol version than ours.
pub(super) fn check_version(theirs: u32) -> Result<(), Failure> {
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

type Connected = Result<(Client, Notifications), ClientError>;

/// Opens persister connections on one of the daemon's actix arbiters
/// ([`super::arbiters`]): the awc websocket is `!Send`, so its I/O task must live on one;
/// the returned client handle and notification channel are `Send` and are used from any
/// task. The connections end when they are closed, or with the arbiter at shutdown.
#[derive(Clone)]
pub struct Connector {
    arbiter: actix_rt::ArbiterHandle,
}

impl Connector {
    pub fn new(arbiter: actix_rt::ArbiterHandle) -> Connector {
        Connector { arbiter }
    }

    /// Connects to `target`.
    pub async fn connect(&self, target: &RemoteTarget) -> Connected {
        let (reply, rx) = oneshot::channel::<Connected>();
        let closed = || ClientError::Connect {
            url: target.url.clone(),
            kind: ConnectFailure::Network,
            reason: "the actor threads stopped".into(),
        };
        let target_ = target.clone();
        let spawned = self.arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                let opts = ClientOptions {
                    request_timeout: REQUEST_TIMEOUT,
                    connect_timeout: REQUEST_TIMEOUT,
                    tls: target_.tls,
                    // The pull worker asks this connection for containers while it holds
                    // notifications: a consumer that falls behind is reconnected (and
                    // catches up), never waited for.
                    close_when_full: true,
                    ..ClientOptions::default()
                };
                let _ = reply.send(Client::connect_with(&target_.url, opts).await);
            });
        });
        if !spawned {
            return Err(closed());
        }
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
