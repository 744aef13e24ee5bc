//! # Websocket session
//!
//! One persister connection on `/ws`: a reader task that decodes envelopes
//! ([`wire::RawRequest`]) and executes ops against the [`Archive`] and the [`Hub`]. Frames
//! (shared with every other subscriber of a notification) leave through the connection's
//! [`SendQueue`]: on plain TCP, written straight to the socket by whoever queues them, and by
//! the connection's writer task only while the socket is full ([`super::direct`]); over TLS,
//! the upgrade response's body is the outbox itself ([`SendQueueBody`]), so the HTTP
//! dispatcher that owns the socket takes ready-made frames straight from the queue, in
//! batches, without a channel or a task hop per message.
//!
//! - Backpressure: a request is read only when the outbox has room for its reply
//!   ([`SendQueue::reserve`]: under half its byte budget and under its message budget), so a
//!   client that does not read its replies is not read either; a queue that stays over that
//!   share for the send timeout gets the connection dropped. The pieces outside the outbox
//!   stay small: the writer takes at most one [`hub::WRITE_BATCH_BYTES`] batch at a time.
//! - Requests run in arrival order. Publishes are pipelined on the verify pool ([`WorkPool`]): the
//!   signature of each is checked while the ones before it still are ([`Archive::check`]),
//!   and each is applied only after them ([`Archive::commit`]; one whose signer is not stored
//!   yet is decided then, whole), so a binding published before its container is applied
//!   first. Any other request waits until every publish before it is applied. A publish is
//!   acknowledged (or refused) only after [`Archive::sync`] resolves — its sync is registered
//!   on the pool thread right after the apply ([`Archive::sync_wait`]), so the flusher starts
//!   without a hop back to this one; its fanout happens then too, never to the uploader, and
//!   fanouts and replies of one connection's publishes leave in publish order (the publishes
//!   one group commit made durable are announced together: their fanouts in one hub call,
//!   then their replies; under load an announcement also waits, at most [`announce::MAX_HOLD`], for the
//!   publishes right behind it, see `announce`). The announcer hears of a publish once the
//!   requests read with it have been taken in (`Conn::unsent`). Up to `max_in_flight` publishes per
//!   connection are in the pipeline at once, and at most `inbound_bytes_total` bytes of
//!   publishes across connections (`crate::persist::budget`): a publish that does not fit waits, and
//!   its connection is not read meanwhile.
//! - A publish of at most [`INLINE_MAX`] that finds the pipeline empty, and the one read
//!   right behind it (a frame's container), are checked and applied on this thread instead
//!   ([`Conn::inline`]; sled only), once the requests read with them are taken in: the
//!   container on another core meanwhile ([`crate::beside`], `server.check_beside`), or
//!   here after the frame if that core's thread has not started it. Once
//!   durable they are announced from here too when the announcer has nothing in hand and
//!   the round is small ([`announce::announce_ready`]).
//! - Reads run inline with sled, on the verify pool with the cluster store (network round
//!   trips must not stall the event loop's other sessions).
//! - Unknown ops, bad args and malformed envelopes get an error reply; the session goes on.
//! - An oversize message (caught at its header by [`super::guard`]) gets `too_large` and a
//!   clean close; nothing of it is stored.
//! - Heartbeat: the reader pings every [`PING_INTERVAL`] (more often with a short idle
//!   timeout); a peer silent for the configured idle timeout ([`CLIENT_TIMEOUT`] by default)
//!   is closed.
//!
//! Owns: per-connection state (subscriptions via [`hub::Subscriber`], in-flight bound).
//! Calls: [`Archive`], [`Hub`], [`wire`], [`wsframe`], the verify pool ([`WorkPool`]),
//! [`crate::beside`], [`super::pipeline`] (the publish pipeline), [`super::announce`] (fanout
//! and acks), [`super::direct`] (the socket's writer on plain TCP), actix-ws (its frame
//! decoder, for the read side only).
//!
//! [`WorkPool`]: crate::work_pool::WorkPool

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodyStream, MessageBody};
use actix_web::{dev, web, FromRequest, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream};
use bytes::Bytes;
use futures_util::{FutureExt, Stream};
use rmpv::Value;
use slog::{debug, info, trace, warn};
use tokio::sync::Semaphore;

use super::announce::{self, Announcer};
use super::guard::{FrameGuard, Oversize};
use super::pipeline::{self, Pending};
use super::{direct, disk, Shared};
use crate::golix::{auth, Ghid, Object, Policy, SecondParty};
use crate::persist::hub::{self, CloseKind, Next, SendQueue};
use crate::persist::store::Sender;
use crate::persist::wire::{self, args, codes};
use crate::persist::{wsframe, PersistError};

/// How often the session pings the peer (at most).
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
/// The default idle timeout: a peer silent (no message, no pong) this long is closed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a closing session waits for the peer's close before dropping it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Most messages the response body takes from the outbox per lock.
const WRITE_BATCH: usize = 64;
/// The shortest heartbeat period, whatever the idle timeout.
const MIN_TICK: Duration = Duration::from_millis(100);
/// Publishes read back to back that the announcer hears of together at most (`Conn::unsent`):
/// under a flood of requests it still hears of them every few.
const HAND_OVER_AT: usize = 8;
/// Largest publish this thread checks and applies itself (`Conn::inline`): the check
/// hashes the whole object, so a big one goes to the pool.
const INLINE_MAX: usize = 64 * 1024;
/// Most publishes this thread checks and applies itself at a time (`Conn::inline`): a
/// frame and its container.
const INLINE_AT_ONCE: usize = 2;

/// `GET /ws`: upgrade and spawn the session.
pub(super) async fn route(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<Shared>,
) -> actix_web::Result<HttpResponse> {
    let max = state.limits.max_frame;
    let (guarded, oversize) = FrameGuard::new(body.into_inner(), max);
    let boxed: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<Bytes, actix_web::error::PayloadError>>>,
    > = Box::pin(guarded);
    let mut raw = dev::Payload::from(boxed);
    let payload = web::Payload::from_request(&req, &mut raw).await?;
    // actix-ws decodes what the peer sends; what we send is framed by us (`wsframe`), so its
    // own response and session handle are not used.
    let (_, _, stream) = actix_ws::handle(&req, payload)?;
    let mut response = actix_http::ws::handshake(req.head())?;
    // The guard enforces the real limit at frame headers; these only must not trip first.
    let slack = max.saturating_add(1024);
    let stream = stream
        .max_frame_size(slack)
        .aggregate_continuations()
        .max_continuation_size(slack);
    let peer = req
        .peer_addr()
        .map_or_else(|| "?".to_owned(), |a| a.to_string());
    let shared = state.into_inner();
    let sub = shared.hub.connect();
    let socket = req.conn_data::<crate::net::ConnSocket>().cloned();
    // Plain TCP: we write the socket ourselves (`direct`); `Expect` could make actix write.
    let direct = socket
        .as_ref()
        .and_then(crate::net::ConnSocket::plain)
        .filter(|_| !req.head().expect());
    if let Some(direct) = direct {
        let outbox = sub.outbox().clone();
        let handshake = response.finish();
        outbox.write_through(Arc::new(direct::Socket(direct.clone())));
        outbox.push_reply(direct::head(&handshake));
        actix_web::rt::spawn(run(shared, sub, stream, oversize, peer));
        // Answering only once the session is over keeps the dispatcher from writing.
        let _ = actix_web::rt::spawn(direct::writer(outbox, direct)).await;
        // The socket is shut down both ways by now: this response reaches no one, and
        // failing to write it ends the connection on actix's side.
        return Ok(handshake.map_into_boxed_body().into());
    }
    let body = SendQueueBody::new(sub.outbox().clone());
    actix_web::rt::spawn(run(shared, sub, stream, oversize, peer));
    // Once the session's last frame is out, the connection closes at once (`net`).
    let body = crate::net::TappedBody::new(BodyStream::new(body), crate::net::EndReading(socket));
    Ok(response.message_body(body.boxed())?.into())
}

/// The upgrade response's body: the outbox's frames, then (after a close) the end of the
/// connection once the session has released it.
struct SendQueueBody {
    outbox: Arc<SendQueue>,
    pending: VecDeque<Bytes>,
    state: BodyState,
}

enum BodyState {
    Open,
    /// The close frame is queued; end once the session is done reading.
    Closing,
    Done,
}

impl SendQueueBody {
    fn new(outbox: Arc<SendQueue>) -> SendQueueBody {
        SendQueueBody {
            outbox,
            pending: VecDeque::new(),
            state: BodyState::Open,
        }
    }
}

/// The connection was dropped as too slow: the HTTP dispatcher ends it at once, without
/// flushing what it still holds for a peer that does not read.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped: its peer does not read")]
struct DroppedSlow;

impl Drop for SendQueueBody {
    fn drop(&mut self) {
        // The dispatcher is gone (connection closed or reset): nothing will be written any
        // more, so the session must not wait for room.
        self.outbox.writer_gone();
    }
}

impl Stream for SendQueueBody {
    type Item = Result<Bytes, DroppedSlow>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(b)));
            }
            match this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Closing => {
                    ready!(this.outbox.poll_released(cx));
                    this.state = BodyState::Done;
                }
                BodyState::Open => match ready!(this.outbox.poll_next(cx, WRITE_BATCH)) {
                    Next::Batch(batch) => this.pending.extend(batch),
                    Next::Close(kind) => {
                        this.pending.push_back(kind.frame());
                        this.state = BodyState::Closing;
                    }
                    Next::Abort => {
                        this.state = BodyState::Done;
                        this.pending.clear();
                        return Poll::Ready(Some(Err(DroppedSlow)));
                    }
                },
            }
        }
    }
}

/// Who ended the read loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer closed, vanished, or broke the protocol: nothing more to read.
    PeerGone,
    /// We are closing (disconnect, too_large, shutdown, timeout, too slow): wait for the
    /// peer's close.
    WeClose,
}

struct Conn {
    shared: Arc<Shared>,
    sub: hub::Subscriber,
    outbox: Arc<SendQueue>,
    /// Publishes awaiting durability on this connection.
    in_flight: Arc<Semaphore>,
    log: slog::Logger,
    /// Set once the session is closing (disconnect, too_large, shutdown).
    closing: bool,
    /// The challenge of the last `auth_challenge`, until an `auth` uses it.
    challenge: Option<[u8; 32]>,
    /// Who this connection's GARQs are counted against (set by a successful `auth`).
    sender: Sender,
    /// This connection as its announcements' source.
    publisher: Arc<announce::Publisher>,
    /// Announces durable publishes (fanout, then ack) in publish order; see [`announce`].
    announcer: Option<Announcer>,
    /// Publishes on the pool that the announcer has not been told of yet. They are handed
    /// over once no further request has been read already ([`Conn::hand_over`]): telling it
    /// wakes the fanout thread, which would take this thread's core before the publish
    /// behind (a binding's container) reaches the pool. At most [`HAND_OVER_AT`].
    unsent: Vec<Pending>,
    /// The jobs of a publish that reached an empty pipeline and of the one read right
    /// behind it (at most [`INLINE_AT_ONCE`]), run in order on this thread rather than on
    /// the pool, once the requests read with them are taken in ([`Conn::hand_over`]).
    /// Why: a pool thread woken for each costs tens of microseconds before it starts, on a
    /// core where the publish is cold, and the scheduler of the VMs we measure on mostly
    /// woke it on this core anyway, where it took the core from this thread
    /// (BENCHMARKS.md, "Session 20"). With sled only: a cluster store's commit waits on
    /// the network.
    inline: Vec<Box<dyn FnOnce() + Send>>,
    /// The connection's publish pipeline (every other request waits until it is applied).
    tail: pipeline::Tail,
}

async fn run(
    shared: Arc<Shared>,
    sub: hub::Subscriber,
    mut stream: AggregatedMessageStream,
    oversize: Oversize,
    peer: String,
) {
    let log = shared.log.new(slog::o!("conn" => sub.id(), "peer" => peer));
    debug!(log, "websocket open");
    let outbox = sub.outbox().clone();
    let publisher = Arc::new(announce::Publisher {
        shared: shared.clone(),
        outbox: outbox.clone(),
        me: sub.id(),
        log: log.clone(),
    });
    let mut conn = Conn {
        publisher,
        in_flight: Arc::new(Semaphore::new(shared.limits.max_in_flight.max(1))),
        shared,
        sub,
        outbox,
        log,
        closing: false,
        challenge: None,
        sender: Sender::Anonymous,
        announcer: None,
        unsent: Vec::new(),
        inline: Vec::new(),
        tail: pipeline::Tail::default(),
    };
    let end = conn.read_loop(&mut stream, &oversize).await;
    conn.hand_over();
    conn.sub.unsubscribe_all();
    conn.outbox.close(CloseKind::Normal);
    if end == End::WeClose && !conn.outbox.is_aborted() {
        // Read (and drop) until the peer answers our close, so that the error reply and the
        // close frame reach it instead of being lost to a reset.
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            loop {
                match stream.recv().await {
                    None | Some(Err(_)) | Some(Ok(AggregatedMessage::Close(_))) => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
    }
    conn.outbox.release();
    debug!(conn.log, "websocket closed");
}

impl Conn {
    async fn read_loop(
        &mut self,
        stream: &mut AggregatedMessageStream,
        oversize: &Oversize,
    ) -> End {
        let mut shutdown = self.shared.shutdown.clone();
        let mut last_seen = Instant::now();
        let idle = self.shared.limits.idle_timeout;
        let mut tick = tokio::time::interval(PING_INTERVAL.min(idle / 3).max(MIN_TICK));
        tick.tick().await;
        let outbox = self.outbox.clone();
        loop {
            if *shutdown.borrow() {
                self.outbox.close(CloseKind::Away);
                return End::WeClose;
            }
            // Read the next request only when its reply has room (backpressure).
            let room = outbox.has_room();
            if !room {
                // Not reading is our choice, not the peer's silence.
                last_seen = Instant::now();
            }
            // A request read already goes before the announcer hears of the publishes
            // ahead of it (`Conn::unsent`); once there is none, the announcer hears of them.
            if room && !self.unsent.is_empty() && self.unsent.len() < HAND_OVER_AT {
                if let Some(msg) = stream.recv().now_or_never() {
                    last_seen = Instant::now();
                    match self.on_message(msg, oversize).await {
                        Some(end) => return end,
                        None => continue,
                    }
                }
            }
            self.hand_over();
            tokio::select! {
                biased;
                _ = outbox.aborted() => {
                    if outbox.is_writer_gone() {
                        debug!(self.log, "connection gone");
                    } else {
                        warn!(self.log, "dropping a connection that does not keep up");
                    }
                    return End::PeerGone;
                }
                _ = shutdown.changed() => {
                    self.outbox.close(CloseKind::Away);
                    return End::WeClose;
                }
                _ = tick.tick() => {
                    if outbox.stalled() {
                        warn!(self.log, "dropping a connection that does not read its replies";
                            "queued_bytes" => outbox.bytes());
                        outbox.drop_slow();
                        return End::PeerGone;
                    }
                    if last_seen.elapsed() > idle {
                        info!(self.log, "peer silent too long, closing");
                        self.outbox.close(CloseKind::Protocol);
                        return End::WeClose;
                    }
                    self.outbox.push_reply(wsframe::ping(b""));
                }
                r = outbox.reserve(), if !room => {
                    if r.is_err() {
                        // Closed: the next turn ends the session; stalled: aborted above.
                        if outbox.is_aborted() {
                            continue;
                        }
                        return End::WeClose;
                    }
                }
                msg = stream.recv(), if room => {
                    last_seen = Instant::now();
                    if let Some(end) = self.on_message(msg, oversize).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Handles one read message; `Some` ends the session.
    async fn on_message(
        &mut self,
        msg: Option<Result<AggregatedMessage, actix_ws::ProtocolError>>,
        oversize: &Oversize,
    ) -> Option<End> {
        match msg {
            None => return Some(End::PeerGone),
            Some(Ok(AggregatedMessage::Binary(b))) => {
                self.handle(b).await;
                if self.closing {
                    return Some(End::WeClose);
                }
            }
            Some(Ok(AggregatedMessage::Text(_))) => {
                let msg = "text frames are not used: send binary msgpack";
                self.reply_err(&Value::Nil, codes::MALFORMED, msg);
            }
            Some(Ok(AggregatedMessage::Ping(p))) => {
                self.outbox.push_reply(wsframe::pong(&p));
            }
            Some(Ok(AggregatedMessage::Pong(_))) => {}
            Some(Ok(AggregatedMessage::Close(_))) => return Some(End::PeerGone),
            Some(Err(e)) => match oversize.tripped() {
                Some(size) => {
                    info!(self.log, "message too large, closing";
                        "size" => size, "max" => self.shared.limits.max_frame);
                    self.outbox.push_reply(wsframe::binary(&wire::encode_err(
                        &Value::Nil,
                        codes::TOO_LARGE,
                        format!(
                            "message of {size} bytes; the limit is {}",
                            self.shared.limits.max_frame
                        ),
                    )));
                    self.outbox.close(CloseKind::TooLarge);
                    return Some(End::WeClose);
                }
                None => {
                    debug!(self.log, "websocket protocol error"; "error" => %e);
                    self.outbox.close(CloseKind::Protocol);
                    return Some(End::PeerGone);
                }
            },
        }
        None
    }

    /// Queues a reply. The read loop reserved room before it read the request, so the
    /// queue's bound holds (one request's replies may go past it by their own size).
    fn reply_ok<T: serde::Serialize>(&self, id: &Value, ok: T) {
        // Encoded in place behind its frame header: a `get` reply is not copied again.
        let frame = wsframe::binary_with(|buf| wire::write_ok(buf, id, ok));
        self.outbox.push_reply(frame);
    }

    fn reply_err(&self, id: &Value, code: &str, message: impl Into<String>) {
        let msg = wire::encode_err(id, code, message);
        self.outbox.push_reply(wsframe::binary(&msg));
    }

    fn reply_persist_err(&self, id: &Value, e: &PersistError) {
        self.reply_err(id, e.code(), e.to_string());
    }

    /// Runs a read of the archive: inline with sled (microseconds), on the pool with the
    /// cluster store (network round trips must not stall this event loop's other sessions).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::persist::Archive) -> Result<T, PersistError> + Send + 'static,
    ) -> Result<T, PersistError> {
        if self.shared.cluster.is_none() {
            return f(&self.shared.archive);
        }
        let archive = self.shared.archive.clone();
        self.shared
            .pool
            .run(move || f(&archive))
            .await
            .unwrap_or_else(|_| Err(PersistError::Unavailable("shutting down".into())))
    }

    /// Typed args of a one-ghid op, or a `bad_args` reply.
    fn ghid_arg(&self, raw: &wire::RawRequest) -> Option<Ghid> {
        match raw.args::<args::ByGhid>().and_then(args::ByGhid::stored) {
            Ok(a) => Some(a),
            Err(e) => {
                self.reply_err(&raw.id, codes::BAD_ARGS, format!("{}: {e}", raw.op));
                None
            }
        }
    }

    async fn handle(&mut self, frame: Bytes) {
        if let Some((id, object)) = wire::publish_in_place(&frame) {
            trace!(self.log, "request"; "op" => "publish", "id" => %id);
            // A copy: the budget then counts exactly what the publish holds (a slice would
            // keep the whole read buffer behind `frame` alive).
            return self
                .publish(id, Bytes::copy_from_slice(&frame[object]))
                .await;
        }
        let raw = match wire::RawRequest::decode(&frame) {
            Ok(r) => r,
            Err(m) => {
                debug!(self.log, "malformed envelope"; "reason" => &m.reason);
                return self.reply_err(&m.id, codes::MALFORMED, m.reason);
            }
        };
        trace!(self.log, "request"; "op" => &raw.op, "id" => %raw.id);
        if raw.op != "publish" {
            // The publishes ahead are announced meanwhile, not after this request.
            self.hand_over();
            self.tail.applied().await;
        }
        if let Err(e) = raw.check_args() {
            let msg = format!("{}: {e}", raw.op);
            return self.reply_err(&raw.id, codes::BAD_ARGS, msg);
        }
        match raw.op.as_str() {
            "hello" => self.reply_ok(&raw.id, &self.shared.hello),
            "ping" => self.reply_ok(&raw.id, true),
            "publish" => match raw.args::<args::Publish>() {
                Ok(a) => self.publish(raw.id, a.object.into()).await,
                Err(e) => self.reply_err(&raw.id, codes::BAD_ARGS, format!("publish: {e}")),
            },
            "get" => {
                let Some(g) = self.ghid_arg(&raw) else {
                    return;
                };
                match self.read(move |a| a.get(&g)).await {
                    Ok(Some(b)) => self.reply_ok(&raw.id, serde_bytes::Bytes::new(&b)),
                    Ok(None) => self.reply_err(
                        &raw.id,
                        codes::NOT_FOUND,
                        format!("{} not found", g.as_str()),
                    ),
                    Err(e) => self.reply_persist_err(&raw.id, &e),
                }
            }
            "subscribe" => {
                let Some(g) = self.ghid_arg(&raw) else {
                    return;
                };
                self.subscribe(&raw.id, g).await;
            }
            "unsubscribe" => {
                let Some(g) = self.ghid_arg(&raw) else {
                    return;
                };
                self.reply_ok(&raw.id, self.sub.unsubscribe(&g));
            }
            "list_subscriptions" => self.reply_ok(&raw.id, self.sub.subscriptions()),
            "list_bindings" => {
                let Some(g) = self.ghid_arg(&raw) else {
                    return;
                };
                match self.read(move |a| a.list_bindings(&g)).await {
                    Ok(v) => self.reply_ok(&raw.id, v),
                    Err(e) => self.reply_persist_err(&raw.id, &e),
                }
            }
            "query_debinding" => {
                let Some(g) = self.ghid_arg(&raw) else {
                    return;
                };
                match self.read(move |a| a.query_debinding(&g)).await {
                    Ok(v) => self.reply_ok(&raw.id, v),
                    Err(e) => self.reply_persist_err(&raw.id, &e),
                }
            }
            "exists" => {
                let Some(g) = self.ghid_arg(&raw) else {
                    return;
                };
                match self.read(move |a| a.exists(&g)).await {
                    Ok(v) => self.reply_ok(&raw.id, v),
                    Err(e) => self.reply_persist_err(&raw.id, &e),
                }
            }
            "auth_challenge" => {
                let challenge: [u8; 32] = rand::random();
                self.challenge = Some(challenge);
                self.reply_ok(&raw.id, serde_bytes::Bytes::new(&challenge));
            }
            "auth" => self.auth(raw).await,
            "disconnect" => {
                self.sub.unsubscribe_all();
                self.reply_ok(&raw.id, true);
                self.outbox.close(CloseKind::Normal);
                self.closing = true;
            }
            other => {
                let msg = format!("unknown op {other:?}");
                self.reply_err(&raw.id, codes::UNKNOWN_OP, msg);
            }
        }
    }

    /// Subscribes, answers, then — for a new subscription only — delivers every stored GARQ
    /// for the ghid (offline mail). Repeating `subscribe` for a ghid already subscribed is
    /// answered `ok` and sends nothing more: while subscribed, new mail arrives live.
    async fn subscribe(&mut self, id: &Value, g: Ghid) {
        let new = match self.sub.subscribe(g) {
            Ok(new) => new,
            Err(hub::LimitReached(n)) => {
                return self.reply_err(id, codes::LIMIT, format!("at most {n} subscriptions"));
            }
        };
        if new {
            if let Some(c) = &self.shared.cluster {
                // Other front-ends' notifications for `g` reach us from the moment we answer.
                c.ready().await;
            }
        }
        self.reply_ok(id, true);
        if !new {
            return;
        }
        match self.read(move |a| a.requests_for(&g)).await {
            Ok(mail) => {
                let headroom = self.outbox.budget().messages / 2;
                for garq in mail {
                    if self.outbox.reserve_below(headroom).await.is_err() {
                        return;
                    }
                    self.outbox.push_notify(None, hub::notify_frame(&g, &garq));
                }
            }
            Err(e) => warn!(self.log, "cannot read stored requests"; "error" => %e),
        }
    }

    /// `auth`: checks the answer to this connection's challenge (used once) against the
    /// identity's stored GIDC; from then on the connection's GARQs count against that
    /// identity's signing key.
    async fn auth(&mut self, raw: wire::RawRequest) {
        let a = match raw.args::<args::Auth>() {
            Ok(a) => a,
            Err(e) => return self.reply_err(&raw.id, codes::BAD_ARGS, format!("auth: {e}")),
        };
        let Some(challenge) = self.challenge.take() else {
            let msg = "auth: ask for an auth_challenge first (each one answers once)";
            return self.reply_err(&raw.id, codes::BAD_ARGS, msg);
        };
        let archive = self.shared.archive.clone();
        let identity = a.identity;
        let check = move || -> Result<Sender, PersistError> {
            let who = match archive.get(&a.identity)? {
                Some(b) => match Object::decode(&b, Policy::STRICT)? {
                    Object::Gidc(g) => {
                        SecondParty::from_gidc(g).map_err(PersistError::VerificationFailed)?
                    }
                    _ => return Err(PersistError::UnknownAuthor(a.identity.as_str())),
                },
                None => return Err(PersistError::UnknownAuthor(a.identity.as_str())),
            };
            auth::verify(&who, &challenge, &a.signature)
                .map_err(PersistError::VerificationFailed)?;
            Ok(Sender::Key(auth::sender_key(who.gidc())))
        };
        match self.shared.pool.run(check).await {
            Ok(Ok(sender)) => {
                self.sender = sender;
                debug!(self.log, "authenticated"; "identity" => %identity);
                self.reply_ok(&raw.id, true);
            }
            Ok(Err(e)) => self.reply_persist_err(&raw.id, &e),
            Err(_) => self.reply_err(&raw.id, codes::UNAVAILABLE, "shutting down"),
        }
    }

    async fn publish(&mut self, id: Value, object: Bytes) {
        if let Some((free, first)) = self.shared.disk.check() {
            if disk::adds_data(&self.shared.archive, &object) {
                let min = self.shared.disk.min_free();
                if first {
                    warn!(self.log, "the disk is nearly full: new objects are refused until space is freed";
                        "free" => free, "min_free_bytes" => min);
                }
                let message = format!(
                    "the server's disk is nearly full ({free} bytes free, keeps {min}); nothing stored"
                );
                return self.reply_err(&id, codes::STORAGE, message);
            }
        }
        // Before waiting for room, the publishes not yet handed over go to the announcer:
        // only once they are answered do they release theirs.
        let permit = match self.in_flight.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.hand_over();
                let Ok(p) = self.in_flight.clone().acquire_owned().await else {
                    return;
                };
                p
            }
        };
        // Past the server's inbound budget, nothing more is read here until it has room.
        let bytes = match self.shared.inbound.try_take(object.len()) {
            Some(b) => b,
            None => {
                self.hand_over();
                let Some(b) = self.shared.inbound.take(object.len()).await else {
                    return self.reply_err(&id, codes::UNAVAILABLE, "shutting down");
                };
                b
            }
        };
        let inline = self.shared.cluster.is_none()
            && object.len() <= INLINE_MAX
            && match self.inline.len() {
                0 => self.tail.is_empty(),
                n => n < INLINE_AT_ONCE,
            };
        // Pipelined (`pipeline`): the next request is read at once.
        let (job, applying) = pipeline::job(
            &mut self.tail,
            self.shared.archive.clone(),
            object,
            self.sender,
        );
        if inline {
            self.inline.push(Box::new(job));
            return self.unsent.push(Pending::new(applying, id, permit, bytes));
        }
        match self.shared.pool.submit(job).await {
            Ok(_ran) => self.unsent.push(Pending::new(applying, id, permit, bytes)),
            Err(_) => self.reply_err(&id, codes::UNAVAILABLE, "shutting down"),
        }
    }

    /// Runs the publishes kept for this thread ([`Conn::inline`]), announces here what is
    /// durable already if the announcer has nothing in hand ([`announce::announce_ready`]),
    /// then hands the rest of [`Conn::unsent`] to the announcer, in order. Called before
    /// anything that may wait for the pipeline, which includes those publishes.
    fn hand_over(&mut self) {
        let mut jobs = std::mem::take(&mut self.inline);
        // A frame and its container: the container is checked on another core meanwhile
        // (its commit waits for the frame's either way, `pipeline`).
        let beside = match (&self.shared.beside, jobs.len()) {
            (Some(beside), 2) => jobs
                .pop()
                .and_then(|container| match beside.hand(container) {
                    Ok(handed) => Some(handed),
                    Err(container) => {
                        jobs.push(container);
                        None
                    }
                }),
            _ => None,
        };
        for job in jobs {
            job();
        }
        if let Some(container) = beside {
            container.finish();
        }
        if self.unsent.is_empty() {
            return;
        }
        if self.announcer.as_ref().map_or(true, Announcer::is_idle) {
            announce::announce_ready(&self.publisher, &mut self.unsent);
        }
        if self.unsent.is_empty() {
            return;
        }
        let unsent = std::mem::take(&mut self.unsent);
        let publisher = &self.publisher;
        let announcer = self
            .announcer
            .get_or_insert_with(|| Announcer::start(publisher.clone()));
        if let Err(unsent) = announcer.hand(unsent) {
            // The announcer only ends with the connection; answer anyway.
            for d in unsent {
                self.reply_err(&d.id, codes::UNAVAILABLE, "shutting down");
            }
        }
    }
}
