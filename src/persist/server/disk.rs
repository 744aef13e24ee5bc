//! # The disk reserve
//!
//! Anyone who can reach the persister can publish (an identity costs nothing), and what is
//! stored stays until it is debound. So that a full disk cannot corrupt the store (or starve
//! the rest of the machine), a publish that would add data ([`adds_data`]: an object not
//! stored yet, or a debinding of something not stored) is refused with `storage` while the
//! filesystem of the ghidcache has less than `min_free_bytes` free. What is stored already
//! (the identity every client publishes as it connects, a debinding sent again) and
//! debindings of stored objects, which let space be reclaimed, are taken. The free space is read (`statvfs`) at most once
//! a second, so the reserve should exceed what can be written in a second (the default,
//! 256 MiB, is what the publishes in flight may hold, `inbound_bytes_total`).
//!
//! Owns: [`DiskReserve`]. Calls: `libc::statvfs`, [`Archive::exists`]. Used by `session`
//! (publish).

use std::ffi::CString;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::golix::{Object, Policy};
use crate::persist::Archive;

/// How long a reading of the free space is trusted.
const RECHECK: Duration = Duration::from_secs(1);

/// Refuses new data while the ghidcache's filesystem is nearly full.
pub(crate) struct DiskReserve {
    /// The ghidcache (`None`: no local disk to guard, as with a temporary or cluster store).
    path: Option<CString>,
    min_free: u64,
    /// When the free space was last read, and what [`DiskReserve::check`] said then.
    last: Mutex<Option<(Instant, Option<u64>)>>,
}

impl DiskReserve {
    pub(crate) fn new(path: Option<&Path>, min_free: u64) -> DiskReserve {
        use std::os::unix::ffi::OsStrExt;
        let path = path
            .filter(|_| min_free > 0)
            .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok());
        DiskReserve {
            path,
            min_free,
            last: Mutex::new(None),
        }
    }

    /// The free bytes, if they are under the reserve (`None`: enough room, nothing to
    /// guard, or the free space cannot be read: a failing `statvfs` refuses nothing), and
    /// whether this is the first reading under it after one that was not (to log the change
    /// once, not every refusal).
    pub(crate) fn check(&self) -> Option<(u64, bool)> {
        let path = self.path.as_ref()?;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let before = match *last {
            Some((at, short)) if now.duration_since(at) < RECHECK => {
                return short.map(|f| (f, false))
            }
            Some((_, short)) => short,
            None => None,
        };
        let short = free_bytes(path).filter(|&f| f < self.min_free);
        *last = Some((now, short));
        short.map(|f| (f, before.is_none()))
    }

    pub(crate) fn min_free(&self) -> u64 {
        self.min_free
    }
}

/// Whether publishing `bytes` would store something new: an object the archive does not
/// hold, or a debinding it does not hold of an object it does not hold (it would stay). Bytes that do not decode
/// add nothing (the rules refuse them); a store that cannot be asked counts as new.
pub(crate) fn adds_data(archive: &Archive, bytes: &[u8]) -> bool {
    let held = |g| archive.exists(g).unwrap_or(false);
    match Object::decode(bytes, Policy::STRICT) {
        Ok(Object::Gdxx(d)) => !held(&d.ghid) && !held(&d.target),
        Ok(o) => !held(&o.ghid()),
        Err(_) => false,
    }
}

/// Bytes available to an unprivileged writer on the filesystem holding `path`.
fn free_bytes(path: &CString) -> Option<u64> {
    // SAFETY: `path` is a valid NUL-terminated string and `st` a properly sized, writable
    // statvfs for the call to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_none_refuses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(&CString::new(dir.path().to_str().unwrap()).unwrap()).unwrap();
        assert!(free > 0);
        let huge = DiskReserve::new(Some(dir.path()), u64::MAX);
        let (short, first) = huge.check().unwrap();
        assert!(first && short <= free + (1 << 30));
        assert_eq!(huge.check(), Some((short, false)), "the cached reading");
        assert_eq!(DiskReserve::new(Some(dir.path()), 1).check(), None);
        assert_eq!(DiskReserve::new(Some(dir.path()), 0).check(), None);
        assert_eq!(DiskReserve::new(None, u64::MAX).check(), None);
    }

    #[test]
    fn only_what_is_not_stored_yet_adds_data() {
        let archive = Archive::temporary().unwrap();
        let a = crate::testdata::fixture_first_party(1);
        let secret = crate::golix::Secret::random();
        let gidc = Object::Gidc(a.gidc().clone()).encode();
        let c = a.make_container(b"kept", &secret).unwrap();
        let frame = a.make_bind_dynamic(c.ghid).unwrap();
        assert!(adds_data(&archive, &gidc));
        archive.publish(&gidc).unwrap();
        archive
            .publish(&Object::Gobd(frame.clone()).encode())
            .unwrap();
        archive.publish(&Object::Geoc(c.clone()).encode()).unwrap();
        assert!(!adds_data(&archive, &gidc), "an identity stored already");
        assert!(!adds_data(&archive, &Object::Geoc(c).encode()));
        let other = a.make_container(b"new", &secret).unwrap();
        assert!(adds_data(&archive, &Object::Geoc(other.clone()).encode()));
        let stored = Object::Gdxx(a.make_debind(frame.dynamic).unwrap()).encode();
        assert!(!adds_data(&archive, &stored));
        // Once applied, its target is gone; sent again (an ack lost), it is still taken.
        archive.publish(&stored).unwrap();
        assert!(!adds_data(&archive, &stored));
        let dangling = a.make_debind(other.ghid).unwrap();
        assert!(adds_data(&archive, &Object::Gdxx(dangling).encode()));
        assert!(!adds_data(&archive, b"not golix"));
    }
}
