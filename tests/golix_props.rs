//! Properties of the Golix codecs over arbitrary field values: every container, request and
//! secret round-trips (decode(encode(x)) == x and encode(decode(b)) == b), the address covers
//! exactly [0, digest offset), any byte string the decoder accepts re-encodes to itself, and no
//! input makes a decoder panic. Plus the ratchet across frames with fixture identities.

mod common;

use std::collections::HashMap;

use hypergolix::golix::*;
use proptest::prelude::*;
use sha2::{Digest, Sha512};

fn bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    prop::collection::vec(any::<u8>(), N).prop_map(|v| v.try_into().unwrap())
}

/// Referenced ghids and stored addresses: SHA-512 (the only algo `Policy::STRICT` takes).
fn ghid() -> impl Strategy<Value = Ghid> {
    bytes::<64>().prop_map(|d| Ghid::new(Algo::SHA512, d))
}

fn targets(range: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<Ghid>> {
    prop::collection::vec(ghid(), range)
}

fn secret() -> impl Strategy<Value = Secret> {
    (bytes::<32>(), bytes::<16>()).prop_map(|(k, s)| Secret::from_parts(k, s))
}

fn object() -> impl Strategy<Value = Object> {
    let s = Just(Suite::ONE);
    prop_oneof![
        (s, bytes::<512>(), bytes::<512>(), bytes::<32>(), ghid()).prop_map(
            |(suite, signature_key, encryption_key, exchange_key, ghid)| {
                Object::Gidc(Gidc {
                    suite,
                    signature_key,
                    encryption_key,
                    exchange_key,
                    ghid,
                })
            }
        ),
        (
            s,
            ghid(),
            prop::collection::vec(any::<u8>(), 0..4096),
            ghid(),
            bytes::<512>()
        )
            .prop_map(|(suite, author, payload, ghid, signature)| {
                Object::Geoc(Geoc {
                    suite,
                    author,
                    payload,
                    ghid,
                    signature,
                })
            }),
        (s, ghid(), ghid(), ghid(), bytes::<512>()).prop_map(
            |(suite, binder, target, ghid, signature)| {
                Object::Gobs(Gobs {
                    suite,
                    binder,
                    target,
                    ghid,
                    signature,
                })
            }
        ),
        (s, ghid(), ghid(), ghid(), bytes::<512>()).prop_map(
            |(suite, debinder, target, ghid, signature)| {
                Object::Gdxx(Gdxx {
                    suite,
                    debinder,
                    target,
                    ghid,
                    signature,
                })
            }
        ),
        (
            s,
            ghid(),
            any::<u64>(),
            targets(1..=10),
            ghid(),
            ghid(),
            bytes::<512>()
        )
            .prop_map(
                |(suite, binder, counter, targets, dynamic, frame, signature)| {
                    Object::Gobd(Gobd {
                        suite,
                        binder,
                        counter,
                        targets,
                        dynamic,
                        frame,
                        signature,
                    })
                }
            ),
        (
            s,
            ghid(),
            targets(0..=10),
            ghid(),
            ghid(),
            ghid(),
            bytes::<512>()
        )
            .prop_map(
                |(suite, binder, history, target, dynamic, frame, signature)| {
                    let v15 = GobdV15 {
                        suite,
                        binder,
                        history,
                        target,
                        dynamic,
                        frame,
                        signature,
                    };
                    Object::GobdV15(v15)
                }
            ),
        (s, ghid(), bytes::<512>(), ghid(), bytes::<64>()).prop_map(
            |(suite, recipient, payload, ghid, mac)| {
                Object::Garq(Garq {
                    suite,
                    recipient,
                    payload,
                    ghid,
                    mac,
                })
            }
        ),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let body = prop_oneof![
        (ghid(), secret()).prop_map(|(target, secret)| RequestBody::Handshake { target, secret }),
        (ghid(), any::<u32>()).prop_map(|(target, status)| RequestBody::Ack { target, status }),
        (ghid(), any::<u32>()).prop_map(|(target, status)| RequestBody::Nak { target, status }),
    ];
    (ghid(), body).prop_map(|(author, body)| Request { author, body })
}

/// The fixed size of each kind, from docs/golix.md.
fn spec_len(o: &Object) -> usize {
    match o {
        Object::Gidc(_) => 1130,
        Object::Geoc(g) => 659 + g.payload.len(),
        Object::Gobs(_) | Object::Gdxx(_) => 716,
        Object::Gobd(f) => 726 + 65 * f.targets.len(),
        Object::GobdV15(f) => 783 + 65 * f.history.len(),
        Object::Garq(_) => 715,
    }
}

/// One edit to a valid encoding: overwrite, truncate, insert or delete.
fn mutate(mut b: Vec<u8>, kind: u8, at: usize, val: u8) -> Vec<u8> {
    let at = at % (b.len() + 1);
    match kind % 4 {
        0 if at < b.len() => b[at] = val,
        1 => b.truncate(at),
        2 => b.insert(at, val),
        _ if at < b.len() => {
            b.remove(at);
        }
        _ => b.push(val),
    }
    b
}

#[cfg(feature = "test-suite0")]
const POLICIES: &[Policy] = &[Policy::STRICT, Policy::TESTING];
#[cfg(not(feature = "test-suite0"))]
const POLICIES: &[Policy] = &[Policy::STRICT];

/// If a decoder accepts `b`, its encoder gives `b` back (the wire form is canonical).
fn decode_is_canonical(b: &[u8]) -> Result<(), TestCaseError> {
    for &p in POLICIES {
        if let Ok(o) = Object::decode(b, p) {
            prop_assert_eq!(o.encode(), b);
        }
        if let Ok(r) = Request::decode(b, p) {
            prop_assert_eq!(r.encode(), b);
        }
        if let Ok(s) = Secret::decode(b, p) {
            prop_assert_eq!(s.encode(), b);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn containers_round_trip(o in object()) {
        let b = o.encode();
        prop_assert_eq!(b.len(), spec_len(&o));
        let d = Object::decode(&b, Policy::STRICT).unwrap();
        prop_assert_eq!(&d, &o);
        prop_assert_eq!(d.encode(), b.clone());
        prop_assert_eq!(d.ghid(), o.ghid());
        // The address is SHA-512 of [0, digest offset): everything before the stored digest.
        let tail = match o.kind() { Kind::Gidc => 0, Kind::Garq => 64, _ => 512 };
        let off = b.len() - 64 - tail;
        let stored = o.ghid();
        prop_assert_eq!(&b[off..off + 64], &stored.digest()[..]);
        let hashed: [u8; 64] = Sha512::digest(&b[..off]).into();
        prop_assert_eq!(o.computed_address(), Ghid::new(Algo::SHA512, hashed));
        prop_assert_eq!(o.verify_address().is_ok(), o.computed_address() == o.ghid());
    }

    #[test]
    fn requests_and_secrets_round_trip(r in request(), s in secret()) {
        let b = r.encode();
        let want = 65 + 4 + match r.body { RequestBody::Handshake { .. } => 119, _ => 69 };
        prop_assert_eq!(b.len(), want);
        prop_assert!(b.len() <= cipher::OAEP_MAX);
        let d = Request::decode(&b, Policy::STRICT).unwrap();
        prop_assert_eq!(&d, &r);
        prop_assert_eq!(d.encode(), b);
        let sb = s.encode();
        prop_assert_eq!(sb.len(), SECRET_LEN);
        let sd = Secret::decode(&sb, Policy::STRICT).unwrap();
        prop_assert_eq!(sd.encode(), sb);
        prop_assert_eq!(sd, s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_is_canonical(&b)?;
        if let Ok(s) = std::str::from_utf8(&b) {
            let _ = s.parse::<Ghid>();
        }
    }

    #[test]
    fn edited_encodings_never_panic_and_stay_canonical(
        o in object(),
        edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut b = o.encode();
        for (kind, at, val) in edits {
            b = mutate(b, kind, at, val);
        }
        decode_is_canonical(&b)?;
    }

    #[test]
    fn edited_requests_never_panic_and_stay_canonical(
        r in request(),
        edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut b = r.encode();
        for (kind, at, val) in edits {
            b = mutate(b, kind, at, val);
        }
        decode_is_canonical(&b)?;
    }

    /// The ratchet of docs/golix.md, written out independently: HKDF-SHA512 with
    /// IKM = seed‖key, salt = previous container ghid, info = dynamic ghid, 48 bytes.
    #[test]
    fn ratchet_is_the_documented_hkdf(s in secret(), prev in ghid(), dynamic in ghid()) {
        let ikm = [&s.seed()[..], &s.key()[..]].concat();
        let mut okm = [0u8; 48];
        hkdf::Hkdf::<Sha512>::new(Some(prev.as_bytes()), &ikm)
            .expand(dynamic.as_bytes(), &mut okm)
            .unwrap();
        let want = Secret::from_parts(okm[..32].try_into().unwrap(), okm[32..].try_into().unwrap());
        prop_assert_eq!(s.ratchet(&prev, &dynamic), want);
    }

    /// AES-256-CTR with the whole 128-bit block as a big-endian counter from the seed, also
    /// across the 2^64 and 2^128 carries.
    #[test]
    fn keystream_is_ctr128(
        key in bytes::<32>(),
        seed in prop_oneof![bytes::<16>(), bytes::<8>().prop_map(|h| {
            let mut s = [0xff; 16];
            s[..8].copy_from_slice(&h);
            s
        }), Just([0xff; 16])],
        len in 0usize..200,
    ) {
        use aes::cipher::{BlockEncrypt, KeyInit};
        let aes = aes::Aes256::new(&key.into());
        let mut want = Vec::new();
        for i in 0..len.div_ceil(16) as u128 {
            let ctr = u128::from_be_bytes(seed).wrapping_add(i);
            let mut block = ctr.to_be_bytes().into();
            aes.encrypt_block(&mut block);
            want.extend_from_slice(&block);
        }
        want.truncate(len);
        let mut got = vec![0u8; len];
        cipher::apply_keystream(&Secret::from_parts(key, seed), &mut got);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn ghid_text_round_trips(g in ghid()) {
        let s = g.as_str();
        prop_assert_eq!(s.len(), GHID_STR_LEN);
        prop_assert!(s.starts_with('A') && s.ends_with('='));
        prop_assert!(matches!(s.as_bytes()[1], b'Q'..=b'f'));
        prop_assert_eq!(s.parse::<Ghid>().unwrap(), g);
        prop_assert_eq!(Ghid::from_bytes(g.as_bytes()).unwrap(), g);
    }
}

#[test]
fn ratchet_holder_follows_frames_one_to_five() {
    let (a, b) = (common::fixture(1), common::fixture(2));
    let text = |k: usize| format!("state {k} of the object").into_bytes();
    // The author: a new secret per frame, ratcheted from the previous one.
    let s0 = Secret::random();
    let mut secret = s0.clone();
    let c0 = a.make_container(&text(0), &secret).unwrap();
    let mut frames = vec![a.make_bind_dynamic(c0.ghid).unwrap()];
    let mut containers = HashMap::from([(c0.ghid, c0.encode())]);
    let dynamic = frames[0].dynamic;
    for k in 1..=5 {
        let prev = frames[k - 1].clone();
        secret = secret.ratchet(&prev.target(), &dynamic);
        let c = a.make_container(&text(k), &secret).unwrap();
        containers.insert(c.ghid, c.encode());
        frames.push(a.make_next_frame(&prev, c.ghid, DEFAULT_LEGROOM).unwrap());
    }
    // The holder gets frame 0's secret by handshake and sees only bytes from then on.
    let hs = a.make_handshake(b.second_party(), dynamic, &s0).unwrap();
    let opened = b.open_request(&hs, |_| Some(a.second_party().clone()));
    let RequestBody::Handshake {
        secret: mut held, ..
    } = opened.unwrap().body
    else {
        panic!("not a handshake")
    };
    for (k, f) in frames.iter().enumerate() {
        let fo = Object::decode(&f.encode(), Policy::STRICT).unwrap();
        fo.verify(Some(a.second_party())).unwrap();
        let Object::Gobd(f) = fo else {
            panic!("not a frame")
        };
        assert_eq!((f.counter, f.dynamic), (k as u64, dynamic));
        let co = Object::decode(&containers[&f.target()], Policy::STRICT).unwrap();
        co.verify(Some(a.second_party())).unwrap();
        let Object::Geoc(c) = co else {
            panic!("not a container")
        };
        if k > 0 {
            // The previous container is the frame's second target.
            let wrong = held.ratchet(&dynamic, &f.targets[1]);
            assert_ne!(
                FirstParty::decrypt(&c, &wrong),
                text(k),
                "argument order matters"
            );
            held = held.ratchet(&f.targets[1], &f.dynamic);
        }
        assert_eq!(FirstParty::decrypt(&c, &held), text(k), "frame {k}");
    }
    assert_eq!(held, secret);
}
