//! Every numbered rule of docs/golix.md, one test each (or a few), with real objects signed by
//! the fixture identities, against `persist::Archive` on a temporary sled store.

mod common;

use std::sync::OnceLock;

use bytes::Bytes;
use hypergolix::golix::*;
use hypergolix::persist::rules::checks::MAX_CHAIN_DEPTH;
use hypergolix::persist::{Archive, Notification, PersistError, Published, Status};

struct Ids {
    a: FirstParty,
    b: FirstParty,
    c: FirstParty,
}

fn ids() -> &'static Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    IDS.get_or_init(|| Ids {
        a: common::fixture(1),
        b: common::fixture(2),
        c: common::fixture(3),
    })
}

trait Encode {
    fn bytes(&self) -> Vec<u8>;
}
macro_rules! encode_as {
    ($($t:ident),*) => {$(
        impl Encode for $t {
            fn bytes(&self) -> Vec<u8> {
                Object::$t(self.clone()).encode()
            }
        }
    )*};
}
encode_as!(Gidc, Geoc, Gobs, Gobd, Gdxx, Garq);

/// An archive that knows identities 1 and 2 (not 3).
fn archive() -> Archive {
    let ar = Archive::temporary().unwrap();
    ok(&ar, &ids().a.gidc().bytes());
    ok(&ar, &ids().b.gidc().bytes());
    ar
}

#[track_caller]
fn ok(ar: &Archive, bytes: &[u8]) -> Published {
    match ar.publish(bytes) {
        Ok(p) => p,
        Err(e) => panic!("publish refused: {e} ({})", e.code()),
    }
}

#[track_caller]
fn new(ar: &Archive, bytes: &[u8]) -> Published {
    let p = ok(ar, bytes);
    assert!(p.new, "expected a new object");
    p
}

#[track_caller]
fn refused(ar: &Archive, bytes: &[u8]) -> &'static str {
    match ar.publish(bytes) {
        Ok(p) => panic!("publish accepted: {p:?}"),
        Err(e) => e.code(),
    }
}

fn container(who: &FirstParty, text: &str) -> Geoc {
    who.make_container(text.as_bytes(), &Secret::random())
        .unwrap()
}

fn unknown() -> Ghid {
    Ghid::pseudorandom(Algo::SHA512)
}

fn status(ar: &Archive, g: &Ghid) -> Status {
    ar.status(g).unwrap()
}

fn note(subscription: Ghid, object: &[u8]) -> Notification {
    Notification {
        subscription,
        object: Bytes::copy_from_slice(object),
    }
}

#[test]
fn rule01_publishing_is_idempotent() {
    let ids = ids();
    let ar = archive();
    let c = container(&ids.a, "one");
    let s = ids.a.make_bind_static(c.ghid).unwrap();
    new(&ar, &s.bytes());
    new(&ar, &c.bytes());
    for b in [s.bytes(), c.bytes(), ids.a.gidc().bytes()] {
        let p = ok(&ar, &b);
        assert!(!p.new && p.notifications.is_empty());
    }
    assert_eq!(ar.get(&c.ghid).unwrap().as_deref(), Some(&c.bytes()[..]));
}

#[test]
fn rule02_malformed_uploads_are_refused() {
    let ids = ids();
    let ar = archive();
    let s = ids.a.make_bind_static(unknown()).unwrap().bytes();
    assert_eq!(refused(&ar, &s[..s.len() - 1]), "malformed");
    let mut long = s.clone();
    long.push(0);
    assert_eq!(
        refused(&ar, &long),
        "malformed",
        "trailing bytes (EOF check)"
    );
    let mut magic = s.clone();
    magic[..4].copy_from_slice(b"GOBX");
    assert_eq!(refused(&ar, &magic), "malformed");
    let mut version = s.clone();
    version[7] = 99;
    assert_eq!(refused(&ar, &version), "malformed");
    let mut suite = s.clone();
    suite[8] = 0;
    assert_eq!(refused(&ar, &suite), "malformed", "suite 0 is test-only");
    assert_eq!(refused(&ar, b""), "malformed");
}

#[test]
fn rule02_legacy_and_dummy_vectors_are_refused() {
    let ar = archive();
    let mut v15 = 0;
    for (_, b) in common::ghid_files("hgx_save_a") {
        if b.starts_with(b"GOBD") {
            assert_eq!(refused(&ar, &b), "malformed", "GOBD v15 is read-only");
            v15 += 1;
        }
    }
    assert!(v15 > 0);
    for (_, b) in common::ghid_files("generated_ref_v16/cs0") {
        assert_eq!(
            refused(&ar, &b),
            "malformed",
            "suite 0 / algo 0 are test-only"
        );
    }
}

#[test]
fn rule02_signer_must_be_stored_and_verify() {
    let ids = ids();
    let ar = Archive::temporary().unwrap();
    let c = container(&ids.a, "x");
    let s = ids.a.make_bind_static(c.ghid).unwrap();
    let f = ids.a.make_bind_dynamic(c.ghid).unwrap();
    let d = ids.a.make_debind(unknown()).unwrap();
    for b in [s.bytes(), f.bytes(), d.bytes()] {
        assert_eq!(refused(&ar, &b), "unknown_author");
    }
    new(&ar, &ids.a.gidc().bytes());
    let mut bad_sig = s.bytes();
    let n = bad_sig.len();
    bad_sig[n - 1] ^= 1;
    assert_eq!(refused(&ar, &bad_sig), "verification_failed");
    let mut bad_addr = s.bytes();
    bad_addr[80] ^= 1; // inside the target ghid: the address no longer matches
    assert_eq!(refused(&ar, &bad_addr), "verification_failed");
    let mut bad_gidc = ids.b.gidc().bytes();
    bad_gidc[20] ^= 1;
    assert_eq!(refused(&ar, &bad_gidc), "verification_failed");
    new(&ar, &s.bytes());
}

/// `publish_own` (a daemon committing what it just signed) skips only the RSA verify of
/// objects the caller signed: another signer's objects are verified in full, and the
/// address, the stored identity and the rules are checked for every object.
#[test]
fn rule02_publish_own_checks_everything_but_the_callers_own_signature() {
    let ids = ids();
    let own = ids.a.ghid();
    let ar = Archive::temporary().unwrap();
    let s = ids.a.make_bind_static(unknown()).unwrap();
    let code = |r: Result<Published, PersistError>| r.err().map(|e| e.code());
    assert_eq!(
        code(ar.publish_own(&s.bytes(), &own)),
        Some("unknown_author"),
        "the signer's identity must be stored"
    );
    new(&ar, &ids.a.gidc().bytes());
    new(&ar, &ids.b.gidc().bytes());
    let mut bad_addr = s.bytes();
    bad_addr[80] ^= 1;
    assert_eq!(
        code(ar.publish_own(&bad_addr, &own)),
        Some("verification_failed"),
        "the address is checked"
    );
    let theirs = ids.b.make_bind_static(unknown()).unwrap();
    let mut bad_sig = theirs.bytes();
    let n = bad_sig.len();
    bad_sig[n - 1] ^= 1;
    assert_eq!(
        code(ar.publish_own(&bad_sig, &own)),
        Some("verification_failed"),
        "another signer's signature is verified"
    );
    assert!(ar.publish_own(&s.bytes(), &own).unwrap().new);
    assert!(ar.publish_own(&theirs.bytes(), &own).unwrap().new);
    // The rules still apply: a debound binding cannot come back.
    let d = ids.a.make_debind(s.ghid).unwrap();
    assert!(ar.publish_own(&d.bytes(), &own).unwrap().new);
    assert_eq!(
        code(ar.publish_own(&s.bytes(), &own)),
        Some(refused(&ar, &s.bytes()))
    );
}

#[test]
fn rule03_identities_are_permanent_and_never_targets() {
    let ids = ids();
    let ar = archive();
    let gidc = ids.b.gidc().ghid;
    assert_eq!(
        refused(&ar, &ids.b.make_debind(gidc).unwrap().bytes()),
        "invalid_target"
    );
    assert_eq!(
        refused(&ar, &ids.a.make_bind_static(gidc).unwrap().bytes()),
        "invalid_target"
    );
    assert_eq!(
        refused(&ar, &ids.a.make_bind_dynamic(gidc).unwrap().bytes()),
        "invalid_target"
    );
    assert_eq!(status(&ar, &gidc), Status::Present);
    assert_eq!(ar.list_bindings(&gidc).unwrap(), Vec::<Ghid>::new());
}

#[test]
fn rule04_containers_must_already_be_bound() {
    let ids = ids();
    let ar = archive();
    let c1 = container(&ids.a, "static");
    let c2 = container(&ids.a, "dynamic");
    assert_eq!(refused(&ar, &c1.bytes()), "unbound_container");
    assert_eq!(status(&ar, &c1.ghid), Status::Unknown);
    new(&ar, &ids.b.make_bind_static(c1.ghid).unwrap().bytes());
    new(&ar, &c1.bytes());
    new(&ar, &ids.a.make_bind_dynamic(c2.ghid).unwrap().bytes());
    new(&ar, &c2.bytes());
    let d = ids.a.make_debind(c1.ghid).unwrap();
    assert_eq!(
        refused(&ar, &d.bytes()),
        "invalid_target",
        "a GEOC cannot be debound"
    );
}

#[test]
fn rule05_static_bindings_live_until_debound() {
    let ids = ids();
    let ar = archive();
    let c = container(&ids.a, "c");
    let sa = ids.a.make_bind_static(c.ghid).unwrap();
    let sb = ids.b.make_bind_static(c.ghid).unwrap();
    for b in [sa.bytes(), sb.bytes(), c.bytes()] {
        new(&ar, &b);
    }
    let da = ids.a.make_debind(sa.ghid).unwrap();
    new(&ar, &da.bytes());
    assert_eq!(status(&ar, &sa.ghid), Status::Collected);
    assert_eq!(status(&ar, &c.ghid), Status::Present, "still bound by B");
    assert_eq!(ar.query_debinding(&sa.ghid).unwrap(), Some(da.ghid));
    assert_eq!(refused(&ar, &sa.bytes()), "already_debound");
    new(&ar, &ids.b.make_debind(sb.ghid).unwrap().bytes());
    assert_eq!(
        status(&ar, &c.ghid),
        Status::Collected,
        "unbound container collected"
    );
    assert_eq!(ar.get(&c.ghid).unwrap(), None);
}

#[test]
fn rule05_static_binding_targets() {
    let ids = ids();
    let ar = archive();
    let (c, u) = (container(&ids.a, "c"), unknown());
    let s = ids.a.make_bind_static(c.ghid).unwrap();
    let su = ids.a.make_bind_static(u).unwrap();
    new(&ar, &s.bytes());
    new(&ar, &su.bytes());
    assert_eq!(
        status(&ar, &u),
        Status::Unknown,
        "unknown targets are accepted"
    );
    let d = ids.a.make_debind(su.ghid).unwrap();
    new(&ar, &d.bytes());
    let f = ids.a.make_bind_dynamic(c.ghid).unwrap();
    new(&ar, &f.bytes());
    let r = ids.a.make_nak(ids.b.second_party(), unknown(), 0).unwrap();
    new(&ar, &r.bytes());
    for target in [s.ghid, d.ghid, r.ghid, f.frame] {
        let b = ids.b.make_bind_static(target).unwrap();
        assert_eq!(refused(&ar, &b.bytes()), "invalid_target");
    }
    new(&ar, &ids.b.make_bind_static(f.dynamic).unwrap().bytes());
}

#[test]
fn rule06_frames_must_advance() {
    let ids = ids();
    let ar = archive();
    let c: Vec<Geoc> = (0..3).map(|i| container(&ids.a, &format!("{i}"))).collect();
    let f0 = ids.a.make_bind_dynamic(c[0].ghid).unwrap();
    let f1 = ids
        .a
        .make_next_frame(&f0, c[1].ghid, DEFAULT_LEGROOM)
        .unwrap();
    let f2 = ids
        .a
        .make_next_frame(&f1, c[2].ghid, DEFAULT_LEGROOM)
        .unwrap();
    let fork = ids
        .a
        .make_next_frame(&f1, c[0].ghid, DEFAULT_LEGROOM)
        .unwrap();
    new(&ar, &f0.bytes());
    new(&ar, &f2.bytes());
    assert_eq!(refused(&ar, &f1.bytes()), "illegal_frame", "regressed");
    assert_eq!(refused(&ar, &f0.bytes()), "illegal_frame", "replayed");
    assert_eq!(
        refused(&ar, &fork.bytes()),
        "illegal_frame",
        "equal counter"
    );
    assert!(
        !ok(&ar, &f2.bytes()).new,
        "the current frame itself is idempotent"
    );
    assert_eq!(status(&ar, &f0.frame), Status::Collected);
    assert_eq!(ar.current_frame(&f0.dynamic).unwrap(), Some(f2.frame));
}

#[test]
fn rule06b_first_frame_seen_is_trusted() {
    let ids = ids();
    let ar = archive();
    let f0 = ids.a.make_bind_dynamic(unknown()).unwrap();
    let f1 = ids.a.make_next_frame(&f0, unknown(), 2).unwrap();
    let f2 = ids.a.make_next_frame(&f1, unknown(), 2).unwrap();
    new(&ar, &f2.bytes());
    assert_eq!(ar.current_frame(&f0.dynamic).unwrap(), Some(f2.frame));
    assert_eq!(refused(&ar, &f1.bytes()), "illegal_frame");
    assert_eq!(refused(&ar, &f0.bytes()), "illegal_frame");
}

#[test]
fn rule06c_binder_must_match_and_be_known() {
    let ids = ids();
    let ar = archive();
    let f0 = ids.a.make_bind_dynamic(unknown()).unwrap();
    new(&ar, &f0.bytes());
    let mut forged = f0.clone();
    forged.binder = ids.b.ghid();
    let by_b = ids.b.make_next_frame(&forged, unknown(), 2).unwrap();
    assert_eq!(by_b.dynamic, f0.dynamic);
    assert_eq!(refused(&ar, &by_b.bytes()), "inconsistent_author");
    forged.binder = ids.c.ghid();
    let by_c = ids.c.make_next_frame(&forged, unknown(), 2).unwrap();
    assert_eq!(refused(&ar, &by_c.bytes()), "unknown_author");
    let mut slot = f0.clone();
    let s = ids.a.make_bind_static(unknown()).unwrap();
    new(&ar, &s.bytes());
    slot.dynamic = s.ghid;
    let squat = ids.a.make_next_frame(&slot, unknown(), 2).unwrap();
    assert_eq!(
        refused(&ar, &squat.bytes()),
        "illegal_frame",
        "dynamic ghid names a GOBS"
    );
}

#[test]
fn rule06_debound_dynamic_takes_frames_only_while_held() {
    let ids = ids();
    let ar = archive();
    let f0 = ids.a.make_bind_dynamic(unknown()).unwrap();
    let f1 = ids.a.make_next_frame(&f0, unknown(), 2).unwrap();
    new(&ar, &f0.bytes());
    new(&ar, &ids.a.make_debind(f0.dynamic).unwrap().bytes());
    assert_eq!(status(&ar, &f0.dynamic), Status::Collected);
    assert_eq!(refused(&ar, &f1.bytes()), "already_debound");
    assert_eq!(refused(&ar, &f0.bytes()), "already_debound");

    let g0 = ids.a.make_bind_dynamic(unknown()).unwrap();
    let g1 = ids.a.make_next_frame(&g0, unknown(), 2).unwrap();
    new(&ar, &g0.bytes());
    new(&ar, &ids.b.make_bind_static(g0.dynamic).unwrap().bytes());
    let p = new(&ar, &ids.a.make_debind(g0.dynamic).unwrap().bytes());
    assert!(p.notifications.is_empty(), "held: not removed");
    assert_eq!(status(&ar, &g0.dynamic), Status::Present);
    new(&ar, &g1.bytes());
    assert_eq!(ar.current_frame(&g0.dynamic).unwrap(), Some(g1.frame));
}

#[test]
fn rule07_full_life_of_a_dynamic_object() {
    let ids = ids();
    let ar = archive();
    let c: Vec<Geoc> = (0..3)
        .map(|i| container(&ids.a, &format!("state {i}")))
        .collect();
    let f0 = ids.a.make_bind_dynamic(c[0].ghid).unwrap();
    let f1 = ids
        .a
        .make_next_frame(&f0, c[1].ghid, DEFAULT_LEGROOM)
        .unwrap();
    let f2 = ids
        .a
        .make_next_frame(&f1, c[2].ghid, DEFAULT_LEGROOM)
        .unwrap();
    let dynamic = f0.dynamic;

    // The binding arrives before its container: the frame is announced with the container.
    assert!(new(&ar, &f0.bytes()).notifications.is_empty());
    assert_eq!(
        new(&ar, &c[0].bytes()).notifications,
        vec![note(dynamic, &f0.bytes())]
    );
    assert_eq!(ar.get(&dynamic).unwrap().as_deref(), Some(&f0.bytes()[..]));

    // Each later frame replaces the one before and collects the old container.
    for (prev, (f, geoc)) in [(&f0, (&f1, &c[1])), (&f1, (&f2, &c[2]))] {
        assert!(new(&ar, &f.bytes()).notifications.is_empty());
        assert_eq!(
            new(&ar, &geoc.bytes()).notifications,
            vec![note(dynamic, &f.bytes())]
        );
        assert_eq!(status(&ar, &prev.frame), Status::Collected);
        assert_eq!(ar.get(&prev.frame).unwrap(), None);
        assert_eq!(status(&ar, &prev.target()), Status::Collected);
        assert_eq!(ar.current_frame(&dynamic).unwrap(), Some(f.frame));
        assert_eq!(ar.get(&dynamic).unwrap().as_deref(), Some(&f.bytes()[..]));
    }
    // A frame whose container is already present is announced at once.
    let s = ids.a.make_bind_static(c[2].ghid).unwrap();
    new(&ar, &s.bytes());
    let f3 = ids
        .a
        .make_next_frame(&f2, c[2].ghid, DEFAULT_LEGROOM)
        .unwrap();
    assert_eq!(
        new(&ar, &f3.bytes()).notifications,
        vec![note(dynamic, &f3.bytes())]
    );
    new(&ar, &ids.a.make_debind(s.ghid).unwrap().bytes());
    assert_eq!(
        status(&ar, &c[2].ghid),
        Status::Present,
        "still the current target"
    );

    // Debinding removes the dynamic object and its container; subscribers get the GDXX.
    let d = ids.a.make_debind(dynamic).unwrap();
    assert_eq!(
        new(&ar, &d.bytes()).notifications,
        vec![note(dynamic, &d.bytes())]
    );
    for g in [dynamic, f3.frame, c[2].ghid] {
        assert_eq!(ar.get(&g).unwrap(), None);
        assert_eq!(status(&ar, &g), Status::Collected);
        assert!(!ar.exists(&g).unwrap());
    }
    assert_eq!(ar.query_debinding(&dynamic).unwrap(), Some(d.ghid));
    assert_eq!(status(&ar, &d.ghid), Status::Present);
}

#[test]
fn rule07_frame_replacement_keeps_otherwise_bound_targets() {
    let ids = ids();
    let ar = archive();
    let (c0, c1) = (container(&ids.a, "0"), container(&ids.a, "1"));
    let f0 = ids.a.make_bind_dynamic(c0.ghid).unwrap();
    let f1 = ids.a.make_next_frame(&f0, c1.ghid, 2).unwrap();
    for b in [
        f0.bytes(),
        c0.bytes(),
        ids.b.make_bind_static(c0.ghid).unwrap().bytes(),
    ] {
        new(&ar, &b);
    }
    new(&ar, &f1.bytes());
    assert_eq!(status(&ar, &c0.ghid), Status::Present);
    assert_eq!(status(&ar, &f0.frame), Status::Collected);
}

#[test]
fn rule07_dynamic_binding_targets() {
    let ids = ids();
    let ar = archive();
    let c = container(&ids.a, "c");
    let s = ids.a.make_bind_static(c.ghid).unwrap();
    let inner = ids.a.make_bind_dynamic(c.ghid).unwrap();
    new(&ar, &s.bytes());
    new(&ar, &inner.bytes());
    for target in [ids.a.ghid(), s.ghid, inner.frame] {
        let f = ids.b.make_bind_dynamic(target).unwrap();
        assert_eq!(refused(&ar, &f.bytes()), "invalid_target");
    }
    let outer = ids.b.make_bind_dynamic(inner.dynamic).unwrap();
    new(&ar, &outer.bytes());
    assert_eq!(
        ar.list_bindings(&inner.dynamic).unwrap(),
        vec![outer.dynamic]
    );
}

#[test]
fn rule07_circular_chains_are_refused() {
    let ids = ids();
    let ar = archive();
    let x0 = ids.a.make_bind_dynamic(unknown()).unwrap();
    let y0 = ids.b.make_bind_dynamic(x0.dynamic).unwrap();
    let z0 = ids.a.make_bind_dynamic(y0.dynamic).unwrap();
    for f in [&x0, &y0, &z0] {
        new(&ar, &f.bytes());
    }
    let closing = ids.a.make_next_frame(&x0, z0.dynamic, 2).unwrap();
    assert_eq!(refused(&ar, &closing.bytes()), "circular_binding");
    let itself = ids.a.make_next_frame(&x0, x0.dynamic, 2).unwrap();
    assert_eq!(refused(&ar, &itself.bytes()), "circular_binding");
    // Built out of order: a frame trusted on first sight points at a dynamic not yet known,
    // which then tries to point back.
    let p0 = ids.a.make_bind_dynamic(unknown()).unwrap();
    let q0 = ids.b.make_bind_dynamic(unknown()).unwrap();
    let p1 = ids.a.make_next_frame(&p0, q0.dynamic, 2).unwrap();
    new(&ar, &p1.bytes());
    let q1 = ids.b.make_next_frame(&q0, p0.dynamic, 2).unwrap();
    assert_eq!(refused(&ar, &q1.bytes()), "circular_binding");
}

#[test]
fn rule13_dynamic_chain_depth_is_limited() {
    let ids = ids();
    let ar = archive();
    let mut target = unknown();
    // The frame made at step `depth` sits on `depth` dynamic ghids.
    for _depth in 0..=MAX_CHAIN_DEPTH {
        let f = ids.a.make_bind_dynamic(target).unwrap();
        new(&ar, &f.bytes());
        target = f.dynamic;
    }
    let too_deep = ids.a.make_bind_dynamic(target).unwrap();
    assert_eq!(refused(&ar, &too_deep.bytes()), "limit");
}

#[test]
fn rule08_debinding_targets_and_authors() {
    let ids = ids();
    let ar = archive();
    let c = container(&ids.a, "c");
    let s = ids.a.make_bind_static(c.ghid).unwrap();
    let f = ids.a.make_bind_dynamic(c.ghid).unwrap();
    let r = ids
        .a
        .make_handshake(ids.b.second_party(), f.dynamic, &Secret::random())
        .unwrap();
    let d = ids.a.make_debind(unknown()).unwrap();
    for b in [s.bytes(), f.bytes(), c.bytes(), r.bytes(), d.bytes()] {
        new(&ar, &b);
    }
    for target in [ids.a.ghid(), c.ghid, f.frame] {
        assert_eq!(
            refused(&ar, &ids.a.make_debind(target).unwrap().bytes()),
            "invalid_target"
        );
    }
    for target in [s.ghid, f.dynamic, d.ghid] {
        let wrong = ids.b.make_debind(target).unwrap();
        assert_eq!(refused(&ar, &wrong.bytes()), "inconsistent_author");
    }
    let not_recipient = ids.a.make_debind(r.ghid).unwrap();
    assert_eq!(refused(&ar, &not_recipient.bytes()), "inconsistent_author");
    for g in [s.ghid, f.dynamic, c.ghid, r.ghid, d.ghid] {
        assert_eq!(status(&ar, &g), Status::Present);
    }
}

#[test]
fn rule08_early_debindings_are_revalidated_on_arrival() {
    let ids = ids();
    let ar = archive();
    let c = container(&ids.a, "c");
    let s = ids.a.make_bind_static(c.ghid).unwrap();
    let wrong = ids.b.make_debind(s.ghid).unwrap();
    let on_geoc = ids.a.make_debind(c.ghid).unwrap();
    new(&ar, &wrong.bytes());
    new(&ar, &on_geoc.bytes());
    assert_eq!(
        ar.query_debinding(&s.ghid).unwrap(),
        Some(wrong.ghid),
        "target unknown"
    );
    new(&ar, &s.bytes());
    assert_eq!(
        status(&ar, &wrong.ghid),
        Status::Collected,
        "illegal debinding deleted"
    );
    assert_eq!(ar.query_debinding(&s.ghid).unwrap(), None);
    new(&ar, &c.bytes());
    assert_eq!(
        status(&ar, &on_geoc.ghid),
        Status::Collected,
        "a GEOC cannot be debound"
    );

    let s2 = ids.b.make_bind_static(c.ghid).unwrap();
    let early = ids.b.make_debind(s2.ghid).unwrap();
    new(&ar, &early.bytes());
    assert_eq!(refused(&ar, &s2.bytes()), "already_debound");

    let f0 = ids.a.make_bind_dynamic(unknown()).unwrap();
    let early_dyn = ids.b.make_debind(f0.dynamic).unwrap();
    new(&ar, &early_dyn.bytes());
    new(&ar, &f0.bytes());
    assert_eq!(status(&ar, &early_dyn.ghid), Status::Collected);
}

#[test]
fn rule08_debound_debindings_are_refused() {
    let ids = ids();
    let ar = archive();
    let s = ids.a.make_bind_static(unknown()).unwrap();
    let d1 = ids.a.make_debind(s.ghid).unwrap();
    let d2 = ids.a.make_debind(d1.ghid).unwrap();
    for b in [s.bytes(), d1.bytes(), d2.bytes()] {
        new(&ar, &b);
    }
    assert_eq!(status(&ar, &d1.ghid), Status::Collected);
    assert_eq!(refused(&ar, &d1.bytes()), "already_debound");
}

#[test]
fn rule09_debinding_the_debinding_allows_a_rebind() {
    let ids = ids();
    let ar = archive();
    let s = ids.a.make_bind_static(unknown()).unwrap();
    let d1 = ids.a.make_debind(s.ghid).unwrap();
    new(&ar, &s.bytes());
    new(&ar, &d1.bytes());
    assert_eq!(refused(&ar, &s.bytes()), "already_debound");
    new(&ar, &ids.a.make_debind(d1.ghid).unwrap().bytes());
    assert_eq!(ar.query_debinding(&s.ghid).unwrap(), None);
    new(&ar, &s.bytes());
    assert_eq!(status(&ar, &s.ghid), Status::Present);
}

#[test]
fn rule10_requests_are_offline_mail_until_the_recipient_debinds() {
    let ids = ids();
    let ar = archive();
    let to_c = ids.a.make_ack(ids.c.second_party(), unknown(), 0).unwrap();
    assert_eq!(refused(&ar, &to_c.bytes()), "unknown_author");
    let r = ids
        .a
        .make_handshake(ids.b.second_party(), unknown(), &Secret::random())
        .unwrap();
    let r2 = ids.a.make_nak(ids.b.second_party(), r.ghid, 3).unwrap();
    let b = ids.b.ghid();
    assert_eq!(
        new(&ar, &r.bytes()).notifications,
        vec![note(b, &r.bytes())]
    );
    new(&ar, &r2.bytes());
    let mut mail: Vec<Vec<u8>> = ar
        .requests_for(&b)
        .unwrap()
        .iter()
        .map(|m| m.to_vec())
        .collect();
    mail.sort();
    let mut want = vec![r.bytes(), r2.bytes()];
    want.sort();
    assert_eq!(mail, want);
    assert!(ar.requests_for(&ids.a.ghid()).unwrap().is_empty());
    assert_eq!(
        refused(&ar, &ids.a.make_debind(r.ghid).unwrap().bytes()),
        "inconsistent_author"
    );
    let d = ids.b.make_debind(r.ghid).unwrap();
    assert_eq!(
        new(&ar, &d.bytes()).notifications,
        vec![note(b, &d.bytes())]
    );
    assert_eq!(ar.requests_for(&b).unwrap(), vec![Bytes::from(r2.bytes())]);
    assert_eq!(status(&ar, &r.ghid), Status::Collected);
    assert_eq!(refused(&ar, &r.bytes()), "already_debound");
}

#[test]
fn rule11_collection_cascades_through_holds() {
    let ids = ids();
    let ar = archive();
    let c = container(&ids.a, "held");
    let f0 = ids.a.make_bind_dynamic(c.ghid).unwrap();
    let hold = ids.b.make_bind_static(f0.dynamic).unwrap();
    let outer = ids.b.make_bind_dynamic(f0.dynamic).unwrap();
    for b in [f0.bytes(), c.bytes(), hold.bytes(), outer.bytes()] {
        new(&ar, &b);
    }
    let d = ids.a.make_debind(f0.dynamic).unwrap();
    assert!(new(&ar, &d.bytes()).notifications.is_empty());
    new(&ar, &ids.b.make_debind(hold.ghid).unwrap().bytes());
    assert_eq!(
        status(&ar, &f0.dynamic),
        Status::Present,
        "still bound by B's dynamic"
    );
    let d_outer = ids.b.make_debind(outer.dynamic).unwrap();
    let p = new(&ar, &d_outer.bytes());
    assert_eq!(
        p.notifications,
        vec![
            note(outer.dynamic, &d_outer.bytes()),
            note(f0.dynamic, &d.bytes())
        ]
    );
    for g in [outer.dynamic, f0.dynamic, f0.frame, c.ghid, hold.ghid] {
        assert_eq!(status(&ar, &g), Status::Collected, "{g:?}");
    }
}

#[test]
fn rule11_waiting_frames_are_announced_when_their_target_arrives() {
    let ids = ids();
    let ar = archive();
    let c = container(&ids.a, "inner");
    let inner = ids.a.make_bind_dynamic(c.ghid).unwrap();
    let outer = ids.b.make_bind_dynamic(inner.dynamic).unwrap();
    assert!(new(&ar, &outer.bytes()).notifications.is_empty());
    assert_eq!(
        new(&ar, &inner.bytes()).notifications,
        vec![note(outer.dynamic, &outer.bytes())]
    );
    assert_eq!(
        new(&ar, &c.bytes()).notifications,
        vec![note(inner.dynamic, &inner.bytes())]
    );
}

#[test]
fn rule12_list_bindings_order() {
    let ids = ids();
    let ar = archive();
    let c = container(&ids.a, "shared");
    let sb = ids.b.make_bind_static(c.ghid).unwrap();
    let sa = ids.a.make_bind_static(c.ghid).unwrap();
    let fb = ids.b.make_bind_dynamic(c.ghid).unwrap();
    let fa = ids.a.make_bind_dynamic(c.ghid).unwrap();
    for b in [fb.bytes(), sb.bytes(), fa.bytes(), sa.bytes(), c.bytes()] {
        new(&ar, &b);
    }
    assert_eq!(
        ar.list_bindings(&c.ghid).unwrap(),
        vec![sa.ghid, sb.ghid, fa.dynamic, fb.dynamic]
    );
    assert_eq!(ar.list_bindings(&sa.ghid).unwrap(), Vec::<Ghid>::new());
    let e = ar.list_bindings(&unknown()).unwrap_err();
    assert_eq!(e.code(), "not_found");
    assert!(matches!(e, PersistError::NotFound(_)));
}

#[test]
fn reference_vectors_live_and_die_by_the_rules() {
    let manifest = common::vectors_json("generated_ref_v16/manifest.json");
    let load = |name: &str| {
        let file = manifest["cs1"][name]["file"].as_str().unwrap();
        hypergolix::testdata::vector_bytes(&format!("generated_ref_v16/cs1/{file}"))
    };
    let ghid = |name: &str| {
        let file = manifest["cs1"][name]["file"].as_str().unwrap();
        file.trim_end_matches(".ghid").parse::<Ghid>().unwrap()
    };
    let ar = Archive::temporary().unwrap();
    for name in [
        "gidc_a",
        "gidc_b",
        "gobs",
        "gobd_frame0",
        "geoc_1",
        "gobd_frame1",
        "geoc_2",
        "garq_hs_a_to_b",
        "garq_ak_b_to_a",
        "garq_nk_b_to_a",
    ] {
        new(&ar, &load(name));
    }
    new(&ar, &load("gdxx_of_gobs"));
    assert_eq!(status(&ar, &ghid("geoc_1")), Status::Collected);
    new(&ar, &load("gdxx_of_gobd"));
    for name in ["gobs", "gobd_frame0", "gobd_frame1", "geoc_1", "geoc_2"] {
        assert_eq!(status(&ar, &ghid(name)), Status::Collected, "{name}");
    }
    assert_eq!(ar.requests_for(&ghid("gidc_a")).unwrap().len(), 2);
}
