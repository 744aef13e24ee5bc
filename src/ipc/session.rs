//! One app session: the task that owns one IPC websocket (not an actor itself).
//! It owns the connection's [`AppId`] (after `hello`), the app's [`Inbox`]: an actix actor it
//! starts on its own worker at `hello`, whose [`InboxSender`](crate::actors::inbox::InboxSender) the daemon sends the
//! app's events to (the session forwards them as event frames; an inbox the app overran
//! closes the connection), and the connection's in-flight
//! requests: each request runs as its own local task, so a slow `push` does not hold up a
//! `get`; replies carry the request's `id` and go out in completion order.
//!
//! Bounded in bytes: at most [`HEAVY_IN_FLIGHT`] object-carrying requests run (or wait to be
//! sent) at once, and while [`OUTBOUND_BYTES`] handed to the writer are not yet taken by the
//! HTTP layer (the app does not read), nothing more is read, sent or forwarded.
//!
//! Nothing an app sends ends the session except a wrong or missing token in `hello`, a
//! message over the size limit, a violation of the websocket protocol itself (closed with
//! 1002), or closing. Every other fault gets an error reply:
//! `malformed`, `unknown_op`, `bad_args`, `access_denied` (any op before `hello`), `limit`
//! (a `hello` while `ipc_max_apps` apps are connected), or the daemon's own code. Each error carries a `logref` also written to the log line.
//!
//! Calls: the [`DaemonApi`] (`connect_app` at `hello`, the ops, `disconnect_app` once the
//! connection is gone and its last in-flight request has finished).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_ws::{CloseCode, CloseReason, Item, Message, MessageStream, ProtocolError};
use bytes::{Bytes, BytesMut};
use rmpv::Value;
use slog::{debug, info, warn, Logger};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::ops::{self, ArgsError, Request, Whoami};
use super::server::{AppSlot, CountGuard, Shared, Unwritten, WaitingGuard};
use super::wire::{self, codes, WireError};
use super::DaemonApi;
use crate::actors::api::{AppEvent, AppId};
use crate::actors::error::DaemonError;
use crate::actors::inbox::{Inbox, InboxClosed};
/// Requests one connection may have in flight; past this it is not read until one ends.
const MAX_IN_FLIGHT: usize = 64;
/// Of those, requests whose replies carry an object's state (`new`, `get`, `sync`) running
/// at once, each holding its place until its reply is handed to the writer: a connection
/// can make the daemon hold a few objects' replies, not `MAX_IN_FLIGHT` of them.
const HEAVY_IN_FLIGHT: usize = 4;
/// Bytes handed to the writer and not yet taken by the HTTP layer (the app is not reading)
/// at or above which the session stops reading requests and taking replies and events.
const OUTBOUND_BYTES: usize = 32 * 1024 * 1024;
/// Largest message before a successful `hello` (a `hello` is ~100 bytes): strangers cannot
/// make the daemon buffer `max_message` per connection.
const PRE_HELLO_MAX_MESSAGE: usize = 64 * 1024;
/// Longest `client` name kept for the log.
const CLIENT_NAME_MAX: usize = 80;

/// Longest op name echoed in messages and logs.
const OP_NAME_MAX: usize = 64;
/// Longest error message (decoder messages can quote the app's input).
const MESSAGE_MAX: usize = 512;

/// `s`, cut to `max` characters (app-chosen strings going into logs and replies).
fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A short random id tying an error reply to its log line.
fn logref() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// What to do after one message.
enum Step {
    /// Send these bytes.
    Reply(Vec<u8>),
    /// Send these bytes, then close.
    ReplyAndClose(Vec<u8>, CloseReason),
    /// Close without a reply: the websocket itself was violated (RFC 6455 §7.1.7).
    Close(CloseReason),
    /// Nothing to send now (a request was spawned, or a control frame needs no answer).
    Nothing,
}

/// An in-flight request's encoded reply, with its heavy-request place if it holds one (given
/// back once the reply is handed to the writer).
struct Reply {
    bytes: Vec<u8>,
    place: Option<OwnedSemaphorePermit>,
}

/// The length of a server websocket frame carrying `n` bytes (unmasked header + payload).
fn frame_len(n: usize) -> usize {
    n + match n {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// Per-connection state, owned by the session task alone.
struct Conn<A: DaemonApi> {
    shared: Arc<Shared<A>>,
    /// Set by a successful `hello`.
    app: Option<AppId>,
    /// Its place among the authenticated sessions (`ipc_max_apps`), from `hello` on.
    slot: Option<AppSlot>,
    /// The daemon's events for `app`; `None` before `hello`.
    events: Option<Inbox>,
    /// In-flight requests; each yields its encoded reply.
    in_flight: JoinSet<Reply>,
    /// Places for heavy requests ([`HEAVY_IN_FLIGHT`]).
    heavy: Arc<Semaphore>,
    /// Request id and op of each in-flight task, to answer even if a task panics.
    in_flight_ids: HashMap<tokio::task::Id, (Value, &'static str)>,
    /// A fragmented message being reassembled.
    partial: Option<BytesMut>,
    /// The current message size limit: small until `hello`, then `max_message`.
    limit: usize,
    log: Logger,
}

impl<A: DaemonApi> Conn<A> {
    fn err(&self, id: &Value, code: &str, message: String, op: &str) -> Vec<u8> {
        let message = cut(&message, MESSAGE_MAX);
        let logref = logref();
        info!(self.log, "ipc request failed";
            "logref" => &logref, "code" => code, "op" => op, "app" => ?self.app, "message" => &message);
        wire::encode_err(
            id,
            &WireError {
                code: code.to_owned(),
                message,
                logref,
            },
        )
    }

    fn denied(&self, id: &Value, message: &str, op: &str) -> Step {
        Step::ReplyAndClose(
            self.err(id, codes::ACCESS_DENIED, message.to_owned(), op),
            CloseReason {
                code: CloseCode::Policy,
                description: Some("access denied".into()),
            },
        )
    }

    /// One complete binary message.
    fn handle(&mut self, bytes: &[u8]) -> Step {
        let raw = match wire::decode_request(bytes) {
            Ok(raw) => raw,
            Err(m) => return Step::Reply(self.err(&m.id, codes::MALFORMED, m.message, "?")),
        };
        let is_hello = raw.op == "hello";
        let op_name = cut(&raw.op, OP_NAME_MAX);
        if self.app.is_none() && !is_hello {
            let msg = format!("`{op_name}` before a successful `hello`");
            return Step::Reply(self.err(&raw.id, codes::ACCESS_DENIED, msg, &op_name));
        }
        let req = match Request::decode(&raw.op, raw.args) {
            Ok(req) => req,
            Err(_) if is_hello => {
                return self.denied(&raw.id, "`hello` without a valid `token`", "hello")
            }
            Err(ArgsError::UnknownOp(_)) => {
                let msg = format!("unknown op `{op_name}`");
                return Step::Reply(self.err(&raw.id, codes::UNKNOWN_OP, msg, &op_name));
            }
            Err(ArgsError::BadArgs(msg)) => {
                return Step::Reply(self.err(&raw.id, codes::BAD_ARGS, msg, &op_name))
            }
        };
        if let Request::Hello(args) = &req {
            return self.hello(&raw.id, args);
        }
        let Some(app) = self.app else {
            return self.denied(&raw.id, "not authenticated", req.op()); // checked above
        };
        let op = req.op();
        let shared = self.shared.clone();
        let id = raw.id.clone();
        let rt = shared.rt.clone();
        let heavy = matches!(req, Request::New(_) | Request::Get(_) | Request::Sync(_))
            .then(|| self.heavy.clone());
        let task = self.in_flight.spawn_local(InRuntime {
            rt,
            fut: Box::pin(async move {
                let place = match heavy {
                    Some(places) => places.acquire_owned().await.ok(),
                    None => None,
                };
                let bytes = execute(shared, app, req, id).await;
                Reply { bytes, place }
            }),
        });
        self.in_flight_ids.insert(task.id(), (raw.id, op));
        Step::Nothing
    }

    fn hello(&mut self, id: &Value, args: &ops::HelloArgs) -> Step {
        if !self.shared.token.verify(&args.token) {
            return self.denied(id, "wrong capability token", "hello");
        }
        if self.app.is_none() {
            let Some(slot) = self.shared.apps.take() else {
                let max = self.shared.apps.max();
                let msg = format!("{max} apps are connected already (ipc_max_apps)");
                return Step::Reply(self.err(id, codes::LIMIT, msg, "hello"));
            };
            self.slot = Some(slot);
            let inbox = Inbox::start(self.log.clone());
            let app = {
                let _rt = self.shared.rt.enter();
                self.shared.api.connect_app(inbox.sender())
            };
            self.app = Some(app);
            self.events = Some(inbox);
            self.log = self.log.new(slog::o!("app" => app));
            info!(self.log, "app connected"; "client" => cut(&args.client, CLIENT_NAME_MAX));
        }
        let who = Whoami {
            fingerprint: self.shared.api.fingerprint(),
            user_id: self.shared.api.user_id(),
        };
        let reply = ops::hello_reply(&who, self.shared.max_message);
        match wire::encode_ok(id, &reply) {
            Ok(b) => Step::Reply(b),
            Err(e) => Step::Reply(self.err(id, codes::INTERNAL, e, "hello")),
        }
    }

    /// A finished in-flight task: its reply, or an `internal` error if it panicked.
    fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, Reply), tokio::task::JoinError>,
    ) -> Reply {
        match joined {
            Ok((task, reply)) => {
                self.in_flight_ids.remove(&task);
                reply
            }
            Err(e) => {
                let (id, op) = self
                    .in_flight_ids
                    .remove(&e.id())
                    .unwrap_or((Value::Nil, "?"));
                warn!(self.log, "ipc request task failed"; "op" => op, "error" => %e);
                let bytes = self.err(
                    &id,
                    codes::INTERNAL,
                    "the daemon failed this request".into(),
                    op,
                );
                Reply { bytes, place: None }
            }
        }
    }

    /// Adds a fragment; returns the whole message once the last one arrived, or `Err` when
    /// the message grows past the limit.
    fn fragment(&mut self, item: Item) -> Result<Option<Bytes>, ()> {
        let (first, last, data) = match item {
            Item::FirstText(b) | Item::FirstBinary(b) => (true, false, b),
            Item::Continue(b) => (false, false, b),
            Item::Last(b) => (false, true, b),
        };
        if first {
            self.partial = Some(BytesMut::new());
        }
        let Some(buf) = self.partial.as_mut() else {
            return Ok(None); // a continuation without a start: ignore
        };
        if buf.len() + data.len() > self.limit {
            self.partial = None;
            return Err(());
        }
        buf.extend_from_slice(&data);
        Ok(if last {
            self.partial.take().map(BytesMut::freeze)
        } else {
            None
        })
    }

    fn too_large(&self) -> Step {
        let msg = format!("message larger than {} bytes", self.limit);
        Step::ReplyAndClose(
            self.err(&Value::Nil, codes::TOO_LARGE, msg, "?"),
            CloseReason {
                code: CloseCode::Size,
                description: Some("message too large".into()),
            },
        )
    }

    /// One websocket message (or stream end / error); `None` ends the session quietly.
    fn on_message(&mut self, msg: Option<Result<Message, ProtocolError>>) -> Option<Step> {
        let msg = match msg? {
            Ok(m) => m,
            Err(ProtocolError::Overflow) => return Some(self.too_large()),
            Err(e) => {
                // E.g. a continuation without a start: the app is told why it is cut off.
                debug!(self.log, "websocket protocol error"; "error" => %e);
                return Some(Step::Close(CloseReason {
                    code: CloseCode::Protocol,
                    description: Some(cut(&format!("websocket protocol error: {e}"), 120)),
                }));
            }
        };
        Some(match msg {
            Message::Binary(b) => self.handle(&b),
            Message::Continuation(item) => match self.fragment(item) {
                Ok(Some(b)) => self.handle(&b),
                Ok(None) => Step::Nothing,
                Err(()) => self.too_large(),
            },
            Message::Text(_) => {
                let msg = "text frames are not part of the protocol; send binary msgpack".into();
                Step::Reply(self.err(&Value::Nil, codes::MALFORMED, msg, "?"))
            }
            // Echo the app's close (RFC 6455 §5.5.1); the connection then ends at once.
            Message::Close(reason) => {
                Step::Close(reason.unwrap_or_else(|| CloseCode::Normal.into()))
            }
            // Pings are answered in `run`; pongs and nops need nothing.
            Message::Ping(_) | Message::Pong(_) | Message::Nop => Step::Nothing,
        })
    }
}

/// Polls `fut` with the daemon's runtime entered: whatever the daemon spawns (or arms a
/// timer on) while serving the request belongs to its runtime, not to this IPC worker's.
struct InRuntime<F> {
    rt: tokio::runtime::Handle,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _rt = self.rt.enter();
        self.fut.as_mut().poll(cx)
    }
}

/// Runs one request against the daemon and encodes its reply.
async fn execute<A: DaemonApi>(
    shared: Arc<Shared<A>>,
    app: AppId,
    req: Request,
    id: Value,
) -> Vec<u8> {
    let api = &shared.api;
    let op = req.op();
    let result: Result<Result<Vec<u8>, String>, DaemonError> = match req {
        Request::Hello(_) => Ok(Err("hello is handled by the session".into())),
        Request::Whoami => Ok(wire::encode_ok(
            &id,
            &Whoami {
                fingerprint: api.fingerprint(),
                user_id: api.user_id(),
            },
        )),
        Request::Status => Ok(wire::encode_ok(
            &id,
            &ops::StatusReply {
                remotes: api.remotes(),
            },
        )),
        Request::New(a) => api
            .new_object(app, a.state.into_vec(), a.api_id, a.dynamic, a.private)
            .await
            .map(|o| wire::encode_ok_object(&id, &o)),
        Request::Get(a) => api
            .get_object(app, a.ghid)
            .await
            .map(|o| wire::encode_ok_object(&id, &o)),
        Request::Push(a) => api
            .push(app, a.ghid, a.state.into_vec(), a.private)
            .await
            .map(|()| wire::encode_ok(&id, &())),
        Request::Sync(a) => api
            .sync(app, a.ghid)
            .await
            .map(|o| wire::encode_ok_object(&id, &o)),
        Request::Freeze(a) => api
            .freeze(app, a.ghid)
            .await
            .map(|g| wire::encode_ok(&id, &g)),
        Request::Hold(a) => api
            .hold(app, a.ghid)
            .await
            .map(|()| wire::encode_ok(&id, &())),
        Request::Discard(a) => api
            .discard(app, a.ghid)
            .await
            .map(|()| wire::encode_ok(&id, &())),
        Request::Delete(a) => api
            .delete(app, a.ghid)
            .await
            .map(|()| wire::encode_ok(&id, &())),
        Request::RegisterToken(a) => match a.token() {
            Ok(token) => api
                .register_token(app, token)
                .await
                .map(|(token, startup)| {
                    let reply = ops::TokenReply {
                        token: serde_bytes::ByteBuf::from(token.to_vec()),
                        startup,
                    };
                    wire::encode_ok(&id, &reply)
                }),
            Err(m) => Err(DaemonError::BadArgs(m)),
        },
        Request::RegisterStartup(a) => api
            .register_startup(app, a.ghid)
            .await
            .map(|()| wire::encode_ok(&id, &())),
        Request::DeregisterStartup => api
            .deregister_startup(app)
            .await
            .map(|()| wire::encode_ok(&id, &())),
        Request::RegisterShareHandler(a) => api
            .register_share_handler(app, a.api_id)
            .await
            .map(|()| wire::encode_ok(&id, &())),
        Request::DeregisterShareHandler(a) => api
            .deregister_share_handler(app, a.api_id)
            .await
            .map(|()| wire::encode_ok(&id, &())),
        Request::Share(a) => api
            .share(app, a.ghid, a.recipient)
            .await
            .map(|()| wire::encode_ok(&id, &())),
    };
    let (code, message) = match result {
        Ok(Ok(bytes)) => return bytes,
        Ok(Err(encode)) => (codes::INTERNAL, encode),
        Err(e) => (e.code(), cut(&e.to_string(), MESSAGE_MAX)),
    };
    let logref = logref();
    info!(shared.log, "ipc request failed";
        "logref" => &logref, "code" => code, "op" => op, "app" => app, "message" => &message);
    wire::encode_err(
        &id,
        &WireError {
            code: code.to_owned(),
            message,
            logref,
        },
    )
}

/// Receives the next event (or why the inbox closed), or never before `hello`.
async fn next_event(events: &mut Option<Inbox>) -> Result<AppEvent, InboxClosed> {
    match events {
        Some(inbox) => inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves once a newer stranger pushed this session out of the waiting set (never once it
/// has authenticated).
async fn evicted(waiting: &Option<WaitingGuard>) {
    match waiting {
        Some(w) => w.evicted().await,
        None => std::future::pending().await,
    }
}

/// Resolves once the server stops (never, if the server was dropped without stopping).
async fn shutdown_signal(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The session task. Returns when the connection is gone and every in-flight request has
/// finished; then the app is disconnected from the daemon, and `_guard` uncounts it.
/// `waiting` holds its place among the sessions waiting for `hello` until it authenticates.
pub(super) async fn run<A: DaemonApi>(
    shared: Arc<Shared<A>>,
    mut ws: actix_ws::Session,
    stream: MessageStream,
    _guard: CountGuard,
    waiting: WaitingGuard,
    unwritten: Arc<Unwritten>,
) {
    let mut waiting = Some(waiting);
    let log = shared.log.clone();
    let mut shutdown = shared.shutdown.clone();
    let shared_max = shared.max_message;
    let hello_deadline = tokio::time::sleep(shared.hello_timeout);
    tokio::pin!(hello_deadline);
    let mut conn = Conn {
        shared,
        app: None,
        slot: None,
        events: None,
        in_flight: JoinSet::new(),
        heavy: Arc::new(Semaphore::new(HEAVY_IN_FLIGHT)),
        in_flight_ids: HashMap::new(),
        partial: None,
        limit: PRE_HELLO_MAX_MESSAGE.min(shared_max),
        log,
    };
    let mut stream = stream.max_frame_size(conn.limit);
    let mut close: Option<CloseReason> = None;
    loop {
        // The app reads too slowly: take nothing more (requests, replies, events) until the
        // HTTP layer has taken some of what is queued.
        let over = unwritten.over(OUTBOUND_BYTES);
        // A finished heavy request's place, given back once its reply is handed over.
        let mut _place = None;
        let step = tokio::select! {
            biased;
            // Shutdown and the hello deadline first: a busy app must not starve them.
            () = shutdown_signal(&mut shutdown) => {
                close = Some(CloseReason {
                    code: CloseCode::Away,
                    description: Some("daemon shutting down".into()),
                });
                break;
            }
            () = &mut hello_deadline, if conn.app.is_none() => {
                info!(conn.log, "no hello in time; closing");
                close = Some(CloseReason {
                    code: CloseCode::Policy,
                    description: Some("no hello".into()),
                });
                break;
            }
            () = evicted(&waiting), if conn.app.is_none() => {
                info!(conn.log, "too many connections waiting for hello; closing the oldest");
                close = Some(CloseReason {
                    code: CloseCode::Policy,
                    description: Some("too many connections waiting for hello".into()),
                });
                break;
            }
            () = unwritten.drained(), if over => continue,
            Some(joined) = conn.in_flight.join_next_with_id(),
                if !over && !conn.in_flight.is_empty() =>
            {
                let reply = conn.finished(joined);
                _place = reply.place;
                Step::Reply(reply.bytes)
            }
            ev = next_event(&mut conn.events), if !over => match ev {
                Ok(ev) => match wire::encode_event(&ev) {
                    Ok(b) => Step::Reply(b),
                    Err(e) => {
                        warn!(conn.log, "cannot encode event"; "error" => e);
                        continue;
                    }
                },
                Err(InboxClosed::Overrun) => {
                    info!(conn.log, "app did not read its events; closing");
                    Step::Close(CloseReason {
                        code: CloseCode::Policy,
                        description: Some("events not read".into()),
                    })
                }
                Err(InboxClosed::Stopped) => {
                    warn!(conn.log, "the app's event inbox stopped; closing");
                    Step::Close(CloseReason {
                        code: CloseCode::Error,
                        description: Some("internal error".into()),
                    })
                }
            },
            msg = stream.recv(), if !over && conn.in_flight.len() < MAX_IN_FLIGHT => {
                if let Some(Ok(Message::Ping(p))) = &msg {
                    if ws.pong(p).await.is_err() {
                        break;
                    }
                    continue;
                }
                match conn.on_message(msg) {
                    Some(step) => step,
                    None => break,
                }
            }
        };
        if conn.app.is_some() && conn.limit != shared_max {
            // `hello` succeeded: the full limit from now on, and no longer a stranger.
            conn.limit = shared_max;
            stream = stream.max_frame_size(shared_max);
            waiting = None;
        }
        match step {
            Step::Nothing => {}
            Step::Reply(bytes) => {
                unwritten.add(frame_len(bytes.len()));
                if ws.binary(bytes).await.is_err() {
                    break;
                }
            }
            Step::ReplyAndClose(bytes, reason) => {
                unwritten.add(frame_len(bytes.len()));
                let _ = ws.binary(bytes).await;
                close = Some(reason);
                break;
            }
            Step::Close(reason) => {
                close = Some(reason);
                break;
            }
        }
    }
    let _ = ws.close(close).await;
    drop(stream);
    // Let in-flight requests finish (their replies go nowhere) so that the daemon sees no
    // request from this app after `disconnect_app`.
    while conn.in_flight.join_next().await.is_some() {}
    if let Some(app) = conn.app {
        let _rt = conn.shared.rt.enter();
        conn.shared.api.disconnect_app(app);
        info!(conn.log, "app disconnected");
    }
}
