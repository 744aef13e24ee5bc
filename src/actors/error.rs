//! `DaemonError`: what the daemon tells an app (or the CLI) when something fails. Each
//! variant has a stable wire `code()`; never rename a code, only add.

use thiserror::Error;

use crate::persist::PersistError;

/// `Clone` so that every push coalesced into one frame gets the frame's error, code intact.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// A persistence rule refused the object (carries the persist code, e.g. `illegal_frame`).
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("golix: {0}")]
    Golix(#[from] crate::golix::Error),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("object is locally immutable: {0}")]
    LocallyImmutable(String),
    #[error("object is dead (discarded or deleted): {0}")]
    DeadObject(String),
    #[error("wrong password")]
    WrongPassword,
    #[error("unknown token")]
    UnknownToken,
    #[error("token already in use by another connection")]
    TokenInUse,
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("private objects cannot be shared: {0}")]
    Unsharable(String),
    /// A share's recipient fingerprint names no identity known here or on any remote.
    #[error("unknown recipient: {0}")]
    UnknownRecipient(String),
    /// Something that may be set once is set already (a session's token, a startup object).
    #[error("already set: {0}")]
    AlreadySet(String),
    #[error("public objects cannot become private")]
    CatOuttaBag,
    #[error("no secret known for {0}")]
    UnknownSecret(String),
    #[error("no remote could provide {0}")]
    UnavailableUpstream(String),
    #[error("bad arguments: {0}")]
    BadArgs(String),
    /// An object of ours would exceed what a remote can store (its `max_frame`, learned from
    /// its `hello`): refused before anything is committed.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A bound of ours is reached (a count the daemon keeps at most, see the README's limits
    /// table): the same request may succeed once something is freed.
    #[error("limit: {0}")]
    Limit(String),
    #[error("account: {0}")]
    Account(String),
    #[error("storage: {0}")]
    Storage(String),
    /// A stored record that will never open as it is (fails authentication, does not decode,
    /// its file is gone or has the wrong length): unlike [`DaemonError::Storage`], retrying
    /// cannot help. The same wire code as `Storage`.
    #[error("storage: corrupt record: {0}")]
    Corrupt(String),
    #[error("daemon is shutting down")]
    ShuttingDown,
    /// The actor that does this stopped, or did not answer in time (the same code as the
    /// persistence layer's `unavailable`).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl DaemonError {
    /// Whether the same request may succeed later as it is: a remote or the local storage
    /// could not serve it now (as opposed to an answer about the request itself).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            DaemonError::UnavailableUpstream(_)
                | DaemonError::Unavailable(_)
                | DaemonError::Storage(_)
                | DaemonError::ShuttingDown
                | DaemonError::Persist(PersistError::Storage(_) | PersistError::Unavailable(_))
        )
    }

    /// The stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            DaemonError::Persist(e) => e.code(),
            DaemonError::Golix(_) => "verification_failed",
            DaemonError::NotFound(_) => "not_found",
            DaemonError::LocallyImmutable(_) => "locally_immutable",
            DaemonError::DeadObject(_) => "dead_object",
            DaemonError::WrongPassword => "wrong_password",
            DaemonError::UnknownToken => "unknown_token",
            DaemonError::TokenInUse => "token_in_use",
            DaemonError::AccessDenied(_) => "access_denied",
            DaemonError::Unsharable(_) => "unsharable",
            DaemonError::UnknownRecipient(_) => "unknown_recipient",
            DaemonError::AlreadySet(_) => "already_set",
            DaemonError::CatOuttaBag => "cat_outta_bag",
            DaemonError::UnknownSecret(_) => "unknown_secret",
            DaemonError::UnavailableUpstream(_) => "unavailable_upstream",
            DaemonError::BadArgs(_) => "bad_args",
            DaemonError::TooLarge(_) => "too_large",
            DaemonError::Limit(_) => "limit",
            DaemonError::Account(_) => "account",
            DaemonError::Storage(_) | DaemonError::Corrupt(_) => "storage",
            DaemonError::ShuttingDown => "shutting_down",
            DaemonError::Unavailable(_) => "unavailable",
        }
    }
}

/// An actor's mailbox that is gone or did not answer. Where the gate is closed, callers say
/// `shutting_down` instead (see `DaemonHandle`).
impl From<actix::MailboxError> for DaemonError {
    fn from(e: actix::MailboxError) -> Self {
        match e {
            actix::MailboxError::Closed => DaemonError::Unavailable("the actor stopped".into()),
            actix::MailboxError::Timeout => {
                DaemonError::Unavailable("the actor did not answer in time".into())
            }
        }
    }
}

impl From<sled::Error> for DaemonError {
    fn from(e: sled::Error) -> Self {
        DaemonError::Storage(e.to_string())
    }
}
