//! The [`Ledger`](super::Ledger): the account's bookkeeping between flushes (which object's
//! secret moved how far since the last flush, which startup objects were cleared since, when
//! the next flush is due), the startup-object edits, and the flush and refresh themselves (a
//! new root frame committed locally and upstream; another machine's newer root adopted, with
//! this machine's unflushed changes carried over, and the bounds on received shares kept:
//! see `received.rs`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::{
    received, Base, Ledger, ShareLimits, FLUSH_INTERVAL, FLUSH_RETRY_MAX, LAG_FLUSH_INTERVAL,
    MAX_LAG, MAX_ORPHAN_SHARES, MAX_TOKENS, REFRESH_INTERVAL,
};
use crate::actors::account::{Account, AccountState, AppTokenBytes, OrphanShare, StoredSecret};
use crate::actors::account_lag::FlushedCounters;
use crate::actors::api::{AppToken, NO_TOKEN};
use crate::actors::backoff::Backoff;
use crate::actors::durable;
use crate::actors::error::DaemonError;
use crate::golix::{Ghid, Object, Policy, Secret};

/// How long a flush waits for its refresh from the remotes (see [`Ledger::refresh`]).
const REFRESH_BEFORE_FLUSH: Duration = Duration::from_secs(3);

impl Ledger {
    /// The bookkeeping of `account` as opened (or created).
    pub(super) fn new(
        account: Account,
        root_secret: Secret,
        shared: FlushedCounters,
        limits: ShareLimits,
        log: slog::Logger,
    ) -> Ledger {
        // An account opened dirty (it continues after a root frame whose container a crash
        // lost) flushes at once, so the stores get a whole root above that frame.
        let due = account.is_dirty().then(Instant::now);
        Ledger {
            shared,
            flushed: account.state().secrets.keys().map(|g| (*g, 0)).collect(),
            latest: HashMap::new(),
            account: Some(account),
            root_secret,
            last_flush: None,
            last_refresh: None,
            urgent: false,
            limits,
            due,
            retry: Backoff::new(LAG_FLUSH_INTERVAL, FLUSH_RETRY_MAX),
            retry_at: None,
            cleared_startup: HashMap::new(),
            adopted_unflushed: HashSet::new(),
            log,
        }
    }

    pub(super) fn state(&self) -> Option<&AccountState> {
        self.account.as_ref().map(|a| a.state())
    }

    /// Changes the account state (marking it dirty) and schedules an ordinary flush.
    pub(super) fn edit<R>(&mut self, f: impl FnOnce(&mut AccountState) -> R) -> Option<R> {
        let a = self.account.as_mut()?;
        let r = f(a.state_mut());
        self.schedule();
        Some(r)
    }

    /// Mints a new app token into the account (`limit` when it has [`MAX_TOKENS`]).
    pub(super) fn new_token(&mut self) -> Result<AppToken, DaemonError> {
        let st = self.state().ok_or(DaemonError::ShuttingDown)?;
        if st.tokens.len() >= MAX_TOKENS {
            return Err(DaemonError::Limit(format!(
                "the account has {MAX_TOKENS} app tokens, the most it keeps"
            )));
        }
        self.edit(|st| loop {
            let t = AppTokenBytes(rand::random());
            if t.0 != NO_TOKEN && !st.tokens.contains(&t) {
                st.tokens.insert(t);
                return t.0;
            }
        })
        .ok_or(DaemonError::ShuttingDown)
    }

    /// Removes `token`, minted by [`Ledger::new_token`], whose flush failed: nobody was
    /// given it, so it has no startup or private object.
    pub(super) fn drop_token(&mut self, token: AppTokenBytes) {
        if self.state().is_some_and(|st| st.tokens.contains(&token)) {
            self.edit(|st| st.tokens.remove(&token));
        }
    }

    /// Sets `token`'s startup object. The one it has already is ok (the caller flushes: an
    /// app retrying a set whose flush failed gets its answer from that flush); another one
    /// is `already_set`.
    pub(super) fn set_startup(
        &mut self,
        token: AppTokenBytes,
        ghid: Ghid,
    ) -> Result<(), DaemonError> {
        let st = self.state().ok_or(DaemonError::ShuttingDown)?;
        match st.startup.get(&token) {
            Some(old) if *old == ghid => Ok(()),
            Some(old) => Err(DaemonError::AlreadySet(format!(
                "this token's startup object is {old}; deregister it first"
            ))),
            None => {
                // Set again: a clear from now on is a new one.
                self.cleared_startup.remove(&token);
                self.edit(|st| st.startup.insert(token, ghid));
                Ok(())
            }
        }
    }

    /// Clears `token`'s startup object: `not_found` if it has none, unless this daemon
    /// cleared it and it was not set since (a retry: of a clear whose flush failed, or whose
    /// answer the app missed; the caller flushes). Not across a restart.
    pub(super) fn clear_startup(&mut self, token: AppTokenBytes) -> Result<(), DaemonError> {
        let st = self.state().ok_or(DaemonError::ShuttingDown)?;
        let Some(old) = st.startup.get(&token).copied() else {
            if self.cleared_startup.contains_key(&token) {
                return Ok(());
            }
            return Err(DaemonError::NotFound(
                "a startup object for this token".into(),
            ));
        };
        self.cleared_startup.insert(token, old);
        self.edit(|st| st.startup.remove(&token));
        Ok(())
    }

    pub(super) fn record_secret(
        &mut self,
        ghid: Ghid,
        stored: StoredSecret,
        counter: u64,
        api_id: Option<Ghid>,
        received_from: Option<Ghid>,
    ) {
        let Some(a) = self.account.as_mut() else {
            return;
        };
        let st = a.state_mut();
        if let Some(sharer) = received_from {
            // An object we know already and that is not a received share is ours.
            if !st.secrets.contains_key(&ghid) || st.received_shares.contains_key(&ghid) {
                st.received_shares.entry(ghid).or_insert(sharer);
                st.received_at
                    .entry(ghid)
                    .or_insert_with(received::now_millis);
            }
        }
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
            self.schedule_within(LAG_FLUSH_INTERVAL);
        }
    }

    pub(super) fn forget(&mut self, ghid: Ghid) {
        let Some(a) = self.account.as_mut() else {
            return;
        };
        let st = a.state();
        let known = st.secrets.contains_key(&ghid)
            || st.api_ids.contains_key(&ghid)
            || st.private.contains_key(&ghid)
            || st.holds.contains(&ghid)
            || st.received_shares.contains_key(&ghid)
            || st.orphan_shares.iter().any(|o| o.ghid == ghid);
        if known {
            let st = a.state_mut();
            st.secrets.remove(&ghid);
            st.api_ids.remove(&ghid);
            st.private.remove(&ghid);
            st.holds.remove(&ghid);
            st.received_shares.remove(&ghid);
            st.received_at.remove(&ghid);
            st.orphan_shares.retain(|o| o.ghid != ghid);
            self.schedule();
        }
        self.latest.remove(&ghid);
        self.flushed.remove(&ghid);
        self.adopted_unflushed.remove(&ghid);
        self.shared.forget(&ghid);
    }

    /// Arranges an ordinary flush no sooner than [`FLUSH_INTERVAL`] after the last one.
    pub(super) fn schedule(&mut self) {
        self.schedule_within(FLUSH_INTERVAL);
    }

    /// Arranges a flush no sooner than `interval` after the last one, nor before the retry
    /// after a failure (or keeps an earlier one already arranged).
    fn schedule_within(&mut self, interval: Duration) {
        let now = Instant::now();
        let at = match self.last_flush {
            Some(t) if t + interval > now => t + interval,
            _ => now,
        };
        let at = self.retry_at.map_or(at, |r| at.max(r));
        self.due = Some(self.due.map_or(at, |due| due.min(at)));
    }

    /// Whether an urgent flush is to run now: one is asked for, and no failed flush's retry
    /// pause is running (then it waits for [`Ledger::due`], set to that retry).
    pub(super) fn urgent_now(&self) -> bool {
        self.urgent && self.retry_at.map_or(true, |r| r <= Instant::now())
    }

    /// Writes a new root frame if the state changed, and commits it locally and upstream.
    pub(super) async fn flush(&mut self, base: &Base) -> Result<(), DaemonError> {
        self.due = None;
        self.urgent = false;
        let dirty = self.account.as_ref().is_some_and(|a| a.is_dirty());
        if !dirty {
            return Ok(());
        }
        // Build on another machine's newer root, if any, rather than losing a frame race.
        // Bounded: a remote that is connected but does not answer must not hold up the
        // flush (and the apps waiting for it) for its request timeouts; the flush then goes
        // on as it does with the remote down.
        if !base.upstream.is_empty() {
            match self.refresh(base, false).await {
                Ok(()) => {}
                Err(e @ DaemonError::Unavailable(_)) => {
                    slog::warn!(self.log, "account refresh before flush gave up; flushing on our own root"; "error" => %e)
                }
                Err(e) => {
                    slog::info!(self.log, "account refresh before flush failed"; "error" => %e)
                }
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
        .map_err(|e| {
            slog::error!(self.log, "account flush task failed: the account is gone"; "error" => %e);
            DaemonError::Account(format!("account flush task failed: {e}"))
        })?;
        self.account = Some(account);
        self.last_flush = Some(Instant::now());
        let committed = match objects {
            Ok(objects) => durable::commit(&base.local, &base.upstream, objects, None).await,
            Err(e) => Err(e),
        };
        self.committed(committed)
    }

    /// After a flush's root was committed, or not. Not: the state is still to be written
    /// (the account is dirty again), so what an app was told failed is flushed by its retry
    /// or later, never taken as written. The next flush of our own waits 1 s, doubling while
    /// flushes keep failing up to [`FLUSH_RETRY_MAX`] (each costs two signatures, and some
    /// causes last: a root grown past a remote's limit); a warning at the first failure,
    /// then at most one a minute.
    fn committed(&mut self, r: Result<(), DaemonError>) -> Result<(), DaemonError> {
        if let Err(e) = r {
            if let Some(a) = self.account.as_mut() {
                a.unflushed();
            }
            let pause = self.retry.next_pause();
            let retry_at = Instant::now() + pause;
            self.retry_at = Some(retry_at);
            self.due = Some(retry_at);
            if self.retry.failed() {
                slog::warn!(self.log, "account flush failed; will retry"; "error" => %e,
                    "retry_in_s" => pause.as_secs());
            }
            return Err(e);
        }
        if self.retry_at.take().is_some() {
            slog::info!(self.log, "account flush succeeded again");
        }
        self.retry.succeeded();
        self.adopted_unflushed.clear();
        self.flushed
            .extend(self.latest.iter().map(|(g, c)| (*g, *c)));
        self.shared
            .flushed(self.latest.iter().map(|(g, c)| (*g, *c)));
        Ok(())
    }

    /// Fetches the newest root frame and container from the remotes; a newer one than ours is
    /// ingested (which verifies it) and opened with the root secret.
    /// `limited`: on behalf of an unopenable object (at most every [`REFRESH_INTERVAL`]);
    /// otherwise before a flush (flushes are rate-limited already), when the remotes have
    /// [`REFRESH_BEFORE_FLUSH`] to answer (all asked at once; `unavailable` past it). Only
    /// the fetches are bounded: what was fetched is ingested and adopted whole.
    pub(super) async fn refresh(&mut self, base: &Base, limited: bool) -> Result<(), DaemonError> {
        let (local, upstream) = (&*base.local, &base.upstream);
        if limited {
            if self
                .last_refresh
                .is_some_and(|t| t.elapsed() < REFRESH_INTERVAL)
            {
                return Ok(());
            }
            self.last_refresh = Some(Instant::now());
        }
        let deadline = (!limited).then(|| Instant::now() + REFRESH_BEFORE_FLUSH);
        let ours = self.account.as_ref().map_or(0, |a| a.frame().counter);
        let Some(frame_bytes) = upstream.fetch_first(&local.user_id, deadline).await? else {
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
        if frame.counter <= ours || frame.dynamic != local.user_id {
            return Ok(());
        }
        let container_bytes = upstream
            .fetch_first(&frame.target(), deadline)
            .await?
            .ok_or_else(|| {
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
        upstream.ingest_fetched(local, frame_bytes).await?;
        upstream.ingest_fetched(local, container_bytes).await?;
        let mut forget = Vec::new();
        // The entries as the other machine wrote them: a merge trims only past these.
        let theirs = newer.state().received_shares.clone();
        let merged = match self.account.take() {
            Some(old) if old.is_dirty() => {
                forget.extend(self.carry_over(old.state(), newer.state_mut()));
                self.urgent = true;
                true
            }
            _ => false,
        };
        slog::info!(self.log, "account refreshed from another machine";
            "counter" => frame.counter, "merged" => merged);
        self.flushed = newer.state().secrets.keys().map(|g| (*g, 0)).collect();
        self.shared.clear();
        // The bounds hold after a merge too, raised to what the other machine kept alone.
        forget.extend(received::over_limits(newer.state(), self.limits, &theirs));
        forget.sort();
        forget.dedup();
        self.account = Some(newer);
        let gone = self.forget_unadopted(base, forget, "merged out");
        // Before the mailbox opens again (this runs while it waits).
        received::forget_in_vault(base.local.clone(), gone).await;
        Ok(())
    }

    /// Carries our unflushed changes (`from`) over onto a newer state (`to`): secrets that
    /// moved on, and those of shares adopted since the last flush (the other machine may
    /// have forgotten one as unadopted meanwhile: an app of ours has it now), holds,
    /// received shares and app registrations. Returns the objects to forget: those of the
    /// orphan shares the merge dropped.
    fn carry_over(&self, from: &AccountState, to: &mut AccountState) -> Vec<Ghid> {
        let adopted = received::adopted_elsewhere(from, to);
        let changed = self
            .latest
            .iter()
            .filter(|(g, c)| self.flushed.get(*g) != Some(*c))
            .map(|(g, _)| *g);
        for g in changed {
            if let Some(s) = from.secrets.get(&g) {
                to.secrets.insert(g, s.clone());
            }
            if let Some(a) = from.api_ids.get(&g) {
                to.api_ids.insert(g, *a);
            }
        }
        for g in &self.adopted_unflushed {
            if let Some(s) = from.secrets.get(g) {
                to.secrets.entry(*g).or_insert_with(|| s.clone());
            }
            if let Some(a) = from.api_ids.get(g) {
                to.api_ids.entry(*g).or_insert(*a);
            }
        }
        to.holds.extend(from.holds.iter().copied());
        received::merge_received(from, to, &adopted, received::now_millis());
        let dropped = merge_app_state(from, to, &self.cleared_startup);
        received::unadopted_of(to, &dropped)
    }
}

/// Carries this machine's app registrations and shares over onto a newer account state:
/// tokens, startup and private entries (ours win), pending and orphan shares (union). A
/// startup object this machine cleared (`cleared`: token and the object it cleared) stays
/// cleared when the newer state still has that object (another one there was set since, on
/// the other machine: it is kept). Other removals since our last flush may come back from
/// the newer state: at worst an orphan share is offered again. Returns the orphan shares
/// dropped past [`MAX_ORPHAN_SHARES`].
fn merge_app_state(
    from: &AccountState,
    to: &mut AccountState,
    cleared: &HashMap<AppTokenBytes, Ghid>,
) -> Vec<OrphanShare> {
    to.tokens.extend(from.tokens.iter().copied());
    to.startup
        .extend(from.startup.iter().map(|(t, g)| (*t, *g)));
    for (token, old) in cleared {
        if !from.startup.contains_key(token) && to.startup.get(token) == Some(old) {
            to.startup.remove(token);
        }
    }
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
    // The union of two machines' lists keeps the bound too (the newest).
    let over = to.orphan_shares.len().saturating_sub(MAX_ORPHAN_SHARES);
    to.orphan_shares.drain(..over).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger over a new account of fixture 1, flushed (clean).
    fn ledger() -> Ledger {
        let root = Secret::random();
        let identity = crate::testdata::fixture_first_party(1);
        let (mut account, _) = Account::create(identity, root.clone()).unwrap();
        assert!(!account.is_dirty());
        account.state_mut().tokens.insert(AppTokenBytes([1; 16]));
        let mut l = Ledger::new(
            account,
            root,
            FlushedCounters::default(),
            ShareLimits::default(),
            crate::logging::discard(),
        );
        flushed(&mut l);
        l
    }

    /// A flush whose root was built and committed.
    fn flushed(l: &mut Ledger) {
        l.account.as_mut().unwrap().flush().unwrap();
        l.committed(Ok(())).unwrap();
        assert!(!l.account.as_ref().unwrap().is_dirty());
    }

    /// A flush whose root was built but not committed (what a storage failure leaves).
    fn failed_flush(l: &mut Ledger) {
        l.account.as_mut().unwrap().flush().unwrap();
        let e = l.committed(Err(DaemonError::Storage("disk full".into())));
        assert!(matches!(e, Err(DaemonError::Storage(_))));
    }

    fn ghid(tag: u8) -> Ghid {
        Ghid::new(crate::golix::Algo::DUMMY, [tag; 64])
    }

    fn stored() -> StoredSecret {
        StoredSecret {
            secret: Secret::random(),
            container: ghid(8),
        }
    }

    #[test]
    fn a_set_startup_whose_flush_failed_is_still_to_be_written_and_its_retry_is_ok() {
        let mut l = ledger();
        let token = AppTokenBytes([1; 16]);
        l.set_startup(token, ghid(1)).unwrap();
        failed_flush(&mut l);
        let a = l.account.as_ref().unwrap();
        assert!(a.is_dirty(), "the edit is still to be written");
        assert!(l.due.is_some(), "and a flush is scheduled");
        // The app's retry of the same edit: ok (its flush answers); another value is not.
        l.set_startup(token, ghid(1)).unwrap();
        let e = l.set_startup(token, ghid(2)).unwrap_err();
        assert!(matches!(e, DaemonError::AlreadySet(_)), "{e}");
        flushed(&mut l);
        // Flushed, the same value again is still ok, another still refused.
        l.set_startup(token, ghid(1)).unwrap();
        assert!(matches!(
            l.set_startup(token, ghid(2)),
            Err(DaemonError::AlreadySet(_))
        ));
    }

    #[test]
    fn a_clear_startup_can_be_retried_until_the_token_is_set_again() {
        let mut l = ledger();
        let token = AppTokenBytes([1; 16]);
        assert!(matches!(
            l.clear_startup(token),
            Err(DaemonError::NotFound(_))
        ));
        l.set_startup(token, ghid(1)).unwrap();
        flushed(&mut l);
        l.clear_startup(token).unwrap();
        failed_flush(&mut l);
        assert!(l.account.as_ref().unwrap().is_dirty());
        l.clear_startup(token).unwrap();
        // The background retry flushes before the app's retry comes: still ok.
        flushed(&mut l);
        l.clear_startup(token).unwrap();
        assert!(!l.account.as_ref().unwrap().is_dirty(), "nothing to write");
        // Set again, then cleared and flushed: a second clear is again a retry; only a
        // token that had none is not_found.
        l.set_startup(token, ghid(2)).unwrap();
        flushed(&mut l);
        l.clear_startup(token).unwrap();
        flushed(&mut l);
        l.clear_startup(token).unwrap();
        assert!(matches!(
            l.clear_startup(AppTokenBytes([2; 16])),
            Err(DaemonError::NotFound(_))
        ));
        assert_eq!(l.cleared_startup.len(), 1, "one entry per token");
    }

    #[test]
    fn a_merge_does_not_bring_back_a_cleared_startup_object() {
        let mut l = ledger();
        let (t1, t2) = (AppTokenBytes([1; 16]), AppTokenBytes([2; 16]));
        l.set_startup(t1, ghid(1)).unwrap();
        l.set_startup(t2, ghid(2)).unwrap();
        flushed(&mut l);
        // The other machine's newer root: written before it saw our clears, except that it
        // set t2's startup object anew.
        let mut newer = l.state().unwrap().clone();
        newer.startup.insert(t2, ghid(3));
        l.clear_startup(t1).unwrap();
        l.clear_startup(t2).unwrap();
        merge_app_state(l.state().unwrap(), &mut newer, &l.cleared_startup);
        assert_eq!(newer.startup.get(&t1), None, "our clear stands");
        assert_eq!(
            newer.startup.get(&t2),
            Some(&ghid(3)),
            "their later set too"
        );
    }

    #[test]
    fn failed_flushes_back_off_to_a_minute_and_start_over_after_a_success() {
        let mut l = ledger();
        let pause_after_failure = |l: &mut Ledger| {
            let before = Instant::now();
            failed_flush(l);
            let pause = l.due.unwrap() - before;
            assert!(!l.urgent_now(), "nor does an urgent flush run meanwhile");
            pause
        };
        l.set_startup(AppTokenBytes([1; 16]), ghid(1)).unwrap();
        let mut pauses = Vec::new();
        for _ in 0..9 {
            // Urgent (an object new to the account): it still waits for the retry.
            l.record_secret(ghid(9), stored(), 1, None, None);
            assert!(l.urgent);
            pauses.push(pause_after_failure(&mut l).as_secs_f64().round() as u64);
            // Edits meanwhile do not bring the retry forward.
            let due = l.due;
            l.schedule();
            assert_eq!(l.due, due);
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        flushed(&mut l);
        assert!(l.retry_at.is_none());
        l.set_startup(AppTokenBytes([1; 16]), ghid(1)).unwrap();
        l.clear_startup(AppTokenBytes([1; 16])).unwrap();
        assert_eq!(pause_after_failure(&mut l).as_secs_f64().round() as u64, 1);
    }

    #[test]
    fn a_merge_keeps_the_secret_of_a_share_adopted_here_that_the_other_machine_forgot() {
        let mut l = ledger();
        let (g, api) = (ghid(5), ghid(6));
        l.edit(|st| {
            st.secrets.insert(g, stored());
            st.api_ids.insert(g, api);
            st.received_shares.insert(g, ghid(4));
            st.received_at.insert(g, 1);
        });
        flushed(&mut l);
        // The other machine forgot it as unadopted and wrote a newer root; meanwhile an
        // app here adopted it.
        let mut there = l.state().unwrap().clone();
        there.secrets.remove(&g);
        there.api_ids.remove(&g);
        there.received_shares.remove(&g);
        there.received_at.remove(&g);
        l.adopt(g);
        let here = l.state().unwrap().clone();
        assert!(l.carry_over(&here, &mut there).is_empty());
        assert_eq!(
            there.secrets.get(&g),
            here.secrets.get(&g),
            "the app's secret"
        );
        assert_eq!(there.api_ids.get(&g), Some(&api));
        assert!(!there.received_shares.contains_key(&g), "adopted");
        // Flushed, the adoption is in our root: a later merge no longer brings it back.
        flushed(&mut l);
        let mut later = there.clone();
        later.secrets.remove(&g);
        let here = l.state().unwrap().clone();
        l.carry_over(&here, &mut later);
        assert!(!later.secrets.contains_key(&g));
    }

    #[test]
    fn a_share_dated_in_the_future_still_expires() {
        let mut l = ledger();
        let (now, age) = (
            1_000_000,
            super::super::MAX_UNADOPTED_AGE.as_millis() as u64,
        );
        // Dated by a clock a year ahead (another machine's, or ours before it was set back).
        let ahead = ghid(3);
        l.edit(|st| {
            st.secrets.insert(ahead, stored());
            st.received_shares.insert(ahead, ghid(4));
            st.received_at.insert(ahead, now + 365 * 24 * 3600 * 1000);
        });
        assert!(l.date_and_expire(now).is_empty());
        assert_eq!(l.state().unwrap().received_at.get(&ahead), Some(&now));
        assert!(l.date_and_expire(now + age - 1).is_empty());
        assert_eq!(l.date_and_expire(now + age), vec![ahead]);
    }

    #[test]
    fn tokens_are_bounded_and_a_dropped_one_leaves_the_account() {
        let mut l = ledger();
        let t = l.new_token().unwrap();
        assert!(l.state().unwrap().tokens.contains(&AppTokenBytes(t)));
        // Its flush failed: dropped, the account holds what it held before.
        l.drop_token(AppTokenBytes(t));
        assert_eq!(l.state().unwrap().tokens.len(), 1);
        let st = l.account.as_mut().unwrap().state_mut();
        st.tokens.extend((0..MAX_TOKENS as u32 - 1).map(|i| {
            let mut b = [9; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            AppTokenBytes(b)
        }));
        assert_eq!(l.state().unwrap().tokens.len(), MAX_TOKENS);
        let e = l.new_token().unwrap_err();
        assert_eq!(e.code(), "limit", "{e}");
        assert_eq!(l.state().unwrap().tokens.len(), MAX_TOKENS);
        l.drop_token(AppTokenBytes([1; 16]));
        l.new_token().unwrap();
    }
}
