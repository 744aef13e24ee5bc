//! # Which keys sled may hold: a filter that answers "not in sled" without a descent
//!
//! Why: most of a publish's reads ask about ghids the store has never seen (the new object's
//! record, the bindings of a target that is new) or about sets that are nearly always empty,
//! and each such miss cost a sled descent (3–9 µs each, several per publish).
//!
//! A Bloom filter over the keys of a logged store's trees (the first `prefix` bytes of each,
//! so a prefix scan can ask too). "Absent" is exact: every key sled holds is in the filter.
//! "Maybe" falls back to sled. It is kept so by [`super::logged`]: the mover adds a layer's
//! keys before its sled transaction, and (re)builds the filter from a scan of sled under the
//! move lock, when nothing else writes to sled. Until the first build every read goes to sled.
//! Removals leave their keys in; a filter that took twice the keys it was built for is
//! rebuilt.
//!
//! Bounds: [`BITS_PER_KEY`] bits per key of its capacity, which is twice the distinct
//! prefixes found at the last build (at least [`MIN_CAPACITY`]): about 4 bytes per key. A
//! build reads every key once (measured: 4.6 s per million keys with sled's cache cold,
//! 0.7 s warm), and moves wait for it.
//!
//! Owns: the filter. Calls: sled (the build's scan). Used by [`super::logged`].

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::RwLock;

use sled::Tree;

/// The fewest keys a filter is sized for (128 KiB of bits).
pub const MIN_CAPACITY: usize = 1 << 16;
/// Bits per key of capacity: with [`PROBES`] probes, about 0.25 % of absent keys come back
/// as "maybe" at full capacity.
pub const BITS_PER_KEY: usize = 16;
const PROBES: usize = 4;

struct Bloom {
    bits: Vec<u64>,
    /// Number of bits − 1 (a power of two).
    mask: u64,
    inserted: usize,
    capacity: usize,
}

impl Bloom {
    fn new(capacity: usize) -> Bloom {
        let bits = (capacity * BITS_PER_KEY).next_power_of_two().max(64);
        Bloom {
            bits: vec![0; bits / 64],
            mask: bits as u64 - 1,
            inserted: 0,
            capacity,
        }
    }

    /// Double hashing: the probes' positions from one 64-bit hash.
    fn positions(&self, h: u64) -> [usize; PROBES] {
        let step = h.rotate_left(32) | 1;
        std::array::from_fn(|i| {
            (h.wrapping_add((i as u64).wrapping_mul(step)) & self.mask) as usize
        })
    }

    fn insert(&mut self, h: u64) {
        for p in self.positions(h) {
            self.bits[p / 64] |= 1 << (p % 64);
        }
        self.inserted += 1;
    }

    fn contains(&self, h: u64) -> bool {
        self.positions(h)
            .iter()
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

/// The filter (see the module docs).
pub(super) struct Presence {
    hasher: RandomState,
    /// Bytes of each key that are filtered on.
    prefix: usize,
    /// `None` until the first build: nothing is known yet.
    bloom: RwLock<Option<Bloom>>,
}

impl Presence {
    pub(super) fn new(prefix: usize) -> Presence {
        Presence {
            hasher: RandomState::new(),
            prefix,
            bloom: RwLock::new(None),
        }
    }

    fn hash(&self, tree: usize, key: &[u8]) -> u64 {
        self.hasher
            .hash_one((tree, &key[..key.len().min(self.prefix)]))
    }

    /// Whether sled may hold `key` of `tree` (false: it does not).
    pub(super) fn may_hold(&self, tree: usize, key: &[u8]) -> bool {
        let bloom = self.bloom.read().unwrap_or_else(|e| e.into_inner());
        bloom
            .as_ref()
            .map_or(true, |b| b.contains(self.hash(tree, key)))
    }

    /// Whether sled may hold a key of `tree` under `prefix` (false: it holds none).
    pub(super) fn may_hold_prefix(&self, tree: usize, prefix: &[u8]) -> bool {
        prefix.len() < self.prefix || self.may_hold(tree, prefix)
    }

    /// Adds the keys about to be written to sled (`Some` values of each tree's entries).
    /// Before the sled write, or a reader could miss them.
    pub(super) fn add(&self, layer: &[BTreeMap<Vec<u8>, Option<Vec<u8>>>]) {
        let mut bloom = self.bloom.write().unwrap_or_else(|e| e.into_inner());
        let Some(b) = bloom.as_mut() else {
            return;
        };
        for (tree, entries) in layer.iter().enumerate() {
            for (k, v) in entries {
                if v.is_some() {
                    b.insert(self.hash(tree, k));
                }
            }
        }
    }

    /// Whether the filter is still to be built, or took more keys than it was sized for.
    pub(super) fn wants_build(&self) -> bool {
        let bloom = self.bloom.read().unwrap_or_else(|e| e.into_inner());
        bloom.as_ref().map_or(true, |b| b.inserted > b.capacity)
    }

    /// Builds the filter from every key of `trees`. Only while nothing writes to sled (the
    /// caller holds the move lock). Gives up, keeping the filter as it was, when `stop`
    /// returns true (asked every few thousand keys).
    pub(super) fn build(&self, trees: &[Tree], stop: impl Fn() -> bool) -> sled::Result<()> {
        let mut hashes = Vec::new();
        for (tree, t) in trees.iter().enumerate() {
            let mut last: Option<sled::IVec> = None;
            for (i, k) in t.iter().keys().enumerate() {
                let k = k?;
                if i % 4096 == 0 && stop() {
                    return Ok(());
                }
                let p = &k[..k.len().min(self.prefix)];
                if last.as_ref().is_some_and(|l| l.as_ref() == p) {
                    continue;
                }
                hashes.push(self.hash(tree, p));
                last = Some(sled::IVec::from(p));
            }
        }
        let mut bloom = Bloom::new((2 * hashes.len()).max(MIN_CAPACITY));
        for h in hashes {
            bloom.insert(h);
        }
        *self.bloom.write().unwrap_or_else(|e| e.into_inner()) = Some(bloom);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temporary_db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, db)
    }

    #[test]
    fn absent_is_exact_and_maybe_is_rare() {
        let (_dir, db) = temporary_db();
        let trees = [db.open_tree("a").unwrap(), db.open_tree("b").unwrap()];
        let p = Presence::new(4);
        assert!(p.may_hold(0, b"anything"), "nothing known before the build");
        assert!(p.wants_build());
        for i in 0u32..1000 {
            // Three keys under each prefix in tree 0; one in tree 1.
            for j in 0u8..3 {
                let mut k = i.to_be_bytes().to_vec();
                k.push(j);
                trees[0].insert(k, b"v").unwrap();
            }
            trees[1]
                .insert((i + 1_000_000).to_be_bytes(), b"v")
                .unwrap();
        }
        p.build(&trees, || false).unwrap();
        assert!(!p.wants_build());
        for i in 0u32..1000 {
            assert!(p.may_hold(0, &[&i.to_be_bytes()[..], &[2]].concat()));
            assert!(p.may_hold_prefix(0, &i.to_be_bytes()));
            assert!(p.may_hold(1, &(i + 1_000_000).to_be_bytes()));
        }
        // Shorter than the filtered prefix: cannot be answered, so "maybe".
        assert!(p.may_hold_prefix(0, &[0]));
        let absent = (2_000_000u32..2_100_000)
            .filter(|i| p.may_hold(0, &i.to_be_bytes()) || p.may_hold(1, &i.to_be_bytes()))
            .count();
        assert!(
            absent < 1000,
            "{absent} of 100,000 absent keys (asked of both trees) came back as maybe"
        );

        // Added before a write: found at once.
        let mut layer = vec![BTreeMap::new(); 2];
        layer[1].insert(b"new!".to_vec(), Some(b"v".to_vec()));
        layer[1].insert(b"gone".to_vec(), None);
        p.add(&layer);
        assert!(p.may_hold(1, b"new!"));
        // A build that is stopped keeps the filter as it was.
        p.build(&trees, || true).unwrap();
        assert!(p.may_hold(1, b"new!"));
    }

    #[test]
    fn a_filter_that_took_more_than_its_capacity_wants_a_build() {
        let (_dir, db) = temporary_db();
        let trees = [db.open_tree("a").unwrap()];
        let p = Presence::new(8);
        p.build(&trees, || false).unwrap();
        let mut layer = vec![BTreeMap::new()];
        for i in 0..=MIN_CAPACITY as u64 {
            layer[0].insert(i.to_be_bytes().to_vec(), Some(Vec::new()));
        }
        p.add(&layer);
        assert!(p.wants_build());
    }
}
