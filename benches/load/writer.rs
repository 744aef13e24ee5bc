//! The writer's schedule: update `seq` is sent at `(seq - 1) / rate` seconds after the
//! start, each in its own task so a slow acknowledgement never delays the next update;
//! every send's acknowledgement is awaited with a timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::track::{Latency, Track};

/// Limit for one update's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// How the writer fared.
#[derive(Debug, Default, Serialize)]
pub struct WriterReport {
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Send-to-acknowledgement time.
    pub ack_ms: Latency,
    /// First send to last acknowledgement, s.
    pub secs: f64,
}

/// A writer thread, set up and waiting for `go`.
pub type Writer = crate::bench_common::Driver<WriterReport>;

/// The report of a writer whose set-up failed.
pub fn setup_failed(e: String) -> WriterReport {
    WriterReport {
        first_error: Some(e),
        ..WriterReport::default()
    }
}

/// Sends updates 1..=final_seq through `send` at `rate` per second. Runs on an actix system.
pub async fn pace<F, Fut>(rate: f64, track: Arc<Track>, send: F) -> WriterReport
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    let m = track.final_seq;
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(m as usize);
    for seq in 1..=m {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64((seq - 1) as f64 / rate)).await;
        let fut = send(seq);
        let track = track.clone();
        tasks.push(actix_rt::spawn(async move {
            track.mark_sent(seq);
            let t = track.now_ns();
            match tokio::time::timeout(ACK_TIMEOUT, fut).await {
                Ok(Ok(())) => Ok(((track.now_ns() - t) / 1000) as u32),
                Ok(Err(e)) => Err(format!("update {seq}: {e}")),
                Err(_) => Err(format!(
                    "update {seq}: no acknowledgement within {ACK_TIMEOUT:?}"
                )),
            }
        }));
    }
    let mut report = WriterReport::default();
    let mut ack = Vec::with_capacity(m as usize);
    for t in tasks {
        report.sent += 1;
        match t.await.unwrap_or_else(|e| Err(e.to_string())) {
            Ok(us) => {
                report.acked += 1;
                ack.push(us);
            }
            Err(e) => {
                report.errors += 1;
                report.first_error.get_or_insert(e);
            }
        }
    }
    report.secs = t0.elapsed().as_secs_f64();
    report.ack_ms = Latency::of(ack);
    report
}
