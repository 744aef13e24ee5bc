//! # sled trees behind a write-ahead log (the persister's store, the daemon's object cache and
//! vault)
//!
//! Why: sled 0.34 writes each IO buffer on its own thread pool, whose every job wakes all
//! seven idle pool threads one after the other, and a transaction writes two buffers, a
//! flush one more, each followed by a `sync_file_range`. A publish (two transactions and a
//! flush) cost 25 thread switches and four syncs before it could be acknowledged.
//!
//! So a [`WriteSet`](super::WriteSet) of a logged sled store (or a change of a
//! [`LoggedTree`](super::LoggedTree)) becomes durable in its own [`Wal`] (one write and one `fdatasync` per group commit, on the flusher
//! thread) and visible at once in an in-memory overlay that every read consults before sled.
//! A background thread ("hgx-sled-log") moves the overlay into sled: it retires the current
//! log file, applies everything the overlay held in one sled transaction, flushes sled, and
//! only then deletes the retired log files. At start, whatever the log still holds is applied
//! to sled again (idempotent, [`super::wal`]) and flushed before anything is served.
//!
//! A store's reads that miss the overlay first ask a [`Presence`] filter whether sled can
//! hold the key at all: the mover adds each layer's keys to it before its transaction, and
//! builds it (at start, and again once it is full) under the move lock.
//!
//! Atomicity: a publish's operations are one log entry (replayed whole or, torn, not at all)
//! and enter the overlay under one lock; sled only ever receives them inside a transaction.
//!
//! Bounds: the overlay being filled is moved to sled once it holds [`MOVE_AT`] bytes or
//! `move_every` ([`MOVE_EVERY`] unless configured: the persister's `server.wal_move_ms`) after its first
//! write; an apply waits (at most [`ROOM_WAIT`]) while it holds [`OVERLAY_MAX`] bytes, so the
//! overlay holds at most about twice that (bytes counted with [`ENTRY_OVERHEAD`] per entry).
//! The layer being moved is applied to sled outside the overlay's lock: reads and applies go
//! on meanwhile, reads still finding it in the overlay until sled has it.
//!
//! Failures are logged to the owner's log: a failed move as a warning (once per streak of
//! failures, then once a minute; the next round retries it whole), a poisoned log as an error
//! (once; every later write through it fails with `storage` until the process restarts).
//!
//! Owns: the overlay, the filter and the mover thread. Calls: [`super::wal`],
//! [`super::presence`], sled, the sled gate.
//! Used by the sled store ([`super::SledStore::open_logged`]) and [`super::LoggedTree`].

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use slog::{error, warn, Logger};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch, Transactional, Tree};

use super::presence::Presence;
use super::sled_gate;
use super::wal::{Op, Wal};
use crate::persist::PersistError;

/// The overlay is moved to sled once it holds this many bytes …
pub const MOVE_AT: usize = 4 << 20;
/// … or this long after its first write (each move costs sled's thread-pool wakeups, a
/// sled flush and a directory sync, competing with the log's own syncs for the disk). The
/// default of `server.wal_move_ms`, and the daemon's period.
pub const MOVE_EVERY: Duration = Duration::from_secs(5);
/// The shortest move period accepted (`server.wal_move_ms`; tests use it to move often).
pub const MOVE_EVERY_MIN: Duration = Duration::from_millis(10);
/// Bytes counted per overlay entry besides its key and value: the B-tree node's share and
/// the two `Vec` headers.
pub const ENTRY_OVERHEAD: usize = 64;
/// How long the mover sleeps while nothing waits to move (it also checks for a poisoned log
/// then).
const IDLE_WAIT: Duration = Duration::from_secs(60);
/// A failed move is logged again after this long while the failures go on.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// An apply waits while the overlay being filled holds this many bytes.
pub const OVERLAY_MAX: usize = 64 << 20;
/// How long an apply waits for room before it fails.
pub const ROOM_WAIT: Duration = Duration::from_secs(30);

type Layer = Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

fn empty_layer(trees: usize) -> Layer {
    vec![BTreeMap::new(); trees]
}

struct Overlay {
    /// Written since the last move began.
    active: Layer,
    active_bytes: usize,
    /// When `active` got its first write.
    active_since: Option<Instant>,
    /// Being moved into sled (shared with the mover, which applies it outside the lock).
    moving: Arc<Layer>,
    /// The last log generation `moving` came from, while a move is under way (or failed).
    moving_through: Option<u64>,
}

impl Overlay {
    fn lookup(&self, tree: usize, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.active[tree]
            .get(key)
            .or_else(|| self.moving[tree].get(key))
    }

    /// The overlay's entries under `prefix`, newest layer winning.
    fn prefixed(&self, tree: usize, prefix: &[u8]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        for layer in [&self.moving, &self.active] {
            let range = layer[tree].range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded));
            for (k, v) in range.take_while(|(k, _)| k.starts_with(prefix)) {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

#[derive(Default)]
struct Signal {
    stop: bool,
    kick: bool,
}

/// The store's log, overlay and mover (see the module docs).
pub(super) struct Logged {
    wal: Wal,
    db: sled::Db,
    trees: Vec<Tree>,
    /// Answers "not in sled" without a descent (a store's trees; not the vault's).
    presence: Option<Presence>,
    overlay: RwLock<Overlay>,
    /// Held across a move: one move at a time (the mover's, a test's, or the last at drop).
    moving: Mutex<()>,
    move_every: Duration,
    log: Logger,
    /// Wakes the mover; applies waiting for room wait on `room`.
    signal: Arc<(Mutex<Signal>, Condvar)>,
    room: (Mutex<()>, Condvar),
}

fn storage(e: std::io::Error) -> PersistError {
    PersistError::Storage(format!("write-ahead log: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies `layer` to `trees` in one sled transaction (under the sled gate).
fn apply_layer(trees: &[Tree], layer: &Layer) -> Result<(), PersistError> {
    let mut batches: Vec<Batch> = layer.iter().map(|_| Batch::default()).collect();
    for (batch, entries) in batches.iter_mut().zip(layer) {
        for (k, v) in entries {
            match v {
                Some(v) => batch.insert(&k[..], &v[..]),
                None => batch.remove(&k[..]),
            }
        }
    }
    let _gate = sled_gate::exclusive();
    trees
        .transaction(|t| {
            for (tree, batch) in t.iter().zip(&batches) {
                tree.apply_batch(batch)?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        })
        .map_err(|e: TransactionError<()>| match e {
            TransactionError::Storage(e) => PersistError::from(e),
            TransactionError::Abort(()) => PersistError::Storage("transaction aborted".into()),
        })
}

fn merge(layer: &mut Layer, ops: Vec<Op>) -> usize {
    let mut bytes = 0;
    for op in ops {
        bytes += op.key.len() + op.value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD;
        layer[usize::from(op.tree)].insert(op.key, op.value);
    }
    bytes
}

impl Logged {
    /// Opens the log at `dir` for `trees` of `db`, replays it into sled (one transaction,
    /// then a flush) and starts the mover, which moves the overlay at least every
    /// `move_every` (at least [`MOVE_EVERY_MIN`]). With `filtered` (a length), reads that
    /// miss the overlay first ask a [`Presence`] filter over the keys' first `filtered`
    /// bytes, which the mover builds. Failures go to `log`.
    pub(super) fn open(
        dir: &Path,
        db: sled::Db,
        trees: Vec<Tree>,
        filtered: Option<usize>,
        move_every: Duration,
        log: Logger,
    ) -> Result<Arc<LoggedHandle>, PersistError> {
        let (wal, found) = Wal::open(dir).map_err(storage)?;
        if let Some(t) = &found.torn {
            warn!(log, "write-ahead log: replay stopped at a short or corrupt entry (never acknowledged); the rest is ignored";
                "file" => %t.file.display(), "offset" => t.offset, "bytes_discarded" => t.discarded);
        }
        let last = found.last;
        if !found.entries.is_empty() {
            let mut layer = empty_layer(trees.len());
            for ops in found.entries {
                if ops.iter().any(|o| usize::from(o.tree) >= trees.len()) {
                    return Err(PersistError::Storage(
                        "write-ahead log names an unknown tree".into(),
                    ));
                }
                merge(&mut layer, ops);
            }
            apply_layer(&trees, &layer)?;
        }
        if let Some(last) = last {
            sled_gate::flush(&db)?;
            wal.remove_through(last).map_err(storage)?;
        }
        let logged = Arc::new(Logged {
            wal,
            db,
            overlay: RwLock::new(Overlay {
                active: empty_layer(trees.len()),
                active_bytes: 0,
                active_since: None,
                moving: Arc::new(empty_layer(trees.len())),
                moving_through: None,
            }),
            trees,
            presence: filtered.map(Presence::new),
            moving: Mutex::new(()),
            move_every: move_every.max(MOVE_EVERY_MIN),
            log,
            signal: Arc::new((Mutex::new(Signal::default()), Condvar::new())),
            room: (Mutex::new(()), Condvar::new()),
        });
        logged.wal.prepare_next().map_err(storage)?;
        let weak = Arc::downgrade(&logged);
        let signal = logged.signal.clone();
        let period = logged.move_every;
        let mover = std::thread::Builder::new()
            .name("hgx-sled-log".into())
            .spawn(move || run_mover(weak, signal, period))
            .map_err(|e| PersistError::Storage(format!("cannot start the log mover: {e}")))?;
        Ok(Arc::new(LoggedHandle {
            logged,
            mover: Some(mover),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Overlay> {
        self.overlay.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Overlay> {
        self.overlay.write().unwrap_or_else(|e| e.into_inner())
    }

    /// `key` of tree `tree`: the overlay's if it has one, else sled's.
    pub(super) fn get(&self, tree: usize, key: &[u8]) -> Result<Option<sled::IVec>, PersistError> {
        self.peek(tree, key, |v| v.map(sled::IVec::from))
    }

    /// `f` of what [`Logged::get`] would return, without copying it out of the overlay
    /// (`f` runs under the overlay's read lock: keep it short).
    pub(super) fn peek<R>(
        &self,
        tree: usize,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, PersistError> {
        if let Some(v) = self.read().lookup(tree, key) {
            return Ok(f(v.as_deref()));
        }
        // Not in the overlay when looked: sled has it (a move clears the overlay only
        // after its transaction, and adds its keys to the filter before).
        if self
            .presence
            .as_ref()
            .is_some_and(|p| !p.may_hold(tree, key))
        {
            return Ok(f(None));
        }
        Ok(f(self.trees[tree].get(key)?.as_deref()))
    }

    /// The entries of tree `tree` under `prefix`, in key order, the overlay's winning.
    pub(super) fn scan(
        &self,
        tree: usize,
        prefix: &[u8],
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, PersistError> {
        let over = self.read().prefixed(tree, prefix);
        let mut all: BTreeMap<Vec<u8>, sled::IVec> = BTreeMap::new();
        let in_sled = self
            .presence
            .as_ref()
            .map_or(true, |p| p.may_hold_prefix(tree, prefix));
        if in_sled {
            for kv in self.trees[tree].scan_prefix(prefix) {
                let (k, v) = kv?;
                all.insert(k.to_vec(), v);
            }
        }
        for (k, v) in over {
            match v {
                Some(v) => all.insert(k, sled::IVec::from(v)),
                None => all.remove(&k),
            };
        }
        Ok(all
            .into_iter()
            .map(|(k, v)| (sled::IVec::from(k), v))
            .collect())
    }

    /// Logs `ops` (durable at the next [`Logged::sync`]) and makes them visible, atomically.
    pub(super) fn apply(&self, ops: Vec<Op>) -> Result<(), PersistError> {
        let deadline = Instant::now() + ROOM_WAIT;
        loop {
            let mut ov = self.write();
            if ov.active_bytes < OVERLAY_MAX {
                self.wal.append(&ops).map_err(storage)?;
                ov.active_bytes += merge(&mut ov.active, ops);
                let first = ov.active_since.is_none();
                ov.active_since.get_or_insert_with(Instant::now);
                if first || ov.active_bytes >= MOVE_AT {
                    // The first write sets the mover's deadline.
                    self.kick();
                }
                return Ok(());
            }
            drop(ov);
            self.kick();
            let now = Instant::now();
            if now >= deadline {
                return Err(PersistError::Storage(
                    "the write-ahead log's overlay stayed full (sled is not keeping up)".into(),
                ));
            }
            let g = lock(&self.room.0);
            let _ = self
                .room
                .1
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Returns once everything applied before the call is durable.
    pub(super) fn sync(&self) -> Result<(), PersistError> {
        let synced = self.wal.sync().map_err(storage);
        if synced.is_err() {
            // The log is poisoned now: the mover reports it at once.
            self.kick();
        }
        synced
    }

    fn kick(&self) {
        lock(&self.signal.0).kick = true;
        self.signal.1.notify_one();
    }

    /// Moves the overlay being filled into sled (see the module docs). A move that failed
    /// is retried first, whole.
    pub(super) fn move_to_sled(&self) -> Result<(), PersistError> {
        let one = lock(&self.moving);
        self.move_layer(&one)?;
        // The next file's zeros are written here, off every caller's path (and under
        // `moving`: no rotation meanwhile).
        self.wal.prepare_next().map_err(storage)
    }

    /// [`Logged::move_to_sled`] without preparing the log's next file (the last move, at
    /// shutdown), under `moving`.
    fn move_layer(&self, _moving: &std::sync::MutexGuard<'_, ()>) -> Result<(), PersistError> {
        let (retired, layer) = {
            let mut ov = self.write();
            match ov.moving_through {
                Some(retired) => (retired, ov.moving.clone()),
                None if ov.active_since.is_none() => return Ok(()),
                None => {
                    // Under the overlay's lock: the retired files hold exactly `moving` and
                    // what sled already has.
                    let retired = self.wal.rotate().map_err(storage)?;
                    let active = std::mem::replace(&mut ov.active, empty_layer(self.trees.len()));
                    ov.moving = Arc::new(active);
                    ov.moving_through = Some(retired);
                    ov.active_bytes = 0;
                    ov.active_since = None;
                    (retired, ov.moving.clone())
                }
            }
        };
        drop(lock(&self.room.0));
        self.room.1.notify_all();
        // Outside the overlay's lock (a large layer takes a while): reads keep finding the
        // layer in `moving` until it is cleared below, after sled has it durably.
        if let Some(p) = &self.presence {
            p.add(&layer);
        }
        apply_layer(&self.trees, &layer)?;
        drop(layer);
        sled_gate::flush(&self.db)?;
        self.wal.remove_through(retired).map_err(storage)?;
        {
            let mut ov = self.write();
            ov.moving = Arc::new(empty_layer(self.trees.len()));
            ov.moving_through = None;
        }
        Ok(())
    }

    /// (Re)builds the presence filter when it wants it, under the move lock: sled holds
    /// still meanwhile. A drop stops it.
    fn keep_presence(&self) {
        let Some(p) = self.presence.as_ref().filter(|p| p.wants_build()) else {
            return;
        };
        let _one = lock(&self.moving);
        if let Err(e) = p.build(&self.trees, || lock(&self.signal.0).stop) {
            warn!(self.log, "write-ahead log: building the filter of sled's keys failed; reads go to sled until a later round builds it"; "error" => %e);
        }
    }

    /// How long the mover may sleep: until the overlay being filled is due, a retry of a
    /// failed move, or (nothing waiting) [`IDLE_WAIT`]: an idle daemon's mover does not wake
    /// several times a second for nothing. The first write into an empty overlay kicks it.
    fn next_wait(&self, period: Duration) -> Duration {
        let ov = self.read();
        if ov.moving_through.is_some() {
            return period / 8;
        }
        match ov.active_since {
            Some(t) => period.saturating_sub(t.elapsed()).max(MOVE_EVERY_MIN),
            None => IDLE_WAIT,
        }
    }

    /// Whether the overlay being filled is due to move.
    fn due(&self) -> bool {
        let ov = self.read();
        ov.moving_through.is_some()
            || ov.active_bytes >= MOVE_AT
            || ov
                .active_since
                .is_some_and(|t| t.elapsed() >= self.move_every)
    }

    /// Whether the presence filter is built and within its capacity (tests).
    #[cfg(test)]
    pub(super) fn filter_built(&self) -> bool {
        self.presence.as_ref().is_some_and(|p| !p.wants_build())
    }

    /// Bytes of entries in the log (tests).
    pub(super) fn log_bytes(&self) -> u64 {
        self.wal.entry_bytes().unwrap_or(0)
    }
}

/// What the log's owners hold. The mover upgrades its weak reference while it works, so
/// without a join the last owner's drop could leave the log (its directory lock, its last
/// move) to the mover's thread, to close whenever it lets go; dropping this instead stops
/// the mover and waits for it, and the log is closed when the drop returns.
pub(super) struct LoggedHandle {
    logged: Arc<Logged>,
    mover: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for LoggedHandle {
    type Target = Logged;

    fn deref(&self) -> &Logged {
        &self.logged
    }
}

impl Drop for LoggedHandle {
    fn drop(&mut self) {
        lock(&self.logged.signal.0).stop = true;
        self.logged.signal.1.notify_one();
        if let Some(mover) = self.mover.take() {
            // A panicked mover has let go too.
            let _ = mover.join();
        }
        // `logged` is now the last reference: it closes when this returns.
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // A clean shutdown leaves the log empty; what fails here stays in the log and is
        // applied by the next start's replay.
        if let Err(e) = self.sync() {
            error!(self.log, "write-ahead log: the last sync at shutdown failed"; "error" => %e);
        }
        let moved = {
            let one = lock(&self.moving);
            self.move_layer(&one)
        };
        if let Err(e) = moved {
            warn!(self.log, "write-ahead log: the last move into sled at shutdown failed; the next start replays the log"; "error" => %e);
        }
    }
}

/// How the mover reports failures: a streak of failed moves once, then once a
/// [`WARN_EVERY`]; a poisoned log once.
#[derive(Default)]
struct Reporter {
    /// When the current streak of failures was last reported.
    warned: Option<Instant>,
    poisoned: bool,
}

impl Reporter {
    /// Whether the last move failed.
    fn failing(&self) -> bool {
        self.warned.is_some() || self.poisoned
    }

    fn moved(&mut self, l: &Logged, moved: Result<(), PersistError>) {
        match moved {
            Ok(()) => self.warned = None,
            Err(e) => {
                let due = match self.warned {
                    None => true,
                    Some(t) => t.elapsed() >= WARN_EVERY,
                };
                if due {
                    warn!(l.log, "write-ahead log: moving the overlay into sled failed; retrying (it stays in memory and in the log)"; "error" => %e);
                    self.warned = Some(Instant::now());
                }
            }
        }
    }

    /// The log is poisoned by a failed write or sync, the flusher's as well as the mover's.
    fn check_poisoned(&mut self, l: &Logged) {
        if !self.poisoned && l.wal.is_poisoned() {
            error!(l.log, "write-ahead log: a write or sync failed; every write through it now fails with `storage` until the process is restarted");
            self.poisoned = true;
        }
    }
}

/// The mover: when kicked and when the overlay being filled is due (see
/// [`Logged::next_wait`]), moves a due overlay into sled.
fn run_mover(logged: Weak<Logged>, signal: Arc<(Mutex<Signal>, Condvar)>, period: Duration) {
    let mut report = Reporter::default();
    loop {
        // Not holding the log while waiting: its drop stops this thread.
        let Some(mut wait) = logged.upgrade().map(|l| {
            l.keep_presence();
            l.next_wait(period)
        }) else {
            return;
        };
        if report.failing() {
            // The overlay stays due while moves fail (a poisoned log fails every one).
            wait = wait.max(period / 8);
        }
        {
            let mut s = lock(&signal.0);
            if !s.stop && !s.kick {
                s = signal
                    .1
                    .wait_timeout(s, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if s.stop {
                return;
            }
            s.kick = false;
        }
        let Some(l) = logged.upgrade() else {
            return;
        };
        if l.due() {
            // On failure the overlay keeps everything and the log stays: the next round
            // retries.
            report.moved(&l, l.move_to_sled());
        }
        report.check_poisoned(&l);
    }
}
