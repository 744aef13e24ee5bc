//! # Object fanout benchmark harness
//!
//! One publisher, N subscribers of one dynamic object, at two levels, each side by side with
//! the identical workload on Redis pub/sub, core NATS and NATS JetStream (`--baseline
//! redis,nats,jetstream`; BENCHMARKS.md, "Object fanout"):
//!
//! - `persister`: pre-signed GOBD frames (+ their GEOC containers) published to a real
//!   persister; N websocket subscribers ([`PersisterClient`]) decode and verify each
//!   notification against the binder's public key like a daemon would. The baselines carry
//!   the same signed frame bytes to N TCP subscribers that check them the same way.
//! - `daemon`: the full path. One app pushes through `hgxd` (which signs a container and a
//!   frame per commit and publishes them to the persister); N apps, on further daemons of the
//!   same account, receive `update` events. The baselines carry the plain payload.
//!
//! Baselines ([`baseline`]): each server is started by the harness on a free 127.0.0.1 port
//! and stopped at the end. Redis: PUBLISH, acknowledged by its reply. Core NATS: PUB,
//! acknowledged by the PONG of a PING sent after it. JetStream: publish to a file-backed
//! stream, acknowledged by its PubAck (stored), subscribers on ordered push consumers. Each
//! publisher keeps the same `--window` of updates in flight as the persister's.
//!
//! Figures: deliveries/s (saturated: as fast as acknowledged), publish-to-receive latency
//! p50/p99/max (paced: `--rate` for `--seconds`), skipped (superseded under latest-wins,
//! final update received) vs lost (the subscriber never got the final update). The raw
//! aws-lc-rs RSA-4096 PSS-SHA512 sign and verify rates are measured in the same run.
//!
//! ```text
//! cargo bench --bench fanout -- --subscribers 1,1000 --payload 1024 --updates 200 \
//!     --rate 20 --seconds 10 --level persister,daemon --baseline redis,nats,jetstream \
//!     --json fanout.json --plot fanout.svg
//! ```
//!
//! Fixture identities only (tests/common): never generates RSA keys.
//!
//! [`PersisterClient`]: hypergolix::persist::client::PersisterClient

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "fanout/baseline.rs"]
mod baseline;
#[path = "common/mod.rs"]
mod bench_common;
#[path = "fanout/cpu.rs"]
mod cpu;
#[path = "fanout/daemon.rs"]
mod daemon;
#[path = "fanout/drive.rs"]
mod drive;
#[path = "fanout/nats.rs"]
mod nats;
#[path = "fanout/nats_server.rs"]
mod nats_server;
#[path = "fanout/persister.rs"]
mod persister;
#[path = "fanout/plot.rs"]
mod plot;
// The load harness's child-process handling (a persister outside this process's fd limit).
#[allow(dead_code)]
#[path = "load/procs.rs"]
mod procs;
#[path = "fanout/redis.rs"]
mod redis;
#[path = "fanout/stats.rs"]
mod stats;
#[path = "fanout/subs.rs"]
mod subs;
#[path = "fanout/wsraw.rs"]
mod wsraw;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use baseline::{Baseline, JetstreamDelivery};
use drive::{Mode, PubReport};
use stats::{RunResult, Shared};
use subs::{Target, VerifyMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Level {
    Persister,
    Daemon,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Persister => "persister",
            Level::Daemon => "daemon",
        }
    }
}

/// Daemon level: how the receiving apps get the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ShareMode {
    /// Share from user A to user B if the daemon's `hello` lists `share`.
    Auto,
    /// Receivers are further devices of the publisher's own account.
    Off,
}

/// Where the persister's and the daemons' ghidcaches live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Ghidcache {
    /// A temporary directory on disk ($TMPDIR): acknowledged writes cost a real fsync.
    Disk,
    /// RAM (/dev/shm; the persister uses sled's temporary store, as the tests do).
    Tmpfs,
}

/// Object fanout: one publisher, N subscribers, persister or daemon level, optionally side
/// by side with Redis pub/sub, core NATS and NATS JetStream.
#[derive(Parser, Debug)]
#[command(name = "fanout", about)]
struct Args {
    /// Subscriber counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    subscribers: Vec<usize>,
    /// Payload bytes per update (the container plaintext / the app state).
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Saturated run: this many updates as fast as acknowledged (default 200 when no --rate).
    #[arg(long)]
    updates: Option<u64>,
    /// Daemon level: updates of its saturated run (default: --updates). Pushes coalesce in
    /// the daemon while a frame is being signed, so it takes many pushes to sign many frames.
    #[arg(long)]
    daemon_updates: Option<u64>,
    /// Paced run: updates per second (for --seconds). With --updates too, both runs happen.
    #[arg(long)]
    rate: Option<f64>,
    /// Length of a paced run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Levels, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "persister")]
    level: Vec<Level>,
    /// Run the identical workload on these too, comma-separated: redis (redis-server),
    /// nats (core nats-server), jetstream (nats-server with a file-backed stream).
    #[arg(long, value_enum, value_delimiter = ',')]
    baseline: Vec<Baseline>,
    /// JetStream subscribers: an ordered push consumer each (delivered from the stream,
    /// after the store) or core subscriptions on the stream's subject (before the store).
    #[arg(long, value_enum, default_value = "consumer")]
    jetstream_delivery: JetstreamDelivery,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw latency percentiles and deliveries/s against N (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// How subscribers check signed frames (persister level and its baseline).
    #[arg(long, value_enum, default_value = "every")]
    verify: VerifyMode,
    /// Persister-level subscribers: a minimal websocket reader (like the Redis baseline's
    /// RESP reader) or the daemon's full `PersisterClient` (awc).
    #[arg(long, value_enum, default_value = "raw")]
    persister_client: subs::ClientKind,
    /// Threads holding the subscribers.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// The persister in this process (thread) or as this build's `hgx-persister` binary
    /// (child), at both levels; auto: in process unless the persister level runs and N
    /// connections' two ends would exceed RLIMIT_NOFILE.
    #[arg(long, value_enum, default_value = "auto")]
    persister_process: persister::Placement,
    /// Persister HTTP workers (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// The persister's verify threads bound one to each core (`server.pin_verify_threads`;
    /// off by default, as in the persister).
    #[arg(long)]
    pin_verify: bool,
    /// Updates in flight in a saturated run.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Daemon level: share with a second user (auto: when `share` is in the op table) or
    /// use further devices of the publisher's account (off).
    #[arg(long, value_enum, default_value = "auto")]
    share: ShareMode,
    /// Where the persister's and the daemons' sled ghidcaches live.
    #[arg(long, value_enum, default_value = "disk")]
    ghidcache: Ghidcache,
    /// Daemon level: number of daemons. Daemon 0 runs the publishing app; the subscribing
    /// apps are spread over daemons 1..K-1: user B's (with sharing), else further devices of
    /// the publisher's account. Every update then crosses the persister. K = 1 puts the
    /// subscribers on the publisher's own daemon.
    #[arg(long, default_value_t = 2)]
    daemons: usize,
    /// Seconds to wait, after the last publish is acknowledged, for every subscriber to get
    /// the final update.
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Raw aws-lc-rs RSA-4096 PSS-SHA512 signs/s and verifies/s on `threads` threads at once.
fn raw_rsa(a: &hypergolix::golix::FirstParty, threads: usize, secs: f64) -> (f64, f64) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeyPair;
    use aws_lc_rs::signature::{
        KeyPair as _, ParsedPublicKey, RSA_PSS_2048_8192_SHA512, RSA_PSS_SHA512,
    };
    let pkcs8 = a.export().signature_pkcs8.to_vec();
    let run = |verify: bool| -> f64 {
        let t0 = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    let pkcs8 = &pkcs8;
                    s.spawn(move || {
                        let key = KeyPair::from_pkcs8(pkcs8).unwrap();
                        let rng = SystemRandom::new();
                        let msg = [0x42_u8; 64];
                        let mut sig = vec![0u8; key.public_modulus_len()];
                        key.sign(&RSA_PSS_SHA512, &rng, &msg, &mut sig).unwrap();
                        let public = ParsedPublicKey::new(
                            &RSA_PSS_2048_8192_SHA512,
                            key.public_key().as_ref(),
                        )
                        .unwrap();
                        let start = Instant::now();
                        let mut n = 0u64;
                        while start.elapsed().as_secs_f64() < secs {
                            if verify {
                                public.verify_sig(&msg, &sig).unwrap();
                            } else {
                                key.sign(&RSA_PSS_SHA512, &rng, &msg, &mut sig).unwrap();
                            }
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        total as f64 / t0.elapsed().as_secs_f64()
    };
    (run(false), run(true))
}

/// CPU seconds (this thread's utime + stime) of one RSA-4096 PSS-SHA512 signature with the
/// golix identity's key, over `secs` of signing: the daemon level's unit of account.
fn sign_cpu(a: &hypergolix::golix::FirstParty, secs: f64) -> f64 {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeyPair;
    use aws_lc_rs::signature::RSA_PSS_SHA512;
    let key = KeyPair::from_pkcs8(&a.export().signature_pkcs8).unwrap();
    let rng = SystemRandom::new();
    let msg = [0x42_u8; 64];
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(&RSA_PSS_SHA512, &rng, &msg, &mut sig).unwrap();
    let (t0, c0) = (Instant::now(), cpu::thread_cpu_s());
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        key.sign(&RSA_PSS_SHA512, &rng, &msg, &mut sig).unwrap();
        n += 1;
    }
    (cpu::thread_cpu_s() - c0) / n as f64
}

/// Everything a run needs besides its level, N and mode.
struct Ctx {
    args: Args,
    identity: hypergolix::golix::FirstParty,
    presigned: Option<Arc<persister::Presigned>>,
    /// CPU seconds of one RSA-4096 PSS-SHA512 signature on one thread.
    sign_cpu_s: f64,
    servers: baseline::Servers,
    /// The persister level runs `hgx-persister` as a child process.
    persister_child: bool,
    runs: usize,
    notes: Vec<String>,
}

fn progress(ctx: &Ctx, label: &str, total: u64) -> ProgressBar {
    if ctx.args.no_progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(5));
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:<34} [{bar:30}] {pos:>8}/{len:8} deliveries {per_sec:>12} {msg}",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    pb.set_prefix(label.to_owned());
    pb
}

/// Releases the publisher, follows the deliveries on a progress bar, and returns once the
/// publisher has finished and every subscriber has the final update (or the drain timeout
/// has passed). The CPU time of the `others` processes (a baseline's server) is accounted
/// with this process's threads.
fn follow(
    ctx: &Ctx,
    label: &str,
    n: usize,
    shared: &Shared,
    publisher: persister::Publisher,
    others: &[(u32, &str)],
) -> Followed {
    let total = n as u64 * shared.final_seq;
    let pb = progress(ctx, label, total);
    let pids: Vec<u32> = others.iter().map(|o| o.0).collect();
    let load0 = cpu::load1();
    let cpu0 = cpu::snapshot(&pids);
    let _ = publisher.go.send(());
    let join = publisher.join;
    let mut finished_at: Option<Instant> = None;
    let drain = Duration::from_secs_f64(ctx.args.drain_timeout);
    loop {
        pb.set_position(shared.delivered.load(Ordering::Relaxed));
        let done = shared.done.load(Ordering::Relaxed);
        if join.is_finished() {
            let at = *finished_at.get_or_insert_with(Instant::now);
            if done >= n || at.elapsed() > drain {
                break;
            }
            pb.set_message(format!("{done}/{n} final"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu1 = cpu::snapshot(&pids);
    pb.set_position(shared.delivered.load(Ordering::Relaxed));
    pb.finish_and_clear();
    let report = join.join().unwrap_or_else(|_| PubReport {
        first_error: Some("publisher panicked".into()),
        ..PubReport::default()
    });
    let mut cpu_s = cpu::diff(&cpu0, &cpu1, others);
    cpu_s.retain(|_, v| *v >= 0.01);
    Followed {
        report,
        cpu_s,
        load1: (load0, cpu::load1()),
        window: (cpu0, cpu1),
    }
}

struct Followed {
    report: PubReport,
    cpu_s: std::collections::BTreeMap<String, f64>,
    load1: (f64, f64),
    /// This process's threads at the start and at the end of the measured window.
    window: (cpu::Snapshot, cpu::Snapshot),
}

fn result(
    level: Level,
    system: &str,
    n: usize,
    mode: Mode,
    shared: &Shared,
    followed: Followed,
    logs: Vec<stats::ThreadLog>,
) -> RunResult {
    let report = &followed.report;
    let d = stats::aggregate(shared, logs);
    let mut notes = Vec::new();
    if let Some(e) = &report.first_error {
        notes.push(format!("publisher: {e}"));
    }
    if let Some(e) = d.failed.first() {
        notes.push(format!("subscriber: {e}"));
    }
    if let Some(e) = shared.first_bad.lock().unwrap().as_ref() {
        notes.push(format!("first bad delivery: {e}"));
    }
    let pairs = shared.disorder_pairs.lock().unwrap();
    if !pairs.is_empty() {
        let mut v: Vec<_> = pairs.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        let shown: Vec<String> = v
            .iter()
            .take(6)
            .map(|((got, had), k)| format!("{got} after {had} x{k}"))
            .collect();
        notes.push(format!(
            "out-of-order deliveries ({} distinct pairs): {}",
            v.len(),
            shown.join(", ")
        ));
    }
    drop(pairs);
    RunResult {
        level: level.name().into(),
        system: system.into(),
        subscribers: n,
        mode: mode.name().into(),
        updates: mode.updates(),
        target_rate: mode.rate(),
        publish_rate: if report.secs > 0.0 {
            report.sent as f64 / report.secs
        } else {
            0.0
        },
        frames: None,
        frames_per_s: None,
        deliveries: d.deliveries,
        deliveries_per_s: if d.span_s > 0.0 {
            d.deliveries as f64 / d.span_s
        } else {
            0.0
        },
        span_s: d.span_s,
        latency_ms: d.latency,
        skipped: d.skipped,
        lost: d.lost,
        missing_final: d.missing_final,
        bad: shared.bad.load(Ordering::Relaxed),
        disorder: shared.disorder.load(Ordering::Relaxed),
        publish_errors: report.errors,
        ack_latency_ms: stats::Latency::of(report.ack_ns.clone()),
        cpu_s: followed.cpu_s,
        load1: followed.load1,
        daemon_cpu: None,
        notes,
    }
}

fn channel(ctx: &mut Ctx) -> Vec<u8> {
    ctx.runs += 1;
    format!("fanout-{}-{}", std::process::id(), ctx.runs).into_bytes()
}

fn run_persister(ctx: &mut Ctx, n: usize, mode: Mode) -> Result<RunResult, String> {
    let pre = ctx.presigned.clone().expect("presigned");
    let shared = Arc::new(Shared::new(mode.updates()));
    let on_disk = ctx.args.ghidcache == Ghidcache::Disk;
    let p = if ctx.persister_child {
        persister::PersisterProc::spawn(ctx.args.workers, on_disk, ctx.args.pin_verify)?
    } else {
        persister::PersisterProc::start(ctx.args.workers, on_disk, ctx.args.pin_verify)?
    };
    let publisher = persister::publisher(
        p.url.clone(),
        pre.clone(),
        mode,
        ctx.args.window,
        shared.clone(),
    )?;
    let target = Arc::new(Target::Persister {
        url: p.url.clone(),
        dynamic: pre.dynamic,
        binder_gidc: pre.gidc.to_vec(),
        verify: ctx.args.verify,
        client: ctx.args.persister_client,
    });
    let pool = subs::start(target, n, ctx.args.client_threads, shared.clone())?;
    let label = format!("persister N={n} {}", mode.name());
    let child: Vec<(u32, &str)> = p
        .pid()
        .map(|pid| (pid, "hgx-persister"))
        .into_iter()
        .collect();
    let followed = follow(ctx, &label, n, &shared, publisher, &child);
    let logs = pool.stop();
    let frames = p.frame_counter(&pre.dynamic);
    let hub = p.stop();
    let mut r = result(
        Level::Persister,
        "persister",
        n,
        mode,
        &shared,
        followed,
        logs,
    );
    r.frames = frames;
    if ctx.persister_child {
        r.notes
            .push("persister: hgx-persister child process (no hub counters)".into());
    }
    if let Some(h) = hub {
        r.notes.push(format!(
            "hub: encoded {} delivered {} coalesced {} slow_drops {}",
            h.encoded, h.delivered, h.coalesced, h.slow_drops
        ));
    }
    Ok(r)
}

fn run_daemon(ctx: &mut Ctx, n: usize, mode: Mode) -> Result<RunResult, String> {
    let shared = Arc::new(Shared::new(mode.updates()));
    let on_disk = ctx.args.ghidcache == Ghidcache::Disk;
    // As a child, the persister's own work (and sled's I/O pool, global to a process) is
    // not in the daemons' process.
    let p = if ctx.persister_child {
        persister::PersisterProc::spawn(ctx.args.workers, on_disk, ctx.args.pin_verify)?
    } else {
        persister::PersisterProc::start(ctx.args.workers, on_disk, ctx.args.pin_verify)?
    };
    let dirs = match ctx.args.ghidcache {
        Ghidcache::Disk => tempfile::tempdir(),
        Ghidcache::Tmpfs => tempfile::tempdir_in("/dev/shm"),
    }
    .map_err(|e| e.to_string())?;
    let k = ctx.args.daemons.max(1);
    let identity = common::fixture(1);
    let mut daemons = daemon::start_account(dirs.path(), "a", &p.url, identity, 1)?;
    let share = match ctx.args.share {
        ShareMode::Off => false,
        ShareMode::Auto => match daemon::has_share(&daemons[0].url, &daemons[0].token) {
            Ok(h) => h,
            Err(e) => {
                let _ = stop_daemons(daemons, p);
                return Err(e);
            }
        },
    };
    let more = if k < 2 {
        Ok(Vec::new())
    } else if share {
        daemon::start_account(dirs.path(), "b", &p.url, common::fixture(2), k - 1)
    } else {
        daemon::start_account_devices(dirs.path(), &p.url, &daemons[0], k - 1)
    };
    match more {
        Ok(v) => daemons.extend(v),
        Err(e) => {
            let _ = stop_daemons(daemons, p);
            return Err(e);
        }
    }
    let share_with = (share && k >= 2).then(|| daemon::ShareWith {
        url: daemons[1].url.clone(),
        token: daemons[1].token.clone(),
        recipient: daemons[1].handle.fingerprint(),
    });
    let started = (|| {
        let (publisher, setup) = daemon::publisher(
            daemons[0].url.clone(),
            daemons[0].token.clone(),
            daemons[0].handle.clone(),
            share_with.clone(),
            ctx.args.payload,
            mode,
            ctx.args.window,
            shared.clone(),
        )?;
        if !daemons[0].wait_drained(Duration::from_secs(30)) {
            return Err("the new object never reached the persister".to_owned());
        }
        let frames0 = p.frame_counter(&setup.ghid).unwrap_or(0);
        let subscriber_daemons: Vec<_> = if k == 1 {
            vec![(daemons[0].url.clone(), daemons[0].token.clone())]
        } else {
            daemons[1..]
                .iter()
                .map(|d| (d.url.clone(), d.token.clone()))
                .collect()
        };
        let target = Arc::new(Target::Daemon {
            daemons: subscriber_daemons,
            ghid: setup.ghid,
        });
        let pool = subs::start(target, n, ctx.args.client_threads, shared.clone())?;
        Ok((publisher, setup, frames0, pool))
    })();
    let (publisher, setup, frames0, pool) = match started {
        Ok(x) => x,
        Err(e) => {
            let _ = stop_daemons(daemons, p);
            return Err(e);
        }
    };
    let label = format!("daemon N={n} {}", mode.name());
    let followed = follow(ctx, &label, n, &shared, publisher, &[]);
    let (w0, w1) = &followed.window;
    // The signing pool (`actors::golix_worker`) is the process's; only daemon 0 pushes.
    let publisher_cpu_s = daemons[0].threads.and_named("hgx-golix-sign").cpu_s(w0, w1);
    let receiver_cpu_s = daemons.get(1).map(|d| d.threads.cpu_s(w0, w1));
    // Only daemon 0 pushes, so the pool's signatures in the window are its frames'.
    let in_run_signing_s = cpu::signing(w0, w1).1;
    let upstream = followed
        .report
        .extra
        .iter()
        .find(|(k, _)| k == "upstream_s")
        .map(|x| x.1);
    let logs = pool.stop();
    let frames1 = p.frame_counter(&setup.ghid).unwrap_or(0);
    let hub = stop_daemons(daemons, p);
    let mut r = result(Level::Daemon, "daemon", n, mode, &shared, followed, logs);
    if let Some(h) = hub {
        r.notes.push(format!(
            "persister hub: connections {} encoded {} delivered {} coalesced {} slow_drops {}",
            h.connections, h.encoded, h.delivered, h.coalesced, h.slow_drops
        ));
    }
    let frames = frames1.saturating_sub(frames0);
    r.frames = Some(frames);
    if frames > 0 {
        let per_frame = |s: f64| s * 1e3 / frames as f64;
        let two_signatures_ms = 2.0 * ctx.sign_cpu_s * 1e3;
        let in_run_signatures_ms = per_frame(in_run_signing_s);
        r.daemon_cpu = Some(stats::DaemonCpu {
            frames,
            publisher_cpu_s,
            publisher_ms_per_frame: per_frame(publisher_cpu_s),
            two_signatures_ms,
            publisher_ratio: per_frame(publisher_cpu_s) / two_signatures_ms,
            in_run_signatures_ms,
            in_run_ratio: (in_run_signatures_ms > 0.0)
                .then(|| per_frame(publisher_cpu_s) / in_run_signatures_ms),
            receiver_cpu_s,
            receiver_ms_per_frame: receiver_cpu_s.map(per_frame),
        });
    }
    if let Some(up) = upstream.filter(|up| *up > 0.0) {
        r.frames_per_s = Some(frames as f64 / up);
    }
    let placement =
        if k == 1 {
            "subscribers are apps on the publisher's own daemon".to_owned()
        } else if share {
            format!(
                "share op in hello: object shared from user A (daemon 0) with user B; subscribers \
             are apps on B's daemon(s) 1..{}",
                k - 1
            )
        } else {
            format!(
            "{}subscribers are apps on further devices (daemons 1..{}) of the publisher's account",
            if setup.has_share { "" } else { "no share op in hello: " },
            k - 1
        )
        };
    r.notes.push(placement);
    if let (Some(f), Some(up)) = (r.frames, upstream) {
        r.notes.push(format!(
            "{f} frames reached the persister in {up:.2} s ({} pushes coalesced)",
            mode.updates().saturating_sub(f)
        ));
    }
    Ok(r)
}

fn stop_daemons(
    daemons: Vec<daemon::DaemonProc>,
    p: persister::PersisterProc,
) -> Option<hypergolix::persist::hub::HubStats> {
    for d in daemons {
        d.stop();
    }
    p.stop()
}

fn fmt_ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

fn print_table(results: &[RunResult]) {
    println!(
        "\n{:<9} {:>5} {:<9} {:<9} {:>6} {:>9} {:>11} {:>9} {:>9} {:>9} {:>8} {:>6} {:>4} {:>5} {:>9}",
        "level",
        "N",
        "system",
        "mode",
        "upd",
        "pub/s",
        "deliv/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "skipped",
        "lost",
        "bad",
        "order",
        "frames/s"
    );
    for r in results {
        println!(
            "{:<9} {:>5} {:<9} {:<9} {:>6} {:>9.1} {:>11.0} {:>9} {:>9} {:>9} {:>8} {:>6} {:>4} {:>5} {:>9}",
            r.level,
            r.subscribers,
            r.system,
            r.mode,
            r.updates,
            r.publish_rate,
            r.deliveries_per_s,
            fmt_ms(r.latency_ms.p50),
            fmt_ms(r.latency_ms.p99),
            fmt_ms(r.latency_ms.max),
            r.skipped,
            r.lost,
            r.bad,
            r.disorder,
            r.frames_per_s.map_or("-".into(), |f| format!("{f:.1}"))
        );
        let cpu: Vec<String> = r.cpu_s.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        println!(
            "{:>16}ack p50/p99 {}/{} ms; load {:.1}->{:.1}; cpu s: {}",
            "",
            fmt_ms(r.ack_latency_ms.p50),
            fmt_ms(r.ack_latency_ms.p99),
            r.load1.0,
            r.load1.1,
            cpu.join(", ")
        );
        if let Some(c) = &r.daemon_cpu {
            println!(
                "{:>16}publishing hgxd: {:.2} ms CPU per frame ({:.2} s / {} frames) = {:.2}x its 2 signatures ({:.2} ms CPU back to back), {}x as they ran ({:.2} ms CPU per frame){}",
                "",
                c.publisher_ms_per_frame,
                c.publisher_cpu_s,
                c.frames,
                c.publisher_ratio,
                c.two_signatures_ms,
                c.in_run_ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
                c.in_run_signatures_ms,
                c.receiver_ms_per_frame.map_or(String::new(), |m| format!(
                    "; receiving hgxd: {m:.2} ms CPU per frame"
                ))
            );
        }
        for note in &r.notes {
            println!("{:>16}{note}", "");
        }
    }
}

/// A row of the side-by-side table: the level's own figures (`ratios` None) or a
/// baseline's with the level's ratios to it.
fn side_by_side_row(
    level: &str,
    n: usize,
    s: &serde_json::Value,
    ratios: Option<(Option<f64>, Option<f64>)>,
) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let x = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}×"));
    let (d, p) = match ratios {
        Some((d, p)) => (x(d), x(p)),
        None => ("".into(), "".into()),
    };
    println!(
        "| {level} | {n} | {} | {:.0} | {} | {} | {} | {} | {} | {d} | {p} |",
        s["system"].as_str().unwrap_or("?"),
        f(&s["deliveries_per_s"]),
        fmt_ms(f(&s["latency_ms"]["p50"])),
        fmt_ms(f(&s["latency_ms"]["p99"])),
        fmt_ms(f(&s["latency_ms"]["max"])),
        s["skipped"].as_u64().unwrap_or(0),
        s["lost"].as_u64().unwrap_or(0),
    );
}

/// One entry per (level, N): deliveries/s from the saturated run (else the paced one),
/// latency from the paced run (else the saturated one), lost summed; the baseline's the same
/// way, and the ratios.
fn summarize(
    results: &[RunResult],
    level: &str,
    n: usize,
    system: &str,
) -> Option<serde_json::Value> {
    let runs: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.level == level && r.subscribers == n && r.system == system)
        .collect();
    if runs.is_empty() {
        return None;
    }
    let sat = runs.iter().find(|r| r.mode == "saturated");
    let paced = runs.iter().find(|r| r.mode == "paced");
    let thr = sat.or(paced).unwrap();
    let lat = paced.or(sat).unwrap();
    Some(json!({
        "system": system,
        "deliveries_per_s": thr.deliveries_per_s,
        "latency_ms": {"p50": lat.latency_ms.p50, "p99": lat.latency_ms.p99, "max": lat.latency_ms.max},
        "lost": runs.iter().map(|r| r.lost).sum::<u64>(),
        "skipped": runs.iter().map(|r| r.skipped).sum::<u64>(),
        "bad": runs.iter().map(|r| r.bad).sum::<u64>(),
        "out_of_order": runs.iter().map(|r| r.disorder).sum::<u64>(),
        // Frames/s is a throughput figure: only a saturated run measures it.
        "frames_per_s": sat.and_then(|r| r.frames_per_s),
        "runs": runs,
    }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    baseline::self_check();
    let mut modes = Vec::new();
    if args.updates.is_some() || args.rate.is_none() {
        modes.push(Mode::Saturated {
            updates: args.updates.unwrap_or(200).max(1),
        });
    }
    if let Some(rate) = args.rate {
        if rate <= 0.0 || args.seconds <= 0.0 {
            eprintln!("fanout: --rate and --seconds must be positive");
            return ExitCode::from(2);
        }
        modes.push(Mode::Paced {
            rate,
            updates: ((rate * args.seconds).round() as u64).max(1),
        });
    }
    let mut baselines: Vec<Baseline> = Vec::new();
    for b in &args.baseline {
        if !baselines.contains(b) {
            baselines.push(*b);
        }
    }
    // Both ends of a connection count against this process's limit when the server is in
    // it (an in-process persister, the daemons), only the client end otherwise.
    let nofile = common::raise_nofile();
    let max_n = args.subscribers.iter().copied().max().unwrap_or(1) as u64;
    let both_ends = 2 * max_n + 256;
    let persister_child = match args.persister_process {
        persister::Placement::Thread => false,
        persister::Placement::Child => true,
        persister::Placement::Auto => args.level.contains(&Level::Persister) && nofile < both_ends,
    };
    if persister_child && args.persister_process == persister::Placement::Auto {
        eprintln!(
            "fanout: RLIMIT_NOFILE is {nofile}, an in-process persister at N = {max_n} needs about \
             {both_ends}: the persister level runs hgx-persister as a child process"
        );
    }
    let in_process = args.level.contains(&Level::Daemon)
        || (args.level.contains(&Level::Persister) && !persister_child);
    let need = if in_process { both_ends } else { max_n + 256 };
    if nofile < need {
        eprintln!(
            "fanout: RLIMIT_NOFILE is {nofile}, need about {need}; raise it (ulimit -n{})",
            if in_process {
                ", or run the persister level alone: it then uses a child process"
            } else {
                ""
            }
        );
        return ExitCode::from(2);
    }

    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = cpu_model();
    eprintln!("fanout: {nproc} cores, {model}");
    let identity = common::fixture(1);
    let (sign1, verify1) = raw_rsa(&identity, 1, 1.5);
    let (sign_all, verify_all) = raw_rsa(&identity, nproc, 1.5);
    let sign_cpu_s = sign_cpu(&identity, 1.5);
    eprintln!(
        "raw aws-lc-rs RSA-4096 PSS-SHA512: sign {sign1:.0}/s (1 thread), {sign_all:.0}/s ({nproc} threads); \
         verify {verify1:.0}/s (1 thread), {verify_all:.0}/s ({nproc} threads); one signature: {:.2} ms CPU",
        sign_cpu_s * 1e3
    );

    // Started before anything is measured, so that a missing server fails fast.
    let store_parent = match args.ghidcache {
        Ghidcache::Disk => std::env::temp_dir(),
        Ghidcache::Tmpfs => PathBuf::from("/dev/shm"),
    };
    let servers = match baseline::start(&baselines, &store_parent) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fanout: {e}");
            return ExitCode::from(2);
        }
    };
    let mut ctx = Ctx {
        presigned: None,
        sign_cpu_s,
        notes: servers.notes.clone(),
        servers,
        persister_child,
        runs: 0,
        identity,
        args,
    };
    if ctx.args.level.contains(&Level::Persister) {
        let count = modes.iter().map(|m| m.updates()).max().unwrap_or(1) as usize + 1;
        let t = Instant::now();
        ctx.presigned = Some(Arc::new(persister::presign(
            &ctx.identity,
            ctx.args.payload,
            count,
        )));
        eprintln!(
            "pre-signed {count} frames + {count} containers of {} B in {:.1} s (frame {} B)",
            ctx.args.payload,
            t.elapsed().as_secs_f64(),
            ctx.presigned.as_ref().unwrap().frames[1].len()
        );
    }
    let started = bench_common::utc_now();
    let mut results: Vec<RunResult> = Vec::new();
    let mut failures = Vec::new();
    let levels = ctx.args.level.clone();
    let ns = ctx.args.subscribers.clone();
    for &level in &levels {
        for &n in &ns {
            for &mode in &modes {
                let mode = match (level, mode, ctx.args.daemon_updates) {
                    (Level::Daemon, Mode::Saturated { .. }, Some(m)) => {
                        Mode::Saturated { updates: m.max(1) }
                    }
                    _ => mode,
                };
                let r = match level {
                    Level::Persister => run_persister(&mut ctx, n, mode),
                    Level::Daemon => run_daemon(&mut ctx, n, mode),
                };
                match r {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        eprintln!("fanout: {} N={n} {}: {e}", level.name(), mode.name());
                        failures.push(format!("{} N={n} {}: {e}", level.name(), mode.name()));
                    }
                }
                for &b in &baselines {
                    // Let the previous run's sockets and files settle.
                    std::thread::sleep(Duration::from_millis(300));
                    match baseline::run(&mut ctx, b, level, n, mode) {
                        Ok(r) => results.push(r),
                        Err(e) => {
                            let what =
                                format!("{} {} N={n} {}", b.name(), level.name(), mode.name());
                            eprintln!("fanout: {what}: {e}");
                            failures.push(format!("{what}: {e}"));
                        }
                    }
                }
                // Let sockets in TIME_WAIT and sled files settle between runs.
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
    let servers = std::mem::take(&mut ctx.servers);
    let (redis_version, nats_version) =
        (servers.redis_version.clone(), servers.nats_version.clone());
    drop(servers);

    println!(
        "\nfanout — {nproc} cores ({model}), payload {} B, verify {:?}, ghidcache {:?}, {} client thread(s); \
         raw RSA-4096 sign {sign1:.0}/s/thread ({sign_all:.0}/s all cores), verify {verify1:.0}/s/thread ({verify_all:.0}/s)",
        ctx.args.payload, ctx.args.verify, ctx.args.ghidcache, ctx.args.client_threads
    );
    print_table(&results);
    for n in &ctx.notes {
        println!("note: {n}");
    }
    for f in &failures {
        println!("FAILED: {f}");
    }

    let mut summary = Vec::new();
    let names: Vec<&str> = baselines.iter().map(|b| b.name()).collect();
    if !names.is_empty() {
        println!(
            "\nside by side (deliveries/s: saturated run, else paced; latency: paced run, else \
             saturated; ratio = level ÷ baseline):\n"
        );
        println!("| level | N | system | deliveries/s | p50 ms | p99 ms | max ms | skipped | lost | deliveries/s ratio | p99 ratio |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
    }
    for &level in &levels {
        for &n in &ns {
            let Some(mut main) = summarize(&results, level.name(), n, level.name()) else {
                continue;
            };
            if !names.is_empty() {
                side_by_side_row(level.name(), n, &main, None);
            }
            let mut against = serde_json::Map::new();
            for name in &names {
                let Some(mut base) = summarize(&results, level.name(), n, name) else {
                    continue;
                };
                let ratio = |a: f64, b: f64| if b > 0.0 { Some(a / b) } else { None };
                let d = ratio(
                    main["deliveries_per_s"].as_f64().unwrap_or(0.0),
                    base["deliveries_per_s"].as_f64().unwrap_or(0.0),
                );
                let p = ratio(
                    main["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                    base["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                );
                side_by_side_row(level.name(), n, &base, Some((d, p)));
                base["ratio_deliveries"] = json!(d);
                base["ratio_p99"] = json!(p);
                against.insert((*name).to_owned(), base);
            }
            main["baselines"] = serde_json::Value::Object(against);
            if let Some(f) = main["frames_per_s"].as_f64() {
                // Every frame costs two RSA signatures (its container and itself).
                main["frames_per_s_vs_raw_sign"] = json!({
                    "sign_bound_frames_per_s_1_thread": sign1 / 2.0,
                    "ratio_1_thread": f / (sign1 / 2.0),
                    "sign_bound_frames_per_s_all_cores": sign_all / 2.0,
                    "ratio_all_cores": f / (sign_all / 2.0),
                });
                println!(
                    "{:<9} N={:<5} frames/s {f:.1} = {:.2}x the sign-bound rate of one core ({:.0}/s: 2 signatures a frame), {:.2}x of all cores",
                    level.name(),
                    n,
                    f / (sign1 / 2.0),
                    sign1 / 2.0,
                    f / (sign_all / 2.0)
                );
            }
            main["level"] = json!(level.name());
            main["subscribers"] = json!(n);
            summary.push(main);
        }
    }
    let doc = json!({
        "harness": "benches/fanout.rs",
        "started": started,
        "machine": {"nproc": nproc, "cpu_model": model},
        "args": {
            "subscribers": ctx.args.subscribers, "payload": ctx.args.payload,
            "updates": ctx.args.updates, "daemon_updates": ctx.args.daemon_updates,
            "rate": ctx.args.rate, "seconds": ctx.args.seconds,
            "levels": levels.iter().map(|l| l.name()).collect::<Vec<_>>(),
            "baselines": names, "jetstream_delivery": format!("{:?}", ctx.args.jetstream_delivery).to_lowercase(),
            "verify": ctx.args.verify, "client_threads": ctx.args.client_threads,
            "workers": ctx.args.workers, "window": ctx.args.window, "daemons": ctx.args.daemons,
            "persister_process": if ctx.persister_child { "child" } else { "thread" },
            "pin_verify": ctx.args.pin_verify,
            "ghidcache": format!("{:?}", ctx.args.ghidcache).to_lowercase(),
            "share": format!("{:?}", ctx.args.share).to_lowercase(),
        },
        "redis_version": redis_version,
        "nats_version": nats_version,
        "raw_rsa4096_pss_sha512": {
            "sign_cpu_ms": ctx.sign_cpu_s * 1e3,
            "sign_per_s_1_thread": sign1, "sign_per_s_all_cores": sign_all,
            "verify_per_s_1_thread": verify1, "verify_per_s_all_cores": verify_all,
        },
        "notes": ctx.notes,
        "failures": failures,
        "results": summary,
    });
    if let Some(path) = &ctx.args.json {
        match std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(e) => eprintln!("fanout: {}: {e}", path.display()),
        }
    }
    if let Some(path) = &ctx.args.plot {
        match plot::draw(path, &results) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(e) => eprintln!("fanout: plot {}: {e}", path.display()),
        }
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
