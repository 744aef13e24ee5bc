//! Helpers of the hostile-app and access-control tests: a websocket client written by hand
//! over a plain tokio `TcpStream`, so a test can do what no well-behaved client library
//! lets it do (fragment a message, send the HTTP upgrade byte by byte, shrink its receive
//! buffer and then never read), plus msgpack request builders and the process's RSS.
//! Every read is bounded by a timeout.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Websocket opcodes (RFC 6455 §5.2).
pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BIN: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;

/// The HTTP upgrade request for `/` on `addr`, with an optional `Origin`.
pub fn upgrade_request(addr: SocketAddr, origin: Option<&str>) -> Vec<u8> {
    let mut req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(o) = origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// What [`RawWs::recv`] saw.
#[derive(Debug, PartialEq)]
pub enum Got {
    /// A binary message, decoded.
    Msg(Value),
    /// A close frame, the end of the stream or a reset.
    Closed,
    /// Nothing within the wait.
    Nothing,
}

/// A websocket connection driven frame by frame.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The status code of the daemon's close frame, once one arrived.
    pub close_code: Option<u16>,
}

impl RawWs {
    /// A TCP connection (receive buffer of `rcvbuf` bytes if given), not yet upgraded.
    pub async fn tcp(addr: SocketAddr, rcvbuf: Option<u32>) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(n) = rcvbuf {
            // Before connecting, so the window the peer sees is small from the start.
            socket.set_recv_buffer_size(n).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
            .await
            .expect("connect in time")
            .expect("connect")
    }

    /// Connects and upgrades; `Err(status line)` when the server refuses the upgrade.
    pub async fn open(
        addr: SocketAddr,
        origin: Option<&str>,
        rcvbuf: Option<u32>,
    ) -> Result<RawWs, String> {
        let mut stream = Self::tcp(addr, rcvbuf).await;
        stream
            .write_all(&upgrade_request(addr, origin))
            .await
            .unwrap();
        let mut buf = Vec::new();
        let head_end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return at + 4;
                }
                let mut chunk = [0u8; 1024];
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                assert!(n > 0, "closed during the upgrade");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("upgrade response in time");
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status = head.lines().next().unwrap_or_default().to_owned();
        if !status.contains(" 101 ") {
            return Err(status);
        }
        buf.drain(..head_end);
        Ok(RawWs {
            stream,
            buf,
            close_code: None,
        })
    }

    /// Opens and says `hello` with the 32 raw token bytes; returns the reply.
    pub async fn hello(addr: SocketAddr, token: &[u8], rcvbuf: Option<u32>) -> (RawWs, Value) {
        let mut ws = Self::open(addr, None, rcvbuf).await.expect("upgrade");
        ws.send(&request(0, "hello", map(vec![("token", bin(token))])))
            .await;
        let reply = ws.msg().await;
        assert!(get(&reply, "ok").is_map(), "hello failed: {reply}");
        (ws, reply)
    }

    /// One frame (masked with a zero key, as a client must mask).
    pub async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mut head = vec![(u8::from(fin) << 7) | opcode];
        let n = payload.len();
        if n < 126 {
            head.push(0x80 | n as u8);
        } else if n <= 0xffff {
            head.push(0x80 | 126);
            head.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            head.push(0x80 | 127);
            head.extend_from_slice(&(n as u64).to_be_bytes());
        }
        head.extend_from_slice(&[0; 4]);
        // The server may close while we are still writing (too large): not our failure.
        let _ = self.stream.write_all(&head).await;
        let _ = self.stream.write_all(payload).await;
    }

    /// One whole binary message.
    pub async fn send(&mut self, msg: &[u8]) {
        self.frame(true, OP_BIN, msg).await;
    }

    /// The next binary message, close, or nothing within `within` (pings are skipped).
    pub async fn recv(&mut self, within: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some((fin, opcode, payload)) = self.parse() {
                assert!(fin, "the daemon does not fragment");
                match opcode {
                    OP_BIN => {
                        return Got::Msg(
                            rmpv::decode::read_value(&mut &payload[..]).expect("msgpack"),
                        )
                    }
                    OP_CLOSE => {
                        self.close_code =
                            payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                        return Got::Closed;
                    }
                    _ => continue,
                }
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Got::Nothing,
                Ok(Ok(0)) | Ok(Err(_)) => return Got::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next message (fails on a close or after 10 s).
    pub async fn msg(&mut self) -> Value {
        match self.recv(Duration::from_secs(10)).await {
            Got::Msg(v) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Messages until the daemon closes (fails if it does not within 10 s).
    pub async fn until_closed(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            match self.recv(Duration::from_secs(10)).await {
                Got::Msg(v) => seen.push(v),
                Got::Closed => return seen,
                Got::Nothing => panic!("not closed within 10 s; saw {seen:?}"),
            }
        }
    }

    /// Splits one unmasked server frame off the buffer, if a whole one is there.
    fn parse(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (fin, opcode) = (b[0] & 0x80 != 0, b[0] & 0x0f);
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
            126 | 127 => return None,
            n => (u64::from(n), 2),
        };
        let end = at + usize::try_from(len).ok()?;
        if b.len() < end {
            return None;
        }
        let payload = b[at..end].to_vec();
        self.buf.drain(..end);
        Some((fin, opcode, payload))
    }
}

/// Whether the server closed `stream` (EOF or reset) within `within`; bytes it sent before
/// (an HTTP error response) are ignored.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

// ---- msgpack -----------------------------------------------------------------------------

#[path = "../msgpack_support/mod.rs"]
mod msgpack;
#[allow(unused_imports)] // each test uses its own share of them
pub use msgpack::{bin, encode, err_code, get, map, request};

/// This process's resident set size in KiB (Linux), for coarse "did it allocate a lot".
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
