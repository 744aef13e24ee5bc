//! How a server ends a TCP connection, seen from a raw socket: after its websocket close
//! frame, does the FIN (EOF) come, how soon, or a reset, or nothing. Used by
//! `tests/socket_close.rs` against the real `hgx-persister` and `hgxd`. Every wait is
//! bounded.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEnd {
    /// An orderly close (EOF after the server's FIN).
    Fin,
    /// A reset (or another read error).
    Reset,
    /// Still open when the wait ran out.
    Open,
}

/// Reads (and drops) whatever the server still sends until it ends the connection or
/// `within` passes; how it ended and when, counted from the call.
pub async fn tcp_end(stream: &mut TcpStream, within: Duration) -> (TcpEnd, Duration) {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (TcpEnd::Open, start.elapsed()),
            Ok(Ok(0)) => return (TcpEnd::Fin, start.elapsed()),
            Ok(Err(_)) => return (TcpEnd::Reset, start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// A client close frame (masked with a zero key) with `code`.
pub fn close_frame(code: u16) -> Vec<u8> {
    let mut f = vec![0x88, 0x80 | 2, 0, 0, 0, 0];
    f.extend_from_slice(&code.to_be_bytes());
    f
}

/// Asserts an orderly close within `bound` and prints the time (for RELIABILITY).
pub fn assert_fin_within(what: &str, end: (TcpEnd, Duration), bound: Duration) {
    eprintln!("[fin] {what}: {:?} after {:?}", end.0, end.1);
    assert_eq!(
        end.0,
        TcpEnd::Fin,
        "{what}: expected a FIN, got {:?}",
        end.0
    );
    assert!(
        end.1 <= bound,
        "{what}: FIN after {:?} (bound {bound:?})",
        end.1
    );
}
