//! What every run shares across threads (send times, delivery counters) and what each
//! subscriber thread records (latencies, per-subscriber sequence tracking), plus the
//! figures a run boils down to.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use crate::bench_common::{percentile, SendClock};

/// Shared by the publisher, every subscriber thread and the progress bar of one run.
pub struct Shared {
    /// Send time of each update (`now_ns`, `mark_sent`, `sent_at` through `Deref`).
    pub clock: SendClock,
    /// The last update's sequence number: every subscriber must end on it.
    pub final_seq: u64,
    /// Deliveries recorded (distinct, in-order updates received and checked).
    pub delivered: AtomicU64,
    /// Subscribers that have received the final update.
    pub done: AtomicUsize,
    /// Latest delivery time, ns since `base`.
    pub last_recv: AtomicU64,
    /// Deliveries that failed decoding or verification.
    pub bad: AtomicU64,
    /// Deliveries of an update older than (or equal to) one the subscriber already had.
    pub disorder: AtomicU64,
    /// The first check failure, for the report.
    pub first_bad: std::sync::Mutex<Option<String>>,
    /// Out-of-order deliveries by (update received, update held before): tells a server
    /// reordering (the same pair at many subscribers) from a client one.
    pub disorder_pairs: std::sync::Mutex<std::collections::BTreeMap<(u64, u64), u64>>,
}

impl Shared {
    pub fn new(final_seq: u64) -> Shared {
        Shared {
            clock: SendClock::new(final_seq),
            final_seq,
            delivered: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            last_recv: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            disorder: AtomicU64::new(0),
            first_bad: std::sync::Mutex::new(None),
            disorder_pairs: std::sync::Mutex::default(),
        }
    }

    /// First send time (update 1).
    pub fn first_sent(&self) -> Option<u64> {
        self.sent_at(1)
    }
}

impl std::ops::Deref for Shared {
    type Target = SendClock;
    fn deref(&self) -> &SendClock {
        &self.clock
    }
}

/// Sequence tracking of one subscriber.
#[derive(Clone, Copy, Default, Debug)]
pub struct SubState {
    pub last: u64,
    pub distinct: u64,
    pub got_final: bool,
}

/// What one subscriber thread recorded.
#[derive(Default)]
pub struct ThreadLog {
    /// Publish-to-receive latencies, ns.
    pub lat: Vec<u64>,
    pub subs: Vec<SubState>,
    /// Connect / subscribe failures.
    pub failed: Vec<String>,
}

impl ThreadLog {
    pub fn with_subs(n: usize) -> ThreadLog {
        ThreadLog {
            lat: Vec::new(),
            subs: vec![SubState::default(); n],
            failed: Vec::new(),
        }
    }

    /// Subscriber `i` (local index) received update `seq`, checked, at `now` (ns since base).
    pub fn record(&mut self, shared: &Shared, i: usize, seq: u64, now: u64) {
        if seq == 0 || seq > shared.final_seq {
            return; // the warm-up update, or foreign
        }
        let s = &mut self.subs[i];
        if seq <= s.last {
            shared.disorder.fetch_add(1, Ordering::Relaxed);
            *shared
                .disorder_pairs
                .lock()
                .unwrap()
                .entry((seq, s.last))
                .or_default() += 1;
            return;
        }
        s.last = seq;
        s.distinct += 1;
        if let Some(t) = shared.sent_at(seq) {
            self.lat.push(now.saturating_sub(t));
        }
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        shared.last_recv.fetch_max(now, Ordering::Relaxed);
        if seq == shared.final_seq {
            s.got_final = true;
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn bad(shared: &Shared, why: impl FnOnce() -> String) {
        if shared.bad.fetch_add(1, Ordering::Relaxed) == 0 {
            let mut f = shared.first_bad.lock().unwrap();
            f.get_or_insert_with(why);
        }
    }
}

/// Latency percentiles, ms.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    pub samples: u64,
}

impl Latency {
    pub fn of(mut ns: Vec<u64>) -> Latency {
        if ns.is_empty() {
            return Latency::default();
        }
        ns.sort_unstable();
        let pick = |q: f64| percentile(&ns, q) as f64 / 1e6;
        let sum: u128 = ns.iter().map(|&x| u128::from(x)).sum();
        Latency {
            p50: pick(0.50),
            p99: pick(0.99),
            max: *ns.last().unwrap() as f64 / 1e6,
            mean: sum as f64 / ns.len() as f64 / 1e6,
            samples: ns.len() as u64,
        }
    }
}

/// The figures of one run (one system, one level, one N, one mode).
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub level: String,
    /// `persister`, `daemon`, or a baseline: `redis`, `nats`, `jetstream`.
    pub system: String,
    pub subscribers: usize,
    /// `saturated` or `paced`.
    pub mode: String,
    /// Updates the publisher sent (seq 1..=updates).
    pub updates: u64,
    /// Target rate (paced) in updates/s.
    pub target_rate: Option<f64>,
    /// Updates/s the publisher achieved until its last acknowledgement.
    pub publish_rate: f64,
    /// Signed frames that reached the persister (daemon level: pushes coalesce).
    pub frames: Option<u64>,
    pub frames_per_s: Option<f64>,
    /// Distinct updates received and checked, all subscribers.
    pub deliveries: u64,
    /// Deliveries / (last delivery − first send).
    pub deliveries_per_s: f64,
    pub span_s: f64,
    pub latency_ms: Latency,
    /// Updates a subscriber never saw although it received a later one (latest-wins).
    pub skipped: u64,
    /// Updates missing at subscribers that never received the final update.
    pub lost: u64,
    /// Subscribers without the final update at the end of the wait.
    pub missing_final: u64,
    /// Deliveries that failed decoding / verification.
    pub bad: u64,
    /// Deliveries older than what the subscriber already had (duplicates, reordering).
    pub disorder: u64,
    pub publish_errors: u64,
    /// Publisher's send-to-acknowledgement time per update.
    pub ack_latency_ms: Latency,
    /// CPU seconds by thread group (this process) and by helper process (a baseline's server,
    /// a child persister)
    /// from the publisher's start to the last delivery.
    pub cpu_s: std::collections::BTreeMap<String, f64>,
    /// 1-minute load average before and after the run (the machine may be shared).
    pub load1: (f64, f64),
    /// Daemon level: the daemons' CPU per frame against their signatures'.
    pub daemon_cpu: Option<DaemonCpu>,
    pub notes: Vec<String>,
}

/// Daemon level: CPU time (utime + stime of a daemon's threads, over the measured window)
/// per frame that reached the persister, against the CPU time of the two RSA-4096 PSS
/// signatures each frame carries (its container's and its own), measured on one thread
/// of this process in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct DaemonCpu {
    pub frames: u64,
    pub publisher_cpu_s: f64,
    pub publisher_ms_per_frame: f64,
    /// 2 × the CPU time of one signature.
    pub two_signatures_ms: f64,
    /// `publisher_ms_per_frame / two_signatures_ms` (goal: ≤ 1.25).
    pub publisher_ratio: f64,
    /// The CPU of the signatures the pool made in the window, per frame (the frames' own
    /// two signatures, timed where they ran), and `publisher_ms_per_frame` over it (`None`
    /// when no signature was timed: a build without the pool's counters).
    pub in_run_signatures_ms: f64,
    pub in_run_ratio: Option<f64>,
    /// The first receiving daemon (daemon 1), when there is one.
    pub receiver_cpu_s: Option<f64>,
    pub receiver_ms_per_frame: Option<f64>,
}

/// Aggregates the subscriber threads' logs into the delivery half of a [`RunResult`].
pub struct Deliveries {
    pub deliveries: u64,
    pub span_s: f64,
    pub latency: Latency,
    pub skipped: u64,
    pub lost: u64,
    pub missing_final: u64,
    pub failed: Vec<String>,
}

pub fn aggregate(shared: &Shared, logs: Vec<ThreadLog>) -> Deliveries {
    let m = shared.final_seq;
    let mut lat = Vec::new();
    let (mut deliveries, mut skipped, mut lost, mut missing_final) = (0, 0, 0, 0);
    let mut failed = Vec::new();
    for log in logs {
        lat.extend_from_slice(&log.lat);
        for s in &log.subs {
            deliveries += s.distinct;
            let missing = m - s.distinct.min(m);
            if s.got_final {
                skipped += missing;
            } else {
                lost += missing;
                missing_final += 1;
            }
        }
        failed.extend(log.failed);
    }
    let first = shared.first_sent().unwrap_or(0);
    let last = shared.last_recv.load(Ordering::Relaxed);
    Deliveries {
        deliveries,
        span_s: last.saturating_sub(first) as f64 / 1e9,
        latency: Latency::of(lat),
        skipped,
        lost,
        missing_final,
        failed,
    }
}
