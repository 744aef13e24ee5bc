//! `GcActor`: the daemon's sweeper.
//!
//! The archive already collects unreferenced Golix objects as part of every publish (the
//! rules' cascade), so what is left to the sweeper is everything *beside* the objects: the
//! secrets and metadata of objects that are gone. It acts only on positive evidence of
//! removal — an object we were told was deleted and that no longer exists locally, or a
//! recorded object that the archive reports debound and absent — never on mere absence (a
//! second machine of the user legitimately holds secrets for objects it never fetched).
//!
//! Owns: nothing but its schedule. Calls: `DaemonCore` (archive queries, vault, ledger).
//! Messages: `Deleted(ghid)` (from objects and remotes), `Sweep` (periodic, and on demand).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OnceCell};

use super::daemon_core::DaemonCore;
use super::error::DaemonError;
use crate::golix::Ghid;
use crate::persist::Status;

/// Time between periodic sweeps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

enum GcMsg {
    Deleted(Ghid),
    Sweep {
        reply: oneshot::Sender<Result<usize, DaemonError>>,
    },
    Stop,
}

/// Talks to the `GcActor`. Cheap to clone.
#[derive(Clone)]
pub struct GcHandle {
    tx: mpsc::UnboundedSender<GcMsg>,
}

/// The receiving end, consumed by [`spawn`].
pub struct GcInbox(mpsc::UnboundedReceiver<GcMsg>);

impl GcHandle {
    pub fn channel() -> (GcHandle, GcInbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        (GcHandle { tx }, GcInbox(rx))
    }

    /// `ghid` was deleted upstream or locally: forget its secrets if it is gone here.
    pub fn deleted(&self, ghid: Ghid) {
        let _ = self.tx.send(GcMsg::Deleted(ghid));
    }

    /// Sweeps now; returns how many objects were forgotten.
    pub async fn sweep(&self) -> Result<usize, DaemonError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(GcMsg::Sweep { reply })
            .map_err(|_| DaemonError::ShuttingDown)?;
        rx.await.map_err(|_| DaemonError::ShuttingDown)?
    }

    pub fn stop(&self) {
        let _ = self.tx.send(GcMsg::Stop);
    }
}

/// Starts the `GcActor`; `core` is filled in once the core exists.
pub fn spawn(inbox: GcInbox, core: Arc<OnceCell<Weak<DaemonCore>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(inbox.0, core))
}

async fn run(mut rx: mpsc::UnboundedReceiver<GcMsg>, core: Arc<OnceCell<Weak<DaemonCore>>>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.tick().await;
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = tick.tick() => Some(GcMsg::Sweep { reply: oneshot::channel().0 }),
        };
        let Some(msg) = msg else { return };
        let Some(core) = core.get().and_then(Weak::upgrade) else {
            if matches!(msg, GcMsg::Stop) {
                return;
            }
            continue;
        };
        match msg {
            GcMsg::Deleted(ghid) => {
                if let Err(e) = forget_if_gone(&core, &ghid, false) {
                    slog::warn!(core.log, "gc: cannot forget a deleted object"; "ghid" => %ghid, "error" => %e);
                }
            }
            GcMsg::Sweep { reply } => {
                let _ = reply.send(sweep(&core));
            }
            GcMsg::Stop => return,
        }
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
    core.ledger.forget(*ghid);
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
