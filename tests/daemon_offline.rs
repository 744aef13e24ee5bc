//! The daemon offline: a persister that goes away and comes back on the same ghidcache and
//! port, a daemon restarted in between, the durable outbox draining, and a tracker on
//! another machine of the account catching up without calling `sync`. Every wait is bounded.
//! (Helpers as in `daemon_core.rs`.)

mod daemon_support;

use daemon_support::*;

/// A persister (its ghidcache in `pdir`), machine 1 of fixture 1's account with app `a` and a
/// new public object `x` of `state` on the persister, and machine 2 with app `b` tracking it.
struct TwoMachines {
    p: Persister,
    url: String,
    addr: SocketAddr,
    d1: DaemonHandle,
    account: (Ghid, Ghid),
    a: AppId,
    x: Ghid,
    d2: DaemonHandle,
    b: AppId,
    b_rx: Inbox,
}

async fn two_machines(
    pdir: &std::path::Path,
    d1_dir: &std::path::Path,
    d2_dir: &std::path::Path,
    state: &[u8],
) -> TwoMachines {
    let p = Persister::start(Some(pdir.join("ghidcache")), None);
    let (url, addr) = (p.url.clone(), p.addr);
    let d1 = create(d1_dir, &[&url], 1).await;
    let account = ids(&d1);
    let (a, _) = app(&d1);
    let x = d1
        .new_object(a, state.to_vec(), None, true, false)
        .await
        .unwrap()
        .ghid;
    drained(&d1).await;
    let d2 = open(d2_dir, &[&url], account, 1, "correct horse")
        .await
        .unwrap();
    let (b, b_rx) = app(&d2);
    get_until(&d2, b, x, state).await;
    TwoMachines {
        p,
        url,
        addr,
        d1,
        account,
        a,
        x,
        d2,
        b,
        b_rx,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_made_offline_survive_a_restart_and_reach_the_other_machine() {
    let pdir = tempfile::tempdir().unwrap();
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = two_machines(pdir.path(), d1_dir.path(), d2_dir.path(), b"v0").await;
    let (p, url, addr, d1, account, a, x) = (m.p, m.url, m.addr, m.d1, m.account, m.a, m.x);
    let (d2, b, mut b_rx) = (m.d2, m.b, m.b_rx);

    // The persister goes away: pushes still succeed, locally.
    p.stop();
    for i in 1..=3 {
        d1.push(a, x, format!("v{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    assert!(
        d1.outbox_pending().iter().all(|(_, n)| *n >= 6),
        "{:?}",
        d1.outbox_pending()
    );
    assert!(matches!(
        d1.sync(a, x).await,
        Err(DaemonError::UnavailableUpstream(_))
    ));

    // Restart the daemon in the middle (login from the local cache; still offline).
    d1.shutdown().await.unwrap();
    drop(d1);
    let d1 = open(d1_dir.path(), &[&url], account, 1, "correct horse")
        .await
        .unwrap();
    let (a, _) = app(&d1);
    assert_eq!(d1.get_object(a, x).await.unwrap().state, b"v3");
    for i in 4..=5 {
        d1.push(a, x, format!("v{i}").into_bytes(), None)
            .await
            .unwrap();
    }

    // The persister comes back on the same ghidcache and port: the outbox drains, and the
    // other machine's tracker catches up on its own.
    let p = Persister::start(Some(pdir.path().join("ghidcache")), Some(addr));
    drained(&d1).await;
    until_state(&mut b_rx, x, b"v5").await;
    assert_eq!(p.frame_counter(&x), Some(5));
    assert_eq!(d1.get_object(a, x).await.unwrap().state, b"v5");
    assert_eq!(d2.get_object(b, x).await.unwrap().state, b"v5");
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}

/// An object that no reachable remote has is `not_found` only when every remote answered:
/// while the remote is down, the app is told `unavailable_upstream` (it must not take "could
/// not ask" for "does not exist").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_of_an_unknown_object_while_the_remote_is_down_is_unavailable_not_not_found() {
    let p = Persister::start(None, None);
    let dir = tempfile::tempdir().unwrap();
    let d = create(dir.path(), &[&p.url], 1).await;
    let (a, _) = app(&d);
    drained(&d).await;
    let elsewhere = fixture(2)
        .make_container(b"never published", &Secret::random())
        .unwrap()
        .ghid;
    let e = d.get_object(a, elsewhere).await.unwrap_err();
    assert_eq!(e.code(), "not_found", "{e}");
    p.stop();
    let e = d.get_object(a, elsewhere).await.unwrap_err();
    assert_eq!(e.code(), "unavailable_upstream", "{e}");
    d.shutdown().await.unwrap();
}

/// A delete whose notification never reached a tracker reaches it when it reconnects: its
/// catch-up finds the object gone on the remote and applies the debinding there instead.
/// The test stores the owner's debinding straight into the persister's archive (fixture 1
/// is the account's identity), so no subscriber hears of it, then restarts the persister.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_a_tracker_did_not_hear_of_reaches_it_at_its_catch_up() {
    let pdir = tempfile::tempdir().unwrap();
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = two_machines(pdir.path(), d1_dir.path(), d2_dir.path(), b"doomed").await;
    let (p, addr, x, mut b_rx) = (m.p, m.addr, m.x, m.b_rx);
    m.d1.shutdown().await.unwrap();
    let d2 = m.d2;

    let archive = p.archive.clone().unwrap();
    let gdxx = fixture(1).make_debind(x).unwrap();
    archive.publish(&Object::Gdxx(gdxx).encode()).unwrap();
    archive.sync().await.unwrap();
    assert!(
        next_event(&mut b_rx, Duration::from_millis(500))
            .await
            .is_none(),
        "the tracker heard of it"
    );
    drop(archive);
    p.stop();
    let p = Persister::start(Some(pdir.path().join("ghidcache")), Some(addr));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_event(&mut b_rx, left).await {
            Some(AppEvent::Delete(g)) if g == x => break,
            Some(_) => {}
            None => panic!("no delete reached the tracker"),
        }
    }
    d2.shutdown().await.unwrap();
    p.stop();
}

/// Large outbox entries (spilled to `state/large/`) whose directory is an empty one at the
/// next start, as when it is a mount point not mounted yet: the daemon starts, keeps every
/// entry (none is taken for corrupt and dropped), and sends them once the directory is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_outbox_entries_survive_a_start_without_their_spill_directory() {
    let pdir = tempfile::tempdir().unwrap();
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = Persister::start(Some(pdir.path().join("ghidcache")), None);
    let (url, addr) = (p.url.clone(), p.addr);
    let d1 = create(d1_dir.path(), &[&url], 1).await;
    let account = ids(&d1);
    let (a, _) = app(&d1);
    let x = d1
        .new_object(a, b"small".to_vec(), None, true, false)
        .await
        .unwrap()
        .ghid;
    drained(&d1).await;
    let first = p.frame_counter(&x).expect("x on the remote");

    // Offline, a push too large for sled: its container's outbox entry is a file.
    p.stop();
    let big = vec![7u8; 64 * 1024];
    d1.push(a, x, big.clone(), None).await.unwrap();
    d1.shutdown().await.unwrap();
    drop(d1);
    let large = d1_dir.path().join("state").join("large");
    let files = std::fs::read_dir(&large).unwrap().count();
    assert!(files >= 2, "a spilled entry and the marker: {files}");

    // Started with an empty directory in its place, the remote back: nothing is sent, and
    // nothing is lost.
    let real = d1_dir.path().join("large.unmounted");
    std::fs::rename(&large, &real).unwrap();
    std::fs::create_dir(&large).unwrap();
    let p = Persister::start(Some(pdir.path().join("ghidcache")), Some(addr));
    let d1 = open(d1_dir.path(), &[&url], account, 1, "correct horse")
        .await
        .expect("starts without its spill directory");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pending: usize = d1.outbox_pending().iter().map(|(_, n)| n).sum();
    assert!(pending >= 2, "the frame and its container wait: {pending}");
    assert_eq!(p.frame_counter(&x), Some(first));
    assert_eq!(std::fs::read_dir(&large).unwrap().count(), 0);
    d1.shutdown().await.unwrap();
    drop(d1);

    // Mounted again: the outbox drains, and another machine reads the large state.
    std::fs::remove_dir(&large).unwrap();
    std::fs::rename(&real, &large).unwrap();
    let d1 = open(d1_dir.path(), &[&url], account, 1, "correct horse")
        .await
        .unwrap();
    drained(&d1).await;
    assert_eq!(p.frame_counter(&x), Some(first + 1));
    let d2 = open(d2_dir.path(), &[&url], account, 1, "correct horse")
        .await
        .unwrap();
    let (b, _) = app(&d2);
    get_until(&d2, b, x, &big).await;
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}
