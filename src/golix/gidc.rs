//! GIDC v2: an identity (two RSA-4096 moduli and an X25519 public key). Unsigned; its address
//! is the identity's ghid.

use super::codec::{address_of, put_header, Sink};
use super::{DecodeError, Ghid, Policy, Reader, Suite, EXCHANGE_LEN, PUBKEY_LEN};

pub const GIDC_MAGIC: &str = "GIDC";
pub const GIDC_VERSION: u32 = 2;
pub const GIDC_LEN: usize = 1130;

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Gidc {
    pub suite: Suite,
    /// RSA signature modulus, big-endian, 512 bytes (e = 65537 implied).
    pub signature_key: [u8; PUBKEY_LEN],
    /// RSA encryption modulus, big-endian, 512 bytes.
    pub encryption_key: [u8; PUBKEY_LEN],
    /// Raw X25519 public key (RFC 7748 u-coordinate).
    pub exchange_key: [u8; EXCHANGE_LEN],
    /// The stored address.
    pub ghid: Ghid,
}

impl Gidc {
    pub fn read(r: &mut Reader<'_>, policy: Policy) -> Result<Gidc, DecodeError> {
        let suite = r.header(GIDC_MAGIC, GIDC_VERSION, policy)?;
        Ok(Gidc {
            suite,
            signature_key: r.array("signature key")?,
            encryption_key: r.array("encryption key")?,
            exchange_key: r.array("exchange key")?,
            ghid: r.address(policy)?,
        })
    }

    fn write_prefix(&self, s: &mut impl Sink) {
        put_header(s, GIDC_MAGIC, GIDC_VERSION, self.suite);
        s.put(&self.signature_key);
        s.put(&self.encryption_key);
        s.put(&self.exchange_key);
        s.put(&[self.ghid.algo().0]);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GIDC_LEN);
        self.write_prefix(&mut out);
        out.put(self.ghid.digest());
        out
    }

    /// The address recomputed from the content.
    pub fn computed_address(&self) -> Ghid {
        address_of(self.ghid.algo(), |h| self.write_prefix(h))
    }
}
