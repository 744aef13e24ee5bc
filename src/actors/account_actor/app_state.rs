//! The `AccountActor`'s handlers for what apps keep in the account (sent by `dispatch` and
//! the share actor): app tokens, startup and private objects, orphan and pending shares.

use actix::prelude::*;

use super::received;
use super::{
    AccountActor, AddPending, ClearStartup, CopyPrivate, DropPending, DropToken, KeepOrphan,
    MakePublic, NewToken, PrivateTo, SetPrivate, SetStartup, TakeOrphans, TakePending,
    TokenStartup, MAX_ORPHAN_SHARES,
};
use crate::actors::account::OrphanShare;
use crate::actors::api::AppToken;
use crate::actors::error::DaemonError;

impl Handler<NewToken> for AccountActor {
    type Result = Result<AppToken, DaemonError>;

    fn handle(&mut self, _: NewToken, ctx: &mut Context<Self>) -> Self::Result {
        let token = self.with(ctx, |l| l.new_token());
        token.unwrap_or(Err(DaemonError::ShuttingDown))
    }
}

impl Handler<DropToken> for AccountActor {
    type Result = ();

    fn handle(&mut self, m: DropToken, ctx: &mut Context<Self>) {
        self.with(ctx, |l| l.drop_token(m.0));
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
        let r = self.with(ctx, |l| l.set_startup(m.token, m.ghid));
        r.unwrap_or(Err(DaemonError::ShuttingDown))
    }
}

impl Handler<ClearStartup> for AccountActor {
    type Result = Result<(), DaemonError>;

    fn handle(&mut self, m: ClearStartup, ctx: &mut Context<Self>) -> Self::Result {
        let r = self.with(ctx, |l| l.clear_startup(m.0));
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
        let forget = self.with(ctx, |l| {
            if l.state().is_some_and(|st| st.orphan_shares.contains(&m.0)) {
                return Vec::new();
            }
            let dropped = l
                .edit(|st| {
                    st.orphan_shares.push(m.0);
                    let over = st.orphan_shares.len().saturating_sub(MAX_ORPHAN_SHARES);
                    st.orphan_shares.drain(..over).collect::<Vec<_>>()
                })
                .unwrap_or_default();
            for o in &dropped {
                slog::warn!(l.log, "too many shares no app handles: the oldest is no longer offered";
                    "ghid" => %o.ghid, "from" => %o.origin, "kept" => MAX_ORPHAN_SHARES);
            }
            l.state()
                .map(|st| received::unadopted_of(st, &dropped))
                .unwrap_or_default()
        });
        // Its vault records go before the next message (a re-share of it must not lose
        // its fresh secret to this).
        self.forget_unadopted(ctx, forget.unwrap_or_default(), "orphan dropped", |_, _| {});
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
