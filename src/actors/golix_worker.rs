//! The signing pool: the RSA-4096 signatures of the push path (a frame's container and the
//! frame itself) on a [`WorkPool`] of one thread per core for the whole process
//! (`hgx-golix-sign-N`).
//!
//! [`submit_pair`] signs a container and a frame at once, on two threads (the pool chains its
//! wake-ups so that they land on two cores, see [`WorkPool`]); whichever finishes
//! second runs the caller's continuation (the push's commit) on its own thread, so a frame
//! costs one hand-off into the pool and one back out. Jobs start in the order they were
//! queued: a continuation may wait for the commit of a frame queued before it.
//!
//! [`run_both`] runs two jobs of a new object (its container's signature and its binding's)
//! side by side the same way.
//!
//! Why not tokio's `spawn_blocking` (which the rarer single signatures still use: freeze,
//! hold, delete, handshakes): these threads do nothing but sign (and commit what they
//! signed), so at most one signature per core runs at a time, whatever else the blocking pool
//! is doing. Why not an actix `SyncArbiter` (the pool until session 11): it hands every
//! message through its own system thread to a worker, a third thread woken per signature,
//! and its replies go back to the caller before anything else can run (BENCHMARKS.md,
//! "Session 11").
//!
//! Owns: the pool, started on first use and kept for the life of the process, like tokio's
//! blocking pool (a start that failed is tried again at the next call). The identity travels
//! with each job, so the daemons of one process share the pool. And [`signing_cpu`]: the CPU
//! time its threads spent inside signatures, so the CPU a frame costs besides its signatures
//! can be measured where they run (`benches/fanout.rs`).
//!
//! Calls: `golix`, [`WorkPool`], the thread CPU clock (`process`). Used by `push` and
//! `commit` (new objects).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::DaemonError;
use crate::golix::{Error, FirstParty, Geoc, Gobd};
use crate::work_pool::WorkPool;

static POOL: Mutex<Option<WorkPool>> = Mutex::new(None);
/// Signatures made on the pool, and their threads' CPU time inside them (ns).
static SIGNATURES: AtomicU64 = AtomicU64::new(0);
static SIGNING_NS: AtomicU64 = AtomicU64::new(0);

/// Signatures made on the pool since the process started, and the CPU time spent in them.
pub fn signing_cpu() -> (u64, Duration) {
    let ns = SIGNING_NS.load(Ordering::Relaxed);
    (SIGNATURES.load(Ordering::Relaxed), Duration::from_nanos(ns))
}

/// Runs one signature, adding its thread CPU time to [`signing_cpu`].
fn timed<T>(sign: impl FnOnce() -> T) -> T {
    let t0 = crate::process::thread_cpu_time();
    let out = sign();
    let spent = crate::process::thread_cpu_time().saturating_sub(t0);
    SIGNING_NS.fetch_add(spent.as_nanos() as u64, Ordering::Relaxed);
    SIGNATURES.fetch_add(1, Ordering::Relaxed);
    out
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics under these locks but a caller's code, which leaves no half-done state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pool (started on the first call; a start that failed is tried again at the next call
/// rather than remembered).
fn pool() -> Result<WorkPool, DaemonError> {
    let mut pool = lock(&POOL);
    if let Some(p) = pool.as_ref() {
        return Ok(p.clone());
    }
    let p = WorkPool::chained(super::arbiters::default_count(), "hgx-golix-sign")
        .map_err(|e| DaemonError::Storage(format!("signing pool: {e}")))?;
    *pool = Some(p.clone());
    Ok(p)
}

fn closed() -> DaemonError {
    DaemonError::Storage("signing pool: the job was lost".into())
}

type Then<R> = Box<dyn FnOnce(Geoc, Gobd) -> R + Send>;
type Reply<R> = oneshot::Sender<Result<R, DaemonError>>;

/// The two halves of a pair as they finish, and what runs once both have.
struct Pair<R> {
    container: Option<Geoc>,
    frame: Option<Gobd>,
    rest: Option<(Then<R>, Reply<R>)>,
}

enum Half {
    Container(Geoc),
    Frame(Gobd),
}

impl<R> Pair<R> {
    /// Records one signed half (or its failure); the second half to arrive runs the
    /// continuation here, on its thread, outside the lock.
    fn finish(pair: &Mutex<Pair<R>>, half: Result<Half, Error>) {
        let mut p = lock(pair);
        let (c, f) = match half {
            Ok(Half::Container(c)) => match p.frame.take() {
                Some(f) => (c, f),
                None => return p.container = Some(c),
            },
            Ok(Half::Frame(f)) => match p.container.take() {
                Some(c) => (c, f),
                None => return p.frame = Some(f),
            },
            Err(e) => {
                // The continuation is dropped unrun (and with it whatever it holds).
                if let Some((_, reply)) = p.rest.take() {
                    drop(p);
                    let _ = reply.send(Err(e.into()));
                }
                return;
            }
        };
        let rest = p.rest.take();
        drop(p);
        if let Some((then, reply)) = rest {
            let _ = reply.send(Ok(then(c, f)));
        }
    }
}

/// Queues the signatures of `container` and `frame` (ours, unsigned) on the pool and returns
/// once both are queued: the returned future then gives what `then` made of the two signed
/// halves, `then` having run on the pool thread that signed the second. A failed signature
/// drops `then` unrun.
pub async fn submit_pair<R: Send + 'static>(
    identity: Arc<FirstParty>,
    container: Geoc,
    frame: Gobd,
    then: impl FnOnce(Geoc, Gobd) -> R + Send + 'static,
) -> Result<impl Future<Output = Result<R, DaemonError>>, DaemonError> {
    submit_pair_on(&pool()?, identity, container, frame, then).await
}

async fn submit_pair_on<R: Send + 'static>(
    pool: &WorkPool,
    identity: Arc<FirstParty>,
    mut container: Geoc,
    mut frame: Gobd,
    then: impl FnOnce(Geoc, Gobd) -> R + Send + 'static,
) -> Result<impl Future<Output = Result<R, DaemonError>>, DaemonError> {
    let (tx, rx) = oneshot::channel();
    let pair = Arc::new(Mutex::new(Pair {
        container: None,
        frame: None,
        rest: Some((Box::new(then) as Then<R>, tx)),
    }));
    let (p, id) = (pair.clone(), identity.clone());
    // A job that panics drops its half of the pair; once both halves are gone the reply
    // sender is too, and the caller gets `closed()`.
    pool.submit(move || {
        let signed = timed(|| id.sign_container(&mut container)).map(|()| container);
        Pair::finish(&p, signed.map(Half::Container));
    })
    .await
    .map_err(|_| closed())?;
    pool.submit(move || {
        let signed = timed(|| identity.sign_frame(&mut frame)).map(|()| frame);
        Pair::finish(&pair, signed.map(Half::Frame));
    })
    .await
    .map_err(|_| closed())?;
    Ok(async move { rx.await.map_err(|_| closed())? })
}

/// Runs `a` and `b` with `identity` on the pool at once: two signatures in the time of one
/// when both cores are free. Not counted in [`signing_cpu`], which is the push path's.
pub async fn run_both<A, B>(
    identity: Arc<FirstParty>,
    a: impl FnOnce(&FirstParty) -> Result<A, Error> + Send + 'static,
    b: impl FnOnce(&FirstParty) -> Result<B, Error> + Send + 'static,
) -> Result<(A, B), DaemonError>
where
    A: Send + 'static,
    B: Send + 'static,
{
    let pool = pool()?;
    let id = identity.clone();
    let a = pool.submit(move || a(&id)).await.map_err(|_| closed())?;
    let b = pool
        .submit(move || b(&identity))
        .await
        .map_err(|_| closed())?;
    let (a, b) = tokio::join!(a, b);
    Ok((a.map_err(|_| closed())??, b.map_err(|_| closed())??))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::{Object, Secret};
    use crate::testdata::fixture_first_party;

    /// A new object's two jobs run on two of the pool's threads at once (each waits for
    /// the other at a barrier).
    #[tokio::test]
    async fn run_both_runs_the_two_jobs_side_by_side() {
        let id = Arc::new(fixture_first_party(1));
        let gate = Arc::new(std::sync::Barrier::new(2));
        let (g1, g2) = (gate.clone(), gate);
        let on_pool = |g: Arc<std::sync::Barrier>| {
            move |_: &FirstParty| {
                g.wait();
                Ok(std::thread::current().name().map(str::to_owned))
            }
        };
        let both = run_both(id, on_pool(g1), on_pool(g2));
        let (a, b) = tokio::time::timeout(Duration::from_secs(30), both)
            .await
            .expect("both jobs ran at once")
            .expect("ran");
        assert_ne!(a, b);
        for name in [a, b] {
            assert!(name.is_some_and(|t| t.starts_with("hgx-golix-sign-")));
        }
    }

    #[tokio::test]
    async fn the_second_half_runs_the_continuation_with_both_halves_signed() {
        let id = Arc::new(fixture_first_party(1));
        let geoc = id.unsigned_container(b"state", &Secret::random());
        let first = id.make_bind_dynamic(geoc.ghid).expect("frame 0");
        let frame = id
            .unsigned_next_frame(&first, geoc.ghid, 2)
            .expect("frame 1");
        let party = id.second_party().clone();
        let done = submit_pair(id, geoc, frame, move |c, f| {
            let thread = std::thread::current().name().map(str::to_owned);
            let c_ok = Object::Geoc(c).verify(Some(&party)).is_ok();
            let f_ok = Object::Gobd(f).verify(Some(&party)).is_ok();
            (c_ok, f_ok, thread)
        })
        .await
        .expect("queued");
        let (c_ok, f_ok, thread) = done.await.expect("signed");
        assert!(
            c_ok && f_ok,
            "both halves are signed before the continuation runs"
        );
        assert!(thread.is_some_and(|t| t.starts_with("hgx-golix-sign-")));
    }

    /// What the push pipeline relies on: a continuation that waits for the one of a pair
    /// queued before it does not deadlock, even on a single thread.
    #[tokio::test]
    async fn a_continuation_may_wait_for_an_earlier_pair_on_one_thread() {
        let pool = WorkPool::chained(1, "test-sign").expect("pool");
        let id = Arc::new(fixture_first_party(1));
        let pair = || {
            let geoc = id.unsigned_container(b"state", &Secret::random());
            let first = id.make_bind_dynamic(geoc.ghid).expect("frame 0");
            let frame = id
                .unsigned_next_frame(&first, geoc.ghid, 2)
                .expect("frame 1");
            (geoc, frame)
        };
        let (durable, after) = oneshot::channel::<()>();
        let (g1, f1) = pair();
        let first = submit_pair_on(&pool, id.clone(), g1, f1, move |_, _| {
            let _ = durable.send(());
        })
        .await
        .expect("queued");
        let (g2, f2) = pair();
        let second = submit_pair_on(&pool, id.clone(), g2, f2, move |_, _| after.blocking_recv())
            .await
            .expect("queued");
        let waited = tokio::time::timeout(std::time::Duration::from_secs(60), second).await;
        assert_eq!(waited.expect("no deadlock").expect("signed"), Ok(()));
        first.await.expect("signed");
    }

    #[tokio::test]
    async fn a_failed_half_drops_the_continuation_and_reports_the_error() {
        let id = Arc::new(fixture_first_party(1));
        let other = fixture_first_party(2);
        let geoc = id.unsigned_container(b"state", &Secret::random());
        // A frame of another identity: signing it with ours fails (`WrongSigner`).
        let first = other.make_bind_dynamic(geoc.ghid).expect("frame 0");
        let frame = other
            .unsigned_next_frame(&first, geoc.ghid, 2)
            .expect("frame 1");
        let (ran, never) = oneshot::channel::<()>();
        let done = submit_pair(id, geoc, frame, move |_, _| {
            let _ = ran.send(());
        })
        .await
        .expect("queued");
        assert!(done.await.is_err(), "the failure reaches the caller");
        assert!(
            never.await.is_err(),
            "the continuation never ran, and is gone"
        );
    }
}
