//! The daemon offline: a persister that goes away and comes back on the same ghidcache and
//! port, a daemon restarted in between, the durable outbox draining, and a tracker on
//! another machine of the account catching up without calling `sync`. Every wait is bounded.
//! (Helpers as in `daemon_core.rs`.)

mod daemon_support;

use daemon_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_made_offline_survive_a_restart_and_reach_the_other_machine() {
    let pdir = tempfile::tempdir().unwrap();
    let p = Persister::start(Some(pdir.path().join("ghidcache")), None);
    let (url, addr) = (p.url.clone(), p.addr);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&url], 1).await;
    let account = ids(&d1);
    let (a, _) = app(&d1);
    let x = d1
        .new_object(a, b"v0".to_vec(), None, true, false)
        .await
        .unwrap()
        .ghid;
    drained(&d1).await;
    let d2 = open(d2_dir.path(), &[&url], account, 1, "correct horse")
        .await
        .unwrap();
    let (b, mut b_rx) = app(&d2);
    get_until(&d2, b, x, b"v0").await;

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
