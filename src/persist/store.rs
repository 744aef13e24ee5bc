//! # Store
//!
//! The storage contract every holder of Golix objects shares (persister and daemon cache):
//! raw object bytes by [`Ghid`], one [`Record`] per known ghid saying what it is, and the
//! indexes the rules need — bindings by target, debindings by target, GARQs by recipient and
//! the "collected" marker set. The dynamic-object index (current frame, binder, counter and
//! current target by dynamic ghid) is the [`Record::Dynamic`] record of the dynamic ghid.
//!
//! Owns: the key-value contract ([`Store`]), the unit of atomic change ([`WriteSet`]), the
//! sled implementation ([`SledStore`], optionally behind a write-ahead log: `logged`, `wal`)
//! and the cluster one over NATS JetStream
//! ([`NatsStore`]). Calls: `golix` (types only), sled, async-nats. Used by [`super::rules`]
//! (reads) and [`super::archive`] (transact, flush).
//!
//! The trait is a plain key-value contract: reads are point lookups or "every member of the set
//! keyed by this ghid", and every write goes through [`Store::apply`], one [`WriteSet`] per
//! publish, applied atomically. Nothing here assumes one process owns the data
//! (docs/architecture.md); what serialises rule evaluation is [`Store::transact`]'s business:
//! the sled store relies on the [`super::archive::Archive`]'s lock around read-decide-apply, the
//! cluster store makes its commit conditional on every row the rule pass read and re-runs the
//! pass on a conflict.

mod logged;
mod logged_tree;
pub mod nats;
mod presence;
pub mod sled_gate;
mod sled_store;
pub mod spill;
mod wal;

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::golix::{Ghid, Kind};

use super::PersistError;

pub use logged::{MOVE_EVERY as WAL_MOVE_EVERY, MOVE_EVERY_MIN as WAL_MOVE_EVERY_MIN};
pub use logged_tree::LoggedTree;
pub use nats::{NatsOptions, NatsStore, OpCounts};
pub use sled_store::SledStore;

/// One rule pass for [`Store::transact`]: reads through the store it is given and returns
/// the writes to apply.
pub type Decide<'a> = dyn FnMut(&dyn Store) -> Result<WriteSet, PersistError> + 'a;

/// What a stored ghid is, with the fields the rules decide on. Every present ghid has exactly
/// one record; a ghid without a record is unknown (or collected, see [`Store::is_collected`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Record {
    /// A GIDC. Permanent.
    Identity,
    /// A GEOC.
    Container { author: Ghid },
    /// A GOBS.
    Static { binder: Ghid, target: Ghid },
    /// The current frame of a dynamic object (GOBD), keyed by its frame ghid.
    Frame { dynamic: Ghid },
    /// A dynamic object, keyed by its dynamic ghid: the current frame and what it says.
    Dynamic {
        binder: Ghid,
        counter: u64,
        frame: Ghid,
        target: Ghid,
    },
    /// A GDXX.
    Debinding { debinder: Ghid, target: Ghid },
    /// A GARQ.
    Request { recipient: Ghid },
}

impl Record {
    /// The container kind behind this record (frames and dynamic ghids are both GOBD).
    pub fn kind(&self) -> Kind {
        match self {
            Record::Identity => Kind::Gidc,
            Record::Container { .. } => Kind::Geoc,
            Record::Static { .. } => Kind::Gobs,
            Record::Frame { .. } | Record::Dynamic { .. } => Kind::Gobd,
            Record::Debinding { .. } => Kind::Gdxx,
            Record::Request { .. } => Kind::Garq,
        }
    }

    /// Who may debind this ghid (docs/golix.md rule 8), or `None` if it cannot be debound at all
    /// (GIDC, GEOC, a frame ghid).
    pub fn debinder(&self) -> Option<Ghid> {
        match *self {
            Record::Static { binder, .. } | Record::Dynamic { binder, .. } => Some(binder),
            Record::Debinding { debinder, .. } => Some(debinder),
            Record::Request { recipient } => Some(recipient),
            Record::Identity | Record::Container { .. } | Record::Frame { .. } => None,
        }
    }
}

/// One live binding of a target: a GOBS (by its ghid) or a dynamic object whose current
/// target it is (by its dynamic ghid).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Binding {
    /// The GOBS ghid, or the dynamic ghid for a GOBD.
    pub ghid: Ghid,
    /// [`Kind::Gobs`] or [`Kind::Gobd`].
    pub kind: Kind,
    pub binder: Ghid,
}

/// One stored debinding (GDXX) of a target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Debinding {
    /// The GDXX ghid.
    pub ghid: Ghid,
    pub debinder: Ghid,
}

/// Who stored a GARQ, as far as the holder can tell (GARQs hide their author): the signing
/// key that authenticated the uploading connection, or nobody.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Sender {
    /// Uploaded by a connection that did not authenticate (and mail stored before senders
    /// were recorded).
    Anonymous,
    /// SHA-512 of the RSA signature modulus that authenticated the uploading connection.
    Key([u8; 64]),
}

/// Every change one publish makes, applied atomically by [`Store::apply`]. `Some`/`true`
/// inserts, `None`/`false` removes. Later writes to the same key replace earlier ones, so a
/// `WriteSet` doubles as the rules' read-your-writes overlay.
#[derive(Clone, Default, Debug)]
pub struct WriteSet {
    /// Raw object bytes by stored ghid (frame ghid for GOBD frames).
    pub objects: BTreeMap<Ghid, Option<Bytes>>,
    pub records: BTreeMap<Ghid, Option<Record>>,
    /// `(target, binding ghid)`.
    pub bindings: BTreeMap<(Ghid, Ghid), Option<Binding>>,
    /// `(target, GDXX ghid)`.
    pub debindings: BTreeMap<(Ghid, Ghid), Option<Debinding>>,
    /// `(recipient, GARQ ghid)` -> who stored it (`None` removes).
    pub requests: BTreeMap<(Ghid, Ghid), Option<Sender>>,
    /// Ghids that were stored and then removed.
    pub collected: BTreeMap<Ghid, bool>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
            && self.records.is_empty()
            && self.bindings.is_empty()
            && self.debindings.is_empty()
            && self.requests.is_empty()
            && self.collected.is_empty()
    }
}

/// The storage contract. Reads see everything applied before them; `apply` is all-or-nothing,
/// including across a crash; `flush` makes everything applied before it durable.
pub trait Store: Send + Sync {
    /// Raw bytes of a stored object (a frame by its frame ghid; dynamic ghids have none).
    fn object(&self, ghid: &Ghid) -> Result<Option<Bytes>, PersistError>;
    /// What `ghid` is, if present.
    fn record(&self, ghid: &Ghid) -> Result<Option<Record>, PersistError>;
    /// Live bindings whose target is `target`, in ghid order.
    fn bindings(&self, target: &Ghid) -> Result<Vec<Binding>, PersistError>;
    /// Stored debindings whose target is `target`, in ghid order.
    fn debindings(&self, target: &Ghid) -> Result<Vec<Debinding>, PersistError>;
    /// Stored GARQ ghids addressed to `recipient` and who stored each, in ghid order.
    fn requests(&self, recipient: &Ghid) -> Result<Vec<(Ghid, Sender)>, PersistError>;
    /// Whether `ghid` was stored and then removed (and not stored again since).
    fn is_collected(&self, ghid: &Ghid) -> Result<bool, PersistError>;
    /// Applies every change in `writes` atomically.
    fn apply(&self, writes: &WriteSet) -> Result<(), PersistError>;
    /// Returns once everything applied before the call is durable.
    fn flush(&self) -> Result<(), PersistError>;

    /// Whether [`Store::transact`] isolates concurrent callers by itself, across processes
    /// (a cluster store). When it does not, the caller must serialise read-decide-apply.
    fn isolates(&self) -> bool {
        false
    }

    /// Runs `decide` (a rule pass) and applies the writes it returns, such that nothing
    /// another transaction wrote lands between what `decide` read and that apply; it may run
    /// `decide` more than once. Only for stores that [`Store::isolates`]; the others are
    /// driven by the caller (lock, rule pass, [`Store::apply`]).
    fn transact(&self, decide: &mut Decide<'_>) -> Result<(), PersistError> {
        let _ = decide;
        Err(PersistError::Storage(
            "this store does not isolate transactions; serialise and apply".into(),
        ))
    }

    /// Stores raw bytes under `ghid` (no record, no index: the rules decide those).
    fn put_object(&self, ghid: &Ghid, bytes: Bytes) -> Result<(), PersistError> {
        let mut w = WriteSet::default();
        w.objects.insert(*ghid, Some(bytes));
        self.apply(&w)
    }

    /// Deletes the raw bytes under `ghid`.
    fn delete_object(&self, ghid: &Ghid) -> Result<(), PersistError> {
        let mut w = WriteSet::default();
        w.objects.insert(*ghid, None);
        self.apply(&w)
    }
}
