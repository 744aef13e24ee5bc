//! # Beside: a job run on another core while the caller runs its own
//!
//! One thread per core the process may use (at most [`MAX_THREADS`]), each bound to its
//! core and woken by name ([`std::thread::Thread::unpark`]). [`Beside::hand`] gives a job
//! to the thread of a core other than the caller's, so that the two jobs run side by side;
//! [`Handed::finish`] then waits for it, or runs it on the caller if its thread has not
//! started it yet. Why not the verify pool: it wakes its threads through one condition
//! variable, so the kernel picks the thread, and a thread woken by a running one is placed
//! on the waker's core and waits for it (BENCHMARKS.md, "Session 20"): the two jobs then
//! ran one after the other.
//!
//! A thread whose core is busy with something else does not start the job, and the caller
//! takes it back once its own work is done: then both jobs run on the caller, as without
//! this, for the cost of a lock and a wake-up. (A job its thread has started is waited for.)
//! Each thread holds one job at a time and refuses the next meanwhile, so nothing queues
//! here.
//!
//! Users: the persister's sessions (a lone frame's container, checked beside the frame) and
//! its hub (the parts of a large fanout round, sent beside the caller's part).
//!
//! Owns: its threads. Calls: [`crate::process`] (to bind them); its users hand it closures.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// A job for another core's thread.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads at most, whatever the number of cores: enough for a few connections' pairs at
/// once (the lightly loaded path), and for a fanout round's parts (one per thread, each of
/// at least `PART_MIN` subscribers, so a round of 1,000 has at most 7 anyway).
pub const MAX_THREADS: usize = 8;

/// How long [`Handed::finish`] checks for the job's end before it sleeps: about what a
/// container's check costs, so that a job started late is waited for without a wake-up.
const SPIN: Duration = Duration::from_micros(100);

#[derive(Default)]
struct SlotState {
    /// Handed over, not started: (ticket, job).
    job: Option<(u64, Job)>,
    /// The ticket of the job running now, if any.
    running: Option<u64>,
    /// Tickets are numbered from 1; every job up to this one has finished or was taken back.
    finished: u64,
    issued: u64,
    closed: bool,
}

struct Slot {
    cpu: usize,
    state: Mutex<SlotState>,
    ended: Condvar,
    thread: Thread,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // Jobs run outside the lock (and their panics are caught), so it stays consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The threads; they stop when it is dropped.
pub struct Beside {
    slots: Vec<Arc<Slot>>,
}

impl Beside {
    /// One thread per core (`{name}-{cpu}`), each bound to its core. `None` with fewer than
    /// two cores, where the cores usable are fewer than those allowed (a CPU quota: bound
    /// threads would crowd onto some), or off Linux.
    pub fn start(name: &str) -> std::io::Result<Option<Beside>> {
        let cpus = crate::process::allowed_cpus();
        let usable = std::thread::available_parallelism().map_or(0, |n| n.get());
        if cpus.len() < 2 || cpus.len() != usable || current_cpu().is_none() {
            return Ok(None);
        }
        let mut slots = Vec::new();
        for cpu in cpus.into_iter().take(MAX_THREADS) {
            let (tx, rx) = std::sync::mpsc::channel::<Arc<Slot>>();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{cpu}"))
                .spawn(move || {
                    if let Ok(slot) = rx.recv() {
                        // Unbound (the kernel refused), the thread still serves: `finish`
                        // takes back what it does not start.
                        crate::process::pin_current_thread(cpu);
                        serve(&slot);
                    }
                })?;
            let slot = Arc::new(Slot {
                cpu,
                state: Mutex::new(SlotState::default()),
                ended: Condvar::new(),
                thread: thread.thread().clone(),
            });
            // The thread holds its slot from here on; it ends with the slot closed.
            let _ = tx.send(slot.clone());
            slots.push(slot);
        }
        Ok(Some(Beside { slots }))
    }

    /// Its threads: one per core it serves.
    pub fn threads(&self) -> usize {
        self.slots.len()
    }

    /// Hands `job` to the thread of another core than this one's, if one is free (else gives
    /// it back). Call [`Handed::finish`] once the caller's own work is done.
    pub fn hand(&self, job: Job) -> Result<Handed, Job> {
        let here = current_cpu();
        let free = self
            .slots
            .iter()
            .filter(|s| Some(s.cpu) != here)
            .find_map(|slot| {
                let st = slot.lock();
                let idle = st.job.is_none() && st.running.is_none() && !st.closed;
                idle.then_some((slot, st))
            });
        let Some((slot, mut st)) = free else {
            return Err(job);
        };
        st.issued += 1;
        let ticket = st.issued;
        st.job = Some((ticket, job));
        drop(st);
        slot.thread.unpark();
        Ok(Handed {
            slot: slot.clone(),
            ticket,
        })
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        for s in &self.slots {
            s.lock().closed = true;
            s.thread.unpark();
        }
    }
}

/// A job handed to another core's thread ([`Beside::hand`]).
#[must_use = "the job may not have run until `finish` returns"]
pub struct Handed {
    slot: Arc<Slot>,
    ticket: u64,
}

impl Handed {
    /// Returns once the job has run: on its thread (waited for), or here if that thread has
    /// not started it. A job that panics on its thread counts as run (the panic hook reports
    /// it); taken back, it panics here.
    pub fn finish(self) {
        let mut st = self.slot.lock();
        if let Some((_, job)) = st.job.take_if(|(t, _)| *t == self.ticket) {
            st.finished = st.finished.max(self.ticket);
            drop(st);
            return job();
        }
        let start = Instant::now();
        while st.finished < self.ticket && start.elapsed() < SPIN {
            drop(st);
            std::hint::spin_loop();
            st = self.slot.lock();
        }
        while st.finished < self.ticket {
            st = self.slot.ended.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A slot's thread: runs what it is handed until the slot is closed.
fn serve(slot: &Slot) {
    loop {
        let mut st = slot.lock();
        if let Some((ticket, job)) = st.job.take() {
            st.running = Some(ticket);
            drop(st);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let mut st = slot.lock();
            st.running = None;
            st.finished = st.finished.max(ticket);
            drop(st);
            slot.ended.notify_all();
            continue;
        }
        if st.closed {
            return;
        }
        drop(st);
        std::thread::park();
    }
}

/// The core this thread runs on.
#[cfg(target_os = "linux")]
fn current_cpu() -> Option<usize> {
    // SAFETY: no arguments; -1 on failure.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

/// Off Linux: not known (nothing is handed over).
#[cfg(not(target_os = "linux"))]
fn current_cpu() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// The threads, where this machine has them (two cores or more, all usable, Linux).
    fn started() -> Option<Beside> {
        Beside::start("test-beside").unwrap()
    }

    /// A handed job runs at once on a thread bound to another core, whatever the caller
    /// does meanwhile; `finish` returns after it.
    #[test]
    fn a_handed_job_runs_on_another_core_meanwhile() {
        let Some(b) = started() else { return };
        let caller = std::thread::current().id();
        // This thread stays on one core, so "another core" is well defined.
        let here = crate::process::allowed_cpus()[0];
        assert!(crate::process::pin_current_thread(here));
        for _ in 0..20 {
            let (tx, rx) = mpsc::channel();
            let handed = b
                .hand(Box::new(move || {
                    let _ = tx.send((std::thread::current().id(), current_cpu()));
                }))
                .unwrap_or_else(|_| panic!("a free thread"));
            // Received before `finish`: the job ran without the caller.
            let (thread, cpu) = rx.recv_timeout(Duration::from_secs(10)).expect("ran");
            assert_ne!(thread, caller);
            assert_eq!(cpu, Some(handed.slot.cpu), "on its thread's core");
            assert_ne!(handed.slot.cpu, here, "not the caller's");
            handed.finish();
        }
    }

    /// While every other core's thread holds a job, the next one is given back; once they
    /// are finished, threads take jobs again, a panicking one included.
    #[test]
    fn busy_threads_give_the_job_back_and_a_panic_frees_its_thread() {
        let Some(b) = started() else { return };
        let (open, gate) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let mut held = Vec::new();
        let refused = loop {
            let g = gate.clone();
            match b.hand(Box::new(move || {
                let _ = g.lock().unwrap().recv();
            })) {
                Ok(h) => held.push(h),
                Err(job) => break job,
            }
            assert!(held.len() <= b.slots.len(), "one job per thread");
        };
        assert!(!held.is_empty());
        // One for each held job and one for the refused job, run here.
        for _ in 0..=held.len() {
            open.send(()).unwrap();
        }
        refused();
        held.into_iter().for_each(Handed::finish);
        // Finished only once it runs there (taken back, it would panic here).
        let (started, on_thread) = mpsc::channel();
        let panics = b
            .hand(Box::new(move || {
                started.send(()).unwrap();
                panic!("a job that panics");
            }))
            .unwrap_or_else(|_| panic!("a free thread"));
        on_thread.recv_timeout(Duration::from_secs(10)).unwrap();
        panics.finish();
        let (tx, rx) = mpsc::channel();
        b.hand(Box::new(move || tx.send(()).unwrap()))
            .unwrap_or_else(|_| panic!("a free thread"))
            .finish();
        rx.try_recv().expect("ran");
    }

    /// A job its thread has not started is run by `finish`, on the caller.
    #[test]
    fn an_unstarted_job_is_taken_back() {
        // A slot whose thread never serves: the job stays unstarted.
        let b = Beside {
            slots: vec![Arc::new(Slot {
                cpu: usize::MAX,
                state: Mutex::default(),
                ended: Condvar::new(),
                thread: std::thread::current(),
            })],
        };
        let (tx, rx) = mpsc::channel();
        let handed = b
            .hand(Box::new(move || {
                tx.send(std::thread::current().id()).unwrap()
            }))
            .unwrap_or_else(|_| panic!("a free slot"));
        assert!(b.hand(Box::new(|| ())).is_err(), "one job per slot");
        handed.finish();
        assert_eq!(rx.try_recv(), Ok(std::thread::current().id()));
        assert!(b.hand(Box::new(|| ())).is_ok(), "free again");
    }
}
