//! `AccountActor`: the one owner of the [`Account`] while the daemon runs.
//!
//! Owns: the account (identity, root frame, [`AccountState`]) and its flush schedule. Objects
//! report new secrets, holds and forgotten objects; the actor folds them into the state and
//! flushes the root object (new frame + container: ingested locally, durably, and queued for
//! every remote) **at most every [`FLUSH_INTERVAL`]**, but **at once** when an object is new to
//! the account or its account-recorded secret would fall [`MAX_LAG`] or more frames behind
//! (so another machine of the user, which only sees the flushed state, can always ratchet
//! forward within a frame's 7-entry target vector).
//!
//! Calls: `Account::flush` (signing, off the event loop) and `DaemonCore::commit_local`.
//! Messages arrive over an unbounded mpsc (senders never wait on a flush); queries reply on
//! a oneshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OnceCell};
use tokio::time::Instant;

use super::account::{Account, StoredSecret};
use super::daemon_core::DaemonCore;
use super::error::DaemonError;
use crate::golix::Ghid;

/// Shortest time between two ordinary flushes.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Flush at once when an object's flushed secret would be this many frames behind.
pub const MAX_LAG: u64 = 5;

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
    Lookup {
        ghid: Ghid,
        reply: oneshot::Sender<Option<StoredSecret>>,
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
    pub fn record_secret(&self, ghid: Ghid, stored: StoredSecret, counter: u64, api_id: Option<Ghid>) {
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

    /// The secret the account records for `ghid`.
    pub async fn lookup(&self, ghid: Ghid) -> Option<StoredSecret> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(LedgerMsg::Lookup { ghid, reply }).ok()?;
        rx.await.ok().flatten()
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
    /// Set once the core exists (it holds our handle, so it is built after us).
    core: Arc<OnceCell<std::sync::Weak<DaemonCore>>>,
    /// Frame counter of each object's secret in the last flushed state.
    flushed: HashMap<Ghid, u64>,
    /// Frame counter of each object's newest secret.
    latest: HashMap<Ghid, u64>,
    last_flush: Option<Instant>,
    log: slog::Logger,
    /// An ordinary flush is due at this time.
    due: Option<Instant>,
}

/// Starts the `AccountActor`. `core` is filled in by the caller once the core exists.
pub fn spawn(
    account: Account,
    inbox: LedgerInbox,
    core: Arc<OnceCell<std::sync::Weak<DaemonCore>>>,
    log: slog::Logger,
) -> tokio::task::JoinHandle<()> {
    let mut actor = AccountActor {
        flushed: account
            .state()
            .secrets
            .keys()
            .map(|g| (*g, 0))
            .collect(),
        latest: HashMap::new(),
        account: Some(account),
        core,
        last_flush: None,
        log,
        due: None,
    };
    tokio::spawn(async move { actor.run(inbox.0).await })
}

impl AccountActor {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<LedgerMsg>) {
        loop {
            let due = self.due;
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = sleep_until(due), if due.is_some() => {
                    self.due = None;
                    if let Err(e) = self.flush().await {
                        slog::error!(self.log, "account flush failed"; "error" => %e);
                    }
                    continue;
                }
            };
            let Some(msg) = msg else {
                let _ = self.flush().await;
                return;
            };
            match msg {
                LedgerMsg::Secret {
                    ghid,
                    stored,
                    counter,
                    api_id,
                } => self.record_secret(ghid, stored, counter, api_id).await,
                LedgerMsg::Hold(ghid) => {
                    if let Some(a) = self.account.as_mut() {
                        if a.state_mut().holds.insert(ghid) {
                            self.schedule();
                        }
                    }
                }
                LedgerMsg::Forget(ghid) => {
                    if let Some(a) = self.account.as_mut() {
                        let st = a.state_mut();
                        st.secrets.remove(&ghid);
                        st.api_ids.remove(&ghid);
                        st.private.remove(&ghid);
                        st.holds.remove(&ghid);
                        self.latest.remove(&ghid);
                        self.flushed.remove(&ghid);
                        self.schedule();
                    }
                }
                LedgerMsg::Lookup { ghid, reply } => {
                    let found = self
                        .account
                        .as_ref()
                        .and_then(|a| a.state().secrets.get(&ghid).cloned());
                    let _ = reply.send(found);
                }
                LedgerMsg::Flush { reply } => {
                    let _ = reply.send(self.flush().await);
                }
                LedgerMsg::Stop { reply } => {
                    let _ = reply.send(self.flush().await);
                    return;
                }
            }
        }
    }

    async fn record_secret(&mut self, ghid: Ghid, stored: StoredSecret, counter: u64, api_id: Option<Ghid>) {
        let Some(a) = self.account.as_mut() else { return };
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
            if let Err(e) = self.flush().await {
                slog::error!(self.log, "account flush failed"; "error" => %e);
            }
        } else {
            self.schedule();
        }
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

    /// Writes a new root frame if the state changed, and commits it locally and upstream.
    async fn flush(&mut self) -> Result<(), DaemonError> {
        self.due = None;
        let dirty = self.account.as_ref().is_some_and(|a| a.is_dirty());
        if !dirty {
            return Ok(());
        }
        let Some(core) = self.core.get().and_then(|w| w.upgrade()) else {
            return Err(DaemonError::ShuttingDown);
        };
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
        self.flushed.extend(self.latest.iter().map(|(g, c)| (*g, *c)));
        Ok(())
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
