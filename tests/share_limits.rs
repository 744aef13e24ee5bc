//! What other users can make our account keep through shares is bounded: each share accepted
//! from another user keeps a secret in the account root and a subscription on every remote
//! until one of our apps adopts the object (loads it, holds it, shares it on). Past
//! `MAX_UNADOPTED_PER_SHARER` from one sharer, or `MAX_UNADOPTED_SHARES` in all, a new share
//! is naked with `STATUS_LIMIT` and nothing of it is kept, except that at the bound in all a
//! sharer holding fewer than the heaviest sharer evicts that one's newest; an adopted share
//! no longer counts.
//! The sharers are played by the test with the fixture keys and the persist client.

mod share_support;

use std::collections::HashMap;

use hypergolix::actors::account_actor::MAX_UNADOPTED_PER_SHARER;
use hypergolix::actors::share::{STATUS_LIMIT, STATUS_OK};
use hypergolix::golix::{Ghid, SecondParty};
use share_support::*;

/// A persister whose mailboxes take every request and answer of these tests at once.
fn persister() -> Persister {
    Persister::start_with("127.0.0.1:0".parse().unwrap(), |s| {
        s.limits.max_requests_per_sender = 4096;
        s.limits.max_requests_per_recipient = 4096;
    })
}

/// The objects whose requests `answers` nak with `STATUS_LIMIT`, and how many were acked.
fn refused(answers: &[(bool, Ghid, u32)], sent: &HashMap<Ghid, Ghid>) -> (Vec<Ghid>, usize) {
    let mut naked = Vec::new();
    let mut acked = 0;
    for (ok, request, status) in answers {
        match (ok, *status) {
            (true, STATUS_OK) => acked += 1,
            (false, STATUS_LIMIT) => naked.push(sent[request]),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    (naked, acked)
}

#[actix_rt::test]
async fn past_the_bound_per_sharer_a_share_is_naked_until_one_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let p = persister();
    let bob = Node::create(dir.path(), &[&p.url], 2).await;
    bob.drained().await;
    let to_bob = SecondParty::from_gidc(fixture(2).gidc().clone()).unwrap();
    let alice = Sharer::connect(&p, 1).await;
    let api = api_id(51);

    // object -> request, and back.
    let mut sent = HashMap::new();
    for i in 0..=MAX_UNADOPTED_PER_SHARER {
        let (object, request) = alice.share_new(&to_bob, api, &format!("share {i}")).await;
        sent.insert(request, object);
    }
    handled(&p, &to_bob.ghid()).await;
    let answers = alice
        .answers(&p, &to_bob, MAX_UNADOPTED_PER_SHARER + 1)
        .await;
    let (naked, acked) = refused(&answers, &sent);
    assert_eq!(acked, MAX_UNADOPTED_PER_SHARER);
    assert_eq!(naked.len(), 1, "exactly one past the bound");

    // Nothing of the refused share was kept: Bob cannot read it (no secret here nor in the
    // account); an accepted one he can.
    let b = bob.app().await;
    let e = b.link.get(naked[0]).await.unwrap_err();
    assert_eq!(e.code(), Some("unknown_secret"), "{e}");
    let adopted = sent
        .values()
        .copied()
        .find(|g| *g != naked[0])
        .expect("an accepted share");
    b.link.get(adopted).await.unwrap();

    // That get adopted it: one more share from Alice fits, and the one after does not.
    let mut more = HashMap::new();
    for i in 0..2 {
        let (object, request) = alice.share_new(&to_bob, api, &format!("more {i}")).await;
        more.insert(request, object);
        handled(&p, &to_bob.ghid()).await;
    }
    let answers = alice
        .answers(&p, &to_bob, MAX_UNADOPTED_PER_SHARER + 3)
        .await;
    let new: Vec<_> = answers
        .into_iter()
        .filter(|(_, request, _)| more.contains_key(request))
        .collect();
    let (naked_more, acked_more) = refused(&new, &more);
    assert_eq!(acked_more, 1, "{new:?}");
    assert_eq!(naked_more.len(), 1, "{new:?}");
    alice.client.close();
    bob.stop().await;
    p.stop().await;
}

#[actix_rt::test]
async fn at_the_bound_in_all_a_lighter_sharer_evicts_the_heaviest_ones_newest() {
    let dir = tempfile::tempdir().unwrap();
    let p = persister();
    let limits = ShareLimits {
        per_sharer: 3,
        total: 4,
    };
    let bob = Node::create_with(dir.path(), &[&p.url], 2, limits).await;
    bob.drained().await;
    let to_bob = SecondParty::from_gidc(fixture(2).gidc().clone()).unwrap();
    // Alice fills the bound in all (as many throw-away identities would); Carol has one.
    let alice = Sharer::connect(&p, 1).await;
    let carol = Sharer::connect(&p, 3).await;
    let api = api_id(52);

    let mut sent = HashMap::new();
    let mut from_alice = Vec::new();
    for (who, n) in [(&alice, 3), (&carol, 2)] {
        for i in 0..n {
            let (object, request) = who.share_new(&to_bob, api, &format!("share {i}")).await;
            sent.insert(request, object);
            if std::ptr::eq(who, &alice) {
                from_alice.push(object);
            }
            handled(&p, &to_bob.ghid()).await;
        }
    }
    // Carol's second is the fifth share: past the bound in all, and she holds fewer than
    // Alice, so it is accepted and Alice's newest is forgotten.
    let (naked, acked) = refused(&carol.answers(&p, &to_bob, 2).await, &sent);
    assert_eq!((naked.len(), acked), (0, 2));
    let b = bob.app().await;
    let e = b.link.get(from_alice[2]).await.unwrap_err();
    assert_eq!(e.code(), Some("unknown_secret"), "{e}");

    // Alice now holds as many as Carol, the most: hers is refused.
    let (object, request) = alice.share_new(&to_bob, api, "one more").await;
    sent.insert(request, object);
    handled(&p, &to_bob.ghid()).await;
    let (naked, acked) = refused(&alice.answers(&p, &to_bob, 4).await, &sent);
    assert_eq!((naked, acked), (vec![object], 3));
    let e = b.link.get(object).await.unwrap_err();
    assert_eq!(e.code(), Some("unknown_secret"), "{e}");
    // What was kept reads.
    b.link.get(from_alice[0]).await.unwrap();
    alice.client.close();
    carol.client.close();
    bob.stop().await;
    p.stop().await;
}

#[actix_rt::test]
async fn the_received_shares_travel_in_the_account_to_the_users_other_machine() {
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = persister();
    let limits = ShareLimits {
        per_sharer: 2,
        total: 8,
    };
    let bob1 = Node::create_with(dir1.path(), &[&p.url], 2, limits).await;
    bob1.drained().await;
    let user_id = bob1.daemon.user_id();
    let to_bob = SecondParty::from_gidc(fixture(2).gidc().clone()).unwrap();
    let alice = Sharer::connect(&p, 1).await;
    let api = api_id(53);

    let mut sent = HashMap::new();
    for i in 0..2 {
        let (object, request) = alice.share_new(&to_bob, api, &format!("share {i}")).await;
        sent.insert(request, object);
        handled(&p, &to_bob.ghid()).await;
    }
    let (naked, acked) = refused(&alice.answers(&p, &to_bob, 2).await, &sent);
    assert_eq!((naked.len(), acked), (0, 2));
    // The account root with both received shares is on the remote before Bob's first
    // machine stops.
    bob1.drained().await;
    bob1.stop().await;

    let bob2 = Node::open_with(dir2.path(), &[&p.url], 2, user_id, limits).await;
    let (object, request) = alice.share_new(&to_bob, api, "third").await;
    sent.insert(request, object);
    handled(&p, &to_bob.ghid()).await;
    let (naked, _) = refused(&alice.answers(&p, &to_bob, 3).await, &sent);
    assert_eq!(
        naked,
        vec![object],
        "the second machine counts the first's shares"
    );

    // An app there adopts one of the first two: Alice's next share fits.
    let b = bob2.app().await;
    let first = sent.values().copied().find(|g| *g != object).unwrap();
    b.link.get(first).await.unwrap();
    let (object, request) = alice.share_new(&to_bob, api, "fourth").await;
    sent.insert(request, object);
    handled(&p, &to_bob.ghid()).await;
    let answers = alice.answers(&p, &to_bob, 4).await;
    assert!(answers.contains(&(true, request, STATUS_OK)), "{answers:?}");
    alice.client.close();
    bob2.stop().await;
    p.stop().await;
}
