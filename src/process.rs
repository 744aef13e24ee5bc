//! # Processes
//!
//! What both binaries need to behave as foreground, systemd-friendly services: a pid file that
//! refuses a second instance while the first is alive ([`PidFile`], removed again on drop), a
//! future that resolves on SIGINT or SIGTERM ([`shutdown_signal`]), and the `stop` subcommand
//! ([`stop`]): SIGTERM to the pid in the pid file, then wait for it to exit; and
//! [`raise_nofile_limit`], so a server can hold more than a thousand connections.
//!
//! Owns: pid-file format (the decimal pid and a newline), liveness checks, signals.
//! Calls: libc, tokio signals. Unix only.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of pid-file handling and `stop`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    #[error("already running as pid {pid} (pid file {path}); stop it first, or remove the pid file if that process is not ours")]
    AlreadyRunning { pid: i32, path: PathBuf },
    #[error("no pid file at {0}: is it running?")]
    NoPidFile(PathBuf),
    #[error("pid file {path} does not hold a pid: {content:?}")]
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

fn read_pid(path: &Path) -> Result<Option<i32>, ProcessError> {
    match fs::read_to_string(path) {
        Ok(s) => match s.trim().parse::<i32>() {
            Ok(pid) if pid > 0 => Ok(Some(pid)),
            _ => Err(ProcessError::BadPidFile {
                path: path.to_path_buf(),
                content: s,
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProcessError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The pid written in a pid file, if the file exists.
pub fn pid_in(path: &Path) -> Result<Option<i32>, ProcessError> {
    read_pid(path)
}

/// An acquired pid file: holds this process's pid; removed on drop if it still does.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: i32,
}

impl PidFile {
    /// Writes our pid to `path`. Refuses if the file names a live process; a stale or
    /// garbled file is replaced.
    pub fn acquire(path: &Path) -> Result<PidFile, ProcessError> {
        let io_err = |source| ProcessError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        let me = std::process::id() as i32;
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    f.write_all(format!("{me}\n").as_bytes()).map_err(io_err)?;
                    f.sync_all().map_err(io_err)?;
                    return Ok(PidFile {
                        path: path.to_path_buf(),
                        pid: me,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match read_pid(path) {
                        Ok(Some(pid)) if pid != me && is_alive(pid) => {
                            return Err(ProcessError::AlreadyRunning {
                                pid,
                                path: path.to_path_buf(),
                            })
                        }
                        // Stale (dead pid, our own pid, or garbage): replace it.
                        _ => {
                            let _ = fs::remove_file(path);
                        }
                    }
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        Err(io_err(io::Error::other("pid file keeps reappearing")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if matches!(read_pid(&self.path), Ok(Some(p)) if p == self.pid) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What [`stop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The process was signalled and has exited.
    Exited(i32),
    /// The pid file named a process that was already gone; the stale file was removed.
    WasNotRunning(i32),
}

/// Sends SIGTERM to the pid in `pid_file` and waits up to `timeout` for it to exit.
pub fn stop(pid_file: &Path, timeout: Duration) -> Result<Stopped, ProcessError> {
    let pid = read_pid(pid_file)?.ok_or_else(|| ProcessError::NoPidFile(pid_file.to_path_buf()))?;
    if !is_alive(pid) {
        let _ = fs::remove_file(pid_file);
        return Ok(Stopped::WasNotRunning(pid));
    }
    // SAFETY: plain kill(2) on a pid read from the pid file.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::ESRCH) {
            return Ok(Stopped::WasNotRunning(pid));
        }
        return Err(ProcessError::Signal { pid, source });
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return Ok(Stopped::Exited(pid));
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
    fn pid_file_refuses_a_live_owner_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.pid");
        // A live process that is not us: our parent (the test harness or shell).
        let parent = unsafe { libc::getppid() };
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("{parent}\n")).unwrap();
        match PidFile::acquire(&path) {
            Err(ProcessError::AlreadyRunning { pid, .. }) => assert_eq!(pid, parent),
            other => panic!("{other:?}"),
        }
        // Stale: a pid that cannot exist.
        fs::write(&path, "2147483646\n").unwrap();
        let pf = PidFile::acquire(&path).unwrap();
        assert_eq!(pid_in(&path).unwrap(), Some(std::process::id() as i32));
        drop(pf);
        assert!(!path.exists(), "removed on drop");
        // Garbage is replaced too.
        fs::write(&path, "not a pid").unwrap();
        drop(PidFile::acquire(&path).unwrap());
    }

    #[test]
    fn stop_without_a_pid_file_or_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        assert!(matches!(
            stop(&path, Duration::from_secs(1)),
            Err(ProcessError::NoPidFile(_))
        ));
        fs::write(&path, "2147483646\n").unwrap();
        assert_eq!(
            stop(&path, Duration::from_secs(1)).unwrap(),
            Stopped::WasNotRunning(2147483646)
        );
        assert!(!is_alive(0));
        assert!(is_alive(std::process::id() as i32));
    }
}
