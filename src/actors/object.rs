//! `ObjectActor`: one actix actor per live object (alive while any app tracks it), its
//! messages, and the registry that finds it by ghid.
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
//! [`Freeze`], [`Hold`], [`Delete`] and [`Stop`] from `DaemonHandle`; [`Pulled`] and
//! [`Removed`] from [`super::pull`]; [`Current`] from [`super::share`].
//!
//! How it runs: the actor lives on one of the daemon's arbiters ([`super::arbiters`]) and only
//! decides; the work runs on the daemon's tokio runtime. Each frame is a [`PushJob`] spawned
//! there and awaited as an actor future (`ctx.spawn`); frames end in order. An operation on
//! the current container runs alone: `ctx.wait` holds the mailbox until it is done; asked
//! while frames are in flight, it is queued (with its reply) until the pipeline is empty.
//!
//! Peers ([`ObjectPeers`], set when the registry starts the actor): the [`Store`] (local
//! state, remotes, the `AccountActor`: `RecordSecret`, `MakePublic`), the app registry
//! (trackers, `Update`/`Delete` events), the `GcActor` as a `Recipient<Deleted>`, and the
//! registry itself, held weakly (it holds the actor's address) to leave it on retiring.
//! Calls: [`super::push`] (building, signing and committing frames), [`super::commit`]
//! (loading, freeze, hold, delete). The registry is a read-mostly map behind a std mutex.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::account_actor;
use super::api::{AppEvent, AppId, ObjectView};
use super::apps::AppRegistry;
use super::commit::{self, Loaded, Store};
use super::content;
use super::error::DaemonError;
use super::gc::Deleted;
use super::push::{After, PushJob, Pushed, Tip};
use crate::golix::{Geoc, Ghid, Gobd, Object, Policy, Secret};
use crate::persist::PersistError;

/// Queue length of one object's mailbox.
const MAILBOX: usize = 256;
/// Times a push is rebuilt on a newer frame after losing a race with another machine.
const PUSH_RETRIES: u32 = 3;
/// (container, secret) pairs of the object's recent frames kept to open another machine's
/// frame that follows an older frame than ours (its target vector holds the common one).
const KNOWN_SECRETS: usize = 32;
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

/// A newer frame and its container, already ingested locally (boxed: signatures make them
/// large).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pulled(pub Box<(Gobd, Geoc)>);

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

/// The object's ghid and the secret of its current container (what a share hands over).
/// Answered once no push is in flight; `None` if the actor stopped first.
#[derive(Message)]
#[rtype(result = "Option<(Ghid, Secret)>")]
pub struct Current;

/// Stop now (shutdown; no push is in flight by then).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Sends to one `ObjectActor`. Cheap to clone.
#[derive(Clone)]
pub struct ObjectHandle {
    addr: Addr<ObjectActor>,
    /// Distinguishes successive actors of the same ghid in the registry.
    id: u64,
}

impl ObjectHandle {
    /// Asks and awaits the reply; `Err` if the actor is gone.
    pub async fn ask<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        ObjectActor: Handler<M>,
    {
        self.addr.send(msg).await
    }

    /// Queues a message without waiting; `false` if the actor is gone.
    pub fn tell<M>(&self, msg: M) -> bool
    where
        M: Message + Send + 'static,
        M::Result: Send,
        ObjectActor: Handler<M>,
    {
        if !self.addr.connected() {
            return false;
        }
        self.addr.do_send(msg);
        true
    }
}

/// Live objects by ghid, plus per-ghid load locks so one ghid is loaded once.
#[derive(Default)]
pub struct ObjectRegistry {
    live: Mutex<HashMap<Ghid, ObjectHandle>>,
    loading: Mutex<HashMap<Ghid, Arc<tokio::sync::Mutex<()>>>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ObjectRegistry {
    pub fn get(&self, ghid: &Ghid) -> Option<ObjectHandle> {
        lock(&self.live).get(ghid).cloned()
    }

    pub fn all(&self) -> Vec<(Ghid, ObjectHandle)> {
        lock(&self.live)
            .iter()
            .map(|(g, h)| (*g, h.clone()))
            .collect()
    }

    /// Dynamic ghids of live objects (what remotes subscribe to).
    pub fn ghids(&self) -> Vec<Ghid> {
        lock(&self.live).keys().copied().collect()
    }

    /// The load lock of `ghid`.
    pub fn load_lock(&self, ghid: &Ghid) -> Arc<tokio::sync::Mutex<()>> {
        let mut l = lock(&self.loading);
        l.retain(|_, m| Arc::strong_count(m) > 1);
        l.entry(*ghid).or_default().clone()
    }

    fn remove_if(&self, ghid: &Ghid, id: u64) {
        let mut live = lock(&self.live);
        if live.get(ghid).is_some_and(|h| h.id == id) {
            live.remove(ghid);
        }
    }
}

/// What every `ObjectActor` reaches besides its registry: the [`Store`] (local state,
/// remotes, the `AccountActor`), the app registry (trackers, events) and the `GcActor`
/// (`Deleted`). Built once at start-up. Cheap to clone.
#[derive(Clone)]
pub struct ObjectPeers {
    pub store: Store,
    pub apps: Arc<AppRegistry>,
    pub gc: Recipient<Deleted>,
}

impl ObjectRegistry {
    /// Starts the actor of a loaded object, tracked by `app`, on the next arbiter and
    /// registers it. Returns the app's view. An app that disconnected meanwhile does not track
    /// it, and no actor starts. The actor holds the registry weakly (to leave it).
    pub fn spawn(self: &Arc<Self>, peers: &ObjectPeers, loaded: Loaded, app: AppId) -> ObjectView {
        let ghid = loaded.ghid;
        let view = loaded.view();
        if !peers.apps.track(app, ghid) {
            return view;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let actor = ObjectActor::new(peers.clone(), Arc::downgrade(self), loaded, id, app);
        let arbiter = peers.store.local.arbiters.next();
        let addr = ObjectActor::start_in_arbiter(&arbiter, move |ctx| {
            ctx.set_mailbox_capacity(MAILBOX);
            actor
        });
        lock(&self.live).insert(ghid, ObjectHandle { addr, id });
        view
    }
}

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
    Pulled(Box<(Gobd, Geoc)>),
    Removed,
    Current(oneshot::Sender<Option<(Ghid, Secret)>>),
    Freeze(oneshot::Sender<Result<Ghid, DaemonError>>),
    Hold(oneshot::Sender<Result<(), DaemonError>>),
    Delete(AppId, oneshot::Sender<Result<(), DaemonError>>),
    /// Catch up with the local archive after a frame of ours was refused locally.
    CatchUp,
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
}

/// `bytes` as a frame.
fn as_frame(bytes: Vec<u8>) -> Option<Gobd> {
    match Object::decode(&bytes, Policy::STRICT) {
        Ok(Object::Gobd(f)) => Some(f),
        _ => None,
    }
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
        self.defer(Exclusive::Pulled(msg.0), ctx);
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

    /// Queues an operation on the current container and runs what can run.
    fn defer(&mut self, op: Exclusive, ctx: &mut Context<Self>) {
        self.deferred.push_back(op);
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
            Exclusive::Removed => self.removed(None),
            Exclusive::Pulled(pulled) => {
                let (frame, container) = *pulled;
                self.pulled(frame, container, ctx);
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
                    catch_up_local(store, ghid, counter),
                    |found, act, ctx| {
                        if let Some((frame, container)) = found {
                            act.pulled(frame, container, ctx);
                        }
                    },
                );
            }
        }
    }

    fn queue_push(&mut self, msg: Push, reply: Waiter) {
        let Push {
            app,
            state,
            private,
        } = msg;
        if self.obj.frame.is_none() {
            let _ = reply.send(Err(DaemonError::LocallyImmutable(format!(
                "{} is static",
                self.obj.ghid
            ))));
            return;
        }
        if self.obj.author != self.peers.store.fingerprint() {
            let _ = reply.send(Err(DaemonError::LocallyImmutable(format!(
                "{} belongs to {}",
                self.obj.ghid, self.obj.author
            ))));
            return;
        }
        let current = self
            .latest
            .as_ref()
            .map(|l| l.private)
            .or(self.newest_private)
            .unwrap_or(self.obj.private);
        let private = private.unwrap_or(current);
        if private && !current {
            let _ = reply.send(Err(DaemonError::CatOuttaBag));
            return;
        }
        // Refused before it can coalesce with other pushes: see `limits`.
        let len = content::container_len(state.len());
        if let Err(e) = self
            .peers
            .store
            .check_fits(len, "the new state's container")
        {
            let _ = reply.send(Err(e));
            return;
        }
        self.pushes += 1;
        self.latest = Some(Latest {
            state,
            private,
            app,
            seq: self.pushes,
        });
        self.waiting.push(reply);
    }

    /// Puts the pushes of a frame that did not commit back in the queue.
    fn requeue(&mut self, waiters: Vec<Waiter>, latest: Latest) {
        self.waiting.extend(waiters);
        if self.latest.as_ref().map_or(true, |l| l.seq < latest.seq) {
            self.latest = Some(latest);
        }
    }

    /// Starts a frame with the latest waiting state, if there is one and the pipeline has
    /// room: after the durable frame when nothing is in flight, else after the newest frame
    /// in flight unless an operation waits for the pipeline to empty. The job runs on the
    /// daemon's runtime; its end comes back as an actor future. Returns whether it started.
    fn start_push(&mut self, ctx: &mut Context<Self>) -> bool {
        let busy = !self.in_flight.is_empty();
        if self.latest.is_none()
            || self.exclusive
            || self.in_flight.len() >= PIPELINE
            || (busy && (self.draining || !self.deferred.is_empty()))
        {
            return false;
        }
        let after = match self.in_flight.back_mut() {
            Some(newest) => newest.next.take(),
            None => Tip::current(&self.obj).map(|t| After::Durable(Box::new(t))),
        };
        let Some(after) = after else {
            return false;
        };
        let latest = self.latest.take().expect("checked above");
        let (job, next) = PushJob::new(self.obj.ghid, self.obj.api_id, latest.state.clone(), after);
        self.newest_private = Some(latest.private);
        self.frames += 1;
        let no = self.frames;
        let store = self.peers.store.clone();
        let rt = store.local.runtime.clone();
        let task = rt.spawn(async move { job.run(&store).await });
        ctx.spawn(
            async move {
                task.await.unwrap_or_else(|e| {
                    Pushed::Failed(DaemonError::Storage(format!("push task failed: {e}")))
                })
            }
            .into_actor(self)
            .map(move |pushed, act, ctx| act.frame_ended(no, pushed, ctx)),
        );
        self.in_flight.push_back(InFlight {
            no,
            done: None,
            waiters: std::mem::take(&mut self.waiting),
            latest,
            next: Some(next),
        });
        true
    }

    /// Records how frame `no` ended and finishes the frames that have ended, in order.
    fn frame_ended(&mut self, no: u64, pushed: Pushed, ctx: &mut Context<Self>) {
        if let Some(f) = self.in_flight.iter_mut().find(|f| f.no == no) {
            f.done = Some(pushed);
        }
        while self.in_flight.front().is_some_and(|f| f.done.is_some()) {
            let f = self.in_flight.pop_front().expect("checked above");
            let done = f.done.expect("checked above");
            self.finish_push(done, f.waiters, f.latest);
            if self.in_flight.is_empty() {
                self.draining = false;
                self.newest_private = None;
            }
        }
        self.pump(ctx);
    }

    fn finish_push(&mut self, done: Pushed, waiters: Vec<Waiter>, latest: Latest) {
        match done {
            Pushed::Committed(c) => {
                self.retries = 0;
                let private_changed = self.obj.private != latest.private;
                self.obj.apply(*c, latest.state);
                self.remember_known();
                self.obj.private = latest.private;
                if private_changed {
                    self.save_meta();
                    if !self.obj.private {
                        // Public now: no app token owns it any more.
                        let ghid = self.obj.ghid;
                        self.peers
                            .store
                            .account
                            .tell(account_actor::MakePublic(ghid));
                    }
                }
                self.peers.store.account.record_secret(
                    self.obj.ghid,
                    self.obj.stored_secret(),
                    self.obj.counter(),
                    None,
                );
                self.broadcast(Some(latest.app));
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Pushed::Dropped => {
                // The frame before failed; this one was built on it.
                self.draining = true;
                self.requeue(waiters, latest);
            }
            Pushed::Failed(DaemonError::Persist(PersistError::IllegalFrame(m)))
                if self.retries < PUSH_RETRIES =>
            {
                // Another machine of ours published a newer frame and the local archive took
                // it: rebuild on top of it once the pipeline is empty (its pull is among the
                // deferred operations; else the frame is read back from the local archive).
                slog::info!(self.peers.store.local.log, "push lost a frame race; retrying";
                    "ghid" => %self.obj.ghid, "why" => m);
                self.draining = true;
                self.resync = true;
                self.retries += 1;
                self.requeue(waiters, latest);
            }
            Pushed::Failed(e) => {
                self.draining = true;
                self.retries = 0;
                slog::warn!(self.peers.store.local.log, "push failed"; "ghid" => %self.obj.ghid, "error" => %e);
                for w in waiters {
                    let _ = w.send(Err(e.clone()));
                }
            }
        }
    }

    fn save_meta(&self) {
        let saved = self
            .peers
            .store
            .local
            .meta(&self.obj.ghid)
            .and_then(|mut meta| {
                meta.private = self.obj.private;
                self.peers.store.local.put_meta(&self.obj.ghid, &meta)
            });
        if let Err(e) = saved {
            slog::warn!(self.peers.store.local.log, "cannot record object metadata"; "error" => %e);
        }
    }

    /// Sends the current view to every tracker except `skip`.
    fn broadcast(&self, skip: Option<AppId>) {
        let view = self.view();
        for app in &self.trackers {
            if Some(*app) != skip {
                self.peers.apps.send(*app, AppEvent::Update(view.clone()));
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

    /// Applies another machine's frame: a newer one, or one with our counter that won the
    /// race upstream against ours (pull only sends those; ours can never reach the remote, so
    /// both machines show the remote's and our next frame follows it).
    fn pulled(&mut self, frame: Gobd, container: Geoc, ctx: &mut Context<Self>) {
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
        let store = self.peers.store.clone();
        let obj = self.obj.without_state();
        let work = async move {
            let opened = commit::open_pulled(&store, &obj, &known, &frame, &container).await;
            (opened, frame, container)
        };
        self.run_alone(ctx, work, move |(opened, frame, container), act, _| {
            act.apply_pulled(opened, frame, container.ghid, newer)
        });
    }

    fn apply_pulled(
        &mut self,
        opened: Result<Option<commit::Opened>, DaemonError>,
        frame: Gobd,
        container: Ghid,
        newer: bool,
    ) {
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
            }
            Ok(None) => {
                slog::warn!(self.peers.store.local.log, "cannot decrypt an update: no secret ratchets to it";
                "ghid" => %self.obj.ghid, "counter" => frame.counter,
                "error" => DaemonError::UnknownSecret(self.obj.ghid.to_string()).code())
            }
            Err(e) => slog::warn!(self.peers.store.local.log, "cannot open an update";
                "ghid" => %self.obj.ghid, "error" => %e),
        }
    }

    /// The object may be gone: if it no longer exists locally (nobody of ours holds it),
    /// every tracker but `skip` gets `Delete` and the actor retires.
    fn removed(&mut self, skip: Option<AppId>) {
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
                self.peers.apps.send(app, AppEvent::Delete(self.obj.ghid));
            }
        }
        self.peers.gc.do_send(Deleted(self.obj.ghid));
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

/// The local archive's current frame of `ghid` if it is newer than `counter` (a frame of ours
/// was refused locally because of it), and its container: from the local archive, else the
/// remotes; if it is gone upstream already, the remotes' current frame instead.
async fn catch_up_local(store: Store, ghid: Ghid, counter: u64) -> Option<(Gobd, Geoc)> {
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
