//! `GcActor`: the daemon's sweeper.
//!
//! The archive already collects unreferenced Golix objects as part of every publish (the
//! rules' cascade), so what is left to the sweeper is everything *beside* the objects: the
//! secrets and metadata of objects that are gone. It acts only on positive evidence of
//! removal — an object we were told was deleted and that no longer exists locally, or a
//! recorded object that the archive reports debound and absent — never on mere absence (a
//! second machine of the user legitimately holds secrets for objects it never fetched).
//!
//! Owns: nothing but its schedule (`run_interval`, every [`SWEEP_INTERVAL`]); an actix actor
//! on one of the daemon's arbiters. Messages: [`Deleted`] (from `ObjectActor`s and `pull`,
//! through a `Recipient<Deleted>`), [`Sweep`] (from `DaemonHandle`, on demand). Its archive
//! and vault work runs on the daemon's blocking pool.
//!
//! Peers: the `AccountActor` (`Forget`), the remotes ([`Upstream::unsubscribe`]) and the
//! object registry as a [`Liveness`], held weakly (it holds the actors that send us
//! `Deleted`), to skip live objects. Calls: [`Local`] (archive queries, vault).

use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use actix::WeakRecipient;

use super::account_actor::AccountHandle;
use super::arbiters::Arbiters;
use super::error::DaemonError;
use super::local::Local;
use super::upstream::Upstream;
use crate::golix::Ghid;
use crate::persist::Status;

/// Time between periodic sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// `ghid` was deleted upstream or locally: forget its secrets if it is gone here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deleted(pub Ghid);

/// Sweep now; answers how many objects were forgotten.
#[derive(Message)]
#[rtype(result = "Result<usize, DaemonError>")]
pub struct Sweep;

/// Whether an object has a live actor (the object registry answers; the GC does not name
/// it, so it does not depend on the object actors that send it `Deleted`).
pub trait Liveness: Send + Sync {
    fn is_live(&self, ghid: &Ghid) -> bool;
}

/// What the sweeper reaches.
pub struct GcPeers {
    pub local: Arc<Local>,
    pub upstream: Upstream,
    pub account: AccountHandle,
    /// The object registry, held weakly (it holds the actors that send us `Deleted`).
    pub objects: Weak<dyn Liveness>,
}

/// The sweeper.
pub struct GcActor {
    peers: Arc<GcPeers>,
}

impl Actor for GcActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_INTERVAL, |act, _| {
            let peers = act.peers.clone();
            let rt = peers.local.runtime.clone();
            rt.spawn_blocking(move || {
                if let Err(e) = sweep(&peers) {
                    slog::warn!(peers.local.log, "gc: sweep failed"; "error" => %e);
                }
            });
        });
    }
}

impl Handler<Deleted> for GcActor {
    type Result = ();

    fn handle(&mut self, msg: Deleted, _: &mut Context<Self>) {
        let peers = self.peers.clone();
        // Archive and vault I/O: on the daemon's blocking pool, not the actor's thread.
        let rt = peers.local.runtime.clone();
        rt.spawn_blocking(move || {
            if let Err(e) = forget_if_gone(&peers, &msg.0, false) {
                slog::warn!(peers.local.log, "gc: cannot forget a deleted object"; "ghid" => %msg.0, "error" => %e);
            }
        });
    }
}

impl Handler<Sweep> for GcActor {
    type Result = ResponseFuture<Result<usize, DaemonError>>;

    fn handle(&mut self, _: Sweep, _: &mut Context<Self>) -> Self::Result {
        let peers = self.peers.clone();
        Box::pin(async move {
            let rt = peers.local.runtime.clone();
            rt.spawn_blocking(move || sweep(&peers))
                .await
                .map_err(|e| DaemonError::Storage(format!("gc task failed: {e}")))?
        })
    }
}

/// Talks to the `GcActor`. Cheap to clone.
#[derive(Clone)]
pub struct GcHandle {
    addr: Addr<GcActor>,
}

impl GcHandle {
    /// Starts the `GcActor` on one of `arbiters`.
    pub fn start(arbiters: &Arbiters, peers: GcPeers) -> GcHandle {
        let peers = Arc::new(peers);
        let addr = GcActor::start_in_arbiter(&arbiters.next(), move |_| GcActor { peers });
        GcHandle { addr }
    }

    /// Where objects and pulls report deletions (weakly: the GC's owner is `DaemonHandle`).
    pub fn deleted(&self) -> WeakRecipient<Deleted> {
        self.addr.clone().recipient().downgrade()
    }

    /// Sweeps now; returns how many objects were forgotten.
    pub async fn sweep(&self) -> Result<usize, DaemonError> {
        self.addr
            .send(Sweep)
            .await
            .map_err(|_| DaemonError::ShuttingDown)?
    }
}

/// Forgets `ghid`'s secret and metadata (locally and in the account) if the archive no longer
/// has it and, when `need_debinding`, it was debound.
fn forget_if_gone(peers: &GcPeers, ghid: &Ghid, need_debinding: bool) -> Result<bool, DaemonError> {
    let local = &peers.local;
    if local.archive.status(ghid)? == Status::Present {
        return Ok(false);
    }
    let live = || peers.objects.upgrade().is_some_and(|o| o.is_live(ghid));
    if need_debinding && (live() || local.archive.query_debinding(ghid)?.is_none()) {
        return Ok(false);
    }
    local.forget_secret(ghid)?;
    peers.account.forget(*ghid);
    // A followed object is not followed any more.
    peers.upstream.unsubscribe(*ghid);
    slog::debug!(local.log, "gc: forgot a removed object"; "ghid" => %ghid);
    Ok(true)
}

/// Every recorded object that the archive reports debound and absent is forgotten.
fn sweep(peers: &GcPeers) -> Result<usize, DaemonError> {
    let mut n = 0;
    for ghid in peers.local.secret_ghids()? {
        if forget_if_gone(peers, &ghid, true)? {
            n += 1;
        }
    }
    Ok(n)
}
