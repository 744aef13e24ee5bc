#![allow(dead_code)]
//! The daemon offline: a persister that goes away and comes back on the same ghidcache and
//! port, a daemon restarted in between, the durable outbox draining, and a tracker on
//! another machine of the account catching up without calling `sync`. Every wait is bounded.
//! (Helpers as in `daemon_core.rs`.)

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hypergolix::actors::account::{derive_root_secret, ScryptParams};
use hypergolix::actors::api::{AppEvent, AppId, ObjectView};
use hypergolix::actors::daemon::{self, DaemonHandle, DaemonOptions, Login};
use hypergolix::actors::error::DaemonError;
use hypergolix::golix::{Ghid, Object, Policy, Secret};
use hypergolix::persist::server::{self, Settings};
use hypergolix::persist::Archive;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

/// A persister on its own thread and actix system.
struct Persister {
    url: String,
    addr: SocketAddr,
    archive: Option<Archive>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Persister {
    fn start(ghidcache: Option<PathBuf>, addr: Option<SocketAddr>) -> Persister {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let mut settings = Settings::local(ghidcache);
                if let Some(a) = addr {
                    settings.addrs = vec![a];
                }
                settings.workers = 1;
                settings.verify_threads = 1;
                let running = server::start(settings).await.expect("persister starts");
                tx.send((
                    running.ws_url(),
                    running.local_addr(),
                    running.archive().clone(),
                ))
                .unwrap();
                let _ = stop_rx.await;
                running.stop().await.expect("persister stops");
            })
        });
        let (url, addr, archive) = rx.recv_timeout(WAIT).expect("persister listening");
        Persister {
            url,
            addr,
            archive: Some(archive),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.archive = None;
        let _ = self.stop.take().map(|s| s.send(()));
        let t = self.thread.take();
        tokio::task::block_in_place(|| {
            if let Some(t) = t {
                t.join().expect("persister thread");
            }
        });
    }

    /// The counter of the persister's current frame of `dynamic`.
    fn frame_counter(&self, dynamic: &Ghid) -> Option<u64> {
        let bytes = self.archive.as_ref()?.get(dynamic).ok()??;
        match Object::decode(&bytes, Policy::STRICT).ok()? {
            Object::Gobd(f) => Some(f.counter),
            _ => None,
        }
    }
}

fn secret(n: usize, password: &str) -> Secret {
    let fp = common::fixture(n).ghid();
    derive_root_secret(password.as_bytes(), &fp, ScryptParams::TEST).unwrap()
}

/// Daemon logs: discarded, or on stderr at `HGX_TEST_LOG` verbosity (e.g. `debug`).
fn log() -> slog::Logger {
    use slog::Drain;
    match std::env::var("HGX_TEST_LOG")
        .ok()
        .and_then(|v| v.parse::<hypergolix::logging::Verbosity>().ok())
    {
        Some(v) => {
            let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
            let drain = slog_term::FullFormat::new(decorator)
                .build()
                .filter_level(v.level())
                .fuse();
            slog::Logger::root(std::sync::Mutex::new(drain).fuse(), slog::o!())
        }
        None => hypergolix::logging::discard(),
    }
}

async fn create(dir: &std::path::Path, remotes: &[&str], n: usize) -> DaemonHandle {
    let opts = DaemonOptions {
        ghidcache: dir.to_path_buf(),
        remotes: remotes.iter().map(|s| s.to_string()).collect(),
        login: Login::Create {
            identity: common::fixture(n),
            root_secret: secret(n, "correct horse"),
        },
    };
    daemon::start_with_log(opts, log())
        .await
        .expect("daemon starts")
}

/// (user id, fingerprint) of a daemon's account.
fn ids(d: &DaemonHandle) -> (Ghid, Ghid) {
    (d.user_id(), d.fingerprint())
}

async fn open(
    dir: &std::path::Path,
    remotes: &[&str],
    ids: (Ghid, Ghid),
    n: usize,
    pw: &str,
) -> Result<DaemonHandle, DaemonError> {
    let opts = DaemonOptions {
        ghidcache: dir.to_path_buf(),
        remotes: remotes.iter().map(|s| s.to_string()).collect(),
        login: Login::Open {
            user_id: ids.0,
            fingerprint: ids.1,
            root_secret: secret(n, pw),
        },
    };
    daemon::start_with_log(opts, log()).await
}

fn app(d: &DaemonHandle) -> (AppId, mpsc::Receiver<AppEvent>) {
    let (tx, rx) = mpsc::channel(256);
    (d.connect_app(tx), rx)
}

/// Waits until every outbox queue of `d` is empty.
async fn drained(d: &DaemonHandle) {
    tokio::time::timeout(WAIT, async {
        while d.outbox_pending().iter().any(|(_, n)| *n > 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("outbox drains");
}

/// The next event, if one comes within `t`.
async fn next_event(rx: &mut mpsc::Receiver<AppEvent>, t: Duration) -> Option<AppEvent> {
    tokio::time::timeout(t, rx.recv()).await.ok().flatten()
}

/// Waits for an update of `ghid` carrying `state`; returns the states seen on the way.
async fn until_state(rx: &mut mpsc::Receiver<AppEvent>, ghid: Ghid, state: &[u8]) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await.expect("events open") {
                AppEvent::Update(v) if v.ghid == ghid => {
                    seen.push(v.state.clone());
                    if v.state == state {
                        return;
                    }
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no update to {:?}; saw {seen:?}",
            String::from_utf8_lossy(state)
        )
    });
    seen
}

/// `get` until the object opens with `state` (another machine's writes take a moment).
async fn get_until(d: &DaemonHandle, a: AppId, ghid: Ghid, state: &[u8]) -> ObjectView {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match d.get_object(a, ghid).await {
            Ok(v) if v.state == state => return v,
            Ok(_) => {
                let _ = d.sync(a, ghid).await;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
            }
            Err(e) => panic!("get {ghid}: {e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "state never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_made_offline_survive_a_restart_and_reach_the_other_machine() {
    let pdir = tempfile::tempdir().unwrap();
    let p = Persister::start(Some(pdir.path().join("ghidcache")), None);
    let (url, addr) = (p.url.clone(), p.addr);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&url], 1).await;
    let account = ids(&d1);
    let (a, _) = app(&d1);
    let x = d1
        .new_object(a, b"v0".to_vec(), None, true, false)
        .await
        .unwrap()
        .ghid;
    drained(&d1).await;
    let d2 = open(d2_dir.path(), &[&url], account, 1, "correct horse")
        .await
        .unwrap();
    let (b, mut b_rx) = app(&d2);
    get_until(&d2, b, x, b"v0").await;

    // The persister goes away: pushes still succeed, locally.
    p.stop();
    for i in 1..=3 {
        d1.push(a, x, format!("v{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    assert!(
        d1.outbox_pending().iter().all(|(_, n)| *n >= 6),
        "{:?}",
        d1.outbox_pending()
    );
    assert!(matches!(
        d1.sync(a, x).await,
        Err(DaemonError::UnavailableUpstream(_))
    ));

    // Restart the daemon in the middle (login from the local cache; still offline).
    d1.shutdown().await.unwrap();
    drop(d1);
    let d1 = open(d1_dir.path(), &[&url], account, 1, "correct horse")
        .await
        .unwrap();
    let (a, _) = app(&d1);
    assert_eq!(d1.get_object(a, x).await.unwrap().state, b"v3");
    for i in 4..=5 {
        d1.push(a, x, format!("v{i}").into_bytes(), None)
            .await
            .unwrap();
    }

    // The persister comes back on the same ghidcache and port: the outbox drains, and the
    // other machine's tracker catches up on its own.
    let p = Persister::start(Some(pdir.path().join("ghidcache")), Some(addr));
    drained(&d1).await;
    until_state(&mut b_rx, x, b"v5").await;
    assert_eq!(p.frame_counter(&x), Some(5));
    assert_eq!(d1.get_object(a, x).await.unwrap().state, b"v5");
    assert_eq!(d2.get_object(b, x).await.unwrap().state, b"v5");
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}
