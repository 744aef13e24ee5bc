//! Draining one remote's outbox queue: publishing our objects in order, and what happens when
//! the remote refuses one for good.
//!
//! **Publish order.** A persister only stores a container something binds, so a commit stages a
//! binding (a frame, or a GOBS) *before* its container, and the queue sends them in that order.
//! The two travel pipelined ([`Client::publish_all`]): the container's request leaves right
//! behind its binding's, without waiting for its answer (the remote applies a connection's
//! publishes in order and makes the pair durable in one flush), so the pair costs one round
//! trip, and readers, whom the remote tells of a frame once its container is stored, hear of it
//! one round trip sooner. The binding's answer decides for the pair: when it is refused or must
//! be retried, the container's answer (an unbound refusal) is ignored and the pair is handled
//! as one. Once the remote has taken a new frame it drops the previous container; if it then
//! refused the new container, its current frame would point at nothing and every other reader
//! would lose the object. So a binding and the container right after it in the queue are one
//! unit: before the binding is sent, both are checked against the remote's limit (the
//! `max_frame` of this connection's `hello`, see [`super::limits`]), and a unit that does not
//! fit is refused whole — nothing of it reaches the remote, which keeps its previous frame and
//! container; the object's next frame (which ratchets over the missing one by address only)
//! replaces it there as usual. A binding the remote refuses for any other reason (a lost frame
//! race: `illegal_frame`) takes its container with it. One case is left: a connection lost
//! between a frame and its container, and the remote's limit lowered before the next one — the
//! container is then refused alone, and that remote's frame has no container until the object's
//! next push that fits (logged and reported like any refusal).
//!
//! **Retries.** A remote answering `storage`, `unavailable` or `limit`, and an entry that
//! cannot be read from the local vault right now (its spill directory or that directory's
//! marker missing included), are retried after 0.2 s, doubling up to 10 s, with a `warning`
//! at the first failure and at most one a minute after it. Only an entry that will never open (corrupt) is dropped, with a
//! warning.
//!
//! **Permanent refusals** (every other code) never drop an entry silently: each is a `warning` log and a `remote_refused`
//! event to the apps tracking the object. The local archive keeps what the app was told is
//! committed; only that remote lacks it. (The daemon refuses oversize pushes before
//! committing them, against the last known limits, so this path is for limits that changed
//! while we were away.)
//!
//! Owns: nothing (the queue is the outbox's). Calls: the outbox ([`Local`]), the persist
//! client, the app registry (events). Started by `RemoteActor` for each connection, as a
//! task the actor's session holds.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::api::AppEvent;
use super::apps::AppRegistry;
use super::backoff::Backoff;
use super::error::DaemonError;
use super::local::Local;
use super::publish_queue::Entry;
use super::remote::RemoteHandle;
use crate::golix::{Ghid, Object, Policy};
use crate::persist::client::{ClientError, PersisterClient as Client};
use crate::persist::wire::codes;

/// First wait before retrying an outbox entry that could not be read, or that the remote
/// could not take, right now; it doubles while that lasts, up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE: Duration = Duration::from_millis(200);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(10);
/// Whether a remote's refusal (its wire code) is final for this object (drop it) rather
/// than transient (retry).
fn is_rule_rejection(code: &str) -> bool {
    !matches!(code, "storage" | "unavailable" | "limit")
}

/// The target of a binding's bytes (GOBD: its current target; GOBS: its target).
fn binding_target(bytes: &[u8]) -> Option<Ghid> {
    if !(bytes.starts_with(b"GOBD") || bytes.starts_with(b"GOBS")) {
        return None;
    }
    match Object::decode(bytes, Policy::STRICT).ok()? {
        Object::Gobd(f) => Some(f.target()),
        Object::Gobs(b) => Some(b.target),
        _ => None,
    }
}

/// Whether `container` is the GEOC at `target`.
fn is_container(container: &[u8], target: Ghid) -> bool {
    container.starts_with(b"GEOC")
        && matches!(Object::decode(container, Policy::STRICT), Ok(Object::Geoc(c)) if c.ghid == target)
}

/// The object an app knows `bytes` as: a frame's dynamic ghid, a binding's or debinding's
/// target, a request's recipient, else the object's own address.
fn subject(bytes: &[u8]) -> Option<Ghid> {
    Some(match Object::decode(bytes, Policy::STRICT).ok()? {
        Object::Gobd(f) => f.dynamic,
        Object::Gobs(b) => b.target,
        Object::Gdxx(d) => d.target,
        Object::Garq(r) => r.recipient,
        other => other.ghid(),
    })
}

/// Replays this remote's outbox queue in order, forever (the session aborts it); objects of
/// more than `max_object` bytes are refused whole (see the module doc). Signals `caught_up`
/// the first time the queue is empty.
pub(super) async fn drain(
    local: Arc<Local>,
    apps: Arc<AppRegistry>,
    remote: RemoteHandle,
    client: Client,
    max_object: u64,
    caught_up: oneshot::Sender<()>,
) {
    let q = remote.shared.queue;
    let mut caught_up = Some(caught_up);
    let mut retry = Backoff::new(RETRY_PAUSE, RETRY_PAUSE_MAX);
    loop {
        let entry = match local.publish_queue.first(q) {
            Ok(Some(e)) => e,
            Ok(None) => {
                if let Some(c) = caught_up.take() {
                    let _ = c.send(());
                }
                local.publish_queue.wait(q).await;
                continue;
            }
            Err(e @ DaemonError::Corrupt(_)) => {
                slog::warn!(local.log, "outbox entry will never open; dropped"; "remote" => remote.url(), "error" => %e);
                continue;
            }
            Err(e) => {
                unreadable(&local, &remote, &e, &mut retry).await;
                continue;
            }
        };
        // The container this entry binds, when it is the next entry: the two go out together
        // (see the module doc) or are refused together. One that will never open goes when
        // it comes first; one that cannot be read now holds the binding back.
        let container = match binding_target(&entry.object) {
            None => None,
            Some(target) => match local.publish_queue.next_after(q, entry.seq) {
                Ok(next) => next.filter(|n| is_container(&n.object, target)),
                Err(DaemonError::Corrupt(_)) => None,
                Err(e) => {
                    unreadable(&local, &remote, &e, &mut retry).await;
                    continue;
                }
            },
        };
        let oversize_container = container
            .as_ref()
            .filter(|n| n.object.len() as u64 > max_object);
        let too_large = entry.object.len() as u64 > max_object;
        if too_large || oversize_container.is_some() {
            let size = oversize_container
                .as_ref()
                .map_or(entry.object.len(), |c| c.object.len());
            let message = format!(
                "an object of {size} bytes; this remote takes at most {max_object} (its \
                 max_frame less the request envelope)"
            );
            let unit: Vec<&Entry> = std::iter::once(&entry).chain(oversize_container).collect();
            refuse(
                &local,
                &apps,
                &remote,
                &entry,
                &unit,
                codes::TOO_LARGE,
                &message,
            );
            continue;
        }
        let unit: Vec<&Entry> = std::iter::once(&entry).chain(container.as_ref()).collect();
        let objects: Vec<&[u8]> = unit.iter().map(|e| e.object.as_slice()).collect();
        // Each answer within the client's request timeout, so that a binding acknowledged
        // before its container's answer is late is removed, not sent again.
        let results = client.publish_all(&objects).await;
        // The binding decides for the unit; the container's own answer counts only once its
        // binding is taken (when the binding is not, the container was refused unbound).
        for (i, (e, result)) in unit.iter().zip(results).enumerate() {
            match result {
                Ok(_) => {
                    retry.succeeded();
                    if let Err(err) = local.publish_queue.remove(q, e.seq) {
                        slog::warn!(local.log, "cannot remove an acknowledged outbox entry"; "error" => %err);
                    }
                }
                Err(ClientError::Server { code, message }) if is_rule_rejection(&code) => {
                    // A refused binding takes its container along: it would be refused unbound.
                    retry.succeeded();
                    refuse(&local, &apps, &remote, unit[0], &unit[i..], &code, &message);
                    break;
                }
                Err(err @ ClientError::Server { .. }) => {
                    if retry.failed() {
                        slog::warn!(local.log, "remote cannot take an object now; will retry"; "remote" => remote.url(), "error" => %err, "retry_in_ms" => retry.pause().as_millis());
                    }
                    retry.wait().await;
                    break;
                }
                Err(err) => {
                    slog::info!(local.log, "publish failed; connection presumed lost"; "remote" => remote.url(), "error" => %err);
                    client.close();
                    return;
                }
            }
        }
    }
}

/// An outbox entry that cannot be read now: a warning (see [`Backoff`]), then the pause.
async fn unreadable(local: &Local, remote: &RemoteHandle, e: &DaemonError, retry: &mut Backoff) {
    if retry.failed() {
        slog::warn!(local.log, "outbox entry cannot be read now; will retry";
            "remote" => remote.url(), "error" => %e, "retry_in_ms" => retry.pause().as_millis());
    }
    retry.wait().await;
}

/// `unit` (a binding and its container, its container alone, or one object) leaves this
/// remote's queue for good: a warning, and a `remote_refused` event to every app tracking the
/// object `about` (the unit's first entry: the binding) stands for.
fn refuse(
    local: &Local,
    apps: &AppRegistry,
    remote: &RemoteHandle,
    about: &Entry,
    unit: &[&Entry],
    code: &str,
    message: &str,
) {
    let q = remote.shared.queue;
    for e in unit {
        if let Err(err) = local.publish_queue.remove(q, e.seq) {
            slog::warn!(local.log, "cannot remove a refused outbox entry"; "error" => %err);
        }
    }
    remote.note_refusal(code, message);
    // Apps know the object by its binding, also when only its container was refused.
    let ghid = subject(&about.object);
    slog::warn!(local.log, "remote refused an object for good; not sent to it";
        "remote" => remote.url(), "code" => code, "error" => message,
        "objects" => unit.len(), "ghid" => ghid.map(|g| g.to_string()));
    let Some(ghid) = ghid else { return };
    for app in apps.trackers(&ghid) {
        // An app whose inbox closed reloads on reconnect; the refusal is logged above.
        let _ = apps.send(
            app,
            AppEvent::RemoteRefused {
                ghid,
                remote: remote.url().to_owned(),
                code: code.to_owned(),
                message: message.to_owned(),
            },
        );
    }
}
