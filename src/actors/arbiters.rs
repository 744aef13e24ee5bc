//! The daemon's actor threads: one actix `System` on its own thread ("hgx-actors") and
//! arbiters beside it, one per core in all, on which the daemon's actix actors run.
//!
//! Owns: those threads, from [`ActorThreads::start`] (at boot) to [`ActorThreads::stop`] (at
//! shutdown; every actor on them is dropped by the time it returns). The daemon may run under
//! a plain tokio runtime (tests, embedders) that has no actix system, so it brings its own.
//! Actors only decide here: their Golix work, sled I/O and commits run on the daemon's tokio
//! runtime ([`super::local::Local::runtime`]), off these threads. [`Arbiters`] is the
//! non-owning round-robin view of those threads that start-up code and the object registry
//! use to place new actors; only `DaemonHandle` holds the [`ActorThreads`] themselves.
//!
//! Calls: `actix_rt`. Used by `boot` (every actor starts here), the object registry and
//! `DaemonHandle` (stop).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_rt::{Arbiter, ArbiterHandle, System};

/// The actix system of one daemon and its arbiters.
pub struct ActorThreads {
    system: System,
    arbiters: Arbiters,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Where new actors start: the daemon's arbiters, round robin. Cheap to clone; holding it
/// does not keep the threads running.
#[derive(Clone)]
pub struct Arbiters {
    handles: Arc<[ArbiterHandle]>,
    next: Arc<AtomicUsize>,
}

impl Arbiters {
    /// The arbiter the next actor starts on.
    pub fn next(&self) -> ArbiterHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].clone()
    }
}

impl ActorThreads {
    /// Starts the system thread and `count - 1` more arbiters (at least one thread in all).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hgx-actors".into())
            .spawn(move || {
                let system = System::new();
                let extra: Vec<Arbiter> = (1..count.max(1)).map(|_| Arbiter::new()).collect();
                let mut handles = vec![Arbiter::current()];
                handles.extend(extra.iter().map(|a| a.handle()));
                let _ = tx.send((System::current(), handles));
                // Returns once `System::stop`, which stops every arbiter of the system too.
                let _ = system.run();
                for a in extra {
                    let _ = a.join();
                }
            })?;
        let (system, arbiters) = rx
            .recv()
            .map_err(|_| std::io::Error::other("the actor thread did not start"))?;
        Ok(ActorThreads {
            system,
            arbiters: Arbiters {
                handles: arbiters.into(),
                next: Arc::new(AtomicUsize::new(0)),
            },
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The arbiter the next actor starts on (round robin).
    pub fn next(&self) -> ArbiterHandle {
        self.arbiters.next()
    }

    /// The arbiters, for code that starts actors later.
    pub fn arbiters(&self) -> Arbiters {
        self.arbiters.clone()
    }

    /// Stops every arbiter and waits until their threads, and the actors on them, are gone.
    pub async fn stop(&self) {
        self.system.stop();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// A daemon that fails to start (or is dropped without a shutdown) does not leave its
/// threads behind.
impl Drop for ActorThreads {
    fn drop(&mut self) {
        self.system.stop();
    }
}

/// One thread per core (at least two: one actor blocked on a slow handler then does not
/// stall the others).
pub fn default_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}
