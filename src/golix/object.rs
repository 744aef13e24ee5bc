//! `Object`: any Golix container, decoded by magic and version, with the checks every holder
//! runs on it (address, first-frame dynamic address, signature against the signer's identity).

use super::identity::SecondParty;
use super::{
    DecodeError, Error, Garq, Gdxx, Geoc, Ghid, Gidc, Gobd, GobdV15, Gobs, Policy, Reader, Suite,
};

/// The kind of a container, as a stable lowercase name for logs, JSON and wire codes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Kind {
    Gidc,
    Geoc,
    Gobs,
    Gobd,
    Gdxx,
    Garq,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gidc => "gidc",
            Kind::Geoc => "geoc",
            Kind::Gobs => "gobs",
            Kind::Gobd => "gobd",
            Kind::Gdxx => "gdxx",
            Kind::Garq => "garq",
        }
    }
}

/// Any decoded Golix container.
// Variants differ in size (a GIDC holds two 512-byte moduli); objects are decoded once and
// moved rarely, so boxing would cost an allocation per decode for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Object {
    Gidc(Gidc),
    Geoc(Geoc),
    Gobs(Gobs),
    Gobd(Gobd),
    /// Legacy frame: decoded and verified, never written by this code.
    GobdV15(GobdV15),
    Gdxx(Gdxx),
    Garq(Garq),
}

impl Object {
    /// Decodes exactly one object from `b`; trailing bytes are an error.
    pub fn decode(b: &[u8], policy: Policy) -> Result<Object, DecodeError> {
        let mut r = Reader::new(b);
        let mut peek = Reader::new(b);
        let magic: [u8; 4] = peek.array("magic")?;
        let version = peek.u32("version")?;
        let obj = match (&magic, version) {
            (b"GIDC", _) => Object::Gidc(Gidc::read(&mut r, policy)?),
            (b"GEOC", _) => Object::Geoc(Geoc::read(&mut r, policy)?),
            (b"GOBS", _) => Object::Gobs(Gobs::read(&mut r, policy)?),
            (b"GOBD", 15) => Object::GobdV15(GobdV15::read(&mut r, policy)?),
            (b"GOBD", _) => Object::Gobd(Gobd::read(&mut r, policy)?),
            (b"GDXX", _) => Object::Gdxx(Gdxx::read(&mut r, policy)?),
            (b"GARQ", _) => Object::Garq(Garq::read(&mut r, policy)?),
            _ => return Err(DecodeError::UnknownMagic(magic)),
        };
        r.finish()?;
        Ok(obj)
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Object::Gidc(o) => o.encode(),
            Object::Geoc(o) => o.encode(),
            Object::Gobs(o) => o.encode(),
            Object::Gobd(o) => o.encode(),
            Object::GobdV15(o) => o.encode(),
            Object::Gdxx(o) => o.encode(),
            Object::Garq(o) => o.encode(),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::Gidc(_) => Kind::Gidc,
            Object::Geoc(_) => Kind::Geoc,
            Object::Gobs(_) => Kind::Gobs,
            Object::Gobd(_) | Object::GobdV15(_) => Kind::Gobd,
            Object::Gdxx(_) => Kind::Gdxx,
            Object::Garq(_) => Kind::Garq,
        }
    }

    /// The container's format version.
    pub fn version(&self) -> u32 {
        match self {
            Object::Gidc(_) => super::gidc::GIDC_VERSION,
            Object::Geoc(_) => super::geoc::GEOC_VERSION,
            Object::Gobs(_) => super::binding::GOBS_VERSION,
            Object::Gobd(_) => super::gobd::GOBD_VERSION,
            Object::GobdV15(_) => super::gobd::GOBD_V15_VERSION,
            Object::Gdxx(_) => super::binding::GDXX_VERSION,
            Object::Garq(_) => super::garq::GARQ_VERSION,
        }
    }

    pub fn suite(&self) -> Suite {
        match self {
            Object::Gidc(o) => o.suite,
            Object::Geoc(o) => o.suite,
            Object::Gobs(o) => o.suite,
            Object::Gobd(o) => o.suite,
            Object::GobdV15(o) => o.suite,
            Object::Gdxx(o) => o.suite,
            Object::Garq(o) => o.suite,
        }
    }

    /// The stored address. For a GOBD this is the frame ghid (its file name), not the dynamic.
    pub fn ghid(&self) -> Ghid {
        match self {
            Object::Gidc(o) => o.ghid,
            Object::Geoc(o) => o.ghid,
            Object::Gobs(o) => o.ghid,
            Object::Gobd(o) => o.frame,
            Object::GobdV15(o) => o.frame,
            Object::Gdxx(o) => o.ghid,
            Object::Garq(o) => o.ghid,
        }
    }

    /// The identity whose signature the object carries (author, binder or debinder).
    /// GIDCs are unsigned and GARQ authors are hidden: `None`.
    pub fn signer(&self) -> Option<Ghid> {
        match self {
            Object::Geoc(o) => Some(o.author),
            Object::Gobs(o) => Some(o.binder),
            Object::Gobd(o) => Some(o.binder),
            Object::GobdV15(o) => Some(o.binder),
            Object::Gdxx(o) => Some(o.debinder),
            Object::Gidc(_) | Object::Garq(_) => None,
        }
    }

    /// The address recomputed from the content.
    pub fn computed_address(&self) -> Ghid {
        match self {
            Object::Gidc(o) => o.computed_address(),
            Object::Geoc(o) => o.computed_address(),
            Object::Gobs(o) => o.computed_address(),
            Object::Gobd(o) => o.computed_address(),
            Object::GobdV15(o) => o.computed_address(),
            Object::Gdxx(o) => o.computed_address(),
            Object::Garq(o) => o.computed_address(),
        }
    }

    /// Checks the stored address and, for a first frame, the dynamic address.
    pub fn verify_address(&self) -> Result<(), Error> {
        if self.computed_address() != self.ghid() {
            return Err(Error::BadAddress);
        }
        let dynamic_ok = match self {
            Object::Gobd(o) if o.counter == 0 => o.computed_dynamic() == o.dynamic,
            Object::GobdV15(o) if o.history.is_empty() => o.computed_dynamic() == o.dynamic,
            _ => true,
        };
        if !dynamic_ok {
            return Err(Error::BadDynamicAddress);
        }
        Ok(())
    }

    fn signature(&self) -> Option<&[u8; super::SIG_LEN]> {
        match self {
            Object::Geoc(o) => Some(&o.signature),
            Object::Gobs(o) => Some(&o.signature),
            Object::Gobd(o) => Some(&o.signature),
            Object::GobdV15(o) => Some(&o.signature),
            Object::Gdxx(o) => Some(&o.signature),
            Object::Gidc(_) | Object::Garq(_) => None,
        }
    }

    /// Full verification in the order of docs/golix.md: address (and first-frame dynamic
    /// address), then the signature against `signer`, which must be the object's signer.
    /// Unsigned kinds (GIDC, GARQ) need no signer.
    pub fn verify(&self, signer: Option<&SecondParty>) -> Result<(), Error> {
        self.verify_address()?;
        self.verify_signature(signer)
    }

    /// Only the signature step of [`Object::verify`] (the address must already be checked).
    pub fn verify_signature(&self, signer: Option<&SecondParty>) -> Result<(), Error> {
        let (Some(expected), Some(sig)) = (self.signer(), self.signature()) else {
            return Ok(());
        };
        // `ok_or_else`: the ghid's text form is built only for the error.
        let party = signer.ok_or_else(|| Error::WrongSigner(expected.as_str()))?;
        if party.ghid() != expected {
            return Err(Error::WrongSigner(party.ghid().as_str()));
        }
        party.verify(self.suite(), self.ghid().digest(), sig)
    }
}
