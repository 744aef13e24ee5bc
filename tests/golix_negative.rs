//! What the Golix layer must refuse: every single-bit corruption and every truncation of every
//! vector file, each malformed-header case with its own `DecodeError`, short RSA moduli, loose
//! ghid strings, and requests with a bad MAC, a wrong author or a wrong recipient. Also the
//! request round trips those refusals are measured against.

mod common;

use std::collections::HashMap;

use hypergolix::golix::cipher;
use hypergolix::golix::*;

const FOLDERS: [&str; 3] = [
    "hgx_save_a",
    "generated_ref_v16/cs1",
    "generated_ref_v16/cs0",
];

struct Vector {
    name: String,
    bytes: Vec<u8>,
    /// Cipher suite 0: refused outright under `Policy::STRICT`.
    dummy: bool,
    /// The GARQ MAC key, from keys_hgx_save_a.json or the manifest.
    mac_key: Option<[u8; 64]>,
}

/// Every vector file, and the identities of every suite-1 GIDC among them.
fn vectors() -> (Vec<Vector>, HashMap<Ghid, SecondParty>) {
    let mut keys: HashMap<String, [u8; 64]> = HashMap::new();
    let hgx = common::vectors_json("keys_hgx_save_a.json");
    for (stem, v) in hgx["hgx_save_a"]["garq_opened"].as_object().unwrap() {
        keys.insert(
            format!("{stem}.ghid"),
            common::hex_of(v, "mac_key_hex").try_into().unwrap(),
        );
    }
    let m = common::vectors_json("generated_ref_v16/manifest.json");
    for v in m["cs1"].as_object().unwrap().values() {
        if v.get("mac_key_hex").is_some() {
            let file = v["file"].as_str().unwrap().to_owned();
            keys.insert(file, common::hex_of(v, "mac_key_hex").try_into().unwrap());
        }
    }
    let mut out = Vec::new();
    let mut ids = HashMap::new();
    for folder in FOLDERS {
        for (stem, bytes) in common::ghid_files(folder) {
            let dummy = bytes[8] == 0;
            if let Ok(Object::Gidc(g)) = Object::decode(&bytes, Policy::STRICT) {
                ids.insert(g.ghid, SecondParty::from_gidc(g).unwrap());
            }
            let mac_key = keys.get(&format!("{stem}.ghid")).copied();
            assert_eq!(
                mac_key.is_some(),
                &bytes[..4] == b"GARQ" && !dummy,
                "{stem}"
            );
            out.push(Vector {
                name: format!("{folder}/{stem}"),
                bytes,
                dummy,
                mac_key,
            });
        }
    }
    assert_eq!(out.len(), 36 + 12 + 7);
    (out, ids)
}

/// Would a careful holder accept these bytes? Decode (strict), address, then the signature
/// against the right signer, or for a GARQ the MAC; a GIDC is covered by its address.
fn accepted(b: &[u8], ids: &HashMap<Ghid, SecondParty>, mac_key: Option<&[u8; 64]>) -> bool {
    let Ok(o) = Object::decode(b, Policy::STRICT) else {
        return false;
    };
    if o.verify_address().is_err() {
        return false;
    }
    match &o {
        Object::Gidc(_) => true,
        Object::Garq(q) => {
            let key = mac_key.expect("every decodable GARQ has a known MAC key");
            cipher::verify_request_mac(key, q.ghid.digest(), &q.mac).is_ok()
        }
        _ => {
            let signer = o.signer().and_then(|s| ids.get(&s));
            signer.is_some_and(|p| o.verify(Some(p)).is_ok())
        }
    }
}

#[test]
fn every_single_bit_flip_of_every_vector_is_refused() {
    let (vs, ids) = vectors();
    for v in &vs {
        assert_eq!(
            accepted(&v.bytes, &ids, v.mac_key.as_ref()),
            !v.dummy,
            "{}",
            v.name
        );
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (flips, bad) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (vs, ids) = (&vs, &ids);
                s.spawn(move || {
                    let (mut flips, mut bad) = (0usize, Vec::new());
                    for (fi, v) in vs.iter().enumerate().skip(t).step_by(threads) {
                        let mut b = v.bytes.clone();
                        for i in 0..b.len() {
                            // Every bit of the first 160 bytes (headers, first ghids, lengths,
                            // counters); one bit elsewhere, which bit varying with i and file.
                            let bits = if i < 160 {
                                0..8
                            } else {
                                let k = (i * 3 + fi) % 8;
                                k..k + 1
                            };
                            for bit in bits {
                                b[i] ^= 1 << bit;
                                if accepted(&b, ids, v.mac_key.as_ref()) {
                                    bad.push(format!("{} byte {i} bit {bit}", v.name));
                                }
                                b[i] ^= 1 << bit;
                                flips += 1;
                            }
                        }
                    }
                    (flips, bad)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).fold(
            (0, Vec::new()),
            |(n, mut all), (f, b)| {
                all.extend(b);
                (n + f, all)
            },
        )
    });
    let bytes: usize = vs.iter().map(|v| v.bytes.len()).sum();
    eprintln!(
        "{} files, {bytes} bytes, {flips} bit flips, all refused",
        vs.len()
    );
    assert!(flips > bytes);
    assert!(
        bad.is_empty(),
        "{} flips accepted, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

#[test]
fn every_truncation_of_every_vector_fails_to_decode() {
    let (vs, _) = vectors();
    let mut n = 0;
    for v in &vs {
        for len in 0..v.bytes.len() {
            let r = Object::decode(&v.bytes[..len], Policy::STRICT);
            if v.dummy && len > 8 {
                assert_eq!(r, Err(DecodeError::DummyRefused), "{} at {len}", v.name);
            } else {
                assert!(
                    matches!(r, Err(DecodeError::Truncated { .. })),
                    "{} at {len}: {r:?}",
                    v.name
                );
            }
            #[cfg(feature = "test-suite0")]
            assert!(matches!(
                Object::decode(&v.bytes[..len], Policy::TESTING),
                Err(DecodeError::Truncated { .. })
            ));
            n += 1;
        }
    }
    // The request plaintexts and serialized secrets in the JSON files, too.
    let mut inner = Vec::new();
    let hgx = common::vectors_json("keys_hgx_save_a.json");
    for v in hgx["hgx_save_a"]["garq_opened"]
        .as_object()
        .unwrap()
        .values()
    {
        inner.push(common::hex_of(v, "inner_plaintext_hex"));
    }
    let m = common::vectors_json("generated_ref_v16/manifest.json");
    for v in m["cs1"].as_object().unwrap().values() {
        if v.get("inner_plaintext_hex").is_some() {
            inner.push(common::hex_of(v, "inner_plaintext_hex"));
        }
    }
    assert_eq!(inner.len(), 5);
    for p in &inner {
        Request::decode(p, Policy::STRICT).unwrap();
        for len in 0..p.len() {
            let r = Request::decode(&p[..len], Policy::STRICT);
            assert!(matches!(r, Err(DecodeError::Truncated { .. })), "{r:?}");
        }
    }
    let secret = common::hex_of(&m["cs1"], "secret_geoc1_serialized_hex");
    for len in 0..secret.len() {
        assert!(matches!(
            Secret::decode(&secret[..len], Policy::STRICT),
            Err(DecodeError::Truncated { .. })
        ));
    }
    eprintln!("{n} object truncations refused");
}

fn file(folder: &str, magic: &[u8; 4], version: u32) -> Vec<u8> {
    common::ghid_files(folder)
        .into_iter()
        .map(|(_, b)| b)
        .find(|b| &b[..4] == magic && b[4..8] == version.to_be_bytes() && b[8] == 1)
        .expect("a vector of that kind")
}

fn edit(b: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = b.to_vec();
    f(&mut b);
    b
}

#[test]
fn malformed_headers_and_vectors_get_distinct_errors() {
    let geoc = file("generated_ref_v16/cs1", b"GEOC", 14);
    let gobd = file("generated_ref_v16/cs1", b"GOBD", 16);
    let v15 = file("hgx_save_a", b"GOBD", 15);
    let dec = |b: &[u8]| Object::decode(b, Policy::STRICT).unwrap_err();
    assert!(
        Object::decode(&geoc, Policy::STRICT).is_ok()
            && Object::decode(&gobd, Policy::STRICT).is_ok()
    );
    let addr = geoc.len() - 64 - SIG_LEN - 1;
    let lr = u16::from_be_bytes([gobd[82], gobd[83]]) as usize;
    assert_eq!(lr, 65, "frame 0");
    let cases = [
        (
            dec(&edit(&geoc, |b| b[..4].copy_from_slice(b"GEOX"))),
            DecodeError::UnknownMagic(*b"GEOX"),
        ),
        (
            dec(&edit(&geoc, |b| {
                b[4..8].copy_from_slice(&13u32.to_be_bytes())
            })),
            DecodeError::UnsupportedVersion {
                magic: "GEOC",
                version: 13,
            },
        ),
        (
            dec(&edit(&geoc, |b| b[8] = 2)),
            DecodeError::UnsupportedSuite(2),
        ),
        (
            dec(&edit(&geoc, |b| b[addr] = 2)),
            DecodeError::UnsupportedAlgo(2),
        ),
        (
            dec(&edit(&geoc, |b| b[addr] = 0)),
            DecodeError::DummyRefused,
        ),
        (
            dec(&edit(&gobd, |b| {
                b[82..84].copy_from_slice(&64u16.to_be_bytes())
            })),
            DecodeError::BadLength {
                field: "target vector",
                len: 64,
            },
        ),
        (
            dec(&edit(&gobd, |b| {
                b[82..84].copy_from_slice(&0u16.to_be_bytes());
                b.drain(84..149);
            })),
            DecodeError::BadLength {
                field: "target vector",
                len: 0,
            },
        ),
        (
            dec(&edit(&geoc, |b| b.push(0))),
            DecodeError::TrailingBytes(1),
        ),
        (
            dec(&geoc[..100]),
            DecodeError::Truncated {
                field: "payload",
                needed: geoc.len() - 659 - 18,
            },
        ),
    ];
    for (i, (got, want)) in cases.iter().enumerate() {
        assert_eq!(got, want, "case {i}");
        for (j, (other, _)) in cases.iter().enumerate() {
            assert!(
                i == j || got != other,
                "cases {i} and {j} give the same error"
            );
        }
    }
    // An embedded ghid with algo 2, a GOBD v15 history not a multiple of 65, GOBD v17.
    assert_eq!(
        dec(&edit(&geoc, |b| b[9] = 2)),
        DecodeError::UnsupportedAlgo(2)
    );
    let h = edit(&v15, |b| b[74..76].copy_from_slice(&64u16.to_be_bytes()));
    assert_eq!(
        dec(&h),
        DecodeError::BadLength {
            field: "history",
            len: 64
        }
    );
    // A length field that claims fewer bytes than the object has misplaces every field after
    // it: the length is named, not the misread byte (a GEOC was "unsupported address
    // algorithm 120").
    let n = u64::from_be_bytes(geoc[74..82].try_into().unwrap());
    for short in [n - 1, n / 2, 0] {
        let e = dec(&edit(&geoc, |b| {
            b[74..82].copy_from_slice(&short.to_be_bytes())
        }));
        assert_eq!(
            e,
            DecodeError::LengthMismatch {
                field: "payload",
                declared: short,
                available: n
            }
        );
        assert!(e.to_string().contains("declared payload length"), "{e}");
    }
    let e = dec(&edit(&gobd, |b| {
        b[82..84].copy_from_slice(&0u16.to_be_bytes())
    }));
    assert!(
        matches!(
            e,
            DecodeError::BadLength { len: 0, .. } | DecodeError::LengthMismatch { .. }
        ),
        "{e:?}"
    );
    let v17 = edit(&gobd, |b| b[4..8].copy_from_slice(&17u32.to_be_bytes()));
    assert_eq!(
        dec(&v17),
        DecodeError::UnsupportedVersion {
            magic: "GOBD",
            version: 17
        }
    );
    // Inside requests and secrets.
    let a = Ghid::pseudorandom(Algo::SHA512);
    let ak = Request {
        author: a,
        body: RequestBody::Ack {
            target: a,
            status: 1,
        },
    }
    .encode();
    let unknown = edit(&ak, |b| b[65..67].copy_from_slice(&[0, 0]));
    assert_eq!(
        Request::decode(&unknown, Policy::STRICT),
        Err(DecodeError::UnknownRequestKind([0, 0]))
    );
    let long = edit(&ak, |b| b.push(0));
    assert_eq!(
        Request::decode(&long, Policy::STRICT),
        Err(DecodeError::TrailingBytes(1))
    );
    // A byte too many inside the declared body (L = 70 for an AK).
    let body_long = edit(&long, |b| b[67..69].copy_from_slice(&70u16.to_be_bytes()));
    assert_eq!(
        Request::decode(&body_long, Policy::STRICT),
        Err(DecodeError::TrailingBytes(1))
    );
    let s = Secret::random().encode();
    assert_eq!(
        Secret::decode(&edit(&s, |b| b[4] = 2), Policy::STRICT),
        Err(DecodeError::UnsupportedSuite(2))
    );
    let v3 = edit(&s, |b| b[3] = 3);
    assert_eq!(
        Secret::decode(&v3, Policy::STRICT),
        Err(DecodeError::UnsupportedVersion {
            magic: "SH",
            version: 3
        })
    );
}

#[test]
fn rsa_moduli_must_be_exactly_4096_bits() {
    let gidc = get_gidc(&file("generated_ref_v16/cs1", b"GIDC", 2));
    SecondParty::from_gidc(gidc.clone()).unwrap();
    type Mutation = fn(&mut Gidc);
    let muts: [Mutation; 4] = [
        |g| g.signature_key[0] &= 0x7f,
        |g| g.encryption_key[0] &= 0x7f,
        |g| g.signature_key[0] = 0,
        |g| g.encryption_key[..2].copy_from_slice(&[0, 0xff]),
    ];
    for m in muts {
        let mut g = gidc.clone();
        m(&mut g);
        assert!(matches!(
            SecondParty::from_gidc(g.clone()),
            Err(Error::BadAddress)
        ));
        g.ghid = g.computed_address();
        // Still a well-formed GIDC on the wire; only the identity parser refuses it.
        let bytes = g.encode();
        let again = get_gidc(&bytes);
        Object::Gidc(again.clone()).verify_address().unwrap();
        assert!(matches!(
            SecondParty::from_gidc(again),
            Err(Error::BadModulus)
        ));
    }
}

fn get_gidc(b: &[u8]) -> Gidc {
    match Object::decode(b, Policy::STRICT).unwrap() {
        Object::Gidc(g) => g,
        o => panic!("{o:?}"),
    }
}

#[test]
fn ghid_strings_are_strict() {
    let (vs, _) = vectors();
    for v in &vs {
        let stem = v.name.rsplit('/').next().unwrap();
        assert_eq!(stem.parse::<Ghid>().unwrap().as_str(), stem);
    }
    let s = Ghid::pseudorandom(Algo::SHA512).as_str();
    assert_eq!(s.len(), 88);
    let bad_str = |t: &str| matches!(t.parse::<Ghid>(), Err(DecodeError::BadGhidString(_)));
    let with = |i: usize, c: &str| {
        let mut t = s.clone();
        t.replace_range(i..i + 1, c);
        t
    };
    assert!(bad_str(&s[..87]), "no padding");
    assert!(bad_str(&format!("{s}=")), "extra padding");
    assert!(bad_str(""));
    assert!(bad_str(&"=".repeat(88)));
    assert!(
        bad_str(&with(10, "+")) && bad_str(&with(10, "/")),
        "standard alphabet"
    );
    assert!(bad_str(&with(10, " ")) && bad_str(&with(87, "\n")));
    assert!(bad_str(&format!("{}é", &s[..86])), "non-ASCII");
    // Non-canonical: the last data character carries 2 unused bits, which must be zero.
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = ALPHABET.find(&s[86..87]).unwrap();
    assert_eq!(last & 3, 0);
    for extra in 1..4 {
        assert!(
            bad_str(&with(86, &ALPHABET[last | extra..(last | extra) + 1])),
            "trailing bits"
        );
    }
    // Well-formed text, bad algo byte.
    let mut raw = *Ghid::pseudorandom(Algo::SHA512).as_bytes();
    raw[0] = 2;
    use base64::Engine;
    let t = base64::engine::general_purpose::URL_SAFE.encode(raw);
    assert_eq!(t.parse::<Ghid>(), Err(DecodeError::UnsupportedAlgo(2)));
    assert_eq!(
        Ghid::from_bytes(&raw[..64]),
        Err(DecodeError::BadLength {
            field: "ghid",
            len: 64
        })
    );
}

fn lookup_in<'a>(ps: &'a [&'a FirstParty]) -> impl Fn(&Ghid) -> Option<SecondParty> + 'a {
    move |g| {
        ps.iter()
            .find(|p| p.ghid() == *g)
            .map(|p| p.second_party().clone())
    }
}

fn decode_garq(b: &[u8]) -> Garq {
    match Object::decode(b, Policy::STRICT).unwrap() {
        Object::Garq(q) => q,
        o => panic!("{o:?}"),
    }
}

#[test]
fn handshake_ack_and_nak_round_trip() {
    let (a, b, c) = (common::fixture(1), common::fixture(2), common::fixture(3));
    let all = [&a, &b, &c];
    let lookup = lookup_in(&all);
    let s = Secret::random();
    let target = Ghid::pseudorandom(Algo::SHA512);
    let hs = decode_garq(
        &a.make_handshake(b.second_party(), target, &s)
            .unwrap()
            .encode(),
    );
    let want = RequestBody::Handshake {
        target,
        secret: s.clone(),
    };
    assert_eq!(
        b.open_request(&hs, &lookup).unwrap(),
        Request {
            author: a.ghid(),
            body: want
        }
    );
    // Not for fixture 3 (nor the author): the recipient is b.
    assert!(matches!(
        c.open_request(&hs, &lookup),
        Err(Error::WrongSigner(_))
    ));
    assert!(matches!(
        a.open_request(&hs, &lookup),
        Err(Error::WrongSigner(_))
    ));
    // Readdressed to fixture 3 (address fixed up): OAEP was to b's key, so it does not open.
    let mut to_c = hs.clone();
    to_c.recipient = c.ghid();
    to_c.ghid = to_c.computed_address();
    assert!(matches!(
        c.open_request(&to_c, &lookup),
        Err(Error::DecryptFailed)
    ));
    for status in [0, 7, 0x8000_0001, u32::MAX] {
        let ak = decode_garq(
            &b.make_ack(a.second_party(), hs.ghid, status)
                .unwrap()
                .encode(),
        );
        let nk = decode_garq(
            &b.make_nak(a.second_party(), hs.ghid, status)
                .unwrap()
                .encode(),
        );
        let body = RequestBody::Ack {
            target: hs.ghid,
            status,
        };
        assert_eq!(
            a.open_request(&ak, &lookup).unwrap(),
            Request {
                author: b.ghid(),
                body
            }
        );
        let body = RequestBody::Nak {
            target: hs.ghid,
            status,
        };
        assert_eq!(
            a.open_request(&nk, &lookup).unwrap(),
            Request {
                author: b.ghid(),
                body
            }
        );
    }
}

#[test]
fn requests_with_bad_mac_wrong_author_or_tampering_are_refused() {
    let (a, b, c) = (common::fixture(1), common::fixture(2), common::fixture(3));
    let all = [&a, &b, &c];
    let lookup = lookup_in(&all);
    let hs = a
        .make_handshake(
            b.second_party(),
            Ghid::pseudorandom(Algo::SHA512),
            &Secret::random(),
        )
        .unwrap();
    let bytes = hs.encode();
    b.open_request(&decode_garq(&bytes), &lookup).unwrap();
    // A flipped MAC byte (the MAC is outside the address, so only the MAC check can see it).
    for (i, bit) in [(651, 0), (652, 3), (680, 5), (714, 7)] {
        let q = decode_garq(&edit(&bytes, |x| x[i] ^= 1 << bit));
        Object::Garq(q.clone()).verify_address().unwrap();
        assert!(
            matches!(b.open_request(&q, &lookup), Err(Error::BadMac)),
            "byte {i}"
        );
    }
    // The lookup is asked for the author, and its answer must be the author.
    let asked = std::cell::Cell::new(None);
    b.open_request(&hs, |g| {
        asked.set(Some(*g));
        lookup(g)
    })
    .unwrap();
    assert_eq!(asked.get(), Some(a.ghid()));
    let wrong = b.open_request(&hs, |_| Some(c.second_party().clone()));
    assert!(matches!(wrong, Err(Error::WrongSigner(_))), "{wrong:?}");
    assert!(matches!(
        b.open_request(&hs, |_| None),
        Err(Error::WrongSigner(_))
    ));
    // c forges a request claiming to be from a: c can encrypt to b, but can only MAC with the
    // c<->b key, and b checks against the a<->b key.
    let forged_body = Request {
        author: a.ghid(),
        body: RequestBody::Ack {
            target: hs.ghid,
            status: 0,
        },
    };
    let ek = cipher::rsa_encrypt_key(&b.gidc().encryption_key).unwrap();
    let mut f = Garq {
        suite: Suite::ONE,
        recipient: b.ghid(),
        payload: cipher::oaep_encrypt(&ek, &forged_body.encode()).unwrap(),
        ghid: Ghid::new(Algo::SHA512, [0; 64]),
        mac: [0; 64],
    };
    f.ghid = f.computed_address();
    let xc = x25519_dalek::StaticSecret::from(*c.export().exchange);
    let kcb = cipher::request_mac_key(&xc, &b.gidc().exchange_key, &c.ghid(), &b.ghid()).unwrap();
    f.mac = cipher::request_mac(&kcb, f.ghid.digest());
    assert!(matches!(b.open_request(&f, &lookup), Err(Error::BadMac)));
    // The same bytes MACed with the a<->b key (which only a and b hold) do open.
    let xa = x25519_dalek::StaticSecret::from(*a.export().exchange);
    let kab = cipher::request_mac_key(&xa, &b.gidc().exchange_key, &a.ghid(), &b.ghid()).unwrap();
    f.mac = cipher::request_mac(&kab, f.ghid.digest());
    assert_eq!(b.open_request(&f, &lookup).unwrap(), forged_body);
    // A payload byte flipped: the address catches it; with the address and MAC redone, OAEP does.
    let mut t = hs.clone();
    t.payload[100] ^= 0x10;
    assert!(matches!(
        b.open_request(&t, &lookup),
        Err(Error::BadAddress)
    ));
    t.ghid = t.computed_address();
    t.mac = cipher::request_mac(&kab, t.ghid.digest());
    assert!(matches!(
        b.open_request(&t, &lookup),
        Err(Error::DecryptFailed)
    ));
}

#[test]
fn signatures_bind_signer_and_content() {
    let (a, b) = (common::fixture(1), common::fixture(2));
    let s = Secret::random();
    let c1 = a.make_container(b"one", &s).unwrap();
    let c2 = a.make_container(b"two", &Secret::random()).unwrap();
    Object::Geoc(c1.clone())
        .verify(Some(a.second_party()))
        .unwrap();
    // A signature moved onto other content, by the same signer.
    let mut moved = c2.clone();
    moved.signature = c1.signature;
    assert!(matches!(
        Object::Geoc(moved).verify(Some(a.second_party())),
        Err(Error::BadSignature)
    ));
    // Re-wrapped by b: b's address and author, a's signature.
    let mut rewrapped = c1.clone();
    rewrapped.author = b.ghid();
    rewrapped.ghid = rewrapped.computed_address();
    let o = Object::Geoc(rewrapped);
    assert!(matches!(
        o.verify(Some(b.second_party())),
        Err(Error::BadSignature)
    ));
    assert!(matches!(
        o.verify(Some(a.second_party())),
        Err(Error::WrongSigner(_))
    ));
    let f0 = a.make_bind_dynamic(c1.ghid).unwrap();
    let mut f1 = a.make_next_frame(&f0, c2.ghid, DEFAULT_LEGROOM).unwrap();
    assert!(matches!(
        b.make_next_frame(&f0, c2.ghid, 7),
        Err(Error::WrongSigner(_))
    ));
    // A first frame whose dynamic ghid is not its own hash.
    let mut bad0 = f0.clone();
    bad0.dynamic = f1.frame;
    bad0.frame = bad0.computed_address();
    assert!(matches!(
        Object::Gobd(bad0).verify_address(),
        Err(Error::BadDynamicAddress)
    ));
    f1.signature[0] ^= 1;
    assert!(matches!(
        Object::Gobd(f1).verify(Some(a.second_party())),
        Err(Error::BadSignature)
    ));
}
