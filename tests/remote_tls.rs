//! Remotes over TLS, and remote failures made visible, on the real binaries: a persister
//! serving a certificate from a private CA (made by the test), daemons whose remote names
//! that CA in `ca_file` (they sync: one machine's object reaches the other) or does not (it
//! is refused, says so once at `warning`, and `hgxd status` shows why); refused, TLS and
//! handshake failures each warned once per change and recovered from at `info`; unknown
//! configuration keys warned about by both binaries.
//!
//! Every process listens on 127.0.0.1 only and runs in a temporary home; identities come
//! from the fixtures; every wait is bounded.

mod proc_support;
mod tls_support;

use std::path::Path;
use std::time::{Duration, Instant};

use hypergolix::golix::Ghid;
use hypergolix::ipc::HgxLink;
use proc_support::{free_port, Home, Persister, WAIT};
use tls_support::TestPki;

const PASSWORD: &str = "correct horse battery staple";
const WARNING: &str = "remote unreachable; retrying";

/// One `remotes:` entry.
fn remote(host: &str, port: u16, tls: bool, ca_file: Option<&Path>) -> String {
    let mut s = format!("  - host: {host}\n    port: {port}\n    tls: {tls}\n");
    if let Some(ca) = ca_file {
        s.push_str(&format!("    ca_file: {}\n", ca.display()));
    }
    s
}

/// Polls `probe` until it returns `Some`, for at most `within`.
async fn eventually<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The log lines that contain every one of `needles`.
fn lines_with(text: &str, needles: &[&str]) -> usize {
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// `hgxd status --ipc-port PORT` in `home`: its stdout (it must succeed).
async fn status(home: &Home, ipc_port: u16) -> String {
    let port = ipc_port.to_string();
    let (st, out) = home.run(None, &["status", "--ipc-port", &port]).await;
    assert!(st.success(), "hgxd status: {st}\n{out}");
    out
}

/// Polls `hgxd status` until the line about `url` contains every one of `want`; returns it.
async fn wait_status(home: &Home, ipc_port: u16, url: &str, want: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = status(home, ipc_port).await;
        let line = status_line(&st, url).to_owned();
        if want.iter().all(|w| line.contains(w)) {
            return line;
        }
        assert!(Instant::now() < deadline, "{want:?} never in {line}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The line of `status` output about `url`.
fn status_line<'a>(status: &'a str, url: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.starts_with(&format!("{url} ")))
        .unwrap_or_else(|| panic!("no status line for {url} in\n{status}"))
}

/// The `failed attempts N` of a status line.
fn failed_attempts(line: &str) -> u32 {
    line.split("failed attempts ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("failed attempts in {line}"))
}

/// (fingerprint, user_id) as `hgxd whoami` prints them.
async fn whoami(home: &Home) -> (String, String) {
    let (st, out) = home.run(None, &["whoami"]).await;
    assert!(st.success(), "{out}");
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {out}"))
            .trim()
            .to_owned()
    };
    (field("fingerprint:"), field("user_id:"))
}

/// `get` (and `sync`) until the object has `state`: another machine's writes take a moment.
async fn get_until(link: &HgxLink, ghid: Ghid, state: &[u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let last = match link.get(ghid).await {
            Ok(v) if v.state == state => return,
            Ok(v) => {
                let _ = link.sync(ghid).await;
                format!("state {:?}", String::from_utf8_lossy(&v.state))
            }
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "get {ghid}: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The README's TLS remote (`tls: true` plus `ca_file`) works between two machines of one
/// account; a daemon that does not trust the CA is refused, warns once, and `hgxd status`
/// shows the certificate error and its waiting outbox.
#[actix_rt::test]
async fn a_tls_remote_with_its_ca_file_syncs_and_one_without_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let persister = Persister::with_server_lines(&pki.server_lines()).await;
    let url = format!("wss://127.0.0.1:{}/ws", persister.port);
    let trusted = format!(
        "remotes:\n{}",
        remote("127.0.0.1", persister.port, true, Some(&pki.ca))
    );

    // Machine 1 (fixture 1) creates an object; it goes out over TLS.
    let one = Home::with_lines(dir.path().join("one"), "info", &trusted);
    let (_d1, port1) = one.start(PASSWORD, Some(1)).await;
    let a = HgxLink::connect_home(&one.path, port1).await.unwrap();
    let obj = a
        .new_object(b"over tls".to_vec(), None, true, false)
        .await
        .unwrap();
    wait_status(&one, port1, &url, &[" connected for ", " outbox 0"]).await;

    // Machine 2 of the same account: only the ids, the remote with its ca_file, the password.
    let (fp, uid) = whoami(&one).await;
    let two = Home::with_lines(
        dir.path().join("two"),
        "info",
        &format!("{trusted}user:\n  fingerprint: \"{fp}\"\n  user_id: \"{uid}\"\n"),
    );
    let (_d2, port2) = two.start(PASSWORD, None).await;
    let b = HgxLink::connect_home(&two.path, port2).await.unwrap();
    get_until(&b, obj.ghid, b"over tls").await;
    a.push(obj.ghid, b"still over tls".to_vec(), None)
        .await
        .unwrap();
    get_until(&b, obj.ghid, b"still over tls").await;
    assert_eq!(lines_with(&one.log_files(), &[WARNING]), 0);

    // Machine 3 (fixture 2) trusts only the public roots: refused, and it says so.
    let untrusting = format!(
        "remotes:\n{}",
        remote("127.0.0.1", persister.port, true, None)
    );
    let three = Home::with_lines(dir.path().join("three"), "info", &untrusting);
    let (_d3, port3) = three.start(PASSWORD, Some(2)).await;
    let c = HgxLink::connect_home(&three.path, port3).await.unwrap();
    c.new_object(b"stays here".to_vec(), None, true, false)
        .await
        .unwrap();
    eventually("the certificate warning", WAIT, || {
        (lines_with(&three.log_files(), &[WARNING, "certificate", &url]) > 0).then_some(())
    })
    .await;
    // Retries go on (backoff from 100 ms): status counts them, the log warned once.
    let deadline = Instant::now() + WAIT;
    let line = loop {
        let st = status(&three, port3).await;
        let line = status_line(&st, &url).to_owned();
        assert!(line.contains(" retrying for "), "{line}");
        assert!(
            line.contains("last error: certificate: the server's certificate is not accepted"),
            "{line}"
        );
        if failed_attempts(&line) >= 4 {
            break line;
        }
        assert!(Instant::now() < deadline, "{line}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let outbox: u64 = line
        .split("outbox ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(outbox > 0, "the account and the object wait: {line}");
    assert_eq!(
        lines_with(&three.log_files(), &[WARNING]),
        1,
        "one warning, not one per retry:\n{}",
        three.log_files()
    );
}

/// One daemon, four remotes: nothing listening (refused), TLS to a plain server (tls),
/// plain to a TLS server (handshake; its entry also has a misspelt `cafile`), and a TLS
/// server by host name (`localhost`) that works. Each failure is warned once with its
/// address and reason; status lists all four; the refused one recovers (info) once a
/// persister appears there, and its outbox drains. Both binaries warn about unknown keys.
#[actix_rt::test]
async fn remote_failures_are_warned_once_per_change_and_shown_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let plain = Persister::with_server_lines("").await;
    let tls = Persister::with_server_lines(&format!("{}  max_fram: 1\n", pki.server_lines())).await;
    let late = free_port();
    let urls = [
        format!("ws://127.0.0.1:{late}/ws"),
        format!("wss://127.0.0.1:{}/ws", plain.port),
        format!("ws://127.0.0.1:{}/ws", tls.port),
        format!("wss://localhost:{}/ws", tls.port),
    ];
    let lines = format!(
        "remotes:\n{}{}{}    cafile: {}\n{}",
        remote("127.0.0.1", late, false, None),
        remote("127.0.0.1", plain.port, true, Some(&pki.ca)),
        remote("127.0.0.1", tls.port, false, None),
        pki.ca.display(),
        remote("localhost", tls.port, true, Some(&pki.ca)),
    );
    let home = Home::with_lines(dir.path().join("home"), "info", &lines);
    let (_d, port) = home.start(PASSWORD, Some(3)).await;

    let config = home.file("hypergolix.yml");
    let log = home.log_files();
    assert_eq!(
        lines_with(
            &log,
            &[
                "unknown configuration key",
                "remotes.2.cafile",
                &config.display().to_string()
            ]
        ),
        1,
        "{log}"
    );
    let persister_log = tls.log_files();
    assert_eq!(
        lines_with(
            &persister_log,
            &["unknown configuration key", "server.max_fram"]
        ),
        1,
        "{persister_log}"
    );

    let expect = [
        (&urls[0], "refused"),
        (&urls[1], "tls"),
        (&urls[2], "handshake"),
    ];
    eventually("a warning per failing remote", WAIT, || {
        let log = home.log_files();
        expect
            .iter()
            .all(|(url, kind)| lines_with(&log, &[WARNING, url, &format!("kind: {kind}")]) == 1)
            .then_some(())
    })
    .await;
    // Retries go on (status counts them); each remote was still warned about once.
    for (url, kind) in &expect {
        let want = format!("last error: {kind}: ");
        let deadline = Instant::now() + WAIT;
        loop {
            let st = status(&home, port).await;
            assert_eq!(st.lines().count(), 4, "{st}");
            let line = status_line(&st, url);
            assert!(
                line.contains(" retrying for ") && line.contains(&want),
                "{line}"
            );
            if failed_attempts(line) >= 4 {
                break;
            }
            assert!(Instant::now() < deadline, "{line}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let log = home.log_files();
    for (url, _) in &expect {
        assert_eq!(lines_with(&log, &[WARNING, url]), 1, "{url}:\n{log}");
    }
    assert_eq!(
        lines_with(&log, &["remote connected", &urls[3]]),
        1,
        "{log}"
    );
    let st = status(&home, port).await;
    assert!(
        status_line(&st, &urls[3]).contains(" connected for "),
        "{st}"
    );
    assert!(status_line(&st, &urls[3]).contains(" outbox 0"), "{st}");

    // A persister appears on the refused port: recovery is logged at info, the outbox drains.
    let _late = Persister::on_port(late, "").await;
    eventually("the reconnection", WAIT, || {
        (lines_with(&home.log_files(), &["remote reconnected", &urls[0]]) == 1).then_some(())
    })
    .await;
    let line = wait_status(&home, port, &urls[0], &[" connected for ", " outbox 0"]).await;
    assert!(!line.contains("last error"), "{line}");
    assert_eq!(lines_with(&home.log_files(), &[WARNING, &urls[0]]), 1);
}

/// Configuration mistakes about TLS stop the start with a message naming the key, and
/// `hgxd status` without a running daemon says so.
#[actix_rt::test]
async fn tls_configuration_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let home = Home::with_lines(
        dir.path().join("home"),
        "info",
        &format!("remotes:\n{}", remote("127.0.0.1", 1, true, Some(&missing))),
    );
    let (st, out) = home.run(Some(PASSWORD), &[]).await;
    assert!(!st.success());
    assert!(
        out.contains("remotes.0.ca_file") && out.contains("no-such-ca.pem"),
        "{out}"
    );
    let plain_with_ca = Home::with_lines(
        dir.path().join("plain"),
        "info",
        "remotes:\n  - host: 127.0.0.1\n    port: 1\n    ca_file: ca.pem\n",
    );
    let (st, out) = plain_with_ca.run(Some(PASSWORD), &[]).await;
    assert!(!st.success());
    assert!(out.contains("set `tls: true`"), "{out}");

    let idle = Home::new(dir.path().join("idle"), "info", None);
    let (st, out) = idle.run(None, &["status", "--ipc-port", "1"]).await;
    assert!(!st.success());
    assert!(out.contains("is hgxd running"), "{out}");
}
