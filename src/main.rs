//! The `strata` command line: argument parsing and one small handler per subcommand.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

mod cmd;

/// Turn container image layers into root filesystems, fast and safely.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    // clap exits with 2 on bad usage and 0 for --help / --version.
    let cli = Cli::parse();
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = io::stdout().flush();
            eprintln!("strata: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// A reader of our output went away (`strata ... | head`): not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().filter_map(|e| e.downcast_ref::<io::Error>()).any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
