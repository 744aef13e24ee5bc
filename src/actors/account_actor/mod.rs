//! `AccountActor`: the one owner of the [`Account`] while the daemon runs (an actix actor on
//! one of the daemon's arbiters). Here: its messages, its flush schedule and the handlers of
//! the object bookkeeping; [`AccountHandle`] (`handle.rs`): how the others reach it;
//! `app_state.rs`: the handlers of what apps keep in the account; `ledger.rs`: the
//! bookkeeping between flushes, the flush and the refresh.
//!
//! Owns: the account (identity, root frame, [`super::account::AccountState`]) and its flush
//! schedule. Objects report new secrets, holds and forgotten objects; the actor folds them
//! into the state and flushes the root object (new frame + container: ingested locally,
//! durably, and queued for every remote) **at most every [`FLUSH_INTERVAL`]** (every
//! [`LAG_FLUSH_INTERVAL`] when only known objects' secrets moved on), but **at once**
//! when an object is new to the account or its account-recorded secret would fall
//! [`MAX_LAG`] or more frames behind. Another machine of the user, which only sees the
//! flushed state, ratchets forward along a frame's target vector: our frames reach back to
//! the flushed secret's container (`FlushedCounters`, `account_lag.rs`, read by
//! `commit::legroom`), so a stream of pushes costs an account flush (two signatures) per
//! [`LAG_FLUSH_INTERVAL`] (or per [`MAX_LAG`] frames), not one every few frames. While
//! flushes fail, the actor's own next one (urgent or not) waits 1 s, doubling up to
//! [`FLUSH_RETRY_MAX`], back to 1 s after a success; the failure is a `warning` at once and
//! then at most once a minute ([`super::backoff`]). A flush an app asks for still runs at
//! once (its caller gets the error).
//!
//! Another machine of the user flushes the same root object. Before a flush, and when no
//! known secret opens an object (then at most every [`REFRESH_INTERVAL`]), the actor
//! **refreshes**: it fetches the newest root frame from the remotes and, if
//! it is newer than ours, adopts it as the base of our next flush, carrying over our
//! unflushed secret, api-id and hold changes, and its app registrations and shares (tokens,
//! startup and private objects, pending and orphan shares: see `merge_app_state`; received
//! shares not adopted yet: see `received.rs`, whose bounds hold after the merge).
//!
//! What other users can make the account keep is bounded: a share accepted from another
//! user is recorded as received from its sharer until one of our apps adopts the object
//! ([`Adopt`], [`AdoptLoaded`]); at most [`ShareLimits`] of them (per sharer, in all) are
//! kept, for at most [`MAX_UNADOPTED_AGE`]; one past that age, evicted at the bound in all,
//! or whose orphan entry is dropped is forgotten whole (secret, api id, subscriptions).
//!
//! Messages (typed, one `Handler` each): from objects and commits [`RecordSecret`],
//! [`RecordHold`], [`MakePublic`], [`CopyPrivate`], [`Lookup`], [`Refresh`]; from the GC
//! [`Forget`]; from `dispatch` (app tokens, startup and private objects, orphan shares)
//! [`NewToken`], [`DropToken`], [`TokenStartup`], [`SetStartup`], [`ClearStartup`], [`SetPrivate`],
//! [`PrivateTo`], [`TakeOrphans`], [`KeepOrphan`], [`Flush`]; from sharing [`AddPending`],
//! [`TakePending`], [`DropPending`], [`AdmitShare`]; from `DaemonHandle`, `dispatch` and
//! sharing [`Adopt`]; from `DaemonHandle` [`AdoptLoaded`] and [`Stop`] (final flush).
//!
//! How it runs: the bookkeeping is a `Ledger`; a flush or refresh moves it into a future on
//! the daemon's runtime (signing on the blocking pool, the commit) while `ctx.wait` holds the
//! mailbox, and back. An urgent flush is queued with `ctx.notify`, so the messages already in
//! the mailbox are folded in first and a burst costs one flush; an ordinary one with
//! `run_later`.
//!
//! Peers: none. It holds the [`Local`] state (the vault: a forgotten share's secret, removed
//! while the mailbox waits, so what comes after sees it gone, and put back with its
//! "followed" flag if an app loaded it meanwhile), the [`Upstream`] remotes (its
//! unsubscription, or following again) and the object registry weakly, as a [`Liveness`] (a live object is
//! never forgotten as unadopted), and answers
//! whoever holds an [`AccountHandle`] (objects, `commit`, `dispatch`, the share and GC actors,
//! `DaemonHandle`).
//!
//! Calls: `Account::flush`/`open`, [`super::durable::commit`], [`Upstream`] fetches.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::account::{Account, AppTokenBytes, OrphanShare, PendingShare, StoredSecret};
use super::api::AppToken;
use super::backoff::Backoff;
use super::error::DaemonError;
use super::gc::Liveness;
use super::local::Local;
use super::upstream::Upstream;
use crate::golix::{Ghid, Secret};

mod app_state;
#[cfg(test)]
mod forget_tests;
mod handle;
mod ledger;
mod received;

pub use handle::AccountHandle;

/// Shortest time between two ordinary flushes.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Shortest time between two flushes when all that changed is how far objects the account
/// knows have moved on (their frames reach back to the flushed secret, so nothing waits for
/// it; paced pushes then cost an account flush per second, not one every few frames).
pub const LAG_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Flush at once when an object's flushed secret would be this many frames behind (its
/// frames' target vectors then reach this far back, ~65 bytes an entry).
pub const MAX_LAG: u64 = 64;
/// Shortest time between two refreshes from the remotes.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// After a failed flush the next one waits [`LAG_FLUSH_INTERVAL`], doubling while they keep
/// failing up to this (each costs two signatures, and some causes last: a root grown past a
/// remote's limit).
pub const FLUSH_RETRY_MAX: Duration = Duration::from_secs(60);

/// The newest secret of `ghid` (frame `counter`); `api_id` for objects new to us.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordSecret {
    pub ghid: Ghid,
    pub stored: StoredSecret,
    pub counter: u64,
    pub api_id: Option<Ghid>,
    /// The sharer, for a share accepted from another user ([`AdmitShare`] first): the object
    /// is recorded as received and not adopted yet, unless it is ours already.
    pub received_from: Option<Ghid>,
}

/// The user holds `ghid`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordHold(pub Ghid);

/// Drops an object (deleted) from the account.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub Ghid);

/// The secrets the account records for a ghid (none or one).
#[derive(Message)]
#[rtype(result = "Vec<StoredSecret>")]
pub struct Lookup(pub Ghid);

/// A new app token, registered in the account (`limit` past [`MAX_TOKENS`]).
#[derive(Message)]
#[rtype(result = "Result<AppToken, DaemonError>")]
pub struct NewToken;

/// Drops a token [`NewToken`] minted whose flush failed (its app never got it: the retry
/// mints another), so failures do not grow the account.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropToken(pub AppTokenBytes);

/// Most app tokens the account keeps: each is in the account root, which every flush
/// signs and every remote stores, and apps can ask for new ones at will.
pub const MAX_TOKENS: usize = 4096;

/// `None` for an unknown token, else its startup object.
#[derive(Message)]
#[rtype(result = "Option<Option<Ghid>>")]
pub struct TokenStartup(pub AppTokenBytes);

/// Sets a token's startup object (`already_set` if it has another one; the same one again is
/// ok: the retry of a set whose flush failed).
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct SetStartup {
    pub token: AppTokenBytes,
    pub ghid: Ghid,
}

/// Clears a token's startup object (`not_found` if it has none, unless this daemon cleared it
/// and it was not set since: a retry).
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct ClearStartup(pub AppTokenBytes);

/// `ghid` is private to `token`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetPrivate {
    pub ghid: Ghid,
    pub token: AppTokenBytes,
}

/// The token `ghid` is private to, if any.
#[derive(Message)]
#[rtype(result = "Option<AppToken>")]
pub struct PrivateTo(pub Ghid);

/// `ghid` is public now: no token owns it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MakePublic(pub Ghid);

/// `to` (a snapshot of `from`) is private to the same token as `from`, if `from` is private.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CopyPrivate {
    pub from: Ghid,
    pub to: Ghid,
}

/// Takes the kept shares of an api id out of the account.
#[derive(Message)]
#[rtype(result = "Vec<OrphanShare>")]
pub struct TakeOrphans(pub Ghid);

/// Orphan shares the account keeps at once. Anyone who knows the user's fingerprint can
/// share objects with them, and the account root (which every remote must take whole)
/// carries the list: past it the oldest is no longer offered (a warning names it).
pub const MAX_ORPHAN_SHARES: usize = 256;

/// Keeps a share no session handles (once; at most [`MAX_ORPHAN_SHARES`]). A share
/// dropped past the bound whose object no app adopted is forgotten whole: its secret, its
/// api id, and the daemon stops following the object.
#[derive(Message)]
#[rtype(result = "()")]
pub struct KeepOrphan(pub OrphanShare);

/// Shares received from one sharer and not adopted yet (see
/// `AccountState::received_shares`) that the account keeps at once. Anyone who knows the
/// user's fingerprint can share with them under throw-away identities, and each accepted
/// share keeps a secret in the account root and a subscription on every remote.
pub const MAX_UNADOPTED_PER_SHARER: usize = 64;
/// The same, from all sharers together. Reached, a share from a sharer holding fewer than
/// the heaviest sharer evicts that sharer's newest entry (see `received::admission`).
pub const MAX_UNADOPTED_SHARES: usize = 1024;
/// How long a share received and not adopted is kept: past it, it is forgotten whole (as a
/// dropped orphan), so shares no app ever adopts do not hold the bounds forever.
pub const MAX_UNADOPTED_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the account looks for received shares past [`MAX_UNADOPTED_AGE`] (also at
/// each [`AdmitShare`]).
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// Bounds on the shares received and not adopted yet; a share past either is refused
/// (naked with `share::STATUS_LIMIT`) before its secret is recorded, except that a sharer
/// holding fewer than the heaviest sharer evicts one of that sharer's at the bound in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareLimits {
    pub per_sharer: usize,
    pub total: usize,
}

impl Default for ShareLimits {
    fn default() -> Self {
        ShareLimits {
            per_sharer: MAX_UNADOPTED_PER_SHARER,
            total: MAX_UNADOPTED_SHARES,
        }
    }
}

/// May `sharer`'s share of `ghid` be accepted? First forgets the received shares past
/// [`MAX_UNADOPTED_AGE`], and, past the bound in all, the entry a lighter sharer's share
/// evicts (see `received::admission`); answered once their vault records are gone. The
/// share itself is recorded with its secret ([`RecordSecret::received_from`]).
#[derive(Message)]
#[rtype(result = "Result<Admission, DaemonError>")]
pub struct AdmitShare {
    pub ghid: Ghid,
    pub sharer: Ghid,
}

/// The answer to [`AdmitShare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The object is ours already (adopted, or our own): no bound applies.
    Ours,
    /// Received already and not adopted yet: counted once.
    Again,
    /// New, and within the bounds (or past the one in all, and another sharer's entry was
    /// evicted for it).
    Allowed,
    /// New, past the bound on one sharer's shares.
    PastPerSharer,
    /// New, past the bound on all shares.
    PastTotal,
}

/// An app of ours acts on `ghid` (loads it, holds it, shares it on, makes it a startup
/// object): if it was a received share, it is ours now and no longer counted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt(pub Ghid);

/// An app of ours loaded `ghid` with this secret: adopted (as [`Adopt`], told again after
/// the load, which closes the race with a share recorded meanwhile), and if the account
/// forgot it while the load ran, recorded again as ours: in the account, and here its
/// secret and its following (the forget removed them from the vault).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptLoaded {
    pub ghid: Ghid,
    pub stored: StoredSecret,
    pub counter: u64,
    pub api_id: Option<Ghid>,
}

/// An outgoing share awaiting its answer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddPending(pub PendingShare);

/// Takes the pending share of `request` sent to `recipient` out of the account.
#[derive(Message)]
#[rtype(result = "Option<PendingShare>")]
pub struct TakePending {
    pub request: Ghid,
    pub recipient: Ghid,
}

/// Drops the pending share of a request (it was not sent).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropPending(pub Ghid);

/// Fetch the newest root object from the remotes (rate-limited).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh;

/// Flush now if anything changed.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct Flush;

/// Final flush, then stop.
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct Stop;

/// An urgent or due flush (sent to itself).
#[derive(Message)]
#[rtype(result = "()")]
struct FlushDue;

/// The account and what its flush schedule needs.
struct Ledger {
    account: Option<Account>,
    /// Opens newer root frames written by another machine.
    root_secret: Secret,
    /// Frame counter of each object's secret in the last flushed state (0 when unknown).
    flushed: HashMap<Ghid, u64>,
    /// The same, for the push pipeline, only where known for certain.
    shared: crate::actors::account_lag::FlushedCounters,
    /// Frame counter of each object's newest secret.
    latest: HashMap<Ghid, u64>,
    last_flush: Option<Instant>,
    last_refresh: Option<Instant>,
    /// A flush is needed before anything else waits.
    urgent: bool,
    /// Bounds on the shares received and not adopted yet.
    limits: ShareLimits,
    /// An ordinary flush is due at this time.
    due: Option<Instant>,
    /// While flushes fail: the pause before the next one (1 s doubling up to
    /// [`FLUSH_RETRY_MAX`]) and the warnings' spacing.
    retry: Backoff,
    /// While flushes fail: no flush of our own (urgent or not) before this time.
    retry_at: Option<Instant>,
    /// Tokens whose startup object this daemon cleared (and what it was), until the token's
    /// next `set_startup`: clearing one again is a retry, ok (see `Ledger::clear_startup`),
    /// and another machine's root still carrying that object does not bring it back (see
    /// `merge_app_state`). At most one entry per token.
    cleared_startup: HashMap<AppTokenBytes, Ghid>,
    /// Received shares adopted since the last flush: a merge keeps their secrets and api
    /// ids though the other machine forgot them meanwhile (see `Ledger::carry_over`). At
    /// most the received shares of one flush interval.
    adopted_unflushed: HashSet<Ghid>,
    log: slog::Logger,
}

/// What the account's flushes and refreshes reach: the local state (commits) and the
/// remotes (newer root frames), and the object registry, held weakly and only asked
/// whether an object is live (a live object is never forgotten as unadopted). No other
/// actor.
#[derive(Clone)]
struct Base {
    local: Arc<Local>,
    upstream: Upstream,
    objects: Weak<dyn Liveness>,
}

impl Base {
    /// Whether `ghid` may have a live object actor (a registry gone proves nothing: live).
    fn is_live(&self, ghid: &Ghid) -> bool {
        self.objects.upgrade().map_or(true, |o| o.is_live(ghid))
    }
}

/// Work on the ledger off the actor's thread; it comes back with the ledger.
type LedgerWork<T> = Pin<Box<dyn Future<Output = (Ledger, T)> + Send>>;

pub struct AccountActor {
    /// `None` only while a flush or refresh has it (the mailbox waits meanwhile), or after
    /// such work failed outright (then every request is answered `shutting_down`).
    ledger: Option<Ledger>,
    base: Base,
    /// A `FlushDue` is queued.
    flush_queued: bool,
    /// A `run_later` flush is armed, for this time.
    timer: Option<(SpawnHandle, Instant)>,
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.arm(ctx);
        self.expire(ctx);
        ctx.run_interval(EXPIRY_INTERVAL, |act, ctx| act.expire(ctx));
    }
}

impl AccountActor {
    /// Runs `work` with the ledger on the daemon's runtime, the mailbox held until it ends,
    /// then `then` with its result.
    fn run_alone<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        work: impl FnOnce(Ledger, Base) -> LedgerWork<T>,
        then: impl FnOnce(Result<T, DaemonError>, &mut Self, &mut Context<Self>) + 'static,
    ) {
        let Some(ledger) = self.ledger.take() else {
            then(Err(DaemonError::ShuttingDown), self, ctx);
            return;
        };
        let rt = self.base.local.runtime.clone();
        let task = rt.spawn(work(ledger, self.base.clone()));
        ctx.wait(task.into_actor(self).map(move |res, act, ctx| match res {
            Ok((ledger, v)) => {
                act.ledger = Some(ledger);
                then(Ok(v), act, ctx);
                act.arm(ctx);
            }
            Err(e) => {
                slog::error!(act.base.local.log, "account task failed: the account is gone";
                    "error" => %e);
                then(
                    Err(DaemonError::Account(format!("account task failed: {e}"))),
                    act,
                    ctx,
                );
            }
        }));
    }

    /// Flushes (if dirty) under `ctx.wait`, then `then`.
    fn flush(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(Result<(), DaemonError>, &mut Self, &mut Context<Self>) + 'static,
    ) {
        self.run_alone(
            ctx,
            |mut ledger, base| {
                Box::pin(async move {
                    let r = ledger.flush(&base).await;
                    (ledger, r)
                })
            },
            move |r, act, ctx| then(r.and_then(|r| r), act, ctx),
        );
    }

    /// Queues the flush the ledger asks for: an urgent one behind what is already in the
    /// mailbox, an ordinary one when it is due.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(ledger) = &self.ledger else {
            return;
        };
        if ledger.urgent_now() {
            if !self.flush_queued {
                self.flush_queued = true;
                ctx.notify(FlushDue);
            }
            return;
        }
        let Some(due) = ledger.due else { return };
        if let Some((handle, at)) = self.timer {
            if at <= due {
                return;
            }
            // Something more pressing moved the flush forward.
            ctx.cancel_future(handle);
        }
        let wait = due.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            match act.ledger.as_ref().and_then(|l| l.due) {
                Some(due) if due <= Instant::now() => act.flush(ctx, |_, _, _| {}),
                _ => act.arm(ctx),
            }
        });
        self.timer = Some((handle, due));
    }

    /// Runs `f` on the ledger and arms what flush it needs.
    fn with<R>(&mut self, ctx: &mut Context<Self>, f: impl FnOnce(&mut Ledger) -> R) -> Option<R> {
        let r = self.ledger.as_mut().map(f);
        self.arm(ctx);
        r
    }
}

impl Handler<FlushDue> for AccountActor {
    type Result = ();

    fn handle(&mut self, _: FlushDue, ctx: &mut Context<Self>) {
        self.flush_queued = false;
        // A failure is logged by the ledger (spaced: see `Ledger::committed`).
        self.flush(ctx, |_, _, _| {});
    }
}

impl Handler<Flush> for AccountActor {
    type Result = ResponseFuture<Result<(), DaemonError>>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flush(ctx, move |r, _, _| {
            let _ = tx.send(r);
        });
        Box::pin(async move { rx.await.unwrap_or(Err(DaemonError::ShuttingDown)) })
    }
}

impl Handler<Stop> for AccountActor {
    type Result = ResponseFuture<Result<(), DaemonError>>;

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flush(ctx, move |r, _, ctx| {
            let _ = tx.send(r);
            ctx.stop();
        });
        Box::pin(async move { rx.await.unwrap_or(Err(DaemonError::ShuttingDown)) })
    }
}

impl Handler<Refresh> for AccountActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Refresh, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.run_alone(
            ctx,
            |mut ledger, base| {
                Box::pin(async move {
                    if let Err(e) = ledger.refresh(&base, true).await {
                        slog::info!(ledger.log, "account refresh failed"; "error" => %e);
                    }
                    (ledger, ())
                })
            },
            move |_, _, _| {
                let _ = tx.send(());
            },
        );
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<RecordSecret> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: RecordSecret, ctx: &mut Context<Self>) {
        // A share an app loaded while its secret was being recorded is that app's.
        let received_from = m.received_from.filter(|_| !self.base.is_live(&m.ghid));
        self.with(ctx, |l| {
            l.record_secret(m.ghid, m.stored, m.counter, m.api_id, received_from)
        });
    }
}

impl Handler<RecordHold> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: RecordHold, ctx: &mut Context<Self>) {
        self.with(ctx, |l| {
            if !l.state().is_some_and(|st| st.holds.contains(&m.0)) {
                l.edit(|st| st.holds.insert(m.0));
            }
        });
    }
}

impl Handler<Forget> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: Forget, ctx: &mut Context<Self>) {
        self.with(ctx, |l| l.forget(m.0));
    }
}

impl Handler<Lookup> for AccountActor {
    type Result = MessageResult<Lookup>;

    fn handle(&mut self, m: Lookup, _: &mut Context<Self>) -> Self::Result {
        let found = self
            .ledger
            .as_ref()
            .and_then(|l| l.account.as_ref())
            .and_then(|a| a.state().secrets.get(&m.0).cloned());
        MessageResult(found.into_iter().collect())
    }
}
