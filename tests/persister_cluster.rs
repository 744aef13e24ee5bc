//! The persister as a cluster: front-ends over a real 3-node NATS JetStream cluster
//! (`nats_support`, nats-server processes on 127.0.0.1). Front-ends run in-process (real
//! actix servers on 127.0.0.1:0) or as the real `hgx-persister` binary with `--store`.
//! Clients are the real Rust persister client. Every wait is bounded.
//!
//! Skipped, with a message, only when `nats-server` is not installed.

// Only the fixtures of `common` are used here.
#[allow(unused_imports)]
mod common;
mod nats_support;
mod proc_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use hypergolix::golix::{
    Algo, FirstParty, Geoc, Ghid, Gobd, Object, Policy, Secret, DEFAULT_LEGROOM,
};
use hypergolix::persist::client::{ClientError, Notification, Notifications, PersisterClient};
use hypergolix::persist::server::{self, Running, Settings, StoreChoice};
use hypergolix::persist::store::NatsStore;
use nats_support::NatsCluster;

const WAIT: Duration = Duration::from_secs(20);

async fn front_end(cluster: &NatsCluster, ns: &str) -> Running {
    front_end_with(cluster, ns, |_| {}).await
}

/// [`front_end`] with `edit` applied to its settings.
async fn front_end_with(cluster: &NatsCluster, ns: &str, edit: impl Fn(&mut Settings)) -> Running {
    let mut s = Settings::local(None);
    s.workers = 1;
    s.verify_threads = 4;
    s.store = StoreChoice::Nats(Box::new(cluster.store_options(ns)));
    edit(&mut s);
    server::start(s).await.expect("front-end starts")
}

/// Two front-ends of one namespace with a client on each.
struct Pair {
    fa: Running,
    fb: Running,
    ca: PersisterClient,
    rxa: Notifications,
    cb: PersisterClient,
    rxb: Notifications,
}

impl Pair {
    /// Front-end A, front-end B, A's client and its notifications, B's client and its.
    fn parts(
        self,
    ) -> (
        Running,
        Running,
        PersisterClient,
        Notifications,
        PersisterClient,
        Notifications,
    ) {
        (self.fa, self.fb, self.ca, self.rxa, self.cb, self.rxb)
    }
}

async fn pair(cluster: &NatsCluster, ns: &str) -> Pair {
    pair_with(cluster, ns, |_| {}).await
}

/// [`pair`] with `edit` applied to both front-ends' settings.
async fn pair_with(cluster: &NatsCluster, ns: &str, edit: impl Fn(&mut Settings)) -> Pair {
    let fa = front_end_with(cluster, ns, &edit).await;
    let fb = front_end_with(cluster, ns, &edit).await;
    let (ca, rxa) = connect(&fa).await;
    let (cb, rxb) = connect(&fb).await;
    Pair {
        fa,
        fb,
        ca,
        rxa,
        cb,
        rxb,
    }
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

async fn nothing(rx: &mut Notifications) {
    if let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        panic!("unexpected notification {n:?}");
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(e) => e.code().unwrap_or("<not a server error>").to_owned(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn gidc(a: &FirstParty) -> Vec<u8> {
    a.gidc().encode()
}

/// A dynamic object of `n` frames by `a`: (frames, containers).
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

/// Publishes, retrying `unavailable` (a cluster electing a new leader) for a bounded time.
async fn publish_retrying(c: &PersisterClient, obj: &[u8]) -> Result<(), ClientError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.publish(obj).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some("unavailable") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[actix_rt::test]
async fn front_ends_of_one_cluster_are_one_persister() {
    let Some(cluster) = NatsCluster::start(3).await else {
        return;
    };
    let (fa, fb, ca, mut rxa, cb, mut rxb) = pair(&cluster, "one").await.parts();
    let (a, b) = (common::fixture(1), common::fixture(2));

    // Publish through A, read through B.
    assert!(ca.publish(&gidc(&a)).await.unwrap().new);
    assert!(
        !cb.publish(&gidc(&a)).await.unwrap().new,
        "idempotent across front-ends"
    );
    cb.publish(&gidc(&b)).await.unwrap();
    let secret = Secret::random();
    let geoc = a.make_container(b"hello", &secret).unwrap();
    let gobs = a.make_bind_static(geoc.ghid).unwrap();
    assert_eq!(code(ca.publish(&geoc.encode()).await), "unbound_container");
    ca.publish(&gobs.encode()).await.unwrap();
    ca.publish(&geoc.encode()).await.unwrap();
    assert_eq!(
        cb.get(&geoc.ghid).await.unwrap(),
        Bytes::from(geoc.encode())
    );
    assert!(cb.exists(&gobs.ghid).await.unwrap());
    assert_eq!(cb.list_bindings(&geoc.ghid).await.unwrap(), vec![gobs.ghid]);
    assert_eq!(cb.query_debinding(&gobs.ghid).await.unwrap(), None);
    let unknown = Ghid::pseudorandom(Algo::SHA512);
    assert!(!cb.exists(&unknown).await.unwrap());
    assert_eq!(code(cb.get(&unknown).await), "not_found");

    // A container larger than inline_max lives in the object store.
    let big = a.make_container(&vec![9u8; 100 * 1024], &secret).unwrap();
    let big_bind = a.make_bind_static(big.ghid).unwrap();
    ca.publish(&big_bind.encode()).await.unwrap();
    ca.publish(&big.encode()).await.unwrap();
    assert_eq!(cb.get(&big.ghid).await.unwrap(), Bytes::from(big.encode()));

    // A dynamic object: frames through A reach subscribers on both front-ends, never the
    // uploader; the HTTP read path of B follows.
    let (frames, containers) = dynamic(&a, 3);
    let d = frames[0].dynamic;
    let (ca2, mut rxa2) = connect(&fa).await;
    ca2.subscribe(&d).await.unwrap();
    cb.subscribe(&d).await.unwrap();
    ca.subscribe(&d).await.unwrap();
    for (i, (f, c)) in frames.iter().zip(&containers).enumerate() {
        ca.publish(&f.encode()).await.unwrap();
        ca.publish(&c.encode()).await.unwrap();
        for rx in [&mut rxb, &mut rxa2] {
            let n = next(rx).await;
            assert_eq!(n.subscription, d);
            match Object::decode(&n.object, Policy::STRICT).unwrap() {
                Object::Gobd(g) => assert_eq!((g.counter, g.frame), (i as u64, f.frame)),
                other => panic!("expected a frame, got {other:?}"),
            }
        }
        assert_eq!(cb.get(&d).await.unwrap(), Bytes::from(f.encode()));
    }
    nothing(&mut rxa).await;
    let http = awc::Client::builder().disable_redirects().finish();
    let resp = http
        .get(format!("{}/o/{}", fb.http_url(), d.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 307);
    let resp = http
        .get(format!("{}/o/{}", fb.http_url(), frames[0].frame.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 410, "a replaced frame is gone");

    // Rules hold as on one persister.
    assert_eq!(code(cb.publish(&frames[1].encode()).await), "illegal_frame");
    let by_b = b.make_debind(d).unwrap();
    assert_eq!(
        code(cb.publish(&by_b.encode()).await),
        "inconsistent_author"
    );

    // Debinding through B: subscribers on A get the GDXX; everything it kept alive is gone.
    let gdxx = a.make_debind(d).unwrap();
    cb.publish(&gdxx.encode()).await.unwrap();
    let n = next(&mut rxa2).await;
    assert_eq!((n.subscription, n.object), (d, Bytes::from(gdxx.encode())));
    assert_eq!(code(ca.get(&d).await), "not_found");
    assert_eq!(code(ca.get(&containers[2].ghid).await), "not_found");
    assert_eq!(ca.query_debinding(&d).await.unwrap(), Some(gdxx.ghid));
    let resp = http
        .get(format!("{}/o/{}", fa.http_url(), d.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 410);

    // Collected large objects are gone from the object store too.
    cb.publish(&a.make_debind(big_bind.ghid).unwrap().encode())
        .await
        .unwrap();
    assert_eq!(code(ca.get(&big.ghid).await), "not_found");

    // Mail: stored in the cluster, delivered at subscribe on any front-end, live across.
    let garq = a
        .make_handshake(
            b.second_party(),
            Ghid::pseudorandom(Algo::SHA512),
            &Secret::random(),
        )
        .unwrap();
    ca.publish(&garq.encode()).await.unwrap();
    let (bb, mut bbrx) = connect(&fb).await;
    bb.subscribe(&b.ghid()).await.unwrap();
    assert_eq!(next(&mut bbrx).await.object, Bytes::from(garq.encode()));
    let garq2 = a
        .make_handshake(
            b.second_party(),
            Ghid::pseudorandom(Algo::SHA512),
            &Secret::random(),
        )
        .unwrap();
    ca.publish(&garq2.encode()).await.unwrap();
    assert_eq!(next(&mut bbrx).await.object, Bytes::from(garq2.encode()));
    ca.publish(&b.make_debind(garq.ghid).unwrap().encode())
        .await
        .unwrap();
    next(&mut bbrx).await;
    let (bb2, mut bbrx2) = connect(&fa).await;
    bb2.subscribe(&b.ghid()).await.unwrap();
    assert_eq!(next(&mut bbrx2).await.object, Bytes::from(garq2.encode()));
    nothing(&mut bbrx2).await;

    // A front-end no longer watching a ghid drops its NATS subscription; others still hear.
    cb.unsubscribe(&d).await.unwrap();
    fa.stop().await.unwrap();
    fb.stop().await.unwrap();
}

/// Waits (bounded) until the cluster reports exactly `want` notification subscriptions.
async fn wait_subs(cluster: &NatsCluster, ns: &str, want: &[String]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = cluster.subscriptions("hgx-persister notify", &format!("{ns}.n."));
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subscriptions {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn a_front_end_subscribes_only_to_what_its_clients_watch() {
    let Some(cluster) = NatsCluster::start(3).await else {
        return;
    };
    let (fa, fb, ca, _rxa, cb, _rxb) = pair(&cluster, "watch").await.parts();
    let (cb2, _rxb2) = connect(&fb).await;
    let (x, y) = (
        Ghid::pseudorandom(Algo::SHA512),
        Ghid::pseudorandom(Algo::SHA512),
    );
    let subject = |g: &Ghid| format!("watch.n.{}", g.as_str());
    wait_subs(&cluster, "watch", &[]).await;
    // Two clients of B watch x: B subscribes once; A, whose clients watch nothing, not at all.
    cb.subscribe(&x).await.unwrap();
    cb2.subscribe(&x).await.unwrap();
    wait_subs(&cluster, "watch", &[subject(&x)]).await;
    // A's client watches x and y: A subscribes to both.
    ca.subscribe(&x).await.unwrap();
    ca.subscribe(&y).await.unwrap();
    let mut both = vec![subject(&x), subject(&x), subject(&y)];
    both.sort();
    wait_subs(&cluster, "watch", &both).await;
    // B's subscription lasts while any of its clients watches x.
    cb.unsubscribe(&x).await.unwrap();
    wait_subs(&cluster, "watch", &both).await;
    drop(cb2);
    let mut left = vec![subject(&x), subject(&y)];
    left.sort();
    wait_subs(&cluster, "watch", &left).await;
    fa.stop().await.unwrap();
    fb.stop().await.unwrap();
}

#[actix_rt::test]
async fn racing_front_ends_keep_every_rule() {
    let Some(cluster) = NatsCluster::start(3).await else {
        return;
    };
    let (fa, fb, ca, _rxa, cb, _rxb) = pair(&cluster, "race").await.parts();
    let (a, b) = (common::fixture(1), common::fixture(2));
    ca.publish(&gidc(&a)).await.unwrap();
    ca.publish(&gidc(&b)).await.unwrap();
    let secret = Secret::random();
    for round in 0..6 {
        // Two frames with one counter for one dynamic ghid, one through each front-end.
        let c0 = a
            .make_container(format!("r{round}").as_bytes(), &secret)
            .unwrap();
        let f0 = a.make_bind_dynamic(c0.ghid).unwrap();
        ca.publish(&f0.encode()).await.unwrap();
        ca.publish(&c0.encode()).await.unwrap();
        let (x, y) = (
            a.make_container(format!("x{round}").as_bytes(), &secret)
                .unwrap(),
            a.make_container(format!("y{round}").as_bytes(), &secret)
                .unwrap(),
        );
        let fx = a.make_next_frame(&f0, x.ghid, DEFAULT_LEGROOM).unwrap();
        let fy = a.make_next_frame(&f0, y.ghid, DEFAULT_LEGROOM).unwrap();
        assert_eq!(fx.counter, fy.counter);
        let (bx, by) = (fx.encode(), fy.encode());
        let (rx, ry) = tokio::join!(ca.publish(&bx), cb.publish(&by));
        let (winner, target, loser_target) = match (&rx, &ry) {
            (Ok(_), Err(e)) if e.code() == Some("illegal_frame") => (&fx, &x, &y),
            (Err(e), Ok(_)) if e.code() == Some("illegal_frame") => (&fy, &y, &x),
            other => panic!("round {round}: exactly one frame must win: {other:?}"),
        };
        cb.publish(&target.encode()).await.unwrap();
        assert_eq!(
            code(ca.publish(&loser_target.encode()).await),
            "unbound_container",
            "round {round}: nothing binds the losing frame's target"
        );
        for c in [&ca, &cb] {
            assert_eq!(
                c.get(&f0.dynamic).await.unwrap(),
                Bytes::from(winner.encode())
            );
        }
        assert_eq!(
            ca.list_bindings(&winner.target()).await.unwrap(),
            vec![f0.dynamic],
            "round {round}: the winner's target is bound by the dynamic object"
        );
        assert!(
            !cb.exists(&c0.ghid).await.unwrap(),
            "round {round}: the replaced target was collected"
        );

        // A debinding of the only binding of a container racing a new binding of it: the
        // outcome is one of the two serial orders, and the index never loses the new binding
        // (re-publishing the container succeeds because the new binding holds it).
        let geoc = a
            .make_container(format!("c{round}").as_bytes(), &secret)
            .unwrap();
        let s1 = a.make_bind_static(geoc.ghid).unwrap();
        ca.publish(&s1.encode()).await.unwrap();
        ca.publish(&geoc.encode()).await.unwrap();
        let gdxx = a.make_debind(s1.ghid).unwrap();
        // Another identity's binding (one identity's bindings of one target are one ghid).
        let s2 = b.make_bind_static(geoc.ghid).unwrap();
        let (b1, b2) = (gdxx.encode(), s2.encode());
        let (r1, r2) = tokio::join!(ca.publish(&b1), cb.publish(&b2));
        r1.unwrap();
        r2.unwrap();
        cb.publish(&geoc.encode()).await.unwrap();
        for c in [&ca, &cb] {
            assert_eq!(c.list_bindings(&geoc.ghid).await.unwrap(), vec![s2.ghid]);
            assert_eq!(c.get(&geoc.ghid).await.unwrap(), Bytes::from(geoc.encode()));
            assert!(!c.exists(&s1.ghid).await.unwrap());
        }
    }

    // Collection is idempotent: the same debinding again through the other front-end changes
    // nothing, and a sweep finds no transaction left behind.
    let geoc = a.make_container(b"last", &secret).unwrap();
    let s = a.make_bind_static(geoc.ghid).unwrap();
    ca.publish(&s.encode()).await.unwrap();
    ca.publish(&geoc.encode()).await.unwrap();
    let gdxx = a.make_debind(s.ghid).unwrap();
    let b1 = gdxx.encode();
    let (r1, r2) = tokio::join!(ca.publish(&b1), cb.publish(&b1));
    assert!(r1.unwrap().new ^ r2.unwrap().new, "stored exactly once");
    assert_eq!(code(cb.get(&geoc.ghid).await), "not_found");
    let store = NatsStore::connect(
        &cluster.store_options("race"),
        hypergolix::logging::discard(),
    )
    .unwrap();
    store.sweep_now().unwrap();
    assert_eq!(store.replicas(), 3, "R3 by default on a 3-node cluster");
    fa.stop().await.unwrap();
    fb.stop().await.unwrap();
}

/// The mailbox bounds hold across front-ends: one authenticated sender's requests to one
/// recipient, raced through two front-ends, stop at the per-sender cap; another sender still
/// gets in until the mailbox is full; then only a sender well below the heaviest one does,
/// and the heaviest sender's lowest request makes room.
#[actix_rt::test]
async fn mailbox_bounds_hold_across_front_ends() {
    let Some(cluster) = NatsCluster::start(3).await else {
        return;
    };
    let limit = |s: &mut Settings| {
        s.limits.max_requests_per_sender = 3;
        s.limits.max_requests_per_recipient = 5;
    };
    let (fa, fb, ca, _rxa, cb, _rxb) = pair_with(&cluster, "mail", limit).await.parts();
    let (cc, _rxc) = connect(&fb).await;
    let (anon, _rxn) = connect(&fa).await;
    let (a, b, c) = (common::fixture(1), common::fixture(2), common::fixture(3));
    for id in [&a, &b, &c] {
        ca.publish(&gidc(id)).await.unwrap();
    }
    ca.authenticate(&a).await.unwrap();
    cb.authenticate(&a).await.unwrap();
    cc.authenticate(&c).await.unwrap();
    let garq = |from: &FirstParty| {
        from.make_handshake(
            b.second_party(),
            Ghid::pseudorandom(Algo::SHA512),
            &Secret::random(),
        )
        .unwrap()
    };
    let mine: Vec<_> = (0..8).map(|_| garq(&a)).collect();
    let encoded: Vec<Vec<u8>> = mine.iter().map(|g| g.encode()).collect();
    let results = futures_util::future::join_all(
        encoded
            .iter()
            .enumerate()
            .map(|(i, g)| publish_retrying(if i % 2 == 0 { &ca } else { &cb }, g)),
    )
    .await;
    let mut stored = Vec::new();
    for (g, r) in mine.iter().zip(results) {
        match r {
            Ok(()) => stored.push(g.ghid),
            Err(e) => assert_eq!(e.code(), Some("mailbox_full"), "{e}"),
        }
    }
    assert_eq!(
        stored.len(),
        3,
        "exactly the per-sender cap, across front-ends"
    );

    let theirs: Vec<_> = (0..3).map(|_| garq(&c)).collect();
    cc.publish(&theirs[0].encode()).await.unwrap();
    cc.publish(&theirs[1].encode()).await.unwrap();
    assert_eq!(
        code(cc.publish(&theirs[2].encode()).await),
        "mailbox_full",
        "full, and this sender holds only one fewer than the heaviest"
    );
    let anonymous = garq(&b);
    anon.publish(&anonymous.encode()).await.unwrap();
    stored.sort();
    let evicted = stored.remove(0);
    assert_eq!(
        code(cb.get(&evicted).await),
        "not_found",
        "the heaviest sender's lowest"
    );

    let (bb, mut rx) = connect(&fb).await;
    bb.subscribe(&b.ghid()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next(&mut rx).await.object);
    }
    nothing(&mut rx).await;
    let mut want: Vec<Bytes> = stored
        .iter()
        .map(|g| Bytes::from(mine.iter().find(|m| m.ghid == *g).unwrap().encode()))
        .chain(theirs[..2].iter().map(|g| Bytes::from(g.encode())))
        .chain([Bytes::from(anonymous.encode())])
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    fa.stop().await.unwrap();
    fb.stop().await.unwrap();
}

/// A front-end's rule passes may start from rows it saw earlier; when another front-end has
/// changed them since, the outcome is still the one fresh rows give: a frame built on a
/// replaced state is refused, the next one is stored, and a container the other front-end
/// bound meanwhile is accepted.
#[actix_rt::test]
async fn outdated_rows_seen_earlier_decide_nothing() {
    let Some(cluster) = NatsCluster::start(3).await else {
        return;
    };
    let (fa, fb, ca, _rxa, cb, _rxb) = pair(&cluster, "stale").await.parts();
    let a = common::fixture(1);
    ca.publish(&gidc(&a)).await.unwrap();
    let secret = Secret::random();
    let (frames, containers) = dynamic(&a, 2);
    ca.publish(&frames[0].encode()).await.unwrap();
    ca.publish(&containers[0].encode()).await.unwrap();
    // Nothing binds containers[1] yet: A sees it refused (and its rows empty).
    assert_eq!(
        code(ca.publish(&containers[1].encode()).await),
        "unbound_container"
    );
    // B moves the object on; A last saw it at counter 0.
    cb.publish(&frames[1].encode()).await.unwrap();
    let other = a.make_container(b"other", &secret).unwrap();
    let rival = a
        .make_next_frame(&frames[0], other.ghid, DEFAULT_LEGROOM)
        .unwrap();
    assert_eq!(rival.counter, frames[1].counter);
    assert_eq!(code(ca.publish(&rival.encode()).await), "illegal_frame");
    // A had seen containers[1] as unbound-and-absent; B's frame binds it now.
    ca.publish(&containers[1].encode()).await.unwrap();
    let next = a
        .make_next_frame(&frames[1], containers[0].ghid, DEFAULT_LEGROOM)
        .unwrap();
    ca.publish(&next.encode()).await.unwrap();
    for c in [&ca, &cb] {
        assert_eq!(
            c.get(&frames[0].dynamic).await.unwrap(),
            Bytes::from(next.encode())
        );
    }
    fa.stop().await.unwrap();
    fb.stop().await.unwrap();
}

/// Transactions of two front-ends are serializable even when they write disjoint rows: each
/// writes its own ghid only if it read both absent (write skew), so at most one may win a
/// round. Only the validation of rows read and not written (by a read after the locks, or by
/// the commit's own append in the record's partition) stops both from committing.
#[test]
fn write_skew_is_refused_across_front_ends() {
    use hypergolix::persist::store::{Record, Store, WriteSet};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(cluster) = rt.block_on(NatsCluster::start(3)) else {
        return;
    };
    let open = || {
        std::sync::Arc::new(
            NatsStore::connect(
                &cluster.store_options("skew"),
                hypergolix::logging::discard(),
            )
            .unwrap(),
        )
    };
    let (s1, s2) = (open(), open());
    let mut both = 0;
    let mut none = 0;
    for _ in 0..40 {
        let (x, y) = (
            Ghid::pseudorandom(Algo::SHA512),
            Ghid::pseudorandom(Algo::SHA512),
        );
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = [(s1.clone(), x), (s2.clone(), y)]
            .into_iter()
            .map(|(store, mine)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    store.transact(&mut |view: &dyn Store| {
                        let mut w = WriteSet::default();
                        if view.record(&x)?.is_none() && view.record(&y)?.is_none() {
                            w.records.insert(mine, Some(Record::Identity));
                        }
                        Ok(w)
                    })
                })
            })
            .collect();
        for r in racers {
            r.join().unwrap().unwrap();
        }
        match (s1.record(&x).unwrap(), s2.record(&y).unwrap()) {
            (Some(_), Some(_)) => both += 1,
            (None, None) => none += 1,
            _ => {}
        }
    }
    assert_eq!(both, 0, "both transactions of a round committed");
    assert_eq!(
        none, 0,
        "a round where neither committed: one must always win"
    );
}

#[actix_rt::test]
async fn a_killed_nats_node_loses_no_acknowledged_publish() {
    let Some(mut cluster) = NatsCluster::start(3).await else {
        return;
    };
    let fa = front_end(&cluster, "kill").await;
    let (ca, _rx) = connect(&fa).await;
    let a = common::fixture(1);
    ca.publish(&gidc(&a)).await.unwrap();
    let secret = Secret::random();
    let (frames, containers) = dynamic(&a, 24);
    let mut acked: Vec<(Ghid, Vec<u8>)> = Vec::new();
    for (i, (f, c)) in frames.iter().zip(&containers).enumerate() {
        if i == 8 {
            // Node 0 is the first the front-end connected to: it also has to reconnect.
            cluster.kill9(0).await;
        }
        let s = a
            .make_container(format!("static {i}").as_bytes(), &secret)
            .unwrap();
        let b = a.make_bind_static(s.ghid).unwrap();
        for obj in [f.encode(), c.encode(), b.encode(), s.encode()] {
            publish_retrying(&ca, &obj)
                .await
                .unwrap_or_else(|e| panic!("publish {i}: {e}\n{}", cluster.logs()));
            acked.push((Object::decode(&obj, Policy::STRICT).unwrap().ghid(), obj));
        }
    }
    // Read back through a new front-end on the surviving nodes.
    let fb = front_end(&cluster, "kill").await;
    let (cb, _rxb) = connect(&fb).await;
    let last = frames.len() - 1;
    for (g, bytes) in &acked {
        let replaced_frame = frames[..last].iter().any(|f| f.frame == *g);
        let replaced_target = containers[..last].iter().any(|c| c.ghid == *g);
        if replaced_frame || replaced_target {
            continue;
        }
        assert_eq!(&cb.get(g).await.unwrap()[..], &bytes[..], "{g:?}");
    }
    assert_eq!(
        cb.get(&frames[0].dynamic).await.unwrap(),
        Bytes::from(frames[last].encode())
    );
    // The killed node comes back and catches up; service goes on.
    cluster.restart(0).await;
    let next = a
        .make_next_frame(&frames[last], containers[0].ghid, DEFAULT_LEGROOM)
        .unwrap();
    publish_retrying(&cb, &next.encode()).await.unwrap();
    fa.stop().await.unwrap();
    fb.stop().await.unwrap();
}

#[actix_rt::test]
async fn a_full_cluster_restart_keeps_the_data() {
    let Some(mut cluster) = NatsCluster::start(3).await else {
        return;
    };
    let a = common::fixture(1);
    let (frames, containers) = dynamic(&a, 3);
    {
        let fa = front_end(&cluster, "restart").await;
        let (ca, _rx) = connect(&fa).await;
        ca.publish(&gidc(&a)).await.unwrap();
        for (f, c) in frames.iter().zip(&containers) {
            ca.publish(&f.encode()).await.unwrap();
            ca.publish(&c.encode()).await.unwrap();
        }
        fa.stop().await.unwrap();
    }
    for i in 0..3 {
        cluster.stop(i).await;
    }
    for i in 0..3 {
        cluster.restart(i).await;
    }
    cluster.wait_jetstream().await;
    let fb = front_end(&cluster, "restart").await;
    let (cb, _rx) = connect(&fb).await;
    // Each partition's stream elects its leader again after a full restart, one after
    // another: a read may be `unavailable` until its stream has one (the store itself rides
    // out short elections; on a loaded machine they take longer).
    let deadline = Instant::now() + Duration::from_secs(60);
    let get = |ghid: Ghid| {
        let cb = &cb;
        async move {
            loop {
                match cb.get(&ghid).await {
                    Err(e) if e.code() == Some("unavailable") && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => break other.unwrap(),
                }
            }
        }
    };
    assert_eq!(get(a.ghid()).await, Bytes::from(gidc(&a)));
    assert_eq!(
        get(frames[0].dynamic).await,
        Bytes::from(frames[2].encode())
    );
    assert_eq!(
        get(containers[2].ghid).await,
        Bytes::from(containers[2].encode())
    );
    let publish = |bytes: Vec<u8>| {
        let cb = &cb;
        async move {
            loop {
                match cb.publish(&bytes).await {
                    Err(e) if e.code() == Some("unavailable") && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    other => break other,
                }
            }
        }
    };
    assert_eq!(code(publish(frames[1].encode()).await), "illegal_frame");
    let more = a
        .make_next_frame(&frames[2], containers[2].ghid, DEFAULT_LEGROOM)
        .unwrap();
    publish(more.encode()).await.unwrap();
    fb.stop().await.unwrap();
}

#[actix_rt::test]
async fn the_binary_serves_from_the_cluster_and_a_killed_front_end_blocks_nothing() {
    let Some(cluster) = NatsCluster::start(3).await else {
        return;
    };
    let lines = format!(
        "  store: {}\n  nats:\n    namespace: bin\n    partitions: 3\n",
        cluster.url()
    );
    let mut p1 = proc_support::Persister::with_server_lines(&lines).await;
    let (c1, _rx1) = PersisterClient::connect(&p1.ws_url()).await.unwrap();
    let (a, b) = (common::fixture(1), common::fixture(2));
    c1.publish(&gidc(&a)).await.unwrap();
    c1.publish(&gidc(&b)).await.unwrap();

    // Many requests for one mailbox at once (they all write its row), and the front-end is
    // SIGKILLed while they are in flight.
    let garqs: Vec<Vec<u8>> = (0..40)
        .map(|_| {
            a.make_handshake(
                b.second_party(),
                Ghid::pseudorandom(Algo::SHA512),
                &Secret::random(),
            )
            .unwrap()
            .encode()
        })
        .collect();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sends = futures_util::future::join_all(garqs.iter().map(|g| {
        let (c1, acked) = (&c1, acked.clone());
        async move {
            if c1.publish(g).await.is_ok() {
                acked.lock().unwrap().push(g.clone());
            }
        }
    }));
    let kill = async {
        while acked.lock().unwrap().len() < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        p1.proc.kill9().await;
    };
    tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(sends, kill)
    })
    .await
    .expect("publishes end (acked or failed) once the front-end is gone");
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 5 && acked.len() < garqs.len(),
        "killed mid-way: {}",
        acked.len()
    );

    // Another front-end (the binary again): every acknowledged request is in the mailbox, and
    // the mailbox row is not stuck behind the dead front-end's transactions.
    let p2 = proc_support::Persister::with_server_lines(&lines).await;
    let (c2, mut rx2) = PersisterClient::connect(&p2.ws_url()).await.unwrap();
    let late = a
        .make_handshake(
            b.second_party(),
            Ghid::pseudorandom(Algo::SHA512),
            &Secret::random(),
        )
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), c2.publish(&late.encode()))
        .await
        .expect("a new request is stored within the lease")
        .unwrap();
    c2.subscribe(&b.ghid()).await.unwrap();
    let mut mail = std::collections::HashSet::new();
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(2), rx2.recv()).await {
        mail.insert(n.object.to_vec());
    }
    for g in &acked {
        assert!(mail.contains(g), "an acknowledged request was lost");
    }
    assert!(mail.contains(&late.encode()));
    assert!(mail.len() <= garqs.len() + 1);

    // A bad store value is refused with a clear message.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hypergolix.yml"),
        "server:\n  port: 0\n  logdir: ./logs\n  pid_file: ./p.pid\n",
    )
    .unwrap();
    let mut bad = proc_support::persister_command(dir.path());
    let out = bad.arg("--store").arg("postgres://x").output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.store"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
