//! Handshakes that must not reach an app: a request whose MAC was tampered with is naked
//! (its claimed author is known) and debound, and nothing is dispatched; a genuine one sent
//! right after still arrives. Alice here is not a daemon: the test plays her with the
//! fixture keys and the persist client, so her inbox on the persister can be read.

mod share_support;

use std::time::Duration;

use hypergolix::actors::api::AppEvent;
use hypergolix::actors::content;
use hypergolix::actors::share::{STATUS_BAD_MAC, STATUS_OK};
use hypergolix::golix::{Ghid, SecondParty, Secret};
use hypergolix::persist::client::PersisterClient;
use share_support::*;

/// Waits until `f` holds (bounded by `WAIT`).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_tampered_handshake_is_naked_and_never_dispatched() {
    let dir = tempfile::tempdir().unwrap();
    let p = Persister::start();
    let bob = Node::create(dir.path(), &[&p.url], 2).await;
    bob.drained().await;
    let api = api_id(20);
    let mut b = bob.app().await;
    b.link.register_share_handler(api).await.unwrap();

    let alice = fixture(1);
    let to_bob = SecondParty::from_gidc(fixture(2).gidc().clone()).unwrap();
    let (client, _notes) = PersisterClient::connect(&p.url).await.unwrap();
    client.publish(&alice.gidc().encode()).await.unwrap();
    // Two dynamic objects of Alice's, readable with their secrets.
    let mut objects: Vec<(Ghid, Secret)> = Vec::new();
    for state in [&b"genuine"[..], b"tampered"] {
        let secret = Secret::random();
        let plain = content::pack(Some(&api), state);
        let geoc = alice.make_container(&plain, &secret).unwrap();
        let frame = alice.make_bind_dynamic(geoc.ghid).unwrap();
        client.publish(&frame.encode()).await.unwrap();
        client.publish(&geoc.encode()).await.unwrap();
        objects.push((frame.dynamic, secret));
    }
    let mut tampered = alice
        .make_handshake(&to_bob, objects[1].0, &objects[1].1)
        .unwrap();
    tampered.mac[17] ^= 0x40;
    client.publish(&tampered.encode()).await.unwrap();
    let genuine = alice
        .make_handshake(&to_bob, objects[0].0, &objects[0].1)
        .unwrap();
    client.publish(&genuine.encode()).await.unwrap();

    // Only the genuine share reaches Bob's handler.
    assert_eq!(
        b.next().await,
        AppEvent::Share {
            ghid: objects[0].0,
            origin: alice.ghid(),
            api_id: Some(api),
        }
    );
    assert_eq!(b.link.get(objects[0].0).await.unwrap().state, b"genuine");
    b.quiet().await;
    let e = b.link.get(objects[1].0).await.unwrap_err();
    assert_eq!(e.code(), Some("unknown_secret"), "{e}");

    // Alice's inbox: a nak of the tampered request, an ack of the genuine one, both from Bob.
    eventually("two answers for Alice", || {
        p.requests_for(&alice.ghid()).len() == 2
    })
    .await;
    let mut answers = answers(&p.requests_for(&alice.ghid()), &alice, &to_bob);
    answers.sort_by_key(|a| a.0);
    assert_eq!(
        answers,
        vec![
            (false, tampered.ghid, STATUS_BAD_MAC),
            (true, genuine.ghid, STATUS_OK),
        ]
    );
    // Bob debound both requests.
    eventually("Bob's requests debound", || {
        p.requests_for(&to_bob.ghid()).is_empty()
    })
    .await;

    client.close();
    bob.stop().await;
    p.stop().await;
}
