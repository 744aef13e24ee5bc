//! `PersistError`: every way a publish or query can fail, each with a stable wire code.

use thiserror::Error;

use crate::golix;

/// Errors of the persistence layer. `code()` is the stable string sent on the wire; never
/// rename a code, only add new ones.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum PersistError {
    #[error("malformed object: {0}")]
    Malformed(#[from] golix::DecodeError),
    #[error("verification failed: {0}")]
    VerificationFailed(golix::Error),
    #[error("unknown author or recipient {0}")]
    UnknownAuthor(String),
    #[error("container {0} is not bound")]
    UnboundContainer(String),
    #[error("{0} is already debound")]
    AlreadyDebound(String),
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    #[error("inconsistent author: {0}")]
    InconsistentAuthor(String),
    #[error("illegal dynamic frame: {0}")]
    IllegalFrame(String),
    #[error("binding would close a circular chain through {0}")]
    CircularBinding(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    #[error("bad arguments: {0}")]
    BadArgs(String),
    #[error("limit reached: {0}")]
    Limit(String),
    #[error("storage failure: {0}")]
    Storage(String),
    /// Rule 10 with a bound: the recipient already has the most stored requests (GARQs) a
    /// holder keeps for one recipient; it must debind some before more can be stored.
    #[error("mailbox full: {0}")]
    MailboxFull(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl PersistError {
    /// The stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            PersistError::Malformed(_) => "malformed",
            PersistError::VerificationFailed(_) => "verification_failed",
            PersistError::UnknownAuthor(_) => "unknown_author",
            PersistError::UnboundContainer(_) => "unbound_container",
            PersistError::AlreadyDebound(_) => "already_debound",
            PersistError::InvalidTarget(_) => "invalid_target",
            PersistError::InconsistentAuthor(_) => "inconsistent_author",
            PersistError::IllegalFrame(_) => "illegal_frame",
            PersistError::CircularBinding(_) => "circular_binding",
            PersistError::NotFound(_) => "not_found",
            PersistError::TooLarge(_) => "too_large",
            PersistError::UnknownOp(_) => "unknown_op",
            PersistError::BadArgs(_) => "bad_args",
            PersistError::Limit(_) => "limit",
            PersistError::Storage(_) => "storage",
            PersistError::MailboxFull(_) => "mailbox_full",
            PersistError::Unavailable(_) => "unavailable",
        }
    }
}

impl From<sled::Error> for PersistError {
    fn from(e: sled::Error) -> Self {
        PersistError::Storage(e.to_string())
    }
}
