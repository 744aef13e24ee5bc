//! The push pipeline (`src/actors/push.rs`, `ObjectActor` in `src/actors/object.rs`): frame
//! k+1 is built and signed while frame k is still being signed or committed. Real persister
//! on 127.0.0.1, real daemons, fixture identities; every wait is bounded.
//!
//! What must hold however the frames overlap: commits in push order (another app never sees
//! an older state after a newer one), every push answered, the secret chain intact (a second
//! machine and a restart open the last frame), operations that wait for the pipeline to
//! empty (freeze) are not starved by a stream of pushes, and a frame that loses a race with
//! another machine of ours takes the frames built on it down without wedging the object:
//! two machines pushing at once converge on one acknowledged state (`HGX_PUSH_RACE_WAVES`,
//! default 3, sets how many waves of that race run; the recorded runs use more).

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

/// Waves of the two-machine race; `HGX_PUSH_RACE_WAVES` raises it for the recorded runs.
fn race_waves() -> usize {
    std::env::var("HGX_PUSH_RACE_WAVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// The state both machines show once they agree (no `sync`: notifications alone must get
/// them there), within [`WAIT`].
async fn converged(
    (d1, a): (&DaemonHandle, AppId),
    (d2, b): (&DaemonHandle, AppId),
    ghid: Ghid,
) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let one = d1.get_object(a, ghid).await.unwrap().state;
        let two = d2.get_object(b, ghid).await.unwrap().state;
        if one == two {
            return one;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "machines diverged: {:?} vs {:?}",
            String::from_utf8_lossy(&one),
            String::from_utf8_lossy(&two)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two machines of one account push the same object at once. Frames collide: a machine's
/// frame can lose upstream to the other's frame of the same counter (the remote refuses
/// ours), or be refused locally because the other's frame arrived first. Pushes must be
/// answered (a local refusal is rebuilt on the newer frame, else fails `illegal_frame`), the
/// machines must converge on one acknowledged state without a `sync`, and neither object is
/// left wedged: each machine's next push reaches the other.
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
    let mut refused = 0;
    for w in 0..race_waves() {
        // Machine 1 pushes wave 2w+1, machine 2 wave 2w+2, all at once.
        let (w1, w2) = (2 * w + 1, 2 * w + 2);
        let ones = join_all((0..WAVE).map(|i| d1.push(a, v.ghid, state(w1, i), None)));
        let twos = join_all((0..WAVE).map(|i| d2.push(b, v.ghid, state(w2, i), None)));
        let (ones, twos) = tokio::time::timeout(WAIT, async { tokio::join!(ones, twos) })
            .await
            .expect("every push answered");
        let mut acked = Vec::new();
        for (wave, results) in [(w1, ones), (w2, twos)] {
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(()) => acked.push(state(wave, i)),
                    Err(e) => {
                        assert_eq!(e.code(), "illegal_frame", "{e}");
                        refused += 1;
                    }
                }
            }
        }
        drained(&d1).await;
        drained(&d2).await;
        let agreed = converged((&d1, a), (&d2, b), v.ghid).await;
        assert!(
            acked.contains(&agreed),
            "wave {w}: agreed on {:?}, not an acknowledged push of the wave",
            String::from_utf8_lossy(&agreed)
        );
    }
    // At most a few pushes of a wave may give up after the retries.
    assert!(
        refused <= race_waves() * WAVE / 4,
        "{refused} pushes refused"
    );
    // Neither object actor is wedged: each machine's next push reaches the other.
    d1.push(a, v.ghid, b"from d1".to_vec(), None).await.unwrap();
    get_until(&d2, b, v.ghid, b"from d1").await;
    d2.push(b, v.ghid, b"from d2".to_vec(), None).await.unwrap();
    get_until(&d1, a, v.ghid, b"from d2").await;
    assert_eq!(converged((&d1, a), (&d2, b), v.ghid).await, b"from d2");
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}
