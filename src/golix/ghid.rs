//! `Ghid`: the 65-byte Golix address (algo byte + 64-byte digest) and its strict text form.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use sha2::{Digest, Sha512};

use super::DecodeError;

/// Length of a ghid on the wire.
pub const GHID_LEN: usize = 65;
/// Length of the digest part.
pub const DIGEST_LEN: usize = 64;
/// Length of the padded base64url text form.
pub const GHID_STR_LEN: usize = 88;

/// The fixed "digest" of address algo 0 (test only): whatever the input, this string.
pub const ALGO0_DIGEST: &[u8; 64] =
    b"[[ Start hash -------------------------------------- End hash ]]";

/// Address algorithm. Newtype over the wire byte; only 0 (test) and 1 (SHA-512) exist.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Algo(pub u8);

impl Algo {
    /// Test-only dummy address.
    pub const DUMMY: Algo = Algo(0);
    /// SHA-512.
    pub const SHA512: Algo = Algo(1);

    /// The digest of `data` under this algorithm.
    pub fn digest(self, data: &[u8]) -> [u8; 64] {
        match self.0 {
            0 => *ALGO0_DIGEST,
            _ => Sha512::digest(data).into(),
        }
    }
}

impl fmt::Debug for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("Algo(dummy)"),
            1 => f.write_str("Algo(sha512)"),
            x => write!(f, "Algo({x:#04x})"),
        }
    }
}

/// A Golix address: identities, containers, bindings, requests and dynamic objects are all
/// named by one. Ordering and hashing are over the 65 wire bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ghid([u8; GHID_LEN]);

impl Ghid {
    /// Build from an algo and a digest.
    pub fn new(algo: Algo, digest: [u8; DIGEST_LEN]) -> Ghid {
        let mut b = [0u8; GHID_LEN];
        b[0] = algo.0;
        b[1..].copy_from_slice(&digest);
        Ghid(b)
    }

    /// The address of `data` under `algo`.
    pub fn hash(algo: Algo, data: &[u8]) -> Ghid {
        Ghid::new(algo, algo.digest(data))
    }

    /// Parse 65 wire bytes; the algo must be 0 or 1.
    pub fn from_bytes(b: &[u8]) -> Result<Ghid, DecodeError> {
        let arr: [u8; GHID_LEN] = b.try_into().map_err(|_| DecodeError::BadLength {
            field: "ghid",
            len: b.len(),
        })?;
        if arr[0] > 1 {
            return Err(DecodeError::UnsupportedAlgo(arr[0]));
        }
        Ok(Ghid(arr))
    }

    /// A random ghid with the given algo (tests, api ids).
    pub fn pseudorandom(algo: Algo) -> Ghid {
        let mut d = [0u8; DIGEST_LEN];
        rand::Rng::fill(&mut rand::thread_rng(), &mut d[..]);
        Ghid::new(algo, d)
    }

    pub fn algo(&self) -> Algo {
        Algo(self.0[0])
    }

    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        self.0[1..].try_into().expect("65 = 1 + 64")
    }

    pub fn as_bytes(&self) -> &[u8; GHID_LEN] {
        &self.0
    }

    /// The 88-character padded base64url form used in file names and on the wire as text.
    pub fn as_str(&self) -> String {
        URL_SAFE.encode(self.0)
    }
}

impl FromStr for Ghid {
    type Err = DecodeError;

    /// Strict: exactly 88 characters of the url-safe alphabet with `=` padding.
    fn from_str(s: &str) -> Result<Ghid, DecodeError> {
        if s.len() != GHID_STR_LEN {
            return Err(DecodeError::BadGhidString("not 88 characters"));
        }
        let raw = URL_SAFE
            .decode(s)
            .map_err(|_| DecodeError::BadGhidString("not padded base64url"))?;
        Ghid::from_bytes(&raw)
    }
}

impl fmt::Display for Ghid {
    /// Short form for logs: the first 12 characters of the text form. No protocol meaning.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.as_str();
        write!(f, "{}…", &s[..12])
    }
}

impl fmt::Debug for Ghid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ghid({})", self.as_str())
    }
}

impl serde::Serialize for Ghid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Ghid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ghid, D::Error> {
        let b: serde_bytes::ByteBuf = serde::Deserialize::deserialize(d)?;
        Ghid::from_bytes(&b).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_strictness() {
        let g = Ghid::pseudorandom(Algo::SHA512);
        let s = g.as_str();
        assert_eq!(s.len(), 88);
        assert!(s.ends_with('='));
        assert!(s.starts_with('A'));
        assert_eq!(s.parse::<Ghid>().unwrap(), g);
        assert!(s[..87].parse::<Ghid>().is_err(), "missing padding");
        let mut bad = s.clone();
        bad.replace_range(5..6, "+");
        assert!(bad.parse::<Ghid>().is_err(), "standard alphabet refused");
        let mut b = *g.as_bytes();
        b[0] = 2;
        assert_eq!(Ghid::from_bytes(&b), Err(DecodeError::UnsupportedAlgo(2)));
        assert!(Ghid::from_bytes(&b[..64]).is_err());
    }

    #[test]
    fn algo0_digest_is_constant() {
        assert_eq!(ALGO0_DIGEST.len(), 64);
        assert_eq!(Algo::DUMMY.digest(b"x"), Algo::DUMMY.digest(b"y"));
        assert_eq!(
            Ghid::hash(Algo::DUMMY, b"").as_str().chars().nth(1),
            Some('F')
        );
    }
}
