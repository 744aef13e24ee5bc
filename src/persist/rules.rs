//! # Rules
//!
//! Ingest validation and the collection cascade of docs/golix.md, as pure functions over a
//! [`Store`]: they read through a [`View`] (committed state plus this publish's pending writes)
//! and return a [`WriteSet`] and the notifications it causes; they never apply anything. One
//! function per decision lives in [`checks`]; per-kind admission in `admit`; rule 11 in
//! [`collect()`]; rule 12 in [`list_bindings`].
//!
//! Owns: every decision about what a holder of Golix objects accepts, keeps and drops. Calls:
//! `golix` (decoding, verification) and the [`Store`] read API. Used by
//! [`super::archive::Archive`], which runs [`precheck`] and [`verify`] off-lock, then
//! [`ingest`] and [`Store::apply`] under its write lock.
//!
//! Rule-by-rule map (docs/golix.md): 1 [`checks::check_idempotent`]; 2
//! [`checks::check_address`], [`checks::check_signer_known`] (off the lock) and
//! [`checks::check_signer_stored`] (under it), [`checks::check_signature`],
//! [`checks::check_writable_version`]; 3 [`checks::check_identity`]; 4
//! [`checks::check_container_bound`]; 5 [`checks::check_static_target`],
//! [`checks::check_not_debound`]; 6 [`checks::check_dynamic_slot`],
//! [`checks::check_dynamic_not_debound`], [`checks::check_frame_successor`]; 7
//! [`checks::check_dynamic_target`], [`checks::check_not_circular`] and frame replacement in
//! `admit::frame`; 8 [`checks::check_debinding_target`], [`checks::prune_debindings`]; 9
//! `admit::debinding` + [`collect()`]; 10 [`checks::check_recipient_known`] and
//! [`checks::mailbox_room`] (a bound of ours, [`Limits`]); 11 [`collect()`];
//! 12 [`list_bindings`]; 13 [`checks::MAX_CHAIN_DEPTH`].

mod admit;
pub mod checks;
mod collect;
mod view;

use bytes::Bytes;

use crate::golix::{Ghid, Object, SecondParty};

use super::archive::Notification;
use super::store::{Record, Sender, Store, WriteSet};
use super::PersistError;

pub use collect::collect;
pub use view::View;

/// What [`ingest`] decided: the writes to apply atomically and the notifications to send once
/// they are applied.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `false` when the object was already stored (rule 1): no writes, no notifications.
    pub new: bool,
    pub writes: WriteSet,
    pub notifications: Vec<Notification>,
}

/// The cheap stateless part of rule 2: the object must be writable (GOBD v16, not v15) and
/// its address (and a first frame's dynamic address, rule 6a) must match its content.
pub fn precheck(obj: &Object) -> Result<(), PersistError> {
    checks::check_writable_version(obj)?;
    checks::check_address(obj)
}

/// The CPU-heavy part of rule 2, safe to run without any lock (after [`precheck`]): a GIDC's
/// keys must parse, and a signed object's signature must verify with `signer` — the GIDC of
/// [`Object::signer`], found with [`checks::check_signer_known`]. Returns the parsed
/// identity of a GIDC.
pub fn verify(
    obj: &Object,
    signer: Option<&SecondParty>,
) -> Result<Option<SecondParty>, PersistError> {
    match obj {
        Object::Gidc(g) => checks::check_identity(g).map(Some),
        _ => checks::check_signature(obj, signer).map(|()| None),
    }
}

/// Default of [`Limits::max_requests_per_recipient`]: well below the persister's default
/// outbound queue (4096), so that re-delivering a full mailbox at subscribe never fills a
/// connection's queue.
pub const DEFAULT_MAX_REQUESTS_PER_RECIPIENT: usize = 1024;

/// The persister's default of [`Limits::max_requests_per_sender`].
pub const DEFAULT_MAX_REQUESTS_PER_SENDER: usize = 64;

/// Bounds a holder puts on what peers may store (beyond docs/golix.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Stored GARQs per recipient (see [`checks::mailbox_room`] for who gets the last slots).
    pub max_requests_per_recipient: usize,
    /// Stored GARQs per (sender, recipient); further ones from that sender are refused with
    /// `mailbox_full` until the recipient debinds some. By default equal to the recipient's
    /// bound (no per-sender bound: a daemon's own archive, where every request is
    /// anonymous); the persister sets its own.
    pub max_requests_per_sender: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_requests_per_recipient: DEFAULT_MAX_REQUESTS_PER_RECIPIENT,
            max_requests_per_sender: DEFAULT_MAX_REQUESTS_PER_RECIPIENT,
        }
    }
}

/// [`ingest_with`] under the default [`Limits`], by an anonymous uploader.
pub fn ingest(store: &dyn Store, obj: &Object, bytes: Bytes) -> Result<Outcome, PersistError> {
    ingest_with(store, obj, bytes, &Limits::default(), Sender::Anonymous)
}

/// Decides everything about publishing `obj` (whose raw bytes are `bytes`), uploaded by
/// `sender`, against `store`. Precondition: [`precheck`] and [`verify`] passed for `obj`. The
/// caller applies [`Outcome::writes`] with [`Store::apply`], and must not let another ingest
/// read the store in between.
pub fn ingest_with(
    store: &dyn Store,
    obj: &Object,
    bytes: Bytes,
    limits: &Limits,
    sender: Sender,
) -> Result<Outcome, PersistError> {
    let mut view = View::new(store);
    if checks::check_idempotent(&view, obj)? {
        return Ok(Outcome::default());
    }
    checks::check_signer_stored(&view, obj)?;
    let mut fx = admit::Effects::default();
    match obj {
        Object::Gidc(g) => admit::identity(&mut view, g, bytes)?,
        Object::Geoc(g) => admit::container(&mut view, g, bytes, &mut fx)?,
        Object::Gobs(b) => admit::static_binding(&mut view, b, bytes)?,
        Object::Gobd(f) => admit::frame(&mut view, f, bytes, &mut fx)?,
        Object::Gdxx(d) => admit::debinding(&mut view, d, bytes, &mut fx)?,
        Object::Garq(r) => admit::request(&mut view, r, bytes, sender, limits, &mut fx)?,
        Object::GobdV15(_) => checks::check_writable_version(obj)?,
    }
    collect(&mut view, fx.queue, &mut fx.notifications)?;
    Ok(Outcome {
        new: true,
        writes: view.into_writes(),
        notifications: fx.notifications,
    })
}

/// Rule 12: the bindings of an existing ghid — GOBS ghids, then dynamic ghids; within each
/// group the target's own author's (binder's) first; then by ghid. Unknown ghid: `NotFound`.
pub fn list_bindings(view: &View<'_>, ghid: &Ghid) -> Result<Vec<Ghid>, PersistError> {
    let Some(record) = view.record(ghid)? else {
        return Err(PersistError::NotFound(ghid.as_str()));
    };
    let owner = match record {
        Record::Identity => Some(*ghid),
        Record::Container { author } => Some(author),
        Record::Frame { dynamic } => match view.record(&dynamic)? {
            Some(Record::Dynamic { binder, .. }) => Some(binder),
            _ => None,
        },
        other => other.debinder(),
    };
    let mut all = view.bindings(ghid)?;
    all.sort_by_key(|b| {
        (
            b.kind != crate::golix::Kind::Gobs,
            Some(b.binder) != owner,
            b.ghid,
        )
    });
    Ok(all.into_iter().map(|b| b.ghid).collect())
}

/// The debinding of `ghid`: for a known target only one by its rightful debinder counts; for an
/// unknown target the first stored one (it is re-validated when the target arrives).
pub fn query_debinding(view: &View<'_>, ghid: &Ghid) -> Result<Option<Ghid>, PersistError> {
    let all = view.debindings(ghid)?;
    let found = match view.record(ghid)? {
        None => all.first().copied(),
        Some(record) => match record.debinder() {
            Some(rightful) => all.into_iter().find(|d| d.debinder == rightful),
            None => None,
        },
    };
    Ok(found.map(|d| d.ghid))
}
