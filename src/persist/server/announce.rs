//! # Announcing a connection's durable publishes
//!
//! A publish is announced once durable (or refused), in its connection's publish order:
//! its notifications go to the hub's subscribers, then its acknowledgement (or error) to the
//! publisher. The publishes one group commit made durable go out together: their
//! notifications in one [`Hub::fanout`] call (so a write-through subscriber gets them in
//! one `send`), then their replies, in order.
//!
//! Two places announce, never both for the same connection at once:
//! - the connection's **announcer**, a task on the fanout thread ([`Announcer`]), which
//!   waits for outcomes and durability, and holds a round under load (see [`MAX_HOLD`]);
//! - the **reader** itself ([`announce_ready`]), right after it applied publishes on its
//!   own thread, when the announcer has nothing in hand and the round is small
//!   ([`DIRECT_TARGETS`]). Why: waking the fanout thread costs more than a small round,
//!   and on a core the woken thread shares with its waker it takes the core at once: in
//!   the traces of issue 17 (BENCHMARKS.md, "Session 20") the notification left 100–230 µs
//!   after the flush that made it durable, most of it two wake-ups of the fanout thread.
//!
//! Owns: the announcer task and its handle. Calls: [`Hub`], the cluster link, the
//! connection's [`SendQueue`], [`Pending`] outcomes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slog::{debug, warn};
use tokio::sync::mpsc;

use super::pipeline::{self, Pending};
use super::Shared;
use crate::persist::hub::{self, Hub, SendQueue};
use crate::persist::wire::{self, PublishAck};
use crate::persist::{wsframe, Notification, PersistError, Published};

/// Longest an announcement waits for the publishes behind it to become durable too (see
/// [`Announcer`]): bounds what the batching adds to a publish's latency under load.
pub const MAX_HOLD: Duration = Duration::from_millis(2);
/// The resolution of tokio's timer: a shorter hold is none.
const TIMER_TICK: Duration = Duration::from_millis(1);
/// Most subscribers the reader writes to itself ([`announce_ready`]); a bigger round goes
/// to the fanout thread, so a reader never spends more than a few sends' time on one.
pub const DIRECT_TARGETS: usize = 16;

/// The connection whose publishes are announced: what announcing needs of it.
pub(super) struct Publisher {
    pub(super) shared: Arc<Shared>,
    pub(super) outbox: Arc<SendQueue>,
    pub(super) me: hub::ConnId,
    pub(super) log: slog::Logger,
}

/// The handle of a connection's announcer task (started at its first publish, on the
/// fanout thread).
///
/// The task announces each batch of [`Pending`] publishes it is handed once durable. Under
/// load it also holds a round for the publishes right behind it: when the next one is
/// already in the pipeline but not yet durable, the round waits for it, at most
/// [`MAX_HOLD`] and at most as long as the last round took (a round that reached no
/// subscriber, or took under a millisecond, the timer's resolution, holds nothing), then
/// takes whatever became durable meanwhile. A subscriber's `send` costs several times more
/// than the frame it carries (BENCHMARKS.md, issue 17), so k updates in one round cost each
/// subscriber about one send instead of k; a lone publish (nothing behind it) is never held.
pub(super) struct Announcer {
    tx: mpsc::UnboundedSender<Vec<Pending>>,
    /// Publishes handed to the task and not answered yet.
    in_hand: Arc<AtomicUsize>,
}

impl Announcer {
    pub(super) fn start(conn: Arc<Publisher>) -> Announcer {
        let (tx, rx) = mpsc::unbounded_channel();
        let in_hand = Arc::new(AtomicUsize::new(0));
        // On the fanout thread; if it is gone (stopping), `hand` fails and the publishes
        // are answered `unavailable`.
        let fanout = conn.shared.fanout.clone();
        fanout.spawn(run(conn, rx, in_hand.clone()));
        Announcer { tx, in_hand }
    }

    /// Whether every publish handed over has been answered: then nothing the task does can
    /// come after what the caller announces now.
    pub(super) fn is_idle(&self) -> bool {
        self.in_hand.load(Ordering::Acquire) == 0
    }

    /// Hands over publishes, in order, in one message (one wake-up of the fanout thread).
    /// Gives them back if the task is gone.
    pub(super) fn hand(&self, batch: Vec<Pending>) -> Result<(), Vec<Pending>> {
        let n = batch.len();
        self.in_hand.fetch_add(n, Ordering::AcqRel);
        self.tx.send(batch).map_err(|mpsc::error::SendError(b)| {
            self.in_hand.fetch_sub(n, Ordering::AcqRel);
            b
        })
    }
}

async fn run(
    conn: Arc<Publisher>,
    mut rx: mpsc::UnboundedReceiver<Vec<Pending>>,
    in_hand: Arc<AtomicUsize>,
) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut notes = Vec::new();
    let mut last_round = Duration::ZERO;
    loop {
        let Some(mut first) = queue.pop_front() else {
            match rx.recv().await {
                Some(b) => queue.extend(b),
                None => return,
            }
            continue;
        };
        let outcome = poll_fn(|cx| first.poll_outcome(cx)).await;
        let mut batch = vec![(first, outcome)];
        // tokio's timer rounds a deadline up to its next millisecond: a hold shorter than
        // that would wait about a millisecond anyway, so it is no hold at all.
        let hold = Some(last_round.min(MAX_HOLD)).filter(|h| *h >= TIMER_TICK);
        let hold_until = hold.map(|h| tokio::time::Instant::now() + h);
        loop {
            // Whatever is durable already joins this announcement.
            while let Ok(b) = rx.try_recv() {
                queue.extend(b);
            }
            take_ready(&mut queue, &mut batch);
            // The first that is not: wait for it while the hold lasts, else it starts the
            // next announcement.
            let (Some(until), Some(next)) = (hold_until, queue.front_mut()) else {
                break;
            };
            let waited = poll_fn(|cx| next.poll_outcome(cx));
            let Ok(r) = tokio::time::timeout_at(until, waited).await else {
                break;
            };
            if let Some(d) = queue.pop_front() {
                batch.push((d, r));
            }
        }
        let n = batch.len();
        last_round = answer(&conn, batch, &mut notes);
        in_hand.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Moves the publishes at the front of `queue` whose outcome is known into `batch`.
fn take_ready(
    queue: &mut VecDeque<Pending>,
    batch: &mut Vec<(Pending, Result<Published, PersistError>)>,
) {
    while let Some(r) = queue.front_mut().and_then(Pending::try_outcome) {
        if let Some(d) = queue.pop_front() {
            batch.push((d, r));
        }
    }
}

/// Announces on this thread the publishes at the front of `unsent` that are durable (or
/// refused) already, if the round reaches at most [`DIRECT_TARGETS`] subscribers; the
/// caller has made sure the announcer has nothing in hand ([`Announcer::is_idle`]).
/// What is not announced here stays in `unsent`, in order.
pub(super) fn announce_ready(conn: &Publisher, unsent: &mut Vec<Pending>) {
    let ready = unsent
        .iter_mut()
        .position(|p| !p.is_ready())
        .unwrap_or(unsent.len());
    if ready == 0 {
        return;
    }
    let notes: Vec<Notification> = unsent[..ready]
        .iter()
        .flat_map(|p| p.notifications().iter().cloned())
        .collect();
    let hub: &Hub = &conn.shared.hub;
    if !notes.is_empty()
        && hub
            .fanout_within(&notes, Some(conn.me), DIRECT_TARGETS)
            .is_none()
    {
        return;
    }
    if let Some(c) = &conn.shared.cluster {
        c.announce(&notes);
    }
    // Exactly the ones fanned out (more may have become ready meanwhile).
    let batch = unsent
        .drain(..ready)
        .map(|mut p| {
            let r = p
                .try_outcome()
                .unwrap_or_else(|| Err(pipeline::announced_twice()));
            (p, r)
        })
        .collect();
    reply(conn, batch);
}

/// Announces a batch whose outcomes are known: the notifications of the publishes that
/// succeeded (one hub call), then every reply, in order. Returns how long the round took
/// if it reached any subscriber.
fn answer(
    conn: &Publisher,
    batch: Vec<(Pending, Result<Published, PersistError>)>,
    notes: &mut Vec<Notification>,
) -> Duration {
    notes.clear();
    for (_, r) in &batch {
        if let Ok(p) = r {
            notes.extend(p.notifications.iter().cloned());
        }
    }
    let mut round = Duration::ZERO;
    if !notes.is_empty() {
        let started = Instant::now();
        if conn.shared.hub.fanout(notes, Some(conn.me)) > 0 {
            round = started.elapsed();
        }
        if let Some(c) = &conn.shared.cluster {
            c.announce(notes);
        }
    }
    reply(conn, batch);
    round
}

/// Each publish's acknowledgement or error, in order.
fn reply(conn: &Publisher, batch: Vec<(Pending, Result<Published, PersistError>)>) {
    for (d, r) in batch {
        let frame = match r {
            Ok(p) => {
                let ack = PublishAck {
                    ghid: p.ghid,
                    kind: p.kind.as_str().to_owned(),
                    new: p.new,
                };
                wire::encode_ok(&d.id, ack)
            }
            Err(e) => {
                if matches!(e, PersistError::Storage(_) | PersistError::Unavailable(_)) {
                    warn!(conn.log, "publish not stored"; "error" => %e);
                } else {
                    debug!(conn.log, "publish refused"; "code" => e.code(), "error" => %e);
                }
                wire::encode_err(&d.id, e.code(), e.to_string())
            }
        };
        conn.outbox.push_reply(wsframe::binary(&frame));
    }
}
