//! What one front-end knows of one partition's stream, so that its conditional writes need
//! neither a re-read of the key nor a retry against its own other writes.
//!
//! Every conditional write of a partition expects the stream's last sequence (see
//! `txn`'s `cas`), so writes of one partition are a chain: two writers expecting the same
//! sequence cannot both succeed. Within one process they are therefore queued behind one
//! lock ([`Partition::writer`]): this front-end's publishers never retry each other, only
//! other front-ends' writes make them retry.
//!
//! [`Known`] holds revisions of keys *as of* the sequence it names: "the key's last message
//! at stream sequence `seq` is `rev`" (0: absent). A write expecting `seq` succeeds only if
//! nothing was appended since, so when `Known` says the key is at the expected revision the
//! key needs no re-read. Entries come from this process's own acknowledged appends, from
//! reads made while `seq` was already the stream's last sequence (a read that returns a
//! revision not above `seq` means no later append touched the key), and from transaction
//! ids just drawn (absent). Deletes are not appends and so are invisible in `seq`; they are
//! only ever made of a locked row's message or a finished transaction's record, whose
//! writers all compute the same outcome (`docs/persister-cluster.md`), so an entry naming a
//! deleted message can only make a write that was deleting it anyway find it gone. Any sign
//! of another writer (a wrong last sequence) empties the map; a known revision that differs
//! from the expected one is checked by a read, never taken as a conflict.
//!
//! [`Partition::cached`] keeps the last unlocked content seen of rows, with its revision (a
//! fact about that message, never wrong, only possibly outdated). A rule pass may start from
//! it: every row a pass reads is validated at commit (written rows by their prewrite at the
//! revision read, the others by the commit's append or a read), so an outdated row can only
//! make the transaction conflict and re-run without the cache, and a pass that ends in a
//! refusal or in nothing to write is re-run without it before it is believed.
//!
//! Owns: the per-partition writer lock, [`Known`] and the row cache. Calls `rows` (types).
//! Used by `txn` and the store's rule passes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::rows::{Body, Row};

/// Keys remembered per partition; past it the map starts again (it is only a cache).
const MAX_KNOWN: usize = 65_536;
/// Bytes of row content cached per partition; past it the cache starts again.
pub const MAX_CACHED_BYTES: usize = 8 << 20;

/// One partition's stream, as far as this process knows it.
#[derive(Default)]
pub struct Partition {
    /// Held across a conditional write (check, append, acknowledgement).
    pub writer: tokio::sync::Mutex<()>,
    known: Mutex<Known>,
    rows: Mutex<RowCache>,
}

/// Unlocked row contents by key, with their revision, bounded in bytes.
#[derive(Default)]
struct RowCache {
    rows: HashMap<String, (u64, Row)>,
    bytes: usize,
}

/// About what a row takes in memory.
fn size_of(key: &str, row: &Row) -> usize {
    let body = match &row.body {
        Some(Body::Inline(b)) => b.len(),
        Some(Body::Blob(n)) => n.len(),
        None => 0,
    };
    let members: usize = row.members.iter().map(|(k, v)| k.len() + v.len()).sum();
    key.len() + body + members + row.record.as_ref().map_or(0, |r| r.len()) + 64
}

/// Revisions of keys as of stream sequence `seq`.
#[derive(Default, Debug)]
pub struct Known {
    /// The stream's last sequence as far as this process knows.
    pub seq: u64,
    revs: HashMap<String, u64>,
}

impl Partition {
    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last sequence known and the key's revision as of it, if known.
    pub fn get(&self, key: &str) -> (u64, Option<u64>) {
        let k = self.known();
        (k.seq, k.revs.get(key).copied())
    }

    /// The last sequence known.
    pub fn seq(&self) -> u64 {
        self.known().seq
    }

    /// Our append of `key` expecting `expected` was acknowledged at `seq`.
    pub fn appended(&self, expected: u64, key: &str, seq: u64) {
        let mut k = self.known();
        if k.seq != expected {
            k.revs.clear();
        }
        k.seq = k.seq.max(seq);
        if k.seq == seq {
            k.insert(key, seq);
        }
    }

    /// The stream's last sequence is `seq` (learnt from a refused append or stream info):
    /// appends we did not see may have happened, so nothing else is known.
    pub fn moved(&self, seq: u64) {
        let mut k = self.known();
        k.revs.clear();
        k.seq = seq;
    }

    /// A read started while the last sequence known was `seq_before` returned `rev` for
    /// `key` (unlocked content, or absent). Remembered only if it proves the key's revision
    /// as of a sequence we still hold.
    pub fn read(&self, seq_before: u64, key: &str, rev: u64) {
        let mut k = self.known();
        if k.seq == seq_before && rev <= seq_before {
            k.insert(key, rev);
        }
    }

    /// `key` is absent as of the current sequence (a transaction id just drawn at random).
    pub fn fresh(&self, key: &str) {
        self.known().insert(key, 0);
    }

    /// We deleted `key`'s last message (or found it gone).
    pub fn deleted(&self, key: &str) {
        self.known().revs.remove(key);
        self.forget_row(key);
    }

    fn cache(&self) -> MutexGuard<'_, RowCache> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last unlocked content seen of `key`, with its revision.
    pub fn cached(&self, key: &str) -> Option<(u64, Row)> {
        self.cache().rows.get(key).cloned()
    }

    /// `key`'s message `rev` holds `row` (unlocked); kept unless a newer one is cached.
    pub fn saw_row(&self, key: &str, rev: u64, row: &Row) {
        if row.lock.is_some() {
            return self.forget_row(key);
        }
        let size = size_of(key, row);
        let mut c = self.cache();
        if let Some((old, prev)) = c.rows.get(key) {
            if *old > rev && rev != 0 {
                return;
            }
            let freed = size_of(key, prev);
            c.bytes -= freed;
        }
        if c.bytes + size > MAX_CACHED_BYTES {
            c.rows.clear();
            c.bytes = 0;
        }
        c.bytes += size;
        c.rows.insert(key.to_owned(), (rev, row.clone()));
    }

    /// Drops `key` from the row cache.
    pub fn forget_row(&self, key: &str) {
        let mut c = self.cache();
        if let Some((_, prev)) = c.rows.remove(key) {
            c.bytes -= size_of(key, &prev);
        }
    }
}

impl Known {
    fn insert(&mut self, key: &str, rev: u64) {
        if self.revs.len() >= MAX_KNOWN {
            self.revs.clear();
        }
        self.revs.insert(key.to_owned(), rev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_revisions_hold_only_while_no_other_writer_moved_the_stream() {
        let p = Partition::default();
        p.moved(10);
        p.read(10, "o.a", 7);
        assert_eq!(p.get("o.a"), (10, Some(7)));
        // A read that returned a revision above the sequence proves nothing as of it.
        p.read(10, "o.b", 11);
        assert_eq!(p.get("o.b"), (10, None));
        // Our own append keeps what we knew and adds the key written.
        p.appended(10, "o.c", 11);
        assert_eq!(p.get("o.a"), (11, Some(7)));
        assert_eq!(p.get("o.c"), (11, Some(11)));
        // A read begun before our append does not count.
        p.read(10, "o.d", 3);
        assert_eq!(p.get("o.d"), (11, None));
        // An append after a gap (someone else wrote) forgets everything else.
        p.appended(12, "o.e", 13);
        assert_eq!(p.get("o.a"), (13, None));
        assert_eq!(p.get("o.e"), (13, Some(13)));
        p.fresh("t.x");
        assert_eq!(p.get("t.x"), (13, Some(0)));
        p.deleted("t.x");
        assert_eq!(p.get("t.x"), (13, None));
        p.moved(20);
        assert_eq!(p.get("o.e"), (20, None));
        assert_eq!(p.seq(), 20);
    }

    #[test]
    fn the_row_cache_keeps_the_newest_unlocked_content_within_its_bytes() {
        let p = Partition::default();
        let row = |n: u8| Row {
            record: Some(serde_bytes::ByteBuf::from(vec![n; 10])),
            ..Row::default()
        };
        p.saw_row("o.a", 5, &row(1));
        p.saw_row("o.a", 3, &row(2));
        assert_eq!(
            p.cached("o.a"),
            Some((5, row(1))),
            "an older message does not win"
        );
        p.saw_row("o.a", 8, &row(3));
        assert_eq!(p.cached("o.a"), Some((8, row(3))));
        let locked = Row {
            lock: Some("tx".into()),
            ..row(4)
        };
        p.saw_row("o.a", 9, &locked);
        assert_eq!(
            p.cached("o.a"),
            None,
            "a locked row is not cached, and evicts"
        );
        p.saw_row("o.b", 2, &row(5));
        p.deleted("o.b");
        assert_eq!(p.cached("o.b"), None);
        let big = Row {
            body: Some(Body::Inline(serde_bytes::ByteBuf::from(vec![
                0;
                MAX_CACHED_BYTES
                    / 2
            ]))),
            ..Row::default()
        };
        p.saw_row("o.c", 1, &big);
        p.saw_row("o.d", 1, &big);
        assert!(p.cache().bytes <= MAX_CACHED_BYTES);
        assert_eq!(
            p.cached("o.c"),
            None,
            "past the bound the cache starts again"
        );
        assert!(p.cached("o.d").is_some());
    }
}
