//! # Websocket frames, server to client (RFC 6455 §5.2)
//!
//! A server never masks its frames, so one encoded frame is valid on every connection: the
//! hub frames a notification once and every subscriber's socket gets the same bytes, and the
//! session writes its outbox straight into the HTTP response body without a per-message
//! encoder.
//!
//! Owns: frame headers for the opcodes the server sends. Calls: nothing of ours.

use bytes::{BufMut, Bytes, BytesMut};

const FIN: u8 = 0x80;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
/// Control frames carry at most this many payload bytes.
const MAX_CONTROL: usize = 125;

/// A complete binary message.
pub fn binary(payload: &[u8]) -> Bytes {
    frame(BINARY, payload)
}

pub fn ping(payload: &[u8]) -> Bytes {
    frame(PING, &payload[..payload.len().min(MAX_CONTROL)])
}

/// Answers a ping with its payload (cut to the control-frame limit).
pub fn pong(payload: &[u8]) -> Bytes {
    frame(PONG, &payload[..payload.len().min(MAX_CONTROL)])
}

/// A close frame: status code, then a short UTF-8 reason.
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut body = Vec::with_capacity(2 + reason.len());
    body.extend_from_slice(&code.to_be_bytes());
    body.extend_from_slice(reason.as_bytes());
    body.truncate(MAX_CONTROL);
    frame(CLOSE, &body)
}

/// Header bytes kept free in front of a message built by [`binary_with`] (the longest header).
const MAX_HEADER: usize = 10;

/// A complete binary message whose payload `write` appends to the buffer it is given: the
/// payload is written once, in place, instead of being built and then copied behind a header
/// (a `get` reply can be 16 MiB).
pub fn binary_with(write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = vec![0u8; MAX_HEADER];
    write(&mut buf);
    let len = buf.len() - MAX_HEADER;
    let mut head = Vec::with_capacity(MAX_HEADER);
    put_header(&mut head, BINARY, len);
    let start = MAX_HEADER - head.len();
    buf[start..MAX_HEADER].copy_from_slice(&head);
    Bytes::from(buf).slice(start..)
}

fn put_header(out: &mut impl BufMut, opcode: u8, len: usize) {
    out.put_u8(FIN | opcode);
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(short);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = BytesMut::with_capacity(len + MAX_HEADER);
    put_header(&mut out, opcode, len);
    out.extend_from_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        assert_eq!(&binary(b"hi")[..], b"\x82\x02hi");
        let mid = binary(&[7; 300]);
        assert_eq!(&mid[..4], &[0x82, 126, 0x01, 0x2c]);
        assert_eq!(mid.len(), 304);
        let big = binary(&vec![1; 70_000]);
        assert_eq!(&big[..10], &[0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
        assert_eq!(big.len(), 70_010);
    }

    #[test]
    fn built_in_place_equals_copied() {
        for n in [0usize, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let built = binary_with(|b| b.extend_from_slice(&payload));
            assert_eq!(built, binary(&payload), "{n} bytes");
        }
    }

    #[test]
    fn control_frames() {
        assert_eq!(&ping(b"")[..], b"\x89\x00");
        assert_eq!(&pong(b"abc")[..], b"\x8a\x03abc");
        assert_eq!(pong(&[0; 200]).len(), 2 + 125);
        assert_eq!(&close(1000, "bye")[..], b"\x88\x05\x03\xe8bye");
    }
}
