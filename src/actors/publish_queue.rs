//! [`PublishQueue`], the daemon's durable per-remote publish queue (the "outbox" of `hgxd
//! status`): Golix objects committed locally but not yet acknowledged by a remote. It is also
//! every commit's write-ahead log: [`PublishQueue::stage`] writes a commit's objects before
//! the local archive takes them, and only [`PublishQueue::release`] shows them to the
//! remotes' drains (see [`super::durable`]).
//!
//! Owns: one queue per remote in the [`Vault`], keyed
//! `b"outbox\0" | 8-byte tag of the remote URL | u64 big-endian sequence number`, so a prefix
//! scan returns a remote's entries in publish order and the queues survive restarts. Values
//! are the raw object bytes (sealed by the vault like everything else). An entry is removed
//! only when its remote acknowledged it, or refused it for good (a rule, or too large for
//! it): `RemoteActor` logs that as a warning and tells the apps tracking the object.
//!
//! Calls: the vault. Staged and released by [`super::durable::commit_now`] (objects, account,
//! shares, holds); drained by each `RemoteActor` ([`super::drain`]). Durability: `enqueue` writes to sled; callers that
//! acknowledge something to an app flush the vault first.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha512};
use tokio::sync::Notify;

use super::error::DaemonError;
use super::vault::Vault;

const PREFIX: &[u8] = b"outbox\0";
const TAG_LEN: usize = 8;

/// One remote's queue.
struct Queue {
    url: String,
    /// `PREFIX | tag`.
    prefix: Vec<u8>,
    /// Sequence numbers present in the vault (loaded once at open; the vault stays the
    /// source of truth across restarts).
    seqs: Mutex<BTreeSet<u64>>,
    /// Woken after every enqueue.
    kick: Notify,
}

impl Queue {
    fn seqs(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        self.seqs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every remote's queue over one vault. Cheap to clone.
#[derive(Clone)]
pub struct PublishQueue {
    vault: Vault,
    queues: Arc<Vec<Queue>>,
    /// Next sequence number (shared by all queues: numbers only need to grow).
    next: Arc<AtomicU64>,
    /// Serializes number allocation with the writes so entries appear in number order.
    write: Arc<Mutex<()>>,
}

/// A queued object.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub object: Vec<u8>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored(#[serde(with = "serde_bytes")] Vec<u8>);

/// A short stable name of a remote URL, for vault keys.
pub(super) fn tag(url: &str) -> [u8; TAG_LEN] {
    let d = Sha512::digest(url.as_bytes());
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(&d[..TAG_LEN]);
    t
}

impl PublishQueue {
    /// Opens the queues of `urls` (in that order: a queue is named by its index).
    pub fn open(vault: Vault, urls: &[String]) -> Result<PublishQueue, DaemonError> {
        let mut queues = Vec::with_capacity(urls.len());
        let mut next = 0u64;
        for url in urls {
            let mut prefix = PREFIX.to_vec();
            prefix.extend_from_slice(&tag(url));
            // From the keys alone: a record that does not open must not keep the daemon
            // from starting (the drain drops it when it comes first, see `first`).
            let seqs: BTreeSet<u64> = vault
                .keys_with_prefix(&prefix)?
                .iter()
                .filter_map(|k| seq_of(k))
                .collect();
            if let Some(last) = seqs.last() {
                next = next.max(last + 1);
            }
            queues.push(Queue {
                url: url.clone(),
                prefix,
                seqs: Mutex::new(seqs),
                kick: Notify::new(),
            });
        }
        Ok(PublishQueue {
            vault,
            queues: Arc::new(queues),
            next: Arc::new(AtomicU64::new(next)),
            write: Arc::new(Mutex::new(())),
        })
    }

    /// Number of queues (= remotes).
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// The URL of queue `q`.
    pub fn url(&self, q: usize) -> &str {
        &self.queues[q].url
    }

    /// Appends `objects`, in order, to every remote's queue, then wakes the drainers. Not
    /// durable until the vault is flushed.
    pub fn enqueue(&self, objects: &[Vec<u8>]) -> Result<(), DaemonError> {
        let staged = self.stage(objects)?;
        self.release(&staged);
        Ok(())
    }

    /// Writes `objects`, in order, to every remote's queue without showing them to the
    /// drainers yet: a commit makes them durable first (its write-ahead log, replayed into the
    /// local archive at the next start, see [`pending_objects`]), then ingests them locally,
    /// then [`PublishQueue::release`]s them, so a remote never has what the local archive lacks.
    /// All the entries are written in one atomic batch: a concurrent flush (another commit's,
    /// or sled's own) must never make a frame's entry durable without its container's, or the
    /// replay would store a frame whose container is lost. Returns their sequence numbers.
    pub fn stage(&self, objects: &[Vec<u8>]) -> Result<Vec<u64>, DaemonError> {
        if self.queues.is_empty() || objects.is_empty() {
            return Ok(Vec::new());
        }
        let _order = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut staged = Vec::with_capacity(objects.len());
        let mut records = Vec::with_capacity(objects.len() * self.queues.len());
        for object in objects {
            let seq = self.next.fetch_add(1, Ordering::Relaxed);
            for q in self.queues.iter() {
                records.push((key(&q.prefix, seq), Stored(object.clone())));
            }
            staged.push(seq);
        }
        self.vault.put_all(records)?;
        Ok(staged)
    }

    /// Shows staged entries to the drainers and wakes them.
    pub fn release(&self, staged: &[u64]) {
        if staged.is_empty() {
            return;
        }
        for q in self.queues.iter() {
            q.seqs().extend(staged.iter().copied());
            q.kick.notify_one();
        }
    }

    /// Removes staged entries (their commit failed). Not durable until the vault is flushed.
    pub fn unstage(&self, staged: &[u64]) -> Result<(), DaemonError> {
        for seq in staged {
            for q in self.queues.iter() {
                self.vault.remove(&key(&q.prefix, *seq))?;
            }
        }
        Ok(())
    }

    /// The oldest entry of queue `q`. A record that will never open
    /// ([`DaemonError::Corrupt`]) is dropped, so the queue never wedges (logged by the caller
    /// through the error); one that cannot be read now (any other error) stays, for the
    /// caller to retry.
    pub fn first(&self, q: usize) -> Result<Option<Entry>, DaemonError> {
        let queue = &self.queues[q];
        loop {
            let Some(seq) = queue.seqs().first().copied() else {
                return Ok(None);
            };
            match self.vault.get::<Stored>(&key(&queue.prefix, seq)) {
                Ok(Some(Stored(object))) => return Ok(Some(Entry { seq, object })),
                Ok(None) => {
                    queue.seqs().remove(&seq);
                }
                Err(e @ DaemonError::Corrupt(_)) => {
                    self.remove(q, seq)?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The entry after `seq` in queue `q`, if any (a binding's container: a commit stages a
    /// binding and its container one after the other).
    pub fn next_after(&self, q: usize, seq: u64) -> Result<Option<Entry>, DaemonError> {
        let queue = &self.queues[q];
        let next = queue.seqs().range(seq + 1..).next().copied();
        let Some(next) = next else {
            return Ok(None);
        };
        Ok(self
            .vault
            .get::<Stored>(&key(&queue.prefix, next))?
            .map(|Stored(object)| Entry { seq: next, object }))
    }

    /// Removes entry `seq` of queue `q` (acknowledged or refused by the remote).
    pub fn remove(&self, q: usize, seq: u64) -> Result<(), DaemonError> {
        let queue = &self.queues[q];
        self.vault.remove(&key(&queue.prefix, seq))?;
        queue.seqs().remove(&seq);
        Ok(())
    }

    /// Number of entries waiting in queue `q`.
    pub fn pending(&self, q: usize) -> usize {
        self.queues[q].seqs().len()
    }

    /// Resolves after the next enqueue (or immediately if one happened since the last wait).
    pub async fn wait(&self, q: usize) {
        self.queues[q].kick.notified().await
    }

    /// Makes the queues durable.
    pub async fn flush(&self) -> Result<(), DaemonError> {
        self.vault.flush().await
    }
}

/// Every entry waiting in any of `urls`' queues, once each, in publish order: what a commit
/// interrupted by a crash may have written here but not yet into the local archive. Read
/// before the account is opened (so a half-written commit of the account root itself is
/// completed); an entry that does not open (a wrong password) fails the whole read.
pub fn pending_objects(vault: &Vault, urls: &[String]) -> Result<Vec<Entry>, DaemonError> {
    let mut all = std::collections::BTreeMap::new();
    for url in urls {
        let mut prefix = PREFIX.to_vec();
        prefix.extend_from_slice(&tag(url));
        for k in vault.keys_with_prefix(&prefix)? {
            let Some(seq) = seq_of(&k) else { continue };
            if all.contains_key(&seq) {
                continue;
            }
            match vault.get::<Stored>(&k) {
                Ok(Some(Stored(object))) => {
                    all.insert(seq, object);
                }
                // Will never open: the drain drops it (with a warning) when it comes first.
                Ok(None) | Err(DaemonError::Corrupt(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(all
        .into_iter()
        .map(|(seq, object)| Entry { seq, object })
        .collect())
}

/// Removes entries `seqs` from every one of `urls`' queues before the outbox is opened (start-up
/// drops what can never be completed, so that no remote receives it). Not durable until the
/// vault is flushed.
pub fn discard(vault: &Vault, urls: &[String], seqs: &[u64]) -> Result<(), DaemonError> {
    for url in urls {
        let mut prefix = PREFIX.to_vec();
        prefix.extend_from_slice(&tag(url));
        for seq in seqs {
            vault.remove(&key(&prefix, *seq))?;
        }
    }
    Ok(())
}

fn key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Option<u64> {
    let raw: [u8; 8] = key.get(PREFIX.len() + TAG_LEN..)?.try_into().ok()?;
    Some(u64::from_be_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::actors::vault::test_tree;
    use crate::persist::store::spill;

    fn vault(tree: &crate::persist::store::LoggedTree) -> Vault {
        Vault::open(tree, &[7; 32]).unwrap()
    }

    #[test]
    fn entries_keep_order_per_remote_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = test_tree(dir.path(), "outbox-test");
        let urls = vec!["ws://a/ws".to_owned(), "ws://b/ws".to_owned()];
        let o = PublishQueue::open(vault(&db), &urls).unwrap();
        o.enqueue(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
        o.enqueue(&[b"three".to_vec()]).unwrap();
        assert_eq!((o.pending(0), o.pending(1)), (3, 3));
        let first = o.first(0).unwrap().unwrap();
        assert_eq!(first.object, b"one");
        let next = o.next_after(0, first.seq).unwrap().unwrap();
        assert_eq!(next.object, b"two");
        o.remove(0, first.seq).unwrap();
        assert_eq!(o.first(0).unwrap().unwrap().object, b"two");
        assert_eq!(o.first(1).unwrap().unwrap().object, b"one");
        // Reopened (a restart): the same queues, and new entries go after the old ones.
        let o = PublishQueue::open(vault(&db), &urls).unwrap();
        assert_eq!((o.pending(0), o.pending(1)), (2, 3));
        o.enqueue(&[b"four".to_vec()]).unwrap();
        let mut drained = Vec::new();
        while let Some(e) = o.first(0).unwrap() {
            o.remove(0, e.seq).unwrap();
            drained.push(e.object);
        }
        assert_eq!(
            drained,
            vec![b"two".to_vec(), b"three".to_vec(), b"four".to_vec()]
        );
        // A queue per URL: another remote list sees only its own queues.
        let other = PublishQueue::open(vault(&db), &["ws://c/ws".to_owned()]).unwrap();
        assert_eq!(other.pending(0), 0);
    }

    #[test]
    fn a_record_that_does_not_open_is_dropped_not_wedged() {
        let dir = tempfile::tempdir().unwrap();
        let db = test_tree(dir.path(), "outbox-test");
        let urls = vec!["ws://a/ws".to_owned()];
        let o = PublishQueue::open(vault(&db), &urls).unwrap();
        o.enqueue(&[b"bad".to_vec(), b"good".to_vec()]).unwrap();
        let (k, _) = db.scan_prefix(b"").unwrap().remove(0);
        db.apply([(k.to_vec(), Some(b"garbage".to_vec()))]).unwrap();
        // It does not keep the outbox from opening (a restart), nor the replay of
        // interrupted commits from reading the rest.
        let o = PublishQueue::open(vault(&db), &urls).unwrap();
        assert_eq!(o.pending(0), 2);
        let pending = pending_objects(&vault(&db), &urls).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].object, b"good");
        assert!(matches!(o.first(0), Err(DaemonError::Corrupt(_))));
        assert_eq!(o.first(0).unwrap().unwrap().object, b"good");
    }

    #[test]
    fn a_record_that_cannot_be_read_now_stays_and_is_read_later() {
        let dir = tempfile::tempdir().unwrap();
        let db = test_tree(dir.path(), "outbox-test");
        let large = dir.path().join("large");
        let v = Vault::open_with_spill(&db, &[7; 32], &large).unwrap();
        let o = PublishQueue::open(v, &["ws://a/ws".to_owned()]).unwrap();
        let big = vec![5u8; 40_000];
        o.enqueue(&[big.clone(), b"after".to_vec()]).unwrap();
        let file = large.join(hex::encode(key(&o.queues[0].prefix, 0)));
        let bytes = std::fs::read(&file).unwrap();
        // Its file unreadable for now (a directory in its place: EISDIR, not "gone").
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        for _ in 0..3 {
            assert!(matches!(o.first(0), Err(DaemonError::Storage(_))));
            assert_eq!(o.pending(0), 2);
        }
        std::fs::remove_dir(&file).unwrap();
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(o.first(0).unwrap().unwrap().object, big);
        // Truncated, it will never open: dropped, and the queue goes on.
        std::fs::write(&file, &bytes[..100]).unwrap();
        assert!(matches!(o.first(0), Err(DaemonError::Corrupt(_))));
        assert_eq!(o.first(0).unwrap().unwrap().object, b"after");
    }

    #[test]
    fn a_missing_spill_directory_keeps_every_entry_for_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let db = test_tree(dir.path(), "outbox-test");
        let large = dir.path().join("large");
        let v = Vault::open_with_spill(&db, &[7; 32], &large).unwrap();
        let o = PublishQueue::open(v, &["ws://a/ws".to_owned()]).unwrap();
        let (one, two) = (vec![5u8; 40_000], vec![6u8; 40_000]);
        o.enqueue(&[one.clone(), two.clone()]).unwrap();
        // The whole directory gone (unmounted, moved by an admin): every file is NotFound,
        // yet nothing is lost.
        let moved = dir.path().join("large.moved");
        std::fs::rename(&large, &moved).unwrap();
        for _ in 0..3 {
            assert!(matches!(o.first(0), Err(DaemonError::Storage(_))));
            assert_eq!(o.pending(0), 2);
        }
        std::fs::rename(&moved, &large).unwrap();
        let first = o.first(0).unwrap().unwrap();
        assert_eq!(first.object, one);
        o.remove(0, first.seq).unwrap();
        assert_eq!(o.first(0).unwrap().unwrap().object, two);
    }

    #[test]
    fn an_empty_directory_in_place_of_the_spill_directory_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = test_tree(dir.path(), "outbox-test");
        let (large, real) = (dir.path().join("large"), dir.path().join("real"));
        let urls = ["ws://a/ws".to_owned()];
        let v = Vault::open_with_spill(&db, &[7; 32], &large).unwrap();
        let o = PublishQueue::open(v, &urls).unwrap();
        let (one, two) = (vec![5u8; 40_000], vec![6u8; 40_000]);
        o.enqueue(&[one.clone(), two.clone()]).unwrap();
        // Unmounted: the mount point, an empty directory, in its place.
        std::fs::rename(&large, &real).unwrap();
        std::fs::create_dir(&large).unwrap();
        for _ in 0..3 {
            assert!(matches!(o.first(0), Err(DaemonError::Storage(_))));
            assert_eq!(o.pending(0), 2);
        }
        // Nor is anything written there: it would be hidden once the real one is back.
        assert!(matches!(
            o.enqueue(&[vec![7u8; 40_000]]),
            Err(DaemonError::Storage(_))
        ));
        // A restart meanwhile: it starts, says what is missing, and keeps every entry.
        let v = Vault::open_with_spill(&db, &[7; 32], &large).unwrap();
        assert!(v.spill_missing().unwrap().contains(spill::MARKER_FILE));
        assert!(matches!(
            pending_objects(&v, &urls),
            Err(DaemonError::Storage(_))
        ));
        let o = PublishQueue::open(v, &urls).unwrap();
        assert!(matches!(o.first(0), Err(DaemonError::Storage(_))));
        assert_eq!(o.pending(0), 2);
        assert_eq!(std::fs::read_dir(&large).unwrap().count(), 0);
        // Mounted again: everything is there.
        std::fs::remove_dir(&large).unwrap();
        std::fs::rename(&real, &large).unwrap();
        assert_eq!(pending_objects(&o.vault, &urls).unwrap().len(), 2);
        let first = o.first(0).unwrap().unwrap();
        assert_eq!(first.object, one);
        o.remove(0, first.seq).unwrap();
        assert_eq!(o.first(0).unwrap().unwrap().object, two);
    }
}
