//! The operator's side of the real binaries: `hgxd config` (edits that keep the file's
//! comments, mode 0600, the restart notice), the account's ids recorded without losing
//! comments, the same exit statuses from both binaries, `--help` naming every `HGX_*`
//! variable, `hgx-persister` options after its subcommand, the pid file as a lock (a stale
//! file naming a live, unrelated process neither blocks a start nor gets signalled), and log
//! files rotated by size.
//!
//! Every process runs in a temporary directory on 127.0.0.1, with fixture identities; every
//! wait is bounded.

mod proc_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use hypergolix::config::Config;
use proc_support::{mode, persister_command, Home, Proc, LISTENING, START, WAIT};

const PASSWORD: &str = "correct horse battery staple";

/// A hand-written config: comments everywhere, one section in flow style.
const COMMENTED: &str = "\
# Alice's daemon. Keep this comment.
process:
  ghidcache: ./ghidcache   # the cache
  logdir: ./logs
  pid_file: ./hgxd.pid
  cache_capacity: 0        # raised to the 1 MiB sled needs
  ipc_port: 0              # any free port
instrumentation: {verbosity: info}

# The office persister.
remotes:
  # first
  - host: office.example
    port: 7770
    tls: false
user:
  # test-cost scrypt
  scrypt: {log_n: 10, r: 8, p: 1}
";

fn code(st: std::process::ExitStatus) -> i32 {
    st.code().unwrap_or(-1)
}

fn config_of(path: &Path) -> Config {
    Config::load_from(Some(path), false).unwrap()
}

/// `hgxd config <args>` in `home`: (exit code, stdout + stderr).
async fn hgxd_config(home: &Home, args: &[&str]) -> (i32, String) {
    let mut all = vec!["config"];
    all.extend_from_slice(args);
    let (st, out) = home.run(None, &all).await;
    (code(st), out)
}

#[actix_rt::test]
async fn hgxd_config_edits_keep_the_rest_of_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::bare(tmp.path().join("home"));
    std::fs::create_dir_all(&home.path).unwrap();
    let file = home.file("hypergolix.yml");
    std::fs::write(&file, COMMENTED).unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();

    let (c, out) = hgxd_config(&home, &["--add-remote", "hgx.example.org:443", "--tls"]).await;
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains("added remote wss://hgx.example.org:443"),
        "{out}"
    );
    assert!(
        out.contains("restart"),
        "says a running daemon must restart: {out}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text,
        COMMENTED.replace(
            "    tls: false\n",
            "    tls: false\n  - host: 'hgx.example.org'\n    port: 443\n    tls: true\n"
        ),
        "only the new remote's lines are new"
    );
    assert_eq!(mode(&file), 0o600);
    // The same remote again: nothing to write, nothing to restart for.
    let (c, out) = hgxd_config(&home, &["--add-remote", "hgx.example.org:443", "--tls"]).await;
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains("already there") && !out.contains("wrote"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    let ca_arg = ca.to_str().unwrap();
    let (c, out) = hgxd_config(&home, &["--add-remote", "[::1]:7771", "--ca-file", ca_arg]).await;
    assert_eq!(c, 0, "{out}");
    let (c, out) = hgxd_config(&home, &["--ipc-port", "7800", "--verbosity", "debug"]).await;
    assert_eq!(c, 0, "{out}");
    let (c, out) = hgxd_config(&home, &["--remove-remote", "office.example"]).await;
    assert_eq!(c, 0, "{out}");
    let (c, out) = hgxd_config(&home, &["--list-remotes"]).await;
    assert_eq!(c, 0, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "wss://hgx.example.org:443".to_owned(),
            format!("wss://[::1]:7771 (ca_file {ca_arg})"),
        ]
    );
    let cfg = config_of(&file);
    assert_eq!(cfg.process.ipc_port, 7800);
    assert_eq!(cfg.instrumentation.verbosity.as_str(), "debug");
    assert_eq!(cfg.remotes.len(), 2);
    assert_eq!(cfg.remotes[1].ca_file.as_deref(), Some(ca.as_path()));
    assert!(cfg.remotes[1].tls, "a CA file implies TLS");
    let text = std::fs::read_to_string(&file).unwrap();
    for kept in [
        "# Alice's daemon. Keep this comment.\n",
        "  ghidcache: ./ghidcache   # the cache\n",
        "  ipc_port: 7800              # any free port\n",
        "# The office persister.\nremotes:\n  # first\n  - host: 'hgx.example.org'\n",
        "user:\n  # test-cost scrypt\n  scrypt: {log_n: 10, r: 8, p: 1}\n",
    ] {
        assert!(text.contains(kept), "{kept:?} not in\n{text}");
    }

    // Refused, with exit status 2 and the file untouched.
    let before = std::fs::read_to_string(&file).unwrap();
    for args in [
        &["--add-remote", "host:notaport"][..],
        &["--remove-remote", "nobody.example:1"],
        &[
            "--add-remote",
            "x.example",
            "--ca-file",
            "/nonexistent/ca.pem",
        ],
        &["--tls"],
        &["--whoami"],
        &["--verbosity", "loud"],
        &[
            "--config",
            "/nonexistent/hypergolix.yml",
            "--add-remote",
            "x.example",
        ],
    ] {
        let (c, out) = hgxd_config(&home, args).await;
        assert_eq!(c, 2, "{args:?}: {out}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before, "{args:?}");
    }

    // A home without a file: the default file (commented, 0600) is created, then edited.
    let fresh = Home::bare(tmp.path().join("fresh"));
    let (c, out) = hgxd_config(&fresh, &["--add-remote", "127.0.0.1"]).await;
    assert_eq!(c, 0, "{out}");
    let file = fresh.file("hypergolix.yml");
    assert_eq!(mode(&file), 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("# Hypergolix configuration."), "{text}");
    assert!(text.contains("#   - host: hgx.example.org\n"), "{text}");
    let remotes = config_of(&file).remotes;
    assert_eq!(
        (remotes[0].host.as_str(), remotes[0].port),
        ("127.0.0.1", 7770)
    );
}

/// The first run records the account in a commented file without losing a comment, makes
/// the file 0600, and `hgxd config` then names the running daemon and shows the account.
#[actix_rt::test]
async fn first_run_keeps_comments_and_config_sees_the_running_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::bare(tmp.path().join("home"));
    std::fs::create_dir_all(&home.path).unwrap();
    let file = home.file("hypergolix.yml");
    // No remote: this machine only.
    let text = COMMENTED.replace(
        "remotes:\n  # first\n  - host: office.example\n    port: 7770\n    tls: false\n",
        "remotes: []  # none\n",
    );
    assert!(text.contains("remotes: []  # none\n"));
    std::fs::write(&file, &text).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (d, _port) = home.start(PASSWORD, Some(1)).await;

    let after = std::fs::read_to_string(&file).unwrap();
    assert_eq!(mode(&file), 0o600, "it can hold user.root_secret");
    let cfg = config_of(&file);
    let (fp, uid) = (cfg.user.fingerprint.unwrap(), cfg.user.user_id.unwrap());
    // Everything before the ids (added at the end of `user`) is byte for byte as written.
    assert!(after.starts_with(&text[..text.len() - 1]), "{after}");
    assert!(after.contains(&fp) && after.contains(&uid), "{after}");

    let (c, out) = hgxd_config(&home, &["--whoami"]).await;
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains(&format!("fingerprint: {fp}")) && out.contains(&uid),
        "{out}"
    );
    let (c, out) = hgxd_config(&home, &["--verbosity", "warning"]).await;
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains(&format!("hgxd is running (pid {})", d.pid())) && out.contains("restart"),
        "{out}"
    );
}

/// `hgx-persister` in `dir` with the config `yml` and extra args.
fn persister(dir: &Path, yml: &str, args: &[&str]) -> Command {
    std::fs::write(dir.join("hypergolix.yml"), yml).unwrap();
    let mut cmd = persister_command(dir);
    cmd.args(args);
    cmd
}

async fn finish(name: &str, cmd: Command) -> (i32, String) {
    let mut p = Proc::spawn(name, cmd);
    let st = p.wait_exit(WAIT).await;
    (code(st), p.output())
}

#[actix_rt::test]
async fn both_binaries_use_the_same_exit_statuses() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::bare(tmp.path().join("home"));
    std::fs::create_dir_all(&home.path).unwrap();
    let pdir = tmp.path().join("persister");
    std::fs::create_dir_all(&pdir).unwrap();

    // 2: usage (clap) and configuration errors.
    let (st, out) = home.run(None, &["--no-such-flag"]).await;
    assert_eq!(code(st), 2, "{out}");
    let (c, out) = finish("hgx-persister", persister(&pdir, "", &["--no-such-flag"])).await;
    assert_eq!(c, 2, "{out}");
    for bad in ["process: [\n", "process:\n  ipc_port: many\n"] {
        std::fs::write(home.file("hypergolix.yml"), bad).unwrap();
        let (st, out) = home.run(Some(PASSWORD), &[]).await;
        assert_eq!(code(st), 2, "{bad:?}: {out}");
        assert!(out.contains("hypergolix.yml"), "names the file: {out}");
    }
    for bad in ["server: [\n", "server:\n  port: many\n"] {
        let (c, out) = finish("hgx-persister", persister(&pdir, bad, &[])).await;
        assert_eq!(c, 2, "{bad:?}: {out}");
    }
    let (c, out) = finish(
        "hgx-persister",
        persister(&pdir, "server:\n  port: 0\n  tls_cert: ./cert.pem\n", &[]),
    )
    .await;
    assert_eq!(c, 2, "half a TLS configuration: {out}");
    let (c, out) = finish(
        "hgx-persister",
        persister(
            &pdir,
            "server:\n  port: 0\n  tls_cert: ./no-cert.pem\n  tls_key: ./no-key.pem\n",
            &[],
        ),
    )
    .await;
    assert_eq!(c, 2, "TLS files that are not there: {out}");
    assert!(out.contains("no-cert.pem"), "{out}");
    // hgxd without a password source and no terminal: a usage error.
    std::fs::write(home.file("hypergolix.yml"), "process:\n  ipc_port: 0\n").unwrap();
    let (st, out) = home.run(None, &[]).await;
    assert_eq!(code(st), 2, "{out}");
    assert!(out.contains("HGX_PASSWORD"), "{out}");

    // 1: runtime failures. `stop` with nothing to stop; a port already taken.
    let (st, out) = home.run(None, &["stop"]).await;
    assert_eq!(code(st), 1, "{out}");
    let ok = "server:\n  port: 0\n  pid_file: ./p.pid\n  ghidcache: ./cache\n";
    let (c, out) = finish("hgx-persister", persister(&pdir, ok, &["stop"])).await;
    assert_eq!(c, 1, "{out}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (c, out) = finish("hgx-persister", persister(&pdir, ok, &["--port", &port])).await;
    assert_eq!(c, 1, "{out}");
}

/// Every `HGX_*` variable the binaries' code reads is in their `--help`.
#[test]
fn help_documents_every_environment_variable() {
    let help = |bin: &str| {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let hgxd = help(env!("CARGO_BIN_EXE_hgxd"));
    let persister = help(env!("CARGO_BIN_EXE_hgx-persister"));
    for h in [&hgxd, &persister] {
        for needed in [
            "HYPERGOLIX_HOME",
            "HGX_CONFIG",
            "HGX_<SECTION>__<KEY>",
            "Exit status: 0",
        ] {
            assert!(h.contains(needed), "{needed} missing from\n{h}");
        }
    }
    assert!(hgxd.contains("HGX_PASSWORD"), "{hgxd}");
    // Variables read in the sources the binaries run (not test-only ones).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let not_for_binaries = [
        ("HGX_REGEN", "unit tests regenerate PROTOCOL.md"),
        (
            "HGX_IPC_TOKEN_FILE",
            "read by apps (ipc::token), not by the binaries",
        ),
    ];
    let mut found = std::collections::BTreeSet::new();
    let mut dirs = vec![root.join("src"), root.join("bin")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p: PathBuf = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices("\"HGX_") {
                    let name: String = text[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    found.insert(name);
                }
            }
        }
    }
    assert!(
        found.contains("HGX_PASSWORD") && found.contains("HGX_CONFIG"),
        "{found:?}"
    );
    for name in &found {
        if not_for_binaries.iter().any(|(n, _)| n == name) {
            continue;
        }
        assert!(
            hgxd.contains(name.as_str()) || persister.contains(name.as_str()),
            "{name} is read but neither --help mentions it"
        );
    }
}

#[actix_rt::test]
async fn pid_file_lock_options_after_the_subcommand_and_log_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let yml = "server:\n  host: 127.0.0.1\n  port: 0\n  ghidcache: ./cache\n  logdir: ./logs\n  \
               pid_file: ./from-config.pid\n  verbosity: extreme\n  keep_logs: 2\n  \
               log_max_bytes: 300\n";
    let pid_file = dir.join("flag.pid");
    let pid_arg = pid_file.to_str().unwrap();

    // A stale pid file naming a live process that is not a persister (as after a crash
    // and pid reuse): the start is not refused...
    let mut bystander = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(&pid_file, format!("{}\n", bystander.id())).unwrap();
    let mut server = Proc::spawn(
        "hgx-persister",
        persister(dir, yml, &["--pid-file", pid_arg]),
    );
    server.wait_line(LISTENING, START).await;
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        server.pid().to_string()
    );
    // ... a second start on the same pid file is (exit 1, naming the holder) ...
    let (c, out) = finish(
        "hgx-persister",
        persister(dir, yml, &["--pid-file", pid_arg, "--ghidcache", "./other"]),
    )
    .await;
    assert_eq!(c, 1, "{out}");
    assert!(
        out.contains(&format!("already running as pid {}", server.pid())),
        "{out}"
    );

    // ... and `stop`, with its options after the subcommand, stops the right process.
    let mut cmd = persister_command(dir);
    cmd.args(["stop", "--pid-file", pid_arg]);
    let (c, out) = finish("hgx-persister stop", cmd).await;
    assert_eq!(c, 0, "{out}");
    assert!(
        server.wait_exit(WAIT).await.success(),
        "{}",
        server.output()
    );
    assert!(!pid_file.exists());
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander lives"
    );

    // A stale file naming the bystander again: `stop` removes it and signals nobody.
    std::fs::write(&pid_file, format!("{}\n", bystander.id())).unwrap();
    let mut cmd = persister_command(dir);
    cmd.args(["stop", "--pid-file", pid_arg]);
    let (c, out) = finish("hgx-persister stop", cmd).await;
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("was not running"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was signalled"
    );
    assert!(!pid_file.exists());
    bystander.kill().unwrap();
    bystander.wait().unwrap();

    // The run logged (at `extreme`) far more than 300 bytes: rotated, at most 2 files kept.
    let logs: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(logs.len() <= 2, "{logs:?}");
    assert!(
        logs.iter().any(|n| !n.ends_with("-0000.log")),
        "no rotation by size: {logs:?}"
    );
}
