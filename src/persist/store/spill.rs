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
//! The directory carries a marker file, [`MARKER_FILE`], so that it is told apart from an
//! empty directory in its place (a mount point whose file system is not mounted, a directory
//! an admin moved away and another recreated): a spilled file missing from a directory
//! *with* its marker is lost for good; without the marker (or without the directory) it may
//! come back, so reads and writes fail as storage errors, to be retried, and nothing is
//! swept ([`Spill::missing`] says what is missing). [`Spill::open`] creates the directory
//! and its marker only when the database holds no spill pointer yet. A directory from before
//! markers (one with no marker) is adopted, and marked, when it holds a spilled file or the
//! database no pointer; an empty one while the database points into it is left alone.
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

/// The marker file of a spill directory (see the module doc). Never a spilled value's name:
/// those are hex.
pub const MARKER_FILE: &str = ".hgx-spill";

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

/// Writes `path` durably (temporary name, fsync, rename, directory fsync).
fn write_durably(dir: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(value)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

/// Whether `dir` holds a spilled value's file (a regular file named in hex, as every spilled
/// file is: not the marker, a temporary or what a file manager leaves in an empty mount
/// point).
fn holds_spilled_file(dir: &Path) -> io::Result<bool> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let hex = !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit());
        if entry.file_type()?.is_file() && hex {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Spill {
    /// The spill directory `dir` (mode 0700). It and its marker are created (or an unmarked
    /// directory from before markers adopted) unless `pointers` (asked only then: whether the
    /// database holds any spill pointer) says the database points into a directory that is
    /// not there: then the spill is opened without them, [`Spill::missing`] says so, and
    /// they are not created over what may come back.
    pub fn open(dir: &Path, pointers: impl FnOnce() -> io::Result<bool>) -> io::Result<Spill> {
        let spill = Spill {
            dir: dir.to_owned(),
            doomed: Mutex::new(BTreeSet::new()),
            io: Mutex::new(()),
        };
        if spill.marked() {
            private_dir(dir)?;
        } else if (dir.is_dir() && holds_spilled_file(dir)?) || !pointers()? {
            private_dir(dir)?;
            write_durably(dir, MARKER_FILE, b"hgx spill directory: keep this file\n")?;
        }
        Ok(spill)
    }

    /// Whether the directory and its marker are there.
    fn marked(&self) -> bool {
        self.dir.join(MARKER_FILE).is_file()
    }

    /// What is missing, if anything: the directory, or its marker. A spilled file is then
    /// not read as lost ([`Spill::lost`]), no file is written, none is swept.
    pub fn missing(&self) -> Option<String> {
        if self.marked() {
            None
        } else if !self.dir.is_dir() {
            Some(format!(
                "the spill directory {} is missing",
                self.dir.display()
            ))
        } else {
            Some(format!(
                "the spill directory {} has no {MARKER_FILE} marker (an unmounted mount \
                 point, or a directory put in its place?)",
                self.dir.display()
            ))
        }
    }

    /// Whether `e`, an error of [`Spill::read`], means the value is lost for good: its file
    /// gone from its marked directory, or of the wrong length. Anything else (the directory
    /// or its marker missing: unmounted or moved; no descriptors, EIO, ...) may pass.
    pub fn lost(&self, e: &io::Error) -> bool {
        match e.kind() {
            io::ErrorKind::NotFound => self.missing().is_none(),
            io::ErrorKind::InvalidData => true,
            _ => false,
        }
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
    /// Refused while [`Spill::missing`]: a file written into a directory in the real one's
    /// place would be hidden, and its value lost, once the real one is back.
    pub fn write(&self, name: &str, value: &[u8]) -> io::Result<Vec<u8>> {
        if let Some(missing) = self.missing() {
            return Err(io::Error::new(io::ErrorKind::NotFound, missing));
        }
        write_durably(&self.dir, name, value)?;
        self.lock().remove(name);
        let mut pointer = MARKER.to_vec();
        pointer.extend_from_slice(&(value.len() as u64).to_be_bytes());
        Ok(pointer)
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

    /// At open: deletes every file without a pointer (and every leftover temporary file);
    /// nothing while [`Spill::missing`], and never the marker or a subdirectory (a file
    /// system's `lost+found`). Returns how many went.
    pub fn sweep(&self, pointed: impl Fn(&str) -> io::Result<bool>) -> io::Result<usize> {
        let mut gone = 0;
        if self.missing().is_some() {
            return Ok(0);
        }
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == MARKER_FILE || !entry.file_type()?.is_file() {
                continue;
            }
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
        let s = Spill::open(&dir.path().join("large"), || Ok(false)).unwrap();
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
            1,
            "only the marker is left"
        );
    }

    #[test]
    fn a_directory_without_its_marker_is_never_taken_for_the_real_one() {
        let dir = tempfile::tempdir().unwrap();
        let large = dir.path().join("large");
        let marker = large.join(MARKER_FILE);
        let pointers = || -> io::Result<bool> { Ok(true) };
        // Missing while the database points into it: not recreated, nothing written.
        let s = Spill::open(&large, pointers).unwrap();
        assert!(!large.exists());
        assert!(s.missing().unwrap().contains("missing"));
        assert!(s.write("aa", b"x").is_err());
        assert!(!large.exists());
        let gone = io::Error::from(io::ErrorKind::NotFound);
        assert!(
            !s.lost(&gone),
            "a file of a missing directory may come back"
        );
        // An empty directory in its place (an unmounted mount point, perhaps with what a file
        // manager leaves there): the same.
        std::fs::create_dir(&large).unwrap();
        std::fs::write(large.join(".DS_Store"), b"x").unwrap();
        let s = Spill::open(&large, pointers).unwrap();
        assert!(s.missing().unwrap().contains(MARKER_FILE));
        assert!(!marker.exists() && s.write("aa", b"x").is_err() && !s.lost(&gone));
        assert_eq!(s.sweep(|_| Ok(false)).unwrap(), 0);
        // No pointer yet: a new directory, marked.
        std::fs::remove_dir_all(&large).unwrap();
        let s = Spill::open(&large, || Ok(false)).unwrap();
        assert!(marker.is_file() && s.missing().is_none() && s.lost(&gone));
        s.write("aa", b"x").unwrap();
        // From before markers: a directory holding spilled files is the real one.
        std::fs::remove_file(&marker).unwrap();
        std::fs::create_dir(large.join("lost+found")).unwrap();
        let s = Spill::open(&large, || panic!("not asked")).unwrap();
        assert!(marker.is_file() && s.missing().is_none());
        // The sweep keeps the marker and subdirectories.
        assert_eq!(s.sweep(|_| Ok(false)).unwrap(), 1);
        assert!(marker.is_file() && large.join("lost+found").is_dir());
        // The marker gone while running: writes stop, a missing file is not lost.
        std::fs::remove_file(&marker).unwrap();
        assert!(s.missing().is_some() && s.write("bb", b"x").is_err() && !s.lost(&gone));
    }
}
