//! Shared test helpers: the fixture identities and the shared vectors folder.
//! Tests never generate RSA-4096 keys; they load these (DESIGN.md §2).
#![allow(dead_code)]

use std::path::PathBuf;

use hypergolix::golix::FirstParty;

/// `../shared/vectors/golix` beside the project root.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors/golix")
}

/// Fixture identity `n` (1, 2 or 3) from `fixture_identities.json`.
pub fn fixture(n: usize) -> FirstParty {
    let path = vectors_dir().join("fixture_identities.json");
    let all: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("fixture_identities.json")).unwrap();
    let id = &all[format!("TEST_AGENT{n}")];
    let hex_field = |k: &str| hex::decode(id[k].as_str().unwrap()).unwrap();
    let x: [u8; 32] = hex_field("exchange_private_hex").try_into().unwrap();
    let fp = FirstParty::import(
        &hex_field("signature_private_der_hex"),
        &hex_field("encryption_private_der_hex"),
        &x,
    )
    .expect("fixture keys import");
    assert_eq!(fp.ghid().as_str(), id["ghid_b64"].as_str().unwrap());
    fp
}
