//! `AccountActor`: the one owner of the [`Account`] while the daemon runs.
//!
//! Owns: the account (identity, root frame, [`super::account::AccountState`]) and its flush
//! schedule. Objects report new secrets, holds and forgotten objects; the actor folds them
//! into the state and flushes the root object (new frame + container: ingested locally,
//! durably, and queued for every remote) **at most every [`FLUSH_INTERVAL`]**, but **at once**
//! when an object is new to the account or its account-recorded secret would fall
//! [`MAX_LAG`] or more frames behind (so another machine of the user, which only sees the
//! flushed state, can always ratchet forward within a frame's 7-entry target vector).
//!
//! Another machine of the user flushes the same root object. Before a flush, and when no
//! known secret opens an object (then at most every [`REFRESH_INTERVAL`]), the actor
//! **refreshes**: it fetches the newest root frame from the remotes and, if
//! it is newer than ours, adopts it as the base of our next flush, carrying over our
//! unflushed secret, api-id and hold changes, and its app registrations and shares (tokens,
//! startup and private objects, pending and orphan shares: see `merge_app_state`).
//!
//! Calls: `Account::flush`/`open` (signing, off the event loop), `DaemonCore::commit_local`
//! and its fetches. Messages arrive over an unbounded mpsc (senders never wait on a flush);
//! messages already queued are folded in before an urgent flush, so a burst costs one flush;
//! queries reply on a oneshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OnceCell};
use tokio::time::Instant;

use super::account::{Account, AccountState, StoredSecret};
use super::daemon_core::DaemonCore;
use super::error::DaemonError;
use crate::golix::{Ghid, Object, Policy, Secret};

/// Shortest time between two ordinary flushes.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Flush at once when an object's flushed secret would be this many frames behind.
pub const MAX_LAG: u64 = 5;
/// Shortest time between two refreshes from the remotes.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

enum LedgerMsg {
    /// The newest secret of `ghid` (frame `counter`); `api_id` for objects new to us.
    Secret {
        ghid: Ghid,
        stored: StoredSecret,
        counter: u64,
        api_id: Option<Ghid>,
    },
    Hold(Ghid),
    Forget(Ghid),
    /// The secret the account records for `ghid` (none or one).
    Lookup {
        ghid: Ghid,
        reply: oneshot::Sender<Vec<StoredSecret>>,
    },
    /// Runs a closure on the account (reads, or edits through `state_mut`, which marks the
    /// account dirty: a flush is then scheduled). Tokens, startup and private objects,
    /// pending and orphan shares are kept this way.
    Edit(Box<dyn FnOnce(&mut Account) + Send>),
    /// Fetch the newest root object from the remotes (rate-limited).
    Refresh {
        reply: oneshot::Sender<()>,
    },
    /// Flush now if dirty.
    Flush {
        reply: oneshot::Sender<Result<(), DaemonError>>,
    },
    /// Final flush, then stop.
    Stop {
        reply: oneshot::Sender<Result<(), DaemonError>>,
    },
}

/// Talks to the `AccountActor`. Cheap to clone.
#[derive(Clone)]
pub struct LedgerHandle {
    tx: mpsc::UnboundedSender<LedgerMsg>,
}

impl LedgerHandle {
    /// The handle and the receiver to pass to [`spawn`].
    pub fn channel() -> (LedgerHandle, LedgerInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LedgerHandle { tx }, LedgerInbox(rx))
    }

    /// Records the newest secret of an object (a new object too, with its api id).
    pub fn record_secret(
        &self,
        ghid: Ghid,
        stored: StoredSecret,
        counter: u64,
        api_id: Option<Ghid>,
    ) {
        let _ = self.tx.send(LedgerMsg::Secret {
            ghid,
            stored,
            counter,
            api_id,
        });
    }

    pub fn record_hold(&self, ghid: Ghid) {
        let _ = self.tx.send(LedgerMsg::Hold(ghid));
    }

    /// Drops an object (deleted) from the account.
    pub fn forget(&self, ghid: Ghid) {
        let _ = self.tx.send(LedgerMsg::Forget(ghid));
    }

    /// The secrets the account records for `ghid`.
    pub async fn lookup(&self, ghid: Ghid) -> Vec<StoredSecret> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(LedgerMsg::Lookup { ghid, reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Runs `f` on the account in the actor and returns its result. Edits go through
    /// `Account::state_mut` (an ordinary flush follows); `ShuttingDown` once the actor is gone.
    pub async fn with_account<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Account) -> R + Send + 'static,
    ) -> Result<R, DaemonError> {
        let (reply, rx) = oneshot::channel();
        let edit = Box::new(move |a: &mut Account| {
            let _ = reply.send(f(a));
        });
        self.tx
            .send(LedgerMsg::Edit(edit))
            .map_err(|_| DaemonError::ShuttingDown)?;
        rx.await.map_err(|_| DaemonError::ShuttingDown)
    }

    /// Like [`LedgerHandle::with_account`] without waiting: queued behind every message sent
    /// before it, ahead of every message sent after.
    pub fn edit(&self, f: impl FnOnce(&mut Account) + Send + 'static) {
        let _ = self.tx.send(LedgerMsg::Edit(Box::new(f)));
    }

    /// Picks up what another machine of the user flushed (at most every
    /// [`REFRESH_INTERVAL`]).
    pub async fn refresh(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(LedgerMsg::Refresh { reply }).is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes now if anything changed.
    pub async fn flush(&self) -> Result<(), DaemonError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(LedgerMsg::Flush { reply })
            .map_err(|_| DaemonError::ShuttingDown)?;
        rx.await.map_err(|_| DaemonError::ShuttingDown)?
    }

    /// Final flush; the actor stops.
    pub async fn stop(&self) -> Result<(), DaemonError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(LedgerMsg::Stop { reply })
            .map_err(|_| DaemonError::ShuttingDown)?;
        rx.await.map_err(|_| DaemonError::ShuttingDown)?
    }
}

/// The receiving end, consumed by [`spawn`].
pub struct LedgerInbox(mpsc::UnboundedReceiver<LedgerMsg>);

struct AccountActor {
    account: Option<Account>,
    /// Opens newer root frames written by another machine.
    root_secret: Secret,
    /// Set once the core exists (it holds our handle, so it is built after us).
    core: Arc<OnceCell<std::sync::Weak<DaemonCore>>>,
    /// Frame counter of each object's secret in the last flushed state (0 when unknown).
    flushed: HashMap<Ghid, u64>,
    /// Frame counter of each object's newest secret.
    latest: HashMap<Ghid, u64>,
    last_flush: Option<Instant>,
    last_refresh: Option<Instant>,
    /// A flush is needed before anything else waits.
    urgent: bool,
    /// An ordinary flush is due at this time.
    due: Option<Instant>,
    log: slog::Logger,
}

/// Starts the `AccountActor`. `core` is filled in by the caller once the core exists.
pub fn spawn(
    account: Account,
    root_secret: Secret,
    inbox: LedgerInbox,
    core: Arc<OnceCell<std::sync::Weak<DaemonCore>>>,
    log: slog::Logger,
) -> tokio::task::JoinHandle<()> {
    // An account opened dirty (it continues after a root frame whose container a crash lost)
    // flushes at once, so the stores get a whole root above that frame.
    let due = account.is_dirty().then(Instant::now);
    let mut actor = AccountActor {
        flushed: account.state().secrets.keys().map(|g| (*g, 0)).collect(),
        latest: HashMap::new(),
        account: Some(account),
        root_secret,
        core,
        last_flush: None,
        last_refresh: None,
        urgent: false,
        due,
        log,
    };
    tokio::spawn(async move { actor.run(inbox.0).await })
}

/// What the actor loop does after a message.
enum Next {
    Continue,
    Stop(oneshot::Sender<Result<(), DaemonError>>),
}

impl AccountActor {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<LedgerMsg>) {
        loop {
            let due = self.due;
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = sleep_until(due), if due.is_some() => {
                    self.flush_logged().await;
                    continue;
                }
            };
            let Some(mut msg) = msg else {
                self.flush_logged().await;
                return;
            };
            loop {
                if let Next::Stop(reply) = self.handle(msg).await {
                    let _ = reply.send(self.flush().await);
                    return;
                }
                // Fold in whatever is already queued before an urgent flush.
                match rx.try_recv() {
                    Ok(m) => msg = m,
                    Err(_) => break,
                }
            }
            if self.urgent {
                self.flush_logged().await;
            }
        }
    }

    async fn handle(&mut self, msg: LedgerMsg) -> Next {
        match msg {
            LedgerMsg::Secret {
                ghid,
                stored,
                counter,
                api_id,
            } => self.record_secret(ghid, stored, counter, api_id),
            LedgerMsg::Hold(ghid) => {
                if let Some(a) = self.account.as_mut() {
                    if !a.state().holds.contains(&ghid) {
                        a.state_mut().holds.insert(ghid);
                        self.schedule();
                    }
                }
            }
            LedgerMsg::Forget(ghid) => self.forget(ghid),
            LedgerMsg::Edit(f) => {
                if let Some(a) = self.account.as_mut() {
                    f(a);
                    if a.is_dirty() {
                        self.schedule();
                    }
                }
            }
            LedgerMsg::Lookup { ghid, reply } => {
                let found = self
                    .account
                    .as_ref()
                    .and_then(|a| a.state().secrets.get(&ghid).cloned());
                let _ = reply.send(found.into_iter().collect());
            }
            LedgerMsg::Refresh { reply } => {
                if let Err(e) = self.refresh(true).await {
                    slog::info!(self.log, "account refresh failed"; "error" => %e);
                }
                let _ = reply.send(());
            }
            LedgerMsg::Flush { reply } => {
                let _ = reply.send(self.flush().await);
            }
            LedgerMsg::Stop { reply } => return Next::Stop(reply),
        }
        Next::Continue
    }

    fn record_secret(
        &mut self,
        ghid: Ghid,
        stored: StoredSecret,
        counter: u64,
        api_id: Option<Ghid>,
    ) {
        let Some(a) = self.account.as_mut() else {
            return;
        };
        let st = a.state_mut();
        st.secrets.insert(ghid, stored);
        if let Some(api) = api_id {
            st.api_ids.insert(ghid, api);
        }
        self.latest.insert(ghid, counter);
        let urgent = match self.flushed.get(&ghid) {
            None => true,
            Some(f) => counter.saturating_sub(*f) >= MAX_LAG,
        };
        if urgent {
            self.urgent = true;
        } else {
            self.schedule();
        }
    }

    fn forget(&mut self, ghid: Ghid) {
        let Some(a) = self.account.as_mut() else {
            return;
        };
        let st = a.state();
        let known = st.secrets.contains_key(&ghid)
            || st.api_ids.contains_key(&ghid)
            || st.private.contains_key(&ghid)
            || st.holds.contains(&ghid);
        if known {
            let st = a.state_mut();
            st.secrets.remove(&ghid);
            st.api_ids.remove(&ghid);
            st.private.remove(&ghid);
            st.holds.remove(&ghid);
            self.schedule();
        }
        self.latest.remove(&ghid);
        self.flushed.remove(&ghid);
    }

    /// Arranges an ordinary flush no sooner than [`FLUSH_INTERVAL`] after the last one.
    fn schedule(&mut self) {
        if self.due.is_none() {
            let now = Instant::now();
            self.due = Some(match self.last_flush {
                Some(t) if t + FLUSH_INTERVAL > now => t + FLUSH_INTERVAL,
                _ => now,
            });
        }
    }

    async fn flush_logged(&mut self) {
        if let Err(e) = self.flush().await {
            slog::error!(self.log, "account flush failed"; "error" => %e);
        }
    }

    fn core(&self) -> Result<Arc<DaemonCore>, DaemonError> {
        self.core
            .get()
            .and_then(|w| w.upgrade())
            .ok_or(DaemonError::ShuttingDown)
    }

    /// Writes a new root frame if the state changed, and commits it locally and upstream.
    async fn flush(&mut self) -> Result<(), DaemonError> {
        self.due = None;
        self.urgent = false;
        let dirty = self.account.as_ref().is_some_and(|a| a.is_dirty());
        if !dirty {
            return Ok(());
        }
        let core = self.core()?;
        // Build on another machine's newer root, if any, rather than losing a frame race.
        if !core.remotes.is_empty() {
            if let Err(e) = self.refresh(false).await {
                slog::info!(self.log, "account refresh before flush failed"; "error" => %e);
            }
        }
        let Some(mut account) = self.account.take() else {
            return Ok(());
        };
        let (account, objects) = tokio::task::spawn_blocking(move || {
            let objects = account.flush();
            (account, objects)
        })
        .await
        .map_err(|e| DaemonError::Account(format!("account flush task failed: {e}")))?;
        self.account = Some(account);
        self.last_flush = Some(Instant::now());
        core.commit_local(objects?).await?;
        self.flushed
            .extend(self.latest.iter().map(|(g, c)| (*g, *c)));
        Ok(())
    }

    /// Fetches the newest root frame and container from the remotes; a newer one than ours is
    /// ingested (which verifies it) and opened with the root secret.
    /// `limited`: on behalf of an unopenable object (at most every [`REFRESH_INTERVAL`]);
    /// otherwise before a flush (flushes are rate-limited already).
    async fn refresh(&mut self, limited: bool) -> Result<(), DaemonError> {
        if limited {
            if self
                .last_refresh
                .is_some_and(|t| t.elapsed() < REFRESH_INTERVAL)
            {
                return Ok(());
            }
            self.last_refresh = Some(Instant::now());
        }
        let core = self.core()?;
        let ours = self.account.as_ref().map_or(0, |a| a.frame().counter);
        let Some(frame_bytes) = core.fetch(&core.user_id).await else {
            return Ok(());
        };
        let decode = |b: &[u8]| {
            Object::decode(b, Policy::STRICT).map_err(crate::persist::PersistError::from)
        };
        let Object::Gobd(frame) = decode(&frame_bytes)? else {
            return Err(DaemonError::Account(
                "the user id does not name a dynamic object".into(),
            ));
        };
        if frame.counter <= ours || frame.dynamic != core.user_id {
            return Ok(());
        }
        let container_bytes = core.fetch(&frame.target()).await.ok_or_else(|| {
            DaemonError::NotFound(format!("account container {}", frame.target()))
        })?;
        let Object::Geoc(container) = decode(&container_bytes)? else {
            return Err(DaemonError::Account(
                "the root frame's target is not a container".into(),
            ));
        };
        let mut newer = Account::open(self.root_secret.clone(), &frame, &container)?;
        // Two ingests (a container is only accepted bound), and a crash between them may
        // leave the frame without its container here. That is safe: the remote has both, and
        // the next login stores the container again (or continues after the frame).
        core.ingest_fetched(frame_bytes).await?;
        core.ingest_fetched(container_bytes).await?;
        let merged = match self.account.take() {
            Some(old) if old.is_dirty() => {
                // Carry our unflushed changes over onto the newer state.
                let changed = self
                    .latest
                    .iter()
                    .filter(|(g, c)| self.flushed.get(*g) != Some(*c))
                    .map(|(g, _)| *g);
                let (from, to) = (old.state(), newer.state_mut());
                for g in changed {
                    if let Some(s) = from.secrets.get(&g) {
                        to.secrets.insert(g, s.clone());
                    }
                    if let Some(a) = from.api_ids.get(&g) {
                        to.api_ids.insert(g, *a);
                    }
                }
                to.holds.extend(from.holds.iter().copied());
                merge_app_state(from, to);
                self.urgent = true;
                true
            }
            _ => false,
        };
        slog::info!(self.log, "account refreshed from another machine";
            "counter" => frame.counter, "merged" => merged);
        self.flushed = newer.state().secrets.keys().map(|g| (*g, 0)).collect();
        self.account = Some(newer);
        Ok(())
    }
}

/// Carries this machine's app registrations and shares over onto a newer account state:
/// tokens, startup and private entries (ours win), pending and orphan shares (union). What this
/// machine removed since its last flush may come back from the newer state: at worst a
/// startup object or an orphan share is offered again.
fn merge_app_state(from: &AccountState, to: &mut AccountState) {
    to.tokens.extend(from.tokens.iter().copied());
    to.startup
        .extend(from.startup.iter().map(|(t, g)| (*t, *g)));
    to.private
        .extend(from.private.iter().map(|(g, t)| (*g, *t)));
    for p in &from.pending_shares {
        if !to.pending_shares.iter().any(|q| q.request == p.request) {
            to.pending_shares.push(p.clone());
        }
    }
    for o in &from.orphan_shares {
        if !to.orphan_shares.contains(o) {
            to.orphan_shares.push(o.clone());
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
