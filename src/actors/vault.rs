//! # Vault
//!
//! Owns: the daemon's private local state at rest (secrets, tokens, app registrations, outbox
//! metadata: everything that is not already a Golix object), encrypted before it touches sled
//! (docs/architecture.md, "Storage").
//!
//! A [`Vault`] is one sled tree behind a write-ahead log ([`LoggedTree`]: a flush is one
//! `fdatasync` of the log, not a sled flush). Every value is msgpack (named fields), sealed with
//! AES-256-GCM under the vault key ([`crate::actors::account::Account::vault_key`]) with a
//! fresh random 96-bit nonce. The associated data binds the tree name and the record key, so
//! a record copied or moved to another key or tree fails to open, as does any flipped byte.
//! Record keys are stored in clear (they are addresses and ids, used for prefix scans): never
//! put secret material in a key.
//!
//! Record layout: `version (1) | nonce (12) | ciphertext | tag (16)`. A vault opened with
//! [`Vault::open_with_spill`] keeps records of 16 KiB or more (outbox entries of large
//! objects) sealed in files of their own, with a pointer in sled (see
//! [`crate::persist::store::spill`]: sled reclaims large values late).
//!
//! Calls: [`LoggedTree`], [`Spill`] and aes-gcm only. Used by the daemon actors (object, remote, share, dispatch
//! state).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use super::account::msgpack_exact;
use super::error::DaemonError;
use crate::persist::store::spill::{self, Spill};
use crate::persist::store::LoggedTree;

/// Whether `tree` holds a spill pointer under the key whose hex is `name`.
fn points_at(tree: &LoggedTree, name: &str) -> std::io::Result<bool> {
    let Ok(key) = hex::decode(name) else {
        return Ok(false);
    };
    let value = tree.get(&key).map_err(std::io::Error::other)?;
    Ok(value.is_some_and(|v| spill::is_pointer(&v)))
}

/// Whether `tree` holds any spill pointer (asked only when the spill directory has no
/// marker: a new vault, or one from before markers).
fn any_pointer(tree: &LoggedTree) -> std::io::Result<bool> {
    let all = tree.scan_prefix(b"").map_err(std::io::Error::other)?;
    Ok(all.iter().any(|(_, v)| spill::is_pointer(v)))
}

/// Version byte of a sealed record.
const RECORD_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Domain separation of the associated data.
const AAD_DOMAIN: &[u8] = b"hgx vault record";

/// An encrypted sled tree. Cheap to clone; clones share the tree and the cipher.
#[derive(Clone)]
pub struct Vault {
    tree: LoggedTree,
    /// Sealed records of [`spill::THRESHOLD`] bytes or more (outbox entries of large
    /// objects), as files named by the hex of their key; `None`: all in sled.
    spill: Option<Arc<Spill>>,
    /// The tree name, bound into every record's associated data.
    name: Arc<str>,
    cipher: Arc<Aes256Gcm>,
}

impl fmt::Debug for Vault {
    /// The tree name only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vault({:?})", self.name)
    }
}

impl Vault {
    /// The vault in `tree` (its name is bound into every record); every value sealed with
    /// AES-256-GCM under `key`.
    pub fn open(tree: &LoggedTree, key: &[u8; 32]) -> Result<Vault, DaemonError> {
        if tree.name().is_empty() {
            return Err(DaemonError::Storage("vault tree name is empty".into()));
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
        Ok(Vault {
            tree: tree.clone(),
            spill: None,
            name: Arc::from(tree.name()),
            cipher: Arc::new(cipher),
        })
    }

    /// [`Vault::open`], with large records as files in `dir` (see [`spill`]); files a crash
    /// left there without a record are deleted. A `dir` (or its marker) missing while
    /// records point into it is not recreated: the vault opens, its spilled records read as
    /// [`DaemonError::Storage`] until it is back, and [`Vault::spill_missing`] says what is
    /// missing (for the caller's warning).
    pub fn open_with_spill(
        tree: &LoggedTree,
        key: &[u8; 32],
        dir: &Path,
    ) -> Result<Vault, DaemonError> {
        let mut vault = Vault::open(tree, key)?;
        let io = |e: std::io::Error| DaemonError::Storage(format!("vault large records: {e}"));
        let spill = Spill::open(dir, || any_pointer(&vault.tree)).map_err(io)?;
        spill.sweep(|n| points_at(&vault.tree, n)).map_err(io)?;
        vault.spill = Some(Arc::new(spill));
        Ok(vault)
    }

    /// What is missing of the spill directory (the directory, or its marker), if anything.
    pub fn spill_missing(&self) -> Option<String> {
        self.spill.as_ref().and_then(|s| s.missing())
    }

    /// The sealed bytes to store under `key` for `sealed`: a pointer when it is spilled.
    /// Call under the spill's `writing` guard.
    fn stored(&self, key: &[u8], sealed: Vec<u8>) -> Result<Vec<u8>, DaemonError> {
        let Some(spill) = &self.spill else {
            return Ok(sealed);
        };
        let name = hex::encode(key);
        if sealed.len() >= spill::THRESHOLD {
            return spill
                .write(&name, &sealed)
                .map_err(|e| self.error(key, &format!("cannot write its file: {e}")));
        }
        // A small record replaces a spilled one. (The record says so: no file-system lookup
        // per write.)
        if self
            .tree
            .get(key)?
            .is_some_and(|old| spill::is_pointer(&old))
        {
            spill.remove_later(&name);
        }
        Ok(sealed)
    }

    /// The sealed bytes of a stored value (read from its file if it is a pointer).
    fn sealed<'a>(
        &self,
        key: &[u8],
        raw: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, DaemonError> {
        match &self.spill {
            Some(spill) if spill::is_pointer(raw) => spill
                .read(&hex::encode(key), raw)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| {
                    // Gone from its marked directory, or of the wrong length: it will not
                    // come back. Anything else (the directory or its marker missing:
                    // unmounted or moved; no descriptors, EIO, ...) may pass.
                    if spill.lost(&e) {
                        self.corrupt(key, &format!("cannot read its file: {e}"))
                    } else if let Some(missing) = spill.missing() {
                        self.error(key, &format!("cannot read its file: {missing}"))
                    } else {
                        self.error(key, &format!("cannot read its file: {e}"))
                    }
                }),
            _ => Ok(std::borrow::Cow::Borrowed(raw)),
        }
    }

    /// The tree name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Seals and stores `value` under `key`, replacing any previous record.
    pub fn put<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), DaemonError> {
        let (plain, _) = msgpack_exact(value, 0, 0)
            .map_err(|e| self.error(key, &format!("cannot encode the value: {e}")))?;
        let sealed = self.seal(key, &plain)?;
        let _writing = self.spill.as_ref().map(|s| s.writing());
        let stored = self.stored(key, sealed)?;
        self.tree.apply([(key.to_vec(), Some(stored))])?;
        Ok(())
    }

    /// Seals and stores every `(key, value)` of `records` at once: after a crash either all
    /// of them are there or none is, whatever a concurrent flush wrote meanwhile (the outbox
    /// stages a commit's entries this way: its write-ahead log must not be torn).
    pub fn put_all<T: serde::Serialize>(
        &self,
        records: impl IntoIterator<Item = (Vec<u8>, T)>,
    ) -> Result<(), DaemonError> {
        let mut changes = Vec::new();
        let _writing = self.spill.as_ref().map(|s| s.writing());
        for (key, value) in records {
            let (plain, _) = msgpack_exact(&value, 0, 0)
                .map_err(|e| self.error(&key, &format!("cannot encode the value: {e}")))?;
            let sealed = self.seal(&key, &plain)?;
            let stored = self.stored(&key, sealed)?;
            changes.push((key, Some(stored)));
        }
        self.tree.apply(changes)?;
        Ok(())
    }

    /// The value under `key`, if any. A record that fails authentication (tampered, moved from
    /// another key or tree, wrong vault key), does not decode as `T` or whose file is gone
    /// from its (present, marked) directory is [`DaemonError::Corrupt`]; a read that failed
    /// otherwise (the spill directory or its marker missing included) is
    /// [`DaemonError::Storage`].
    pub fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, DaemonError> {
        match self.tree.get(key)? {
            None => Ok(None),
            Some(raw) => self.decode(key, &raw).map(Some),
        }
    }

    /// Whether a record exists under `key` (without opening it).
    pub fn contains_key(&self, key: &[u8]) -> Result<bool, DaemonError> {
        Ok(self.tree.get(key)?.is_some())
    }

    /// Removes the record under `key`, if any (a spilled record's file goes once the removal
    /// is durable, at a [`Vault::flush`]).
    pub fn remove(&self, key: &[u8]) -> Result<(), DaemonError> {
        // A large value written to the key between the look and the removal would leave its
        // file behind: puts wait.
        let _writing = self.spill.as_ref().map(|s| s.writing());
        let old = self.tree.get(key)?;
        if old.is_none() {
            return Ok(());
        }
        self.tree.apply([(key.to_vec(), None)])?;
        if let (Some(spill), Some(old)) = (&self.spill, old) {
            if spill::is_pointer(&old) {
                spill.remove_later(&hex::encode(key));
            }
        }
        Ok(())
    }

    /// Every record whose key starts with `prefix`, in key order. Fails on the first record
    /// that does not open.
    pub fn scan_prefix<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>, DaemonError> {
        self.tree
            .scan_prefix(prefix)?
            .into_iter()
            .map(|(k, v)| {
                let value = self.decode(&k, &v)?;
                Ok((k.to_vec(), value))
            })
            .collect()
    }

    /// The keys of every record whose key starts with `prefix`, in key order (no record is
    /// opened).
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, DaemonError> {
        Ok(self
            .tree
            .scan_prefix(prefix)?
            .into_iter()
            .map(|(k, _)| k.to_vec())
            .collect())
    }

    /// Makes every write so far durable (then deletes the files of removed records), off the
    /// event loop.
    pub async fn flush(&self) -> Result<(), DaemonError> {
        let vault = self.clone();
        tokio::task::spawn_blocking(move || vault.flush_now())
            .await
            .map_err(|e| DaemonError::Storage(format!("flush task failed: {e}")))?
    }

    /// [`Vault::flush`] on this thread (blocks on the log's `fdatasync`).
    pub fn flush_now(&self) -> Result<(), DaemonError> {
        let spill = self.spill.as_ref();
        let doomed = spill.map(|s| s.doomed()).unwrap_or_default();
        if let Err(e) = self.tree.sync() {
            if let Some(spill) = spill {
                spill.keep_doomed(doomed);
            }
            return Err(e.into());
        }
        if let Some(spill) = spill {
            spill
                .collect(doomed, |n| points_at(&self.tree, n))
                .map_err(|e| DaemonError::Storage(format!("vault large records: {e}")))?;
        }
        Ok(())
    }

    /// Associated data: domain | version | u32 name length | name | record key.
    fn aad(&self, key: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 5 + self.name.len() + key.len());
        aad.extend_from_slice(AAD_DOMAIN);
        aad.push(RECORD_VERSION);
        aad.extend_from_slice(&(self.name.len() as u32).to_be_bytes());
        aad.extend_from_slice(self.name.as_bytes());
        aad.extend_from_slice(key);
        aad
    }

    fn seal(&self, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, DaemonError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| self.error(key, "no randomness for a nonce"))?;
        let aad = self.aad(key);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| self.error(key, "encryption failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn open_record(&self, key: &[u8], raw: &[u8]) -> Result<Zeroizing<Vec<u8>>, DaemonError> {
        if raw.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(self.corrupt(key, "record too short"));
        }
        if raw[0] != RECORD_VERSION {
            return Err(self.corrupt(key, &format!("unknown record version {}", raw[0])));
        }
        let (nonce, ct) = raw[1..].split_at(NONCE_LEN);
        let aad = self.aad(key);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| {
                self.corrupt(
                    key,
                    "record fails authentication (tampered, moved or wrong key)",
                )
            })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        raw: &[u8],
    ) -> Result<T, DaemonError> {
        let sealed = self.sealed(key, raw)?;
        let plain = self.open_record(key, &sealed)?;
        // No serde detail in the message: it could quote decrypted bytes.
        rmp_serde::from_slice(&plain)
            .map_err(|_| self.corrupt(key, "record does not decode as the expected type"))
    }

    /// A storage error naming the tree and a short digest of the key (keys may be tokens).
    fn error(&self, key: &[u8], what: &str) -> DaemonError {
        DaemonError::Storage(self.describe(key, what))
    }

    /// A record that will never open as stored ([`DaemonError::Corrupt`]).
    fn corrupt(&self, key: &[u8], what: &str) -> DaemonError {
        DaemonError::Corrupt(self.describe(key, what))
    }

    fn describe(&self, key: &[u8], what: &str) -> String {
        let tag = hex::encode(&Sha512::digest(key)[..4]);
        format!("vault {:?}, record #{tag}: {what}", self.name)
    }
}

/// Tree `name` of a new sled database in `dir`, behind its log (tests).
#[cfg(test)]
pub(crate) fn test_tree(dir: &Path, name: &str) -> LoggedTree {
    let db = crate::persist::store::sled_gate::open(&dir.join("db")).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    LoggedTree::open(
        &db,
        name,
        &dir.join("wal"),
        crate::persist::store::WAL_MOVE_EVERY,
        log,
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    #[tokio::test]
    async fn large_records_are_sealed_files_removed_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let tree = test_tree(dir.path(), "t");
        let large = dir.path().join("large");
        let files = || {
            let names = std::fs::read_dir(&large)
                .unwrap()
                .map(|e| e.unwrap().file_name());
            names.filter(|n| n != spill::MARKER_FILE).count()
        };
        let v = Vault::open_with_spill(&tree, &[1; 32], &large).unwrap();
        let big = ByteBuf::from(vec![3u8; 40_000]);
        v.put(b"k", &big).unwrap();
        v.put_all(vec![(b"m".to_vec(), big.clone())]).unwrap();
        assert_eq!(files(), 2);
        assert_eq!(v.get::<ByteBuf>(b"k").unwrap(), Some(big.clone()));
        assert_eq!(v.scan_prefix::<ByteBuf>(b"m").unwrap().len(), 1);
        // Files are bound to their key like records: swapped, they do not open.
        let (fk, fm) = (large.join(hex::encode(b"k")), large.join(hex::encode(b"m")));
        let (bk, bm) = (std::fs::read(&fk).unwrap(), std::fs::read(&fm).unwrap());
        std::fs::write(&fk, &bm).unwrap();
        assert!(v.get::<ByteBuf>(b"k").is_err());
        std::fs::write(&fk, &bk).unwrap();
        // A small record over a large one, and a removal: both files go at the next flush.
        v.put(b"k", &ByteBuf::from(vec![1])).unwrap();
        v.remove(b"m").unwrap();
        assert_eq!(files(), 2);
        v.flush().await.unwrap();
        assert_eq!(files(), 0);
        assert_eq!(
            v.get::<ByteBuf>(b"k").unwrap(),
            Some(ByteBuf::from(vec![1]))
        );
        assert_eq!(v.get::<ByteBuf>(b"m").unwrap(), None);
    }
}
