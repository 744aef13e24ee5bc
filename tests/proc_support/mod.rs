//! Helpers for tests that run the real binaries (`hgxd`, `hgx-persister`) as processes in
//! temporary homes: a child process whose stdout and stderr are collected (and which is
//! killed when dropped), a persister on a port the OS picked, and an `hgxd` home. Every
//! process listens on 127.0.0.1 only; identities come from the fixtures; every wait is
//! bounded. Shared by `hgxd_process.rs`, `crash_support` (kill and restart), `access_control.rs`
//! and `log_secrets.rs`.
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
/// What `hgx-persister` prints before its address (`http://` or, with TLS, `https://`).
pub const LISTENING: &str = "listening on ";

/// A child process, killed (SIGKILL) and reaped when dropped. Its stdout and stderr are
/// collected line by line by two threads.
pub struct Proc {
    name: String,
    /// Shown with this process's output when it fails to start (e.g. a killed run's end).
    pub context: String,
    pub child: Child,
    /// (from stderr, line) in arrival order per stream.
    lines: Arc<Mutex<Vec<(bool, String)>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let lines: Arc<Mutex<Vec<(bool, String)>>> = Arc::default();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        let readers = [(false, out), (true, err)]
            .into_iter()
            .map(|(is_err, pipe)| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines() {
                        let Ok(line) = line else { return };
                        lines.lock().unwrap().push((is_err, line));
                    }
                })
            })
            .collect();
        Proc {
            name: name.to_owned(),
            context: String::new(),
            child,
            lines,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far (both streams, interleaved by arrival).
    pub fn output(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let all: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        all.join("\n")
    }

    fn text(&self, stderr: bool) -> String {
        let lines = self.lines.lock().unwrap();
        let mut s = String::new();
        for (_, l) in lines.iter().filter(|(e, _)| *e == stderr) {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Everything printed on stdout so far, a line each.
    pub fn stdout(&self) -> String {
        self.text(false)
    }

    /// Everything printed on stderr so far, a line each.
    pub fn stderr(&self) -> String {
        self.text(true)
    }

    /// What follows `marker` in the first line (either stream) that contains it.
    ///
    /// Anywhere in the line, not only at its start: `hgxd`'s terminal log drain writes a
    /// record in several pieces, so its `ready` line (an `eprintln!`) sometimes lands right
    /// after a log record's timestamp ("Nov 22 05:34:04.919hgxd: ready on ws://...").
    pub fn line_after(&self, marker: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|(_, l)| l.find(marker).map(|at| l[at + marker.len()..].to_owned()))
    }

    /// Waits (without blocking the async runtime) for a line containing `marker`; returns
    /// what follows it.
    pub async fn wait_line(&mut self, marker: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(rest) = self.line_after(marker) {
                return rest;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                self.join_readers();
                panic!(
                    "{} exited ({st}) before printing {marker:?}\n{}\n{}",
                    self.name,
                    self.output(),
                    self.context
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no {marker:?} within {within:?}\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit (and be reaped, so its pid is free); its output is
    /// then complete. Fails after `within` (the drop then kills it).
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.join_readers();
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs to completion: (status, stdout, stderr).
    pub async fn finish(mut self, within: Duration) -> (ExitStatus, String, String) {
        let st = self.wait_exit(within).await;
        (st, self.stdout(), self.stderr())
    }

    /// SIGTERM (without waiting; a process that is already gone is no error).
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop_clean(&mut self) {
        self.signal(libc::SIGTERM);
        let st = self.wait_exit(WAIT).await;
        assert!(
            st.success(),
            "{}: clean exit on SIGTERM: {st}\n{}",
            self.name,
            self.output()
        );
    }

    /// SIGKILL, then reaps: the process is gone when this returns.
    pub async fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let st = self.wait_exit(WAIT).await;
        assert!(!st.success(), "{} was killed, not exited: {st}", self.name);
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, sig) }, 0);
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Ports for processes that must be told their port before they start (a NATS cluster's
/// routes, an `hgxd` restarted on the same address). The kernel's "port 0" pick comes from the
/// ephemeral range, which every outgoing connection on the machine draws from too, and other
/// test binaries running at the same time pick the same way: a port free a moment ago was
/// then sometimes taken before the child bound it (CI: nats-server "address already in use").
/// So these ports come from below the ephemeral range, and each is reserved across processes
/// by an advisory lock on a file named after it, held until this test process exits.
const RESERVED: std::ops::Range<u16> = 20_000..32_000;

/// A port on 127.0.0.1 that nothing listens on, that no outgoing connection will be given,
/// and that no other test process using this function holds.
pub fn free_port() -> u16 {
    use rand::Rng;
    use std::os::fd::AsRawFd;
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("hgx-test-ports");
    std::fs::create_dir_all(&dir).expect("port reservation directory");
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(RESERVED);
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue;
        };
        // SAFETY: flock on a descriptor we own; released when the process exits.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        HELD.lock().unwrap().push(file);
        return port;
    }
    panic!("no free port in {RESERVED:?} after 1000 tries");
}

/// A real persister in a temporary directory, at `verbosity`.
pub struct Persister {
    pub dir: tempfile::TempDir,
    pub proc: Proc,
    pub port: u16,
}

impl Persister {
    pub async fn start(verbosity: &str) -> Persister {
        Persister::with_server_lines(&format!("  verbosity: {verbosity}\n")).await
    }

    /// Starts one with `extra` appended to its `server:` section (YAML lines indented by two
    /// spaces; `""` for the defaults). Its port is a reserved one ([`free_port`]), not the
    /// kernel's pick: a test may restart it on the same port, and daemons dialling a dead
    /// ephemeral port could be handed it as their own source port meanwhile.
    pub async fn with_server_lines(extra: &str) -> Persister {
        Persister::on_port(free_port(), extra).await
    }

    /// Starts one on `port` (0 = any free one) with `extra` in its `server:` section.
    pub async fn on_port(port: u16, extra: &str) -> Persister {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hypergolix.yml");
        std::fs::write(
            &config,
            format!(
                "server:\n  host: 127.0.0.1\n  port: {port}\n  ghidcache: ./cache\n  \
                 logdir: ./logs\n  pid_file: ./persister.pid\n  workers: 1\n{extra}"
            ),
        )
        .unwrap();
        let mut proc = Proc::spawn("hgx-persister", persister_command(dir.path()));
        let url = proc.wait_line(LISTENING, START).await;
        let addr = url.split_once("://").map_or(url.as_str(), |(_, a)| a);
        let addr: std::net::SocketAddr = addr.trim().parse().unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        Persister {
            dir,
            proc,
            port: addr.port(),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Whether this persister serves the account `user_id`'s root now: its current frame and
    /// the container it binds (what another machine of the user needs to log in).
    pub async fn serves_account(&self, user_id: &str) -> bool {
        use hypergolix::golix::{Ghid, Object, Policy};
        use hypergolix::persist::client::PersisterClient;
        let root: Ghid = user_id.parse().expect("a user id is a ghid");
        let (client, _notes) = PersisterClient::connect(&self.ws_url()).await.unwrap();
        let frame = client.get(&root).await.ok();
        let target = match frame.as_deref().map(|b| Object::decode(b, Policy::STRICT)) {
            Some(Ok(Object::Gobd(f))) => Some(f.target()),
            _ => None,
        };
        let served = match target {
            Some(t) => client.get(&t).await.is_ok(),
            None => false,
        };
        client.close();
        served
    }

    /// Text of every file under its `logs/`.
    pub fn log_files(&self) -> String {
        files_text(&self.dir.path().join("logs"))
    }

    /// Stops this persister (SIGKILL, unless it is gone already) and starts it again on the
    /// same port, over the same ghidcache, with `extra` as its `server:` lines (as for
    /// [`Persister::with_server_lines`]).
    pub async fn restart_with(&mut self, extra: &str) {
        if self.proc.child.try_wait().unwrap().is_none() {
            self.proc.kill9().await;
        }
        std::fs::write(
            self.dir.path().join("hypergolix.yml"),
            format!(
                "server:\n  host: 127.0.0.1\n  port: {}\n  ghidcache: ./cache\n  \
                 logdir: ./logs\n  pid_file: ./persister.pid\n  workers: 1\n{extra}",
                self.port
            ),
        )
        .unwrap();
        let _ = std::fs::remove_file(self.dir.path().join("persister.pid"));
        self.proc = Proc::spawn("hgx-persister", persister_command(self.dir.path()));
        self.proc.wait_line(LISTENING, START).await;
    }
}

/// `hgx-persister --config hypergolix.yml` in `dir` (its working directory and `HOME`).
pub fn persister_command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hgx-persister"));
    cmd.arg("--config")
        .arg(dir.join("hypergolix.yml"))
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("HYPERGOLIX_HOME")
        .env_remove("HGX_CONFIG");
    cmd
}

/// Fixture identity `n` as the JSON `--identity-file` reads.
pub fn identity_json(n: usize) -> serde_json::Value {
    hypergolix::testdata::fixture_identity_json(n)
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
        let remotes = match persister_port {
            Some(p) => format!("remotes:\n  - host: 127.0.0.1\n    port: {p}\n    tls: false\n"),
            None => "remotes: []\n".to_owned(),
        };
        Home::with_lines(path, verbosity, &remotes)
    }

    /// Like [`Home::new`], with `lines` (top-level YAML: `remotes:` with its entries, `user:`,
    /// ...) after the process and instrumentation sections.
    pub fn with_lines(path: PathBuf, verbosity: &str, lines: &str) -> Home {
        Home::with_process_lines(path, verbosity, lines, "")
    }

    /// [`Home::with_lines`] with `extra` appended to the `process:` section (YAML lines
    /// indented by two spaces, e.g. `"  ipc_hello_timeout_s: 1\n"`).
    pub fn with_process_lines(path: PathBuf, verbosity: &str, lines: &str, extra: &str) -> Home {
        std::fs::create_dir_all(&path).unwrap();
        let yml = format!(
            "process:\n  ghidcache: ./ghidcache\n  logdir: ./logs\n  pid_file: ./hgxd.pid\n  \
             ipc_port: 0\n{extra}instrumentation:\n  verbosity: {verbosity}\n{lines}"
        );
        std::fs::write(path.join("hypergolix.yml"), yml).unwrap();
        Home { path }
    }

    /// Another machine of `first`'s account (its `user.fingerprint` and `user.user_id`,
    /// nothing else), with a remote on `persister_port`.
    pub fn second_machine(
        path: PathBuf,
        verbosity: &str,
        persister_port: u16,
        first: &Home,
    ) -> Home {
        let home = Home::new(path, verbosity, Some(persister_port));
        let config = std::fs::read_to_string(first.file("hypergolix.yml")).unwrap();
        let cfg = hypergolix::config::Config::load_from(Some(&first.file("hypergolix.yml")), false)
            .unwrap();
        let field =
            |v: Option<String>, k: &str| v.unwrap_or_else(|| panic!("user.{k} in\n{config}"));
        let mut yml = std::fs::read_to_string(home.file("hypergolix.yml")).unwrap();
        yml.push_str(&format!(
            "user:\n  fingerprint: \"{}\"\n  user_id: \"{}\"\n",
            field(cfg.user.fingerprint, "fingerprint"),
            field(cfg.user.user_id, "user_id")
        ));
        std::fs::write(home.file("hypergolix.yml"), yml).unwrap();
        home
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

/// Waits for `hgxd`'s ready line; returns its IPC port.
pub async fn ready_port(proc: &mut Proc) -> u16 {
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
