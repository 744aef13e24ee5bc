//! The push pipeline of one object: each push becomes a [`PushJob`] that builds the next
//! secret, container and frame, signs the container and the frame at once (two RSA
//! signatures on two threads of the signing pool, [`super::golix_worker`]), and commits them
//! on the signing thread that finishes second (one blocking commit, [`durable::commit_now`]).
//!
//! Owns: [`PushJob`], [`Tip`] and the links between successive jobs ([`After`]). Neither a
//! container's address nor a frame's covers its signature (docs/golix.md), so a frame can point
//! at a container that is still being signed, and frame k+1 can be built on frame k while
//! frame k is still being signed or committed: `ObjectActor` starts the next job without
//! waiting for the one before (once the one before has queued its signatures). Commits stay
//! in frame order: a job commits only once its predecessor is durable; when the predecessor fails, the job is [`Pushed::Dropped`] before
//! it writes anything, and the actor queues its pushes again.
//!
//! Calls: [`super::commit`] (the [`Store`], signing helpers, the target vector length),
//! [`super::durable`] (the local commit), [`super::golix_worker`] (the two signatures),
//! `golix`, [`super::content`]. Used by `ObjectActor`.

use tokio::sync::oneshot;

use super::account::StoredSecret;
use super::commit::{self, Committed, Loaded, Store};
use super::content;
use super::durable;
use super::error::DaemonError;
use super::golix_worker;
use super::local::{Local, SecretRecord};
use super::upstream::Upstream;
use crate::golix::{FirstParty, Geoc, Ghid, Gobd, Secret};
use crate::persist::PersistError;

/// States up to this size are encrypted and hashed on the actor's task; larger ones on the
/// blocking pool (a thread hop costs more than a few microseconds of AES and SHA-512).
const BUILD_INLINE_MAX: usize = 64 * 1024;

/// What the next frame is built on: the newest frame (its signature may still be missing),
/// its current container and the secret of that container.
#[derive(Clone)]
pub struct Tip {
    pub frame: Gobd,
    pub container: Ghid,
    pub secret: Secret,
}

impl Tip {
    /// The durable current frame of a dynamic object; `None` for a static one.
    pub fn current(obj: &Loaded) -> Option<Tip> {
        Some(Tip {
            frame: obj.frame.clone()?,
            container: obj.container,
            secret: obj.secret.clone(),
        })
    }
}

/// What a job's frame follows.
pub enum After {
    /// The object's durable current frame: no other job is in flight.
    Durable(Box<Tip>),
    /// The job before, still in flight: its tip once built, and a signal once its frame is
    /// durable (dropped unsent if it is not).
    Job {
        tip: oneshot::Receiver<Tip>,
        durable: oneshot::Receiver<()>,
    },
}

/// How a job ended.
pub enum Pushed {
    /// The frame is durable locally and queued upstream.
    Committed(Box<Committed>),
    Failed(DaemonError),
    /// The job before did not commit, so this one committed nothing either.
    Dropped,
}

/// One frame of one object: built on [`After`], signed, committed in order.
pub struct PushJob {
    ghid: Ghid,
    api_id: Option<Ghid>,
    state: Vec<u8>,
    after: After,
    tip: oneshot::Sender<Tip>,
    durable: oneshot::Sender<()>,
}

/// The objects of one frame, built but not signed.
struct Built {
    geoc: Geoc,
    frame: Gobd,
    secret: Secret,
}

impl PushJob {
    /// A job that pushes `state` as the frame after `after`, and what the job after it
    /// follows.
    pub fn new(ghid: Ghid, api_id: Option<Ghid>, state: Vec<u8>, after: After) -> (Self, After) {
        let (tip, tip_rx) = oneshot::channel();
        let (durable, durable_rx) = oneshot::channel();
        let job = PushJob {
            ghid,
            api_id,
            state,
            after,
            tip,
            durable,
        };
        let next = After::Job {
            tip: tip_rx,
            durable: durable_rx,
        };
        (job, next)
    }

    /// Builds, signs and commits the frame. Returning early drops the links to the next
    /// job, which then ends [`Pushed::Dropped`].
    pub async fn run(self, store: &Store) -> Pushed {
        let (tip, predecessor) = match self.after {
            After::Durable(tip) => (*tip, None),
            After::Job { tip, durable } => match tip.await {
                Ok(tip) => (tip, Some(durable)),
                Err(_) => return Pushed::Dropped,
            },
        };
        let built = match build(store, self.ghid, self.api_id, self.state, tip).await {
            Ok(b) => b,
            Err(e) => return Pushed::Failed(e),
        };
        let next_tip = Tip {
            frame: built.frame.clone(),
            container: built.geoc.ghid,
            secret: built.secret.clone(),
        };
        let Built {
            geoc,
            frame,
            secret,
        } = built;
        let (local, upstream, ghid, durable) = (
            store.local.clone(),
            store.upstream.clone(),
            self.ghid,
            self.durable,
        );
        // Runs on the signing thread that finishes second: no hop back to this task between
        // the signatures and the commit.
        let commit = move |geoc: Geoc, frame: Gobd| {
            if let Some(predecessor) = predecessor {
                // Its signatures were queued before ours and its commit runs on the thread
                // that signed its second half, so this wait cannot hold up that commit.
                if predecessor.blocking_recv().is_err() {
                    return Pushed::Dropped;
                }
            }
            match commit_signed(&local, &upstream, ghid, geoc, frame, secret) {
                Ok(c) => {
                    let _ = durable.send(());
                    Pushed::Committed(Box::new(c))
                }
                Err(e) => Pushed::Failed(e),
            }
        };
        let identity = store.local.identity.clone();
        let done = match golix_worker::submit_pair(identity, geoc, frame, commit).await {
            Ok(done) => done,
            Err(e) => return Pushed::Failed(e),
        };
        // Only now may the next job build on this one: its signatures queue behind ours
        // (see the wait above).
        let _ = self.tip.send(next_tip);
        done.await.unwrap_or_else(Pushed::Failed)
    }
}

/// The next secret, a container with `state` under it, and the frame after `tip` pointing
/// at that container; nothing signed yet.
async fn build(
    store: &Store,
    ghid: Ghid,
    api_id: Option<Ghid>,
    state: Vec<u8>,
    tip: Tip,
) -> Result<Built, DaemonError> {
    let legroom = commit::legroom(store, &tip.frame);
    let inline = state.len() <= BUILD_INLINE_MAX;
    let make = move |id: &FirstParty| {
        let secret = tip.secret.ratchet(&tip.container, &ghid);
        let plain = content::pack(api_id.as_ref(), &state);
        let geoc = id.unsigned_container(&plain, &secret);
        let frame = id.unsigned_next_frame(&tip.frame, geoc.ghid, legroom)?;
        Ok(Built {
            geoc,
            frame,
            secret,
        })
    };
    if inline {
        return make(store.local.identity.as_ref()).map_err(DaemonError::from);
    }
    commit::sign(store, make).await
}

/// Commits a signed frame and its container, and records the new secret (on this thread:
/// [`durable::commit_now`]).
fn commit_signed(
    local: &Local,
    upstream: &Upstream,
    ghid: Ghid,
    geoc: Geoc,
    frame: Gobd,
    secret: Secret,
) -> Result<Committed, DaemonError> {
    let record = SecretRecord {
        stored: StoredSecret {
            secret: secret.clone(),
            container: geoc.ghid,
        },
        counter: frame.counter,
    };
    let committed = durable::commit_now(
        local,
        upstream,
        vec![frame.encode(), geoc.encode()],
        Some((ghid, record)),
    );
    match committed {
        Ok(()) => {}
        // Our frame was stored, then a newer frame of another machine of ours (pulled
        // meanwhile) replaced it before its container was stored: the same lost race as a
        // frame refused outright, so the actor rebuilds on the newer frame.
        Err(DaemonError::Persist(PersistError::UnboundContainer(_))) => {
            return Err(DaemonError::Persist(PersistError::IllegalFrame(format!(
                "frame {} replaced by a newer frame before its container was stored",
                frame.counter
            ))));
        }
        Err(e) => return Err(e),
    }
    Ok(Committed {
        container: geoc.ghid,
        frame,
        secret,
    })
}
