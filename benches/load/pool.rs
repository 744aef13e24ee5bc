//! The client side of a load run: `threads` OS threads, each an actix system (the HgxLink
//! and PersisterClient connection tasks are actix-spawned) holding its share of the N
//! connections, opened a batch at a time with a timeout each. Each connection is a task
//! that turns what it receives into [`Got`] and records it in its thread's [`ClientLog`];
//! a connection that ends before the harness closes it counts as dropped.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::stream::LocalBoxStream;
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::track::{ClientLog, ConnState, Track};

/// Connections opened at once per thread.
const CONNECT_BATCH: usize = 50;
/// Limit for one connection's handshake and subscription.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a connection received.
pub enum Got {
    /// Update `seq` (checked).
    Seq(u64),
    /// Something that should not have arrived, or did not match.
    Bad(String),
    /// Not about the run (other events).
    Other,
}

/// An open client connection: what keeps it open, how to close it, what it receives.
pub struct Conn {
    pub keep: Box<dyn std::any::Any>,
    pub close: Box<dyn Fn()>,
    pub events: LocalBoxStream<'static, Got>,
}

/// Opens connection number `i`; runs on a client thread.
pub type Connector =
    Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = Result<Conn, String>>>> + Send + Sync>;

pub struct Pool {
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<ClientLog>>,
}

/// Starts the threads; returns at once (watch `track.connected` and
/// `track.connect_failures`; [`Pool::all_tried`] says when every connection was tried).
pub fn start(connect: Connector, n: usize, threads: usize, track: Arc<Track>) -> Pool {
    let threads = threads.clamp(1, n.max(1));
    let mut pool = Pool {
        stops: Vec::new(),
        threads: Vec::new(),
    };
    for t in 0..threads {
        let indices: Vec<usize> = (t..n).step_by(threads).collect();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (connect, track) = (connect.clone(), track.clone());
        let h = std::thread::Builder::new()
            .name(format!("load-client-{t}"))
            .spawn(move || {
                actix_rt::System::new().block_on(thread_main(connect, indices, track, stop_rx))
            })
            .expect("spawn client thread");
        pool.stops.push(stop_tx);
        pool.threads.push(h);
    }
    pool
}

impl Pool {
    /// Closes every connection and returns the threads' logs.
    pub fn stop(self) -> Vec<ClientLog> {
        for s in self.stops {
            let _ = s.send(());
        }
        self.threads
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    }
}

async fn thread_main(
    connect: Connector,
    indices: Vec<usize>,
    track: Arc<Track>,
    stop: oneshot::Receiver<()>,
) -> ClientLog {
    let log = Rc::new(RefCell::new(ClientLog::default()));
    let stopping = Rc::new(Cell::new(false));
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut closers: Vec<Box<dyn Fn()>> = Vec::new();
    let mut stop = stop;
    let mut stopped = false;
    for chunk in indices.chunks(CONNECT_BATCH) {
        let opened = futures_util::future::join_all(chunk.iter().map(|&i| {
            let fut = connect(i);
            async move {
                match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
                }
            }
        }))
        .await;
        for (k, r) in opened.into_iter().enumerate() {
            let conn = match r {
                Ok(c) => c,
                Err(e) => {
                    track.error("connect", || format!("connection {}: {e}", chunk[k]));
                    continue;
                }
            };
            let li = {
                let mut l = log.borrow_mut();
                l.conns.push(ConnState::default());
                l.conns.len() - 1
            };
            track.connected.fetch_add(1, Ordering::Relaxed);
            let (track, log, stopping) = (track.clone(), log.clone(), stopping.clone());
            let mut events = conn.events;
            actix_rt::spawn(async move {
                while let Some(got) = events.next().await {
                    let now = track.now_ns();
                    match got {
                        Got::Seq(seq) => log.borrow_mut().record(&track, li, seq, now),
                        Got::Bad(e) => track.error("decode", || e),
                        Got::Other => {}
                    }
                }
                if !stopping.get() {
                    track.connected.fetch_sub(1, Ordering::Relaxed);
                    track.error("dropped", || format!("connection {li} ended"));
                }
            });
            closers.push(conn.close);
            keep.push(conn.keep);
        }
        // A stop during the connect phase ends it.
        if !matches!(stop.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            stopped = true;
            break;
        }
    }
    if !stopped {
        let _ = stop.await;
    }
    stopping.set(true);
    for c in &closers {
        c();
    }
    // Let the close frames out before the system goes away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(keep);
    let out = std::mem::take(&mut *log.borrow_mut());
    out
}
