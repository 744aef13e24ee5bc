//! The account's shares received from other users and not adopted yet
//! (`AccountState::received_shares`, object -> sharer): whether one more may be accepted
//! under the [`ShareLimits`] ([`AdmitShare`], from the share actor), adoption ([`Adopt`],
//! from `DaemonHandle`, `dispatch` and `share`: an app of ours acted on the object;
//! [`AdoptLoaded`], from `DaemonHandle` after a load), how two machines' entries merge, and
//! forgetting what a share no app adopted brought once it is dropped (its secret here and in
//! the account, its api id, its subscription on every remote).
//!
//! Forgetting never touches an object with a live object actor (it is an app's: the entry
//! is dropped as adopted), and removes the vault records while the mailbox waits, so an
//! `AdmitShare` or `RecordSecret` handled after it cannot be undone by it.
//!
//! Pure functions over the state, the `Ledger`'s forgetting, and the handlers.

use std::sync::Arc;

use actix::prelude::*;

use super::{AccountActor, Admission, AdmitShare, Adopt, AdoptLoaded, Base, Ledger, ShareLimits};
use crate::actors::account::{AccountState, OrphanShare};
use crate::actors::error::DaemonError;
use crate::actors::local::Local;
use crate::golix::Ghid;

/// Whether `sharer`'s share of `ghid` may be accepted (see [`Admission`]).
pub(super) fn admission(
    st: &AccountState,
    ghid: &Ghid,
    sharer: &Ghid,
    limits: ShareLimits,
) -> Admission {
    if st.received_shares.contains_key(ghid) {
        return Admission::Again;
    }
    if st.secrets.contains_key(ghid) {
        return Admission::Ours;
    }
    let from_sharer = st.received_shares.values().filter(|s| *s == sharer).count();
    if from_sharer >= limits.per_sharer {
        return Admission::PastPerSharer;
    }
    if st.received_shares.len() >= limits.total {
        return Admission::PastTotal;
    }
    Admission::Allowed
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
/// carried over brings its secret and api id if `to` lacks them (the other machine forgot
/// it, or wrote its root without ours), so every entry keeps its secret; the bounds are
/// applied to the result ([`over_limits`]).
pub(super) fn merge_received(from: &AccountState, to: &mut AccountState, adopted: &[Ghid]) {
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
        to.secrets.entry(*g).or_insert_with(|| secret.clone());
        if let Some(api_id) = from.api_ids.get(g) {
            to.api_ids.entry(*g).or_insert(*api_id);
        }
    }
}

/// The received shares past `limits` (per sharer, then in all), to forget: after a merge the
/// union of two machines' entries may exceed them. The first in ghid order stay.
pub(super) fn over_limits(st: &AccountState, limits: ShareLimits) -> Vec<Ghid> {
    let mut per_sharer = std::collections::HashMap::<Ghid, usize>::new();
    let mut kept = 0;
    let mut over = Vec::new();
    for (g, sharer) in &st.received_shares {
        let n = per_sharer.entry(*sharer).or_default();
        if *n >= limits.per_sharer || kept >= limits.total {
            over.push(*g);
        } else {
            *n += 1;
            kept += 1;
        }
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
    /// `ghid` is an app's now: no longer counted as received.
    pub(super) fn adopt(&mut self, ghid: Ghid) {
        if self
            .state()
            .is_some_and(|st| st.received_shares.contains_key(&ghid))
        {
            self.edit(|st| st.received_shares.remove(&ghid));
        }
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
}

impl Handler<AdmitShare> for AccountActor {
    type Result = Result<Admission, DaemonError>;

    fn handle(&mut self, m: AdmitShare, _: &mut Context<Self>) -> Self::Result {
        let l = self.ledger.as_ref().ok_or(DaemonError::ShuttingDown)?;
        let st = l.state().ok_or(DaemonError::ShuttingDown)?;
        Ok(admission(st, &m.ghid, &m.sharer, l.limits))
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
        self.with(ctx, |l| {
            l.adopt(m.ghid);
            // A forget ran while the load read the secret: the object is live, the app's.
            if l.state().is_some_and(|st| !st.secrets.contains_key(&m.ghid)) {
                slog::info!(l.log, "a share forgotten while an app loaded it is that app's: recorded again";
                    "ghid" => %m.ghid);
                l.record_secret(m.ghid, m.stored, m.counter, m.api_id, None);
            }
        });
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

    /// `n` received shares of `sharer`, with their secrets.
    fn receive(st: &mut AccountState, sharer: Ghid, n: usize) -> Vec<Ghid> {
        (0..n)
            .map(|_| {
                let g = ghid();
                st.secrets.insert(g, stored());
                st.received_shares.insert(g, sharer);
                g
            })
            .collect()
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
            Admission::PastPerSharer
        );
        assert_eq!(admission(&st, &from_a[0], &a, LIMITS), Admission::Again);
        assert_eq!(admission(&st, &ghid(), &b, LIMITS), Admission::Allowed);
        receive(&mut st, b, 2);
        assert_eq!(admission(&st, &ghid(), &c, LIMITS), Admission::PastTotal);
        // Known without an entry: ours (adopted, or our own object).
        let ours = ghid();
        st.secrets.insert(ours, stored());
        assert_eq!(admission(&st, &ours, &c, LIMITS), Admission::Ours);
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
        there.secrets.insert(z, stored());
        let w = receive(&mut there, b, 1)[0];
        let adopted = adopted_elsewhere(&here, &there);
        assert_eq!(adopted, vec![z]);
        merge_received(&here, &mut there, &adopted);
        let keys: Vec<Ghid> = there.received_shares.keys().copied().collect();
        let mut expected = vec![x, w];
        expected.sort();
        assert_eq!(keys, expected);
        // Every entry keeps its secret (x's came with it).
        assert!(keys.iter().all(|g| there.secrets.contains_key(g)));

        // Over the bounds after a union: the excess is named.
        let mut st = AccountState::default();
        receive(&mut st, a, 4);
        receive(&mut st, b, 3);
        let over = over_limits(&st, LIMITS);
        assert_eq!(over.len(), 2, "one of a's and one more past the total");
        for g in &over {
            st.received_shares.remove(g);
        }
        assert!(over_limits(&st, LIMITS).is_empty());
        assert_eq!(st.received_shares.len(), LIMITS.total);
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
