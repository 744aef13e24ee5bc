//! `Upstream`: the configured remotes as one, for everything that fetches from them or
//! (un)subscribes on them: fetch from the first connected remote that has an object, ingest
//! what is fetched (with its signer's identity, or a container with its static bindings), and
//! the size limit every commit checks ([`super::limits`]).
//!
//! Owns: the remotes' [`RemoteHandle`]s (cheap to clone). An `Upstream` of one remote
//! ([`Upstream::one`]) is what a pull fetches a frame's container from: the remote that sent
//! the frame.
//!
//! Calls: [`RemoteHandle`] (fetches straight from the connected client; `Subscribe` and
//! `Unsubscribe` to each `RemoteActor`), [`Local`] (ingest). Used by the account, object,
//! GC, share and remote actors, `commit`, `pull` and `DaemonHandle`.

use std::sync::Arc;

use super::error::DaemonError;
use super::limits;
use super::local::Local;
use super::remote::RemoteHandle;
use crate::golix::{Ghid, Object, Policy, DEFAULT_LEGROOM};
use crate::persist::{PersistError, Published};

/// The remotes (none, one, or all configured). Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    remotes: Arc<[RemoteHandle]>,
}

impl Upstream {
    pub fn new(remotes: Vec<RemoteHandle>) -> Upstream {
        Upstream {
            remotes: remotes.into(),
        }
    }

    /// Only remote `i` (by configuration order).
    pub fn one(&self, i: usize) -> Upstream {
        Upstream::new(self.remotes.get(i).cloned().into_iter().collect())
    }

    pub fn remotes(&self) -> &[RemoteHandle] {
        &self.remotes
    }

    pub fn is_empty(&self) -> bool {
        self.remotes.is_empty()
    }

    /// The URL of the (first) remote, for logs.
    pub fn name(&self) -> &str {
        self.remotes.first().map_or("", |r| r.url())
    }

    /// The first connected remote, alone.
    pub fn first_connected(&self) -> Option<Upstream> {
        let i = self.remotes.iter().position(|r| r.is_connected())?;
        Some(self.one(i))
    }

    /// Whether a remote is disconnected, or more than `DEFAULT_LEGROOM` publishes behind in
    /// its outbox queue (see `commit::legroom`).
    pub fn lagging(&self, local: &Local) -> bool {
        self.remotes.iter().any(|r| !r.is_connected())
            || (0..local.publish_queue.len())
                .any(|q| local.publish_queue.pending(q) > DEFAULT_LEGROOM)
    }

    /// The largest object every configured remote takes (`None` without remotes).
    pub fn max_object(&self) -> Option<u64> {
        self.remotes.iter().map(|r| r.max_object()).min()
    }

    /// `too_large` unless an object of `len` bytes fits every remote ([`super::limits`]).
    pub fn check_fits(&self, len: usize, what: &str) -> Result<(), DaemonError> {
        limits::check(len, self.max_object(), what)
    }

    /// Raw bytes of `ghid` (a dynamic ghid: its current frame) from the first connected
    /// remote that has it.
    pub async fn fetch(&self, ghid: &Ghid) -> Option<Vec<u8>> {
        self.fetch_checked(ghid).await.ok().flatten()
    }

    /// `ghid` from whichever remote answers first with it (all asked at once, where
    /// [`Upstream::fetch`] asks one after another), `None` if none has it; `unavailable` if
    /// `deadline` passes first.
    pub async fn fetch_first(
        &self,
        ghid: &Ghid,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<Vec<u8>>, DaemonError> {
        if self.remotes.is_empty() {
            return Ok(None);
        }
        let asks = self
            .remotes
            .iter()
            .map(|r| Box::pin(async move { r.get(ghid).await.ok_or(()) }));
        let first = futures_util::future::select_ok(asks);
        let answer = match deadline {
            Some(d) => tokio::time::timeout_at(d, first).await.map_err(|_| {
                DaemonError::Unavailable(format!("no remote answered for {ghid} in time"))
            })?,
            None => first.await,
        };
        Ok(answer.ok().map(|(bytes, _)| bytes))
    }

    /// [`Upstream::fetch`] for callers that must not take "could not ask" for "not there":
    /// `Ok(None)` only if every remote answered that it does not have `ghid` (or there are
    /// none); `unavailable_upstream` naming the remotes that could not answer otherwise.
    pub async fn fetch_checked(&self, ghid: &Ghid) -> Result<Option<Vec<u8>>, DaemonError> {
        let mut failed = Vec::new();
        for r in self.remotes.iter() {
            match r.get_checked(ghid).await {
                Ok(Some(b)) => return Ok(Some(b)),
                Ok(None) => {}
                Err(e) => failed.push(e.to_string()),
            }
        }
        match failed.is_empty() {
            true => Ok(None),
            false => Err(unavailable(ghid, &failed)),
        }
    }

    /// Like [`Local::ingest`] for bytes from a remote: an unknown signer's GIDC is fetched
    /// from the remotes and ingested first. "Already present" is success.
    pub async fn ingest_fetched(
        &self,
        local: &Local,
        bytes: Vec<u8>,
    ) -> Result<Published, DaemonError> {
        match local.ingest(bytes.clone()).await {
            Err(PersistError::UnknownAuthor(_)) => {
                let obj = Object::decode(&bytes, Policy::STRICT).map_err(PersistError::from)?;
                let signer = obj.signer().ok_or_else(|| {
                    DaemonError::NotFound("the identity of an unsigned object".into())
                })?;
                let gidc = self
                    .fetch_checked(&signer)
                    .await?
                    .ok_or_else(|| DaemonError::NotFound(format!("identity {signer}")))?;
                local.ingest(gidc).await?;
                Ok(local.ingest(bytes).await?)
            }
            other => Ok(other?),
        }
    }

    /// Local first, then the remotes (the fetched bytes are ingested locally). A container
    /// nothing binds here yet comes with its static bindings (a container is only accepted
    /// bound).
    pub async fn local_or_fetch(
        &self,
        local: &Local,
        ghid: &Ghid,
    ) -> Result<Option<Vec<u8>>, DaemonError> {
        match self.local_or_fetch_checked(local, ghid).await {
            Err(DaemonError::UnavailableUpstream(_)) => Ok(None),
            other => other,
        }
    }

    /// [`Upstream::local_or_fetch`] that answers `unavailable_upstream` rather than "not
    /// there" while a remote that might have it cannot be asked ([`Upstream::fetch_checked`]).
    pub async fn local_or_fetch_checked(
        &self,
        local: &Local,
        ghid: &Ghid,
    ) -> Result<Option<Vec<u8>>, DaemonError> {
        if let Some(b) = local.get(ghid)? {
            return Ok(Some(b));
        }
        match self.fetch_checked(ghid).await? {
            Some(b) => match self.ingest_fetched(local, b.clone()).await {
                Ok(_) => Ok(Some(b)),
                // Deleted here already; the remote has not heard yet.
                Err(DaemonError::Persist(PersistError::AlreadyDebound(_))) => Ok(None),
                Err(DaemonError::Persist(PersistError::UnboundContainer(_))) => {
                    let failed = self.fetch_bindings(local, ghid).await;
                    match self.ingest_fetched(local, b.clone()).await {
                        Ok(_) => Ok(Some(b)),
                        // Its binding may be on a remote that could not be asked.
                        Err(DaemonError::Persist(PersistError::UnboundContainer(_)))
                            if !failed.is_empty() =>
                        {
                            Err(unavailable(ghid, &failed))
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    }

    /// Fetches and ingests the static bindings (GOBS) the remotes list for `target`; the
    /// remotes that could not be asked (why), if none gave one.
    async fn fetch_bindings(&self, local: &Local, target: &Ghid) -> Vec<String> {
        let mut failed = Vec::new();
        for r in self.remotes.iter() {
            let bindings = match r.bindings_checked(target).await {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    failed.push(e.to_string());
                    continue;
                }
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
                if is_gobs && self.ingest_fetched(local, bytes).await.is_ok() {
                    any = true;
                }
            }
            if any {
                return Vec::new();
            }
        }
        failed
    }

    /// Subscribes `dynamic` upstream on every remote (and catches up on it).
    pub fn subscribe(&self, dynamic: Ghid) {
        for r in self.remotes.iter() {
            r.subscribe(dynamic);
        }
    }

    pub fn unsubscribe(&self, dynamic: Ghid) {
        for r in self.remotes.iter() {
            r.unsubscribe(dynamic);
        }
    }

    /// Keeps the dynamic object `ghid` subscribed while the daemon runs, across restarts
    /// (until it is deleted), whether or not an app tracks it.
    pub fn follow(&self, local: &Local, ghid: Ghid) -> Result<(), DaemonError> {
        local.mark_followed(&ghid)?;
        self.subscribe(ghid);
        Ok(())
    }
}

/// `unavailable_upstream` for `ghid`: no remote that answered has it, and these could not be
/// asked.
fn unavailable(ghid: &Ghid, failed: &[String]) -> DaemonError {
    DaemonError::UnavailableUpstream(format!(
        "{ghid}: no remote that answered has it; {}",
        failed.join("; ")
    ))
}
