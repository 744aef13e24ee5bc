//! The Redis baseline: a `redis-server` started on 127.0.0.1 on a free port (pub/sub, no
//! persistence), a tiny hand-written RESP2 reader/writer over tokio TCP (no client crate),
//! one connection per subscriber and one pipelined publisher connection.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Printed when `redis-server` cannot be run.
pub const MISSING: &str = "redis-server was not found on PATH. The Redis baseline needs it: \
install it with `apt-get install redis-server` (Debian/Ubuntu; `dnf install redis` on Fedora, \
`brew install redis` on macOS), or run without `--baseline redis`.";

/// `redis-server --version`, or the reason it cannot run.
pub fn version() -> Result<String, String> {
    match Command::new("redis-server").arg("--version").output() {
        Ok(o) => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(MISSING.to_owned()),
        Err(e) => Err(format!("cannot run redis-server: {e}")),
    }
}

/// A `redis-server` child process; killed (by its pid) when dropped.
pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
}

impl RedisServer {
    pub fn start() -> Result<RedisServer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--maxclients", "20000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    MISSING.to_owned()
                } else {
                    format!("cannot start redis-server: {e}")
                }
            })?;
        let mut server = RedisServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(server.addr).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(st)) = server.child.try_wait() {
                return Err(format!("redis-server exited at start: {st}"));
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Blocking PING (start-up probe).
fn ping(addr: SocketAddr) -> io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut b = [0u8; 7];
    s.read_exact(&mut b)?;
    if &b == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(io::Error::other("unexpected reply"))
    }
}

/// One RESP2 value; bulk and simple strings are ranges into the parsed buffer.
#[derive(Debug)]
pub enum Val {
    Simple(Range<usize>),
    Error(Range<usize>),
    Int(i64),
    Bulk(Option<Range<usize>>),
    Array(Option<Vec<Val>>),
}

/// A command as RESP (array of bulk strings).
pub fn command(args: &[&[u8]]) -> BytesMut {
    let mut out = BytesMut::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn line(b: &[u8], pos: usize) -> Option<(Range<usize>, usize)> {
    let rest = b.get(pos..)?;
    let i = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((pos..pos + i, pos + i + 2))
}

fn int(b: &[u8], r: Range<usize>) -> Result<i64, String> {
    std::str::from_utf8(&b[r])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "bad RESP integer".to_owned())
}

/// Parses one value at `pos`: `Ok(None)` if the buffer holds only part of it.
pub fn parse(b: &[u8], pos: usize) -> Result<Option<(Val, usize)>, String> {
    let Some(&tag) = b.get(pos) else {
        return Ok(None);
    };
    let Some((head, next)) = line(b, pos + 1) else {
        return Ok(None);
    };
    Ok(Some(match tag {
        b'+' => (Val::Simple(head), next),
        b'-' => (Val::Error(head), next),
        b':' => (Val::Int(int(b, head)?), next),
        b'$' => {
            let len = int(b, head)?;
            if len < 0 {
                (Val::Bulk(None), next)
            } else {
                let end = next + len as usize;
                if b.len() < end + 2 {
                    return Ok(None);
                }
                (Val::Bulk(Some(next..end)), end + 2)
            }
        }
        b'*' => {
            let len = int(b, head)?;
            if len < 0 {
                (Val::Array(None), next)
            } else {
                let mut items = Vec::with_capacity(len as usize);
                let mut at = next;
                for _ in 0..len {
                    match parse(b, at)? {
                        Some((v, n)) => {
                            items.push(v);
                            at = n;
                        }
                        None => return Ok(None),
                    }
                }
                (Val::Array(Some(items)), at)
            }
        }
        other => return Err(format!("bad RESP type byte {other:#04x}")),
    }))
}

fn bulk<'a>(b: &'a [u8], v: &Val) -> Option<&'a [u8]> {
    match v {
        Val::Bulk(Some(r)) | Val::Simple(r) => Some(&b[r.clone()]),
        _ => None,
    }
}

/// A subscribed connection: SUBSCRIBE sent and confirmed.
pub struct Subscription {
    stream: TcpStream,
    buf: BytesMut,
}

impl Subscription {
    pub async fn open(addr: SocketAddr, channel: &[u8]) -> Result<Subscription, String> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("redis connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(&command(&[b"SUBSCRIBE", channel]))
            .await
            .map_err(|e| format!("redis subscribe: {e}"))?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            if let Some((v, used)) = parse(&buf, 0)? {
                let ok = match &v {
                    Val::Array(Some(items)) => {
                        items.first().and_then(|k| bulk(&buf, k)) == Some(&b"subscribe"[..])
                    }
                    _ => false,
                };
                if !ok {
                    return Err(format!("unexpected SUBSCRIBE reply {v:?}"));
                }
                let _ = buf.split_to(used);
                return Ok(Subscription { stream, buf });
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("redis read: {e}"))?;
            if n == 0 {
                return Err("redis closed during SUBSCRIBE".into());
            }
        }
    }

    /// Calls `on_message(payload)` for every pub/sub message until the connection ends.
    pub async fn run(mut self, mut on_message: impl FnMut(Bytes)) {
        loop {
            loop {
                match parse(&self.buf, 0) {
                    Ok(Some((v, used))) => {
                        let frame = self.buf.split_to(used).freeze();
                        if let Val::Array(Some(items)) = v {
                            if items.len() == 3 && bulk(&frame, &items[0]) == Some(&b"message"[..])
                            {
                                if let Val::Bulk(Some(r)) = &items[2] {
                                    on_message(frame.slice(r.clone()));
                                }
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

type Waiters = Rc<RefCell<VecDeque<oneshot::Sender<Result<i64, String>>>>>;

/// A pipelined publisher on one connection (must live on one actix/tokio local thread):
/// any number of PUBLISH in flight, replies matched in order.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<(BytesMut, oneshot::Sender<Result<i64, String>>)>,
}

impl Publisher {
    pub async fn connect(addr: SocketAddr) -> Result<Publisher, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("redis connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) =
            mpsc::unbounded_channel::<(BytesMut, oneshot::Sender<Result<i64, String>>)>();
        let waiters: Waiters = Rc::default();
        let w2 = waiters.clone();
        actix_rt::spawn(async move {
            let mut out = BytesMut::new();
            while let Some((cmd, reply)) = rx.recv().await {
                w2.borrow_mut().push_back(reply);
                out.extend_from_slice(&cmd);
                while let Ok((cmd, reply)) = rx.try_recv() {
                    w2.borrow_mut().push_back(reply);
                    out.extend_from_slice(&cmd);
                }
                if wr.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
        });
        actix_rt::spawn(async move {
            let mut buf = BytesMut::with_capacity(4096);
            loop {
                loop {
                    match parse(&buf, 0) {
                        Ok(Some((v, used))) => {
                            let r = match v {
                                Val::Int(n) => Ok(n),
                                Val::Error(r) => {
                                    Err(format!("redis: {}", String::from_utf8_lossy(&buf[r])))
                                }
                                other => Err(format!("unexpected reply {other:?}")),
                            };
                            let _ = buf.split_to(used);
                            if let Some(w) = waiters.borrow_mut().pop_front() {
                                let _ = w.send(r);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => {
                        for w in waiters.borrow_mut().drain(..) {
                            let _ = w.send(Err("redis connection closed".into()));
                        }
                        return;
                    }
                    Ok(_) => {}
                }
            }
        });
        Ok(Publisher { tx })
    }

    /// PUBLISH; resolves with the number of subscribers that received it.
    pub async fn publish(&self, channel: &[u8], message: &[u8]) -> Result<i64, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((command(&[b"PUBLISH", channel, message]), tx))
            .map_err(|_| "redis publisher closed".to_owned())?;
        rx.await.map_err(|_| "redis publisher closed".to_owned())?
    }
}

/// Parser sanity check, run at start-up (a `harness = false` bench has no unit tests).
pub fn self_check() {
    let msg = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n";
    let (v, used) = parse(msg, 0).unwrap().unwrap();
    assert_eq!(used, msg.len());
    let Val::Array(Some(items)) = v else {
        panic!("not an array")
    };
    assert_eq!(bulk(msg, &items[2]), Some(&b"hello"[..]));
    for cut in 0..msg.len() {
        assert!(parse(&msg[..cut], 0).unwrap().is_none(), "cut {cut}");
    }
    assert!(matches!(
        parse(b":12\r\n", 0).unwrap().unwrap().0,
        Val::Int(12)
    ));
}
