//! The account (root secret, root object, state sync) and the encrypted local vault.
//! Fast: scrypt runs with `ScryptParams::TEST` and the identities are fixtures.

mod common;

use std::path::Path;

use hypergolix::actors::account::{
    derive_root_secret, Account, AccountState, AppTokenBytes, OrphanShare, PendingShare,
    ScryptParams, StoredSecret,
};
use hypergolix::actors::error::DaemonError;
use hypergolix::actors::vault::Vault;
use hypergolix::golix::{Algo, Geoc, Ghid, Gobd, Object, Policy, Secret};
use hypergolix::persist::store::{LoggedTree, WAL_MOVE_EVERY};

/// Fixture 1's fingerprint (`fixture_identities.json`), without loading its keys.
const FP1: &str =
    "AYcjphasJioxk9TBUPt73UsEnbFs9sgj8XwIdjGdfHlKeTvdadDIBZaXqDbyYDA3vTIcJzi3HeB5d27RhaniPM4=";

/// Cheap parameters other than `TEST`: the same password gives another root secret.
const OTHER_PARAMS: ScryptParams = ScryptParams {
    log_n: 10,
    r: 4,
    p: 1,
};

fn root_secret(password: &str, fingerprint: &Ghid) -> Secret {
    derive_root_secret(password.as_bytes(), fingerprint, ScryptParams::TEST).unwrap()
}

fn decode(b: &[u8]) -> Object {
    Object::decode(b, Policy::STRICT).unwrap()
}

fn frame_and_container(objects: &[Vec<u8>]) -> (Gobd, Geoc) {
    match (decode(&objects[0]), decode(&objects[1])) {
        (Object::Gobd(f), Object::Geoc(c)) => (f, c),
        other => panic!("expected [frame, container], got {other:?}"),
    }
}

fn g() -> Ghid {
    Ghid::pseudorandom(Algo::SHA512)
}

/// A state with something in every field.
fn busy_state() -> AccountState {
    let token = AppTokenBytes([7; 16]);
    let mut s = AccountState::default();
    s.secrets.insert(
        g(),
        StoredSecret {
            secret: Secret::random(),
            container: g(),
        },
    );
    s.tokens.insert(token);
    s.startup.insert(token, g());
    s.private.insert(g(), token);
    s.api_ids.insert(g(), Ghid::pseudorandom(Algo::DUMMY));
    s.pending_shares.push(PendingShare {
        request: g(),
        target: g(),
        recipient: g(),
        token: Some(token),
    });
    s.orphan_shares.push(OrphanShare {
        ghid: g(),
        origin: g(),
        api_id: None,
    });
    s.holds.insert(g());
    s
}

#[test]
fn derive_root_secret_is_deterministic_and_input_sensitive() {
    let fp: Ghid = FP1.parse().unwrap();
    let a = root_secret("hunter2", &fp);
    assert_eq!(a, root_secret("hunter2", &fp));
    // Known answer, from Python's hashlib.scrypt (OpenSSL) with the reference's layout:
    // scrypt(b"hunter2", salt = 65 fingerprint bytes, n = 2^10, r = 8, p = 1, dklen = 48).
    let kat = hex::decode(
        "73194b34478b69ac63885e34c858e193e1f568d21a5c42ce6c9bfa853444167f\
         8a84a01734dd4570023429967f254c68",
    )
    .unwrap();
    assert_eq!(&a.key()[..], &kat[..32]);
    assert_eq!(&a.seed()[..], &kat[32..]);
    assert_ne!(a, root_secret("hunter3", &fp));
    assert_ne!(a, root_secret("", &fp));
    assert_ne!(a, root_secret("hunter2", &g()));
    let stronger = ScryptParams {
        log_n: 11,
        ..ScryptParams::TEST
    };
    assert_ne!(a, derive_root_secret(b"hunter2", &fp, stronger).unwrap());
    assert_eq!(
        ScryptParams::default(),
        ScryptParams {
            log_n: 15,
            r: 8,
            p: 1
        }
    );
    let bad = ScryptParams {
        r: 0,
        ..ScryptParams::TEST
    };
    assert!(matches!(
        derive_root_secret(b"x", &fp, bad),
        Err(DaemonError::Account(_))
    ));
}

#[test]
fn create_returns_objects_that_verify_in_ingest_order() {
    let me = common::fixture(1);
    let fp = me.ghid();
    let public = me.second_party().clone();
    let root = root_secret("pw", &fp);
    let (account, objects) = Account::create(me, root.clone()).unwrap();
    assert_eq!(objects.len(), 5, "GIDC + 2 × (frame, container)");
    let decoded: Vec<Object> = objects.iter().map(|b| decode(b)).collect();
    let Object::Gidc(gidc) = &decoded[0] else {
        panic!("the GIDC comes first");
    };
    assert_eq!(gidc.ghid, fp);
    decoded[0].verify(None).unwrap();
    let mut frames = Vec::new();
    for (i, o) in decoded.iter().enumerate().skip(1) {
        o.verify(Some(&public)).unwrap();
        match o {
            Object::Gobd(f) => frames.push(f.clone()),
            Object::Geoc(c) => {
                let bound_before = decoded[..i]
                    .iter()
                    .any(|p| matches!(p, Object::Gobd(f) if f.target() == c.ghid));
                assert!(bound_before, "container {i} arrives after its frame");
            }
            other => panic!("unexpected {:?}", other.kind()),
        }
    }
    let counters: Vec<u64> = frames.iter().map(|f| f.counter).collect();
    assert_eq!(counters, [0, 1]);
    assert!(frames.iter().all(|f| f.dynamic == account.user_id()));
    assert_eq!(account.fingerprint(), fp);
    assert_eq!(account.frame(), &frames[1]);
    assert!(!account.is_dirty());
    assert_eq!(account.state(), &AccountState::default());

    // Frame 1 opens from the root secret; frame 0 (random secret) never does.
    let (f1, c1) = frame_and_container(&objects[3..]);
    let opened = Account::open(root.clone(), &f1, &c1).unwrap();
    assert_eq!(opened.user_id(), account.user_id());
    let (f0, c0) = frame_and_container(&objects[1..]);
    assert!(matches!(
        Account::open(root, &f0, &c0),
        Err(DaemonError::Account(_))
    ));
}

#[test]
fn open_reproduces_identity_and_state() {
    let me = common::fixture(1);
    let fp = me.ghid();
    let public = me.second_party().clone();
    let root = root_secret("correct horse", &fp);
    let (mut account, _) = Account::create(me, root.clone()).unwrap();
    let state = busy_state();
    *account.state_mut() = state.clone();
    let objects = account.flush().unwrap();
    let (frame, container) = frame_and_container(&objects);

    let opened = Account::open(root.clone(), &frame, &container).unwrap();
    assert_eq!(opened.fingerprint(), fp);
    assert_eq!(opened.identity().ghid(), fp);
    assert_eq!(opened.user_id(), account.user_id());
    assert_eq!(opened.state(), &state);
    assert!(!opened.is_dirty());
    assert_eq!(*opened.vault_key(), *account.vault_key());
    // The reloaded private keys sign for the same identity.
    let c = opened
        .identity()
        .make_container(b"x", &Secret::random())
        .unwrap();
    Object::Geoc(c).verify(Some(&public)).unwrap();
    let hs = opened
        .identity()
        .make_handshake(&public, g(), &Secret::random())
        .unwrap();
    let again = common::fixture(1);
    again
        .open_request(&hs, |_| Some(public.clone()))
        .expect("exchange key survives the round trip");
}

#[test]
fn wrong_password_is_refused() {
    let me = common::fixture(2);
    let fp = me.ghid();
    let (_, objects) = Account::create(me, root_secret("right", &fp)).unwrap();
    let (frame, container) = frame_and_container(&objects[3..]);
    for wrong in [
        root_secret("wrong", &fp),
        root_secret("Right", &fp),
        derive_root_secret(b"right", &fp, OTHER_PARAMS).unwrap(),
    ] {
        let err = Account::open(wrong, &frame, &container).unwrap_err();
        assert!(matches!(err, DaemonError::WrongPassword), "{err:?}");
        assert_eq!(err.code(), "wrong_password");
    }
    assert!(Account::open(root_secret("right", &fp), &frame, &container).is_ok());
}

#[test]
fn flush_writes_a_new_frame_that_open_follows() {
    let me = common::fixture(1);
    let fp = me.ghid();
    let root = root_secret("pw", &fp);
    let (mut account, created) = Account::create(me, root.clone()).unwrap();
    let (f1, c1) = frame_and_container(&created[3..]);

    let token = AppTokenBytes([1; 16]);
    account.state_mut().tokens.insert(token);
    assert!(account.is_dirty());
    let objects = account.flush().unwrap();
    assert!(!account.is_dirty());
    assert_eq!(objects.len(), 2);
    let (f2, c2) = frame_and_container(&objects);
    assert_eq!(f2.counter, 2);
    assert_eq!(f2.dynamic, f1.dynamic);
    assert_eq!(f2.targets[0], c2.ghid);
    assert_eq!(
        f2.targets[1], c1.ghid,
        "the previous container salts the ratchet"
    );
    let opened = Account::open(root.clone(), &f2, &c2).unwrap();
    assert!(opened.state().tokens.contains(&token));

    let hold = g();
    account.state_mut().holds.insert(hold);
    let (f3, c3) = frame_and_container(&account.flush().unwrap());
    assert_eq!(f3.counter, 3);
    let opened = Account::open(root.clone(), &f3, &c3).unwrap();
    assert!(opened.state().tokens.contains(&token));
    assert!(opened.state().holds.contains(&hold));
    // An older frame still opens, with its older state.
    let old = Account::open(root.clone(), &f1, &c1).unwrap();
    assert_eq!(old.state(), &AccountState::default());
    // Flushing an opened account continues the same chain.
    let mut opened = opened;
    let (f4, c4) = frame_and_container(&opened.flush().unwrap());
    assert_eq!(f4.counter, 4);
    assert_eq!(f4.targets[1], c3.ghid);
    Account::open(root.clone(), &f4, &c4).unwrap();

    // A container that is not the frame's target, or a frame whose binder is someone else.
    assert!(matches!(
        Account::open(root.clone(), &f3, &c2),
        Err(DaemonError::Account(_))
    ));
    let mut forged = f3.clone();
    forged.binder = common::fixture(2).ghid();
    let err = Account::open(root, &forged, &c3).unwrap_err();
    assert!(
        matches!(err, DaemonError::Account(ref m) if m.contains("binder")),
        "{err:?}"
    );
}

#[test]
fn debug_of_account_and_stored_secret_shows_no_key_bytes() {
    let me = common::fixture(3);
    let root = root_secret("pw", &me.ghid());
    let (mut account, _) = Account::create(me, root.clone()).unwrap();
    *account.state_mut() = busy_state();
    let stored = account.state().secrets.values().next().unwrap().clone();
    let printed = format!("{account:?} {account:#?} {stored:?} {:?}", account.state());
    let vault_key = account.vault_key();
    for bytes in [
        &root.key()[..],
        &root.seed()[..],
        &stored.secret.key()[..],
        &stored.secret.seed()[..],
        &vault_key[..],
        &account.identity().export().exchange[..],
    ] {
        assert!(!printed.contains(&hex::encode(bytes)));
        assert!(!printed.contains(&format!("{:?}", &bytes[..8])));
    }
}

// ---- vault ----

fn vault_key(b: u8) -> [u8; 32] {
    [b; 32]
}

/// Tree `name` of a new sled database in `dir`, behind its write-ahead log (as the daemon's
/// vault is).
fn logged_tree(dir: &Path, name: &str) -> LoggedTree {
    let db = sled::open(dir.join("db")).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    LoggedTree::open(
        &db,
        name,
        &dir.join(format!("wal-{name}")),
        WAL_MOVE_EVERY,
        log,
    )
    .unwrap()
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Record {
    name: String,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    n: u64,
}

fn record(name: &str) -> Record {
    Record {
        name: name.into(),
        blob: vec![1, 2, 3],
        n: 42,
    }
}

#[test]
fn vault_round_trips_values() {
    let dir = tempfile::tempdir().unwrap();
    let tree = logged_tree(dir.path(), "secrets");
    let v = Vault::open(&tree, &vault_key(1)).unwrap();
    assert_eq!(v.get::<Record>(b"a").unwrap(), None);
    v.put(b"a", &record("alpha")).unwrap();
    v.put(b"b/1", &record("beta1")).unwrap();
    v.put(b"b/2", &record("beta2")).unwrap();
    v.put(b"c", &busy_state()).unwrap();
    assert_eq!(v.get::<Record>(b"a").unwrap(), Some(record("alpha")));
    assert!(v.get::<AccountState>(b"c").unwrap().is_some());
    let scanned: Vec<(Vec<u8>, Record)> = v.scan_prefix(b"b/").unwrap();
    assert_eq!(
        scanned,
        vec![
            (b"b/1".to_vec(), record("beta1")),
            (b"b/2".to_vec(), record("beta2"))
        ]
    );
    v.put(b"a", &record("alpha2")).unwrap();
    assert_eq!(v.get::<Record>(b"a").unwrap(), Some(record("alpha2")));
    v.remove(b"a").unwrap();
    assert_eq!(v.get::<Record>(b"a").unwrap(), None);
    // Same key reopens; the wrong type or the wrong key is a corrupt record (code `storage`).
    let again = Vault::open(&tree, &vault_key(1)).unwrap();
    assert_eq!(again.get::<Record>(b"b/1").unwrap(), Some(record("beta1")));
    assert!(matches!(
        again.get::<u64>(b"b/1"),
        Err(DaemonError::Corrupt(_))
    ));
    let other_key = Vault::open(&tree, &vault_key(2)).unwrap();
    assert!(matches!(
        other_key.get::<Record>(b"b/1"),
        Err(DaemonError::Corrupt(_))
    ));
}

#[test]
fn vault_refuses_tampered_and_moved_records() {
    let dir = tempfile::tempdir().unwrap();
    let raw_tree = logged_tree(dir.path(), "tokens");
    let v = Vault::open(&raw_tree, &vault_key(3)).unwrap();
    v.put(b"k1", &record("one")).unwrap();
    let sealed = raw_tree.get(b"k1").unwrap().unwrap().to_vec();
    let insert =
        |t: &LoggedTree, k: &[u8], v: &[u8]| t.apply([(k.to_vec(), Some(v.to_vec()))]).unwrap();

    // Every single flipped byte is caught.
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        insert(&raw_tree, b"k1", &bad);
        let err = v.get::<Record>(b"k1").unwrap_err();
        assert_eq!(err.code(), "storage", "byte {i}");
        assert!(v.scan_prefix::<Record>(b"k").is_err());
    }
    insert(&raw_tree, b"k1", &sealed);
    assert_eq!(v.get::<Record>(b"k1").unwrap(), Some(record("one")));
    // Truncated.
    insert(&raw_tree, b"k3", &sealed[..20]);
    assert!(matches!(
        v.get::<Record>(b"k3"),
        Err(DaemonError::Corrupt(_))
    ));

    // Copied to another key of the same tree, or to the same key of another tree.
    insert(&raw_tree, b"k2", &sealed);
    assert!(matches!(
        v.get::<Record>(b"k2"),
        Err(DaemonError::Corrupt(_))
    ));
    let other_dir = tempfile::tempdir().unwrap();
    let other_tree = logged_tree(other_dir.path(), "tokens2");
    let other = Vault::open(&other_tree, &vault_key(3)).unwrap();
    insert(&other_tree, b"k1", &sealed);
    assert!(matches!(
        other.get::<Record>(b"k1"),
        Err(DaemonError::Corrupt(_))
    ));
}

fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_contain(&p, needle)
        } else {
            let b = std::fs::read(&p).unwrap();
            b.windows(needle.len()).any(|w| w == needle)
        }
    })
}

#[tokio::test]
async fn vault_bytes_at_rest_never_contain_the_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    // The log's files are under `dir` too: the scan below covers them.
    let tree = LoggedTree::open(&db, "private", &dir.path().join("wal"), WAL_MOVE_EVERY, log);
    let tree = tree.unwrap();
    let secret_marker = b"PLAINTEXT-MARKER-4f1c9a7e".to_vec();
    let control_marker = b"CONTROL-MARKER-b83e20d6".to_vec();
    let v = Vault::open(&tree, &vault_key(4)).unwrap();
    for i in 0..20u8 {
        v.put(
            &[b'r', i],
            &Record {
                name: String::from_utf8(secret_marker.clone()).unwrap(),
                blob: secret_marker.clone(),
                n: i.into(),
            },
        )
        .unwrap();
    }
    v.flush().await.unwrap();
    // Control: a value written around the vault does show up, so the scan below can see.
    db.open_tree("plain")
        .unwrap()
        .insert(b"c", control_marker.clone())
        .unwrap();
    db.flush_async().await.unwrap();

    for name in db.tree_names() {
        for item in db.open_tree(&name).unwrap().iter() {
            let (_, value) = item.unwrap();
            assert!(!value
                .windows(secret_marker.len())
                .any(|w| w == secret_marker));
        }
    }
    assert!(
        files_contain(dir.path(), &control_marker),
        "the scan can see raw values"
    );
    assert!(!files_contain(dir.path(), &secret_marker));
    let got: Vec<(Vec<u8>, Record)> = v.scan_prefix(b"r").unwrap();
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|(_, r)| r.blob == secret_marker));
}
