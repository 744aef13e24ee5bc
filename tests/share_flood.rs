//! Share requests arriving faster than they are handled: the daemon takes at most
//! `share::MAX_QUEUED` at a time (each costs an RSA decryption and remote round trips) and
//! leaves the rest on the remote; once it has caught up it asks the remote for its stored
//! mail again, so every request is handled without waiting for a reconnect. Alice is played
//! by the test with the fixture keys and the persist client; her requests name objects that
//! do not exist, so Bob answers each with a nak and debinds it.

mod share_support;

use std::time::Duration;

use hypergolix::actors::share::MAX_QUEUED;
use hypergolix::golix::{SecondParty, Secret};
use hypergolix::persist::client::PersisterClient;
use share_support::*;

#[actix_rt::test]
async fn a_flood_of_requests_is_handled_whole_without_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let p = Persister::start_with("127.0.0.1:0".parse().unwrap(), |s| {
        s.limits.max_requests_per_sender = 4096;
        s.limits.max_requests_per_recipient = 4096;
    });
    let bob = Node::create(dir.path(), &[&p.url], 2).await;
    bob.drained().await;

    let alice = fixture(1);
    let to_bob = SecondParty::from_gidc(fixture(2).gidc().clone()).unwrap();
    let (client, _notes) = PersisterClient::connect(&p.url).await.unwrap();
    client.publish(&alice.gidc().encode()).await.unwrap();
    let count = MAX_QUEUED + 150;
    let secret = Secret::random();
    let garqs: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let target = alice
                .make_container(format!("never published {i}").as_bytes(), &secret)
                .unwrap()
                .ghid;
            alice
                .make_handshake(&to_bob, target, &secret)
                .unwrap()
                .encode()
        })
        .collect();
    // All at once (pipelined): they reach Bob far faster than he handles them.
    let objects: Vec<&[u8]> = garqs.iter().map(Vec::as_slice).collect();
    for r in client.publish_all(&objects).await {
        r.unwrap();
    }
    // Every request handled (debound), on the same connection.
    let deadline = tokio::time::Instant::now() + WAIT * 6;
    loop {
        let left = p.requests_for(&to_bob.ghid()).len();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} of {count} requests left unhandled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bob.stop().await;
    p.stop().await;
}
