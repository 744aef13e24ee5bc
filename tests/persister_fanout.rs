//! Fanout under load: 1,000 subscriber websockets on one dynamic ghid receive 100 frames
//! while one deliberately stalled subscriber never reads. Every reader must end on the final
//! frame, each notification must be encoded once, and the server's memory must stay bounded.
//! (A benchmark it is not: timings are printed, never asserted, apart from the overall
//! deadline.) Then the direct writer's fallback on a real `hgx-persister` process: a socket
//! that stops taking data gets the rest queued, in order, and written once it reads again.

mod common;
mod persister_attack_support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hypergolix::golix::{Geoc, Gobd, Object, Policy, Secret, DEFAULT_LEGROOM};
use hypergolix::persist::client::PersisterClient;
use hypergolix::persist::server::{self, Settings};
use hypergolix::persist::wire;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SUBSCRIBERS: usize = 1000;
const FRAMES: usize = 100;
const DEADLINE: Duration = Duration::from_secs(45);

/// This process's resident set, in KiB (Linux).
fn vm_rss_kib() -> u64 {
    common::status_kib("self", "VmRSS:").unwrap_or(0)
}

fn presign(n: usize) -> (hypergolix::golix::FirstParty, Vec<Gobd>, Vec<Geoc>) {
    let a = common::fixture(1);
    let secret = Secret::random();
    let mut frames: Vec<Gobd> = Vec::with_capacity(n);
    let mut containers = Vec::with_capacity(n);
    for i in 0..n {
        let c = a
            .make_container(format!("frame {i}").as_bytes(), &secret)
            .unwrap();
        let f = match frames.last() {
            None => a.make_bind_dynamic(c.ghid).unwrap(),
            Some(prev) => a.make_next_frame(prev, c.ghid, DEFAULT_LEGROOM).unwrap(),
        };
        frames.push(f);
        containers.push(c);
    }
    (a, frames, containers)
}

/// One masked client websocket frame (a zero mask leaves the payload as is).
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x82u8];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A websocket subscriber that never reads: a raw TCP connection with a tiny receive
/// buffer and a hand-made upgrade. It subscribes to `ghid`, then asks `gets` times for the
/// large object `big`, so that the replies fill the socket and the server's write path and
/// its outbox really backs up before any notification arrives.
async fn stalled_subscriber(
    addr: std::net::SocketAddr,
    ghid: &hypergolix::golix::Ghid,
    big: &hypergolix::golix::Ghid,
    gets: u64,
) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "handshake response too long");
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let by = |g: &hypergolix::golix::Ghid| wire::args::ByGhid { ghid: *g };
    let mut out = ws_frame(&wire::encode_request(1, "subscribe", by(ghid)));
    for id in 0..gets {
        out.extend(ws_frame(&wire::encode_request(2 + id, "get", by(big))));
    }
    s.write_all(&out).await.unwrap();
    s
}

#[derive(Default, Clone, Copy)]
struct Seen {
    deliveries: u32,
    last: Option<u64>,
}

#[actix_rt::test]
async fn a_thousand_subscribers_and_one_stalled_reader() {
    let started = Instant::now();
    let nofile = common::raise_nofile();
    assert!(
        nofile >= 2 * SUBSCRIBERS as libc::rlim_t + 200,
        "RLIMIT_NOFILE {nofile} is too low"
    );
    let (a, frames, containers) = presign(FRAMES);
    let dynamic = frames[0].dynamic;
    println!(
        "pre-signed {} objects in {:?}",
        2 * FRAMES,
        started.elapsed()
    );

    let mut settings = Settings::local(None);
    settings.workers = 2;
    let r = server::start(settings).await.unwrap();
    let (publisher, _prx) = PersisterClient::connect(&r.ws_url()).await.unwrap();
    publisher.publish(&a.gidc().encode()).await.unwrap();

    // 1,000 subscribers, each with a task counting what it receives.
    let seen: Rc<RefCell<Vec<Seen>>> = Rc::new(RefCell::new(vec![Seen::default(); SUBSCRIBERS]));
    let mut clients = Vec::with_capacity(SUBSCRIBERS);
    let t = Instant::now();
    let url = r.ws_url();
    for batch in 0..SUBSCRIBERS / 100 {
        let conns =
            futures_util::future::join_all((0..100).map(|_| PersisterClient::connect(&url))).await;
        for (k, conn) in conns.into_iter().enumerate() {
            let (c, mut rx) = conn.expect("subscriber connects");
            let i = batch * 100 + k;
            let seen = seen.clone();
            actix_rt::spawn(async move {
                while let Some(n) = rx.recv().await {
                    let counter = match Object::decode(&n.object, Policy::STRICT) {
                        Ok(Object::Gobd(f)) => f.counter,
                        other => panic!("subscriber {i}: unexpected {other:?}"),
                    };
                    let mut s = seen.borrow_mut();
                    s[i].deliveries += 1;
                    assert!(s[i].last < Some(counter), "frames arrive in order");
                    s[i].last = Some(counter);
                }
            });
            clients.push(c);
        }
        futures_util::future::join_all(
            clients[batch * 100..].iter().map(|c| c.subscribe(&dynamic)),
        )
        .await
        .into_iter()
        .for_each(|r| r.expect("subscribe"));
    }
    println!(
        "{SUBSCRIBERS} subscribers connected and subscribed in {:?}",
        t.elapsed()
    );

    // The stalled reader: 128 replies of 128 KiB back up behind its socket first.
    let big = persister_attack_support::publish_large(&publisher, &a, 128 * 1024, 0u8).await;
    let stalled = stalled_subscriber(r.local_addr(), &dynamic, &big.ghid, 128).await;
    let t0 = Instant::now();
    while r.stats().subscriptions < SUBSCRIBERS as u64 + 1 || r.stats().queued < 16 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the stalled subscriber registers and backs up: {:?}",
            r.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stuck = r.stats().queued;
    let rss_before = vm_rss_kib();

    // Publish the 100 frames (frame, then its container) and wait for every reader.
    let t = Instant::now();
    for (f, c) in frames.iter().zip(&containers) {
        publisher.publish(&f.encode()).await.unwrap();
        publisher.publish(&c.encode()).await.unwrap();
    }
    let published = t.elapsed();
    let final_counter = (FRAMES - 1) as u64;
    loop {
        let done = seen
            .borrow()
            .iter()
            .filter(|s| s.last == Some(final_counter))
            .count();
        if done == SUBSCRIBERS {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "only {done}/{SUBSCRIBERS} subscribers reached the final frame"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_in = t.elapsed();
    let rss_after = vm_rss_kib();

    let seen = seen.borrow().clone();
    let total: u64 = seen.iter().map(|s| u64::from(s.deliveries)).sum();
    let complete = seen
        .iter()
        .filter(|s| s.deliveries as usize == FRAMES)
        .count();
    let min = seen.iter().map(|s| s.deliveries).min().unwrap_or(0);
    let stats = r.stats();
    println!(
        "published {FRAMES} frames in {published:?}; all readers final after {delivered_in:?}; \
         deliveries {total} (min {min}/subscriber, {complete} saw every frame); hub {stats:?}; \
         VmRSS {rss_before} -> {rss_after} KiB"
    );

    assert_eq!(
        stats.encoded, FRAMES as u64,
        "each notification encoded once for all"
    );
    let pushes = (FRAMES * (SUBSCRIBERS + 1)) as u64;
    assert_eq!(
        stats.delivered + stats.coalesced,
        pushes,
        "every push queued or merged"
    );
    assert!(total <= stats.delivered && total + FRAMES as u64 >= stats.delivered);
    assert_eq!(
        stats.slow_drops, 0,
        "latest-wins: the stalled reader is never over its bound"
    );
    assert!(
        stats.queued <= stuck + 1,
        "the stalled reader holds one pending frame, not {FRAMES}: {} -> {}",
        stuck,
        stats.queued
    );
    assert!(
        stats.coalesced >= (FRAMES - 1) as u64,
        "the stalled reader's frames were merged"
    );
    assert!(
        rss_after.saturating_sub(rss_before) < 256 * 1024,
        "memory grew by {} KiB",
        rss_after.saturating_sub(rss_before)
    );

    drop(stalled);
    for c in &clients {
        c.close();
    }
    r.stop().await.unwrap();
    println!("total {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// The message id of a reply (`None` for a notification).
fn reply_id(m: &wire::Incoming) -> Option<u64> {
    match m {
        wire::Incoming::Ok { id, .. } => id.as_u64(),
        wire::Incoming::Err { id, err } => panic!("error reply {id}: {err:?}"),
        _ => None,
    }
}

/// Issue 17's write-through, on plain TCP to a real `hgx-persister`: while a subscriber reads
/// nothing, what its socket does not take waits in its outbox (replies in order, one pending
/// notification per object); once it reads, everything arrives in order — every reply, then
/// frames with increasing counters up to the last — the queue empties and the connection is
/// written straight through again: a later notification arrives at once, with no restart.
#[actix_rt::test]
async fn a_full_socket_falls_back_to_the_queue_and_catches_up_in_order() {
    use persister_attack_support::{Persister, RawWs, WsIn, WAIT};
    const GETS: u64 = 48;
    const FRAMES_NOW: usize = 40;

    let p = Persister::spawn("  workers: 2\n");
    let (a, frames, containers) = presign(FRAMES_NOW + 1);
    let dynamic = frames[0].dynamic;
    let (publisher, _prx) = PersisterClient::connect(&p.ws_url()).await.unwrap();
    publisher.publish(&a.gidc().encode()).await.unwrap();
    let big = persister_attack_support::publish_large(&publisher, &a, 128 * 1024, 7u8).await;

    // A reader with a tiny receive buffer that asks for 48 x 128 KiB and reads nothing yet.
    let mut slow = RawWs::connect_with(p.addr, Some(4096)).await;
    let by = |g: &hypergolix::golix::Ghid| wire::args::ByGhid { ghid: *g };
    assert!(slow.request(1, "subscribe", by(&dynamic)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in 2..2 + GETS {
        assert!(slow.request(id, "get", by(&big.ghid)).await);
    }
    // A fast subscriber alongside: it is served at once while the slow one backs up.
    let (fast, mut fast_rx) = PersisterClient::connect(&p.ws_url()).await.unwrap();
    fast.subscribe(&dynamic).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (f, c) in frames.iter().zip(&containers).take(FRAMES_NOW) {
        publisher.publish(&f.encode()).await.unwrap();
        publisher.publish(&c.encode()).await.unwrap();
    }
    let mut fast_last = None;
    while fast_last != Some(FRAMES_NOW as u64 - 1) {
        let n = tokio::time::timeout(WAIT, fast_rx.recv())
            .await
            .expect("the fast subscriber is not held up by the slow one")
            .expect("a notification");
        let Object::Gobd(f) = Object::decode(&n.object, Policy::STRICT).unwrap() else {
            panic!("not a frame");
        };
        assert!(fast_last < Some(f.counter), "fast: in order");
        fast_last = Some(f.counter);
    }

    // Now read everything: replies 1..=GETS+1 in order, frames in increasing order.
    let mut next_reply = 1;
    let mut last_counter = None;
    let mut notes = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while next_reply < 2 + GETS || last_counter != Some(FRAMES_NOW as u64 - 1) {
        assert!(Instant::now() < deadline, "caught up in time");
        match slow.recv(WAIT).await {
            WsIn::Binary(b) => {
                let m = wire::Incoming::decode(&b).unwrap();
                if let Some(id) = reply_id(&m) {
                    assert_eq!(id, next_reply, "replies in order");
                    if id >= 2 {
                        let wire::Incoming::Ok { ok, .. } = &m else {
                            unreachable!()
                        };
                        assert_eq!(ok.as_slice(), Some(&big.encode()[..]), "reply {id} intact");
                    }
                    next_reply += 1;
                } else if let wire::Incoming::Notify { object, .. } = m {
                    let Object::Gobd(f) = Object::decode(&object, Policy::STRICT).unwrap() else {
                        panic!("not a frame");
                    };
                    assert!(last_counter < Some(f.counter), "frames in order");
                    last_counter = Some(f.counter);
                    notes += 1;
                }
            }
            WsIn::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    println!(
        "slow reader: {} replies, {notes} of {FRAMES_NOW} frames (latest-wins)",
        GETS + 1
    );
    assert!(notes < FRAMES_NOW, "a stalled reader's frames were merged");

    // Caught up: the next notification and reply come at once.
    let t = Instant::now();
    let (f, c) = (&frames[FRAMES_NOW], &containers[FRAMES_NOW]);
    publisher.publish(&f.encode()).await.unwrap();
    publisher.publish(&c.encode()).await.unwrap();
    loop {
        match slow.recv(WAIT).await {
            WsIn::Binary(b) => {
                if let wire::Incoming::Notify { object, .. } = wire::Incoming::decode(&b).unwrap() {
                    let Object::Gobd(g) = Object::decode(&object, Policy::STRICT).unwrap() else {
                        panic!("not a frame");
                    };
                    assert_eq!(g.counter, FRAMES_NOW as u64);
                    break;
                }
            }
            WsIn::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    slow.assert_alive(1000).await;
    println!(
        "after catching up: notification and ping reply in {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    fast.close();
    publisher.close();
}

/// One file descriptor per connection (issue 17: at N = 10,000 a child persister held two per
/// connection — the socket and a duplicate for the direct writer — and ran out at the
/// 20,000 fd limit). K subscribers connected, subscribed and served a notification each on a
/// real `hgx-persister`: its fds grow by K (plus a few for its own use), not 2 K, and go
/// back down once they are gone.
#[actix_rt::test]
async fn each_connection_holds_one_file_descriptor() {
    use persister_attack_support::Persister;
    const K: usize = 60;

    let p = Persister::spawn("  workers: 1\n");
    let (a, frames, containers) = presign(1);
    let dynamic = frames[0].dynamic;
    let (publisher, _prx) = PersisterClient::connect(&p.ws_url()).await.unwrap();
    publisher.publish(&a.gidc().encode()).await.unwrap();
    let before = p.open_fds();

    let mut subs = Vec::with_capacity(K);
    for _ in 0..K {
        let (c, rx) = PersisterClient::connect(&p.ws_url()).await.unwrap();
        c.subscribe(&dynamic).await.unwrap();
        subs.push((c, rx));
    }
    publisher.publish(&frames[0].encode()).await.unwrap();
    publisher.publish(&containers[0].encode()).await.unwrap();
    for (_, rx) in &mut subs {
        let n = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("every subscriber is served")
            .expect("a notification");
        assert_eq!(n.subscription, dynamic);
    }
    let with = p.open_fds();
    let per_connection = (with - before) as f64 / K as f64;
    println!("{K} connections: {before} -> {with} fds ({per_connection:.2} per connection)");
    assert!(
        with - before < K + K / 2,
        "{K} connections took {} fds ({per_connection:.2} each): the socket is duplicated",
        with - before
    );

    for (c, _) in &subs {
        c.close();
    }
    drop(subs);
    let after = p.wait_fds_at_most(before, Duration::from_secs(10)).await;
    assert!(
        after <= before,
        "fds after the subscribers left: {after} (before: {before})"
    );
    publisher.close();
}
