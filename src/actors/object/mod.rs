//! `ObjectActor`: one actix actor per live object (alive while any app tracks it), its
//! messages, and the registry that finds it by ghid. Here: the actor, its messages and
//! handlers and the operations on the current container; `pushes`: running its pushes;
//! `sync`: changes from elsewhere (pulled frames, removals, catch-up); `registry`: the
//! registry, the handle callers hold and the actor's peers.
//!
//! Owns: the decrypted state, the current frame, the current secret and the container it
//! opens, and the set of tracking apps. Handles push (pipelined and coalescing: up to
//! [`PIPELINE`] frames are in flight, the next one signed while the one before is signed or
//! committed, commits in frame order; further pushes wait, the next frame carries the latest
//! waiting state, and every waiting push completes once a frame with its state or a newer one
//! is durable), pulled frames, removal, freeze, hold and delete. Operations that depend on the
//! current container (freeze, hold, delete, pulls) wait until no push is in flight (no new
//! frame starts meanwhile), so they never race the frame that replaces it. Another machine of
//! the account may push the same object at once: a frame of ours refused locally (theirs came
//! first) is rebuilt on theirs, read back from the local archive if no pull brings it; a frame
//! of ours the remote refused (theirs, same counter, came first) is replaced in memory by
//! theirs ([`Pulled`] at an equal counter); the secrets of recent frames are kept so a frame
//! that follows an older one than ours still opens. Latest frame upstream wins.
//!
//! Messages (each a type with one `Handler`): [`Track`], [`Untrack`], [`View`], [`Push`],
//! [`Settled`], [`Freeze`], [`Hold`], [`Delete`] and [`Stop`] from `DaemonHandle`; [`Pulled`]
//! and [`Removed`] from [`super::pull`]; [`Current`] from [`super::share`]. A `sync` names
//! itself ([`SyncId`]) in the frames it pulls and in its [`Settled`], which answers how
//! applying those frames went (and nothing else).
//!
//! How it runs: the actor lives on one of the daemon's arbiters ([`super::arbiters`]) and
//! decides; the slow work runs elsewhere (the signing pool, the daemon's tokio runtime). Each
//! frame is a [`PushJob`](super::push::PushJob) run as an actor future (`ctx.spawn`): it
//! builds and encrypts the frame here and hands its signatures and commit to the signing
//! pool, which answers this thread; frames end in order. An operation on the current
//! container runs alone: `ctx.wait` holds the mailbox until it is done; asked while frames
//! are in flight, it is queued (with its reply) until the pipeline is empty. A pulled frame
//! that a known secret ratchets to, with a small container, is opened here at once (no I/O,
//! microseconds of AES; `sync.rs`); otherwise its opening is such an operation.
//!
//! Peers ([`ObjectPeers`], set when the registry starts the actor): the `Store` (local
//! state, remotes, the `AccountActor`: `RecordSecret`, `MakePublic`), the app registry
//! (trackers, `Update`/`Delete` events), the `GcActor` as a `WeakRecipient<Deleted>`, and the
//! registry itself, held weakly (it holds the actor's address) to leave it on retiring.
//! Calls: [`super::push`] (building, signing and committing frames), [`super::commit`]
//! (loading, freeze, hold, delete).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::api::{AppEvent, AppId, ObjectView};
use super::commit::{self, Loaded};
use super::error::DaemonError;
use super::push::{After, Pushed};
use crate::golix::{Geoc, Ghid, Gobd, Secret};

mod pushes;
mod registry;
mod sync;

pub use registry::{ObjectHandle, ObjectPeers, ObjectRegistry};

/// Queue length of one object's mailbox.
const MAILBOX: usize = 256;
/// Times a push is rebuilt on a newer frame after losing a race with another machine.
const PUSH_RETRIES: u32 = 3;
/// (container, secret) pairs of the object's recent frames kept to open another machine's
/// frame that follows an older frame than ours (its target vector holds the common one).
const KNOWN_SECRETS: usize = 32;
/// Outcomes of failed pulls kept for the `sync`s that pulled them, until their [`Settled`]
/// asks (one per sync; past it the oldest is forgotten, and its sync answers the view).
const SYNC_FAILURES: usize = 64;
/// Frames of one object in flight at once: one committing while the next is signed (each
/// frame's two signatures already run on two threads; more would only queue for the cores).
pub const PIPELINE: usize = 2;

/// Adds a tracker; `None` if the actor is retiring (load it again).
#[derive(Message)]
#[rtype(result = "Option<ObjectView>")]
pub struct Track {
    pub app: AppId,
}

/// Local discard: removes one tracker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Untrack {
    pub app: AppId,
}

/// The current view.
#[derive(Message)]
#[rtype(result = "ObjectView")]
pub struct View;

/// New state from `app`; answered once a frame holding it (or a newer one) is durable.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct Push {
    pub app: AppId,
    pub state: Vec<u8>,
    pub private: Option<bool>,
}

/// Names one `sync` call in the frames it pulls and in its [`Settled`].
pub type SyncId = u64;

/// A new [`SyncId`], unique in the process.
pub fn new_sync() -> SyncId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A newer frame and its container, already ingested locally (boxed: signatures make them
/// large), and the `sync` that pulled it, if one did.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pulled(pub Box<(Gobd, Geoc)>, pub Option<SyncId>);

/// A debinding of this object was ingested locally.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Removed;

/// Our static binding on the current container; answers the container's ghid.
#[derive(Message)]
#[rtype(result = "Result<Ghid, DaemonError>")]
pub struct Freeze;

/// Our own binding on the object.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct Hold;

/// Deletes the object everywhere (asked by `app`, whose tracker is dropped quietly).
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct Delete {
    pub app: AppId,
}

/// The view once the operations queued before this one (pulled frames included) are done;
/// an error if the last frame this `sync` pulled (or a newer one that took its place while
/// they waited) could not be applied. A frame with nothing new, or that never reached the
/// object, is no failure; nor is another pull's.
#[derive(Message)]
#[rtype(result = "Result<ObjectView, DaemonError>")]
pub struct Settled(pub SyncId);

/// The object's ghid and the secret of its current container (what a share hands over).
/// Answered once no push is in flight; `None` if the actor stopped first.
#[derive(Message)]
#[rtype(result = "Option<(Ghid, Secret)>")]
pub struct Current;

/// Stop now (shutdown; no push is in flight by then).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl ObjectActor {
    fn new(
        peers: ObjectPeers,
        registry: Weak<ObjectRegistry>,
        loaded: Loaded,
        id: u64,
        app: AppId,
    ) -> ObjectActor {
        let mut actor = ObjectActor {
            peers,
            registry,
            obj: loaded,
            id,
            trackers: HashSet::from([app]),
            held: None,
            deferred: VecDeque::new(),
            exclusive: false,
            waiting: Vec::new(),
            latest: None,
            pushes: 0,
            frames: 0,
            in_flight: VecDeque::with_capacity(PIPELINE),
            newest_private: None,
            draining: false,
            retries: 0,
            resync: false,
            known: Vec::new(),
            sync_failures: VecDeque::new(),
        };
        actor.remember_known();
        actor
    }
}

/// A push waiting for a durable frame.
type Waiter = oneshot::Sender<Result<(), DaemonError>>;

/// The newest state waiting to be pushed.
struct Latest {
    state: Vec<u8>,
    private: bool,
    app: AppId,
    /// Arrival order of the push (the newer of two states wins when jobs are requeued).
    seq: u64,
}

/// One frame in flight.
struct InFlight {
    /// Start order of the frame (frames end in this order).
    no: u64,
    /// How its job ended, once it has.
    done: Option<Pushed>,
    waiters: Vec<Waiter>,
    latest: Latest,
    /// What the job after this one follows; taken when it starts.
    next: Option<After>,
}

/// An operation on the current container: it runs alone (`ctx.wait`), once no frame is in
/// flight. Queued with its reply while frames are.
enum Exclusive {
    /// A pulled frame and the syncs that pulled it (or a frame it took the place of).
    Pulled(Box<(Gobd, Geoc)>, Vec<SyncId>),
    Removed,
    Current(oneshot::Sender<Option<(Ghid, Secret)>>),
    Settled(SyncId, oneshot::Sender<Result<ObjectView, DaemonError>>),
    Freeze(oneshot::Sender<Result<Ghid, DaemonError>>),
    Hold(oneshot::Sender<Result<(), DaemonError>>),
    Delete(AppId, oneshot::Sender<Result<(), DaemonError>>),
    /// Catch up with the local archive after a frame of ours was refused locally.
    CatchUp,
}

/// Pulled frames waiting at once before a newer one replaces the last of them even when
/// its target vector does not reach back over it (see [`enqueue`]).
const MAX_WAITING_PULLS: usize = 16;

/// `op` at the end of `deferred`, or coalesced (see [`ObjectActor::defer`]). A pulled frame
/// takes the place of the last one waiting if it is not older and its target vector holds
/// that one's oldest target: the vectors are windows of one chain, so whatever secret would
/// have opened the skipped frame opens it too. Otherwise it waits behind it, up to
/// [`MAX_WAITING_PULLS`], then replaces it anyway (the object may then need its secret from
/// the account, as when a persister coalesces frames). The syncs of a frame that is dropped
/// or replaced go with the one waiting in its place: its outcome is theirs.
fn enqueue(deferred: &mut VecDeque<Exclusive>, op: Exclusive) {
    match op {
        Exclusive::Removed => {
            if !deferred.iter().any(|o| matches!(o, Exclusive::Removed)) {
                deferred.push_back(op);
            }
        }
        Exclusive::Pulled(new, syncs) => {
            let waiting = deferred
                .iter()
                .filter(|o| matches!(o, Exclusive::Pulled(..)))
                .count();
            let last = deferred.iter_mut().rev().find_map(|o| match o {
                Exclusive::Pulled(p, s) => Some((p, s)),
                _ => None,
            });
            match last {
                Some((old, old_syncs)) if new.0.counter < old.0.counter => {
                    add_syncs(old_syncs, syncs)
                }
                Some((old, old_syncs))
                    if covers(&new.0, &old.0) || waiting >= MAX_WAITING_PULLS =>
                {
                    *old = new;
                    add_syncs(old_syncs, syncs);
                }
                _ => deferred.push_back(Exclusive::Pulled(new, syncs)),
            }
        }
        op => deferred.push_back(op),
    }
}

/// Adds `syncs` to `to`, each once (one sync may pull the same frame from two remotes).
fn add_syncs(to: &mut Vec<SyncId>, syncs: Vec<SyncId>) {
    for s in syncs {
        if !to.contains(&s) {
            to.push(s);
        }
    }
}

/// Whether `new`'s target vector reaches back over `old`'s (holds its oldest target).
fn covers(new: &Gobd, old: &Gobd) -> bool {
    old.targets.last().is_some_and(|t| new.targets.contains(t))
}

pub struct ObjectActor {
    peers: ObjectPeers,
    /// Held weakly: the registry holds this actor's address.
    registry: Weak<ObjectRegistry>,
    obj: Loaded,
    id: u64,
    trackers: HashSet<AppId>,
    /// Whether we hold (our own GOBS on the ghid); looked up on first need.
    held: Option<bool>,
    /// Operations that wait for the in-flight frames.
    deferred: VecDeque<Exclusive>,
    /// An exclusive operation is running (the mailbox waits for it).
    exclusive: bool,
    waiting: Vec<Waiter>,
    latest: Option<Latest>,
    /// Pushes queued so far (numbers `Latest::seq`).
    pushes: u64,
    /// Frames started so far (numbers `InFlight::no`).
    frames: u64,
    in_flight: VecDeque<InFlight>,
    /// Whether the newest frame in flight makes the object private.
    newest_private: Option<bool>,
    /// A frame in flight failed: no new frame starts until the pipeline is empty (the jobs
    /// after it end `Dropped` and their pushes are queued again).
    draining: bool,
    retries: u32,
    /// A frame of ours was refused locally (the local archive holds a newer frame): once the
    /// pipeline is empty, catch up with the local archive before rebuilding.
    resync: bool,
    /// Secrets of recent frames, oldest first (see [`KNOWN_SECRETS`]).
    known: Vec<(Ghid, Secret)>,
    /// Why a frame a `sync` pulled was not applied, for that sync's [`Settled`] (oldest
    /// first, at most [`SYNC_FAILURES`]).
    sync_failures: VecDeque<(SyncId, DaemonError)>,
}

/// What a reply channel dropped unanswered (the actor stopped) means to the asker.
fn dead(ghid: Ghid) -> DaemonError {
    DaemonError::DeadObject(ghid.to_string())
}

impl Actor for ObjectActor {
    type Context = Context<Self>;
}

impl Handler<Track> for ObjectActor {
    type Result = MessageResult<Track>;

    fn handle(&mut self, msg: Track, ctx: &mut Context<Self>) -> Self::Result {
        if self.peers.apps.track(msg.app, self.obj.ghid) {
            self.trackers.insert(msg.app);
        }
        let view = self.view();
        self.pump(ctx);
        MessageResult(Some(view))
    }
}

impl Handler<Untrack> for ObjectActor {
    type Result = ();

    fn handle(&mut self, msg: Untrack, ctx: &mut Context<Self>) {
        self.trackers.remove(&msg.app);
        self.peers.apps.untrack(msg.app, &self.obj.ghid);
        self.pump(ctx);
    }
}

impl Handler<View> for ObjectActor {
    type Result = MessageResult<View>;

    fn handle(&mut self, _: View, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.view())
    }
}

impl Handler<Push> for ObjectActor {
    type Result = ResponseFuture<Result<(), DaemonError>>;

    fn handle(&mut self, msg: Push, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.queue_push(msg, tx);
        self.pump(ctx);
        let ghid = self.obj.ghid;
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(dead(ghid))) })
    }
}

impl Handler<Pulled> for ObjectActor {
    type Result = ();

    fn handle(&mut self, msg: Pulled, ctx: &mut Context<Self>) {
        self.defer(Exclusive::Pulled(msg.0, msg.1.into_iter().collect()), ctx);
    }
}

impl Handler<Removed> for ObjectActor {
    type Result = ();

    fn handle(&mut self, _: Removed, ctx: &mut Context<Self>) {
        self.defer(Exclusive::Removed, ctx);
    }
}

impl Handler<Current> for ObjectActor {
    type Result = ResponseFuture<Option<(Ghid, Secret)>>;

    fn handle(&mut self, _: Current, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.defer(Exclusive::Current(tx), ctx);
        Box::pin(async move { rx.await.ok().flatten() })
    }
}

impl Handler<Settled> for ObjectActor {
    type Result = ResponseFuture<Result<ObjectView, DaemonError>>;

    fn handle(&mut self, msg: Settled, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.defer(Exclusive::Settled(msg.0, tx), ctx);
        let ghid = self.obj.ghid;
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(dead(ghid))) })
    }
}

impl Handler<Freeze> for ObjectActor {
    type Result = ResponseFuture<Result<Ghid, DaemonError>>;

    fn handle(&mut self, _: Freeze, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.defer(Exclusive::Freeze(tx), ctx);
        let ghid = self.obj.ghid;
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(dead(ghid))) })
    }
}

impl Handler<Hold> for ObjectActor {
    type Result = ResponseFuture<Result<(), DaemonError>>;

    fn handle(&mut self, _: Hold, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.defer(Exclusive::Hold(tx), ctx);
        let ghid = self.obj.ghid;
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(dead(ghid))) })
    }
}

impl Handler<Delete> for ObjectActor {
    type Result = ResponseFuture<Result<(), DaemonError>>;

    fn handle(&mut self, msg: Delete, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.defer(Exclusive::Delete(msg.app, tx), ctx);
        let ghid = self.obj.ghid;
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(dead(ghid))) })
    }
}

impl Handler<Stop> for ObjectActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl ObjectActor {
    fn view(&self) -> ObjectView {
        self.obj.view()
    }

    /// Queues an operation on the current container and runs what can run. Remote changes
    /// coalesce while they wait (a remote can send them faster than they are applied; see
    /// [`enqueue`]), and a removal waits once. Everything else queued has a caller waiting
    /// for its answer.
    fn defer(&mut self, op: Exclusive, ctx: &mut Context<Self>) {
        enqueue(&mut self.deferred, op);
        self.pump(ctx);
    }

    /// Moves the actor on after every event: runs the queued operations once no frame is in
    /// flight (one at a time), then the catch-up a lost race asked for, starts what frames
    /// the pipeline has room for, and retires once nothing tracks the object and nothing is
    /// left to do.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while !self.exclusive && self.in_flight.is_empty() {
            if let Some(op) = self.deferred.pop_front() {
                self.exclusive(op, ctx);
            } else if std::mem::take(&mut self.resync) {
                self.exclusive(Exclusive::CatchUp, ctx);
            } else {
                break;
            }
        }
        while self.start_push(ctx) {}
        if self.in_flight.is_empty()
            && self.trackers.is_empty()
            && self.deferred.is_empty()
            && !self.exclusive
        {
            self.retire(ctx);
        }
    }

    /// Runs `work` on the daemon's runtime with the mailbox held until it ends, then `then`
    /// on the actor (the operations on the current container: nothing else runs meanwhile).
    fn run_alone<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        work: impl Future<Output = T> + Send + 'static,
        then: impl FnOnce(T, &mut Self, &mut Context<Self>) + 'static,
    ) {
        self.exclusive = true;
        let task = self.peers.store.local.runtime.spawn(work);
        ctx.wait(task.into_actor(self).map(move |res, act, ctx| {
            act.exclusive = false;
            match res {
                Ok(v) => then(v, act, ctx),
                // Its reply is dropped: the asker gets `dead_object`.
                Err(e) => slog::warn!(act.peers.store.local.log, "an object operation failed";
                        "ghid" => %act.obj.ghid, "error" => %e),
            }
            act.pump(ctx);
        }));
    }

    /// Starts one operation on the current container (no frame is in flight).
    fn exclusive(&mut self, op: Exclusive, ctx: &mut Context<Self>) {
        let store = self.peers.store.clone();
        match op {
            Exclusive::Current(reply) => {
                let _ = reply.send(Some((self.obj.ghid, self.obj.secret.clone())));
            }
            Exclusive::Settled(sync, reply) => {
                let _ = reply.send(match self.sync_failure(sync) {
                    Some(e) => Err(e),
                    None => Ok(self.view()),
                });
            }
            Exclusive::Removed => self.removed(None),
            Exclusive::Pulled(pulled, syncs) => {
                let (frame, container) = *pulled;
                self.pulled(frame, container, syncs, ctx);
            }
            Exclusive::Freeze(reply) => {
                if self.obj.frame.is_none() {
                    let _ = reply.send(Ok(self.obj.ghid));
                    return;
                }
                let obj = self.obj.without_state();
                self.run_alone(
                    ctx,
                    async move { commit::freeze(&store, &obj).await },
                    move |res, _, _| {
                        let _ = reply.send(res);
                    },
                );
            }
            Exclusive::Hold(reply) => {
                if self.held == Some(true) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let (held, ghid) = (self.held, self.obj.ghid);
                let work = async move {
                    let held = match held {
                        Some(h) => h,
                        None => commit::holds(&store, &ghid)?,
                    };
                    if !held {
                        commit::hold(&store, &ghid).await?;
                    }
                    Ok(())
                };
                self.run_alone(ctx, work, move |res, act, _| {
                    if res.is_ok() {
                        act.held = Some(true);
                    }
                    let _ = reply.send(res);
                });
            }
            Exclusive::Delete(app, reply) => {
                if self.obj.author != self.peers.store.fingerprint() {
                    let _ = reply.send(Err(DaemonError::LocallyImmutable(format!(
                        "{} belongs to {}",
                        self.obj.ghid, self.obj.author
                    ))));
                    return;
                }
                let obj = self.obj.without_state();
                self.run_alone(
                    ctx,
                    async move { commit::delete(&store, &obj).await },
                    move |res, act, _| {
                        if res.is_ok() {
                            act.removed(Some(app));
                        }
                        let _ = reply.send(res);
                    },
                );
            }
            Exclusive::CatchUp => {
                let (ghid, counter) = (self.obj.ghid, self.obj.counter());
                self.run_alone(
                    ctx,
                    sync::catch_up_local(store, ghid, counter),
                    |found, act, ctx| {
                        if let Some((frame, container)) = found {
                            act.pulled(frame, container, Vec::new(), ctx);
                        }
                    },
                );
            }
        }
    }

    /// Sends the current view to every tracker except `skip`.
    fn broadcast(&self, skip: Option<AppId>) {
        let view = self.view();
        for app in &self.trackers {
            if Some(*app) != skip {
                let _ = self.peers.apps.send(*app, AppEvent::Update(view.clone()));
            }
        }
    }

    /// Records the current container's secret among the known ones.
    fn remember_known(&mut self) {
        if self.obj.frame.is_none() || self.known.iter().any(|(c, _)| *c == self.obj.container) {
            return;
        }
        if self.known.len() >= KNOWN_SECRETS {
            self.known.remove(0);
        }
        self.known
            .push((self.obj.container, self.obj.secret.clone()));
    }

    /// Leaves the registry and stops; what is still queued is answered `dead_object` (its
    /// reply dropped) or, for `Track`, retried on a new actor.
    fn retire(&mut self, ctx: &mut Context<Self>) {
        if let Some(registry) = self.registry.upgrade() {
            registry.remove_if(&self.obj.ghid, self.id);
        }
        let followed = self
            .peers
            .store
            .local
            .meta(&self.obj.ghid)
            .is_ok_and(|m| m.followed);
        if self.obj.frame.is_some() && !followed {
            self.peers.store.upstream.unsubscribe(self.obj.ghid);
        }
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::DEFAULT_LEGROOM;

    fn counters(deferred: &VecDeque<Exclusive>) -> Vec<String> {
        deferred
            .iter()
            .map(|o| match o {
                Exclusive::Pulled(p, _) => format!("pulled {}", p.0.counter),
                Exclusive::Removed => "removed".into(),
                Exclusive::Current(_) => "current".into(),
                _ => "other".into(),
            })
            .collect()
    }

    /// Frames 0..n of one object, each on a container of its own, `legroom` targets each.
    fn chain(n: usize, legroom: usize) -> (Vec<Gobd>, Geoc) {
        let a = crate::testdata::fixture_first_party(1);
        let secret = Secret::random();
        let c0 = a.make_container(b"state 0", &secret).unwrap();
        let mut frames = vec![a.make_bind_dynamic(c0.ghid).unwrap()];
        for i in 1..n {
            let c = a
                .make_container(format!("{i}").as_bytes(), &secret)
                .unwrap();
            let next = a
                .unsigned_next_frame(&frames[i - 1], c.ghid, legroom)
                .unwrap();
            frames.push(next);
        }
        (frames, c0)
    }

    #[test]
    fn remote_changes_coalesce_while_they_wait_and_requests_keep_their_place() {
        let (frames, c) = chain(5, DEFAULT_LEGROOM);
        let pulled = |i: usize| Exclusive::Pulled(Box::new((frames[i].clone(), c.clone())), vec![]);
        let mut q = VecDeque::new();
        enqueue(&mut q, pulled(1));
        let (tx, _rx) = oneshot::channel();
        enqueue(&mut q, Exclusive::Current(tx));
        for i in [3, 2, 4, 4] {
            enqueue(&mut q, pulled(i));
        }
        enqueue(&mut q, Exclusive::Removed);
        enqueue(&mut q, Exclusive::Removed);
        assert_eq!(counters(&q), ["pulled 4", "current", "removed"]);
    }

    #[test]
    fn the_syncs_of_a_dropped_or_replaced_frame_go_with_the_one_in_its_place() {
        let (frames, c) = chain(4, DEFAULT_LEGROOM);
        let pulled = |i: usize, s: Option<SyncId>| {
            Exclusive::Pulled(
                Box::new((frames[i].clone(), c.clone())),
                s.into_iter().collect(),
            )
        };
        let mut q = VecDeque::new();
        enqueue(&mut q, pulled(2, Some(7)));
        enqueue(&mut q, pulled(1, Some(8))); // older: dropped
        enqueue(&mut q, pulled(2, Some(7))); // the same sync, from another remote: once
        enqueue(&mut q, pulled(1, Some(8)));
        enqueue(&mut q, pulled(3, None)); // newer: takes its place
        enqueue(&mut q, pulled(3, Some(8)));
        let (tx, _rx) = oneshot::channel();
        enqueue(&mut q, Exclusive::Settled(7, tx));
        assert_eq!(counters(&q), ["pulled 3", "other"]);
        let Some(Exclusive::Pulled(p, syncs)) = q.front() else {
            panic!("a pulled frame first")
        };
        assert_eq!((p.0.counter, syncs.as_slice()), (3, &[7, 8][..]));
    }

    #[test]
    fn a_frame_that_does_not_reach_back_over_the_waiting_one_waits_behind_it_up_to_a_bound() {
        // Two targets each: a frame's vector never holds the oldest target of the one before.
        let (frames, c) = chain(21, 2);
        let pulled = |i: usize| Exclusive::Pulled(Box::new((frames[i].clone(), c.clone())), vec![]);
        let mut q = VecDeque::new();
        for i in 1..=3 {
            enqueue(&mut q, pulled(i));
        }
        assert_eq!(counters(&q), ["pulled 1", "pulled 2", "pulled 3"]);
        for i in 4..=20 {
            enqueue(&mut q, pulled(i));
        }
        let mut want: Vec<String> = (1..MAX_WAITING_PULLS)
            .map(|i| format!("pulled {i}"))
            .collect();
        want.push("pulled 20".into());
        assert_eq!(counters(&q), want);
    }
}
