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
use crate::bench_common::{publish_update, publisher_connection, spawn_driver, Driver};

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
pub type Publisher = Driver<PubReport>;

/// The report of a publisher whose set-up failed.
pub fn setup_failed(e: String) -> PubReport {
    PubReport {
        first_error: Some(e),
        ..PubReport::default()
    }
}

/// Connects, publishes the identity and the warm-up frame 0 (+ container), then waits for
/// `go` and publishes frames 1..=M on `mode`'s schedule.
pub fn publisher(
    url: String,
    pre: Arc<Presigned>,
    mode: Mode,
    window: usize,
    shared: Arc<Shared>,
) -> Result<Publisher, String> {
    let setup_pre = pre.clone();
    let setup = move || async move {
        let p = &setup_pre;
        let conn = publisher_connection(&url, &p.gidc, &p.frames, &p.containers).await?;
        Ok((conn, ()))
    };
    let run = move |(c, _rx): (PersisterClient, _)| async move {
        let report = drive::drive(mode, window, shared, |seq| {
            let (c, pre) = (c.clone(), pre.clone());
            async move { publish_update(&c, &pre.frames, &pre.containers, seq).await }
        })
        .await;
        c.close();
        report
    };
    let (publisher, ()) = spawn_driver(
        "fanout-publisher",
        Duration::from_secs(60),
        setup,
        run,
        setup_failed,
    )?;
    Ok(publisher)
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
    let setup = move || async move { Ok((super::redis::Publisher::connect(addr).await?, ())) };
    let run = move |p: super::redis::Publisher| async move {
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
    };
    let (publisher, ()) = spawn_driver(
        "fanout-publisher",
        Duration::from_secs(60),
        setup,
        run,
        setup_failed,
    )?;
    Ok(publisher)
}
