//! The IPC endpoint: an actix-web server on `127.0.0.1:<ipc_port>` whose only routes, `/`
//! and `/ws`, upgrade to a websocket (actix-ws) and hand it to a `session` task. It refuses
//! handshakes from browsers (an `Origin` header) unless the origin is allowed, so a web page
//! cannot drive the daemon even before the token check.
//!
//! Strangers are bounded: a connection has `hello_timeout` to authenticate, and at most
//! `max_unauthenticated` sessions wait for their `hello` at once — a new one makes the oldest
//! waiting one close (`Waiting`), so idle sockets opened by any local process cannot lock
//! out an app that has the token. The listener is ours ([`crate::net`]): a connection whose
//! peer does not read what it was sent for `send_timeout` is dropped by the kernel.
//!
//! Calls: `session` (one task per connection), which calls the [`DaemonApi`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use slog::{info, o, Logger};
use tokio::sync::watch;

use super::session;
use super::token::CapabilityToken;
use super::{DaemonApi, IpcError};

/// The default IPC port (`process.ipc_port`).
pub const DEFAULT_IPC_PORT: u16 = 7772;
/// The default largest message, in either direction's request (16 MiB).
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// How long a connection may stay without a successful `hello` by default.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions waiting for their `hello` at once, by default: far more than the apps of one
/// machine start at once (a burst of them must not push each other out), few enough that
/// the daemon keeps file descriptors for apps (it is also capped at a quarter of the open-file
/// limit, see `hgxd`).
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 1024;
/// Authenticated app connections at once, by default: each may hold up to its inbox's and
/// writer's bounds (README), so their number is bounded too; a burst of apps (a desktop
/// session, a benchmark's subscribers) fits.
pub const DEFAULT_MAX_APPS: usize = 1024;
/// How long data sent to an app may stay unread before the connection is dropped, by
/// default.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Pending TCP connections the kernel queues.
const BACKLOG: i32 = 1024;
/// How long a graceful stop waits for sessions to finish their in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a graceful stop then waits for apps to close their connections.
const CLOSE_LINGER: Duration = Duration::from_millis(250);

/// How to run the endpoint.
#[derive(Debug, Clone)]
pub struct IpcConfig {
    /// Where to listen; port 0 picks a free port (see [`IpcServer::local_addr`]).
    pub addr: SocketAddr,
    /// The token `hello` must present (the daemon also writes it to `ipc.token`).
    pub token: CapabilityToken,
    /// Browser origins allowed to connect, e.g. `http://localhost:8080` (compared without
    /// case and without a trailing `/`). Handshakes without an `Origin` header (native
    /// apps) are always admitted to the token check.
    pub allowed_origins: Vec<String>,
    /// Largest message accepted from an app; a larger one gets `too_large` and the
    /// connection closes.
    pub max_message: usize,
    /// A connection without a successful `hello` after this long is closed.
    pub hello_timeout: Duration,
    /// Most sessions waiting for their `hello` at once; one more closes the oldest.
    pub max_unauthenticated: usize,
    /// Most authenticated sessions at once; a `hello` past it gets `limit`.
    pub max_apps: usize,
    /// Sent data unread by the app for this long drops the connection (`TCP_USER_TIMEOUT`).
    pub send_timeout: Duration,
    /// actix worker threads; each connection lives on one.
    pub workers: usize,
    pub log: Logger,
}

impl IpcConfig {
    /// Defaults: `127.0.0.1:7772`, no browser origins, 16 MiB, 10 s hello timeout,
    /// [`DEFAULT_MAX_UNAUTHENTICATED`] sessions waiting for `hello`, 30 s send timeout,
    /// 2 workers, logs discarded.
    pub fn new(token: CapabilityToken) -> IpcConfig {
        IpcConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_IPC_PORT)),
            token,
            allowed_origins: Vec::new(),
            max_message: DEFAULT_MAX_MESSAGE,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
            max_apps: DEFAULT_MAX_APPS,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            workers: 2,
            log: Logger::root(slog::Discard, o!()),
        }
    }
}

/// What every session of one server shares (read-only).
pub(super) struct Shared<A> {
    pub api: A,
    pub token: CapabilityToken,
    /// Lower-case, without trailing `/`.
    pub allowed_origins: Vec<String>,
    pub max_message: usize,
    pub hello_timeout: Duration,
    /// Sessions that have not said `hello` yet.
    pub waiting: Waiting,
    /// Sessions that have (a count, bounded by [`IpcConfig::max_apps`]).
    pub apps: AppSlots,
    pub log: Logger,
    /// Becomes `true` when the server stops: every session closes.
    pub shutdown: watch::Receiver<bool>,
    /// Live sessions, for the stop's completion wait.
    pub sessions: Counter,
    /// The runtime that called [`serve`] (the daemon's): entered around every daemon call,
    /// so what the daemon spawns lands there and not on an IPC worker thread.
    pub rt: tokio::runtime::Handle,
}

/// A count of live things (sessions, TCP connections) that a stop can wait to reach zero.
#[derive(Clone)]
pub(super) struct Counter(Arc<watch::Sender<usize>>);

impl Counter {
    fn new() -> Counter {
        Counter(Arc::new(watch::Sender::new(0)))
    }

    /// Counts one; dropping the guard (however its owner ends, even cancelled) uncounts it.
    pub(super) fn enter(&self) -> CountGuard {
        self.0.send_modify(|n| *n += 1);
        CountGuard(self.clone())
    }

    fn get(&self) -> usize {
        *self.0.borrow()
    }

    async fn zero(&self) {
        let _ = self.0.subscribe().wait_for(|n| *n == 0).await;
    }
}

/// The sessions waiting for their `hello`, oldest first, at most `max`: admitting one more
/// tells the oldest to close. Each waiting session holds a [`WaitingGuard`] until it
/// authenticates or ends.
pub(super) struct Waiting {
    max: usize,
    inner: Arc<std::sync::Mutex<WaitingSet>>,
}

#[derive(Default)]
struct WaitingSet {
    next: u64,
    /// Admission number -> the session's eviction signal.
    sessions: std::collections::BTreeMap<u64, Arc<tokio::sync::Notify>>,
}

impl Waiting {
    fn new(max: usize) -> Waiting {
        Waiting {
            max: max.max(1),
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WaitingSet> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new session; if that makes one too many, the oldest waiting one is told to
    /// close (its signal fires) and leaves the set.
    pub(super) fn admit(&self) -> WaitingGuard {
        let evict = Arc::new(tokio::sync::Notify::new());
        let mut set = self.lock();
        let id = set.next;
        set.next += 1;
        set.sessions.insert(id, evict.clone());
        while set.sessions.len() > self.max {
            if let Some((_, oldest)) = set.sessions.pop_first() {
                oldest.notify_one();
            }
        }
        WaitingGuard {
            id,
            evict,
            inner: self.inner.clone(),
        }
    }
}

/// The authenticated sessions, at most `max`.
pub(super) struct AppSlots {
    max: usize,
    taken: Arc<AtomicUsize>,
}

impl AppSlots {
    fn new(max: usize) -> AppSlots {
        AppSlots {
            max: max.max(1),
            taken: Arc::default(),
        }
    }

    /// A place for one more authenticated session, unless `max` are taken.
    pub(super) fn take(&self) -> Option<AppSlot> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| AppSlot(self.taken.clone()))
    }

    pub(super) fn max(&self) -> usize {
        self.max
    }
}

/// One authenticated session's place; freed when the session ends.
pub(super) struct AppSlot(Arc<AtomicUsize>);

impl Drop for AppSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One waiting session's place; dropped when it authenticates or ends.
pub(super) struct WaitingGuard {
    id: u64,
    evict: Arc<tokio::sync::Notify>,
    inner: Arc<std::sync::Mutex<WaitingSet>>,
}

impl WaitingGuard {
    /// Resolves once a newer session pushed this one out.
    pub(super) async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        let mut set = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        set.sessions.remove(&self.id);
    }
}

/// Bytes a session handed to its websocket writer that the HTTP layer has not taken yet
/// (counted in by the session, out by the response body's tap, [`Written`]). Above a bound
/// the session stops reading requests and taking replies or events, so an app that does not
/// read cannot make the daemon queue more.
pub(super) struct Unwritten {
    bytes: AtomicUsize,
    /// The connection is gone: nothing will be taken any more, stop waiting.
    gone: AtomicBool,
    /// Signalled whenever bytes are taken (single waiter: the session).
    drained: Notify,
}

impl Unwritten {
    fn new() -> Arc<Unwritten> {
        Arc::new(Unwritten {
            bytes: AtomicUsize::new(0),
            gone: AtomicBool::new(false),
            drained: Notify::new(),
        })
    }

    pub(super) fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn take(&self, n: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
        self.drained.notify_one();
    }

    /// At or above `limit` bytes, and the connection still there.
    pub(super) fn over(&self, limit: usize) -> bool {
        !self.gone.load(Ordering::Relaxed) && self.bytes.load(Ordering::Relaxed) >= limit
    }

    /// Resolves after the next take (or at once if one happened since the last wait).
    pub(super) async fn drained(&self) {
        self.drained.notified().await;
    }
}

/// What the websocket response body reports: bytes the HTTP layer takes come out of
/// [`Unwritten`]; at its end the connection's reading side ends (`crate::net`).
struct Written {
    unwritten: Arc<Unwritten>,
    end: crate::net::EndReading,
}

impl crate::net::BodyTap for Written {
    fn taken(&mut self, bytes: usize) {
        self.unwritten.take(bytes);
    }

    fn ended(&mut self) {
        self.end.ended();
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        self.unwritten.gone.store(true, Ordering::Relaxed);
        self.unwritten.drained.notify_one();
    }
}

/// One counted thing; see [`Counter::enter`].
pub(super) struct CountGuard(Counter);

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0 .0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn normalize_origin(o: &str) -> String {
    o.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl<A> Shared<A> {
    fn origin_allowed(&self, origin: &str) -> bool {
        let o = normalize_origin(origin);
        self.allowed_origins.contains(&o)
    }
}

/// A running endpoint. Dropping it leaves the server running; call [`IpcServer::stop`].
pub struct IpcServer {
    local_addr: SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Tells every session to close (broadcast signal).
    shutdown: watch::Sender<bool>,
    /// Live sessions and TCP connections; a stop waits for both to reach zero (completion
    /// wait) before it stops the HTTP server, which would otherwise poll its connections
    /// only once a second.
    sessions: Counter,
    connections: Counter,
}

impl IpcServer {
    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://<local_addr>/`, what [`super::HgxLink::connect`] takes.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.local_addr)
    }

    /// Number of open connections (sessions).
    pub fn sessions(&self) -> usize {
        self.sessions.get()
    }

    /// Closes every connection and stops the server. Graceful: each session lets its
    /// in-flight requests finish and calls `disconnect_app` (waited for, at most a few
    /// seconds), and apps get a moment to close their end after the close frame. Forced:
    /// sessions are cut off where they are.
    pub async fn stop(self, graceful: bool) {
        let _ = self.shutdown.send(true);
        if graceful {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.sessions.zero()).await;
            // actix keeps a websocket's TCP connection until the app closes it.
            let _ = tokio::time::timeout(CLOSE_LINGER, self.connections.zero()).await;
        }
        // Every session is over: whatever connection is left has nothing more to say.
        self.handle.stop(false).await;
        let _ = self.task.await;
    }
}

/// Binds the endpoint and starts serving. Must be called inside a tokio runtime (actix's
/// included), normally the daemon's: the server runs on its own worker threads, but every
/// [`DaemonApi`] call runs with this runtime entered, so a `tokio::spawn` inside the daemon
/// lands on it.
pub async fn serve<A: DaemonApi>(api: A, cfg: IpcConfig) -> Result<IpcServer, IpcError> {
    let log = cfg.log.new(o!("module" => "ipc"));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let sessions = Counter::new();
    let connections = Counter::new();
    let on_connect = {
        let connections = connections.clone();
        move |io: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions| {
            ext.insert(connections.enter());
            // So that a finished session can end its connection (`crate::net`).
            if let Some(socket) = crate::net::ConnSocket::of(io) {
                ext.insert(socket);
            }
        }
    };
    let shared = web::Data::from(Arc::new(Shared {
        api,
        token: cfg.token,
        allowed_origins: cfg
            .allowed_origins
            .iter()
            .map(|o| normalize_origin(o))
            .collect(),
        max_message: cfg.max_message,
        hello_timeout: cfg.hello_timeout,
        waiting: Waiting::new(cfg.max_unauthenticated),
        apps: AppSlots::new(cfg.max_apps),
        log: log.clone(),
        shutdown: shutdown_rx,
        sessions: sessions.clone(),
        rt: tokio::runtime::Handle::current(),
    }));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/", web::get().to(endpoint::<A>))
            .route("/ws", web::get().to(endpoint::<A>))
    })
    .on_connect(on_connect)
    // Replies and events are small and latency-bound: no Nagle delay.
    .tcp_nodelay(true)
    .workers(cfg.workers.max(1))
    // A connection carries one websocket: when its session ends, close it rather than keep
    // it alive for another request, and do not linger for the app to close its end.
    .keep_alive(actix_web::http::KeepAlive::Disabled)
    .client_disconnect_timeout(Duration::from_millis(100))
    .disable_signals()
    .shutdown_timeout(5);
    let bind_err = |source| IpcError::Bind {
        addr: cfg.addr,
        source,
    };
    // Our own listener: its connections inherit the send timeout (see `crate::net`).
    let listener = crate::net::listener(cfg.addr, BACKLOG, cfg.send_timeout).map_err(bind_err)?;
    let server = server.listen(listener).map_err(bind_err)?;
    let local_addr = server.addrs().first().copied().unwrap_or(cfg.addr);
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    info!(log, "ipc listening"; "addr" => %local_addr);
    Ok(IpcServer {
        local_addr,
        handle,
        task,
        shutdown,
        sessions,
        connections,
    })
}

/// The websocket handshake: origin check, then a session task.
async fn endpoint<A: DaemonApi>(
    req: HttpRequest,
    body: web::Payload,
    shared: web::Data<Shared<A>>,
) -> Result<HttpResponse, actix_web::Error> {
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        if !shared.origin_allowed(&origin) {
            info!(shared.log, "refused websocket handshake from a browser origin";
                "origin" => %origin, "peer" => ?req.peer_addr());
            return Ok(HttpResponse::Forbidden().body("origin not allowed\n"));
        }
    }
    let (response, ws, stream) = actix_ws::handle(&req, body)?;
    let guard = shared.sessions.enter();
    let waiting = shared.waiting.admit();
    let unwritten = Unwritten::new();
    let counted = unwritten.clone();
    actix_web::rt::spawn(session::run(
        shared.into_inner(),
        ws,
        stream,
        guard,
        waiting,
        unwritten,
    ));
    // Once the session's close frame is out, the connection closes at once (`crate::net`).
    let socket = req.conn_data::<crate::net::ConnSocket>().cloned();
    Ok(response
        .map_body(|_, body| {
            let tap = Written {
                unwritten: counted,
                end: crate::net::EndReading(socket),
            };
            crate::net::TappedBody::new(body, tap)
        })
        .map_into_boxed_body())
}
