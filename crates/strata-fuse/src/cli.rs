//! The `strata-fuse` command line: a drop-in for fuse-overlayfs's, so tools that take a
//! `mount_program` (podman, buildah, containers/storage) can use it.
//!
//! Hand-parsed rather than with clap: the grammar is fuse-overlayfs's (`-o` repeated
//! and glued as `-oOPTS`, a mount(8)-style `SOURCE MOUNTPOINT -o ...` form), which
//! clap would reshape.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{UnionConfig, WriteForms, parse_options, serve};

const USAGE: &str = "\
usage: strata-fuse [-f] [-o OPTIONS]... MOUNTPOINT
       strata-fuse SOURCE MOUNTPOINT -o OPTIONS     (as mount.fuse calls it)

A union mount of layer directories with kernel overlayfs semantics, on FUSE.
Writes the upper dir in overlayfs's own format. Takes fuse-overlayfs's options.

Options (-o, comma-separated; `\\,` and `\\:` escape inside paths):
  lowerdir=A:B:C     read-only layers, top-most first (required)
  upperdir=DIR       writable layer (without it: read-only mount)
  workdir=DIR        staging dir on the upper dir's filesystem (with upperdir)
  passthrough=on|off kernel passthrough for file I/O when privileged (default on)
  threads=N          FUSE request threads (default: 2 per CPU, 4..16)
  uring=on|off       take requests over FUSE-over-io_uring, each on its caller's
                     CPU, when the kernel offers it (default on; needs Linux 6.14+
                     and `echo Y > /sys/module/fuse/parameters/enable_uring`)
  userxattr          opaque markers in user.overlay.* (default when not root)
  whiteouts=aufs     write whiteouts as .wh.NAME files (default: char 0/0 devices,
                     falling back to .wh. files where the upper fs cannot make them)
  redirect_dir=on    let directories with lower contents be renamed, as overlayfs's
                     redirect_dir=on (writes *.overlay.redirect; default: follow
                     existing redirects, rename gives EXDEV and mv copies;
                     =off is the default, =nofollow ignores them; userxattr
                     implies nofollow)
  uidmapping=ID:MAPPED:LEN[:ID:MAPPED:LEN...]
  gidmapping=...     show ids stored in the layers as other ids (fuse-overlayfs's
                     form; podman passes them for --uidmap and rootless runs)
  ro, allow_other, dev, nodev, suid, nosuid, exec, noexec, noatime, fsname=NAME
  Accepted for compatibility, no effect: rw, fsync=0|1, volatile, noacl,
  index=off, metacopy=off, xino=off|auto, static_nlink,
  allow_root, auto_unmount

Passthrough serves the data of upper files (and of every file of a read-only mount)
in the kernel; lower files of a writable mount are read through the page cache, so
a copy-up never waits for another user's readers.

Environment:
  STRATA_FUSE_STATS=FILE  count requests and the time spent on them, by opcode;
                          written to FILE when the mount ends

Flags:
  -f        stay in the foreground (default: detach once mounted)
  -d        foreground, with a line per warning on stderr
  -h, --help
  -V, --version

Unmount with `umount MOUNTPOINT` (root), `fusermount3 -u MOUNTPOINT`, or
`strata umount` for mounts made by `strata mount`.
";

/// Environment variable telling a re-executed child to report readiness on stdout.
const NOTIFY_ENV: &str = "STRATA_FUSE_NOTIFY";
const READY: &str = "strata-fuse: ready";

/// Runs the command line; `relaunch` is how to run this same command again (program
/// and leading args) for detaching. Returns the process exit code.
pub fn run(relaunch: &[OsString], args: &[OsString]) -> i32 {
    match run_inner(relaunch, args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("strata-fuse: {message}");
            1
        }
    }
}

fn run_inner(relaunch: &[OsString], args: &[OsString]) -> Result<i32, String> {
    let mut foreground = false;
    let mut options = Vec::new();
    let mut positional: Vec<PathBuf> = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let s = arg.to_string_lossy();
        match s.as_ref() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(0);
            }
            "-V" | "--version" => {
                println!("strata-fuse {}", env!("CARGO_PKG_VERSION"));
                return Ok(0);
            }
            "-f" | "-d" => foreground = true,
            "-o" => options.push(iter.next().ok_or("-o needs an option string")?.to_string_lossy().into_owned()),
            _ if s.starts_with("-o") => options.push(s[2..].to_owned()),
            _ if s.starts_with('-') => return Err(format!("unknown flag {s}\n\n{USAGE}")),
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let mountpoint = match positional.len() {
        1 => positional.remove(0),
        2 => positional.remove(1), // SOURCE MOUNTPOINT: the source is a label
        _ => return Err(format!("expected MOUNTPOINT\n\n{USAGE}")),
    };
    let mut config = UnionConfig::new(Vec::new());
    for opts in &options {
        parse_options(&mut config, opts).map_err(|e| e.to_string())?;
    }
    if config.stack.lowers.is_empty() {
        return Err("no lowerdir= given".into());
    }
    if !foreground {
        return detach(relaunch, args);
    }
    let notify = std::env::var_os(NOTIFY_ENV).is_some();
    serve(&config, &mountpoint, |forms| announce(forms, notify)).map_err(|e| e.to_string())?;
    Ok(0)
}

/// Warns about degraded upper-dir forms; in a detached child, tells the parent the
/// mount is up and lets go of its stdio (a caller waiting for EOF must not hang).
fn announce(forms: WriteForms, notify: bool) {
    if !forms.chardev_whiteouts {
        eprintln!(
            "strata-fuse: whiteouts are written as .wh. files (asked, or the upper filesystem cannot make device nodes)"
        );
    }
    if !forms.opaque_xattr {
        eprintln!("strata-fuse: the upper filesystem has no overlay xattrs: opaque dirs get a .wh..wh..opq file");
    }
    if notify {
        // A daemon must not pin the directory it was started from.
        let _ = std::env::set_current_dir("/");
        println!("{READY}");
        let _ = std::io::stdout().flush();
        if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
            let _ = rustix::stdio::dup2_stdout(&null);
            let _ = rustix::stdio::dup2_stderr(&null);
        }
    }
}

/// Runs this command again in the foreground as a child in its own process group,
/// waits until it has mounted (or failed), and returns.
fn detach(relaunch: &[OsString], args: &[OsString]) -> Result<i32, String> {
    use std::os::unix::process::CommandExt;
    let (program, lead) = relaunch.split_first().ok_or("nothing to relaunch")?;
    let mut child = Command::new(program)
        .args(lead)
        .args(args)
        .arg("-f")
        .env(NOTIFY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the daemon {}: {e}", program.to_string_lossy()))?;
    let stdout = child.stdout.take().ok_or("no pipe to the daemon")?;
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    if line.trim_end() == READY {
        return Ok(0);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    Err(format!("the daemon exited before mounting ({status})"))
}
