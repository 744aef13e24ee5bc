//! # The sled gate: no atomic batch starts while a flush is running
//!
//! sled 0.34 guards every database in the process with one global reader/writer lock
//! ("concurrency control"): plain reads and writes take it shared, transactions and
//! `apply_batch` take it exclusive, and a flush holds it *shared while it waits for the log
//! to become stable* — which needs sled's IO threads, which take it shared too. Once a
//! transaction is queued for the exclusive lock (the lock prefers writers), those IO threads
//! queue behind it, the flush never finishes, and the process stops (seen under a flood of
//! `new` requests to one daemon: `tests/hostile_ipc.rs`).
//!
//! The way out is to never let an exclusive request meet a flush in progress: every flush
//! and every transaction / batch of ours goes through this gate (flushes shared, batches
//! exclusive), and sled's own background flusher — which would flush behind the gate's back
//! — is off for every database we open ([`open`]). Durability is unchanged: every write we
//! acknowledge is flushed explicitly (group commit) before its acknowledgement, and a clean
//! shutdown flushes.
//!
//! Opening goes through here too: sled's IO threads hold the database's file lock for a
//! moment after the last handle is dropped, so an open that finds it locked is retried for
//! [`LOCK_RELEASE_WAIT`] before the error is returned.
//!
//! Owns: the process-wide gate. Calls: sled. Used by the sled store and the daemon's vault.

use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

static GATE: RwLock<()> = RwLock::new(());

/// Opens (or creates) a sled database at `path` without sled's background flusher, with
/// sled's default page cache (1 GiB).
pub fn open(path: &Path) -> sled::Result<sled::Db> {
    open_config(sled::Config::new().path(path).flush_every_ms(None))
}

/// The smallest page cache [`open_with_cache`] gives a database (sled refuses tiny ones).
pub const MIN_CACHE_CAPACITY: u64 = 1024 * 1024;

/// [`open`] with a page cache of `cache_capacity` bytes (at least [`MIN_CACHE_CAPACITY`]).
pub fn open_with_cache(path: &Path, cache_capacity: u64) -> sled::Result<sled::Db> {
    open_config(
        sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity.max(MIN_CACHE_CAPACITY))
            .flush_every_ms(None),
    )
}

/// How long an open retries a database whose file lock is held. sled's IO threads drop
/// their handle (and with it the lock) just after the flush they serve completes, so a
/// database closed by this process a moment ago may still be locked; a lock held by another
/// process is still reported, after this wait.
pub const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(2);

fn open_config(config: sled::Config) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + LOCK_RELEASE_WAIT;
    loop {
        match config.open() {
            // sled reports a held lock as an `Other` I/O error naming it.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// A temporary database (tests), likewise without the background flusher.
pub fn temporary() -> sled::Result<sled::Db> {
    sled::Config::new()
        .temporary(true)
        .flush_every_ms(None)
        .open()
}

/// Held around every sled transaction and `apply_batch`.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    // The gate guards no data: a panic while held leaves nothing inconsistent.
    GATE.write().unwrap_or_else(|e| e.into_inner())
}

/// Held around every flush.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|e| e.into_inner())
}

/// Flushes `db` (blocking) under the gate.
pub fn flush(db: &sled::Tree) -> sled::Result<usize> {
    let _gate = shared();
    db.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_waits_for_a_lock_released_in_time_and_reports_one_that_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let held = open(&path).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let db = open(&path).expect("the lock was released within the wait");
        release.join().unwrap();

        let started = Instant::now();
        let err = open(&path).expect_err("still held by `db`");
        assert!(started.elapsed() >= LOCK_RELEASE_WAIT);
        assert!(err.to_string().contains("could not acquire lock"), "{err}");
        drop(db);
    }
}
