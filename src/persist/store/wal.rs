//! # The write-ahead log in front of sled (the persister's store, the daemon's object cache
//! and vault)
//!
//! An append-only log of sled operations in files `<dir>/<generation>.log` (16 hex digits,
//! replayed in generation order). [`Wal::append`] only buffers; [`Wal::sync`] writes the
//! buffer and `fdatasync`s it: one write and one `fdatasync` per group commit. Entries are
//! absolute (put this value, remove this key), so replaying a log onto a database that holds
//! some or all of it already gives the same state: replay is idempotent.
//!
//! A file is written with zeros ahead of use, off the acknowledgement path, and entries
//! overwrite the zeros in place: half as much again as the file before it took
//! ([`PREALLOC_MIN`]..[`PREALLOC_MAX`] bytes), or [`PREALLOC_FIRST`] with no file before it.
//! An append past the end of a file would make every group commit allocate the file's new
//! pages and, on a disk, journal its new size with the data: the flush of
//! `UPDATES=600 cargo bench --bench archive_path`, 50 ms apart, took 33 µs on tmpfs and
//! 470 µs on ext4 appending, 21 µs and 331 µs into zeros (BENCHMARKS.md, session 18). A
//! file the log moves on from ([`Wal::rotate`]) is closed with an end marker (payload length
//! 0, check `[0; 4]` then `end1`), so that its zero tail is told apart from writes a crash
//! lost.
//!
//! Entry: payload length (u32 LE), an 8-byte check, the payload (ops: tree index u8, key
//! length u32 LE, key, value length u32 LE or `u32::MAX` for a removal, value). The check is
//! the payload's CRC-32 (IEEE, u32 LE) followed by the tag `crc1`; replay also accepts the
//! first 8 bytes of the payload's SHA-256, the check of logs written before the CRC (a
//! SHA-256 of every entry cost more than its encoding, on the path every publish waits
//! for), whatever its last four bytes are. The tag keeps a zero-filled tail from passing:
//! the CRC of an empty payload is 0. (A log in this format is not readable by a version
//! from before it: one left by a crash must be replayed by this version or a later one.)
//! Replay reads each file up to its end marker, its end, or the first short or mismatching
//! entry. Zeros from there to the end are the file's unused part; anything else is a torn
//! entry. Replay stops at a torn entry, and at zeros in a file without its end marker when a
//! later file holds entries, and ignores everything after it, later files included: a torn
//! tail was never acknowledged (an acknowledgement follows the `fdatasync` of everything
//! appended before it, and [`Wal::sync`] syncs a retired file, its end marker included,
//! before the current one), so neither was anything behind it, and replaying it would skip a
//! gap into a state that never existed.
//!
//! A write error poisons the log for good: a later entry behind a half-written one would not
//! be replayed, so nothing may be acknowledged after it.
//!
//! Owns: the log directory. Calls: the file system. Used by [`super::logged`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use crate::process::Flocked;

/// One sled operation: `value` `None` removes `key` from tree `tree`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(super) struct Op {
    pub tree: u8,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

const REMOVED: u32 = u32::MAX;
const HEADER: usize = 4 + 8;
/// The pending buffer keeps its allocation after a write up to this size.
const KEEP_PENDING: usize = 256 << 10;

/// The second half of an entry's check (see the module docs).
const CRC_TAG: &[u8; 4] = b"crc1";

/// The header that closes a file (see the module docs): no entry has it, since an entry's
/// check ends in [`CRC_TAG`] (or is a SHA-256's).
const END: [u8; HEADER] = [0, 0, 0, 0, 0, 0, 0, 0, b'e', b'n', b'd', b'1'];

/// Zeros written into a new file ahead of its entries, at least and at most (the log moves
/// into sled at 4 MiB, so a file rarely outgrows the most; one that does grows by appends).
pub(super) const PREALLOC_MIN: u64 = 64 << 10;
pub(super) const PREALLOC_MAX: u64 = 8 << 20;
/// Zeros for a file with no file before it to size it by (a new log's first two): 5 s of
/// 20 updates a second of 1 KiB objects, with room to spare.
pub(super) const PREALLOC_FIRST: u64 = 512 << 10;

fn check(payload: &[u8]) -> [u8; 8] {
    let mut c = [0u8; 8];
    c[..4].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    c[4..].copy_from_slice(CRC_TAG);
    c
}

/// Whether `found` is the check of `payload`: this version's, or a log's from before it
/// (whose SHA-256 may end in the tag by chance: tried too when the CRC does not match).
fn checks_out(payload: &[u8], found: &[u8]) -> bool {
    (found[4..] == CRC_TAG[..] && found == &check(payload)[..])
        || Sha256::digest(payload)[..8] == *found
}

fn len32(n: usize) -> io::Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n != REMOVED)
        .ok_or_else(|| io::Error::other("write-ahead log entry too large"))
}

/// Appends the entry for `ops` to `out`, in place (no second buffer: the log's pending
/// buffer keeps its allocation from one group commit to the next). On error `out` is
/// unchanged.
pub(super) fn encode(ops: &[Op], out: &mut Vec<u8>) -> io::Result<()> {
    let mut payload = 0usize;
    for op in ops {
        len32(op.key.len())?;
        payload += 9 + op.key.len();
        if let Some(v) = &op.value {
            len32(v.len())?;
            payload += v.len();
        }
    }
    let payload_len = len32(payload)?;
    let start = out.len();
    out.reserve(HEADER + payload);
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    // Every length fits a u32 (checked above), so nothing fails past this point.
    for op in ops {
        out.push(op.tree);
        out.extend_from_slice(&(op.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&op.key);
        match &op.value {
            Some(v) => {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(&REMOVED.to_le_bytes()),
        }
    }
    let sum = check(&out[start + HEADER..]);
    out[start + 4..start + HEADER].copy_from_slice(&sum);
    Ok(())
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    take(b, 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn decode_ops(mut p: &[u8]) -> Option<Vec<Op>> {
    let mut ops = Vec::new();
    while !p.is_empty() {
        let tree = take(&mut p, 1)?[0];
        let klen = take_u32(&mut p)? as usize;
        let key = take(&mut p, klen)?.to_vec();
        let value = match take_u32(&mut p)? {
            REMOVED => None,
            n => Some(take(&mut p, n as usize)?.to_vec()),
        };
        ops.push(Op { tree, key, value });
    }
    Some(ops)
}

/// What [`decode`] found at the start of a file's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Decoded {
    /// Every whole, intact entry, in order.
    pub entries: Vec<Vec<Op>>,
    /// The bytes they take (and the end marker's, if found).
    pub used: usize,
    /// The entries end with the end marker.
    pub closed: bool,
}

/// Every whole, intact entry at the start of `bytes`, up to the end marker if there is one.
pub(super) fn decode(bytes: &[u8]) -> Decoded {
    let total = bytes.len();
    let mut bytes = bytes;
    let mut entries = Vec::new();
    let mut closed = false;
    while bytes.len() >= HEADER {
        if bytes[..HEADER] == END {
            closed = true;
            bytes = &bytes[HEADER..];
            break;
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let Some(payload) = bytes.get(HEADER..HEADER + len) else {
            break;
        };
        if !checks_out(payload, &bytes[4..HEADER]) {
            break;
        }
        let Some(ops) = decode_ops(payload) else {
            break;
        };
        entries.push(ops);
        bytes = &bytes[HEADER + len..];
    }
    Decoded {
        entries,
        used: total - bytes.len(),
        closed,
    }
}

struct Files {
    current: Arc<File>,
    generation: u64,
    /// Where the next write goes in `current`: the bytes of entries written to it.
    offset: u64,
    /// What the last file retired took, end marker included (sizes the next one).
    last_used: u64,
    /// Appended, not yet written.
    pending: Vec<u8>,
    /// The previous file, written but not yet synced (see [`Wal::rotate`]).
    retired: Option<Arc<File>>,
    /// A file was created since the directory was last synced.
    dir_dirty: bool,
    /// The next generation's file, created (and the directory synced) ahead of the
    /// rotation that starts it ([`Wal::prepare_next`]).
    next: Option<(u64, Arc<File>)>,
    poisoned: bool,
}

/// The log (see the module docs).
pub(super) struct Wal {
    dir: PathBuf,
    /// `<dir>/LOCK`, `flock`ed for the log's life: one log per directory, in any process.
    _lock: Flocked,
    files: Mutex<Files>,
    /// Held across [`Wal::sync`]: a second caller could otherwise return (and acknowledge)
    /// once the current file is synced while the first still syncs the retired one.
    syncing: Mutex<()>,
}

/// What [`Wal::open`] found in the log's files.
pub(super) struct Replay {
    /// The intact entries, in order, up to the first short or corrupt one.
    pub entries: Vec<Vec<Op>>,
    /// The newest generation found (remove through it once the entries are durable).
    pub last: Option<u64>,
    /// Where replay stopped early, if it did.
    pub torn: Option<Torn>,
}

/// A short or corrupt entry: it and everything after it were never acknowledged.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Torn {
    pub file: PathBuf,
    pub offset: usize,
    /// Bytes ignored: the rest of that file and every later file.
    pub discarded: u64,
}

fn name(generation: u64) -> String {
    format!("{generation:016x}.log")
}

/// Whether the log in `dir` holds any entry (a store that must then be opened behind its
/// log: without it, sled would miss what the log holds). A clean shutdown leaves files
/// without entries.
pub(super) fn holds_entries(dir: &Path) -> io::Result<bool> {
    let gens = match generations(dir) {
        Ok(gens) => gens,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for g in gens {
        if !decode(&fs::read(dir.join(name(g)))?).entries.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn generations(dir: &Path) -> io::Result<Vec<u64>> {
    let mut gens = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(g) = name
            .strip_suffix(".log")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

/// Creates the file of `generation` with `zeros` zero bytes written into it and synced (the
/// caller syncs the directory).
fn create(dir: &Path, generation: u64, zeros: u64) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create_new(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let file = o.open(dir.join(name(generation)))?;
    if zeros > 0 {
        // Written, not `fallocate`d: a disk file system would record allocated but unwritten
        // blocks as such and convert them at each sync, in its journal.
        let chunk = vec![0u8; 64 << 10];
        let mut at = 0;
        while at < zeros {
            let n = (zeros - at).min(chunk.len() as u64) as usize;
            file.write_all_at(&chunk[..n], at)?;
            at += n as u64;
        }
        file.sync_data()?;
    }
    Ok(file)
}

/// Zeros for the file after one whose entries took `used` bytes (0: none before it).
fn prealloc_after(used: u64) -> u64 {
    if used == 0 {
        return PREALLOC_FIRST;
    }
    (used + used / 2).clamp(PREALLOC_MIN, PREALLOC_MAX)
}

/// Takes `<dir>/LOCK`: a second log on the same directory (another store, another process)
/// would replay and then delete this one's files.
fn lock_dir(dir: &Path) -> io::Result<Flocked> {
    let mut o = OpenOptions::new();
    o.create(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let file = o.open(dir.join("LOCK"))?;
    Flocked::try_new(file, libc::LOCK_EX)?.map_err(|_| {
        io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("the write-ahead log in {} is in use", dir.display()),
        )
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn poisoned() -> io::Error {
    io::Error::other("the write-ahead log failed earlier; restart the process")
}

impl Wal {
    /// Opens the log in `dir` (created, mode 0700): what its files hold, and the log,
    /// appending to a new file. The old files stay until [`Wal::remove_through`] the
    /// generation returned (once what they hold is durable elsewhere).
    pub(super) fn open(dir: &Path) -> io::Result<(Wal, Replay)> {
        let created = !dir.exists();
        fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        if created {
            // The new directory's own entry, or a power loss could lose the log with it.
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let lock = lock_dir(dir)?;
        let gens = generations(dir)?;
        let mut entries = Vec::new();
        let mut torn: Option<Torn> = None;
        // Zeros where a file without its end marker stopped: torn if a later file holds an
        // entry, the log's unused end if none does.
        let mut open_end: Option<Torn> = None;
        // The most a file held, to size the next file's zeros as if this run had retired it.
        let mut most_used = 0;
        for g in &gens {
            let path = dir.join(name(*g));
            if let Some(t) = &mut torn {
                t.discarded += fs::metadata(&path)?.len();
                continue;
            }
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let found = decode(&bytes);
            most_used = most_used.max(found.used as u64);
            let rest = &bytes[found.used..];
            let zeros = rest.iter().all(|&b| b == 0);
            if let Some(mut end) = open_end.take() {
                end.discarded += bytes.len() as u64;
                if found.entries.is_empty() && !found.closed && zeros {
                    open_end = Some(end);
                } else {
                    torn = Some(end);
                }
                continue;
            }
            entries.extend(found.entries);
            let stopped = Torn {
                file: path,
                offset: found.used,
                discarded: rest.len() as u64,
            };
            if found.closed || rest.is_empty() {
                continue;
            } else if zeros {
                open_end = Some(stopped);
            } else {
                torn = Some(stopped);
            }
        }
        let last = gens.last().copied();
        let generation = last.map_or(0, |g| g + 1);
        let current = create(dir, generation, prealloc_after(most_used))?;
        sync_dir(dir)?;
        let wal = Wal {
            dir: dir.to_owned(),
            _lock: lock,
            files: Mutex::new(Files {
                current: Arc::new(current),
                generation,
                offset: 0,
                last_used: most_used,
                pending: Vec::new(),
                retired: None,
                dir_dirty: false,
                next: None,
                poisoned: false,
            }),
            syncing: Mutex::new(()),
        };
        Ok((
            wal,
            Replay {
                entries,
                last,
                torn,
            },
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a write or sync failed (nothing more will be accepted).
    pub(super) fn is_poisoned(&self) -> bool {
        self.lock().poisoned
    }

    /// Buffers the entry for `ops` (durable at the next [`Wal::sync`]). No ops, no entry.
    pub(super) fn append(&self, ops: &[Op]) -> io::Result<()> {
        let mut f = self.lock();
        if f.poisoned {
            return Err(poisoned());
        }
        if ops.is_empty() {
            return Ok(());
        }
        encode(ops, &mut f.pending)
    }

    fn write_pending(f: &mut Files) -> io::Result<()> {
        if f.poisoned {
            return Err(poisoned());
        }
        if f.pending.is_empty() {
            return Ok(());
        }
        let written = f.current.write_all_at(&f.pending, f.offset);
        match written {
            Ok(()) => f.offset += f.pending.len() as u64,
            Err(_) => f.poisoned = true,
        }
        // The allocation is kept for the next group commit, unless a burst made it large.
        if f.pending.capacity() > KEEP_PENDING {
            f.pending = Vec::new();
        } else {
            f.pending.clear();
        }
        written
    }

    /// Returns once every entry appended before the call is on disk. The `fdatasync`s run
    /// outside the lock, so appends go on meanwhile; concurrent calls take turns.
    pub(super) fn sync(&self) -> io::Result<()> {
        let _turn = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let (current, retired, dir_dirty) = {
            let mut f = self.lock();
            Wal::write_pending(&mut f)?;
            let dirty = std::mem::take(&mut f.dir_dirty);
            (f.current.clone(), f.retired.take(), dirty)
        };
        let synced = (|| {
            if let Some(r) = retired {
                r.sync_data()?;
            }
            if dir_dirty {
                sync_dir(&self.dir)?;
            }
            current.sync_data()
        })();
        if synced.is_err() {
            // What failed to sync may be lost: nothing after it may be acknowledged.
            self.lock().poisoned = true;
        }
        synced
    }

    /// Writes what is buffered to the current file and starts the next one; returns the
    /// generation of the file retired (its entries are those appended before the call). The
    /// next [`Wal::sync`] syncs the retired file too.
    pub(super) fn rotate(&self) -> io::Result<u64> {
        let mut f = self.lock();
        if f.poisoned {
            return Err(poisoned());
        }
        f.pending.extend_from_slice(&END);
        Wal::write_pending(&mut f)?;
        f.last_used = std::mem::take(&mut f.offset);
        let next = f.generation + 1;
        let file = match f.next.take() {
            Some((g, file)) if g == next => file,
            // On the caller's path: no zeros ahead (the file grows by appends).
            _ => match create(&self.dir, next, 0) {
                Ok(file) => {
                    // Its directory entry is synced by the next `sync`, before anything in
                    // it is acknowledged.
                    f.dir_dirty = true;
                    Arc::new(file)
                }
                Err(e) => {
                    f.poisoned = true;
                    return Err(e);
                }
            },
        };
        let old = std::mem::replace(&mut f.current, file);
        let older = f.retired.replace(old);
        let retired = f.generation;
        f.generation = next;
        if let Some(r) = older {
            // Two rotations without a sync between them: there is one slot for a retired
            // file, so sync the older one now (a later sync must not leave it behind).
            if let Err(e) = r.sync_data() {
                f.poisoned = true;
                return Err(e);
            }
        }
        Ok(retired)
    }

    /// Creates the next generation's file (its zeros written and synced) and syncs the
    /// directory, off the acknowledgement path: the rotation then needs no directory sync
    /// before the next acknowledgement. Not concurrently with itself or [`Wal::rotate`]
    /// (both would create the same file): the caller serialises them.
    pub(super) fn prepare_next(&self) -> io::Result<()> {
        let (next, zeros) = {
            let f = self.lock();
            if f.next.is_some() {
                return Ok(());
            }
            (f.generation + 1, prealloc_after(f.last_used))
        };
        let file = create(&self.dir, next, zeros)?;
        sync_dir(&self.dir)?;
        let mut f = self.lock();
        if f.generation + 1 == next && f.next.is_none() {
            f.next = Some((next, Arc::new(file)));
        }
        Ok(())
    }

    /// Deletes the files of generation `generation` and before (their entries are durable
    /// in the database), then syncs the directory: a deletion undone by a power loss could
    /// otherwise bring back an old file behind newer ones that are gone.
    pub(super) fn remove_through(&self, generation: u64) -> io::Result<()> {
        let mut removed = false;
        for g in generations(&self.dir)? {
            if g <= generation {
                fs::remove_file(self.dir.join(name(g)))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Bytes of entries in the log's files, written or buffered (tests).
    pub(super) fn entry_bytes(&self) -> io::Result<u64> {
        let mut total = self.lock().pending.len() as u64;
        for g in generations(&self.dir)? {
            let found = decode(&fs::read(self.dir.join(name(g)))?);
            total += (found.used - if found.closed { HEADER } else { 0 }) as u64;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(tree: u8, key: &[u8], value: Option<&[u8]>) -> Op {
        Op {
            tree,
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }

    /// The entries and bytes used of a file without an end marker.
    fn decoded(bytes: &[u8]) -> (Vec<Vec<Op>>, usize) {
        let d = decode(bytes);
        assert!(!d.closed);
        (d.entries, d.used)
    }

    fn file_bytes(wal: &Wal, generation: u64) -> Vec<u8> {
        fs::read(wal.dir.join(name(generation))).unwrap()
    }

    #[test]
    fn entries_round_trip_and_a_torn_or_corrupt_tail_ends_replay() {
        let a = vec![op(0, b"k1", Some(b"v1")), op(3, b"k2", None)];
        let b = vec![op(5, b"", Some(b""))];
        let mut bytes = Vec::new();
        encode(&a, &mut bytes).unwrap();
        encode(&b, &mut bytes).unwrap();
        assert_eq!(decoded(&bytes), (vec![a.clone(), b.clone()], bytes.len()));
        for cut in 0..bytes.len() {
            let (got, _) = decoded(&bytes[..cut]);
            assert!(
                got.len() <= 1 && got.iter().all(|e| *e == a),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let (got, used) = decoded(&flipped);
        assert_eq!(got, vec![a]);
        assert!(used < flipped.len());
    }

    #[test]
    fn an_entry_is_laid_out_as_documented() {
        let mut bytes = vec![0xee]; // whatever the buffer held before stays
        encode(&[op(2, b"k", Some(b"vv")), op(1, b"x", None)], &mut bytes).unwrap();
        let payload = [
            &[2][..],
            &1u32.to_le_bytes(),
            b"k",
            &2u32.to_le_bytes(),
            b"vv",
            &[1],
            &1u32.to_le_bytes(),
            b"x",
            &u32::MAX.to_le_bytes(),
        ]
        .concat();
        let want = [
            &[0xee][..],
            &(payload.len() as u32).to_le_bytes(),
            &crc32fast::hash(&payload).to_le_bytes(),
            b"crc1",
            &payload,
        ]
        .concat();
        assert_eq!(bytes, want);
    }

    #[test]
    fn entries_checked_with_sha256_before_the_crc_still_replay() {
        let ops = vec![op(2, b"k", Some(b"vv")), op(1, b"x", None)];
        let mut crc = Vec::new();
        encode(&ops, &mut crc).unwrap();
        // The same entry as a log written before the CRC holds it.
        let mut sha = crc.clone();
        let sum = Sha256::digest(&sha[HEADER..]);
        sha[4..HEADER].copy_from_slice(&sum[..8]);
        let both = [&sha[..], &crc[..]].concat();
        assert_eq!(decoded(&both), (vec![ops.clone(), ops], both.len()));
    }

    #[test]
    fn a_zero_filled_tail_is_not_an_entry() {
        // A file extended with zeros by a crash: length 0, check 0 (the CRC of nothing).
        let mut bytes = Vec::new();
        encode(&[op(1, b"a", Some(b"1"))], &mut bytes).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&[0; 64]);
        let (got, used) = decoded(&bytes);
        assert_eq!(got.len(), 1);
        assert_eq!(used, whole);
    }

    #[test]
    fn synced_entries_are_replayed_in_generation_order_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, old) = Wal::open(dir.path()).unwrap();
        assert!(old.entries.is_empty() && old.last.is_none());
        let first = vec![op(1, b"a", Some(b"1"))];
        let second = vec![op(1, b"a", None)];
        wal.append(&first).unwrap();
        let retired = wal.rotate().unwrap();
        wal.append(&second).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (wal, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found.entries, vec![first, second]);
        assert!(found.torn.is_none());
        let last = found.last.unwrap();
        assert!(last > retired);
        wal.remove_through(last).unwrap();
        drop(wal);
        let (_wal, found) = Wal::open(dir.path()).unwrap();
        assert!(found.entries.is_empty());
    }

    #[test]
    fn replay_stops_for_good_at_a_torn_tail_later_files_included() {
        let dir = tempfile::tempdir().unwrap();
        let (first, lost, later) = (
            vec![op(1, b"a", Some(b"1"))],
            vec![op(1, b"a", Some(b"2"))],
            vec![op(1, b"b", Some(b"3"))],
        );
        let mut one = Vec::new();
        encode(&first, &mut one).unwrap();
        let whole = one.len();
        encode(&lost, &mut one).unwrap();
        one.truncate(one.len() - 1);
        let mut two = Vec::new();
        encode(&later, &mut two).unwrap();
        std::fs::write(dir.path().join(name(1)), &one).unwrap();
        std::fs::write(dir.path().join(name(2)), &two).unwrap();
        let (_wal, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found.entries, vec![first], "nothing after the torn entry");
        assert_eq!(found.last, Some(2));
        assert_eq!(
            found.torn,
            Some(Torn {
                file: dir.path().join(name(1)),
                offset: whole,
                discarded: (one.len() - whole + two.len()) as u64,
            })
        );
    }

    #[test]
    fn a_double_rotation_moves_on_to_the_next_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&[op(1, b"a", Some(b"1"))]).unwrap();
        let r1 = wal.rotate().unwrap();
        wal.append(&[op(1, b"a", Some(b"2"))]).unwrap();
        let r2 = wal.rotate().unwrap();
        assert_eq!(r2, r1 + 1);
        wal.append(&[op(1, b"a", Some(b"3"))]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_wal, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found.entries.len(), 3);
    }

    #[test]
    fn entries_overwrite_zeros_written_ahead_and_a_retired_file_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        let first = wal.lock().generation;
        let zeros = file_bytes(&wal, first);
        assert_eq!(zeros.len() as u64, PREALLOC_FIRST);
        assert!(zeros.iter().all(|&b| b == 0));
        let a = vec![op(1, b"a", Some(&[7; 3000]))];
        wal.append(&a).unwrap();
        wal.append(&[]).unwrap();
        wal.sync().unwrap();
        let bytes = file_bytes(&wal, first);
        assert_eq!(
            bytes.len() as u64,
            PREALLOC_FIRST,
            "written in place, not appended"
        );
        let (got, used) = decoded(&bytes);
        assert_eq!(got, vec![a.clone()], "no entry for no ops");
        assert!(bytes[used..].iter().all(|&b| b == 0));

        // The next file is sized from this one's use; the retired one gets its end marker.
        wal.rotate().unwrap();
        wal.prepare_next().unwrap();
        let used_first = decode(&file_bytes(&wal, first)).used as u64;
        let next = file_bytes(&wal, first + 2);
        assert_eq!(next.len() as u64, prealloc_after(used_first));
        assert_eq!(prealloc_after(10 << 20), PREALLOC_MAX);
        assert_eq!(prealloc_after(100), PREALLOC_MIN);
        let closed = decode(&file_bytes(&wal, first));
        assert!(closed.closed);
        assert_eq!(closed.entries, vec![a.clone()]);
        assert_eq!(wal.entry_bytes().unwrap(), used as u64);

        // (Into a file made on the rotation's path, without zeros: it grows by appends.)
        let b = vec![op(1, b"b", Some(&[9; 600_000]))];
        wal.append(&b).unwrap();
        wal.sync().unwrap();
        let used_second = file_bytes(&wal, first + 1).len() as u64;
        assert!(prealloc_after(used_second) > PREALLOC_FIRST);
        drop(wal);
        let (wal, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found.entries, vec![a, b]);
        assert!(found.torn.is_none(), "zeros after the end are no tear");
        // Sized from what the files found held, as if this run had retired them.
        let current = file_bytes(&wal, wal.lock().generation);
        assert_eq!(current.len() as u64, prealloc_after(used_second));
    }

    /// Files as a crash may leave them: `files` in generation order.
    fn replay(files: &[Vec<u8>]) -> Replay {
        let dir = tempfile::tempdir().unwrap();
        for (g, bytes) in files.iter().enumerate() {
            std::fs::write(dir.path().join(name(g as u64 + 1)), bytes).unwrap();
        }
        let (_wal, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(
            holds_entries(dir.path()).unwrap(),
            !found.entries.is_empty()
        );
        found
    }

    #[test]
    fn zeros_without_an_end_marker_end_the_log_unless_an_entry_follows() {
        let (a, b) = (vec![op(1, b"a", Some(b"1"))], vec![op(1, b"b", Some(b"2"))]);
        let entry = |ops: &[Op]| {
            let mut v = Vec::new();
            encode(ops, &mut v).unwrap();
            v
        };
        let open = [entry(&a), vec![0; 100]].concat();
        let closed = [entry(&a), END.to_vec(), vec![0; 100]].concat();

        // The newest file's unused part, even with a prepared file of zeros behind it.
        for files in [vec![open.clone()], vec![open.clone(), vec![0; 64], vec![]]] {
            let found = replay(&files);
            assert_eq!(found.entries, vec![a.clone()]);
            assert!(found.torn.is_none());
        }
        // Closed, or ending at its last entry (a log from before the zeros): replay goes on
        // into the next file.
        for first in [closed, entry(&a)] {
            let found = replay(&[first, entry(&b)]);
            assert_eq!(found.entries, vec![a.clone(), b.clone()]);
            assert!(found.torn.is_none());
        }
        // Not closed, and a later file holds an entry: what the zeros stand for was lost, so
        // nothing after them is replayed.
        let later = [entry(&b), vec![0; 10]].concat();
        let found = replay(&[open.clone(), vec![0; 64], later.clone()]);
        assert_eq!(found.entries, vec![a.clone()]);
        let torn = found.torn.unwrap();
        assert_eq!(torn.offset, entry(&a).len());
        assert_eq!(torn.discarded, (100 + 64 + later.len()) as u64);
        // Anything but zeros after the last entry is a torn one.
        let mut garbage = open;
        *garbage.last_mut().unwrap() = 1;
        let found = replay(&[garbage, entry(&b)]);
        assert_eq!(found.entries, vec![a]);
        assert!(found.torn.is_some());
        assert!(replay(&[vec![0; 64]]).torn.is_none());
    }
}
