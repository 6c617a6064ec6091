//! `strata-fuse`: the union mount daemon, with fuse-overlayfs's command line so it can
//! stand in as a `mount_program`. See `strata-fuse --help`.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let me = std::env::current_exe().map_or_else(|_| args.first().cloned().unwrap_or_default(), OsString::from);
    let code = strata_fuse::run_cli(&[me], args.get(1..).unwrap_or_default());
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
