//! The push pipeline (`src/actors/push.rs`, `ObjectActor` in `src/actors/object.rs`): frame
//! k+1 is built and signed while frame k is still being signed or committed. Real persister
//! on 127.0.0.1, real daemons, fixture identities; every wait is bounded.
//!
//! What must hold however the frames overlap: commits in push order (another app never sees
//! an older state after a newer one), every push answered, the secret chain intact (a second
//! machine and a restart open the last frame), operations that wait for the pipeline to
//! empty (freeze) are not starved by a stream of pushes, and a frame that loses a race with
//! another machine of ours takes the frames built on it down without wedging the object.

mod daemon_support;

use daemon_support::*;
use futures_util::future::join_all;

/// Pushes in one concurrent wave.
const WAVE: usize = 40;

fn state(wave: usize, i: usize) -> Vec<u8> {
    format!("w{wave}-{i:03}").into_bytes()
}

/// (wave, index) of a state made by [`state`]; `None` for anything else.
fn order(s: &[u8]) -> Option<(usize, usize)> {
    let s = std::str::from_utf8(s).ok()?.strip_prefix('w')?;
    let (w, i) = s.split_once('-')?;
    Some((w.parse().ok()?, i.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_commit_in_order_freeze_is_not_starved_and_a_restart_opens_the_last_frame() {
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
    let mut snapshots = Vec::new();
    for w in 0..3 {
        let pushes = join_all((0..WAVE).map(|i| d.push(a, v.ghid, state(w, i), None)));
        // A freeze sent into the stream waits for the pipeline to empty, and must get it.
        let freeze = async {
            tokio::task::yield_now().await;
            tokio::time::timeout(WAIT, d.freeze(a, v.ghid)).await
        };
        let (results, frozen) = tokio::join!(pushes, freeze);
        for r in results {
            r.unwrap();
        }
        snapshots.push(frozen.expect("freeze answered").unwrap());
        assert_eq!(
            d.get_object(a, v.ghid).await.unwrap().state,
            state(w, WAVE - 1)
        );
    }
    // Each snapshot holds a state that was pushed (or the first), in wave order.
    let mut last = None;
    for s in snapshots {
        let frozen = d.get_object(a, s).await.unwrap().state;
        let at = order(&frozen);
        assert!(at.is_some() || frozen == b"start", "snapshot {frozen:?}");
        assert!(at >= last, "snapshot {frozen:?} older than an earlier one");
        last = at;
    }
    // The other app sees states in push order only, ending on the last one.
    let last_state = state(2, WAVE - 1);
    let seen = until_state(&mut b_rx, v.ghid, &last_state).await;
    let seen: Vec<_> = seen
        .iter()
        .map(|s| order(s).expect("a pushed state"))
        .collect();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "updates out of push order: {seen:?}"
    );
    drained(&d).await;
    let frames = p.frame_counter(&v.ghid).expect("persister has the object");
    assert!(frames as usize <= 3 * WAVE, "{frames} frames");
    // The recorded secret matches the last frame: a restart opens it.
    let account = ids(&d);
    d.shutdown().await.unwrap();
    drop(d);
    let d = open(dir.path(), &[&p.url], account, 1, "correct horse")
        .await
        .unwrap();
    let (c, _c_rx) = app(&d);
    assert_eq!(d.get_object(c, v.ghid).await.unwrap().state, last_state);
    d.shutdown().await.unwrap();
    p.stop();
}

/// Known bug, not the pipeline's: fails with the pipeline off too (`PIPELINE = 1`: 1 run of
/// 2; `PIPELINE = 2`: 3 of 3, more frames, more races). A machine can end with a frame of
/// the other machine in its archive that its live object never applied (the frame's container
/// was replaced upstream before it was fetched, so `pull` only advanced the secret): its next
/// push then fails `illegal_frame` until a newer frame arrives, or its frames never reach the
/// other machine. Run with `--ignored`.
#[ignore = "known bug: a pulled frame whose container is gone leaves the live object behind"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_machines_pushing_at_once_lose_races_without_wedging_the_object() {
    let p = Persister::start(None, None);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&p.url], 1).await;
    let (a, _a_rx) = app(&d1);
    let v = d1
        .new_object(a, b"start".to_vec(), None, true, false)
        .await
        .unwrap();
    drained(&d1).await;
    // The account's root frame reaches the persister on the ledger's own schedule.
    let deadline = tokio::time::Instant::now() + WAIT;
    let d2 = loop {
        match open(d2_dir.path(), &[&p.url], ids(&d1), 1, "correct horse").await {
            Ok(d) => break d,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("second machine: {e}"),
        }
    };
    let (b, _b_rx) = app(&d2);
    get_until(&d2, b, v.ghid, b"start").await;
    // Both machines push the same object at once: frames collide, a lost frame drops the
    // frames built on it, and those pushes are rebuilt (or fail after the retries).
    let ones = join_all((0..WAVE).map(|i| d1.push(a, v.ghid, state(1, i), None)));
    let twos = join_all((0..WAVE).map(|i| d2.push(b, v.ghid, state(2, i), None)));
    let (ones, twos) = tokio::time::timeout(WAIT, async { tokio::join!(ones, twos) })
        .await
        .expect("every push answered");
    for r in ones.into_iter().chain(twos) {
        if let Err(e) = r {
            assert_eq!(e.code(), "illegal_frame", "{e}");
        }
    }
    // Neither object actor is wedged: each machine's next push reaches the other.
    drained(&d1).await;
    drained(&d2).await;
    d1.push(a, v.ghid, b"from d1".to_vec(), None).await.unwrap();
    get_until(&d2, b, v.ghid, b"from d1").await;
    d2.push(b, v.ghid, b"from d2".to_vec(), None).await.unwrap();
    get_until(&d1, a, v.ghid, b"from d2").await;
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}
