//! The IPC server at the frame level: a real server on 127.0.0.1:0 over the in-memory
//! daemon, driven by a raw websocket. Access control, tolerant decoding, error replies,
//! limits, concurrency, event forwarding and disconnect.

mod ipc_mock;

use std::time::{Duration, Instant};

use hypergolix::actors::api::{AppEvent, ObjectView};
use hypergolix::golix::{Algo, Ghid};
use hypergolix::ipc::CapabilityToken;
use ipc_mock::*;
use rmpv::Value;

#[actix_rt::test]
async fn hello_is_required_first() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let mut c = RawConn::open(&server.url()).await;

    c.send(request(1, "whoami", Value::Nil)).await;
    let r = c.recv_msg().await;
    assert_eq!(get(&r, "id"), &Value::from(1));
    assert_eq!(err_code(&r), Some("access_denied"));
    // Even an unknown op is refused before hello, and the session stays up.
    c.send(request(2, "frobnicate", Value::Nil)).await;
    assert_eq!(err_code(&c.recv_msg().await), Some("access_denied"));
    assert!(daemon.calls().is_empty());
    assert!(daemon.connected().is_empty());

    c.send(request(
        3,
        "hello",
        map(vec![("token", bin(token.as_bytes()))]),
    ))
    .await;
    let r = c.recv_msg().await;
    assert_eq!(get(&r, "id"), &Value::from(3));
    let ok = get(&r, "ok");
    assert_eq!(get(ok, "protocol"), &Value::from(1));
    assert_eq!(
        get(ok, "fingerprint"),
        &ghid_value(&Ghid::new(Algo::SHA512, [0xf1; 64]))
    );
    assert_eq!(
        get(ok, "user_id"),
        &ghid_value(&Ghid::new(Algo::SHA512, [0x0d; 64]))
    );
    let new = get(get(ok, "ops"), "new");
    assert_eq!(
        get(new, "args"),
        &Value::Array(vec![
            "state".into(),
            "api_id".into(),
            "dynamic".into(),
            "private".into()
        ])
    );
    assert_eq!(get(get(new, "defaults"), "dynamic"), &Value::Boolean(true));
    assert_eq!(get(ok, "events").as_array().unwrap().len(), 5);
    assert_eq!(daemon.connected().len(), 1);

    c.send(request(4, "whoami", Value::Nil)).await;
    let r = c.recv_msg().await;
    assert_eq!(
        get(get(&r, "ok"), "user_id"),
        &ghid_value(&Ghid::new(Algo::SHA512, [0x0d; 64]))
    );
    server.stop(true).await;
}

#[actix_rt::test]
async fn wrong_or_missing_token_is_denied_and_closes() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let mut wrong = token.as_bytes().to_vec();
    wrong[31] ^= 1;
    let cases = [
        map(vec![("token", bin(&wrong))]),
        map(vec![("token", bin(&token.as_bytes()[..31]))]),
        map(vec![("client", Value::from("no token"))]),
        Value::Nil,
        map(vec![("token", Value::from(5))]),
    ];
    for args in cases {
        let mut c = RawConn::open(&server.url()).await;
        c.send(request(9, "hello", args.clone())).await;
        let seen = c.expect_closed().await;
        assert_eq!(seen.len(), 1, "{args}: {seen:?}");
        assert_eq!(get(&seen[0], "id"), &Value::from(9));
        assert_eq!(err_code(&seen[0]), Some("access_denied"), "{args}");
        assert!(!get(get(&seen[0], "err"), "logref")
            .as_str()
            .unwrap()
            .is_empty());
    }
    assert!(daemon.connected().is_empty());
    assert!(daemon.disconnected().is_empty());

    // The hex form of the right token is tolerated.
    let mut c = RawConn::open(&server.url()).await;
    c.send(request(
        1,
        "hello",
        map(vec![("token", Value::from(token.to_hex()))]),
    ))
    .await;
    assert!(get(&c.recv_msg().await, "ok").is_map());
    server.stop(true).await;
}

#[actix_rt::test]
async fn browser_origins_are_refused_unless_allowed() {
    let (server, token) = start(MemDaemon::default()).await;
    let url = server.url();
    let refused = RawConn::try_open(&url, Some("http://evil.example"))
        .await
        .err();
    assert_eq!(refused.as_deref(), Some("403"));
    let refused = RawConn::try_open(&url, Some("null")).await.err();
    assert_eq!(refused.as_deref(), Some("403"));
    for origin in ["http://localhost:3000", "HTTP://LocalHost:3000/"] {
        let mut c = RawConn::try_open(&url, Some(origin))
            .await
            .expect("allowed origin");
        c.send(request(
            1,
            "hello",
            map(vec![("token", bin(token.as_bytes()))]),
        ))
        .await;
        assert!(get(&c.recv_msg().await, "ok").is_map());
    }
    // `/ws` is the same endpoint.
    let ws_url = format!("ws://{}/ws", server.local_addr());
    let (mut c, _) = RawConn::hello(&ws_url, &token).await;
    c.send(request(2, "whoami", Value::Nil)).await;
    assert!(get(&c.recv_msg().await, "ok").is_map());
    server.stop(true).await;
}

#[actix_rt::test]
async fn malformed_unknown_and_bad_args_keep_the_session() {
    let (server, token) = start(MemDaemon::default()).await;
    let (mut c, _) = RawConn::hello(&server.url(), &token).await;

    // Not msgpack at all; truncated; trailing bytes; not a map.
    for junk in [
        vec![0xc1],
        vec![0x82, 0xa2],
        [request(1, "whoami", Value::Nil), vec![0]].concat(),
        vec![0x93, 1, 2, 3],
    ] {
        c.send(junk).await;
        let r = c.recv_msg().await;
        assert_eq!(err_code(&r), Some("malformed"), "{r}");
        assert_eq!(get(&r, "id"), &Value::Nil);
    }
    // A map without `op` keeps its id.
    c.send(encode(&map(vec![("id", Value::from(5))]))).await;
    let r = c.recv_msg().await;
    assert_eq!(
        (err_code(&r), get(&r, "id")),
        (Some("malformed"), &Value::from(5))
    );
    // Text frames are not the protocol.
    c.send_text("{\"id\": 1}").await;
    assert_eq!(err_code(&c.recv_msg().await), Some("malformed"));

    c.send(request(6, "frobnicate", map(vec![("x", Value::from(1))])))
        .await;
    let r = c.recv_msg().await;
    assert_eq!(
        (err_code(&r), get(&r, "id")),
        (Some("unknown_op"), &Value::from(6))
    );

    let bad = [
        ("get", Value::Nil),
        ("get", map(vec![("ghid", bin(&[1, 2, 3]))])),
        ("new", map(vec![("dynamic", Value::Boolean(true))])),
        (
            "new",
            map(vec![("state", bin(b"x")), ("private", Value::from("yes"))]),
        ),
        ("push", Value::from("not a map")),
    ];
    for (i, (op, args)) in bad.into_iter().enumerate() {
        c.send(request(10 + i as u64, op, args)).await;
        let r = c.recv_msg().await;
        assert_eq!(err_code(&r), Some("bad_args"), "{op}: {r}");
        assert_eq!(get(&r, "id"), &Value::from(10 + i as u64));
        assert!(!get(get(&r, "err"), "message").as_str().unwrap().is_empty());
    }

    // Still alive: unknown fields are ignored, defaults are filled server-side.
    let args = map(vec![
        ("state", bin(b"hi")),
        ("from_the_future", Value::from(1)),
        ("dynamic", Value::Nil),
    ]);
    c.send(request(20, "new", args)).await;
    let r = c.recv_msg().await;
    let obj = get(&r, "ok");
    assert_eq!(get(obj, "state"), &bin(b"hi"));
    assert_eq!(get(obj, "dynamic"), &Value::Boolean(true));
    assert_eq!(get(obj, "private"), &Value::Boolean(false));
    assert_eq!(get(obj, "api_id"), &Value::Nil);
    assert_eq!(get(obj, "ghid").as_slice().map(<[u8]>::len), Some(65));
    server.stop(true).await;
}

#[actix_rt::test]
async fn daemon_errors_carry_codes_and_logrefs_in_the_log() {
    let logs = LogCapture::default();
    let log = slog::Logger::root(slog::Fuse(logs.clone()), slog::o!());
    let (server, token) = start_with(MemDaemon::default(), |c| c.log = log).await;
    let (mut c, _) = RawConn::hello(&server.url(), &token).await;
    let missing = Ghid::new(Algo::SHA512, [0x42; 64]);
    c.send(request(1, "get", map(vec![("ghid", ghid_value(&missing))])))
        .await;
    let r = c.recv_msg().await;
    assert_eq!(err_code(&r), Some("not_found"));
    let logref = get(get(&r, "err"), "logref").as_str().unwrap().to_owned();
    assert_eq!(logref.len(), 8);
    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("logref={logref}")) && l.contains("code=not_found")),
        "{lines:#?}"
    );
    server.stop(true).await;
}

#[actix_rt::test]
async fn a_panicking_daemon_call_gets_internal_and_the_session_continues() {
    let (server, token) = start(MemDaemon::default()).await;
    let (mut c, _) = RawConn::hello(&server.url(), &token).await;
    c.send(request(
        7,
        "get",
        map(vec![("ghid", ghid_value(&panic_ghid()))]),
    ))
    .await;
    let r = c.recv_msg().await;
    assert_eq!(
        (err_code(&r), get(&r, "id")),
        (Some("internal"), &Value::from(7))
    );
    c.send(request(8, "whoami", Value::Nil)).await;
    assert!(get(&c.recv_msg().await, "ok").is_map());
    server.stop(true).await;
}

#[actix_rt::test]
async fn oversize_messages_get_too_large_and_close() {
    let (server, token) = start_with(MemDaemon::default(), |c| c.max_message = 4096).await;
    let (mut c, hello) = RawConn::hello(&server.url(), &token).await;
    assert_eq!(get(get(&hello, "ok"), "max_message"), &Value::from(4096));
    // Just under the limit is fine.
    let state = vec![7u8; 3900];
    c.send(request(1, "new", map(vec![("state", bin(&state))])))
        .await;
    assert!(get(&c.recv_msg().await, "ok").is_map());
    c.send(request(2, "new", map(vec![("state", bin(&[7u8; 5000]))])))
        .await;
    let seen = c.expect_closed().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(err_code(&seen[0]), Some("too_large"));
    server.stop(true).await;
}

#[actix_rt::test]
async fn requests_run_concurrently_and_replies_carry_their_ids() {
    let (server, token) = start(MemDaemon::default()).await;
    let (mut c, _) = RawConn::hello(&server.url(), &token).await;
    c.send(request(1, "new", map(vec![("state", bin(b"v0"))])))
        .await;
    let obj = get(&c.recv_msg().await, "ok").clone();
    let ghid = get(&obj, "ghid").clone();

    let t0 = Instant::now();
    c.send(request(
        100,
        "push",
        map(vec![("ghid", ghid.clone()), ("state", bin(SLOW_STATE))]),
    ))
    .await;
    c.send(request(101, "get", map(vec![("ghid", ghid.clone())])))
        .await;
    let first = c.recv_msg().await;
    assert_eq!(
        get(&first, "id"),
        &Value::from(101),
        "the get waited for the slow push"
    );
    assert!(t0.elapsed() < SLOW, "get took {:?}", t0.elapsed());
    assert_eq!(get(get(&first, "ok"), "state"), &bin(b"v0"));
    let second = c.recv_msg().await;
    assert_eq!(get(&second, "id"), &Value::from(100));
    assert_eq!(get(&second, "ok"), &Value::Nil);
    assert!(t0.elapsed() >= SLOW);
    server.stop(true).await;
}

#[actix_rt::test]
async fn events_go_to_their_session_only() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let (mut a, _) = RawConn::hello(&server.url(), &token).await;
    let (mut b, _) = RawConn::hello(&server.url(), &token).await;
    let apps = daemon.connected();
    assert_eq!(apps.len(), 2);
    let (app_a, app_b) = (apps[0], apps[1]);

    let g = |n: u8| Ghid::new(Algo::SHA512, [n; 64]);
    let api = Ghid::new(Algo::DUMMY, [9; 64]);
    assert!(daemon.inject(
        app_a,
        AppEvent::Share {
            ghid: g(1),
            origin: g(2),
            api_id: Some(api)
        }
    ));
    assert!(daemon.inject(
        app_b,
        AppEvent::ShareResult {
            ghid: g(3),
            recipient: g(4),
            ok: true,
            status: 0
        }
    ));
    assert!(daemon.inject(app_a, AppEvent::Delete(g(5))));

    let ev = a.recv_msg().await;
    assert_eq!(get(&ev, "event").as_str(), Some("share"));
    let data = get(&ev, "data");
    assert_eq!(
        (get(data, "ghid"), get(data, "origin")),
        (&ghid_value(&g(1)), &ghid_value(&g(2)))
    );
    assert_eq!(get(data, "api_id"), &ghid_value(&api));
    let ev = a.recv_msg().await;
    assert_eq!(get(&ev, "event").as_str(), Some("delete"));
    assert_eq!(get(get(&ev, "data"), "ghid"), &ghid_value(&g(5)));

    let ev = b.recv_msg().await;
    assert_eq!(get(&ev, "event").as_str(), Some("share_result"));
    let data = get(&ev, "data");
    assert_eq!(
        (get(data, "recipient"), get(data, "ok")),
        (&ghid_value(&g(4)), &Value::Boolean(true))
    );
    assert!(
        b.recv_within(Duration::from_millis(200)).await.is_none(),
        "b got a's events"
    );

    // A real update through the daemon: b tracks, a pushes; only b hears of it.
    a.send(request(1, "new", map(vec![("state", bin(b"one"))])))
        .await;
    let ghid = get(get(&a.recv_msg().await, "ok"), "ghid").clone();
    b.send(request(1, "get", map(vec![("ghid", ghid.clone())])))
        .await;
    assert!(get(&b.recv_msg().await, "ok").is_map());
    a.send(request(
        2,
        "push",
        map(vec![("ghid", ghid.clone()), ("state", bin(b"two"))]),
    ))
    .await;
    assert_eq!(get(&a.recv_msg().await, "id"), &Value::from(2));
    let ev = b.recv_msg().await;
    assert_eq!(get(&ev, "event").as_str(), Some("update"));
    assert_eq!(get(get(&ev, "data"), "state"), &bin(b"two"));
    assert!(
        a.recv_within(Duration::from_millis(200)).await.is_none(),
        "the pusher got its update"
    );
    server.stop(true).await;
}

#[actix_rt::test]
async fn disconnect_releases_the_app() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let (mut c, _) = RawConn::hello(&server.url(), &token).await;
    c.send(request(1, "new", map(vec![("state", bin(b"x"))])))
        .await;
    let ghid = get(get(&c.recv_msg().await, "ok"), "ghid").clone();
    let ghid = Ghid::from_bytes(ghid.as_slice().unwrap()).unwrap();
    let app = daemon.connected()[0];
    assert_eq!(daemon.trackers(ghid), [app]);

    // Close with a slow request in flight: the app is disconnected after it finished.
    c.send(request(
        2,
        "push",
        map(vec![
            ("ghid", ghid_value(&ghid)),
            ("state", bin(SLOW_STATE)),
        ]),
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.close().await;
    daemon.wait_disconnected(app).await;
    let calls = daemon.calls();
    assert_eq!(calls.last(), Some(&(app, "push")));
    assert!(daemon.connected().is_empty());
    assert!(daemon.trackers(ghid).is_empty());

    // A connection that never said hello is never connected nor disconnected.
    let c = RawConn::open(&server.url()).await;
    c.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(daemon.disconnected(), [app]);
    server.stop(true).await;
}

#[actix_rt::test]
async fn silent_connections_are_closed_after_the_hello_timeout() {
    let (server, _token) = start_with(MemDaemon::default(), |c| {
        c.hello_timeout = Duration::from_millis(200)
    })
    .await;
    let mut c = RawConn::open(&server.url()).await;
    let t0 = Instant::now();
    assert!(c.expect_closed().await.is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(150));
    server.stop(true).await;
}

#[actix_rt::test]
async fn stopping_the_server_disconnects_apps() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let (mut c, _) = RawConn::hello(&server.url(), &token).await;
    let app = daemon.connected()[0];
    server.stop(true).await;
    c.expect_closed().await;
    daemon.wait_disconnected(app).await;
    let _ = CapabilityToken::generate();
}

#[actix_rt::test]
async fn daemon_spawns_land_on_the_serving_runtime() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let (mut c, _) = RawConn::hello(&server.url(), &token).await;
    c.send(request(1, "new", map(vec![("state", bin(b"x"))])))
        .await;
    let ghid = get(get(&c.recv_msg().await, "ok"), "ghid").clone();
    c.send(request(2, "hold", map(vec![("ghid", ghid)]))).await;
    assert_eq!(get(&c.recv_msg().await, "ok"), &Value::Nil);
    let here = std::thread::current().id();
    let [(polled, spawned)] = daemon.hold_threads()[..] else {
        panic!("one hold")
    };
    assert_ne!(polled, here, "requests are served on an IPC worker thread");
    assert_eq!(
        spawned, here,
        "the daemon's tokio::spawn landed on the IPC worker"
    );
    server.stop(true).await;
}

#[actix_rt::test]
async fn strangers_cannot_send_big_messages_before_hello() {
    let (server, token) = start(MemDaemon::default()).await;
    let mut c = RawConn::open(&server.url()).await;
    let big = map(vec![
        ("token", bin(token.as_bytes())),
        ("padding", bin(&[0; 70_000])),
    ]);
    c.send(request(1, "hello", big.clone())).await;
    let seen = c.expect_closed().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(err_code(&seen[0]), Some("too_large"));
    // After hello, the same message is fine.
    let (mut c, _) = RawConn::hello(&server.url(), &token).await;
    c.send(request(2, "hello", big)).await;
    assert!(get(&c.recv_msg().await, "ok").is_map());
    c.send(request(3, "new", map(vec![("state", bin(&[1; 1 << 20]))])))
        .await;
    assert_eq!(
        get(get(&c.recv_msg().await, "ok"), "state")
            .as_slice()
            .map(<[u8]>::len),
        Some(1 << 20)
    );
    server.stop(true).await;
}

#[actix_rt::test]
async fn an_app_that_leaves_its_events_unread_is_closed_at_its_inbox_bound() {
    let logs = LogCapture::default();
    let log = slog::Logger::root(slog::Fuse(logs.clone()), slog::o!());
    let daemon = MemDaemon::default();
    let (server, token) = start_with(daemon.clone(), |c| c.log = log).await;
    let (mut c, _) = RawConn::hello(&server.url(), &token).await;
    let app = daemon.connected()[0];
    // 1 MiB states of distinct objects (nothing coalesces), and the app reads nothing: the
    // session hands 32 MiB to the writer, then the inbox keeps up to 64 MiB, then closes.
    const SENT: u8 = 200;
    let state = vec![7u8; 1 << 20];
    for n in 0..SENT {
        let ghid = Ghid::new(Algo::SHA512, [n; 64]);
        let view = ObjectView {
            ghid,
            author: ghid,
            api_id: None,
            dynamic: true,
            private: false,
            state: state.clone(),
        };
        assert!(daemon.inject(app, AppEvent::Update(view)));
    }
    let closed_inbox = |lines: &[String]| {
        lines
            .iter()
            .any(|l| l.contains("app does not read its events; closing its inbox"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !closed_inbox(&logs.lines()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed_inbox(&logs.lines()), "{:#?}", logs.lines());
    // The app reads again: what the session had handed over, then the close.
    let seen = c.expect_closed().await;
    assert!(
        !seen.is_empty() && seen.len() < SENT as usize,
        "{} events before the close",
        seen.len()
    );
    assert!(seen
        .iter()
        .all(|e| get(e, "event").as_str() == Some("update")));
    daemon.wait_disconnected(app).await;
    assert!(logs
        .lines()
        .iter()
        .any(|l| l.contains("app did not read its events; closing")));
    server.stop(true).await;
}
