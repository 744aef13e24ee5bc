//! The daemon core end to end: real persister on 127.0.0.1, real daemons (fixture
//! identities, test-cost scrypt), apps as event channels. Every wait is bounded.

mod daemon_support;

use daemon_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_reach_other_apps_not_the_pusher_and_delete_reaches_them() {
    let p = Persister::start(None, None);
    let dir = tempfile::tempdir().unwrap();
    let d = create(dir.path(), &[&p.url], 1).await;
    let (a, mut a_rx) = app(&d);
    let (b, mut b_rx) = app(&d);
    let api = Ghid::pseudorandom(hypergolix::golix::Algo::DUMMY);
    let v = d
        .new_object(a, b"v0".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    assert!(v.dynamic && v.author == d.fingerprint() && v.api_id == Some(api));
    let got = d.get_object(b, v.ghid).await.unwrap();
    assert_eq!(got, v);
    for i in 1..=5 {
        let s = format!("v{i}").into_bytes();
        d.push(a, v.ghid, s.clone(), None).await.unwrap();
        assert_eq!(until_state(&mut b_rx, v.ghid, &s).await, vec![s]);
    }
    assert_eq!(
        next_event(&mut a_rx, Duration::from_millis(200)).await,
        None
    );
    d.delete(a, v.ghid).await.unwrap();
    let ev = next_event(&mut b_rx, WAIT).await;
    assert_eq!(ev, Some(AppEvent::Delete(v.ghid)));
    assert_eq!(
        next_event(&mut a_rx, Duration::from_millis(200)).await,
        None
    );
    assert!(matches!(
        d.get_object(b, v.ghid).await,
        Err(DaemonError::NotFound(_))
    ));
    d.shutdown().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn freeze_makes_a_static_snapshot_that_outlives_later_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let d = create(dir.path(), &[], 1).await;
    let (a, _a_rx) = app(&d);
    let (b, _b_rx) = app(&d);
    let v = d
        .new_object(a, b"one".to_vec(), None, true, false)
        .await
        .unwrap();
    d.push(a, v.ghid, b"two".to_vec(), None).await.unwrap();
    let frozen = d.freeze(a, v.ghid).await.unwrap();
    assert_ne!(frozen, v.ghid);
    for s in [&b"three"[..], b"four", b"five"] {
        d.push(a, v.ghid, s.to_vec(), None).await.unwrap();
    }
    let snap = d.get_object(b, frozen).await.unwrap();
    assert_eq!(
        (snap.state.as_slice(), snap.dynamic, snap.ghid),
        (&b"two"[..], false, frozen)
    );
    let err = d.push(b, frozen, b"nope".to_vec(), None).await.unwrap_err();
    assert_eq!(err.code(), "locally_immutable");
    // A static object made directly is just as immutable.
    let s = d
        .new_object(a, b"static".to_vec(), None, false, false)
        .await
        .unwrap();
    assert!(!s.dynamic);
    assert_eq!(
        d.push(a, s.ghid, b"x".to_vec(), None)
            .await
            .unwrap_err()
            .code(),
        "locally_immutable"
    );
    assert_eq!(d.get_object(b, s.ghid).await.unwrap().state, b"static");
    // With zero remotes, sync returns the local state.
    assert_eq!(d.sync(a, v.ghid).await.unwrap().state, b"five");
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discard_only_affects_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let d = create(dir.path(), &[], 1).await;
    let (a, _a_rx) = app(&d);
    let (b, mut b_rx) = app(&d);
    let (c, mut c_rx) = app(&d);
    let v = d
        .new_object(a, b"0".to_vec(), None, true, false)
        .await
        .unwrap();
    d.get_object(b, v.ghid).await.unwrap();
    d.get_object(c, v.ghid).await.unwrap();
    d.discard(b, v.ghid).await.unwrap();
    d.push(a, v.ghid, b"1".to_vec(), None).await.unwrap();
    until_state(&mut c_rx, v.ghid, b"1").await;
    assert_eq!(
        next_event(&mut b_rx, Duration::from_millis(200)).await,
        None
    );
    // Everyone else carries on; the discarding app can come back.
    d.discard(a, v.ghid).await.unwrap();
    d.discard(c, v.ghid).await.unwrap();
    assert_eq!(d.get_object(b, v.ghid).await.unwrap().state, b"1");
    d.push(a, v.ghid, b"2".to_vec(), None).await.unwrap();
    until_state(&mut b_rx, v.ghid, b"2").await;
    d.disconnect_app(b);
    d.push(a, v.ghid, b"3".to_vec(), None).await.unwrap();
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_coalesce_and_all_succeed() {
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
    let pushes = (0..50).map(|i| d.push(a, v.ghid, format!("s{i}").into_bytes(), None));
    for r in futures_util::future::join_all(pushes).await {
        r.unwrap();
    }
    assert_eq!(d.get_object(a, v.ghid).await.unwrap().state, b"s49");
    until_state(&mut b_rx, v.ghid, b"s49").await;
    drained(&d).await;
    let frames = p.frame_counter(&v.ghid).expect("persister has the object");
    assert!(frames < 50, "50 pushes made {frames} frames");
    d.shutdown().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_accounts_objects_are_locally_immutable_but_holdable() {
    let p = Persister::start(None, None);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&p.url], 1).await;
    let d2 = create(d2_dir.path(), &[&p.url], 2).await;
    let (a, _) = app(&d1);
    let (b, _) = app(&d2);
    let v = d1
        .new_object(a, b"mine".to_vec(), None, true, false)
        .await
        .unwrap();
    drained(&d1).await;
    assert_eq!(
        d2.push(b, v.ghid, b"theirs".to_vec(), None)
            .await
            .unwrap_err()
            .code(),
        "locally_immutable"
    );
    assert_eq!(
        d2.delete(b, v.ghid).await.unwrap_err().code(),
        "locally_immutable"
    );
    // Without a share, account 2 cannot read it, but it can hold it.
    assert_eq!(
        d2.get_object(b, v.ghid).await.unwrap_err().code(),
        "unknown_secret"
    );
    assert_eq!(d1.get_object(a, v.ghid).await.unwrap().state, b"mine");
    d2.hold(b, v.ghid).await.unwrap();
    drained(&d2).await;
    // The owner deletes: its other app is told, yet account 2's hold keeps it upstream.
    let (c, mut c_rx) = app(&d1);
    d1.get_object(c, v.ghid).await.unwrap();
    d1.delete(a, v.ghid).await.unwrap();
    assert_eq!(
        next_event(&mut c_rx, WAIT).await,
        Some(AppEvent::Delete(v.ghid))
    );
    drained(&d1).await;
    assert!(p.frame_counter(&v.ghid).is_some(), "held by account 2");
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_machine_of_the_account_follows_every_push_and_its_hold_survives_delete() {
    let p = Persister::start(None, None);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&p.url], 1).await;
    let (a, _a_rx) = app(&d1);
    let v = d1
        .new_object(a, b"p0".to_vec(), None, true, false)
        .await
        .unwrap();
    for i in 1..=3 {
        d1.push(a, v.ghid, format!("p{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    drained(&d1).await;
    // A fresh ghidcache: the account and the object come from the persister.
    let d2 = open(d2_dir.path(), &[&p.url], ids(&d1), 1, "correct horse")
        .await
        .unwrap();
    assert_eq!(
        (d2.user_id(), d2.fingerprint()),
        (d1.user_id(), d1.fingerprint())
    );
    let (b, mut b_rx) = app(&d2);
    get_until(&d2, b, v.ghid, b"p3").await;
    // More pushes than a frame's target vector holds: every one arrives.
    for i in 4..=12 {
        let s = format!("p{i}").into_bytes();
        d1.push(a, v.ghid, s.clone(), None).await.unwrap();
        until_state(&mut b_rx, v.ghid, &s).await;
    }
    // d2 holds; d1 deletes: the object lives on for d2 and its app is not told otherwise.
    d2.hold(b, v.ghid).await.unwrap();
    drained(&d2).await;
    d1.delete(a, v.ghid).await.unwrap();
    drained(&d1).await;
    assert_eq!(
        next_event(&mut b_rx, Duration::from_millis(500)).await,
        None
    );
    assert_eq!(d2.get_object(b, v.ghid).await.unwrap().state, b"p12");
    assert!(
        p.frame_counter(&v.ghid).is_some(),
        "held object survives on the persister"
    );
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_password_is_refused_and_loses_nothing() {
    let p = Persister::start(None, None);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&p.url], 1).await;
    let (a, _) = app(&d1);
    let v = d1
        .new_object(a, b"keep me".to_vec(), None, true, false)
        .await
        .unwrap();
    d1.push(a, v.ghid, b"kept".to_vec(), None).await.unwrap();
    drained(&d1).await;
    d1.shutdown().await.unwrap();
    let account = ids(&d1);
    drop(d1);
    // From the local cache, and from the persister into an empty one.
    for dir in [d1_dir.path(), d2_dir.path()] {
        let err = open(dir, &[&p.url], account, 1, "wrong horse")
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, DaemonError::WrongPassword), "{err}");
    }
    for dir in [d1_dir.path(), d2_dir.path()] {
        let d = open(dir, &[&p.url], account, 1, "correct horse")
            .await
            .unwrap();
        let (a, _) = app(&d);
        assert_eq!(d.get_object(a, v.ghid).await.unwrap().state, b"kept");
        d.shutdown().await.unwrap();
    }
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_machine_opens_objects_made_after_its_login() {
    let p = Persister::start(None, None);
    let (d1_dir, d2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = create(d1_dir.path(), &[&p.url], 1).await;
    drained(&d1).await;
    let d2 = open(d2_dir.path(), &[&p.url], ids(&d1), 1, "correct horse")
        .await
        .unwrap();
    let (a, _) = app(&d1);
    let (b, mut b_rx) = app(&d2);
    // Made and pushed past a frame's 7 targets while d2 does not track it: d2 opens it from
    // the account state d1 flushed (d2's own is from before the object existed).
    let y = d1
        .new_object(a, b"y0".to_vec(), None, true, false)
        .await
        .unwrap()
        .ghid;
    for i in 1..=9 {
        d1.push(a, y, format!("y{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    drained(&d1).await;
    assert_eq!(d2.get_object(b, y).await.unwrap().state, b"y9");
    // Deleted on d1: d2's tracker is told (through the persister's removal notice).
    d1.delete(a, y).await.unwrap();
    assert_eq!(next_event(&mut b_rx, WAIT).await, Some(AppEvent::Delete(y)));
    assert_eq!(d2.get_object(b, y).await.unwrap_err().code(), "not_found");
    d1.shutdown().await.unwrap();
    d2.shutdown().await.unwrap();
    p.stop();
}

/// The daemon's futures can be spawned on any runtime thread.
#[allow(unused)]
fn futures_are_send(d: &DaemonHandle, g: Ghid) {
    fn send<T: Send>(_: T) {}
    send(d.new_object(0, vec![], None, true, false));
    send(d.get_object(0, g));
    send(d.push(0, g, vec![], None));
    send(d.sync(0, g));
    send(d.freeze(0, g));
    send(d.hold(0, g));
    send(d.discard(0, g));
    send(d.delete(0, g));
    send(d.shutdown());
}
