//! Where the CPU went during a run, without perf: per-thread utime+stime from
//! `/proc/self/task/*/stat`, grouped by thread name (digits stripped), plus any other
//! process by pid (a baseline's server, a child persister), plus the load average (this
//! machine may be shared).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::bench_common::{clk_tck as hz, parse_stat};

/// A snapshot of this process's threads (tid -> (name, ticks)) and of `others` (pid ->
/// ticks of the whole process).
#[derive(Default, Clone)]
pub struct Snapshot {
    threads: HashMap<u64, (String, u64)>,
    others: HashMap<u32, u64>,
    /// The daemons' signing pool: signatures so far and their CPU seconds.
    signing: (u64, f64),
}

pub fn snapshot(others: &[u32]) -> Snapshot {
    let mut snap = Snapshot::default();
    let (n, spent) = hypergolix::actors::golix_worker::signing_cpu();
    snap.signing = (n, spent.as_secs_f64());
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let Ok(tid) = e.file_name().to_string_lossy().parse::<u64>() else {
                continue;
            };
            if let Some(x) = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
            {
                snap.threads.insert(tid, x);
            }
        }
    }
    for &pid in others {
        if let Some((_, t)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        {
            snap.others.insert(pid, t);
        }
    }
    snap
}

fn group(name: &str) -> String {
    let g = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == ' ');
    if g.is_empty() {
        name.to_owned()
    } else {
        g.to_owned()
    }
}

/// CPU seconds per thread group between two snapshots (threads born during the interval
/// count from zero; threads that ended are missed), `others` named as given.
pub fn diff(a: &Snapshot, b: &Snapshot, other_names: &[(u32, &str)]) -> BTreeMap<String, f64> {
    let hz = hz();
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (tid, (name, t1)) in &b.threads {
        let t0 = a.threads.get(tid).map_or(0, |x| x.1);
        let d = t1.saturating_sub(t0);
        if d > 0 {
            *out.entry(group(name)).or_default() += d as f64 / hz;
        }
    }
    for (pid, name) in other_names {
        if let (Some(t0), Some(t1)) = (a.others.get(pid), b.others.get(pid)) {
            let d = t1.saturating_sub(*t0);
            *out.entry((*name).to_owned()).or_default() += d as f64 / hz;
        }
    }
    out
}

/// `/proc/loadavg`'s 1-minute figure.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

/// The threads of this process now: tid -> name.
pub fn threads() -> HashMap<u64, String> {
    snapshot(&[])
        .threads
        .into_iter()
        .map(|(tid, (name, _))| (tid, name))
        .collect()
}

/// One in-process daemon's threads: those its start created (`tids`: its actor threads,
/// app endpoint, sled flusher) and every thread named `name` (its tokio runtime's workers
/// and blocking pool, which may start later).
#[derive(Clone, Debug, Default)]
pub struct ThreadSet {
    pub name: String,
    pub tids: HashSet<u64>,
    /// Further thread names counted as this daemon's.
    pub also: Vec<String>,
}

/// Signatures made on the daemons' signing pool between two snapshots, and the CPU seconds
/// spent inside them (measured around each signature on its thread).
pub fn signing(a: &Snapshot, b: &Snapshot) -> (u64, f64) {
    (
        b.signing.0.saturating_sub(a.signing.0),
        (b.signing.1 - a.signing.1).max(0.0),
    )
}

impl ThreadSet {
    /// The threads that appeared between `before` and now, except those whose names other
    /// parts of the process share (tokio's default name, sled's global I/O pool).
    pub fn born_since(name: &str, before: &HashMap<u64, String>) -> ThreadSet {
        let tids = threads()
            .into_iter()
            .filter(|(tid, n)| {
                !before.contains_key(tid)
                    && !n.starts_with("tokio-runtime")
                    && !n.starts_with("sled")
            })
            .map(|(tid, _)| tid)
            .collect();
        ThreadSet {
            name: name.to_owned(),
            tids,
            also: Vec::new(),
        }
    }

    /// These threads and every thread named `name` (or `name` and a number: `name-0`, …).
    pub fn and_named(&self, name: &str) -> ThreadSet {
        let mut s = self.clone();
        s.also.push(name.to_owned());
        s
    }

    /// CPU seconds of these threads between two snapshots (threads that ended meanwhile are
    /// missed, as in [`diff`]).
    pub fn cpu_s(&self, a: &Snapshot, b: &Snapshot) -> f64 {
        let ticks: u64 = b
            .threads
            .iter()
            .filter(|(tid, (n, _))| {
                self.tids.contains(tid) || *n == self.name || self.also.contains(&group(n))
            })
            .map(|(tid, (_, t1))| t1.saturating_sub(a.threads.get(tid).map_or(0, |x| x.1)))
            .sum();
        ticks as f64 / hz()
    }
}

/// CPU time of the calling thread, in seconds.
pub fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
