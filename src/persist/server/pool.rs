//! # Verify pool
//!
//! A fixed pool of OS threads (one per core by default) that runs [`Archive::publish`]
//! (decode, RSA verify, rules, apply) off the actix event loops. Jobs queue in a bounded
//! channel, so a burst of publishes waits instead of spawning threads without limit.
//!
//! Owns: the threads and the job queue. Calls: nothing of ours; the session hands it closures.
//!
//! [`Archive::publish`]: crate::persist::Archive::publish

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs waiting for a thread, at most.
const QUEUE: usize = 1024;

/// The pool is gone (server shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolClosed;

/// Cheap to clone; the threads stop once every clone is dropped and the queue is empty.
#[derive(Clone)]
pub struct VerifyPool {
    tx: mpsc::Sender<Job>,
    /// Joined by nobody: the threads exit on their own when the channel closes.
    _threads: Arc<Vec<JoinHandle<()>>>,
}

impl VerifyPool {
    /// `threads` = 0 means one per core.
    pub fn new(threads: usize) -> std::io::Result<VerifyPool> {
        let n = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        // A std Mutex around the receiver: idle threads queue on it, the holder blocks in
        // `blocking_recv`, and the lock is released before the job runs.
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("hgx-verify-{i}"))
                .spawn(move || loop {
                    let job = {
                        let mut guard = rx.lock().unwrap_or_else(|e| e.into_inner());
                        guard.blocking_recv()
                    };
                    match job {
                        Some(job) => job(),
                        None => return,
                    }
                })?;
            handles.push(h);
        }
        Ok(VerifyPool {
            tx,
            _threads: Arc::new(handles),
        })
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
        self.tx.send(job).await.map_err(|_| PoolClosed)?;
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_off_thread() {
        let pool = VerifyPool::new(2).unwrap();
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
}
