//! The daemon core end to end: real persister on 127.0.0.1, real daemons (fixture
//! identities, test-cost scrypt), apps as event channels. Every wait is bounded.

#![allow(dead_code)]

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
async fn updates_reach_other_apps_not_the_pusher_and_delete_reaches_them() {
    let p = Persister::start(None, None);
    let dir = tempfile::tempdir().unwrap();
    let d = create(dir.path(), &[&p.url], 1).await;
    let (a, mut a_rx) = app(&d);
    let (b, mut b_rx) = app(&d);
    let api = Ghid::pseudorandom(hypergolix::golix::Algo::DUMMY);
    let v = d
        .new_object(a, b"v0".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    assert!(v.dynamic && v.author == d.fingerprint() && v.api_id == Some(api));
    let got = d.get_object(b, v.ghid).await.unwrap();
    assert_eq!(got, v);
    for i in 1..=5 {
        let s = format!("v{i}").into_bytes();
        d.push(a, v.ghid, s.clone(), None).await.unwrap();
        assert_eq!(until_state(&mut b_rx, v.ghid, &s).await, vec![s]);
    }
    assert_eq!(
        next_event(&mut a_rx, Duration::from_millis(200)).await,
        None
    );
    d.delete(a, v.ghid).await.unwrap();
    let ev = next_event(&mut b_rx, WAIT).await;
    assert_eq!(ev, Some(AppEvent::Delete(v.ghid)));
    assert_eq!(
        next_event(&mut a_rx, Duration::from_millis(200)).await,
        None
    );
    assert!(matches!(
        d.get_object(b, v.ghid).await,
        Err(DaemonError::NotFound(_))
    ));
    d.shutdown().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn freeze_makes_a_static_snapshot_that_outlives_later_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let d = create(dir.path(), &[], 1).await;
    let (a, _a_rx) = app(&d);
    let (b, _b_rx) = app(&d);
    let v = d
        .new_object(a, b"one".to_vec(), None, true, false)
        .await
        .unwrap();
    d.push(a, v.ghid, b"two".to_vec(), None).await.unwrap();
    let frozen = d.freeze(a, v.ghid).await.unwrap();
    assert_ne!(frozen, v.ghid);
    for s in [&b"three"[..], b"four", b"five"] {
        d.push(a, v.ghid, s.to_vec(), None).await.unwrap();
    }
    let snap = d.get_object(b, frozen).await.unwrap();
    assert_eq!(
        (snap.state.as_slice(), snap.dynamic, snap.ghid),
        (&b"two"[..], false, frozen)
    );
    let err = d.push(b, frozen, b"nope".to_vec(), None).await.unwrap_err();
    assert_eq!(err.code(), "locally_immutable");
    // A static object made directly is just as immutable.
    let s = d
        .new_object(a, b"static".to_vec(), None, false, false)
        .await
        .unwrap();
    assert!(!s.dynamic);
    assert_eq!(
        d.push(a, s.ghid, b"x".to_vec(), None)
            .await
            .unwrap_err()
            .code(),
        "locally_immutable"
    );
    assert_eq!(d.get_object(b, s.ghid).await.unwrap().state, b"static");
    // With zero remotes, sync returns the local state.
    assert_eq!(d.sync(a, v.ghid).await.unwrap().state, b"five");
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discard_only_affects_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let d = create(dir.path(), &[], 1).await;
    let (a, _a_rx) = app(&d);
    let (b, mut b_rx) = app(&d);
    let (c, mut c_rx) = app(&d);
    let v = d
        .new_object(a, b"0".to_vec(), None, true, false)
        .await
        .unwrap();
    d.get_object(b, v.ghid).await.unwrap();
    d.get_object(c, v.ghid).await.unwrap();
    d.discard(b, v.ghid).await.unwrap();
    d.push(a, v.ghid, b"1".to_vec(), None).await.unwrap();
    until_state(&mut c_rx, v.ghid, b"1").await;
    assert_eq!(
        next_event(&mut b_rx, Duration::from_millis(200)).await,
        None
    );
    // Everyone else carries on; the discarding app can come back.
    d.discard(a, v.ghid).await.unwrap();
    d.discard(c, v.ghid).await.unwrap();
    assert_eq!(d.get_object(b, v.ghid).await.unwrap().state, b"1");
    d.push(a, v.ghid, b"2".to_vec(), None).await.unwrap();
    until_state(&mut b_rx, v.ghid, b"2").await;
    d.disconnect_app(b);
    d.push(a, v.ghid, b"3".to_vec(), None).await.unwrap();
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_coalesce_and_all_succeed() {
    let p = Persister::start(None, None);
    let dir = tempfile::tempdir().unwrap();
    let d = create(dir.path(), &[&p.url], 1).await;
    let (a, _a_rx) = app(&d);
    let (b, mut b_rx) = app(&d);
    let v = d
        .new_object(a, b"start".to_vec(), None, true, false)
        .await
        .unwrap();
    d.get_object(b, v.ghid).await.unwrap();
    let pushes = (0..50).map(|i| d.push(a, v.ghid, format!("s{i}").into_bytes(), None));
    for r in futures_util::future::join_all(pushes).await {
        r.unwrap();
    }
    assert_eq!(d.get_object(a, v.ghid).await.unwrap().state, b"s49");
    until_state(&mut b_rx, v.ghid, b"s49").await;
    drained(&d).await;
    let frames = p.frame_counter(&v.ghid).expect("persister has the object");
    assert!(frames < 50, "50 pushes made {frames} frames");
    d.shutdown().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_accounts_objects_are_locally_immutable_but_holdable() {
    let p = Persister::start(None, None);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&p.url], 1).await;
    let d2 = create(d2_dir.path(), &[&p.url], 2).await;
    let (a, _) = app(&d1);
    let (b, _) = app(&d2);
    let v = d1
        .new_object(a, b"mine".to_vec(), None, true, false)
        .await
        .unwrap();
    drained(&d1).await;
    assert_eq!(
        d2.push(b, v.ghid, b"theirs".to_vec(), None)
            .await
            .unwrap_err()
            .code(),
        "locally_immutable"
    );
    assert_eq!(
        d2.delete(b, v.ghid).await.unwrap_err().code(),
        "locally_immutable"
    );
    // Without a share, account 2 cannot read it, but it can hold it.
    assert_eq!(
        d2.get_object(b, v.ghid).await.unwrap_err().code(),
        "unknown_secret"
    );
    assert_eq!(d1.get_object(a, v.ghid).await.unwrap().state, b"mine");
    d2.hold(b, v.ghid).await.unwrap();
    drained(&d2).await;
    // The owner deletes: its other app is told, yet account 2's hold keeps it upstream.
    let (c, mut c_rx) = app(&d1);
    d1.get_object(c, v.ghid).await.unwrap();
    d1.delete(a, v.ghid).await.unwrap();
    assert_eq!(
        next_event(&mut c_rx, WAIT).await,
        Some(AppEvent::Delete(v.ghid))
    );
    drained(&d1).await;
    assert!(p.frame_counter(&v.ghid).is_some(), "held by account 2");
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_machine_of_the_account_follows_every_push_and_its_hold_survives_delete() {
    let p = Persister::start(None, None);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&p.url], 1).await;
    let (a, _a_rx) = app(&d1);
    let v = d1
        .new_object(a, b"p0".to_vec(), None, true, false)
        .await
        .unwrap();
    for i in 1..=3 {
        d1.push(a, v.ghid, format!("p{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    drained(&d1).await;
    // A fresh ghidcache: the account and the object come from the persister.
    let d2 = open(d2_dir.path(), &[&p.url], ids(&d1), 1, "correct horse")
        .await
        .unwrap();
    assert_eq!(
        (d2.user_id(), d2.fingerprint()),
        (d1.user_id(), d1.fingerprint())
    );
    let (b, mut b_rx) = app(&d2);
    get_until(&d2, b, v.ghid, b"p3").await;
    // More pushes than a frame's target vector holds: every one arrives.
    for i in 4..=12 {
        let s = format!("p{i}").into_bytes();
        d1.push(a, v.ghid, s.clone(), None).await.unwrap();
        until_state(&mut b_rx, v.ghid, &s).await;
    }
    // d2 holds; d1 deletes: the object lives on for d2 and its app is not told otherwise.
    d2.hold(b, v.ghid).await.unwrap();
    drained(&d2).await;
    d1.delete(a, v.ghid).await.unwrap();
    drained(&d1).await;
    assert_eq!(
        next_event(&mut b_rx, Duration::from_millis(500)).await,
        None
    );
    assert_eq!(d2.get_object(b, v.ghid).await.unwrap().state, b"p12");
    assert!(
        p.frame_counter(&v.ghid).is_some(),
        "held object survives on the persister"
    );
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_password_is_refused_and_loses_nothing() {
    let p = Persister::start(None, None);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&p.url], 1).await;
    let (a, _) = app(&d1);
    let v = d1
        .new_object(a, b"keep me".to_vec(), None, true, false)
        .await
        .unwrap();
    d1.push(a, v.ghid, b"kept".to_vec(), None).await.unwrap();
    drained(&d1).await;
    d1.shutdown().await.unwrap();
    let account = ids(&d1);
    drop(d1);
    // From the local cache, and from the persister into an empty one.
    for dir in [d1_dir.path(), d2_dir.path()] {
        let err = open(dir, &[&p.url], account, 1, "wrong horse")
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, DaemonError::WrongPassword), "{err}");
    }
    for dir in [d1_dir.path(), d2_dir.path()] {
        let d = open(dir, &[&p.url], account, 1, "correct horse")
            .await
            .unwrap();
        let (a, _) = app(&d);
        assert_eq!(d.get_object(a, v.ghid).await.unwrap().state, b"kept");
        d.shutdown().await.unwrap();
    }
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_machine_opens_objects_made_after_its_login() {
    let p = Persister::start(None, None);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&p.url], 1).await;
    drained(&d1).await;
    let d2 = open(d2_dir.path(), &[&p.url], ids(&d1), 1, "correct horse")
        .await
        .unwrap();
    let (a, _) = app(&d1);
    let (b, mut b_rx) = app(&d2);
    // Made and pushed past a frame's 7 targets while d2 does not track it: d2 opens it from
    // the account state d1 flushed (d2's own is from before the object existed).
    let y = d1
        .new_object(a, b"y0".to_vec(), None, true, false)
        .await
        .unwrap()
        .ghid;
    for i in 1..=9 {
        d1.push(a, y, format!("y{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    drained(&d1).await;
    assert_eq!(d2.get_object(b, y).await.unwrap().state, b"y9");
    // Deleted on d1: d2's tracker is told (through the persister's removal notice).
    d1.delete(a, y).await.unwrap();
    assert_eq!(next_event(&mut b_rx, WAIT).await, Some(AppEvent::Delete(y)));
    assert_eq!(d2.get_object(b, y).await.unwrap_err().code(), "not_found");
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}

/// The daemon's futures can be spawned on any runtime thread.
#[allow(unused)]
fn futures_are_send(d: &DaemonHandle, g: Ghid) {
    fn send<T: Send>(_: T) {}
    send(d.new_object(0, vec![], None, true, false));
    send(d.get_object(0, g));
    send(d.push(0, g, vec![], None));
    send(d.sync(0, g));
    send(d.freeze(0, g));
    send(d.hold(0, g));
    send(d.discard(0, g));
    send(d.delete(0, g));
    send(d.shutdown());
}
