//! The NATS baselines' server: `nats-server` found on PATH (or where Debian installs it),
//! started on a free 127.0.0.1 port from a config file in its own temporary directory —
//! core NATS, or with JetStream and its file store in that directory — probed until it
//! answers, and killed (its directory removed) when dropped.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Printed when `nats-server` cannot be run.
pub const MISSING: &str = "nats-server was not found (PATH, /usr/sbin, /usr/local/sbin). The \
NATS baselines need it: install it with `apt-get install nats-server` (Debian/Ubuntu), or put \
a release binary from https://github.com/nats-io/nats-server/releases on PATH, or run without \
`--baseline nats,jetstream`.";

/// The `nats-server` binary: on PATH, else where Debian installs it (/usr/sbin is not on
/// an ordinary user's PATH).
pub fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// `nats-server --version`, or the reason it cannot run.
pub fn version() -> Result<String, String> {
    let bin = binary().ok_or_else(|| MISSING.to_owned())?;
    match Command::new(&bin).arg("--version").output() {
        Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Err(e) => Err(format!("cannot run {}: {e}", bin.display())),
    }
}

/// A `nats-server` child process with its temporary directory (config, log, JetStream
/// store); killed (by its pid) when dropped, the directory removed after.
pub struct NatsServer {
    child: Child,
    pub addr: SocketAddr,
    /// JetStream's store directory, if enabled.
    pub store_dir: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server; with `jetstream_in` = Some(parent) JetStream is enabled and the
    /// server's directory (hence its file store) is created under `parent`; `sync_always`
    /// (nats-server ≥ 2.10) makes it fsync the stream before each acknowledgement.
    pub fn start(jetstream_in: Option<&Path>, sync_always: bool) -> Result<NatsServer, String> {
        let bin = binary().ok_or_else(|| MISSING.to_owned())?;
        let dir = match jetstream_in {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .map_err(|e| format!("nats tempdir: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let store_dir = jetstream_in.map(|_| dir.path().join("jetstream"));
        // A subscriber thread busy verifying may leave a socket unread for seconds in a
        // saturated run; the deadline only decides when the server gives up on it (Redis:
        // its pub/sub output buffer limit).
        let mut config = format!("listen: \"127.0.0.1:{port}\"\nwrite_deadline: \"60s\"\n");
        if let Some(s) = &store_dir {
            config.push_str(&format!("jetstream {{\n  store_dir: {:?}\n", s));
            if sync_always {
                config.push_str("  sync_interval: always\n");
            }
            config.push_str("}\n");
        }
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, config).map_err(|e| format!("nats config: {e}"))?;
        let log = std::fs::File::create(dir.path().join("server.log"))
            .map_err(|e| format!("nats log: {e}"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut server = NatsServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            store_dir,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match probe(server.addr) {
                Ok(info) if server.store_dir.is_some() && !info.contains("\"jetstream\":true") => {
                    return Err(format!(
                        "nats-server started without JetStream:\n{}",
                        server.log_tail()
                    ));
                }
                Ok(_) => return Ok(server),
                Err(_) if Instant::now() < deadline => {}
                Err(e) => {
                    return Err(format!(
                        "nats-server did not answer PING within 10 s ({e}):\n{}",
                        server.log_tail()
                    ))
                }
            }
            if let Ok(Some(st)) = server.child.try_wait() {
                return Err(format!(
                    "nats-server exited at start ({st}):\n{}",
                    server.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Blocking start-up probe: INFO, CONNECT, PING → PONG; returns the INFO line.
fn probe(addr: SocketAddr) -> io::Result<String> {
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(1000)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut info = String::new();
    r.read_line(&mut info)?;
    if !info.starts_with("INFO ") {
        return Err(io::Error::other(format!("unexpected greeting {info:?}")));
    }
    (&s).write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line == "PONG\r\n" {
        Ok(info)
    } else {
        Err(io::Error::other(format!("unexpected reply {line:?}")))
    }
}
