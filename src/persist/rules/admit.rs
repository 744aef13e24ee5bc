//! Admission: for each container kind, run its checks (in the order docs/golix.md gives them)
//! and record the writes and notifications of storing it. Anything the new object makes
//! collectable is pushed on the collection queue for [`super::collect`].

use bytes::Bytes;

use crate::golix::{Garq, Gdxx, Geoc, Ghid, Gidc, Gobd, Gobs, Kind};
use crate::persist::archive::Notification;
use crate::persist::store::{Binding, Debinding, Record, Sender};
use crate::persist::PersistError;

use super::checks::*;
use super::View;

/// What one admission produced besides writes.
#[derive(Default)]
pub struct Effects {
    /// Ghids to re-check for collection (rule 11).
    pub queue: Vec<Ghid>,
    pub notifications: Vec<Notification>,
}

/// Frames waiting for `ghid` (a GEOC or a dynamic ghid that just became present) are
/// announced now: a frame is only pushed once its current target is present.
fn announce_waiting(view: &View<'_>, ghid: &Ghid, fx: &mut Effects) -> Result<(), PersistError> {
    for b in view.bindings(ghid)? {
        if b.kind != Kind::Gobd {
            continue;
        }
        if let Some(frame) = view.resolve(&b.ghid)? {
            fx.notifications.push(Notification {
                subscription: b.ghid,
                object: frame,
            });
        }
    }
    Ok(())
}

/// Rule 3: identities are stored as they come and never collected.
pub fn identity(view: &mut View<'_>, g: &Gidc, bytes: Bytes) -> Result<(), PersistError> {
    prune_debindings(view, &g.ghid, None)?;
    view.put(g.ghid, Some(bytes), Record::Identity);
    Ok(())
}

/// Rule 4.
pub fn container(
    view: &mut View<'_>,
    g: &Geoc,
    bytes: Bytes,
    fx: &mut Effects,
) -> Result<(), PersistError> {
    check_container_bound(view, &g.ghid)?;
    prune_debindings(view, &g.ghid, None)?;
    view.put(g.ghid, Some(bytes), Record::Container { author: g.author });
    announce_waiting(view, &g.ghid, fx)
}

/// Rule 5.
pub fn static_binding(view: &mut View<'_>, b: &Gobs, bytes: Bytes) -> Result<(), PersistError> {
    let valid = prune_debindings(view, &b.ghid, Some(b.binder))?;
    check_not_debound(&b.ghid, &valid)?;
    check_static_target(view, &b.target)?;
    view.put(
        b.ghid,
        Some(bytes),
        Record::Static {
            binder: b.binder,
            target: b.target,
        },
    );
    let binding = Binding {
        ghid: b.ghid,
        kind: Kind::Gobs,
        binder: b.binder,
    };
    view.set_binding(b.target, binding, true);
    Ok(())
}

/// Rules 6, 7 and 13: checks a frame, then replaces the current one (the old frame is deleted
/// and its current target queued for collection).
pub fn frame(
    view: &mut View<'_>,
    f: &Gobd,
    bytes: Bytes,
    fx: &mut Effects,
) -> Result<(), PersistError> {
    let dynamic = f.dynamic;
    let current = check_dynamic_slot(view, &dynamic)?;
    let valid = match current {
        Some(Record::Dynamic { binder, .. }) => valid_debindings(view, &dynamic, binder)?,
        _ => prune_debindings(view, &dynamic, Some(f.binder))?,
    };
    check_dynamic_not_debound(view, &dynamic, &valid)?;
    if let Some(current) = &current {
        check_frame_successor(current, &f.binder, f.counter)?;
    }
    let target = f.target();
    check_dynamic_target(view, &target)?;
    check_not_circular(view, &dynamic, &target)?;
    prune_debindings(view, &f.frame, None)?;

    let binding = Binding {
        ghid: dynamic,
        kind: Kind::Gobd,
        binder: f.binder,
    };
    if let Some(Record::Dynamic {
        frame: old_frame,
        target: old_target,
        ..
    }) = current
    {
        view.remove(old_frame);
        view.set_binding(old_target, binding, false);
        fx.queue.push(old_target);
    }
    view.put(f.frame, Some(bytes.clone()), Record::Frame { dynamic });
    view.put(
        dynamic,
        None,
        Record::Dynamic {
            binder: f.binder,
            counter: f.counter,
            frame: f.frame,
            target,
        },
    );
    view.set_binding(target, binding, true);
    if view.exists(&target)? {
        fx.notifications.push(Notification {
            subscription: dynamic,
            object: bytes,
        });
    }
    if current.is_none() {
        announce_waiting(view, &dynamic, fx)?;
    }
    Ok(())
}

/// Rules 8 and 9: checks a debinding, stores it and queues its target.
pub fn debinding(
    view: &mut View<'_>,
    d: &Gdxx,
    bytes: Bytes,
    fx: &mut Effects,
) -> Result<(), PersistError> {
    let valid = prune_debindings(view, &d.ghid, Some(d.debinder))?;
    check_not_debound(&d.ghid, &valid)?;
    check_debinding_target(view, &d.debinder, &d.target)?;
    view.put(
        d.ghid,
        Some(bytes),
        Record::Debinding {
            debinder: d.debinder,
            target: d.target,
        },
    );
    let entry = Debinding {
        ghid: d.ghid,
        debinder: d.debinder,
    };
    view.set_debinding(d.target, entry, true);
    fx.queue.push(d.target);
    Ok(())
}

/// Rule 10: a request is kept (and pushed to its recipient) until the recipient debinds it,
/// within the mailbox bounds of [`mailbox_room`] (which may drop one request of the
/// recipient's heaviest sender to make room).
pub fn request(
    view: &mut View<'_>,
    r: &Garq,
    bytes: Bytes,
    sender: Sender,
    limits: &super::Limits,
    fx: &mut Effects,
) -> Result<(), PersistError> {
    check_recipient_known(view, &r.recipient)?;
    let valid = prune_debindings(view, &r.ghid, Some(r.recipient))?;
    check_not_debound(&r.ghid, &valid)?;
    let evict = mailbox_room(
        view,
        &r.recipient,
        sender,
        limits.max_requests_per_recipient,
        limits.max_requests_per_sender,
    )?;
    if let Some(g) = evict {
        view.set_request(r.recipient, g, None);
        view.remove(g);
    }
    view.put(
        r.ghid,
        Some(bytes.clone()),
        Record::Request {
            recipient: r.recipient,
        },
    );
    view.set_request(r.recipient, r.ghid, Some(sender));
    fx.notifications.push(Notification {
        subscription: r.recipient,
        object: bytes,
    });
    Ok(())
}
