//! What a load run counts: the send time of every update (shared by the writer and every
//! client thread), live counters the sampler reads (connections up, deliveries, errors),
//! and what each client thread records (per-connection sequence state, and every
//! delivery's receive time and latency, so latency can be reported per sample interval).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::bench_common::{percentile, SendClock};

/// Error messages kept per category (the counts are exact).
const KEEP_ERRORS: usize = 5;

/// Shared by the writer, the client threads and the sampler of one run.
pub struct Track {
    /// Send time of every update (`now_ns`, `mark_sent`, `sent_at` through `Deref`).
    pub clock: SendClock,
    /// The last update: every client must end on it.
    pub final_seq: u64,
    pub connected: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Connections that ended before the harness closed them.
    pub dropped: AtomicU64,
    /// Deliveries that could not be read or did not match what was sent.
    pub decode_errors: AtomicU64,
    /// Deliveries older than (or equal to) what the client already had.
    pub disorder: AtomicU64,
    pub delivered: AtomicU64,
    /// Clients holding the final update.
    pub done: AtomicU64,
    /// First messages per category: "connect", "dropped", "decode".
    pub errors: Mutex<Vec<(String, String)>>,
}

impl Track {
    pub fn new(final_seq: u64) -> Track {
        Track {
            clock: SendClock::new(final_seq),
            final_seq,
            connected: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            disorder: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            done: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Counts an error of `kind` and keeps its message if it is among the first few.
    pub fn error(&self, kind: &str, msg: impl FnOnce() -> String) {
        let counter = match kind {
            "connect" => &self.connect_failures,
            "dropped" => &self.dropped,
            _ => &self.decode_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut e = self.errors.lock().unwrap();
        if e.iter().filter(|(k, _)| k == kind).count() < KEEP_ERRORS {
            e.push((kind.to_owned(), msg()));
        }
    }
}

impl std::ops::Deref for Track {
    type Target = SendClock;
    fn deref(&self) -> &SendClock {
        &self.clock
    }
}

/// Sequence state of one client connection.
#[derive(Clone, Copy, Default, Debug)]
pub struct ConnState {
    pub last: u64,
    pub distinct: u64,
    pub got_final: bool,
}

/// One delivery: receive time (ms since base) and latency (µs), 8 bytes each.
#[derive(Clone, Copy)]
pub struct Sample {
    pub at_ms: u32,
    pub lat_us: u32,
}

/// What one client thread recorded.
#[derive(Default)]
pub struct ClientLog {
    pub conns: Vec<ConnState>,
    pub samples: Vec<Sample>,
}

impl ClientLog {
    /// Connection `i` (local index) received update `seq` at `now` (ns since base).
    pub fn record(&mut self, track: &Track, i: usize, seq: u64, now: u64) {
        if seq == 0 || seq > track.final_seq {
            return; // the initial state, or foreign
        }
        let c = &mut self.conns[i];
        if seq <= c.last {
            track.disorder.fetch_add(1, Ordering::Relaxed);
            return;
        }
        c.last = seq;
        c.distinct += 1;
        if let Some(t) = track.sent_at(seq) {
            self.samples.push(Sample {
                at_ms: (now / 1_000_000).min(u32::MAX as u64) as u32,
                lat_us: (now.saturating_sub(t) / 1000).min(u32::MAX as u64) as u32,
            });
        }
        track.delivered.fetch_add(1, Ordering::Relaxed);
        if seq == track.final_seq {
            c.got_final = true;
            track.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Latency percentiles, ms.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub samples: u64,
}

impl Latency {
    pub fn of(mut us: Vec<u32>) -> Latency {
        if us.is_empty() {
            return Latency::default();
        }
        us.sort_unstable();
        let pick = |q: f64| percentile(&us, q) as f64 / 1e3;
        Latency {
            p50: pick(0.50),
            p99: pick(0.99),
            p999: pick(0.999),
            max: *us.last().unwrap() as f64 / 1e3,
            samples: us.len() as u64,
        }
    }
}

/// The delivery figures of a run.
#[derive(Debug, Default, Serialize)]
pub struct Deliveries {
    /// Connections that were up when the harness closed them.
    pub connections_held: u64,
    pub deliveries: u64,
    pub latency_ms: Latency,
    /// Updates a client never saw although it got the final one (latest-wins coalescing).
    pub skipped: u64,
    /// Updates missing at clients that never reached the final state.
    pub lost: u64,
    /// Clients (connected to the end) without the final update.
    pub missing_final: u64,
}

/// Aggregates the thread logs; `held` = connections up at the end.
pub fn aggregate(track: &Track, logs: &[ClientLog], held: u64) -> Deliveries {
    let m = track.final_seq;
    let mut d = Deliveries {
        connections_held: held,
        ..Deliveries::default()
    };
    let mut lat = Vec::new();
    for log in logs {
        lat.extend(log.samples.iter().map(|s| s.lat_us));
        for c in &log.conns {
            d.deliveries += c.distinct;
            let missing = m - c.distinct.min(m);
            if c.got_final {
                d.skipped += missing;
            } else {
                d.lost += missing;
                d.missing_final += 1;
            }
        }
    }
    d.latency_ms = Latency::of(lat);
    d
}

/// Latency of the deliveries received in [from_ms, to_ms).
pub fn latency_between(logs: &[ClientLog], from_ms: u64, to_ms: u64) -> Latency {
    let lat: Vec<u32> = logs
        .iter()
        .flat_map(|l| l.samples.iter())
        .filter(|s| (from_ms..to_ms).contains(&(s.at_ms as u64)))
        .map(|s| s.lat_us)
        .collect();
    Latency::of(lat)
}
