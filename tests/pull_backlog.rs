//! A remote that pushes faster than the daemon applies (`RemoteActor`'s pull queue,
//! `src/actors/remote_actor.rs`, README "notifications buffered per connection"): at most
//! `PULL_QUEUE` (1024) notifications wait to be pulled, the rest stay in the persister
//! client's buffer (beyond that too, the client closes the connection and the daemon
//! reconnects and catches up), and once the daemon applies again it ends on every object's
//! last state.
//!
//! Real persister on 127.0.0.1, two real daemons of one account (fixture 1), real crypto. The
//! daemon under test runs its work on this test's single-thread runtime, so blocking that
//! thread stops its pull worker while its `RemoteActor` (on the daemon's own actor threads)
//! keeps reading notifications: exactly a daemon that applies slower than its remote pushes.
//! The other machine pushes from its own runtime meanwhile. `HGX_PULL_BACKLOG_FRAMES`
//! (default 1,200: the queue fills, the client's buffer takes the rest) sets how many frames
//! it pushes. With the queue unbounded the default run peaks at 1,199 and fails.

mod daemon_support;

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;

use daemon_support::*;
use futures_util::future::join_all;

/// `remote_actor::PULL_QUEUE`.
const PULL_QUEUE: usize = 1024;
/// Objects the other machine pushes to at once (each its own frame pipeline).
const OBJECTS: usize = 8;

fn frames() -> usize {
    std::env::var("HGX_PULL_BACKLOG_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1200)
}

fn state(object: usize, i: usize) -> Vec<u8> {
    format!("o{object}-{i:05}").into_bytes()
}

/// What the test asks of the other machine.
enum Ask {
    /// One push per object (`i` = 0).
    Warm,
    /// `n` pushes per object, one after another per object, all objects at once.
    Burst(usize),
}

/// The other machine of the account: creates the objects, then pushes on request; answers
/// once its outbox is empty (everything is at the persister).
fn producer(
    url: String,
    ready: std_mpsc::Sender<((Ghid, Ghid), Vec<Ghid>)>,
    mut asks: tokio::sync::mpsc::UnboundedReceiver<Ask>,
    done: std_mpsc::Sender<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let d = create(dir.path(), &[&url], 1).await;
            let (app, _events) = app(&d);
            let mut ghids = Vec::new();
            for o in 0..OBJECTS {
                let v = d
                    .new_object(app, state(o, 0), None, true, false)
                    .await
                    .unwrap();
                ghids.push(v.ghid);
            }
            drained(&d).await;
            ready.send((ids(&d), ghids.clone())).unwrap();
            let mut next = 1;
            while let Some(ask) = asks.recv().await {
                let n = match ask {
                    Ask::Warm => 1,
                    Ask::Burst(n) => n,
                };
                let (first, d) = (next, &d);
                join_all(ghids.iter().enumerate().map(|(o, g)| async move {
                    for i in first..first + n {
                        d.push(app, *g, state(o, i), None).await.unwrap();
                    }
                }))
                .await;
                next += n;
                tokio::time::timeout(Duration::from_secs(120), async {
                    while d.outbox_pending().iter().any(|(_, q)| *q > 0) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await
                .expect("the other machine's outbox drains");
                done.send(()).unwrap();
            }
            d.shutdown().await.unwrap();
        });
    })
}

/// Takes events until every object shows its `want` state (bounded by `limit`); returns
/// the last state seen per object.
async fn until_states(
    events: &mut Inbox,
    want: &HashMap<Ghid, Vec<u8>>,
    limit: Duration,
) -> HashMap<Ghid, Vec<u8>> {
    let mut seen: HashMap<Ghid, Vec<u8>> = HashMap::new();
    let _ = tokio::time::timeout(limit, async {
        while want.iter().any(|(g, s)| seen.get(g) != Some(s)) {
            match events.recv().await.expect("events open") {
                AppEvent::Update(v) => {
                    seen.insert(v.ghid, v.state);
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn a_remote_faster_than_the_daemon_fills_the_pull_queue_to_its_bound_then_the_daemon_catches_up(
) {
    let n = frames().div_ceil(OBJECTS);
    let p = Persister::start(None, None);
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (ask_tx, ask_rx) = tokio::sync::mpsc::unbounded_channel();
    let (done_tx, done_rx) = std_mpsc::channel();
    let other = producer(p.url.clone(), ready_tx, ask_rx, done_tx);
    let (ids, ghids) = ready_rx
        .recv_timeout(WAIT)
        .expect("the other machine starts");

    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path(), &[&p.url], ids, 1, "correct horse")
        .await
        .expect("this machine opens the account");
    let (app, mut events) = app(&d);
    for g in &ghids {
        d.get_object(app, *g).await.unwrap();
    }
    // Subscribed everywhere once a push to each object arrives.
    ask_tx.send(Ask::Warm).unwrap();
    let want: HashMap<Ghid, Vec<u8>> = ghids
        .iter()
        .enumerate()
        .map(|(o, g)| (*g, state(o, 1)))
        .collect();
    let seen = until_states(&mut events, &want, WAIT).await;
    assert_eq!(seen, want, "warm-up pushes arrive");
    done_rx.recv_timeout(WAIT).expect("warm-up drained");

    // The burst, while this daemon's pull worker cannot run (this thread is blocked; its
    // RemoteActor keeps reading on the actor threads).
    ask_tx.send(Ask::Burst(n)).unwrap();
    done_rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the other machine pushes every frame");
    // Let the persister hand this daemon what it can take.
    std::thread::sleep(Duration::from_secs(1));

    // Applying again: the first item pulled shows how many waited.
    let want: HashMap<Ghid, Vec<u8>> = ghids
        .iter()
        .enumerate()
        .map(|(o, g)| (*g, state(o, n + 1)))
        .collect();
    let seen = until_states(&mut events, &want, Duration::from_secs(120)).await;
    let (_, now, peak) = d.pull_backlog()[0].clone();
    eprintln!(
        "{} frames pushed; at most {peak} waited to be pulled",
        n * OBJECTS
    );
    assert!(
        peak <= PULL_QUEUE,
        "{peak} notifications waited to be pulled (bound {PULL_QUEUE})"
    );
    assert!(
        n * OBJECTS <= PULL_QUEUE || peak == PULL_QUEUE,
        "the burst of {} frames did not fill the pull queue: {peak}",
        n * OBJECTS
    );
    assert_eq!(seen, want, "every object ends on its last state");
    assert!(now <= PULL_QUEUE);

    drop(ask_tx);
    d.shutdown().await.unwrap();
    other.join().unwrap();
    // (Dropping `p` stops the persister on its own thread.)
}
