//! Connections end promptly (issue 15): after a websocket close handshake — started by the
//! client or by the server (`disconnect`, idle or hello timeout, a refused token, a message
//! too large) — the real `hgx-persister` and `hgxd` end the TCP connection with a FIN within
//! [`BOUND`], and a peer that never answers the server's close is cut off too. Idle sockets
//! that never authenticate cannot lock an app with a token out of `hgxd`.
//!
//! Raw TCP clients (`persister_attack_support::RawWs`, `hostile_support::RawWs`) so that the
//! FIN itself is observed (`close_support`).

mod close_support;
mod common;
mod hostile_support;
mod persister_attack_support;
mod proc_support;

use std::time::{Duration, Instant};

use close_support::{assert_fin_within, close_frame, tcp_end, TcpEnd};
use hostile_support::{bin, get, map, request, Got};
use hypergolix::ipc::CapabilityToken;
use hypergolix::persist::wire::{args, Incoming};
use persister_attack_support::{Persister, RawWs, WsIn, WAIT};
use proc_support::{Home, Proc};
use rmpv::Value;

/// How soon after the close handshake the FIN must come (both servers).
const BOUND: Duration = Duration::from_millis(500);

/// Rounds of each client-initiated close (the issue saw 3 of 6 never closed).
const ROUNDS: usize = 6;

// ---- the persister -------------------------------------------------------------------------

/// Answers the server's close frame (the handshake a polite client completes).
async fn answer_close(ws: &mut RawWs) {
    ws.send_raw(&close_frame(1000)).await;
}

/// Reads until the server's close frame; its code.
async fn server_close(ws: &mut RawWs, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.recv(left).await {
            WsIn::Close(code) => return code,
            WsIn::Eof => panic!("EOF before the close frame"),
            WsIn::Silent => panic!("no close frame within {within:?}"),
            _ => {}
        }
    }
}

#[actix_rt::test]
async fn persister_ends_the_connection_promptly_after_a_close() {
    let p = Persister::spawn("  idle_timeout_s: 1\n  max_frame: 65536\n");

    // The client closes.
    for round in 0..ROUNDS {
        let mut ws = RawWs::connect(p.addr).await;
        ws.assert_alive(1).await;
        ws.send_raw(&close_frame(1000)).await;
        let t = Instant::now();
        let code = server_close(&mut ws, WAIT).await;
        assert_eq!(code, Some(1000));
        let end = tcp_end(&mut ws.s, WAIT).await;
        assert_fin_within(
            &format!(
                "persister, client close {round} (close frame after {:?})",
                t.elapsed()
            ),
            end,
            BOUND,
        );
    }

    // The server closes: `disconnect`.
    let mut ws = RawWs::connect(p.addr).await;
    assert!(ws.request(1, "disconnect", ()).await);
    assert!(matches!(ws.reply().await, Incoming::Ok { .. }));
    assert_eq!(server_close(&mut ws, WAIT).await, Some(1000));
    answer_close(&mut ws).await;
    assert_fin_within(
        "persister, disconnect",
        tcp_end(&mut ws.s, WAIT).await,
        BOUND,
    );

    // The server closes: a message over `max_frame`. It is refused at its header; the
    // rest of it is skipped, then the peer's close ends the session at once (a peer whose
    // header lies gets the close grace of 3 s instead).
    let mut ws = RawWs::connect(p.addr).await;
    ws.send_raw(&persister_attack_support::ws_header(2, true, 1 << 20))
        .await;
    assert_eq!(ws.err_code().await, "too_large");
    assert_eq!(server_close(&mut ws, WAIT).await, Some(1009));
    ws.send_raw(&vec![0u8; 1 << 20]).await;
    answer_close(&mut ws).await;
    assert_fin_within(
        "persister, too large",
        tcp_end(&mut ws.s, WAIT).await,
        BOUND,
    );

    // The server closes: idle timeout (1 s); the peer answers, or stays silent (then the
    // server stops waiting for its answer after its close grace of 3 s).
    for answer in [true, false] {
        let mut ws = RawWs::connect(p.addr).await;
        let opened = Instant::now();
        assert_eq!(server_close(&mut ws, WAIT).await, Some(1002));
        let bound = if answer {
            answer_close(&mut ws).await;
            BOUND
        } else {
            Duration::from_secs(3) + BOUND
        };
        let end = tcp_end(&mut ws.s, WAIT).await;
        assert_fin_within(
            &format!(
                "persister, idle timeout, answered: {answer} (open {:?})",
                opened.elapsed()
            ),
            end,
            bound,
        );
    }
    // Other clients were never affected.
    persister_serves(&p).await;
}

/// A fresh connection is served (ping, exists).
async fn persister_serves(p: &Persister) {
    let mut ws = RawWs::connect(p.addr).await;
    ws.assert_alive(7).await;
    assert!(
        ws.request(
            8,
            "exists",
            args::ByGhid {
                ghid: common::fixture(1).ghid()
            }
        )
        .await
    );
    match ws.reply().await {
        Incoming::Ok { ok, .. } => assert_eq!(ok, Value::Boolean(false)),
        other => panic!("{other:?}"),
    }
}

// ---- hgxd ------------------------------------------------------------------------------------

const PASSWORD: &str = "socket close test password";

/// A real `hgxd` (fixture identity 1, no remote) with `process_extra` in its `process:`
/// section; its IPC address and token.
async fn hgxd(
    dir: &std::path::Path,
    process_extra: &str,
) -> (Proc, Home, std::net::SocketAddr, CapabilityToken) {
    let home = Home::with_process_lines(dir.join("home"), "info", "remotes: []\n", process_extra);
    let (proc, port) = home.start(PASSWORD, Some(1)).await;
    let token = CapabilityToken::read_file(&home.path).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    (proc, home, addr, token)
}

/// `hello` with `token` on a fresh upgraded connection; the session.
async fn app(addr: std::net::SocketAddr, token: &CapabilityToken) -> hostile_support::RawWs {
    let (ws, _) = hostile_support::RawWs::hello(addr, token.as_bytes(), None).await;
    ws
}

/// Reads until the daemon's close frame (skipping messages).
async fn daemon_close(ws: &mut hostile_support::RawWs) -> Option<u16> {
    let t = Instant::now();
    loop {
        match ws.recv(WAIT).await {
            Got::Msg(_) => {}
            Got::Closed => return ws.close_code,
            Got::Nothing => panic!("no close within {:?}", t.elapsed()),
        }
    }
}

#[actix_rt::test]
async fn hgxd_ends_the_connection_promptly_after_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, _home, addr, token) = hgxd(dir.path(), "  ipc_hello_timeout_s: 1\n").await;

    // The app closes, after a request (as the authenticated apps did).
    for round in 0..ROUNDS {
        let mut ws = app(addr, &token).await;
        ws.send(&request(1, "whoami", Value::Nil)).await;
        assert!(get(&ws.msg().await, "ok").is_map());
        ws.frame(true, hostile_support::OP_CLOSE, &1000u16.to_be_bytes())
            .await;
        assert_eq!(daemon_close(&mut ws).await, Some(1000), "round {round}");
        assert_fin_within(
            &format!("hgxd, app close {round}"),
            tcp_end(&mut ws.stream, WAIT).await,
            BOUND,
        );
    }

    // The daemon closes: a wrong token (the peer answers the close, or not).
    for answer in [true, false] {
        let mut ws = hostile_support::RawWs::open(addr, None, None)
            .await
            .unwrap();
        ws.send(&request(
            1,
            "hello",
            map(vec![("token", bin(CapabilityToken::generate().as_bytes()))]),
        ))
        .await;
        assert_eq!(daemon_close(&mut ws).await, Some(1008));
        if answer {
            ws.frame(true, hostile_support::OP_CLOSE, &1000u16.to_be_bytes())
                .await;
        }
        assert_fin_within(
            &format!("hgxd, wrong token, answered: {answer}"),
            tcp_end(&mut ws.stream, WAIT).await,
            BOUND,
        );
    }

    // The daemon closes: no hello within 1 s; a silent peer that never answers.
    let mut ws = hostile_support::RawWs::open(addr, None, None)
        .await
        .unwrap();
    let opened = Instant::now();
    assert_eq!(daemon_close(&mut ws).await, Some(1008));
    assert!(opened.elapsed() < Duration::from_secs(1) + BOUND);
    assert_fin_within(
        "hgxd, hello timeout, silent peer",
        tcp_end(&mut ws.stream, WAIT).await,
        BOUND,
    );
}

/// Idle strangers (upgraded, never say `hello`) far over the cap, and plain TCP sockets that
/// never even upgrade: an app with the token still connects and is served at once, the
/// strangers are closed, and the daemon's descriptors come back down.
/// Apps that connect at the same moment (a benchmark's subscribers, a desktop session
/// starting its apps) are all served with the default settings: the cap on connections
/// waiting for `hello` is for strangers, not for a burst of apps that each send `hello` a
/// moment after their upgrade.
#[actix_rt::test]
async fn a_burst_of_apps_connecting_at_once_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, _home, addr, token) = hgxd(dir.path(), "").await;
    let apps = 300;
    // Every app upgrades before any says hello: the widest such a burst can be.
    let mut sessions = Vec::new();
    for _ in 0..apps {
        sessions.push(
            hostile_support::RawWs::open(addr, None, None)
                .await
                .expect("upgrade"),
        );
    }
    for ws in sessions.iter_mut() {
        ws.send(&request(
            0,
            "hello",
            map(vec![("token", bin(token.as_bytes()))]),
        ))
        .await;
    }
    for (i, ws) in sessions.iter_mut().enumerate() {
        let reply = ws.msg().await;
        assert!(get(&reply, "ok").is_map(), "app {i}: hello failed: {reply}");
        ws.send(&request(1, "whoami", Value::Nil)).await;
        assert!(get(&ws.msg().await, "ok").is_map(), "app {i}: whoami");
    }
}

#[actix_rt::test]
async fn idle_strangers_do_not_lock_out_an_app() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _home, addr, token) = hgxd(dir.path(), "  ipc_max_unauthenticated: 8\n").await;
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    let before = fds();
    let strangers = 200;
    let mut idle = Vec::new();
    for _ in 0..strangers {
        idle.push(
            hostile_support::RawWs::open(addr, None, None)
                .await
                .expect("upgrade"),
        );
    }
    // Every stranger but the newest 8 was told to leave, and its connection ended.
    let t = Instant::now();
    let mut closed = 0;
    for ws in idle.iter_mut().take(strangers - 8) {
        match ws.recv(WAIT).await {
            Got::Closed => {}
            other => panic!("a stranger over the cap was not closed: {other:?}"),
        }
        let (end, _) = tcp_end(&mut ws.stream, WAIT).await;
        assert_eq!(end, TcpEnd::Fin);
        closed += 1;
    }
    eprintln!(
        "[strangers] {closed} of {strangers} idle strangers closed within {:?}; fds {before} -> {}",
        t.elapsed(),
        fds()
    );
    // The app with the token is served at once, and its session is not pushed out by
    // strangers arriving after it authenticated.
    let t = Instant::now();
    let mut ws = app(addr, &token).await;
    for _ in 0..20 {
        idle.push(
            hostile_support::RawWs::open(addr, None, None)
                .await
                .expect("upgrade"),
        );
    }
    ws.send(&request(2, "whoami", Value::Nil)).await;
    assert!(get(&ws.msg().await, "ok").is_map());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(idle);
    let deadline = Instant::now() + WAIT;
    // The daemon's own work opens a few descriptors meanwhile (log and sled files come and
    // go); what must not stay is any of the 220 strangers' sockets.
    let slack = 10;
    while fds() > before + slack && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fds() <= before + slack,
        "fds {before} before, {} after",
        fds()
    );
}

/// At most `ipc_max_apps` sessions past `hello`: one more `hello` is answered `limit` and may
/// be tried again on the same connection once an app has left.
#[actix_rt::test]
async fn apps_past_hello_are_bounded_and_a_place_frees_when_one_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, _home, addr, token) = hgxd(dir.path(), "  ipc_max_apps: 3\n").await;
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(app(addr, &token).await);
    }
    let hello = || request(7, "hello", map(vec![("token", bin(token.as_bytes()))]));
    let mut late = hostile_support::RawWs::open(addr, None, None)
        .await
        .expect("upgrade");
    late.send(&hello()).await;
    let reply = late.msg().await;
    assert_eq!(
        get(get(&reply, "err"), "code").as_str(),
        Some("limit"),
        "{reply}"
    );
    // One app leaves: its place frees once its session has ended.
    let mut gone = apps.pop().unwrap();
    gone.frame(true, hostile_support::OP_CLOSE, &1000u16.to_be_bytes())
        .await;
    assert_eq!(daemon_close(&mut gone).await, Some(1000));
    let deadline = Instant::now() + WAIT;
    loop {
        late.send(&hello()).await;
        let reply = late.msg().await;
        if get(&reply, "ok").is_map() {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed: {reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    late.send(&request(8, "whoami", Value::Nil)).await;
    assert!(get(&late.msg().await, "ok").is_map());
}
