//! Support for `tests/crash_kill.rs`, `crash_account.rs` and `remote_hung.rs`: the real `hgx-persister` and `hgxd` as child processes
//! that can be SIGKILLed and restarted on the same directories (and, for the persister, the
//! same port, so daemons find it again), homes with test-cost scrypt and fixture identities,
//! and the seeded randomness that picks the kill points.
//!
//! Every process listens on 127.0.0.1, is killed (SIGKILL) and reaped when its guard drops
//! (`proc_support::Proc`), and every wait is bounded.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hypergolix::actors::api::{AppEvent, AppToken, ObjectView};
use hypergolix::golix::Ghid;
use hypergolix::ipc::HgxLink;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc::UnboundedReceiver;

pub use crate::proc_support::{free_port, Proc, START, WAIT};
use crate::proc_support::{identity_json, persister_command, ready_port, LISTENING};

pub const PASSWORD: &str = "crash test password";

// ---- seeded kill points --------------------------------------------------------------------

/// The seed of this run: `HGX_CRASH_SEED` if set, else from the clock. Printed so a failing
/// run can be replayed exactly (as far as the scheduler allows).
pub fn seeded_rng(test: &str) -> StdRng {
    let seed = match std::env::var("HGX_CRASH_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("HGX_CRASH_SEED={s:?}: not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    println!("{test}: HGX_CRASH_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// The first round that runs: `HGX_CRASH_FIRST_ROUND` if set, else 0. Earlier rounds only
/// draw their kill points (so the RNG sequence, and the kill points of the rounds that run,
/// are those of the full run); the object's history is shorter, so it is a faster way to
/// retry a kill point, not an exact replay.
pub fn first_round() -> usize {
    match std::env::var("HGX_CRASH_FIRST_ROUND") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("HGX_CRASH_FIRST_ROUND={s:?}: not a number")),
        Err(_) => 0,
    }
}

/// Kill rounds per workload: `HGX_CRASH_ROUNDS` if set, else `default` (sized for CI).
pub fn rounds(default: usize) -> usize {
    match std::env::var("HGX_CRASH_ROUNDS") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("HGX_CRASH_ROUNDS={s:?}: not a number")),
        Err(_) => default,
    }
}

// ---- the persister ---------------------------------------------------------------------------

/// A real persister on a fixed port of 127.0.0.1 with its ghidcache in a temporary directory;
/// it can be killed and restarted on the same directory and port.
pub struct PersisterProc {
    dir: tempfile::TempDir,
    pub port: u16,
    proc: Option<Proc>,
    /// Starts so far (1 after `start`).
    pub starts: usize,
}

impl PersisterProc {
    pub async fn start() -> PersisterProc {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("hypergolix.yml"),
            format!(
                "server:\n  host: 127.0.0.1\n  port: {port}\n  ghidcache: ./cache\n  \
                 logdir: ./logs\n  pid_file: ./persister.pid\n  workers: 1\n"
            ),
        )
        .unwrap();
        let mut p = PersisterProc {
            dir,
            port,
            proc: None,
            starts: 0,
        };
        p.restart().await;
        p
    }

    /// `ws://127.0.0.1:<port>/ws`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Starts the process (again) on the same directory and port. The port of a killed
    /// process may linger a moment; the start is retried within `START`.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "the persister is still running");
        let deadline = Instant::now() + START;
        loop {
            let mut proc = Proc::spawn("hgx-persister", persister_command(self.dir.path()));
            let ready = tokio::time::timeout(START, async {
                loop {
                    if proc.line_after(LISTENING).is_some() {
                        return true;
                    }
                    if proc.child.try_wait().unwrap().is_some() {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or(false);
            if ready {
                self.starts += 1;
                self.proc = Some(proc);
                return;
            }
            let _ = proc.wait_exit(WAIT).await;
            assert!(
                Instant::now() < deadline,
                "the persister does not start again\n{}",
                proc.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) {
        let mut p = self.proc.take().expect("the persister is running");
        p.kill9().await;
    }

    /// Sends `signal` (SIGSTOP: connected but answering nothing; SIGCONT: back).
    pub fn signal(&self, signal: i32) {
        let pid = self.proc.as_ref().expect("the persister is running").pid();
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
    }

    pub async fn terminate(&mut self) {
        let mut p = self.proc.take().expect("the persister is running");
        p.stop_clean().await;
    }
}

// ---- hgxd homes ------------------------------------------------------------------------------

/// One machine's `$HYPERGOLIX_HOME` running `hgxd` for the account of fixture identity `n`
/// (test-cost scrypt, password from a file), restartable on the same directory.
pub struct Daemon {
    dir: tempfile::TempDir,
    identity: usize,
    proc: Option<Proc>,
    /// The IPC port of the running process (a new one per start: `ipc_port: 0`).
    pub port: u16,
    pub starts: usize,
    /// The end of the output of the last killed run (shown if the restart fails).
    killed_output: String,
}

/// Lines of a killed run's output kept for a failing restart's message.
const KILLED_TAIL: usize = 60;

impl Daemon {
    /// Creates the home and starts `hgxd` (which creates the account). Its write-ahead logs
    /// move into sled every 20 ms (`wal_move_ms`), so that kills land mid-move too.
    pub async fn start(identity: usize, persister_port: u16) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hypergolix.yml"),
            format!(
                "process:\n  ghidcache: ./ghidcache\n  logdir: ./logs\n  pid_file: ./hgxd.pid\n  \
                 ipc_port: 0\n  wal_move_ms: 20\ninstrumentation:\n  verbosity: info\n\
                 remotes:\n  - host: 127.0.0.1\n    port: {persister_port}\n    tls: false\n\
                 user:\n  scrypt:\n    log_n: 10\n    r: 8\n    p: 1\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
        std::fs::write(
            dir.path().join("id.json"),
            identity_json(identity).to_string(),
        )
        .unwrap();
        let mut d = Daemon {
            dir,
            identity,
            proc: None,
            port: 0,
            starts: 0,
            killed_output: String::new(),
        };
        d.restart().await;
        d
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `hgxd` (again) on the same home: the account logs in with the same password
    /// from the same ghidcache and vault.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "hgxd is still running");
        let home = self.dir.path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hgxd"));
        cmd.arg("--password-file")
            .arg(home.join("password"))
            .current_dir(home)
            .env("HYPERGOLIX_HOME", home)
            .env("HOME", home)
            .env_remove("HGX_CONFIG")
            .env_remove("HGX_PASSWORD");
        if self.starts == 0 {
            cmd.arg("--identity-file").arg(home.join("id.json"));
        }
        let mut proc = Proc::spawn(&format!("hgxd#{}", self.identity), cmd);
        if !self.killed_output.is_empty() {
            proc.context = format!("the killed run ended with:\n{}", self.killed_output);
        }
        self.port = ready_port(&mut proc).await;
        self.starts += 1;
        self.proc = Some(proc);
    }

    /// An app connected through the IPC websocket with the token of the running process.
    pub async fn link(&self) -> HgxLink {
        HgxLink::connect_home(self.home(), self.port)
            .await
            .expect("app connects with ipc.token")
    }

    pub async fn kill9(&mut self) {
        let mut p = self.proc.take().expect("hgxd is running");
        p.kill9().await;
        let out = p.output();
        let lines: Vec<&str> = out.lines().collect();
        self.killed_output = lines[lines.len().saturating_sub(KILLED_TAIL)..].join("\n");
    }

    pub async fn terminate(&mut self) {
        let mut p = self.proc.take().expect("hgxd is running");
        p.stop_clean().await;
    }

    /// The running process's output so far (for failure messages).
    pub fn output(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }

    /// SIGKILL, start again on the same home, and a new app connection.
    pub async fn kill9_and_relink(&mut self) -> HgxLink {
        self.kill9().await;
        self.restart().await;
        self.link().await
    }
}

/// A running daemon of fixture 1 on `p` with an app that registered a new token, and that
/// token.
pub async fn daemon_with_an_app(p: &PersisterProc) -> (Daemon, HgxLink, AppToken) {
    let d = Daemon::start(1, p.port).await;
    let app = d.link().await;
    let (token, _) = app.register_token(None).await.unwrap();
    (d, app, token)
}

/// A new object of `app`'s (public or private), its ghid.
pub async fn new_object(app: &HgxLink, state: &[u8], api: Option<Ghid>, private: bool) -> Ghid {
    app.new_object(state.to_vec(), api, true, private)
        .await
        .unwrap()
        .ghid
}

/// Asserts that an app with a token of its own cannot read `ghid` (`access_denied`).
pub async fn denied_to_another_app(d: &Daemon, ghid: Ghid, what: &str) {
    let other = d.link().await;
    other.register_token(None).await.unwrap();
    let e = other
        .get(ghid)
        .await
        .expect_err(&format!("another app read {what}"));
    assert_eq!(e.code(), Some("access_denied"), "{e}");
}

// ---- app helpers -----------------------------------------------------------------------------

/// A test api id (algo 0, like the reference's).
pub fn api_id(tag: u8) -> Ghid {
    Ghid::new(hypergolix::golix::Algo::DUMMY, [tag; 64])
}

/// Waits for an update of `ghid` carrying `state` (other events are skipped).
pub async fn update(rx: &mut UnboundedReceiver<AppEvent>, ghid: Ghid, state: &[u8]) -> bool {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Some(AppEvent::Update(v)) if v.ghid == ghid && v.state == state => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// `get` until the object has `state` (with a `sync` between tries); the last view or error.
pub async fn get_until(link: &HgxLink, ghid: Ghid, state: &[u8]) -> Result<ObjectView, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let last = match link.get(ghid).await {
            Ok(v) if v.state == state => return Ok(v),
            Ok(v) => {
                let _ = link.sync(ghid).await;
                format!("state {:?}", String::from_utf8_lossy(&v.state))
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
