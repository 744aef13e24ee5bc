//! Daemon level: real `hgxd` daemons (the library's `daemon::start_with_log` + `ipc::serve`,
//! each on its own thread and actix system over a multi-threaded tokio runtime, exactly as
//! `bin/hgxd.rs` runs them) syncing through one persister; one app pushes (the daemon signs
//! a container and a frame per commit), N apps receive `update` events.
//!
//! Where the N receiving apps live: if `hello`'s op table has `share` (checked at run time),
//! daemon 0 is user A (fixture 1, the publisher) and daemons 1..K-1 are user B (fixture 2 on
//! daemon 1, further devices of B after it); A shares the object with B before the run.
//! Without `share` (or with `--share off`) daemons 1..K-1 are further devices of A's own
//! account (`Login::Open` on fresh ghidcaches). With `--daemons 1` the apps sit on the
//! publisher's own daemon.

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

use super::cpu;
use super::drive::{self, Mode};
use super::persister::Publisher;
use super::stats::Shared;
use super::subs;
use crate::bench_common::spawn_driver;

const PASSWORD: &[u8] = b"fanout bench";

pub fn root_secret(fingerprint: &Ghid) -> Secret {
    derive_root_secret(PASSWORD, fingerprint, ScryptParams::TEST).expect("scrypt")
}

/// One hgxd (daemon core + app endpoint) on its own thread.
pub struct DaemonProc {
    pub url: String,
    pub token: CapabilityToken,
    pub handle: DaemonHandle,
    /// Its threads, for its CPU time.
    pub threads: cpu::ThreadSet,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DaemonProc {
    /// Starts a daemon whose runtime threads are named `name` (at most 15 bytes: the kernel
    /// keeps no more of a thread's name).
    pub fn start(
        name: &str,
        dir: PathBuf,
        remote: String,
        login: Login,
    ) -> Result<DaemonProc, String> {
        let before = cpu::threads();
        let rt_name = name.to_owned();
        let (tx, rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fanout-hgxd".into())
            .spawn(move || {
                let system = actix_rt::System::with_tokio_rt(|| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name(rt_name)
                        .enable_all()
                        .build()
                        .expect("tokio runtime")
                });
                system.block_on(async move {
                    let opts = DaemonOptions {
                        ghidcache: dir,
                        remotes: vec![remote.into()],
                        cache_capacity: hypergolix::config::DEFAULT_DAEMON_CACHE,
                        share_limits: Default::default(),
                        wal_move_every: hypergolix::persist::store::WAL_MOVE_EVERY,
                        login,
                    };
                    let d = match daemon::start_with_log(opts, hypergolix::logging::discard()).await
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
                    // All N receiving apps may sit on one daemon.
                    cfg.max_apps = usize::MAX;
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
            threads: cpu::ThreadSet::born_since(name, &before),
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

/// `k` daemons of one account (fixture identity) on `remote`, in `dirs/<tag>0..`: the first
/// creates the account, the others log in to it as further devices.
pub fn start_account(
    dirs: &std::path::Path,
    tag: &str,
    remote: &str,
    identity: FirstParty,
    k: usize,
) -> Result<Vec<DaemonProc>, String> {
    let fingerprint = identity.ghid();
    let root_secret = root_secret(&fingerprint);
    let first = DaemonProc::start(
        &format!("hgxd-{tag}0"),
        dirs.join(format!("{tag}0")),
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
            &format!("hgxd-{tag}{i}"),
            dirs.join(format!("{tag}{i}")),
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

/// `k` further devices of `first`'s account, in `dirs/a1..`.
pub fn start_account_devices(
    dirs: &std::path::Path,
    remote: &str,
    first: &DaemonProc,
    k: usize,
) -> Result<Vec<DaemonProc>, String> {
    let fingerprint = first.handle.fingerprint();
    let user_id = first.handle.user_id();
    (1..=k)
        .map(|i| {
            DaemonProc::start(
                &format!("hgxd-a{i}"),
                dirs.join(format!("a{i}")),
                remote.to_owned(),
                Login::Open {
                    user_id,
                    fingerprint,
                    root_secret: root_secret(&fingerprint),
                },
            )
        })
        .collect()
}

/// Whether the daemon at `url` lists `share` in its `hello` op table.
pub fn has_share(url: &str, token: &CapabilityToken) -> Result<bool, String> {
    actix_rt::System::new().block_on(async {
        let link = HgxLink::connect(url, token)
            .await
            .map_err(|e| format!("probe app: {e}"))?;
        let has = link.hello_info().ops.contains_key("share");
        link.close();
        Ok(has)
    })
}

/// Who the object is shared with before the run: an app on the recipient's daemon
/// registers a share handler, the publisher shares, both outcomes are awaited.
#[derive(Clone)]
pub struct ShareWith {
    pub url: String,
    pub token: CapabilityToken,
    pub recipient: Ghid,
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
#[allow(clippy::too_many_arguments)] // a bench entry point: each argument is one flag
pub fn publisher(
    url: String,
    token: CapabilityToken,
    d0: DaemonHandle,
    share: Option<ShareWith>,
    payload: usize,
    mode: Mode,
    window: usize,
    shared: Arc<Shared>,
) -> Result<(Publisher, Setup), String> {
    let setup = move || async move {
        let link = HgxLink::connect(&url, &token)
            .await
            .map_err(|e| format!("publisher app: {e}"))?;
        let has_share = link.hello_info().ops.contains_key("share");
        let api = Ghid::pseudorandom(hypergolix::golix::Algo::DUMMY);
        let v = link
            .new_object(subs::payload(0, payload), Some(api), true, false)
            .await
            .map_err(|e| format!("new: {e}"))?;
        let mut helper = None;
        if let Some(to) = &share {
            helper = Some(share_object(&link, v.ghid, api, to).await?);
        }
        let ready = Setup {
            ghid: v.ghid,
            has_share,
        };
        Ok(((link, helper, v.ghid), ready))
    };
    // The share handler's link (`_helper`) stays open for the run.
    let run = move |(link, _helper, ghid): (HgxLink, Option<HgxLink>, Ghid)| async move {
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
        while d0.outbox_pending().iter().any(|(_, n)| *n > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let first = shared.first_sent().unwrap_or(0);
        report
            .extra
            .push(("upstream_s".into(), (shared.now_ns() - first) as f64 / 1e9));
        link.close();
        report
    };
    spawn_driver(
        "fanout-publisher-app",
        Duration::from_secs(60),
        setup,
        run,
        super::persister::setup_failed,
    )
}

/// Shares `ghid` with `to.recipient`: a handler app on the recipient's daemon, then `share`,
/// then the handler's `share` event and the publisher's `share_result` (accepted). Returns
/// the handler's link (kept open for the run).
async fn share_object(
    link: &HgxLink,
    ghid: Ghid,
    api: Ghid,
    to: &ShareWith,
) -> Result<HgxLink, String> {
    use hypergolix::actors::api::AppEvent;
    let handler = HgxLink::connect(&to.url, &to.token)
        .await
        .map_err(|e| format!("share handler app: {e}"))?;
    let mut got = handler.events();
    handler
        .register_share_handler(api)
        .await
        .map_err(|e| format!("register_share_handler: {e}"))?;
    let mut results = link.events();
    link.share(ghid, to.recipient)
        .await
        .map_err(|e| format!("share: {e}"))?;
    let wait = async {
        let mut shared_in = false;
        let mut accepted = false;
        while !(shared_in && accepted) {
            tokio::select! {
                Some(e) = got.recv(), if !shared_in => {
                    if matches!(e, AppEvent::Share { ghid: g, .. } if g == ghid) {
                        shared_in = true;
                    }
                }
                Some(e) = results.recv(), if !accepted => {
                    if let AppEvent::ShareResult { ghid: g, ok, status, .. } = e {
                        if g == ghid {
                            if !ok {
                                return Err(format!("share refused, status {status}"));
                            }
                            accepted = true;
                        }
                    }
                }
                else => return Err("event streams ended during the share".to_owned()),
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .map_err(|_| "share not completed within 60 s".to_owned())??;
    Ok(handler)
}
