//! The Golix layer against real bytes: the shared vectors (Python reference, 2016 cache and
//! generated v16 objects) decode, re-encode, address, verify and decrypt byte for byte; objects
//! this code makes sit at the offsets of docs/golix.md. (Request round trips and refusals:
//! golix_negative.rs; the ratchet across frames: golix_props.rs.)

mod common;

use std::collections::{BTreeMap, HashMap};

use hypergolix::golix::cipher;
use hypergolix::golix::*;
use serde_json::Value;
use sha2::{Digest, Sha512};

const HGX: &str = "hgx_save_a";
const CS1: &str = "generated_ref_v16/cs1";

/// Unwraps one variant of `Object` or panics.
macro_rules! get {
    ($v:path, $e:expr) => {
        match $e {
            $v(x) => x,
            other => panic!("expected {}, got {other:?}", stringify!($v)),
        }
    };
}

fn g(s: &str) -> Ghid {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A ghid from a JSON string value.
fn gv(v: &Value) -> Ghid {
    g(v.as_str().expect("ghid string"))
}

fn arr<const N: usize>(v: Vec<u8>) -> [u8; N] {
    v.try_into().expect("length")
}

fn sha512(b: &[u8]) -> [u8; 64] {
    Sha512::digest(b).into()
}

/// Offset of the stored digest, from the file alone: it is followed by the signature (512),
/// the MAC (GARQ, 64) or nothing (GIDC).
fn digest_offset(b: &[u8]) -> usize {
    let tail = match &b[..4] {
        b"GIDC" => 0,
        b"GARQ" => MAC_LEN,
        _ => SIG_LEN,
    };
    b.len() - DIGEST_LEN - tail
}

/// SecondParty for every GIDC among `objs`.
fn identities(objs: &[(String, Vec<u8>, Object)]) -> HashMap<Ghid, SecondParty> {
    objs.iter()
        .filter_map(|(_, _, o)| match o {
            Object::Gidc(gidc) => Some((gidc.ghid, SecondParty::from_gidc(gidc.clone()).unwrap())),
            _ => None,
        })
        .collect()
}

fn decode_folder(rel: &str, policy: Policy) -> Vec<(String, Vec<u8>, Object)> {
    common::ghid_files(rel)
        .into_iter()
        .map(|(stem, b)| {
            let o = Object::decode(&b, policy).unwrap_or_else(|e| panic!("{rel}/{stem}: {e}"));
            (stem, b, o)
        })
        .collect()
}

/// Requirement 1 for one suite-1 folder. Returns the (kind, version) census.
fn check_folder(rel: &str, expected_missing_signers: &[Ghid]) -> BTreeMap<(Kind, u32), usize> {
    let objs = decode_folder(rel, Policy::STRICT);
    let ids = identities(&objs);
    let mut census = BTreeMap::new();
    let (mut signed, mut unsigned) = (0, 0);
    let mut missing = Vec::new();
    for (stem, b, o) in &objs {
        *census.entry((o.kind(), o.version())).or_insert(0) += 1;
        assert_eq!(&o.ghid().as_str(), stem, "file name is the ghid");
        assert_eq!(g(stem), o.ghid());
        assert_eq!(&o.encode(), b, "{stem}: re-encodes byte for byte");
        assert_eq!(o.suite(), Suite::ONE);
        // Address from the raw file, independent of the decoder: SHA-512 of [0, digest offset).
        let off = digest_offset(b);
        assert_eq!(b[off - 1], 1, "{stem}: address algo byte");
        assert_eq!(
            &b[off..off + 64],
            &sha512(&b[..off])[..],
            "{stem}: stored digest"
        );
        assert_eq!(o.computed_address(), o.ghid(), "{stem}");
        o.verify_address().unwrap();
        // EOF: one junk byte (and the 7 golix 0.1.6 accepted) are refused.
        for junk in [1usize, 7] {
            let mut j = b.clone();
            j.extend(std::iter::repeat(0xa5).take(junk));
            assert_eq!(
                Object::decode(&j, Policy::STRICT),
                Err(DecodeError::TrailingBytes(junk))
            );
        }
        match o.signer() {
            None => {
                assert!(matches!(o.kind(), Kind::Gidc | Kind::Garq));
                o.verify(None).unwrap();
                unsigned += 1;
            }
            Some(s) => match ids.get(&s) {
                Some(p) => {
                    o.verify(Some(p)).unwrap_or_else(|e| panic!("{stem}: {e}"));
                    assert!(matches!(o.verify(None), Err(Error::WrongSigner(_))));
                    for other in ids.values().filter(|q| q.ghid() != s) {
                        assert!(matches!(o.verify(Some(other)), Err(Error::WrongSigner(_))));
                    }
                    signed += 1;
                }
                None => missing.push(s),
            },
        }
    }
    missing.sort();
    missing.dedup();
    assert_eq!(
        missing, expected_missing_signers,
        "{rel}: signers absent from the folder"
    );
    assert_eq!(
        signed + unsigned,
        objs.len(),
        "{rel}: every signature checked"
    );
    census
}

#[test]
fn hgx_save_a_files_are_byte_exact_addressed_and_signed() {
    let census = check_folder(HGX, &[]);
    let want = BTreeMap::from([
        ((Kind::Gidc, 2), 2),
        ((Kind::Geoc, 14), 15),
        ((Kind::Gobd, 15), 15),
        ((Kind::Gdxx, 9), 2),
        ((Kind::Garq, 12), 2),
    ]);
    assert_eq!(census, want);
}

#[test]
fn cs1_files_are_byte_exact_addressed_and_signed() {
    let census = check_folder(CS1, &[]);
    let want = BTreeMap::from([
        ((Kind::Gidc, 2), 2),
        ((Kind::Geoc, 14), 2),
        ((Kind::Gobs, 6), 1),
        ((Kind::Gobd, 16), 2),
        ((Kind::Gdxx, 9), 2),
        ((Kind::Garq, 12), 3),
    ]);
    assert_eq!(census, want);
}

fn owner() -> (Value, FirstParty) {
    let keys = common::vectors_json("keys_hgx_save_a.json")["hgx_save_a"].clone();
    let o = &keys["owner"][0];
    let x: [u8; 32] = arr(common::hex_of(o, "exchange_private_hex"));
    let fp = FirstParty::import(
        &common::hex_of(o, "signature_private_der_hex"),
        &common::hex_of(o, "encryption_private_der_hex"),
        &x,
    )
    .expect("owner PKCS#8 keys import");
    assert_eq!(fp.ghid(), gv(&o["fingerprint_b64"]));
    (keys, fp)
}

#[test]
fn hgx_save_a_geocs_decrypt_with_their_listed_secrets() {
    let (keys, owner) = owner();
    let objs = decode_folder(HGX, Policy::STRICT);
    // The owner's keys rebuild the owner's GIDC in the cache byte for byte.
    let gidc = objs
        .iter()
        .find(|(_, _, o)| o.ghid() == owner.ghid())
        .expect("owner GIDC");
    assert_eq!(owner.gidc().encode(), gidc.1);
    let secrets = keys["geoc_secrets"].as_object().unwrap();
    let mut n = 0;
    for (stem, _, o) in &objs {
        let Object::Geoc(geoc) = o else { continue };
        let s = secrets
            .get(stem)
            .unwrap_or_else(|| panic!("no secret for GEOC {stem}"));
        let secret = Secret::from_parts(
            arr(common::hex_of(s, "key_hex")),
            arr(common::hex_of(s, "nonce_hex")),
        );
        let plain = FirstParty::decrypt(geoc, &secret);
        assert_eq!(
            plain.len() as u64,
            s["plaintext_len"].as_u64().unwrap(),
            "{stem}"
        );
        assert_eq!(
            sha512(&plain).to_vec(),
            common::hex_of(s, "plaintext_sha512_hex"),
            "{stem}"
        );
        let head = common::hex_of(s, "plaintext_head_hex");
        assert_eq!(&plain[..head.len()], &head[..], "{stem}");
        // The wrong secret (seed off by one bit) gives other bytes.
        let mut seed = *secret.seed();
        seed[15] ^= 1;
        assert_ne!(
            FirstParty::decrypt(geoc, &Secret::from_parts(*secret.key(), seed)),
            plain
        );
        n += 1;
    }
    assert_eq!(n, 15);
    assert_eq!(
        secrets.len(),
        n,
        "every listed secret belongs to a GEOC in the folder"
    );
}

#[test]
fn hgx_save_a_garqs_match_keys_json() {
    // The cache owner is the *author* of both GARQs (recipient AeCTz61k…, whose private keys are
    // not published): OAEP cannot be opened with the owner's keys, so this checks everything the
    // author side can: X25519, HKDF salt, MAC key, MAC, inner plaintext, and that open_request
    // by the owner is refused because the owner is not the recipient.
    let (keys, owner) = owner();
    let objs = decode_folder(HGX, Policy::STRICT);
    let ids = identities(&objs);
    let opened = keys["garq_opened"].as_object().unwrap();
    let x = x25519_dalek::StaticSecret::from(*owner.export().exchange);
    let mut n = 0;
    for (stem, _, o) in &objs {
        let Object::Garq(garq) = o else { continue };
        let v = opened
            .get(stem)
            .unwrap_or_else(|| panic!("GARQ {stem} not in keys json"));
        assert_eq!(garq.recipient, gv(&v["recipient_b64"]));
        let author = gv(&v["author_b64"]);
        assert_eq!(author, owner.ghid());
        let recipient = &ids[&garq.recipient];
        let their_pub = recipient.gidc().exchange_key;
        let shared = x.diffie_hellman(&x25519_dalek::PublicKey::from(their_pub));
        assert_eq!(
            shared.as_bytes().to_vec(),
            common::hex_of(v, "x25519_shared_hex")
        );
        let salt: Vec<u8> = author
            .digest()
            .iter()
            .zip(garq.recipient.digest())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(salt, common::hex_of(v, "hkdf_salt_hex"));
        let mac_key = cipher::request_mac_key(&x, &their_pub, &author, &garq.recipient).unwrap();
        assert_eq!(mac_key.to_vec(), common::hex_of(v, "mac_key_hex"));
        assert!(v["mac_matches_hmac_of_file_digest"].as_bool().unwrap());
        assert_eq!(cipher::request_mac(&mac_key, garq.ghid.digest()), garq.mac);
        cipher::verify_request_mac(&mac_key, garq.ghid.digest(), &garq.mac).unwrap();
        // The inner plaintext.
        let inner = common::hex_of(v, "inner_plaintext_hex");
        let declared = u16::from_be_bytes([inner[67], inner[68]]);
        assert_eq!(
            u64::from(declared),
            v["declared_payload_len"].as_u64().unwrap()
        );
        let req = Request::decode(&inner, Policy::STRICT).unwrap();
        assert_eq!(req.encode(), inner);
        assert_eq!(req.author, author);
        let target = gv(&v["target_b64"]);
        let kind = v["kind"].as_str().unwrap();
        match &req.body {
            RequestBody::Handshake { target: t, secret } => {
                assert_eq!(kind, "HS");
                assert_eq!(*t, target);
                assert_eq!(secret.encode(), common::hex_of(v, "secret_hex"));
                assert_eq!(
                    secret.encode().len() as u64,
                    v["secret_len"].as_u64().unwrap()
                );
            }
            RequestBody::Ack { target: t, status } => {
                assert_eq!(kind, "AK");
                assert_eq!(*t, target);
                assert_eq!(u64::from(*status), v["status_u32"].as_u64().unwrap());
            }
            RequestBody::Nak { .. } => panic!("no NK in hgx_save_a"),
        }
        // Our make_request derives the reference's static pair key for this pair.
        let again = owner.make_request(recipient, req.body.clone()).unwrap();
        assert_eq!(
            again.mac,
            cipher::request_mac(&mac_key, again.ghid.digest())
        );
        let refused = owner.open_request(garq, |a| ids.get(a).cloned());
        assert!(matches!(refused, Err(Error::WrongSigner(_))), "{refused:?}");
        n += 1;
    }
    assert_eq!(n, 2);
    assert_eq!(opened.len(), n);
}

fn manifest_obj(objs: &[(String, Vec<u8>, Object)], entry: &Value) -> Object {
    let file = entry["file"].as_str().unwrap();
    let (_, b, o) = objs
        .iter()
        .find(|(s, _, _)| format!("{s}.ghid") == file)
        .expect(file);
    if let Some(size) = entry["size"].as_u64() {
        assert_eq!(b.len() as u64, size, "{file}");
    }
    o.clone()
}

#[test]
fn cs1_objects_match_the_manifest() {
    let m = common::vectors_json("generated_ref_v16/manifest.json")["cs1"].clone();
    let objs = decode_folder(CS1, Policy::STRICT);
    let listed: Vec<&str> = m
        .as_object()
        .unwrap()
        .values()
        .filter_map(|e| e["file"].as_str())
        .collect();
    assert_eq!(listed.len(), objs.len());
    for (s, _, _) in &objs {
        assert!(
            listed.contains(&format!("{s}.ghid").as_str()),
            "{s} not in the manifest"
        );
    }
    let who = |v: &Value| manifest_obj(&objs, &m[format!("gidc_{}", v.as_str().unwrap())]).ghid();
    let secret_of = |e: &Value| {
        Secret::from_parts(
            arr(common::hex_of(e, "key_hex")),
            arr(common::hex_of(e, "nonce_hex")),
        )
    };
    for k in ["geoc_1", "geoc_2"] {
        let e = &m[k];
        let c = get!(Object::Geoc, manifest_obj(&objs, e));
        assert_eq!(c.author, who(&e["author"]));
        let s = secret_of(e);
        assert_eq!(s.encode(), common::hex_of(e, "secret_serialized_hex"));
        assert_eq!(Secret::decode(&s.encode(), Policy::STRICT).unwrap(), s);
        assert_eq!(
            FirstParty::decrypt(&c, &s),
            common::hex_of(e, "plaintext_hex")
        );
    }
    assert_eq!(
        secret_of(&m["geoc_1"]).encode(),
        common::hex_of(&m, "secret_geoc1_serialized_hex")
    );
    let f0 = manifest_obj(&objs, &m["gobd_frame0"]);
    for k in ["gobd_frame0", "gobd_frame1"] {
        let e = &m[k];
        let f = get!(Object::Gobd, manifest_obj(&objs, e));
        assert_eq!(f.binder, who(&e["binder"]));
        assert_eq!(f.counter, e["counter"].as_u64().unwrap());
        assert_eq!(f.dynamic, gv(&e["dynamic"]));
        let tv: Vec<Ghid> = e["target_vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(gv)
            .collect();
        assert_eq!(f.targets, tv);
        assert_eq!(f.target(), tv[0]);
        let first = get!(Object::Gobd, &f0);
        assert_eq!(
            f.dynamic,
            first.computed_dynamic(),
            "dynamic ghid fixed by frame 0"
        );
    }
    let b = get!(Object::Gobs, manifest_obj(&objs, &m["gobs"]));
    assert_eq!(
        (b.binder, b.target),
        (who(&"a".into()), gv(&m["gobs"]["target"]))
    );
    for k in ["gdxx_of_gobs", "gdxx_of_gobd"] {
        let d = get!(Object::Gdxx, manifest_obj(&objs, &m[k]));
        assert_eq!(d.debinder, who(&m[k]["debinder"]));
        assert_eq!(d.target, gv(&m[k]["target"]));
    }
    // GARQs: authored by a/b, whose private keys we lack. MAC and inner plaintext only.
    let hs = manifest_obj(&objs, &m["garq_hs_a_to_b"]).ghid();
    let geoc1 = manifest_obj(&objs, &m["geoc_1"]).ghid();
    for k in ["garq_hs_a_to_b", "garq_ak_b_to_a", "garq_nk_b_to_a"] {
        let e = &m[k];
        let q = get!(Object::Garq, manifest_obj(&objs, e));
        assert_eq!(q.recipient, who(&e["recipient"]));
        let key: [u8; 64] = arr(common::hex_of(e, "mac_key_hex"));
        assert_eq!(cipher::request_mac(&key, q.ghid.digest()), q.mac, "{k}");
        cipher::verify_request_mac(&key, q.ghid.digest(), &q.mac).unwrap();
        let mut bad = key;
        bad[0] ^= 1;
        assert!(matches!(
            cipher::verify_request_mac(&bad, q.ghid.digest(), &q.mac),
            Err(Error::BadMac)
        ));
        let inner = common::hex_of(e, "inner_plaintext_hex");
        let req = Request::decode(&inner, Policy::STRICT).unwrap();
        assert_eq!(req.encode(), inner);
        assert_eq!(req.author, who(&e["author"]));
        let status = e["status"].as_u64().unwrap_or(0) as u32;
        let want = match k {
            "garq_hs_a_to_b" => RequestBody::Handshake {
                target: geoc1,
                secret: secret_of(&m["geoc_1"]),
            },
            "garq_ak_b_to_a" => RequestBody::Ack { target: hs, status },
            _ => RequestBody::Nak { target: hs, status },
        };
        assert_eq!(req.body, want, "{k}");
    }
    assert_eq!(m["garq_nk_b_to_a"]["status"], 7);
}

#[cfg(feature = "test-suite0")]
#[test]
fn cs0_objects_need_testing_policy_and_reencode() {
    let m = common::vectors_json("generated_ref_v16/manifest.json")["cs0"].clone();
    let files = common::ghid_files("generated_ref_v16/cs0");
    assert_eq!(files.len(), 7);
    for (stem, b) in &files {
        assert_eq!(
            Object::decode(b, Policy::STRICT),
            Err(DecodeError::DummyRefused),
            "{stem}"
        );
    }
    let objs = decode_folder("generated_ref_v16/cs0", Policy::TESTING);
    let ids = identities(&objs);
    let mut signed = 0;
    for (stem, b, o) in &objs {
        assert_eq!(&o.ghid().as_str(), stem);
        assert_eq!(&o.encode(), b);
        assert_eq!(o.suite(), Suite::DUMMY);
        o.verify_address().unwrap();
        let mut j = b.clone();
        j.push(0);
        assert_eq!(
            Object::decode(&j, Policy::TESTING),
            Err(DecodeError::TrailingBytes(1))
        );
        match o {
            Object::Gidc(gidc) => {
                assert_eq!(&gidc.signature_key, cipher::DUMMY_PUBKEY);
                assert_eq!(&gidc.encryption_key, cipher::DUMMY_PUBKEY);
                assert_eq!(&gidc.exchange_key, cipher::DUMMY_EXCHANGE);
            }
            Object::Garq(q) => {
                assert_eq!(&q.payload, cipher::DUMMY_ASYM);
                assert_eq!(&q.mac, cipher::DUMMY_MAC);
            }
            _ => {
                if let Some(p) = o.signer().and_then(|s| ids.get(&s)) {
                    o.verify(Some(p)).unwrap();
                    signed += 1;
                }
            }
        }
    }
    assert_eq!(
        signed, 4,
        "GEOC, GOBS, GOBD, GDXX: every signer is a cs0 GIDC"
    );
    let algo0 = manifest_obj(&objs, &m["gidc_algo0"]);
    assert_eq!(algo0.ghid(), Ghid::new(Algo::DUMMY, *ALGO0_DIGEST));
    assert_eq!(
        manifest_obj(&objs, &m["gidc_algo1"]).ghid().algo(),
        Algo::SHA512
    );
    let c = get!(Object::Geoc, manifest_obj(&objs, &m["geoc"]));
    let want = m["geoc"]["payload_ascii"].as_str().unwrap().as_bytes();
    assert_eq!(c.payload, want);
    assert_eq!(FirstParty::decrypt(&c, &Secret::dummy()), want);
    let f = get!(Object::Gobd, manifest_obj(&objs, &m["gobd_frame0"]));
    assert_eq!(f.dynamic, gv(&m["gobd_frame0"]["dynamic"]));
    for k in ["gobs", "gdxx", "garq"] {
        manifest_obj(&objs, &m[k]);
    }
    let sh = common::hex_of(&m, "secret_cs0_serialized_hex");
    assert_eq!(Secret::dummy().encode(), sh);
    assert_eq!(
        Secret::decode(&sh, Policy::STRICT),
        Err(DecodeError::DummyRefused)
    );
    assert_eq!(
        Secret::decode(&sh, Policy::TESTING).unwrap(),
        Secret::dummy()
    );
}

// ---- Objects this code makes, at the offsets of docs/golix.md ----

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}

/// Header at 0..9, algo byte 1 at `algo`, digest = H([0, algo + 1)) equal to `ghid`, and the
/// signature at `algo + 65` (if `signer`) verifying under `signer` from the raw bytes.
fn check_layout(
    b: &[u8],
    magic: &str,
    version: u32,
    algo: usize,
    ghid: Ghid,
    signer: Option<&SecondParty>,
) {
    assert_eq!(&b[..4], magic.as_bytes());
    assert_eq!(u32::from_be_bytes(b[4..8].try_into().unwrap()), version);
    assert_eq!(b[8], 1, "suite");
    assert_eq!(b[algo], 1, "algo");
    assert_eq!(&b[algo + 1..algo + 65], &sha512(&b[..algo + 1])[..]);
    assert_eq!(&b[algo + 1..algo + 65], &ghid.digest()[..]);
    if let Some(p) = signer {
        assert_eq!(b.len(), algo + 65 + SIG_LEN);
        let sig: [u8; SIG_LEN] = b[algo + 65..].try_into().unwrap();
        p.verify(Suite::ONE, ghid.digest(), &sig).unwrap();
    }
    let o = Object::decode(b, Policy::STRICT).unwrap();
    assert_eq!(o.encode(), b);
    o.verify(signer).unwrap();
}

#[test]
fn fixture_gidcs_rebuild_byte_exact() {
    let all = common::vectors_json("fixture_identities.json");
    for n in 1..=3 {
        let id = &all[format!("TEST_AGENT{n}")];
        let fp = common::fixture(n);
        let b = fp.gidc().encode();
        assert_eq!(b, common::hex_of(id, "rebuilt_gidc_hex"));
        assert_eq!(b.len(), GIDC_LEN);
        assert_eq!(&b[9..521], &common::hex_of(id, "signature_modulus_hex")[..]);
        assert_eq!(
            &b[521..1033],
            &common::hex_of(id, "encryption_modulus_hex")[..]
        );
        assert_eq!(
            &b[1033..1065],
            &common::hex_of(id, "exchange_public_hex")[..]
        );
        check_layout(&b, "GIDC", 2, 1065, fp.ghid(), None);
        assert_eq!(fp.ghid(), gv(&id["rebuilt_gidc_ghid_b64"]));
        // Export (PKCS#8) and import again: the same identity.
        let k = fp.export();
        let again =
            FirstParty::import(&k.signature_pkcs8, &k.encryption_pkcs8, &k.exchange).unwrap();
        assert_eq!(again.gidc(), fp.gidc());
    }
}

#[test]
fn made_objects_sit_at_documented_offsets() {
    let (a, b) = (common::fixture(1), common::fixture(2));
    let pa = a.second_party();
    let plain = b"offsets, offsets everywhere".to_vec();
    let n = plain.len();
    let s = Secret::random();
    let c = a.make_container(&plain, &s).unwrap();
    let cb = c.encode();
    assert_eq!(cb.len(), GEOC_OVERHEAD + n);
    assert_eq!(&cb[9..74], a.ghid().as_bytes());
    assert_eq!(u64_at(&cb, 74), n as u64);
    let mut ct = plain.clone();
    cipher::apply_keystream(&s, &mut ct);
    assert_ne!(ct, plain);
    assert_eq!(&cb[82..82 + n], &ct[..]);
    check_layout(&cb, "GEOC", 14, 82 + n, c.ghid, Some(pa));
    assert_eq!(FirstParty::decrypt(&c, &s), plain);

    let target = c.ghid;
    let bs = a.make_bind_static(target).unwrap().encode();
    let dx = a.make_debind(target).unwrap().encode();
    for (bytes, magic, version) in [(&bs, "GOBS", 6), (&dx, "GDXX", 9)] {
        assert_eq!(bytes.len(), LINK_LEN);
        assert_eq!(&bytes[9..74], a.ghid().as_bytes());
        assert_eq!(&bytes[74..139], target.as_bytes());
        let ghid = Object::decode(bytes, Policy::STRICT).unwrap().ghid();
        check_layout(bytes, magic, version, 139, ghid, Some(pa));
    }

    // GOBD frame 0, then frames 1 and 2 at legroom 2: frame 2 keeps 2 of its 3 targets.
    let t: Vec<Ghid> = (0..3).map(|_| Ghid::pseudorandom(Algo::SHA512)).collect();
    let f0 = a.make_bind_dynamic(t[0]).unwrap();
    let f1 = a.make_next_frame(&f0, t[1], 2).unwrap();
    let f2 = a.make_next_frame(&f1, t[2], 2).unwrap();
    assert_eq!(f2.targets, vec![t[2], t[1]]);
    let b0 = f0.encode();
    assert_eq!(b0.len(), GOBD_OVERHEAD + 65);
    assert_eq!(&b0[9..74], a.ghid().as_bytes());
    assert_eq!(u64_at(&b0, 74), 0);
    assert_eq!(&b0[82..84], &65u16.to_be_bytes());
    assert_eq!(&b0[84..149], t[0].as_bytes());
    assert_eq!(b0[149], 1);
    assert_eq!(
        &b0[150..214],
        &sha512(&b0[..150])[..],
        "dynamic digest = H([0, 85+LR))"
    );
    assert_eq!(&b0[150..214], &f0.dynamic.digest()[..]);
    check_layout(&b0, "GOBD", 16, 214, f0.frame, Some(pa));
    let b2 = f2.encode();
    let lr = 130;
    assert_eq!(b2.len(), GOBD_OVERHEAD + lr);
    assert_eq!(u64_at(&b2, 74), 2);
    assert_eq!(&b2[82..84], &(lr as u16).to_be_bytes());
    assert_eq!(&b2[84..149], t[2].as_bytes());
    assert_eq!(&b2[149..214], t[1].as_bytes());
    assert_eq!(b2[84 + lr], 1);
    assert_eq!(
        &b2[85 + lr..149 + lr],
        &f0.dynamic.digest()[..],
        "dynamic copied from frame 0"
    );
    check_layout(&b2, "GOBD", 16, 149 + lr, f2.frame, Some(pa));
    // The default legroom keeps up to 7, the minimum is 2 whatever is asked.
    let mut f = f0.clone();
    for i in 1..=9u64 {
        f = a
            .make_next_frame(&f, Ghid::pseudorandom(Algo::SHA512), DEFAULT_LEGROOM)
            .unwrap();
        assert_eq!(f.targets.len(), (i as usize + 1).min(DEFAULT_LEGROOM));
        assert_eq!(f.counter, i);
    }
    assert_eq!(
        a.make_next_frame(&f0, t[1], 0).unwrap().targets.len(),
        MIN_LEGROOM
    );

    // GARQ: recipient, OAEP payload, address, MAC under the X25519/HKDF pair key.
    let q = a.make_handshake(b.second_party(), f0.dynamic, &s).unwrap();
    let qb = q.encode();
    assert_eq!(qb.len(), GARQ_LEN);
    assert_eq!(&qb[9..74], b.ghid().as_bytes());
    assert_eq!(&qb[74..586], &q.payload[..]);
    assert_eq!(qb[586], 1);
    assert_eq!(&qb[587..651], &sha512(&qb[..587])[..]);
    let xa = x25519_dalek::StaticSecret::from(*a.export().exchange);
    let key = cipher::request_mac_key(&xa, &b.gidc().exchange_key, &a.ghid(), &b.ghid()).unwrap();
    let xb = x25519_dalek::StaticSecret::from(*b.export().exchange);
    let key_b = cipher::request_mac_key(&xb, &a.gidc().exchange_key, &b.ghid(), &a.ghid()).unwrap();
    assert_eq!(key, key_b, "both sides derive the same static key");
    assert_eq!(
        &qb[651..715],
        &cipher::request_mac(&key, &qb[587..651].try_into().unwrap())[..]
    );
    check_layout(&qb, "GARQ", 12, 586, q.ghid, None);
}
