//! Support for `tests/hostile_persister.rs`: the real `hgx-persister` binary started on
//! 127.0.0.1:0 with a chosen `server:` section (its RSS and open fds read from `/proc`), a
//! hand-made websocket peer that can send what no honest client would (raw frames, lying
//! headers, truncated data), hand-forged Golix objects (wrong signer, bad MAC), and the
//! honesty checks every attack ends with: stored objects still there byte for byte, and a
//! second honest client served (publish + subscribe + get round trip).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypergolix::golix::{
    cipher, Algo, FirstParty, Garq, Geoc, Ghid, Gobd, Gobs, Object, Policy, Secret, Suite,
    ASYM_LEN, MAC_LEN, SIG_LEN,
};
use hypergolix::persist::client::{ClientError, Notification, Notifications, PersisterClient};
use hypergolix::persist::wire::{self, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every wait on the server is bounded by this unless a test says otherwise.
pub const WAIT: Duration = Duration::from_secs(10);

// ---- the real binary -------------------------------------------------------------------

/// A running `hgx-persister` child process in its own temporary directory. Killed on drop.
pub struct Persister {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Persister {
    /// Starts the binary with `extra` appended to its `server:` section (YAML lines indented
    /// by two spaces, e.g. `"  max_frame: 65536\n"`), and waits for `listening on`.
    pub fn spawn(extra: &str) -> Persister {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hypergolix.yml");
        std::fs::write(
            &config,
            format!(
                "server:\n  host: null\n  port: 0\n  ghidcache: ./cache\n  logdir: ./logs\n  \
                 pid_file: ./persister.pid\n  verbosity: warning\n{extra}"
            ),
        )
        .unwrap();
        let (child, addr) = crate::common::spawn_persister(&config);
        Persister { child, addr, dir }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process is still running (did not crash under attack).
    pub fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the persister process died"
        );
    }

    /// Resident set of the server process, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set of the server process so far (VmHWM), KiB: catches transient
    /// allocations that are freed before [`Persister::rss_kib`] could see them.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        crate::common::status_kib(&self.pid().to_string(), field)
            .unwrap_or_else(|| panic!("{field} in the persister's /proc status"))
    }

    /// Open file descriptors of the server process (sockets included).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Waits (bounded) until the server's open fds drop to at most `max`; the last count.
    pub async fn wait_fds_at_most(&self, max: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let n = self.open_fds();
            if n <= max || Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that RSS grew by at most `slack_mib` and prints both numbers (for RELIABILITY).
pub fn assert_rss_bounded(attack: &str, before_kib: u64, after_kib: u64, slack_mib: u64) {
    eprintln!(
        "[rss] {attack}: before {before_kib} KiB, after {after_kib} KiB, delta {} KiB",
        after_kib as i64 - before_kib as i64
    );
    assert!(
        after_kib <= before_kib + slack_mib * 1024,
        "{attack}: RSS grew from {before_kib} KiB to {after_kib} KiB (bound +{slack_mib} MiB)"
    );
}

// ---- honest clients ----------------------------------------------------------------------

pub async fn connect(url: &str) -> (PersisterClient, Notifications) {
    PersisterClient::connect(url)
        .await
        .expect("an honest client connects")
}

pub async fn next(rx: &mut Notifications) -> Notification {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a notification in time")
        .expect("connection open")
}

/// The wire code of an expected error.
pub fn code_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Server { code, .. }) => code,
        Err(e) => panic!("expected a server error, got {e}"),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Asserts a publish is refused with `code`.
pub async fn refused(c: &PersisterClient, bytes: &[u8], code: &str) {
    assert_eq!(code_of(c.publish(bytes).await), code);
}

/// Honest objects published before an attack, to check that nothing stored is lost.
pub struct Baseline {
    /// (what, address to `get`, exact bytes `get` must return), in the order of
    /// [`publish_baseline`]'s doc.
    pub items: Vec<(&'static str, Ghid, Bytes)>,
}

/// Publishes, in this order: 0 A's and 1 B's identities, 2 a GOBS and 3 its GEOC by A, 4 a
/// dynamic object of A at its second frame and 5 that frame's GEOC, 6 a handshake from A to B.
pub async fn publish_baseline(c: &PersisterClient, a: &FirstParty, b: &FirstParty) -> Baseline {
    let mut items = Vec::new();
    for (what, who) in [("gidc A", a), ("gidc B", b)] {
        let g = who.gidc().encode();
        c.publish(&g).await.unwrap();
        items.push((what, who.ghid(), Bytes::from(g)));
    }
    let secret = Secret::random();
    let geoc = a.make_container(b"baseline static", &secret).unwrap();
    let gobs = a.make_bind_static(geoc.ghid).unwrap();
    c.publish(&gobs.encode()).await.unwrap();
    c.publish(&geoc.encode()).await.unwrap();
    items.push(("static GOBS", gobs.ghid, Bytes::from(gobs.encode())));
    items.push(("static GEOC", geoc.ghid, Bytes::from(geoc.encode())));
    let c0 = a.make_container(b"baseline dyn 0", &secret).unwrap();
    let f0 = a.make_bind_dynamic(c0.ghid).unwrap();
    let c1 = a.make_container(b"baseline dyn 1", &secret).unwrap();
    let f1 = a
        .make_next_frame(&f0, c1.ghid, hypergolix::golix::DEFAULT_LEGROOM)
        .unwrap();
    for o in [f0.encode(), c0.encode(), f1.encode(), c1.encode()] {
        c.publish(&o).await.unwrap();
    }
    items.push((
        "dynamic (current frame)",
        f1.dynamic,
        Bytes::from(f1.encode()),
    ));
    items.push(("dynamic GEOC", c1.ghid, Bytes::from(c1.encode())));
    let garq = a
        .make_handshake(b.second_party(), c1.ghid, &secret)
        .unwrap();
    c.publish(&garq.encode()).await.unwrap();
    items.push(("GARQ A->B", garq.ghid, Bytes::from(garq.encode())));
    Baseline { items }
}

/// Every baseline object still `get`s byte for byte (on a fresh connection) and decodes.
pub async fn verify_baseline(url: &str, base: &Baseline) {
    let (c, _rx) = connect(url).await;
    for (what, ghid, bytes) in &base.items {
        let got = c
            .get(ghid)
            .await
            .unwrap_or_else(|e| panic!("{what} lost after the attack: {e}"));
        assert_eq!(&got, bytes, "{what} changed after the attack");
        Object::decode(&got, Policy::STRICT).expect("still valid Golix");
    }
}

/// A second honest client is served: X subscribes to a fresh dynamic object of `a`, Y
/// publishes its first frame and container, X is notified and reads the container back.
pub async fn honest_round_trip(url: &str, a: &FirstParty) {
    let t = Instant::now();
    let (x, mut x_rx) = connect(url).await;
    let (y, _y_rx) = connect(url).await;
    let secret = Secret::random();
    let c = a
        .make_container(format!("honest {:?}", Instant::now()).as_bytes(), &secret)
        .unwrap();
    let f = a.make_bind_dynamic(c.ghid).unwrap();
    x.subscribe(&f.dynamic).await.unwrap();
    assert!(y.publish(&f.encode()).await.unwrap().new);
    assert!(y.publish(&c.encode()).await.unwrap().new);
    let n = next(&mut x_rx).await;
    assert_eq!(
        (n.subscription, n.object),
        (f.dynamic, Bytes::from(f.encode()))
    );
    assert_eq!(x.get(&c.ghid).await.unwrap(), Bytes::from(c.encode()));
    x.disconnect().await.unwrap();
    y.disconnect().await.unwrap();
    eprintln!("[honest] round trip in {:?}", t.elapsed());
}

// ---- forged objects ----------------------------------------------------------------------

/// A PSS signature of `digest` with `who`'s signature key (what a holder of that key can make
/// for any content, whatever binder the content names).
pub fn sign_as(who: &FirstParty, digest: &[u8; 64]) -> [u8; SIG_LEN] {
    let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(&who.export().signature_pkcs8).unwrap();
    cipher::sign_digest(&kp, digest).unwrap()
}

/// A GOBS naming `binder` but signed by `signer`.
pub fn gobs_signed_by(binder: &FirstParty, signer: &FirstParty, target: Ghid) -> Gobs {
    let mut b = binder.make_bind_static(target).unwrap();
    b.signature = sign_as(signer, b.ghid.digest());
    b
}

/// Frame 0 of a new dynamic object naming `binder` but signed by `signer`.
pub fn frame0_signed_by(binder: &FirstParty, signer: &FirstParty, target: Ghid) -> Gobd {
    let mut f = binder.make_bind_dynamic(target).unwrap();
    f.signature = sign_as(signer, f.frame.digest());
    f
}

/// The frame after `previous` (any binder's), naming `binder` and signed by `signer`.
pub fn next_frame_by(previous: &Gobd, binder: Ghid, signer: &FirstParty, target: Ghid) -> Gobd {
    let mut f = previous.clone();
    f.binder = binder;
    f.counter = previous.counter + 1;
    f.targets = vec![target, previous.targets[0]];
    f.frame = f.computed_address();
    f.signature = sign_as(signer, f.frame.digest());
    f
}

/// A GARQ to `recipient` that nobody can have written: filler payload (`n` makes it unique),
/// garbage MAC. The persister cannot tell (the author is hidden); only the recipient can.
pub fn junk_garq(recipient: Ghid, n: u64) -> Garq {
    let mut payload = [0x5au8; ASYM_LEN];
    payload[..8].copy_from_slice(&n.to_be_bytes());
    let mut g = Garq {
        suite: Suite::ONE,
        recipient,
        payload,
        ghid: Ghid::new(Algo::SHA512, [0; 64]),
        mac: [0xa5; MAC_LEN],
    };
    g.ghid = g.computed_address();
    g
}

/// A fresh container of `who` (random secret).
pub fn container(who: &FirstParty, text: &str) -> Geoc {
    who.make_container(text.as_bytes(), &Secret::random())
        .unwrap()
}

/// Publishes a static object of `len` bytes of `fill` from `who` (binding first, then the
/// container) and returns the container: something large for a reader to ask for.
pub async fn publish_large(c: &PersisterClient, who: &FirstParty, len: usize, fill: u8) -> Geoc {
    let big = who
        .make_container(&vec![fill; len], &Secret::random())
        .unwrap();
    c.publish(&who.make_bind_static(big.ghid).unwrap().encode())
        .await
        .unwrap();
    c.publish(&Object::Geoc(big.clone()).encode())
        .await
        .unwrap();
    big
}

/// `bytes` with the low bit of byte `at` flipped (negative: counted from the end).
pub fn flipped(bytes: &[u8], at: isize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    let i = if at < 0 {
        v.len() - at.unsigned_abs()
    } else {
        at as usize
    };
    v[i] ^= 0x01;
    v
}

// ---- a raw websocket peer ----------------------------------------------------------------

/// A websocket peer on a plain TCP socket with a hand-made upgrade: sends any bytes at all
/// and parses the server's frames itself.
pub struct RawWs {
    pub s: TcpStream,
    buf: Vec<u8>,
}

/// One server frame, as seen on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum WsIn {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Ping,
    Pong,
    Close(Option<u16>),
    /// The server closed (EOF or reset).
    Eof,
    /// Nothing within the wait.
    Silent,
}

/// A masked client frame header (zero mask key: the payload goes as is).
pub fn ws_header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    let mut h = vec![(if fin { 0x80 } else { 0 }) | opcode];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= 0xffff {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// A whole masked client frame.
pub fn ws_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = ws_header(opcode, fin, payload.len() as u64);
    f.extend_from_slice(payload);
    f
}

impl RawWs {
    /// Connects and upgrades; `rcvbuf` shrinks the socket's receive buffer (a peer that
    /// wants the server's writes to back up quickly).
    pub async fn connect_with(addr: SocketAddr, rcvbuf: Option<u32>) -> RawWs {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(n) = rcvbuf {
            sock.set_recv_buffer_size(n).unwrap();
        }
        let mut s = tokio::time::timeout(WAIT, sock.connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert!(head.len() < 4096, "handshake response too long");
            tokio::time::timeout(WAIT, s.read_exact(&mut byte))
                .await
                .expect("handshake answer in time")
                .expect("handshake answer");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawWs { s, buf: Vec::new() }
    }

    pub async fn connect(addr: SocketAddr) -> RawWs {
        RawWs::connect_with(addr, None).await
    }

    /// Writes raw bytes; false if the server already closed (or did not read in time).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(WAIT, self.s.write_all(bytes)).await,
            Ok(Ok(()))
        )
    }

    /// One binary message.
    pub async fn send_binary(&mut self, payload: &[u8]) -> bool {
        self.send_raw(&ws_frame(2, true, payload)).await
    }

    pub async fn request<A: serde::Serialize>(&mut self, id: u64, op: &str, args: A) -> bool {
        self.send_binary(&wire::encode_request(id, op, args)).await
    }

    /// The next server frame (or EOF / silence within `within`).
    pub async fn recv(&mut self, within: Duration) -> WsIn {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.parse() {
                return frame;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Err(_) => return WsIn::Silent,
                Ok(Ok(0)) | Ok(Err(_)) => return WsIn::Eof,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn parse(&mut self) -> Option<WsIn> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
            126 | 127 => return None,
            n => (u64::from(n), 2),
        };
        let end = at + len as usize;
        if b.len() < end {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let payload = b[at..end].to_vec();
        self.buf.drain(..end);
        Some(match opcode {
            1 => WsIn::Text(payload),
            2 => WsIn::Binary(payload),
            8 => WsIn::Close(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
            9 => WsIn::Ping,
            10 => WsIn::Pong,
            other => panic!("unexpected opcode {other}"),
        })
    }

    /// The next decoded server message, skipping pings/pongs; panics on anything else.
    pub async fn reply(&mut self) -> Incoming {
        loop {
            match self.recv(WAIT).await {
                WsIn::Binary(b) => return Incoming::decode(&b).expect("a server message"),
                WsIn::Ping | WsIn::Pong => continue,
                other => panic!("expected a reply, got {other:?}"),
            }
        }
    }

    /// The error code of the next reply.
    pub async fn err_code(&mut self) -> String {
        match self.reply().await {
            Incoming::Err { err, .. } => err.code,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    /// Pings through the protocol: the session is alive and in sync.
    pub async fn assert_alive(&mut self, id: u64) {
        assert!(self.request(id, "ping", ()).await, "send ping");
        match self.reply().await {
            Incoming::Ok { id: got, .. } => assert_eq!(got, rmpv::Value::from(id)),
            other => panic!("expected the ping reply, got {other:?}"),
        }
    }

    /// Reads until the server's close frame and EOF (skipping data); the close code, if any.
    /// Panics if the server keeps the connection open past `within`.
    pub async fn closed_by_server(&mut self, within: Duration) -> Option<u16> {
        let deadline = Instant::now() + within;
        let mut code = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                WsIn::Close(c) => code = code.or(c),
                WsIn::Eof => return code,
                WsIn::Silent => panic!("the server kept the connection open for {within:?}"),
                _ => {}
            }
        }
    }
}
