//! The real binaries as processes (`hgxd`, `hgx-persister`): first run and the config it
//! writes, `whoami`, file modes, the pid file, `stop`, SIGTERM and restart, a wrong password,
//! apps over the real IPC endpoint (objects, updates, errors, access control, origin check,
//! malformed frames), logging in on a second machine through the persister, and updates
//! from one machine reaching an app on the other.
//!
//! Every process runs in a temporary home (`HYPERGOLIX_HOME`, `HOME` and the working
//! directory), listens on 127.0.0.1 only, is killed when its guard drops, and every wait is
//! bounded. Identities come from the fixtures (`--identity-file`): no RSA key generation.

mod proc_support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hypergolix::actors::api::{AppEvent, ObjectView};
use hypergolix::config::Config;
use hypergolix::golix::Ghid;
use hypergolix::ipc::{CapabilityToken, ClientError, ErrorKind, HgxLink};
use proc_support::{free_port, identity_json, mode, ready_port, Persister, Proc, WAIT};
use rmpv::Value;
use tokio::sync::mpsc::UnboundedReceiver;

const PASSWORD: &str = "correct horse battery staple";

// ---- homes -------------------------------------------------------------------------------

/// One machine's `$HYPERGOLIX_HOME`.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    /// A home whose config has the process section (`ipc_port`), one remote, and, if given,
    /// the account's `user.fingerprint` and `user.user_id` (as on a second machine).
    fn new(ipc_port: u16, persister_port: u16, user: Option<(&str, &str)>) -> Home {
        let dir = tempfile::tempdir().unwrap();
        let mut yml = format!(
            "process:\n  ghidcache: ./ghidcache\n  logdir: ./logs\n  pid_file: ./hgxd.pid\n  \
             ipc_port: {ipc_port}\ninstrumentation:\n  verbosity: info\n\
             remotes:\n  - host: 127.0.0.1\n    port: {persister_port}\n    tls: false\n"
        );
        if let Some((fp, uid)) = user {
            yml.push_str(&format!(
                "user:\n  fingerprint: \"{fp}\"\n  user_id: \"{uid}\"\n"
            ));
        }
        std::fs::write(dir.path().join("hypergolix.yml"), yml).unwrap();
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(self.file("hypergolix.yml")).unwrap()
    }

    /// `user.fingerprint` and `user.user_id` from the config file.
    fn account(&self) -> (String, String) {
        let cfg = Config::load_from(Some(&self.file("hypergolix.yml")), false).unwrap();
        let field = |v: Option<String>, k: &str| {
            v.unwrap_or_else(|| panic!("user.{k} in\n{}", self.config_text()))
        };
        (
            field(cfg.user.fingerprint, "fingerprint"),
            field(cfg.user.user_id, "user_id"),
        )
    }

    /// `hgxd <args>` in this home; `HGX_PASSWORD` set when `password` is.
    fn hgxd(&self, password: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hgxd"));
        cmd.args(args)
            .current_dir(self.path())
            .env("HYPERGOLIX_HOME", self.path())
            .env("HOME", self.path())
            .env_remove("HGX_CONFIG")
            .env_remove("HGX_PASSWORD");
        if let Some(pw) = password {
            cmd.env("HGX_PASSWORD", pw);
        }
        cmd
    }

    /// Starts `hgxd` (importing fixture identity `identity` on first run) and waits for its
    /// ready line; returns the process and the IPC port it announced.
    async fn start(&self, password: &str, identity: Option<usize>) -> (Proc, u16) {
        let mut proc = self.spawn(password, identity);
        let port = ready_port(&mut proc).await;
        (proc, port)
    }

    /// Spawns `hgxd` (importing fixture `identity` on first run) without waiting for it.
    fn spawn(&self, password: &str, identity: Option<usize>) -> Proc {
        let mut cmd = self.hgxd(Some(password), &[]);
        if let Some(n) = identity {
            let path = self.file("id.json");
            std::fs::write(&path, identity_json(n).to_string()).unwrap();
            cmd.arg("--identity-file").arg(path);
        }
        Proc::spawn("hgxd", cmd)
    }

    /// Runs `hgxd <args>` to completion.
    async fn run(&self, password: Option<&str>, args: &[&str]) -> (ExitStatus, String, String) {
        Proc::spawn("hgxd", self.hgxd(password, args))
            .finish(WAIT * 2)
            .await
    }

    async fn link(&self, port: u16) -> HgxLink {
        HgxLink::connect_home(self.path(), port)
            .await
            .expect("app connects with ipc.token")
    }
}

// ---- app helpers -------------------------------------------------------------------------

/// Waits for an update of `ghid` carrying `state` (other updates are skipped).
async fn update(rx: &mut UnboundedReceiver<AppEvent>, ghid: Ghid, state: &[u8]) -> ObjectView {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await.expect("event stream open") {
                AppEvent::Update(v) if v.ghid == ghid && v.state == state => return v,
                _ => continue,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no update to {:?}", String::from_utf8_lossy(state)))
}

/// `get` (and `sync`) until the object has `state`: another machine's writes take a moment.
async fn get_until(link: &HgxLink, ghid: Ghid, state: &[u8]) -> ObjectView {
    let deadline = Instant::now() + WAIT;
    loop {
        let last = match link.get(ghid).await {
            Ok(v) if v.state == state => return v,
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

fn code(e: ClientError) -> String {
    match e {
        ClientError::Remote(r) => r.code,
        other => panic!("expected a daemon error, got {other}"),
    }
}

// ---- raw websocket -----------------------------------------------------------------------

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// The error code of a failure reply.
fn err_code(reply: &Value) -> Option<&str> {
    get(get(reply, "err")?, "code")?.as_str()
}

fn request(id: u64, op: &str, args: Value) -> Vec<u8> {
    let mut buf = Vec::new();
    rmpv::encode::write_value(
        &mut buf,
        &map(vec![("id", id.into()), ("op", op.into()), ("args", args)]),
    )
    .unwrap();
    buf
}

async fn raw_connect(
    port: u16,
) -> impl Stream<Item = Result<awc::ws::Frame, awc::error::WsProtocolError>>
       + Sink<awc::ws::Message>
       + Unpin {
    let (_resp, framed) = awc::Client::default()
        .ws(format!("ws://127.0.0.1:{port}/"))
        .connect()
        .await
        .expect("websocket handshake");
    framed
}

async fn raw_send<S: Sink<awc::ws::Message> + Unpin>(ws: &mut S, bytes: Vec<u8>) {
    if ws
        .send(awc::ws::Message::Binary(bytes.into()))
        .await
        .is_err()
    {
        panic!("send failed");
    }
}

/// The next message, or `None` once the daemon closes the connection.
async fn raw_recv<S>(ws: &mut S) -> Option<Value>
where
    S: Stream<Item = Result<awc::ws::Frame, awc::error::WsProtocolError>> + Unpin,
{
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(awc::ws::Frame::Binary(b))) => {
                    return Some(rmpv::decode::read_value(&mut &b[..]).expect("msgpack reply"))
                }
                Some(Ok(awc::ws::Frame::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("a reply or a close within WAIT")
}

// ---- tests -------------------------------------------------------------------------------

/// First run, the config it writes, `whoami`, file modes, a refused second instance, `stop`,
/// a wrong password and the restart that follows.
#[actix_rt::test]
async fn first_run_whoami_second_instance_stop_and_wrong_password() {
    let persister = Persister::with_server_lines("").await;
    let ipc_port = free_port();
    let home = Home::new(ipc_port, persister.port, None);
    let fixture_fp = identity_json(1)["ghid_b64"].as_str().unwrap().to_owned();

    let (mut d, port) = home.start(PASSWORD, Some(1)).await;
    assert_eq!(port, ipc_port, "listens on the configured port");
    assert!(d.stderr().contains("account created"), "{}", d.stderr());

    // The account's ids are in the config; the password and the root secret are not.
    let (fp, uid) = home.account();
    assert_eq!(fp, fixture_fp);
    assert_ne!(uid, fp);
    let text = home.config_text();
    assert!(!text.contains(PASSWORD), "{text}");
    let cfg = Config::load_from(Some(&home.file("hypergolix.yml")), false).unwrap();
    assert!(cfg.user.root_secret.is_none(), "{text}");
    assert_eq!(
        mode(&home.file("hypergolix.yml")),
        0o600,
        "it can hold secrets"
    );
    for line in d.output().lines() {
        assert!(!line.contains(PASSWORD), "password in the output: {line}");
    }

    let (st, out, err) = home.run(None, &["whoami"]).await;
    assert!(st.success(), "{err}");
    assert!(
        out.contains(&format!("fingerprint: {fp}")) && out.contains(&uid),
        "{out}"
    );

    assert_eq!(mode(&home.file("ipc.token")), 0o600);
    assert_eq!(mode(&home.file("ghidcache")), 0o700);
    let pid_file = home.file("hgxd.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        d.pid().to_string()
    );

    let link = home.link(port).await;
    assert_eq!(
        (link.fingerprint().as_str(), link.user_id().as_str()),
        (fp.clone(), uid.clone())
    );
    let obj = link
        .new_object(b"before stop".to_vec(), None, true, false)
        .await
        .unwrap();
    let token = std::fs::read_to_string(home.file("ipc.token")).unwrap();

    // A second daemon on the same home refuses, says why, and disturbs nothing.
    let (st, _, err) = home.run(Some(PASSWORD), &[]).await;
    assert!(!st.success());
    assert!(
        err.contains(&format!("already running as pid {}", d.pid())),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(home.file("ipc.token")).unwrap(),
        token
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        d.pid().to_string()
    );
    assert_eq!(link.whoami().await.unwrap().user_id.as_str(), uid);
    link.close();

    // `stop` signals it through the pid file and waits; it exits 0 and tidies up.
    let (st, _, err) = home.run(None, &["stop"]).await;
    assert!(st.success(), "{err}");
    assert!(err.contains(&format!("stopped (pid {})", d.pid())), "{err}");
    let st = d.wait_exit(WAIT).await;
    assert!(st.success(), "{st}\n{}", d.stderr());
    assert!(!pid_file.exists(), "pid file removed");
    assert!(!home.file("ipc.token").exists(), "ipc.token removed");
    assert!(
        std::fs::read_dir(home.file("logs")).unwrap().count() >= 1,
        "a log file per start"
    );
    // Without the token file, an app cannot even try.
    match HgxLink::connect_home(home.path(), port).await {
        Err(ClientError::Token(_)) => {}
        other => panic!("expected a token error, got {other:?}"),
    }

    // A wrong password: refused with a clear message, nothing left behind or changed.
    let (st, _, err) = home.run(Some("wrong horse"), &[]).await;
    assert!(!st.success());
    assert!(err.contains("wrong password"), "{err}");
    assert!(!pid_file.exists());
    assert!(!home.file("ipc.token").exists());
    assert_eq!(home.config_text(), text);

    // The right one still opens everything.
    let (_d, port) = home.start(PASSWORD, None).await;
    let link = home.link(port).await;
    assert_eq!(link.fingerprint().as_str(), fp);
    assert_eq!(link.get(obj.ghid).await.unwrap().state, b"before stop");
    let (st, out, _) = home.run(None, &["whoami"]).await;
    assert!(st.success() && out.contains(&uid), "{out}");
}

/// Two apps on one daemon through the real endpoint; error replies keep the session;
/// the token and origin checks.
#[actix_rt::test]
async fn apps_share_objects_and_the_endpoint_guards_itself() {
    let persister = Persister::with_server_lines("").await;
    let home = Home::new(0, persister.port, None);
    let (_d, port) = home.start(PASSWORD, Some(2)).await;

    // App A makes and pushes; app B opens it and receives A's next push as an update.
    let a = home.link(port).await;
    let b = home.link(port).await;
    let mut a_events = a.events();
    let mut b_events = b.events();
    let obj = a
        .new_object(b"v0".to_vec(), None, true, false)
        .await
        .unwrap();
    assert!(obj.dynamic && !obj.private);
    a.push(obj.ghid, b"v1".to_vec(), None).await.unwrap();
    let seen = b.get(obj.ghid).await.unwrap();
    assert_eq!(
        (seen.state.as_slice(), seen.author, seen.dynamic),
        (&b"v1"[..], a.fingerprint(), true)
    );
    a.push(obj.ghid, b"v2".to_vec(), None).await.unwrap();
    update(&mut b_events, obj.ghid, b"v2").await;
    // ... and B's push reaches A; the pusher is not told of its own push.
    b.push(obj.ghid, b"v3".to_vec(), None).await.unwrap();
    update(&mut a_events, obj.ghid, b"v3").await;
    let echo = tokio::time::timeout(Duration::from_millis(300), b_events.recv()).await;
    assert!(echo.is_err(), "the pusher got {echo:?}");

    // A static object is locally immutable.
    let s = a
        .new_object(b"static".to_vec(), None, false, false)
        .await
        .unwrap();
    assert!(!s.dynamic);
    let e = a.push(s.ghid, b"nope".to_vec(), None).await.unwrap_err();
    assert_eq!(code(e), "locally_immutable");

    // An unknown op is answered and the session continues.
    let e = a.call("frobnicate", map(vec![])).await.unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::UnknownOp));
    assert_eq!(a.whoami().await.unwrap().fingerprint, a.fingerprint());

    // A wrong token is refused.
    let url = format!("ws://127.0.0.1:{port}/");
    let e = HgxLink::connect(&url, &CapabilityToken::generate())
        .await
        .unwrap_err();
    assert_eq!(code(e), "access_denied");

    // A hello without a token: refused, then closed.
    let mut ws = raw_connect(port).await;
    raw_send(&mut ws, request(1, "hello", map(vec![]))).await;
    let reply = raw_recv(&mut ws).await.expect("a reply");
    assert_eq!(err_code(&reply), Some("access_denied"), "{reply}");
    assert_eq!(raw_recv(&mut ws).await, None, "closed after a failed hello");

    // Any op before hello: refused, but the connection stays open for a hello.
    let token = CapabilityToken::read_file(home.path()).unwrap();
    let hello = || {
        map(vec![
            ("token", Value::Binary(token.as_bytes().to_vec())),
            ("client", "raw".into()),
        ])
    };
    let mut ws = raw_connect(port).await;
    raw_send(&mut ws, request(1, "whoami", map(vec![]))).await;
    let reply = raw_recv(&mut ws).await.unwrap();
    assert_eq!(err_code(&reply), Some("access_denied"), "{reply}");
    raw_send(&mut ws, request(2, "hello", hello())).await;
    let reply = raw_recv(&mut ws).await.unwrap();
    assert_eq!(get(&reply, "id"), Some(&Value::from(2)), "{reply}");
    assert!(get(&reply, "ok").is_some_and(Value::is_map), "{reply}");

    // Malformed frames (not msgpack; msgpack but not a request) are answered `malformed`
    // and the session continues; so does an unknown op.
    let frames: [&[u8]; 2] = [b"\xc1\xc1 not msgpack", b"\x2a"];
    for frame in frames {
        raw_send(&mut ws, frame.to_vec()).await;
        let reply = raw_recv(&mut ws).await.expect("a reply, not a close");
        assert_eq!(err_code(&reply), Some("malformed"), "{reply}");
        assert_eq!(get(&reply, "id"), Some(&Value::Nil), "{reply}");
    }
    raw_send(&mut ws, request(3, "no_such_op", map(vec![]))).await;
    let reply = raw_recv(&mut ws).await.unwrap();
    assert_eq!(err_code(&reply), Some("unknown_op"), "{reply}");
    assert_eq!(get(&reply, "id"), Some(&Value::from(3)));
    raw_send(&mut ws, request(4, "whoami", map(vec![]))).await;
    let reply = raw_recv(&mut ws).await.unwrap();
    assert_eq!(get(&reply, "id"), Some(&Value::from(4)), "{reply}");
    let who = get(&reply, "ok").expect("whoami succeeds");
    assert_eq!(
        get(who, "fingerprint"),
        Some(&Value::Binary(a.fingerprint().as_bytes().to_vec()))
    );

    // A browser's handshake is refused before any token check.
    let refused = awc::Client::default()
        .ws(url.as_str())
        .origin("http://evil.example")
        .connect()
        .await;
    match refused {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 403),
        Err(e) => panic!("expected HTTP 403, got {e}"),
        Ok(_) => panic!("a browser origin was admitted"),
    }
    // The apps are unaffected by all of the above.
    a.push(obj.ghid, b"v4".to_vec(), None).await.unwrap();
    update(&mut b_events, obj.ghid, b"v4").await;
}

/// SIGTERM and a restart keep objects; a second machine logs in with only the account ids,
/// the remote and the password, and reads (and follows) the object through the persister.
#[actix_rt::test]
async fn sigterm_restart_keeps_objects_and_a_second_machine_logs_in() {
    let persister = Persister::with_server_lines("").await;
    let home1 = Home::new(0, persister.port, None);
    let (mut d1, port1) = home1.start(PASSWORD, Some(3)).await;
    let (fp, uid) = home1.account();

    let link = home1.link(port1).await;
    let obj = link
        .new_object(b"r0".to_vec(), None, true, false)
        .await
        .unwrap();
    link.push(obj.ghid, b"r1".to_vec(), None).await.unwrap();
    link.close();

    d1.signal(libc::SIGTERM);
    let st = d1.wait_exit(WAIT).await;
    assert!(st.success(), "clean exit on SIGTERM: {st}\n{}", d1.stderr());
    assert!(!home1.file("hgxd.pid").exists());
    assert!(!home1.file("ipc.token").exists());

    let (_d1, port1) = home1.start(PASSWORD, None).await;
    let a = home1.link(port1).await;
    assert_eq!(a.get(obj.ghid).await.unwrap().state, b"r1");
    a.push(obj.ghid, b"r2".to_vec(), None).await.unwrap();

    // Machine 2: nothing but the ids, the remote and the password.
    let home2 = Home::new(0, persister.port, Some((&fp, &uid)));
    let config2 = home2.config_text();
    // The wrong password is refused there too (checked against the root object fetched
    // from the persister), and changes nothing.
    let (st, _, err) = home2.run(Some("wrong horse"), &[]).await;
    assert!(!st.success());
    assert!(err.contains("wrong password"), "{err}");
    assert_eq!(home2.config_text(), config2);
    let (_d2, port2) = home2.start(PASSWORD, None).await;
    assert_eq!(
        home2.config_text(),
        config2,
        "a login writes nothing to the config"
    );
    let (st, out, err) = home2.run(None, &["whoami"]).await;
    assert!(st.success(), "{err}");
    assert!(
        out.contains(&format!("fingerprint: {fp}")) && out.contains(&uid),
        "{out}"
    );
    let b = home2.link(port2).await;
    assert_eq!(
        (b.fingerprint().as_str(), b.user_id().as_str()),
        (fp.clone(), uid.clone())
    );
    let mut b_events = b.events();
    let seen = get_until(&b, obj.ghid, b"r2").await;
    assert_eq!(seen.author.as_str(), fp);
    // And it follows machine 1's pushes.
    a.push(obj.ghid, b"r3".to_vec(), None).await.unwrap();
    update(&mut b_events, obj.ghid, b"r3").await;
}

/// A first run reports ready only once its new account is on the remote, where another
/// machine of the user logs in from: here the remote comes up a second after `hgxd` starts.
#[actix_rt::test]
async fn a_first_run_is_ready_once_its_account_is_on_the_remote() {
    let mut persister = Persister::with_server_lines("").await;
    persister.proc.kill9().await;
    let home = Home::new(0, persister.port, None);
    let started = async {
        let (d, _port) = home.start(PASSWORD, Some(3)).await;
        (d, Instant::now())
    };
    let remote_up = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        persister.restart_with("").await;
        Instant::now()
    };
    let ((d, ready_at), up_at) = tokio::join!(started, remote_up);
    assert!(
        ready_at > up_at,
        "ready before its remote was up:\n{}",
        d.stderr()
    );
    let (_, uid) = home.account();
    assert!(
        persister.serves_account(&uid).await,
        "ready, but the account is not at the persister"
    );
    assert!(
        d.stderr()
            .contains("hgxd: account uploaded to every remote"),
        "{}",
        d.stderr()
    );
}

/// A first run whose remote stays down still comes up (after a bounded wait), and says that
/// the new account is not there yet, and why, on stderr and in its log.
#[actix_rt::test]
async fn a_first_run_without_its_remote_says_its_account_is_not_there_yet() {
    let mut persister = Persister::with_server_lines("").await;
    persister.proc.kill9().await;
    let home = Home::new(0, persister.port, None);
    let (d, port) = home.start(PASSWORD, Some(3)).await;
    let err = d.stderr();
    let remote = format!("ws://127.0.0.1:{}", persister.port);
    assert!(
        err.contains(&format!(
            "hgxd: warning: the new account is not yet on {remote}"
        )) && err.contains("other machines cannot log in through it"),
        "{err}"
    );
    assert!(!err.contains("account uploaded"), "{err}");
    let log = proc_support::files_text(&home.file("logs"));
    assert!(
        log.contains("new account not yet on a remote") && log.contains(&remote),
        "{log}"
    );
    // It serves apps all the same.
    let link = home.link(port).await;
    link.new_object(b"offline".to_vec(), None, true, false)
        .await
        .unwrap();
}

/// SIGTERM while a first run waits for its remote: the normal clean stop (no ready, the pid
/// file removed, "stopped" logged), not death by the signal.
#[actix_rt::test]
async fn a_first_run_stops_cleanly_while_it_waits_for_its_remote() {
    let mut persister = Persister::with_server_lines("").await;
    persister.proc.kill9().await;
    let home = Home::new(0, persister.port, None);
    let mut d = home.spawn(PASSWORD, Some(3));
    d.wait_line("hgxd: account created", proc_support::START)
        .await;
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(WAIT).await;
    assert!(st.success(), "clean exit on SIGTERM: {st}\n{}", d.stderr());
    assert!(!d.stderr().contains("ready"), "{}", d.stderr());
    assert!(!home.file("hgxd.pid").exists());
    let log = proc_support::files_text(&home.file("logs"));
    assert!(log.contains("stopped"), "{log}");
}

/// A first run whose remote refuses the new account (its messages are too large for it) says
/// so rather than "uploaded": the refused objects leave the outbox, but the account is not there.
#[actix_rt::test]
async fn a_first_run_whose_remote_refuses_its_account_says_so() {
    let persister = Persister::with_server_lines("  max_frame: 2048\n").await;
    let home = Home::new(0, persister.port, None);
    let (d, port) = home.start(PASSWORD, Some(3)).await;
    let err = d.stderr();
    assert!(
        err.contains("hgxd: warning: the new account is not yet on") && err.contains("too_large"),
        "{err}"
    );
    assert!(!err.contains("account uploaded"), "{err}");
    let port = port.to_string();
    let (st, out, err) = home.run(None, &["status", "--ipc-port", &port]).await;
    assert!(
        st.success() && out.contains("last refused: too_large"),
        "{st}\n{out}\n{err}"
    );
}

/// A series of pushes on one machine: a tracking app on another machine ends up with the
/// final state as an update event, without calling `sync` (intermediate states may be
/// coalesced away).
#[actix_rt::test]
async fn the_last_of_a_series_of_pushes_reaches_the_other_machine() {
    let persister = Persister::with_server_lines("").await;
    let home1 = Home::new(0, persister.port, None);
    let (_d1, port1) = home1.start(PASSWORD, Some(1)).await;
    let (fp, uid) = home1.account();
    let home2 = Home::new(0, persister.port, Some((&fp, &uid)));
    let (_d2, port2) = home2.start(PASSWORD, None).await;
    let a = home1.link(port1).await;
    let b = home2.link(port2).await;
    let obj = a
        .new_object(b"s0".to_vec(), None, true, false)
        .await
        .unwrap();
    get_until(&b, obj.ghid, b"s0").await;
    let mut b_events = b.events();
    for i in 1..=SERIES {
        a.push(obj.ghid, format!("s{i}").into_bytes(), None)
            .await
            .unwrap();
    }
    update(&mut b_events, obj.ghid, format!("s{SERIES}").as_bytes()).await;
}

const SERIES: usize = 60;

/// A burst of pushes to several objects at once, then kill -9 right after the last
/// acknowledgement, before the account's next flush of the objects' secrets (at most every
/// `LAG_FLUSH_INTERVAL`, 1 s): the restarted machine reads every object's last state, and so
/// does a second machine that logs in afterwards, which knows only the secrets the account
/// flushed (frames reach back to them).
#[actix_rt::test]
async fn a_kill_right_after_a_burst_loses_no_latest_state_on_either_machine() {
    const OBJECTS: usize = 3;
    // More than the 64 frames behind at which the account flushes at once.
    const BURST: usize = 80;
    let persister = Persister::with_server_lines("").await;
    let home1 = Home::new(0, persister.port, None);
    let (mut d1, port1) = home1.start(PASSWORD, Some(1)).await;
    let (fp, uid) = home1.account();
    let a = home1.link(port1).await;
    let mut objects = Vec::new();
    for k in 0..OBJECTS {
        let o = a.new_object(format!("o{k}-0").into_bytes(), None, true, false);
        objects.push(o.await.unwrap().ghid);
    }
    let started = Instant::now();
    let bursts = objects.iter().enumerate().map(|(k, &ghid)| {
        let a = &a;
        async move {
            for i in 1..=BURST {
                let state = format!("o{k}-{i}").into_bytes();
                a.push(ghid, state, None).await.unwrap();
            }
        }
    });
    futures_util::future::join_all(bursts).await;
    d1.kill9().await;
    println!(
        "{} pushes acknowledged in {:?}, then kill -9",
        OBJECTS * BURST,
        started.elapsed()
    );
    let last = |k: usize| format!("o{k}-{BURST}").into_bytes();

    let (_d1, port1) = home1.start(PASSWORD, None).await;
    let a = home1.link(port1).await;
    for (k, &ghid) in objects.iter().enumerate() {
        let now = a.get(ghid).await.expect("the object opens after the crash");
        assert_eq!(now.state, last(k), "object {k} after the restart");
    }
    let home2 = Home::new(0, persister.port, Some((&fp, &uid)));
    let (_d2, port2) = home2.start(PASSWORD, None).await;
    let b = home2.link(port2).await;
    for (k, &ghid) in objects.iter().enumerate() {
        get_until(&b, ghid, &last(k)).await;
    }
}

/// With `$HYPERGOLIX_HOME` set, neither binary reads or writes `~/.hypergolix`, even when a
/// config file sits there (and in the working directory).
#[tokio::test]
async fn hypergolix_home_isolates_from_the_user_home() {
    let user_home = tempfile::tempdir().unwrap();
    let stray_dir = user_home.path().join(".hypergolix");
    std::fs::create_dir(&stray_dir).unwrap();
    let stray = "user:\n  fingerprint: \"STRAY\"\n  user_id: \"STRAY\"\n\
                 process:\n  pid_file: ./stray.pid\n  ipc_port: 1\n";
    std::fs::write(stray_dir.join("hypergolix.yml"), stray).unwrap();
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("hypergolix.yml"), stray).unwrap();
    let home = tempfile::tempdir().unwrap();
    let in_homes = |bin: &str, args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(cwd.path())
            .env("HYPERGOLIX_HOME", home.path())
            .env("HOME", user_home.path())
            .env("HGX_PASSWORD", PASSWORD)
            .env_remove("HGX_CONFIG");
        cmd
    };

    let (st, out, err) = Proc::spawn("hgxd", in_homes(env!("CARGO_BIN_EXE_hgxd"), &["whoami"]))
        .finish(WAIT)
        .await;
    assert!(!st.success(), "whoami found an account: {out}");
    assert!(
        !out.contains("STRAY") && err.contains("no account yet"),
        "{out}\n{err}"
    );
    let (st, _, err) = Proc::spawn("hgxd", in_homes(env!("CARGO_BIN_EXE_hgxd"), &["stop"]))
        .finish(WAIT)
        .await;
    assert!(!st.success());
    assert!(
        !err.contains("stray.pid"),
        "stop used the stray config: {err}"
    );

    // First run: the account and its config land in $HYPERGOLIX_HOME.
    let id = home.path().join("id.json");
    std::fs::write(&id, identity_json(1).to_string()).unwrap();
    let mut cmd = in_homes(
        env!("CARGO_BIN_EXE_hgxd"),
        &["--ipc-port", "0", "--identity-file"],
    );
    cmd.arg(&id);
    let mut d = Proc::spawn("hgxd", cmd);
    ready_port(&mut d).await;
    let written = std::fs::read_to_string(home.path().join("hypergolix.yml")).unwrap();
    assert!(written.contains(identity_json(1)["ghid_b64"].as_str().unwrap()));
    drop(d);

    let mut cmd = in_homes(env!("CARGO_BIN_EXE_hgx-persister"), &["--port", "0"]);
    cmd.arg("--ghidcache").arg(home.path().join("pcache"));
    let p = Proc::spawn("hgx-persister", cmd);
    let deadline = Instant::now() + WAIT;
    while !p.output().contains("listening on") {
        assert!(Instant::now() < deadline, "persister: {}", p.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(p);

    let names: Vec<_> = std::fs::read_dir(&stray_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["hypergolix.yml"], "~/.hypergolix was written");
    assert_eq!(
        std::fs::read_to_string(stray_dir.join("hypergolix.yml")).unwrap(),
        stray
    );
}
