//! Where the repository keeps its Golix test vectors (`tests/vectors/golix/`), for unit tests,
//! integration tests and benches alike. Reading a missing file panics with its full path, so a
//! broken checkout says what it lacks. Calls `golix` (to import a fixture identity); not used
//! by the binaries.

use std::path::{Path, PathBuf};

/// `tests/vectors/golix` of this checkout.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/golix")
}

/// The bytes of `vectors_dir()/rel`; panics naming the full path when it cannot be read.
pub fn vector_bytes(rel: &str) -> Vec<u8> {
    let path = vectors_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("test vector {}: {e}", path.display()))
}

/// `vectors_dir()/rel` parsed as JSON; panics naming the full path on failure.
pub fn vector_json(rel: &str) -> serde_json::Value {
    let path = vectors_dir().join(rel);
    serde_json::from_slice(&vector_bytes(rel))
        .unwrap_or_else(|e| panic!("test vector {}: {e}", path.display()))
}

/// Fixture identity `n` (1, 2 or 3) as `fixture_identities.json` holds it (private keys as
/// hex DER, X25519 scalar, GIDC bytes): what `--identity-file` reads.
pub fn fixture_identity_json(n: usize) -> serde_json::Value {
    let id = vector_json("fixture_identities.json")[format!("TEST_AGENT{n}")].clone();
    assert!(
        !id.is_null(),
        "no TEST_AGENT{n} in {}",
        vectors_dir().join("fixture_identities.json").display()
    );
    id
}

/// Fixture identity `n` (1, 2 or 3), imported.
pub fn fixture_first_party(n: usize) -> crate::golix::FirstParty {
    let v = fixture_identity_json(n);
    let hex = |k: &str| hex::decode(v[k].as_str().unwrap_or_default()).unwrap_or_default();
    let x: [u8; 32] = hex("exchange_private_hex")
        .try_into()
        .unwrap_or_else(|_| panic!("fixture identity {n}: exchange key"));
    crate::golix::FirstParty::import(
        &hex("signature_private_der_hex"),
        &hex("encryption_private_der_hex"),
        &x,
    )
    .unwrap_or_else(|e| panic!("fixture identity {n}: {e}"))
}
