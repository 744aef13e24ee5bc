//! One function per decision of docs/golix.md: each reads the [`View`] and either passes or
//! returns the [`PersistError`] whose `code()` the rule names. Only
//! [`prune_debindings`] writes (it deletes debindings that turned out illegal, rule 8).

use crate::golix::{Ghid, Gidc, Object, Policy, SecondParty};
use crate::persist::store::{Debinding, Record, Sender};
use crate::persist::PersistError;

use super::View;

/// Rule 13: the deepest chain of dynamic bindings a new frame may sit on (counted in dynamic
/// ghids below the new frame's target, inclusive).
pub const MAX_CHAIN_DEPTH: usize = 64;

fn s(g: &Ghid) -> String {
    g.as_str()
}

/// Rule 2 (format): GOBD v15 frames are read-only in this implementation; uploads must be v16
/// (v15 has no counter, so rule 6c cannot be enforced).
pub fn check_writable_version(obj: &Object) -> Result<(), PersistError> {
    match obj {
        Object::GobdV15(_) => Err(PersistError::Malformed(
            crate::golix::DecodeError::UnsupportedVersion {
                magic: "GOBD",
                version: obj.version(),
            },
        )),
        _ => Ok(()),
    }
}

/// Rule 2 (address): the stored address, and for a first frame the dynamic address (rule 6a),
/// must match the content.
pub fn check_address(obj: &Object) -> Result<(), PersistError> {
    obj.verify_address()
        .map_err(PersistError::VerificationFailed)
}

/// Rule 1: is the object already stored? A present object that is debound (replay of
/// something its debinding still blocks) is refused, anything else present is a no-op.
pub fn check_idempotent(view: &View<'_>, obj: &Object) -> Result<bool, PersistError> {
    let ghid = obj.ghid();
    let Some(record) = view.record(&ghid)? else {
        return Ok(false);
    };
    match record {
        Record::Frame { dynamic } => {
            if let Some(Record::Dynamic { binder, .. }) = view.record(&dynamic)? {
                let valid = valid_debindings(view, &dynamic, binder)?;
                check_dynamic_not_debound(view, &dynamic, &valid)?;
            }
        }
        other => {
            if let Some(rightful) = other.debinder() {
                check_not_debound(&ghid, &valid_debindings(view, &ghid, rightful)?)?;
            }
        }
    }
    Ok(true)
}

/// A stored identity, decoded.
pub fn identity(view: &View<'_>, ghid: &Ghid) -> Result<Option<Gidc>, PersistError> {
    if view.record(ghid)? != Some(Record::Identity) {
        return Ok(None);
    }
    let bytes = view
        .object(ghid)?
        .ok_or_else(|| PersistError::Storage(format!("identity {} has no bytes", s(ghid))))?;
    match Object::decode(&bytes, Policy::STRICT) {
        Ok(Object::Gidc(g)) if g.ghid == *ghid => Ok(Some(g)),
        _ => Err(PersistError::Storage(format!(
            "corrupt identity {}",
            s(ghid)
        ))),
    }
}

/// Rule 2 (author), as [`super::ingest_with`] checks it: the signer's GIDC must already be
/// stored. Only its record is read: the signature was verified before (with the keys rule 3
/// parsed when the GIDC was stored), and GIDCs are never collected.
pub fn check_signer_stored(view: &View<'_>, obj: &Object) -> Result<(), PersistError> {
    let Some(signer) = obj.signer() else {
        return Ok(());
    };
    match view.record(&signer)? {
        Some(Record::Identity) => Ok(()),
        _ => Err(PersistError::UnknownAuthor(s(&signer))),
    }
}

/// Rule 2 (author), with the GIDC itself: the signer's GIDC must already be stored. Returns
/// it, or `None` for unsigned kinds (GIDC; GARQ, whose recipient rule 10 checks).
pub fn check_signer_known(view: &View<'_>, obj: &Object) -> Result<Option<Gidc>, PersistError> {
    let Some(signer) = obj.signer() else {
        return Ok(None);
    };
    identity(view, &signer)?
        .map(Some)
        .ok_or_else(|| PersistError::UnknownAuthor(s(&signer)))
}

/// Rule 2 (signature): verifies the signature with the signer's identity.
pub fn check_signature(obj: &Object, signer: Option<&SecondParty>) -> Result<(), PersistError> {
    obj.verify_signature(signer)
        .map_err(PersistError::VerificationFailed)
}

/// Rule 3: a GIDC needs no binding and no signature, but its keys must parse (suite-1 moduli
/// of exactly 4096 bits), or nothing it signs could ever be verified.
pub fn check_identity(gidc: &Gidc) -> Result<SecondParty, PersistError> {
    SecondParty::from_gidc(gidc.clone()).map_err(PersistError::VerificationFailed)
}

/// Rule 4: a GEOC is accepted only if something live already binds it (a GOBS, or a dynamic
/// object whose current target it is).
pub fn check_container_bound(view: &View<'_>, geoc: &Ghid) -> Result<(), PersistError> {
    if view.bindings(geoc)?.is_empty() {
        return Err(PersistError::UnboundContainer(s(geoc)));
    }
    Ok(())
}

/// The debindings of `target` by `rightful` (its binder, author or recipient).
pub fn valid_debindings(
    view: &View<'_>,
    target: &Ghid,
    rightful: Ghid,
) -> Result<Vec<Debinding>, PersistError> {
    Ok(view
        .debindings(target)?
        .into_iter()
        .filter(|d| d.debinder == rightful)
        .collect())
}

/// Rule 8 (late check): `target` is arriving now. Debindings of it that were accepted while it
/// was unknown are re-validated: those not made by `rightful` (or all of them if the arriving
/// kind cannot be debound) are deleted. Returns the valid ones.
pub fn prune_debindings(
    view: &mut View<'_>,
    target: &Ghid,
    rightful: Option<Ghid>,
) -> Result<Vec<Debinding>, PersistError> {
    let mut valid = Vec::new();
    for d in view.debindings(target)? {
        if Some(d.debinder) == rightful {
            valid.push(d);
        } else {
            view.set_debinding(*target, d, false);
            if view.record(&d.ghid)?.is_some() {
                view.remove(d.ghid);
            }
        }
    }
    Ok(valid)
}

/// Rules 5, 8, 9, 10: a ghid with a valid debinding cannot be (re-)uploaded.
pub fn check_not_debound(ghid: &Ghid, valid: &[Debinding]) -> Result<(), PersistError> {
    match valid.first() {
        Some(d) => Err(PersistError::AlreadyDebound(format!(
            "{} (by {})",
            s(ghid),
            s(&d.ghid)
        ))),
        None => Ok(()),
    }
}

/// Rule 6: a debound dynamic ghid takes no frame — unless something else still binds it.
pub fn check_dynamic_not_debound(
    view: &View<'_>,
    dynamic: &Ghid,
    valid: &[Debinding],
) -> Result<(), PersistError> {
    if valid.is_empty() || !view.bindings(dynamic)?.is_empty() {
        return Ok(());
    }
    check_not_debound(dynamic, valid)
}

/// Rule 6: the dynamic ghid must be unknown or name a dynamic object (a counter > 0 frame can
/// claim any dynamic ghid, rule 6b — not one that is already something else).
pub fn check_dynamic_slot(view: &View<'_>, dynamic: &Ghid) -> Result<Option<Record>, PersistError> {
    match view.record(dynamic)? {
        None => Ok(None),
        Some(r @ Record::Dynamic { .. }) => Ok(Some(r)),
        Some(other) => Err(PersistError::IllegalFrame(format!(
            "dynamic ghid {} names an existing {}",
            s(dynamic),
            other.kind().as_str()
        ))),
    }
}

/// Rule 6c: a known dynamic object's next frame has the stored binder and a strictly greater
/// counter (an equal counter is a fork or a replay).
pub fn check_frame_successor(
    current: &Record,
    binder: &Ghid,
    counter: u64,
) -> Result<(), PersistError> {
    let Record::Dynamic {
        binder: stored,
        counter: last,
        ..
    } = current
    else {
        return Ok(());
    };
    if stored != binder {
        return Err(PersistError::InconsistentAuthor(format!(
            "frame binder {} is not the dynamic object's binder {}",
            s(binder),
            s(stored)
        )));
    }
    if counter <= *last {
        return Err(PersistError::IllegalFrame(format!(
            "counter {counter} does not exceed the stored counter {last}"
        )));
    }
    Ok(())
}

fn bad_target(target: &Ghid, what: &str, record: &Record) -> PersistError {
    PersistError::InvalidTarget(format!(
        "{} is a {}{}",
        s(target),
        record.kind().as_str(),
        what
    ))
}

/// Rule 5: a GOBS may bind a GEOC, a dynamic ghid or something unknown — never a known GIDC,
/// GOBS, GDXX, GARQ, nor a frame ghid (frames are replaced; bind the dynamic ghid).
pub fn check_static_target(view: &View<'_>, target: &Ghid) -> Result<(), PersistError> {
    match view.record(target)? {
        None | Some(Record::Container { .. }) | Some(Record::Dynamic { .. }) => Ok(()),
        Some(r @ Record::Frame { .. }) => {
            Err(bad_target(target, " frame; bind its dynamic ghid", &r))
        }
        Some(r) => Err(bad_target(target, "", &r)),
    }
}

/// Rule 7: a frame's current target is a GEOC or another dynamic ghid (or unknown) — never a
/// GIDC (docs/golix.md keeps the reference's refusal), GOBS, GDXX, GARQ or frame ghid.
pub fn check_dynamic_target(view: &View<'_>, target: &Ghid) -> Result<(), PersistError> {
    check_static_target(view, target)
}

/// Rules 7 and 13: following current targets through dynamic ghids from `target` must never
/// reach `dynamic` (that frame would close a loop), and may cross at most
/// [`MAX_CHAIN_DEPTH`] dynamic ghids. Every cycle is refused: a loop longer than the limit
/// fails the depth check instead.
pub fn check_not_circular(
    view: &View<'_>,
    dynamic: &Ghid,
    target: &Ghid,
) -> Result<(), PersistError> {
    let mut at = *target;
    let mut depth = 0usize;
    loop {
        if at == *dynamic {
            return Err(PersistError::CircularBinding(s(dynamic)));
        }
        match view.record(&at)? {
            Some(Record::Dynamic { target: next, .. }) => {
                depth += 1;
                if depth > MAX_CHAIN_DEPTH {
                    return Err(PersistError::Limit(format!(
                        "dynamic binding chain below {} is deeper than {MAX_CHAIN_DEPTH}",
                        s(dynamic)
                    )));
                }
                at = next;
            }
            _ => return Ok(()),
        }
    }
}

/// Rule 8: a GDXX may target a GOBS, a dynamic ghid, a GDXX or a GARQ (or something unknown,
/// re-checked on arrival) — never a GIDC, GEOC or frame ghid — and its debinder must be the
/// target's binder, author or (GARQ) recipient.
pub fn check_debinding_target(
    view: &View<'_>,
    debinder: &Ghid,
    target: &Ghid,
) -> Result<(), PersistError> {
    let Some(record) = view.record(target)? else {
        return Ok(());
    };
    match record.debinder() {
        None => Err(bad_target(target, " and cannot be debound", &record)),
        Some(rightful) if rightful != *debinder => Err(PersistError::InconsistentAuthor(format!(
            "{} may only be debound by {}, not {}",
            s(target),
            s(&rightful),
            s(debinder)
        ))),
        Some(_) => Ok(()),
    }
}

/// Rule 10, bounded and fair (a bound of ours, [`super::Limits`]). GARQs hide their author and
/// cannot be verified here, so they are counted by who uploaded them ([`Sender`]: the key
/// that authenticated the connection, or one shared anonymous sender):
/// - one sender holds at most `per_sender` requests for one recipient; beyond that its new
///   ones are refused (`mailbox_full`), nothing of it is dropped;
/// - a recipient holds at most `per_recipient` in all; when full, a sender holding fewer
///   than the heaviest sender (by two or more) still gets in: one request of the heaviest
///   sender — its lowest ghid — is dropped to make room (`Ok(Some(evicted))`). Otherwise
///   `mailbox_full`.
///
/// So a flood from one sender (or from every anonymous uploader together) takes at most
/// `per_sender` slots, and filling a mailbox against a newcomer takes as many authenticated
/// signing keys as it has slots. The recipient frees room by debinding.
pub fn mailbox_room(
    view: &View<'_>,
    recipient: &Ghid,
    sender: Sender,
    per_recipient: usize,
    per_sender: usize,
) -> Result<Option<Ghid>, PersistError> {
    let mail = view.requests(recipient)?;
    let mut counts: std::collections::BTreeMap<Sender, usize> = Default::default();
    for (_, from) in &mail {
        *counts.entry(*from).or_default() += 1;
    }
    let mine = counts.get(&sender).copied().unwrap_or(0);
    if mine >= per_sender {
        return Err(PersistError::MailboxFull(format!(
            "{} already holds {mine} stored requests from this sender (the limit per sender \
             is {per_sender})",
            s(recipient)
        )));
    }
    if mail.len() < per_recipient {
        return Ok(None);
    }
    // The heaviest sender (the first of them in `Sender` order on a tie).
    let heaviest = counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(from, n)| (*from, *n));
    match heaviest {
        Some((from, n)) if n > mine + 1 => Ok(mail.iter().find(|m| m.1 == from).map(|m| m.0)),
        _ => Err(PersistError::MailboxFull(format!(
            "{} already has {} stored requests (the limit is {per_recipient})",
            s(recipient),
            mail.len()
        ))),
    }
}

/// Rule 10: a GARQ needs its recipient's GIDC.
pub fn check_recipient_known(view: &View<'_>, recipient: &Ghid) -> Result<(), PersistError> {
    if view.record(recipient)? != Some(Record::Identity) {
        return Err(PersistError::UnknownAuthor(s(recipient)));
    }
    Ok(())
}
