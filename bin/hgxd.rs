//! `hgxd`: the Hypergolix daemon and its tools. Parses arguments and calls the library;
//! nothing else lives here. Add a subcommand as a `Command` variant and one `match` arm.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hypergolix::hgxd::{self, RunArgs};
use hypergolix::logging::Verbosity;
use hypergolix::process::{self, Stopped};

/// How long `stop` waits for the daemon to flush and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "hgxd",
    version,
    about = "Hypergolix daemon: run it (the default), or use its tools",
    propagate_version = true
)]
struct Cli {
    /// Config file (default: hypergolix.yml in $HYPERGOLIX_HOME if set, else ., ~/.hypergolix,
    /// /etc/hypergolix; created in the home directory on first run).
    #[arg(long, env = "HGX_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunFlags,
}

#[derive(clap::Args, Default)]
struct RunFlags {
    /// Read the account password from this file (first line) instead of asking.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// App websocket port on 127.0.0.1 (default 7772).
    #[arg(long)]
    ipc_port: Option<u16>,
    /// error | warning | info | debug | shouty | extreme
    #[arg(long)]
    verbosity: Option<Verbosity>,
    /// On first run, import this identity (JSON of hex DER keys) instead of generating one.
    #[arg(long)]
    identity_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground until SIGINT/SIGTERM (the default).
    Run(RunFlags),
    /// Print this account's fingerprint and user id.
    Whoami,
    /// Ask the running daemon how each remote stands: connected, or retrying (since when,
    /// the last error), and how many objects wait in its outbox.
    Status {
        /// The daemon's app port (default: `process.ipc_port` of the config).
        #[arg(long)]
        ipc_port: Option<u16>,
    },
    /// Stop the running daemon (SIGTERM to the pid in its pid file) and wait for it.
    Stop,
    /// Decode and verify Golix objects (files, or folders of .ghid files) without keys.
    ///
    /// Exit code 0 when every object verifies, 1 when any fails, 2 on usage errors.
    Inspect {
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Object files, or folders whose .ghid files are read (not recursively).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

fn run(config: Option<PathBuf>, flags: RunFlags) -> ExitCode {
    // One file descriptor per app connection: a soft limit of 1024 would cap the endpoint.
    if let Err(e) = process::raise_nofile_limit() {
        eprintln!("hgxd: cannot raise the open-files limit: {e}");
    }
    let args = RunArgs {
        config,
        password_file: flags.password_file,
        ipc_port: flags.ipc_port,
        verbosity: flags.verbosity,
        identity_file: flags.identity_file,
    };
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    match system.block_on(hgxd::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hgxd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.config, cli.run),
        Some(Command::Run(flags)) => run(cli.config, flags),
        Some(Command::Whoami) => match hgxd::whoami(cli.config.as_deref()) {
            Ok((fingerprint, user_id)) => {
                // A closed pipe (`hgxd whoami | head -1`) is not an error worth a panic.
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "fingerprint: {fingerprint}\nuser_id:     {user_id}"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hgxd: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Status { ipc_port }) => {
            let asked =
                actix_rt::System::new().block_on(hgxd::status(cli.config.as_deref(), ipc_port));
            match asked {
                Ok(text) => {
                    let _ = write!(std::io::stdout().lock(), "{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hgxd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Stop) => {
            let stopped = hgxd::pid_file(cli.config.as_deref())
                .map_err(|e| e.to_string())
                .and_then(|p| process::stop(&p, STOP_TIMEOUT).map_err(|e| e.to_string()));
            match stopped {
                Ok(Stopped::Exited(pid)) => {
                    eprintln!("hgxd: stopped (pid {pid})");
                    ExitCode::SUCCESS
                }
                Ok(Stopped::WasNotRunning(pid)) => {
                    eprintln!("hgxd: was not running (stale pid {pid} removed)");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hgxd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Inspect { json, paths }) => hypergolix::inspect::main(&paths, json),
    }
}
