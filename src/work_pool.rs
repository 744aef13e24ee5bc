//! # Work pool
//!
//! A fixed pool of named OS threads (one per core by default) for CPU-bound work kept off the
//! event loops: the persister's publishes ([`Archive::publish`]: decode, RSA verify, rules,
//! apply) and the daemon's push signatures (`actors::golix_worker`). Jobs queue in a bounded
//! queue, so a burst waits instead of spawning threads without limit.
//!
//! [`WorkPool::per_core`] binds its threads one to each core (the persister's
//! `server.pin_verify_threads`, for a host of its own): left to the scheduler, two jobs
//! submitted together (a publisher's binding and container) were often both woken on the
//! core they last ran on and ran one after the other while the other core stayed idle (a
//! quarter to half of the updates in the fanout harness's traces; BENCHMARKS.md). Bound,
//! a thread waits for its core while another process runs there.
//!
//! One queue under one lock, one condition variable: a job wakes exactly one idle thread
//! (a thread switch costs tens of microseconds in the VMs we measure on, and a job is a
//! few hundred; the previous design, idle threads queued on a lock in front of a channel,
//! woke a second thread per job only to put it back to sleep).
//!
//! A pool of long jobs ([`WorkPool::chained`]: the daemon's signatures, milliseconds each)
//! chains its wake-ups instead: a submitter wakes an idle thread only if none is waking
//! already, and the thread that takes a job wakes the next one if jobs are left. Why: two
//! idle threads woken back to back by a submitter were both placed on the core the first
//! one last ran on, the second queued behind the first's job while the other core stayed
//! idle (a push's two signatures, ~3 ms each on this machine, ran one after the other in
//! about half of the paced updates traced; BENCHMARKS.md, "Session 15"). Woken by a thread
//! that is running, the next one is placed on an idle core, a wake-up (tens of
//! microseconds) later. For the persister's checks (a tenth of a millisecond) that delay
//! cost as much as it saved, so its pool wakes directly, or is bound to the cores.
//!
//! Owns: the threads and the job queue. Calls: nothing of ours; its users hand it closures.
//!
//! [`Archive::publish`]: crate::persist::Archive::publish

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::{oneshot, Semaphore};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs waiting for a thread, at most.
const QUEUE: usize = 1024;

/// The pool is gone (server shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolClosed;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Threads waiting for a job.
    idle: usize,
    /// A thread has been woken and has not taken the lock since: the next wake-up is its.
    waking: bool,
}

impl Queue {
    /// Whether a thread should be woken now (it is then counted as waking).
    fn wake_one(&mut self) -> bool {
        let wake = !self.jobs.is_empty() && self.idle > 0 && !self.waking;
        self.waking |= wake;
        wake
    }
}

struct Shared {
    /// Whether wake-ups are chained (module docs).
    chained: bool,
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Free places in the queue: a submitter waits here (asynchronously) when it is full.
    room: Semaphore,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Jobs run outside the lock, so a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next(&self) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if let Some(job) = q.jobs.pop_front() {
                // The chain (module docs): this thread runs, so the next one lands elsewhere.
                let wake = self.chained && q.wake_one();
                drop(q);
                if wake {
                    self.ready.notify_one();
                }
                self.room.add_permits(1);
                return Some(job);
            }
            if q.closed {
                return None;
            }
            q.idle += 1;
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            q.idle -= 1;
            // Woken (or spuriously awake): either way the wake-up in flight has landed, and
            // whoever takes a job next passes the chain on.
            q.waking = false;
        }
    }
}

/// The cores this process can use (its CPU quota and affinity), 2 if unknown.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Closes the queue when the last [`WorkPool`] clone drops: the threads finish what is
/// queued, then exit.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.room.close();
        self.0.ready.notify_all();
    }
}

/// Cheap to clone; the threads stop once every clone is dropped and the queue is empty.
#[derive(Clone)]
pub struct WorkPool {
    shared: Arc<Shared>,
    threads: usize,
    _closer: Arc<Closer>,
}

impl WorkPool {
    /// `threads` = 0 means one per core; they are named `{name}-0`, `{name}-1`, ….
    pub fn new(threads: usize, name: &str) -> std::io::Result<WorkPool> {
        WorkPool::start(threads, name, &[], false)
    }

    /// As [`WorkPool::new`], with chained wake-ups (module docs): for jobs of milliseconds
    /// that should run side by side when submitted together.
    pub fn chained(threads: usize, name: &str) -> std::io::Result<WorkPool> {
        WorkPool::start(threads, name, &[], true)
    }

    /// One thread per core (as [`WorkPool::new`] with 0), thread `i` bound to the `i`-th
    /// core this process may run on: jobs submitted together then run side by side. Unbound
    /// where the kernel refuses, or where the cores usable are fewer than those allowed (a
    /// CPU quota): binding would then crowd the threads onto some cores.
    pub fn per_core(name: &str) -> std::io::Result<WorkPool> {
        let cpus = crate::process::allowed_cpus();
        let bind = if cpus.len() == cores() {
            &cpus[..]
        } else {
            &[]
        };
        WorkPool::start(0, name, bind, false)
    }

    /// `threads` threads (0 = one per core); thread `i` is bound to `cpus[i]` if there is one.
    fn start(
        threads: usize,
        name: &str,
        cpus: &[usize],
        chained: bool,
    ) -> std::io::Result<WorkPool> {
        let n = if threads == 0 { cores() } else { threads };
        let shared = Arc::new(Shared {
            chained,
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            room: Semaphore::new(QUEUE),
        });
        // First: should a thread fail to start, the ones started already are told to exit.
        let closer = Arc::new(Closer(shared.clone()));
        for i in 0..n {
            let shared = shared.clone();
            let cpu = cpus.get(i).copied();
            // Joined by nobody: a thread exits on its own once the queue is closed and empty.
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        crate::process::pin_current_thread(cpu);
                    }
                    while let Some(job) = shared.next() {
                        // A panicking job (reported by the panic hook) drops its result
                        // channel, so its caller gets an error; the thread goes on.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(WorkPool {
            _closer: closer,
            shared,
            threads: n,
        })
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on a pool thread and returns its result.
    pub async fn run<F, R>(&self, f: F) -> Result<R, PoolClosed>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.submit(f).await?.await.map_err(|_| PoolClosed)
    }

    /// Queues `f` (waiting for room in the queue) and returns at once: its result arrives on
    /// the receiver. Jobs start in the order they were queued, so a job may wait for one
    /// queued before it (that one is running or done by then) without deadlock.
    pub async fn submit<F, R>(&self, f: F) -> Result<oneshot::Receiver<R>, PoolClosed>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        // The place is given back by the thread that takes the job (`Shared::next`).
        self.shared
            .room
            .acquire()
            .await
            .map_err(|_| PoolClosed)?
            .forget();
        self.enqueue(job);
        Ok(rx)
    }

    /// Queues `f` from synchronous code, if there is room now; else gives it back (for the
    /// caller to run itself). Nothing reports its end: `f` does that if it needs to.
    pub fn try_submit<F>(&self, f: F) -> Result<(), F>
    where
        F: FnOnce() + Send + 'static,
    {
        // Given back by the thread that takes the job, as in `submit`.
        match self.shared.room.try_acquire() {
            Ok(place) => place.forget(),
            Err(_) => return Err(f),
        }
        self.enqueue(Box::new(f));
        Ok(())
    }

    /// Puts a job (its queue place taken) in the queue and wakes a thread for it.
    fn enqueue(&self, job: Job) {
        // Not closed: `self` keeps the `Closer` alive.
        let mut q = self.shared.lock();
        q.jobs.push_back(job);
        let wake = !self.shared.chained || q.wake_one();
        drop(q);
        if wake {
            self.shared.ready.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_off_thread() {
        let pool = WorkPool::new(2, "test-pool").unwrap();
        let here = std::thread::current().id();
        let there = pool.run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(here, there);
        let results =
            futures_util::future::join_all((0..50).map(|i| pool.run(move || i * 2))).await;
        assert_eq!(
            results.iter().map(|r| r.unwrap()).sum::<i32>(),
            (0..50).map(|i| i * 2).sum::<i32>()
        );
    }

    /// `try_submit` runs a job on a pool thread, and gives it back when the queue is full.
    #[test]
    fn try_submit_queues_while_there_is_room() {
        let pool = WorkPool::new(1, "test-pool").unwrap();
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let (ran, done) = std::sync::mpsc::channel();
        let here = std::thread::current().id();
        // The only thread waits until released; the queue then fills.
        let job = move || {
            let _ = held.recv();
            let _ = ran.send(std::thread::current().id());
        };
        assert!(pool.try_submit(job).is_ok());
        let mut queued = 0;
        while pool.try_submit(|| ()).is_ok() {
            queued += 1;
            assert!(queued <= QUEUE, "the queue is bounded");
        }
        assert!(queued >= QUEUE - 1, "room for a whole queue: {queued}");
        drop(hold);
        assert_ne!(done.recv().unwrap(), here);
    }

    /// Each thread bound to its own core, or (under a CPU quota) none bound.
    #[tokio::test]
    async fn a_per_core_pool_has_a_thread_bound_to_each_core() {
        let cpus = crate::process::allowed_cpus();
        assert!(!cpus.is_empty(), "the allowed cpus can be read");
        let cores = std::thread::available_parallelism().unwrap().get();
        let pool = WorkPool::per_core("test-pool").unwrap();
        // One job per thread, each held until every thread has reported its affinity.
        let gate = Arc::new(std::sync::Barrier::new(cores));
        let runs = (0..cores).map(|_| {
            let gate = gate.clone();
            pool.run(move || {
                let mine = crate::process::allowed_cpus();
                gate.wait();
                mine
            })
        });
        let mut seen: Vec<Vec<usize>> = futures_util::future::join_all(runs)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        seen.sort();
        let want: Vec<Vec<usize>> = if cpus.len() == cores {
            cpus.iter().map(|&c| vec![c]).collect()
        } else {
            vec![cpus.clone(); cores]
        };
        assert_eq!(seen, want);
    }

    /// Jobs submitted together to a chained pool all start, each on its own thread, though
    /// the submitter wakes one thread and each thread the next (the chain must not stall):
    /// every round's jobs wait for each other at a barrier.
    #[tokio::test]
    async fn jobs_submitted_together_all_run_at_once() {
        let threads = 4;
        let pool = WorkPool::chained(threads, "test-pool").unwrap();
        for round in 0..200 {
            let gate = Arc::new(std::sync::Barrier::new(threads));
            let queued = futures_util::future::join_all((0..threads).map(|_| {
                let gate = gate.clone();
                pool.submit(move || {
                    gate.wait();
                    std::thread::current().id()
                })
            }))
            .await;
            let ran = futures_util::future::join_all(queued.into_iter().map(Result::unwrap));
            let ran = tokio::time::timeout(std::time::Duration::from_secs(10), ran)
                .await
                .unwrap_or_else(|_| panic!("round {round}: a job never started"));
            let ids: std::collections::HashSet<_> = ran.into_iter().map(Result::unwrap).collect();
            assert_eq!(ids.len(), threads);
            if round % 2 == 0 {
                // Sometimes the threads have gone idle again before the next round.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let pool = WorkPool::new(1, "test-pool").unwrap();
        let failed = pool.run(|| -> u8 { panic!("a job that panics") }).await;
        assert_eq!(failed, Err(PoolClosed));
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), pool.run(|| 7)).await;
        assert_eq!(next, Ok(Ok(7)), "the only thread is still there");
    }

    #[tokio::test]
    async fn jobs_queued_before_the_last_handle_drops_still_run() {
        let pool = WorkPool::new(1, "test-pool").unwrap();
        let gate = Arc::new(std::sync::Barrier::new(2));
        let g = gate.clone();
        // Holds the only thread until the pool handle is gone.
        let first = pool.submit(move || g.wait()).await.unwrap();
        let rest: Vec<_> = futures_util::future::join_all((0..10).map(|i| pool.submit(move || i)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        drop(pool);
        gate.wait();
        first.await.unwrap();
        let done: Vec<i32> = futures_util::future::join_all(rest)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(done, (0..10).collect::<Vec<_>>());
    }
}
