//! What one dynamic update costs the persister's archive, back to back and paced.
//!
//! An update is what the fanout harness's publisher sends: the next frame (GOBD) of one
//! dynamic object, then its 1 KiB container (GEOC). Each goes through [`Archive::check`]
//! (decode, address, RSA-PSS verify) and [`Archive::commit`] (the rules, the write-ahead
//! log's append and the overlay), then the update is flushed ([`Archive::sync_now`]: the
//! log's write and `fdatasync`, what a publish waits for before it is announced), on one
//! thread, with no network and no pool, so the figures are the archive's own work. Run
//! twice over fresh archives: back to back, and with a pause before each update (the paced
//! case: 50 ms is 20 updates/s), which shows what an idle gap adds to the same work on this
//! machine (caches and predictors gone cold).
//!
//! Run: `cargo bench --bench archive_path` (env `UPDATES`, `GAP_MS`; `DISK=1` puts the
//! archive in $TMPDIR instead of /dev/shm; `PAUSE=spin` spins through the gap instead of
//! sleeping, to tell what the thread's sleep costs from what the time passing does).
//! Medians per step, in µs.

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use hypergolix::golix::Object;
use hypergolix::persist::store::Sender;
use hypergolix::persist::Archive;

/// Updates left out of the figures while the archive warms up.
const SKIP: usize = 10;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Per update: binding check, binding commit, container check, container commit, flush.
type Steps = [Duration; 5];

fn run(p: &bench_common::Presigned, gidc: &[u8], gap: Duration, disk: bool) -> Vec<Steps> {
    let dir = if disk {
        tempfile::tempdir()
    } else {
        tempfile::tempdir_in("/dev/shm")
    }
    .expect("tempdir");
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let archive = Archive::open_logged(
        &dir.path().join("ghidcache"),
        64 << 20,
        hypergolix::persist::store::WAL_MOVE_EVERY,
        log,
    )
    .expect("archive");
    archive.publish(gidc).expect("identity");
    let mut steps = Vec::with_capacity(p.frames.len());
    for (frame, container) in p.frames.iter().zip(&p.containers) {
        pause(gap);
        let mut s = [Duration::ZERO; 5];
        for (i, bytes) in [frame, container].into_iter().enumerate() {
            let t = Instant::now();
            let checked = archive
                .check(bytes::Bytes::copy_from_slice(bytes))
                .expect("check");
            let checked_at = Instant::now();
            archive.commit(checked, Sender::Anonymous).expect("commit");
            s[2 * i] = checked_at - t;
            s[2 * i + 1] = checked_at.elapsed();
        }
        let t = Instant::now();
        archive.sync_now().expect("flush");
        s[4] = t.elapsed();
        steps.push(s);
    }
    steps.split_off(SKIP.min(steps.len()))
}

fn spins() -> bool {
    std::env::var("PAUSE").as_deref() == Ok("spin")
}

/// The pause before a paced update: slept (`PAUSE=sleep`, the default: what a server does
/// between requests) or spun on this thread (`PAUSE=spin`: the thread never gives up its core).
fn pause(gap: Duration) {
    if spins() {
        let t = Instant::now();
        while t.elapsed() < gap {
            std::hint::spin_loop();
        }
    } else if !gap.is_zero() {
        std::thread::sleep(gap);
    }
}

fn median_us(steps: &[Steps], i: usize) -> f64 {
    let mut v: Vec<Duration> = steps.iter().map(|s| s[i]).collect();
    v.sort();
    v.get(v.len() / 2)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}

fn main() {
    let updates = env("UPDATES", 200).max(SKIP as u64 + 1) as usize;
    let gap = Duration::from_millis(env("GAP_MS", 50));
    let disk = env("DISK", 0) != 0;
    let author = common::fixture(1);
    eprintln!("signing {updates} frames and containers...");
    let p = bench_common::presign(&author, 1024, updates);
    let gidc = Object::Gidc(author.gidc().clone()).encode();
    let names = [
        "binding check",
        "binding commit",
        "container check",
        "container commit",
        "flush",
    ];
    let back = run(&p, &gidc, Duration::ZERO, disk);
    let paced = run(&p, &gidc, gap, disk);
    println!(
        "archive path, {} updates, medians in µs ({})",
        back.len(),
        if disk { "$TMPDIR" } else { "/dev/shm" }
    );
    println!(
        "{:<18} {:>12} {:>14} {:>7}",
        "step",
        "back to back",
        format!(
            "{} ms {}",
            gap.as_millis(),
            if spins() { "spun" } else { "gap" }
        ),
        "ratio"
    );
    let (mut tb, mut tp) = (0.0, 0.0);
    for (i, name) in names.iter().enumerate() {
        let (b, q) = (median_us(&back, i), median_us(&paced, i));
        tb += b;
        tp += q;
        println!("{name:<18} {b:>12.1} {q:>14.1} {:>6.2}×", q / b);
    }
    println!("{:<18} {tb:>12.1} {tp:>14.1} {:>6.2}×", "sum", tp / tb);
}
