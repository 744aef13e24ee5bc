//! `ObjectActor`: one tokio task per live object (alive while any app tracks it), and the
//! registry that finds it by ghid.
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
//! theirs (`Pulled` at an equal counter); the secrets of recent frames are kept so a frame
//! that follows an older one than ours still opens. Latest frame upstream wins.
//!
//! Calls: [`super::push`] (building, signing and committing frames), [`super::commit`]
//! (loading, freeze, hold, delete), `DaemonCore` (archive, vault, outbox, ledger, apps, GC). Messages arrive over a bounded mpsc; every request carries a oneshot
//! reply. The registry is a read-mostly map behind a std mutex.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::api::{AppEvent, AppId, ObjectView};
use super::commit::{self, Loaded};
use super::content;
use super::daemon_core::DaemonCore;
use super::error::DaemonError;
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

pub enum ObjectMsg {
    /// Adds a tracker; `None` if the actor is retiring (load it again).
    Track {
        app: AppId,
        reply: oneshot::Sender<Option<ObjectView>>,
    },
    /// Local discard: removes one tracker.
    Untrack {
        app: AppId,
    },
    View {
        reply: oneshot::Sender<ObjectView>,
    },
    Push {
        app: AppId,
        state: Vec<u8>,
        private: Option<bool>,
        reply: oneshot::Sender<Result<(), DaemonError>>,
    },
    /// A newer frame and its container, already ingested locally (boxed: signatures make
    /// them large).
    Pulled(Box<(Gobd, Geoc)>),
    /// A debinding of this object was ingested locally.
    Removed,
    Freeze {
        reply: oneshot::Sender<Result<Ghid, DaemonError>>,
    },
    Hold {
        reply: oneshot::Sender<Result<(), DaemonError>>,
    },
    Delete {
        app: AppId,
        reply: oneshot::Sender<Result<(), DaemonError>>,
    },
    /// The object's ghid and the secret of its current container (what a share hands over).
    /// Answered once no push is in flight.
    Current {
        reply: oneshot::Sender<(Ghid, Secret)>,
    },
    /// Stop now (shutdown; no push is in flight by then).
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// Sends to one `ObjectActor`. Cheap to clone.
#[derive(Clone)]
pub struct ObjectHandle {
    tx: mpsc::Sender<ObjectMsg>,
    /// Distinguishes successive actors of the same ghid in the registry.
    id: u64,
}

impl ObjectHandle {
    pub async fn send(&self, msg: ObjectMsg) -> bool {
        self.tx.send(msg).await.is_ok()
    }

    /// Asks and awaits a reply; `None` if the actor is gone.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> ObjectMsg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Live objects by ghid, plus per-ghid load locks so one ghid is loaded once.
#[derive(Default)]
pub struct ObjectRegistry {
    live: Mutex<HashMap<Ghid, ObjectHandle>>,
    loading: Mutex<HashMap<Ghid, Arc<tokio::sync::Mutex<()>>>>,
    next_id: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
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

    /// Task handles of every actor started so far (awaited at shutdown).
    pub fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.tasks))
    }
}

/// Starts the actor of a loaded object, tracked by `app`, and registers it. Returns the
/// app's view.
pub fn spawn(core: &Arc<DaemonCore>, loaded: Loaded, app: AppId) -> ObjectView {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let id = core.objects.next_id.fetch_add(1, Ordering::Relaxed);
    let ghid = loaded.ghid;
    let mut actor = ObjectActor {
        core: core.clone(),
        obj: loaded,
        id,
        trackers: HashSet::new(),
        held: None,
        deferred: VecDeque::new(),
        waiting: Vec::new(),
        latest: None,
        pushes: 0,
        newest_private: None,
        draining: false,
        retries: 0,
        resync: false,
        known: Vec::new(),
    };
    actor.remember_known();
    // An app that disconnected meanwhile does not track it (the actor then retires at once).
    if core.apps.track(app, ghid) {
        actor.trackers.insert(app);
    }
    let view = actor.view();
    lock(&core.objects.live).insert(ghid, ObjectHandle { tx, id });
    let task = tokio::spawn(async move { actor.run(rx).await });
    let mut tasks = lock(&core.objects.tasks);
    tasks.retain(|t| !t.is_finished());
    tasks.push(task);
    view
}

/// A push waiting for a durable frame.
struct Waiter {
    reply: oneshot::Sender<Result<(), DaemonError>>,
}

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
    task: JoinHandle<Pushed>,
    waiters: Vec<Waiter>,
    latest: Latest,
    /// What the job after this one follows; taken when it starts.
    next: Option<After>,
}

struct ObjectActor {
    core: Arc<DaemonCore>,
    obj: Loaded,
    id: u64,
    trackers: HashSet<AppId>,
    /// Whether we hold (our own GOBS on the ghid); looked up on first need.
    held: Option<bool>,
    /// Messages that wait for the in-flight push.
    deferred: VecDeque<ObjectMsg>,
    waiting: Vec<Waiter>,
    latest: Option<Latest>,
    /// Pushes queued so far (numbers `Latest::seq`).
    pushes: u64,
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

/// How the oldest frame in flight ends (frames end in order).
async fn join(in_flight: &mut VecDeque<InFlight>) -> Pushed {
    match in_flight.front_mut() {
        Some(f) => match (&mut f.task).await {
            Ok(r) => r,
            Err(e) => Pushed::Failed(DaemonError::Storage(format!("push task failed: {e}"))),
        },
        None => std::future::pending().await,
    }
}

/// `bytes` as a frame.
fn as_frame(bytes: Vec<u8>) -> Option<Gobd> {
    match Object::decode(&bytes, Policy::STRICT) {
        Ok(Object::Gobd(f)) => Some(f),
        _ => None,
    }
}

impl ObjectActor {
    fn view(&self) -> ObjectView {
        self.obj.view()
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<ObjectMsg>) {
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(PIPELINE);
        if self.trackers.is_empty() {
            self.retire(rx).await;
            return;
        }
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { return };
                    if let Some(stop) = self.handle(msg, !in_flight.is_empty()).await {
                        let _ = stop.send(());
                        return;
                    }
                }
                done = join(&mut in_flight) => {
                    if let Some(f) = in_flight.pop_front() {
                        self.finish_push(done, f.waiters, f.latest).await;
                    }
                    if in_flight.is_empty() {
                        self.draining = false;
                        self.newest_private = None;
                        while let Some(msg) = self.deferred.pop_front() {
                            if let Some(stop) = self.handle(msg, false).await {
                                let _ = stop.send(());
                                return;
                            }
                        }
                        if std::mem::take(&mut self.resync) {
                            self.catch_up_local().await;
                        }
                    }
                }
            }
            while self.start_push(&mut in_flight) {}
            if in_flight.is_empty() && self.trackers.is_empty() && self.deferred.is_empty() {
                self.retire(rx).await;
                return;
            }
        }
    }

    /// Handles one message; returns the reply of a `Stop`.
    async fn handle(&mut self, msg: ObjectMsg, busy: bool) -> Option<oneshot::Sender<()>> {
        match msg {
            ObjectMsg::Track { app, reply } => {
                if self.core.apps.track(app, self.obj.ghid) {
                    self.trackers.insert(app);
                }
                let _ = reply.send(Some(self.view()));
            }
            ObjectMsg::Untrack { app } => {
                self.trackers.remove(&app);
                self.core.apps.untrack(app, &self.obj.ghid);
            }
            ObjectMsg::View { reply } => {
                let _ = reply.send(self.view());
            }
            ObjectMsg::Push {
                app,
                state,
                private,
                reply,
            } => self.queue_push(app, state, private, reply),
            ObjectMsg::Stop { reply } => return Some(reply),
            other if busy => self.deferred.push_back(other),
            ObjectMsg::Pulled(pulled) => {
                let (frame, container) = *pulled;
                self.pulled(frame, container).await
            }
            ObjectMsg::Removed => self.removed(None).await,
            ObjectMsg::Current { reply } => {
                let _ = reply.send((self.obj.ghid, self.obj.secret.clone()));
            }
            ObjectMsg::Freeze { reply } => {
                let _ = reply.send(self.freeze().await);
            }
            ObjectMsg::Hold { reply } => {
                let _ = reply.send(self.hold().await);
            }
            ObjectMsg::Delete { app, reply } => {
                let _ = reply.send(self.delete(app).await);
            }
        }
        None
    }

    fn queue_push(
        &mut self,
        app: AppId,
        state: Vec<u8>,
        private: Option<bool>,
        reply: oneshot::Sender<Result<(), DaemonError>>,
    ) {
        if self.obj.frame.is_none() {
            let _ = reply.send(Err(DaemonError::LocallyImmutable(format!(
                "{} is static",
                self.obj.ghid
            ))));
            return;
        }
        if self.obj.author != self.core.fingerprint() {
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
        if let Err(e) = self.core.check_fits(len, "the new state's container") {
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
        self.waiting.push(Waiter { reply });
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
    /// in flight unless a message waits for the pipeline to empty. Returns whether it did.
    fn start_push(&mut self, in_flight: &mut VecDeque<InFlight>) -> bool {
        let busy = !in_flight.is_empty();
        if self.latest.is_none()
            || in_flight.len() >= PIPELINE
            || (busy && (self.draining || !self.deferred.is_empty()))
        {
            return false;
        }
        let after = match in_flight.back_mut() {
            Some(newest) => newest.next.take(),
            None => Tip::current(&self.obj).map(|t| After::Durable(Box::new(t))),
        };
        let Some(after) = after else {
            return false;
        };
        let latest = self.latest.take().expect("checked above");
        let (job, next) = PushJob::new(self.obj.ghid, self.obj.api_id, latest.state.clone(), after);
        self.newest_private = Some(latest.private);
        let core = self.core.clone();
        in_flight.push_back(InFlight {
            task: tokio::spawn(async move { job.run(&core).await }),
            waiters: std::mem::take(&mut self.waiting),
            latest,
            next: Some(next),
        });
        true
    }

    async fn finish_push(&mut self, done: Pushed, waiters: Vec<Waiter>, latest: Latest) {
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
                        self.core.ledger.edit(move |a| {
                            if a.state().private.contains_key(&ghid) {
                                a.state_mut().private.remove(&ghid);
                            }
                        });
                    }
                }
                self.core.ledger.record_secret(
                    self.obj.ghid,
                    self.obj.stored_secret(),
                    self.obj.counter(),
                    None,
                );
                self.broadcast(Some(latest.app));
                for w in waiters {
                    let _ = w.reply.send(Ok(()));
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
                // deferred messages; else the frame is read back from the local archive).
                slog::info!(self.core.log, "push lost a frame race; retrying";
                    "ghid" => %self.obj.ghid, "why" => m);
                self.draining = true;
                self.resync = true;
                self.retries += 1;
                self.requeue(waiters, latest);
            }
            Pushed::Failed(e) => {
                self.draining = true;
                self.retries = 0;
                slog::warn!(self.core.log, "push failed"; "ghid" => %self.obj.ghid, "error" => %e);
                for w in waiters {
                    let _ = w.reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn save_meta(&self) {
        let saved = self.core.meta(&self.obj.ghid).and_then(|mut meta| {
            meta.private = self.obj.private;
            self.core.put_meta(&self.obj.ghid, &meta)
        });
        if let Err(e) = saved {
            slog::warn!(self.core.log, "cannot record object metadata"; "error" => %e);
        }
    }

    /// Sends the current view to every tracker except `skip`.
    fn broadcast(&self, skip: Option<AppId>) {
        let view = self.view();
        for app in &self.trackers {
            if Some(*app) != skip {
                self.core.apps.send(*app, AppEvent::Update(view.clone()));
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
    async fn pulled(&mut self, frame: Gobd, container: Geoc) {
        let Some(current) = &self.obj.frame else {
            return;
        };
        let newer = frame.counter > current.counter;
        let won_race = frame.counter == current.counter && frame.frame != current.frame;
        if frame.dynamic != self.obj.ghid || !(newer || won_race) {
            return;
        }
        let mut known = Cow::Borrowed(&self.known[..]);
        if won_race && frame.targets.get(1) == current.targets.get(1) {
            // Two frames on the same predecessor share its ratcheted secret: this one opens
            // even when ours is all we know (after a restart). Tried last.
            known
                .to_mut()
                .insert(0, (frame.target(), self.obj.secret.clone()));
        }
        let opened = commit::open_pulled(&self.core, &self.obj, &known, &frame, &container).await;
        match opened {
            Ok(Some((secret, api_id, state))) => {
                self.obj
                    .pulled(frame, container.ghid, secret, api_id, state);
                self.remember_known();
                if newer {
                    // At an equal counter the local archive keeps our frame (and the recorded
                    // secret opens it) until the next frame replaces it.
                    commit::remember_secret(&self.core, &self.obj);
                }
                self.broadcast(None);
            }
            Ok(None) => {
                slog::warn!(self.core.log, "cannot decrypt an update: no secret ratchets to it";
                "ghid" => %self.obj.ghid, "counter" => frame.counter,
                "error" => DaemonError::UnknownSecret(self.obj.ghid.to_string()).code())
            }
            Err(e) => slog::warn!(self.core.log, "cannot open an update";
                "ghid" => %self.obj.ghid, "error" => %e),
        }
    }

    /// Applies the local archive's current frame if it is newer than ours (a frame of ours was
    /// refused locally because of it). Its container comes from the local archive, else the
    /// remotes; if it is gone upstream already, the remotes' current frame is taken instead.
    async fn catch_up_local(&mut self) {
        let ghid = self.obj.ghid;
        let Some(frame) = self.core.local(&ghid).ok().flatten().and_then(as_frame) else {
            return;
        };
        if frame.counter <= self.obj.counter() {
            return;
        }
        let container = match self.core.local_or_fetch(&frame.target()).await {
            Ok(Some(b)) => Some((frame, b)),
            _ => self.newer_upstream(frame).await,
        };
        let Some((frame, container)) = container else {
            slog::info!(self.core.log, "cannot catch up with the local archive"; "ghid" => %ghid);
            return;
        };
        match Object::decode(&container, Policy::STRICT) {
            Ok(Object::Geoc(c)) => self.pulled(frame, c).await,
            _ => slog::warn!(self.core.log, "a frame's target is not a container"; "ghid" => %ghid),
        }
    }

    /// The remotes' current frame, if newer than `than` (ingested), and its container.
    async fn newer_upstream(&self, than: Gobd) -> Option<(Gobd, Vec<u8>)> {
        let bytes = self.core.fetch(&self.obj.ghid).await?;
        let frame = as_frame(bytes.clone())
            .filter(|f| f.dynamic == self.obj.ghid && f.counter > than.counter)?;
        match self.core.ingest_fetched(bytes).await {
            Ok(_) | Err(DaemonError::Persist(PersistError::IllegalFrame(_))) => {}
            Err(_) => return None,
        }
        let container = self.core.local_or_fetch(&frame.target()).await.ok()??;
        Some((frame, container))
    }

    /// The object may be gone: if it no longer exists locally (nobody of ours holds it),
    /// every tracker but `skip` gets `Delete` and the actor retires.
    async fn removed(&mut self, skip: Option<AppId>) {
        match self.core.archive.exists(&self.obj.ghid) {
            Ok(true) => {
                if let Some(app) = skip {
                    self.trackers.remove(&app);
                    self.core.apps.untrack(app, &self.obj.ghid);
                }
                return;
            }
            Ok(false) => {}
            Err(e) => {
                slog::warn!(self.core.log, "cannot check a removal"; "error" => %e);
                return;
            }
        }
        for app in self.trackers.drain() {
            self.core.apps.untrack(app, &self.obj.ghid);
            if Some(app) != skip {
                self.core.apps.send(app, AppEvent::Delete(self.obj.ghid));
            }
        }
        self.core.gc.deleted(self.obj.ghid);
    }

    async fn freeze(&mut self) -> Result<Ghid, DaemonError> {
        if self.obj.frame.is_none() {
            return Ok(self.obj.ghid);
        }
        commit::freeze(&self.core, &self.obj).await
    }

    async fn hold(&mut self) -> Result<(), DaemonError> {
        if self.held.is_none() {
            self.held = Some(commit::holds(&self.core, &self.obj.ghid)?);
        }
        if self.held == Some(true) {
            return Ok(());
        }
        commit::hold(&self.core, &self.obj.ghid).await?;
        self.held = Some(true);
        Ok(())
    }

    async fn delete(&mut self, app: AppId) -> Result<(), DaemonError> {
        if self.obj.author != self.core.fingerprint() {
            return Err(DaemonError::LocallyImmutable(format!(
                "{} belongs to {}",
                self.obj.ghid, self.obj.author
            )));
        }
        commit::delete(&self.core, &self.obj).await?;
        self.removed(Some(app)).await;
        Ok(())
    }

    /// Leaves the registry, then answers whatever is still queued.
    async fn retire(&mut self, mut rx: mpsc::Receiver<ObjectMsg>) {
        self.core.objects.remove_if(&self.obj.ghid, self.id);
        let followed = self.core.meta(&self.obj.ghid).is_ok_and(|m| m.followed);
        if self.obj.frame.is_some() && !followed {
            self.core.unsubscribe(self.obj.ghid);
        }
        rx.close();
        while let Some(msg) = rx.recv().await {
            let dead = || DaemonError::DeadObject(self.obj.ghid.to_string());
            match msg {
                ObjectMsg::Track { reply, .. } => {
                    let _ = reply.send(None);
                }
                ObjectMsg::Push { reply, .. }
                | ObjectMsg::Hold { reply }
                | ObjectMsg::Delete { reply, .. } => {
                    let _ = reply.send(Err(dead()));
                }
                ObjectMsg::Freeze { reply } => {
                    let _ = reply.send(Err(dead()));
                }
                ObjectMsg::View { reply } => {
                    let _ = reply.send(self.view());
                }
                ObjectMsg::Stop { reply } => {
                    let _ = reply.send(());
                }
                ObjectMsg::Untrack { .. }
                | ObjectMsg::Pulled(_)
                | ObjectMsg::Removed
                | ObjectMsg::Current { .. } => {}
            }
        }
    }
}
