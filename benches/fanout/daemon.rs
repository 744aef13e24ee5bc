//! Daemon level: real `hgxd` daemons (the library's `daemon::start_with_log` + `ipc::serve`,
//! each on its own thread and actix system over a multi-threaded tokio runtime, exactly as
//! `bin/hgxd.rs` runs them) syncing through one persister; one app pushes (the daemon signs
//! a container and a frame per commit), N apps receive `update` events.
//!
//! The app API has no `share` op yet (checked in `hello`'s op table at run time), so the N
//! receiving apps run on second devices of the same account (`Login::Open` on fresh
//! ghidcaches), or on the publisher's own daemon when `--daemons 1`.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hypergolix::actors::account::{derive_root_secret, ScryptParams};
use hypergolix::actors::daemon::{self, DaemonHandle, DaemonOptions, Login};
use hypergolix::golix::{FirstParty, Ghid, Secret};
use hypergolix::ipc::{serve, CapabilityToken, HgxLink, IpcConfig};
use tokio::sync::oneshot;

use super::drive::{self, Mode, PubReport};
use super::persister::Publisher;
use super::stats::Shared;
use super::subs;

const PASSWORD: &[u8] = b"fanout bench";

pub fn root_secret(fingerprint: &Ghid) -> Secret {
    derive_root_secret(PASSWORD, fingerprint, ScryptParams::TEST).expect("scrypt")
}

/// One hgxd (daemon core + app endpoint) on its own thread.
pub struct DaemonProc {
    pub url: String,
    pub token: CapabilityToken,
    pub handle: DaemonHandle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DaemonProc {
    pub fn start(dir: PathBuf, remote: String, login: Login) -> Result<DaemonProc, String> {
        let (tx, rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fanout-hgxd".into())
            .spawn(move || {
                let system = actix_rt::System::with_tokio_rt(|| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("tokio runtime")
                });
                system.block_on(async move {
                    let opts = DaemonOptions {
                        ghidcache: dir,
                        remotes: vec![remote],
                        login,
                    };
                    let d = match daemon::start_with_log(opts, hypergolix::logging::discard())
                        .await
                    {
                        Ok(d) => d,
                        Err(e) => {
                            let _ = tx.send(Err(format!("daemon start: {e}")));
                            return;
                        }
                    };
                    let token = CapabilityToken::generate();
                    let mut cfg = IpcConfig::new(token.clone());
                    cfg.addr = "127.0.0.1:0".parse().unwrap();
                    cfg.workers = 1;
                    let server = match serve(d.clone(), cfg).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(format!("ipc serve: {e}")));
                            return;
                        }
                    };
                    let _ = tx.send(Ok((server.url(), token, d.clone())));
                    let _ = stop_rx.await;
                    server.stop(false).await;
                    let _ = d.shutdown().await;
                })
            })
            .map_err(|e| e.to_string())?;
        let (url, token, handle) = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "daemon did not start within 60 s".to_owned())??;
        Ok(DaemonProc {
            url,
            token,
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn drained(&self) -> bool {
        self.handle.outbox_pending().iter().all(|(_, n)| *n == 0)
    }

    pub fn wait_drained(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.drained() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    pub fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `k` daemons of one account (fixture identity) on `remote`: daemon 0 creates the account,
/// the others log in to it as further devices.
pub fn start_account(
    dirs: &tempfile::TempDir,
    remote: &str,
    identity: FirstParty,
    k: usize,
) -> Result<Vec<DaemonProc>, String> {
    let fingerprint = identity.ghid();
    let root_secret = root_secret(&fingerprint);
    let first = DaemonProc::start(
        dirs.path().join("d0"),
        remote.to_owned(),
        Login::Create {
            identity,
            root_secret: root_secret.clone(),
        },
    )?;
    if !first.wait_drained(Duration::from_secs(30)) {
        return Err("the new account never reached the persister".into());
    }
    let user_id = first.handle.user_id();
    let mut all = vec![first];
    for i in 1..k {
        all.push(DaemonProc::start(
            dirs.path().join(format!("d{i}")),
            remote.to_owned(),
            Login::Open {
                user_id,
                fingerprint,
                root_secret: root_secret.clone(),
            },
        )?);
    }
    Ok(all)
}

/// What the publishing app set up.
pub struct Setup {
    pub ghid: Ghid,
    /// Whether the daemon's op table has `share`.
    pub has_share: bool,
}

/// The publishing app: connects to daemon 0, creates the dynamic object with update 0, then
/// after `go` pushes updates 1..=M and, once the last push is acknowledged, waits for the
/// daemon's outbox to drain (every frame at the persister); `extra` carries
/// `upstream_s` (first push -> drained).
pub fn publisher(
    url: String,
    token: CapabilityToken,
    d0: DaemonHandle,
    payload: usize,
    mode: Mode,
    window: usize,
    shared: Arc<Shared>,
) -> Result<(Publisher, Setup), String> {
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<Setup, String>>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let join = std::thread::Builder::new()
        .name("fanout-publisher".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let setup = async {
                    let link = HgxLink::connect(&url, &token)
                        .await
                        .map_err(|e| format!("publisher app: {e}"))?;
                    let has_share = link.hello_info().ops.contains_key("share");
                    let v = link
                        .new_object(subs::payload(0, payload), None, true, false)
                        .await
                        .map_err(|e| format!("new: {e}"))?;
                    Ok::<_, String>((link, Setup { ghid: v.ghid, has_share }))
                };
                let (link, ghid) = match setup.await {
                    Ok((link, s)) => {
                        let g = s.ghid;
                        let _ = ready_tx.send(Ok(s));
                        (link, g)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return PubReport {
                            first_error: Some(e),
                            ..PubReport::default()
                        };
                    }
                };
                if go_rx.await.is_err() {
                    return PubReport::default();
                }
                let mut report = drive::drive(mode, window, shared.clone(), |seq| {
                    let link = link.clone();
                    async move {
                        link.push(ghid, subs::payload(seq, payload), None)
                            .await
                            .map_err(|e| format!("push {seq}: {e}"))
                    }
                })
                .await;
                let deadline = Instant::now() + Duration::from_secs(120);
                while d0.outbox_pending().iter().any(|(_, n)| *n > 0) && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let first = shared.first_sent().unwrap_or(0);
                report.extra.push((
                    "upstream_s".into(),
                    (shared.now_ns() - first) as f64 / 1e9,
                ));
                link.close();
                report
            })
        })
        .map_err(|e| e.to_string())?;
    let setup = ready_rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "publisher app set-up timed out".to_owned())??;
    Ok((Publisher { go: go_tx, join }, setup))
}
