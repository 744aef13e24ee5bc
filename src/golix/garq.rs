//! GARQ v12 (asymmetric request: OAEP-encrypted to a recipient, MACed by the hidden author)
//! and the request it carries: handshake (HS), ack (AK), nak (NK).

use super::codec::{address_of, put_header, Sink};
use super::{DecodeError, Ghid, Policy, Reader, Secret, Suite, ASYM_LEN, GHID_LEN, MAC_LEN};

pub const GARQ_MAGIC: &str = "GARQ";
pub const GARQ_VERSION: u32 = 12;
pub const GARQ_LEN: usize = 715;

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Garq {
    pub suite: Suite,
    pub recipient: Ghid,
    /// OAEP ciphertext of the encoded [`Request`].
    pub payload: [u8; ASYM_LEN],
    pub ghid: Ghid,
    /// HMAC-SHA512 of the digest under the author/recipient static key.
    pub mac: [u8; MAC_LEN],
}

impl Garq {
    pub fn read(r: &mut Reader<'_>, policy: Policy) -> Result<Garq, DecodeError> {
        let suite = r.header(GARQ_MAGIC, GARQ_VERSION, policy)?;
        Ok(Garq {
            suite,
            recipient: r.ghid("recipient", policy)?,
            payload: r.array("payload")?,
            ghid: r.address(policy)?,
            mac: r.array("mac")?,
        })
    }

    pub(crate) fn write_prefix(&self, s: &mut impl Sink) {
        put_header(s, GARQ_MAGIC, GARQ_VERSION, self.suite);
        s.put(self.recipient.as_bytes());
        s.put(&self.payload);
        s.put(&[self.ghid.algo().0]);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(GARQ_LEN);
        self.write_prefix(&mut out);
        out.put(self.ghid.digest());
        out.put(&self.mac);
        out
    }

    pub fn computed_address(&self) -> Ghid {
        address_of(self.ghid.algo(), |h| self.write_prefix(h))
    }
}

/// What a request says, once opened.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RequestBody {
    /// Share `target`, readable with `secret`.
    Handshake { target: Ghid, secret: Secret },
    /// The request `target` (a GARQ ghid) was accepted.
    Ack { target: Ghid, status: u32 },
    /// The request `target` (a GARQ ghid) was refused.
    Nak { target: Ghid, status: u32 },
}

/// The OAEP plaintext of a GARQ: author ghid, 2-byte kind, u16 length, body.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Request {
    pub author: Ghid,
    pub body: RequestBody,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(GHID_LEN + 1 + 53);
        let kind: &[u8; 2] = match &self.body {
            RequestBody::Handshake { target, secret } => {
                body.extend_from_slice(target.as_bytes());
                let s = secret.encode();
                body.push(s.len() as u8);
                body.extend_from_slice(&s);
                b"HS"
            }
            RequestBody::Ack { target, status } | RequestBody::Nak { target, status } => {
                body.extend_from_slice(target.as_bytes());
                body.extend_from_slice(&status.to_be_bytes());
                if matches!(self.body, RequestBody::Ack { .. }) {
                    b"AK"
                } else {
                    b"NK"
                }
            }
        };
        let mut out = Vec::with_capacity(GHID_LEN + 4 + body.len());
        out.extend_from_slice(self.author.as_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(b: &[u8], policy: Policy) -> Result<Request, DecodeError> {
        let mut r = Reader::new(b);
        let author = r.ghid("request author", policy)?;
        let kind: [u8; 2] = r.array("request kind")?;
        let len = usize::from(r.u16("request length")?);
        let mut body = Reader::new(r.take(len, "request body")?);
        r.finish()?;
        let target = body.ghid("request target", policy)?;
        let parsed = match &kind {
            b"HS" => {
                let n = usize::from(body.u8("secret length")?);
                let secret = Secret::decode(body.take(n, "secret")?, policy)?;
                RequestBody::Handshake { target, secret }
            }
            b"AK" => RequestBody::Ack {
                target,
                status: body.u32("status")?,
            },
            b"NK" => RequestBody::Nak {
                target,
                status: body.u32("status")?,
            },
            _ => return Err(DecodeError::UnknownRequestKind(kind)),
        };
        body.finish()?;
        Ok(Request {
            author,
            body: parsed,
        })
    }
}
