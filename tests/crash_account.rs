//! What the account records for an app is durable once the app has the answer: `hgxd`
//! SIGKILLed right after the ack of a private `new` or `freeze`, a `register_startup` or a
//! `deregister_startup`, or a `share`, comes back with the object (or snapshot) still private
//! to that app's token, the token's startup object as set, and the share still pending (the
//! account's timed flush must not be what makes them last).
//!
//! The real binaries (`crash_support`): a persister process and an `hgxd` process on
//! 127.0.0.1, fixture identity 1.

mod common;
mod crash_support;
mod proc_support;

use crash_support::*;
use hypergolix::actors::api::AppEvent;

#[actix_rt::test]
async fn a_private_object_stays_private_after_a_kill_right_after_new() {
    let p = PersisterProc::start().await;
    let (mut d, owner, token) = daemon_with_an_app(&p).await;
    let ghid = new_object(&owner, b"mine alone", None, true).await;

    let owner = d.kill9_and_relink().await;
    denied_to_another_app(&d, ghid, "a private object").await;
    owner.register_token(Some(token)).await.unwrap();
    assert_eq!(owner.get(ghid).await.unwrap().state, b"mine alone");
    d.terminate().await;
}

#[actix_rt::test]
async fn a_startup_object_survives_a_kill_right_after_register_startup() {
    let p = PersisterProc::start().await;
    let (mut d, app, token) = daemon_with_an_app(&p).await;
    let ghid = new_object(&app, b"start here", None, false).await;
    app.register_startup(ghid).await.unwrap();

    let app = d.kill9_and_relink().await;
    let (_, startup) = app.register_token(Some(token)).await.unwrap();
    assert_eq!(startup, Some(ghid), "the startup object was lost");

    // And cleared, it stays cleared.
    app.deregister_startup().await.unwrap();
    let app = d.kill9_and_relink().await;
    let (_, startup) = app.register_token(Some(token)).await.unwrap();
    assert_eq!(startup, None, "the cleared startup object came back");
    d.terminate().await;
}

#[actix_rt::test]
async fn a_frozen_private_object_stays_private_after_a_kill_right_after_freeze() {
    let p = PersisterProc::start().await;
    let (mut d, owner, _) = daemon_with_an_app(&p).await;
    let ghid = new_object(&owner, b"mine alone", None, true).await;
    let frozen = owner.freeze(ghid).await.unwrap();

    d.kill9_and_relink().await;
    denied_to_another_app(&d, frozen, "a private snapshot").await;
    d.terminate().await;
}

#[actix_rt::test]
async fn a_share_made_right_before_a_kill_is_still_pending_when_its_answer_arrives() {
    let p = PersisterProc::start().await;
    let (mut alice, app, _) = daemon_with_an_app(&p).await;
    let bob = Daemon::start(2, p.port).await;
    let bob_app = bob.link().await;
    let mut bob_events = bob_app.events();
    let api = api_id(0x5d);
    bob_app.register_share_handler(api).await.unwrap();
    let ghid = new_object(&app, b"for Bob", Some(api), false).await;
    app.share(ghid, bob_app.fingerprint()).await.unwrap();
    alice.kill9().await;
    alice.restart().await;

    // The request leaves Alice's durable outbox (before or after the kill); Bob accepts.
    let accepted = tokio::time::timeout(WAIT, async {
        while let Some(e) = bob_events.recv().await {
            if matches!(e, AppEvent::Share { ghid: g, .. } if g == ghid) {
                return;
            }
        }
    })
    .await;
    assert!(accepted.is_ok(), "Bob never got the share");
    let deadline = std::time::Instant::now() + WAIT;
    while !alice.output().contains("share answered") {
        assert!(
            std::time::Instant::now() < deadline,
            "the answer found no pending share:\n{}",
            alice.output()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    alice.terminate().await;
}
