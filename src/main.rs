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
    /// `--root` is global: it goes before or after the subcommand.
    #[command(flatten)]
    root: cmd::store::RootArgs,
}

/// `strata fuse-serve ...`: the strata-fuse daemon that `strata mount --driver fuse`
/// starts (internal; same command line as the `strata-fuse` binary).
pub(crate) const FUSE_SERVE: &str = "fuse-serve";

/// This binary as the strata-fuse daemon (`strata fuse-serve ...`).
pub(crate) fn fuse_daemon() -> std::io::Result<strata::rootfs::FuseDaemon> {
    Ok(strata::rootfs::FuseDaemon { program: std::env::current_exe()?, args: vec![FUSE_SERVE.into()] })
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == FUSE_SERVE) {
        let me = std::env::current_exe().map_or_else(|_| args[0].clone(), Into::into);
        let code = strata_fuse::run_cli(&[me, FUSE_SERVE.into()], &args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // clap exits with 2 on bad usage and 0 for --help / --version.
    let cli = Cli::parse();
    raise_open_file_limit();
    match cli.command.run(&cli.root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = io::stdout().flush();
            eprintln!("strata: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Takes the hard limit on open files as the soft one, as Go programs (containerd,
/// Docker, podman) do since Go 1.19: a diff of a deep tree holds a descriptor per level
/// and a snapshotter serves many requests at once, while the soft default (1024) dates
/// from `select(2)`, which strata never calls. Nothing to do where the hard limit is
/// unlimited or already in force.
fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(maximum), maximum: Some(maximum) });
        }
    }
}

/// A reader of our output went away (`strata ... | head`): not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().filter_map(|e| e.downcast_ref::<io::Error>()).any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}
