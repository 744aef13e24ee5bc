//! GOBS v6 (static binding) and GDXX v9 (debinding): the same 716-byte shape — signer,
//! target, address, signature — under different magics.

use super::codec::{address_of, put_header, Sink};
use super::{DecodeError, Ghid, Policy, Reader, Suite, SIG_LEN};

pub const GOBS_MAGIC: &str = "GOBS";
pub const GOBS_VERSION: u32 = 6;
pub const GDXX_MAGIC: &str = "GDXX";
pub const GDXX_VERSION: u32 = 9;
pub const LINK_LEN: usize = 716;

macro_rules! link_type {
    ($name:ident, $magic:ident, $version:ident, $signer:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, PartialEq, Eq, Debug)]
        pub struct $name {
            pub suite: Suite,
            pub $signer: Ghid,
            pub target: Ghid,
            pub ghid: Ghid,
            pub signature: [u8; SIG_LEN],
        }

        impl $name {
            pub fn read(r: &mut Reader<'_>, policy: Policy) -> Result<$name, DecodeError> {
                let suite = r.header($magic, $version, policy)?;
                Ok($name {
                    suite,
                    $signer: r.ghid("signer", policy)?,
                    target: r.ghid("target", policy)?,
                    ghid: r.address(policy)?,
                    signature: r.array("signature")?,
                })
            }

            pub(crate) fn write_prefix(&self, s: &mut impl Sink) {
                put_header(s, $magic, $version, self.suite);
                s.put(self.$signer.as_bytes());
                s.put(self.target.as_bytes());
                s.put(&[self.ghid.algo().0]);
            }

            pub fn encode(&self) -> Vec<u8> {
                let mut out = Vec::with_capacity(LINK_LEN);
                self.write_prefix(&mut out);
                out.put(self.ghid.digest());
                out.put(&self.signature);
                out
            }

            pub fn computed_address(&self) -> Ghid {
                address_of(self.ghid.algo(), |h| self.write_prefix(h))
            }
        }
    };
}

link_type!(
    Gobs,
    GOBS_MAGIC,
    GOBS_VERSION,
    binder,
    "GOBS v6: a static binding of `target` by `binder`."
);
link_type!(
    Gdxx,
    GDXX_MAGIC,
    GDXX_VERSION,
    debinder,
    "GDXX v9: a debinding of `target` by `debinder`."
);
