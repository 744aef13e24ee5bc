//! `sync` answers for what it pulled itself, not for a pull before it: a frame that could
//! not be opened when a remote announced it is that notification's failure; a later `sync`
//! that pulls nothing new answers `ok`, one that pulls that frame fails. Alice here is not a daemon: the test plays her with
//! the fixture keys and the persist client, so she can publish a frame Bob cannot open, to
//! one of Bob's two persisters only.

mod share_support;

use std::time::Duration;

use hypergolix::actors::api::AppEvent;
use hypergolix::actors::content;
use hypergolix::actors::link_state::LinkState;
use hypergolix::golix::{FirstParty, Geoc, Ghid, Gobd, SecondParty, Secret, DEFAULT_LEGROOM};
use hypergolix::persist::client::PersisterClient;
use share_support::*;

/// Publishes `objects` in order through `client`.
async fn publish(client: &PersisterClient, objects: &[Vec<u8>]) {
    for o in objects {
        client.publish(o).await.expect("published");
    }
}

/// The frame after `prev` (whose container `secret` opens) with `state`, and its container
/// and secret: `open`, the ratcheted secret (a holder of `secret` reads it), else one nobody
/// else learns.
fn next(
    alice: &FirstParty,
    api: &Ghid,
    (prev, secret): &(Gobd, Secret),
    state: &[u8],
    open: bool,
) -> (Gobd, Geoc, Secret) {
    let secret = if open {
        secret.ratchet(&prev.target(), &prev.dynamic)
    } else {
        Secret::random()
    };
    let geoc = alice
        .make_container(&content::pack(Some(api), state), &secret)
        .unwrap();
    let frame = alice
        .make_next_frame(prev, geoc.ghid, DEFAULT_LEGROOM)
        .unwrap();
    (frame, geoc, secret)
}

#[actix_rt::test]
async fn a_sync_answers_for_its_own_pull_not_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (Persister::start(), Persister::start());
    let bob = Node::create(dir.path(), &[&p1.url, &p2.url], 2).await;
    bob.drained().await;
    let api = api_id(21);
    let mut b = bob.app().await;
    b.link.register_share_handler(api).await.unwrap();

    let alice = fixture(1);
    let to_bob = SecondParty::from_gidc(fixture(2).gidc().clone()).unwrap();
    let (c1, _n1) = PersisterClient::connect(&p1.url).await.unwrap();
    let (c2, _n2) = PersisterClient::connect(&p2.url).await.unwrap();
    let gidc = alice.gidc().encode();
    publish(&c1, std::slice::from_ref(&gidc)).await;
    publish(&c2, &[gidc]).await;
    // Two objects of Alice's on both persisters, shared with Bob: `x`, and `marker`, whose
    // updates show how far Bob's puller of the first persister has come.
    let mut objects: Vec<(Gobd, Secret)> = Vec::new();
    for state in [&b"x0"[..], b"m0"] {
        let secret = Secret::random();
        let geoc = alice
            .make_container(&content::pack(Some(&api), state), &secret)
            .unwrap();
        let frame = alice.make_bind_dynamic(geoc.ghid).unwrap();
        let both = [frame.encode(), geoc.encode()];
        publish(&c1, &both).await;
        publish(&c2, &both).await;
        let share = alice
            .make_handshake(&to_bob, frame.dynamic, &secret)
            .unwrap();
        publish(&c1, &[share.encode()]).await;
        objects.push((frame, secret));
    }
    for _ in 0..2 {
        match b.next().await {
            AppEvent::Share { .. } => {}
            other => panic!("expected a share, got {other:?}"),
        }
    }
    let (x, marker) = (objects[0].0.dynamic, objects[1].0.dynamic);
    assert_eq!(b.link.get(x).await.unwrap().state, b"x0");
    assert_eq!(b.link.get(marker).await.unwrap().state, b"m0");

    // The next frames go to the first persister only. Both subscriptions are live there
    // once a marker update arrives.
    let (m1, m1c, m1s) = next(&alice, &api, &objects[1], b"m1", true);
    publish(&c1, &[m1.encode(), m1c.encode()]).await;
    b.until_state(marker, b"m1").await;
    objects[1] = (m1, m1s);
    // `x1` cannot be opened by Bob; the marker update after it shows the puller handed it to
    // the object, and a `get` waits until the object is done with it.
    let (x1, x1c, _) = next(&alice, &api, &objects[0], b"x1", false);
    publish(&c1, &[x1.encode(), x1c.encode()]).await;
    let (m2, m2c, _) = next(&alice, &api, &objects[1], b"m2", true);
    publish(&c1, &[m2.encode(), m2c.encode()]).await;
    b.until_state(marker, b"m2").await;
    assert_eq!(b.link.get(x).await.unwrap().state, b"x0");

    // Now only the second persister answers, and it has nothing newer than Bob: the sync
    // pulls nothing new, so it is ok, whatever the notification before it met.
    c1.close();
    p1.stop().await;
    tokio::time::timeout(WAIT, async {
        while bob.daemon.remotes()[0].state == LinkState::Connected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first persister's loss is seen");
    let synced = b.link.sync(x).await.expect("the sync pulled nothing new");
    assert_eq!(synced.state, b"x0");
    // The frame Bob cannot open on the second persister too: a sync that pulls it fails.
    publish(&c2, &[x1.encode(), x1c.encode()]).await;
    let e = b.link.sync(x).await.expect_err("the sync pulled x1");
    assert_eq!(e.code(), Some("unknown_secret"), "{e}");
    assert_eq!(b.link.get(x).await.unwrap().state, b"x0");

    c2.close();
    bob.stop().await;
    p2.stop().await;
}
