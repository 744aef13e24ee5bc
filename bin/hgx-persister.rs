//! `hgx-persister`: the Hypergolix persistence server. Thin: parse flags, load the config,
//! set up logging and the pid file, then call [`hypergolix::persist::server::run`] until
//! SIGINT/SIGTERM. `hgx-persister stop` signals the running instance through its pid file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hypergolix::config::{self, Config, ServerOverrides};
use hypergolix::logging::{self, Verbosity};
use hypergolix::persist::server::{self, Settings};
use hypergolix::process::{self, PidFile, Stopped};

/// How long `stop` waits for the server to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit status of a runtime failure (as `hgxd`).
const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage or configuration error (as `hgxd`, and clap).
const EXIT_USAGE: u8 = 2;

/// The environment and exit statuses, at the end of `--help`.
const ENVIRONMENT: &str = "\
Environment:
  HYPERGOLIX_HOME    the only directory searched for hypergolix.yml (and where a first run
                     creates it); unset: ., ~/.hypergolix, /etc/hypergolix
  HGX_CONFIG         the config file, as --config
  HGX_<SECTION>__<KEY>
                     overrides one key of the config file, e.g. HGX_SERVER__PORT=7771,
                     HGX_SERVER__VERBOSITY=debug (flags override both)

Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.";

// Every option is global: it may come before or after the subcommand
// (`hgx-persister stop --pid-file X`).
#[derive(Parser)]
#[command(
    name = "hgx-persister",
    version,
    about = "Hypergolix persistence server",
    after_help = ENVIRONMENT
)]
struct Cli {
    /// Config file (default: hypergolix.yml in $HYPERGOLIX_HOME if set, else ., ~/.hypergolix, /etc/hypergolix).
    #[arg(long, env = "HGX_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Listen address: an IP or host name, AUTO (this machine's address) or ANY (all).
    #[arg(long, global = true)]
    host: Option<String>,
    /// Listen port (0 = any free port; the chosen one is printed).
    #[arg(long, global = true)]
    port: Option<u16>,
    /// The sled object store directory.
    #[arg(long, global = true)]
    ghidcache: Option<PathBuf>,
    /// Where objects live: `sled` (the ghidcache directory) or `nats://HOST:PORT[,HOST:PORT…]`
    /// (a NATS JetStream cluster shared by any number of front-ends; `server.nats.*` in the
    /// config for credentials and TLS).
    #[arg(long)]
    store: Option<String>,
    /// Log directory.
    #[arg(long, global = true)]
    logdir: Option<PathBuf>,
    /// Pid file.
    #[arg(long, global = true)]
    pid_file: Option<PathBuf>,
    /// error | warning | info | debug | shouty | extreme
    #[arg(long, global = true)]
    verbosity: Option<Verbosity>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Stop the running server (SIGTERM to the process holding the pid file's lock) and wait
    /// for it to exit.
    Stop,
}

fn load(cli: &Cli) -> Result<Config, String> {
    let mut cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return Err(e.to_string()),
    };
    if cfg.source.is_none() && cli.config.is_none() && cli.command.is_none() {
        // First run: write the defaults where the next run will find them.
        let path = config::home_dir().join(config::FILE_NAME);
        if let Ok(true) = Config::write_default(&path) {
            eprintln!(
                "hgx-persister: wrote default configuration to {}",
                path.display()
            );
            cfg = Config::load(Some(&path)).map_err(|e| e.to_string())?;
        }
    }
    cfg.apply_server_overrides(&ServerOverrides {
        host: cli.host.clone(),
        port: cli.port,
        ghidcache: cli.ghidcache.clone(),
        logdir: cli.logdir.clone(),
        pid_file: cli.pid_file.clone(),
        verbosity: cli.verbosity,
        debug: None,
        store: cli.store.clone(),
    });
    Ok(cfg)
}

/// Why the server did not run: the message and the exit status.
type Failure = (String, u8);

fn runtime(e: impl std::fmt::Display) -> Failure {
    (e.to_string(), EXIT_FAILURE)
}

fn serve(cfg: &Config) -> Result<(), Failure> {
    let s = &cfg.server;
    // The pid file first: a refused second start leaves no trace (no log file, no lock).
    let _pid = PidFile::acquire(&s.pid_file).map_err(runtime)?;
    let verbosity = if s.debug {
        s.verbosity.max(Verbosity::Debug)
    } else {
        s.verbosity
    };
    let limits = logging::FileLimits {
        keep: s.keep_logs,
        max_bytes: s.log_max_bytes,
    };
    let (log, _log_guard) = logging::init("hgx-persister", verbosity, Some(&s.logdir), limits)
        .map_err(|e| runtime(format!("logging to {}: {e}", s.logdir.display())))?;
    // A store URL with credentials in it is refused below; never log it.
    let store = if s.store.contains('@') {
        "<refused: credentials in the URL>"
    } else {
        s.store.as_str()
    };
    slog::info!(log, "starting"; "config" => ?cfg.source, "ghidcache" => %s.ghidcache.display(),
        "store" => store, "pid_file" => %s.pid_file.display());
    if let Some(file) = &cfg.source {
        for key in &cfg.unknown_keys {
            slog::warn!(log, "unknown configuration key ignored (a typo?)"; "key" => key,
                "file" => %file.display());
        }
    }
    // One file descriptor per websocket: a soft limit of 1024 would cap the server.
    match process::raise_nofile_limit() {
        Ok((before, after)) => {
            slog::info!(log, "open-files limit"; "soft" => after, "was" => before)
        }
        Err(e) => slog::warn!(log, "cannot raise the open-files limit"; "error" => %e),
    }
    // What the config says cannot be served (addresses, TLS files): a configuration error.
    let settings =
        Settings::from_config(cfg, log.clone()).map_err(|e| (e.to_string(), EXIT_USAGE))?;
    let system = actix_rt::System::new();
    let result = system.block_on(server::run(settings, async {
        let sig = process::shutdown_signal().await;
        slog::info!(log, "signal received, stopping"; "signal" => sig);
    }));
    if let Err(e) = &result {
        slog::error!(log, "server failed"; "error" => %e);
    }
    result.map_err(|e| match e {
        // Unreadable or unusable TLS files, an unknown host: the configuration's fault.
        server::ServerError::Tls(_) | server::ServerError::Host { .. } => {
            (e.to_string(), EXIT_USAGE)
        }
        e => runtime(e),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hgx-persister: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match cli.command {
        Some(Command::Stop) => match process::stop(&cfg.server.pid_file, STOP_TIMEOUT) {
            Ok(Stopped::Exited(pid)) => {
                println!("stopped pid {pid}");
                Ok(())
            }
            Ok(Stopped::WasNotRunning(_)) => {
                println!(
                    "was not running; removed the stale pid file {}",
                    cfg.server.pid_file.display()
                );
                Ok(())
            }
            Err(e) => Err(runtime(e)),
        },
        None => serve(&cfg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, code)) => {
            eprintln!("hgx-persister: {e}");
            ExitCode::from(code)
        }
    }
}
