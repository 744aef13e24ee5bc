//! GEOC v14: an encrypted container (author, AES-CTR ciphertext, signature).

use super::codec::{address_of, after_length, put_header, Sink};
use super::{DecodeError, Ghid, Policy, Reader, Suite, GHID_LEN, SIG_LEN};

pub const GEOC_MAGIC: &str = "GEOC";
pub const GEOC_VERSION: u32 = 14;
/// Size without payload.
pub const GEOC_OVERHEAD: usize = 659;

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Geoc {
    pub suite: Suite,
    pub author: Ghid,
    /// Ciphertext, same length as the plaintext; no nonce, no tag.
    pub payload: Vec<u8>,
    pub ghid: Ghid,
    pub signature: [u8; SIG_LEN],
}

impl Geoc {
    pub fn read(r: &mut Reader<'_>, policy: Policy) -> Result<Geoc, DecodeError> {
        let suite = r.header(GEOC_MAGIC, GEOC_VERSION, policy)?;
        let author = r.ghid("author", policy)?;
        let declared = r.u64("payload length")?;
        let n = usize::try_from(declared).map_err(|_| DecodeError::BadLength {
            field: "payload",
            len: usize::MAX,
        })?;
        let available = r.remaining().saturating_sub(GHID_LEN + SIG_LEN);
        let payload = r.take(n, "payload")?.to_vec();
        let tail = |r: &mut Reader<'_>| -> Result<(Ghid, [u8; SIG_LEN]), DecodeError> {
            Ok((r.address(policy)?, r.array("signature")?))
        };
        let (ghid, signature) =
            tail(r).map_err(|e| after_length(e, "payload", declared, available))?;
        Ok(Geoc {
            suite,
            author,
            payload,
            ghid,
            signature,
        })
    }

    pub(crate) fn write_prefix(&self, s: &mut impl Sink) {
        put_header(s, GEOC_MAGIC, GEOC_VERSION, self.suite);
        s.put(self.author.as_bytes());
        s.put(&(self.payload.len() as u64).to_be_bytes());
        s.put(&self.payload);
        s.put(&[self.ghid.algo().0]);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GEOC_OVERHEAD + self.payload.len());
        self.write_prefix(&mut out);
        out.put(self.ghid.digest());
        out.put(&self.signature);
        out
    }

    pub fn computed_address(&self) -> Ghid {
        address_of(self.ghid.algo(), |h| self.write_prefix(h))
    }
}
