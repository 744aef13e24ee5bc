//! States a crash of `hgxd` can leave in its ghidcache, made on purpose, and the login that
//! must survive them (the account is never locked out):
//! - a local account root frame whose container is lost, newer than the persister's root: the
//!   login opens the persister's root, continues after the local frame, and the next root
//!   reaches the persister and another machine;
//! - a torn outbox (a root frame queued without its container, as a non-atomic write-ahead
//!   log could leave it): the replay at start-up stores nothing of it, and no remote gets it.
//!
//! In-process daemons and persister (helpers in `daemon_support`), fixture identity 1,
//! test-cost scrypt; every wait is bounded.

mod daemon_support;

use daemon_support::*;
use hypergolix::actors::account::{vault_key, Account};
use hypergolix::actors::publish_queue::PublishQueue;
use hypergolix::actors::vault::Vault;
use hypergolix::golix::{Geoc, Gobd};

const PASSWORD: &str = "correct horse";

fn decode(bytes: &[u8]) -> Object {
    Object::decode(bytes, Policy::STRICT).unwrap()
}

/// The account root (frame, container) stored in the ghidcache `dir` of a stopped daemon.
fn local_root(archive: &Archive, user_id: &Ghid) -> (Gobd, Option<Geoc>) {
    let Object::Gobd(frame) = decode(&archive.get(user_id).unwrap().expect("a root frame")) else {
        panic!("the user id is not a dynamic object");
    };
    let container = archive
        .get(&frame.target())
        .unwrap()
        .map(|b| match decode(&b) {
            Object::Geoc(c) => c,
            other => panic!("the root frame's target is {other:?}"),
        });
    (frame, container)
}

/// The next root frame and container after the local root, as the account's flush makes them
/// (signed with the identity inside the root).
fn next_root(archive: &Archive, user_id: &Ghid) -> (Gobd, Vec<u8>, Vec<u8>) {
    let (frame, container) = local_root(archive, user_id);
    let mut account = Account::open(
        secret(1, PASSWORD),
        &frame,
        &container.expect("the local root is whole"),
    )
    .unwrap();
    let objects = account.flush().unwrap();
    let Object::Gobd(next) = decode(&objects[0]) else {
        panic!("flush returns [frame, container]");
    };
    (next, objects[0].clone(), objects[1].clone())
}

/// A daemon of fixture 1 with one object, stopped cleanly once its outbox drained; its ids,
/// the object and its local root counter.
async fn account_with_an_object(dir: &std::path::Path, url: &str) -> ((Ghid, Ghid), Ghid, u64) {
    let d = create(dir, &[url], 1).await;
    let account = ids(&d);
    let (a, _) = app(&d);
    let x = d
        .new_object(a, b"kept".to_vec(), None, true, false)
        .await
        .unwrap()
        .ghid;
    drained(&d).await;
    d.shutdown().await.unwrap();
    drop(d);
    let archive = open_archive(dir).await;
    let (frame, container) = local_root(&archive, &account.0);
    assert!(container.is_some(), "a clean stop leaves a whole root");
    (account, x, frame.counter)
}

/// Opens a store of a stopped daemon's ghidcache (its database lock may linger a moment).
async fn retry_open<T, E: std::fmt::Display>(open: impl Fn() -> Result<T, E>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match open() {
            Ok(a) => return a,
            Err(e) if tokio::time::Instant::now() >= deadline => panic!("cannot open: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn open_archive(dir: &std::path::Path) -> Archive {
    retry_open(|| {
        Archive::open_logged(
            &dir.join("objects"),
            64 << 20,
            hypergolix::persist::store::WAL_MOVE_EVERY,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
    })
    .await
}

/// Polls `f` until it is true (bounded by `WAIT`).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_root_frame_whose_container_is_lost_does_not_lock_the_account_out() {
    let p = Persister::start(None, None);
    let url = p.url.clone();
    let (dir, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (account, x, counter) = account_with_an_object(dir.path(), &url).await;

    // The crash: the next root frame is durable locally, its container is not, and the
    // persister never got either.
    let bare = {
        let archive = open_archive(dir.path()).await;
        let (next, frame, _container) = next_root(&archive, &account.0);
        archive.publish(&frame).unwrap();
        archive.sync().await.unwrap();
        let (stored, container) = local_root(&archive, &account.0);
        assert_eq!((stored.counter, container.is_none()), (counter + 1, true));
        next.counter
    };
    assert!(p.frame_counter(&account.0).unwrap() < bare);

    // The login opens the persister's root and continues after the local frame: the next
    // root (flushed at once) goes above it, locally and upstream.
    let d = open(dir.path(), &[&url], account, 1, PASSWORD)
        .await
        .expect("the account logs in after losing its newest root container");
    let (a, _) = app(&d);
    assert_eq!(d.get_object(a, x).await.unwrap().state, b"kept");
    eventually("a root above the bare frame reaches the persister", || {
        p.frame_counter(&account.0).is_some_and(|c| c > bare)
    })
    .await;
    drained(&d).await;
    d.shutdown().await.unwrap();
    drop(d);
    {
        let archive = open_archive(dir.path()).await;
        let (frame, container) = local_root(&archive, &account.0);
        assert!(
            frame.counter > bare && container.is_some(),
            "the local root is whole again"
        );
    }

    // The same cache logs in again, and another machine opens the new root and the object.
    let d = open(dir.path(), &[&url], account, 1, PASSWORD)
        .await
        .expect("the local root opens");
    d.shutdown().await.unwrap();
    let d2 = open(other.path(), &[&url], account, 1, PASSWORD)
        .await
        .expect("another machine opens the continued root");
    let (b, _) = app(&d2);
    assert_eq!(d2.get_object(b, x).await.unwrap().state, b"kept");
    d2.shutdown().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_root_frame_queued_without_its_container_is_never_stored() {
    let p = Persister::start(None, None);
    let url = p.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let (account, x, counter) = account_with_an_object(dir.path(), &url).await;
    let upstream = p.frame_counter(&account.0).unwrap();

    // The crash: the outbox (the commits' write-ahead log) holds the next root frame but not
    // its container; the archive has neither.
    {
        let archive = open_archive(dir.path()).await;
        let (_, frame, _container) = next_root(&archive, &account.0);
        let db = retry_open(|| sled::open(dir.path().join("state"))).await;
        let vault = Vault::open(&db, "daemon", &vault_key(&secret(1, PASSWORD))).unwrap();
        let outbox = PublishQueue::open(vault.clone(), std::slice::from_ref(&url)).unwrap();
        outbox.enqueue(&[frame]).unwrap();
        vault.flush().await.unwrap();
    }

    let d = open(dir.path(), &[&url], account, 1, PASSWORD)
        .await
        .expect("the account logs in after a torn write-ahead log");
    let (a, _) = app(&d);
    assert_eq!(d.get_object(a, x).await.unwrap().state, b"kept");
    assert!(
        d.outbox_pending().iter().all(|(_, n)| *n == 0),
        "the torn entry is dropped: {:?}",
        d.outbox_pending()
    );
    d.shutdown().await.unwrap();
    drop(d);
    assert_eq!(
        p.frame_counter(&account.0),
        Some(upstream),
        "no remote got the frame"
    );
    let archive = open_archive(dir.path()).await;
    let (frame, container) = local_root(&archive, &account.0);
    assert_eq!((frame.counter, container.is_some()), (counter, true));
    p.stop();
}
