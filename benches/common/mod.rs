//! What the fanout (`benches/fanout.rs`) and load (`benches/load.rs`) harnesses share:
//! update payloads that carry their seq, frames and containers of one dynamic object
//! pre-signed from a fixture identity, the send clock that latencies are measured against,
//! nearest-rank percentiles, CPU ticks from `/proc/.../stat`, a UTC timestamp, and the
//! driver threads (publishers, writers) that set up first and start on `go`.
//!
//! Included by each harness root as `#[path = "common/mod.rs"] mod bench_common;` (the
//! name `common` is taken by `tests/common`, the fixture identities).
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hypergolix::golix::{FirstParty, Ghid, Gobd, Object, Secret, Suite, DEFAULT_LEGROOM, SIG_LEN};

// ---- payloads and pre-signed objects -------------------------------------------------------

/// `size` bytes (at least 8) whose first 8 are `seq` big-endian.
pub fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0x5a_u8; size.max(8)];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v
}

/// The seq of a [`payload`].
pub fn seq_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

/// Frames and containers signed before any run; index = seq (0 = the state before the run).
pub struct Presigned {
    pub gidc: Bytes,
    pub dynamic: Ghid,
    pub frames: Vec<Bytes>,
    pub containers: Vec<Bytes>,
}

/// Signs `count` containers of `size`-byte [`payload`]s and the `count` frames of one
/// dynamic object pointing at them, on every core. Frames after the first only need their
/// predecessor's counter and targets, so they are signed in parallel too.
pub fn presign(a: &FirstParty, size: usize, count: usize) -> Presigned {
    let secret = Secret::random();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunks = |len: usize| -> Vec<std::ops::Range<usize>> {
        let per = len.div_ceil(cores).max(1);
        (0..len)
            .step_by(per)
            .map(|s| s..(s + per).min(len))
            .collect()
    };
    let containers: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = chunks(count)
            .into_iter()
            .map(|r| {
                let secret = &secret;
                s.spawn(move || {
                    r.map(|i| {
                        a.make_container(&payload(i as u64, size), secret)
                            .expect("container")
                    })
                    .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let f0 = a.make_bind_dynamic(containers[0].ghid).expect("frame 0");
    let dynamic = f0.dynamic;
    let prev_of = |i: usize| Gobd {
        suite: Suite::ONE,
        binder: a.ghid(),
        counter: (i - 1) as u64,
        targets: (0..i)
            .rev()
            .take(DEFAULT_LEGROOM)
            .map(|k| containers[k].ghid)
            .collect(),
        dynamic,
        frame: f0.frame,
        signature: [0; SIG_LEN],
    };
    let mut frames: Vec<Gobd> = vec![f0.clone()];
    let rest: Vec<Gobd> = std::thread::scope(|s| {
        let hs: Vec<_> = chunks(count - 1)
            .into_iter()
            .map(|r| {
                let (prev_of, containers) = (&prev_of, &containers);
                s.spawn(move || {
                    r.map(|j| {
                        let i = j + 1;
                        a.make_next_frame(&prev_of(i), containers[i].ghid, DEFAULT_LEGROOM)
                            .expect("frame")
                    })
                    .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    frames.extend(rest);
    // The shortcut must build exactly the chain make_next_frame would.
    let mut prev = f0;
    for i in 1..count.min(10) {
        let f = a
            .make_next_frame(&prev, containers[i].ghid, DEFAULT_LEGROOM)
            .unwrap();
        assert_eq!(f.frame, frames[i].frame, "pre-signed frame {i} differs");
        prev = f;
    }
    for f in frames.iter().take(3) {
        Object::Gobd(f.clone())
            .verify(Some(a.second_party()))
            .expect("pre-signed frame verifies");
    }
    Presigned {
        gidc: Bytes::from(a.gidc().encode()),
        dynamic,
        frames: frames.iter().map(|f| Bytes::from(f.encode())).collect(),
        containers: containers.iter().map(|c| Bytes::from(c.encode())).collect(),
    }
}

// ---- the send clock and percentiles --------------------------------------------------------

/// When each update (seq 0..=final) was sent, in ns since the run's base instant; read by
/// every receiving thread to turn a delivery into a latency.
pub struct SendClock {
    pub base: Instant,
    /// 0 = not sent; else send time + 1 ns.
    sent: Vec<AtomicU64>,
}

impl SendClock {
    pub fn new(final_seq: u64) -> SendClock {
        SendClock {
            base: Instant::now(),
            sent: (0..=final_seq).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Records that update `seq` is being sent now.
    pub fn mark_sent(&self, seq: u64) {
        if let Some(s) = self.sent.get(seq as usize) {
            s.store(self.now_ns() + 1, Ordering::Release);
        }
    }

    pub fn sent_at(&self, seq: u64) -> Option<u64> {
        match self.sent.get(seq as usize)?.load(Ordering::Acquire) {
            0 => None,
            t => Some(t - 1),
        }
    }
}

/// The nearest-rank `q` percentile (0 < q <= 1) of `sorted` (not empty).
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> T {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

// ---- /proc -----------------------------------------------------------------------------------

/// Clock ticks per second (`_SC_CLK_TCK`).
pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (comm, utime + stime ticks) of a `/proc/.../stat` line.
pub fn parse_stat(s: &str) -> Option<(String, u64)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_owned();
    let rest: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // Fields after comm start at field 3 (state); utime is field 14, stime 15.
    let ut: u64 = rest.get(11)?.parse().ok()?;
    let st: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, ut + st))
}

// ---- reports ---------------------------------------------------------------------------------

/// UTC now as ISO-8601, without a date crate.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---- driver threads -------------------------------------------------------------------------

/// A thread with its own actix system that has finished its set-up and runs the measured
/// part once `go` is sent (dropping `go` ends it with a default report).
pub struct Driver<R> {
    pub go: tokio::sync::oneshot::Sender<()>,
    pub join: JoinHandle<R>,
}

/// Starts a driver named `name`: `setup` connects and warms up, yielding the state `run`
/// needs and a value for the caller; this waits for it (at most `timeout`). A set-up error
/// is returned here and, through `failed`, as the thread's report.
pub fn spawn_driver<S, V, R, SF, RF>(
    name: &str,
    timeout: Duration,
    setup: impl FnOnce() -> SF + Send + 'static,
    run: impl FnOnce(S) -> RF + Send + 'static,
    failed: fn(String) -> R,
) -> Result<(Driver<R>, V), String>
where
    SF: Future<Output = Result<(S, V), String>>,
    RF: Future<Output = R>,
    V: Send + 'static,
    R: Default + Send + 'static,
{
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<V, String>>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let join = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let state = match setup().await {
                    Ok((state, value)) => {
                        let _ = ready_tx.send(Ok(value));
                        state
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return failed(e);
                    }
                };
                if go_rx.await.is_err() {
                    return R::default();
                }
                run(state).await
            })
        })
        .map_err(|e| e.to_string())?;
    let value = ready_rx
        .recv_timeout(timeout)
        .map_err(|_| format!("{name}: set-up timed out"))??;
    Ok((Driver { go: go_tx, join }, value))
}

/// Publishes update `seq` to a persister: its frame and its container at once, the frame's
/// request first (the persister refuses a container nothing binds), so the latency is not
/// the sum of two acknowledgements.
pub async fn publish_update(
    c: &hypergolix::persist::client::PersisterClient,
    frames: &[Bytes],
    containers: &[Bytes],
    seq: u64,
) -> Result<(), String> {
    let i = seq as usize;
    let (a, b) = futures_util::future::join(c.publish(&frames[i]), c.publish(&containers[i])).await;
    a.map_err(|e| format!("frame {seq}: {e}"))?;
    b.map_err(|e| format!("container {seq}: {e}"))?;
    Ok(())
}

/// A publisher's connection to a persister, warmed up: the binder's GIDC, frame 0 and its
/// container published (update 0, the state before the run).
pub async fn publisher_connection(
    url: &str,
    gidc: &Bytes,
    frames: &[Bytes],
    containers: &[Bytes],
) -> Result<
    (
        hypergolix::persist::client::PersisterClient,
        hypergolix::persist::client::Notifications,
    ),
    String,
> {
    let (c, rx) = hypergolix::persist::client::PersisterClient::connect(url)
        .await
        .map_err(|e| format!("publisher: {e}"))?;
    for b in [gidc, &frames[0], &containers[0]] {
        c.publish(b)
            .await
            .map_err(|e| format!("set-up publish: {e}"))?;
    }
    Ok((c, rx))
}
