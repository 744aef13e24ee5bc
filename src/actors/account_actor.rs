//! `AccountActor`: the one owner of the [`Account`] while the daemon runs (an actix actor on
//! one of the daemon's arbiters).
//!
//! Owns: the account (identity, root frame, [`super::account::AccountState`]) and its flush
//! schedule. Objects report new secrets, holds and forgotten objects; the actor folds them
//! into the state and flushes the root object (new frame + container: ingested locally,
//! durably, and queued for every remote) **at most every [`FLUSH_INTERVAL`]**, but **at once**
//! when an object is new to the account or its account-recorded secret would fall
//! [`MAX_LAG`] or more frames behind. Another machine of the user, which only sees the
//! flushed state, ratchets forward along a frame's target vector: our frames reach back to
//! the flushed secret's container ([`FlushedCounters`], read by `commit::legroom`), so a
//! stream of pushes costs an account flush (two signatures) per [`FLUSH_INTERVAL`], not one
//! every few frames.
//!
//! Another machine of the user flushes the same root object. Before a flush, and when no
//! known secret opens an object (then at most every [`REFRESH_INTERVAL`]), the actor
//! **refreshes**: it fetches the newest root frame from the remotes and, if
//! it is newer than ours, adopts it as the base of our next flush, carrying over our
//! unflushed secret, api-id and hold changes, and its app registrations and shares (tokens,
//! startup and private objects, pending and orphan shares: see `merge_app_state`).
//!
//! Messages (typed, one `Handler` each): from objects and commits [`RecordSecret`],
//! [`RecordHold`], [`MakePublic`], [`CopyPrivate`], [`Lookup`], [`Refresh`]; from the GC
//! [`Forget`]; from `dispatch` (app tokens, startup and private objects, orphan shares)
//! [`NewToken`], [`TokenStartup`], [`SetStartup`], [`ClearStartup`], [`SetPrivate`],
//! [`PrivateTo`], [`TakeOrphans`], [`KeepOrphan`], [`Flush`]; from sharing [`AddPending`],
//! [`TakePending`], [`DropPending`]; from `DaemonHandle` [`Stop`] (final flush).
//!
//! How it runs: the bookkeeping is a [`Ledger`]; a flush or refresh moves it into a future on
//! the daemon's runtime (signing on the blocking pool, the commit) while `ctx.wait` holds the
//! mailbox, and back. An urgent flush is queued with `ctx.notify`, so the messages already in
//! the mailbox are folded in first and a burst costs one flush; an ordinary one with
//! `run_later`. The actor holds the core weakly (the core holds its address).
//!
//! Calls: `Account::flush`/`open`, `DaemonCore::commit_local` and its fetches.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use tokio::time::Instant;

use super::account::{
    Account, AccountState, AppTokenBytes, OrphanShare, PendingShare, StoredSecret,
};
use super::account_lag::FlushedCounters;
use super::api::{AppToken, NO_TOKEN};
use super::arbiters::ActorThreads;
use super::daemon_core::DaemonCore;
use super::error::DaemonError;
use crate::golix::{Ghid, Object, Policy, Secret};

/// Shortest time between two ordinary flushes.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Flush at once when an object's flushed secret would be this many frames behind (its
/// frames' target vectors then reach this far back, ~65 bytes an entry).
pub const MAX_LAG: u64 = 64;
/// Shortest time between two refreshes from the remotes.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The newest secret of `ghid` (frame `counter`); `api_id` for objects new to us.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordSecret {
    pub ghid: Ghid,
    pub stored: StoredSecret,
    pub counter: u64,
    pub api_id: Option<Ghid>,
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

/// A new app token, registered in the account.
#[derive(Message)]
#[rtype(result = "Option<AppToken>")]
pub struct NewToken;

/// `None` for an unknown token, else its startup object.
#[derive(Message)]
#[rtype(result = "Option<Option<Ghid>>")]
pub struct TokenStartup(pub AppTokenBytes);

/// Sets a token's startup object (`already_set` if it has one).
#[derive(Message)]
#[rtype(result = "Result<(), DaemonError>")]
pub struct SetStartup {
    pub token: AppTokenBytes,
    pub ghid: Ghid,
}

/// Clears a token's startup object (`not_found` if it has none).
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

/// Keeps a share no session handles (once).
#[derive(Message)]
#[rtype(result = "()")]
pub struct KeepOrphan(pub OrphanShare);

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

/// Talks to the `AccountActor`. Cheap to clone.
#[derive(Clone)]
pub struct AccountHandle {
    addr: Addr<AccountActor>,
    flushed: FlushedCounters,
}

impl AccountHandle {
    /// Starts the `AccountActor` on one of `threads`; `core` is the core being built.
    pub fn start(
        threads: &ActorThreads,
        account: Account,
        root_secret: Secret,
        core: Weak<DaemonCore>,
        log: slog::Logger,
    ) -> AccountHandle {
        // An account opened dirty (it continues after a root frame whose container a crash
        // lost) flushes at once, so the stores get a whole root above that frame.
        let due = account.is_dirty().then(Instant::now);
        let shared = FlushedCounters::default();
        let ledger = Ledger {
            shared: shared.clone(),
            flushed: account.state().secrets.keys().map(|g| (*g, 0)).collect(),
            latest: HashMap::new(),
            account: Some(account),
            root_secret,
            last_flush: None,
            last_refresh: None,
            urgent: false,
            due,
            log,
        };
        let addr = AccountActor::start_in_arbiter(&threads.next(), move |_| AccountActor {
            ledger: Some(ledger),
            core,
            flush_queued: false,
            timer: false,
        });
        AccountHandle {
            addr,
            flushed: shared,
        }
    }

    /// The frame counter of `ghid`'s secret in the last flushed account state, if known.
    pub fn flushed_counter(&self, ghid: &Ghid) -> Option<u64> {
        self.flushed.get(ghid)
    }

    /// Asks and awaits the reply; `shutting_down` once the actor is gone.
    pub async fn ask<M>(&self, msg: M) -> Result<M::Result, DaemonError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        AccountActor: Handler<M>,
    {
        self.addr
            .send(msg)
            .await
            .map_err(|_| DaemonError::ShuttingDown)
    }

    /// Queues a message without waiting: handled after every message sent before it.
    pub fn tell<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        AccountActor: Handler<M>,
    {
        self.addr.do_send(msg);
    }

    /// Records the newest secret of an object (a new object too, with its api id).
    pub fn record_secret(
        &self,
        ghid: Ghid,
        stored: StoredSecret,
        counter: u64,
        api_id: Option<Ghid>,
    ) {
        self.tell(RecordSecret {
            ghid,
            stored,
            counter,
            api_id,
        });
    }

    pub fn record_hold(&self, ghid: Ghid) {
        self.tell(RecordHold(ghid));
    }

    /// Drops an object (deleted) from the account.
    pub fn forget(&self, ghid: Ghid) {
        self.tell(Forget(ghid));
    }

    /// The secrets the account records for `ghid`.
    pub async fn lookup(&self, ghid: Ghid) -> Vec<StoredSecret> {
        self.ask(Lookup(ghid)).await.unwrap_or_default()
    }

    /// Picks up what another machine of the user flushed (at most every
    /// [`REFRESH_INTERVAL`]).
    pub async fn refresh(&self) {
        let _ = self.ask(Refresh).await;
    }

    /// Flushes now if anything changed.
    pub async fn flush(&self) -> Result<(), DaemonError> {
        self.ask(Flush).await?
    }

    /// Final flush; the actor stops.
    pub async fn stop(&self) -> Result<(), DaemonError> {
        self.ask(Stop).await?
    }
}

/// The account and what its flush schedule needs.
struct Ledger {
    account: Option<Account>,
    /// Opens newer root frames written by another machine.
    root_secret: Secret,
    /// Frame counter of each object's secret in the last flushed state (0 when unknown).
    flushed: HashMap<Ghid, u64>,
    /// The same, for the push pipeline, only where known for certain.
    shared: FlushedCounters,
    /// Frame counter of each object's newest secret.
    latest: HashMap<Ghid, u64>,
    last_flush: Option<Instant>,
    last_refresh: Option<Instant>,
    /// A flush is needed before anything else waits.
    urgent: bool,
    /// An ordinary flush is due at this time.
    due: Option<Instant>,
    log: slog::Logger,
}

/// Work on the ledger off the actor's thread; it comes back with the ledger.
type LedgerWork<T> = Pin<Box<dyn Future<Output = (Ledger, T)> + Send>>;

pub struct AccountActor {
    /// `None` only while a flush or refresh has it (the mailbox waits meanwhile), or after
    /// such work failed outright (then every request is answered `shutting_down`).
    ledger: Option<Ledger>,
    core: Weak<DaemonCore>,
    /// A `FlushDue` is queued.
    flush_queued: bool,
    /// A `run_later` flush is armed.
    timer: bool,
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.arm(ctx);
    }
}

impl AccountActor {
    /// Runs `work` with the ledger on the daemon's runtime, the mailbox held until it ends,
    /// then `then` with its result.
    fn run_alone<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        work: impl FnOnce(Ledger, Arc<DaemonCore>) -> LedgerWork<T>,
        then: impl FnOnce(Result<T, DaemonError>, &mut Self, &mut Context<Self>) + 'static,
    ) {
        let (Some(ledger), Some(core)) = (self.ledger.take(), self.core.upgrade()) else {
            then(Err(DaemonError::ShuttingDown), self, ctx);
            return;
        };
        let rt = core.runtime.clone();
        let task = rt.spawn(work(ledger, core));
        ctx.wait(task.into_actor(self).map(move |res, act, ctx| match res {
            Ok((ledger, v)) => {
                act.ledger = Some(ledger);
                then(Ok(v), act, ctx);
                act.arm(ctx);
            }
            Err(e) => {
                let log = act.core.upgrade().map(|c| c.log.clone());
                if let Some(log) = log {
                    slog::error!(log, "account task failed: the account is gone"; "error" => %e);
                }
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
            |mut ledger, core| {
                Box::pin(async move {
                    let r = ledger.flush(&core).await;
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
        if ledger.urgent {
            if !self.flush_queued {
                self.flush_queued = true;
                ctx.notify(FlushDue);
            }
            return;
        }
        if let (Some(due), false) = (ledger.due, self.timer) {
            self.timer = true;
            let wait = due.saturating_duration_since(Instant::now());
            ctx.run_later(wait, |act, ctx| {
                act.timer = false;
                if act.ledger.as_ref().is_some_and(|l| l.due.is_some()) {
                    act.flush(ctx, log_failure);
                } else {
                    act.arm(ctx);
                }
            });
        }
    }

    /// Runs `f` on the ledger and arms what flush it needs.
    fn with<R>(&mut self, ctx: &mut Context<Self>, f: impl FnOnce(&mut Ledger) -> R) -> Option<R> {
        let r = self.ledger.as_mut().map(f);
        self.arm(ctx);
        r
    }
}

fn log_failure(r: Result<(), DaemonError>, act: &mut AccountActor, _: &mut Context<AccountActor>) {
    if let (Err(e), Some(l)) = (r, &act.ledger) {
        slog::error!(l.log, "account flush failed"; "error" => %e);
    }
}

impl Handler<FlushDue> for AccountActor {
    type Result = ();

    fn handle(&mut self, _: FlushDue, ctx: &mut Context<Self>) {
        self.flush_queued = false;
        self.flush(ctx, log_failure);
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
            |mut ledger, core| {
                Box::pin(async move {
                    if let Err(e) = ledger.refresh(&core, true).await {
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
        self.with(ctx, |l| {
            l.record_secret(m.ghid, m.stored, m.counter, m.api_id)
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

impl Handler<NewToken> for AccountActor {
    type Result = MessageResult<NewToken>;

    fn handle(&mut self, _: NewToken, ctx: &mut Context<Self>) -> Self::Result {
        let token = self.with(ctx, |l| {
            l.edit(|st| loop {
                let t = AppTokenBytes(rand::random());
                if t.0 != NO_TOKEN && !st.tokens.contains(&t) {
                    st.tokens.insert(t);
                    return t.0;
                }
            })
        });
        MessageResult(token.flatten())
    }
}

impl Handler<TokenStartup> for AccountActor {
    type Result = MessageResult<TokenStartup>;

    fn handle(&mut self, m: TokenStartup, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.ledger.as_ref().and_then(|l| {
            let st = l.account.as_ref()?.state();
            st.tokens
                .contains(&m.0)
                .then(|| st.startup.get(&m.0).copied())
        }))
    }
}

impl Handler<SetStartup> for AccountActor {
    type Result = Result<(), DaemonError>;

    fn handle(&mut self, m: SetStartup, ctx: &mut Context<Self>) -> Self::Result {
        let r = self.with(ctx, |l| {
            if let Some(old) = l.state().and_then(|st| st.startup.get(&m.token)) {
                return Err(DaemonError::AlreadySet(format!(
                    "this token's startup object is {old}; deregister it first"
                )));
            }
            l.edit(|st| st.startup.insert(m.token, m.ghid));
            Ok(())
        });
        r.unwrap_or(Err(DaemonError::ShuttingDown))
    }
}

impl Handler<ClearStartup> for AccountActor {
    type Result = Result<(), DaemonError>;

    fn handle(&mut self, m: ClearStartup, ctx: &mut Context<Self>) -> Self::Result {
        let r = self.with(ctx, |l| {
            if !l.state().is_some_and(|st| st.startup.contains_key(&m.0)) {
                return Err(DaemonError::NotFound(
                    "a startup object for this token".into(),
                ));
            }
            l.edit(|st| st.startup.remove(&m.0));
            Ok(())
        });
        r.unwrap_or(Err(DaemonError::ShuttingDown))
    }
}

impl Handler<SetPrivate> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: SetPrivate, ctx: &mut Context<Self>) {
        self.with(ctx, |l| l.edit(|st| st.private.insert(m.ghid, m.token)));
    }
}

impl Handler<PrivateTo> for AccountActor {
    type Result = MessageResult<PrivateTo>;

    fn handle(&mut self, m: PrivateTo, _: &mut Context<Self>) -> Self::Result {
        let owner = self
            .ledger
            .as_ref()
            .and_then(|l| l.state())
            .and_then(|st| st.private.get(&m.0).map(|t| t.0));
        MessageResult(owner)
    }
}

impl Handler<MakePublic> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: MakePublic, ctx: &mut Context<Self>) {
        self.with(ctx, |l| {
            if l.state().is_some_and(|st| st.private.contains_key(&m.0)) {
                l.edit(|st| st.private.remove(&m.0));
            }
        });
    }
}

impl Handler<CopyPrivate> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: CopyPrivate, ctx: &mut Context<Self>) {
        self.with(ctx, |l| {
            if let Some(t) = l.state().and_then(|st| st.private.get(&m.from).copied()) {
                l.edit(|st| st.private.insert(m.to, t));
            }
        });
    }
}

impl Handler<TakeOrphans> for AccountActor {
    type Result = MessageResult<TakeOrphans>;

    fn handle(&mut self, m: TakeOrphans, ctx: &mut Context<Self>) -> Self::Result {
        let api_id = m.0;
        let mine = move |o: &OrphanShare| o.api_id == Some(api_id);
        let taken = self.with(ctx, |l| {
            if !l
                .state()
                .is_some_and(|st| st.orphan_shares.iter().any(mine))
            {
                return Vec::new();
            }
            l.edit(|st| {
                let all = std::mem::take(&mut st.orphan_shares);
                let (mine, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(mine);
                st.orphan_shares = rest;
                mine
            })
            .unwrap_or_default()
        });
        MessageResult(taken.unwrap_or_default())
    }
}

impl Handler<KeepOrphan> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: KeepOrphan, ctx: &mut Context<Self>) {
        self.with(ctx, |l| {
            if !l.state().is_some_and(|st| st.orphan_shares.contains(&m.0)) {
                l.edit(|st| st.orphan_shares.push(m.0));
            }
        });
    }
}

impl Handler<AddPending> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: AddPending, ctx: &mut Context<Self>) {
        self.with(ctx, |l| l.edit(|st| st.pending_shares.push(m.0)));
    }
}

impl Handler<TakePending> for AccountActor {
    type Result = MessageResult<TakePending>;

    fn handle(&mut self, m: TakePending, ctx: &mut Context<Self>) -> Self::Result {
        let taken = self.with(ctx, |l| {
            let i = l
                .state()?
                .pending_shares
                .iter()
                .position(|p| p.request == m.request && p.recipient == m.recipient)?;
            l.edit(|st| st.pending_shares.remove(i))
        });
        MessageResult(taken.flatten())
    }
}

impl Handler<DropPending> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: DropPending, ctx: &mut Context<Self>) {
        self.with(ctx, |l| {
            l.edit(|st| st.pending_shares.retain(|p| p.request != m.0))
        });
    }
}

impl Ledger {
    fn state(&self) -> Option<&AccountState> {
        self.account.as_ref().map(|a| a.state())
    }

    /// Changes the account state (marking it dirty) and schedules an ordinary flush.
    fn edit<R>(&mut self, f: impl FnOnce(&mut AccountState) -> R) -> Option<R> {
        let a = self.account.as_mut()?;
        let r = f(a.state_mut());
        self.schedule();
        Some(r)
    }

    fn record_secret(
        &mut self,
        ghid: Ghid,
        stored: StoredSecret,
        counter: u64,
        api_id: Option<Ghid>,
    ) {
        let Some(a) = self.account.as_mut() else {
            return;
        };
        let st = a.state_mut();
        st.secrets.insert(ghid, stored);
        if let Some(api) = api_id {
            st.api_ids.insert(ghid, api);
        }
        self.latest.insert(ghid, counter);
        let urgent = match self.flushed.get(&ghid) {
            None => true,
            Some(f) => counter.saturating_sub(*f) >= MAX_LAG,
        };
        if urgent {
            self.urgent = true;
        } else {
            self.schedule();
        }
    }

    fn forget(&mut self, ghid: Ghid) {
        let Some(a) = self.account.as_mut() else {
            return;
        };
        let st = a.state();
        let known = st.secrets.contains_key(&ghid)
            || st.api_ids.contains_key(&ghid)
            || st.private.contains_key(&ghid)
            || st.holds.contains(&ghid);
        if known {
            let st = a.state_mut();
            st.secrets.remove(&ghid);
            st.api_ids.remove(&ghid);
            st.private.remove(&ghid);
            st.holds.remove(&ghid);
            self.schedule();
        }
        self.latest.remove(&ghid);
        self.flushed.remove(&ghid);
        self.shared.forget(&ghid);
    }

    /// Arranges an ordinary flush no sooner than [`FLUSH_INTERVAL`] after the last one.
    fn schedule(&mut self) {
        if self.due.is_none() {
            let now = Instant::now();
            self.due = Some(match self.last_flush {
                Some(t) if t + FLUSH_INTERVAL > now => t + FLUSH_INTERVAL,
                _ => now,
            });
        }
    }

    /// Writes a new root frame if the state changed, and commits it locally and upstream.
    async fn flush(&mut self, core: &DaemonCore) -> Result<(), DaemonError> {
        self.due = None;
        self.urgent = false;
        let dirty = self.account.as_ref().is_some_and(|a| a.is_dirty());
        if !dirty {
            return Ok(());
        }
        // Build on another machine's newer root, if any, rather than losing a frame race.
        if !core.remotes.is_empty() {
            if let Err(e) = self.refresh(core, false).await {
                slog::info!(self.log, "account refresh before flush failed"; "error" => %e);
            }
        }
        let Some(mut account) = self.account.take() else {
            return Ok(());
        };
        let (account, objects) = tokio::task::spawn_blocking(move || {
            let objects = account.flush();
            (account, objects)
        })
        .await
        .map_err(|e| DaemonError::Account(format!("account flush task failed: {e}")))?;
        self.account = Some(account);
        self.last_flush = Some(Instant::now());
        core.commit_local(objects?).await?;
        self.flushed
            .extend(self.latest.iter().map(|(g, c)| (*g, *c)));
        self.shared
            .flushed(self.latest.iter().map(|(g, c)| (*g, *c)));
        Ok(())
    }

    /// Fetches the newest root frame and container from the remotes; a newer one than ours is
    /// ingested (which verifies it) and opened with the root secret.
    /// `limited`: on behalf of an unopenable object (at most every [`REFRESH_INTERVAL`]);
    /// otherwise before a flush (flushes are rate-limited already).
    async fn refresh(&mut self, core: &DaemonCore, limited: bool) -> Result<(), DaemonError> {
        if limited {
            if self
                .last_refresh
                .is_some_and(|t| t.elapsed() < REFRESH_INTERVAL)
            {
                return Ok(());
            }
            self.last_refresh = Some(Instant::now());
        }
        let ours = self.account.as_ref().map_or(0, |a| a.frame().counter);
        let Some(frame_bytes) = core.fetch(&core.user_id).await else {
            return Ok(());
        };
        let decode = |b: &[u8]| {
            Object::decode(b, Policy::STRICT).map_err(crate::persist::PersistError::from)
        };
        let Object::Gobd(frame) = decode(&frame_bytes)? else {
            return Err(DaemonError::Account(
                "the user id does not name a dynamic object".into(),
            ));
        };
        if frame.counter <= ours || frame.dynamic != core.user_id {
            return Ok(());
        }
        let container_bytes = core.fetch(&frame.target()).await.ok_or_else(|| {
            DaemonError::NotFound(format!("account container {}", frame.target()))
        })?;
        let Object::Geoc(container) = decode(&container_bytes)? else {
            return Err(DaemonError::Account(
                "the root frame's target is not a container".into(),
            ));
        };
        let mut newer = Account::open(self.root_secret.clone(), &frame, &container)?;
        // Two ingests (a container is only accepted bound), and a crash between them may
        // leave the frame without its container here. That is safe: the remote has both, and
        // the next login stores the container again (or continues after the frame).
        core.ingest_fetched(frame_bytes).await?;
        core.ingest_fetched(container_bytes).await?;
        let merged = match self.account.take() {
            Some(old) if old.is_dirty() => {
                // Carry our unflushed changes over onto the newer state.
                let changed = self
                    .latest
                    .iter()
                    .filter(|(g, c)| self.flushed.get(*g) != Some(*c))
                    .map(|(g, _)| *g);
                let (from, to) = (old.state(), newer.state_mut());
                for g in changed {
                    if let Some(s) = from.secrets.get(&g) {
                        to.secrets.insert(g, s.clone());
                    }
                    if let Some(a) = from.api_ids.get(&g) {
                        to.api_ids.insert(g, *a);
                    }
                }
                to.holds.extend(from.holds.iter().copied());
                merge_app_state(from, to);
                self.urgent = true;
                true
            }
            _ => false,
        };
        slog::info!(self.log, "account refreshed from another machine";
            "counter" => frame.counter, "merged" => merged);
        self.flushed = newer.state().secrets.keys().map(|g| (*g, 0)).collect();
        self.shared.clear();
        self.account = Some(newer);
        Ok(())
    }
}

/// Carries this machine's app registrations and shares over onto a newer account state:
/// tokens, startup and private entries (ours win), pending and orphan shares (union). What this
/// machine removed since its last flush may come back from the newer state: at worst a
/// startup object or an orphan share is offered again.
fn merge_app_state(from: &AccountState, to: &mut AccountState) {
    to.tokens.extend(from.tokens.iter().copied());
    to.startup
        .extend(from.startup.iter().map(|(t, g)| (*t, *g)));
    to.private
        .extend(from.private.iter().map(|(g, t)| (*g, *t)));
    for p in &from.pending_shares {
        if !to.pending_shares.iter().any(|q| q.request == p.request) {
            to.pending_shares.push(p.clone());
        }
    }
    for o in &from.orphan_shares {
        if !to.orphan_shares.contains(o) {
            to.orphan_shares.push(o.clone());
        }
    }
}
