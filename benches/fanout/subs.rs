//! Subscriber threads: `threads` OS threads, each an actix system holding its share of the N
//! subscribers (persister websockets, Redis or NATS connections, or hgxd apps), each subscriber a
//! task that checks what it receives like a daemon would and records it in the thread's
//! [`ThreadLog`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypergolix::actors::api::AppEvent;
use hypergolix::golix::{Ghid, Object, Policy, SecondParty};
use hypergolix::ipc::{CapabilityToken, HgxLink};
use hypergolix::persist::client::PersisterClient;
use tokio::sync::oneshot;

use super::stats::{Shared, ThreadLog};
use super::{nats, redis, wsraw};

/// How subscribers check a signed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Every subscriber decodes and fully verifies (address + RSA signature) every frame,
    /// as N independent daemons would.
    Every,
    /// Each subscriber thread verifies a frame once; its other subscribers compare the
    /// bytes with the verified copy (the cost of verification taken off the client side,
    /// to measure the transport).
    Cached,
    /// Decode only (read the counter).
    None,
}

/// Which client the persister-level subscribers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// [`super::wsraw`]: a hand-written websocket reader.
    Raw,
    /// `PersisterClient` (awc), what `hgxd` uses.
    Awc,
}

/// Decodes and checks a GOBD notification; returns its counter (= the update's seq).
pub struct Checker {
    mode: VerifyMode,
    binder: SecondParty,
    verified: HashMap<Ghid, Bytes>,
}

impl Checker {
    pub fn new(mode: VerifyMode, binder_gidc: &[u8]) -> Result<Checker, String> {
        let binder = match Object::decode(binder_gidc, Policy::STRICT) {
            Ok(Object::Gidc(g)) => SecondParty::from_gidc(g).map_err(|e| e.to_string())?,
            other => return Err(format!("binder is not a GIDC: {other:?}")),
        };
        Ok(Checker {
            mode,
            binder,
            verified: HashMap::new(),
        })
    }

    pub fn check(&mut self, bytes: &Bytes) -> Result<u64, String> {
        let obj = Object::decode(bytes, Policy::STRICT).map_err(|e| e.to_string())?;
        let Object::Gobd(f) = &obj else {
            return Err(format!("not a GOBD: {:?}", obj.kind()));
        };
        let counter = f.counter;
        match self.mode {
            VerifyMode::Every => obj.verify(Some(&self.binder)).map_err(|e| e.to_string())?,
            VerifyMode::Cached => {
                if self.verified.get(&f.frame) != Some(bytes) {
                    obj.verify(Some(&self.binder)).map_err(|e| e.to_string())?;
                    if self.verified.len() > 4096 {
                        self.verified.clear();
                    }
                    self.verified.insert(f.frame, bytes.clone());
                }
            }
            VerifyMode::None => {}
        }
        Ok(counter)
    }
}

/// Update payload layout (daemon level and its baselines): seq as 8 big-endian bytes,
/// then filler up to the payload size.
pub use crate::bench_common::{payload, seq_of};

/// What the subscribers connect to.
pub enum Target {
    Persister {
        url: String,
        dynamic: Ghid,
        binder_gidc: Vec<u8>,
        verify: VerifyMode,
        client: ClientKind,
    },
    /// A baseline's broker carrying the level's messages.
    Broker { broker: Broker, content: Content },
    /// hgxd apps: subscriber `i` uses `daemons[i % daemons.len()]`.
    Daemon {
        daemons: Vec<(String, CapabilityToken)>,
        ghid: Ghid,
    },
}

/// A baseline's server and where on it the messages go.
pub enum Broker {
    Redis {
        addr: SocketAddr,
        channel: Vec<u8>,
    },
    Nats {
        addr: SocketAddr,
        subject: String,
        delivery: nats::Delivery,
    },
}

/// What a baseline carries.
pub enum Content {
    /// The same signed frames as the persister level, checked the same way.
    Frames {
        binder_gidc: Vec<u8>,
        verify: VerifyMode,
    },
    /// The raw payload with its seq header (daemon level).
    Payload,
}

/// One subscribed baseline connection.
enum BrokerSub {
    Redis(redis::Subscription),
    Nats(nats::Subscription),
}

impl Broker {
    async fn open(&self) -> Result<BrokerSub, String> {
        Ok(match self {
            Broker::Redis { addr, channel } => {
                BrokerSub::Redis(redis::Subscription::open(*addr, channel).await?)
            }
            Broker::Nats {
                addr,
                subject,
                delivery,
            } => BrokerSub::Nats(nats::Subscription::open(*addr, subject, delivery).await?),
        })
    }
}

impl BrokerSub {
    async fn run(self, on_message: Box<dyn FnMut(Bytes)>) {
        match self {
            BrokerSub::Redis(s) => s.run(on_message).await,
            BrokerSub::Nats(s) => s.run(on_message).await,
        }
    }
}

/// The running subscriber threads of one run.
pub struct Pool {
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<ThreadLog>>,
}

/// Starts `threads` threads holding `n` subscribers between them; returns once every
/// subscriber is connected and subscribed (or fails with the first error).
pub fn start(
    target: Arc<Target>,
    n: usize,
    threads: usize,
    shared: Arc<Shared>,
) -> Result<Pool, String> {
    let threads = threads.clamp(1, n.max(1));
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), String>>();
    let mut pool = Pool {
        stops: Vec::new(),
        threads: Vec::new(),
    };
    for t in 0..threads {
        let indices: Vec<usize> = (t..n).step_by(threads).collect();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (target, shared, ready) = (target.clone(), shared.clone(), ready_tx.clone());
        let h = std::thread::Builder::new()
            .name(format!("fanout-sub-{t}"))
            .spawn(move || {
                actix_rt::System::new()
                    .block_on(thread_main(target, indices, shared, ready, stop_rx))
            })
            .map_err(|e| format!("spawn: {e}"))?;
        pool.stops.push(stop_tx);
        pool.threads.push(h);
    }
    drop(ready_tx);
    // Ten thousand JetStream consumers take a while to create on two busy cores.
    let within = Duration::from_secs(120.max(n as u64 / 50));
    let deadline = Instant::now() + within;
    for _ in 0..threads {
        match ready_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                pool.stop();
                return Err(e);
            }
            Err(_) => {
                pool.stop();
                return Err(format!(
                    "subscribers did not all connect within {} s",
                    within.as_secs()
                ));
            }
        }
    }
    Ok(pool)
}

impl Pool {
    /// Closes every subscriber and returns the threads' logs.
    pub fn stop(self) -> Vec<ThreadLog> {
        for s in self.stops {
            let _ = s.send(());
        }
        self.threads
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    }
}

/// Connections are opened this many at a time per thread.
const CONNECT_BATCH: usize = 50;

async fn thread_main(
    target: Arc<Target>,
    indices: Vec<usize>,
    shared: Arc<Shared>,
    ready: std_mpsc::Sender<Result<(), String>>,
    stop: oneshot::Receiver<()>,
) -> ThreadLog {
    let log = Rc::new(RefCell::new(ThreadLog::with_subs(indices.len())));
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut closers: Vec<Box<dyn Fn()>> = Vec::new();
    let r = connect_all(&target, &indices, &shared, &log, &mut keep, &mut closers).await;
    let failed = r.is_err();
    let _ = ready.send(r);
    if !failed {
        let _ = stop.await;
    }
    for c in &closers {
        c();
    }
    // Let the close frames out before the system goes away.
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(keep);
    let out = std::mem::take(&mut *log.borrow_mut());
    out
}

/// What a subscriber does with each signed frame it receives: check it, record it.
fn checked(
    shared: &Arc<Shared>,
    log: &Rc<RefCell<ThreadLog>>,
    checker: &Rc<RefCell<Checker>>,
    li: usize,
) -> impl FnMut(Bytes) {
    let (shared, log, checker) = (shared.clone(), log.clone(), checker.clone());
    move |frame| {
        let r = checker.borrow_mut().check(&frame);
        let now = shared.now_ns();
        match r {
            Ok(seq) => log.borrow_mut().record(&shared, li, seq, now),
            Err(e) => ThreadLog::bad(&shared, || e),
        }
    }
}

/// What a subscriber does with each plain payload: read its seq, record it.
fn payload_seq(shared: &Arc<Shared>, log: &Rc<RefCell<ThreadLog>>, li: usize) -> impl FnMut(Bytes) {
    let (shared, log) = (shared.clone(), log.clone());
    move |msg| {
        let now = shared.now_ns();
        match seq_of(&msg) {
            Some(seq) => log.borrow_mut().record(&shared, li, seq, now),
            None => ThreadLog::bad(&shared, || "short payload".into()),
        }
    }
}

async fn connect_all(
    target: &Target,
    indices: &[usize],
    shared: &Arc<Shared>,
    log: &Rc<RefCell<ThreadLog>>,
    keep: &mut Vec<Box<dyn std::any::Any>>,
    closers: &mut Vec<Box<dyn Fn()>>,
) -> Result<(), String> {
    match target {
        Target::Persister {
            url,
            dynamic,
            binder_gidc,
            verify,
            client,
        } => {
            let checker = Rc::new(RefCell::new(Checker::new(*verify, binder_gidc)?));
            if *client == ClientKind::Raw {
                let addr: SocketAddr = url
                    .trim_start_matches("ws://")
                    .trim_end_matches("/ws")
                    .parse()
                    .map_err(|e| format!("persister address in {url}: {e}"))?;
                for (b, chunk) in indices.chunks(CONNECT_BATCH).enumerate() {
                    let conns = futures_util::future::join_all(
                        chunk
                            .iter()
                            .map(|_| wsraw::Subscription::open(addr, dynamic)),
                    )
                    .await;
                    for (k, conn) in conns.into_iter().enumerate() {
                        let sub = conn?;
                        let li = b * CONNECT_BATCH + k;
                        actix_rt::spawn(sub.run(checked(shared, log, &checker, li)));
                    }
                }
                return Ok(());
            }
            for (b, chunk) in indices.chunks(CONNECT_BATCH).enumerate() {
                let conns = futures_util::future::join_all(chunk.iter().map(|_| async {
                    let (c, rx) = PersisterClient::connect(url)
                        .await
                        .map_err(|e| e.to_string())?;
                    c.subscribe(dynamic).await.map_err(|e| e.to_string())?;
                    Ok::<_, String>((c, rx))
                }))
                .await;
                for (k, conn) in conns.into_iter().enumerate() {
                    let (c, mut rx) = conn?;
                    let li = b * CONNECT_BATCH + k;
                    let (shared, log, checker) = (shared.clone(), log.clone(), checker.clone());
                    actix_rt::spawn(async move {
                        while let Some(n) = rx.recv().await {
                            let r = checker.borrow_mut().check(&n.object);
                            let now = shared.now_ns();
                            match r {
                                Ok(seq) => log.borrow_mut().record(&shared, li, seq, now),
                                Err(e) => ThreadLog::bad(&shared, || e),
                            }
                        }
                    });
                    let c2 = c.clone();
                    closers.push(Box::new(move || c2.close()));
                    keep.push(Box::new(c));
                }
            }
        }
        Target::Broker { broker, content } => {
            let checker = match content {
                Content::Frames {
                    binder_gidc,
                    verify,
                } => Some(Rc::new(RefCell::new(Checker::new(*verify, binder_gidc)?))),
                Content::Payload => None,
            };
            for (b, chunk) in indices.chunks(CONNECT_BATCH).enumerate() {
                let conns =
                    futures_util::future::join_all(chunk.iter().map(|_| broker.open())).await;
                for (k, conn) in conns.into_iter().enumerate() {
                    let sub = conn?;
                    let li = b * CONNECT_BATCH + k;
                    let on_message: Box<dyn FnMut(Bytes)> = match &checker {
                        Some(checker) => Box::new(checked(shared, log, checker, li)),
                        None => Box::new(payload_seq(shared, log, li)),
                    };
                    actix_rt::spawn(sub.run(on_message));
                }
            }
        }
        Target::Daemon { daemons, ghid } => {
            for (b, chunk) in indices.chunks(CONNECT_BATCH).enumerate() {
                let conns = futures_util::future::join_all(chunk.iter().map(|&i| {
                    let (url, token) = &daemons[i % daemons.len()];
                    open_app(url, token, *ghid)
                }))
                .await;
                for (k, conn) in conns.into_iter().enumerate() {
                    let (link, mut events) = conn?;
                    let li = b * CONNECT_BATCH + k;
                    let (shared, log, ghid) = (shared.clone(), log.clone(), *ghid);
                    actix_rt::spawn(async move {
                        while let Some(ev) = events.recv().await {
                            if let AppEvent::Update(v) = ev {
                                let now = shared.now_ns();
                                match seq_of(&v.state) {
                                    Some(seq) if v.ghid == ghid => {
                                        log.borrow_mut().record(&shared, li, seq, now)
                                    }
                                    _ => ThreadLog::bad(&shared, || {
                                        format!("update of {} ({} B)", v.ghid, v.state.len())
                                    }),
                                }
                            }
                        }
                    });
                    let l2 = link.clone();
                    closers.push(Box::new(move || l2.close()));
                    keep.push(Box::new(link));
                }
            }
        }
    }
    Ok(())
}

/// An app on a daemon that tracks `ghid` (a second device may need a moment to find it).
async fn open_app(
    url: &str,
    token: &CapabilityToken,
    ghid: Ghid,
) -> Result<(HgxLink, tokio::sync::mpsc::UnboundedReceiver<AppEvent>), String> {
    let link = HgxLink::connect(url, token)
        .await
        .map_err(|e| format!("app connect {url}: {e}"))?;
    let events = link.events();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match link.get(ghid).await {
            Ok(_) => return Ok((link, events)),
            Err(e) if Instant::now() > deadline => return Err(format!("app get {ghid}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
