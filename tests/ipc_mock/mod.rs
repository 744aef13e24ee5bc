//! Test support for the IPC tests: `MemDaemon`, an in-memory `DaemonApi` that really stores
//! objects, tracks them per app and emits events (update / delete to the other trackers,
//! never the pusher; `share` to the other apps handling a new object's api id; an ok
//! `share_result` for every share), keeps app tokens, startup objects and share handlers;
//! a raw websocket `RawConn` for frame-level tests; server start-up; and a slog drain that
//! captures log lines. Not a test target itself (a directory module).
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hypergolix::actors::api::{AppEvent, AppId, AppToken, ObjectView};
use hypergolix::actors::error::DaemonError;
use hypergolix::actors::inbox::InboxSender;
use hypergolix::golix::{Algo, Ghid};
use hypergolix::ipc::{serve, CapabilityToken, DaemonApi, IpcConfig, IpcServer};
use rmpv::Value;

/// A `get` of this ghid panics inside the daemon (to test the session's recovery).
pub fn panic_ghid() -> Ghid {
    Ghid::new(Algo::SHA512, [0xee; 64])
}

/// Pushing this state takes `SLOW` (to test that requests run concurrently).
pub const SLOW_STATE: &[u8] = b"slow";
pub const SLOW: Duration = Duration::from_millis(400);

/// Sharing with this fingerprint fails with `unknown_recipient`.
pub fn unknown_recipient() -> Ghid {
    Ghid::new(Algo::SHA512, [0xbb; 64])
}

struct MemObj {
    view: ObjectView,
    /// The app that created it (private objects are visible to it alone).
    creator: AppId,
}

#[derive(Default)]
struct State {
    next_app: AppId,
    apps: HashMap<AppId, InboxSender>,
    objects: HashMap<Ghid, MemObj>,
    trackers: HashMap<Ghid, BTreeSet<AppId>>,
    held: BTreeSet<Ghid>,
    disconnected: Vec<AppId>,
    calls: Vec<(AppId, &'static str)>,
    /// Issued tokens, the token bound to each live app, each token's startup object.
    tokens: BTreeSet<AppToken>,
    app_tokens: HashMap<AppId, AppToken>,
    startup: HashMap<AppToken, Ghid>,
    /// Api ids each app handles shares of.
    handlers: HashMap<AppId, BTreeSet<Ghid>>,
    /// For `hold`: the thread that polled the call, and the one a `tokio::spawn` ran on.
    hold_threads: Vec<(std::thread::ThreadId, std::thread::ThreadId)>,
}

/// The in-memory daemon.
#[derive(Clone)]
pub struct MemDaemon {
    state: Arc<Mutex<State>>,
    fingerprint: Ghid,
    user_id: Ghid,
}

impl Default for MemDaemon {
    fn default() -> Self {
        MemDaemon {
            state: Arc::default(),
            fingerprint: Ghid::new(Algo::SHA512, [0xf1; 64]),
            user_id: Ghid::new(Algo::SHA512, [0x0d; 64]),
        }
    }
}

fn fresh_ghid() -> Ghid {
    Ghid::hash(Algo::SHA512, &rand::random::<[u8; 32]>())
}

impl MemDaemon {
    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Sends `ev` to `app` as the daemon would.
    pub fn inject(&self, app: AppId, ev: AppEvent) -> bool {
        let tx = self.st().apps.get(&app).cloned();
        tx.is_some_and(|tx| tx.send(ev).is_ok())
    }

    pub fn connected(&self) -> Vec<AppId> {
        let mut v: Vec<AppId> = self.st().apps.keys().copied().collect();
        v.sort();
        v
    }

    pub fn disconnected(&self) -> Vec<AppId> {
        self.st().disconnected.clone()
    }

    pub fn trackers(&self, ghid: Ghid) -> Vec<AppId> {
        self.st()
            .trackers
            .get(&ghid)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// (polling thread, spawned task's thread) of every `hold`.
    pub fn hold_threads(&self) -> Vec<(std::thread::ThreadId, std::thread::ThreadId)> {
        self.st().hold_threads.clone()
    }

    pub fn is_held(&self, ghid: Ghid) -> bool {
        self.st().held.contains(&ghid)
    }

    pub fn exists(&self, ghid: Ghid) -> bool {
        self.st().objects.contains_key(&ghid)
    }

    /// Every op call, in order.
    pub fn calls(&self) -> Vec<(AppId, &'static str)> {
        self.st().calls.clone()
    }

    /// Waits until `app` was disconnected.
    pub async fn wait_disconnected(&self, app: AppId) {
        for _ in 0..200 {
            if self.disconnected().contains(&app) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("app {app} was never disconnected");
    }

    /// Sends `ev` to every tracker of `ghid` but `except`.
    fn fan_out(st: &State, ghid: Ghid, except: AppId, ev: AppEvent) {
        for app in st.trackers.get(&ghid).into_iter().flatten() {
            if *app != except {
                if let Some(tx) = st.apps.get(app) {
                    let _ = tx.send(ev.clone());
                }
            }
        }
    }

    fn visible(&self, st: &State, app: AppId, ghid: Ghid) -> Result<ObjectView, DaemonError> {
        let obj = st
            .objects
            .get(&ghid)
            .ok_or_else(|| DaemonError::NotFound(ghid.to_string()))?;
        if obj.view.private && obj.creator != app {
            return Err(DaemonError::AccessDenied("private object".into()));
        }
        Ok(obj.view.clone())
    }

    fn record(&self, app: AppId, op: &'static str) {
        self.st().calls.push((app, op));
    }
}

impl DaemonApi for MemDaemon {
    fn fingerprint(&self) -> Ghid {
        self.fingerprint
    }

    fn user_id(&self) -> Ghid {
        self.user_id
    }

    /// The double syncs through no persister.
    fn remotes(&self) -> Vec<hypergolix::actors::link_state::RemoteStatus> {
        Vec::new()
    }

    fn connect_app(&self, events: InboxSender) -> AppId {
        let mut st = self.st();
        st.next_app += 1;
        let app = st.next_app;
        st.apps.insert(app, events);
        app
    }

    fn disconnect_app(&self, app: AppId) {
        let mut st = self.st();
        st.apps.remove(&app);
        st.app_tokens.remove(&app);
        st.handlers.remove(&app);
        for set in st.trackers.values_mut() {
            set.remove(&app);
        }
        st.disconnected.push(app);
    }

    async fn new_object(
        &self,
        app: AppId,
        state: Vec<u8>,
        api_id: Option<Ghid>,
        dynamic: bool,
        private: bool,
    ) -> Result<ObjectView, DaemonError> {
        self.record(app, "new");
        let view = ObjectView {
            ghid: fresh_ghid(),
            author: self.fingerprint,
            api_id,
            dynamic,
            private,
            state,
        };
        let mut st = self.st();
        st.objects.insert(
            view.ghid,
            MemObj {
                view: view.clone(),
                creator: app,
            },
        );
        st.trackers.entry(view.ghid).or_default().insert(app);
        if let (Some(api), false) = (api_id, private) {
            let offer = AppEvent::Share {
                ghid: view.ghid,
                origin: self.fingerprint,
                api_id,
            };
            for (other, apis) in &st.handlers {
                if *other != app && apis.contains(&api) {
                    if let Some(tx) = st.apps.get(other) {
                        let _ = tx.send(offer.clone());
                    }
                }
            }
        }
        Ok(view)
    }

    async fn get_object(&self, app: AppId, ghid: Ghid) -> Result<ObjectView, DaemonError> {
        self.record(app, "get");
        if ghid == panic_ghid() {
            panic!("MemDaemon: asked to fail");
        }
        let mut st = self.st();
        let view = self.visible(&st, app, ghid)?;
        st.trackers.entry(ghid).or_default().insert(app);
        Ok(view)
    }

    async fn push(
        &self,
        app: AppId,
        ghid: Ghid,
        state: Vec<u8>,
        private: Option<bool>,
    ) -> Result<(), DaemonError> {
        self.record(app, "push");
        if state == SLOW_STATE {
            tokio::time::sleep(SLOW).await;
        }
        let mut st = self.st();
        let current = self.visible(&st, app, ghid)?;
        if !current.dynamic {
            return Err(DaemonError::LocallyImmutable(ghid.to_string()));
        }
        if private == Some(true) && !current.private {
            return Err(DaemonError::CatOuttaBag);
        }
        let obj = st.objects.get_mut(&ghid).expect("visible");
        obj.view.state = state;
        if let Some(p) = private {
            obj.view.private = p;
        }
        let view = obj.view.clone();
        Self::fan_out(&st, ghid, app, AppEvent::Update(view));
        Ok(())
    }

    async fn sync(&self, app: AppId, ghid: Ghid) -> Result<ObjectView, DaemonError> {
        self.record(app, "sync");
        let st = self.st();
        self.visible(&st, app, ghid)
    }

    async fn freeze(&self, app: AppId, ghid: Ghid) -> Result<Ghid, DaemonError> {
        self.record(app, "freeze");
        let mut st = self.st();
        let mut view = self.visible(&st, app, ghid)?;
        if !view.dynamic {
            return Err(DaemonError::LocallyImmutable(ghid.to_string()));
        }
        view.ghid = fresh_ghid();
        view.dynamic = false;
        let frozen = view.ghid;
        st.objects.insert(frozen, MemObj { view, creator: app });
        Ok(frozen)
    }

    async fn hold(&self, app: AppId, ghid: Ghid) -> Result<(), DaemonError> {
        self.record(app, "hold");
        let polled = std::thread::current().id();
        let spawned = tokio::spawn(async { std::thread::current().id() })
            .await
            .unwrap();
        let mut st = self.st();
        st.hold_threads.push((polled, spawned));
        self.visible(&st, app, ghid)?;
        st.held.insert(ghid);
        Ok(())
    }

    async fn discard(&self, app: AppId, ghid: Ghid) -> Result<(), DaemonError> {
        self.record(app, "discard");
        let mut st = self.st();
        self.visible(&st, app, ghid)?;
        if let Some(set) = st.trackers.get_mut(&ghid) {
            set.remove(&app);
        }
        Ok(())
    }

    async fn delete(&self, app: AppId, ghid: Ghid) -> Result<(), DaemonError> {
        self.record(app, "delete");
        let mut st = self.st();
        self.visible(&st, app, ghid)?;
        Self::fan_out(&st, ghid, app, AppEvent::Delete(ghid));
        st.objects.remove(&ghid);
        st.trackers.remove(&ghid);
        Ok(())
    }

    async fn register_token(
        &self,
        app: AppId,
        token: Option<AppToken>,
    ) -> Result<(AppToken, Option<Ghid>), DaemonError> {
        self.record(app, "register_token");
        let mut st = self.st();
        if st.app_tokens.contains_key(&app) {
            return Err(DaemonError::AlreadySet("token".into()));
        }
        let token = match token {
            None => {
                let t: AppToken = rand::random();
                st.tokens.insert(t);
                t
            }
            Some(t) if !st.tokens.contains(&t) => return Err(DaemonError::UnknownToken),
            Some(t) if st.app_tokens.values().any(|x| *x == t) => {
                return Err(DaemonError::TokenInUse)
            }
            Some(t) => t,
        };
        st.app_tokens.insert(app, token);
        Ok((token, st.startup.get(&token).copied()))
    }

    async fn register_startup(&self, app: AppId, ghid: Ghid) -> Result<(), DaemonError> {
        self.record(app, "register_startup");
        let mut st = self.st();
        let token = *st.app_tokens.get(&app).ok_or(DaemonError::UnknownToken)?;
        match st.startup.get(&token) {
            Some(old) if *old == ghid => return Ok(()),
            Some(_) => return Err(DaemonError::AlreadySet("startup".into())),
            None => {}
        }
        st.startup.insert(token, ghid);
        Ok(())
    }

    async fn deregister_startup(&self, app: AppId) -> Result<(), DaemonError> {
        self.record(app, "deregister_startup");
        let mut st = self.st();
        let token = *st.app_tokens.get(&app).ok_or(DaemonError::UnknownToken)?;
        st.startup
            .remove(&token)
            .map(drop)
            .ok_or_else(|| DaemonError::NotFound("startup".into()))
    }

    async fn register_share_handler(&self, app: AppId, api_id: Ghid) -> Result<(), DaemonError> {
        self.record(app, "register_share_handler");
        self.st().handlers.entry(app).or_default().insert(api_id);
        Ok(())
    }

    async fn deregister_share_handler(&self, app: AppId, api_id: Ghid) -> Result<(), DaemonError> {
        self.record(app, "deregister_share_handler");
        let removed = self
            .st()
            .handlers
            .get_mut(&app)
            .is_some_and(|s| s.remove(&api_id));
        if removed {
            Ok(())
        } else {
            Err(DaemonError::NotFound("handler".into()))
        }
    }

    async fn share(&self, app: AppId, ghid: Ghid, recipient: Ghid) -> Result<(), DaemonError> {
        self.record(app, "share");
        let st = self.st();
        let view = self.visible(&st, app, ghid)?;
        if view.private {
            return Err(DaemonError::Unsharable(ghid.to_string()));
        }
        if recipient == unknown_recipient() {
            return Err(DaemonError::UnknownRecipient(recipient.to_string()));
        }
        if let Some(tx) = st.apps.get(&app) {
            let _ = tx.send(AppEvent::ShareResult {
                ghid,
                recipient,
                ok: true,
                status: 0,
            });
        }
        Ok(())
    }
}

/// Captured log lines: the message then ` key=value` pairs.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<String>>>);

struct LineSer(String);

impl slog::Serializer for LineSer {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments) -> slog::Result {
        self.0 += &format!(" {key}={val}");
        Ok(())
    }
}

impl slog::Drain for LogCapture {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV;
        let mut ser = LineSer(format!("{}", record.msg()));
        let _ = record.kv().serialize(record, &mut ser);
        let _ = values.serialize(record, &mut ser);
        self.0.lock().unwrap().push(ser.0);
        Ok(())
    }
}

impl LogCapture {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A server on 127.0.0.1:0 over `daemon`, with a fresh token; `tweak` adjusts the config.
pub async fn start_with(
    daemon: MemDaemon,
    tweak: impl FnOnce(&mut IpcConfig),
) -> (IpcServer, CapabilityToken) {
    let token = CapabilityToken::generate();
    let mut cfg = IpcConfig::new(token.clone());
    cfg.addr = "127.0.0.1:0".parse().unwrap();
    cfg.workers = 1;
    cfg.allowed_origins = vec!["http://localhost:3000".into()];
    tweak(&mut cfg);
    let server = serve(daemon, cfg).await.expect("serve");
    (server, token)
}

pub async fn start(daemon: MemDaemon) -> (IpcServer, CapabilityToken) {
    start_with(daemon, |_| {}).await
}

#[path = "../msgpack_support/mod.rs"]
mod msgpack;
#[allow(unused_imports)] // each test uses its own share of them
pub use msgpack::{bin, encode, err_code, get, map, request};

pub fn ghid_value(g: &Ghid) -> Value {
    Value::Binary(g.as_bytes().to_vec())
}

/// The awc websocket, boxed (its concrete type is not nameable from here).
type Framed = std::pin::Pin<Box<dyn WsDuplex>>;

/// What a raw websocket needs to be: frames in, messages out.
pub trait WsDuplex:
    futures_util::Stream<Item = Result<awc::ws::Frame, awc::error::WsProtocolError>>
    + futures_util::Sink<awc::ws::Message, Error = awc::error::WsProtocolError>
{
}

impl<T> WsDuplex for T where
    T: futures_util::Stream<Item = Result<awc::ws::Frame, awc::error::WsProtocolError>>
        + futures_util::Sink<awc::ws::Message, Error = awc::error::WsProtocolError>
{
}

/// A raw websocket to the server, for frame-level tests.
pub struct RawConn {
    ws: Framed,
}

/// What `RawConn::recv` saw.
#[derive(Debug)]
pub enum Got {
    Msg(Value),
    Closed,
}

impl RawConn {
    pub async fn open(url: &str) -> RawConn {
        Self::try_open(url, None)
            .await
            .expect("websocket handshake")
    }

    /// Opens with an optional `Origin` header; `Err(status)` when the handshake is refused.
    pub async fn try_open(url: &str, origin: Option<&str>) -> Result<RawConn, String> {
        let mut req = awc::Client::default().ws(url).max_frame_size(64 << 20);
        if let Some(o) = origin {
            req = req.origin(o);
        }
        match req.connect().await {
            Ok((_, framed)) => Ok(RawConn {
                ws: Box::pin(framed),
            }),
            Err(awc::error::WsClientError::InvalidResponseStatus(s)) => Err(s.as_u16().to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Opens and says hello with `token`; returns the hello reply.
    pub async fn hello(url: &str, token: &CapabilityToken) -> (RawConn, Value) {
        let mut c = Self::open(url).await;
        c.send(request(
            0,
            "hello",
            map(vec![("token", bin(token.as_bytes()))]),
        ))
        .await;
        let reply = c.recv_msg().await;
        assert!(get(&reply, "ok").is_map(), "hello failed: {reply}");
        (c, reply)
    }

    pub async fn send(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(awc::ws::Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(awc::ws::Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next message or close, within 5 s.
    pub async fn recv(&mut self) -> Got {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("nothing received within 5 s")
    }

    /// The next message or close within `d`, or `None`.
    pub async fn recv_within(&mut self, d: Duration) -> Option<Got> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            return Some(match frame {
                Some(Ok(awc::ws::Frame::Binary(b))) => {
                    Got::Msg(rmpv::decode::read_value(&mut &b[..]).expect("server sent msgpack"))
                }
                Some(Ok(awc::ws::Frame::Ping(_) | awc::ws::Frame::Pong(_))) => continue,
                Some(Ok(awc::ws::Frame::Close(reason))) => {
                    let _ = self.ws.send(awc::ws::Message::Close(reason)).await;
                    Got::Closed
                }
                Some(Err(_)) | None => Got::Closed,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            });
        }
    }

    pub async fn recv_msg(&mut self) -> Value {
        match self.recv().await {
            Got::Msg(v) => v,
            Got::Closed => panic!("connection closed, expected a message"),
        }
    }

    /// Asserts the server closes the connection (after any messages, which are returned).
    pub async fn expect_closed(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            match self.recv().await {
                Got::Msg(v) => seen.push(v),
                Got::Closed => return seen,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.send(awc::ws::Message::Close(None)).await;
    }
}
