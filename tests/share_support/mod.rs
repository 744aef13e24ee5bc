//! Helpers of the `share_*` tests: a real persister on its own thread, real daemons (fixture
//! identities, test-cost scrypt), each behind a real IPC server on 127.0.0.1:0, and apps as
//! `HgxLink`s with their event streams. Every wait is bounded. Tests run on actix's
//! single-threaded runtime (the client needs it); nothing here blocks it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hypergolix::actors::account::{derive_root_secret, ScryptParams};
pub use hypergolix::actors::account_actor::ShareLimits;
use hypergolix::actors::api::AppEvent;
use hypergolix::actors::daemon::{self, DaemonHandle, DaemonOptions, Login};
use hypergolix::golix::{Algo, Ghid, Secret};
use hypergolix::ipc::{serve, CapabilityToken, HgxLink, IpcConfig, IpcServer};
use hypergolix::persist::server::{self, Settings};
use hypergolix::persist::Archive;
use tokio::sync::mpsc;

#[path = "../common/mod.rs"]
mod common;
pub use common::fixture;

/// Longest wait for anything that should happen.
pub const WAIT: Duration = Duration::from_secs(20);
/// How long "nothing arrives" is watched.
pub const QUIET: Duration = Duration::from_millis(700);

/// A persister on its own thread and actix system.
pub struct Persister {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub archive: Option<Archive>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Persister {
    pub fn start() -> Persister {
        Persister::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// A persister (with an empty store) listening on `addr` (e.g. where a stopped one was).
    pub fn start_on(addr: std::net::SocketAddr) -> Persister {
        Persister::start_with(addr, |_| {})
    }

    /// [`Persister::start_on`] with `tweak` applied to its settings.
    pub fn start_with(
        addr: std::net::SocketAddr,
        tweak: impl FnOnce(&mut Settings) + Send + 'static,
    ) -> Persister {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let mut settings = Settings::local(None);
                settings.addrs = vec![addr];
                settings.workers = 1;
                settings.verify_threads = 1;
                tweak(&mut settings);
                let running = server::start(settings).await.expect("persister starts");
                tx.send((
                    running.ws_url(),
                    running.local_addr(),
                    running.archive().clone(),
                ))
                .unwrap();
                let _ = stop_rx.await;
                running.stop().await.expect("persister stops");
            })
        });
        let (url, addr, archive) = rx.recv_timeout(WAIT).expect("persister listening");
        Persister {
            url,
            addr,
            archive: Some(archive),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stored requests addressed to `recipient`.
    pub fn requests_for(&self, recipient: &Ghid) -> Vec<Vec<u8>> {
        let archive = self.archive.as_ref().expect("running");
        archive
            .requests_for(recipient)
            .unwrap()
            .into_iter()
            .map(|b| b.to_vec())
            .collect()
    }

    pub async fn stop(mut self) {
        self.archive = None;
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(t) = self.thread.take() {
            tokio::task::spawn_blocking(move || t.join().expect("persister thread"))
                .await
                .unwrap();
        }
    }
}

fn secret(n: usize) -> Secret {
    let fp = fixture(n).ghid();
    derive_root_secret(b"correct horse", &fp, ScryptParams::TEST).unwrap()
}

/// Daemon logs: discarded, or on stderr at `HGX_TEST_LOG` verbosity (e.g. `debug`).
pub fn log(name: &str) -> slog::Logger {
    use slog::Drain;
    match std::env::var("HGX_TEST_LOG")
        .ok()
        .and_then(|v| v.parse::<hypergolix::logging::Verbosity>().ok())
    {
        Some(v) => {
            let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
            let drain = slog_term::FullFormat::new(decorator)
                .build()
                .filter_level(v.level())
                .fuse();
            slog::Logger::root(
                std::sync::Mutex::new(drain).fuse(),
                slog::o!("daemon" => name.to_owned()),
            )
        }
        None => hypergolix::logging::discard(),
    }
}

/// One user's daemon and its IPC endpoint.
pub struct Node {
    pub daemon: DaemonHandle,
    pub server: IpcServer,
    pub token: CapabilityToken,
    pub dir: PathBuf,
}

impl Node {
    /// A new account for fixture `n` in `dir`, against `remotes`.
    pub async fn create(dir: &Path, remotes: &[&str], n: usize) -> Node {
        Node::create_with(dir, remotes, n, ShareLimits::default()).await
    }

    /// [`Node::create`] with other bounds on the shares no app adopted yet.
    pub async fn create_with(dir: &Path, remotes: &[&str], n: usize, limits: ShareLimits) -> Node {
        let login = Login::Create {
            identity: fixture(n),
            root_secret: secret(n),
        };
        Node::start(dir, remotes, login, n, limits).await
    }

    /// The account of fixture `n` again, from `dir`.
    pub async fn open(dir: &Path, remotes: &[&str], n: usize, user_id: Ghid) -> Node {
        Node::open_with(dir, remotes, n, user_id, ShareLimits::default()).await
    }

    /// [`Node::open`] with other bounds on the shares no app adopted yet.
    pub async fn open_with(
        dir: &Path,
        remotes: &[&str],
        n: usize,
        user_id: Ghid,
        limits: ShareLimits,
    ) -> Node {
        let login = Login::Open {
            user_id,
            fingerprint: fixture(n).ghid(),
            root_secret: secret(n),
        };
        Node::start(dir, remotes, login, n, limits).await
    }

    async fn start(
        dir: &Path,
        remotes: &[&str],
        login: Login,
        n: usize,
        share_limits: ShareLimits,
    ) -> Node {
        let opts = DaemonOptions {
            ghidcache: dir.to_path_buf(),
            remotes: remotes.iter().map(|s| (*s).into()).collect(),
            cache_capacity: hypergolix::config::DEFAULT_DAEMON_CACHE,
            share_limits,
            wal_move_every: hypergolix::persist::store::WAL_MOVE_EVERY,
            login,
        };
        let daemon = daemon::start_with_log(opts, log(&format!("fixture{n}")))
            .await
            .expect("daemon starts");
        let token = CapabilityToken::generate();
        let mut cfg = IpcConfig::new(token.clone());
        cfg.addr = "127.0.0.1:0".parse().unwrap();
        cfg.workers = 1;
        let server = serve(daemon.clone(), cfg).await.expect("serve");
        Node {
            daemon,
            server,
            token,
            dir: dir.to_path_buf(),
        }
    }

    pub fn fingerprint(&self) -> Ghid {
        self.daemon.fingerprint()
    }

    /// A new app: a link and its event stream.
    pub async fn app(&self) -> App {
        let link = HgxLink::connect(&self.server.url(), &self.token)
            .await
            .expect("app connects");
        let events = link.events();
        App { link, events }
    }

    /// Waits until every outbox queue is empty.
    pub async fn drained(&self) {
        tokio::time::timeout(WAIT, async {
            while self.daemon.outbox_pending().iter().any(|(_, n)| *n > 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("outbox drains");
    }

    pub async fn stop(self) {
        self.server.stop(true).await;
        self.daemon.shutdown().await.expect("daemon shuts down");
    }
}

/// An app: its link and every event it received.
pub struct App {
    pub link: HgxLink,
    pub events: mpsc::UnboundedReceiver<AppEvent>,
}

impl App {
    /// The next event, if one arrives within `t`.
    pub async fn next_within(&mut self, t: Duration) -> Option<AppEvent> {
        tokio::time::timeout(t, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next event (fails after [`WAIT`]).
    pub async fn next(&mut self) -> AppEvent {
        self.next_within(WAIT).await.expect("an event in time")
    }

    /// Asserts no event arrives for a while.
    pub async fn quiet(&mut self) {
        if let Some(e) = self.next_within(QUIET).await {
            panic!("unexpected event {e:?}");
        }
    }

    /// Waits for an update of `ghid` with `state`; returns the states seen on the way.
    pub async fn until_state(&mut self, ghid: Ghid, state: &[u8]) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await.expect("events open") {
                    AppEvent::Update(v) if v.ghid == ghid => {
                        seen.push(v.state.clone());
                        if v.state == state {
                            return;
                        }
                    }
                    other => panic!("unexpected event {other:?}"),
                }
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "no update to {:?}; saw {seen:?}",
            String::from_utf8_lossy(state)
        );
        seen
    }
}

/// A test api id (algo 0, like the reference's).
pub fn api_id(tag: u8) -> Ghid {
    Ghid::new(Algo::DUMMY, [tag; 64])
}

/// (persister, Alice's node, Bob's node): fixtures 1 and 2 against one persister.
pub async fn two_users(alice_dir: &Path, bob_dir: &Path) -> (Persister, Node, Node) {
    let p = Persister::start();
    let alice = Node::create(alice_dir, &[&p.url], 1).await;
    let bob = Node::create(bob_dir, &[&p.url], 2).await;
    alice.drained().await;
    bob.drained().await;
    (p, alice, bob)
}

/// The answers in `inbox` (requests to `sharer`, all from `recipient`), opened: (ack?, the
/// request answered, status).
pub fn answers(
    inbox: &[Vec<u8>],
    sharer: &hypergolix::golix::FirstParty,
    recipient: &hypergolix::golix::SecondParty,
) -> Vec<(bool, Ghid, u32)> {
    use hypergolix::golix::{Object, Policy, RequestBody};
    inbox
        .iter()
        .map(|bytes| {
            let Ok(Object::Garq(g)) = Object::decode(bytes, Policy::STRICT) else {
                panic!("not a request")
            };
            let req = sharer
                .open_request(&g, |a| (*a == recipient.ghid()).then(|| recipient.clone()))
                .expect("the answer opens");
            assert_eq!(req.author, recipient.ghid());
            match req.body {
                RequestBody::Ack { target, status } => (true, target, status),
                RequestBody::Nak { target, status } => (false, target, status),
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect()
}

/// Another user played by the test: a fixture identity publishing through the persist
/// client (unauthenticated).
pub struct Sharer {
    pub id: hypergolix::golix::FirstParty,
    pub client: hypergolix::persist::client::PersisterClient,
    _notes: hypergolix::persist::client::Notifications,
}

impl Sharer {
    /// Fixture `n`, connected to `p`, its identity published.
    pub async fn connect(p: &Persister, n: usize) -> Sharer {
        let id = fixture(n);
        let (client, notes) = hypergolix::persist::client::PersisterClient::connect(&p.url)
            .await
            .unwrap();
        client.publish(&id.gidc().encode()).await.unwrap();
        Sharer {
            id,
            client,
            _notes: notes,
        }
    }

    /// A new dynamic object of `api` (state `tag`), published, and a handshake sharing it
    /// with `to`, published once the recipient's mailbox takes it. Returns (the object, the
    /// request).
    pub async fn share_new(
        &self,
        to: &hypergolix::golix::SecondParty,
        api: Ghid,
        tag: &str,
    ) -> (Ghid, Ghid) {
        let secret = Secret::random();
        let plain = hypergolix::actors::content::pack(Some(&api), tag.as_bytes());
        let geoc = self.id.make_container(&plain, &secret).unwrap();
        let frame = self.id.make_bind_dynamic(geoc.ghid).unwrap();
        self.client.publish(&frame.encode()).await.unwrap();
        self.client.publish(&geoc.encode()).await.unwrap();
        let garq = self.id.make_handshake(to, frame.dynamic, &secret).unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Err(e) = self.client.publish(&garq.encode()).await {
            assert_eq!(e.code(), Some("mailbox_full"), "{e}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the recipient handles no shares"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (frame.dynamic, garq.ghid)
    }

    /// Waits until `n` answers from `recipient` wait for us; returns them opened (see
    /// [`answers`]).
    pub async fn answers(
        &self,
        p: &Persister,
        recipient: &hypergolix::golix::SecondParty,
        n: usize,
    ) -> Vec<(bool, Ghid, u32)> {
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        loop {
            let inbox = p.requests_for(&self.id.ghid());
            if inbox.len() >= n {
                return answers(&inbox, &self.id, recipient);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} answers",
                inbox.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until every request stored for `recipient` is handled (debound).
pub async fn handled(p: &Persister, recipient: &Ghid) {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while !p.requests_for(recipient).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests left unhandled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
