//! Local access control against real daemons (issue 8 part 3): who may talk to `hgxd` and
//! what one app may do to another's things.
//!
//! - The capability token: missing, wrong (right length, one bit off; all zeros; another
//!   token's hex) and malformed (short, long, non-hex, wrong msgpack types) are answered
//!   `access_denied` and the connection closes; ops before `hello` are refused; a browser
//!   `Origin` (even the daemon's own address) is refused with HTTP 403 before any op.
//!   (The comparison itself is `CapabilityToken::verify`, `subtle::ConstantTimeEq`.)
//! - Apps of one user: one app cannot undo another's share handler, startup object or
//!   token, nor read, change, freeze, hold, share or delete another token's private object,
//!   nor make it (or a ghid that does not exist) its startup object.
//! - Users: a recipient cannot push to or delete an object it was shared.
//! - Files: a first run of the real `hgxd` leaves `ipc.token` 0600 and the home, ghidcache
//!   and log directories 0700, log files 0600; the persister's logs likewise.
//!
//! Already covered elsewhere (not repeated): the mock-daemon frame tests in
//! `ipc_session.rs`, the token/private-object basics in `share_tokens.rs`, and the
//! real-binary token file/ghidcache modes in `hgxd_process.rs`.

mod hostile_support;
mod proc_support;
mod share_support;

use hostile_support::{bin, err_code, get, map, request, RawWs};
use hypergolix::actors::api::AppEvent;
use hypergolix::golix::{Algo, Ghid};
use hypergolix::ipc::{CapabilityToken, ClientError, ErrorKind};
use proc_support::{mode, Home, Persister};
use rmpv::Value;
use share_support::*;

fn kind(e: ClientError) -> ErrorKind {
    e.kind()
        .unwrap_or_else(|| panic!("not a daemon error: {e}"))
}

#[actix_rt::test]
async fn bad_tokens_early_ops_and_browsers_are_refused_by_a_real_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::create(dir.path(), &[], 1).await;
    let addr = node.server.local_addr();
    let token = node.token.as_bytes().to_vec();
    let flip = |at: usize| {
        let mut t = token.clone();
        t[at] ^= 0x01;
        t
    };
    let cases: Vec<(&str, Value)> = vec![
        ("no args", Value::Nil),
        ("empty args", map(vec![])),
        ("last bit off", map(vec![("token", bin(&flip(31)))])),
        ("first bit off", map(vec![("token", bin(&flip(0)))])),
        ("zeros", map(vec![("token", bin(&[0; 32]))])),
        ("31 bytes", map(vec![("token", bin(&token[..31]))])),
        (
            "33 bytes",
            map(vec![("token", bin(&[&token[..], &[0]].concat()))]),
        ),
        ("empty", map(vec![("token", bin(&[]))])),
        ("non-hex", map(vec![("token", Value::from("z".repeat(64)))])),
        (
            "another token's hex",
            map(vec![(
                "token",
                Value::from(CapabilityToken::generate().to_hex()),
            )]),
        ),
        ("an integer", map(vec![("token", Value::from(7))])),
        ("a map", map(vec![("token", map(vec![("a", Value::Nil)]))])),
        (
            "wrong bytes as an array",
            map(vec![(
                "token",
                Value::Array((0..32).map(Value::from).collect()),
            )]),
        ),
    ];
    for (what, args) in cases {
        let mut ws = RawWs::open(addr, None, None).await.expect("upgrade");
        ws.send(&request(9, "hello", args)).await;
        let seen = ws.until_closed().await;
        assert_eq!(seen.len(), 1, "{what}: {seen:?}");
        assert_eq!(err_code(&seen[0]), Some("access_denied"), "{what}");
        assert_eq!(get(&seen[0], "id"), &Value::from(9), "{what}");
    }

    // Before `hello` every op is refused; the connection stays for a `hello`.
    let mut ws = RawWs::open(addr, None, None).await.unwrap();
    let ops = [
        ("whoami", Value::Nil),
        ("new", map(vec![("state", bin(b"sneaky"))])),
        ("register_token", Value::Nil),
        ("no_such_op", Value::Nil),
    ];
    for (i, (op, args)) in ops.into_iter().enumerate() {
        ws.send(&request(i as u64, op, args)).await;
        let r = ws.msg().await;
        assert_eq!(err_code(&r), Some("access_denied"), "{op}: {r}");
    }
    ws.send(&request(50, "hello", map(vec![("token", bin(&token))])))
        .await;
    assert!(get(&ws.msg().await, "ok").is_map());

    // Browsers are refused at the handshake, whatever the origin, the daemon's own included.
    let own = format!("http://{addr}");
    for origin in ["http://evil.example", "null", "file://", own.as_str()] {
        let refused = RawWs::open(addr, Some(origin), None).await.err();
        assert!(
            refused.as_deref().is_some_and(|s| s.contains(" 403 ")),
            "{origin}: {refused:?}"
        );
    }

    // None of that disturbed an honest app.
    let app = node.app().await;
    let obj = app
        .link
        .new_object(b"fine".to_vec(), None, true, false)
        .await
        .unwrap();
    assert_eq!(app.link.get(obj.ghid).await.unwrap().state, b"fine");
    node.stop().await;
}

#[actix_rt::test]
async fn apps_cannot_undo_or_read_each_others_things() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::create(dir.path(), &[], 1).await;
    let api = api_id(41);
    let mut owner = node.app().await;
    let with_token = node.app().await;
    let tokenless = node.app().await;
    let (token, _) = owner.link.register_token(None).await.unwrap();
    with_token.link.register_token(None).await.unwrap();
    owner.link.register_share_handler(api).await.unwrap();
    let start = owner
        .link
        .new_object(b"start".to_vec(), None, true, false)
        .await
        .unwrap();
    owner.link.register_startup(start.ghid).await.unwrap();
    let private = owner
        .link
        .new_object(b"owner's eyes only".to_vec(), Some(api), true, true)
        .await
        .unwrap();

    for other in [&with_token, &tokenless] {
        // Share handlers, startup objects and tokens are per session or per token.
        let e = other.link.deregister_share_handler(api).await.unwrap_err();
        assert_eq!(kind(e), ErrorKind::NotFound);
        let e = other.link.deregister_startup().await.unwrap_err();
        assert!(
            matches!(kind(e), ErrorKind::NotFound | ErrorKind::UnknownToken),
            "deregister_startup"
        );
        let e = other.link.register_token(Some(token)).await.unwrap_err();
        assert!(
            matches!(kind(e), ErrorKind::TokenInUse | ErrorKind::AlreadySet),
            "register_token"
        );
        // The private object: every op that reads or changes it is refused.
        let g = private.ghid;
        let denied: Vec<(&str, Result<(), ClientError>)> = vec![
            ("get", other.link.get(g).await.map(drop)),
            ("sync", other.link.sync(g).await.map(drop)),
            ("push", other.link.push(g, b"x".to_vec(), None).await),
            (
                "push public",
                other.link.push(g, b"x".to_vec(), Some(false)).await,
            ),
            ("freeze", other.link.freeze(g).await.map(drop)),
            ("hold", other.link.hold(g).await),
            ("delete", other.link.delete(g).await),
            ("share", other.link.share(g, node.fingerprint()).await),
        ];
        for (op, r) in denied {
            let e = r.expect_err(op);
            assert_eq!(kind(e), ErrorKind::AccessDenied, "{op}");
        }
        // `discard` is local to the caller: allowed, and changes nothing for the owner.
        other.link.discard(g).await.unwrap();
    }
    // A startup object must exist, and must not be another token's private object.
    let e = with_token
        .link
        .register_startup(private.ghid)
        .await
        .unwrap_err();
    assert_eq!(
        kind(e),
        ErrorKind::AccessDenied,
        "another app's private ghid"
    );
    let nowhere = Ghid::new(Algo::SHA512, [9; 64]);
    let e = with_token.link.register_startup(nowhere).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::NotFound, "a ghid that does not exist");

    // The owner's things are intact: its share handler still receives (a public object of
    // that api id made by another app of the user is offered to it) ...
    let offered = tokenless
        .link
        .new_object(b"for the handler".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    match owner.next().await {
        AppEvent::Share { ghid, .. } => assert_eq!(ghid, offered.ghid),
        other => panic!("expected a share, got {other:?}"),
    }
    // ... its private object is unchanged and alive, its startup object still set.
    assert_eq!(
        owner.link.get(private.ghid).await.unwrap().state,
        b"owner's eyes only"
    );
    let e = owner.link.register_startup(private.ghid).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::AlreadySet);
    owner.link.deregister_share_handler(api).await.unwrap();
    // Nothing about the private object reached the others as an event.
    owner
        .link
        .push(private.ghid, b"still mine".to_vec(), None)
        .await
        .unwrap();
    let mut others = [with_token, tokenless];
    for app in others.iter_mut() {
        while let Some(ev) = app.next_within(QUIET).await {
            let leaked = match &ev {
                AppEvent::Update(v) => v.ghid == private.ghid,
                AppEvent::Delete(g) => *g == private.ghid,
                AppEvent::Share { ghid, .. } => *ghid == private.ghid,
                AppEvent::ShareResult { ghid, .. } => *ghid == private.ghid,
                AppEvent::RemoteRefused { ghid, .. } => *ghid == private.ghid,
            };
            assert!(!leaked, "another app heard of the private object: {ev:?}");
        }
    }
    node.stop().await;
}

#[actix_rt::test]
async fn a_recipient_cannot_change_or_delete_what_it_was_shared() {
    let (ad, bd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p, alice, bob) = two_users(ad.path(), bd.path()).await;
    let api = api_id(42);
    let a = alice.app().await;
    let mut b = bob.app().await;
    b.link.register_share_handler(api).await.unwrap();
    let obj = a
        .link
        .new_object(b"alice's".to_vec(), Some(api), true, false)
        .await
        .unwrap();
    a.link.share(obj.ghid, bob.fingerprint()).await.unwrap();
    let shared = tokio::time::timeout(WAIT, async {
        loop {
            if let AppEvent::Share { ghid, .. } = b.next().await {
                return ghid;
            }
        }
    })
    .await
    .expect("the share arrives");
    assert_eq!(shared, obj.ghid);
    assert_eq!(b.link.get(obj.ghid).await.unwrap().state, b"alice's");

    let e = b.link.delete(obj.ghid).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::LocallyImmutable);
    let e = b
        .link
        .push(obj.ghid, b"bob's".to_vec(), None)
        .await
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::LocallyImmutable);

    // Alice's object is untouched, for her and for Bob.
    a.link
        .push(obj.ghid, b"alice's, v2".to_vec(), None)
        .await
        .unwrap();
    b.until_state(obj.ghid, b"alice's, v2").await;
    assert_eq!(a.link.get(obj.ghid).await.unwrap().state, b"alice's, v2");
    alice.stop().await;
    bob.stop().await;
    p.stop().await;
}

/// The permission bits of everything a first run creates.
#[actix_rt::test]
async fn a_first_run_keeps_its_files_to_the_user() {
    let top = tempfile::tempdir().unwrap();
    // `hgxd` creates the home itself (it does not exist yet) and writes its default config.
    let home = Home::bare(top.path().join("home"));
    let pw = "mode-test password";
    let mut cmd = home.hgxd(Some(pw), &["--ipc-port", "0", "--verbosity", "debug"]);
    let id = top.path().join("id.json");
    std::fs::write(&id, proc_support::identity_json(3).to_string()).unwrap();
    cmd.arg("--identity-file").arg(&id);
    let mut d = proc_support::Proc::spawn("hgxd", cmd);
    d.wait_line(proc_support::READY, proc_support::START).await;

    let checks = [
        ("home", home.path.clone(), 0o700),
        ("ipc.token", home.file("ipc.token"), 0o600),
        ("ghidcache", home.file("ghidcache"), 0o700),
        ("logs", home.file("logs"), 0o700),
    ];
    let mut wrong = Vec::new();
    for (what, path, want) in &checks {
        let got = mode(path);
        if got != *want {
            wrong.push(format!("{what}: {got:o}, want {want:o}"));
        }
    }
    for f in std::fs::read_dir(home.file("logs")).unwrap().flatten() {
        let got = mode(&f.path());
        if got != 0o600 {
            wrong.push(format!("{}: {got:o}, want 600", f.path().display()));
        }
    }
    // The persister's logs (its store holds only public, encrypted objects: not checked).
    let p = Persister::start("info").await;
    let logs = p.dir.path().join("logs");
    if mode(&logs) != 0o700 {
        wrong.push(format!("persister logs: {:o}, want 700", mode(&logs)));
    }
    for f in std::fs::read_dir(&logs).unwrap().flatten() {
        if mode(&f.path()) != 0o600 {
            wrong.push(format!(
                "{}: {:o}, want 600",
                f.path().display(),
                mode(&f.path())
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    d.terminate();
    assert!(d.wait_exit(proc_support::WAIT).await.success());
}
