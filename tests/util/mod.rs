//! Fixtures for the end-to-end tests: layers written in code, a sandbox with a victim
//! directory beside the target, tree snapshots for comparing results entry by entry,
//! the privileged-test gate and a mount guard.

#![allow(dead_code)]

pub mod grpc;
pub mod images;
pub mod tree;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use strata::core::{ApplyBuilder, ApplyReport, Mode};

pub use tree::Tree;

pub use strata_testkit::{e, gzip, layer, zstd};

/// The direct children of `dir` in a tree, as full paths.
pub fn children(t: &Tree, dir: &str) -> Vec<String> {
    let prefix = format!("{dir}/");
    t.paths()
        .into_iter()
        .filter(|p| p.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('/')))
        .map(str::to_owned)
        .collect()
}

/// Applies `layer` flat into `dir`.
pub fn apply_flat(layer: &[u8], dir: &Path) -> strata::core::Result<ApplyReport> {
    ApplyBuilder::new(Mode::Flat).build()?.apply(layer, dir)
}

/// Applies `layer` in overlay form into `dir`, with `parents` nearest first.
pub fn apply_overlay(layer: &[u8], dir: &Path, parents: &[&Path]) -> strata::core::Result<ApplyReport> {
    let mut b = ApplyBuilder::new(Mode::Overlay);
    for p in parents {
        b = b.parent(p);
    }
    b.build()?.apply(layer, dir)
}

/// A temporary directory holding `target/` and, beside it, `victim/`: hostile layers aim
/// at the victim, and every test checks it did not change.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).expect("mkdir victim");
        std::fs::write(victim.join("secret"), b"do not touch").expect("write victim");
        std::fs::create_dir(victim.join("sub")).expect("mkdir victim/sub");
        std::fs::write(victim.join("sub/file"), b"also untouched").expect("write victim");
        std::fs::create_dir(dir.path().join("target")).expect("mkdir target");
        Sandbox { dir }
    }

    pub fn target(&self) -> PathBuf {
        self.dir.path().join("target")
    }

    pub fn victim(&self) -> PathBuf {
        self.dir.path().join("victim")
    }

    /// Everything in the sandbox except the target: must never change.
    pub fn outside(&self) -> Tree {
        Tree::of_excluding(self.dir.path(), "target")
    }
}

/// The opt-out for hosts that cannot run privileged tests. CI never sets it.
pub const SKIP_PRIVILEGED_ENV: &str = "STRATA_SKIP_PRIVILEGED";

/// Gate for `privileged_*` tests: true when this host can run them (root, overlayfs).
/// Otherwise the test *fails* with the reason, unless `STRATA_SKIP_PRIVILEGED=1` is set;
/// then it returns false and a SKIPPED line goes straight to the terminal's stderr (not
/// through `eprintln!`, which libtest captures and hides for passing tests).
pub fn require_privileged(test: &str) -> bool {
    let mut missing = Vec::new();
    if rustix::process::geteuid().as_raw() != 0 {
        missing.push("root");
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.lines().any(|l| l.ends_with("\toverlay")) {
        missing.push("overlayfs (modprobe overlay)");
    }
    unavailable(test, &missing)
}

/// As [`require_privileged`], plus /dev/fuse.
pub fn require_fuse(test: &str) -> bool {
    let fuse = Path::new("/dev/fuse").exists();
    require_privileged(test) && unavailable(test, if fuse { &[] } else { &["/dev/fuse (modprobe fuse)"] })
}

/// As [`require_fuse`], plus FUSE-over-io_uring switched on (Linux 6.14+; CI runs
/// `echo Y > /sys/module/fuse/parameters/enable_uring`).
pub fn require_fuse_uring(test: &str) -> bool {
    let on = strata::fuse::uring_enabled();
    require_fuse(test)
        && unavailable(
            test,
            if on { &[] } else { &["FUSE-over-io_uring (echo Y > /sys/module/fuse/parameters/enable_uring)"] },
        )
}

/// As [`require_privileged`], plus each of `tools` on `PATH` (CI installs them from Debian).
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<String> = tools
        .iter()
        .filter(|tool| !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .map(|tool| format!("{tool} on PATH"))
        .collect();
    let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
    require_privileged(test) && unavailable(test, &missing)
}

/// True when nothing is missing; else a failure, or a visible skip under the opt-out.
fn unavailable(test: &str, missing: &[&str]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{test}: needs {}", missing.join(" and "));
    if std::env::var_os(SKIP_PRIVILEGED_ENV).is_some_and(|v| v == "1") {
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED {reason} ({SKIP_PRIVILEGED_ENV}=1)");
        return false;
    }
    panic!("{reason}; run as root on a host with overlayfs and /dev/fuse, or set {SKIP_PRIVILEGED_ENV}=1 to skip");
}

/// xorshift64*: deterministic pseudo-random choices for seeded tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
    }
}

/// Unmounts (lazily, so nothing can hang) when dropped, even on panic.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ =
            std::process::Command::new("umount").arg("-l").arg(&self.0).stderr(std::process::Stdio::null()).status();
    }
}

/// Runs `cmd` (no stdin); panics with its output unless it succeeds; returns its trimmed stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Unmounts whatever a tool left mounted under `dir` (deepest first), before the
/// temp dir goes away.
pub fn unmount_all_under(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| Path::new(p).starts_with(dir)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = Command::new("umount").arg("-l").arg(point).stderr(Stdio::null()).status();
    }
}

/// A strata-fuse daemon a test started. Dropped before [`FuseDaemon::unmount`] (a test
/// that failed midway), its mount is detached and the daemon killed by its PID and reaped.
pub struct FuseDaemon {
    child: std::process::Child,
    mnt: PathBuf,
}

impl FuseDaemon {
    /// The daemon's PID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL by its PID, then reaps it; the mount stays (a dead daemon's mount).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Unmounts MNT and waits for the daemon to exit on its own; its exit status.
    pub fn unmount(mut self) -> std::process::ExitStatus {
        assert!(Command::new("umount").arg(&self.mnt).status().expect("umount").success());
        self.child.wait().expect("daemon exits after umount")
    }
}

impl Drop for FuseDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).stderr(Stdio::null()).status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `strata-fuse -f -o OPTS MNT`, behind `wrapper` (e.g. `["prlimit",
/// "--nofile=1300:1300"]`) when one is given, and returns once MNT is mounted.
pub fn start_strata_fuse(wrapper: &[&str], opts: &str, mnt: &Path) -> FuseDaemon {
    let daemon_program = env!("CARGO_BIN_EXE_strata-fuse");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(daemon_program);
            c
        }
        None => Command::new(daemon_program),
    };
    let child = cmd.args(["-f", "-o", opts]).arg(mnt).spawn().expect("start strata-fuse");
    let mut daemon = FuseDaemon { child, mnt: mnt.to_path_buf() };
    for _ in 0..500 {
        if strata::overlay::is_mount_point(mnt) {
            return daemon;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("strata-fuse exited ({status}) before mounting {}", mnt.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("strata-fuse did not mount {} within 5 s", mnt.display());
}
