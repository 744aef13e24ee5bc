//! The bounds-checked reader and the small writer every container codec uses, plus the
//! wire discriminants shared by all containers (magic, suite, decode policy).

use super::{Algo, DecodeError, Ghid, GHID_LEN};

/// What a decoder may accept. Production code uses [`Policy::STRICT`]; cipher suite 0 and
/// address algo 0 (dummy crypto) exist only behind [`Policy::TESTING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    allow_dummy: bool,
}

impl Policy {
    /// Refuses suite 0 and algo 0: what every production path uses.
    pub const STRICT: Policy = Policy { allow_dummy: false };
    /// Accepts suite 0 and algo 0. Only for tests and tools built with `test-suite0`.
    #[cfg(any(test, feature = "test-suite0"))]
    pub const TESTING: Policy = Policy { allow_dummy: true };

    pub fn allows_dummy(self) -> bool {
        self.allow_dummy
    }
}

/// The error of the fixed fields after a length-prefixed one: when the length field claimed
/// fewer bytes (`declared`) than the object has for that field (`available`: what is left
/// less the fixed fields), those fields were read from the wrong place and their error would
/// blame them; the length field is named instead.
pub fn after_length(
    e: DecodeError,
    field: &'static str,
    declared: u64,
    available: usize,
) -> DecodeError {
    if declared < available as u64 {
        DecodeError::LengthMismatch {
            field,
            declared,
            available: available as u64,
        }
    } else {
        e
    }
}

/// Parses a ghid, refusing algo 0 unless the policy allows dummies.
pub fn checked_ghid(b: &[u8], policy: Policy) -> Result<Ghid, DecodeError> {
    let g = Ghid::from_bytes(b)?;
    if g.algo() == Algo::DUMMY && !policy.allows_dummy() {
        return Err(DecodeError::DummyRefused);
    }
    Ok(g)
}

/// Cipher suite byte. 0 = dummy (tests), 1 = the real suite; 2 is specified but unimplemented.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Suite(pub u8);

impl Suite {
    pub const DUMMY: Suite = Suite(0);
    pub const ONE: Suite = Suite(1);

    pub(crate) fn check(self, policy: Policy) -> Result<Suite, DecodeError> {
        match self.0 {
            1 => Ok(self),
            0 if policy.allows_dummy() => Ok(self),
            0 => Err(DecodeError::DummyRefused),
            x => Err(DecodeError::UnsupportedSuite(x)),
        }
    }
}

/// Field lengths shared by suites 0 and 1.
pub const SIG_LEN: usize = 512;
pub const MAC_LEN: usize = 64;
pub const ASYM_LEN: usize = 512;
pub const PUBKEY_LEN: usize = 512;
pub const EXCHANGE_LEN: usize = 32;

/// A cursor over untrusted bytes. Every read is bounds-checked and names its field.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(DecodeError::Truncated {
                field,
                needed: n - left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N, field)?.try_into().expect("took N bytes"))
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A ghid embedded in an object (author, target, ...). Algo 0 only under the test policy.
    pub fn ghid(&mut self, field: &'static str, policy: Policy) -> Result<Ghid, DecodeError> {
        checked_ghid(self.take(GHID_LEN, field)?, policy)
    }

    /// An address algo byte, checked against the policy.
    pub fn algo(&mut self, policy: Policy) -> Result<Algo, DecodeError> {
        match self.u8("address algo")? {
            1 => Ok(Algo::SHA512),
            0 if policy.allows_dummy() => Ok(Algo::DUMMY),
            0 => Err(DecodeError::DummyRefused),
            x => Err(DecodeError::UnsupportedAlgo(x)),
        }
    }

    /// An address (algo + digest) stored in the object, checked against the policy.
    pub fn address(&mut self, policy: Policy) -> Result<Ghid, DecodeError> {
        let algo = self.algo(policy)?;
        Ok(Ghid::new(algo, self.array("digest")?))
    }

    /// Reads magic, version and suite; the version must be `version`.
    pub fn header(
        &mut self,
        magic: &'static str,
        version: u32,
        policy: Policy,
    ) -> Result<Suite, DecodeError> {
        let m: [u8; 4] = self.array("magic")?;
        if m != magic.as_bytes() {
            return Err(DecodeError::UnknownMagic(m));
        }
        let v = self.u32("version")?;
        if v != version {
            return Err(DecodeError::UnsupportedVersion { magic, version: v });
        }
        Suite(self.u8("cipher suite")?).check(policy)
    }

    /// Succeeds only when every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

/// Where a container writes its bytes: a buffer when encoding, a hasher when computing its
/// address. One writer serves both, so the hashed prefix and the encoding cannot drift apart.
pub trait Sink {
    fn put(&mut self, b: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

impl Sink for sha2::Sha512 {
    fn put(&mut self, b: &[u8]) {
        sha2::Digest::update(self, b);
    }
}

/// Writes the common header.
pub fn put_header(out: &mut impl Sink, magic: &str, version: u32, suite: Suite) {
    out.put(magic.as_bytes());
    out.put(&version.to_be_bytes());
    out.put(&[suite.0]);
}

/// The address of the prefix written by `write` (which must end with the algo byte).
pub fn address_of(algo: Algo, write: impl FnOnce(&mut sha2::Sha512)) -> Ghid {
    if algo == Algo::DUMMY {
        return Ghid::new(algo, *super::ALGO0_DIGEST);
    }
    let mut h = <sha2::Sha512 as sha2::Digest>::new();
    write(&mut h);
    Ghid::new(algo, sha2::Digest::finalize(h).into())
}
