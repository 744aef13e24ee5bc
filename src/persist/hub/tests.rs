//! The hub's tests: subscriptions, bounds, coalescing, write-through and split rounds.

use std::io::{self, IoSlice};
use std::pin::pin;
use std::time::{Duration, Instant};

use super::round::SPLIT_AT;
use super::*;
use crate::golix::Algo;
use crate::work_pool::WorkPool;

/// A budget of `n` messages (bytes and stall at their defaults).
fn msgs(n: usize) -> Budget {
    Budget {
        messages: n,
        ..Budget::default()
    }
}

fn g() -> Ghid {
    Ghid::pseudorandom(Algo::SHA512)
}

fn frame_bytes(tag: u8) -> Bytes {
    let mut v = b"GOBD".to_vec();
    v.push(tag);
    Bytes::from(v)
}

fn note(sub: Ghid, object: Bytes) -> Notification {
    Notification {
        subscription: sub,
        object,
    }
}

async fn drain(o: &SendQueue) -> Vec<Bytes> {
    match o.next(usize::MAX).await {
        Next::Batch(b) => b,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn one_encoding_shared_by_all_subscribers_and_uploader_skipped() {
    let hub = Hub::new(msgs(16), 8);
    let dynamic = g();
    let subs: Vec<Subscriber> = (0..3).map(|_| hub.connect()).collect();
    for s in &subs {
        assert_eq!(s.subscribe(dynamic), Ok(true));
    }
    assert_eq!(subs[0].subscribe(dynamic), Ok(false));
    assert_eq!(hub.subscriber_count(&dynamic), 3);
    let sent = hub.fanout(&[note(dynamic, frame_bytes(1))], Some(subs[0].id()));
    assert_eq!(sent, 2);
    assert!(subs[0].outbox().is_empty(), "the uploader is not notified");
    let a = drain(subs[1].outbox()).await;
    let b = drain(subs[2].outbox()).await;
    assert_eq!(a[0].as_ptr(), b[0].as_ptr(), "same buffer, encoded once");
    assert_eq!(hub.stats().encoded, 1);
}

/// A fanout within a bound sends everything or nothing: the uploader is not counted,
/// and the subscribers of every round are.
#[tokio::test]
async fn a_fanout_within_a_bound_sends_all_or_nothing() {
    let hub = Hub::new(msgs(16), 8);
    let (one, two) = (g(), g());
    let subs: Vec<Subscriber> = (0..4).map(|_| hub.connect()).collect();
    for s in &subs[..3] {
        s.subscribe(one).unwrap();
    }
    subs[3].subscribe(two).unwrap();
    let notes = [note(one, frame_bytes(1)), note(two, frame_bytes(2))];
    let me = Some(subs[0].id());
    assert_eq!(hub.fanout_within(&notes, me, 2), None);
    assert!(subs.iter().all(|s| s.outbox().is_empty()), "nothing sent");
    assert_eq!(hub.fanout_within(&notes, me, 3), Some(3));
    assert!(subs[0].outbox().is_empty(), "the uploader is not notified");
    for s in &subs[1..] {
        assert_eq!(drain(s.outbox()).await.len(), 1);
    }
}

#[tokio::test]
async fn stalled_reader_keeps_only_the_newest_frame() {
    let hub = Hub::new(msgs(4), 8);
    let (d1, d2) = (g(), g());
    let s = hub.connect();
    s.subscribe(d1).unwrap();
    s.subscribe(d2).unwrap();
    for i in 0..100u8 {
        hub.fanout(&[note(d1, frame_bytes(i)), note(d2, frame_bytes(i))], None);
    }
    assert_eq!(s.outbox().len(), 2, "one pending slot per dynamic ghid");
    assert_eq!(hub.stats().queued, 2);
    let got = drain(s.outbox()).await;
    assert_eq!(got.len(), 2);
    for (b, d) in got.iter().zip([d1, d2]) {
        assert_eq!(b, &notify_frame(&d, &frame_bytes(99)));
    }
    assert_eq!(hub.stats().coalesced, 2 * 99);
    assert_eq!(hub.stats().queued, 0);
    assert!(!s.outbox().is_aborted());
}

#[tokio::test]
async fn mail_overflow_drops_the_slow_connection() {
    let hub = Hub::new(msgs(3), 8);
    let me = g();
    let s = hub.connect();
    let other = hub.connect();
    s.subscribe(me).unwrap();
    other.subscribe(me).unwrap();
    for i in 0..4u8 {
        hub.fanout(
            &[note(me, Bytes::from(vec![b'G', b'A', b'R', b'Q', i]))],
            None,
        );
        if i < 3 {
            drain(other.outbox()).await;
        }
    }
    assert!(s.outbox().is_aborted());
    s.outbox().aborted().await;
    assert!(matches!(s.outbox().next(8).await, Next::Abort));
    assert!(!other.outbox().is_aborted(), "others are unaffected");
    assert_eq!(hub.stats().slow_drops, 1);
}

#[tokio::test]
async fn limits_listing_and_cleanup() {
    let hub = Hub::new(msgs(4), 2);
    let s = hub.connect();
    let (a, b, c) = (g(), g(), g());
    s.subscribe(a).unwrap();
    s.subscribe(b).unwrap();
    assert_eq!(s.subscribe(c), Err(LimitReached(2)));
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(s.subscriptions(), want);
    assert!(s.unsubscribe(&a));
    assert!(!s.unsubscribe(&a));
    assert_eq!(hub.stats().subscriptions, 1);
    drop(s);
    assert_eq!(hub.subscriber_count(&b), 0);
    assert_eq!(
        hub.stats(),
        HubStats {
            subscriptions: 0,
            connections: 0,
            ..hub.stats()
        }
    );
}

#[tokio::test]
async fn close_drains_then_closes_and_reserve_waits_for_room() {
    let o = SendQueue::standalone(msgs(2));
    assert!(o.push_reply(Bytes::from_static(b"a")));
    assert!(o.push_reply(Bytes::from_static(b"b")));
    let reserve = o.reserve();
    let mut reserve = pin!(reserve);
    assert!(futures_util::FutureExt::now_or_never(reserve.as_mut()).is_none());
    assert_eq!(drain(&o).await.len(), 2);
    reserve.await.unwrap();
    o.close(CloseKind::Normal);
    assert_eq!(o.reserve().await, Err(NoRoom::Closed));
    assert!(!o.push_reply(Bytes::from_static(b"c")));
    assert!(matches!(o.next(8).await, Next::Close(CloseKind::Normal)));
}

#[test]
fn slot_keys() {
    let sub = g();
    assert_eq!(slot_key(&sub, b"GOBD...."), Some(SlotKey::new(sub, sub)));
    assert_eq!(slot_key(&sub, b"GARQ...."), None);
    assert_eq!(
        slot_key(&sub, b"GDXX junk"),
        None,
        "undecodable GDXX is not merged"
    );
    assert_eq!(slot_key(&sub, b""), None);
}

#[tokio::test]
async fn replies_wait_below_half_the_bytes_and_the_writer_takes_small_batches() {
    let budget = Budget {
        messages: 1000,
        bytes: 1000,
        stall: Duration::from_secs(60),
        total: 0,
    };
    let o = SendQueue::standalone(budget);
    // One reply of any size is admitted while under half the budget...
    o.reserve().await.unwrap();
    assert!(o.push_reply(Bytes::from(vec![1; 400])));
    o.reserve().await.unwrap();
    assert!(o.push_reply(Bytes::from(vec![2; 300])));
    assert_eq!(o.bytes(), 700);
    // ... then replies wait.
    let mut reserve = pin!(o.reserve());
    assert!(futures_util::FutureExt::now_or_never(reserve.as_mut()).is_none());
    // Notifications fit up to the whole budget; past it the connection is dropped.
    assert_eq!(o.push_notify(None, Bytes::from(vec![3; 300])), Push::Queued);
    assert_eq!(o.bytes(), 1000);
    let batch = drain(&o).await;
    assert_eq!(batch.len(), 3, "small messages come in one batch");
    assert_eq!(o.bytes(), 0);
    reserve.await.unwrap();
    assert_eq!(
        o.push_notify(None, Bytes::from(vec![4; 1001])),
        Push::Overflow
    );
    assert!(o.is_aborted());

    let big = SendQueue::standalone(Budget {
        bytes: 1 << 30,
        ..budget
    });
    for _ in 0..4 {
        big.push_reply(Bytes::from(vec![0; WRITE_BATCH_BYTES / 2 + 1]));
    }
    assert_eq!(
        drain(&big).await.len(),
        2,
        "a batch stops at WRITE_BATCH_BYTES"
    );
}

#[tokio::test]
async fn a_queue_over_its_reply_share_for_the_stall_time_is_dropped() {
    let o = SendQueue::standalone(Budget {
        messages: 1000,
        bytes: 100,
        stall: Duration::from_millis(200),
        total: 0,
    });
    o.push_reply(Bytes::from(vec![0; 60]));
    assert!(!o.stalled());
    let t = Instant::now();
    assert_eq!(o.reserve().await, Err(NoRoom::Stalled));
    assert!(
        t.elapsed() >= Duration::from_millis(190),
        "{:?}",
        t.elapsed()
    );
    assert!(o.is_aborted());
    assert_eq!(o.bytes(), 0, "the queue is freed");

    // Draining in time stops the clock.
    let o = SendQueue::standalone(Budget {
        messages: 1000,
        bytes: 100,
        stall: Duration::from_millis(200),
        total: 0,
    });
    o.push_reply(Bytes::from(vec![0; 60]));
    tokio::time::sleep(Duration::from_millis(150)).await;
    drain(&o).await;
    o.push_reply(Bytes::from(vec![0; 60]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !o.stalled(),
        "the clock restarted when the queue went below its share"
    );
}

#[tokio::test]
async fn coalescing_keeps_the_byte_count_true() {
    let hub = Hub::new(msgs(8), 8);
    let d = g();
    let s = hub.connect();
    s.subscribe(d).unwrap();
    hub.fanout(&[note(d, frame_bytes(1))], None);
    let one = s.outbox().bytes();
    assert_eq!(one, notify_frame(&d, &frame_bytes(1)).len());
    let mut bigger = b"GOBD".to_vec();
    bigger.extend_from_slice(&[7; 100]);
    let want = notify_frame(&d, &bigger).len();
    hub.fanout(&[note(d, Bytes::from(bigger))], None);
    assert_eq!(
        s.outbox().bytes(),
        want,
        "the replaced frame no longer counts"
    );
    assert_eq!(hub.stats().queued_bytes, want as u64);
    drain(s.outbox()).await;
    assert_eq!(hub.stats().queued_bytes, 0);
}

#[tokio::test]
async fn past_the_total_the_longest_stalled_connection_is_dropped() {
    let hub = Hub::new(
        Budget {
            messages: 1000,
            bytes: 100,
            stall: Duration::from_secs(60),
            total: 250,
        },
        8,
    );
    let (old, light, new) = (hub.connect(), hub.connect(), hub.connect());
    old.outbox().push_reply(Bytes::from(vec![0; 90])); // over its share first
    tokio::time::sleep(Duration::from_millis(20)).await;
    light.outbox().push_reply(Bytes::from(vec![0; 20]));
    new.outbox().push_reply(Bytes::from(vec![0; 90]));
    assert_eq!(hub.stats().queued_bytes, 200);
    assert!(!old.outbox().is_aborted());
    // 60 more bytes take the total to 260: the oldest heavy one goes.
    new.outbox().push_reply(Bytes::from(vec![0; 60]));
    assert!(old.outbox().is_aborted());
    assert!(!new.outbox().is_aborted() && !light.outbox().is_aborted());
    assert_eq!(hub.stats().queued_bytes, 170);
    assert_eq!(hub.stats().slow_drops, 1);
}

/// A real 127.0.0.1 TCP connection as a write-through sink (server end non-blocking,
/// both buffers small so that it fills quickly), and its client end.
struct Tcp(std::net::TcpStream);

impl DirectSink for Tcp {
    fn send(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
        use std::io::Write;
        (&self.0).write_vectored(frames)
    }
}

/// A write-through sink that keeps what it is sent, and which threads sent it.
#[derive(Default)]
struct Recorder(Mutex<(Vec<u8>, HashSet<std::thread::ThreadId>)>);

impl DirectSink for Recorder {
    fn send(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut r = self.0.lock().unwrap();
        r.1.insert(std::thread::current().id());
        for f in frames {
            r.0.extend_from_slice(f);
        }
        Ok(frames.iter().map(|f| f.len()).sum())
    }
}

/// A round of 601 subscribers goes out in parts, the caller's and the helpers', side by
/// side; every connection gets every notification, whole and in order. A round below
/// [`SPLIT_AT`] stays on the caller. Returns the threads that sent the large rounds.
fn large_round_in_parts(helpers: Helpers) -> HashSet<std::thread::ThreadId> {
    let hub = Hub::new(msgs(16), 8);
    hub.send_with(helpers);
    let (large, small) = (g(), g());
    let sinks: Vec<Arc<Recorder>> = (0..601).map(|_| Arc::default()).collect();
    let subs: Vec<Subscriber> = sinks
        .iter()
        .map(|sink| {
            let s = hub.connect();
            s.outbox().write_through(sink.clone());
            s.subscribe(large).unwrap();
            s
        })
        .collect();
    for i in 1..=5 {
        assert_eq!(hub.fanout(&[note(large, frame_bytes(i))], None), 601);
    }
    let want: Vec<u8> = (1..=5)
        .flat_map(|i| notify_frame(&large, &frame_bytes(i)).to_vec())
        .collect();
    let mut senders = HashSet::new();
    for sink in &sinks {
        let mut r = sink.0.lock().unwrap();
        assert!(r.0 == want, "every frame, whole and in order");
        senders.extend(r.1.drain());
    }
    let me = std::thread::current().id();
    assert!(senders.contains(&me), "the caller sends the first part");
    assert_eq!(hub.stats().delivered, 5 * 601);

    for s in &subs[..SPLIT_AT - 1] {
        s.subscribe(small).unwrap();
    }
    assert_eq!(
        hub.fanout(&[note(small, frame_bytes(6))], None),
        SPLIT_AT - 1
    );
    for sink in &sinks[..SPLIT_AT - 1] {
        assert_eq!(sink.0.lock().unwrap().1, HashSet::from([me]));
    }
    senders
}

/// A pool's threads take the parts they have room for: of the three parts, the caller sends
/// one and the pool's two threads the others.
#[test]
fn a_large_round_is_sent_in_parts_by_a_pool() {
    let pool = WorkPool::new(2, "test-fanout").unwrap();
    let senders = large_round_in_parts(Helpers::Pool(pool));
    assert!(senders.len() >= 2, "{senders:?}");
}

/// Threads bound to the other cores get a part each, or give it back to the caller if
/// their core is busy: either way every connection gets every frame once, in order.
#[test]
fn a_large_round_is_sent_in_parts_beside_the_caller() {
    let Some(beside) = crate::beside::Beside::start("test-beside").unwrap() else {
        eprintln!("one usable core: nothing to send beside");
        return;
    };
    large_round_in_parts(Helpers::Beside(Arc::new(beside)));
}

fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (server, _) = l.accept().unwrap();
    socket2::SockRef::from(&server)
        .set_send_buffer_size(64 * 1024)
        .unwrap();
    socket2::SockRef::from(&client)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    server.set_nonblocking(true).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (server, client)
}

/// A hub with a `messages` budget and one write-through subscriber to a fresh ghid on a
/// real socket: the hub, the subscriber, the ghid, the subscriber's socket (server end,
/// for the writer's use) and the reading end.
fn through_subscriber(
    messages: usize,
) -> (
    Arc<Hub>,
    Subscriber,
    Ghid,
    std::net::TcpStream,
    std::net::TcpStream,
) {
    let (server, client) = tcp_pair();
    let hub = Hub::new(msgs(messages), 8);
    let d = g();
    let s = hub.connect();
    s.outbox()
        .write_through(Arc::new(Tcp(server.try_clone().unwrap())));
    s.subscribe(d).unwrap();
    (hub, s, d, server, client)
}

/// Bytes in the socket's send queue (not yet acknowledged by the peer).
fn unsent(s: &std::net::TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int; the fd is open.
    unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    n
}

/// Reads `n` bytes on another thread.
fn read_n(mut client: std::net::TcpStream, n: usize) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut got = vec![0; n];
        client.read_exact(&mut got).unwrap();
        got
    })
}

/// A fanout call larger than the message budget, to a reader that keeps up: sent in
/// parts as the budget fills, never counted as a slow reader's backlog.
#[tokio::test]
async fn write_through_batch_larger_than_the_budget_is_sent_not_dropped() {
    let (hub, s, d, _server, client) = through_subscriber(4);
    let batch: Vec<_> = (1..=10).map(|i| note(d, frame_bytes(i))).collect();
    assert_eq!(hub.fanout(&batch, None), 10);
    let stats = hub.stats();
    assert_eq!((stats.delivered, stats.slow_drops), (10, 0));
    assert_eq!((stats.queued, stats.queued_bytes), (0, 0));
    assert!(!s.outbox().is_aborted());
    let want: Vec<u8> = (1..=10)
        .flat_map(|i| notify_frame(&d, &frame_bytes(i)).to_vec())
        .collect();
    assert_eq!(read_n(client, want.len()).join().unwrap(), want);
}

#[tokio::test]
async fn write_through_sends_a_whole_batch_at_once_and_merges_nothing() {
    let (hub, s, d, _server, client) = through_subscriber(16);
    let batch = [note(d, frame_bytes(1)), note(d, frame_bytes(2))];
    assert_eq!(hub.fanout(&batch, None), 2);
    let stats = hub.stats();
    assert_eq!(
        (stats.delivered, stats.coalesced),
        (2, 0),
        "both frames go out"
    );
    assert_eq!(
        (stats.queued, stats.queued_bytes),
        (0, 0),
        "nothing left queued"
    );
    assert!(s.outbox().is_empty());
    let want = [
        notify_frame(&d, &frame_bytes(1)),
        notify_frame(&d, &frame_bytes(2)),
    ]
    .concat();
    assert_eq!(read_n(client, want.len()).join().unwrap(), want);
}

/// A round the socket takes only part of: the frame cut short goes on first and whole,
/// the rest of the round queues behind it, and the peer reads every byte in order,
/// nothing interleaved (mail, so nothing may be merged either).
/// The writer's side, as `direct::writer` does it: what the send queue hands out,
/// written to the socket until the queue is empty.
async fn write_out(o: &SendQueue, socket: &std::net::TcpStream) {
    use std::io::Write;
    while !o.is_empty() {
        let Next::Batch(batch) = o.next(64).await else {
            panic!("expected a batch");
        };
        for b in batch {
            let mut at = 0;
            while at < b.len() {
                match (&*socket).write(&b[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(Duration::from_millis(1)).await
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}

/// Fans out `n` frames of about 200 KiB starting with `kind` (so the socket's buffers
/// fill part way through the round), drains the queue into the socket as `direct::writer`
/// does, then ends the stream. Returns the frames, everything the peer read, and the stats.
async fn cut_round(kind: &[u8; 4], n: u8) -> (Vec<Bytes>, Vec<u8>, HubStats) {
    let (hub, s, d, writer_end, mut client) = through_subscriber(64);
    let o = s.outbox();
    let big = |tag: u8| {
        let mut v = kind.to_vec();
        v.resize(200 * 1024, tag);
        Bytes::from(v)
    };
    let batch: Vec<_> = (1..=n).map(|i| note(d, big(i))).collect();
    hub.fanout(&batch, None);
    assert!(o.bytes() > 0, "the socket took the whole round");
    let frames: Vec<Bytes> = (1..=n).map(|i| notify_frame(&d, &big(i))).collect();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        got
    });
    write_out(o, &writer_end).await;
    writer_end.shutdown(std::net::Shutdown::Write).unwrap();
    (frames, reader.join().unwrap(), hub.stats())
}

/// Frames that never merge (share requests): all arrive, whole and in order.
#[tokio::test]
async fn a_round_cut_short_queues_its_rest_in_order() {
    let (frames, got, stats) = cut_round(b"GARQ", 3).await;
    assert!(
        got == frames.concat(),
        "not the three frames whole, in order"
    );
    assert_eq!(
        (stats.delivered, stats.queued, stats.queued_bytes),
        (3, 0, 0)
    );
}

/// Frames of one dynamic object: the frame the socket took part of is finished whole,
/// however many newer frames of the same object follow (never replaced by one: that would
/// tear the websocket stream), and of those only the newest is sent (latest-wins).
#[tokio::test]
async fn a_cut_frame_is_finished_whole_and_the_newer_ones_merge() {
    let (frames, got, stats) = cut_round(b"GOBD", 5).await;
    // `cut`: the last frame the socket took (part or all) of during the round.
    let cut = (0..4)
        .find(|&c| {
            let mut want = frames[..=c].concat();
            want.extend_from_slice(&frames[4]);
            got == want
        })
        .unwrap_or_else(|| panic!("{} bytes read: not whole frames then the newest", got.len()));
    assert!(
        cut < 3,
        "the socket took frames 0..={cut}: none left to merge"
    );
    assert_eq!(stats.coalesced, 3 - cut as u64);
    assert_eq!((stats.queued, stats.queued_bytes), (0, 0));
}

#[tokio::test]
async fn a_full_socket_hands_over_to_the_writer_and_back() {
    let (hub, s, d, writer_end, client) = through_subscriber(64);
    let o = s.outbox();

    // A reply larger than the socket's buffers: it takes part, the rest is queued.
    let big = Bytes::from(vec![0xab; 4 << 20]);
    assert!(o.push_reply(big.clone()));
    assert!(o.bytes() > 0 && o.bytes() < big.len(), "{}", o.bytes());
    // Behind it, notifications queue and merge (latest-wins) while the socket is full.
    for i in 0..10 {
        hub.fanout(&[note(d, frame_bytes(i))], None);
    }
    assert_eq!(o.len(), 2, "the rest of the reply and one pending frame");
    assert_eq!(hub.stats().coalesced, 9);

    // The writer's side: what the send queue hands out, written as the peer reads.
    let last = notify_frame(&d, &frame_bytes(9));
    let after = notify_frame(&d, &frame_bytes(42));
    let reader = read_n(client, big.len() + last.len() + after.len());
    write_out(o, &writer_end).await;
    // Emptied: the writer waits, and the send queue writes through again (once the peer has
    // read what the kernel still holds, so that the socket takes the next one whole).
    assert!(futures_util::FutureExt::now_or_never(o.next(64)).is_none());
    let t = Instant::now();
    while unsent(&writer_end) > 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "the peer reads");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hub.fanout(&[note(d, frame_bytes(42))], None);
    assert!(o.is_empty(), "sent at once");
    let got = reader.join().unwrap();
    assert_eq!(&got[..big.len()], &big[..], "the reply, whole and first");
    assert_eq!(&got[big.len()..big.len() + last.len()], &last[..]);
    assert_eq!(&got[big.len() + last.len()..], &after[..]);
    assert_eq!(hub.stats().queued, 0);
}
