//! Persister level: a real persister server on 127.0.0.1:0 — in process
//! (`persist::server::start` on its own thread and actix system, like the integration
//! tests), or the `hgx-persister` binary as a child process (`--persister-process child`:
//! then the harness holds only the client end of each connection, which is what lets
//! N = 10,000 fit a 20,000 fd limit) — and one publisher sending pre-signed GOBD frames and
//! their GEOC containers for one dynamic ghid.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hypergolix::golix::{Object, Policy};
use hypergolix::persist::client::PersisterClient;
use hypergolix::persist::hub::HubStats;
use hypergolix::persist::server::{self, Settings};
use hypergolix::persist::Archive;
use tokio::sync::oneshot;

use super::drive::{self, Mode, PubReport};
use super::stats::Shared;
use crate::procs::{binary, ServerProc};

pub use crate::bench_common::{presign, Presigned};
use crate::bench_common::{publish_update, publisher_connection, spawn_driver, Driver};

/// Where the persister level's server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    /// In this process unless its connections' two ends would not fit the fd limit.
    Auto,
    /// In this process, on its own thread (hub counters in the report).
    Thread,
    /// The `hgx-persister` binary of this build as a child process (its CPU by pid).
    Child,
}

/// A running persister: in process or a child process.
pub struct PersisterProc {
    pub url: String,
    inner: Inner,
}

enum Inner {
    Thread {
        archive: Archive,
        /// The on-disk ghidcache (None: sled's temporary store, which lives in /dev/shm).
        _dir: Option<tempfile::TempDir>,
        stop: Option<oneshot::Sender<()>>,
        stats: std_mpsc::Receiver<HubStats>,
        thread: Option<JoinHandle<()>>,
    },
    Child {
        proc: ServerProc,
        addr: SocketAddr,
        /// The ghidcache on /dev/shm (on disk it is in the child's temporary home).
        _shm: Option<tempfile::TempDir>,
    },
}

impl PersisterProc {
    /// `workers` HTTP workers (0 = one per core), the verify threads bound to cores if
    /// `pin`; the ghidcache in a new temporary directory on disk (`on_disk`: every
    /// acknowledged publish costs a real fsync) or in sled's temporary store (/dev/shm, RAM).
    pub fn start(workers: usize, on_disk: bool, pin: bool) -> Result<PersisterProc, String> {
        let dir = if on_disk {
            Some(tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?)
        } else {
            None
        };
        let ghidcache = dir.as_ref().map(|d| d.path().join("ghidcache"));
        let (tx, rx) = std_mpsc::channel();
        let (stats_tx, stats_rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fanout-persister".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let mut settings = Settings::local(ghidcache);
                    settings.workers = workers;
                    settings.pin_verify_threads = pin;
                    let running = match server::start(settings).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = tx.send(Ok((running.ws_url(), running.archive().clone())));
                    let _ = stop_rx.await;
                    let _ = stats_tx.send(running.stats());
                    let _ = running.stop().await;
                })
            })
            .map_err(|e| e.to_string())?;
        let (url, archive) = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "persister did not start".to_owned())??;
        Ok(PersisterProc {
            url,
            inner: Inner::Thread {
                archive,
                _dir: dir,
                stop: Some(stop_tx),
                stats: stats_rx,
                thread: Some(thread),
            },
        })
    }

    /// Starts this build's `hgx-persister` as a child process with `workers` HTTP workers
    /// (and `pin` as [`PersisterProc::start`]), its ghidcache on disk (its temporary home)
    /// or on /dev/shm.
    pub fn spawn(workers: usize, on_disk: bool, pin: bool) -> Result<PersisterProc, String> {
        let bin = binary("hgx-persister", env!("CARGO_BIN_EXE_hgx-persister"))?;
        let shm = if on_disk {
            None
        } else {
            Some(tempfile::tempdir_in("/dev/shm").map_err(|e| format!("/dev/shm: {e}"))?)
        };
        let cache = shm.as_ref().map_or_else(
            || "./cache".to_owned(),
            |d| d.path().join("cache").display().to_string(),
        );
        let config = format!(
            "server:\n  host: 127.0.0.1\n  port: 0\n  ghidcache: {cache}\n  logdir: ./logs\n  \
             pid_file: ./persister.pid\n  workers: {workers}\n  pin_verify_threads: {pin}\n  \
             verbosity: warning\n"
        );
        let mut proc = ServerProc::spawn("hgx-persister", &bin, &[], &config, &[], None)?;
        let rest = proc.wait_line("listening on http://", Duration::from_secs(60))?;
        let addr: SocketAddr = rest
            .trim()
            .parse()
            .map_err(|e| format!("persister address {rest:?}: {e}"))?;
        Ok(PersisterProc {
            url: format!("ws://{addr}/ws"),
            inner: Inner::Child {
                proc,
                addr,
                _shm: shm,
            },
        })
    }

    /// The child process's pid (None in process).
    pub fn pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::Thread { .. } => None,
            Inner::Child { proc, .. } => Some(proc.pid()),
        }
    }

    /// The counter of the persister's current frame of `dynamic`.
    pub fn frame_counter(&self, dynamic: &hypergolix::golix::Ghid) -> Option<u64> {
        let bytes = match &self.inner {
            Inner::Thread { archive, .. } => archive.get(dynamic).ok()??.to_vec(),
            Inner::Child { addr, .. } => current_frame_http(*addr, dynamic).ok()?,
        };
        match Object::decode(&bytes, Policy::STRICT).ok()? {
            Object::Gobd(f) => Some(f.counter),
            _ => None,
        }
    }

    /// Stops the server; returns its hub counters (in process only).
    pub fn stop(self) -> Option<HubStats> {
        match self.inner {
            Inner::Thread {
                mut stop,
                stats,
                mut thread,
                ..
            } => {
                let _ = stop.take().map(|s| s.send(()));
                let stats = stats.recv_timeout(Duration::from_secs(10)).ok();
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
                stats
            }
            Inner::Child { mut proc, .. } => {
                proc.stop(Duration::from_secs(10));
                None
            }
        }
    }
}

/// The current frame of `dynamic` over the persister's HTTP API: `GET /o/{dynamic}`
/// redirects to the frame's own address, whose body is the frame.
fn current_frame_http(
    addr: SocketAddr,
    dynamic: &hypergolix::golix::Ghid,
) -> Result<Vec<u8>, String> {
    let (status, head, _) = http_get(addr, &format!("/o/{}", dynamic.as_str()))?;
    if status != 307 {
        return Err(format!("GET /o/{dynamic}: status {status}"));
    }
    let location = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_owned())
        })
        .ok_or("redirect without a location")?;
    let (status, _, body) = http_get(addr, &location)?;
    if status != 200 {
        return Err(format!("GET {location}: status {status}"));
    }
    Ok(body)
}

/// A blocking HTTP/1.1 GET (`Connection: close`): status, header block, body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String, Vec<u8>), String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("persister http: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("persister http: {e}"))?;
    let mut all = Vec::new();
    s.take(16 << 20)
        .read_to_end(&mut all)
        .map_err(|e| format!("persister http: {e}"))?;
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("persister http: no header end")?;
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("persister http: no status")?;
    Ok((status, head, all[end + 4..].to_vec()))
}

/// A publisher thread: set-up now, the updates after `go`.
pub type Publisher = Driver<PubReport>;

/// The report of a publisher whose set-up failed.
pub fn setup_failed(e: String) -> PubReport {
    PubReport {
        first_error: Some(e),
        ..PubReport::default()
    }
}

/// Connects, publishes the identity and the warm-up frame 0 (+ container), then waits for
/// `go` and publishes frames 1..=M on `mode`'s schedule.
pub fn publisher(
    url: String,
    pre: Arc<Presigned>,
    mode: Mode,
    window: usize,
    shared: Arc<Shared>,
) -> Result<Publisher, String> {
    let setup_pre = pre.clone();
    let setup = move || async move {
        let p = &setup_pre;
        let conn = publisher_connection(&url, &p.gidc, &p.frames, &p.containers).await?;
        Ok((conn, ()))
    };
    let run = move |(c, _rx): (PersisterClient, _)| async move {
        let report = drive::drive(mode, window, shared, |seq| {
            let (c, pre) = (c.clone(), pre.clone());
            async move { publish_update(&c, &pre.frames, &pre.containers, seq).await }
        })
        .await;
        c.close();
        report
    };
    let (publisher, ()) = spawn_driver(
        "fanout-publisher",
        Duration::from_secs(60),
        setup,
        run,
        setup_failed,
    )?;
    Ok(publisher)
}
