//! A share whose object cannot be fetched right now is neither refused nor lost: while the
//! only remote that holds the object is down, Bob's daemon leaves the request unanswered on
//! the remotes (no nak, no debinding), and handles it again by itself once that remote is
//! back. Alice is played by the test with the fixture keys and the persist client, so her
//! inbox and Bob's can be read on the persister.

mod proc_support;
mod share_support;

use std::time::Duration;

use hypergolix::actors::api::AppEvent;
use hypergolix::actors::content;
use hypergolix::actors::share::STATUS_OK;
use hypergolix::golix::{FirstParty, Ghid, SecondParty, Secret};
use hypergolix::persist::client::PersisterClient;
use share_support::*;

/// Alice's object: a dynamic object readable with `secret`, as its frame and container.
struct Shared {
    ghid: Ghid,
    secret: Secret,
    objects: [Vec<u8>; 3],
}

fn alices_object(alice: &FirstParty, api: Ghid) -> Shared {
    let secret = Secret::random();
    let geoc = alice
        .make_container(&content::pack(Some(&api), b"while you were out"), &secret)
        .unwrap();
    let frame = alice.make_bind_dynamic(geoc.ghid).unwrap();
    Shared {
        ghid: frame.dynamic,
        secret,
        objects: [alice.gidc().encode(), frame.encode(), geoc.encode()],
    }
}

async fn publish_all(url: &str, objects: &[Vec<u8>]) {
    let (client, _notes) = PersisterClient::connect(url).await.unwrap();
    for o in objects {
        client.publish(o).await.unwrap();
    }
    client.close();
}

#[actix_rt::test]
async fn a_share_whose_remote_is_down_waits_and_is_accepted_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = Persister::start();
    // A port no other test takes while P2 is down (reserved for this process).
    let p2 = Persister::start_on((std::net::Ipv4Addr::LOCALHOST, proc_support::free_port()).into());
    let bob = Node::create(dir.path(), &[&p1.url, &p2.url], 2).await;
    bob.drained().await;
    let api = api_id(31);
    let mut b = bob.app().await;
    b.link.register_share_handler(api).await.unwrap();

    let alice = fixture(1);
    let to_bob = SecondParty::from_gidc(fixture(2).gidc().clone()).unwrap();
    let shared = alices_object(&alice, api);
    // The object only on P2, which then goes down; Alice's identity on both.
    publish_all(&p2.url, &shared.objects).await;
    let p2_addr = p2.addr;
    p2.stop().await;
    let handshake = alice
        .make_handshake(&to_bob, shared.ghid, &shared.secret)
        .unwrap();
    publish_all(&p1.url, &[alice.gidc().encode(), handshake.encode()]).await;

    // Bob cannot tell whether the object exists: no answer, the request stays, no event.
    assert_eq!(b.next_within(Duration::from_millis(1500)).await, None);
    assert!(p1.requests_for(&alice.ghid()).is_empty(), "Bob answered");
    assert_eq!(p1.requests_for(&to_bob.ghid()).len(), 1, "request gone");

    // P2 is back (empty, then given the object again): Bob retries by himself and accepts.
    let p2 = Persister::start_on(p2_addr);
    publish_all(&p2.url, &shared.objects).await;
    let event = tokio::time::timeout(Duration::from_secs(40), b.next())
        .await
        .expect("the share is handled again within 40 s");
    assert_eq!(
        event,
        AppEvent::Share {
            ghid: shared.ghid,
            origin: alice.ghid(),
            api_id: Some(api),
        }
    );
    assert_eq!(
        b.link.get(shared.ghid).await.unwrap().state,
        b"while you were out"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while p1.requests_for(&alice.ghid()).is_empty() || !p1.requests_for(&to_bob.ghid()).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ack, or request not debound"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        answers(&p1.requests_for(&alice.ghid()), &alice, &to_bob),
        vec![(true, handshake.ghid, STATUS_OK)]
    );

    bob.stop().await;
    p1.stop().await;
    p2.stop().await;
}
