//! The durable local commit every change of ours goes through: new objects, push frames,
//! freeze, hold, delete, share requests and answers, the account's root frames.
//!
//! Owns: nothing; the write-ahead log is the [`PublishQueue`](super::publish_queue::PublishQueue)'s staging.
//! Calls: [`Local`] (vault, outbox, archive), [`Upstream::check_fits`] (the remotes' size
//! limit, [`super::limits`]). Used by `commit`, `push`, the account and share actors.

use super::error::DaemonError;
use super::local::{Local, SecretRecord};
use super::upstream::Upstream;
use crate::golix::Ghid;
use crate::persist::PersistError;

/// Makes `objects` (queued for every remote, not yet shown to them) and `secret` durable in
/// the vault, ingests the objects in order and syncs the archive, then releases them upstream.
/// On a local refusal the queue entries and the secret are rolled back.
pub async fn commit(
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
    local.vault.flush().await?;
    let ingested = async {
        // One trip to the blocking pool for all of them, and no second RSA verify of the
        // signatures we just made (`Archive::publish_own`).
        let archive = local.archive.clone();
        let own = local.fingerprint();
        tokio::task::spawn_blocking(move || {
            objects
                .iter()
                .try_for_each(|o| archive.publish_own(o, &own).map(drop))
        })
        .await
        .map_err(|e| PersistError::Storage(format!("ingest task failed: {e}")))??;
        local.archive.sync().await?;
        Ok::<(), DaemonError>(())
    };
    if let Err(e) = ingested.await {
        local.publish_queue.unstage(&staged)?;
        if let Some((ghid, Some(old))) = restore {
            local.put_secret(&ghid, &old)?;
        }
        local.vault.flush().await?;
        return Err(e);
    }
    local.publish_queue.release(&staged);
    Ok(())
}
