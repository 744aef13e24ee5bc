//! # Golix
//!
//! The Golix protocol, pure and sans-IO: addresses ([`Ghid`]), symmetric [`Secret`]s and their
//! ratchet, cipher suite 1, the six containers (GIDC v2, GEOC v14, GOBS v6, GOBD v16, GDXX v9,
//! GARQ v12) plus read-only GOBD v15, identities ([`FirstParty`], [`SecondParty`]), and the
//! connection-authentication signature a persister asks for ([`auth`]).
//!
//! Owns: byte-exact encoding and decoding (hand-written, no serde on signed bytes), and every
//! cryptographic operation on objects. Calls: nothing of ours. No I/O, no clocks, no actors;
//! everything above (`persist`, `actors`, `ipc`) uses it. Decoders take a [`Policy`]; cipher
//! suite 0 and address algo 0 are refused unless a test asks for [`Policy::TESTING`].

pub mod auth;
mod binding;
pub mod cipher;
mod codec;
mod error;
mod garq;
mod geoc;
mod ghid;
mod gidc;
mod gobd;
mod identity;
mod keycheck;
mod object;
mod secret;

pub use binding::{Gdxx, Gobs, GDXX_VERSION, GOBS_VERSION, LINK_LEN};
pub use codec::{Policy, Reader, Suite, ASYM_LEN, EXCHANGE_LEN, MAC_LEN, PUBKEY_LEN, SIG_LEN};
pub use error::{DecodeError, Error};
pub use garq::{Garq, Request, RequestBody, GARQ_LEN};
pub use geoc::{Geoc, GEOC_OVERHEAD};
pub use ghid::{Algo, Ghid, ALGO0_DIGEST, DIGEST_LEN, GHID_LEN, GHID_STR_LEN};
pub use gidc::{Gidc, GIDC_LEN};
pub use gobd::{Gobd, GobdV15, GOBD_OVERHEAD, MAX_TARGETS};
pub use identity::{FirstParty, KeyBundle, SecondParty, DEFAULT_LEGROOM, MIN_LEGROOM};
pub use object::{Kind, Object};
pub use secret::{Secret, SECRET_LEN, SECRET_LEN_DUMMY};
