//! Persister level: a real `hgx-persister` server (in process, `persist::server::start` on
//! 127.0.0.1:0 on its own thread and actix system, like the integration tests), one
//! publisher sending pre-signed GOBD frames and their GEOC containers for one dynamic ghid.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use hypergolix::golix::{Object, Policy};
use hypergolix::persist::client::PersisterClient;
use hypergolix::persist::hub::HubStats;
use hypergolix::persist::server::{self, Settings};
use hypergolix::persist::Archive;
use tokio::sync::oneshot;

use super::drive::{self, Mode, PubReport};
use super::stats::Shared;

pub use crate::bench_common::{presign, Presigned};

/// A persister on its own thread and actix system.
pub struct PersisterProc {
    pub url: String,
    archive: Archive,
    /// The on-disk ghidcache (None: sled's temporary store, which lives in /dev/shm).
    _dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    stats: std_mpsc::Receiver<HubStats>,
    thread: Option<JoinHandle<()>>,
}

impl PersisterProc {
    /// `workers` HTTP workers (0 = one per core); the ghidcache in a new temporary
    /// directory on disk (`on_disk`: every acknowledged publish costs a real fsync) or in
    /// sled's temporary store (/dev/shm, RAM).
    pub fn start(workers: usize, on_disk: bool) -> Result<PersisterProc, String> {
        let dir = if on_disk {
            Some(tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?)
        } else {
            None
        };
        let ghidcache = dir.as_ref().map(|d| d.path().join("ghidcache"));
        let (tx, rx) = std_mpsc::channel();
        let (stats_tx, stats_rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fanout-persister".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let mut settings = Settings::local(ghidcache);
                    settings.workers = workers;
                    let running = match server::start(settings).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = tx.send(Ok((running.ws_url(), running.archive().clone())));
                    let _ = stop_rx.await;
                    let _ = stats_tx.send(running.stats());
                    let _ = running.stop().await;
                })
            })
            .map_err(|e| e.to_string())?;
        let (url, archive) = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "persister did not start".to_owned())??;
        Ok(PersisterProc {
            url,
            archive,
            _dir: dir,
            stop: Some(stop_tx),
            stats: stats_rx,
            thread: Some(thread),
        })
    }

    /// The counter of the persister's current frame of `dynamic`.
    pub fn frame_counter(&self, dynamic: &hypergolix::golix::Ghid) -> Option<u64> {
        let bytes = self.archive.get(dynamic).ok()??;
        match Object::decode(&bytes, Policy::STRICT).ok()? {
            Object::Gobd(f) => Some(f.counter),
            _ => None,
        }
    }

    /// Stops the server; returns its hub counters.
    pub fn stop(mut self) -> Option<HubStats> {
        let _ = self.stop.take().map(|s| s.send(()));
        let stats = self.stats.recv_timeout(Duration::from_secs(10)).ok();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        stats
    }
}

/// A publisher thread: set-up now, the updates after `go`.
pub struct Publisher {
    pub go: oneshot::Sender<()>,
    pub join: JoinHandle<PubReport>,
}

/// Connects, publishes the identity and the warm-up frame 0 (+ container), then waits for
/// `go` and publishes frames 1..=M (each frame, then its container) on `mode`'s schedule.
pub fn publisher(
    url: String,
    pre: Arc<Presigned>,
    mode: Mode,
    window: usize,
    shared: Arc<Shared>,
) -> Result<Publisher, String> {
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), String>>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let join = std::thread::Builder::new()
        .name("fanout-publisher".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let setup = async {
                    let (c, _rx) = PersisterClient::connect(&url)
                        .await
                        .map_err(|e| e.to_string())?;
                    for b in [&pre.gidc, &pre.frames[0], &pre.containers[0]] {
                        c.publish(b)
                            .await
                            .map_err(|e| format!("set-up publish: {e}"))?;
                    }
                    Ok::<_, String>((c, _rx))
                };
                let (c, _rx) = match setup.await {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return PubReport {
                            first_error: Some(e),
                            ..PubReport::default()
                        };
                    }
                };
                let _ = ready_tx.send(Ok(()));
                if go_rx.await.is_err() {
                    return PubReport::default();
                }
                let report = drive::drive(mode, window, shared, |seq| {
                    let c = c.clone();
                    let (f, k) = (
                        pre.frames[seq as usize].clone(),
                        pre.containers[seq as usize].clone(),
                    );
                    async move {
                        let (a, b) = futures_util::future::join(c.publish(&f), c.publish(&k)).await;
                        a.map_err(|e| format!("frame {seq}: {e}"))?;
                        b.map_err(|e| format!("container {seq}: {e}"))?;
                        Ok(())
                    }
                })
                .await;
                c.close();
                report
            })
        })
        .map_err(|e| e.to_string())?;
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "publisher set-up timed out".to_owned())??;
    Ok(Publisher { go: go_tx, join })
}

/// The Redis publisher for the persister level: the same signed frame bytes, one PUBLISH
/// per update on one pipelined connection.
pub fn redis_publisher(
    addr: std::net::SocketAddr,
    channel: Vec<u8>,
    messages: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
    mode: Mode,
    window: usize,
    shared: Arc<Shared>,
    expect_receivers: i64,
) -> Result<Publisher, String> {
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), String>>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let join = std::thread::Builder::new()
        .name("fanout-publisher".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let p = match super::redis::Publisher::connect(addr).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return PubReport {
                            first_error: Some(e),
                            ..PubReport::default()
                        };
                    }
                };
                let _ = ready_tx.send(Ok(()));
                if go_rx.await.is_err() {
                    return PubReport::default();
                }
                let channel = Bytes::from(channel);
                drive::drive(mode, window, shared, |seq| {
                    let (p, channel, msg) = (p.clone(), channel.clone(), messages(seq));
                    async move {
                        let got = p.publish(&channel, &msg).await?;
                        if got < expect_receivers {
                            return Err(format!(
                                "update {seq} reached {got} of {expect_receivers} subscribers"
                            ));
                        }
                        Ok(())
                    }
                })
                .await
            })
        })
        .map_err(|e| e.to_string())?;
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "publisher set-up timed out".to_owned())??;
    Ok(Publisher { go: go_tx, join })
}
