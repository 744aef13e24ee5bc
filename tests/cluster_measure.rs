//! Measurements of the persister cluster (BENCHMARKS.md, "Persister cluster"): the cluster
//! against the sled persister as real processes, and where a cluster publish's JetStream
//! operations go. Ignored by default; run with
//! `cargo test --features test-suite0 --test cluster_measure -- --ignored --nocapture --test-threads 1`.
//! Skipped, with a message, only when `nats-server` is not installed.

// Only the fixtures of `common` are used here.
#[allow(unused_imports)]
mod common;
mod nats_support;
mod proc_support;

use std::time::{Duration, Instant};

use hypergolix::golix::{Gobd, Object, Policy, Secret, DEFAULT_LEGROOM};
use hypergolix::persist::client::{Notification, Notifications, PersisterClient};
use hypergolix::persist::store::NatsStore;
use nats_support::NatsCluster;

const WAIT: Duration = Duration::from_secs(20);

async fn next(rx: &mut Notifications) -> Notification {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a notification in time")
        .expect("connection open")
}

fn gidc(a: &hypergolix::golix::FirstParty) -> Vec<u8> {
    a.gidc().encode()
}

/// CPU ticks (user + system) of a process so far.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = s.rfind(')') else { return 0 };
    let rest: Vec<&str> = s[close + 2..].split_whitespace().collect();
    let f = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    f(11) + f(12)
}

fn ticks_ms(t: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    t as f64 * 1000.0 / hz
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// Where a cluster publish's JetStream operations go: frames published straight into an
/// archive over the cluster store (no websocket), one at a time and then from 8 threads at
/// once, with the store's operation counts per publish. Part of BENCHMARKS.md's cluster
/// section: `cargo test --features test-suite0 --test cluster_measure -- --ignored
/// --nocapture profile`.
#[actix_rt::test]
#[ignore]
async fn profile_cluster_publish() {
    let Some(cluster) = NatsCluster::start(3).await else {
        return;
    };
    let store = std::sync::Arc::new(
        NatsStore::connect(
            &cluster.store_options("profile"),
            hypergolix::logging::discard(),
        )
        .unwrap(),
    );
    let archive = hypergolix::persist::Archive::with_store(store.clone()).unwrap();
    let a = common::fixture(1);
    let secret = Secret::random();
    let c0 = a.make_container(b"profile", &secret).unwrap();
    archive.publish(&gidc(&a)).unwrap();
    archive
        .publish(&a.make_bind_static(c0.ghid).unwrap().encode())
        .unwrap();
    archive.publish(&c0.encode()).unwrap();
    const FRAMES: usize = 30;
    let chains: Vec<Vec<Vec<u8>>> = (0..9)
        .map(|k| {
            let ck = a
                .make_container(format!("p{k}").as_bytes(), &secret)
                .unwrap();
            let mut v = vec![a.make_bind_dynamic(ck.ghid).unwrap()];
            for _ in 0..FRAMES {
                let f = a
                    .make_next_frame(v.last().unwrap(), c0.ghid, DEFAULT_LEGROOM)
                    .unwrap();
                v.push(f);
            }
            v.iter().map(|f| f.encode()).collect()
        })
        .collect();
    for chain in &chains {
        archive.publish(&chain[0]).unwrap();
    }
    let per = |before: hypergolix::persist::store::OpCounts, n: usize| {
        let after = store.ops();
        let f = |a: u64, b: u64| (a - b) as f64 / n as f64;
        format!(
            "row reads {:.1}, record reads {:.1}, check reads {:.1}, appends {:.1}, \
             refused appends {:.1}, deletes {:.1}",
            f(after.row_reads, before.row_reads),
            f(after.record_reads, before.record_reads),
            f(after.check_reads, before.check_reads),
            f(after.appends, before.appends),
            f(after.retries, before.retries),
            f(after.deletes, before.deletes),
        )
    };
    let (archive, chains) = (std::sync::Arc::new(archive), std::sync::Arc::new(chains));
    let before = store.ops();
    let t = Instant::now();
    for f in &chains[0][1..] {
        archive.publish(f).unwrap();
    }
    println!(
        "PROFILE sequential: {:.1} ms per publish; per publish: {}",
        t.elapsed().as_secs_f64() * 1000.0 / FRAMES as f64,
        per(before, FRAMES)
    );
    let before = store.ops();
    let t = Instant::now();
    let threads: Vec<_> = (1..9)
        .map(|k| {
            let (archive, chains) = (archive.clone(), chains.clone());
            std::thread::spawn(move || {
                for f in &chains[k][1..] {
                    archive.publish(f).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = 8 * FRAMES;
    println!(
        "PROFILE 8 threads: {:.0} publishes/s; per publish: {}",
        n as f64 / t.elapsed().as_secs_f64(),
        per(before, n)
    );
}

/// The measurement behind BENCHMARKS.md's cluster section: the sled persister and a
/// cluster-backed pair of front-ends (publisher on one, subscribers on the other), as real
/// processes, with the same pre-signed frames. Run with
/// `cargo test --features test-suite0 --test cluster_measure -- --ignored --nocapture measure`
/// (dependencies build optimised in every profile; `--release` optimises ours too).
#[actix_rt::test]
#[ignore]
async fn measure_cluster_against_sled() {
    let Some(cluster) = NatsCluster::start(3).await else {
        return;
    };
    const OBJECTS: usize = 8;
    const FRAMES: usize = 40;
    const SEQ: usize = 150;
    const FANOUT_SUBS: usize = 200;
    const FANOUT_FRAMES: usize = 30;
    let a = common::fixture(1);
    let secret = Secret::random();
    let c0 = a.make_container(b"bench", &secret).unwrap();
    // Object k: first frame, then frames all targeting c0 (present: every one is notified).
    let chains: Vec<Vec<Gobd>> = (0..OBJECTS + 1)
        .map(|k| {
            // A first frame is addressed by its content: one first target per object.
            let ck = a
                .make_container(format!("first {k}").as_bytes(), &secret)
                .unwrap();
            let first = a.make_bind_dynamic(ck.ghid).unwrap();
            let n = if k == 0 {
                SEQ + 2 * FANOUT_FRAMES
            } else {
                FRAMES
            };
            let mut v = vec![first];
            for _ in 0..n {
                let f = a
                    .make_next_frame(v.last().unwrap(), c0.ghid, DEFAULT_LEGROOM)
                    .unwrap();
                v.push(f);
            }
            v
        })
        .collect();
    let nats_pids: Vec<u32> = cluster
        .nodes
        .iter()
        .filter_map(|n| n.proc.as_ref().map(|p| p.pid()))
        .collect();
    // The cluster twice: with few partitions, and with more (more write chains at once).
    for (mode, partitions) in [("sled", 0), ("cluster", 3), ("cluster", 12)] {
        let extra = if mode == "sled" {
            String::new()
        } else {
            format!(
                "  store: {}\n  nats:\n    namespace: bench{partitions}\n    partitions: {partitions}\n",
                cluster.url()
            )
        };
        let pa = proc_support::Persister::with_server_lines(&extra).await;
        let pb = if mode == "sled" {
            None
        } else {
            Some(proc_support::Persister::with_server_lines(&extra).await)
        };
        let sub_url = pb.as_ref().map_or_else(|| pa.ws_url(), |p| p.ws_url());
        let (up, _uprx) = PersisterClient::connect(&pa.ws_url()).await.unwrap();
        let (sub, mut subrx) = PersisterClient::connect(&sub_url).await.unwrap();
        up.publish(&gidc(&a)).await.unwrap();
        for chain in &chains {
            up.publish(&chain[0].encode()).await.unwrap();
        }
        up.publish(&a.make_bind_static(c0.ghid).unwrap().encode())
            .await
            .unwrap();
        up.publish(&c0.encode()).await.unwrap();
        for chain in &chains {
            sub.subscribe(&chain[0].dynamic).await.unwrap();
        }
        while tokio::time::timeout(Duration::from_millis(300), subrx.recv())
            .await
            .is_ok()
        {}

        // Latency: one publish at a time, publish sent -> notification received elsewhere.
        let mut lat = Vec::new();
        for f in &chains[0][1..=SEQ] {
            let bytes = f.encode();
            let t = Instant::now();
            let (ack, note) = tokio::join!(up.publish(&bytes), next(&mut subrx));
            ack.unwrap();
            assert_eq!(note.subscription, f.dynamic);
            lat.push(t.elapsed());
        }
        let mean_ms =
            lat.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / lat.len() as f64;

        // Throughput: OBJECTS publishers at once, each on its own object.
        let fe_pids: Vec<u32> = std::iter::once(pa.proc.pid())
            .chain(pb.as_ref().map(|p| p.proc.pid()))
            .collect();
        let cpu0: Vec<u64> = fe_pids.iter().map(|p| cpu_ticks(*p)).collect();
        let n0: u64 = nats_pids.iter().map(|p| cpu_ticks(*p)).sum();
        let traffic0 = cluster.traffic("hgx-persister store");
        let t = Instant::now();
        let drain = async {
            let mut got = 0;
            while got < OBJECTS * FRAMES {
                if tokio::time::timeout(WAIT, subrx.recv())
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                {
                    break;
                }
                got += 1;
            }
        };
        let pubs = futures_util::future::join_all(chains[1..].iter().map(|chain| {
            let up = &up;
            async move {
                for f in &chain[1..] {
                    up.publish(&f.encode()).await.unwrap();
                }
            }
        }));
        tokio::join!(pubs, async {
            let _ = tokio::time::timeout(Duration::from_secs(120), drain).await;
        });
        let secs = t.elapsed().as_secs_f64();
        let total = (OBJECTS * FRAMES) as f64;
        let fe_ms: Vec<f64> = fe_pids
            .iter()
            .zip(&cpu0)
            .map(|(p, c)| ticks_ms(cpu_ticks(*p) - c) / total)
            .collect();
        let traffic1 = cluster.traffic("hgx-persister store");
        let (sent, api) = (
            (traffic1.0 - traffic0.0) as f64 / total,
            (traffic1.1 - traffic0.1) as f64 / total,
        );
        let nats_ms = if mode == "sled" {
            0.0
        } else {
            ticks_ms(nats_pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>() - n0) / total
        };

        // Fanout: FANOUT_SUBS subscribers of object 0, first all on the subscriber-side
        // front-end, then spread half and half over both front-ends (with sled: one
        // persister, so both rounds are the same set-up).
        let urls = [pa.ws_url(), sub_url.clone()];
        let mut fanout = Vec::new();
        for (round, spread) in [false, true].into_iter().enumerate() {
            let mut subs = Vec::new();
            for i in 0..FANOUT_SUBS {
                let url = if spread { &urls[i % 2] } else { &sub_url };
                let (c, rx) = PersisterClient::connect(url).await.unwrap();
                c.subscribe(&chains[0][0].dynamic).await.unwrap();
                subs.push((c, rx));
            }
            let s0: Vec<u64> = fe_pids.iter().map(|p| cpu_ticks(*p)).collect();
            let t = Instant::now();
            let frames = &chains[0][SEQ + 1 + round * FANOUT_FRAMES..][..FANOUT_FRAMES];
            for f in frames {
                up.publish(&f.encode()).await.unwrap();
            }
            let last = frames.last().unwrap().frame;
            for (_, rx) in subs.iter_mut() {
                loop {
                    let n = next(rx).await;
                    let Object::Gobd(g) = Object::decode(&n.object, Policy::STRICT).unwrap() else {
                        panic!("a frame")
                    };
                    if g.frame == last {
                        break;
                    }
                }
            }
            let secs = t.elapsed().as_secs_f64();
            // Each front-end's CPU over the round, with the deliveries to its own subscribers
            // (A also ran the publishes).
            let per_front_end: Vec<String> = fe_pids
                .iter()
                .zip(&s0)
                .enumerate()
                .map(|(i, (p, c))| {
                    let mine = match (spread, fe_pids.len()) {
                        (_, 1) => FANOUT_SUBS,
                        (true, _) => FANOUT_SUBS / 2,
                        (false, _) if i == 1 => FANOUT_SUBS,
                        (false, _) => 0,
                    };
                    format!(
                        "{:.1} ms CPU for {} deliveries",
                        ticks_ms(cpu_ticks(*p) - c),
                        mine * FANOUT_FRAMES
                    )
                })
                .collect();
            fanout.push(format!(
                "{}: {secs:.2} s, {}",
                if spread {
                    "spread over both"
                } else {
                    "all on B"
                },
                per_front_end.join(" / ")
            ));
            for (c, _) in &subs {
                c.close();
            }
        }
        println!(
            "BENCH {mode} ({partitions} partitions): latency p50 {:.2} ms p99 {:.2} ms mean {mean_ms:.2} ms ({SEQ} sequential); \
             {:.0} publishes/s ({OBJECTS} concurrent publishers, {} publishes); front-end CPU/publish {:?} ms; \
             nats CPU/publish (3 nodes) {nats_ms:.2} ms; per publish: {sent:.1} messages from the \
             front-ends' store connections, {api:.1} of them JetStream API requests (reads), \
             the rest writes; fanout {FANOUT_SUBS} subs x {FANOUT_FRAMES} frames: {} (A publishes; coalescing may merge some)",
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99),
            total / secs,
            total as usize,
            fe_ms.iter().map(|v| (v * 100.0).round() / 100.0).collect::<Vec<_>>(),
            fanout.join("; "),
        );
    }
}
