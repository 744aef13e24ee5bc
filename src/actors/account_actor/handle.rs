//! [`AccountHandle`]: how everyone else reaches the `AccountActor` (typed asks and tells),
//! and where it starts. The handle holds the actor weakly: only its owner (`DaemonHandle`,
//! through the address [`AccountHandle::start`] returns) keeps it alive, so no cycle of
//! strong addresses keeps it running.

use std::sync::{Arc, Weak};

use actix::prelude::*;
use actix::WeakAddr;

use super::{
    AccountActor, Base, Flush, Forget, Ledger, Lookup, RecordHold, RecordSecret, Refresh,
    ShareLimits, Stop,
};
use crate::actors::account::{Account, StoredSecret};
use crate::actors::account_lag::FlushedCounters;
use crate::actors::arbiters::Arbiters;
use crate::actors::error::DaemonError;
use crate::actors::gc::Liveness;
use crate::actors::local::Local;
use crate::actors::upstream::Upstream;
use crate::golix::{Ghid, Secret};

/// Talks to the `AccountActor`. Cheap to clone.
#[derive(Clone)]
pub struct AccountHandle {
    addr: WeakAddr<AccountActor>,
    flushed: FlushedCounters,
}

impl AccountHandle {
    /// Starts the `AccountActor` on one of `arbiters`: its owning address and a handle.
    pub fn start(
        arbiters: &Arbiters,
        account: Account,
        root_secret: Secret,
        local: Arc<Local>,
        upstream: Upstream,
        limits: ShareLimits,
        objects: Weak<dyn Liveness>,
    ) -> (Addr<AccountActor>, AccountHandle) {
        let log = local.log.clone();
        // An account opened dirty (it continues after a root frame whose container a crash
        // lost) flushes at once, so the stores get a whole root above that frame.
        let shared = FlushedCounters::default();
        let ledger = Ledger::new(account, root_secret, shared.clone(), limits, log);
        let addr = AccountActor::start_in_arbiter(&arbiters.next(), move |_| AccountActor {
            ledger: Some(ledger),
            base: Base {
                local,
                upstream,
                objects,
            },
            flush_queued: false,
            timer: None,
        });
        let handle = AccountHandle {
            addr: addr.downgrade(),
            flushed: shared,
        };
        (addr, handle)
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
        let addr = self.addr.upgrade().ok_or(DaemonError::ShuttingDown)?;
        addr.send(msg).await.map_err(|_| DaemonError::ShuttingDown)
    }

    /// Queues a message without waiting: handled after every message sent before it
    /// (dropped once the actor is gone: the daemon is shutting down).
    pub fn tell<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        AccountActor: Handler<M>,
    {
        if let Some(addr) = self.addr.upgrade() {
            addr.do_send(msg);
        }
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
            received_from: None,
        });
    }

    /// Records the secret of an object `sharer` shared with us (admitted with
    /// [`super::AdmitShare`]): received and not adopted yet, unless it is ours already.
    pub fn record_received_secret(
        &self,
        ghid: Ghid,
        stored: StoredSecret,
        counter: u64,
        api_id: Option<Ghid>,
        sharer: Ghid,
    ) {
        self.tell(RecordSecret {
            ghid,
            stored,
            counter,
            api_id,
            received_from: Some(sharer),
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
    /// [`super::REFRESH_INTERVAL`]).
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
