//! Mounting a store snapshot with strata-fuse: starts the daemon (this binary's
//! `fuse-serve`, the same command line as `strata-fuse`) and returns once it is mounted.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use strata_core::ovl::XattrNamespace;
use strata_core::store::MountSpec;

/// `lowerdir=...,upperdir=...,workdir=...` for `spec`, escaping `:` and `,` in paths.
pub fn fuse_options(spec: &MountSpec, root: bool) -> String {
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
    if root {
        // A root filesystem needs its device nodes and setuid programs to work.
        opts.push("dev,suid".into());
    }
    opts.join(",")
}

/// Starts strata-fuse for `spec` at `target` and waits until it serves; `passthrough`
/// off serves all I/O in the daemon (what an unprivileged mount gets).
pub fn mount_fuse(spec: &MountSpec, target: &Path, root: bool, passthrough: bool) -> anyhow::Result<()> {
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the module (`modprobe fuse`) or use --driver overlay");
    }
    let exe = std::env::current_exe().context("finding the strata binary to run the FUSE daemon")?;
    let mut options = fuse_options(spec, root);
    if !passthrough {
        options.push_str(",passthrough=off");
    }
    let status = Command::new(exe)
        .arg(crate::FUSE_SERVE)
        .arg("-o")
        .arg(options)
        .arg(target)
        .status()
        .context("starting the strata-fuse daemon")?;
    if !status.success() {
        bail!("strata-fuse could not mount {} ({status}; its message is above)", target.display());
    }
    Ok(())
}
