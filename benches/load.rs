//! # Load harness: many connections on one real server, for minutes
//!
//! Starts the real binaries (`hgx-persister`, `hgxd`, from this bench's own build) on
//! 127.0.0.1 and holds many client connections on one of them while one writer updates one
//! object at a steady rate:
//!
//! - `--apps N`: N apps on one `hgxd`, all holding (`get`) the object one writer app
//!   `push`es to; each `update` event is a delivery (latency: push call to event).
//! - `--subscribers N`: N websocket subscribers on one `hgx-persister`, subscribed to one
//!   dynamic ghid a publisher updates with frames pre-signed from a fixture identity; each
//!   notification is a delivery (its bytes must be a frame that was sent).
//!
//! Every `--sample-s` seconds it samples the server's RSS / peak RSS (`/proc/PID/status`),
//! threads, open fds and CPU, and prints a row; at the end a table over time (with each
//! interval's latency), a summary (connections, errors, deliveries, skipped vs lost,
//! latency percentiles, RSS first/max/last and whether it plateaued) and `--json FILE`.
//!
//! ```text
//! cargo bench --bench load -- --apps 1000 --minutes 3 --json /tmp/load_apps.json
//! cargo bench --bench load -- --subscribers 5000 --minutes 3 --json /tmp/load_subs.json
//! ```
//!
//! The harness raises its own RLIMIT_NOFILE; the servers inherit it unless
//! `--server-nofile N` sets their soft limit (e.g. 1024, a login shell's default). Every
//! wait is bounded; the servers are killed on exit, panic, SIGINT/SIGTERM, and (by
//! `PR_SET_PDEATHSIG`) if the harness is killed.

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "load/apps.rs"]
mod apps;
#[path = "common/mod.rs"]
mod bench_common;
#[path = "load/pool.rs"]
mod pool;
#[path = "load/procs.rs"]
mod procs;
#[path = "load/report.rs"]
mod report;
#[path = "load/servers.rs"]
mod servers;
#[path = "load/subs.rs"]
mod subs;
#[path = "load/track.rs"]
mod track;
#[path = "load/writer.rs"]
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use procs::{proc_stat, ServerProc};
use report::Row;
use track::Track;

/// Longest run `--minutes` accepts.
const MAX_MINUTES: f64 = 60.0;
/// Limit for opening every connection.
const CONNECT_PHASE: Duration = Duration::from_secs(600);
/// How long the servers get to stop on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Many connections on one real hgxd or hgx-persister for minutes: RSS over time,
/// delivery latency, errors.
#[derive(Parser, Debug)]
#[command(name = "load", about)]
struct Args {
    /// App connections on one hgxd.
    #[arg(
        long,
        conflicts_with = "subscribers",
        required_unless_present = "subscribers"
    )]
    apps: Option<usize>,
    /// Websocket subscribers on one hgx-persister.
    #[arg(long)]
    subscribers: Option<usize>,
    /// Updates per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Length of the steady phase (at most 60).
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// Seconds between samples of the server.
    #[arg(long, default_value_t = 5.0)]
    sample_s: f64,
    /// Bytes of state per update.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Threads holding the client connections.
    #[arg(long, default_value_t = 4)]
    client_threads: usize,
    /// Persister HTTP workers (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Soft RLIMIT_NOFILE for the servers (default: the harness's, raised to its hard limit).
    #[arg(long)]
    server_nofile: Option<u64>,
    /// Seconds to wait after the last update for every client to get it.
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// Write everything as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What the run holds while it goes.
struct Run {
    kind: &'static str,
    n: usize,
    /// The measured server first.
    servers: Vec<ServerProc>,
    track: Arc<Track>,
    /// When the client threads started connecting.
    pool_started: Instant,
    notes: Vec<String>,
}

/// A started run, its writer (waiting for `go`) and its client threads.
type Started = (Run, writer::Writer, pool::Pool);

fn start_apps(args: &Args, n: usize, track: Arc<Track>) -> Result<Started, String> {
    let p = servers::persister(args.workers, args.server_nofile)?;
    eprintln!("hgx-persister pid {} on {}", p.proc.pid(), p.addr);
    let d = servers::hgxd(&p, args.server_nofile)?;
    eprintln!("hgxd pid {} on {}", d.proc.pid(), d.url);
    let (w, ghid) = apps::writer(
        d.url.clone(),
        d.token.clone(),
        args.payload,
        args.rate,
        track.clone(),
    )?;
    eprintln!("object {ghid} created by the writer app");
    let conn = apps::connector(d.url.clone(), d.token.clone(), ghid, args.payload);
    let pool_started = Instant::now();
    let pool = pool::start(conn, n, args.client_threads, track.clone());
    let run = Run {
        pool_started,
        kind: "apps",
        n,
        servers: vec![d.proc, p.proc],
        track,
        notes: vec![format!(
            "{n} apps and the writer app on one hgxd (fixture identity 1), syncing through one \
             hgx-persister"
        )],
    };
    Ok((run, w, pool))
}

fn start_subscribers(args: &Args, n: usize, track: Arc<Track>) -> Result<Started, String> {
    let t = Instant::now();
    let count = track.final_seq as usize + 1;
    let pre = Arc::new(subs::presign(&common::fixture(1), args.payload, count)?);
    eprintln!(
        "pre-signed {count} frames + containers in {:.1} s (frame {} B)",
        t.elapsed().as_secs_f64(),
        pre.frames[0].len()
    );
    let p = servers::persister(args.workers, args.server_nofile)?;
    eprintln!("hgx-persister pid {} on {}", p.proc.pid(), p.addr);
    let w = subs::publisher(p.ws_url(), pre.clone(), args.rate, track.clone())?;
    let pool_started = Instant::now();
    let pool = pool::start(
        subs::connector(p.ws_url(), pre),
        n,
        args.client_threads,
        track.clone(),
    );
    let run = Run {
        pool_started,
        kind: "subscribers",
        n,
        servers: vec![p.proc],
        track,
        notes: vec![format!(
            "{n} subscribers of one dynamic ghid on one hgx-persister; notifications checked \
             byte for byte against the pre-signed frames (no RSA verify per notification)"
        )],
    };
    Ok((run, w, pool))
}

/// Samples the measured server (and the others' RSS) into a row.
struct Sampler {
    t0: Instant,
    last_t: f64,
    last_cpu: f64,
    last_harness_cpu: f64,
    last_delivered: u64,
}

impl Sampler {
    fn row(&mut self, phase: &'static str, run: &Run) -> Option<Row> {
        let st = proc_stat(run.servers[0].pid())?;
        let t = self.t0.elapsed().as_secs_f64();
        let dt = (t - self.last_t).max(1e-3);
        let delivered = run.track.delivered.load(Ordering::Relaxed);
        let tr = &run.track;
        let harness = proc_stat(std::process::id()).unwrap_or_default();
        let row = Row {
            t_s: t,
            phase,
            server: st,
            cpu_pct: 100.0 * (st.cpu_s - self.last_cpu) / dt,
            others_rss_mib: run.servers[1..]
                .iter()
                .filter_map(|s| proc_stat(s.pid()).map(|p| p.rss_mib))
                .collect(),
            harness_rss_mib: harness.rss_mib,
            harness_cpu_pct: 100.0 * (harness.cpu_s - self.last_harness_cpu) / dt,
            connected: tr.connected.load(Ordering::Relaxed),
            deliveries: delivered,
            deliveries_per_s: (delivered - self.last_delivered) as f64 / dt,
            errors: tr.connect_failures.load(Ordering::Relaxed)
                + tr.dropped.load(Ordering::Relaxed)
                + tr.decode_errors.load(Ordering::Relaxed),
            load1: procs::loadavg()
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0.0),
            latency_ms: None,
        };
        self.last_t = t;
        self.last_cpu = st.cpu_s;
        self.last_harness_cpu = harness.cpu_s;
        self.last_delivered = delivered;
        Some(row)
    }
}

/// Returns the first server that has exited, as a note.
fn crashed(run: &mut Run) -> Option<String> {
    run.servers.iter_mut().find_map(|s| {
        s.poll_exit()
            .map(|st| format!("{} exited during the run ({st}):\n{}", s.name, s.tail(40)))
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    procs::install_cleanup();
    if !(args.minutes > 0.0 && args.minutes <= MAX_MINUTES) {
        eprintln!("load: --minutes must be in (0, {MAX_MINUTES}]");
        return ExitCode::from(2);
    }
    if args.rate <= 0.0 || args.sample_s <= 0.0 {
        eprintln!("load: --rate and --sample-s must be positive");
        return ExitCode::from(2);
    }
    let n = args.apps.or(args.subscribers).unwrap_or(0).max(1);
    let nofile_before = procs::own_nofile();
    let nofile = common::raise_nofile();
    if nofile < n as u64 + 256 {
        eprintln!(
            "load: RLIMIT_NOFILE is {nofile}, need about {} for the client ends; raise the \
             hard limit (ulimit -Hn)",
            n + 256
        );
        return ExitCode::from(2);
    }
    let final_seq = ((args.rate * args.minutes * 60.0).round() as u64).max(1);
    let track = Arc::new(Track::new(final_seq));
    let started = bench_common::utc_now();
    let load_start = procs::loadavg();
    eprintln!("load: {} | load average {load_start}", report::machine());
    let run = if args.apps.is_some() {
        start_apps(&args, n, track.clone())
    } else {
        start_subscribers(&args, n, track.clone())
    };
    let (mut run, writer, pool) = match run {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load: set-up failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limits: Vec<_> = run
        .servers
        .iter()
        .map(|s| {
            let (soft, hard) = procs::nofile_of(s.pid()).unwrap_or_default();
            json!({"name": s.name, "pid": s.pid(), "nofile_soft": soft, "nofile_hard": hard})
        })
        .collect();
    for l in &limits {
        eprintln!(
            "{} pid {} RLIMIT_NOFILE soft {} hard {}",
            l["name"], l["pid"], l["nofile_soft"], l["nofile_hard"]
        );
    }

    let mut sampler = Sampler {
        t0: Instant::now(),
        last_t: 0.0,
        last_cpu: proc_stat(run.servers[0].pid()).map_or(0.0, |s| s.cpu_s),
        last_harness_cpu: proc_stat(std::process::id()).map_or(0.0, |s| s.cpu_s),
        last_delivered: 0,
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut crash: Option<String> = None;
    report::print_header(
        run.servers[0].name,
        &run.servers[1..].iter().map(|s| s.name).collect::<Vec<_>>(),
    );
    let every = Duration::from_secs_f64(args.sample_s);
    let mut next = Instant::now();
    let mut sample = |phase, run: &Run, rows: &mut Vec<Row>, next: &mut Instant| {
        if Instant::now() >= *next {
            if let Some(r) = sampler.row(phase, run) {
                report::print_row(&r);
                rows.push(r);
            }
            *next += every;
        }
    };

    // Connect phase: until every connection was tried.
    let connect_start = run.pool_started;
    let connect_s = loop {
        sample("connect", &run, &mut rows, &mut next);
        let tried = run.track.connected.load(Ordering::Relaxed)
            + run.track.connect_failures.load(Ordering::Relaxed);
        if tried >= n as u64 {
            break connect_start.elapsed().as_secs_f64();
        }
        if let Some(c) = crashed(&mut run) {
            crash = Some(c);
            break connect_start.elapsed().as_secs_f64();
        }
        if connect_start.elapsed() > CONNECT_PHASE {
            run.notes.push(format!(
                "not every connection was tried within {CONNECT_PHASE:?}"
            ));
            break connect_start.elapsed().as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let up = run.track.connected.load(Ordering::Relaxed);
    eprintln!(
        "load: {up}/{n} connections up in {connect_s:.1} s; writing {final_seq} updates at {}/s",
        args.rate
    );

    // Steady phase, then the drain.
    let go_ms = run.track.now_ns() / 1_000_000;
    let _ = writer.go.send(());
    next = Instant::now();
    let drain = Duration::from_secs_f64(args.drain_timeout);
    let mut written_at: Option<Instant> = None;
    let mut drain_s = 0.0;
    while crash.is_none() {
        let phase = if written_at.is_some() { "drain" } else { "run" };
        sample(phase, &run, &mut rows, &mut next);
        if writer.join.is_finished() {
            let at = *written_at.get_or_insert_with(Instant::now);
            let done = run.track.done.load(Ordering::Relaxed);
            if done >= run.track.connected.load(Ordering::Relaxed) || at.elapsed() > drain {
                drain_s = at.elapsed().as_secs_f64();
                break;
            }
        }
        crash = crashed(&mut run);
        std::thread::sleep(Duration::from_millis(20));
    }
    let end_ms = run.track.now_ns() / 1_000_000;
    let held = run.track.connected.load(Ordering::Relaxed);
    let logs = pool.stop();
    // The writer ends by itself (every wait in it is bounded); after a crash it may still
    // be waiting for acknowledgements.
    let wreport = if writer.join.is_finished() || crash.is_none() {
        writer.join.join().unwrap_or_default()
    } else {
        writer::WriterReport {
            first_error: Some("the writer was still running when the run ended".into()),
            ..Default::default()
        }
    };
    // What the server keeps once every client is gone.
    std::thread::sleep(Duration::from_secs(2));
    next = Instant::now();
    sample("closed", &run, &mut rows, &mut next);
    let load_end = procs::loadavg();

    let mut stops = Vec::new();
    for s in &mut run.servers {
        let (st, took) = s.stop(STOP_GRACE);
        stops.push(json!({
            "name": s.name,
            "exit": st.map(|s| s.to_string()),
            "clean": st.is_some_and(|s| s.success()),
            "graceful_stop_s": took.map(|d| d.as_secs_f64()),
        }));
        if !st.is_some_and(|s| s.success()) {
            run.notes.push(format!(
                "{} did not stop cleanly ({st:?}):\n{}",
                s.name,
                s.tail(20)
            ));
        }
    }

    report::attach_latency(&mut rows, &logs, sampler_t0_ms(&run.track, &sampler));
    let d = track::aggregate(&run.track, &logs, held);
    let errors = run.track.errors.lock().unwrap().clone();
    let summary = report::Summary::new(
        &run,
        &rows,
        &d,
        &wreport,
        up,
        connect_s,
        drain_s,
        (go_ms, end_ms),
    );
    report::print_table(&rows);
    summary.print();
    for (k, e) in &errors {
        println!("  {k} error: {e}");
    }
    if let Some(c) = &crash {
        println!("CRASH: {c}");
    }
    for note in &run.notes {
        println!("note: {note}");
    }
    println!("load average: start {load_start}, end {load_end}");

    if let Some(path) = &args.json {
        let doc = json!({
            "harness": "benches/load.rs",
            "started": started,
            "machine": report::machine(),
            "args": {
                "kind": run.kind, "n": n, "rate": args.rate, "minutes": args.minutes,
                "updates": final_seq, "sample_s": args.sample_s, "payload": args.payload,
                "client_threads": args.client_threads, "workers": args.workers,
                "server_nofile": args.server_nofile, "drain_timeout": args.drain_timeout,
            },
            "harness_nofile": {"before": nofile_before, "raised": nofile},
            "servers": limits,
            "load_average": {"start": load_start, "end": load_end},
            "samples": rows,
            "summary": summary,
            "writer": wreport,
            "deliveries": d,
            "errors": errors.iter().map(|(k, e)| json!({"kind": k, "message": e})).collect::<Vec<_>>(),
            "crash": crash,
            "stops": stops,
            "notes": run.notes,
        });
        match std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(e) => eprintln!("load: {}: {e}", path.display()),
        }
    }
    if crash.is_some() || !summary.clean() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The sampler's start in the track's clock (ms), to place deliveries in sample intervals.
fn sampler_t0_ms(track: &Track, s: &Sampler) -> u64 {
    s.t0.saturating_duration_since(track.base).as_millis() as u64
}
