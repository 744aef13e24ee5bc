//! # The publish pipeline of one connection
//!
//! A connection's publishes run on the verify pool ([`WorkPool`](crate::work_pool::WorkPool)) in order,
//! overlapped: each one's signature is checked while the ones before it still are
//! ([`Archive::check`]); it is applied only once the one before it is ([`Archive::commit`];
//! one whose signer may be among them is decided then, whole, [`Archive::publish_from`]).
//! One checked before the one ahead is applied leaves its commit to the thread that applies
//! that one, which runs it next: no pool thread waits for another.
//! Its durability comes from the group commit, registered on the pool thread right after
//! the apply, so that the flush starts without a hop through the connection's thread: on
//! the pool thread itself when it is fast ([`FlushStart::lead`]), else on the flusher's.
//!
//! Group commit in pairs: when the next publish of the connection is already in the pipeline
//! as one is applied, that one registers no flush of its own: it hands its durability to the
//! next, which registers one flush for both once it is applied (or refused). A publisher's
//! binding and container (which arrive together) then cost one flush, not two back to back.
//! A publish that was handed one never hands its own on, so no publish waits for more than
//! the one after it.
//!
//! Owns: `Link` (what links one publish to the next), the job ([`job`]), and
//! [`Pending`] (a publish's outcome as the announcer waits for it). Calls: [`Archive`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use rmpv::Value;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::persist::store::Sender;
use crate::persist::{
    Archive, Checked, FlushStart, Notification, PersistError, Published, SyncWait,
};

/// Between one publish and the next: whether the next is in the pipeline yet, the
/// durability the first handed to it, and the next one's commit while it waits for the first.
#[derive(Default)]
struct Link {
    next_queued: bool,
    handed: Option<oneshot::Sender<SyncWait>>,
    /// Set once this publish is applied (or refused).
    applied: bool,
    /// The next publish's commit, checked and waiting for this one to be applied: whoever
    /// applies this one runs it next, on the same thread.
    then: Option<Commit>,
}

fn lock(l: &Mutex<Link>) -> std::sync::MutexGuard<'_, Link> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// A publish's commit, given the durability the one before it handed on (if any); returns
/// the commit of the publish after it if that one was waiting, with what this one handed.
struct Commit(Box<dyn FnOnce(Covering) -> Option<(Commit, Covering)> + Send>);

/// The durability the publish ahead handed to the next one (see the module docs).
type Covering = Option<oneshot::Sender<SyncWait>>;

/// A connection's end of the pipeline: the last publish that entered it.
#[derive(Default)]
pub(super) struct Tail {
    /// Resolves once the last publish is applied (or refused).
    applied: Option<oneshot::Receiver<()>>,
    link: Option<Arc<Mutex<Link>>>,
}

impl Tail {
    /// Whether no publish is in the pipeline (every one that entered it is applied).
    pub(super) fn is_empty(&mut self) -> bool {
        self.applied.as_mut().map_or(true, |a| {
            !matches!(a.try_recv(), Err(oneshot::error::TryRecvError::Empty))
        })
    }

    /// Waits until every publish that entered the pipeline is applied.
    pub(super) async fn applied(&mut self) {
        if let Some(rx) = self.applied.take() {
            let _ = rx.await;
        }
    }
}

/// How a publish becomes durable.
pub(super) enum Durable {
    /// A flush registered for it.
    Own(SyncWait),
    /// The next publish registers it (see the module docs).
    Handed(oneshot::Receiver<SyncWait>),
}

pub(super) type Applied = Result<(Published, Durable), PersistError>;

/// The pool job of the next publish of `object` (from `sender`) behind `tail`, and where
/// its outcome arrives; `tail` then ends with it.
///
/// The job checks the publish. It commits it at once if the one ahead of it is applied;
/// otherwise it leaves its commit to the job that applies that one, and the pool thread is
/// free. That job runs it right after its own commit, on the same thread and caches: a
/// binding's container checked by then is committed without a thread wake-up, while the
/// records the binding just changed are still in this core's caches.
///
/// A commit sends its own outcome before it hands the publish ahead of it its durability:
/// once that one is announced, this one's outcome is there already, so both go out in one
/// announcement (the subscribers' notifications, then both acks) rather than the first
/// one's ack alone, ahead of the notification its successor causes. A fast flush
/// ([`FlushStart::lead`]) it runs itself before it sends anything, unless the next commit
/// waits for it; a slow one it leaves to the flusher, woken last, so that the flush never
/// completes before the outcome it covers is there.
pub(super) fn job(
    tail: &mut Tail,
    archive: Archive,
    object: Bytes,
    sender: Sender,
) -> (impl FnOnce() + Send + 'static, oneshot::Receiver<Applied>) {
    let (outcome_tx, outcome_rx) = oneshot::channel();
    // Still being checked or applied: its successor is checked meanwhile, committed after.
    let ahead = tail
        .applied
        .take()
        .is_some_and(|mut a| matches!(a.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
    let before = tail.link.take().filter(|_| ahead);
    if let Some(l) = &before {
        lock(l).next_queued = true;
    }
    let (applied, applied_rx) = oneshot::channel::<()>();
    let mine = Arc::new(Mutex::new(Link::default()));
    tail.applied = Some(applied_rx);
    tail.link = Some(mine.clone());
    let job = move || {
        let early = before
            .as_ref()
            .map(|_| caught(|| archive.check(object.clone())));
        let commit = Commit(Box::new(move |covering| {
            let (outcome, hand, start) = apply(&archive, object, sender, early, covering, &mine);
            drop(applied);
            let next = {
                let mut l = lock(&mine);
                l.applied = true;
                l.then.take().map(|then| (then, l.handed.take()))
            };
            // Unless the next publish's commit waits here (it goes first; the flusher takes
            // this flush meanwhile), a fast flush runs on this thread before the announcer
            // hears of anything: woken once, it finds the outcomes and their durability there.
            let start = match next {
                None => start.lead().err(),
                Some(_) => Some(start),
            };
            let _ = outcome_tx.send(outcome);
            if let Some((tx, w)) = hand {
                let _ = tx.send(w);
            }
            // Only now: a flusher woken earlier takes this core and finishes first, and the
            // announcer, woken by it, would find no outcome yet and sleep again.
            drop(start);
            next
        }));
        let mut next = match &before {
            None => Some((commit, None)),
            Some(l) => {
                let mut l = lock(l);
                if l.applied {
                    let covering = l.handed.take();
                    Some((commit, covering))
                } else {
                    l.then = Some(commit);
                    None
                }
            }
        };
        // Each commit returns the next one's if it was waiting (a loop, not recursion:
        // a connection may have `max_in_flight` publishes in the pipeline).
        while let Some((Commit(f), covering)) = next {
            next = f(covering);
        }
    };
    (job, outcome_rx)
}

/// `f`, a panic in it refused like an error: the publishes behind still get committed (or
/// answered), since this one's commit is what runs theirs.
fn caught<T>(f: impl FnOnce() -> Result<T, PersistError>) -> Result<T, PersistError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(PersistError::Storage("the publish failed (a panic)".into())))
}

/// The durability a commit hands to the publish ahead of it, once its own outcome is sent.
type Hand = Option<(oneshot::Sender<SyncWait>, SyncWait)>;

/// Commits one publish (`early`: its check, made while the ones ahead were in the
/// pipeline) and registers its durability: its own flush, or handed to the next publish
/// when that one is in the pipeline already, plus the flush of the one ahead if that one
/// handed it here (`covering`).
fn apply(
    archive: &Archive,
    object: Bytes,
    sender: Sender,
    early: Option<Result<Checked, PersistError>>,
    covering: Covering,
    mine: &Mutex<Link>,
) -> (Applied, Hand, FlushStart) {
    let result = caught(|| match early {
        Some(Ok(checked)) => archive.commit(checked, sender),
        // Its signer's GIDC may be one of the publishes ahead: decide now.
        Some(Err(PersistError::UnknownAuthor(_))) | None => archive.publish_from(object, sender),
        // Nothing the publishes ahead could change (`Archive::check`).
        Some(Err(e)) => Err(e),
    });
    let handed = match (&result, &covering) {
        (Ok(_), None) => {
            let mut l = lock(mine);
            l.next_queued.then(|| {
                let (tx, rx) = oneshot::channel();
                l.handed = Some(tx);
                rx
            })
        }
        _ => None,
    };
    let own = result.is_ok() && handed.is_none();
    let (mut waits, start) =
        archive.sync_waits_deferred(usize::from(covering.is_some()) + usize::from(own));
    let own_wait = if own { waits.pop() } else { None };
    let hand = match (covering, waits.pop()) {
        (Some(tx), Some(w)) => Some((tx, w)),
        _ => None,
    };
    let outcome = result.and_then(|published| match (handed, own_wait) {
        (Some(rx), _) => Ok((published, Durable::Handed(rx))),
        (None, Some(w)) => Ok((published, Durable::Own(w))),
        (None, None) => Err(PersistError::Storage("no flush registered".into())),
    });
    (outcome, hand, start)
}

/// A publish on its way to being announced, in its connection's publish order.
pub(super) struct Pending {
    stage: Stage,
    pub(super) id: Value,
    /// Holds one of the connection's `max_in_flight` slots until answered (which also
    /// bounds the announcer's channel).
    _permit: OwnedSemaphorePermit,
    /// Holds the publish's share of the server's `inbound_bytes_total` until answered.
    _bytes: OwnedSemaphorePermit,
}

enum Stage {
    /// Checked and applied on the pool.
    Applying(oneshot::Receiver<Applied>),
    /// Applied; waits for the group commit that covers it.
    Syncing(Option<Published>, Durable),
    /// Durable (or refused): the outcome, until taken.
    Done(Option<Result<Published, PersistError>>),
}

/// A publish's outcome asked for after it was taken: a bug of ours, never a peer's doing.
pub(super) fn announced_twice() -> PersistError {
    PersistError::Storage("publish announced twice".into())
}

impl Pending {
    pub(super) fn new(
        applying: oneshot::Receiver<Applied>,
        id: Value,
        permit: OwnedSemaphorePermit,
        bytes: OwnedSemaphorePermit,
    ) -> Pending {
        Pending {
            stage: Stage::Applying(applying),
            id,
            _permit: permit,
            _bytes: bytes,
        }
    }

    /// The publish's outcome once it is durable (or refused).
    pub(super) fn poll_outcome(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Published, PersistError>> {
        let gone = || PersistError::Unavailable("shutting down".into());
        loop {
            match &mut self.stage {
                Stage::Applying(rx) => match ready!(Pin::new(rx).poll(cx)) {
                    Ok(Ok((p, durable))) => self.stage = Stage::Syncing(Some(p), durable),
                    Ok(Err(e)) => return Poll::Ready(Err(e)),
                    Err(_) => return Poll::Ready(Err(gone())),
                },
                Stage::Syncing(_, Durable::Handed(rx)) => match ready!(Pin::new(rx).poll(cx)) {
                    Ok(w) => {
                        if let Stage::Syncing(p, _) = &mut self.stage {
                            self.stage = Stage::Syncing(p.take(), Durable::Own(w));
                        }
                    }
                    Err(_) => return Poll::Ready(Err(gone())),
                },
                Stage::Syncing(published, Durable::Own(wait)) => {
                    let r = ready!(Pin::new(wait).poll(cx))
                        .and_then(|()| published.take().ok_or_else(announced_twice));
                    self.stage = Stage::Done(Some(r));
                }
                Stage::Done(r) => {
                    return Poll::Ready(r.take().unwrap_or_else(|| Err(announced_twice())))
                }
            }
        }
    }

    /// Whether the outcome is known, without taking it (see [`Pending::notifications`]).
    pub(super) fn is_ready(&mut self) -> bool {
        // Advance as far as possible; a ready outcome is put back for the taker.
        if let Some(r) = self.try_outcome() {
            self.stage = Stage::Done(Some(r));
        }
        matches!(self.stage, Stage::Done(Some(_)))
    }

    /// The notifications of a publish that is durable ([`Pending::is_ready`]); none else.
    pub(super) fn notifications(&self) -> &[Notification] {
        match &self.stage {
            Stage::Done(Some(Ok(p))) => &p.notifications,
            _ => &[],
        }
    }

    /// The outcome if it is known already.
    pub(super) fn try_outcome(&mut self) -> Option<Result<Published, PersistError>> {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        match self.poll_outcome(&mut cx) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::Secret;
    use crate::testdata::fixture_first_party;

    /// The container's job runs first: checked, it leaves its commit behind, since the
    /// binding ahead is not applied yet. The binding's job then applies both, in order, and
    /// one flush covers both.
    #[test]
    fn a_commit_left_behind_runs_when_the_one_ahead_is_applied() {
        let archive = Archive::temporary().unwrap();
        let a = fixture_first_party(1);
        archive.publish(&a.gidc().encode()).unwrap();
        let c = a.make_container(b"state", &Secret::random()).unwrap();
        let f = a.make_bind_dynamic(c.ghid).unwrap();
        let mut tail = Tail::default();
        let anyone = Sender::Anonymous;
        let (binding, binding_rx) = job(&mut tail, archive.clone(), f.encode().into(), anyone);
        let (container, container_rx) = job(&mut tail, archive.clone(), c.encode().into(), anyone);

        container();
        assert!(
            !archive.exists(&c.ghid).unwrap(),
            "left for the binding's job"
        );
        let flushes = archive.flush_count();
        binding();

        let (p1, d1) = binding_rx.blocking_recv().unwrap().unwrap();
        let (p2, d2) = container_rx.blocking_recv().unwrap().unwrap();
        assert_eq!((p1.ghid, p2.ghid), (f.frame, c.ghid));
        assert!(archive.exists(&c.ghid).unwrap());
        assert_eq!(
            p2.notifications.len(),
            1,
            "the frame, once its container is there"
        );
        // The binding handed its durability to the container, which flushes for both.
        let (Durable::Handed(handed), Durable::Own(own)) = (d1, d2) else {
            panic!("the binding hands its durability on");
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            own.await.unwrap();
            handed.await.unwrap().await.unwrap();
        });
        assert_eq!(archive.flush_count(), flushes + 1);
    }
}
