//! `HgxLink` and `Obj` against a real IPC server on 127.0.0.1:0 over the in-memory daemon:
//! every op, typed errors, concurrency, events to the right link, the token file, closing.

mod ipc_mock;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hypergolix::actors::api::AppEvent;
use hypergolix::golix::{Algo, Ghid};
use hypergolix::ipc::{CapabilityToken, ClientError, ErrorKind, HgxLink};
use ipc_mock::*;
use rmpv::Value;
use tokio::sync::mpsc;

fn remote(e: ClientError) -> (ErrorKind, String) {
    match e {
        ClientError::Remote(r) => {
            assert_eq!(r.logref.len(), 8, "{r}");
            assert!(!r.message.is_empty());
            (r.kind, r.code)
        }
        other => panic!("expected a daemon error, got {other}"),
    }
}

/// Nothing arrives on `rx` for a while.
async fn quiet(rx: &mut mpsc::UnboundedReceiver<AppEvent>) {
    let got = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
    assert!(got.is_err(), "unexpected event {got:?}");
}

async fn next(rx: &mut mpsc::UnboundedReceiver<AppEvent>) -> AppEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no event within 5 s")
        .expect("event stream ended")
}

#[actix_rt::test]
async fn every_op_round_trips() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let link = HgxLink::connect(&server.url(), &token).await.unwrap();
    let fp = Ghid::new(Algo::SHA512, [0xf1; 64]);
    assert_eq!(link.fingerprint(), fp);
    assert_eq!(link.hello_info().protocol, 1);
    for op in [
        "hello", "whoami", "new", "get", "push", "sync", "freeze", "hold", "discard", "delete",
    ] {
        assert!(link.hello_info().ops.contains_key(op), "{op}");
    }
    let who = link.whoami().await.unwrap();
    assert_eq!((who.fingerprint, who.user_id), (fp, link.user_id()));

    let api = Ghid::new(Algo::DUMMY, [3; 64]);
    let obj = link
        .new_object(b"one".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    assert_eq!(
        (obj.author, obj.api_id, obj.dynamic, obj.private),
        (fp, Some(api), true, false)
    );
    assert_eq!(obj.state, b"one");
    assert_eq!(link.get(obj.ghid).await.unwrap(), obj);

    link.push(obj.ghid, b"two".to_vec(), None).await.unwrap();
    assert_eq!(link.sync(obj.ghid).await.unwrap().state, b"two");

    let frozen = link.freeze(obj.ghid).await.unwrap();
    assert_ne!(frozen, obj.ghid);
    let f = link.get(frozen).await.unwrap();
    assert_eq!((f.dynamic, f.state.as_slice()), (false, &b"two"[..]));
    let e = link.push(frozen, b"x".to_vec(), None).await.unwrap_err();
    assert_eq!(
        remote(e),
        (ErrorKind::LocallyImmutable, "locally_immutable".into())
    );
    let e = link
        .push(obj.ghid, b"x".to_vec(), Some(true))
        .await
        .unwrap_err();
    assert_eq!(remote(e), (ErrorKind::CatOuttaBag, "cat_outta_bag".into()));

    link.hold(obj.ghid).await.unwrap();
    assert!(daemon.is_held(obj.ghid));
    link.discard(obj.ghid).await.unwrap();
    assert!(daemon.trackers(obj.ghid).is_empty());
    link.delete(obj.ghid).await.unwrap();
    assert!(!daemon.exists(obj.ghid));
    let e = link.get(obj.ghid).await.unwrap_err();
    assert_eq!(e.code(), Some("not_found"));
    assert_eq!(remote(e), (ErrorKind::NotFound, "not_found".into()));

    let s = link
        .new_object(b"s".to_vec(), None, false, true)
        .await
        .unwrap();
    assert_eq!((s.dynamic, s.private, s.api_id), (false, true, None));

    // Raw calls: ops newer than the client, and what the daemon says about bad ones.
    let e = link.call("frobnicate", Value::Nil).await.unwrap_err();
    assert_eq!(remote(e), (ErrorKind::UnknownOp, "unknown_op".into()));
    let e = link.call("get", Value::Nil).await.unwrap_err();
    assert_eq!(remote(e).0, ErrorKind::BadArgs);
    let raw = link.call("whoami", Value::Nil).await.unwrap();
    assert!(raw.is_map());

    let ops: Vec<&str> = daemon.calls().iter().map(|c| c.1).collect();
    assert_eq!(
        ops,
        [
            "new", "get", "push", "sync", "freeze", "get", "push", "push", "hold", "discard",
            "delete", "get", "new"
        ]
    );
    server.stop(true).await;
}

#[actix_rt::test]
async fn concurrent_requests_are_matched_by_id() {
    let (server, token) = start(MemDaemon::default()).await;
    let link = HgxLink::connect(&server.url(), &token).await.unwrap();
    let made = join_all((0..32u8).map(|i| {
        let link = link.clone();
        async move {
            (
                i,
                link.new_object(vec![i; 1 + i as usize], None, true, false)
                    .await
                    .unwrap(),
            )
        }
    }))
    .await;
    for (i, obj) in &made {
        assert_eq!(obj.state, vec![*i; 1 + *i as usize]);
    }

    // A slow push does not hold up a get on the same link.
    let ghid = made[0].1.ghid;
    let t0 = Instant::now();
    let slow = async {
        link.push(ghid, SLOW_STATE.to_vec(), None).await.unwrap();
        t0.elapsed()
    };
    let fast = async {
        link.get(ghid).await.unwrap();
        t0.elapsed()
    };
    let (slow, fast) = tokio::join!(slow, fast);
    assert!(fast < SLOW && slow >= SLOW, "fast {fast:?}, slow {slow:?}");
    server.stop(true).await;
}

#[actix_rt::test]
async fn events_reach_the_right_link_and_obj_handles() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let a = HgxLink::connect(&server.url(), &token).await.unwrap();
    let b = HgxLink::connect(&server.url(), &token).await.unwrap();
    let [app_a, app_b] = daemon.connected()[..] else {
        panic!("two apps")
    };
    let (mut ev_a, mut ev_b) = (a.events(), b.events());

    let oa = a.create(b"v1".to_vec(), None, true, false).await.unwrap();
    let ob = b.open(oa.ghid()).await.unwrap();
    assert_eq!(ob.state(), b"v1");
    let updates = Arc::new(AtomicUsize::new(0));
    let deletes = Arc::new(AtomicUsize::new(0));
    {
        let updates = updates.clone();
        ob.on_update(move |view| {
            assert_eq!(view.state, b"v2");
            updates.fetch_add(1, Ordering::SeqCst);
        });
        let deletes = deletes.clone();
        let ghid = oa.ghid();
        ob.on_delete(move |g| {
            assert_eq!(g, ghid);
            deletes.fetch_add(1, Ordering::SeqCst);
        });
    }

    oa.push(b"v2".to_vec()).await.unwrap();
    assert_eq!(oa.state(), b"v2");
    let AppEvent::Update(view) = next(&mut ev_b).await else {
        panic!("not an update")
    };
    assert_eq!((view.ghid, view.state.as_slice()), (oa.ghid(), &b"v2"[..]));
    assert_eq!(ob.state(), b"v2");
    assert_eq!(updates.load(Ordering::SeqCst), 1);
    quiet(&mut ev_a).await;

    let g = |n: u8| Ghid::new(Algo::SHA512, [n; 64]);
    let share = AppEvent::Share {
        ghid: g(1),
        origin: g(2),
        api_id: None,
    };
    assert!(daemon.inject(app_a, share.clone()));
    assert_eq!(next(&mut ev_a).await, share);
    let result = AppEvent::ShareResult {
        ghid: g(3),
        recipient: g(4),
        ok: false,
        status: 7,
    };
    assert!(daemon.inject(app_b, result.clone()));
    assert_eq!(next(&mut ev_b).await, result);
    quiet(&mut ev_a).await;

    oa.delete().await.unwrap();
    assert!(oa.is_dead());
    assert_eq!(next(&mut ev_b).await, AppEvent::Delete(oa.ghid()));
    assert!(ob.is_dead());
    assert_eq!(deletes.load(Ordering::SeqCst), 1);
    quiet(&mut ev_a).await;
    server.stop(true).await;
}

#[actix_rt::test]
async fn connect_home_reads_the_0600_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let (token, path) = CapabilityToken::create_file(dir.path()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "ipc.token is {mode:o}");
    }
    let (server, _) = start_with(MemDaemon::default(), |c| c.token = token.clone()).await;
    let port = server.local_addr().port();
    let link = HgxLink::connect_home(dir.path(), port).await.unwrap();
    link.whoami().await.unwrap();

    // A stale token (the daemon restarted, the app did not re-read) is refused.
    CapabilityToken::create_file(dir.path()).unwrap();
    let e = HgxLink::connect_home(dir.path(), port).await.unwrap_err();
    assert_eq!(remote(e), (ErrorKind::AccessDenied, "access_denied".into()));

    let empty = tempfile::tempdir().unwrap();
    let e = HgxLink::connect_home(empty.path(), port).await.unwrap_err();
    assert!(matches!(e, ClientError::Token(_)), "{e}");
    server.stop(true).await;

    let e = HgxLink::connect(&format!("ws://127.0.0.1:{port}/"), &token)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
}

#[actix_rt::test]
async fn stopping_the_server_ends_the_link() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let link = HgxLink::connect(&server.url(), &token).await.unwrap();
    let mut events = link.events();
    let app = daemon.connected()[0];
    server.stop(true).await;
    daemon.wait_disconnected(app).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
    assert_eq!(ended.ok(), Some(None), "the event stream ends");
    assert!(link.is_closed());
    assert!(matches!(link.whoami().await, Err(ClientError::Closed)));
}

#[actix_rt::test]
async fn oversize_requests_fail_with_too_large() {
    let (server, token) = start_with(MemDaemon::default(), |c| c.max_message = 4096).await;
    let link = HgxLink::connect(&server.url(), &token).await.unwrap();
    let e = link
        .new_object(vec![0; 8000], None, true, false)
        .await
        .unwrap_err();
    assert_eq!(remote(e), (ErrorKind::TooLarge, "too_large".into()));
    assert!(matches!(link.whoami().await, Err(ClientError::Closed)));
    server.stop(true).await;
}

#[actix_rt::test]
async fn dropping_or_closing_the_link_disconnects_the_app() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let link = HgxLink::connect(&server.url(), &token).await.unwrap();
    let obj = link.create(b"x".to_vec(), None, true, false).await.unwrap();
    let app = daemon.connected()[0];
    drop(link);
    // The Obj still holds the connection open.
    obj.sync().await.unwrap();
    drop(obj);
    daemon.wait_disconnected(app).await;

    let link = HgxLink::connect(&server.url(), &token).await.unwrap();
    let app = *daemon.connected().last().unwrap();
    link.close();
    daemon.wait_disconnected(app).await;
    assert!(matches!(link.whoami().await, Err(ClientError::Closed)));
    server.stop(true).await;
}
