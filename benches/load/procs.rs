//! The real server processes of a load run: `hgx-persister` and `hgxd` spawned from the
//! bench's own build (`CARGO_BIN_EXE_*`) in temporary homes on 127.0.0.1, their output kept
//! (last lines) and scanned for the ready line, and what `/proc/PID` says about them (RSS,
//! peak RSS, threads, open fds, CPU ticks).
//!
//! Children never outlive the harness: each is killed when its [`ServerProc`] drops, every
//! live pid is in a registry that the panic hook and the SIGINT/SIGTERM watcher kill, and
//! each child has `PR_SET_PDEATHSIG` = SIGKILL in case the harness itself is killed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bench_common::{clk_tck, parse_stat};

/// Output lines kept per server (the newest).
const KEEP_LINES: usize = 400;

/// Pids of live children, for the panic hook and the signal watcher.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn kill_all_live() {
    let pids = LIVE.lock().map(|v| v.clone()).unwrap_or_default();
    for pid in pids {
        // SAFETY: kill(2) on a child that is registered, hence not reaped yet.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// Installs the panic hook and the SIGINT/SIGTERM watcher that kill every live child.
pub fn install_cleanup() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all_live();
        previous(info);
    }));
    std::thread::Builder::new()
        .name("load-signals".into())
        .spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("signal runtime");
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                eprintln!("\nload: interrupted; killing the servers");
                kill_all_live();
                std::process::exit(130);
            });
        })
        .expect("signal thread");
}

/// The bench's own build of a binary, or a clear message saying how to build it.
pub fn binary(name: &str, built: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(built);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{name} not found at {}: run `cargo build --release --bins` (or let `cargo bench` \
             build it) and try again",
            p.display()
        ))
    }
}

/// A running server process.
pub struct ServerProc {
    pub name: &'static str,
    child: Child,
    lines: Arc<Mutex<VecDeque<String>>>,
    pub home: tempfile::TempDir,
    /// Set once the process has been reaped.
    pub exit: Option<ExitStatus>,
}

impl ServerProc {
    /// Spawns `bin args` in a new temporary home (`HOME`, `HYPERGOLIX_HOME`, working
    /// directory) holding `hypergolix.yml` = `config`, with its soft RLIMIT_NOFILE set to
    /// `nofile` when given (else inherited from the harness).
    pub fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[&str],
        config: &str,
        envs: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Result<ServerProc, String> {
        let home = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        std::fs::write(home.path().join("hypergolix.yml"), config)
            .map_err(|e| format!("config: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(home.path())
            .env("HOME", home.path())
            .env("HYPERGOLIX_HOME", home.path())
            .env_remove("HGX_CONFIG")
            .env_remove("HGX_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let harness = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, setrlimit) between fork and
        // exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != harness {
                    // The harness died before the prctl took effect.
                    libc::_exit(1);
                }
                if let Some(n) = nofile {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    lim.rlim_cur = n.min(lim.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn {name}: {e}"))?;
        LIVE.lock().unwrap().push(child.id());
        let lines: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped"));
        for pipe in [out, err] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    let mut l = lines.lock().unwrap();
                    if l.len() == KEEP_LINES {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            });
        }
        Ok(ServerProc {
            name,
            child,
            lines,
            home,
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last output lines, newest last.
    pub fn tail(&self, n: usize) -> String {
        let l = self.lines.lock().unwrap();
        let skip = l.len().saturating_sub(n);
        l.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits for a line containing `marker`; returns what follows it.
    pub fn wait_line(&mut self, marker: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.find(marker).map(|at| l[at + marker.len()..].to_owned()));
            if let Some(rest) = found {
                return Ok(rest);
            }
            if let Some(st) = self.poll_exit() {
                return Err(format!(
                    "{} exited ({st}) before printing {marker:?}:\n{}",
                    self.name,
                    self.tail(30)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} printed no {marker:?} within {within:?}:\n{}",
                    self.name,
                    self.tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has exited (reaps it).
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.reaped(st);
            }
        }
        self.exit
    }

    fn reaped(&mut self, st: ExitStatus) {
        self.exit = Some(st);
        let pid = self.child.id();
        LIVE.lock().unwrap().retain(|p| *p != pid);
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns the exit status
    /// and how long the graceful stop took (None: killed).
    pub fn stop(&mut self, grace: Duration) -> (Option<ExitStatus>, Option<Duration>) {
        if let Some(st) = self.poll_exit() {
            return (Some(st), None);
        }
        let t = Instant::now();
        // SAFETY: kill(2) on our child, not reaped yet (poll_exit returned None).
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
        while t.elapsed() < grace {
            if let Some(st) = self.poll_exit() {
                return (Some(st), Some(t.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let st = self.child.wait().ok();
        if let Some(st) = st {
            self.reaped(st);
        }
        (st, None)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if self.poll_exit().is_none() {
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.reaped(st);
            }
        }
    }
}

/// What `/proc/PID` says about a process at one moment.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcStat {
    pub rss_mib: f64,
    pub hwm_mib: f64,
    pub threads: u64,
    pub fds: u64,
    /// utime + stime, seconds.
    pub cpu_s: f64,
}

/// Reads `/proc/PID/{status,fd,stat}`; None once the process is gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let cpu_s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s))
        .map(|(_, ticks)| ticks as f64 / clk_tck())
        .unwrap_or(0.0);
    Some(ProcStat {
        rss_mib: field("VmRSS:")? as f64 / 1024.0,
        hwm_mib: field("VmHWM:").unwrap_or(0) as f64 / 1024.0,
        threads: field("Threads:").unwrap_or(0),
        fds,
        cpu_s,
    })
}

/// The soft and hard RLIMIT_NOFILE of `pid` from `/proc/PID/limits`.
pub fn nofile_of(pid: u32) -> Option<(String, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let l = s.lines().find(|l| l.starts_with("Max open files"))?;
    let v: Vec<&str> = l["Max open files".len()..].split_whitespace().collect();
    Some((v.first()?.to_string(), v.get(1)?.to_string()))
}

/// The current soft RLIMIT_NOFILE of this process.
pub fn own_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// `/proc/loadavg`'s three figures.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
