//! Where the CPU went during a run, without perf: per-thread utime+stime from
//! `/proc/self/task/*/stat`, grouped by thread name (digits stripped), plus any other
//! process by pid (a baseline's server, a child persister), plus the load average (this
//! machine may be shared).

use std::collections::{BTreeMap, HashMap};

use crate::bench_common::{clk_tck as hz, parse_stat};

/// A snapshot of this process's threads (tid -> (name, ticks)) and of `others` (pid ->
/// ticks of the whole process).
#[derive(Default, Clone)]
pub struct Snapshot {
    threads: HashMap<u64, (String, u64)>,
    others: HashMap<u32, u64>,
}

pub fn snapshot(others: &[u32]) -> Snapshot {
    let mut snap = Snapshot::default();
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
