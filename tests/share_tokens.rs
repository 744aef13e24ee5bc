//! App identity through a real daemon and its IPC endpoint: tokens (issue, re-register after
//! a reconnect and after a daemon restart, one live session per token, one token per
//! session), startup objects, and private objects (token needed, invisible to other apps,
//! never shared).

mod share_support;

use hypergolix::ipc::{ClientError, ErrorKind};
use share_support::*;

fn kind(e: ClientError) -> ErrorKind {
    e.kind()
        .unwrap_or_else(|| panic!("not a daemon error: {e}"))
}

#[actix_rt::test]
async fn tokens_and_startup_objects_survive_reconnects_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::create(dir.path(), &[], 1).await;
    let first = node.app().await;
    let (token, startup) = first.link.register_token(None).await.unwrap();
    assert_eq!(startup, None);
    assert_ne!(token, [0; 16]);
    // One token per session.
    let e = first.link.register_token(None).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::AlreadySet);
    let e = first.link.register_token(Some(token)).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::AlreadySet);
    // One live session per token; unknown tokens are refused.
    let other = node.app().await;
    let e = other.link.register_token(Some(token)).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::TokenInUse);
    let e = other.link.register_token(Some([7; 16])).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::UnknownToken);
    let e = other
        .link
        .call(
            "register_token",
            rmpv::Value::Map(vec![("token".into(), rmpv::Value::Binary(vec![1; 5]))]),
        )
        .await
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::BadArgs);
    // Startup objects need a token, and are set once (the same one again is a retry: ok).
    let e = other.link.deregister_startup().await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::UnknownToken);
    let obj = first
        .link
        .new_object(b"start here".to_vec(), None, true, false)
        .await
        .unwrap();
    first.link.register_startup(obj.ghid).await.unwrap();
    first.link.register_startup(obj.ghid).await.unwrap();
    let another = first
        .link
        .new_object(b"or here".to_vec(), None, true, false)
        .await
        .unwrap();
    let e = first.link.register_startup(another.ghid).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::AlreadySet);

    // The app reconnects: its token brings its startup object back.
    first.link.close();
    drop(first);
    let again = node.app().await;
    let (t, startup) = tokio::time::timeout(WAIT, async {
        loop {
            // The old session ends asynchronously; until then the token is in use.
            match again.link.register_token(Some(token)).await {
                Err(e) if e.kind() == Some(ErrorKind::TokenInUse) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                other => return other.unwrap(),
            }
        }
    })
    .await
    .expect("the old session ends");
    assert_eq!((t, startup), (token, Some(obj.ghid)));
    assert_eq!(again.link.get(obj.ghid).await.unwrap().state, b"start here");

    // And after a restart of the daemon (the account keeps tokens and startup objects).
    let user_id = node.daemon.user_id();
    node.stop().await;
    let node = Node::open(dir.path(), &[], 1, user_id).await;
    let app = node.app().await;
    assert_eq!(
        app.link.register_token(Some(token)).await.unwrap(),
        (token, Some(obj.ghid))
    );
    app.link.deregister_startup().await.unwrap();
    // A retry is ok; after another restart none is set: not_found.
    app.link.deregister_startup().await.unwrap();
    node.stop().await;
    let node = Node::open(dir.path(), &[], 1, user_id).await;
    let app = node.app().await;
    assert_eq!(
        app.link.register_token(Some(token)).await.unwrap(),
        (token, None)
    );
    let e = app.link.deregister_startup().await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::NotFound);
    node.stop().await;
}

#[actix_rt::test]
async fn private_objects_belong_to_their_token() {
    let (ad, bd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p, alice, bob) = two_users(ad.path(), bd.path()).await;
    let owner = alice.app().await;
    let stranger = alice.app().await;
    let tokenless = alice.app().await;
    let (token, _) = owner.link.register_token(None).await.unwrap();
    stranger.link.register_token(None).await.unwrap();

    // A private object needs a token.
    let e = tokenless
        .link
        .new_object(b"mine".to_vec(), None, true, true)
        .await
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::UnknownToken);
    let secret = owner
        .link
        .new_object(b"mine".to_vec(), Some(api_id(30)), true, true)
        .await
        .unwrap();
    assert!(secret.private);
    // Other apps of the same user cannot load it, push to it or share it.
    for app in [&stranger, &tokenless] {
        let e = app.link.get(secret.ghid).await.unwrap_err();
        assert_eq!(kind(e), ErrorKind::AccessDenied);
        let e = app
            .link
            .push(secret.ghid, b"theirs".to_vec(), None)
            .await
            .unwrap_err();
        assert_eq!(kind(e), ErrorKind::AccessDenied);
    }
    // It is never shared, not even by its owner.
    let e = owner
        .link
        .share(secret.ghid, bob.fingerprint())
        .await
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::Unsharable);
    assert_eq!(
        e_code(&owner, secret.ghid, bob.fingerprint()).await,
        "unsharable"
    );
    let frozen = owner.link.freeze(secret.ghid).await.unwrap();
    let e = owner
        .link
        .share(frozen, bob.fingerprint())
        .await
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::Unsharable);
    let e = stranger.link.get(frozen).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::AccessDenied);

    // The owner's token on a new connection sees it.
    owner.link.close();
    drop(owner);
    let back = alice.app().await;
    tokio::time::timeout(WAIT, async {
        while back.link.register_token(Some(token)).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("token re-registered");
    assert_eq!(back.link.get(secret.ghid).await.unwrap().state, b"mine");
    // Made public, it is anybody's (and shareable).
    back.link
        .push(secret.ghid, b"ours".to_vec(), Some(false))
        .await
        .unwrap();
    assert_eq!(stranger.link.get(secret.ghid).await.unwrap().state, b"ours");
    back.link
        .share(secret.ghid, bob.fingerprint())
        .await
        .unwrap();

    alice.stop().await;
    bob.stop().await;
    p.stop().await;
}

/// The wire code of sharing `ghid` with `to`.
async fn e_code(app: &App, ghid: hypergolix::golix::Ghid, to: hypergolix::golix::Ghid) -> String {
    let e = app.link.share(ghid, to).await.unwrap_err();
    e.code().unwrap_or_default().to_owned()
}
