//! The sharing and app-identity ops over a real IPC server and the in-memory daemon: `hello`
//! announces them, the Rust client's methods reach the daemon with the right arguments, the
//! daemon's codes come back typed, and `share` / `share_result` events reach the right link.

mod ipc_mock;

use std::time::Duration;

use hypergolix::actors::api::AppEvent;
use hypergolix::golix::{Algo, Ghid};
use hypergolix::ipc::{ErrorKind, HgxLink};
use ipc_mock::*;
use rmpv::Value;
use tokio::sync::mpsc;

async fn next(rx: &mut mpsc::UnboundedReceiver<AppEvent>) -> AppEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no event within 5 s")
        .expect("event stream ended")
}

#[actix_rt::test]
async fn hello_announces_the_sharing_ops_with_their_arguments() {
    let (server, token) = start(MemDaemon::default()).await;
    let link = HgxLink::connect(&server.url(), &token).await.unwrap();
    let ops = &link.hello_info().ops;
    for (op, args) in [
        ("register_token", &["token"][..]),
        ("register_startup", &["ghid"]),
        ("deregister_startup", &[]),
        ("register_share_handler", &["api_id"]),
        ("deregister_share_handler", &["api_id"]),
        ("share", &["ghid", "recipient"]),
    ] {
        assert_eq!(ops[op].args, args, "{op}");
    }
    assert_eq!(ops["register_token"].defaults["token"], Value::Nil);
    assert!(link.hello_info().events.iter().any(|e| e == "share_result"));
    server.stop(true).await;
}

#[actix_rt::test]
async fn every_sharing_op_round_trips_through_the_client() {
    let daemon = MemDaemon::default();
    let (server, token) = start(daemon.clone()).await;
    let a = HgxLink::connect(&server.url(), &token).await.unwrap();
    let b = HgxLink::connect(&server.url(), &token).await.unwrap();
    let mut a_rx = a.events();
    let mut b_rx = b.events();

    let (t, startup) = a.register_token(None).await.unwrap();
    assert_eq!(startup, None);
    assert_eq!(
        a.register_token(None).await.unwrap_err().kind(),
        Some(ErrorKind::AlreadySet)
    );
    assert_eq!(
        b.register_token(Some(t)).await.unwrap_err().kind(),
        Some(ErrorKind::TokenInUse)
    );
    let obj = a
        .new_object(
            b"x".to_vec(),
            Some(Ghid::new(Algo::DUMMY, [4; 64])),
            true,
            false,
        )
        .await
        .unwrap();
    a.register_startup(obj.ghid).await.unwrap();
    a.deregister_startup().await.unwrap();
    assert_eq!(
        a.deregister_startup().await.unwrap_err().kind(),
        Some(ErrorKind::NotFound)
    );

    // Same-user offers go to the other handler of the api id.
    let api = Ghid::new(Algo::DUMMY, [5; 64]);
    b.register_share_handler(api).await.unwrap();
    let made = a
        .new_object(b"y".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    assert_eq!(
        next(&mut b_rx).await,
        AppEvent::Share {
            ghid: made.ghid,
            origin: a.fingerprint(),
            api_id: Some(api),
        }
    );
    b.deregister_share_handler(api).await.unwrap();

    let bob = Ghid::new(Algo::SHA512, [0x22; 64]);
    a.share(made.ghid, bob).await.unwrap();
    assert_eq!(
        next(&mut a_rx).await,
        AppEvent::ShareResult {
            ghid: made.ghid,
            recipient: bob,
            ok: true,
            status: 0,
        }
    );
    let e = a.share(made.ghid, unknown_recipient()).await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (Some(ErrorKind::UnknownRecipient), Some("unknown_recipient"))
    );
    let private = a.new_object(b"p".to_vec(), None, true, true).await.unwrap();
    let e = a.share(private.ghid, bob).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Unsharable));
    let ops: Vec<&str> = daemon.calls().iter().map(|c| c.1).collect();
    assert!(ops.contains(&"register_share_handler") && ops.contains(&"share"));
    server.stop(true).await;
}
