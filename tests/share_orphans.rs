//! Shares that no app handles are kept as orphans in the account, but not without end: the
//! account root carries them and every remote must take it whole, and anyone who knows the
//! user's fingerprint can share with them. Past `MAX_ORPHAN_SHARES` the oldest is no longer
//! offered, and unless an app adopted its object, its secret is forgotten; the app that
//! registers a handler later gets exactly the newest ones.
//! Alice is played by the test with the fixture keys and the persist client.

mod share_support;

use std::collections::HashSet;
use std::time::Duration;

use hypergolix::actors::account_actor::{MAX_ORPHAN_SHARES, MAX_UNADOPTED_SHARES};
use hypergolix::actors::api::AppEvent;
use hypergolix::actors::content;
use hypergolix::golix::{Ghid, SecondParty, Secret};
use hypergolix::persist::client::PersisterClient;
use share_support::*;

#[actix_rt::test]
async fn past_the_orphan_bound_the_oldest_share_is_no_longer_offered() {
    let dir = tempfile::tempdir().unwrap();
    let p = Persister::start();
    // One sharer: past the orphan bound within the bound per sharer.
    let limits = ShareLimits {
        per_sharer: MAX_UNADOPTED_SHARES,
        total: MAX_UNADOPTED_SHARES,
    };
    let bob = Node::create_with(dir.path(), &[&p.url], 2, limits).await;
    bob.drained().await;
    let api = api_id(41);

    let alice = fixture(1);
    let to_bob = SecondParty::from_gidc(fixture(2).gidc().clone()).unwrap();
    let (client, _notes) = PersisterClient::connect(&p.url).await.unwrap();
    client.publish(&alice.gidc().encode()).await.unwrap();
    let mut shared: Vec<Ghid> = Vec::new();
    for i in 0..=MAX_ORPHAN_SHARES {
        let secret = Secret::random();
        let plain = content::pack(Some(&api), format!("orphan {i}").as_bytes());
        let geoc = alice.make_container(&plain, &secret).unwrap();
        let frame = alice.make_bind_dynamic(geoc.ghid).unwrap();
        client.publish(&frame.encode()).await.unwrap();
        client.publish(&geoc.encode()).await.unwrap();
        let garq = alice
            .make_handshake(&to_bob, frame.dynamic, &secret)
            .unwrap()
            .encode();
        // Bob's mailbox takes 64 of ours at a time: wait for him to handle some.
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Err(e) = client.publish(&garq).await {
            assert_eq!(e.code(), Some("mailbox_full"), "{e}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "Bob handles no shares"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shared.push(frame.dynamic);
    }
    // Every request handled (debound) before an app asks for the orphans.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while !p.requests_for(&to_bob.ghid()).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests left unhandled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut b = bob.app().await;
    b.link.register_share_handler(api).await.unwrap();
    let mut offered = HashSet::new();
    while let Some(e) = b.next_within(Duration::from_secs(3)).await {
        match e {
            AppEvent::Share { ghid, api_id, .. } if api_id == Some(api) => {
                assert!(offered.insert(ghid), "offered twice");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Requests are handled in arrival order, the oldest first; a retried one (a slow remote
    // under load) may come later, so only the bound and the newest are certain.
    assert_eq!(offered.len(), MAX_ORPHAN_SHARES);
    assert!(offered.iter().all(|g| shared.contains(g)));
    assert!(
        offered.contains(&shared[MAX_ORPHAN_SHARES]),
        "the newest was dropped"
    );
    // The one no longer offered was adopted by no app: its secret is forgotten (here and in
    // the account), so Bob can no longer read it; an offered one he can.
    let dropped = *shared
        .iter()
        .find(|g| !offered.contains(g))
        .expect("one dropped");
    let e = b.link.get(dropped).await.unwrap_err();
    assert_eq!(e.code(), Some("unknown_secret"), "{e}");
    b.link.get(shared[MAX_ORPHAN_SHARES]).await.unwrap();
    client.close();
    bob.stop().await;
    p.stop().await;
}
