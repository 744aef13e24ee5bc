//! The durable local commit every change of ours goes through: new objects, push frames,
//! freeze, hold, delete, share requests and answers, the account's root frames.
//!
//! Owns: nothing; the write-ahead log is the [`PublishQueue`](super::publish_queue::PublishQueue)'s staging.
//! Calls: [`Local`] (vault, outbox, archive), [`Upstream::check_fits`] (the remotes' size
//! limit, [`super::limits`]). Used by `commit`, `push`, the account and share actors.

use std::sync::Arc;

use super::error::DaemonError;
use super::local::{Local, SecretRecord};
use super::upstream::Upstream;
use crate::golix::Ghid;
use crate::persist::PersistError;

/// [`commit_now`] off the event loop: one trip to the blocking pool for the whole commit
/// (its two log syncs and the ingest), not one per step, since every hand-off to another
/// thread and back costs two wake-ups (BENCHMARKS.md, "Session 11").
pub async fn commit(
    local: &Arc<Local>,
    upstream: &Upstream,
    objects: Vec<Vec<u8>>,
    secret: Option<(Ghid, SecretRecord)>,
) -> Result<(), DaemonError> {
    let (local, upstream) = (local.clone(), upstream.clone());
    tokio::task::spawn_blocking(move || commit_now(&local, &upstream, objects, secret))
        .await
        .map_err(|e| DaemonError::Storage(format!("commit task failed: {e}")))?
}

/// Makes `objects` (queued for every remote, not yet shown to them) and `secret` durable in
/// the vault, ingests the objects in order and syncs the archive, then releases them upstream.
/// On a local refusal the queue entries and the secret are rolled back. Blocks on two
/// `fdatasync`s: call it off the event loop.
pub fn commit_now(
    local: &Local,
    upstream: &Upstream,
    objects: Vec<Vec<u8>>,
    secret: Option<(Ghid, SecretRecord)>,
) -> Result<(), DaemonError> {
    // The outbox is the commit's write-ahead log. The local archive takes one object at a
    // time and any concurrent sync may flush a binding without its container; so the objects
    // (and the new secret) are made durable in the vault first, replayed into the archive at
    // the next start if a crash cuts the commit short, and shown to the remotes only once the
    // archive has them.
    // Nothing is committed that a remote could not store (it would be acknowledged, then
    // refused upstream): see `limits`.
    for o in &objects {
        let kind = String::from_utf8_lossy(o.get(..4).unwrap_or_default()).to_lowercase();
        upstream.check_fits(o.len(), &format!("this {kind}"))?;
    }
    let restore = match &secret {
        Some((ghid, _)) => Some((*ghid, local.secret(ghid)?)),
        None => None,
    };
    let staged = local.publish_queue.stage(&objects)?;
    if let Some((ghid, record)) = &secret {
        local.put_secret(ghid, record)?;
    }
    local.vault.flush_now()?;
    // No second RSA verify of the signatures we just made (`Archive::publish_own`). A panic
    // in the store is a failed ingest like any other: what was staged is rolled back.
    let own = local.fingerprint();
    let ingest = || {
        objects
            .iter()
            .try_for_each(|o| local.archive.publish_own(o, &own).map(drop))
            .and_then(|()| local.archive.sync_now())
    };
    let ingested = std::panic::catch_unwind(std::panic::AssertUnwindSafe(ingest))
        .unwrap_or_else(|_| Err(PersistError::Storage("the local ingest panicked".into())));
    if let Err(e) = ingested {
        local.publish_queue.unstage(&staged)?;
        if let Some((ghid, Some(old))) = restore {
            local.put_secret(&ghid, &old)?;
        }
        local.vault.flush_now()?;
        return Err(e.into());
    }
    local.publish_queue.release(&staged);
    Ok(())
}
