//! The account root plaintext (`actors::account::unseal_root`: what the root container
//! decrypts to, `HGXA | version | len | msgpack(RootDoc) | padding | SHA-512`). The input
//! is the plaintext *without* its SHA-512 trailer: the target appends the right trailer so
//! that mutations reach the header and document parsers (identity key import included)
//! instead of all failing the trailer check; the input as-is is also tried (trailer path).
//! Never panics; a state that decodes re-encodes to bytes that decode to the same state.
#![no_main]

use hypergolix::actors::account::{unseal_root, AccountState};
use hypergolix::actors::error::DaemonError;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha512};

fuzz_target!(|data: &[u8]| {
    // As-is: only a (vanishingly unlikely) valid trailer gets past the first check.
    if let Err(e) = unseal_root(data) {
        assert!(matches!(
            e,
            DaemonError::WrongPassword | DaemonError::Account(_)
        ));
    }
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&Sha512::digest(data));
    match unseal_root(&sealed) {
        Ok((identity, state)) => {
            let _ = identity.ghid();
            let again = rmp_serde::to_vec_named(&state).expect("a decoded state encodes");
            let back: AccountState =
                rmp_serde::from_slice(&again).expect("a re-encoded state decodes");
            assert_eq!(back, state, "state encode . decode must be the identity");
        }
        Err(e) => assert!(
            matches!(e, DaemonError::Account(_)),
            "with a valid trailer the only error is a malformed account, got {e:?}"
        ),
    }
});
