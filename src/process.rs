//! # Processes
//!
//! What both binaries need to behave as foreground, systemd-friendly services: a pid file that is a lock ([`PidFile`]), a future that resolves on SIGINT
//! or SIGTERM ([`shutdown_signal`]), the `stop` subcommand ([`stop`]), and
//! [`raise_nofile_limit`], so a server can hold more than a thousand connections;
//! [`thread_cpu_time`], for the work whose CPU the daemon accounts for itself; and
//! [`allowed_cpus`] and [`pin_current_thread`], for a pool of one thread per core.
//!
//! The pid file is locked with `flock(2)` on a descriptor held open for the life of the
//! process: the kernel drops the lock when the process ends, however it ends. So two
//! simultaneous starts cannot both run (one gets the lock, the other is refused), a pid file
//! left by a crash is recognised as stale by its free lock, and `stop` signals only a process
//! that holds the lock, never one that happens to have reused a stale pid.
//!
//! Every `flock` here is a `Flocked`, which unlocks on drop instead of leaving that to
//! the close: a child forked by another thread meanwhile would keep a closed lock held. The
//! write-ahead log's directory lock is one too.
//!
//! Owns: pid-file format (the decimal pid and a newline) and locking, signals.
//! Calls: libc, tokio signals. Unix only.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of pid-file handling and `stop`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    #[error("already running as pid {pid} (pid file {path} is locked); stop it first")]
    AlreadyRunning { pid: i32, path: PathBuf },
    #[error("no pid file at {0}: is it running?")]
    NoPidFile(PathBuf),
    #[error("pid file {path} is locked but does not hold a pid: {content:?}")]
    BadPidFile { path: PathBuf, content: String },
    #[error("pid {pid} did not exit within {secs} s")]
    StopTimeout { pid: i32, secs: u64 },
    #[error("cannot signal pid {pid}: {source}")]
    Signal { pid: i32, source: io::Error },
    #[error("pid file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Whether `pid` names a live process (a zombie counts as dead).
pub fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // /proc/<pid>/stat: "pid (comm) S ..." where S is the state; Z = zombie.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .map_or(true, |state| state != 'Z' && state != 'X'),
        Err(_) => true,
    }
}

/// A file locked with `flock(2)`, unlocked by `LOCK_UN` when dropped.
///
/// Closing the descriptor is not enough: a child that any thread forks shares the
/// descriptor's lock until it execs or exits, so a lock left to the close can outlive its
/// holder's drop (a reopen in that window is refused as "in use"). `LOCK_UN` on any copy
/// releases it at once.
#[derive(Debug)]
pub(crate) struct Flocked(File);

impl Flocked {
    /// Takes the lock (`op`: `LOCK_EX` or `LOCK_SH`) without waiting: `Err(file)` back when
    /// someone else holds it.
    pub(crate) fn try_new(file: File, op: libc::c_int) -> io::Result<Result<Flocked, File>> {
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
                return Ok(Ok(Flocked(file)));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => return Ok(Err(file)),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }

    pub(crate) fn file(&self) -> &File {
        &self.0
    }
}

impl Drop for Flocked {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor we own. It cannot fail on an open descriptor.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn read_pid_from(file: &mut File) -> io::Result<String> {
    let mut s = String::new();
    file.rewind()?;
    file.read_to_string(&mut s)?;
    Ok(s)
}

fn parse_pid(s: &str) -> Option<i32> {
    s.trim().parse::<i32>().ok().filter(|p| *p > 0)
}

/// Whether `file` (opened from `path`) is still the file at `path`: a holder that exits
/// removes the path, and a lock on a removed file guards nothing.
fn still_at(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match fs::metadata(path) {
        Ok(now) => Ok(now.dev() == open.dev() && now.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The pid of the process holding the lock of `path`, if one does.
pub fn running_pid(path: &Path) -> Result<Option<i32>, ProcessError> {
    let io_err = |source| ProcessError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    // A probe: a shared lock taken means nobody holds it (and it is let go at once).
    let mut file = match Flocked::try_new(file, libc::LOCK_SH).map_err(io_err)? {
        Ok(_) => return Ok(None),
        Err(file) => file,
    };
    let text = read_pid_from(&mut file).map_err(io_err)?;
    parse_pid(&text)
        .map(Some)
        .ok_or_else(|| ProcessError::BadPidFile {
            path: path.to_path_buf(),
            content: text,
        })
}

/// A locked pid file holding this process's pid; removed on drop, and unlocked when the
/// process ends in any way.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    /// Holds the lock: kept open for the life of the process.
    lock: Flocked,
}

impl PidFile {
    /// Locks `path` (creating it and its directory) and writes our pid into it. Refuses if
    /// another process holds the lock; a file nobody holds is stale and taken over.
    pub fn acquire(path: &Path) -> Result<PidFile, ProcessError> {
        let io_err = |source| ProcessError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        // A holder exiting between our open and our lock removes the path: try again, a
        // few times (each round needs another process to exit in that window).
        for _ in 0..8 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map_err(io_err)?;
            let lock = match Flocked::try_new(file, libc::LOCK_EX).map_err(io_err)? {
                Ok(lock) => lock,
                Err(mut file) => {
                    let text = read_pid_from(&mut file).map_err(io_err)?;
                    // No pid yet: a start racing ours, which it won.
                    return Err(ProcessError::AlreadyRunning {
                        pid: parse_pid(&text).unwrap_or(0),
                        path: path.to_path_buf(),
                    });
                }
            };
            let mut file = lock.file();
            if !still_at(file, path).map_err(io_err)? {
                continue;
            }
            let me = std::process::id();
            file.set_len(0).map_err(io_err)?;
            file.rewind().map_err(io_err)?;
            file.write_all(format!("{me}\n").as_bytes())
                .map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            return Ok(PidFile {
                path: path.to_path_buf(),
                lock,
            });
        }
        Err(io_err(io::Error::other("pid file keeps being replaced")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Still locked here: nobody else can have taken the path over.
        if matches!(still_at(self.lock.file(), &self.path), Ok(true)) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What [`stop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The process was signalled and has exited.
    Exited(i32),
    /// Nobody held the pid file's lock: the stale file (naming this pid, if it held one)
    /// was removed and nothing was signalled.
    WasNotRunning(Option<i32>),
}

/// Sends SIGTERM to the process holding the lock of `pid_file` and waits up to `timeout`
/// for it to exit (to release the lock). A stale pid file is removed, its pid not signalled.
pub fn stop(pid_file: &Path, timeout: Duration) -> Result<Stopped, ProcessError> {
    let io_err = |source| ProcessError::Io {
        path: pid_file.to_path_buf(),
        source,
    };
    let mut file = match File::open(pid_file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ProcessError::NoPidFile(pid_file.to_path_buf()))
        }
        Err(e) => return Err(io_err(e)),
    };
    let text = read_pid_from(&mut file).map_err(io_err)?;
    let mut file = match Flocked::try_new(file, libc::LOCK_EX).map_err(io_err)? {
        Ok(lock) => {
            // Nobody holds it. Remove it while we hold the lock (so no new holder loses it).
            if still_at(lock.file(), pid_file).map_err(io_err)? {
                let _ = fs::remove_file(pid_file);
            }
            return Ok(Stopped::WasNotRunning(parse_pid(&text)));
        }
        Err(file) => file,
    };
    let text = read_pid_from(&mut file).map_err(io_err)?;
    let pid = parse_pid(&text).ok_or_else(|| ProcessError::BadPidFile {
        path: pid_file.to_path_buf(),
        content: text,
    })?;
    // SAFETY: kill(2) on the pid written by the process that holds the lock.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(ProcessError::Signal {
            pid,
            source: io::Error::last_os_error(),
        });
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // The lock is free once the process has exited (its descriptors closed).
        match Flocked::try_new(file, libc::LOCK_SH).map_err(io_err)? {
            Ok(_) => return Ok(Stopped::Exited(pid)),
            Err(f) => file = f,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(ProcessError::StopTimeout {
        pid,
        secs: timeout.as_secs(),
    })
}

/// Resolves on the first SIGINT or SIGTERM, with the signal's name. Needs a tokio runtime
/// with I/O enabled (actix's has it). If the handlers cannot be installed, never resolves.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        }
        _ => std::future::pending().await,
    }
}

/// Most open files a server asks for (Linux's default `fs.nr_open`): a larger soft limit
/// would be refused when the hard limit is unlimited.
const NOFILE_CEILING: libc::rlim_t = 1 << 20;

/// Raises the soft RLIMIT_NOFILE to the hard limit (at most 2^20) and returns (before,
/// after). Every websocket costs a file descriptor, and the soft limit a login shell or
/// systemd gives (1024) would cap a server at about a thousand connections: the accept
/// after that fails with EMFILE and clients time out (found by `benches/load.rs`). The
/// hard limit is the administrator's cap and stays as it is.
pub fn raise_nofile_limit() -> io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        let before = lim.rlim_cur;
        let target = lim.rlim_max.min(NOFILE_CEILING);
        if before < target {
            lim.rlim_cur = target;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok((before, before.max(target)))
    }
}

/// The soft RLIMIT_NOFILE now; `None` when unlimited or unreadable.
pub fn nofile_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(lim.rlim_cur)
}

/// CPU time the calling thread has used so far (`CLOCK_THREAD_CPUTIME_ID`); zero if the
/// clock cannot be read.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a local timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The CPUs the calling thread may run on (`sched_getaffinity`), in increasing order;
/// empty if they cannot be read (or off Linux).
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's size.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Binds the calling thread to `cpu` (`sched_setaffinity`); whether it worked.
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: as in `allowed_cpus`; `cpu` is below CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    unsafe { libc::sched_setaffinity(0, size, &set) == 0 }
}

/// Off Linux: not known (nothing is bound).
#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Off Linux: threads are not bound.
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_cpu: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_soft_limit_reaches_the_hard_limit() {
        let (before, after) = raise_nofile_limit().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit on a local struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, after);
        assert!(after >= before);
        assert_eq!(after, before.max(lim.rlim_max.min(NOFILE_CEILING)));
    }

    #[test]
    fn the_pid_file_is_a_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.pid");
        let me = std::process::id() as i32;
        let first = PidFile::acquire(&path).unwrap();
        assert_eq!(running_pid(&path).unwrap(), Some(me));
        // A second acquire (another open file description: as another process would) is
        // refused while the first holds the lock, and changes nothing.
        match PidFile::acquire(&path) {
            Err(ProcessError::AlreadyRunning { pid, .. }) => assert_eq!(pid, me),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{me}\n"));
        drop(first);
        assert!(!path.exists(), "removed on drop");
        assert_eq!(running_pid(&path).unwrap(), None);

        // A file nobody holds is stale, whatever it says: a live pid (our parent's) or
        // garbage is taken over.
        let parent = unsafe { libc::getppid() };
        fs::write(&path, format!("{parent}\n")).unwrap();
        assert_eq!(running_pid(&path).unwrap(), None);
        let pf = PidFile::acquire(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{me}\n"));
        drop(pf);
        fs::write(&path, "not a pid").unwrap();
        drop(PidFile::acquire(&path).unwrap());
    }

    #[test]
    fn a_lock_is_let_go_on_drop_even_while_a_forked_child_shares_it() {
        let dir = tempfile::tempdir().unwrap();
        let open = || File::create(dir.path().join("LOCK")).unwrap();
        let first = Flocked::try_new(open(), libc::LOCK_EX).unwrap().unwrap();
        // What a child forked meanwhile holds until it execs: a copy of the descriptor.
        let copy = first.file().try_clone().unwrap();
        assert!(Flocked::try_new(open(), libc::LOCK_SH).unwrap().is_err());
        drop(first);
        let second = Flocked::try_new(open(), libc::LOCK_EX).unwrap();
        assert!(second.is_ok(), "free once the first is dropped");
        drop(copy);
    }

    #[test]
    fn simultaneous_acquires_let_exactly_one_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.pid");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    PidFile::acquire(&path)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        assert!(results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(ProcessError::AlreadyRunning { .. }))));
    }

    #[test]
    fn stop_never_signals_a_process_that_does_not_hold_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        assert!(matches!(
            stop(&path, Duration::from_secs(1)),
            Err(ProcessError::NoPidFile(_))
        ));
        // A stale pid file naming a live, unrelated process (as after a crash and pid
        // reuse): not signalled; the stale file is removed.
        let mut bystander = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs::write(&path, format!("{}\n", bystander.id())).unwrap();
        assert_eq!(
            stop(&path, Duration::from_secs(1)).unwrap(),
            Stopped::WasNotRunning(Some(bystander.id() as i32))
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "the bystander was signalled"
        );
        assert!(!path.exists());
        bystander.kill().unwrap();
        bystander.wait().unwrap();
        assert!(!is_alive(0));
        assert!(is_alive(std::process::id() as i32));
    }
}
