//! # The `hgxd` process
//!
//! What `hgxd` (no subcommand, or `run`) does, as a library function the thin binary calls:
//! find or create `hypergolix.yml` (DESIGN.md §5), take the lock of the pid file, start logs,
//! obtain the password (terminal, `--password-file`, `HGX_PASSWORD`, or `user.root_secret`),
//! create the account on first run or log in, start the daemon ([`crate::actors`]) and the
//! app endpoint ([`crate::ipc`]) with its capability token, then run until SIGINT/SIGTERM and
//! shut down cleanly. Also `whoami`.
//!
//! Owns: process orchestration and user interaction. Calls: `config`, `logging`, `process`,
//! `actors` (account, daemon), `ipc` (server, token).

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use slog::{info, o, Logger};
use zeroize::Zeroizing;

use crate::actors::account::{derive_root_secret, ScryptParams};
use crate::actors::daemon::{self, DaemonOptions, Login};
use crate::config::{self, Config, FILE_NAME};
use crate::golix::{FirstParty, Ghid, Secret};
use crate::ipc::server::{serve, IpcConfig};
use crate::ipc::token::CapabilityToken;
use crate::logging::Verbosity;
use crate::process::{shutdown_signal, PidFile};

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
    #[error("identity file {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("identity: {0}")]
    Golix(#[from] crate::golix::Error),
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
    /// An explicit config file (else the search order of DESIGN.md §5).
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
                .map_err(|e| RunError::Password(format!("{}: {e}", p.display())))?,
        );
        return Ok(Zeroizing::new(
            text.lines().next().unwrap_or_default().to_owned(),
        ));
    }
    if let Ok(pw) = std::env::var("HGX_PASSWORD") {
        return Ok(Zeroizing::new(pw));
    }
    if !std::io::stdin().is_terminal() {
        return Err(RunError::Password(
            "no terminal: give --password-file or HGX_PASSWORD".into(),
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
/// rest of the file as it is. Never writes the password or the root secret.
fn record_account(
    path: &Path,
    fingerprint: &Ghid,
    user_id: &Ghid,
    params: ScryptParams,
) -> Result<(), RunError> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or(serde_yaml::Value::Null);
    if !doc.is_mapping() {
        doc = serde_yaml::Value::Mapping(Default::default());
    }
    let invalid = |e: serde_yaml::Error| config::ConfigError::Invalid(e.to_string());
    let user = doc
        .as_mapping_mut()
        .expect("made a mapping above")
        .entry("user".into())
        .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    if !user.is_mapping() {
        *user = serde_yaml::Value::Mapping(Default::default());
    }
    let user = user.as_mapping_mut().expect("made a mapping above");
    user.insert("fingerprint".into(), fingerprint.as_str().into());
    user.insert("user_id".into(), user_id.as_str().into());
    user.insert(
        "scrypt".into(),
        serde_yaml::to_value(params).map_err(invalid)?,
    );
    let out = serde_yaml::to_string(&doc).map_err(invalid)?;
    let tmp = path.with_extension("yml.tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
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

/// One entry per remote; a remote with `failover` front-ends is their URLs joined by `,`
/// (the first is the primary; see `actors::remote`).
fn remote_urls(cfg: &Config) -> Vec<String> {
    cfg.remotes
        .iter()
        .map(|r| {
            let scheme = if r.tls { "wss" } else { "ws" };
            std::iter::once(format!("{}:{}", r.host, r.port))
                .chain(r.failover.iter().cloned())
                .map(|hp| format!("{scheme}://{hp}/ws"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
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
    let _pid = PidFile::acquire(&cfg.process.pid_file)?;
    let (log, _guard) = crate::logging::init(
        "hgxd",
        cfg.instrumentation.verbosity,
        Some(&cfg.process.logdir),
        10,
    )?;
    info!(log, "starting"; "config" => %cfg_path.display(), "ghidcache" => %cfg.process.ghidcache.display());

    let (login, created) = login(&cfg, &args, &log)?;
    if created {
        eprintln!("hgxd: creating your account...");
    }
    let params = scrypt_params(&cfg);
    let opts = DaemonOptions {
        ghidcache: cfg.process.ghidcache.clone(),
        remotes: remote_urls(&cfg),
        login,
    };
    let daemon = daemon::start_with_log(opts, log.new(o!("part" => "daemon"))).await?;
    if created {
        record_account(&cfg_path, &daemon.fingerprint(), &daemon.user_id(), params)?;
        eprintln!(
            "hgxd: account created; fingerprint and user_id written to {}",
            cfg_path.display()
        );
    }

    let token_dir = cfg_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let (token, token_path) = CapabilityToken::create_file(&token_dir)?;
    let mut ipc_cfg = IpcConfig::new(token);
    ipc_cfg.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.process.ipc_port));
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

/// The pid file `hgxd stop` signals.
pub fn pid_file(config: Option<&Path>) -> Result<PathBuf, RunError> {
    Ok(Config::load(config)?.process.pid_file)
}
