//! The publisher's schedule, shared by every system: saturated (as fast as the system
//! acknowledges, `window` updates in flight) or paced (one update every 1/rate s, each in its
//! own task so a slow acknowledgement never delays the schedule).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::stats::Shared;

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Saturated { updates: u64 },
    Paced { rate: f64, updates: u64 },
}

impl Mode {
    pub fn updates(self) -> u64 {
        match self {
            Mode::Saturated { updates } | Mode::Paced { updates, .. } => updates,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Saturated { .. } => "saturated",
            Mode::Paced { .. } => "paced",
        }
    }

    pub fn rate(self) -> Option<f64> {
        match self {
            Mode::Paced { rate, .. } => Some(rate),
            Mode::Saturated { .. } => None,
        }
    }
}

/// How the publisher fared.
#[derive(Clone, Debug, Default)]
pub struct PubReport {
    pub sent: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// First send to last acknowledgement.
    pub secs: f64,
    /// Extra figures (daemon level: frames that reached the persister and when).
    pub extra: Vec<(String, f64)>,
    /// Send-to-acknowledgement time of each update, ns.
    pub ack_ns: Vec<u64>,
}

/// Sends updates 1..=M through `send(seq)` on the schedule of `mode`. Must run on an actix
/// system (paced sends are spawned local tasks). `send` is called in seq order and its
/// future is first polled in that order, so requests leave in order.
pub async fn drive<F, Fut>(mode: Mode, window: usize, shared: Arc<Shared>, send: F) -> PubReport
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    let m = mode.updates();
    let mut report = PubReport::default();
    let note = |r: Result<u64, String>, report: &mut PubReport| {
        report.sent += 1;
        if let Ok(ns) = r {
            report.ack_ns.push(ns);
        }
        if let Err(e) = r {
            report.errors += 1;
            report.first_error.get_or_insert(e);
        }
    };
    let start = shared.now_ns();
    match mode {
        Mode::Saturated { .. } => {
            let results: Vec<_> = futures_util::stream::iter(1..=m)
                .map(|seq| {
                    let shared = shared.clone();
                    let fut = send(seq);
                    async move {
                        shared.mark_sent(seq);
                        let t = shared.now_ns();
                        fut.await.map(|()| shared.now_ns() - t)
                    }
                })
                .buffered(window.max(1))
                .collect()
                .await;
            for r in results {
                note(r, &mut report);
            }
        }
        Mode::Paced { rate, .. } => {
            let t0 = tokio::time::Instant::now();
            let mut tasks = Vec::with_capacity(m as usize);
            for seq in 1..=m {
                let at = t0 + Duration::from_secs_f64((seq - 1) as f64 / rate);
                tokio::time::sleep_until(at).await;
                let shared = shared.clone();
                let fut = send(seq);
                tasks.push(actix_rt::spawn(async move {
                    shared.mark_sent(seq);
                    let t = shared.now_ns();
                    fut.await.map(|()| shared.now_ns() - t)
                }));
            }
            for t in tasks {
                note(t.await.unwrap_or_else(|e| Err(e.to_string())), &mut report);
            }
        }
    }
    report.secs = (shared.now_ns() - shared.first_sent().unwrap_or(start)) as f64 / 1e9;
    report
}
