//! # The `hgxd` process
//!
//! What `hgxd` (no subcommand, or `run`) does, as a library function the thin binary calls:
//! find or create `hypergolix.yml` (see [`crate::config`]), take the lock of the pid file, start
//! logs, obtain the password (terminal, `--password-file`, `HGX_PASSWORD`, or
//! `user.root_secret`), create the account on first run or log in, start the daemon
//! ([`crate::actors`]) and the app endpoint ([`crate::ipc`]) with its capability token, then run
//! until SIGINT/SIGTERM and shut down cleanly. Also `whoami`, `config` ([`config_cmd`]), and
//! `status`, which asks the running daemon over its app endpoint (the `status` op, with the
//! capability token beside the config) how each remote stands: a live answer, never a file
//! that could be stale.
//!
//! The account's `user.fingerprint` / `user.user_id` are written to the config file (fsynced,
//! see [`config::write_private`]) before the daemon says it is ready.
//!
//! Owns: process orchestration and user interaction, and the exit status of each failure
//! ([`RunError::exit_code`]). Calls: `config`, `logging`, `process`, `actors` (account,
//! daemon), `ipc` (server, token, client), `persist::tls` (remotes' trust).

pub mod config_cmd;

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use slog::{info, o, Logger};
use zeroize::Zeroizing;

use crate::actors::account::{derive_root_secret, ScryptParams};
use crate::actors::account_actor::ShareLimits;
use crate::actors::daemon::{self, DaemonOptions, Login};
use crate::actors::link_state::LinkState;
use crate::actors::remote::{RemoteEntry, RemoteTarget};
use crate::config::{self, Config, FILE_NAME};
use crate::golix::{FirstParty, Ghid, Secret};
use crate::ipc::ops::StatusReply;
use crate::ipc::server::{serve, IpcConfig};
use crate::ipc::token::CapabilityToken;
use crate::ipc::HgxLink;
use crate::logging::Verbosity;
use crate::process::{nofile_soft_limit, shutdown_signal, PidFile};

/// What can stop `hgxd` from starting; each has a clear message for the terminal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Boxed: `ConfigError` carries the `config` crate's large error.
    #[error("configuration: {0}")]
    Config(Box<config::ConfigError>),
    #[error("{0}")]
    Process(#[from] crate::process::ProcessError),
    #[error("{0}")]
    Daemon(#[from] crate::actors::error::DaemonError),
    #[error("app endpoint: {0}")]
    Ipc(String),
    #[error("password: {0}")]
    Password(String),
    /// The command line or the environment asks for something impossible.
    #[error("{0}")]
    Usage(String),
    #[error("identity file {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("identity: {0}")]
    Golix(#[from] crate::golix::Error),
}

/// Exit status of a run that failed at runtime (both binaries).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage or configuration error (both binaries; clap's too).
pub const EXIT_USAGE: u8 = 2;

impl RunError {
    /// [`EXIT_USAGE`] for what the user must fix in the command line, the environment or
    /// the config file; [`EXIT_FAILURE`] for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) | RunError::Usage(_) | RunError::Identity { .. } => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

impl From<config::ConfigError> for RunError {
    fn from(e: config::ConfigError) -> Self {
        RunError::Config(Box::new(e))
    }
}

/// A configuration value that is present but unusable.
fn invalid_config(what: String) -> RunError {
    RunError::Config(Box::new(config::ConfigError::Invalid(what)))
}

/// Flags of `hgxd run` (each overrides the config file).
#[derive(Debug, Default, Clone)]
pub struct RunArgs {
    /// An explicit config file (else the search order of `config::search_dirs`).
    pub config: Option<PathBuf>,
    /// Read the password from this file (first line) instead of asking.
    pub password_file: Option<PathBuf>,
    pub ipc_port: Option<u16>,
    pub verbosity: Option<Verbosity>,
    /// On first run, use this identity (JSON with `signature_private_der_hex`,
    /// `encryption_private_der_hex`, `exchange_private_hex`) instead of generating one.
    pub identity_file: Option<PathBuf>,
}

/// The config in use: the file found, or a new default one in the home directory.
fn load_or_create(explicit: Option<&Path>) -> Result<(Config, PathBuf), RunError> {
    if let Some(p) = explicit {
        return Ok((Config::load(Some(p))?, p.to_path_buf()));
    }
    if let Some(p) = config::find() {
        return Ok((Config::load(Some(&p))?, p));
    }
    let path = config::home_dir().join(FILE_NAME);
    Config::write_default(&path)?;
    eprintln!("hgxd: created {}", path.display());
    Ok((Config::load(Some(&path))?, path))
}

/// The password, from (in order) `--password-file`, `HGX_PASSWORD`, or the terminal (asked
/// twice for a new account).
fn password(args: &RunArgs, new_account: bool) -> Result<Zeroizing<String>, RunError> {
    if let Some(p) = &args.password_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(p)
                .map_err(|e| RunError::Usage(format!("--password-file {}: {e}", p.display())))?,
        );
        return Ok(Zeroizing::new(
            text.lines().next().unwrap_or_default().to_owned(),
        ));
    }
    if let Ok(pw) = std::env::var("HGX_PASSWORD") {
        return Ok(Zeroizing::new(pw));
    }
    if !std::io::stdin().is_terminal() {
        return Err(RunError::Usage(
            "password: no terminal to ask on: give --password-file or HGX_PASSWORD".into(),
        ));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| RunError::Password(e.to_string()))
    };
    if !new_account {
        return ask("Hypergolix password: ");
    }
    let first = ask("New Hypergolix password: ")?;
    if first.is_empty() {
        return Err(RunError::Password("empty password refused".into()));
    }
    if *ask("Repeat it: ")? != *first {
        return Err(RunError::Password("the two passwords differ".into()));
    }
    Ok(first)
}

fn parse_ghid(field: &str, s: &str) -> Result<Ghid, RunError> {
    s.parse()
        .map_err(|e| invalid_config(format!("user.{field}: {e}")))
}

/// `user.root_secret` (base64url of the 53-byte secret): password-less start, discouraged.
fn configured_root_secret(cfg: &Config) -> Result<Option<Secret>, RunError> {
    let Some(text) = cfg.user.root_secret.as_deref() else {
        return Ok(None);
    };
    let invalid = |why: &str| invalid_config(format!("user.root_secret: {why}"));
    let raw = Zeroizing::new(
        URL_SAFE
            .decode(text.trim())
            .map_err(|_| invalid("not base64url"))?,
    );
    let secret = Secret::decode(&raw, crate::golix::Policy::STRICT)
        .map_err(|_| invalid("not a serialized secret"))?;
    Ok(Some(secret))
}

fn import_identity(path: &Path) -> Result<FirstParty, RunError> {
    let fail = |reason: String| RunError::Identity {
        path: path.to_path_buf(),
        reason,
    };
    let text = Zeroizing::new(std::fs::read(path).map_err(|e| fail(e.to_string()))?);
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| fail(e.to_string()))?;
    let field = |k: &str| -> Result<Zeroizing<Vec<u8>>, RunError> {
        let s = v[k].as_str().ok_or_else(|| fail(format!("missing {k}")))?;
        hex::decode(s)
            .map(Zeroizing::new)
            .map_err(|e| fail(format!("{k}: {e}")))
    };
    let x: [u8; 32] = field("exchange_private_hex")?
        .as_slice()
        .try_into()
        .map_err(|_| fail("exchange_private_hex is not 32 bytes".into()))?;
    let sig = field("signature_private_der_hex")?;
    let enc = field("encryption_private_der_hex")?;
    FirstParty::import(&sig, &enc, &x).map_err(|e| fail(e.to_string()))
}

/// Records the new account's ids (and scrypt parameters) in the config file, keeping the
/// rest of the file as it is ([`config::edit`]), durably. Never writes the password or the
/// root secret.
fn record_account(
    path: &Path,
    fingerprint: &Ghid,
    user_id: &Ghid,
    params: ScryptParams,
) -> Result<(), RunError> {
    use config::edit::{quoted, Value};
    let mut expected = Config::load_from(Some(path), false)?;
    let scrypt = Some(config::ScryptConfig {
        log_n: params.log_n,
        r: params.r,
        p: params.p,
    });
    // Written only if the file does not say it already (the fewer lines touched, the better).
    let write_scrypt = expected.user.scrypt != scrypt;
    expected.user.fingerprint = Some(fingerprint.as_str().to_owned());
    expected.user.user_id = Some(user_id.as_str().to_owned());
    expected.user.scrypt = scrypt;
    Config::edit_file(path, &expected, |t| {
        t.set(
            "user",
            "fingerprint",
            &Value::Scalar(quoted(&fingerprint.as_str())),
        )?;
        t.set("user", "user_id", &Value::Scalar(quoted(&user_id.as_str())))?;
        if !write_scrypt {
            return Ok(());
        }
        t.set(
            "user",
            "scrypt",
            &Value::Map(vec![
                ("log_n".into(), params.log_n.to_string()),
                ("r".into(), params.r.to_string()),
                ("p".into(), params.p.to_string()),
            ]),
        )
    })?;
    Ok(())
}

/// A cap on connections as configured, but at most `1 / share` of the open-file limit: a
/// quarter for connections waiting for `hello` (strangers are pushed out before they can use
/// up the descriptors an app's connection needs), half for apps past it (the rest stays for
/// the databases, logs and remotes).
fn files_cap(configured: usize, nofile: Option<u64>, share: u64) -> usize {
    let part = nofile.map_or(usize::MAX, |n| {
        usize::try_from(n / share).unwrap_or(usize::MAX)
    });
    configured.min(part).max(1)
}

fn scrypt_params(cfg: &Config) -> ScryptParams {
    cfg.user
        .scrypt
        .map_or(ScryptParams::DEFAULT, |s| ScryptParams {
            log_n: s.log_n,
            r: s.r,
            p: s.p,
        })
}

/// The configured remotes with their TLS trust, each with its front-ends (`host`/`port`, then
/// `failover`, sharing `tls` and `ca_file`); a `ca_file` that cannot be used, a failover entry
/// that is no `HOST:PORT`, or a TLS front-end whose host can be no certificate name, stops the
/// start with a clear error.
fn remote_targets(cfg: &Config) -> Result<Vec<RemoteEntry>, RunError> {
    let mut entries = Vec::with_capacity(cfg.remotes.len());
    for (i, r) in cfg.remotes.iter().enumerate() {
        let tls = match (r.tls, &r.ca_file) {
            (false, Some(_)) => {
                return Err(invalid_config(format!(
                    "remotes.{i}.ca_file is set but tls is false: set `tls: true` to use it"
                )))
            }
            (false, None) => None,
            (true, ca_file) => {
                let tls = crate::persist::tls::client_config(ca_file.as_deref())
                    .map_err(|e| invalid_config(format!("remotes.{i}.ca_file: {e}")))?;
                Some(tls)
            }
        };
        let mut front_ends = vec![(format!("remotes.{i}.host"), r.clone())];
        for (j, hp) in r.failover.iter().enumerate() {
            let (host, port) = config_cmd::parse_host_port(hp)
                .map_err(|e| invalid_config(format!("remotes.{i}.failover.{j}: {e}")))?;
            let front_end = config::Remote {
                host,
                port,
                failover: Vec::new(),
                ..r.clone()
            };
            front_ends.push((format!("remotes.{i}.failover.{j}"), front_end));
        }
        let mut targets = Vec::with_capacity(front_ends.len());
        for (key, f) in front_ends {
            if r.tls && rustls_pki_types::ServerName::try_from(f.host.as_str()).is_err() {
                return Err(invalid_config(format!(
                    "{key} {:?} is neither a DNS name nor an IP address, so no certificate \
                     can name it",
                    f.host
                )));
            }
            targets.push(RemoteTarget {
                url: f.url(),
                tls: tls.clone(),
            });
        }
        entries.push(RemoteEntry { targets });
    }
    Ok(entries)
}

/// Decides how to log in: create (first run) or open, deriving the root secret.
fn login(cfg: &Config, args: &RunArgs, log: &Logger) -> Result<(Login, bool), RunError> {
    let params = scrypt_params(cfg);
    match (cfg.user.fingerprint.as_deref(), cfg.user.user_id.as_deref()) {
        (Some(fp), Some(uid)) => {
            let fingerprint = parse_ghid("fingerprint", fp)?;
            let user_id = parse_ghid("user_id", uid)?;
            let root_secret = match configured_root_secret(cfg)? {
                Some(s) => s,
                None => {
                    let pw = password(args, false)?;
                    derive_root_secret(pw.as_bytes(), &fingerprint, params)?
                }
            };
            Ok((
                Login::Open {
                    user_id,
                    fingerprint,
                    root_secret,
                },
                false,
            ))
        }
        (None, None) => {
            let identity = match &args.identity_file {
                Some(p) => import_identity(p)?,
                None => {
                    let pw_first = password(args, true)?;
                    eprintln!("hgxd: generating your identity (two RSA-4096 keys); this takes a few seconds...");
                    let started = std::time::Instant::now();
                    let fp = FirstParty::generate()?;
                    eprintln!(
                        "hgxd: identity generated in {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    let root_secret = derive_root_secret(pw_first.as_bytes(), &fp.ghid(), params)?;
                    return Ok((
                        Login::Create {
                            identity: fp,
                            root_secret,
                        },
                        true,
                    ));
                }
            };
            info!(log, "importing identity"; "fingerprint" => %identity.ghid());
            let root_secret = match configured_root_secret(cfg)? {
                Some(s) => s,
                None => {
                    let pw = password(args, true)?;
                    derive_root_secret(pw.as_bytes(), &identity.ghid(), params)?
                }
            };
            Ok((
                Login::Create {
                    identity,
                    root_secret,
                },
                true,
            ))
        }
        _ => Err(invalid_config(
            "user.fingerprint and user.user_id must be both set or both empty".into(),
        )),
    }
}

/// Runs the daemon until SIGINT/SIGTERM. Returns once everything is flushed.
pub async fn run(mut args: RunArgs) -> Result<(), RunError> {
    let (mut cfg, cfg_path) = load_or_create(args.config.as_deref())?;
    if let Some(p) = args.ipc_port {
        cfg.process.ipc_port = p;
    }
    if let Some(v) = args.verbosity.take() {
        cfg.instrumentation.verbosity = v;
    }
    // Before anything else: a bad `ca_file` is a configuration error, not a silent retry.
    let remotes = remote_targets(&cfg)?;
    let _pid = PidFile::acquire(&cfg.process.pid_file)?;
    let ins = &cfg.instrumentation;
    let verbosity = if ins.debug {
        ins.verbosity.max(Verbosity::Debug)
    } else {
        ins.verbosity
    };
    let limits = crate::logging::FileLimits {
        keep: ins.keep_logs,
        max_bytes: ins.log_max_bytes,
    };
    let (log, _guard) = crate::logging::init("hgxd", verbosity, Some(&cfg.process.logdir), limits)?;
    info!(log, "starting"; "config" => %cfg_path.display(), "ghidcache" => %cfg.process.ghidcache.display());
    for key in &cfg.unknown_keys {
        slog::warn!(log, "unknown configuration key ignored (a typo?)"; "key" => key,
            "file" => %cfg_path.display());
    }

    let (login, created) = login(&cfg, &args, &log)?;
    if created {
        eprintln!("hgxd: creating your account...");
    }
    let params = scrypt_params(&cfg);
    let opts = DaemonOptions {
        ghidcache: cfg.process.ghidcache.clone(),
        remotes,
        cache_capacity: cfg.process.cache_capacity,
        share_limits: ShareLimits {
            per_sharer: cfg.process.max_unadopted_shares_per_sharer,
            total: cfg.process.max_unadopted_shares,
        },
        wal_move_every: std::time::Duration::from_millis(cfg.process.wal_move_ms),
        login,
    };
    let daemon = daemon::start_with_log(opts, log.new(o!("part" => "daemon"))).await?;
    if created {
        record_account(&cfg_path, &daemon.fingerprint(), &daemon.user_id(), params)?;
        eprintln!(
            "hgxd: account created; fingerprint and user_id written to {}",
            cfg_path.display()
        );
        // SIGINT/SIGTERM while it waits: the normal stop, nothing served yet.
        if let Some(signal) = await_account_upload(&daemon, &log).await {
            info!(log, "stopping"; "signal" => signal);
            daemon.shutdown().await?;
            info!(log, "stopped");
            return Ok(());
        }
    }

    let token_dir = cfg_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let (token, token_path) = CapabilityToken::create_file(&token_dir)?;
    let mut ipc_cfg = IpcConfig::new(token);
    ipc_cfg.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.process.ipc_port));
    ipc_cfg.hello_timeout = std::time::Duration::from_secs(cfg.process.ipc_hello_timeout_s.max(1));
    ipc_cfg.max_unauthenticated =
        files_cap(cfg.process.ipc_max_unauthenticated, nofile_soft_limit(), 4);
    if ipc_cfg.max_unauthenticated < cfg.process.ipc_max_unauthenticated {
        slog::warn!(log, "ipc_max_unauthenticated lowered to a quarter of the open-file limit";
            "configured" => cfg.process.ipc_max_unauthenticated, "used" => ipc_cfg.max_unauthenticated);
    }
    ipc_cfg.max_apps = files_cap(cfg.process.ipc_max_apps, nofile_soft_limit(), 2);
    if ipc_cfg.max_apps < cfg.process.ipc_max_apps {
        slog::warn!(log, "ipc_max_apps lowered to half the open-file limit";
            "configured" => cfg.process.ipc_max_apps, "used" => ipc_cfg.max_apps);
    }
    ipc_cfg.log = log.new(o!("part" => "ipc"));
    let server = serve(daemon.clone(), ipc_cfg)
        .await
        .map_err(|e| RunError::Ipc(e.to_string()))?;
    info!(log, "ready"; "ipc" => %server.url(), "fingerprint" => %daemon.fingerprint(), "token_file" => %token_path.display());
    eprintln!(
        "hgxd: ready on {} (fingerprint {})",
        server.url(),
        daemon.fingerprint().as_str()
    );

    let signal = shutdown_signal().await;
    info!(log, "stopping"; "signal" => signal);
    server.stop(true).await;
    daemon.shutdown().await?;
    let _ = CapabilityToken::remove_file(&token_dir);
    info!(log, "stopped");
    let _ = std::io::stderr().flush();
    Ok(())
}

/// `hgxd whoami`: the account's fingerprint and user id, from the config in use.
pub fn whoami(config: Option<&Path>) -> Result<(String, String), RunError> {
    let cfg = match config {
        Some(p) => Config::load(Some(p))?,
        None => Config::load(None)?,
    };
    match (cfg.user.fingerprint, cfg.user.user_id) {
        (Some(f), Some(u)) => Ok((f, u)),
        _ => Err(invalid_config(
            "no account yet: run hgxd once to create one".into(),
        )),
    }
}

/// Longest a first run waits, before it reports ready, for its new account to reach the
/// remotes (another machine of the user logs in from there).
pub const ACCOUNT_UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until every remote has acknowledged everything queued for it (the new account's
/// objects) and refused nothing, at most [`ACCOUNT_UPLOAD_WAIT`]; says so either way. Past it
/// the daemon goes on (it keeps sending), but the user learns that another machine cannot log
/// in yet, and why. Returns the stop signal if one came meanwhile.
async fn await_account_upload(daemon: &daemon::DaemonHandle, log: &Logger) -> Option<&'static str> {
    let deadline = tokio::time::Instant::now() + ACCOUNT_UPLOAD_WAIT;
    let mut signal = std::pin::pin!(shutdown_signal());
    loop {
        let remotes = daemon.remotes();
        let behind: Vec<_> = remotes
            .iter()
            .filter(|r| r.outbox > 0 || r.last_refusal.is_some())
            .collect();
        if behind.is_empty() {
            if !remotes.is_empty() {
                info!(log, "new account on every remote");
                eprintln!("hgxd: account uploaded to every remote");
            }
            return None;
        }
        if tokio::time::Instant::now() >= deadline {
            for r in behind {
                let error = r
                    .last_refusal
                    .as_ref()
                    .or(r.last_error.as_ref())
                    .map(|f| format!("{}: {}", f.kind, f.reason))
                    .unwrap_or_else(|| "no answer yet".into());
                slog::warn!(log, "new account not yet on a remote: other machines cannot log in through it until it is; still sending";
                    "remote" => &r.url, "queued" => r.outbox, "last_error" => &error);
                eprintln!(
                    "hgxd: warning: the new account is not yet on {} ({error}); other machines \
                     cannot log in through it until it is (hgxd keeps sending; see `hgxd status`)",
                    r.url
                );
            }
            return None;
        }
        tokio::select! {
            s = &mut signal => return Some(s),
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
    }
}

/// How long `hgxd status` waits for the daemon's answer.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `hgxd status`: each remote's state as the running daemon reports it, as text. The daemon
/// is found through the config in use: its `process.ipc_port` (or `ipc_port` when given)
/// and the `ipc.token` beside the file.
pub async fn status(config: Option<&Path>, ipc_port: Option<u16>) -> Result<String, RunError> {
    let path = match config {
        Some(p) => p.to_path_buf(),
        None => config::find().ok_or_else(|| {
            invalid_config(format!(
                "no {FILE_NAME} found (searched {}): has hgxd run here?",
                config::search_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
    };
    let cfg = Config::load(Some(&path))?;
    let port =
        match ipc_port.unwrap_or(cfg.process.ipc_port) {
            0 => return Err(invalid_config(
                "process.ipc_port is 0 (any free port): give --ipc-port, the port hgxd printed \
                 when ready"
                    .into(),
            )),
            p => p,
        };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let token = CapabilityToken::read_file(&dir).map_err(|e| {
        RunError::Ipc(format!(
            "no capability token in {} ({e}): is hgxd running with this config?",
            dir.display()
        ))
    })?;
    let url = format!("ws://127.0.0.1:{port}/");
    let unreachable = |e: String| RunError::Ipc(format!("cannot ask hgxd at {url}: {e}"));
    let reply = tokio::time::timeout(STATUS_TIMEOUT, async {
        let link = HgxLink::connect(&url, &token).await?;
        let reply = link.status().await;
        link.close();
        reply
    })
    .await
    .map_err(|_| unreachable("no answer in time".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Ok(format_status(&reply, now))
}

/// One line per remote: URL, state and for how long, outbox depth, and the last error while
/// retrying.
pub fn format_status(reply: &StatusReply, now: u64) -> String {
    if reply.remotes.is_empty() {
        return "no remotes configured: objects stay on this machine\n".into();
    }
    let mut out = String::new();
    for r in &reply.remotes {
        let age = human_duration(now.saturating_sub(r.since));
        out.push_str(&format!(
            "{}  {} for {age}  outbox {}",
            r.url,
            r.state.as_str(),
            r.outbox
        ));
        if r.state == LinkState::Retrying {
            out.push_str(&format!("  failed attempts {}", r.failures));
        }
        if let Some(e) = &r.last_error {
            out.push_str(&format!("  last error: {}: {}", e.kind, e.reason));
        }
        if let Some(e) = &r.last_refusal {
            out.push_str(&format!("  last refused: {}", e.reason));
        }
        out.push('\n');
        if r.front_ends.len() > 1 {
            let others: Vec<&str> = r
                .front_ends
                .iter()
                .filter(|u| **u != r.url)
                .map(String::as_str)
                .collect();
            out.push_str(&format!(
                "  front-end {} of {}, failovers {}, others: {}\n",
                r.front_ends
                    .iter()
                    .position(|u| *u == r.url)
                    .map_or(0, |i| i + 1),
                r.front_ends.len(),
                r.failovers,
                others.join(" ")
            ));
        }
    }
    out
}

/// `12s`, `3m05s`, `2h07m`, `3d04h`.
fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The pid file `hgxd stop` signals.
pub fn pid_file(config: Option<&Path>) -> Result<PathBuf, RunError> {
    Ok(Config::load(config)?.process.pid_file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::link_state::{Failure, RemoteStatus};

    #[test]
    fn connection_caps_keep_descriptors_for_the_rest() {
        assert_eq!(files_cap(1024, Some(1 << 20), 4), 1024);
        assert_eq!(files_cap(1024, Some(1024), 4), 256);
        assert_eq!(files_cap(1024, Some(1024), 2), 512);
        assert_eq!(files_cap(1024, None, 4), 1024);
        assert_eq!(files_cap(0, Some(2), 4), 1);
    }

    #[test]
    fn status_lines() {
        let remote = |state, since, last_error: Option<Failure>| RemoteStatus {
            url: "wss://hgx.example.org:443/ws".into(),
            state,
            since,
            last_error,
            failures: 4,
            outbox: 2,
            front_ends: Vec::new(),
            failovers: 0,
            last_refusal: None,
        };
        let reply = StatusReply {
            remotes: vec![
                remote(LinkState::Connected, 988, None),
                remote(
                    LinkState::Retrying,
                    815,
                    Some(Failure::new("certificate", "not trusted")),
                ),
            ],
        };
        assert_eq!(
            format_status(&reply, 1000),
            "wss://hgx.example.org:443/ws  connected for 12s  outbox 2\n\
             wss://hgx.example.org:443/ws  retrying for 3m05s  outbox 2  failed attempts 4  \
             last error: certificate: not trusted\n"
        );
        let mut cluster = remote(LinkState::Connected, 990, None);
        cluster.url = "ws://b:1/ws".into();
        cluster.front_ends = vec!["ws://a:1/ws".into(), "ws://b:1/ws".into()];
        cluster.failovers = 1;
        let one = StatusReply {
            remotes: vec![cluster],
        };
        assert_eq!(
            format_status(&one, 1000),
            "ws://b:1/ws  connected for 10s  outbox 2\n  \
             front-end 2 of 2, failovers 1, others: ws://a:1/ws\n"
        );
        let none = StatusReply { remotes: vec![] };
        assert!(format_status(&none, 0).starts_with("no remotes configured"));
        assert_eq!(human_duration(7_620), "2h07m");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600 + 5), "3d04h");
    }

    #[test]
    fn remote_targets_check_ca_file_tls_and_host() {
        let dir = tempfile::tempdir().unwrap();
        let load = |yml: &str| Config::from_yaml(yml, dir.path()).unwrap();
        let err = |yml: &str| remote_targets(&load(yml)).err().unwrap().to_string();
        let plain = remote_targets(&load("remotes:\n  - host: 127.0.0.1\n    port: 1\n")).unwrap();
        assert_eq!(plain[0].targets[0].url, "ws://127.0.0.1:1/ws");
        assert!(plain[0].targets[0].tls.is_none());
        let cluster = remote_targets(&load(
            "remotes:\n  - host: a.example\n    port: 1\n    tls: true\n    \
             failover: [\"b.example:2\", \"[::1]:3\"]\n",
        ))
        .unwrap();
        let urls: Vec<&str> = cluster[0].targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "wss://a.example:1/ws",
                "wss://b.example:2/ws",
                "wss://[::1]:3/ws"
            ]
        );
        assert!(cluster[0].targets.iter().all(|t| t.tls.is_some()));
        let e = err("remotes:\n  - host: a.example\n    failover: [\"b:x\"]\n");
        assert!(e.contains("remotes.0.failover.0"), "{e}");
        let e = err("remotes:\n  - host: a.example\n    tls: true\n    failover: [\"b_!:1\"]\n");
        assert!(
            e.contains("remotes.0.failover.0") && e.contains("neither a DNS name"),
            "{e}"
        );
        let e = err("remotes:\n  - host: a.example\n    ca_file: ca.pem\n");
        assert!(
            e.contains("remotes.0.ca_file is set but tls is false"),
            "{e}"
        );
        let e = err("remotes:\n  - host: a.example\n    tls: true\n    ca_file: ca.pem\n");
        assert!(
            e.contains("remotes.0.ca_file") && e.contains("ca.pem"),
            "{e}"
        );
        let e = err("remotes:\n  - host: \"bad host!\"\n    tls: true\n");
        assert!(e.contains("neither a DNS name nor an IP address"), "{e}");
        let tls = remote_targets(&load(
            "remotes:\n  - host: 10.1.2.3\n    port: 443\n    tls: true\n",
        ))
        .unwrap();
        assert_eq!(tls[0].targets[0].url, "wss://10.1.2.3:443/ws");
        assert!(tls[0].targets[0].tls.is_some());
    }
}
