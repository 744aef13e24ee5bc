//! `DaemonCore`: what every daemon actor shares, and the local-publish and fetch paths they
//! all use.
//!
//! Owns: handles only — the daemon's runtime and actor threads, the identity, the local [`Archive`], the [`Vault`] and [`Outbox`], the
//! account, remote, GC and share actors, the app registry, the live-object registry, and the gate
//! that refuses new work at shutdown and counts work in flight. No actor's state lives here;
//! the registries are read-mostly maps behind std mutexes held only for a map operation.
//!
//! Calls: `persist` (archive publish/sync, off the event loop), the vault, the outbox, and the
//! remotes' `RemoteHandle`s (fetches; `Subscribe`/`Unsubscribe` to each `RemoteActor`). Used by every actor and by `DaemonHandle`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::account::StoredSecret;
use super::account_actor::AccountHandle;
use super::apps::AppRegistry;
use super::arbiters::ActorThreads;
use super::error::DaemonError;
use super::gc::GcHandle;
use super::object::ObjectRegistry;
use super::outbox::Outbox;
use super::remote::RemoteHandle;
use super::share::ShareHandle;
use super::vault::Vault;
use crate::golix::{FirstParty, Ghid, Object, Policy};
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

/// The shared context of one running daemon.
pub struct DaemonCore {
    /// The daemon's tokio runtime: where actors run their work (off the actor threads).
    pub runtime: tokio::runtime::Handle,
    /// The arbiters the actors run on.
    pub threads: ActorThreads,
    pub identity: Arc<FirstParty>,
    pub user_id: Ghid,
    pub archive: Archive,
    pub vault: Vault,
    pub outbox: Outbox,
    pub account: AccountHandle,
    pub remotes: Vec<RemoteHandle>,
    pub apps: AppRegistry,
    pub objects: ObjectRegistry,
    pub gc: GcHandle,
    pub share: ShareHandle,
    pub gate: Gate,
    pub log: slog::Logger,
}

impl DaemonCore {
    pub fn fingerprint(&self) -> Ghid {
        self.identity.ghid()
    }

    /// The largest object every configured remote takes (`None` without remotes).
    pub fn max_object(&self) -> Option<u64> {
        self.remotes.iter().map(|r| r.max_object()).min()
    }

    /// `too_large` unless an object of `len` bytes fits every remote ([`super::limits`]).
    pub fn check_fits(&self, len: usize, what: &str) -> Result<(), DaemonError> {
        super::limits::check(len, self.max_object(), what)
    }

    /// Publishes `bytes` into the local archive (decode, verify, rules) off the event loop.
    /// Not durable until [`Archive::sync`].
    pub async fn ingest(&self, bytes: Vec<u8>) -> Result<Published, PersistError> {
        let archive = self.archive.clone();
        tokio::task::spawn_blocking(move || archive.publish(&bytes))
            .await
            .map_err(|e| PersistError::Storage(format!("ingest task failed: {e}")))?
    }

    /// Our own new objects: ingest each locally in order (a binding before its container),
    /// make them durable, and queue them for every remote (durably) in the same order.
    pub async fn commit_local(&self, objects: Vec<Vec<u8>>) -> Result<(), DaemonError> {
        super::commit::commit(self, objects, None).await
    }

    /// Like [`DaemonCore::ingest`] for bytes from a remote: an unknown signer's GIDC is fetched
    /// from the remotes and ingested first. "Already present" is success.
    pub async fn ingest_fetched(&self, bytes: Vec<u8>) -> Result<Published, DaemonError> {
        match self.ingest(bytes.clone()).await {
            Err(PersistError::UnknownAuthor(_)) => {
                let obj = Object::decode(&bytes, Policy::STRICT).map_err(PersistError::from)?;
                let signer = obj.signer().ok_or_else(|| {
                    DaemonError::NotFound("the identity of an unsigned object".into())
                })?;
                let gidc = self
                    .fetch(&signer)
                    .await
                    .ok_or_else(|| DaemonError::NotFound(format!("identity {signer}")))?;
                self.ingest(gidc).await?;
                Ok(self.ingest(bytes).await?)
            }
            other => Ok(other?),
        }
    }

    /// Raw bytes of `ghid` from the local archive.
    pub fn local(&self, ghid: &Ghid) -> Result<Option<Vec<u8>>, DaemonError> {
        Ok(self.archive.get(ghid)?.map(|b| b.to_vec()))
    }

    /// Raw bytes of `ghid` (a dynamic ghid: its current frame) from the first connected remote
    /// that has it.
    pub async fn fetch(&self, ghid: &Ghid) -> Option<Vec<u8>> {
        for r in &self.remotes {
            if let Some(b) = r.get(ghid).await {
                return Some(b);
            }
        }
        None
    }

    /// Local first, then the remotes (the fetched bytes are ingested locally). A container
    /// nothing binds here yet comes with its static bindings (a container is only accepted
    /// bound).
    pub async fn local_or_fetch(&self, ghid: &Ghid) -> Result<Option<Vec<u8>>, DaemonError> {
        if let Some(b) = self.local(ghid)? {
            return Ok(Some(b));
        }
        match self.fetch(ghid).await {
            Some(b) => match self.ingest_fetched(b.clone()).await {
                Ok(_) => Ok(Some(b)),
                // Deleted here already; the remote has not heard yet.
                Err(DaemonError::Persist(PersistError::AlreadyDebound(_))) => Ok(None),
                Err(DaemonError::Persist(PersistError::UnboundContainer(_))) => {
                    self.fetch_bindings(ghid).await;
                    match self.ingest_fetched(b.clone()).await {
                        Ok(_) => Ok(Some(b)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    }

    /// Fetches and ingests the static bindings (GOBS) the remotes list for `target`.
    async fn fetch_bindings(&self, target: &Ghid) {
        for r in &self.remotes {
            let Some(bindings) = r.bindings(target).await else {
                continue;
            };
            let mut any = false;
            for b in bindings {
                let Some(bytes) = r.get(&b).await else {
                    continue;
                };
                let is_gobs = matches!(
                    Object::decode(&bytes, Policy::STRICT),
                    Ok(Object::Gobs(ref g)) if g.target == *target
                );
                if is_gobs && self.ingest_fetched(bytes).await.is_ok() {
                    any = true;
                }
            }
            if any {
                return;
            }
        }
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

    /// Keeps the dynamic object `ghid` subscribed while the daemon runs, across restarts
    /// (until it is deleted), whether or not an app tracks it.
    pub fn follow(&self, ghid: Ghid) -> Result<(), DaemonError> {
        let mut meta = self.meta(&ghid)?;
        if !meta.followed {
            meta.followed = true;
            self.put_meta(&ghid, &meta)?;
        }
        self.subscribe(ghid);
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

    /// Subscribes `dynamic` upstream on every remote (and catches up on it).
    pub fn subscribe(&self, dynamic: Ghid) {
        for r in &self.remotes {
            r.subscribe(dynamic);
        }
    }

    pub fn unsubscribe(&self, dynamic: Ghid) {
        for r in &self.remotes {
            r.unsubscribe(dynamic);
        }
    }
}
