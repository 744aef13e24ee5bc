//! Shared test helpers: the fixture identities and the vectors folder (`tests/vectors/golix`).
//! Tests never generate RSA-4096 keys (too slow in debug builds); they load these.
#![allow(dead_code)]

use std::path::PathBuf;

use hypergolix::golix::FirstParty;

/// `tests/vectors/golix` of this checkout.
pub fn vectors_dir() -> PathBuf {
    hypergolix::testdata::vectors_dir()
}

/// Fixture identity `n` (1, 2 or 3) from `fixture_identities.json`.
pub fn fixture(n: usize) -> FirstParty {
    let id = &hypergolix::testdata::fixture_identity_json(n);
    let hex_field = |k: &str| hex::decode(id[k].as_str().unwrap()).unwrap();
    let x: [u8; 32] = hex_field("exchange_private_hex").try_into().unwrap();
    let fp = FirstParty::import(
        &hex_field("signature_private_der_hex"),
        &hex_field("encryption_private_der_hex"),
        &x,
    )
    .expect("fixture keys import");
    assert_eq!(fp.ghid().as_str(), id["ghid_b64"].as_str().unwrap());
    fp
}

/// Every `<ghid>.ghid` file under `vectors_dir()/rel`, as (file stem, bytes), sorted by name.
pub fn ghid_files(rel: &str) -> Vec<(String, Vec<u8>)> {
    let dir = vectors_dir().join(rel);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ghid"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (stem, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no vectors in {}", dir.display());
    out
}

/// A JSON file under `vectors_dir()` (panics with its full path if unreadable).
pub fn vectors_json(rel: &str) -> serde_json::Value {
    hypergolix::testdata::vector_json(rel)
}

/// Hex of a JSON string field (panics with the field name if absent).
pub fn hex_of(v: &serde_json::Value, key: &str) -> Vec<u8> {
    let s = v[key].as_str().unwrap_or_else(|| panic!("missing {key}"));
    hex::decode(s).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Waits for a spawned server to exit, killing it (and failing) after `within`.
pub fn wait_exit(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().expect("wait on child") {
            return st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {within:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Raises the soft open-files limit to the hard limit (each subscriber costs two fds here:
/// the client end and the server end).
pub fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// A `kB` field (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status` (`pid` may be `"self"`), KiB;
/// `None` if the process or the field is not there.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
}

/// Spawns `hgx-persister --config <config>` (stderr discarded) and waits up to 30 s for its
/// `listening on http://ADDR` line; kills it and fails if none comes.
pub fn spawn_persister(config: &std::path::Path) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_hgx-persister"))
        .arg("--config")
        .arg(config)
        .env_remove("HYPERGOLIX_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hgx-persister");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(addr) = line.strip_prefix("listening on http://") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(addr) => (child, addr.parse().expect("the announced address")),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the persister did not announce its address");
        }
    }
}
