//! # Persister server
//!
//! `hgx-persister` as a library: an actix-web server with the websocket protocol on `/ws`
//! (`session`, envelope in [`super::wire`], fanout through [`super::hub`]) and the
//! cache-friendly HTTP read path (`GET /`, `GET`/`HEAD /o/{ghid}`, in `http`), optionally
//! over TLS (rustls). Signature verification runs on a verify pool ([`WorkPool`]) sized to the
//! cores; announcements (fanout and acks of durable publishes) run on one fanout thread (an
//! actix arbiter, `announce`), helped by a thread bound to each other core
//! ([`crate::beside`]; a pool under a CPU quota) on rounds of hundreds of subscribers
//! ([`Hub::send_with`]); plain-TCP websockets are written
//! by us, not by actix's dispatcher (`direct`, the one place actix is bypassed). The exception, for latency: a
//! lone small publish is checked, applied and announced by its connection's reader on the
//! event loop (`session`), each thread hop costing more than the work it hands on.
//!
//! [`start`] binds and returns a [`Running`] server (tests start it on `127.0.0.1:0` and read
//! the port from [`Running::local_addr`]); [`run`] is what the binary calls: start, announce,
//! wait for the shutdown future, stop gracefully (sessions get a close frame) and flush the
//! ghidcache.
//!
//! With `server.store: nats://…` the archive is a [`NatsStore`] shared with other front-ends,
//! and notifications travel between front-ends through `cluster`.
//!
//! The listeners are bound by [`crate::net`] (every connection gets the send timeout as its
//! `TCP_USER_TIMEOUT`), and each connection's socket is kept in its connection data so that a
//! finished websocket session closes it at once.
//!
//! Owns: settings resolution (host forms, TLS files, store choice), the app wiring, the
//! lifecycle. Calls: [`super::Archive`], [`super::hub`], [`super::wire`], [`super::store`],
//! [`crate::config`], [`crate::net`].

mod announce;
mod cluster;
mod direct;
mod disk;
pub mod guard;
mod http;
mod pipeline;
mod session;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use slog::{info, warn, Logger};
use tokio::sync::watch;

use super::budget::ByteBudget;
use super::hub::{self, Hub, HubStats};
use super::store::{NatsOptions, NatsStore};
use super::wire;
use super::{Archive, PersistError};
use crate::config::{
    Config, HostSpec, NatsSection, DEFAULT_INBOUND_BYTES_TOTAL, DEFAULT_MAX_FRAME,
    DEFAULT_MIN_FREE_BYTES,
};
use crate::work_pool::WorkPool;

pub use session::{CLIENT_TIMEOUT, PING_INTERVAL};

/// How long a finished connection waits for the peer's own FIN before closing.
const CLOSE_LINGER: Duration = Duration::from_millis(100);

/// Pending connections the kernel queues for each listener.
const BACKLOG: i32 = 4096;

/// Seconds a graceful stop waits for open connections before closing them.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot resolve host {host:?}: {reason}")]
    Host { host: String, reason: String },
    #[error("TLS set-up: {0}")]
    Tls(String),
    #[error("ghidcache: {0}")]
    Persist(#[from] PersistError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Per-connection limits (`server.*` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_frame: usize,
    pub max_subscriptions: usize,
    pub outbound_queue: usize,
    /// Bytes queued to one connection (see [`hub::Budget`]).
    pub outbound_bytes: usize,
    /// Bytes queued to all connections together, and held by HTTP response bodies in
    /// flight together (0 = no such bound).
    pub outbound_bytes_total: usize,
    /// Bytes of the publishes in all connections' pipelines together, from the read of
    /// their message until they are answered (0 = no such bound; see `budget`).
    pub inbound_bytes_total: usize,
    /// Free bytes the ghidcache's filesystem keeps; below it publishes that add data get
    /// `storage` (0 = none; sled store only; see `disk`).
    pub min_free_bytes: u64,
    /// A connection whose queue stays over half of `outbound_bytes` this long is dropped;
    /// also the kernel's limit (`TCP_USER_TIMEOUT`) on data a peer does not read.
    pub send_timeout: Duration,
    pub max_in_flight: usize,
    /// A websocket peer that sends nothing (not even a pong to our pings) for this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Time a new connection has to send its complete HTTP request head (slow-loris).
    pub request_head_timeout: Duration,
    /// GARQs stored per recipient (see `rules::checks::mailbox_room`).
    pub max_requests_per_recipient: usize,
    /// GARQs stored per (sender, recipient); further ones from that sender: `mailbox_full`.
    pub max_requests_per_sender: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_subscriptions: 4096,
            outbound_queue: 4096,
            outbound_bytes: hub::DEFAULT_OUTBOUND_BYTES,
            outbound_bytes_total: hub::DEFAULT_OUTBOUND_BYTES_TOTAL,
            inbound_bytes_total: DEFAULT_INBOUND_BYTES_TOTAL,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            send_timeout: hub::DEFAULT_SEND_TIMEOUT,
            max_in_flight: 256,
            idle_timeout: Duration::from_secs(60),
            request_head_timeout: Duration::from_secs(5),
            max_requests_per_recipient: super::rules::DEFAULT_MAX_REQUESTS_PER_RECIPIENT,
            max_requests_per_sender: super::rules::DEFAULT_MAX_REQUESTS_PER_SENDER,
        }
    }
}

impl Limits {
    fn to_wire(self) -> wire::Limits {
        wire::Limits {
            max_frame: self.max_frame as u64,
            max_subscriptions: self.max_subscriptions as u64,
            outbound_queue: self.outbound_queue as u64,
            outbound_bytes: self.outbound_bytes as u64,
            max_in_flight: self.max_in_flight as u64,
            idle_timeout_s: self.idle_timeout.as_secs(),
        }
    }
}

/// PEM files for TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the server keeps objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// The sled ghidcache ([`Settings::ghidcache`]); this process is the only writer.
    Sled,
    /// A NATS JetStream cluster, shared with any number of other front-ends.
    Nats(Box<NatsOptions>),
}

impl StoreChoice {
    /// `server.store` (`sled`, or `nats://…`/`tls://…` with `server.nats`).
    pub fn parse(spec: &str, nats: &NatsSection) -> Result<StoreChoice, ServerError> {
        let spec = spec.trim();
        if spec.is_empty() || spec == "sled" {
            return Ok(StoreChoice::Sled);
        }
        if !(spec.starts_with("nats://") || spec.starts_with("tls://")) {
            return Err(PersistError::BadArgs(format!(
                "server.store {spec:?}: expected sled or nats://HOST:PORT[,HOST:PORT…]"
            ))
            .into());
        }
        let mut o = NatsOptions::from_url(spec)?;
        o.namespace = nats.namespace.clone();
        o.partitions = nats.partitions.max(1);
        o.replicas = nats.replicas;
        o.inline_max = nats.inline_max.max(1024);
        o.creds_file = nats.creds_file.clone();
        o.user = nats.user.clone();
        o.password = nats.password.clone();
        o.token = nats.token.clone();
        o.tls_ca = nats.tls_ca.clone();
        o.tls_cert = nats.tls_cert.clone();
        o.tls_key = nats.tls_key.clone();
        o.tls_required = nats.tls_required || spec.starts_with("tls://");
        o.timeout = Duration::from_secs(nats.timeout_s.max(1));
        Ok(StoreChoice::Nats(Box::new(o)))
    }
}

/// Everything [`start`] needs, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The sled ghidcache; `None` = a temporary one, deleted at exit (tests).
    pub ghidcache: Option<PathBuf>,
    /// Sled (default) or a NATS cluster.
    pub store: StoreChoice,
    /// Addresses to listen on (port 0 = any free port).
    pub addrs: Vec<SocketAddr>,
    pub tls: Option<TlsFiles>,
    pub limits: Limits,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// Signature-verification threads; 0 = one per core.
    pub verify_threads: usize,
    /// One per core only: each bound to its core ([`WorkPool::per_core`]).
    pub pin_verify_threads: bool,
    /// A lone frame's container is checked on another core meanwhile ([`crate::beside`]).
    pub check_beside: bool,
    /// Bytes of sled page cache for the ghidcache.
    pub cache_capacity: u64,
    /// How long the sled store's write-ahead log collects writes before they move into sled.
    pub wal_move_every: Duration,
    pub log: Logger,
}

impl Settings {
    /// `127.0.0.1:0`, default limits, no logging; `ghidcache` as given (`None` = temporary).
    pub fn local(ghidcache: Option<PathBuf>) -> Settings {
        Settings {
            ghidcache,
            store: StoreChoice::Sled,
            addrs: vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)],
            tls: None,
            limits: Limits::default(),
            workers: 0,
            verify_threads: 0,
            pin_verify_threads: false,
            check_beside: true,
            cache_capacity: crate::config::DEFAULT_SERVER_CACHE,
            wal_move_every: crate::persist::store::WAL_MOVE_EVERY,
            log: crate::logging::discard(),
        }
    }

    /// From the `server` section of a loaded [`Config`].
    pub fn from_config(cfg: &Config, log: Logger) -> Result<Settings, ServerError> {
        let s = &cfg.server;
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(ServerError::Tls(
                    "set both server.tls_cert and server.tls_key".into(),
                ))
            }
        };
        Ok(Settings {
            ghidcache: Some(s.ghidcache.clone()),
            store: StoreChoice::parse(&s.store, &s.nats)?,
            addrs: resolve_host(&s.host_spec(), s.port)?,
            tls,
            limits: Limits {
                max_frame: s.max_frame.max(1024),
                max_subscriptions: s.max_subscriptions.max(1),
                outbound_queue: s.outbound_queue.max(16),
                // At least 1 MiB: a notification (a frame with a long target vector is
                // ~66 KB) must always fit an empty queue.
                outbound_bytes: s.outbound_bytes.max(1 << 20),
                outbound_bytes_total: s.outbound_bytes_total,
                inbound_bytes_total: s.inbound_bytes_total,
                min_free_bytes: s.min_free_bytes,
                send_timeout: Duration::from_secs(s.send_timeout_s.max(1)),
                max_in_flight: s.max_in_flight.max(1),
                idle_timeout: Duration::from_secs(s.idle_timeout_s.max(1)),
                request_head_timeout: Duration::from_secs(s.request_head_timeout_s.max(1)),
                max_requests_per_recipient: s.max_requests_per_recipient.max(1),
                max_requests_per_sender: s.max_requests_per_sender.max(1),
            },
            workers: s.workers.unwrap_or(0),
            verify_threads: 0,
            pin_verify_threads: s.pin_verify_threads,
            check_beside: s.check_beside,
            cache_capacity: s.cache_capacity,
            wal_move_every: Duration::from_millis(s.wal_move_ms)
                .max(crate::persist::store::WAL_MOVE_EVERY_MIN),
            log,
        })
    }
}

/// The addresses a `server.host` value means.
pub fn resolve_host(spec: &HostSpec, port: u16) -> Result<Vec<SocketAddr>, ServerError> {
    let one = |ip: IpAddr| Ok(vec![SocketAddr::new(ip, port)]);
    match spec {
        HostSpec::Loopback => one(Ipv4Addr::LOCALHOST.into()),
        HostSpec::Any => one(Ipv4Addr::UNSPECIFIED.into()),
        HostSpec::Auto => one(local_ipv4().map_or(Ipv4Addr::LOCALHOST.into(), IpAddr::V4)),
        HostSpec::Addr(h) => {
            if let Ok(ip) = h.parse::<IpAddr>() {
                return one(ip);
            }
            let addrs: Vec<SocketAddr> = (h.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| ServerError::Host {
                    host: h.clone(),
                    reason: e.to_string(),
                })?
                .collect();
            if addrs.is_empty() {
                return Err(ServerError::Host {
                    host: h.clone(),
                    reason: "no address".into(),
                });
            }
            Ok(addrs)
        }
    }
}

/// The first up, non-loopback IPv4 address of this machine (`AUTO`).
fn local_ipv4() -> Option<Ipv4Addr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we walk read-only and free exactly once.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return None;
        }
        let mut found = None;
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
            let lo = ifa.ifa_flags & (libc::IFF_LOOPBACK as libc::c_uint) != 0;
            if up
                && !lo
                && !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
                break;
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(head);
        found
    }
}

fn tls_config(files: &TlsFiles) -> Result<rustls::ServerConfig, ServerError> {
    super::tls::server_config(&files.cert, &files.key).map_err(|e| ServerError::Tls(e.to_string()))
}

/// State shared by every worker and session (behind `web::Data`, an `Arc`).
pub(crate) struct Shared {
    archive: Archive,
    hub: Arc<Hub>,
    pool: WorkPool,
    /// Checks a lone frame's container on another core meanwhile (`session`, `hand_over`).
    beside: Option<Arc<crate::beside::Beside>>,
    limits: Limits,
    /// The `hello` answer (fixed for the server's life).
    hello: wire::Hello,
    /// Bytes of HTTP response bodies in flight (`outbound_bytes_total`).
    http_bodies: ByteBudget,
    /// Bytes of the publishes in every pipeline (`inbound_bytes_total`).
    inbound: ByteBudget,
    /// `min_free_bytes` of the ghidcache's disk.
    disk: disk::DiskReserve,
    log: Logger,
    /// Flips to `true` when the server stops; sessions then close with "going away".
    shutdown: watch::Receiver<bool>,
    /// The fanout thread, where each connection's announcer runs (`announce`).
    fanout: actix_rt::ArbiterHandle,
    /// The link to the other front-ends (cluster store only).
    cluster: Option<Arc<cluster::Cluster>>,
}

/// A started server.
pub struct Running {
    addrs: Vec<SocketAddr>,
    tls: bool,
    handle: actix_web::dev::ServerHandle,
    join: tokio::task::JoinHandle<io::Result<()>>,
    archive: Archive,
    hub: Arc<Hub>,
    shutdown: watch::Sender<bool>,
    fanout: actix_rt::Arbiter,
    log: Logger,
}

/// Opens the ghidcache, binds, and starts serving. Must run inside an actix system
/// (`#[actix_web::main]`, `#[actix_rt::test]`, `actix_rt::System::new().block_on`).
pub async fn start(settings: Settings) -> Result<Running, ServerError> {
    let limits = settings.limits;
    let budget = hub::Budget {
        messages: limits.outbound_queue,
        bytes: limits.outbound_bytes,
        stall: limits.send_timeout,
        total: limits.outbound_bytes_total,
    };
    let hub = Hub::new(budget, limits.max_subscriptions);
    // Threads bound to the cores (none on one core or under a CPU quota): a large round's
    // parts go to them, beside the fanout thread's own, and a lone frame's container.
    let beside = crate::beside::Beside::start("hgx-beside")?.map(Arc::new);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    match &beside {
        Some(b) => hub.send_with(hub::Helpers::Beside(b.clone())),
        None if cores > 1 => {
            hub.send_with(hub::Helpers::Pool(WorkPool::new(cores - 1, "hgx-fanout")?))
        }
        None => {}
    }
    let mut verify_threads = settings.verify_threads;
    let (archive, cluster) = match (&settings.store, &settings.ghidcache) {
        (StoreChoice::Sled, Some(p)) => {
            let log = settings.log.clone();
            let archive =
                Archive::open_logged(p, settings.cache_capacity, settings.wal_move_every, log)?;
            (archive, None)
        }
        (StoreChoice::Sled, None) => (Archive::temporary()?, None),
        (StoreChoice::Nats(o), _) => {
            let store = Arc::new(NatsStore::connect(o, settings.log.clone())?);
            let link = cluster::Cluster::start(
                store.notify_client(),
                store.namespace().to_owned(),
                hub.clone(),
                store.handle(),
                settings.log.clone(),
            );
            // A cluster publish mostly waits on JetStream round trips: more threads than
            // cores keep the cores busy.
            if verify_threads == 0 {
                verify_threads = 8 * std::thread::available_parallelism().map_or(2, |n| n.get());
            }
            (Archive::with_store(store)?, Some(link))
        }
    };
    // Only a local sled store has a disk of ours to keep from filling.
    let guarded_disk = match &settings.store {
        StoreChoice::Sled => settings.ghidcache.as_deref(),
        StoreChoice::Nats(_) => None,
    };
    archive.set_max_requests_per_recipient(limits.max_requests_per_recipient);
    archive.set_max_requests_per_sender(limits.max_requests_per_sender);
    let pool = if verify_threads == 0 && settings.pin_verify_threads {
        WorkPool::per_core("hgx-verify")?
    } else {
        WorkPool::new(verify_threads, "hgx-verify")?
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Announcements (fanout, then acks) run on their own thread, off the HTTP workers: a
    // publisher's session goes on verifying and storing while the last group commit is sent
    // out, and the next announcement carries everything that became durable meanwhile.
    let fanout = actix_rt::Arbiter::try_new()?;
    let shared = web::Data::new(Shared {
        archive: archive.clone(),
        hub: hub.clone(),
        pool,
        beside: beside
            .filter(|_| settings.check_beside && matches!(settings.store, StoreChoice::Sled)),
        limits,
        hello: wire::Hello::new(limits.to_wire()),
        http_bodies: ByteBudget::new(limits.outbound_bytes_total),
        inbound: ByteBudget::new(limits.inbound_bytes_total),
        disk: disk::DiskReserve::new(guarded_disk, limits.min_free_bytes),
        log: settings.log.clone(),
        shutdown: shutdown_rx,
        fanout: fanout.handle(),
        cluster,
    });
    let workers = if settings.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        settings.workers
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/", web::get().to(http::root))
            .route("/ws", web::get().to(session::route))
            .service(
                web::resource("/o/{ghid}")
                    .route(web::get().to(http::object))
                    .route(web::head().to(http::object)),
            )
    })
    // Each connection's socket, so that a finished websocket session can end it (`net`).
    .on_connect(|io, ext| {
        if let Some(socket) = crate::net::ConnSocket::of(io) {
            ext.insert(socket);
        }
    })
    // Notifications are small and latency-bound: no Nagle delay behind delayed ACKs.
    .tcp_nodelay(true)
    .client_request_timeout(limits.request_head_timeout)
    // After a response ends (a websocket's close handshake included), read what the peer
    // still sends for at most this long, then close (FIN): a closed session does not keep
    // its socket for the default second.
    .client_disconnect_timeout(CLOSE_LINGER)
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS);
    let addrs = settings.addrs.clone();
    let bind_err = |source| ServerError::Bind {
        addr: addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        source,
    };
    let tls = settings.tls.as_ref().map(tls_config).transpose()?;
    let mut server = server;
    for addr in &addrs {
        // Our own listener: its connections inherit the send timeout (see `crate::net`).
        let listener =
            crate::net::listener(*addr, BACKLOG, limits.send_timeout).map_err(bind_err)?;
        server = match &tls {
            Some(cfg) => server.listen_rustls_0_23(listener, cfg.clone()),
            None => server.listen(listener),
        }
        .map_err(bind_err)?;
    }
    let bound = server.addrs();
    if bound.is_empty() {
        return Err(ServerError::Bind {
            addr: "(no address)".into(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "nothing to listen on"),
        });
    }
    let server = server.run();
    let handle = server.handle();
    let join = actix_web::rt::spawn(server);
    info!(settings.log, "listening"; "addrs" => ?bound, "tls" => settings.tls.is_some());
    Ok(Running {
        addrs: bound,
        tls: settings.tls.is_some(),
        handle,
        join,
        archive,
        hub,
        shutdown: shutdown_tx,
        fanout,
        log: settings.log,
    })
}

/// Stops the fanout thread (after the server: its last announcements are done).
async fn end_fanout(fanout: actix_rt::Arbiter) {
    fanout.stop();
    let _ = tokio::task::spawn_blocking(move || fanout.join()).await;
}

impl Running {
    /// The first bound address (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// `ws://addr/ws` (or `wss://`).
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.local_addr())
    }

    /// `http://addr` (or `https://`), without a trailing slash.
    pub fn http_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr())
    }

    /// The archive the server publishes into (tests, tools).
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    pub fn stats(&self) -> HubStats {
        self.hub.stats()
    }

    /// Graceful stop: sessions get a close frame, connections get up to
    /// `SHUTDOWN_TIMEOUT_SECS` to finish, then the ghidcache is flushed.
    pub async fn stop(self) -> Result<(), ServerError> {
        info!(self.log, "stopping");
        let _ = self.shutdown.send(true);
        self.handle.stop(true).await;
        match self.join.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(self.log, "server ended with an error"; "error" => %e),
            Err(e) => warn!(self.log, "server task failed"; "error" => %e),
        }
        end_fanout(self.fanout).await;
        self.archive.sync().await?;
        info!(self.log, "stopped; ghidcache flushed");
        Ok(())
    }

    /// Serves until `shutdown` resolves, then [`Running::stop`]s.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        tokio::select! {
            _ = shutdown => self.stop().await,
            r = &mut self.join => {
                end_fanout(self.fanout).await;
                let _ = self.archive.sync().await;
                match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(io::Error::other(e.to_string()).into()),
                }
            }
        }
    }
}

/// The persister: starts, prints `listening on <url>` to stdout (so a supervisor or a test
/// can learn a port chosen by the OS), serves until `shutdown` resolves, stops gracefully
/// and flushes.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let running = start(settings).await?;
    for a in running.addrs() {
        let scheme = if running.tls { "https" } else { "http" };
        println!("listening on {scheme}://{a}");
    }
    use std::io::Write as _;
    let _ = io::stdout().flush();
    running.run_until(shutdown).await
}
