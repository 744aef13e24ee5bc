//! Connection authentication (a Hypergolix addition, not a Golix container): a holder of an
//! identity proves to a persister that a connection speaks for it by signing the persister's
//! one-time challenge. The signed digest is bound to its purpose and to the identity, so it
//! can never pass for the signature of a container (those sign an address) nor be replayed
//! on another connection (the challenge is fresh per connection).
//!
//! Also the key a persister counts such a sender by: its signing key, not its GIDC ghid, so
//! that one key cannot pass for many senders by varying its other keys.

use sha2::{Digest, Sha512};

use super::{Error, FirstParty, Ghid, Gidc, SecondParty, SIG_LEN};

/// What every authentication digest starts with.
const CONTEXT: &[u8] = b"hypergolix persister connection auth v1\0";

/// The digest an authentication signature covers.
pub fn digest(identity: &Ghid, challenge: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(CONTEXT);
    h.update(identity.as_bytes());
    h.update((challenge.len() as u64).to_be_bytes());
    h.update(challenge);
    h.finalize().into()
}

/// `who`'s answer to `challenge`.
pub fn sign(who: &FirstParty, challenge: &[u8]) -> Result<[u8; SIG_LEN], Error> {
    who.sign(&digest(&who.ghid(), challenge))
}

/// Checks an answer to `challenge` from `who`.
pub fn verify(who: &SecondParty, challenge: &[u8], signature: &[u8]) -> Result<(), Error> {
    let sig: &[u8; SIG_LEN] = signature.try_into().map_err(|_| Error::BadSignature)?;
    who.verify(who.gidc().suite, &digest(&who.ghid(), challenge), sig)
}

/// The key an authenticated sender is counted by: SHA-512 of its RSA signature modulus.
pub fn sender_key(gidc: &Gidc) -> [u8; 64] {
    Sha512::digest(gidc.signature_key).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    fn fixture(n: usize) -> FirstParty {
        testdata::fixture_first_party(n)
    }

    #[test]
    fn answers_verify_only_for_their_challenge_and_identity() {
        let (a, b) = (fixture(1), fixture(2));
        let sig = sign(&a, b"challenge one").unwrap();
        verify(a.second_party(), b"challenge one", &sig).unwrap();
        assert!(verify(a.second_party(), b"challenge two", &sig).is_err());
        assert!(verify(b.second_party(), b"challenge one", &sig).is_err());
        assert!(verify(a.second_party(), b"challenge one", &sig[1..]).is_err());
        assert_ne!(sender_key(a.gidc()), sender_key(b.gidc()));
    }
}
