//! `hgxd`: the Hypergolix daemon and its tools. Parses arguments and calls the library;
//! nothing else lives here. Add a subcommand as a `Command` variant and one `match` arm.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hypergolix::hgxd::config_cmd::{self, ConfigArgs};
use hypergolix::hgxd::{self, RunArgs, RunError, EXIT_FAILURE};
use hypergolix::logging::Verbosity;
use hypergolix::process::{self, Stopped};

/// The environment and exit statuses, at the end of `--help`.
const ENVIRONMENT: &str = "\
Environment:
  HYPERGOLIX_HOME    the only directory searched for hypergolix.yml (and where a first run
                     creates it); unset: ., ~/.hypergolix, /etc/hypergolix
  HGX_CONFIG         the config file, as --config
  HGX_PASSWORD       the account password, for unattended starts (else --password-file, or
                     asked on the terminal)
  HGX_<SECTION>__<KEY>
                     overrides one key of the config file, e.g. HGX_PROCESS__IPC_PORT=7773,
                     HGX_INSTRUMENTATION__VERBOSITY=debug

Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.";

/// How long `stop` waits for the daemon to flush and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "hgxd",
    version,
    about = "Hypergolix daemon: run it (the default), or use its tools",
    propagate_version = true,
    after_help = ENVIRONMENT
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
    /// Stop the running daemon (SIGTERM to the process holding its pid file's lock) and
    /// wait for it.
    Stop,
    /// Show or change hypergolix.yml (comments and layout are kept). A running daemon reads
    /// it only at start: restart it after a change.
    Config(ConfigFlags),
    /// Decode and verify Golix objects (files, or folders of .ghid files) without keys.
    ///
    /// Exit status 0 when every object verifies, 1 when any fails, 2 on usage errors.
    Inspect {
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        /// Object files, or folders whose .ghid files are read (not recursively).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ConfigFlags {
    /// Add a persister to sync through (port default 7770; an IPv6 address in brackets before :PORT).
    #[arg(long, value_name = "HOST[:PORT]")]
    add_remote: Option<String>,
    /// The added remote speaks TLS (wss://).
    #[arg(long, requires = "add_remote")]
    tls: bool,
    /// PEM certificates to trust for the added remote besides the system's roots (implies
    /// --tls).
    #[arg(long, value_name = "FILE", requires = "add_remote")]
    ca_file: Option<PathBuf>,
    /// Remove a remote.
    #[arg(long, value_name = "HOST[:PORT]")]
    remove_remote: Option<String>,
    /// List the remotes.
    #[arg(long)]
    list_remotes: bool,
    /// Print this account's fingerprint and user id.
    #[arg(long)]
    whoami: bool,
    /// Set the app websocket port (process.ipc_port).
    #[arg(long, value_name = "N")]
    ipc_port: Option<u16>,
    /// Set instrumentation.verbosity: error | warning | info | debug | shouty | extreme
    #[arg(long, value_name = "LEVEL")]
    verbosity: Option<Verbosity>,
}

fn fail(e: &RunError) -> ExitCode {
    eprintln!("hgxd: {e}");
    ExitCode::from(e.exit_code())
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
        Err(e) => fail(&e),
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
            Err(e) => fail(&e),
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
            let pid_file = match hgxd::pid_file(cli.config.as_deref()) {
                Ok(p) => p,
                Err(e) => return fail(&e),
            };
            match process::stop(&pid_file, STOP_TIMEOUT) {
                Ok(Stopped::Exited(pid)) => {
                    eprintln!("hgxd: stopped (pid {pid})");
                    ExitCode::SUCCESS
                }
                Ok(Stopped::WasNotRunning(_)) => {
                    eprintln!(
                        "hgxd: was not running (removed the stale pid file {})",
                        pid_file.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hgxd: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Some(Command::Config(f)) => {
            let args = ConfigArgs {
                add_remote: f.add_remote,
                tls: f.tls,
                ca_file: f.ca_file,
                remove_remote: f.remove_remote,
                ipc_port: f.ipc_port,
                verbosity: f.verbosity,
                list_remotes: f.list_remotes,
                whoami: f.whoami,
            };
            match config_cmd::run(cli.config.as_deref(), &args, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Some(Command::Inspect { json, paths }) => hypergolix::inspect::main(&paths, json),
    }
}
