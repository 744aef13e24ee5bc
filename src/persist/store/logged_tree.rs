//! # One sled tree behind a write-ahead log, for a caller outside the archive
//!
//! The daemon's vault (outbox, secrets, account records) keeps its sealed records in one sled
//! tree, and every local commit made it durable. Flushed directly, each commit cost a sled
//! flush: sled writes the flush's buffer on its I/O pool, and every job there wakes all seven
//! of the pool's idle threads. Behind [`Logged`]'s log a commit's sync is one write and one
//! `fdatasync`; the records move into sled in the background (at [`super::logged::MOVE_AT`]
//! bytes or `move_every`), and a restart applies what the log holds first.
//!
//! Owns: its [`Logged`] (log, overlay, mover thread). Calls: [`super::logged`]. Used by
//! `actors::vault`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use slog::Logger;

use super::logged::{Logged, LoggedHandle};
use super::wal::Op;
use crate::persist::PersistError;

/// Tree `name` of a sled database, read through and written to a write-ahead log in its own
/// directory. Cheap to clone; clones share the log. Open one per tree and directory.
#[derive(Clone)]
pub struct LoggedTree {
    logged: Arc<LoggedHandle>,
    name: Arc<str>,
}

impl LoggedTree {
    /// Opens tree `name` of `db` behind the log in `wal` (created if missing); what the log
    /// holds from before is applied to sled first.
    pub fn open(
        db: &sled::Db,
        name: &str,
        wal: &Path,
        move_every: Duration,
        log: Logger,
    ) -> Result<LoggedTree, PersistError> {
        let tree = db.open_tree(name)?;
        let logged = Logged::open(wal, db.clone(), vec![tree], None, move_every, log)?;
        Ok(LoggedTree {
            logged,
            name: Arc::from(name),
        })
    }

    /// The tree's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, PersistError> {
        self.logged.get(0, key)
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, PersistError> {
        self.logged.scan(0, prefix)
    }

    /// Sets (`Some`) or removes (`None`) each key, all at once: after a crash either every
    /// change is there or none is. Durable at the next [`LoggedTree::sync`].
    pub fn apply(
        &self,
        changes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), PersistError> {
        let ops = changes
            .into_iter()
            .map(|(key, value)| Op {
                tree: 0,
                key,
                value,
            })
            .collect();
        self.logged.apply(ops)
    }

    /// Returns once everything applied before the call is durable.
    pub fn sync(&self) -> Result<(), PersistError> {
        self.logged.sync()
    }
}
