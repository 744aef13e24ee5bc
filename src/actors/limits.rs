//! What the daemon knows about each remote's size limit, and the size check every local
//! commit runs against it, so that no app is told `ok` for an object no remote can store.
//!
//! Each persister announces its `max_frame` in its `hello` reply; the largest object one
//! `publish` can carry there is that minus the envelope
//! ([`wire::max_publish_object`]). `RemoteActor` asks at every (re)connect and records the
//! answer here, in memory and durably in the [`Vault`] (`b"remote_limit\0" | 8-byte tag of the
//! URL` -> the size), so the limit still applies while the remote is unreachable, including
//! after a restart. A remote never reached gets the persister's default `max_frame`
//! ([`DEFAULT_MAX_FRAME`]): a smaller one is learned at its first `hello`, and anything
//! committed before then that does not fit is refused whole by that remote's outbox drainer
//! (see `remote`), never half-published.
//!
//! [`Upstream::check_fits`](super::upstream::Upstream::check_fits) compares a new
//! object with the smallest limit of all configured remotes: a push, a new object, every
//! commit's objects (frames with long target vectors, the account root) are refused with
//! `too_large` before anything is written locally.
//!
//! Owns: the vault records above. Calls: the vault, `persist::wire`. Used by boot (loading),
//! `RemoteActor` (learning) and `Upstream` (checking).

use super::error::DaemonError;
use super::publish_queue;
use super::vault::Vault;
use crate::config::DEFAULT_MAX_FRAME;
use crate::persist::wire;

const PREFIX: &[u8] = b"remote_limit\0";

/// The largest object a remote never contacted is assumed to take.
pub fn default_max_object() -> u64 {
    wire::max_publish_object(DEFAULT_MAX_FRAME as u64)
}

fn key(url: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&publish_queue::tag(url));
    k
}

/// The largest object `url` was last known to take, else [`default_max_object`].
pub fn known(vault: &Vault, url: &str) -> Result<u64, DaemonError> {
    Ok(vault
        .get::<u64>(&key(url))?
        .unwrap_or_else(default_max_object))
}

/// Records what `url` announced (durable with the next vault flush).
pub fn remember(vault: &Vault, url: &str, max_object: u64) -> Result<(), DaemonError> {
    vault.put(&key(url), &max_object)
}

/// `too_large` unless an object of `len` bytes fits under `limit` (`None`: no remote).
pub fn check(len: usize, limit: Option<u64>, what: &str) -> Result<(), DaemonError> {
    match limit {
        Some(max) if len as u64 > max => Err(DaemonError::TooLarge(format!(
            "{what} would be {len} bytes; the smallest remote takes objects of at most {max} \
             bytes"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_remembered_per_url_and_default_to_the_persister_default() {
        let dir = tempfile::tempdir().unwrap();
        let tree = crate::actors::vault::test_tree(dir.path(), "limits-test");
        let vault = Vault::open(&tree, &[3; 32]).unwrap();
        let a = "ws://a/ws";
        assert_eq!(known(&vault, a).unwrap(), default_max_object());
        remember(&vault, a, 70_000).unwrap();
        assert_eq!(known(&vault, a).unwrap(), 70_000);
        assert_eq!(known(&vault, "ws://b/ws").unwrap(), default_max_object());
        assert!(check(70_000, Some(70_000), "x").is_ok());
        let e = check(70_001, Some(70_000), "a container").unwrap_err();
        assert_eq!(e.code(), "too_large");
        assert!(e.to_string().contains("70001"), "{e}");
        assert!(check(usize::MAX, None, "x").is_ok());
    }
}
