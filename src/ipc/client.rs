//! The async Rust client for apps: [`HgxLink`] speaks the IPC protocol to `hgxd` over an
//! awc websocket, with any number of concurrent requests matched to replies by id, typed
//! results and errors ([`ClientError`] carries the wire code), and the daemon's events
//! (`update`, `delete`, `share`, `share_result`) delivered to every [`HgxLink::events`]
//! receiver and to [`Obj`] handles. Unknown events are ignored; unknown error codes map to
//! [`ErrorKind::Other`].
//!
//! One connection task (spawned with `actix_rt::spawn`, so the link must be created inside
//! an actix system or a tokio `LocalSet`) owns the socket; the link itself is `Send + Sync`
//! and cheap to clone. The connection closes when the last clone (and [`Obj`]) is dropped
//! or on [`HgxLink::close`].
//!
//! Calls: `wire`/`ops` for encoding, `token` for `connect_home` / `connect_default`; never
//! the daemon directly.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::BytesMut;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

pub use super::obj::Obj;
use super::obj::ObjShared;
use super::ops::{
    ApiArgs, GhidArgs, HelloArgs, HelloInfo, NewArgs, NoArgs, PushArgs, ShareArgs, TokenArgs,
    TokenReply,
};
pub use super::ops::{StatusReply, Whoami};
use super::token::CapabilityToken;
use super::wire::{self, codes, ServerFrame, WireError};
use crate::actors::api::{AppEvent, AppToken, ObjectView};
use crate::golix::Ghid;

/// Largest message the client accepts from the daemon (replies carry up to the daemon's
/// `max_message` of state plus the envelope).
pub const CLIENT_MAX_FRAME: usize = 64 * 1024 * 1024;

/// What kind of failure a wire error code names. Codes this client does not know are
/// [`ErrorKind::Other`] (the code itself stays in [`RemoteError::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    AccessDenied,
    Malformed,
    UnknownOp,
    BadArgs,
    TooLarge,
    Internal,
    NotFound,
    LocallyImmutable,
    DeadObject,
    UnknownToken,
    TokenInUse,
    AlreadySet,
    UnknownRecipient,
    Unsharable,
    CatOuttaBag,
    UnknownSecret,
    UnavailableUpstream,
    ShuttingDown,
    Limit,
    Other,
}

impl ErrorKind {
    pub fn from_code(code: &str) -> ErrorKind {
        match code {
            codes::ACCESS_DENIED => ErrorKind::AccessDenied,
            codes::MALFORMED => ErrorKind::Malformed,
            codes::UNKNOWN_OP => ErrorKind::UnknownOp,
            codes::BAD_ARGS => ErrorKind::BadArgs,
            codes::TOO_LARGE => ErrorKind::TooLarge,
            codes::INTERNAL => ErrorKind::Internal,
            "not_found" => ErrorKind::NotFound,
            "locally_immutable" => ErrorKind::LocallyImmutable,
            "dead_object" => ErrorKind::DeadObject,
            "unknown_token" => ErrorKind::UnknownToken,
            "token_in_use" => ErrorKind::TokenInUse,
            "already_set" => ErrorKind::AlreadySet,
            "unknown_recipient" => ErrorKind::UnknownRecipient,
            "unsharable" => ErrorKind::Unsharable,
            "cat_outta_bag" => ErrorKind::CatOuttaBag,
            "unknown_secret" => ErrorKind::UnknownSecret,
            "unavailable_upstream" => ErrorKind::UnavailableUpstream,
            "shutting_down" => ErrorKind::ShuttingDown,
            codes::LIMIT => ErrorKind::Limit,
            _ => ErrorKind::Other,
        }
    }
}

/// An error reply from the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code}: {message} (logref {logref})")]
pub struct RemoteError {
    pub kind: ErrorKind,
    /// The wire code, verbatim.
    pub code: String,
    pub message: String,
    /// Matches the daemon's log line for this failure.
    pub logref: String,
}

impl From<WireError> for RemoteError {
    fn from(e: WireError) -> Self {
        RemoteError {
            kind: ErrorKind::from_code(&e.code),
            code: e.code,
            message: e.message,
            logref: e.logref,
        }
    }
}

/// Why a client call failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The daemon answered with an error.
    #[error("daemon: {0}")]
    Remote(RemoteError),
    /// The websocket could not be opened (daemon not running, refused handshake...).
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    /// `ipc.token` could not be read.
    #[error("capability token: {0}")]
    Token(String),
    /// The connection is closed (before or while waiting for the reply).
    #[error("the connection to the daemon is closed")]
    Closed,
    /// The daemon sent something this client cannot read.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The wire code of a [`ClientError::Remote`].
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Remote(e) => Some(&e.code),
            _ => None,
        }
    }

    /// The kind of a [`ClientError::Remote`].
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Remote(e) => Some(e.kind),
            _ => None,
        }
    }
}

type Pending = oneshot::Sender<Result<Value, ClientError>>;

/// State shared by the link handles and the connection task. Each field has its own
/// `std::sync::Mutex`: critical sections are short and never await, and callbacks run
/// outside them.
#[derive(Default)]
pub(super) struct Router {
    /// Requests awaiting their reply, by id; `None` once the connection is closed.
    pending: Mutex<Option<HashMap<u64, Pending>>>,
    /// `events()` receivers; dropped receivers are pruned on the next event.
    subscribers: Mutex<Vec<mpsc::UnboundedSender<AppEvent>>>,
    /// Live `Obj` handles by ghid, for their state and callbacks.
    objs: Mutex<HashMap<Ghid, Vec<Weak<ObjShared>>>>,
    /// An error the daemon sent without an id just before closing (e.g. `too_large`),
    /// given to the requests the close cuts off.
    last_orphan: Mutex<Option<RemoteError>>,
}

/// Locks, ignoring poisoning (a panicking callback must not wedge the link).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Router {
    fn new() -> Router {
        Router {
            pending: Mutex::new(Some(HashMap::new())),
            ..Router::default()
        }
    }

    fn dispatch(&self, buf: &[u8]) {
        match wire::decode_server_frame(buf) {
            Ok(ServerFrame::Reply { id, result }) => {
                let tx = lock(&self.pending).as_mut().and_then(|p| p.remove(&id));
                if let Some(tx) = tx {
                    let _ = tx.send(result.map_err(|e| ClientError::Remote(e.into())));
                }
            }
            Ok(ServerFrame::Orphan { result: Err(e) }) => {
                *lock(&self.last_orphan) = Some(e.into());
            }
            Ok(ServerFrame::Event { name, data }) => {
                if let Some(Ok(ev)) = wire::decode_event(&name, data) {
                    self.deliver(ev);
                }
            }
            // Orphan successes and undecodable messages: nothing to do.
            Ok(ServerFrame::Orphan { result: Ok(_) }) | Err(_) => {}
        }
    }

    fn deliver(&self, ev: AppEvent) {
        let target = match &ev {
            AppEvent::Update(view) => Some(view.ghid),
            AppEvent::Delete(ghid) => Some(*ghid),
            _ => None,
        };
        if let Some(ghid) = target {
            let live: Vec<Arc<ObjShared>> = {
                let mut objs = lock(&self.objs);
                let list = objs.entry(ghid).or_default();
                list.retain(|w| w.strong_count() > 0);
                let live = list.iter().filter_map(Weak::upgrade).collect();
                if list.is_empty() {
                    objs.remove(&ghid);
                }
                live
            };
            for obj in live {
                match &ev {
                    AppEvent::Update(view) => obj.apply_update(view),
                    _ => obj.apply_delete(),
                }
            }
        }
        lock(&self.subscribers).retain(|s| s.send(ev.clone()).is_ok());
    }

    pub(super) fn register(&self, obj: &Arc<ObjShared>) {
        let mut objs = lock(&self.objs);
        let list = objs.entry(obj.ghid()).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(obj));
    }

    /// The connection is gone: every waiting request fails, event receivers end.
    fn close(&self) {
        let pending = lock(&self.pending).take();
        let err = match lock(&self.last_orphan).take() {
            Some(e) => ClientError::Remote(e),
            None => ClientError::Closed,
        };
        for (_, tx) in pending.into_iter().flatten() {
            let _ = tx.send(Err(err.clone()));
        }
        lock(&self.subscribers).clear();
    }
}

enum Outgoing {
    Frame(Vec<u8>),
    Close,
}

/// What every clone of one link shares.
struct Core {
    out: mpsc::UnboundedSender<Outgoing>,
    router: Arc<Router>,
    next_id: AtomicU64,
}

impl Core {
    async fn call<T: Serialize>(&self, op: &str, args: &T) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = wire::encode_request(id, op, args).map_err(ClientError::Protocol)?;
        let (tx, rx) = oneshot::channel();
        match lock(&self.router.pending).as_mut() {
            Some(p) => p.insert(id, tx),
            None => return Err(ClientError::Closed),
        };
        if self.out.send(Outgoing::Frame(frame)).is_err() {
            lock(&self.router.pending).as_mut().map(|p| p.remove(&id));
            return Err(ClientError::Closed);
        }
        rx.await.unwrap_or(Err(ClientError::Closed))
    }
}

/// A connection to `hgxd`. Clone freely; all clones share one websocket.
#[derive(Clone)]
pub struct HgxLink {
    core: Arc<Core>,
    info: Arc<HelloInfo>,
}

impl std::fmt::Debug for HgxLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HgxLink")
            .field("fingerprint", &self.info.fingerprint)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

fn typed<T: DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    rmpv::ext::from_value(v).map_err(|e| ClientError::Protocol(format!("unexpected result: {e}")))
}

fn object(v: Value) -> Result<ObjectView, ClientError> {
    typed::<wire::WireObject>(v).map(ObjectView::from)
}

impl HgxLink {
    /// Connects to `url` (e.g. `ws://127.0.0.1:7772/`) and says `hello` with `token`.
    /// A wrong token fails with code `access_denied`.
    pub async fn connect(url: &str, token: &CapabilityToken) -> Result<HgxLink, ClientError> {
        let connect_err = |message: String| ClientError::Connect {
            url: url.to_owned(),
            message,
        };
        let (_response, framed) = awc::Client::default()
            .ws(url)
            .max_frame_size(CLIENT_MAX_FRAME)
            .connect()
            .await
            .map_err(|e| match e {
                awc::error::WsClientError::InvalidResponseStatus(s) => {
                    connect_err(format!("handshake refused with HTTP {s}"))
                }
                e => connect_err(e.to_string()),
            })?;
        let (out, out_rx) = mpsc::unbounded_channel();
        let router = Arc::new(Router::new());
        actix_rt::spawn(drive(framed, out_rx, router.clone()));
        let core = Arc::new(Core {
            out,
            router,
            next_id: AtomicU64::new(1),
        });
        let hello = HelloArgs {
            token: ByteBuf::from(token.as_bytes().to_vec()),
            client: concat!("hypergolix-rs/", env!("CARGO_PKG_VERSION")).to_owned(),
        };
        let info: HelloInfo = typed(core.call("hello", &hello).await?)?;
        Ok(HgxLink {
            core,
            info: Arc::new(info),
        })
    }

    /// Connects to the daemon on `127.0.0.1:<port>` with the token in `home/ipc.token`
    /// (`home` is the directory of the daemon's config file, e.g. `$HYPERGOLIX_HOME`).
    /// Connects to `ws://127.0.0.1:<port>/` with the token file found as the daemon finds
    /// its config ([`super::token::search_paths`]: `$HGX_IPC_TOKEN_FILE`, else `ipc.token` in
    /// `$HYPERGOLIX_HOME` alone, else in `.`, `~/.hypergolix`, `/etc/hypergolix`). No token
    /// file is a [`ClientError::Token`] naming every path tried.
    pub async fn connect_default(port: u16) -> Result<HgxLink, ClientError> {
        let path = super::token::find_file().map_err(|tried| {
            let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
            ClientError::Token(format!(
                "no ipc.token found (is hgxd running?); tried {}",
                tried.join(", ")
            ))
        })?;
        let token = CapabilityToken::read_path(&path)
            .map_err(|e| ClientError::Token(format!("{}: {e}", path.display())))?;
        HgxLink::connect(&format!("ws://127.0.0.1:{port}/"), &token).await
    }

    /// Connects with the token file `ipc.token` in the directory `home`.
    pub async fn connect_home(home: impl AsRef<Path>, port: u16) -> Result<HgxLink, ClientError> {
        let token = CapabilityToken::read_file(home.as_ref())
            .map_err(|e| ClientError::Token(format!("{}: {e}", home.as_ref().display())))?;
        HgxLink::connect(&format!("ws://127.0.0.1:{port}/"), &token).await
    }

    /// What `hello` said: protocol version, op table, events, identity, limits.
    pub fn hello_info(&self) -> &HelloInfo {
        &self.info
    }

    /// The user's fingerprint, as of `hello`.
    pub fn fingerprint(&self) -> Ghid {
        self.info.fingerprint
    }

    /// The account root, as of `hello`.
    pub fn user_id(&self) -> Ghid {
        self.info.user_id
    }

    /// Any op by name with raw arguments, for ops newer than this client.
    pub async fn call(&self, op: &str, args: Value) -> Result<Value, ClientError> {
        self.core.call(op, &args).await
    }

    pub async fn whoami(&self) -> Result<Whoami, ClientError> {
        typed(self.core.call("whoami", &NoArgs {}).await?)
    }

    /// Each remote's connection state and outbox depth.
    pub async fn status(&self) -> Result<StatusReply, ClientError> {
        typed(self.core.call("status", &NoArgs {}).await?)
    }

    /// Creates an object (the daemon's defaults: `api_id` none, dynamic, public).
    pub async fn new_object(
        &self,
        state: Vec<u8>,
        api_id: Option<Ghid>,
        dynamic: bool,
        private: bool,
    ) -> Result<ObjectView, ClientError> {
        let args = NewArgs {
            state: ByteBuf::from(state),
            api_id,
            dynamic,
            private,
        };
        object(self.core.call("new", &args).await?)
    }

    /// Loads an object; its updates then arrive as events.
    pub async fn get(&self, ghid: Ghid) -> Result<ObjectView, ClientError> {
        object(self.core.call("get", &GhidArgs { ghid }).await?)
    }

    /// New state for a dynamic object; `private: None` keeps its privacy.
    pub async fn push(
        &self,
        ghid: Ghid,
        state: Vec<u8>,
        private: Option<bool>,
    ) -> Result<(), ClientError> {
        let args = PushArgs {
            ghid,
            state: ByteBuf::from(state),
            private,
        };
        self.core.call("push", &args).await.map(drop)
    }

    pub async fn sync(&self, ghid: Ghid) -> Result<ObjectView, ClientError> {
        object(self.core.call("sync", &GhidArgs { ghid }).await?)
    }

    /// Binds the current state statically; returns the static ghid.
    pub async fn freeze(&self, ghid: Ghid) -> Result<Ghid, ClientError> {
        typed(self.core.call("freeze", &GhidArgs { ghid }).await?)
    }

    pub async fn hold(&self, ghid: Ghid) -> Result<(), ClientError> {
        self.core.call("hold", &GhidArgs { ghid }).await.map(drop)
    }

    pub async fn discard(&self, ghid: Ghid) -> Result<(), ClientError> {
        self.core
            .call("discard", &GhidArgs { ghid })
            .await
            .map(drop)
    }

    pub async fn delete(&self, ghid: Ghid) -> Result<(), ClientError> {
        self.core.call("delete", &GhidArgs { ghid }).await.map(drop)
    }

    /// Binds an app token to this connection: `None` asks for a new one, `Some` re-binds one
    /// the app kept from an earlier connection. Returns the token and, when re-binding, the
    /// token's startup object.
    pub async fn register_token(
        &self,
        token: Option<AppToken>,
    ) -> Result<(AppToken, Option<Ghid>), ClientError> {
        let args = TokenArgs {
            token: token.map(|t| ByteBuf::from(t.to_vec())),
        };
        let reply: TokenReply = typed(self.core.call("register_token", &args).await?)?;
        let token: AppToken = reply.token.as_slice().try_into().map_err(|_| {
            ClientError::Protocol(format!("a token of {} bytes", reply.token.len()))
        })?;
        Ok((token, reply.startup))
    }

    /// Sets the startup object of this connection's token.
    pub async fn register_startup(&self, ghid: Ghid) -> Result<(), ClientError> {
        self.core
            .call("register_startup", &GhidArgs { ghid })
            .await
            .map(drop)
    }

    /// Clears the startup object of this connection's token.
    pub async fn deregister_startup(&self) -> Result<(), ClientError> {
        self.core
            .call("deregister_startup", &NoArgs {})
            .await
            .map(drop)
    }

    /// This connection receives `share` events for objects of `api_id` (see
    /// [`HgxLink::events`]).
    pub async fn register_share_handler(&self, api_id: Ghid) -> Result<(), ClientError> {
        self.core
            .call("register_share_handler", &ApiArgs { api_id })
            .await
            .map(drop)
    }

    pub async fn deregister_share_handler(&self, api_id: Ghid) -> Result<(), ClientError> {
        self.core
            .call("deregister_share_handler", &ApiArgs { api_id })
            .await
            .map(drop)
    }

    /// Shares an object with the user whose fingerprint is `recipient`; the outcome arrives
    /// later as a `share_result` event.
    pub async fn share(&self, ghid: Ghid, recipient: Ghid) -> Result<(), ClientError> {
        self.core
            .call("share", &ShareArgs { ghid, recipient })
            .await
            .map(drop)
    }

    /// A new receiver of every event from now on. It ends when the connection closes.
    /// Unbounded: read it, or drop it.
    pub fn events(&self) -> mpsc::UnboundedReceiver<AppEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        if lock(&self.core.router.pending).is_some() {
            lock(&self.core.router.subscribers).push(tx);
        }
        rx
    }

    /// Creates an object and returns its [`Obj`] handle.
    pub async fn create(
        &self,
        state: Vec<u8>,
        api_id: Option<Ghid>,
        dynamic: bool,
        private: bool,
    ) -> Result<Obj, ClientError> {
        let view = self.new_object(state, api_id, dynamic, private).await?;
        Ok(Obj::new(self.clone(), view))
    }

    /// Loads an object and returns its [`Obj`] handle.
    pub async fn open(&self, ghid: Ghid) -> Result<Obj, ClientError> {
        let view = self.get(ghid).await?;
        Ok(Obj::new(self.clone(), view))
    }

    pub(super) fn router(&self) -> &Router {
        &self.core.router
    }

    /// Closes the connection; waiting and later calls fail with [`ClientError::Closed`].
    pub fn close(&self) {
        let _ = self.core.out.send(Outgoing::Close);
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        lock(&self.core.router.pending).is_none()
    }
}

/// The connection task: writes requests, reads replies and events.
async fn drive<S>(mut framed: S, mut out: mpsc::UnboundedReceiver<Outgoing>, router: Arc<Router>)
where
    S: Stream<Item = Result<awc::ws::Frame, awc::error::WsProtocolError>>
        + Sink<awc::ws::Message>
        + Unpin,
{
    use actix_ws::Item;
    use awc::ws::{Frame, Message};
    let mut partial: Option<BytesMut> = None;
    loop {
        tokio::select! {
            next = out.recv() => match next {
                Some(Outgoing::Frame(b)) => {
                    if framed.send(Message::Binary(b.into())).await.is_err() {
                        break;
                    }
                }
                // `Close`, or every handle dropped.
                Some(Outgoing::Close) | None => {
                    let _ = framed.send(Message::Close(None)).await;
                    break;
                }
            },
            frame = framed.next() => match frame {
                Some(Ok(Frame::Binary(b))) => router.dispatch(&b),
                Some(Ok(Frame::Continuation(item))) => {
                    let (first, last, data) = match item {
                        Item::FirstText(b) | Item::FirstBinary(b) => (true, false, b),
                        Item::Continue(b) => (false, false, b),
                        Item::Last(b) => (false, true, b),
                    };
                    if first {
                        partial = Some(BytesMut::new());
                    }
                    if let Some(buf) = partial.as_mut() {
                        if buf.len() + data.len() > CLIENT_MAX_FRAME {
                            break;
                        }
                        buf.extend_from_slice(&data);
                    }
                    if last {
                        if let Some(buf) = partial.take() {
                            router.dispatch(&buf);
                        }
                    }
                }
                Some(Ok(Frame::Ping(p))) => {
                    if framed.send(Message::Pong(p)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Frame::Close(reason))) => {
                    // Complete the closing handshake; dropping the socket then closes TCP.
                    let _ = framed.send(Message::Close(reason)).await;
                    break;
                }
                Some(Err(_)) | None => break,
                Some(Ok(Frame::Text(_) | Frame::Pong(_))) => {}
            },
        }
    }
    let _ = framed.close().await;
    router.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golix::Algo;

    fn frame(v: Value) -> Vec<u8> {
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &v).unwrap();
        buf
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn unknown_events_are_ignored_and_known_ones_delivered() {
        let router = Router::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&router.subscribers).push(tx);
        let g = Ghid::new(Algo::SHA512, [5; 64]);
        router.dispatch(&frame(map(vec![
            ("event", "from_the_future".into()),
            ("data", Value::from(1)),
        ])));
        router.dispatch(&frame(map(vec![
            ("event", "delete".into()),
            ("data", Value::Nil),
        ])));
        router.dispatch(b"\xc1 not msgpack");
        router.dispatch(&frame(map(vec![
            ("event", "delete".into()),
            (
                "data",
                map(vec![
                    ("ghid", Value::Binary(g.as_bytes().to_vec())),
                    ("extra", Value::Nil),
                ]),
            ),
        ])));
        assert_eq!(rx.try_recv().unwrap(), AppEvent::Delete(g));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn unknown_error_codes_are_generic_and_keep_their_code() {
        let router = Router::new();
        let (tx, mut rx) = oneshot::channel();
        lock(&router.pending).as_mut().unwrap().insert(7, tx);
        let err = map(vec![
            ("code", "quantum_flux".into()),
            ("message", "?".into()),
        ]);
        router.dispatch(&frame(map(vec![("id", Value::from(7)), ("err", err)])));
        let ClientError::Remote(e) = rx.try_recv().unwrap().unwrap_err() else {
            panic!()
        };
        assert_eq!(
            (e.kind, e.code.as_str(), e.logref.as_str()),
            (ErrorKind::Other, "quantum_flux", "")
        );
        assert_eq!(ErrorKind::from_code("not_found"), ErrorKind::NotFound);
    }

    #[test]
    fn close_fails_waiters_with_the_last_orphan_error() {
        let router = Router::new();
        let (tx, mut rx) = oneshot::channel();
        lock(&router.pending).as_mut().unwrap().insert(1, tx);
        let err = map(vec![
            ("code", "too_large".into()),
            ("message", "big".into()),
        ]);
        router.dispatch(&frame(map(vec![("id", Value::Nil), ("err", err)])));
        router.close();
        assert_eq!(
            rx.try_recv().unwrap().unwrap_err().kind(),
            Some(ErrorKind::TooLarge)
        );
        assert!(lock(&router.pending).is_none());
    }
}
