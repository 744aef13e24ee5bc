//! How the daemon should run its CPU-bound Golix work (RSA sign, OAEP open, verify) off its
//! event loop: tokio's `spawn_blocking`, an actix `SyncArbiter` actor with one thread per
//! core (issue 13's alternative, the daemon's signing pool until session 11) or a
//! [`WorkPool`] (one queue, one condition variable: what `src/actors/golix_worker.rs` uses now). The same job, signing a 1 KiB
//! container with a fixture identity (`FirstParty::sign_container`, one RSA-4096 PSS
//! signature), dispatched from a 2-worker tokio runtime (the daemon's shape):
//!
//! - `one`: one job, awaited (the latency of a lone signature);
//! - `pair`: two jobs at once, both awaited (a push: its container and its frame);
//! - `burst32`: 32 jobs at once (throughput; criterion reports elements/s).
//!
//! Each is measured for every dispatcher, interleaved in one run; the medians (p50) are in
//! `target/criterion/dispatch/*/*/estimates.json` and in BENCHMARKS.md. Fixture identities
//! only: never generate RSA-4096 keys here.
//!
//! `cargo bench --bench golix_dispatch`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hypergolix::golix::{Error, FirstParty, Geoc, Secret};
use hypergolix::work_pool::WorkPool;

/// The `SyncArbiter` side: one actor per thread, each signing with the shared identity.
struct GolixWorker {
    identity: Arc<FirstParty>,
}

impl Actor for GolixWorker {
    type Context = SyncContext<Self>;
}

/// Signs an unsigned container of ours.
#[derive(Message)]
#[rtype(result = "Result<Geoc, Error>")]
struct SignContainer(Geoc);

impl Handler<SignContainer> for GolixWorker {
    type Result = Result<Geoc, Error>;

    fn handle(&mut self, m: SignContainer, _: &mut SyncContext<Self>) -> Self::Result {
        let mut g = m.0;
        self.identity.sign_container(&mut g)?;
        Ok(g)
    }
}

/// Starts an actix system on its own thread with a 2-thread `SyncArbiter` of workers.
fn start_arbiter(identity: Arc<FirstParty>) -> (Addr<GolixWorker>, actix_rt::System) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sys = actix_rt::System::new();
        sys.block_on(async move {
            let addr = SyncArbiter::start(2, move || GolixWorker {
                identity: identity.clone(),
            });
            tx.send((addr, actix_rt::System::current())).unwrap();
        });
        let _ = sys.run();
    });
    rx.recv().unwrap()
}

#[derive(Clone, Copy)]
enum Via {
    SpawnBlocking,
    SyncArbiter,
    WorkPool,
}

/// Where a job can go.
struct Dispatchers {
    arbiter: Addr<GolixWorker>,
    pool: WorkPool,
}

async fn sign(via: Via, id: &Arc<FirstParty>, to: &Dispatchers, g: Geoc) -> Geoc {
    match via {
        Via::SpawnBlocking => {
            let id = id.clone();
            tokio::task::spawn_blocking(move || {
                let mut g = g;
                id.sign_container(&mut g).map(|()| g)
            })
            .await
            .unwrap()
            .unwrap()
        }
        Via::SyncArbiter => to.arbiter.send(SignContainer(g)).await.unwrap().unwrap(),
        Via::WorkPool => {
            let id = id.clone();
            to.pool
                .run(move || {
                    let mut g = g;
                    id.sign_container(&mut g).map(|()| g)
                })
                .await
                .unwrap()
                .unwrap()
        }
    }
}

fn dispatch(c: &mut Criterion) {
    let identity = Arc::new(common::fixture(1));
    let unsigned = identity.unsigned_container(&[0x5a; 1024], &Secret::random());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (arbiter, system) = start_arbiter(identity.clone());
    let to = Arc::new(Dispatchers {
        arbiter,
        pool: WorkPool::new(2, "bench-sign").unwrap(),
    });

    let mut g = c.benchmark_group("dispatch");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let vias = [
        ("spawn_blocking", Via::SpawnBlocking),
        ("sync_arbiter", Via::SyncArbiter),
        ("work_pool", Via::WorkPool),
    ];
    g.throughput(Throughput::Elements(1));
    g.bench_function("one/inline", |b| {
        b.iter(|| {
            let mut u = unsigned.clone();
            identity.sign_container(&mut u).unwrap();
            u
        })
    });
    for (name, via) in vias {
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("one/{name}"), |b| {
            b.iter(|| rt.block_on(sign(via, &identity, &to, unsigned.clone())))
        });
    }
    for (name, via) in vias {
        g.throughput(Throughput::Elements(2));
        g.bench_function(format!("pair/{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    tokio::join!(
                        sign(via, &identity, &to, unsigned.clone()),
                        sign(via, &identity, &to, unsigned.clone())
                    )
                })
            })
        });
    }
    for (name, via) in vias {
        g.throughput(Throughput::Elements(32));
        g.bench_function(format!("burst32/{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let jobs: Vec<_> = (0..32)
                        .map(|_| {
                            let (id, to, u) = (identity.clone(), to.clone(), unsigned.clone());
                            tokio::spawn(async move { sign(via, &id, &to, u).await })
                        })
                        .collect();
                    for j in jobs {
                        j.await.unwrap();
                    }
                })
            })
        });
    }
    g.finish();
    system.stop();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
