//! What an `ObjectActor` does with changes made elsewhere: another machine's frames
//! ([`Pulled`](super::Pulled), including one that won a race against ours), removals, and
//! catching up with the local archive after a frame of ours was refused there.

use actix::prelude::*;

use super::{ObjectActor, SyncId, SYNC_FAILURES};
use crate::actors::api::{AppEvent, AppId};
use crate::actors::commit::{self, Store};
use crate::actors::error::DaemonError;
use crate::actors::gc::Deleted;
use crate::golix::{Geoc, Ghid, Gobd, Object, Policy};
use crate::persist::PersistError;

/// The largest container a pulled frame is opened with on the actor's own thread; a larger
/// one is decrypted on the runtime, so that other actors of the arbiter are not held up.
const OPEN_HERE_MAX: usize = 64 << 10;

/// `bytes` as a frame.
fn as_frame(bytes: Vec<u8>) -> Option<Gobd> {
    match Object::decode(&bytes, Policy::STRICT) {
        Ok(Object::Gobd(f)) => Some(f),
        _ => None,
    }
}

impl ObjectActor {
    /// Applies another machine's frame: a newer one, or one with our counter that won the
    /// race upstream against ours (pull only sends those; ours can never reach the remote, so
    /// both machines show the remote's and our next frame follows it). How it went is kept
    /// for the `syncs` that pulled it (see [`super::Settled`]); a frame with nothing new
    /// leaves them as they were.
    pub(super) fn pulled(
        &mut self,
        frame: Gobd,
        container: Geoc,
        syncs: Vec<SyncId>,
        ctx: &mut Context<Self>,
    ) {
        let Some(current) = &self.obj.frame else {
            return;
        };
        let newer = frame.counter > current.counter;
        let won_race = frame.counter == current.counter && frame.frame != current.frame;
        if frame.dynamic != self.obj.ghid || !(newer || won_race) {
            return;
        }
        let mut known = self.known.clone();
        if won_race && frame.targets.get(1) == current.targets.get(1) {
            // Two frames on the same predecessor share its ratcheted secret: this one opens
            // even when ours is all we know (after a restart). Tried last.
            known.insert(0, (frame.target(), self.obj.secret.clone()));
        }
        // A secret we know ratchets to it (the usual case): a small container opens here, in
        // microseconds, with no round trip through the daemon's runtime and back (two thread
        // wake-ups on the way to the apps, BENCHMARKS.md "Session 14").
        if container.payload.len() <= OPEN_HERE_MAX {
            if let Some(opened) = commit::open_ratcheted(&self.obj, &known, &frame, &container) {
                let failure = self.apply_pulled(opened.map(Some), frame, container.ghid, newer);
                self.sync_outcome(&syncs, failure);
                return;
            }
        }
        let store = self.peers.store.clone();
        let obj = self.obj.without_state();
        let work = async move {
            let opened = commit::open_pulled(&store, &obj, &known, &frame, &container).await;
            (opened, frame, container)
        };
        // Until it is applied, a failure for its syncs: if the work dies, they are told.
        let unfinished =
            DaemonError::Unavailable(format!("{}: a pulled frame was not applied", self.obj.ghid));
        self.sync_outcome(&syncs, Some(unfinished));
        self.run_alone(ctx, work, move |(opened, frame, container), act, _| {
            let failure = act.apply_pulled(opened, frame, container.ghid, newer);
            act.sync_outcome(&syncs, failure);
        });
    }

    /// Records how applying a frame went for the `syncs` that pulled it.
    fn sync_outcome(&mut self, syncs: &[SyncId], failure: Option<DaemonError>) {
        if syncs.is_empty() {
            return;
        }
        self.sync_failures.retain(|(s, _)| !syncs.contains(s));
        let Some(e) = failure else { return };
        for s in syncs {
            if self.sync_failures.len() >= SYNC_FAILURES {
                self.sync_failures.pop_front();
            }
            self.sync_failures.push_back((*s, e.clone()));
        }
    }

    /// Takes the failure kept for `sync`, if any.
    pub(super) fn sync_failure(&mut self, sync: SyncId) -> Option<DaemonError> {
        let i = self.sync_failures.iter().position(|(s, _)| *s == sync)?;
        self.sync_failures.remove(i).map(|(_, e)| e)
    }

    /// Applies an opened frame; why it was not, if it was not.
    pub(super) fn apply_pulled(
        &mut self,
        opened: Result<Option<commit::Opened>, DaemonError>,
        frame: Gobd,
        container: Ghid,
        newer: bool,
    ) -> Option<DaemonError> {
        match opened {
            Ok(Some((secret, api_id, state))) => {
                self.obj.pulled(frame, container, secret, api_id, state);
                self.remember_known();
                if newer {
                    // At an equal counter the local archive keeps our frame (and the recorded
                    // secret opens it) until the next frame replaces it.
                    commit::remember_secret(&self.peers.store, &self.obj);
                }
                self.broadcast(None);
                None
            }
            Ok(None) => {
                let e = DaemonError::UnknownSecret(format!(
                    "{}: no secret ratchets to frame {}",
                    self.obj.ghid, frame.counter
                ));
                slog::warn!(self.peers.store.local.log, "cannot decrypt an update"; "error" => %e);
                Some(e)
            }
            Err(e) => {
                slog::warn!(self.peers.store.local.log, "cannot open an update";
                    "ghid" => %self.obj.ghid, "error" => %e);
                Some(e)
            }
        }
    }

    /// The object may be gone: if it no longer exists locally (nobody of ours holds it),
    /// every tracker but `skip` gets `Delete` and the actor retires.
    pub(super) fn removed(&mut self, skip: Option<AppId>) {
        match self.peers.store.local.archive.exists(&self.obj.ghid) {
            Ok(true) => {
                if let Some(app) = skip {
                    self.trackers.remove(&app);
                    self.peers.apps.untrack(app, &self.obj.ghid);
                }
                return;
            }
            Ok(false) => {}
            Err(e) => {
                slog::warn!(self.peers.store.local.log, "cannot check a removal"; "error" => %e);
                return;
            }
        }
        for app in self.trackers.drain() {
            self.peers.apps.untrack(app, &self.obj.ghid);
            if Some(app) != skip {
                let _ = self.peers.apps.send(app, AppEvent::Delete(self.obj.ghid));
            }
        }
        if let Some(gc) = self.peers.gc.upgrade() {
            gc.do_send(Deleted(self.obj.ghid));
        }
    }
}

/// The local archive's current frame of `ghid` if it is newer than `counter` (a frame of ours
/// was refused locally because of it), and its container: from the local archive, else the
/// remotes; if it is gone upstream already, the remotes' current frame instead.
pub(super) async fn catch_up_local(store: Store, ghid: Ghid, counter: u64) -> Option<(Gobd, Geoc)> {
    let frame = store.local.get(&ghid).ok().flatten().and_then(as_frame)?;
    if frame.counter <= counter {
        return None;
    }
    let container = match store.local_or_fetch(&frame.target()).await {
        Ok(Some(b)) => Some((frame, b)),
        _ => newer_upstream(&store, ghid, frame).await,
    };
    let Some((frame, container)) = container else {
        slog::info!(store.local.log, "cannot catch up with the local archive"; "ghid" => %ghid);
        return None;
    };
    match Object::decode(&container, Policy::STRICT) {
        Ok(Object::Geoc(c)) => Some((frame, c)),
        _ => {
            slog::warn!(store.local.log, "a frame's target is not a container"; "ghid" => %ghid);
            None
        }
    }
}

/// The remotes' current frame of `ghid`, if newer than `than` (ingested), and its container.
async fn newer_upstream(store: &Store, ghid: Ghid, than: Gobd) -> Option<(Gobd, Vec<u8>)> {
    let bytes = store.fetch(&ghid).await?;
    let frame =
        as_frame(bytes.clone()).filter(|f| f.dynamic == ghid && f.counter > than.counter)?;
    match store.ingest_fetched(bytes).await {
        Ok(_) | Err(DaemonError::Persist(PersistError::IllegalFrame(_))) => {}
        Err(_) => return None,
    }
    let container = store.local_or_fetch(&frame.target()).await.ok()??;
    Some((frame, container))
}
