//! What a load run prints and writes: one [`Row`] per sample of the server (live, then as a
//! table with each interval's latency), the [`Summary`] with the RSS plateau verdict, and
//! the machine description.

use serde::Serialize;

use super::procs::ProcStat;
use super::track::{self, ClientLog, Deliveries, Latency};
use super::writer::WriterReport;
use super::Run;

/// RSS counts as plateaued when the last third's maximum exceeds the first third's by less
/// than this fraction.
const PLATEAU_GROWTH: f64 = 0.10;

/// One sample of the measured server.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Seconds since the sampler started (before the connect phase).
    pub t_s: f64,
    /// `connect`, `run`, `drain` or `closed`.
    pub phase: &'static str,
    pub server: ProcStat,
    /// The server's CPU use since the previous sample (100 = one core).
    pub cpu_pct: f64,
    /// RSS of the other servers (hgxd runs: the persister).
    pub others_rss_mib: Vec<f64>,
    pub harness_rss_mib: f64,
    /// The harness's own CPU use (client threads, writer) since the previous sample.
    pub harness_cpu_pct: f64,
    pub connected: u64,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub errors: u64,
    pub load1: f64,
    /// Deliveries received in this row's interval (filled in at the end).
    pub latency_ms: Option<Latency>,
}

pub fn print_header(server: &str, others: &[&str]) {
    let others: Vec<String> = others.iter().map(|o| format!("{o} MiB")).collect();
    println!(
        "\n{:>7} {:<7} {:>9} {:>9} {:>5} {:>6} {:>6} {:>6} {:>10} {:>9} {:>6} {:>5} {:>9} {:>9}  {}",
        "t s",
        "phase",
        "RSS MiB",
        "HWM MiB",
        "thr",
        "fds",
        "cpu%",
        "conns",
        "deliveries",
        "deliv/s",
        "errors",
        "load",
        "bench MiB",
        "bench cpu",
        others.join(" ")
    );
    println!("{:>7} ({server})", "");
}

pub fn print_row(r: &Row) {
    let others: Vec<String> = r.others_rss_mib.iter().map(|m| format!("{m:.1}")).collect();
    println!(
        "{:>7.1} {:<7} {:>9.1} {:>9.1} {:>5} {:>6} {:>6.1} {:>6} {:>10} {:>9.0} {:>6} {:>5.2} {:>9.1} {:>9.1}  {}",
        r.t_s,
        r.phase,
        r.server.rss_mib,
        r.server.hwm_mib,
        r.server.threads,
        r.server.fds,
        r.cpu_pct,
        r.connected,
        r.deliveries,
        r.deliveries_per_s,
        r.errors,
        r.load1,
        r.harness_rss_mib,
        r.harness_cpu_pct,
        others.join(" ")
    );
}

/// Fills each row's interval latency; `t0_ms` = the sampler's start in the track's clock.
pub fn attach_latency(rows: &mut [Row], logs: &[ClientLog], t0_ms: u64) {
    let mut from = 0u64;
    for r in rows.iter_mut() {
        let to = t0_ms + (r.t_s * 1000.0) as u64;
        let l = track::latency_between(logs, from, to);
        r.latency_ms = (l.samples > 0).then_some(l);
        from = to;
    }
}

pub fn print_table(rows: &[Row]) {
    println!(
        "\nover time (latency of the deliveries in each interval):\n{:>7} {:<7} {:>8} {:>8} {:>5} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "t s", "phase", "RSS MiB", "HWM MiB", "thr", "fds", "cpu%", "conns", "deliv/s", "p50 ms", "p99 ms", "max ms"
    );
    for r in rows {
        let (p50, p99, max) = r
            .latency_ms
            .map_or(("-".into(), "-".into(), "-".into()), |l| {
                (fmt_ms(l.p50), fmt_ms(l.p99), fmt_ms(l.max))
            });
        println!(
            "{:>7.1} {:<7} {:>8.1} {:>8.1} {:>5} {:>6} {:>6.1} {:>6} {:>9.0} {:>9} {:>9} {:>9}",
            r.t_s,
            r.phase,
            r.server.rss_mib,
            r.server.hwm_mib,
            r.server.threads,
            r.server.fds,
            r.cpu_pct,
            r.connected,
            r.deliveries_per_s,
            p50,
            p99,
            max
        );
    }
}

fn fmt_ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The server's RSS over the steady (`run`) phase.
#[derive(Debug, Default, Serialize)]
pub struct Rss {
    pub first_mib: f64,
    pub max_mib: f64,
    pub last_mib: f64,
    /// Peak RSS (VmHWM) at the last sample.
    pub hwm_mib: f64,
    /// After every client closed (`closed` sample).
    pub after_close_mib: Option<f64>,
    pub first_third_max_mib: f64,
    pub last_third_max_mib: f64,
    pub growth_pct: f64,
    /// None: too few samples to tell.
    pub plateaued: Option<bool>,
    pub threads_max: u64,
    pub fds_max: u64,
    pub cpu_pct_mean: f64,
}

impl Rss {
    fn of(rows: &[Row]) -> Rss {
        let run: Vec<&Row> = rows.iter().filter(|r| r.phase == "run").collect();
        let mut rss = Rss {
            after_close_mib: rows
                .iter()
                .rfind(|r| r.phase == "closed")
                .map(|r| r.server.rss_mib),
            threads_max: rows.iter().map(|r| r.server.threads).max().unwrap_or(0),
            fds_max: rows.iter().map(|r| r.server.fds).max().unwrap_or(0),
            ..Rss::default()
        };
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return rss;
        };
        let max = |rs: &[&Row]| rs.iter().map(|r| r.server.rss_mib).fold(0.0, f64::max);
        rss.first_mib = first.server.rss_mib;
        rss.last_mib = last.server.rss_mib;
        rss.hwm_mib = last.server.hwm_mib;
        rss.max_mib = max(&run);
        rss.cpu_pct_mean = run.iter().map(|r| r.cpu_pct).sum::<f64>() / run.len() as f64;
        if run.len() >= 6 {
            let third = run.len() / 3;
            rss.first_third_max_mib = max(&run[..third]);
            rss.last_third_max_mib = max(&run[run.len() - third..]);
            rss.growth_pct = 100.0 * (rss.last_third_max_mib - rss.first_third_max_mib)
                / rss.first_third_max_mib;
            rss.plateaued = Some(rss.growth_pct < PLATEAU_GROWTH * 100.0);
        }
        rss
    }
}

/// The figures of a run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub kind: &'static str,
    pub server: &'static str,
    pub connections_wanted: usize,
    pub connections_up: u64,
    pub connect_s: f64,
    pub connect_failures: u64,
    pub dropped: u64,
    pub decode_errors: u64,
    pub out_of_order: u64,
    pub updates_sent: u64,
    pub writer_errors: u64,
    pub writer_ack_ms: Latency,
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub deliveries_per_s: f64,
    pub skipped_latest_wins: u64,
    pub lost: u64,
    pub clients_missing_final: u64,
    pub connections_held: u64,
    pub latency_ms: Latency,
    pub drain_s: f64,
    pub rss: Rss,
}

impl Summary {
    #[allow(clippy::too_many_arguments)] // one figure each
    pub fn new(
        run: &Run,
        rows: &[Row],
        d: &Deliveries,
        w: &WriterReport,
        up: u64,
        connect_s: f64,
        drain_s: f64,
        (go_ms, end_ms): (u64, u64),
    ) -> Summary {
        let t = &run.track;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let secs = (end_ms.saturating_sub(go_ms)) as f64 / 1e3;
        Summary {
            kind: run.kind,
            server: run.servers[0].name,
            connections_wanted: run.n,
            connections_up: up,
            connect_s,
            connect_failures: ld(&t.connect_failures),
            dropped: ld(&t.dropped),
            decode_errors: ld(&t.decode_errors),
            out_of_order: ld(&t.disorder),
            updates_sent: w.sent,
            writer_errors: w.errors,
            writer_ack_ms: w.ack_ms,
            deliveries: d.deliveries,
            expected_deliveries: d.connections_held * t.final_seq,
            deliveries_per_s: if secs > 0.0 {
                d.deliveries as f64 / secs
            } else {
                0.0
            },
            skipped_latest_wins: d.skipped,
            lost: d.lost,
            clients_missing_final: d.missing_final,
            connections_held: d.connections_held,
            latency_ms: d.latency_ms,
            drain_s,
            rss: Rss::of(rows),
        }
    }

    /// No errors, nothing lost, the writer done, RSS not growing.
    pub fn clean(&self) -> bool {
        self.connect_failures == 0
            && self.dropped == 0
            && self.decode_errors == 0
            && self.lost == 0
            && self.writer_errors == 0
            && self.updates_sent > 0
            && self.rss.plateaued != Some(false)
    }

    pub fn print(&self) {
        let r = &self.rss;
        let l = &self.latency_ms;
        println!(
            "\n{} on one {}: {}/{} connections up in {:.1} s ({} connect failures), {} held to the end, {} dropped",
            self.kind, self.server, self.connections_up, self.connections_wanted, self.connect_s,
            self.connect_failures, self.connections_held, self.dropped
        );
        println!(
            "writer: {} updates, {} errors, ack p50/p99 {}/{} ms",
            self.updates_sent,
            self.writer_errors,
            fmt_ms(self.writer_ack_ms.p50),
            fmt_ms(self.writer_ack_ms.p99)
        );
        println!(
            "deliveries {} of {} ({:.0}/s); skipped by latest-wins {}; lost {} ({} clients without the final update); decode errors {}; out of order {}; drain {:.1} s",
            self.deliveries, self.expected_deliveries, self.deliveries_per_s, self.skipped_latest_wins,
            self.lost, self.clients_missing_final, self.decode_errors, self.out_of_order, self.drain_s
        );
        println!(
            "latency ms: p50 {} p99 {} p99.9 {} max {} ({} samples)",
            fmt_ms(l.p50),
            fmt_ms(l.p99),
            fmt_ms(l.p999),
            fmt_ms(l.max),
            l.samples
        );
        let verdict = match r.plateaued {
            Some(true) => "plateaued",
            Some(false) => "STILL GROWING",
            None => "too few samples to tell",
        };
        println!(
            "{} RSS MiB: first {:.1} max {:.1} last {:.1} (peak {:.1}); after every client closed {}; \
             first-third max {:.1} -> last-third max {:.1} ({:+.1} %): {verdict}; threads max {}, fds max {}, cpu mean {:.0} %",
            self.server, r.first_mib, r.max_mib, r.last_mib, r.hwm_mib,
            r.after_close_mib.map_or("-".into(), |m| format!("{m:.1}")),
            r.first_third_max_mib, r.last_third_max_mib, r.growth_pct, r.threads_max, r.fds_max, r.cpu_pct_mean
        );
    }
}

/// Cores, CPU model and memory of this machine.
pub fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb as f64 / 1048576.0));
    format!("{nproc} cores, {cpu}, {mem} RAM")
}
