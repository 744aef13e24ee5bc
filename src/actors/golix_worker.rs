//! `GolixWorker`: the RSA-4096 signatures of the push path (a frame's container and the frame
//! itself) on an actix `SyncArbiter`, one thread per core for the whole process.
//!
//! Why not tokio's `spawn_blocking` (which the rarer operations still use: new objects,
//! freeze, hold, delete, handshakes): `benches/golix_dispatch.rs` dispatches the same
//! signature both ways from a 2-worker runtime, and the pool answered a lone signature and a
//! pair of them (a push) sooner (BENCHMARKS.md, "Golix work: SyncArbiter or
//! spawn_blocking"). Its threads do nothing but sign, so at most one signature per core runs
//! at a time, whatever else the blocking pool is doing (sled flushes, ingests).
//!
//! Owns: the pool, started on first use on its own actix system thread ("hgx-golix") and kept
//! for the life of the process, like tokio's blocking pool (started again if every one of its
//! threads is gone). Messages (typed replies):
//! [`SignContainer`], [`SignFrame`]. The identity travels with each message, so the daemons
//! of one process share the pool.
//!
//! Calls: `golix`. Used by `push`.

use std::sync::{Arc, Mutex};

use actix::prelude::*;

use super::error::DaemonError;
use crate::golix::{Error, FirstParty, Geoc, Gobd};

/// One signing thread of the pool.
pub struct GolixWorker;

impl Actor for GolixWorker {
    type Context = SyncContext<Self>;
}

/// Signs a container of ours built unsigned.
#[derive(Message)]
#[rtype(result = "Result<Geoc, Error>")]
pub struct SignContainer {
    pub identity: Arc<FirstParty>,
    pub container: Geoc,
}

impl Handler<SignContainer> for GolixWorker {
    type Result = Result<Geoc, Error>;

    fn handle(&mut self, m: SignContainer, _: &mut SyncContext<Self>) -> Self::Result {
        let mut g = m.container;
        m.identity.sign_container(&mut g)?;
        Ok(g)
    }
}

/// Signs a frame of ours built unsigned.
#[derive(Message)]
#[rtype(result = "Result<Gobd, Error>")]
pub struct SignFrame {
    pub identity: Arc<FirstParty>,
    pub frame: Gobd,
}

impl Handler<SignFrame> for GolixWorker {
    type Result = Result<Gobd, Error>;

    fn handle(&mut self, m: SignFrame, _: &mut SyncContext<Self>) -> Self::Result {
        let mut f = m.frame;
        m.identity.sign_frame(&mut f)?;
        Ok(f)
    }
}

static POOL: Mutex<Option<Addr<GolixWorker>>> = Mutex::new(None);

/// The pool's address (started on the first call; a start that failed is tried again at the
/// next call rather than remembered).
fn pool() -> Result<Addr<GolixWorker>, DaemonError> {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(addr) = pool.as_ref().filter(|a| a.connected()) {
        return Ok(addr.clone());
    }
    let addr = start().map_err(|e| DaemonError::Storage(format!("signing pool: {e}")))?;
    *pool = Some(addr.clone());
    Ok(addr)
}

fn start() -> Result<Addr<GolixWorker>, String> {
    let threads = super::arbiters::default_count();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("hgx-golix".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let addr = SyncArbiter::start_with_thread_builder(
                    threads,
                    || std::thread::Builder::new().name("hgx-golix-sign".into()),
                    || GolixWorker,
                );
                let _ = tx.send(addr);
            });
            // Runs for the life of the process (nothing stops this system).
            let _ = system.run();
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|_| "the pool did not start".to_owned())
}

/// Sends `msg` to the pool and awaits its typed reply.
async fn ask<M, T>(msg: M) -> Result<T, DaemonError>
where
    M: Message<Result = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
    GolixWorker: Handler<M>,
{
    pool()?
        .send(msg)
        .await
        .map_err(|e| DaemonError::Storage(format!("signing pool: {e}")))?
        .map_err(DaemonError::from)
}

/// Signs `container` (ours, unsigned) on the pool.
pub async fn sign_container(
    identity: Arc<FirstParty>,
    container: Geoc,
) -> Result<Geoc, DaemonError> {
    ask(SignContainer {
        identity,
        container,
    })
    .await
}

/// Signs `frame` (ours, unsigned) on the pool.
pub async fn sign_frame(identity: Arc<FirstParty>, frame: Gobd) -> Result<Gobd, DaemonError> {
    ask(SignFrame { identity, frame }).await
}
