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
//! on one of the daemon's arbiters, holding the core weakly. Messages: [`Deleted`] (from
//! objects and pulls), [`Sweep`] (from `DaemonHandle`, on demand). Its archive and vault work
//! runs on the daemon's blocking pool. Calls: `DaemonCore` (archive queries, vault, account).

use std::sync::Weak;
use std::time::Duration;

use actix::prelude::*;

use super::arbiters::ActorThreads;
use super::daemon_core::DaemonCore;
use super::error::DaemonError;
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

/// The sweeper. It holds the core weakly: the core holds its address.
pub struct GcActor {
    core: Weak<DaemonCore>,
}

impl Actor for GcActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_INTERVAL, |act, _| {
            let Some(core) = act.core.upgrade() else {
                return;
            };
            let rt = core.runtime.clone();
            rt.spawn_blocking(move || {
                if let Err(e) = sweep(&core) {
                    slog::warn!(core.log, "gc: sweep failed"; "error" => %e);
                }
            });
        });
    }
}

impl Handler<Deleted> for GcActor {
    type Result = ();

    fn handle(&mut self, msg: Deleted, _: &mut Context<Self>) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        // Archive and vault I/O: on the daemon's blocking pool, not the actor's thread.
        let rt = core.runtime.clone();
        rt.spawn_blocking(move || {
            if let Err(e) = forget_if_gone(&core, &msg.0, false) {
                slog::warn!(core.log, "gc: cannot forget a deleted object"; "ghid" => %msg.0, "error" => %e);
            }
        });
    }
}

impl Handler<Sweep> for GcActor {
    type Result = ResponseFuture<Result<usize, DaemonError>>;

    fn handle(&mut self, _: Sweep, _: &mut Context<Self>) -> Self::Result {
        let core = self.core.upgrade();
        Box::pin(async move {
            let core = core.ok_or(DaemonError::ShuttingDown)?;
            let rt = core.runtime.clone();
            rt.spawn_blocking(move || sweep(&core))
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
    /// Starts the `GcActor` on one of `threads`; `core` is the core being built.
    pub fn start(threads: &ActorThreads, core: Weak<DaemonCore>) -> GcHandle {
        let addr = GcActor::start_in_arbiter(&threads.next(), move |_| GcActor { core });
        GcHandle { addr }
    }

    /// `ghid` was deleted upstream or locally: forget its secrets if it is gone here.
    pub fn deleted(&self, ghid: Ghid) {
        self.addr.do_send(Deleted(ghid));
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
fn forget_if_gone(
    core: &DaemonCore,
    ghid: &Ghid,
    need_debinding: bool,
) -> Result<bool, DaemonError> {
    if core.archive.status(ghid)? == Status::Present {
        return Ok(false);
    }
    let live = || core.objects.get(ghid).is_some();
    if need_debinding && (live() || core.archive.query_debinding(ghid)?.is_none()) {
        return Ok(false);
    }
    core.forget_secret(ghid)?;
    core.account.forget(*ghid);
    // A followed object is not followed any more.
    core.unsubscribe(*ghid);
    slog::debug!(core.log, "gc: forgot a removed object"; "ghid" => %ghid);
    Ok(true)
}

/// Every recorded object that the archive reports debound and absent is forgotten.
fn sweep(core: &DaemonCore) -> Result<usize, DaemonError> {
    let mut n = 0;
    for ghid in core.secret_ghids()? {
        if forget_if_gone(core, &ghid, true)? {
            n += 1;
        }
    }
    Ok(n)
}
