//! # Spill: large values as files beside a sled database
//!
//! sled 0.34 keeps a value larger than about an eighth of a segment as a "blob" file, and the
//! tree node holding it is rewritten whole (value included) as another blob at every
//! consolidation; old blobs go only when the log segment pointing at them is reused, which a
//! small, busy database rarely does. Overwriting one object 120 times with 8 MiB states left
//! 1.3-2 GB on disk for 50 MB of live data. So values of [`THRESHOLD`] bytes or more live in
//! files of their own, one per value, and sled holds a short pointer ([`is_pointer`]); a
//! removed value's file is deleted as soon as the removal is durable. Disk use is then the
//! live data plus sled's (small) records.
//!
//! Crash safety: a file is written and synced (temporary name, fsync, rename, directory
//! fsync) before the sled write that points at it; a file is deleted only after a flush has
//! made its removal durable, and only if sled then holds no pointer for its name. Files a
//! crash left without a pointer are deleted when the database is opened ([`Spill::sweep`]).
//!
//! Owns: one directory of files named by the caller (hex of a key). Calls: the file system.
//! Used by the sled store (object bytes) and the daemon's vault (sealed records).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Values at least this long are spilled.
pub const THRESHOLD: usize = 16 * 1024;

/// A pointer: this marker, then the value's length (u64 big-endian). Golix objects begin
/// with an ASCII magic and sealed vault records with their version byte 1, never with 0xff.
const MARKER: &[u8; 4] = b"\xffSPL";
const POINTER_LEN: usize = MARKER.len() + 8;

/// Whether a stored value is a pointer to a spilled file.
pub fn is_pointer(value: &[u8]) -> bool {
    value.len() == POINTER_LEN && value.starts_with(MARKER)
}

/// A directory of spilled values and the files waiting for their removal to be durable.
#[derive(Debug)]
pub struct Spill {
    dir: PathBuf,
    doomed: Mutex<BTreeSet<String>>,
    /// Held from writing a file until its pointer is in sled ([`Spill::writing`]), and by
    /// [`Spill::collect`]: a file being written is never deleted as unpointed in between.
    io: Mutex<()>,
}

fn private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

impl Spill {
    /// The spill directory `dir` (created, mode 0700).
    pub fn open(dir: &Path) -> io::Result<Spill> {
        private_dir(dir)?;
        Ok(Spill {
            dir: dir.to_owned(),
            doomed: Mutex::new(BTreeSet::new()),
            io: Mutex::new(()),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Hold this from the first [`Spill::write`] of an update until its pointers are stored
    /// in sled. (Take it before sled's own locks: [`Spill::collect`] takes it without them.)
    pub fn writing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.io.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `value` durably under `name` (replacing any file of that name) and returns the
    /// pointer to store instead of it. Call under [`Spill::writing`].
    pub fn write(&self, name: &str, value: &[u8]) -> io::Result<Vec<u8>> {
        let tmp = self.path(&format!("{name}.tmp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(value)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.path(name))?;
        fs::File::open(&self.dir)?.sync_all()?;
        self.lock().remove(name);
        let mut pointer = MARKER.to_vec();
        pointer.extend_from_slice(&(value.len() as u64).to_be_bytes());
        Ok(pointer)
    }

    /// Whether the directory itself is there (a file missing from a missing directory may
    /// come back: the directory was unmounted or moved, not the file deleted).
    pub fn dir_present(&self) -> bool {
        self.dir.is_dir()
    }

    /// Whether a file `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    /// The value `pointer` (stored under `name`) points at.
    pub fn read(&self, name: &str, pointer: &[u8]) -> io::Result<Vec<u8>> {
        let value = fs::read(self.path(name))?;
        let len = u64::from_be_bytes(pointer[MARKER.len()..].try_into().unwrap_or_default());
        if value.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("spilled value {name}: {} bytes, not {len}", value.len()),
            ));
        }
        Ok(value)
    }

    /// `name` no longer has a pointer (or will not once the current write is applied): its
    /// file goes at the next [`Spill::collect`].
    pub fn remove_later(&self, name: &str) {
        self.lock().insert(name.to_owned());
    }

    /// Before a flush: takes the names [`Spill::remove_later`] scheduled so far. Only these
    /// may go once that flush is done ([`Spill::collect`]): the removal of a pointer scheduled
    /// during the flush may not be durable yet, so its name waits for the next flush.
    pub fn doomed(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.lock())
    }

    /// The flush failed: `doomed` waits for the next one.
    pub fn keep_doomed(&self, doomed: BTreeSet<String>) {
        self.lock().extend(doomed);
    }

    /// After a flush that began after [`Spill::doomed`] returned `doomed`: deletes the files
    /// of those names for which `pointed` (whether sled holds a pointer for the name now) is
    /// false.
    pub fn collect(
        &self,
        doomed: BTreeSet<String>,
        pointed: impl Fn(&str) -> io::Result<bool>,
    ) -> io::Result<()> {
        let _io = self.writing();
        for name in doomed {
            if !pointed(&name)? {
                match fs::remove_file(self.path(&name)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// At open: deletes every file without a pointer (and every leftover temporary file).
    /// Returns how many went.
    pub fn sweep(&self, pointed: impl Fn(&str) -> io::Result<bool>) -> io::Result<usize> {
        let mut gone = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || !pointed(&name)? {
                fs::remove_file(entry.path())?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.doomed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_go_only_when_no_longer_pointed_at() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spill::open(&dir.path().join("large")).unwrap();
        let p = s.write("aa", &[7; 100]).unwrap();
        drop(s.writing());
        assert!(is_pointer(&p) && !is_pointer(b"GEOC....") && !is_pointer(&[1; POINTER_LEN]));
        assert_eq!(s.read("aa", &p).unwrap(), vec![7; 100]);
        let q = s.write("bb", b"x").unwrap();
        assert!(s.read("aa", &q).is_err(), "length checked");
        // Still pointed at after the removal was scheduled (re-added): kept.
        s.remove_later("aa");
        s.remove_later("bb");
        s.collect(s.doomed(), |n| Ok(n == "aa")).unwrap();
        assert!(s.read("aa", &p).is_ok());
        assert!(!dir.path().join("large/bb").exists());
        // Writing again cancels a scheduled removal.
        s.remove_later("aa");
        s.write("aa", &[7; 100]).unwrap();
        s.collect(s.doomed(), |_| Ok(false)).unwrap();
        // Scheduled after the snapshot a flush began with: waits for the next flush.
        let snapshot = s.doomed();
        s.remove_later("aa");
        s.collect(snapshot, |_| Ok(false)).unwrap();
        assert!(dir.path().join("large/aa").exists());
        let p = s.write("aa", &[7; 100]).unwrap();
        drop(s.writing());
        assert_eq!(s.read("aa", &p).unwrap(), vec![7; 100]);
        assert!(dir.path().join("large/aa").exists());
        // The sweep at open removes strays and temporaries.
        std::fs::write(dir.path().join("large/cc.tmp"), b"t").unwrap();
        assert_eq!(s.sweep(|n| Ok(n == "aa")).unwrap(), 1);
        assert_eq!(s.sweep(|_| Ok(false)).unwrap(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("large")).unwrap().count(),
            0
        );
    }
}
