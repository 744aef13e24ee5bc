//! Helpers for tests that run the real binaries (`hgxd`, `hgx-persister`) as processes in
//! temporary homes: a child process whose stdout and stderr are collected (and which is
//! killed when dropped), a persister on a port the OS picked, and an `hgxd` home. Every
//! process listens on 127.0.0.1 only; identities come from the fixtures; every wait is
//! bounded. (The same shapes as `hgxd_process.rs`, kept small and shared here.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a process may take to announce that it is ready.
pub const START: Duration = Duration::from_secs(90);
/// Any other wait.
pub const WAIT: Duration = Duration::from_secs(30);
pub const READY: &str = "hgxd: ready on ws://127.0.0.1:";

/// A child process, killed (SIGKILL) and reaped when dropped; its output lines collected.
pub struct Proc {
    name: String,
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        let readers = [out, err]
            .into_iter()
            .map(|pipe| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines() {
                        let Ok(line) = line else { return };
                        lines.lock().unwrap().push(line);
                    }
                })
            })
            .collect();
        Proc {
            name: name.to_owned(),
            child,
            lines,
            readers,
        }
    }

    /// Everything printed so far (both streams).
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for a line containing `marker`; returns what follows it.
    pub async fn wait_line(&mut self, marker: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.find(marker).map(|at| l[at + marker.len()..].to_owned()));
            if let Some(rest) = found {
                return rest;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                self.join_readers();
                panic!(
                    "{} exited ({st}) before {marker:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no {marker:?} within {within:?}:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the exit (killing it after `within`), then for the last output lines.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.join_readers();
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not exit within {within:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago, on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real persister in a temporary directory, at `verbosity`.
pub struct Persister {
    pub dir: tempfile::TempDir,
    pub proc: Proc,
    pub port: u16,
}

impl Persister {
    pub async fn start(verbosity: &str) -> Persister {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hypergolix.yml");
        std::fs::write(
            &config,
            format!(
                "server:\n  host: 127.0.0.1\n  port: 0\n  ghidcache: ./cache\n  logdir: ./logs\n  \
                 pid_file: ./persister.pid\n  workers: 1\n  verbosity: {verbosity}\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hgx-persister"));
        cmd.arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env_remove("HYPERGOLIX_HOME")
            .env_remove("HGX_CONFIG");
        let mut proc = Proc::spawn("hgx-persister", cmd);
        let addr = proc.wait_line("listening on http://", START).await;
        let addr: std::net::SocketAddr = addr.trim().parse().unwrap();
        Persister {
            dir,
            proc,
            port: addr.port(),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
}

/// Fixture identity `n` as the JSON `--identity-file` reads.
pub fn identity_json(n: usize) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/vectors/golix/fixture_identities.json");
    let all: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    all[format!("TEST_AGENT{n}")].clone()
}

/// One machine's `$HYPERGOLIX_HOME` (`path`, which the test may leave uncreated for
/// `hgxd` to create).
pub struct Home {
    pub path: PathBuf,
}

impl Home {
    /// Writes a config: the process section (`ipc_port` 0 = any), `verbosity`, and a remote
    /// on `persister_port` if given.
    pub fn new(path: PathBuf, verbosity: &str, persister_port: Option<u16>) -> Home {
        std::fs::create_dir_all(&path).unwrap();
        let mut yml = format!(
            "process:\n  ghidcache: ./ghidcache\n  logdir: ./logs\n  pid_file: ./hgxd.pid\n  \
             ipc_port: 0\ninstrumentation:\n  verbosity: {verbosity}\n"
        );
        match persister_port {
            Some(p) => yml.push_str(&format!(
                "remotes:\n  - host: 127.0.0.1\n    port: {p}\n    tls: false\n"
            )),
            None => yml.push_str("remotes: []\n"),
        }
        std::fs::write(path.join("hypergolix.yml"), yml).unwrap();
        Home { path }
    }

    /// A home `hgxd` creates itself on first run (no config written).
    pub fn bare(path: PathBuf) -> Home {
        Home { path }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// `hgxd <args>` in this home, `HGX_PASSWORD` = `password`.
    pub fn hgxd(&self, password: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hgxd"));
        cmd.args(args)
            // The parent is the test's own temporary directory: no stray config is found there.
            .current_dir(self.path.parent().expect("a home has a parent"))
            .env("HYPERGOLIX_HOME", &self.path)
            .env("HOME", &self.path)
            .env_remove("HGX_CONFIG")
            .env_remove("HGX_PASSWORD");
        if let Some(pw) = password {
            cmd.env("HGX_PASSWORD", pw);
        }
        cmd
    }

    /// Starts `hgxd` (importing fixture `identity` on first run); returns it and its IPC port.
    pub async fn start(&self, password: &str, identity: Option<usize>) -> (Proc, u16) {
        let mut cmd = self.hgxd(Some(password), &[]);
        if let Some(n) = identity {
            let path = std::env::temp_dir().join(format!(
                "hgx-identity-{}-{n}-{}.json",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::write(&path, identity_json(n).to_string()).unwrap();
            cmd.arg("--identity-file").arg(&path);
            let mut proc = Proc::spawn("hgxd", cmd);
            let port = ready_port(&mut proc).await;
            let _ = std::fs::remove_file(path);
            return (proc, port);
        }
        let mut proc = Proc::spawn("hgxd", cmd);
        let port = ready_port(&mut proc).await;
        (proc, port)
    }

    /// Runs `hgxd <args>` to completion; returns its status and output.
    pub async fn run(&self, password: Option<&str>, args: &[&str]) -> (ExitStatus, String) {
        let mut p = Proc::spawn("hgxd", self.hgxd(password, args));
        let st = p.wait_exit(WAIT * 2).await;
        (st, p.output())
    }

    /// Text of every file under `logs/`.
    pub fn log_files(&self) -> String {
        files_text(&self.file("logs"))
    }
}

async fn ready_port(proc: &mut Proc) -> u16 {
    let rest = proc.wait_line(READY, START).await;
    rest.split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("ready line: {rest:?}"))
}

/// Concatenated (lossy UTF-8) text of every file under `dir`, recursively.
pub fn files_text(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&files_text(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&bytes));
            out.push('\n');
        }
    }
    out
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}
