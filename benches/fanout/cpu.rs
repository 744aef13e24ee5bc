//! Where the CPU went during a run, without perf: per-thread utime+stime from
//! `/proc/self/task/*/stat`, grouped by thread name (digits stripped), plus any other
//! process by pid (redis-server), plus the load average (this machine may be shared).

use std::collections::{BTreeMap, HashMap};

/// Clock ticks per second (`_SC_CLK_TCK`).
fn hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (comm, utime + stime ticks) of a `/proc/.../stat` line.
fn parse_stat(s: &str) -> Option<(String, u64)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_owned();
    let rest: Vec<&str> = s[close + 2..].split_whitespace().collect();
    // Fields after comm start at field 3 (state); utime is field 14, stime 15.
    let ut: u64 = rest.get(11)?.parse().ok()?;
    let st: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, ut + st))
}

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
