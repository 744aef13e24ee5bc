//! How an `ObjectActor` runs its pushes: queueing and coalescing them, starting frames
//! ([`PushJob`]s awaited on the actor's thread, their signatures and commits on the signing
//! pool, up to [`PIPELINE`](super::PIPELINE) at once),
//! finishing them in frame order, and requeueing the pushes of a frame that did not commit
//! (see the module doc of [`super`]).

use actix::prelude::*;

use super::{InFlight, Latest, ObjectActor, Push, Waiter, PIPELINE, PUSH_RETRIES};
use crate::actors::account_actor;
use crate::actors::content;
use crate::actors::error::DaemonError;
use crate::actors::push::{After, PushJob, Pushed, Tip};
use crate::persist::PersistError;

impl ObjectActor {
    pub(super) fn queue_push(&mut self, msg: Push, reply: Waiter) {
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
    pub(super) fn requeue(&mut self, waiters: Vec<Waiter>, latest: Latest) {
        self.waiting.extend(waiters);
        if self.latest.as_ref().map_or(true, |l| l.seq < latest.seq) {
            self.latest = Some(latest);
        }
    }

    /// Starts a frame with the latest waiting state, if there is one and the pipeline has
    /// room: after the durable frame when nothing is in flight, else after the newest frame
    /// in flight unless an operation waits for the pipeline to empty. The job runs as an
    /// actor future (its signatures and commit on the signing pool). Returns whether it
    /// started.
    pub(super) fn start_push(&mut self, ctx: &mut Context<Self>) -> bool {
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
        // Awaited right here, not on the runtime: the job's own work on this thread is a
        // small state's encryption; its signatures and commit run on the signing pool, which
        // answers this thread directly (one wake-up fewer each way).
        ctx.spawn(
            async move { job.run(&store).await }
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
    pub(super) fn frame_ended(&mut self, no: u64, pushed: Pushed, ctx: &mut Context<Self>) {
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

    pub(super) fn finish_push(&mut self, done: Pushed, waiters: Vec<Waiter>, latest: Latest) {
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

    pub(super) fn save_meta(&self) {
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
}
