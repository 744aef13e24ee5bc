mod common;
use hypergolix::golix::*;

#[test]
fn fixtures_rebuild_their_ghids_and_roundtrip_a_dynamic_object() {
    let a = common::fixture(1);
    let b = common::fixture(2);
    let s0 = Secret::random();
    let c0 = a.make_container(b"hello", &s0).unwrap();
    let f0 = a.make_bind_dynamic(c0.ghid).unwrap();
    let s1 = s0.ratchet(&c0.ghid, &f0.dynamic);
    let c1 = a.make_container(b"world", &s1).unwrap();
    let f1 = a.make_next_frame(&f0, c1.ghid, DEFAULT_LEGROOM).unwrap();
    for o in [
        Object::Geoc(c0.clone()),
        Object::Gobd(f0.clone()),
        Object::Gobd(f1.clone()),
    ] {
        let d = Object::decode(&o.encode(), Policy::STRICT).unwrap();
        d.verify(Some(a.second_party())).unwrap();
        assert!(d.verify(Some(b.second_party())).is_err());
    }
    assert_eq!(f1.dynamic, f0.dynamic);
    assert_eq!(f1.targets, vec![c1.ghid, c0.ghid]);
    assert_eq!(
        FirstParty::decrypt(&c1, &s0.ratchet(&f1.targets[1], &f1.dynamic)),
        b"world"
    );
    let hs = a.make_handshake(b.second_party(), f0.dynamic, &s1).unwrap();
    let opened = b
        .open_request(&hs, |g| (*g == a.ghid()).then(|| a.second_party().clone()))
        .unwrap();
    assert_eq!(
        opened.body,
        RequestBody::Handshake {
            target: f0.dynamic,
            secret: s1
        }
    );
}

#[test]
fn strict_policy_refuses_algo0_ghids_embedded_in_objects() {
    let a = common::fixture(1);
    let api_like = Ghid::pseudorandom(Algo::DUMMY);
    let gobs = a.make_bind_static(api_like).unwrap();
    assert_eq!(
        Object::decode(&gobs.encode(), Policy::STRICT),
        Err(DecodeError::DummyRefused)
    );
    let frame = a
        .make_bind_dynamic(Ghid::pseudorandom(Algo::SHA512))
        .unwrap();
    let next = a
        .make_next_frame(&frame, api_like, DEFAULT_LEGROOM)
        .unwrap();
    assert_eq!(
        Object::decode(&next.encode(), Policy::STRICT),
        Err(DecodeError::DummyRefused)
    );
}
