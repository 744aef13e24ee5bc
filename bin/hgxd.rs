//! `hgxd`: the Hypergolix daemon and its tools. Parses arguments and calls the library;
//! nothing else lives here. Add a subcommand as a `Command` variant and one `match` arm.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hgxd",
    version,
    about = "Hypergolix daemon",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Inspect { json, paths } => hypergolix::inspect::main(&paths, json),
    }
}
