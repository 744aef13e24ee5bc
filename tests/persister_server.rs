//! The persister end to end: the real server (in-process on 127.0.0.1:0, and the real
//! binary) exercised through the Rust client and plain HTTP. Every loop is bounded and every
//! wait has a timeout.

mod common;
mod tls_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypergolix::golix::{
    FirstParty, Gdxx, Geoc, Ghid, Gobd, Object, Policy, Secret, DEFAULT_LEGROOM,
};
use hypergolix::persist::client::{
    ClientError, ConnectFailure, Notification, Notifications, PersisterClient,
};
use hypergolix::persist::server::{self, Running, Settings};

const WAIT: Duration = Duration::from_secs(10);

async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Running {
    let mut s = Settings::local(None);
    s.workers = 2;
    tweak(&mut s);
    server::start(s).await.expect("server starts")
}

async fn start() -> Running {
    start_with(|_| {}).await
}

async fn connect(r: &Running) -> (PersisterClient, Notifications) {
    PersisterClient::connect(&r.ws_url())
        .await
        .expect("client connects")
}

async fn next(rx: &mut Notifications) -> Notification {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a notification in time")
        .expect("connection open")
}

/// Asserts nothing arrives for a short while (after a round trip has flushed the server).
async fn nothing(rx: &mut Notifications) {
    if let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("unexpected notification {n:?}");
    }
}

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> String {
    match r {
        Err(e) => e.code().unwrap_or("<not a server error>").to_owned() + &format!(" ({e})"),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn assert_code(r: Result<impl std::fmt::Debug, ClientError>, want: &str) {
    let got = code(r);
    assert!(
        got.starts_with(&format!("{want} ")),
        "wanted {want}, got {got}"
    );
}

/// A dynamic object of `n` frames by `a`: (frames, containers), pre-signed.
fn dynamic(a: &FirstParty, n: usize) -> (Vec<Gobd>, Vec<Geoc>) {
    let secret = Secret::random();
    let c0 = a.make_container(b"state 0", &secret).unwrap();
    let mut frames = vec![a.make_bind_dynamic(c0.ghid).unwrap()];
    let mut containers = vec![c0];
    for i in 1..n {
        let c = a
            .make_container(format!("state {i}").as_bytes(), &secret)
            .unwrap();
        let f = a
            .make_next_frame(&frames[i - 1], c.ghid, DEFAULT_LEGROOM)
            .unwrap();
        frames.push(f);
        containers.push(c);
    }
    (frames, containers)
}

/// A server; a publisher that has stored `a`'s identity; a subscriber to `a`'s dynamic
/// object of `n` frames and containers (made, not published yet).
struct Subscribed {
    r: Running,
    up: PersisterClient,
    _up_rx: Notifications,
    sub: PersisterClient,
    sub_rx: Notifications,
    frames: Vec<Gobd>,
    containers: Vec<Geoc>,
}

async fn subscribed(a: &FirstParty, n: usize) -> Subscribed {
    subscribed_with(a, n, |_| {}).await
}

async fn subscribed_with(
    a: &FirstParty,
    n: usize,
    tweak: impl FnOnce(&mut Settings),
) -> Subscribed {
    let r = start_with(tweak).await;
    let (up, _up_rx) = connect(&r).await;
    let (sub, sub_rx) = connect(&r).await;
    up.publish(&gidc(a)).await.unwrap();
    let (frames, containers) = dynamic(a, n);
    sub.subscribe(&frames[0].dynamic).await.unwrap();
    Subscribed {
        r,
        up,
        _up_rx,
        sub,
        sub_rx,
        frames,
        containers,
    }
}

/// Reads notified frames until the one of `counter`, each newer than the one before.
async fn frames_in_order_until(rx: &mut Notifications, counter: u64) {
    let mut last = None;
    while last != Some(counter) {
        let Object::Gobd(f) = decode(&next(rx).await.object) else {
            panic!("not a frame");
        };
        assert!(last < Some(f.counter), "frames in order");
        last = Some(f.counter);
    }
}

/// `n` more frames of the object whose last frame is `last` (fresh containers).
fn dynamic_after(a: &FirstParty, last: &Gobd, n: usize) -> (Vec<Gobd>, Vec<Geoc>) {
    let secret = Secret::random();
    let (mut frames, mut containers) = (Vec::new(), Vec::new());
    for i in 0..n {
        let c = a
            .make_container(format!("more {i}").as_bytes(), &secret)
            .unwrap();
        let prev = frames.last().unwrap_or(last);
        let next = a.make_next_frame(prev, c.ghid, DEFAULT_LEGROOM).unwrap();
        frames.push(next);
        containers.push(c);
    }
    (frames, containers)
}

fn gidc(a: &FirstParty) -> Vec<u8> {
    a.gidc().encode()
}

fn decode(b: &[u8]) -> Object {
    Object::decode(b, Policy::STRICT).expect("valid golix")
}

#[actix_rt::test]
async fn every_op_round_trips() {
    let r = start().await;
    let (c, mut rx) = connect(&r).await;
    let a = common::fixture(1);

    let hello = c.hello().await.unwrap();
    assert_eq!(hello.protocol, 1);
    assert_eq!(hello.events, vec!["notify".to_owned()]);
    for op in [
        "hello",
        "ping",
        "publish",
        "get",
        "subscribe",
        "unsubscribe",
        "list_subscriptions",
        "list_bindings",
        "query_debinding",
        "exists",
        "disconnect",
    ] {
        assert!(hello.ops.contains_key(op), "op table lists {op}");
    }
    assert_eq!(hello.ops["publish"].args, vec!["object".to_owned()]);
    assert_eq!(hello.limits.max_frame, 16 * 1024 * 1024);
    c.ping().await.unwrap();

    let id = gidc(&a);
    let ack = c.publish(&id).await.unwrap();
    assert_eq!(
        (ack.ghid, ack.kind.as_str(), ack.new),
        (a.ghid(), "gidc", true)
    );
    assert!(
        !c.publish(&id).await.unwrap().new,
        "publishing is idempotent"
    );
    assert!(c.exists(&a.ghid()).await.unwrap());
    assert_eq!(c.get(&a.ghid()).await.unwrap(), Bytes::from(id));

    // A static object: binding, then container.
    let secret = Secret::random();
    let geoc = a.make_container(b"hello", &secret).unwrap();
    let gobs = a.make_bind_static(geoc.ghid).unwrap();
    c.publish(&gobs.encode()).await.unwrap();
    c.publish(&geoc.encode()).await.unwrap();
    assert_eq!(c.get(&geoc.ghid).await.unwrap(), Bytes::from(geoc.encode()));
    assert_eq!(c.list_bindings(&geoc.ghid).await.unwrap(), vec![gobs.ghid]);
    assert_eq!(c.query_debinding(&gobs.ghid).await.unwrap(), None);
    let unknown = Ghid::pseudorandom(hypergolix::golix::Algo::SHA512);
    assert!(!c.exists(&unknown).await.unwrap());
    assert_code(c.get(&unknown).await, "not_found");

    // Subscriptions.
    let (g1, g2) = (geoc.ghid, gobs.ghid);
    c.subscribe(&g1).await.unwrap();
    c.subscribe(&g2).await.unwrap();
    c.subscribe(&g2).await.unwrap();
    let mut want = vec![g1, g2];
    want.sort();
    assert_eq!(c.list_subscriptions().await.unwrap(), want);
    assert!(c.unsubscribe(&g1).await.unwrap());
    assert!(!c.unsubscribe(&g1).await.unwrap());
    assert_eq!(c.list_subscriptions().await.unwrap(), vec![g2]);

    // Many requests in flight at once on one connection, matched by id.
    let ag = a.ghid();
    let many = futures_util::future::join_all((0..50).map(|_| c.exists(&ag))).await;
    assert!(many.into_iter().all(|r| r == Ok(true)));

    // Disconnect: replies, then the server closes the connection.
    c.disconnect().await.unwrap();
    assert!(
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .is_none(),
        "closed"
    );
    assert_eq!(c.ping().await, Err(ClientError::Closed));
    assert_eq!(
        r.stats().subscriptions,
        0,
        "disconnect cleared the subscriptions"
    );
    r.stop().await.unwrap();
}

#[actix_rt::test]
async fn dynamic_object_life_reaches_subscribers_but_not_the_uploader() {
    let r = start().await;
    let a = common::fixture(1);
    let (frames, containers) = dynamic(&a, 4);
    let dynamic = frames[0].dynamic;
    let (up, mut up_rx) = connect(&r).await;
    let (sub, mut sub_rx) = connect(&r).await;
    up.publish(&gidc(&a)).await.unwrap();
    up.subscribe(&dynamic).await.unwrap();
    sub.subscribe(&dynamic).await.unwrap();

    for (i, (f, c)) in frames.iter().zip(&containers).enumerate() {
        up.publish(&f.encode()).await.unwrap();
        up.publish(&c.encode()).await.unwrap();
        let n = next(&mut sub_rx).await;
        assert_eq!(n.subscription, dynamic);
        match decode(&n.object) {
            Object::Gobd(g) => {
                assert_eq!((g.counter, g.frame), (i as u64, f.frame));
                assert_eq!(g.targets[0], c.ghid);
            }
            other => panic!("expected a frame, got {other:?}"),
        }
        assert_eq!(sub.get(&dynamic).await.unwrap(), Bytes::from(f.encode()));
    }
    nothing(&mut up_rx).await;
    assert_eq!(
        sub.list_bindings(&containers[3].ghid).await.unwrap(),
        vec![dynamic]
    );

    // Debind: the subscriber gets the GDXX, the object is gone.
    let gdxx: Gdxx = a.make_debind(dynamic).unwrap();
    up.publish(&gdxx.encode()).await.unwrap();
    let n = next(&mut sub_rx).await;
    assert_eq!(n.subscription, dynamic);
    assert_eq!(n.object, Bytes::from(gdxx.encode()));
    assert_code(sub.get(&dynamic).await, "not_found");
    assert_code(sub.get(&containers[3].ghid).await, "not_found");
    assert_eq!(
        sub.query_debinding(&dynamic).await.unwrap(),
        Some(gdxx.ghid)
    );
    nothing(&mut up_rx).await;
    r.stop().await.unwrap();
}

/// The client holds at most `notify_bytes` of notifications it was sent and the application
/// has not dropped: past it, it stops reading the socket (the server then keeps, and
/// coalesces, what it cannot send). Nothing is lost: the latest frame arrives once the
/// application takes what waits.
#[actix_rt::test]
async fn notifications_waiting_in_the_client_are_bounded_in_bytes() {
    let r = start().await;
    let a = common::fixture(1);
    let (frames, containers) = dynamic(&a, 30);
    let dynamic = frames[0].dynamic;
    let (up, _up_rx) = connect(&r).await;
    let opts = hypergolix::persist::client::ClientOptions {
        notify_bytes: 8 * 1024,
        ..Default::default()
    };
    let (sub, mut sub_rx) = PersisterClient::connect_with(&r.ws_url(), opts)
        .await
        .unwrap();
    up.publish(&gidc(&a)).await.unwrap();
    sub.subscribe(&dynamic).await.unwrap();
    for (f, c) in frames.iter().zip(&containers) {
        up.publish(&f.encode()).await.unwrap();
        up.publish(&c.encode()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each frame is under 1 KiB and takes one KiB of the budget: eight wait, no more.
    let waiting = sub_rx.len();
    assert!((1..=8).contains(&waiting), "{waiting} notifications wait");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.hold(1))
            .await
            .is_err(),
        "the budget is all taken"
    );
    let mut last = None;
    while last != Some(29) {
        let n = next(&mut sub_rx).await;
        let Object::Gobd(g) = decode(&n.object) else {
            panic!("expected a frame")
        };
        assert!(last.map_or(true, |l| g.counter > l), "in order");
        last = Some(g.counter);
    }
    drop(
        tokio::time::timeout(WAIT, sub.hold(1))
            .await
            .expect("room again"),
    );

    // A consumer that asks for `close_when_full` is disconnected instead (and told why).
    let opts = hypergolix::persist::client::ClientOptions {
        notify_bytes: 8 * 1024,
        close_when_full: true,
        ..Default::default()
    };
    let (sub, _held) = PersisterClient::connect_with(&r.ws_url(), opts)
        .await
        .unwrap();
    sub.subscribe(&dynamic).await.unwrap();
    let (more, more_containers) = dynamic_after(&a, &frames[29], 12);
    for (f, c) in more.iter().zip(&more_containers) {
        up.publish(&f.encode()).await.unwrap();
        up.publish(&c.encode()).await.unwrap();
    }
    let deadline = Instant::now() + WAIT;
    while !sub.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let why = sub.closed_because().expect("closed by the client");
    assert!(why.contains("notify_bytes"), "{why}");
    r.stop().await.unwrap();
}

/// Publishes pipelined on one connection (all sent before any answer): checked in parallel,
/// applied in order, answered in order. An object signed by an identity published just
/// before it in the same pipeline is stored; a refused one in the middle (its durability
/// owed to it by the publish before, see the server's `pipeline`) holds nothing up; a `get`
/// sent behind them sees what they stored; a subscriber gets the frames in order.
#[actix_rt::test]
async fn pipelined_publishes_are_applied_and_answered_in_order() {
    let (a, b) = (common::fixture(1), common::fixture(2));
    let Subscribed {
        r,
        up,
        sub,
        mut sub_rx,
        frames,
        containers,
        _up_rx,
    } = subscribed(&a, 3).await;
    let by_b = b.make_container(b"by b", &Secret::random()).unwrap();
    let bind_b = b.make_bind_static(by_b.ghid).unwrap();
    let mut tampered = a.make_bind_static(containers[2].ghid).unwrap().encode();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;

    let objects: Vec<Vec<u8>> = vec![
        gidc(&b),
        bind_b.encode(),
        by_b.encode(),
        frames[0].encode(),
        tampered,
        containers[0].encode(),
        frames[1].encode(),
        containers[1].encode(),
    ];
    let publishes = futures_util::future::join_all(objects.iter().map(|o| up.publish(o)));
    let (acks, got) = futures_util::future::join(publishes, up.get(&by_b.ghid)).await;
    assert_eq!(
        got.unwrap(),
        Bytes::from(by_b.encode()),
        "the get sees the pipeline"
    );
    let want = [
        Some(b.ghid()),
        Some(bind_b.ghid),
        Some(by_b.ghid),
        Some(frames[0].frame),
        None,
        Some(containers[0].ghid),
        Some(frames[1].frame),
        Some(containers[1].ghid),
    ];
    for (i, (ack, want)) in acks.into_iter().zip(want).enumerate() {
        match want {
            Some(g) => {
                let ack = ack.unwrap_or_else(|e| panic!("publish {i}: {e}"));
                assert_eq!((ack.ghid, ack.new), (g, true), "publish {i}");
            }
            None => assert_code(ack, "verification_failed"),
        }
    }
    frames_in_order_until(&mut sub_rx, 1).await;
    assert_eq!(
        sub.get(&frames[0].dynamic).await.unwrap(),
        Bytes::from(frames[1].encode())
    );
    r.stop().await.unwrap();
}

/// 80 publishes in one connection's pipeline, each one's check racing the commits ahead of
/// it (a commit checked early runs when the one ahead is applied): every publish is applied
/// and answered, and the subscriber sees the frames in order.
#[actix_rt::test]
async fn a_long_pipeline_applies_and_answers_every_publish() {
    let Subscribed {
        r,
        up,
        sub,
        mut sub_rx,
        frames,
        containers,
        _up_rx,
    } = subscribed(&common::fixture(1), 40).await;
    let objects: Vec<Vec<u8>> = frames
        .iter()
        .zip(&containers)
        .flat_map(|(f, c)| [f.encode(), c.encode()])
        .collect();
    let publishes = futures_util::future::join_all(objects.iter().map(|o| up.publish(o)));
    let acks = tokio::time::timeout(Duration::from_secs(60), publishes)
        .await
        .expect("every publish answered");
    let want = frames
        .iter()
        .zip(&containers)
        .flat_map(|(f, c)| [f.frame, c.ghid]);
    for (i, (ack, want)) in acks.into_iter().zip(want).enumerate() {
        let ack = ack.unwrap_or_else(|e| panic!("publish {i}: {e}"));
        assert_eq!((ack.ghid, ack.new), (want, true), "publish {i}");
    }
    frames_in_order_until(&mut sub_rx, frames[39].counter).await;
    assert_eq!(
        sub.get(&frames[0].dynamic).await.unwrap(),
        Bytes::from(frames[39].encode())
    );
    r.stop().await.unwrap();
}

/// Frames (each with its container) that arrive alone or two together, about a
/// millisecond apart: each may find the pipeline empty while the announcer still holds the
/// ones before it (the reader then checks and applies it itself, its container on another
/// core meanwhile, and announces it itself only once the announcer has nothing in hand).
/// Every publish is answered and the subscriber sees the frames in order.
#[actix_rt::test]
async fn publishes_alone_and_in_bursts_are_announced_in_order() {
    alone_and_in_bursts(true).await;
}

/// The same with every lone pair checked on its reader alone (`check_beside: false`).
#[actix_rt::test]
async fn publishes_alone_and_in_bursts_are_announced_in_order_on_one_core_each() {
    alone_and_in_bursts(false).await;
}

async fn alone_and_in_bursts(check_beside: bool) {
    let tweak = |s: &mut Settings| s.check_beside = check_beside;
    let mut s = subscribed_with(&common::fixture(1), 60, tweak).await;
    let (frames, containers) = (&s.frames, &s.containers);
    let objects: Vec<(Vec<u8>, Vec<u8>)> = frames
        .iter()
        .zip(containers)
        .map(|(f, c)| (f.encode(), c.encode()))
        .collect();
    let up = &s.up;
    let sends = objects.iter().enumerate().map(|(i, (f, c))| async move {
        // 0, 0, 1, 2, 2, 3, 4, 4, … ms: polled in order, so sent in order.
        tokio::time::sleep(Duration::from_millis(i as u64 * 2 / 3)).await;
        futures_util::future::join(up.publish(f), up.publish(c)).await
    });
    let acks = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(sends),
    )
    .await
    .expect("every publish answered");
    for (i, (f, c)) in acks.into_iter().enumerate() {
        assert_eq!(f.unwrap().ghid, frames[i].frame, "frame {i}");
        assert_eq!(c.unwrap().ghid, containers[i].ghid, "container {i}");
    }
    frames_in_order_until(&mut s.sub_rx, frames[59].counter).await;
    s.r.stop().await.unwrap();
}

/// Two objects updated in turn by one publisher: 16 watchers follow both, a crowd of 200
/// only the first. The first's rounds (216 subscribers) go to the announcer; the second's
/// (16) are small enough for the reader to announce itself, which it does only once the
/// announcer holds nothing. Every watcher sees the updates in publish order, wherever it
/// stands in the large rounds. (How often the reader finds the announcer still sending is
/// a matter of timing: rarely, here.)
#[actix_rt::test]
async fn a_small_round_never_passes_a_large_one_still_being_sent() {
    const UPDATES: usize = 8;
    let r = start().await;
    let a = common::fixture(1);
    let (up, _up_rx) = connect(&r).await;
    up.publish(&gidc(&a)).await.unwrap();
    let (large, small) = (dynamic(&a, UPDATES), dynamic(&a, UPDATES));
    let (x, y) = (large.0[0].dynamic, small.0[0].dynamic);
    let watchers = futures_util::future::join_all((0..16).map(|_| connect(&r))).await;
    let crowd = futures_util::future::join_all((0..200).map(|_| connect(&r))).await;
    for (c, _) in &watchers {
        c.subscribe(&x).await.unwrap();
        c.subscribe(&y).await.unwrap();
    }
    for (c, _) in &crowd {
        c.subscribe(&x).await.unwrap();
    }
    // The order every watcher must see: x's first update, y's, x's second, ...
    let order: Vec<Ghid> = (0..UPDATES)
        .flat_map(|i| [large.0[i].frame, small.0[i].frame])
        .collect();
    for i in 0..UPDATES {
        let pair = |(f, c): &(Vec<Gobd>, Vec<Geoc>)| (f[i].encode(), c[i].encode());
        let ((xf, xc), (yf, yc)) = (pair(&large), pair(&small));
        let x_then_y = futures_util::future::join(
            futures_util::future::join(up.publish(&xf), up.publish(&xc)),
            async {
                // Sent once x's pair is in: y finds the pipeline empty.
                tokio::time::sleep(Duration::from_micros(300)).await;
                futures_util::future::join(up.publish(&yf), up.publish(&yc)).await
            },
        );
        let ((xf, xc), (yf, yc)) = tokio::time::timeout(WAIT, x_then_y)
            .await
            .expect("answered");
        for ack in [xf, xc, yf, yc] {
            ack.unwrap();
        }
    }
    for (w, (_, mut rx)) in watchers.into_iter().enumerate() {
        // Latest-wins may merge a frame into a newer one of its object, never reorder.
        let mut at = None;
        while at != Some(order.len() - 1) {
            let Object::Gobd(f) = decode(&next(&mut rx).await.object) else {
                panic!("not a frame");
            };
            let pos = order.iter().position(|g| *g == f.frame);
            assert!(pos > at, "watcher {w}: {pos:?} after {at:?}");
            at = pos;
        }
    }
    drop(crowd);
    r.stop().await.unwrap();
}

/// `publish_all` (what a daemon's drain sends a frame and its container with) puts every
/// request on the wire in order before awaiting a reply, and answers each one: a container
/// is only taken after its binding, so the order shows in the answers.
#[actix_rt::test]
async fn publish_all_sends_in_order_and_answers_each() {
    let Subscribed {
        r,
        up,
        sub: _sub,
        mut sub_rx,
        frames,
        containers,
        _up_rx,
    } = subscribed(&common::fixture(1), 2).await;
    let objects = [
        frames[0].encode(),
        containers[0].encode(),
        containers[1].encode(), // before its frame: nothing binds it yet
        frames[1].encode(),
    ];
    let refs: Vec<&[u8]> = objects.iter().map(|o| o.as_slice()).collect();
    let mut acks = up.publish_all(&refs).await.into_iter();
    let mut ok = |want: Ghid| {
        let ack = acks.next().expect("one answer per object").unwrap();
        assert_eq!((ack.ghid, ack.new), (want, true));
    };
    ok(frames[0].frame);
    ok(containers[0].ghid);
    assert_code(
        acks.next().expect("one answer per object"),
        "unbound_container",
    );
    assert!(acks.next().expect("one answer per object").is_ok());
    assert!(acks.next().is_none());
    // The frame with its container was announced; the last one's container never came.
    let Object::Gobd(f) = decode(&next(&mut sub_rx).await.object) else {
        panic!("not a frame");
    };
    assert_eq!(f.frame, frames[0].frame);
    r.stop().await.unwrap();
}

#[actix_rt::test]
async fn offline_mail_is_delivered_at_each_subscribe() {
    let r = start().await;
    let (a, b) = (common::fixture(1), common::fixture(2));
    let (c, _rx) = connect(&r).await;
    c.publish(&gidc(&a)).await.unwrap();
    c.publish(&gidc(&b)).await.unwrap();
    let garq = a
        .make_handshake(
            b.second_party(),
            Ghid::pseudorandom(hypergolix::golix::Algo::SHA512),
            &Secret::random(),
        )
        .unwrap();
    c.publish(&garq.encode()).await.unwrap();

    // B was offline; it subscribes to its own ghid and receives the stored request, on every
    // connection that subscribes.
    for _ in 0..2 {
        let (bc, mut brx) = connect(&r).await;
        bc.subscribe(&b.ghid()).await.unwrap();
        let n = next(&mut brx).await;
        assert_eq!(
            (n.subscription, n.object.clone()),
            (b.ghid(), Bytes::from(garq.encode()))
        );
        nothing(&mut brx).await;
    }

    // Online now: a new request arrives live; B's debinding removes it and other sessions
    // of B hear of it.
    let (bc, mut brx) = connect(&r).await;
    bc.subscribe(&b.ghid()).await.unwrap();
    assert_eq!(next(&mut brx).await.object, Bytes::from(garq.encode()));
    let gdxx = b.make_debind(garq.ghid).unwrap();
    c.publish(&gdxx.encode()).await.unwrap();
    assert_eq!(next(&mut brx).await.object, Bytes::from(gdxx.encode()));
    let (bc2, mut brx2) = connect(&r).await;
    bc2.subscribe(&b.ghid()).await.unwrap();
    nothing(&mut brx2).await;
    r.stop().await.unwrap();
}

#[actix_rt::test]
async fn rejections_surface_their_codes() {
    let r = start_with(|s| s.limits.max_subscriptions = 2).await;
    let (a, b) = (common::fixture(1), common::fixture(2));
    let (c, _rx) = connect(&r).await;
    let secret = Secret::random();
    let geoc = a.make_container(b"x", &secret).unwrap();

    assert_code(c.publish(&geoc.encode()).await, "unknown_author");
    c.publish(&gidc(&a)).await.unwrap();
    assert_code(c.publish(&geoc.encode()).await, "unbound_container");
    assert_code(c.publish(b"GEOC garbage").await, "malformed");
    let mut tampered = a.make_bind_static(geoc.ghid).unwrap().encode();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_code(c.publish(&tampered).await, "verification_failed");

    // Frames: a replayed counter is illegal; another binder is inconsistent.
    c.publish(&gidc(&b)).await.unwrap();
    let (frames, _) = dynamic(&a, 3);
    c.publish(&frames[2].encode()).await.unwrap();
    assert_code(c.publish(&frames[1].encode()).await, "illegal_frame");
    let gdxx_by_b = b.make_debind(frames[0].dynamic).unwrap();
    assert_code(c.publish(&gdxx_by_b.encode()).await, "inconsistent_author");
    let gdxx_of_identity = a.make_debind(a.ghid()).unwrap();
    assert_code(
        c.publish(&gdxx_of_identity.encode()).await,
        "invalid_target",
    );

    // A frame that would close a loop of dynamic bindings.
    let cb = a.make_container(b"b", &secret).unwrap();
    let b0 = a.make_bind_dynamic(cb.ghid).unwrap();
    let a0 = a.make_bind_dynamic(b0.dynamic).unwrap();
    let b1 = a.make_next_frame(&b0, a0.dynamic, DEFAULT_LEGROOM).unwrap();
    c.publish(&b0.encode()).await.unwrap();
    c.publish(&a0.encode()).await.unwrap();
    assert_code(c.publish(&b1.encode()).await, "circular_binding");

    // Debound bindings cannot come back.
    let gobs = a.make_bind_static(geoc.ghid).unwrap();
    c.publish(&gobs.encode()).await.unwrap();
    c.publish(&a.make_debind(gobs.ghid).unwrap().encode())
        .await
        .unwrap();
    assert_code(c.publish(&gobs.encode()).await, "already_debound");

    // Session-level codes.
    assert_code(
        c.request_raw("publish", serde_json::json!({"obj": 1}))
            .await,
        "bad_args",
    );
    assert_code(
        c.request_raw("get", serde_json::json!({"ghid": "short"}))
            .await,
        "bad_args",
    );
    for _ in 0..2 {
        c.subscribe(&Ghid::pseudorandom(hypergolix::golix::Algo::SHA512))
            .await
            .unwrap();
    }
    assert_code(
        c.subscribe(&Ghid::pseudorandom(hypergolix::golix::Algo::SHA512))
            .await,
        "limit",
    );
    c.ping().await.unwrap();
    r.stop().await.unwrap();
}

#[actix_rt::test]
async fn unknown_ops_and_malformed_input_keep_the_session() {
    let r = start().await;
    let (c, _rx) = connect(&r).await;
    assert_code(
        c.request_raw("teleport", serde_json::json!({"to": "mars"}))
            .await,
        "unknown_op",
    );
    c.ping().await.unwrap();

    // Not msgpack at all: the reply has no id.
    c.send_raw(Bytes::from_static(b"\xc1\xc1 not msgpack"))
        .await
        .unwrap();
    c.ping().await.unwrap();
    assert_eq!(
        c.take_orphan_error()
            .and_then(|e| e.code().map(str::to_owned)),
        Some("malformed".into())
    );
    // A map without an op: the id is recovered and the caller gets the error.
    let no_op = rmp_serde::to_vec_named(&serde_json::json!({"id": 999_999, "args": {}})).unwrap();
    c.send_raw(Bytes::from(no_op)).await.unwrap();
    c.ping().await.unwrap();
    // Unknown fields are ignored.
    let args = rmpv::Value::Map(vec![
        ("ghid".into(), rmpv::Value::Binary(vec![1u8; 65])),
        ("extra".into(), rmpv::Value::Array(vec![1.into(), 2.into()])),
    ]);
    assert_eq!(
        c.request_raw("exists", args).await.unwrap(),
        rmpv::Value::Boolean(false)
    );
    let hello = c.hello().await.unwrap();
    assert_eq!(hello.protocol, 1);
    r.stop().await.unwrap();
}

#[actix_rt::test]
async fn oversize_message_gets_too_large_and_a_clean_close() {
    let r = start_with(|s| s.limits.max_frame = 64 * 1024).await;
    let a = common::fixture(1);
    let (c, mut rx) = connect(&r).await;
    c.publish(&gidc(&a)).await.unwrap();
    let geoc = a
        .make_container(&vec![7u8; 100 * 1024], &Secret::random())
        .unwrap();
    let gobs = a.make_bind_static(geoc.ghid).unwrap();
    c.publish(&gobs.encode()).await.unwrap();
    let t = Instant::now();
    assert_code(c.publish(&geoc.encode()).await, "too_large");
    assert!(
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .is_none(),
        "closed"
    );
    assert!(c.is_closed());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "closed promptly, not by a timeout"
    );
    let (c2, _) = connect(&r).await;
    assert!(!c2.exists(&geoc.ghid).await.unwrap(), "nothing stored");
    assert!(c2.exists(&gobs.ghid).await.unwrap());
    r.stop().await.unwrap();
}

#[actix_rt::test]
async fn http_read_path() {
    use awc::http::{header, StatusCode};
    let r = start().await;
    let a = common::fixture(1);
    let (c, _rx) = connect(&r).await;
    c.publish(&gidc(&a)).await.unwrap();
    let (frames, containers) = dynamic(&a, 2);
    for (f, g) in frames.iter().zip(&containers) {
        c.publish(&f.encode()).await.unwrap();
        c.publish(&g.encode()).await.unwrap();
    }
    let http = awc::Client::builder().disable_redirects().finish();
    let url = |p: &str| format!("{}{p}", r.http_url());

    // Root document, msgpack by default, JSON on request.
    let mut resp = http.get(url("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get(header::VARY).unwrap(), "Accept");
    let doc: serde_json::Value = rmp_serde::from_slice(&resp.body().await.unwrap()).unwrap();
    assert_eq!(doc["protocol"], "hgx-persist/1");
    assert_eq!(doc["links"]["object"], "/o/{ghid}");
    assert_eq!(doc["links"]["ws"], "/ws");
    let mut resp = http
        .get(url("/"))
        .insert_header((header::ACCEPT, "application/json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    let doc: serde_json::Value = serde_json::from_slice(&resp.body().await.unwrap()).unwrap();
    assert_eq!(doc["links"]["ws"], "/ws");

    // An immutable object.
    let g = a.ghid().as_str();
    let mut resp = http.get(url(&format!("/o/{g}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = format!("\"{g}\"");
    assert_eq!(
        resp.headers().get(header::ETAG).unwrap().to_str().unwrap(),
        etag
    );
    assert_eq!(
        resp.headers().get(header::CACHE_CONTROL).unwrap(),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(resp.body().await.unwrap(), Bytes::from(gidc(&a)));
    let resp = http
        .get(url(&format!("/o/{g}")))
        .insert_header((header::IF_NONE_MATCH, etag.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    let mut resp = http.head(url(&format!("/o/{g}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .unwrap()
            .to_str()
            .unwrap(),
        gidc(&a).len().to_string()
    );
    assert!(resp.body().await.unwrap().is_empty());

    // A dynamic ghid redirects to its current frame, uncached; the frame is immutable.
    let d = frames[0].dynamic.as_str();
    let resp = http.get(url(&format!("/o/{d}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        resp.headers().get(header::CACHE_CONTROL).unwrap(),
        "no-cache"
    );
    let location = resp
        .headers()
        .get(header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(location, format!("/o/{}", frames[1].frame.as_str()));
    let mut resp = http.get(url(&location)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.body().await.unwrap(), Bytes::from(frames[1].encode()));

    // Unknown, malformed, removed.
    let unknown = Ghid::pseudorandom(hypergolix::golix::Algo::SHA512).as_str();
    assert_eq!(
        http.get(url(&format!("/o/{unknown}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        http.head(url(&format!("/o/{unknown}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        http.get(url("/o/not-a-ghid"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    let old_frame = frames[0].frame.as_str();
    assert_eq!(
        http.get(url(&format!("/o/{old_frame}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::GONE
    );
    c.publish(&a.make_debind(frames[0].dynamic).unwrap().encode())
        .await
        .unwrap();
    assert_eq!(
        http.get(url(&format!("/o/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::GONE
    );
    assert_eq!(
        http.head(url(&format!("/o/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::GONE
    );
    r.stop().await.unwrap();
}

/// TLS with a certificate from a private CA: `wss://` and `https://` work for a client
/// that trusts the CA, and a client that trusts only the public roots is refused with a
/// certificate error.
#[actix_rt::test]
async fn tls_serves_wss_and_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls_support::TestPki::new(dir.path());
    let files = server::TlsFiles {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    };
    let r = start_with(|s| s.tls = Some(files)).await;
    assert!(r.ws_url().starts_with("wss://"));

    // The public roots alone do not trust a private CA.
    let refused = PersisterClient::connect(&r.ws_url()).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            ClientError::Connect {
                kind: ConnectFailure::Certificate,
                ..
            }
        ),
        "{refused}"
    );
    let tls = pki.client_config();
    let opts = hypergolix::persist::client::ClientOptions {
        tls: Some(tls.clone()),
        ..Default::default()
    };
    let (c, _rx) = PersisterClient::connect_with(&r.ws_url(), opts)
        .await
        .unwrap();
    c.ping().await.unwrap();
    assert_eq!(c.hello().await.unwrap().protocol, 1);
    let http = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(tls))
        .finish();
    let resp = http.get(format!("{}/", r.http_url())).send().await.unwrap();
    assert_eq!(resp.status(), awc::http::StatusCode::OK);
    r.stop().await.unwrap();
}

// ---- the real binary -------------------------------------------------------------------

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("hypergolix.yml");
    std::fs::write(
        &path,
        "server:\n  host: null\n  port: 0\n  ghidcache: ./cache\n  logdir: ./logs\n  \
         pid_file: ./persister.pid\n  verbosity: debug\n",
    )
    .unwrap();
    path
}

#[actix_rt::test]
async fn binary_refuses_a_second_instance_stops_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let pid_file = dir.path().join("persister.pid");
    let a = common::fixture(1);

    let (mut first, addr) = common::spawn_persister(&config);
    let url = format!("ws://{addr}/ws");
    let (c, _rx) = PersisterClient::connect(&url).await.unwrap();
    c.publish(&gidc(&a)).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        first.id().to_string()
    );

    // A second instance on the same pid file refuses, and says why.
    let out = Command::new(env!("CARGO_BIN_EXE_hgx-persister"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("already running as pid {}", first.id())),
        "{err}"
    );

    // `stop` signals it through the pid file and waits.
    let out = Command::new(env!("CARGO_BIN_EXE_hgx-persister"))
        .arg("--config")
        .arg(&config)
        .arg("stop")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(common::wait_exit(&mut first, Duration::from_secs(20)).success());
    assert!(!pid_file.exists(), "pid file removed on exit");
    assert!(
        std::fs::read_dir(dir.path().join("logs")).unwrap().count() >= 1,
        "a log file"
    );

    // Restart on the same ghidcache; SIGTERM stops it cleanly too.
    let (mut second, addr) = common::spawn_persister(&config);
    let (c, _rx) = PersisterClient::connect(&format!("ws://{addr}/ws"))
        .await
        .unwrap();
    assert_eq!(
        c.get(&a.ghid()).await.unwrap(),
        Bytes::from(gidc(&a)),
        "data survived"
    );
    let t = Instant::now();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(second.id() as i32, libc::SIGTERM) }, 0);
    let st = common::wait_exit(&mut second, Duration::from_secs(20));
    assert!(st.success(), "exit status {st:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!pid_file.exists());
    assert!(c.ping().await.is_err(), "the connection was closed");
}
