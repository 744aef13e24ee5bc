//! Rule 11, the collection cascade: triage each queued ghid; whatever is dead is removed
//! (marked collected) and may queue what it kept alive.

use std::collections::VecDeque;

use crate::golix::{Ghid, Kind};
use crate::persist::archive::Notification;
use crate::persist::store::{Binding, Debinding, Record};
use crate::persist::PersistError;

use super::checks::valid_debindings;
use super::View;

/// The debinding of `ghid` by `rightful`, if any.
fn debound_by(
    view: &View<'_>,
    ghid: &Ghid,
    rightful: Ghid,
) -> Result<Option<Debinding>, PersistError> {
    Ok(valid_debindings(view, ghid, rightful)?.into_iter().next())
}

/// The removal notice for a subscriber: the GDXX that did it (skipped if its bytes are gone).
fn notice(
    view: &View<'_>,
    subscription: Ghid,
    by: &Debinding,
    out: &mut Vec<Notification>,
) -> Result<(), PersistError> {
    if let Some(object) = view.object(&by.ghid)? {
        out.push(Notification {
            subscription,
            object,
        });
    }
    Ok(())
}

/// Runs the cascade from `queue` to a fixed point:
/// - a GOBS debound by its binder is removed and its target queued;
/// - a dynamic object debound by its binder that nothing binds is removed (frame and dynamic
///   ghid), its subscribers get the GDXX, and its current target is queued;
/// - a GEOC nothing binds is removed;
/// - a GDXX or GARQ debound by its author / recipient is removed (GARQ: the recipient gets
///   the GDXX); removing a GDXX un-debinds its target, which therefore needs no triage;
/// - GIDCs and frame ghids are never collected on their own.
///
/// Terminates: every step either removes a present object or does nothing, and only removals
/// queue more work.
pub fn collect(
    view: &mut View<'_>,
    queue: Vec<Ghid>,
    notifications: &mut Vec<Notification>,
) -> Result<(), PersistError> {
    let mut queue: VecDeque<Ghid> = queue.into();
    while let Some(g) = queue.pop_front() {
        let Some(record) = view.record(&g)? else {
            continue;
        };
        match record {
            Record::Identity | Record::Frame { .. } => {}
            Record::Container { .. } => {
                if view.bindings(&g)?.is_empty() {
                    view.remove(g);
                }
            }
            Record::Static { binder, target } => {
                if debound_by(view, &g, binder)?.is_some() {
                    let b = Binding {
                        ghid: g,
                        kind: Kind::Gobs,
                        binder,
                    };
                    view.set_binding(target, b, false);
                    view.remove(g);
                    queue.push_back(target);
                }
            }
            Record::Dynamic {
                binder,
                frame,
                target,
                ..
            } => {
                let Some(by) = debound_by(view, &g, binder)? else {
                    continue;
                };
                if !view.bindings(&g)?.is_empty() {
                    continue;
                }
                let b = Binding {
                    ghid: g,
                    kind: Kind::Gobd,
                    binder,
                };
                view.set_binding(target, b, false);
                view.remove(frame);
                view.remove(g);
                notice(view, g, &by, notifications)?;
                queue.push_back(target);
            }
            Record::Debinding { debinder, target } => {
                if debound_by(view, &g, debinder)?.is_some() {
                    let d = Debinding { ghid: g, debinder };
                    view.set_debinding(target, d, false);
                    view.remove(g);
                }
            }
            Record::Request { recipient } => {
                if let Some(by) = debound_by(view, &g, recipient)? {
                    view.set_request(recipient, g, None);
                    view.remove(g);
                    notice(view, recipient, &by, notifications)?;
                }
            }
        }
    }
    Ok(())
}
