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

#[derive(Parser)]
#[command(
    name = "hgx-persister",
    version,
    about = "Hypergolix persistence server"
)]
struct Cli {
    /// Config file (default: hypergolix.yml in $HYPERGOLIX_HOME if set, else ., ~/.hypergolix, /etc/hypergolix).
    #[arg(long, env = "HGX_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address: an IP or host name, AUTO (this machine's address) or ANY (all).
    #[arg(long)]
    host: Option<String>,
    /// Listen port (0 = any free port; the chosen one is printed).
    #[arg(long)]
    port: Option<u16>,
    /// The sled object store directory.
    #[arg(long)]
    ghidcache: Option<PathBuf>,
    /// Where objects live: `sled` (the ghidcache directory) or `nats://HOST:PORT[,HOST:PORT…]`
    /// (a NATS JetStream cluster shared by any number of front-ends; `server.nats.*` in the
    /// config for credentials and TLS).
    #[arg(long)]
    store: Option<String>,
    /// Log directory.
    #[arg(long)]
    logdir: Option<PathBuf>,
    /// Pid file.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// error | warning | info | debug | shouty | extreme
    #[arg(long)]
    verbosity: Option<Verbosity>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Stop the running server (SIGTERM to the pid in the pid file) and wait for it to exit.
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

fn serve(cfg: &Config) -> Result<(), String> {
    let s = &cfg.server;
    // The pid file first: a refused second start leaves no trace (no log file, no lock).
    let _pid = PidFile::acquire(&s.pid_file).map_err(|e| e.to_string())?;
    let verbosity = if s.debug {
        s.verbosity.max(Verbosity::Debug)
    } else {
        s.verbosity
    };
    let (log, _log_guard) = logging::init("hgx-persister", verbosity, Some(&s.logdir), s.keep_logs)
        .map_err(|e| format!("logging to {}: {e}", s.logdir.display()))?;
    // A store URL with credentials in it is refused below; never log it.
    let store = if s.store.contains('@') {
        "<refused: credentials in the URL>"
    } else {
        s.store.as_str()
    };
    slog::info!(log, "starting"; "config" => ?cfg.source, "ghidcache" => %s.ghidcache.display(),
        "store" => store, "pid_file" => %s.pid_file.display());
    // One file descriptor per websocket: a soft limit of 1024 would cap the server.
    match process::raise_nofile_limit() {
        Ok((before, after)) => {
            slog::info!(log, "open-files limit"; "soft" => after, "was" => before)
        }
        Err(e) => slog::warn!(log, "cannot raise the open-files limit"; "error" => %e),
    }
    let settings = Settings::from_config(cfg, log.clone()).map_err(|e| e.to_string())?;
    let system = actix_rt::System::new();
    let result = system.block_on(server::run(settings, async {
        let sig = process::shutdown_signal().await;
        slog::info!(log, "signal received, stopping"; "signal" => sig);
    }));
    if let Err(e) = &result {
        slog::error!(log, "server failed"; "error" => %e);
    }
    result.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hgx-persister: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Some(Command::Stop) => match process::stop(&cfg.server.pid_file, STOP_TIMEOUT) {
            Ok(Stopped::Exited(pid)) => {
                println!("stopped pid {pid}");
                Ok(())
            }
            Ok(Stopped::WasNotRunning(pid)) => {
                println!("pid {pid} was not running; removed the stale pid file");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
        None => serve(&cfg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hgx-persister: {e}");
            ExitCode::FAILURE
        }
    }
}
