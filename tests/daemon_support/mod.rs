//! Shared harness of the daemon tests: a real persister on its own thread and actix system,
//! daemons made from fixture identities with test-cost scrypt, apps as event channels, and
//! bounded waits.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

pub use std::net::SocketAddr;
pub use std::path::PathBuf;
pub use std::time::Duration;

use std::sync::OnceLock;

use hypergolix::actors::arbiters::ActorThreads;

pub use hypergolix::actors::account::{derive_root_secret, ScryptParams};
pub use hypergolix::actors::api::{AppEvent, AppId, ObjectView};
pub use hypergolix::actors::daemon::{self, DaemonHandle, DaemonOptions, Login};
pub use hypergolix::actors::error::DaemonError;
pub use hypergolix::actors::inbox::Inbox;
pub use hypergolix::golix::{Ghid, Object, Policy, Secret};
pub use hypergolix::persist::server::{self, Settings};
pub use hypergolix::persist::Archive;

pub const WAIT: Duration = Duration::from_secs(20);

/// A persister on its own thread and actix system.
pub struct Persister {
    pub url: String,
    pub addr: SocketAddr,
    pub archive: Option<Archive>,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl Persister {
    pub fn start(ghidcache: Option<PathBuf>, addr: Option<SocketAddr>) -> Persister {
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

    pub fn stop(mut self) {
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
    pub fn frame_counter(&self, dynamic: &Ghid) -> Option<u64> {
        let bytes = self.archive.as_ref()?.get(dynamic).ok()??;
        match Object::decode(&bytes, Policy::STRICT).ok()? {
            Object::Gobd(f) => Some(f.counter),
            _ => None,
        }
    }
}

pub fn secret(n: usize, password: &str) -> Secret {
    let fp = common::fixture(n).ghid();
    derive_root_secret(password.as_bytes(), &fp, ScryptParams::TEST).unwrap()
}

/// Daemon logs: discarded, or on stderr at `HGX_TEST_LOG` verbosity (e.g. `debug`).
pub fn log() -> slog::Logger {
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

pub async fn create(dir: &std::path::Path, remotes: &[&str], n: usize) -> DaemonHandle {
    let opts = DaemonOptions {
        ghidcache: dir.to_path_buf(),
        remotes: remotes.iter().map(|s| (*s).into()).collect(),
        cache_capacity: hypergolix::config::DEFAULT_DAEMON_CACHE,
        share_limits: Default::default(),
        wal_move_every: hypergolix::persist::store::WAL_MOVE_EVERY,
        login: Login::Create {
            identity: common::fixture(n),
            root_secret: secret(n, "correct horse"),
        },
    };
    daemon::start_with_log(opts, log())
        .await
        .expect("daemon starts")
}

/// Fixture identity `n` (its private keys).
pub fn fixture(n: usize) -> hypergolix::golix::FirstParty {
    common::fixture(n)
}

/// (user id, fingerprint) of a daemon's account.
pub fn ids(d: &DaemonHandle) -> (Ghid, Ghid) {
    (d.user_id(), d.fingerprint())
}

pub async fn open(
    dir: &std::path::Path,
    remotes: &[&str],
    ids: (Ghid, Ghid),
    n: usize,
    pw: &str,
) -> Result<DaemonHandle, DaemonError> {
    let opts = DaemonOptions {
        ghidcache: dir.to_path_buf(),
        remotes: remotes.iter().map(|s| (*s).into()).collect(),
        cache_capacity: hypergolix::config::DEFAULT_DAEMON_CACHE,
        share_limits: Default::default(),
        wal_move_every: hypergolix::persist::store::WAL_MOVE_EVERY,
        login: Login::Open {
            user_id: ids.0,
            fingerprint: ids.1,
            root_secret: secret(n, pw),
        },
    };
    daemon::start_with_log(opts, log()).await
}

/// Where the tests' app inboxes run: these tests drive the daemon from plain tokio, with no
/// actix arbiter of their own.
fn inbox_threads() -> &'static ActorThreads {
    static THREADS: OnceLock<ActorThreads> = OnceLock::new();
    THREADS.get_or_init(|| ActorThreads::start(1).expect("inbox thread"))
}

/// A new app session of `d` and its inbox.
pub fn app(d: &DaemonHandle) -> (AppId, Inbox) {
    let inbox = Inbox::start_in(&inbox_threads().next(), log());
    (d.connect_app(inbox.sender()), inbox)
}

/// Waits until every outbox queue of `d` is empty.
pub async fn drained(d: &DaemonHandle) {
    tokio::time::timeout(WAIT, async {
        while d.outbox_pending().iter().any(|(_, n)| *n > 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("outbox drains");
}

/// The next event, if one comes within `t`.
pub async fn next_event(rx: &mut Inbox, t: Duration) -> Option<AppEvent> {
    tokio::time::timeout(t, rx.recv())
        .await
        .ok()
        .and_then(|r| r.ok())
}

/// Waits for an update of `ghid` carrying `state`; returns the states seen on the way.
pub async fn until_state(rx: &mut Inbox, ghid: Ghid, state: &[u8]) -> Vec<Vec<u8>> {
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
pub async fn get_until(d: &DaemonHandle, a: AppId, ghid: Ghid, state: &[u8]) -> ObjectView {
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
