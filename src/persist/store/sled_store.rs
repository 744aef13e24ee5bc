//! The sled implementation of [`Store`]: one `sled::Db`, six trees, prefix-keyed sets.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `objects` | ghid (65) | raw Golix bytes |
//! | `records` | ghid (65) | tag byte + fields of the [`Record`] |
//! | `bindings` | target (65) ‖ binding ghid (65) | kind byte (`S`/`D`) ‖ binder (65) |
//! | `debindings` | target (65) ‖ GDXX ghid (65) | debinder (65) |
//! | `requests` | recipient (65) ‖ GARQ ghid (65) | empty (anonymous) or sender key (64) |
//! | `collected` | ghid (65) | empty |
//!
//! Object bytes of [`spill::THRESHOLD`] bytes or more are files in `<db>/large/` named by the
//! hex of their ghid, with a pointer in `objects` (see [`spill`]): sled keeps large values
//! in blobs it reclaims late, so a store overwritten with large states grew without bound.
//!
//! Sets are read with `scan_prefix(target)`. A [`WriteSet`] becomes one `Batch` per tree,
//! applied inside one multi-tree sled transaction: sled seals the transaction's log entries as
//! one batch, so recovery after a crash sees all of a publish or none of it. Nothing is
//! durable until [`Store::flush`] (`Db::flush`, an fsync of the log).
//!
//! [`SledStore::open_logged`] (the persister's store and the daemon's object cache) puts a write-ahead log in front of
//! sled instead ([`super::logged`]): `apply` logs and overlays, `flush` syncs the log, and
//! sled gets the writes in the background.
//!
//! Bytes read back are never trusted blindly: a malformed key or value is
//! [`PersistError::Storage`], never a panic.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch, Transactional, Tree};
use slog::Logger;

use super::logged::{Logged, LoggedHandle};
use super::spill::{self, Spill};
use super::wal::Op;
use super::{sled_gate, Binding, Debinding, Record, Sender, Store, WriteSet};
use crate::golix::{Ghid, Kind, GHID_LEN};
use crate::persist::PersistError;

const TREES: [&str; 6] = [
    "objects",
    "records",
    "bindings",
    "debindings",
    "requests",
    "collected",
];

/// Record tags on disk. Stable: never renumber.
const TAG_IDENTITY: u8 = 1;
const TAG_CONTAINER: u8 = 2;
const TAG_STATIC: u8 = 3;
const TAG_FRAME: u8 = 4;
const TAG_DYNAMIC: u8 = 5;
const TAG_DEBINDING: u8 = 6;
const TAG_REQUEST: u8 = 7;

const BIND_STATIC: u8 = b'S';
const BIND_DYNAMIC: u8 = b'D';

/// The sled ghidcache. Cheap to clone (sled handles are reference-counted).
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    /// Object bytes of [`spill::THRESHOLD`] or more, as files (`<db>/large/<hex ghid>`);
    /// `None` for a temporary store, which keeps everything in sled.
    spill: Option<Arc<Spill>>,
    objects: Tree,
    records: Tree,
    bindings: Tree,
    debindings: Tree,
    requests: Tree,
    collected: Tree,
    /// The write-ahead log and overlay in front of sled ([`SledStore::open_logged`]).
    log: Option<Arc<LoggedHandle>>,
}

/// Tree indexes, in [`TREES`] order.
const OBJECTS: usize = 0;
const RECORDS: usize = 1;
const BINDINGS: usize = 2;
const DEBINDINGS: usize = 3;
const REQUESTS: usize = 4;
const COLLECTED: usize = 5;

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

fn io_error(e: std::io::Error) -> PersistError {
    PersistError::Storage(format!("large object file: {e}"))
}

fn corrupt(what: &str) -> PersistError {
    PersistError::Storage(format!("corrupt {what} in the store"))
}

fn ghid_at(b: &[u8], at: usize, what: &str) -> Result<Ghid, PersistError> {
    b.get(at..at + GHID_LEN)
        .and_then(|s| Ghid::from_bytes(s).ok())
        .ok_or_else(|| corrupt(what))
}

pub(super) fn pair_key(a: &Ghid, b: &Ghid) -> [u8; 2 * GHID_LEN] {
    let mut k = [0u8; 2 * GHID_LEN];
    k[..GHID_LEN].copy_from_slice(a.as_bytes());
    k[GHID_LEN..].copy_from_slice(b.as_bytes());
    k
}

pub(super) fn encode_record(r: &Record) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + 3 * GHID_LEN + 8);
    match r {
        Record::Identity => v.push(TAG_IDENTITY),
        Record::Container { author } => {
            v.push(TAG_CONTAINER);
            v.extend_from_slice(author.as_bytes());
        }
        Record::Static { binder, target } => {
            v.push(TAG_STATIC);
            v.extend_from_slice(binder.as_bytes());
            v.extend_from_slice(target.as_bytes());
        }
        Record::Frame { dynamic } => {
            v.push(TAG_FRAME);
            v.extend_from_slice(dynamic.as_bytes());
        }
        Record::Dynamic {
            binder,
            counter,
            frame,
            target,
        } => {
            v.push(TAG_DYNAMIC);
            v.extend_from_slice(binder.as_bytes());
            v.extend_from_slice(&counter.to_be_bytes());
            v.extend_from_slice(frame.as_bytes());
            v.extend_from_slice(target.as_bytes());
        }
        Record::Debinding { debinder, target } => {
            v.push(TAG_DEBINDING);
            v.extend_from_slice(debinder.as_bytes());
            v.extend_from_slice(target.as_bytes());
        }
        Record::Request { recipient } => {
            v.push(TAG_REQUEST);
            v.extend_from_slice(recipient.as_bytes());
        }
    }
    v
}

pub(super) fn decode_record(b: &[u8]) -> Result<Record, PersistError> {
    const W: &str = "record";
    let g = |i: usize| ghid_at(b, 1 + i * GHID_LEN, W);
    let (record, len) = match b.first() {
        Some(&TAG_IDENTITY) => (Record::Identity, 1),
        Some(&TAG_CONTAINER) => (Record::Container { author: g(0)? }, 1 + GHID_LEN),
        Some(&TAG_STATIC) => (
            Record::Static {
                binder: g(0)?,
                target: g(1)?,
            },
            1 + 2 * GHID_LEN,
        ),
        Some(&TAG_FRAME) => (Record::Frame { dynamic: g(0)? }, 1 + GHID_LEN),
        Some(&TAG_DYNAMIC) => {
            let at = 1 + GHID_LEN;
            let counter = b
                .get(at..at + 8)
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt(W))?;
            (
                Record::Dynamic {
                    binder: g(0)?,
                    counter,
                    frame: ghid_at(b, at + 8, W)?,
                    target: ghid_at(b, at + 8 + GHID_LEN, W)?,
                },
                1 + 3 * GHID_LEN + 8,
            )
        }
        Some(&TAG_DEBINDING) => (
            Record::Debinding {
                debinder: g(0)?,
                target: g(1)?,
            },
            1 + 2 * GHID_LEN,
        ),
        Some(&TAG_REQUEST) => (Record::Request { recipient: g(0)? }, 1 + GHID_LEN),
        _ => return Err(corrupt(W)),
    };
    if b.len() != len {
        return Err(corrupt(W));
    }
    Ok(record)
}

pub(super) fn encode_binding(b: &Binding) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + GHID_LEN);
    v.push(if b.kind == Kind::Gobd {
        BIND_DYNAMIC
    } else {
        BIND_STATIC
    });
    v.extend_from_slice(b.binder.as_bytes());
    v
}

pub(super) fn decode_binding(key: &[u8], val: &[u8]) -> Result<Binding, PersistError> {
    const W: &str = "binding";
    let kind = match val.first() {
        Some(&BIND_STATIC) => Kind::Gobs,
        Some(&BIND_DYNAMIC) => Kind::Gobd,
        _ => return Err(corrupt(W)),
    };
    if val.len() != 1 + GHID_LEN || key.len() != 2 * GHID_LEN {
        return Err(corrupt(W));
    }
    Ok(Binding {
        ghid: ghid_at(key, GHID_LEN, W)?,
        kind,
        binder: ghid_at(val, 1, W)?,
    })
}

/// A GARQ's sender as stored: nothing for anonymous, else the 64-byte key.
pub(super) fn encode_sender(s: &Sender) -> Vec<u8> {
    match s {
        Sender::Anonymous => Vec::new(),
        Sender::Key(key) => key.to_vec(),
    }
}

pub(super) fn decode_sender(v: &[u8]) -> Result<Sender, PersistError> {
    match <[u8; 64]>::try_from(v) {
        Ok(key) => Ok(Sender::Key(key)),
        Err(_) if v.is_empty() => Ok(Sender::Anonymous),
        Err(_) => Err(corrupt("request sender")),
    }
}

pub(super) fn decode_debinding(key: &[u8], val: &[u8]) -> Result<Debinding, PersistError> {
    const W: &str = "debinding";
    if val.len() != GHID_LEN || key.len() != 2 * GHID_LEN {
        return Err(corrupt(W));
    }
    Ok(Debinding {
        ghid: ghid_at(key, GHID_LEN, W)?,
        debinder: ghid_at(val, 0, W)?,
    })
}

impl SledStore {
    /// Opens (or creates) the ghidcache at `path`, with large objects in `path/large`
    /// (files a crash left there without a pointer are deleted). Refused for a ghidcache
    /// whose write-ahead log (`path/wal`, see [`SledStore::open_logged`]) holds entries:
    /// without them sled lacks acknowledged writes, and writing to it would let the log's
    /// older entries overwrite newer ones at the next logged open.
    pub fn open(path: &Path) -> Result<SledStore, PersistError> {
        let wal = path.join("wal");
        if super::wal::holds_entries(&wal).map_err(io_error)? {
            return Err(PersistError::Storage(format!(
                "{} has a write-ahead log ({}): open it with its log",
                path.display(),
                wal.display()
            )));
        }
        SledStore::from_db(sled_gate::open(path)?)?.with_spill(path)
    }

    /// The ghidcache at `path` (a page cache of `cache_capacity` bytes) behind a write-ahead
    /// log in `path/wal` (`store::logged`; the persister's store and the daemon's object
    /// cache): what the log holds from before is applied to sled first. The log is moved
    /// into sled at least every `move_every`; its failures go to `log`.
    pub fn open_logged(
        path: &Path,
        cache_capacity: u64,
        move_every: Duration,
        log: Logger,
    ) -> Result<SledStore, PersistError> {
        let mut store = SledStore::from_db(sled_gate::open_with_cache(path, cache_capacity)?)?;
        let trees = store.trees().iter().map(|t| (*t).clone()).collect();
        let wal = path.join("wal");
        store.log = Some(Logged::open(
            &wal,
            store.db.clone(),
            trees,
            // Every key starts with a ghid; the set indexes are scanned by one.
            Some(GHID_LEN),
            move_every,
            log.clone(),
        )?);
        // After the replay: a large object's pointer may be only in the log.
        let store = store.with_spill(path)?;
        if let Some(missing) = store.large_missing() {
            slog::warn!(log, "large objects cannot be read or stored until it is back"; "missing" => missing);
        }
        Ok(store)
    }

    /// Large objects in `path/large`; files without a pointer (a crash between the file and
    /// its pointer) are deleted. A directory (or its marker) missing while `objects` points
    /// into it is not recreated (see [`spill`]): large objects then fail to read or store, as
    /// storage errors, until it is back.
    fn with_spill(mut self, path: &Path) -> Result<SledStore, PersistError> {
        let spill = Spill::open(&path.join("large"), || self.any_pointer()).map_err(io_error)?;
        spill.sweep(|name| self.points_at(name)).map_err(io_error)?;
        self.spill = Some(Arc::new(spill));
        Ok(self)
    }

    /// What is missing of the large objects' directory (it, or its marker), if anything.
    pub fn large_missing(&self) -> Option<String> {
        self.spill.as_ref().and_then(|s| s.missing())
    }

    /// Whether `objects` holds any spill pointer (asked only when the large objects'
    /// directory has no marker: a new store, or one from before markers).
    fn any_pointer(&self) -> std::io::Result<bool> {
        for value in self.objects.iter().values() {
            let value = value.map_err(|e| std::io::Error::other(e.to_string()))?;
            if spill::is_pointer(&value) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether `objects` holds a spill pointer under the ghid whose hex is `name`.
    fn points_at(&self, name: &str) -> std::io::Result<bool> {
        let Ok(key) = hex::decode(name) else {
            return Ok(false);
        };
        self.is_spilled(&key)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Whether the object stored under `key` is a pointer to a spilled file.
    fn is_spilled(&self, key: &[u8]) -> Result<bool, PersistError> {
        // Not copied out of the overlay: a removal asks this of every object it removes.
        self.peek(OBJECTS, key, |v| v.is_some_and(spill::is_pointer))
    }

    /// Bytes in the write-ahead log's files (0 without one; tests).
    pub fn log_bytes(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.log_bytes())
    }

    fn trees(&self) -> [&Tree; 6] {
        [
            &self.objects,
            &self.records,
            &self.bindings,
            &self.debindings,
            &self.requests,
            &self.collected,
        ]
    }

    /// `f` of the value of `key` in tree `tree`, read in place (through the log's overlay
    /// when there is one): nothing is copied that `f` does not copy.
    fn peek<R>(
        &self,
        tree: usize,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, PersistError> {
        match &self.log {
            Some(log) => log.peek(tree, key, f),
            None => Ok(f(self.trees()[tree].get(key)?.as_deref())),
        }
    }

    fn scan(
        &self,
        tree: usize,
        prefix: &[u8],
    ) -> Result<Vec<(sled::IVec, sled::IVec)>, PersistError> {
        match &self.log {
            Some(log) => log.scan(tree, prefix),
            None => self.trees()[tree]
                .scan_prefix(prefix)
                .map(|kv| kv.map_err(PersistError::from))
                .collect(),
        }
    }

    /// A store in a temporary directory, deleted when dropped (tests).
    pub fn temporary() -> Result<SledStore, PersistError> {
        SledStore::from_db(sled_gate::temporary()?)
    }

    /// Wraps an open sled database (its trees are created if missing).
    pub fn from_db(db: sled::Db) -> Result<SledStore, PersistError> {
        let [objects, records, bindings, debindings, requests, collected] =
            TREES.map(|name| db.open_tree(name));
        Ok(SledStore {
            spill: None,
            objects: objects?,
            records: records?,
            bindings: bindings?,
            debindings: debindings?,
            requests: requests?,
            collected: collected?,
            db,
            log: None,
        })
    }

    /// The underlying database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

impl Store for SledStore {
    fn object(&self, ghid: &Ghid) -> Result<Option<Bytes>, PersistError> {
        // The value, and whether it points at a spilled file (read outside the overlay's
        // lock).
        let found = self.peek(OBJECTS, ghid.as_bytes(), |v| {
            v.map(|v| (spill::is_pointer(v), Bytes::copy_from_slice(v)))
        })?;
        match (found, &self.spill) {
            (Some((true, pointer)), Some(spill)) => spill
                .read(&hex::encode(ghid.as_bytes()), &pointer)
                .map(|b| Some(Bytes::from(b)))
                .map_err(io_error),
            (found, _) => Ok(found.map(|(_, v)| v)),
        }
    }

    fn record(&self, ghid: &Ghid) -> Result<Option<Record>, PersistError> {
        self.peek(RECORDS, ghid.as_bytes(), |v| v.map(decode_record))?
            .transpose()
    }

    fn bindings(&self, target: &Ghid) -> Result<Vec<Binding>, PersistError> {
        self.scan(BINDINGS, target.as_bytes())?
            .iter()
            .map(|(k, v)| decode_binding(k, v))
            .collect()
    }

    fn debindings(&self, target: &Ghid) -> Result<Vec<Debinding>, PersistError> {
        self.scan(DEBINDINGS, target.as_bytes())?
            .iter()
            .map(|(k, v)| decode_debinding(k, v))
            .collect()
    }

    fn requests(&self, recipient: &Ghid) -> Result<Vec<(Ghid, Sender)>, PersistError> {
        self.scan(REQUESTS, recipient.as_bytes())?
            .iter()
            .map(|(k, v)| {
                if k.len() != 2 * GHID_LEN {
                    return Err(corrupt("request index"));
                }
                Ok((ghid_at(k, GHID_LEN, "request index")?, decode_sender(v)?))
            })
            .collect()
    }

    fn is_collected(&self, ghid: &Ghid) -> Result<bool, PersistError> {
        self.peek(COLLECTED, ghid.as_bytes(), |v| v.is_some())
    }

    fn apply(&self, w: &WriteSet) -> Result<(), PersistError> {
        if w.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::new();
        let mut op = |tree: usize, key: &[u8], value: Option<Vec<u8>>| {
            ops.push(Op {
                tree: tree as u8,
                key: key.to_vec(),
                value,
            })
        };
        let _writing = self.spill.as_ref().map(|s| s.writing());
        for (g, v) in &w.objects {
            let name = || hex::encode(g.as_bytes());
            match (v, &self.spill) {
                (Some(b), Some(spill)) if b.len() >= spill::THRESHOLD => {
                    let pointer = spill.write(&name(), b).map_err(io_error)?;
                    op(OBJECTS, g.as_bytes(), Some(pointer.to_vec()))
                }
                (Some(b), _) => op(OBJECTS, g.as_bytes(), Some(b.to_vec())),
                (None, spill) => {
                    // Only a spilled value has a file. (The stored value says so: an unlink
                    // of a name that has none costs a path lookup per removal, on the flush
                    // that every publish waits for, and leaves a negative dentry behind.)
                    if let Some(spill) = spill {
                        if self.is_spilled(g.as_bytes())? {
                            spill.remove_later(&name());
                        }
                    }
                    op(OBJECTS, g.as_bytes(), None)
                }
            }
        }
        for (g, r) in &w.records {
            op(RECORDS, g.as_bytes(), r.as_ref().map(encode_record));
        }
        for ((t, m), b) in &w.bindings {
            op(BINDINGS, &pair_key(t, m), b.as_ref().map(encode_binding));
        }
        for ((t, m), d) in &w.debindings {
            let value = d.as_ref().map(|d| d.debinder.as_bytes().to_vec());
            op(DEBINDINGS, &pair_key(t, m), value);
        }
        for ((r, g), sender) in &w.requests {
            op(
                REQUESTS,
                &pair_key(r, g),
                sender.as_ref().map(encode_sender),
            );
        }
        for (g, mark) in &w.collected {
            op(COLLECTED, g.as_bytes(), mark.then(Vec::new));
        }
        if let Some(log) = &self.log {
            return log.apply(ops);
        }
        let mut batches: [Batch; 6] = Default::default();
        for o in ops {
            let batch = &mut batches[usize::from(o.tree)];
            match o.value {
                Some(v) => batch.insert(o.key, v),
                None => batch.remove(o.key),
            }
        }
        let trees = (
            &self.objects,
            &self.records,
            &self.bindings,
            &self.debindings,
            &self.requests,
            &self.collected,
        );
        let _gate = sled_gate::exclusive();
        trees
            .transaction(|(o, r, b, d, q, c)| {
                o.apply_batch(&batches[0])?;
                r.apply_batch(&batches[1])?;
                b.apply_batch(&batches[2])?;
                d.apply_batch(&batches[3])?;
                q.apply_batch(&batches[4])?;
                c.apply_batch(&batches[5])?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => PersistError::from(e),
                TransactionError::Abort(()) => PersistError::Storage("transaction aborted".into()),
            })
    }

    fn flush(&self) -> Result<(), PersistError> {
        let doomed = self.spill.as_ref().map(|s| s.doomed()).unwrap_or_default();
        let synced = match &self.log {
            Some(log) => log.sync(),
            None => sled_gate::flush(&self.db).map(drop).map_err(Into::into),
        };
        if let Err(e) = synced {
            if let Some(spill) = &self.spill {
                spill.keep_doomed(doomed);
            }
            return Err(e);
        }
        // The removals scheduled before the sync are durable now: their files can go.
        if let Some(spill) = &self.spill {
            spill
                .collect(doomed, |name| self.points_at(name))
                .map_err(io_error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::logged::MOVE_EVERY;
    use super::*;
    use crate::golix::Algo;
    use crate::logging::discard;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let g = || Ghid::pseudorandom(Algo::SHA512);
        let all = [
            Record::Identity,
            Record::Container { author: g() },
            Record::Static {
                binder: g(),
                target: g(),
            },
            Record::Frame { dynamic: g() },
            Record::Dynamic {
                binder: g(),
                counter: 7,
                frame: g(),
                target: g(),
            },
            Record::Debinding {
                debinder: g(),
                target: g(),
            },
            Record::Request { recipient: g() },
        ];
        for r in all {
            let b = encode_record(&r);
            assert_eq!(decode_record(&b).unwrap(), r);
            assert!(decode_record(&b[..b.len() - 1]).is_err() || b.len() == 1);
            let mut longer = b.clone();
            longer.push(0);
            assert!(decode_record(&longer).is_err());
        }
        assert!(decode_record(&[]).is_err());
        assert!(decode_record(&[99]).is_err());
    }

    #[test]
    fn large_objects_are_files_that_go_once_their_removal_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let g = Ghid::pseudorandom(Algo::SHA512);
        let big = Bytes::from(vec![5u8; spill::THRESHOLD]);
        let small = Ghid::pseudorandom(Algo::SHA512);
        let file = path.join("large").join(hex::encode(g.as_bytes()));
        {
            let s = SledStore::open(&path).unwrap();
            s.put_object(&g, big.clone()).unwrap();
            s.put_object(&small, Bytes::from_static(b"GEOC small"))
                .unwrap();
            assert!(file.exists());
            assert_eq!(
                std::fs::read_dir(path.join("large")).unwrap().count(),
                2,
                "and the marker"
            );
            assert_eq!(s.object(&g).unwrap(), Some(big.clone()));
            s.flush().unwrap();
        }
        // Reopened: the pointed file is kept, a stray one swept.
        std::fs::write(path.join("large").join("ab"), b"stray").unwrap();
        let s = SledStore::open(&path).unwrap();
        assert_eq!(s.object(&g).unwrap(), Some(big));
        assert!(!path.join("large/ab").exists());
        s.delete_object(&g).unwrap();
        assert!(file.exists(), "kept until the removal is durable");
        s.flush().unwrap();
        assert!(!file.exists());
        assert_eq!(s.object(&g).unwrap(), None);
        assert!(s.object(&small).unwrap().is_some());
        // A small object has no file: its removal schedules no unlink.
        s.delete_object(&small).unwrap();
        let spill = s.spill.as_ref().unwrap();
        assert!(spill.doomed().is_empty());
    }

    #[test]
    fn a_store_whose_large_objects_are_elsewhere_opens_and_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (large, real) = (path.join("large"), dir.path().join("real"));
        let g = Ghid::pseudorandom(Algo::SHA512);
        let big = Bytes::from(vec![5u8; spill::THRESHOLD]);
        {
            let s = SledStore::open(&path).unwrap();
            s.put_object(&g, big.clone()).unwrap();
            s.flush().unwrap();
        }
        // Unmounted: an empty directory in its place.
        std::fs::rename(&large, &real).unwrap();
        std::fs::create_dir(&large).unwrap();
        let s = SledStore::open(&path).unwrap();
        assert!(s.large_missing().is_some());
        assert!(matches!(s.object(&g), Err(PersistError::Storage(_))));
        let other = Ghid::pseudorandom(Algo::SHA512);
        assert!(s.put_object(&other, big.clone()).is_err());
        assert_eq!(std::fs::read_dir(&large).unwrap().count(), 0);
        drop(s);
        std::fs::remove_dir(&large).unwrap();
        std::fs::rename(&real, &large).unwrap();
        let s = SledStore::open(&path).unwrap();
        assert!(s.large_missing().is_none());
        assert_eq!(s.object(&g).unwrap(), Some(big));
    }

    #[test]
    fn sets_are_prefix_scoped_and_apply_is_whole() {
        let s = SledStore::temporary().unwrap();
        let (t1, t2, m1, m2, who) = (
            Ghid::pseudorandom(Algo::SHA512),
            Ghid::pseudorandom(Algo::SHA512),
            Ghid::pseudorandom(Algo::SHA512),
            Ghid::pseudorandom(Algo::SHA512),
            Ghid::pseudorandom(Algo::SHA512),
        );
        let mut w = WriteSet::default();
        for (t, m) in [(t1, m1), (t1, m2), (t2, m1)] {
            let b = Binding {
                ghid: m,
                kind: Kind::Gobs,
                binder: who,
            };
            w.bindings.insert((t, m), Some(b));
        }
        w.requests.insert((t1, m1), Some(Sender::Anonymous));
        w.requests.insert((t2, m2), Some(Sender::Key([7; 64])));
        w.collected.insert(m2, true);
        s.apply(&w).unwrap();
        assert_eq!(s.bindings(&t1).unwrap().len(), 2);
        assert_eq!(s.bindings(&t2).unwrap().len(), 1);
        assert_eq!(s.requests(&t1).unwrap(), vec![(m1, Sender::Anonymous)]);
        assert_eq!(s.requests(&t2).unwrap(), vec![(m2, Sender::Key([7; 64]))]);
        assert!(s.is_collected(&m2).unwrap());
        let mut w = WriteSet::default();
        w.bindings.insert((t1, m1), None);
        w.collected.insert(m2, false);
        s.apply(&w).unwrap();
        assert_eq!(s.bindings(&t1).unwrap()[0].ghid, m2);
        assert!(!s.is_collected(&m2).unwrap());
        s.put_object(&m1, Bytes::from_static(b"x")).unwrap();
        assert_eq!(s.object(&m1).unwrap().as_deref(), Some(&b"x"[..]));
        s.delete_object(&m1).unwrap();
        assert_eq!(s.object(&m1).unwrap(), None);
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }

    /// Waits (bounded) until the mover has built the store's filter of sled's keys.
    fn wait_for_filter(s: &SledStore) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !s.log.as_ref().unwrap().filter_built() {
            assert!(std::time::Instant::now() < deadline, "filter not built");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn reads_behind_the_filter_find_everything_sled_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let every = std::time::Duration::from_millis(10);
        let open = || {
            SledStore::open_logged(&path, sled_gate::MIN_CACHE_CAPACITY, every, discard()).unwrap()
        };
        let g = || Ghid::pseudorandom(Algo::SHA512);
        let who = g();
        let write = |s: &SledStore, targets: &[Ghid], present: bool| {
            let mut w = WriteSet::default();
            for t in targets {
                let record = present.then_some(Record::Container { author: who });
                w.records.insert(*t, record);
                let b = Binding {
                    ghid: *t,
                    kind: Kind::Gobd,
                    binder: who,
                };
                w.bindings.insert((*t, *t), present.then_some(b));
            }
            s.apply(&w).unwrap();
        };
        let found = |s: &SledStore, t: &Ghid| {
            let record = s.record(t).unwrap().is_some();
            assert_eq!(record, s.bindings(t).unwrap().len() == 1, "{t:?}");
            record
        };
        // In sled before the open: found by the filter's first build.
        let before: Vec<Ghid> = (0..500).map(|_| g()).collect();
        let s = open();
        write(&s, &before, true);
        drop(s);
        let s = open();
        wait_for_filter(&s);
        assert!(before.iter().all(|t| found(&s, t)));
        assert!(!(0..500).any(|_| found(&s, &g())), "absent");
        // Written while the mover moves every 10 ms: found right after the write, and
        // after their move; removed ones gone.
        let mut live = Vec::new();
        for round in 0..200 {
            let new: Vec<Ghid> = (0..5).map(|_| g()).collect();
            write(&s, &new, true);
            assert!(new.iter().all(|t| found(&s, t)));
            live.extend(new);
            if round % 10 == 9 {
                let gone = live.split_off(live.len() - 20);
                write(&s, &gone, false);
                assert!(!gone.iter().any(|t| found(&s, t)));
                std::thread::sleep(every);
            }
        }
        assert!(live.iter().all(|t| found(&s, t)));
        // More keys than the filter was built for: rebuilt, and still exact.
        let many: Vec<Ghid> = (0..super::super::presence::MIN_CAPACITY / 2 + 1000)
            .map(|_| g())
            .collect();
        for chunk in many.chunks(1000) {
            write(&s, chunk, true);
        }
        s.log.clone().unwrap().move_to_sled().unwrap();
        wait_for_filter(&s);
        assert!(many.iter().step_by(97).all(|t| found(&s, t)));
        assert!(live.iter().chain(&before).all(|t| found(&s, t)));
    }

    #[test]
    fn the_first_write_into_an_idle_log_moves_within_its_period() {
        let dir = tempfile::tempdir().unwrap();
        let every = std::time::Duration::from_millis(20);
        let s = SledStore::open_logged(
            &dir.path().join("db"),
            sled_gate::MIN_CACHE_CAPACITY,
            every,
            discard(),
        )
        .unwrap();
        // The mover has slept idle since the open; the write must wake it.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut w = WriteSet::default();
        w.objects.insert(
            Ghid::pseudorandom(Algo::SHA512),
            Some(Bytes::from_static(b"GEOC x")),
        );
        s.apply(&w).unwrap();
        s.flush().unwrap();
        assert!(s.log_bytes() > 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while s.log_bytes() > 0 {
            assert!(std::time::Instant::now() < deadline, "not moved into sled");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn one_log_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled_gate::open(&dir.path().join("db")).unwrap();
        let wal = dir.path().join("wal");
        let open = |name: &str| {
            crate::persist::store::LoggedTree::open(&db, name, &wal, MOVE_EVERY, discard())
        };
        let first = open("a").unwrap();
        let second = open("b").err().map(|e| e.to_string());
        assert!(second.is_some_and(|e| e.contains("in use")));
        drop(first);
        // Free as soon as the drop returns: even when its mover was at work (it starts
        // working as soon as it starts), and even when another thread forks meanwhile (a
        // child shares the lock's descriptor until it execs).
        let stop = Arc::new(AtomicBool::new(false));
        let spawner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::process::Command::new("true").status().unwrap();
                }
            })
        };
        let reopened: Vec<_> = (0..200).map(|_| open("b").err()).collect();
        stop.store(true, Ordering::Relaxed);
        spawner.join().unwrap();
        if let Some(e) = reopened.into_iter().flatten().next() {
            panic!("free once the first is gone: {e}");
        }
    }

    #[test]
    fn a_logged_store_reads_through_its_overlay_moves_it_to_sled_and_replays_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let (path, crashed) = (dir.path().join("db"), dir.path().join("crashed"));
        let g = || Ghid::pseudorandom(Algo::SHA512);
        let (t, m1, m2, who) = (g(), g(), g(), g());
        let binding = |m| Binding {
            ghid: m,
            kind: Kind::Gobs,
            binder: who,
        };
        let s = SledStore::open_logged(&path, sled_gate::MIN_CACHE_CAPACITY, MOVE_EVERY, discard())
            .unwrap();
        let mut w = WriteSet::default();
        w.bindings.insert((t, m1), Some(binding(m1)));
        w.bindings.insert((t, m2), Some(binding(m2)));
        w.objects.insert(m1, Some(Bytes::from_static(b"GEOC one")));
        w.collected.insert(m2, true);
        s.apply(&w).unwrap();
        s.flush().unwrap();
        assert_eq!(s.bindings(&t).unwrap().len(), 2);
        assert!(s.is_collected(&m2).unwrap());
        assert!(
            s.bindings.get(pair_key(&t, &m1)).unwrap().is_none(),
            "not in sled yet"
        );
        let mut w = WriteSet::default();
        w.bindings.insert((t, m1), None);
        w.collected.insert(m2, false);
        s.apply(&w).unwrap();
        assert_eq!(s.bindings(&t).unwrap(), vec![binding(m2)]);
        assert!(!s.is_collected(&m2).unwrap());

        let log = s.log.clone().unwrap();
        log.move_to_sled().unwrap();
        assert_eq!(s.log_bytes(), 0, "moved: the log is empty");
        assert!(s.bindings.get(pair_key(&t, &m1)).unwrap().is_none());
        assert!(s.bindings.get(pair_key(&t, &m2)).unwrap().is_some());
        assert_eq!(s.bindings(&t).unwrap(), vec![binding(m2)]);

        // Durable in the log only, then "crash": a copy of the files as they are.
        let mut w = WriteSet::default();
        w.bindings.insert((t, m1), Some(binding(m1)));
        w.objects.insert(m1, None);
        s.apply(&w).unwrap();
        s.flush().unwrap();
        assert!(s.log_bytes() > 0);
        copy_dir(&path, &crashed);
        // Not without its log: sled alone lacks what the log holds.
        let plain = SledStore::open(&crashed).err().map(|e| e.to_string());
        assert!(plain.is_some_and(|e| e.contains("write-ahead log")));
        for _ in 0..2 {
            // Replayed at open (twice: replay is idempotent), straight into sled.
            // (The last open's mover may hold the database a moment longer.)
            let r = (0..100)
                .find_map(|_| {
                    let r = SledStore::open_logged(
                        &crashed,
                        sled_gate::MIN_CACHE_CAPACITY,
                        MOVE_EVERY,
                        discard(),
                    );
                    if r.is_err() {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    r.ok()
                })
                .expect("reopened");
            assert_eq!(r.log_bytes(), 0);
            assert!(r.bindings.get(pair_key(&t, &m1)).unwrap().is_some());
            let mut want = vec![binding(m1), binding(m2)];
            want.sort_by_key(|b| b.ghid);
            assert_eq!(r.bindings(&t).unwrap(), want);
            assert_eq!(r.object(&m1).unwrap(), None);
            assert!(!r.is_collected(&m2).unwrap());
        }
    }
}
