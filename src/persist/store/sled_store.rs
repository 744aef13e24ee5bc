//! The sled implementation of [`Store`]: one `sled::Db`, six trees, prefix-keyed sets.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `objects` | ghid (65) | raw Golix bytes |
//! | `records` | ghid (65) | tag byte + fields of the [`Record`] |
//! | `bindings` | target (65) ‖ binding ghid (65) | kind byte (`S`/`D`) ‖ binder (65) |
//! | `debindings` | target (65) ‖ GDXX ghid (65) | debinder (65) |
//! | `requests` | recipient (65) ‖ GARQ ghid (65) | empty |
//! | `collected` | ghid (65) | empty |
//!
//! Sets are read with `scan_prefix(target)`. A [`WriteSet`] becomes one `Batch` per tree,
//! applied inside one multi-tree sled transaction: sled seals the transaction's log entries as
//! one batch, so recovery after a crash sees all of a publish or none of it. Nothing is
//! durable until [`Store::flush`] (`Db::flush`, an fsync of the log).
//!
//! Bytes read back are never trusted blindly: a malformed key or value is
//! [`PersistError::Storage`], never a panic.

use std::path::Path;

use bytes::Bytes;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch, Transactional, Tree};

use super::{sled_gate, Binding, Debinding, Record, Store, WriteSet};
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
    objects: Tree,
    records: Tree,
    bindings: Tree,
    debindings: Tree,
    requests: Tree,
    collected: Tree,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
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
    /// Opens (or creates) the ghidcache at `path`.
    pub fn open(path: &Path) -> Result<SledStore, PersistError> {
        SledStore::from_db(sled_gate::open(path)?)
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
            objects: objects?,
            records: records?,
            bindings: bindings?,
            debindings: debindings?,
            requests: requests?,
            collected: collected?,
            db,
        })
    }

    /// The underlying database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

impl Store for SledStore {
    fn object(&self, ghid: &Ghid) -> Result<Option<Bytes>, PersistError> {
        Ok(self
            .objects
            .get(ghid.as_bytes())?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    fn record(&self, ghid: &Ghid) -> Result<Option<Record>, PersistError> {
        self.records
            .get(ghid.as_bytes())?
            .map(|v| decode_record(&v))
            .transpose()
    }

    fn bindings(&self, target: &Ghid) -> Result<Vec<Binding>, PersistError> {
        self.bindings
            .scan_prefix(target.as_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                decode_binding(&k, &v)
            })
            .collect()
    }

    fn debindings(&self, target: &Ghid) -> Result<Vec<Debinding>, PersistError> {
        self.debindings
            .scan_prefix(target.as_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                decode_debinding(&k, &v)
            })
            .collect()
    }

    fn requests(&self, recipient: &Ghid) -> Result<Vec<Ghid>, PersistError> {
        self.requests
            .scan_prefix(recipient.as_bytes())
            .map(|kv| {
                let (k, _) = kv?;
                if k.len() != 2 * GHID_LEN {
                    return Err(corrupt("request index"));
                }
                ghid_at(&k, GHID_LEN, "request index")
            })
            .collect()
    }

    fn is_collected(&self, ghid: &Ghid) -> Result<bool, PersistError> {
        Ok(self.collected.contains_key(ghid.as_bytes())?)
    }

    fn apply(&self, w: &WriteSet) -> Result<(), PersistError> {
        if w.is_empty() {
            return Ok(());
        }
        let mut batches: [Batch; 6] = Default::default();
        let [objects, records, bindings, debindings, requests, collected] = &mut batches;
        for (g, v) in &w.objects {
            match v {
                Some(b) => objects.insert(&g.as_bytes()[..], &b[..]),
                None => objects.remove(&g.as_bytes()[..]),
            }
        }
        for (g, r) in &w.records {
            match r {
                Some(r) => records.insert(&g.as_bytes()[..], encode_record(r)),
                None => records.remove(&g.as_bytes()[..]),
            }
        }
        for ((t, m), b) in &w.bindings {
            let k = pair_key(t, m);
            match b {
                Some(b) => bindings.insert(&k[..], encode_binding(b)),
                None => bindings.remove(&k[..]),
            }
        }
        for ((t, m), d) in &w.debindings {
            let k = pair_key(t, m);
            match d {
                Some(d) => debindings.insert(&k[..], &d.debinder.as_bytes()[..]),
                None => debindings.remove(&k[..]),
            }
        }
        for ((r, g), add) in &w.requests {
            let k = pair_key(r, g);
            if *add {
                requests.insert(&k[..], &[][..]);
            } else {
                requests.remove(&k[..]);
            }
        }
        for (g, mark) in &w.collected {
            if *mark {
                collected.insert(&g.as_bytes()[..], &[][..]);
            } else {
                collected.remove(&g.as_bytes()[..]);
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
        sled_gate::flush(&self.db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::Algo;

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
        w.requests.insert((t1, m1), true);
        w.collected.insert(m2, true);
        s.apply(&w).unwrap();
        assert_eq!(s.bindings(&t1).unwrap().len(), 2);
        assert_eq!(s.bindings(&t2).unwrap().len(), 1);
        assert_eq!(s.requests(&t1).unwrap(), vec![m1]);
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
}
