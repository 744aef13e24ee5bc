//! The account's shares received from other users and not adopted yet
//! (`AccountState::received_shares`, object -> sharer, and `received_at`, when): whether
//! one more may be accepted under the [`ShareLimits`] ([`AdmitShare`], from the share actor),
//! adoption ([`Adopt`], from `DaemonHandle`, `dispatch` and `share`: an app of ours acted on
//! the object; [`AdoptLoaded`], from `DaemonHandle` after a load), how two machines' entries
//! merge, and forgetting what a share no app adopted brought (its secret here and in the
//! account, its api id, its subscription on every remote) once its orphan entry is dropped,
//! it is older than [`MAX_UNADOPTED_AGE`], it is evicted for a lighter sharer's share, or a
//! merge trims it.
//!
//! The policy at the bound in all, and when a merge trims: the sharer holding the most
//! entries loses its newest first; of sharers tied for the most, the one whose newest entry
//! is the oldest. What this guarantees: a sharer holding `h` entries loses none while
//! another holds more, which is certain when the others are fewer than `total / h - 1`
//! identities (1023 for one entry under the default 1024). Tied for the most, an entry just
//! admitted goes last of the tied: only after every other tied sharer got a newer one. So
//! more identities than that can still evict it, one eviction per other tied sharer later.
//! What a sharer sent first stays (the oldest were offered to apps longest). A share shown
//! to an app as an event that the app did not adopt is unadopted and evicted like any other.
//!
//! Forgetting never touches an object with a live object actor (it is an app's: the entry
//! is dropped as adopted), and removes the vault records while the mailbox waits, so an
//! `AdmitShare` or `RecordSecret` handled after it cannot be undone by it. A load that
//! raced a forget puts them back the same way ([`AdoptLoaded`]).
//!
//! Pure functions over the state, the `Ledger`'s forgetting, and the handlers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;

use super::{
    AccountActor, Admission, AdmitShare, Adopt, AdoptLoaded, Base, Ledger, ShareLimits,
    MAX_UNADOPTED_AGE,
};
use crate::actors::account::{AccountState, OrphanShare};
use crate::actors::error::DaemonError;
use crate::actors::local::{Local, SecretRecord};
use crate::actors::upstream::Upstream;
use crate::golix::Ghid;

/// Now, in unix milliseconds (what `received_at` holds).
pub(super) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Each sharer's entries, oldest first (by `received_at`, then ghid).
fn by_sharer(st: &AccountState) -> BTreeMap<Ghid, Vec<(u64, Ghid)>> {
    let mut out = BTreeMap::<Ghid, Vec<(u64, Ghid)>>::new();
    for (g, sharer) in &st.received_shares {
        let at = st.received_at.get(g).copied().unwrap_or(0);
        out.entry(*sharer).or_default().push((at, *g));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The sharer holding the most entries; of those tied, the one whose newest entry is the
/// oldest, so an entry just admitted is not the next victim (throw-away identities evicted
/// back under the others cannot take turns evicting the sharer that just got in).
fn heaviest(by: &BTreeMap<Ghid, Vec<(u64, Ghid)>>) -> Option<Ghid> {
    by.iter()
        .filter(|(_, v)| !v.is_empty())
        .max_by_key(|(_, v)| (v.len(), std::cmp::Reverse(v.last().copied())))
        .map(|(s, _)| *s)
}

/// Whether `sharer`'s share of `ghid` may be accepted (see [`Admission`]), and past the
/// bound in all, the entry it evicts: the newest of the heaviest sharer ([`heaviest`]), when
/// `sharer` holds fewer than that one. The heaviest sharer itself is refused.
pub(super) fn admission(
    st: &AccountState,
    ghid: &Ghid,
    sharer: &Ghid,
    limits: ShareLimits,
) -> (Admission, Option<Ghid>) {
    if st.received_shares.contains_key(ghid) {
        return (Admission::Again, None);
    }
    if st.secrets.contains_key(ghid) {
        return (Admission::Ours, None);
    }
    let from_sharer = st.received_shares.values().filter(|s| *s == sharer).count();
    if from_sharer >= limits.per_sharer {
        return (Admission::PastPerSharer, None);
    }
    if st.received_shares.len() < limits.total {
        return (Admission::Allowed, None);
    }
    let by = by_sharer(st);
    match heaviest(&by).and_then(|h| by.get(&h)) {
        Some(v) if from_sharer < v.len() => (Admission::Allowed, v.last().map(|(_, g)| *g)),
        _ => (Admission::PastTotal, None),
    }
}

/// The entries received at least [`MAX_UNADOPTED_AGE`] before `now` (unix milliseconds).
/// A date past `now` (another machine's clock ahead, or ours set back) counts as `now`.
pub(super) fn expired(st: &AccountState, now: u64) -> Vec<Ghid> {
    let age = MAX_UNADOPTED_AGE.as_millis() as u64;
    st.received_shares
        .keys()
        .filter(|g| {
            st.received_at
                .get(g)
                .is_some_and(|at| now.saturating_sub((*at).min(now)) >= age)
        })
        .copied()
        .collect()
}

/// The objects of `dropped` orphan shares to forget: received and not adopted, and not
/// offered by another orphan share the account still keeps.
pub(super) fn unadopted_of(st: &AccountState, dropped: &[OrphanShare]) -> Vec<Ghid> {
    let mut out: Vec<Ghid> = dropped
        .iter()
        .map(|o| o.ghid)
        .filter(|g| st.received_shares.contains_key(g))
        .filter(|g| !st.orphan_shares.iter().any(|o| o.ghid == *g))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The received shares of `from` that the other machine adopted: it knows their objects
/// without an entry. Taken before `from`'s secrets are carried over onto `to`.
pub(super) fn adopted_elsewhere(from: &AccountState, to: &AccountState) -> Vec<Ghid> {
    from.received_shares
        .keys()
        .filter(|g| to.secrets.contains_key(g) && !to.received_shares.contains_key(g))
        .copied()
        .collect()
}

/// Carries this machine's received shares (`from`) over onto a newer state (`to`): the
/// union, except that an entry only one side has goes when the other side knows its object
/// without one (an app adopted it there; `adopted`: those of the other machine). An entry
/// carried over brings its date, secret and api id if `to` lacks them (the other machine
/// forgot it, or wrote its root without ours), so every entry keeps its secret; the bounds
/// are applied to the result ([`over_limits`]). A date past `now` becomes `now`: a clock
/// ahead must not keep an entry from ever expiring.
pub(super) fn merge_received(
    from: &AccountState,
    to: &mut AccountState,
    adopted: &[Ghid],
    now: u64,
) {
    to.received_shares
        .retain(|g, _| !from.secrets.contains_key(g) || from.received_shares.contains_key(g));
    for (g, sharer) in &from.received_shares {
        if adopted.contains(g) {
            continue;
        }
        let Some(secret) = from.secrets.get(g) else {
            continue;
        };
        to.received_shares.entry(*g).or_insert(*sharer);
        if let Some(at) = from.received_at.get(g) {
            to.received_at.entry(*g).or_insert(*at);
        }
        to.secrets.entry(*g).or_insert_with(|| secret.clone());
        if let Some(api_id) = from.api_ids.get(g) {
            to.api_ids.entry(*g).or_insert(*api_id);
        }
    }
    let kept = &to.received_shares;
    to.received_at.retain(|g, _| kept.contains_key(g));
    for at in to.received_at.values_mut() {
        *at = (*at).min(now);
    }
}

/// What a merge added past the bounds, to forget: the union of two machines' entries may
/// exceed them. The bounds are this machine's `limits`, raised to what the newer root
/// (`before`: its entries as the other machine wrote them) held by itself, per sharer and in all: a
/// machine never trims what another accepted under its own (higher) limits, only the
/// excess the union brings. Trimmed per sharer first, then in all, the heaviest sharer's
/// newest first (as at [`admission`]).
pub(super) fn over_limits(
    st: &AccountState,
    limits: ShareLimits,
    before: &BTreeMap<Ghid, Ghid>,
) -> Vec<Ghid> {
    let mut held_before = HashMap::<Ghid, usize>::new();
    for sharer in before.values() {
        *held_before.entry(*sharer).or_default() += 1;
    }
    let mut by = by_sharer(st);
    let mut over = Vec::new();
    for (sharer, v) in by.iter_mut() {
        let bound = limits
            .per_sharer
            .max(held_before.get(sharer).copied().unwrap_or(0));
        while v.len() > bound {
            over.extend(v.pop().map(|(_, g)| g));
        }
    }
    let bound = limits.total.max(before.len());
    let mut total: usize = by.values().map(Vec::len).sum();
    while total > bound {
        let Some(v) = heaviest(&by).and_then(|h| by.get_mut(&h)) else {
            break;
        };
        over.extend(v.pop().map(|(_, g)| g));
        total -= 1;
    }
    over
}

/// Removes the vault records (secret, metadata: the "followed" flag) of forgotten shares.
pub(super) async fn forget_in_vault(local: Arc<Local>, ghids: Vec<Ghid>) {
    if ghids.is_empty() {
        return;
    }
    let (rt, log) = (local.runtime.clone(), local.log.clone());
    let removed = rt
        .spawn_blocking(move || {
            for g in ghids {
                if let Err(e) = local.forget_secret(&g) {
                    slog::warn!(local.log, "cannot forget a dropped share's secret"; "ghid" => %g, "error" => %e);
                }
            }
        })
        .await;
    if let Err(e) = removed {
        slog::warn!(log, "cannot forget dropped shares' secrets"; "error" => %e);
    }
}

impl Ledger {
    /// `ghid` is an app's now: no longer counted as received (and kept by a merge until
    /// flushed).
    pub(super) fn adopt(&mut self, ghid: Ghid) {
        if self
            .state()
            .is_some_and(|st| st.received_shares.contains_key(&ghid))
        {
            self.adopted_unflushed.insert(ghid);
            self.edit(|st| {
                st.received_shares.remove(&ghid);
                st.received_at.remove(&ghid);
            });
        }
    }

    /// Dates `now` the entries without a date (an older root's) or dated after `now` (a
    /// clock was ahead: such a date would never expire), and returns those past
    /// [`MAX_UNADOPTED_AGE`].
    pub(super) fn date_and_expire(&mut self, now: u64) -> Vec<Ghid> {
        let Some(st) = self.state() else {
            return Vec::new();
        };
        let undated =
            |st: &AccountState, g: &Ghid| st.received_at.get(g).map_or(true, |at| *at > now);
        if st.received_shares.keys().any(|g| undated(st, g)) {
            self.edit(|st| {
                for g in st.received_shares.keys() {
                    let at = st.received_at.entry(*g).or_insert(now);
                    *at = (*at).min(now);
                }
            });
        }
        self.state().map(|st| expired(st, now)).unwrap_or_default()
    }

    /// Forgets received shares no app adopted (see the module doc): out of the account now
    /// and unsubscribed on every remote; returns those whose vault records are to go
    /// ([`forget_in_vault`], awaited before the next message). One with a live object actor
    /// is an app's (a load raced this): adopted, not forgotten.
    pub(super) fn forget_unadopted(
        &mut self,
        base: &Base,
        ghids: Vec<Ghid>,
        why: &'static str,
    ) -> Vec<Ghid> {
        let mut gone = Vec::with_capacity(ghids.len());
        for g in ghids {
            if base.is_live(&g) {
                self.adopt(g);
                continue;
            }
            self.forget(g);
            base.upstream.unsubscribe(g);
            gone.push(g);
        }
        if !gone.is_empty() {
            slog::info!(self.log, "forgot shares no app adopted"; "why" => why, "count" => gone.len());
        }
        gone
    }
}

impl AccountActor {
    /// Forgets `ghids` (see [`Ledger::forget_unadopted`]) and removes their vault records
    /// while the mailbox waits; then `then`.
    pub(super) fn forget_unadopted(
        &mut self,
        ctx: &mut Context<Self>,
        ghids: Vec<Ghid>,
        why: &'static str,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        let gone = match self.ledger.as_mut() {
            Some(l) if !ghids.is_empty() => l.forget_unadopted(&self.base, ghids, why),
            _ => Vec::new(),
        };
        self.arm(ctx);
        if gone.is_empty() {
            then(self, ctx);
            return;
        }
        let local = self.base.local.clone();
        let task = local.runtime.spawn(forget_in_vault(local.clone(), gone));
        ctx.wait(task.into_actor(self).map(move |_, act, ctx| then(act, ctx)));
    }

    /// Forgets the received shares past [`MAX_UNADOPTED_AGE`].
    pub(super) fn expire(&mut self, ctx: &mut Context<Self>) {
        let old = self
            .ledger
            .as_mut()
            .map(|l| l.date_and_expire(now_millis()))
            .unwrap_or_default();
        self.forget_unadopted(ctx, old, "older than the age bound", |_, _| {});
    }
}

/// How many entries one admission may evict: one frees a place, since a victim an app has
/// live is adopted (out of the count) rather than forgotten; the answer is taken again after
/// each eviction all the same, so it always reflects the state the share will join.
const MAX_EVICTIONS_PER_SHARE: usize = 2;

impl AccountActor {
    /// Answers `m` on `tx` ([`admission`]), after evicting for it, then answering from the
    /// state after the eviction (at most `evictions` more; past them, refused).
    fn admit(
        &mut self,
        ctx: &mut Context<Self>,
        m: AdmitShare,
        tx: tokio::sync::oneshot::Sender<Result<Admission, DaemonError>>,
        evictions: usize,
    ) {
        let Some((l, st)) = self.ledger.as_ref().and_then(|l| Some((l, l.state()?))) else {
            let _ = tx.send(Err(DaemonError::ShuttingDown));
            return;
        };
        let (admission, evict) = admission(st, &m.ghid, &m.sharer, l.limits);
        let Some(evicted) = evict else {
            let _ = tx.send(Ok(admission));
            return;
        };
        if evictions == 0 {
            let _ = tx.send(Ok(Admission::PastTotal));
            return;
        }
        let from = st.received_shares.get(&evicted).copied();
        slog::info!(l.log, "unadopted shares at the bound in all: the heaviest sharer's newest is evicted";
            "evicted" => %evicted, "its_sharer" => ?from, "for" => %m.sharer);
        self.forget_unadopted(
            ctx,
            vec![evicted],
            "evicted by a lighter sharer",
            move |act, ctx| {
                act.admit(ctx, m, tx, evictions - 1);
            },
        );
    }
}

impl Handler<AdmitShare> for AccountActor {
    type Result = ResponseFuture<Result<Admission, DaemonError>>;

    fn handle(&mut self, m: AdmitShare, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let old = self
            .ledger
            .as_mut()
            .map(|l| l.date_and_expire(now_millis()))
            .unwrap_or_default();
        self.forget_unadopted(ctx, old, "older than the age bound", move |act, ctx| {
            act.admit(ctx, m, tx, MAX_EVICTIONS_PER_SHARE);
        });
        Box::pin(async move { rx.await.unwrap_or(Err(DaemonError::ShuttingDown)) })
    }
}

impl Handler<Adopt> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: Adopt, ctx: &mut Context<Self>) {
        self.with(ctx, |l| l.adopt(m.0));
    }
}

impl Handler<AdoptLoaded> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: AdoptLoaded, ctx: &mut Context<Self>) {
        let record = SecretRecord {
            stored: m.stored.clone(),
            counter: m.counter,
        };
        let forgotten = self.with(ctx, |l| {
            l.adopt(m.ghid);
            // A forget ran while the load read the secret: the object is live, the app's.
            let forgotten = l.state().is_some_and(|st| !st.secrets.contains_key(&m.ghid));
            if forgotten {
                slog::info!(l.log, "a share forgotten while an app loaded it is that app's: recorded again";
                    "ghid" => %m.ghid);
                l.record_secret(m.ghid, m.stored, m.counter, m.api_id, None);
            }
            forgotten
        });
        if forgotten != Some(true) {
            return;
        }
        // The forget removed the vault records too (secret, "followed"): put them back
        // while the mailbox waits, so a later forget's removal comes after.
        let (local, upstream) = (self.base.local.clone(), self.base.upstream.clone());
        let task = local
            .runtime
            .clone()
            .spawn(restore_in_vault(local, upstream, m.ghid, record));
        ctx.wait(task.into_actor(self).map(|_, _, _| {}));
    }
}

/// Records again here a forgotten share an app loaded meanwhile: its secret (unless the
/// vault holds a newer one: the live object may have moved on) and its following, as
/// accepting a share does ([`Upstream::follow`]: the "followed" flag, and subscribed).
async fn restore_in_vault(local: Arc<Local>, upstream: Upstream, ghid: Ghid, record: SecretRecord) {
    let log = local.log.clone();
    let restored = local
        .runtime
        .clone()
        .spawn_blocking(move || {
            let newer =
                matches!(local.secret(&ghid), Ok(Some(old)) if old.counter >= record.counter);
            if !newer {
                local.put_secret(&ghid, &record)?;
            }
            upstream.follow(&local, ghid)
        })
        .await
        .map_err(|e| DaemonError::Storage(format!("task failed: {e}")))
        .and_then(|r| r);
    if let Err(e) = restored {
        slog::warn!(log, "cannot record again a forgotten share an app loaded"; "ghid" => %ghid, "error" => %e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::account::StoredSecret;
    use crate::golix::{Algo, Secret};

    fn ghid() -> Ghid {
        Ghid::pseudorandom(Algo::SHA512)
    }

    fn stored() -> StoredSecret {
        StoredSecret {
            secret: Secret::random(),
            container: ghid(),
        }
    }

    /// `n` received shares of `sharer`, with their secrets, received one a millisecond apart from
    /// `at` on.
    fn receive_at(st: &mut AccountState, sharer: Ghid, n: usize, at: u64) -> Vec<Ghid> {
        (0..n)
            .map(|i| {
                let g = ghid();
                st.secrets.insert(g, stored());
                st.received_shares.insert(g, sharer);
                st.received_at.insert(g, at + i as u64);
                g
            })
            .collect()
    }

    fn receive(st: &mut AccountState, sharer: Ghid, n: usize) -> Vec<Ghid> {
        receive_at(st, sharer, n, 1000)
    }

    const LIMITS: ShareLimits = ShareLimits {
        per_sharer: 3,
        total: 5,
    };

    #[test]
    fn admission_counts_per_sharer_and_in_all() {
        let (a, b, c) = (ghid(), ghid(), ghid());
        let mut st = AccountState::default();
        let from_a = receive(&mut st, a, 3);
        assert_eq!(
            admission(&st, &ghid(), &a, LIMITS),
            (Admission::PastPerSharer, None)
        );
        assert_eq!(
            admission(&st, &from_a[0], &a, LIMITS),
            (Admission::Again, None)
        );
        assert_eq!(
            admission(&st, &ghid(), &b, LIMITS),
            (Admission::Allowed, None)
        );
        receive(&mut st, b, 2);
        // Full: c (none yet) evicts the newest of a (the heaviest); b (2 < 3) too.
        assert_eq!(
            admission(&st, &ghid(), &c, LIMITS),
            (Admission::Allowed, Some(from_a[2]))
        );
        // Known without an entry: ours (adopted, or our own object).
        let ours = ghid();
        st.secrets.insert(ours, stored());
        assert_eq!(admission(&st, &ours, &c, LIMITS), (Admission::Ours, None));
    }

    #[test]
    fn at_the_bound_in_all_a_lighter_sharer_evicts_the_heaviest_ones_newest() {
        // Many throw-away identities fill the bound; a sharer with few still gets in.
        let limits = ShareLimits {
            per_sharer: 5,
            total: 8,
        };
        let (x, y, honest) = (ghid(), ghid(), ghid());
        let mut st = AccountState::default();
        let from_x = receive_at(&mut st, x, 4, 100);
        let from_y = receive_at(&mut st, y, 4, 200);
        // Tied heaviest: the one whose newest entry is the oldest (x) loses its newest.
        let (adm, evicted) = admission(&st, &ghid(), &honest, limits);
        assert_eq!((adm, evicted), (Admission::Allowed, Some(from_x[3])));
        st.received_shares.remove(&from_x[3]);
        receive_at(&mut st, honest, 1, 300);
        // Now y holds the most: the heaviest itself is refused ...
        assert_eq!(
            admission(&st, &ghid(), &y, limits),
            (Admission::PastTotal, None)
        );
        // ... and x (3 < 4) evicts y's newest, as does the honest sharer (1 < 4).
        assert_eq!(
            admission(&st, &ghid(), &x, limits),
            (Admission::Allowed, Some(from_y[3]))
        );
        assert_eq!(
            admission(&st, &ghid(), &honest, limits),
            (Admission::Allowed, Some(from_y[3]))
        );
        // One holding as many as the heaviest is refused: no churn between equals.
        st.received_shares.remove(&from_y[3]);
        receive_at(&mut st, honest, 1, 400);
        assert_eq!(
            admission(&st, &ghid(), &x, limits),
            (Admission::PastTotal, None)
        );
    }

    #[test]
    fn throw_away_identities_cannot_take_turns_evicting_a_share_just_admitted() {
        // The bound in all is full of one share each from throw-away identities.
        let limits = ShareLimits {
            per_sharer: 4,
            total: 16,
        };
        let mut st = AccountState::default();
        let ids: Vec<Ghid> = (0..16).map(|_| ghid()).collect();
        for (i, id) in ids.iter().enumerate() {
            receive_at(&mut st, *id, 1, 100 + i as u64);
        }
        // An honest sharer (0 < 1) gets in; each identity evicted (back to 0) shares again.
        let honest = ghid();
        let evict = |st: &mut AccountState, sharer: Ghid| -> (Ghid, Ghid) {
            let (adm, evicted) = admission(st, &ghid(), &sharer, limits);
            assert_eq!(adm, Admission::Allowed);
            let evicted = evicted.expect("an eviction at the bound");
            let its_sharer = st.received_shares.remove(&evicted).expect("an entry");
            st.received_at.remove(&evicted);
            (evicted, its_sharer)
        };
        let (_, mut again) = evict(&mut st, honest);
        let kept = receive_at(&mut st, honest, 1, 1000)[0];
        // The honest share, the newest of the tied heaviest, outlives every other one.
        for round in 1..16u64 {
            let (evicted, its_sharer) = evict(&mut st, again);
            assert_ne!(evicted, kept, "round {round}: the honest share evicted");
            receive_at(&mut st, again, 1, 1000 + round);
            again = its_sharer;
        }
        assert!(st.received_shares.contains_key(&kept));
    }

    #[test]
    fn unadopted_entries_past_the_age_bound_expire() {
        let a = ghid();
        let age = MAX_UNADOPTED_AGE.as_millis() as u64;
        let mut st = AccountState::default();
        let old = receive_at(&mut st, a, 1, 10)[0];
        let young = receive_at(&mut st, a, 1, 20)[0];
        assert!(expired(&st, 10 + age - 1).is_empty());
        assert_eq!(expired(&st, 10 + age), vec![old]);
        let mut both = vec![old, young];
        both.sort();
        let mut got = expired(&st, 20 + age);
        got.sort();
        assert_eq!(got, both);
        // Undated (an older root's): not expired until dated.
        st.received_at.clear();
        assert!(expired(&st, u64::MAX).is_empty());
    }

    #[test]
    fn a_merge_keeps_adoptions_of_either_side_and_the_bounds() {
        let (a, b) = (ghid(), ghid());
        // This machine: x received (new here), y adopted here, z received long ago.
        let mut here = AccountState::default();
        let x = receive(&mut here, a, 1)[0];
        let z = receive(&mut here, a, 1)[0];
        let y = ghid();
        here.secrets.insert(y, stored());
        // The other machine: y still received, z adopted there, w new there.
        let mut there = AccountState::default();
        there.secrets.insert(y, stored());
        there.received_shares.insert(y, a);
        there.received_at.insert(y, 5);
        there.secrets.insert(z, stored());
        let w = receive(&mut there, b, 1)[0];
        let adopted = adopted_elsewhere(&here, &there);
        assert_eq!(adopted, vec![z]);
        merge_received(&here, &mut there, &adopted, u64::MAX);
        let keys: Vec<Ghid> = there.received_shares.keys().copied().collect();
        let mut expected = vec![x, w];
        expected.sort();
        assert_eq!(keys, expected);
        // Every entry keeps its secret and its date (x's came with it); y's date went.
        assert!(keys.iter().all(|g| there.secrets.contains_key(g)));
        let dated: Vec<Ghid> = there.received_at.keys().copied().collect();
        assert_eq!(dated, expected);
    }

    #[test]
    fn a_merge_dates_an_entry_from_a_clock_ahead_now() {
        let a = ghid();
        let (mut here, mut there) = (AccountState::default(), AccountState::default());
        let ours = receive_at(&mut here, a, 1, 5_000)[0];
        let theirs = receive_at(&mut there, a, 1, 9_000)[0];
        let early = receive_at(&mut there, a, 1, 10)[0];
        merge_received(&here, &mut there, &[], 1_000);
        assert_eq!(there.received_at.get(&ours), Some(&1_000));
        assert_eq!(there.received_at.get(&theirs), Some(&1_000));
        assert_eq!(there.received_at.get(&early), Some(&10));
    }

    #[test]
    fn a_merge_trims_the_heaviest_sharers_newest_and_only_past_what_each_side_kept() {
        let (attacker, honest) = (ghid(), ghid());
        // The newer root (the other machine's) holds 2 of the attacker's; ours brings 3
        // more of its and 3 honest ones: 8, past the bounds of 3 per sharer and 5 in all.
        let mut there = AccountState::default();
        let early = receive_at(&mut there, attacker, 2, 100);
        let theirs = there.received_shares.clone();
        let mut st = there.clone();
        let late = receive_at(&mut st, attacker, 3, 200);
        let good = receive_at(&mut st, honest, 3, 150);
        let mut over = over_limits(&st, LIMITS, &theirs);
        over.sort();
        // Per sharer: the attacker's 2 newest; in all (6 > 5): of the tied heaviest, the
        // one whose newest entry is the oldest (the honest one's), whatever the ghids.
        let mut expected = vec![late[1], late[2], good[2]];
        expected.sort();
        assert_eq!(over, expected, "early {early:?}");

        // A root another machine kept past our (lower) bounds alone is not trimmed, and a
        // merge trims only what it adds past it.
        let mut big = AccountState::default();
        receive_at(&mut big, attacker, 4, 100);
        receive_at(&mut big, honest, 3, 100);
        let theirs = big.received_shares.clone();
        assert!(over_limits(&big, LIMITS, &theirs).is_empty());
        let extra = receive_at(&mut big, attacker, 1, 500);
        assert_eq!(over_limits(&big, LIMITS, &theirs), extra);
    }

    #[test]
    fn only_unadopted_orphans_no_longer_offered_are_forgotten() {
        let (a, b) = (ghid(), ghid());
        let mut st = AccountState::default();
        let got = receive(&mut st, a, 2);
        let ours = ghid();
        st.secrets.insert(ours, stored());
        let orphan = |g: Ghid, origin: Ghid| OrphanShare {
            ghid: g,
            origin,
            api_id: None,
        };
        // got[1] is still offered by b's orphan share.
        st.orphan_shares.push(orphan(got[1], b));
        let dropped = vec![orphan(got[0], a), orphan(got[1], a), orphan(ours, a)];
        assert_eq!(unadopted_of(&st, &dropped), vec![got[0]]);
    }
}
