//! App-to-app update latency and push throughput through the real processes.
//!
//! Starts one `hgx-persister` and two `hgxd` for one account (the second device logs in
//! with only the account ids, the remote and the password, as on a second machine), each in
//! its own temporary home on 127.0.0.1, and connects apps with [`HgxLink`]:
//!
//! - app A on daemon 1 pushes, app B on daemon 2 (through the persister) and app C on
//!   daemon 1 (same daemon) track the object;
//! - **latency**: N paced pushes (one every `INTERVAL`); for each, the time from A's push
//!   call to the update event at B (and C), and to A's acknowledgement;
//! - **sequential pushes/s**: one push in flight at a time;
//! - **coalesced pushes/s**: M pushes with up to `IN_FLIGHT` in flight to one object;
//!   pushes acknowledged per second, the frames actually published (the frame counter on
//!   the persister before and after) and the update events B received.
//!
//! `cargo bench --bench app_latency` (release build of the binaries). Tunables, by
//! environment: `APP_LATENCY_N` (200), `APP_LATENCY_INTERVAL_MS` (20), `APP_LATENCY_BURST`
//! (500), `APP_LATENCY_IN_FLIGHT` (32), `APP_LATENCY_SEQ` (100), and
//! `APP_LATENCY_HGXD_VERBOSITY` (warning) for the daemons' logs.
//! Uses the fixture identity TEST_AGENT1; never generates RSA keys.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hypergolix::actors::api::AppEvent;
use hypergolix::golix::{Ghid, Object, Policy};
use hypergolix::ipc::HgxLink;
use hypergolix::persist::client::PersisterClient;

const START: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "bench password";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- processes ---------------------------------------------------------------------------

/// A child process, killed when dropped; its output lines are collected.
struct Proc {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Proc {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    async fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + START;
        loop {
            if let Some(rest) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                // Anywhere in the line: hgxd's log drain can split a line around it.
                .find_map(|l| l.find(prefix).map(|at| l[at + prefix.len()..].to_owned()))
            {
                return rest;
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{} exited ({st}):\n{}",
                    self.name,
                    self.lines.lock().unwrap().join("\n")
                );
            }
            assert!(Instant::now() < deadline, "{} not ready", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own, unreaped child: SIGTERM for a clean stop first.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn start_persister(dir: &Path) -> (Proc, u16) {
    let config = dir.join("hypergolix.yml");
    std::fs::write(
        &config,
        "server:\n  host: 127.0.0.1\n  port: 0\n  ghidcache: ./cache\n  logdir: ./logs\n  \
         pid_file: ./persister.pid\n  verbosity: warning\n",
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hgx-persister"));
    cmd.arg("--config")
        .arg(&config)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("HYPERGOLIX_HOME")
        .env_remove("HGX_CONFIG");
    let mut p = Proc::spawn("hgx-persister", cmd);
    let addr: std::net::SocketAddr = p
        .wait_line("listening on http://")
        .await
        .trim()
        .parse()
        .unwrap();
    (p, addr.port())
}

/// Starts `hgxd` in `home` (config written here): first run imports TEST_AGENT1, a second
/// device gets `user` (fingerprint, user_id) only.
async fn start_hgxd(home: &Path, persister_port: u16, user: Option<(&str, &str)>) -> (Proc, u16) {
    let verbosity =
        std::env::var("APP_LATENCY_HGXD_VERBOSITY").unwrap_or_else(|_| "warning".into());
    let mut yml = format!(
        "process:\n  ghidcache: ./ghidcache\n  logdir: ./logs\n  pid_file: ./hgxd.pid\n  \
         ipc_port: 0\ninstrumentation:\n  verbosity: {verbosity}\n\
         remotes:\n  - host: 127.0.0.1\n    port: {persister_port}\n    tls: false\n"
    );
    if let Some((fp, uid)) = user {
        yml.push_str(&format!(
            "user:\n  fingerprint: \"{fp}\"\n  user_id: \"{uid}\"\n"
        ));
    }
    std::fs::write(home.join("hypergolix.yml"), yml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hgxd"));
    cmd.current_dir(home)
        .env("HYPERGOLIX_HOME", home)
        .env("HOME", home)
        .env("HGX_PASSWORD", PASSWORD)
        .env_remove("HGX_CONFIG");
    if user.is_none() {
        let id = home.join("id.json");
        let fixture = hypergolix::testdata::fixture_identity_json(1);
        std::fs::write(&id, fixture.to_string()).unwrap();
        cmd.arg("--identity-file").arg(id);
    }
    let mut p = Proc::spawn("hgxd", cmd);
    let rest = p.wait_line("hgxd: ready on ws://127.0.0.1:").await;
    let port = rest.split('/').next().unwrap().parse().unwrap();
    (p, port)
}

fn account(home: &Path) -> (String, String) {
    let cfg =
        hypergolix::config::Config::load_from(Some(&home.join("hypergolix.yml")), false).unwrap();
    (cfg.user.fingerprint.unwrap(), cfg.user.user_id.unwrap())
}

// ---- measurement -------------------------------------------------------------------------

/// Update events of one app: (ghid, state) -> first arrival, and a count per ghid.
#[derive(Default)]
struct Seen {
    at: HashMap<(Ghid, Vec<u8>), Instant>,
    count: HashMap<Ghid, usize>,
}

type SeenRef = Rc<RefCell<Seen>>;

fn record_updates(link: &HgxLink) -> SeenRef {
    let seen: SeenRef = Rc::default();
    let mut rx = link.events();
    let s = seen.clone();
    actix_rt::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if let AppEvent::Update(v) = ev {
                let now = Instant::now();
                let mut s = s.borrow_mut();
                *s.count.entry(v.ghid).or_default() += 1;
                s.at.entry((v.ghid, v.state)).or_insert(now);
            }
        }
    });
    seen
}

/// When `seen` got `state` for `ghid`, waiting up to `within`; `None` if it never came.
async fn wait_seen(seen: &SeenRef, ghid: Ghid, state: &[u8], within: Duration) -> Option<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = seen.borrow().at.get(&(ghid, state.to_vec())) {
            return Some(*t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn get_until(link: &HgxLink, ghid: Ghid, state: &[u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        match link.get(ghid).await {
            Ok(v) if v.state == state => return,
            Ok(_) => {
                let _ = link.sync(ghid).await;
            }
            Err(e) => assert!(Instant::now() < deadline, "get: {e}"),
        }
        assert!(Instant::now() < deadline, "state never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The counter of the persister's current frame of `ghid`.
async fn frame_counter(persister: &PersisterClient, ghid: &Ghid) -> u64 {
    let bytes = persister.get(ghid).await.expect("persister has the object");
    match Object::decode(&bytes, Policy::STRICT).expect("a valid object") {
        Object::Gobd(f) => f.counter,
        other => panic!("not a dynamic binding: {other:?}"),
    }
}

struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    assert!(!ms.is_empty());
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Stats {
        n: ms.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: *ms.last().unwrap(),
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn state(tag: &str, i: usize) -> Vec<u8> {
    // ~100 bytes of state, a typical small app object.
    format!("{tag}:{i:06}:{}", "x".repeat(88)).into_bytes()
}

/// How long the final state of a run may take to reach the other daemon before it counts
/// as not delivered.
const FINAL_WAIT: Duration = Duration::from_secs(10);

async fn bench() {
    let n = env_or("APP_LATENCY_N", 200).max(1);
    let interval = Duration::from_millis(env_or("APP_LATENCY_INTERVAL_MS", 20) as u64);
    let burst = env_or("APP_LATENCY_BURST", 500).max(1);
    let in_flight = env_or("APP_LATENCY_IN_FLIGHT", 32).max(1);
    let seq = env_or("APP_LATENCY_SEQ", 100).max(1);

    let pdir = tempfile::tempdir().unwrap();
    let (h1, h2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_persister, pport) = start_persister(pdir.path()).await;
    let (_d1, port1) = start_hgxd(h1.path(), pport, None).await;
    let (fp, uid) = account(h1.path());
    let (_d2, port2) = start_hgxd(h2.path(), pport, Some((&fp, &uid))).await;
    let a = HgxLink::connect_home(h1.path(), port1).await.unwrap();
    let c = HgxLink::connect_home(h1.path(), port1).await.unwrap();
    let b = HgxLink::connect_home(h2.path(), port2).await.unwrap();
    let (persister, _notes) = PersisterClient::connect(&format!("ws://127.0.0.1:{pport}/ws"))
        .await
        .unwrap();
    let seen_b = record_updates(&b);
    let seen_c = record_updates(&c);

    // ---- latency: paced pushes, A (daemon 1) -> B (daemon 2) and C (daemon 1).
    let obj = a
        .new_object(state("lat", 0), None, true, false)
        .await
        .unwrap()
        .ghid;
    get_until(&b, obj, &state("lat", 0)).await;
    c.get(obj).await.unwrap();
    for i in 1..=20 {
        // Warm-up: connections, caches, the persister's subscription.
        a.push(obj, state("warm", i), None).await.unwrap();
        tokio::time::sleep(interval).await;
    }
    get_until(&b, obj, &state("warm", 20)).await;

    let mut sent = Vec::with_capacity(n);
    let mut ack = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..n {
        tick.tick().await;
        let t = Instant::now();
        a.push(obj, state("lat", i + 1), None).await.unwrap();
        sent.push(t);
        ack.push(ms(t.elapsed()));
    }
    let lat_final_b = wait_seen(&seen_b, obj, &state("lat", n), FINAL_WAIT).await;
    wait_seen(&seen_c, obj, &state("lat", n), FINAL_WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lat = |seen: &SeenRef| {
        let seen = seen.borrow();
        let v: Vec<f64> = (0..n)
            .filter_map(|i| {
                let t = seen.at.get(&(obj, state("lat", i + 1)))?;
                Some(ms(t.duration_since(sent[i])))
            })
            .collect();
        v
    };
    let (lat_b, lat_c) = (stats(lat(&seen_b)), stats(lat(&seen_c)));
    let ack = stats(ack);

    // ---- sequential: one push in flight.
    let sobj = a
        .new_object(state("seq", 0), None, true, false)
        .await
        .unwrap()
        .ghid;
    get_until(&b, sobj, &state("seq", 0)).await;
    let c0 = frame_counter(&persister, &sobj).await;
    let seq_t0 = Instant::now();
    for i in 1..=seq {
        a.push(sobj, state("seq", i), None).await.unwrap();
    }
    let seq_elapsed = seq_t0.elapsed();
    let seq_run = Run {
        pushes: seq,
        elapsed: seq_elapsed,
        final_at: wait_seen(&seen_b, sobj, &state("seq", seq), FINAL_WAIT).await,
        frames: frame_counter(&persister, &sobj).await - c0,
        updates: seen_b.borrow().count.get(&sobj).copied().unwrap_or(0),
        t0: seq_t0,
    };
    // Whether or not B was told, it must be able to read the final state.
    get_until(&b, sobj, &state("seq", seq)).await;

    // ---- coalesced: `burst` pushes, up to `in_flight` at once, to one object.
    let tobj = a
        .new_object(state("burst", 0), None, true, false)
        .await
        .unwrap()
        .ghid;
    get_until(&b, tobj, &state("burst", 0)).await;
    let c0 = frame_counter(&persister, &tobj).await;
    let burst_t0 = Instant::now();
    let results: Vec<_> = futures_util::stream::iter(1..=burst)
        .map(|i| {
            let a = a.clone();
            async move { a.push(tobj, state("burst", i), None).await }
        })
        .buffered(in_flight)
        .collect()
        .await;
    let burst_elapsed = burst_t0.elapsed();
    assert!(results.iter().all(Result::is_ok), "every push acknowledged");
    // `buffered` issues the pushes in order on one connection, so the last one's state is
    // the final state.
    let burst_final = wait_seen(&seen_b, tobj, &state("burst", burst), FINAL_WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let burst_run = Run {
        pushes: burst,
        elapsed: burst_elapsed,
        final_at: burst_final,
        frames: frame_counter(&persister, &tobj).await - c0,
        updates: seen_b.borrow().count.get(&tobj).copied().unwrap_or(0),
        t0: burst_t0,
    };
    get_until(&b, tobj, &state("burst", burst)).await;

    // ---- report
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "app_latency: 1 hgx-persister + 2 hgxd (one account, two devices), 127.0.0.1, {cpus} CPUs"
    );
    println!();
    println!(
        "latency: {n} pushes of ~100 B, one every {} ms, after 20 warm-up pushes",
        interval.as_millis()
    );
    println!("| path                                         | delivered | p50 ms | p99 ms | max ms | mean ms |");
    println!("|----------------------------------------------|----------:|-------:|-------:|-------:|--------:|");
    for (name, s) in [
        ("A push -> A ack (daemon 1)", &ack),
        ("A push -> C update (same daemon)", &lat_c),
        ("A push -> B update (other daemon, persister)", &lat_b),
    ] {
        println!(
            "| {name:<44} | {:>9} | {:>6.2} | {:>6.2} | {:>6.2} | {:>7.2} |",
            format!("{}/{n}", s.n),
            s.p50,
            s.p99,
            s.max,
            s.mean
        );
    }
    if lat_final_b.is_none() {
        println!("(the final state did not reach B as an update within {FINAL_WAIT:?})");
    }
    println!();
    println!("throughput: one app, one object");
    println!("| mode                     | pushes | acked/s | frames published | B updates | A start -> B final update ms |");
    println!("|--------------------------|-------:|--------:|-----------------:|----------:|-----------------------------:|");
    for (mode, r) in [
        ("sequential (1 in flight)".to_owned(), &seq_run),
        (format!("coalesced ({in_flight} in flight)"), &burst_run),
    ] {
        let fin = r.final_at.map_or_else(
            || format!("not delivered in {} s", FINAL_WAIT.as_secs()),
            |t| format!("{:.0}", ms(t.duration_since(r.t0))),
        );
        println!(
            "| {mode:<24} | {:>6} | {:>7.0} | {:>16} | {:>9} | {fin:>28} |",
            r.pushes,
            r.pushes as f64 / r.elapsed.as_secs_f64(),
            r.frames,
            r.updates,
        );
    }
    println!();
    a.close();
    b.close();
    c.close();
}

/// One throughput run, for the table.
struct Run {
    pushes: usize,
    elapsed: Duration,
    /// When B saw the final state as an update event (`None`: not within `FINAL_WAIT`).
    final_at: Option<Instant>,
    /// Frame counter delta on the persister.
    frames: u64,
    /// Update events app B (other daemon) received.
    updates: usize,
    t0: Instant,
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    actix_rt::System::new().block_on(bench());
}
