//! The NATS baselines' client: a minimal hand-written client for the text protocol (INFO,
//! CONNECT, SUB, UNSUB, PUB, MSG, HMSG, PING, PONG, +OK, -ERR) over tokio TCP; the server
//! itself is started by [`super::nats_server`].
//!
//! Why not `async-nats`: the subscribers share the harness's two cores with the server, so
//! their per-message cost must be as small as the Redis baseline's RESP reader and the
//! persister's raw websocket reader (a parse in place, no channel, no task hop); `async-nats`
//! runs a connection task per client and hands every message to the subscriber through a
//! channel, which at N = 1000 would charge the client side, not the server. The protocol
//! needed here is a handful of lines.
//!
//! - Core NATS: each subscriber has its own connection and `SUB`s the subject. The publisher
//!   sends `PUB` + `PING` and counts an update acknowledged on the `PONG`: the server handles
//!   a connection's input in order, so the `PONG` means the message has been handed to every
//!   subscriber's connection (the analogue of Redis's `PUBLISH` reply).
//! - JetStream: the publisher creates a file-backed stream on the subject (`$JS.API.STREAM.
//!   CREATE`), publishes each update with a reply inbox and counts it acknowledged on the
//!   server's PubAck (stored). Each subscriber creates its own ephemeral ordered push
//!   consumer (deliver new, ack none, flow control answered, idle heartbeats ignored,
//!   consumer state in memory), so what it receives comes out of the stream after the
//!   store, as a persister announces a frame only once it is stored. `--jetstream-delivery
//!   core` subscribes to the subject instead: those messages are routed at publish time,
//!   before and independently of the store.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Longest control line accepted from the server (INFO can be long; MSG lines are short).
const MAX_LINE: usize = 64 * 1024;

/// A message (MSG, or HMSG with its header block).
#[derive(Debug)]
pub struct Msg {
    pub subject: Bytes,
    pub sid: u64,
    pub reply: Option<Bytes>,
    pub headers: Option<Bytes>,
    pub payload: Bytes,
}

/// One server operation.
#[derive(Debug)]
pub enum Op {
    Info(Bytes),
    Msg(Msg),
    Ping,
    Pong,
    Ok,
    Err(String),
}

fn number(b: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "bad number {:?} in a NATS control line",
                String::from_utf8_lossy(b)
            )
        })
}

/// Takes one complete operation off the front of `buf`; `Ok(None)` if it holds only part
/// of one.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Op>, String> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_LINE {
            return Err("NATS control line too long".into());
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let mut words = line
        .split(|c| *c == b' ' || *c == b'\t')
        .filter(|w| !w.is_empty());
    let verb = words.next().unwrap_or_default().to_ascii_uppercase();
    let args: Vec<&[u8]> = words.collect();
    let body = eol + 2;
    let (hdr_len, total) = match (verb.as_slice(), args.len()) {
        (b"MSG", 3 | 4) => (0, number(args[args.len() - 1])? as usize),
        (b"HMSG", 4 | 5) => (
            number(args[args.len() - 2])? as usize,
            number(args[args.len() - 1])? as usize,
        ),
        (b"PING", _) => {
            buf.advance(body);
            return Ok(Some(Op::Ping));
        }
        (b"PONG", _) => {
            buf.advance(body);
            return Ok(Some(Op::Pong));
        }
        (b"+OK", _) => {
            buf.advance(body);
            return Ok(Some(Op::Ok));
        }
        (b"-ERR", _) => {
            let text = String::from_utf8_lossy(&line[4..]).trim().to_owned();
            buf.advance(body);
            return Ok(Some(Op::Err(text)));
        }
        (b"INFO", _) => {
            let frame = buf.split_to(body).freeze();
            return Ok(Some(Op::Info(frame.slice(5.min(eol)..eol))));
        }
        _ => {
            return Err(format!(
                "unexpected NATS line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            ))
        }
    };
    if hdr_len > total {
        return Err("HMSG header longer than the message".into());
    }
    if buf.len() < body + total + 2 {
        return Ok(None);
    }
    if &buf[body + total..body + total + 2] != b"\r\n" {
        return Err("NATS message not followed by CRLF".into());
    }
    // Offsets of the subject, sid and reply words inside the line, to slice the frozen copy.
    let offset = |w: &[u8]| w.as_ptr() as usize - buf.as_ptr() as usize;
    let ranges: Vec<(usize, usize)> = args.iter().map(|w| (offset(w), w.len())).collect();
    let sid = number(args[1])?;
    let has_reply = args.len() == if verb == b"HMSG" { 5 } else { 4 };
    let frame = buf.split_to(body + total + 2).freeze();
    let word = |i: usize| frame.slice(ranges[i].0..ranges[i].0 + ranges[i].1);
    Ok(Some(Op::Msg(Msg {
        subject: word(0),
        sid,
        reply: has_reply.then(|| word(2)),
        headers: (verb == b"HMSG").then(|| frame.slice(body..body + hdr_len)),
        payload: frame.slice(body + hdr_len..body + total),
    })))
}

/// The status code of an HMSG header block (`NATS/1.0 100 FlowControl Request`).
pub fn status(headers: &[u8]) -> Option<u16> {
    let first = headers.split(|c| *c == b'\r').next()?;
    let code = first.strip_prefix(b"NATS/1.0 ")?;
    let code = code.split(|c| *c == b' ').next()?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

fn pub_cmd(out: &mut BytesMut, subject: &str, reply: Option<&str>, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    if let Some(r) = reply {
        out.extend_from_slice(b" ");
        out.extend_from_slice(r.as_bytes());
    }
    out.extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Unique subject tokens for inboxes and deliver subjects of this process.
fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An open connection (handshake done) with its read buffer.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Connects, reads INFO, sends CONNECT and a PING, waits for the PONG.
    async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("nats connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut c = Conn {
            stream,
            buf: BytesMut::with_capacity(32 * 1024),
        };
        match c.next().await? {
            Op::Info(_) => {}
            other => return Err(format!("nats: expected INFO, got {other:?}")),
        }
        // echo false: the publisher never receives its own messages; headers: JetStream
        // status messages (flow control, heartbeats, no responders) arrive as HMSG.
        c.write(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"fanout-bench\",\
              \"lang\":\"rust-raw\",\"version\":\"0\",\"protocol\":1,\"echo\":false,\
              \"headers\":true,\"no_responders\":true}\r\nPING\r\n",
        )
        .await?;
        c.until_pong().await?;
        Ok(c)
    }

    async fn write(&mut self, b: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(b)
            .await
            .map_err(|e| format!("nats write: {e}"))
    }

    /// The next operation (server PINGs are answered here).
    async fn next(&mut self) -> Result<Op, String> {
        loop {
            match parse(&mut self.buf)? {
                Some(Op::Ping) => self.write(b"PONG\r\n").await?,
                Some(Op::Err(e)) => return Err(format!("nats: -ERR {e}")),
                Some(op) => return Ok(op),
                None => {
                    if self.buf.capacity() - self.buf.len() < 8 * 1024 {
                        self.buf.reserve(32 * 1024);
                    }
                    match self.stream.read_buf(&mut self.buf).await {
                        Ok(0) => return Err("nats closed the connection".into()),
                        Ok(_) => {}
                        Err(e) => return Err(format!("nats read: {e}")),
                    }
                }
            }
        }
    }

    async fn until_pong(&mut self) -> Result<(), String> {
        loop {
            match self.next().await? {
                Op::Pong => return Ok(()),
                Op::Info(_) | Op::Ok => {}
                other => return Err(format!("nats: expected PONG, got {other:?}")),
            }
        }
    }

    /// A request on this connection (before it carries anything else): subscribes a fresh
    /// inbox as sid 2, publishes with it as the reply subject, returns the reply's payload.
    async fn request(&mut self, subject: &str, payload: &[u8]) -> Result<Bytes, String> {
        let inbox = format!("_INBOX.{}", unique());
        let mut out = BytesMut::new();
        // Unsubscribed by the server after the one reply.
        out.extend_from_slice(format!("SUB {inbox} 2\r\nUNSUB 2 1\r\n").as_bytes());
        pub_cmd(&mut out, subject, Some(&inbox), payload);
        self.write(&out).await?;
        loop {
            match self.next().await? {
                Op::Msg(m) if m.sid == 2 => return reply_payload(m),
                Op::Msg(m) => {
                    return Err(format!(
                        "nats: message on {} before the reply",
                        String::from_utf8_lossy(&m.subject)
                    ))
                }
                _ => {}
            }
        }
    }
}

/// A reply's payload, or why there is none (a no-responders status).
fn reply_payload(m: Msg) -> Result<Bytes, String> {
    match m.headers.as_deref().and_then(status) {
        Some(503) => Err("nats: no responders (is JetStream enabled and the stream there?)".into()),
        Some(code) if code >= 400 => Err(format!("nats: status {code}")),
        _ => Ok(m.payload),
    }
}

/// A JetStream API reply: `Err(description)` if it carries an error.
pub fn api_result(reply: &[u8]) -> Result<serde_json::Value, String> {
    let v: serde_json::Value =
        serde_json::from_slice(reply).map_err(|e| format!("JetStream reply: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!(
            "JetStream: {}",
            err.get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("error")
        ));
    }
    Ok(v)
}

/// How a subscriber gets the subject's messages.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// A core subscription on the subject.
    Core,
    /// Its own ephemeral ordered push consumer on `stream`.
    Consumer { stream: String },
}

/// A subscribed connection.
pub struct Subscription {
    conn: Conn,
}

impl Subscription {
    pub async fn open(
        addr: SocketAddr,
        subject: &str,
        delivery: &Delivery,
    ) -> Result<Subscription, String> {
        let mut conn = Conn::open(addr).await?;
        match delivery {
            Delivery::Core => {
                conn.write(format!("SUB {subject} 1\r\nPING\r\n").as_bytes())
                    .await?;
                conn.until_pong().await?;
            }
            Delivery::Consumer { stream } => {
                let deliver = format!("_DELIVER.{}", unique());
                conn.write(format!("SUB {deliver} 1\r\n").as_bytes())
                    .await?;
                // What NATS clients call an ordered consumer, on the server side.
                let request = serde_json::json!({
                    "stream_name": stream,
                    "config": {
                        "deliver_subject": deliver,
                        "deliver_policy": "new",
                        "ack_policy": "none",
                        "max_deliver": 1,
                        "replay_policy": "instant",
                        "flow_control": true,
                        "idle_heartbeat": 5_000_000_000_u64,
                        "mem_storage": true,
                        "num_replicas": 1,
                    }
                });
                let reply = conn
                    .request(
                        &format!("$JS.API.CONSUMER.CREATE.{stream}"),
                        request.to_string().as_bytes(),
                    )
                    .await?;
                api_result(&reply).map_err(|e| format!("consumer create: {e}"))?;
            }
        }
        Ok(Subscription { conn })
    }

    /// Calls `on_message(payload)` for every message on the subscription until the
    /// connection ends; answers flow-control requests, skips other status messages.
    pub async fn run(mut self, mut on_message: impl FnMut(Bytes)) {
        let mut out = BytesMut::new();
        loop {
            // Everything already buffered first, then one write for the answers it needs.
            loop {
                match parse(&mut self.conn.buf) {
                    Ok(Some(Op::Msg(m))) if m.sid == 1 => match m.headers.as_deref() {
                        None => on_message(m.payload),
                        Some(h) => {
                            if let (Some(100), Some(reply)) = (status(h), &m.reply) {
                                out.extend_from_slice(b"PUB ");
                                out.extend_from_slice(reply);
                                out.extend_from_slice(b" 0\r\n\r\n");
                            } else if status(h).is_none() {
                                on_message(m.payload);
                            }
                        }
                    },
                    Ok(Some(Op::Ping)) => out.extend_from_slice(b"PONG\r\n"),
                    Ok(Some(Op::Err(_))) | Err(_) => return,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                }
            }
            if !out.is_empty() {
                if self.conn.write(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
            let c = &mut self.conn;
            if c.buf.capacity() - c.buf.len() < 8 * 1024 {
                c.buf.reserve(32 * 1024);
            }
            match c.stream.read_buf(&mut c.buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

type Reply = oneshot::Sender<Result<Bytes, String>>;

/// Acknowledgements the publisher's reader hands out: PONGs in order, replies by inbox.
#[derive(Default)]
struct Waiting {
    pongs: VecDeque<Reply>,
    replies: HashMap<u64, Reply>,
    closed: Option<String>,
}

impl Waiting {
    fn fail_all(&mut self, why: &str) {
        self.closed = Some(why.to_owned());
        for w in self.pongs.drain(..) {
            let _ = w.send(Err(why.to_owned()));
        }
        for (_, w) in self.replies.drain() {
            let _ = w.send(Err(why.to_owned()));
        }
    }
}

/// A pipelined publisher on one connection (must live on one actix/tokio local thread):
/// any number of publishes and requests in flight.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<BytesMut>,
    waiting: Rc<RefCell<Waiting>>,
    inbox: Rc<str>,
    next: Rc<Cell<u64>>,
}

impl Publisher {
    pub async fn connect(addr: SocketAddr) -> Result<Publisher, String> {
        let mut conn = Conn::open(addr).await?;
        let inbox: Rc<str> = format!("_INBOX.{}", unique()).into();
        conn.write(format!("SUB {inbox}.* 1\r\nPING\r\n").as_bytes())
            .await?;
        conn.until_pong().await?;
        let Conn { stream, mut buf } = conn;
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<BytesMut>();
        let waiting: Rc<RefCell<Waiting>> = Rc::default();
        actix_rt::spawn(async move {
            let mut out = BytesMut::new();
            while let Some(b) = rx.recv().await {
                out.extend_from_slice(&b);
                while let Ok(b) = rx.try_recv() {
                    out.extend_from_slice(&b);
                }
                if wr.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
        });
        let (w2, tx2) = (waiting.clone(), tx.clone());
        actix_rt::spawn(async move {
            let why = loop {
                match parse(&mut buf) {
                    Ok(Some(Op::Pong)) => {
                        if let Some(w) = w2.borrow_mut().pongs.pop_front() {
                            let _ = w.send(Ok(Bytes::new()));
                        }
                        continue;
                    }
                    Ok(Some(Op::Msg(m))) => {
                        let token = m.subject.rsplit(|c| *c == b'.').next().unwrap_or_default();
                        if let Ok(k) = number(token) {
                            if let Some(w) = w2.borrow_mut().replies.remove(&k) {
                                let _ = w.send(reply_payload(m));
                            }
                        }
                        continue;
                    }
                    Ok(Some(Op::Ping)) => {
                        let _ = tx2.send(BytesMut::from(&b"PONG\r\n"[..]));
                        continue;
                    }
                    Ok(Some(Op::Err(e))) => break format!("nats: -ERR {e}"),
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(e) => break e,
                }
                if buf.capacity() - buf.len() < 8 * 1024 {
                    buf.reserve(32 * 1024);
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break "nats closed the publisher's connection".into(),
                    Err(e) => break format!("nats read: {e}"),
                    Ok(_) => {}
                }
            };
            w2.borrow_mut().fail_all(&why);
        });
        Ok(Publisher {
            tx,
            waiting,
            inbox,
            next: Rc::default(),
        })
    }

    fn send(&self, out: BytesMut) -> Result<(), String> {
        if let Some(why) = &self.waiting.borrow().closed {
            return Err(why.clone());
        }
        self.tx
            .send(out)
            .map_err(|_| "nats publisher closed".to_owned())
    }

    /// Core publish, acknowledged once the server has routed it (the PONG of a PING sent
    /// right after it).
    pub async fn publish(&self, subject: &str, payload: &[u8]) -> Result<(), String> {
        let mut out = BytesMut::with_capacity(payload.len() + subject.len() + 32);
        pub_cmd(&mut out, subject, None, payload);
        out.extend_from_slice(b"PING\r\n");
        let (tx, rx) = oneshot::channel();
        // Registered and queued in one step: PONGs come back in the order PINGs left.
        self.waiting.borrow_mut().pongs.push_back(tx);
        self.send(out)?;
        rx.await
            .map_err(|_| "nats publisher closed".to_owned())?
            .map(|_| ())
    }

    /// Publish with a reply inbox; resolves with the reply's payload (a JetStream PubAck,
    /// or an API response).
    pub async fn request(&self, subject: &str, payload: &[u8]) -> Result<Bytes, String> {
        let k = self.next.get();
        self.next.set(k + 1);
        let reply = format!("{}.{k}", self.inbox);
        let mut out = BytesMut::with_capacity(payload.len() + subject.len() + 64);
        pub_cmd(&mut out, subject, Some(&reply), payload);
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().replies.insert(k, tx);
        if let Err(e) = self.send(out) {
            self.waiting.borrow_mut().replies.remove(&k);
            return Err(e);
        }
        rx.await.map_err(|_| "nats publisher closed".to_owned())?
    }

    /// Creates a file-backed stream `name` on `subject` (limits retention, one replica).
    pub async fn create_stream(&self, name: &str, subject: &str) -> Result<(), String> {
        let config = serde_json::json!({
            "name": name,
            "subjects": [subject],
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "num_replicas": 1,
        });
        let reply = self
            .request(
                &format!("$JS.API.STREAM.CREATE.{name}"),
                config.to_string().as_bytes(),
            )
            .await?;
        api_result(&reply).map_err(|e| format!("stream create: {e}"))?;
        Ok(())
    }

    /// Publishes to a stream; Ok once the server's PubAck says it is stored.
    pub async fn publish_acked(&self, subject: &str, payload: &[u8]) -> Result<(), String> {
        let reply = self.request(subject, payload).await?;
        let ack = api_result(&reply)?;
        if ack.get("seq").and_then(|s| s.as_u64()).is_none() {
            return Err(format!(
                "not a PubAck: {}",
                String::from_utf8_lossy(&reply[..reply.len().min(120)])
            ));
        }
        Ok(())
    }
}

/// Parser sanity check, run at start-up (a `harness = false` bench has no unit tests).
pub fn self_check() {
    let wire =
        b"INFO {\"jetstream\":true}\r\nMSG a.b 1 5\r\nhello\r\nMSG _INBOX.x.7 1 r.y 2\r\nok\r\n\
HMSG d 1 $JS.FC.s.x 36 36\r\nNATS/1.0 100 FlowControl Request\r\n\r\n\r\nPING\r\n";
    let mut all = BytesMut::from(&wire[..]);
    let mut ops = Vec::new();
    while let Some(op) = parse(&mut all).unwrap() {
        ops.push(op);
    }
    assert!(all.is_empty(), "left over: {all:?}");
    assert_eq!(ops.len(), 5);
    assert!(matches!(&ops[0], Op::Info(i) if &i[..] == b"{\"jetstream\":true}"));
    let Op::Msg(m) = &ops[1] else {
        panic!("not a MSG")
    };
    assert_eq!(
        (&m.subject[..], m.sid, &m.payload[..]),
        (&b"a.b"[..], 1, &b"hello"[..])
    );
    assert!(m.reply.is_none() && m.headers.is_none());
    let Op::Msg(m) = &ops[2] else {
        panic!("not a MSG")
    };
    assert_eq!(m.reply.as_deref(), Some(&b"r.y"[..]));
    assert_eq!(&m.payload[..], b"ok");
    let Op::Msg(m) = &ops[3] else {
        panic!("not an HMSG")
    };
    assert_eq!(m.headers.as_deref().and_then(status), Some(100));
    assert_eq!(m.reply.as_deref(), Some(&b"$JS.FC.s.x"[..]));
    assert!(m.payload.is_empty());
    assert!(matches!(ops[4], Op::Ping));
    for cut in 0..wire.len() {
        let mut part = BytesMut::from(&wire[..cut]);
        let mut n = 0;
        while parse(&mut part).unwrap().is_some() {
            n += 1;
        }
        assert!(n <= 5, "cut {cut}");
        let mut rest = part;
        rest.extend_from_slice(&wire[cut..]);
        while parse(&mut rest).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 5, "cut {cut}");
    }
    assert!(parse(&mut BytesMut::from(&b"BOGUS x\r\n"[..])).is_err());
}
