//! # Persister client
//!
//! The client side of the persister protocol ([`super::wire`]) over an awc websocket: one
//! method per op, request ids, any number of requests in flight on one connection (replies
//! are matched by id), typed errors carrying the server's wire code, and pushed
//! notifications on a bounded channel. Used by `hgxd`'s remote actor and the tests.
//!
//! [`PersisterClient`] is a cheap `Clone + Send + Sync` handle; the socket itself lives in an
//! I/O task spawned on the current actix system (awc is `!Send`), so
//! [`PersisterClient::connect`] must be called inside one (`#[actix_rt::test]`,
//! `actix_rt::System`, an actix-web worker). The notification channel is bounded in count
//! and bytes: a consumer that stops reading it stops the I/O task reading the socket (and
//! the server then merges or drops what it cannot send), or, with
//! [`ClientOptions::close_when_full`], makes the client close the connection; so keep
//! draining it.
//!
//! Owns: the connection, pending-request table, reply matching. Calls: [`super::wire`], awc.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use awc::ws::{CloseCode, CloseReason, Frame, Message};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::budget::ByteBudget;
use super::wire::{self, args, ErrBody, Hello, Incoming, PublishAck};
use crate::golix::{FirstParty, Ghid};

/// Errors of client calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The websocket could not be opened; `kind` says at which step.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        url: String,
        kind: ConnectFailure,
        reason: String,
    },
    /// The server answered with an error; `code` is the stable wire code (`not_found`,
    /// `unbound_container`, `too_large`, ...).
    #[error("{code}: {message}")]
    Server { code: String, message: String },
    /// The connection is closed (or closed before the reply arrived).
    #[error("connection closed")]
    Closed,
    /// No reply within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The server sent something this client cannot read.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's wire code, for [`ClientError::Server`].
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Where opening a connection failed, for logs and `hgxd status` (each has a stable name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing listens at the address (TCP connection refused).
    Refused,
    /// The host name does not resolve.
    Resolve,
    /// The TCP connect, the TLS handshake or the websocket upgrade took too long.
    Timeout,
    /// The TLS handshake failed (not a TLS server, no common version or cipher, an alert).
    Tls,
    /// The server's certificate is not trusted, expired, or does not name the host.
    Certificate,
    /// The server did not accept the websocket upgrade at `/ws` (not HTTP, wrong status).
    Handshake,
    /// Any other network error (unreachable, reset).
    Network,
}

impl ConnectFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Resolve => "resolve",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Tls => "tls",
            ConnectFailure::Certificate => "certificate",
            ConnectFailure::Handshake => "handshake",
            ConnectFailure::Network => "network",
        }
    }
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why awc could not open the websocket, in words an operator can act on.
fn describe_ws_error(e: &awc::error::WsClientError) -> (ConnectFailure, String) {
    use awc::error::{ConnectError, SendRequestError, WsClientError};
    let not_http = |detail: &dyn std::fmt::Display| {
        (
            ConnectFailure::Handshake,
            format!(
                "the server did not answer the websocket upgrade ({detail}); if it serves TLS, \
                 set `tls: true`"
            ),
        )
    };
    match e {
        WsClientError::SendRequest(SendRequestError::Connect(c)) => match c {
            ConnectError::Io(io) => describe_io_error(io),
            ConnectError::Timeout => (
                ConnectFailure::Timeout,
                "timed out opening the connection".into(),
            ),
            ConnectError::Resolver(_) | ConnectError::NoRecords | ConnectError::Unresolved => (
                ConnectFailure::Resolve,
                format!("cannot resolve the host: {c}"),
            ),
            ConnectError::SslIsNotSupported => (
                ConnectFailure::Tls,
                "no TLS configuration for wss://".into(),
            ),
            other => (ConnectFailure::Network, other.to_string()),
        },
        WsClientError::SendRequest(SendRequestError::Timeout) => (
            ConnectFailure::Timeout,
            "no answer to the websocket upgrade".into(),
        ),
        WsClientError::SendRequest(SendRequestError::Url(u)) => {
            (ConnectFailure::Handshake, format!("bad URL: {u}"))
        }
        WsClientError::SendRequest(other) => not_http(other),
        WsClientError::InvalidResponseStatus(status) => (
            ConnectFailure::Handshake,
            format!("HTTP {status} to the websocket upgrade at this URL: not a persister"),
        ),
        WsClientError::Protocol(p) => (ConnectFailure::Handshake, format!("websocket: {p}")),
        other => not_http(other),
    }
}

/// Classifies a socket-level error: TLS failures arrive as an `io::Error` wrapping rustls's.
fn describe_io_error(io: &std::io::Error) -> (ConnectFailure, String) {
    use std::io::ErrorKind;
    if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::InvalidCertificate(c) => (
                ConnectFailure::Certificate,
                format!(
                    "the server's certificate is not accepted: {c} (trusted: the public roots and \
                     the remote's ca_file)"
                ),
            ),
            // What a plain HTTP server answers a TLS hello with.
            rustls::Error::InvalidMessage(_) => (
                ConnectFailure::Tls,
                format!(
                    "TLS handshake failed: {tls}; if the server does not serve TLS, set \
                     `tls: false`"
                ),
            ),
            other => (
                ConnectFailure::Tls,
                format!("TLS handshake failed: {other}"),
            ),
        };
    }
    match io.kind() {
        ErrorKind::ConnectionRefused => (
            ConnectFailure::Refused,
            "connection refused (nothing listens there)".into(),
        ),
        ErrorKind::TimedOut => (ConnectFailure::Timeout, io.to_string()),
        // tokio-rustls: the peer closed the socket mid-handshake (e.g. a server without TLS).
        ErrorKind::UnexpectedEof => (
            ConnectFailure::Tls,
            format!(
                "TLS handshake failed: the server closed the connection ({io}); does it serve TLS?"
            ),
        ),
        // actix-tls: the host is not a valid TLS server name.
        ErrorKind::InvalidInput => (ConnectFailure::Tls, format!("TLS: {io}")),
        _ => (ConnectFailure::Network, io.to_string()),
    }
}

impl From<ErrBody> for ClientError {
    fn from(e: ErrBody) -> Self {
        ClientError::Server {
            code: e.code,
            message: e.message,
        }
    }
}

/// A pushed notification: `object` (raw Golix bytes) concerns `subscription`. Its bytes count
/// against the connection's [`ClientOptions::notify_bytes`] until it is dropped (keep its
/// [`Held`] with the object, [`Notification::into_parts`], until it is handled).
#[derive(Debug)]
pub struct Notification {
    pub subscription: Ghid,
    pub object: Bytes,
    held: Held,
}

impl Notification {
    /// The subscription, the object, and its place in the budget.
    pub fn into_parts(self) -> (Ghid, Bytes, Held) {
        (self.subscription, self.object, self.held)
    }
}

/// Bytes counted against a connection's [`ClientOptions::notify_bytes`], freed on drop.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// The receiving end of a connection's notifications; ends when the connection closes.
pub type Notifications = mpsc::Receiver<Notification>;

/// The default [`ClientOptions::notify_bytes`].
pub const DEFAULT_NOTIFY_BYTES: usize = 16 << 20;

/// Connection options.
#[derive(Clone)]
pub struct ClientOptions {
    /// Largest message accepted from the server (default 64 MiB).
    pub max_frame: usize,
    /// Per-request reply timeout (default 30 s).
    pub request_timeout: Duration,
    /// Websocket handshake timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Notifications buffered before the socket stops being read (default 1024).
    pub notify_buffer: usize,
    /// Bytes of notifications received and not yet dropped by the application (the
    /// buffered ones and those it still holds), and of whatever it counts with
    /// [`PersisterClient::hold`]; past it the socket stops being read (default 16 MiB; a
    /// notification larger than that waits for all of it).
    pub notify_bytes: usize,
    /// When a notification finds `notify_buffer` or `notify_bytes` full: close the
    /// connection ([`PersisterClient::closed_because`] says why) instead of waiting with the
    /// socket unread. A consumer that makes requests on this connection while it handles
    /// notifications needs this: waiting, the I/O task would not read the replies that
    /// consumer waits for. Default `false` (wait: backpressure).
    pub close_when_full: bool,
    /// TLS configuration for `wss://` (leave `alpn_protocols` empty or `http/1.1`); `None`
    /// trusts the public roots ([`super::tls::default_client_config`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_frame: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            notify_buffer: 1024,
            notify_bytes: DEFAULT_NOTIFY_BYTES,
            close_when_full: false,
            tls: None,
        }
    }
}

type Reply = Result<Value, ClientError>;

/// State shared by the handles and the I/O task.
#[derive(Default)]
struct Pending {
    /// Requests awaiting their reply, by id.
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    /// The last error reply whose id the server could not recover (`malformed`,
    /// `too_large`); pending requests fail with it if the connection then closes.
    orphan: Option<ErrBody>,
    closed: bool,
    /// Why this end closed the connection, when it did so on its own (see
    /// [`ClientOptions::close_when_full`]).
    closed_because: Option<String>,
}

/// A request on the wire, its reply still to come.
struct Sent {
    id: u64,
    rx: oneshot::Receiver<Reply>,
}

fn lock(p: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

enum Cmd {
    /// Binary messages to write together.
    Send(Vec<Bytes>),
    Close,
}

/// A connection to one persister. Clones share the connection; it closes when the last
/// clone is dropped, on [`PersisterClient::disconnect`] or [`PersisterClient::close`].
#[derive(Clone)]
pub struct PersisterClient {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    tx: mpsc::Sender<Cmd>,
    /// [`ClientOptions::notify_bytes`].
    notified: Arc<ByteBudget>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    timeout: Duration,
}

impl std::fmt::Debug for PersisterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersisterClient")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl PersisterClient {
    /// Connects to `url` (`ws://host:port/ws`) with default options.
    pub async fn connect(url: &str) -> Result<(PersisterClient, Notifications), ClientError> {
        PersisterClient::connect_with(url, ClientOptions::default()).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(
        url: &str,
        opts: ClientOptions,
    ) -> Result<(PersisterClient, Notifications), ClientError> {
        let builder = awc::Client::builder().timeout(opts.connect_timeout);
        // awc has no roots of its own: a `wss://` URL without a configuration gets the
        // default trust (see `persist::tls`).
        let tls = match &opts.tls {
            Some(tls) => Some(tls.clone()),
            None if url.starts_with("wss://") => Some(super::tls::default_client_config()),
            None => None,
        };
        let client = match tls {
            Some(tls) => builder
                .connector(
                    awc::Connector::new()
                        .rustls_0_23(tls)
                        .handshake_timeout(opts.connect_timeout),
                )
                .finish(),
            None => builder.finish(),
        };
        let (_resp, framed) = client
            .ws(url)
            .max_frame_size(opts.max_frame)
            .connect()
            .await
            .map_err(|e| {
                let (kind, reason) = describe_ws_error(&e);
                ClientError::Connect {
                    url: url.to_owned(),
                    kind,
                    reason,
                }
            })?;
        let (tx, rx) = mpsc::channel(1024);
        let (ntx, nrx) = mpsc::channel(opts.notify_buffer.max(1));
        let pending = Arc::new(Mutex::new(Pending::default()));
        let notified = Arc::new(ByteBudget::new(opts.notify_bytes.max(1)));
        let notify = Notify {
            tx: ntx,
            budget: notified.clone(),
            close_when_full: opts.close_when_full,
        };
        actix_rt::spawn(io_task(framed, rx, pending.clone(), notify));
        let inner = Inner {
            url: url.to_owned(),
            tx,
            notified,
            pending,
            next_id: AtomicU64::new(1),
            timeout: opts.request_timeout,
        };
        Ok((
            PersisterClient {
                inner: Arc::new(inner),
            },
            nrx,
        ))
    }

    /// The url this client connected to.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.pending).closed
    }

    /// Why this end closed the connection on its own, if it did (see
    /// [`ClientOptions::close_when_full`]).
    pub fn closed_because(&self) -> Option<String> {
        lock(&self.inner.pending).closed_because.clone()
    }

    /// The last error reply that carried no request id (e.g. `malformed` for undecodable
    /// bytes sent with [`PersisterClient::send_raw`]), taken.
    pub fn take_orphan_error(&self) -> Option<ClientError> {
        lock(&self.inner.pending)
            .orphan
            .take()
            .map(ClientError::from)
    }

    /// Sends a request with any op and args and returns the raw `ok` value (ops this client
    /// does not know yet, and tests).
    pub async fn request_raw<A: Serialize>(&self, op: &str, args: A) -> Result<Value, ClientError> {
        let (sent, frame) = self.register(op, args)?;
        self.send_frames(vec![frame], &[sent.id]).await?;
        self.reply(sent).await
    }

    /// A new request awaiting its reply, and its encoded frame (not sent yet).
    fn register<A: Serialize>(&self, op: &str, args: A) -> Result<(Sent, Bytes), ClientError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.inner.pending);
            if p.closed {
                return Err(ClientError::Closed);
            }
            p.waiting.insert(id, tx);
        }
        Ok((Sent { id, rx }, wire::encode_request(id, op, args)))
    }

    /// Hands `frames` (the requests `ids`) to the I/O task as one write, within the request
    /// timeout (its queue is bounded: a connection whose socket does not drain must not hold
    /// the caller for ever); on failure none of them awaits a reply any more.
    async fn send_frames(&self, frames: Vec<Bytes>, ids: &[u64]) -> Result<(), ClientError> {
        let sent = tokio::time::timeout(self.inner.timeout, self.inner.tx.send(Cmd::Send(frames)));
        let err = match sent.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => ClientError::Closed,
            Err(_) => ClientError::Timeout,
        };
        let mut p = lock(&self.inner.pending);
        for id in ids {
            p.waiting.remove(id);
        }
        Err(err)
    }

    /// The reply to a sent request (within the request timeout, counted from now).
    async fn reply(&self, Sent { id, rx }: Sent) -> Result<Value, ClientError> {
        match tokio::time::timeout(self.inner.timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                lock(&self.inner.pending).waiting.remove(&id);
                Err(ClientError::Timeout)
            }
        }
    }

    /// Sends raw bytes as one binary message (tests of the server's tolerance).
    pub async fn send_raw(&self, frame: Bytes) -> Result<(), ClientError> {
        self.inner
            .tx
            .send(Cmd::Send(vec![frame]))
            .await
            .map_err(|_| ClientError::Closed)
    }

    async fn call<A: Serialize, T: DeserializeOwned>(
        &self,
        op: &str,
        args: A,
    ) -> Result<T, ClientError> {
        let v = self.request_raw(op, args).await?;
        rmpv::ext::from_value(v).map_err(|e| ClientError::Protocol(format!("{op} reply: {e}")))
    }

    async fn by_ghid<T: DeserializeOwned>(&self, op: &str, ghid: &Ghid) -> Result<T, ClientError> {
        self.call(op, args::ByGhid { ghid: *ghid }).await
    }

    /// Protocol version, limits, op table and events.
    pub async fn hello(&self) -> Result<Hello, ClientError> {
        self.call("hello", Empty {}).await
    }

    /// Authenticates this connection as `who` (`auth_challenge`, then `auth` with the signed
    /// challenge): the server must hold `who`'s GIDC. Requests (GARQs) published on this
    /// connection then count against `who` rather than the anonymous sender.
    pub async fn authenticate(&self, who: &FirstParty) -> Result<(), ClientError> {
        let challenge: serde_bytes::ByteBuf = self.call("auth_challenge", Empty {}).await?;
        let signature = crate::golix::auth::sign(who, &challenge)
            .map_err(|e| ClientError::Protocol(format!("cannot sign the challenge: {e}")))?;
        let auth = args::Auth {
            identity: who.ghid(),
            signature: signature.to_vec(),
        };
        let _: bool = self.call("auth", auth).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), ClientError> {
        self.request_raw("ping", Empty {}).await.map(|_| ())
    }

    /// Publishes raw Golix bytes; resolves once the server has made them durable.
    pub async fn publish(&self, object: &[u8]) -> Result<PublishAck, ClientError> {
        self.call("publish", PublishRef { object }).await
    }

    /// Publishes `objects` pipelined: all of them go out, in order, in one write, before any
    /// reply is awaited (the server applies a connection's publishes in arrival order, so a
    /// binding followed by its container is taken in one round trip). One result per
    /// object, in order; all fail with [`ClientError::Closed`] if the connection is closed.
    pub async fn publish_all(&self, objects: &[&[u8]]) -> Vec<Result<PublishAck, ClientError>> {
        let mut sent = Vec::with_capacity(objects.len());
        let mut frames = Vec::with_capacity(objects.len());
        for object in objects {
            match self.register("publish", PublishRef { object }) {
                Ok((s, frame)) => {
                    sent.push(s);
                    frames.push(frame);
                }
                Err(e) => {
                    let ids: Vec<u64> = sent.iter().map(|s| s.id).collect();
                    let mut p = lock(&self.inner.pending);
                    for id in ids {
                        p.waiting.remove(&id);
                    }
                    return objects.iter().map(|_| Err(e.clone())).collect();
                }
            }
        }
        let ids: Vec<u64> = sent.iter().map(|s| s.id).collect();
        if let Err(e) = self.send_frames(frames, &ids).await {
            return objects.iter().map(|_| Err(e.clone())).collect();
        }
        let mut results = Vec::with_capacity(objects.len());
        for s in sent {
            results.push(self.reply(s).await.and_then(|v| {
                rmpv::ext::from_value(v)
                    .map_err(|e| ClientError::Protocol(format!("publish reply: {e}")))
            }));
        }
        results
    }

    /// Counts `len` bytes the application got from this connection and keeps until it has
    /// handled them (a `get` reply queued beside the notifications, say) against
    /// [`ClientOptions::notify_bytes`], once they fit; freed when the [`Held`] drops.
    pub async fn hold(&self, len: usize) -> Held {
        Held(self.inner.notified.take(len).await)
    }

    /// The object's bytes (a dynamic ghid gives its current frame); `not_found` if absent.
    pub async fn get(&self, ghid: &Ghid) -> Result<Bytes, ClientError> {
        match self
            .request_raw("get", args::ByGhid { ghid: *ghid })
            .await?
        {
            Value::Binary(b) => Ok(Bytes::from(b)),
            other => Err(ClientError::Protocol(format!(
                "get reply is not bin: {other}"
            ))),
        }
    }

    /// Subscribes; notifications for `ghid` then arrive on the [`Notifications`] channel,
    /// starting with every stored request (GARQ) addressed to it.
    pub async fn subscribe(&self, ghid: &Ghid) -> Result<(), ClientError> {
        self.request_raw("subscribe", args::ByGhid { ghid: *ghid })
            .await
            .map(|_| ())
    }

    /// False if it was not subscribed.
    pub async fn unsubscribe(&self, ghid: &Ghid) -> Result<bool, ClientError> {
        self.by_ghid("unsubscribe", ghid).await
    }

    pub async fn list_subscriptions(&self) -> Result<Vec<Ghid>, ClientError> {
        self.call("list_subscriptions", Empty {}).await
    }

    pub async fn list_bindings(&self, ghid: &Ghid) -> Result<Vec<Ghid>, ClientError> {
        self.by_ghid("list_bindings", ghid).await
    }

    /// The GDXX that debinds `ghid`, if any.
    pub async fn query_debinding(&self, ghid: &Ghid) -> Result<Option<Ghid>, ClientError> {
        self.by_ghid("query_debinding", ghid).await
    }

    pub async fn exists(&self, ghid: &Ghid) -> Result<bool, ClientError> {
        self.by_ghid("exists", ghid).await
    }

    /// Clears this connection's subscriptions; the server then closes the connection.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.request_raw("disconnect", Empty {}).await.map(|_| ())
    }

    /// Closes the connection without a `disconnect` round trip.
    pub fn close(&self) {
        let _ = self.inner.tx.try_send(Cmd::Close);
    }
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct PublishRef<'a> {
    #[serde(with = "serde_bytes")]
    object: &'a [u8],
}

/// Where notifications go, and the bytes they may hold.
struct Notify {
    tx: mpsc::Sender<Notification>,
    budget: Arc<ByteBudget>,
    /// [`ClientOptions::close_when_full`].
    close_when_full: bool,
}

impl Notify {
    /// Hands `n` (`len` bytes) to the consumer: once there is room, or at once (`Err`: the
    /// consumer is behind, the connection is to close) with `close_when_full`.
    async fn deliver(&self, subscription: Ghid, object: &[u8]) -> Result<(), &'static str> {
        let held = if self.close_when_full {
            self.budget
                .try_take(object.len())
                .ok_or("notifications not handled in time (notify_bytes full)")?
        } else {
            match self.budget.take(object.len()).await {
                Some(p) => p,
                None => return Ok(()),
            }
        };
        // Copied out of the frame: a slice would keep the connection's whole read buffer
        // (a large reply read with it, say) alive while the notification waits.
        let n = Notification {
            subscription,
            object: Bytes::copy_from_slice(object),
            held: Held(Some(held)),
        };
        if self.close_when_full {
            match self.tx.try_send(n) {
                Err(mpsc::error::TrySendError::Full(_)) => {
                    Err("notifications not handled in time (notify_buffer full)")
                }
                _ => Ok(()),
            }
        } else {
            let _ = self.tx.send(n).await;
            Ok(())
        }
    }
}

/// Routes one server message; `Err` when the connection is to close (see
/// [`Notify::deliver`]).
async fn dispatch(
    frame: &Bytes,
    pending: &Mutex<Pending>,
    notify: &Notify,
) -> Result<(), &'static str> {
    let Ok(msg) = Incoming::decode_shared(frame) else {
        return Ok(()); // unreadable: ignored (forward compatibility)
    };
    let (id, reply) = match msg {
        Incoming::Ok { id, ok } => (id, Ok(ok)),
        Incoming::Err { id, err } => {
            if id.as_u64().is_none() {
                lock(pending).orphan = Some(err);
                return Ok(());
            }
            (id, Err(ClientError::from(err)))
        }
        Incoming::Notify {
            subscription,
            object,
        } => return notify.deliver(subscription, &object).await,
        Incoming::OtherEvent(_) => return Ok(()),
    };
    let waiter = id.as_u64().and_then(|id| lock(pending).waiting.remove(&id));
    if let Some(w) = waiter {
        let _ = w.send(reply);
    }
    Ok(())
}

/// How long closing on our own may wait to hand the server our close frame.
const CLOSE_SEND: Duration = Duration::from_secs(1);

/// How long to wait for the server's close frame after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Queues `frames` on `sink` (no flush); `false` once the socket failed.
async fn feed<S: Sink<Message> + Unpin>(sink: &mut S, frames: Vec<Bytes>) -> bool {
    for b in frames {
        if sink.feed(Message::Binary(b)).await.is_err() {
            return false;
        }
    }
    true
}

/// Owns the socket: writes queued commands (batched into one flush), reads and routes
/// server messages, answers pings, and fails every pending request when the socket closes.
async fn io_task<F, E1, E2>(
    framed: F,
    mut cmds: mpsc::Receiver<Cmd>,
    pending: Arc<Mutex<Pending>>,
    notify: Notify,
) where
    F: Stream<Item = Result<Frame, E1>> + Sink<Message, Error = E2> + Unpin,
{
    let (mut sink, mut stream) = framed.split();
    let close_msg = || {
        Message::Close(Some(CloseReason {
            code: CloseCode::Normal,
            description: None,
        }))
    };
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let deadline =
            closing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            cmd = cmds.recv(), if closing.is_none() => {
                let mut close = false;
                match cmd {
                    Some(Cmd::Send(frames)) => {
                        let mut ok = feed(&mut sink, frames).await;
                        while ok {
                            match cmds.try_recv() {
                                Ok(Cmd::Send(frames)) => ok = feed(&mut sink, frames).await,
                                Ok(Cmd::Close) => {
                                    close = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if !ok || sink.flush().await.is_err() {
                            break;
                        }
                    }
                    Some(Cmd::Close) | None => close = true,
                }
                if close {
                    if sink.send(close_msg()).await.is_err() {
                        break;
                    }
                    closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                }
            }
            _ = tokio::time::sleep_until(deadline), if closing.is_some() => break,
            frame = stream.next() => match frame {
                Some(Ok(Frame::Binary(b))) => {
                    if let Err(why) = dispatch(&b, &pending, &notify).await {
                        lock(&pending).closed_because = Some(why.to_owned());
                        // Briefly: a server we are behind may not be reading us either.
                        let _ = tokio::time::timeout(CLOSE_SEND, sink.send(close_msg())).await;
                        break;
                    }
                }
                Some(Ok(Frame::Ping(p))) => {
                    if sink.send(Message::Pong(p)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Frame::Close(reason))) => {
                    if closing.is_none() {
                        let _ = sink.send(Message::Close(reason)).await;
                    }
                    break;
                }
                Some(Ok(_)) => {} // text, pong, continuation: not used by the server
                Some(Err(_)) | None => break,
            },
        }
    }
    // Bounded: a server that stopped reading us must not keep the connection "up".
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
    let mut p = lock(&pending);
    p.closed = true;
    let failure = p
        .orphan
        .clone()
        .map_or(ClientError::Closed, ClientError::from);
    for (_, w) in p.waiting.drain() {
        let _ = w.send(Err(failure.clone()));
    }
}
