//! `RemoteActor`: one tokio task per configured persister (a `ws://` or `wss://` URL of its
//! `/ws`).
//!
//! Owns: the connection (the persist client), reconnection with capped exponential backoff
//! and jitter, the set of subscribed dynamic ghids, the remote's size limit, and catch-up. On
//! every (re)connect it asks the remote's `hello` for its `max_frame` (remembered through
//! [`super::limits`]), publishes our GIDC, subscribes our fingerprint and every subscribed
//! ghid, replays the outbox in order ([`super::drain`]), then fetches the current frame of
//! every subscribed ghid and pulls it, so updates made while we were offline arrive unasked.
//! Notifications are pulled in arrival order by a per-connection worker.
//!
//! Calls: the persist client, `pull`, `drain`, `limits`, `DaemonCore`. Messages: subscribe,
//! unsubscribe, stop (unbounded mpsc); the connected client is published through a `watch`
//! so fetches (`get`) go straight to it without queueing behind the actor.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::daemon_core::DaemonCore;
use super::{drain, limits, pull};
use crate::golix::Ghid;
use crate::persist::client::{
    ClientError, ClientOptions, Notifications, PersisterClient as Client,
};
use crate::persist::wire;

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
    url: String,
    /// This remote's queue in the outbox.
    pub(super) queue: usize,
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
    /// The handle of the remote at `url` (outbox queue `queue`, last known to take objects
    /// of up to `max_object` bytes) and its inbox.
    pub fn channel(url: &str, queue: usize, max_object: u64) -> (RemoteHandle, RemoteInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ctx, crx) = watch::channel(Link::Starting);
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            queue,
            tx,
            client: crx,
            max_object: AtomicU64::new(max_object),
        });
        (RemoteHandle { shared }, RemoteInbox { rx, client: ctx })
    }

    pub fn url(&self) -> &str {
        &self.shared.url
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
                        }
                    }
                }
                Err(e) => {
                    let _ = self.client_tx.send(Link::Down);
                    slog::debug!(self.log(), "remote unreachable"; "remote" => self.handle.url(), "error" => %e);
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
        let max_object = match self.greet(&client).await {
            Ok(max) => max,
            Err(e) => {
                slog::warn!(self.log(), "remote setup failed"; "remote" => self.handle.url(), "error" => %e);
                let _ = self.client_tx.send(Link::Down);
                client.close();
                return Ended::Lost;
            }
        };
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

    /// The remote's limits (remembered, see [`super::limits`]), our GIDC, then the
    /// subscriptions. Returns the largest object the remote takes.
    async fn greet(&self, client: &Client) -> Result<u64, ClientError> {
        let hello = timed(client.hello()).await?;
        let max_object = wire::max_publish_object(hello.limits.max_frame);
        let previous = self
            .handle
            .shared
            .max_object
            .swap(max_object, Ordering::Relaxed);
        if previous != max_object {
            let remembered = limits::remember(&self.core.vault, self.handle.url(), max_object);
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
        timed(client.publish(&gidc)).await?;
        timed(client.subscribe(&self.core.fingerprint())).await?;
        for g in &self.subs {
            timed(client.subscribe(g)).await?;
        }
        Ok(max_object)
    }
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
