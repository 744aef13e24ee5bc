//! # Archive
//!
//! The facade every holder of Golix objects uses (the persister server, the daemon's cache):
//! publish raw bytes, read objects back, answer the protocol's queries, and make writes durable
//! with group commit.
//!
//! Owns: the store handle, the write lock that serialises rule evaluation + apply (so one
//! publish never decides on state another is about to change; a store that isolates
//! transactions itself, [`Store::isolates`], gets [`Store::transact`] instead), a cache of
//! parsed identities (GIDCs are permanent, so a cached key never goes stale), and the flusher
//! thread. Calls: [`super::rules`] (every decision) and [`super::store`] (reads, apply or
//! transact, flush). Used by the persister server and client, and by the daemon.
//!
//! Durability: [`Archive::publish`] applies its writes atomically but does not flush;
//! [`Archive::sync`] resolves once everything applied before it is on disk. One flusher thread
//! serves all callers: each flush covers every `sync` registered before it started, so N
//! concurrent callers cost one or two fsyncs, not N. [`Archive::sync_now`] flushes on the
//! caller's thread instead (the daemon's commits, already off the event loop, one at a time
//! per object: a hand-off to the flusher would cost two thread wake-ups).
//! [`FlushStart::lead`] runs the flush on the caller's thread too, when no flush is under way
//! and recent ones were fast (less than [`LEAD_UNDER`]: a log on tmpfs or a disk that does
//! not wait for its platters), so that a fast flush does not wait for the flusher to wake.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::golix::{Ghid, Kind, Object, Policy, SecondParty};

use super::rules::{self, checks, View};
use super::store::{Record, Sender, SledStore, Store};
use super::PersistError;

/// Parsed identities kept at most (then the cache starts over).
const IDENTITY_CACHE: usize = 4096;

/// Whether the archive has a ghid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Status {
    /// Never stored here (or forgotten).
    Unknown,
    /// Stored; a dynamic ghid is present while it has a current frame.
    Present,
    /// Was stored, then removed (debound, collected, or a frame replaced by a newer one).
    Collected,
}

/// Something to push to the subscribers of `subscription`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Notification {
    /// A dynamic ghid (new frame, or removal) or a GARQ recipient (request stored or removed).
    pub subscription: Ghid,
    /// Raw Golix bytes: the new frame, the GARQ, or the GDXX that removed the object.
    pub object: Bytes,
}

/// The result of a successful publish.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Published {
    /// The object's address (the frame ghid for a GOBD).
    pub ghid: Ghid,
    pub kind: Kind,
    /// `false` if it was already stored (rule 1): nothing changed, nothing to notify.
    pub new: bool,
    /// What the publish causes subscribers to receive, in order.
    pub notifications: Vec<Notification>,
}

/// An object that passed [`Archive::check`]: decoded, addressed, signature verified.
pub struct Checked {
    obj: Object,
    bytes: Bytes,
    /// The parsed identity of a GIDC.
    identity: Option<SecondParty>,
}

/// What a publish of an object already stored returns (rule 1).
fn unchanged(obj: &Object) -> Published {
    Published {
        ghid: obj.ghid(),
        kind: obj.kind(),
        new: false,
        notifications: Vec::new(),
    }
}

/// A registered [`Archive::sync`]: resolves once the flush that covers it is done.
pub struct SyncWait(oneshot::Receiver<Result<(), String>>);

impl std::future::Future for SyncWait {
    type Output = Result<(), PersistError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.get_mut().0)
            .poll(cx)
            .map(|r| match r {
                Ok(result) => result.map_err(PersistError::Storage),
                Err(_) => Err(PersistError::Unavailable("the flusher stopped".into())),
            })
    }
}

/// The Golix object archive. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Archive {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn Store>,
    /// Held from the first rule read of an ingest to the end of its apply.
    write_lock: Mutex<()>,
    /// Parsed signer identities by GIDC ghid.
    identities: Mutex<HashMap<Ghid, SecondParty>>,
    /// [`rules::Limits::max_requests_per_recipient`] (atomic: set after opening, shared by
    /// every clone).
    max_requests_per_recipient: AtomicUsize,
    /// [`rules::Limits::max_requests_per_sender`]; 0 = the recipient's bound.
    max_requests_per_sender: AtomicUsize,
    flush: Arc<FlushShared>,
    /// The flusher thread; joined on drop.
    flusher: Option<JoinHandle<()>>,
}

/// A flush is run by the thread that starts it ([`FlushStart::lead`]) while recent flushes
/// took less than this: waking the flusher would cost about as much (10–30 µs on an idle
/// core), and the caller is off the event loop already. Slower ones (a disk's `fdatasync`)
/// go to the flusher, so that they do not hold up the caller's other work.
pub const LEAD_UNDER: Duration = Duration::from_micros(200);

/// State shared with the flusher thread.
struct FlushShared {
    state: Mutex<FlushState>,
    wake: Condvar,
    store: Arc<dyn Store>,
    /// Flushes completed, for metrics and tests.
    count: AtomicU64,
    /// How long recent flushes took, in µs: the last one's time, or more while an earlier,
    /// slower one decays (by 1/8 a flush), so that an empty flush on a slow disk does not
    /// pass for a fast device. `u64::MAX` before the first (the flusher runs that one).
    recent_us: AtomicU64,
}

#[derive(Default)]
struct FlushState {
    /// Callers registered since the running flush (if any) started.
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// A flush is under way (the flusher's or a leader's): one at a time.
    running: bool,
    shutdown: bool,
}

impl FlushShared {
    /// Flushes once for `batch` and answers it; `running` was set by the caller.
    fn flush(&self, batch: Vec<oneshot::Sender<Result<(), String>>>) {
        let started = Instant::now();
        // A panicking store must not kill the flusher: later callers would wait forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.store.flush()))
            .unwrap_or_else(|_| Err(PersistError::Storage("flush panicked".into())))
            .map_err(|e| e.to_string());
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let before = self.recent_us.load(Ordering::Relaxed);
        let decayed = if before == u64::MAX {
            0
        } else {
            before - before / 8
        };
        self.recent_us.store(took.max(decayed), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::SeqCst);
        let more = {
            let mut st = lock(&self.state);
            st.running = false;
            !st.waiters.is_empty()
        };
        // Those who registered meanwhile are the flusher's (they may have woken it while
        // this flush ran, and it waited for it).
        if more {
            self.wake.notify_one();
        }
        // Newest first: whoever waits for an older one then finds the newer ones done too
        // (a connection announces what one flush covered together).
        for waiter in batch.into_iter().rev() {
            let _ = waiter.send(result.clone());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under these locks leaves nothing half-done (apply is atomic), so carry on.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Wakes the flusher when dropped (see [`Archive::sync_waits_deferred`]).
#[must_use = "the flush starts when this drops"]
pub struct FlushStart(Option<Arc<FlushShared>>);

impl FlushStart {
    /// Runs the flush on this thread if no flush is under way and recent ones took less
    /// than [`LEAD_UNDER`], returning once it is done and its waits answered; otherwise gives
    /// `self` back (dropping it wakes the flusher). Blocks: only for a caller off the event
    /// loop.
    pub fn lead(mut self) -> Result<(), FlushStart> {
        let Some(f) = self.0.take() else {
            return Ok(());
        };
        let batch = {
            let mut st = lock(&f.state);
            let fast = f.recent_us.load(Ordering::Relaxed) < LEAD_UNDER.as_micros() as u64;
            if !fast || st.running || st.waiters.is_empty() {
                drop(st);
                return Err(FlushStart(Some(f)));
            }
            st.running = true;
            std::mem::take(&mut st.waiters)
        };
        f.flush(batch);
        Ok(())
    }
}

impl Drop for FlushStart {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            f.wake.notify_one();
        }
    }
}

/// The flusher: wait for callers (and for a leader's flush to end), take every one
/// registered so far, flush once, answer them.
fn run_flusher(shared: Arc<FlushShared>) {
    loop {
        let batch = {
            let mut st = lock(&shared.state);
            while (st.waiters.is_empty() || st.running) && !st.shutdown {
                st = shared
                    .wake
                    .wait(st)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if st.waiters.is_empty() {
                return;
            }
            st.running = true;
            std::mem::take(&mut st.waiters)
        };
        shared.flush(batch);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        lock(&self.flush.state).shutdown = true;
        self.flush.wake.notify_all();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
        // Clean shutdown: whatever was applied reaches the disk.
        let _ = self.store.flush();
    }
}

impl Archive {
    /// Opens (or creates) the sled ghidcache at `path`.
    pub fn open(path: &Path) -> Result<Archive, PersistError> {
        Archive::with_store(Arc::new(SledStore::open(path)?))
    }

    /// The sled ghidcache at `path` (a page cache of `cache_capacity` bytes) behind its
    /// write-ahead log (the persister's store and the daemon's object cache: a group commit
    /// is one `fdatasync` of the log, sled is written in the background, at least every
    /// `move_every`; see `SledStore::open_logged`). The log's failures go to `log`.
    pub fn open_logged(
        path: &Path,
        cache_capacity: u64,
        move_every: std::time::Duration,
        log: slog::Logger,
    ) -> Result<Archive, PersistError> {
        let store = SledStore::open_logged(path, cache_capacity, move_every, log)?;
        Archive::with_store(Arc::new(store))
    }

    /// An archive on a temporary sled database, deleted when the last clone drops (tests).
    pub fn temporary() -> Result<Archive, PersistError> {
        Archive::with_store(Arc::new(SledStore::temporary()?))
    }

    /// An archive over any [`Store`].
    pub fn with_store(store: Arc<dyn Store>) -> Result<Archive, PersistError> {
        let flush = Arc::new(FlushShared {
            state: Mutex::new(FlushState::default()),
            wake: Condvar::new(),
            store: store.clone(),
            count: AtomicU64::new(0),
            recent_us: AtomicU64::new(u64::MAX),
        });
        let flusher = {
            let flush = flush.clone();
            std::thread::Builder::new()
                .name("hgx-flush".into())
                .spawn(move || run_flusher(flush))
                .map_err(|e| PersistError::Storage(format!("cannot start the flusher: {e}")))?
        };
        Ok(Archive {
            inner: Arc::new(Inner {
                store,
                write_lock: Mutex::new(()),
                identities: Mutex::new(HashMap::new()),
                max_requests_per_recipient: AtomicUsize::new(
                    rules::DEFAULT_MAX_REQUESTS_PER_RECIPIENT,
                ),
                max_requests_per_sender: AtomicUsize::new(0),
                flush,
                flusher: Some(flusher),
            }),
        })
    }

    /// Bounds the GARQs stored per recipient (`server.max_requests_per_recipient`); a GARQ
    /// beyond it is refused with `mailbox_full`. At least 1.
    pub fn set_max_requests_per_recipient(&self, max: usize) {
        self.inner
            .max_requests_per_recipient
            .store(max.max(1), Ordering::Relaxed);
    }

    /// Bounds the GARQs stored per (sender, recipient) (`server.max_requests_per_sender`);
    /// see [`rules::checks::mailbox_room`]. At least 1. Unset, it is the recipient's bound.
    pub fn set_max_requests_per_sender(&self, max: usize) {
        self.inner
            .max_requests_per_sender
            .store(max.max(1), Ordering::Relaxed);
    }

    /// The limits [`Archive::publish`] applies.
    pub fn limits(&self) -> rules::Limits {
        let per_recipient = self
            .inner
            .max_requests_per_recipient
            .load(Ordering::Relaxed);
        let per_sender = match self.inner.max_requests_per_sender.load(Ordering::Relaxed) {
            0 => per_recipient,
            n => n,
        };
        rules::Limits {
            max_requests_per_recipient: per_recipient,
            max_requests_per_sender: per_sender,
        }
    }

    /// The underlying store (read-only use; writes must go through [`Archive::publish`]).
    pub fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    fn view(&self) -> View<'_> {
        View::new(&*self.inner.store)
    }

    /// The parsed identity that signed `obj` (rule 2: its GIDC must be stored).
    fn signer(&self, obj: &Object) -> Result<Option<SecondParty>, PersistError> {
        let Some(ghid) = obj.signer() else {
            return Ok(None);
        };
        if let Some(p) = lock(&self.inner.identities).get(&ghid) {
            return Ok(Some(p.clone()));
        }
        let Some(gidc) = checks::check_signer_known(&self.view(), obj)? else {
            return Ok(None);
        };
        let party = SecondParty::from_gidc(gidc)
            .map_err(|e| PersistError::Storage(format!("stored identity {ghid:?}: {e}")))?;
        self.remember(party.clone());
        Ok(Some(party))
    }

    fn remember(&self, party: SecondParty) {
        let mut cache = lock(&self.inner.identities);
        if cache.len() >= IDENTITY_CACHE {
            cache.clear();
        }
        cache.insert(party.ghid(), party);
    }

    /// Decode (Policy::STRICT), verify, apply every rule, store, run the collection cascade.
    /// CPU-heavy (RSA verify); callers run it off the event loop. NOT yet durable on return:
    /// call [`Archive::sync`] before acknowledging. The uploader is anonymous.
    pub fn publish(&self, bytes: &[u8]) -> Result<Published, PersistError> {
        self.publish_checked(bytes, None, Sender::Anonymous, None)
    }

    /// [`Archive::publish`] of an object uploaded by `sender` (what a stored GARQ is counted
    /// against). `bytes` is kept as it is (what is stored is a copy).
    pub fn publish_from(&self, bytes: Bytes, sender: Sender) -> Result<Published, PersistError> {
        self.publish_checked(&bytes, Some(bytes.clone()), sender, None)
    }

    /// [`Archive::publish`] of an object the caller has just signed as `own` (a daemon's
    /// commit of its own objects): the RSA signature of an object `own` signed is not
    /// verified again. aws-lc checks every RSA signature it makes against the public key
    /// before returning it (its fault-attack countermeasure: `s^e mod n` must give the padded
    /// digest back), so a second verify (~70 µs) would check nothing new. Decoding, the
    /// address, the signer's stored identity and every rule are checked as for any publish;
    /// an object signed by anyone else is verified in full. Never use it for bytes that came
    /// from elsewhere.
    pub fn publish_own(&self, bytes: &[u8], own: &Ghid) -> Result<Published, PersistError> {
        self.publish_checked(bytes, None, Sender::Anonymous, Some(own))
    }

    /// `shared`: `bytes` as [`Bytes`] already, else they are copied once they are to be stored.
    fn publish_checked(
        &self,
        bytes: &[u8],
        shared: Option<Bytes>,
        sender: Sender,
        own: Option<&Ghid>,
    ) -> Result<Published, PersistError> {
        let obj = Object::decode(bytes, Policy::STRICT)?;
        rules::precheck(&obj)?;
        // Rule 1 before the expensive part; re-checked under the lock.
        if checks::check_idempotent(&self.view(), &obj)? {
            return Ok(unchanged(&obj));
        }
        let bytes = shared.unwrap_or_else(|| Bytes::copy_from_slice(bytes));
        let checked = self.verified(obj, bytes, own)?;
        self.commit(checked, sender)
    }

    /// The stateless part of a publish (decode, address, signature): what may run before the
    /// publishes ahead of it are applied. Its success does not depend on anything they could
    /// change — a verified signature stays verified, GIDCs are never collected — so
    /// [`Archive::commit`] of it later gives what [`Archive::publish_from`] would then. It
    /// fails if the signer's GIDC is not stored yet (maybe one of those publishes): the
    /// caller then runs [`Archive::publish_from`] once they are applied.
    pub fn check(&self, bytes: Bytes) -> Result<Checked, PersistError> {
        let obj = Object::decode(&bytes, Policy::STRICT)?;
        rules::precheck(&obj)?;
        self.verified(obj, bytes, None)
    }

    /// Decoded and address-checked `obj`, its signature verified unless `own` signed it
    /// ([`Archive::publish_own`]).
    fn verified(
        &self,
        obj: Object,
        bytes: Bytes,
        own: Option<&Ghid>,
    ) -> Result<Checked, PersistError> {
        let signer = self.signer(&obj)?;
        let signed_by_caller = own.is_some() && obj.signer().as_ref() == own;
        let identity = if signed_by_caller {
            None
        } else {
            rules::verify(&obj, signer.as_ref())?
        };
        Ok(Checked {
            obj,
            bytes,
            identity,
        })
    }

    /// The stateful part of a publish: every rule (rule 1 included), the writes, the
    /// collection cascade. NOT yet durable on return (see [`Archive::publish`]).
    pub fn commit(&self, checked: Checked, sender: Sender) -> Result<Published, PersistError> {
        let Checked {
            obj,
            bytes,
            identity,
        } = checked;
        let limits = self.limits();
        let store = &*self.inner.store;
        let outcome = if store.isolates() {
            // A cluster store: no lock here (other processes write too); the store re-runs the
            // rule pass until its commit is conditional on exactly what the pass read.
            let mut last = None;
            store.transact(&mut |view| {
                let mut o = rules::ingest_with(view, &obj, bytes.clone(), &limits, sender)?;
                let writes = std::mem::take(&mut o.writes);
                last = Some(o);
                Ok(writes)
            })?;
            last.ok_or_else(|| PersistError::Storage("transaction ran no rule pass".into()))?
        } else {
            let _guard = lock(&self.inner.write_lock);
            let outcome = rules::ingest_with(store, &obj, bytes, &limits, sender)?;
            store.apply(&outcome.writes)?;
            outcome
        };
        if let Some(party) = identity {
            self.remember(party);
        }
        if !outcome.new {
            return Ok(unchanged(&obj));
        }
        Ok(Published {
            ghid: obj.ghid(),
            kind: obj.kind(),
            new: true,
            notifications: outcome.notifications,
        })
    }

    /// Resolves once everything written before the call is flushed to disk. Concurrent callers
    /// share one flush (group commit).
    pub async fn sync(&self) -> Result<(), PersistError> {
        self.sync_wait().await
    }

    /// [`Archive::sync`] on this thread, without the flusher thread: for a caller already off
    /// the event loop that would otherwise hand the flush over and wait (two thread wake-ups:
    /// the daemon's commit). Concurrent callers are not grouped into one flush.
    pub fn sync_now(&self) -> Result<(), PersistError> {
        self.inner.store.flush()
    }

    /// [`Archive::sync`] registered now (everything written before this call is covered),
    /// awaited later, on any thread: the flusher starts at once and wakes whoever awaits it,
    /// without a hop through the caller's thread.
    pub fn sync_wait(&self) -> SyncWait {
        let mut waits = self.sync_waits(1);
        match waits.pop() {
            Some(w) => w,
            None => unreachable!("sync_waits(1) registers one"),
        }
    }

    /// `count` [`Archive::sync_wait`]s registered at once (so one flush covers them all).
    pub fn sync_waits(&self, count: usize) -> Vec<SyncWait> {
        let (waits, start) = self.sync_waits_deferred(count);
        drop(start);
        waits
    }

    /// [`Archive::sync_waits`] whose flush starts when the returned [`FlushStart`] drops:
    /// the caller first finishes what must be ready when the flush completes (the flusher,
    /// woken earlier, would take the caller's core and complete before it).
    pub fn sync_waits_deferred(&self, count: usize) -> (Vec<SyncWait>, FlushStart) {
        let mut waits = Vec::with_capacity(count);
        if count > 0 {
            let mut st = lock(&self.inner.flush.state);
            for _ in 0..count {
                let (tx, rx) = oneshot::channel();
                st.waiters.push(tx);
                waits.push(SyncWait(rx));
            }
        }
        let start = FlushStart((count > 0).then(|| self.inner.flush.clone()));
        (waits, start)
    }

    /// Flushes completed so far (the flusher's and those led by a caller).
    pub fn flush_count(&self) -> u64 {
        self.inner.flush.count.load(Ordering::SeqCst)
    }

    /// Raw bytes of `ghid`; a dynamic ghid resolves to its current frame.
    pub fn get(&self, ghid: &Ghid) -> Result<Option<Bytes>, PersistError> {
        self.view().resolve(ghid)
    }

    /// The current frame ghid of a dynamic ghid (`None` for anything else).
    pub fn current_frame(&self, dynamic: &Ghid) -> Result<Option<Ghid>, PersistError> {
        match self.inner.store.record(dynamic)? {
            Some(Record::Dynamic { frame, .. }) => Ok(Some(frame)),
            _ => Ok(None),
        }
    }

    pub fn status(&self, ghid: &Ghid) -> Result<Status, PersistError> {
        let store = &self.inner.store;
        Ok(if store.record(ghid)?.is_some() {
            Status::Present
        } else if store.is_collected(ghid)? {
            Status::Collected
        } else {
            Status::Unknown
        })
    }

    pub fn exists(&self, ghid: &Ghid) -> Result<bool, PersistError> {
        Ok(self.inner.store.record(ghid)?.is_some())
    }

    /// docs/golix.md rule 12 order: GOBS ghids, then dynamic ghids of GOBDs, the target author's
    /// own first in each group. An existing ghid gets a possibly empty list; an unknown one
    /// `NotFound`.
    pub fn list_bindings(&self, ghid: &Ghid) -> Result<Vec<Ghid>, PersistError> {
        rules::list_bindings(&self.view(), ghid)
    }

    /// The GDXX ghid debinding `ghid`, if any.
    pub fn query_debinding(&self, ghid: &Ghid) -> Result<Option<Ghid>, PersistError> {
        rules::query_debinding(&self.view(), ghid)
    }

    /// Stored GARQs addressed to `recipient` (offline mail), in ghid order.
    pub fn requests_for(&self, recipient: &Ghid) -> Result<Vec<Bytes>, PersistError> {
        let mut out = Vec::new();
        for (g, _) in self.inner.store.requests(recipient)? {
            if let Some(b) = self.inner.store.object(&g)? {
                out.push(b);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// The first flush, and one after slow flushes or while another runs, is the flusher's;
    /// after fast ones the caller runs it, and its waits are answered when `lead` returns.
    #[test]
    fn a_fast_flush_is_led_by_its_caller() {
        let archive = Archive::temporary().unwrap();
        let flush = &archive.inner.flush;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sync = |lead: bool| {
            let (waits, start) = archive.sync_waits_deferred(2);
            assert_eq!(start.lead().is_ok(), lead);
            waits
        };

        for w in sync(false) {
            rt.block_on(w).unwrap();
        }
        flush.recent_us.store(0, Ordering::Relaxed);
        let before = archive.flush_count();
        for w in sync(true) {
            assert!(matches!(w.now_or_never(), Some(Ok(()))));
        }
        assert_eq!(archive.flush_count(), before + 1);

        lock(&flush.state).running = true;
        let waits = sync(false);
        // The flusher waits for the running flush to end, then takes these.
        lock(&flush.state).running = false;
        flush.wake.notify_one();
        for w in waits {
            rt.block_on(w).unwrap();
        }

        // A slow flush keeps the next ones on the flusher while it decays, however fast
        // they are themselves.
        let slow = 8 * LEAD_UNDER.as_micros() as u64;
        flush.recent_us.store(slow, Ordering::Relaxed);
        for _ in 0..2 {
            for w in sync(false) {
                rt.block_on(w).unwrap();
            }
        }
        let recent = flush.recent_us.load(Ordering::Relaxed);
        assert!((LEAD_UNDER.as_micros() as u64..slow).contains(&recent));
    }
}
