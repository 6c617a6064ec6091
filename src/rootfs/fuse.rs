//! Mounting a stack with strata-fuse: start the daemon and return once it serves.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_core::ovl::{MountSpec, XattrNamespace};

use super::{Error, Result};

/// The program that serves a strata-fuse mount: it takes strata-fuse's command line
/// (`-o OPTIONS TARGET`), mounts, and detaches once the mount serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseDaemon {
    /// The program.
    pub program: PathBuf,
    /// Arguments before strata-fuse's own (`fuse-serve` for the `strata` binary).
    pub args: Vec<OsString>,
}

impl Default for FuseDaemon {
    /// The `strata-fuse` binary, found on `PATH`.
    fn default() -> Self {
        FuseDaemon { program: PathBuf::from("strata-fuse"), args: Vec::new() }
    }
}

/// `lowerdir=...,upperdir=...,workdir=...` for `spec`, escaping `:` and `,` in paths; a
/// `rootfs` mount also gets `dev,suid` (a root filesystem needs its device nodes and
/// setuid programs).
pub fn fuse_options(spec: &MountSpec, rootfs: bool) -> String {
    let esc = |p: &Path| p.display().to_string().replace('\\', "\\\\").replace(':', "\\:").replace(',', "\\,");
    let mut opts = Vec::new();
    if !spec.lowers.is_empty() {
        opts.push(format!("lowerdir={}", spec.lowers.iter().map(|p| esc(p)).collect::<Vec<_>>().join(":")));
    }
    if let (Some(upper), Some(work)) = (&spec.upper, &spec.work) {
        opts.push(format!("upperdir={},workdir={}", esc(upper), esc(work)));
    }
    if spec.read_only {
        opts.push("ro".into());
    }
    if spec.xattrs == XattrNamespace::User {
        opts.push("userxattr".into());
    }
    if rootfs {
        opts.push("dev,suid".into());
    }
    opts.join(",")
}

/// Starts `daemon` for `spec` at `target` and waits until it serves. `extra` are more
/// strata-fuse options (`passthrough=off` serves all I/O in the daemon, what an
/// unprivileged mount gets anyway; `uring=off` keeps requests on `/dev/fuse`).
///
/// # Errors
/// [`Error::Fuse`]: no `/dev/fuse`, the daemon cannot start, or it could not mount (its
/// own message went to stderr).
pub fn mount_fuse(daemon: &FuseDaemon, spec: &MountSpec, target: &Path, rootfs: bool, extra: &[&str]) -> Result<()> {
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::Fuse("/dev/fuse is missing: load the module (`modprobe fuse`) or use overlay".into()));
    }
    let mut options = fuse_options(spec, rootfs);
    for option in extra {
        options.push(',');
        options.push_str(option);
    }
    let status = Command::new(&daemon.program)
        .args(&daemon.args)
        .arg("-o")
        .arg(options)
        .arg(target)
        .status()
        .map_err(|e| Error::Fuse(format!("starting the daemon {}: {e}", daemon.program.display())))?;
    if !status.success() {
        return Err(Error::Fuse(format!("could not mount {} ({status}; its message is above)", target.display())));
    }
    Ok(())
}
