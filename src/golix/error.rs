//! Errors of the Golix layer: `DecodeError` for bytes that are not a well-formed object,
//! `Error` for everything else (verification, crypto, key handling).

use thiserror::Error;

/// Why bytes failed to decode. Small and `Copy` so decoders stay cheap; every variant is a
/// distinct, stable reason (fuzzers and tests match on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("input ended early: needed {needed} more bytes for {field}")]
    Truncated { field: &'static str, needed: usize },
    #[error("{0} trailing bytes after the end of the object")]
    TrailingBytes(usize),
    #[error("unknown magic {0:02x?}")]
    UnknownMagic([u8; 4]),
    #[error("unsupported version {version} for {magic}")]
    UnsupportedVersion { magic: &'static str, version: u32 },
    #[error("unsupported cipher suite {0}")]
    UnsupportedSuite(u8),
    #[error("unsupported address algorithm {0}")]
    UnsupportedAlgo(u8),
    #[error("cipher suite 0 / address algo 0 are test-only and refused here")]
    DummyRefused,
    #[error("bad length for {field}: {len}")]
    BadLength { field: &'static str, len: usize },
    /// A length field claims fewer bytes than the object holds for that field, so the fields
    /// after it were read from the wrong place (and failed).
    #[error("declared {field} length {declared} does not match the object ({available} bytes are there for it)")]
    LengthMismatch {
        field: &'static str,
        declared: u64,
        available: u64,
    },
    #[error("bad ghid string: {0}")]
    BadGhidString(&'static str),
    #[error("unknown request kind {0:02x?}")]
    UnknownRequestKind([u8; 2]),
}

/// Errors of Golix operations beyond decoding.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("malformed object: {0}")]
    Decode(#[from] DecodeError),
    #[error("address does not match content")]
    BadAddress,
    #[error("dynamic ghid does not match the first frame")]
    BadDynamicAddress,
    #[error("signature does not verify")]
    BadSignature,
    #[error("request MAC does not verify")]
    BadMac,
    #[error("signer {0} does not match the identity given")]
    WrongSigner(String),
    #[error("non-contributory X25519 exchange")]
    NonContributory,
    #[error("RSA modulus is not exactly 4096 bits")]
    BadModulus,
    /// An identity's public key is broken or trivially weak (see `keycheck`).
    #[error("identity key refused: {0}")]
    WeakKey(String),
    #[error("key rejected: {0}")]
    KeyRejected(String),
    #[error("decryption failed")]
    DecryptFailed,
    #[error("payload too large: {0} bytes")]
    TooLarge(usize),
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    #[error("crypto backend failure")]
    Crypto,
}

impl From<aws_lc_rs::error::Unspecified> for Error {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        Error::Crypto
    }
}

impl From<aws_lc_rs::error::KeyRejected> for Error {
    fn from(e: aws_lc_rs::error::KeyRejected) -> Self {
        Error::KeyRejected(e.to_string())
    }
}
