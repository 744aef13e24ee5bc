//! Sharing between two users end to end: a real persister, two real daemons (fixture 1 =
//! Alice, fixture 2 = Bob) each behind a real IPC server on 127.0.0.1:0, and apps speaking
//! the IPC protocol through `HgxLink`. Every wait is bounded.

mod share_support;

use hypergolix::actors::api::AppEvent;
use hypergolix::actors::inbox::{Inbox, MAX_BYTES};
use hypergolix::golix::{Algo, Ghid};
use hypergolix::ipc::ErrorKind;
use share_support::*;

/// Waits for a `share` event; returns (ghid, origin, api id).
async fn share_event(app: &mut App) -> (Ghid, Ghid, Option<Ghid>) {
    match app.next().await {
        AppEvent::Share {
            ghid,
            origin,
            api_id,
        } => (ghid, origin, api_id),
        other => panic!("expected a share event, got {other:?}"),
    }
}

/// Waits for a `share_result` event; returns (ghid, recipient, ok, status).
async fn share_result(app: &mut App) -> (Ghid, Ghid, bool, u32) {
    match app.next().await {
        AppEvent::ShareResult {
            ghid,
            recipient,
            ok,
            status,
        } => (ghid, recipient, ok, status),
        other => panic!("expected a share result, got {other:?}"),
    }
}

#[actix_rt::test]
async fn shared_object_reaches_the_handler_and_follows_every_push() {
    let (ad, bd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p, alice, bob) = two_users(ad.path(), bd.path()).await;
    let api = api_id(7);
    let mut a = alice.app().await;
    let mut b = bob.app().await;
    b.link.register_share_handler(api).await.unwrap();

    let obj = a
        .link
        .new_object(b"s0".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    a.link.share(obj.ghid, bob.fingerprint()).await.unwrap();

    let (ghid, origin, got_api) = share_event(&mut b).await;
    assert_eq!(
        (ghid, origin, got_api),
        (obj.ghid, alice.fingerprint(), Some(api))
    );
    let seen = b.link.get(obj.ghid).await.unwrap();
    assert_eq!(
        (
            seen.state.as_slice(),
            seen.author,
            seen.api_id,
            seen.dynamic
        ),
        (&b"s0"[..], alice.fingerprint(), Some(api), true)
    );
    assert_eq!(
        share_result(&mut a).await,
        (obj.ghid, bob.fingerprint(), true, 0)
    );

    // Ten pushes: they arrive in order (a slow reader may see only some) and end at the last.
    for i in 1..=10 {
        a.link
            .push(obj.ghid, format!("s{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    let states = b.until_state(obj.ghid, b"s10").await;
    let order: Vec<u32> = states
        .iter()
        .map(|s| String::from_utf8_lossy(&s[1..]).parse().unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order: {order:?}"
    );
    assert_eq!(b.link.get(obj.ghid).await.unwrap().state, b"s10");
    // Bob's copy is read-only.
    let e = b
        .link
        .push(obj.ghid, b"bob".to_vec(), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::LocallyImmutable));
    a.quiet().await;

    alice.stop().await;
    bob.stop().await;
    p.stop().await;
}

#[actix_rt::test]
async fn owners_delete_reaches_the_recipient_unless_it_holds() {
    let (ad, bd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p, alice, bob) = two_users(ad.path(), bd.path()).await;
    let api = api_id(8);
    let mut a = alice.app().await;
    let mut b = bob.app().await;
    b.link.register_share_handler(api).await.unwrap();
    let kept = a
        .link
        .new_object(b"kept".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    let gone = a
        .link
        .new_object(b"gone".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    for o in [&kept, &gone] {
        a.link.share(o.ghid, bob.fingerprint()).await.unwrap();
        assert_eq!(share_event(&mut b).await.0, o.ghid);
        assert!(share_result(&mut a).await.2);
        b.link.get(o.ghid).await.unwrap();
    }
    b.link.hold(kept.ghid).await.unwrap();
    bob.drained().await;

    a.link
        .push(kept.ghid, b"kept 2".to_vec(), None)
        .await
        .unwrap();
    b.until_state(kept.ghid, b"kept 2").await;
    a.link.delete(kept.ghid).await.unwrap();
    a.link.delete(gone.ghid).await.unwrap();
    assert_eq!(b.next().await, AppEvent::Delete(gone.ghid));
    b.quiet().await;
    assert_eq!(b.link.get(kept.ghid).await.unwrap().state, b"kept 2");
    let e = b.link.get(gone.ghid).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotFound));

    alice.stop().await;
    bob.stop().await;
    p.stop().await;
}

#[actix_rt::test]
async fn a_share_made_while_the_recipient_is_offline_arrives_when_it_starts() {
    let (ad, bd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p, alice, bob) = two_users(ad.path(), bd.path()).await;
    let bob_id = bob.daemon.user_id();
    bob.stop().await;

    let api = api_id(9);
    let mut a = alice.app().await;
    let obj = a
        .link
        .new_object(b"mail".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    a.link.share(obj.ghid, fixture(2).ghid()).await.unwrap();
    alice.drained().await;
    a.quiet().await; // nobody answers yet
    assert_eq!(p.requests_for(&fixture(2).ghid()).len(), 1, "offline mail");
    a.link
        .push(obj.ghid, b"mail 2".to_vec(), None)
        .await
        .unwrap();

    let bob = Node::open(bd.path(), &[&p.url], 2, bob_id).await;
    let mut b = bob.app().await;
    // Handled at subscribe (then kept for the handler) or live: either way it arrives.
    b.link.register_share_handler(api).await.unwrap();
    let (ghid, origin, _) = share_event(&mut b).await;
    assert_eq!((ghid, origin), (obj.ghid, alice.fingerprint()));
    assert_eq!(b.link.get(obj.ghid).await.unwrap().state, b"mail 2");
    assert_eq!(
        share_result(&mut a).await,
        (obj.ghid, bob.fingerprint(), true, 0)
    );
    bob.drained().await;
    assert!(p.requests_for(&bob.fingerprint()).is_empty(), "debound");

    alice.stop().await;
    bob.stop().await;
    p.stop().await;
}

#[actix_rt::test]
async fn a_share_nobody_handles_is_kept_until_a_handler_registers() {
    let (ad, bd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p, alice, bob) = two_users(ad.path(), bd.path()).await;
    let (api, other_api) = (api_id(10), api_id(11));
    let mut a = alice.app().await;
    let mut b = bob.app().await;
    b.link.register_share_handler(other_api).await.unwrap();
    let obj = a
        .link
        .new_object(b"orphan".to_vec(), Some(api), false, false)
        .await
        .unwrap();
    a.link.share(obj.ghid, bob.fingerprint()).await.unwrap();
    // Bob's daemon accepted it (ack) though no app handles the api id.
    assert_eq!(
        share_result(&mut a).await,
        (obj.ghid, bob.fingerprint(), true, 0)
    );
    b.quiet().await;
    let e = b.link.deregister_share_handler(api).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotFound));

    let mut late = bob.app().await;
    late.link.register_share_handler(api).await.unwrap();
    let (ghid, origin, got_api) = share_event(&mut late).await;
    assert_eq!(
        (ghid, origin, got_api),
        (obj.ghid, alice.fingerprint(), Some(api))
    );
    let got = late.link.get(obj.ghid).await.unwrap();
    assert_eq!((got.state.as_slice(), got.dynamic), (&b"orphan"[..], false));
    // Delivered once: another handler of the api id is not offered it again.
    late.link.deregister_share_handler(api).await.unwrap();
    b.link.register_share_handler(api).await.unwrap();
    b.quiet().await;

    alice.stop().await;
    bob.stop().await;
    p.stop().await;
}

/// Alice shares an object with `api` to Bob and waits for Bob's daemon to accept it.
async fn share_to_bob(a: &mut App, bob: &Node, api: Ghid, state: &[u8]) -> Ghid {
    let obj = a
        .link
        .new_object(state.to_vec(), Some(api), false, false)
        .await
        .unwrap();
    a.link.share(obj.ghid, bob.fingerprint()).await.unwrap();
    assert_eq!(
        share_result(a).await,
        (obj.ghid, bob.fingerprint(), true, 0)
    );
    obj.ghid
}

#[actix_rt::test]
async fn shares_for_an_app_that_stopped_reading_are_kept_for_its_next_session() {
    let (ad, bd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p, alice, bob) = two_users(ad.path(), bd.path()).await;
    let api = api_id(12);
    let mut a = alice.app().await;
    // Bob's app that stops reading: a session on his daemon whose inbox nobody reads.
    let stalled = Inbox::start(log("stalled"));
    let x = bob.daemon.connect_app(stalled.sender());
    bob.daemon.register_share_handler(x, api).await.unwrap();
    // This share is offered to x and waits in its inbox, unread.
    let waiting = share_to_bob(&mut a, &bob, api, b"waiting").await;
    tokio::time::sleep(QUIET).await;

    // Bob's other app pushes to objects x tracks until x's inbox is over its byte bound.
    let b2 = bob.app().await;
    let size = 4 * 1024 * 1024;
    for i in 0..=(MAX_BYTES / size) {
        let obj = b2
            .link
            .new_object(vec![i as u8; 16], None, true, false)
            .await
            .unwrap();
        bob.daemon.get_object(x, obj.ghid).await.unwrap();
        b2.link
            .push(obj.ghid, vec![i as u8; size], None)
            .await
            .unwrap();
    }
    tokio::time::timeout(WAIT, async {
        while !stalled.sender().is_closed() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stalled app's inbox closes");
    // A share arriving now is not offered to the closed inbox.
    let late = share_to_bob(&mut a, &bob, api, b"late").await;
    bob.daemon.disconnect_app(x);
    drop(stalled);

    // The app's next session gets both shares, kept for it as orphans.
    let mut next = bob.app().await;
    next.link.register_share_handler(api).await.unwrap();
    let mut got = vec![share_event(&mut next).await, share_event(&mut next).await];
    got.sort_by_key(|(g, _, _)| g.to_string());
    let mut want = vec![
        (waiting, alice.fingerprint(), Some(api)),
        (late, alice.fingerprint(), Some(api)),
    ];
    want.sort_by_key(|(g, _, _)| g.to_string());
    assert_eq!(got, want);
    next.quiet().await;

    alice.stop().await;
    bob.stop().await;
    p.stop().await;
}

#[actix_rt::test]
async fn sharing_with_an_unknown_fingerprint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = Persister::start();
    let alice = Node::create(dir.path(), &[&p.url], 1).await;
    let a = alice.app().await;
    let obj = a
        .link
        .new_object(b"x".to_vec(), None, true, false)
        .await
        .unwrap();
    // Nobody (fixture 3 never published its identity), and something that is no identity.
    for nobody in [
        fixture(3).ghid(),
        Ghid::pseudorandom(Algo::SHA512),
        obj.ghid,
    ] {
        let e = a.link.share(obj.ghid, nobody).await.unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::UnknownRecipient), "{e}");
        assert_eq!(e.code(), Some("unknown_recipient"));
    }
    let e = a
        .link
        .share(Ghid::pseudorandom(Algo::SHA512), fixture(1).ghid())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e}");
    alice.stop().await;
    p.stop().await;
}

#[actix_rt::test]
async fn the_users_other_apps_are_offered_its_new_public_objects() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Node::create(dir.path(), &[], 1).await;
    let api = api_id(12);
    let mut maker = alice.app().await;
    let mut other = alice.app().await;
    let mut unrelated = alice.app().await;
    maker.link.register_share_handler(api).await.unwrap();
    other.link.register_share_handler(api).await.unwrap();
    unrelated
        .link
        .register_share_handler(api_id(13))
        .await
        .unwrap();
    maker.link.register_token(None).await.unwrap();

    let obj = maker
        .link
        .new_object(b"public".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    assert_eq!(
        share_event(&mut other).await,
        (obj.ghid, alice.fingerprint(), Some(api))
    );
    assert_eq!(other.link.get(obj.ghid).await.unwrap().state, b"public");
    // Private objects are offered to nobody; the maker is never offered its own.
    maker
        .link
        .new_object(b"private".to_vec(), Some(api), true, true)
        .await
        .unwrap();
    other.quiet().await;
    maker.quiet().await;
    unrelated.quiet().await;
    alice.stop().await;
}

/// `get`s `ghid` until it opens with `state` (the last frames may still be on their way to
/// the daemon), then discards it.
async fn get_until(app: &App, ghid: Ghid, state: &[u8]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = app.link.get(ghid).await.unwrap();
        app.link.discard(ghid).await.unwrap();
        if got.state == state {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck at {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn a_shared_object_is_followed_even_while_no_app_tracks_it() {
    let (ad, bd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p, alice, bob) = two_users(ad.path(), bd.path()).await;
    let api = api_id(14);
    let mut a = alice.app().await;
    let obj = a
        .link
        .new_object(b"f0".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    a.link.share(obj.ghid, bob.fingerprint()).await.unwrap();
    assert!(share_result(&mut a).await.2);
    // More pushes than a frame's target vector holds, with nobody at Bob's tracking it.
    for i in 1..=12 {
        a.link
            .push(obj.ghid, format!("f{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    alice.drained().await;
    let b = bob.app().await;
    get_until(&b, obj.ghid, b"f12").await;

    // And after a restart of Bob's daemon (followed again, though nothing tracks it).
    let bob_id = bob.daemon.user_id();
    bob.stop().await;
    let bob = Node::open(bd.path(), &[&p.url], 2, bob_id).await;
    bob.drained().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await; // subscribed
    for i in 13..=24 {
        a.link
            .push(obj.ghid, format!("f{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    alice.drained().await;
    let b = bob.app().await;
    get_until(&b, obj.ghid, b"f24").await;

    alice.stop().await;
    bob.stop().await;
    p.stop().await;
}
