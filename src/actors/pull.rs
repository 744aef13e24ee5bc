//! Pulling upstream changes into the daemon: a frame or debinding that a remote pushed
//! (`notify`), returned by catch-up, or fetched by `sync`.
//!
//! A frame is ingested locally first (already present is fine), its container is fetched
//! from the same remote when missing (while the frame is being ingested: a remote announces
//! a frame only once its container is stored), and then the object's live `ObjectActor`
//! decrypts and delivers it. With no live actor, the frame still lands in the local cache and the recorded
//! secret is ratcheted forward, so a later `get` opens it; the same happens when the
//! container is gone upstream already (a newer frame replaced it and is on its way). A stale
//! frame the rules refuse is dropped, unless it has the counter of our own current frame:
//! then ours lost a race upstream with another machine of ours, and the live actor takes the
//! remote's frame (see `lost_race`). A debinding is ingested, then the live actor checks whether the object is gone (it is not if we hold it). GARQs on our
//! fingerprint subscription go to the share actor; debindings there (of requests to us, by
//! another machine of ours) are only ingested.
//!
//! Owns: nothing. Runs in the caller's task (it spawns one task of its own: the redelivery
//! of share requests a full inbox refused): each `RemoteActor`'s pull worker, and
//! `DaemonHandle` (`sync`, the quiet pull when an object loads). Reaches ([`Puller`]): the
//! [`Store`] (ingest, fetch, secrets), the live objects through the object registry, held
//! weakly ([`Pulled`], [`Removed`]), the `GcActor` ([`Deleted`]) and the `ShareActor`
//! ([`ShareInbox`]); the remote a frame came from is an [`Upstream`] of one.

use std::sync::Weak;

use actix::WeakRecipient;

use super::commit::{find_secret, Store};
use super::error::DaemonError;
use super::gc::Deleted;
use super::local::SecretRecord;
use super::object::{ObjectHandle, ObjectRegistry, Pulled, Removed, SyncId};
use super::share::{Offered, ShareInbox};
use super::upstream::Upstream;
use crate::golix::{Ghid, Gobd, Object, Policy};
use crate::persist::PersistError;

/// What pulling reaches. Cheap to clone.
#[derive(Clone)]
pub struct Puller {
    pub store: Store,
    pub objects: Weak<ObjectRegistry>,
    /// Weak, like every link to an actor `DaemonHandle` owns.
    pub gc: WeakRecipient<Deleted>,
    pub share: ShareInbox,
}

impl Puller {
    /// The live actor of `ghid`, if any.
    fn live(&self, ghid: &Ghid) -> Option<ObjectHandle> {
        self.objects.upgrade().and_then(|o| o.get(ghid))
    }
}

/// Handles one `notify {subscription, object}` from `from`.
pub async fn notification(puller: &Puller, from: &Upstream, subscription: Ghid, object: Vec<u8>) {
    let kind = match Object::decode(&object, Policy::STRICT) {
        Ok(o) => o,
        Err(e) => {
            slog::warn!(puller.store.local.log, "malformed notification"; "remote" => from.name(), "error" => %e);
            return;
        }
    };
    let result = match kind {
        Object::Gobd(frame) if frame.dynamic == subscription => {
            frame_bytes(puller, from, frame, object, None).await
        }
        Object::Gdxx(_) if subscription == puller.store.fingerprint() => {
            // One of our requests was debound (by another machine of ours): nothing to apply.
            let _ = puller.store.local.ingest(object).await;
            Ok(())
        }
        Object::Gdxx(_) => removal(puller, subscription, object).await,
        Object::Garq(_) => {
            if puller.share.offer(object) == (Offered::Refused { first: true }) {
                slog::warn!(puller.store.local.log, "share requests arrive faster than they are handled; those not taken wait on the remotes";
                    "remote" => from.name(), "waiting" => super::share::MAX_QUEUED);
                redeliver_requests(puller);
            }
            Ok(())
        }
        other => {
            slog::debug!(puller.store.local.log, "unexpected notification"; "kind" => other.kind().as_str());
            Ok(())
        }
    };
    if let Err(e) = result {
        slog::info!(puller.store.local.log, "notification not applied"; "subscription" => %subscription, "error" => %e);
    }
}

/// How long after a run of refused share requests the inbox may take to empty before they
/// are asked for again anyway, and the least time before they are (so that a flood that goes
/// on costs a redelivery every so often, not one per request handled).
const REDELIVER_AFTER_AT_MOST: std::time::Duration = std::time::Duration::from_secs(600);
const REDELIVER_AFTER_AT_LEAST: std::time::Duration = std::time::Duration::from_secs(5);

/// Once the share inbox has emptied after refusing requests, every remote is asked to
/// deliver our stored mail again (a new subscription of our fingerprint), so the refused
/// ones are handled without waiting for a reconnect. Those handled meanwhile were debound,
/// so they do not come back. One such task at a time; after shutdown has begun it asks
/// nothing (it holds no gate pass: shutdown does not wait for it).
fn redeliver_requests(puller: &Puller) {
    if !puller.share.claim_redelivery() {
        return;
    }
    let (share, store) = (puller.share.clone(), puller.store.clone());
    store.local.runtime.clone().spawn(async move {
        tokio::time::sleep(REDELIVER_AFTER_AT_LEAST).await;
        share.emptied(REDELIVER_AFTER_AT_MOST).await;
        share.redelivered();
        if store.local.gate.is_closed() {
            return;
        }
        let fingerprint = store.fingerprint();
        let asked = store.upstream.remotes().iter().map(|r| async {
            match r.resubscribe(&fingerprint).await {
                Ok(()) => slog::info!(store.local.log, "share requests asked for again"; "remote" => r.url()),
                Err(e) => slog::warn!(store.local.log, "cannot ask for share requests again; they come with the next connection";
                    "remote" => r.url(), "error" => %e),
            }
        });
        futures_util::future::join_all(asked).await;
    });
}

/// Pulls raw frame bytes (from a catch-up `get` or `sync`); `sync` names the sync that pulls
/// them (the live actor keeps how applying them went for it).
pub async fn frame(
    puller: &Puller,
    from: &Upstream,
    bytes: Vec<u8>,
    sync: Option<SyncId>,
) -> Result<(), DaemonError> {
    match Object::decode(&bytes, Policy::STRICT).map_err(PersistError::from)? {
        Object::Gobd(frame) => frame_bytes(puller, from, frame, bytes, sync).await,
        other => Err(DaemonError::BadArgs(format!(
            "expected a frame, got a {}",
            other.kind().as_str()
        ))),
    }
}

/// How often, and how far apart, a pulled frame's container is asked for again while that
/// frame is still the remote's current one: 1 ms doubling to 50 ms (the container is usually
/// a publish behind its frame, a millisecond or two), about 1.8 s in all.
const CONTAINER_RETRIES: usize = 40;
const CONTAINER_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(1);
const CONTAINER_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The container of `frame` from `from`. The binding travels before its container, so a
/// reader can see a frame a moment before its container is there: while the remote's current
/// frame is still `frame`, ask again (bounded: about 2 s). `None` once it was replaced
/// upstream (or never arrives), so the caller only ratchets past it.
async fn fetch_container(from: &Upstream, frame: &Gobd) -> Option<Vec<u8>> {
    let mut pause = CONTAINER_RETRY_FIRST;
    for _ in 0..CONTAINER_RETRIES {
        if let Some(b) = from.fetch(&frame.target()).await {
            return Some(b);
        }
        let current = from.fetch(&frame.dynamic).await?;
        let still_current = Object::decode(&current, Policy::STRICT)
            .ok()
            .is_some_and(|o| o.ghid() == frame.frame);
        if !still_current {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(CONTAINER_RETRY_PAUSE);
    }
    None
}

/// How one pulled frame went.
enum Pull {
    /// Delivered to the live actor, or recorded for a later `get`.
    Done,
    /// Its container is gone upstream: a newer frame replaced it.
    ContainerGone,
}

/// Pulls one frame. When its container was replaced upstream before we fetched it, the newer
/// frame is on its way (its notification follows); only the recorded secret moves forward
/// along this frame's targets, one frame at a time, so a reader that falls behind never loses
/// the chain. (Jumping to the remote's current frame instead can put it more than a target
/// vector (7) ahead of the secret a recipient holds: `tests/crash_kill.rs` caught that.)
async fn frame_bytes(
    puller: &Puller,
    from: &Upstream,
    frame: Gobd,
    bytes: Vec<u8>,
    sync: Option<SyncId>,
) -> Result<(), DaemonError> {
    match pull_one(puller, from, &frame, bytes, sync).await? {
        Pull::Done => Ok(()),
        Pull::ContainerGone => {
            slog::debug!(puller.store.local.log, "container of a pulled frame is gone";
                "ghid" => %frame.dynamic, "counter" => frame.counter);
            advance_secret(&puller.store, &frame.dynamic, &frame).await
        }
    }
}

async fn pull_one(
    puller: &Puller,
    from: &Upstream,
    frame: &Gobd,
    bytes: Vec<u8>,
    sync: Option<SyncId>,
) -> Result<Pull, DaemonError> {
    let target = frame.target();
    let local = puller.store.local.get(&target)?;
    // A remote announces a frame once its container is stored: a container we lack is asked
    // for while the frame is being verified and ingested, not after. The request goes first:
    // polled second, it woke the remote's actor after the verify thread, often onto the
    // core that thread had taken, and the request left only once the verify was done
    // (~230 µs later in the daemon-level trace, BENCHMARKS.md "Session 14").
    let (ingested, prefetched) = match local {
        Some(_) => (puller.store.ingest_fetched(bytes).await, None),
        None => {
            let (p, i) = tokio::join!(from.fetch(&target), puller.store.ingest_fetched(bytes));
            (i, p)
        }
    };
    match ingested {
        Ok(_) => {}
        Err(DaemonError::Persist(PersistError::IllegalFrame(_))) => {
            return lost_race(puller, from, frame, prefetched, sync)
                .await
                .map(|()| Pull::Done)
        }
        Err(e) => return Err(e),
    }
    let container = match (local, prefetched) {
        (Some(b), _) => b,
        (None, fetched) => {
            let fetched = match fetched {
                Some(b) => Some(b),
                None => fetch_container(from, frame).await,
            };
            let Some(b) = fetched else {
                return Ok(Pull::ContainerGone);
            };
            puller.store.ingest_fetched(b.clone()).await?;
            b
        }
    };
    let Object::Geoc(container) =
        Object::decode(&container, Policy::STRICT).map_err(PersistError::from)?
    else {
        return Err(DaemonError::BadArgs(format!("{target} is not a container")));
    };
    let dynamic = frame.dynamic;
    if let Some(actor) = puller.live(&dynamic) {
        // Awaited (not told): while the actor is busy with an exclusive operation the puller
        // waits here, so a fast remote cannot fill its mailbox (README, daemon-side limits).
        if actor
            .ask(Pulled(Box::new((frame.clone(), container)), sync))
            .await
            .is_ok()
        {
            return Ok(Pull::Done);
        }
    }
    advance_secret(&puller.store, &dynamic, frame).await?;
    Ok(Pull::Done)
}

/// A frame the local archive refuses as stale. An older one is superseded and dropped. One
/// with the counter of our own current frame is a fork: another machine of ours made a frame
/// on the same predecessor, and the remote took theirs, so ours can never reach it (the
/// remote refuses it as stale). The live actor then takes the remote's frame in memory
/// (`object::Pulled` at an equal counter), so both machines show the same state and our
/// next frame follows the remote's chain, which the other machine can open. The local
/// archive keeps our frame until the next one replaces it, so the frame and its container
/// (unbound here) are verified before they are used; the container is the one fetched with
/// the frame when there is one.
async fn lost_race(
    puller: &Puller,
    from: &Upstream,
    frame: &Gobd,
    prefetched: Option<Vec<u8>>,
    sync: Option<SyncId>,
) -> Result<(), DaemonError> {
    let Some(actor) = puller.live(&frame.dynamic) else {
        return Ok(());
    };
    let ours = match puller.store.local.get(&frame.dynamic)? {
        Some(b) => match Object::decode(&b, Policy::STRICT) {
            Ok(Object::Gobd(f)) => f,
            _ => return Ok(()),
        },
        None => return Ok(()),
    };
    if ours.counter != frame.counter || ours.frame == frame.frame {
        return Ok(());
    }
    let signer = puller.store.local.identity.second_party();
    Object::Gobd(frame.clone())
        .verify(Some(signer))
        .map_err(PersistError::VerificationFailed)?;
    let fetched = match prefetched {
        Some(b) => Some(b),
        None => fetch_container(from, frame).await,
    };
    let Some(bytes) = fetched else {
        return Ok(()); // replaced upstream already: the newer frame is on its way
    };
    let container = match Object::decode(&bytes, Policy::STRICT).map_err(PersistError::from)? {
        Object::Geoc(c) if c.ghid == frame.target() => c,
        _ => {
            return Err(DaemonError::BadArgs(format!(
                "{} is not a container",
                frame.target()
            )))
        }
    };
    Object::Geoc(container.clone())
        .verify(Some(signer))
        .map_err(PersistError::VerificationFailed)?;
    slog::info!(puller.store.local.log, "a frame of ours lost a race upstream; taking the remote's";
        "ghid" => %frame.dynamic, "counter" => frame.counter);
    let _ = actor
        .ask(Pulled(Box::new((frame.clone(), container)), sync))
        .await;
    Ok(())
}

/// Ratchets the recorded secret forward to `frame`'s target, so it keeps up with frames
/// whose state is not applied (no live actor, or the container is gone already).
async fn advance_secret(store: &Store, dynamic: &Ghid, frame: &Gobd) -> Result<(), DaemonError> {
    let Some(old) = store.local.secret(dynamic)? else {
        return Ok(());
    };
    if old.counter >= frame.counter {
        return Ok(());
    }
    if let Some(secret) = find_secret(store, dynamic, frame).await {
        let record = SecretRecord {
            stored: super::account::StoredSecret {
                secret,
                container: frame.target(),
            },
            counter: frame.counter,
        };
        store.local.put_secret(dynamic, &record)?;
    }
    Ok(())
}

async fn removal(puller: &Puller, subscription: Ghid, object: Vec<u8>) -> Result<(), DaemonError> {
    match puller.store.ingest_fetched(object).await {
        Ok(_) | Err(DaemonError::Persist(PersistError::AlreadyDebound(_))) => {}
        Err(e) => return Err(e),
    }
    puller.store.local.archive.sync().await?;
    match puller.live(&subscription) {
        Some(actor) => {
            actor.tell(Removed);
        }
        None => {
            if let Some(gc) = puller.gc.upgrade() {
                gc.do_send(Deleted(subscription));
            }
        }
    }
    Ok(())
}
