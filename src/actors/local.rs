//! `Local`: the daemon's shared local state, the leaf every actor stands on. Data only: no
//! actor's address, no import of an actor module.
//!
//! Owns: handles to the daemon's tokio runtime (where actors run their work, off the actor
//! threads) and its [`Arbiters`] (where actors start), the identity and user id, the local
//! [`Archive`], the [`Vault`] (with the per-object secret and metadata records below), the
//! [`PublishQueue`], the shutdown [`Gate`] and the log. One `Arc<Local>` is built at start-up
//! ([`super::boot`]) and handed to every actor that needs it.
//!
//! Calls: `persist` (archive publish, off the event loop), the vault. Used by every actor,
//! the free functions they share (`commit`, `durable`, `upstream`, `dispatch`) and
//! `DaemonHandle`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::account::StoredSecret;
use super::arbiters::Arbiters;
use super::error::DaemonError;
use super::publish_queue::PublishQueue;
use super::vault::Vault;
use crate::golix::{FirstParty, Ghid};
use crate::persist::{Archive, PersistError, Published};

/// Vault key prefix of object secrets: `secret\0 | ghid`.
const SECRET_PREFIX: &[u8] = b"secret\0";
/// Vault key prefix of object metadata known only locally: `meta\0 | ghid`.
const META_PREFIX: &[u8] = b"meta\0";

/// The newest secret this machine knows for an object (dynamic ghid, or static container
/// ghid), the container it opens, and that container's frame counter (0 for static).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretRecord {
    pub stored: StoredSecret,
    pub counter: u64,
}

/// What the account does not keep about an object: whether an app created it private, and
/// whether this daemon follows it (keeps it subscribed while running, tracked or not: an
/// object shared with us, whose secret only keeps up by ratcheting along every frame).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectMeta {
    pub private: bool,
    pub followed: bool,
}

fn key(prefix: &[u8], ghid: &Ghid) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(ghid.as_bytes());
    k
}

/// Refuses work after shutdown starts, and counts work in flight so shutdown can wait for it.
#[derive(Default)]
pub struct Gate {
    closed: AtomicBool,
    busy: AtomicUsize,
    idle: Notify,
}

/// Held while one daemon operation runs.
pub struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Gate {
    /// A pass for one operation, unless shutdown has started.
    pub fn enter(&self) -> Result<Pass<'_>, DaemonError> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        let pass = Pass(self);
        if self.closed.load(Ordering::SeqCst) {
            return Err(DaemonError::ShuttingDown);
        }
        Ok(pass)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Refuses new passes and waits until every pass is dropped.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        loop {
            let idle = self.idle.notified();
            if self.busy.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// The shared local state of one running daemon.
pub struct Local {
    /// The daemon's tokio runtime: where actors run their work (off the actor threads).
    pub runtime: tokio::runtime::Handle,
    /// Where new actors start.
    pub arbiters: Arbiters,
    pub identity: Arc<FirstParty>,
    pub user_id: Ghid,
    pub archive: Archive,
    pub vault: Vault,
    pub publish_queue: PublishQueue,
    pub gate: Gate,
    pub log: slog::Logger,
}

impl Local {
    pub fn fingerprint(&self) -> Ghid {
        self.identity.ghid()
    }

    /// Publishes `bytes` into the local archive (decode, verify, rules) off the event loop.
    /// Not durable until [`Archive::sync`].
    pub async fn ingest(&self, bytes: Vec<u8>) -> Result<Published, PersistError> {
        let archive = self.archive.clone();
        tokio::task::spawn_blocking(move || archive.publish(&bytes))
            .await
            .map_err(|e| PersistError::Storage(format!("ingest task failed: {e}")))?
    }

    /// Raw bytes of `ghid` from the local archive.
    pub fn get(&self, ghid: &Ghid) -> Result<Option<Vec<u8>>, DaemonError> {
        Ok(self.archive.get(ghid)?.map(|b| b.to_vec()))
    }

    /// The secret this machine recorded for `ghid`.
    pub fn secret(&self, ghid: &Ghid) -> Result<Option<SecretRecord>, DaemonError> {
        self.vault.get(&key(SECRET_PREFIX, ghid))
    }

    /// Records `secret` for `ghid` (not durable until the vault flushes).
    pub fn put_secret(&self, ghid: &Ghid, record: &SecretRecord) -> Result<(), DaemonError> {
        self.vault.put(&key(SECRET_PREFIX, ghid), record)
    }

    pub fn forget_secret(&self, ghid: &Ghid) -> Result<(), DaemonError> {
        self.vault.remove(&key(SECRET_PREFIX, ghid))?;
        self.vault.remove(&key(META_PREFIX, ghid))
    }

    /// Every object with a recorded secret.
    pub fn secret_ghids(&self) -> Result<Vec<Ghid>, DaemonError> {
        Ok(self
            .vault
            .scan_prefix::<SecretRecord>(SECRET_PREFIX)?
            .into_iter()
            .filter_map(|(k, _)| Ghid::from_bytes(&k[SECRET_PREFIX.len()..]).ok())
            .collect())
    }

    pub fn meta(&self, ghid: &Ghid) -> Result<ObjectMeta, DaemonError> {
        Ok(self.vault.get(&key(META_PREFIX, ghid))?.unwrap_or_default())
    }

    pub fn put_meta(&self, ghid: &Ghid, meta: &ObjectMeta) -> Result<(), DaemonError> {
        self.vault.put(&key(META_PREFIX, ghid), meta)
    }

    /// Records that this daemon follows `ghid` (see [`ObjectMeta::followed`]); subscribing
    /// is the caller's ([`super::upstream::Upstream::follow`]).
    pub fn mark_followed(&self, ghid: &Ghid) -> Result<(), DaemonError> {
        let mut meta = self.meta(ghid)?;
        if !meta.followed {
            meta.followed = true;
            self.put_meta(ghid, &meta)?;
        }
        Ok(())
    }

    /// Every followed object.
    pub fn followed(&self) -> Result<Vec<Ghid>, DaemonError> {
        Ok(self
            .vault
            .scan_prefix::<ObjectMeta>(META_PREFIX)?
            .into_iter()
            .filter(|(_, m)| m.followed)
            .filter_map(|(k, _)| Ghid::from_bytes(&k[META_PREFIX.len()..]).ok())
            .collect())
    }
}
