//! `Secret`: the symmetric key + seed that encrypts one GEOC, its 53-byte serialization, and
//! the HKDF ratchet that lets every holder of one secret follow later frames of a dynamic
//! object (docs/golix.md).

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha512;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{DecodeError, Ghid, Reader, Suite};

/// Serialization version of a secret ("SH" + u16 2).
const SECRET_VERSION: u16 = 2;
/// Suite-1 key and seed lengths.
pub const KEY_LEN: usize = 32;
pub const SEED_LEN: usize = 16;
/// Serialized lengths: suite 1 and suite 0.
pub const SECRET_LEN: usize = 5 + KEY_LEN + SEED_LEN;
pub const SECRET_LEN_DUMMY: usize = 5 + KEY_LEN;

/// A symmetric secret. Suite 1: AES-256 key + 16-byte initial counter block. Suite 0: 32 zero
/// bytes and no seed. Each secret must encrypt exactly one GEOC (CTR keystream reuse).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Secret {
    #[zeroize(skip)]
    suite: Suite,
    key: [u8; KEY_LEN],
    seed: [u8; SEED_LEN],
}

impl Secret {
    /// A fresh random suite-1 secret.
    pub fn random() -> Secret {
        let mut key = [0u8; KEY_LEN];
        let mut seed = [0u8; SEED_LEN];
        aws_lc_rs::rand::fill(&mut key).expect("system rng");
        aws_lc_rs::rand::fill(&mut seed).expect("system rng");
        Secret {
            suite: Suite::ONE,
            key,
            seed,
        }
    }

    /// A suite-1 secret from its parts.
    pub fn from_parts(key: [u8; KEY_LEN], seed: [u8; SEED_LEN]) -> Secret {
        Secret {
            suite: Suite::ONE,
            key,
            seed,
        }
    }

    /// The suite-0 dummy secret (tests only).
    #[cfg(any(test, feature = "test-suite0"))]
    pub fn dummy() -> Secret {
        Secret {
            suite: Suite::DUMMY,
            key: [0; KEY_LEN],
            seed: [0; SEED_LEN],
        }
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    pub fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }

    /// `"SH"` · u16 version · u8 suite · key · seed (53 bytes suite 1, 37 suite 0).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SECRET_LEN);
        out.extend_from_slice(b"SH");
        out.extend_from_slice(&SECRET_VERSION.to_be_bytes());
        out.push(self.suite.0);
        out.extend_from_slice(&self.key);
        if self.suite == Suite::ONE {
            out.extend_from_slice(&self.seed);
        }
        out
    }

    /// Decodes the whole of `b` as one secret.
    pub fn decode(b: &[u8], policy: super::Policy) -> Result<Secret, DecodeError> {
        let mut r = Reader::new(b);
        let s = Secret::read(&mut r, policy)?;
        r.finish()?;
        Ok(s)
    }

    pub(crate) fn read(r: &mut Reader<'_>, policy: super::Policy) -> Result<Secret, DecodeError> {
        let magic: [u8; 2] = r.array("secret magic")?;
        if &magic != b"SH" {
            return Err(DecodeError::UnknownMagic([magic[0], magic[1], 0, 0]));
        }
        let version = r.u16("secret version")?;
        if version != SECRET_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                magic: "SH",
                version: version.into(),
            });
        }
        let suite = Suite(r.u8("secret suite")?).check(policy)?;
        let key = r.array("secret key")?;
        let seed = if suite == Suite::ONE {
            r.array("secret seed")?
        } else {
            [0; SEED_LEN]
        };
        Ok(Secret { suite, key, seed })
    }

    /// The next secret of a dynamic object: HKDF-SHA512 with IKM = seed‖key, salt = the
    /// previous container's ghid, info = the dynamic ghid, 48 bytes -> key ‖ seed.
    pub fn ratchet(&self, previous_container: &Ghid, dynamic: &Ghid) -> Secret {
        let mut ikm = [0u8; SEED_LEN + KEY_LEN];
        ikm[..SEED_LEN].copy_from_slice(&self.seed);
        ikm[SEED_LEN..].copy_from_slice(&self.key);
        let hk = Hkdf::<Sha512>::new(Some(previous_container.as_bytes()), &ikm);
        let mut okm = [0u8; KEY_LEN + SEED_LEN];
        hk.expand(dynamic.as_bytes(), &mut okm)
            .expect("48 bytes is a valid HKDF-SHA512 length");
        ikm.zeroize();
        let s = Secret::from_parts(
            okm[..KEY_LEN].try_into().expect("32"),
            okm[KEY_LEN..].try_into().expect("16"),
        );
        okm.zeroize();
        s
    }
}

impl fmt::Debug for Secret {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(suite {}, <redacted>)", self.suite.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::{Algo, Policy};

    #[test]
    fn round_trip_and_lengths() {
        let s = Secret::random();
        let b = s.encode();
        assert_eq!(b.len(), SECRET_LEN);
        assert_eq!(Secret::decode(&b, Policy::STRICT).unwrap(), s);
        assert!(Secret::decode(&b[..52], Policy::STRICT).is_err());
        let d = Secret::dummy().encode();
        assert_eq!(d.len(), SECRET_LEN_DUMMY);
        assert_eq!(
            Secret::decode(&d, Policy::STRICT),
            Err(DecodeError::DummyRefused)
        );
        assert_eq!(
            Secret::decode(&d, Policy::TESTING).unwrap(),
            Secret::dummy()
        );
        assert!(!format!("{s:?}").contains(&hex::encode(s.key())));
    }

    #[test]
    fn ratchet_is_deterministic_and_input_sensitive() {
        let s = Secret::random();
        let (a, b) = (
            Ghid::pseudorandom(Algo::SHA512),
            Ghid::pseudorandom(Algo::SHA512),
        );
        assert_eq!(s.ratchet(&a, &b), s.ratchet(&a, &b));
        assert_ne!(s.ratchet(&a, &b), s.ratchet(&b, &a));
        assert_ne!(s.ratchet(&a, &b), s);
    }
}
