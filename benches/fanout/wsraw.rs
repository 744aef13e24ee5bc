//! A minimal persister subscriber: one TCP connection, the HTTP upgrade written by hand, one
//! masked `subscribe` request, then the server's (unmasked) frames parsed in place. It is the
//! same weight as the hand-written RESP reader of the Redis baseline, so that the persister
//! level measures the server, not a client library (`--persister-client awc` uses the
//! daemon's full `PersisterClient` instead).

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use hypergolix::golix::Ghid;
use hypergolix::persist::wire::{self, args, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Client frames must be masked; the key need not be secret here.
const MASK: [u8; 4] = [0x5a, 0x3c, 0x96, 0x0f];

/// A subscribed connection.
pub struct Subscription {
    stream: TcpStream,
    buf: BytesMut,
}

/// One server frame: opcode and payload.
type Frame = (u8, Bytes);

impl Subscription {
    pub async fn open(addr: SocketAddr, dynamic: &Ghid) -> Result<Subscription, String> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("persister connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let upgrade = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: aGd4LWZhbm91dC1iZW5jaA==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(upgrade.as_bytes())
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let mut sub = Subscription {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let head_end = loop {
            if let Some(i) = sub.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            sub.fill().await?;
        };
        let head = sub.buf.split_to(head_end);
        if !head.starts_with(b"HTTP/1.1 101") {
            return Err(format!(
                "upgrade refused: {}",
                String::from_utf8_lossy(&head)
            ));
        }
        let request = wire::encode_request(1, "subscribe", args::ByGhid { ghid: *dynamic });
        sub.send(OP_BINARY, &request).await?;
        loop {
            let (op, payload) = sub.next_frame().await?;
            if op != OP_BINARY {
                continue;
            }
            match Incoming::decode(&payload) {
                Ok(Incoming::Ok { .. }) => return Ok(sub),
                Ok(Incoming::Err { err, .. }) => return Err(format!("subscribe: {err:?}")),
                _ => {}
            }
        }
    }

    /// Calls `on_object(object)` for every notification until the connection ends.
    pub async fn run(mut self, mut on_object: impl FnMut(Bytes)) {
        loop {
            let Ok((op, payload)) = self.next_frame().await else {
                return;
            };
            match op {
                OP_BINARY => {
                    if let Ok(Incoming::Notify { object, .. }) = Incoming::decode_shared(&payload) {
                        on_object(object);
                    }
                }
                OP_PING if self.send(OP_PONG, &payload).await.is_err() => return,
                OP_CLOSE => return,
                _ => {}
            }
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("persister closed the connection".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("persister read: {e}")),
        }
    }

    /// The next complete frame (the server sends whole, unmasked messages).
    async fn next_frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some((header, len)) = frame_header(&self.buf) {
                if self.buf.len() >= header + len {
                    let op = self.buf[0] & 0x0f;
                    self.buf.advance(header);
                    return Ok((op, self.buf.split_to(len).freeze()));
                }
            }
            self.fill().await?;
        }
    }

    async fn send(&mut self, op: u8, payload: &[u8]) -> Result<(), String> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(0x80 | op);
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("persister write: {e}"))
    }
}

/// (header length, payload length) once the header is complete.
fn frame_header(b: &[u8]) -> Option<(usize, usize)> {
    let short = usize::from(*b.get(1)? & 0x7f);
    match short {
        126 => Some((
            4,
            usize::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
        )),
        127 => {
            let long = u64::from_be_bytes(b.get(2..10)?.try_into().ok()?);
            Some((10, usize::try_from(long).ok()?))
        }
        n => Some((2, n)),
    }
}
