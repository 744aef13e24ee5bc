//! Pulling upstream changes into the daemon: a frame or debinding that a remote pushed
//! (`notify`), returned by catch-up, or fetched by `sync`.
//!
//! A frame is ingested locally first (already present is fine; a stale frame the rules
//! refuse is dropped), its container is fetched from the same remote when missing, and then
//! the object's live `ObjectActor` decrypts and delivers it. With no live actor, the frame
//! still lands in the local cache and the recorded secret is ratcheted forward, so a later
//! `get` opens it; the same happens when the container is gone upstream already (a newer
//! frame replaced it), so a slow reader keeps the ratchet. A debinding is ingested, then the
//! live actor checks whether the object is gone (it is not if we hold it). GARQs on our
//! fingerprint subscription go to the share actor; debindings there (of requests to us, by
//! another machine of ours) are only ingested.
//!
//! Owns: nothing. Calls: `DaemonCore`, the remote's fetch, the object registry.

use std::sync::Arc;

use super::commit::find_secret;
use super::daemon_core::{DaemonCore, SecretRecord};
use super::error::DaemonError;
use super::object::ObjectMsg;
use super::remote::RemoteHandle;
use crate::golix::{Ghid, Gobd, Object, Policy};
use crate::persist::PersistError;

/// Handles one `notify {subscription, object}` from `from`.
pub async fn notification(
    core: &Arc<DaemonCore>,
    from: &RemoteHandle,
    subscription: Ghid,
    object: Vec<u8>,
) {
    let kind = match Object::decode(&object, Policy::STRICT) {
        Ok(o) => o,
        Err(e) => {
            slog::warn!(core.log, "malformed notification"; "remote" => from.url(), "error" => %e);
            return;
        }
    };
    let result = match kind {
        Object::Gobd(frame) if frame.dynamic == subscription => {
            frame_bytes(core, from, frame, object).await
        }
        Object::Gdxx(_) if subscription == core.fingerprint() => {
            // One of our requests was debound (by another machine of ours): nothing to apply.
            let _ = core.ingest(object).await;
            Ok(())
        }
        Object::Gdxx(_) => removal(core, subscription, object).await,
        Object::Garq(_) => {
            core.share.incoming(object);
            Ok(())
        }
        other => {
            slog::debug!(core.log, "unexpected notification"; "kind" => other.kind().as_str());
            Ok(())
        }
    };
    if let Err(e) = result {
        slog::info!(core.log, "notification not applied"; "subscription" => %subscription, "error" => %e);
    }
}

/// Pulls raw frame bytes (from a catch-up `get` or `sync`).
pub async fn frame(
    core: &Arc<DaemonCore>,
    from: &RemoteHandle,
    bytes: Vec<u8>,
) -> Result<(), DaemonError> {
    match Object::decode(&bytes, Policy::STRICT).map_err(PersistError::from)? {
        Object::Gobd(frame) => frame_bytes(core, from, frame, bytes).await,
        other => Err(DaemonError::BadArgs(format!(
            "expected a frame, got a {}",
            other.kind().as_str()
        ))),
    }
}

/// How often, and how far apart, a pulled frame's container is asked for again while that
/// frame is still the remote's current one.
const CONTAINER_RETRIES: usize = 40;
const CONTAINER_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The container of `frame` from `from`. The binding travels before its container, so a
/// reader can see a frame a moment before its container is there: while the remote's current
/// frame is still `frame`, ask again (bounded: about 2 s). `None` once it was replaced
/// upstream (or never arrives), so the caller only ratchets past it.
async fn fetch_container(from: &RemoteHandle, frame: &Gobd) -> Option<Vec<u8>> {
    for _ in 0..CONTAINER_RETRIES {
        if let Some(b) = from.get(&frame.target()).await {
            return Some(b);
        }
        let current = from.get(&frame.dynamic).await?;
        let still_current = Object::decode(&current, Policy::STRICT)
            .ok()
            .is_some_and(|o| o.ghid() == frame.frame);
        if !still_current {
            return None;
        }
        tokio::time::sleep(CONTAINER_RETRY_PAUSE).await;
    }
    None
}

async fn frame_bytes(
    core: &Arc<DaemonCore>,
    from: &RemoteHandle,
    frame: Gobd,
    bytes: Vec<u8>,
) -> Result<(), DaemonError> {
    match core.ingest_fetched(bytes).await {
        Ok(_) => {}
        Err(DaemonError::Persist(PersistError::IllegalFrame(_))) => return Ok(()), // stale
        Err(e) => return Err(e),
    }
    let target = frame.target();
    let container = match core.local(&target)? {
        Some(b) => b,
        None => {
            let Some(b) = fetch_container(from, &frame).await else {
                // Replaced upstream already; the newer frame is on its way. Its secret still
                // ratchets along this frame's targets, so a reader that falls behind by
                // more than a frame's target vector (7) never loses the chain.
                slog::debug!(core.log, "container of a pulled frame is gone"; "ghid" => %frame.dynamic);
                return advance_secret(core, &frame.dynamic, &frame).await;
            };
            core.ingest_fetched(b.clone()).await?;
            b
        }
    };
    let Object::Geoc(container) =
        Object::decode(&container, Policy::STRICT).map_err(PersistError::from)?
    else {
        return Err(DaemonError::BadArgs(format!("{target} is not a container")));
    };
    let dynamic = frame.dynamic;
    if let Some(actor) = core.objects.get(&dynamic) {
        let msg = ObjectMsg::Pulled(Box::new((frame.clone(), container)));
        if actor.send(msg).await {
            return Ok(());
        }
    }
    advance_secret(core, &dynamic, &frame).await
}

/// Ratchets the recorded secret forward to `frame`'s target, so it keeps up with frames
/// whose state is not applied (no live actor, or the container is gone already).
async fn advance_secret(
    core: &DaemonCore,
    dynamic: &Ghid,
    frame: &Gobd,
) -> Result<(), DaemonError> {
    let Some(old) = core.secret(dynamic)? else {
        return Ok(());
    };
    if old.counter >= frame.counter {
        return Ok(());
    }
    if let Some(secret) = find_secret(core, dynamic, frame).await {
        let record = SecretRecord {
            stored: super::account::StoredSecret {
                secret,
                container: frame.target(),
            },
            counter: frame.counter,
        };
        core.put_secret(dynamic, &record)?;
    }
    Ok(())
}

async fn removal(
    core: &Arc<DaemonCore>,
    subscription: Ghid,
    object: Vec<u8>,
) -> Result<(), DaemonError> {
    match core.ingest_fetched(object).await {
        Ok(_) | Err(DaemonError::Persist(PersistError::AlreadyDebound(_))) => {}
        Err(e) => return Err(e),
    }
    core.archive.sync().await?;
    match core.objects.get(&subscription) {
        Some(actor) => {
            actor.send(ObjectMsg::Removed).await;
        }
        None => core.gc.deleted(subscription),
    }
    Ok(())
}
