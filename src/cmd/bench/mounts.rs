//! `strata bench mount`: what a container feels through the mount. The same layers
//! (unpacked once into a bench store) are mounted by kernel overlayfs (`strata mount`'s
//! default driver), by strata-fuse with and without kernel passthrough (and, where
//! FUSE-over-io_uring is on, once more with `uring=off`), and by
//! fuse-overlayfs, each run on a fresh writable layer, and the same
//! operations are timed ([`operations`]): reads of the large files with a cold and a
//! warm page cache, their copy-up, `find` and `stat` of every file (cold), untarring
//! small files (10,240 at the default size) with and without `sync`, and `rm -rf` of
//! lower files and of files just written.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context as _, bail};
use strata::rootfs::{fuse_options, mount_fuse};
use strata_core::ovl::MountSpec;
use strata_overlay::{KernelMounter, MountPlan, Mounter, OverlayOptions};
use strata_store::Store;

use super::runner::{RunHooks, Skipped, Tool};

/// Which union mount serves the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Kernel,
    StrataFuse,
    /// The same over `/dev/fuse` only: what the io_uring transport gains.
    StrataFuseDevOnly,
    StrataFuseNoPassthrough,
    FuseOverlayfs,
}

impl Driver {
    pub fn label(self) -> &'static str {
        match self {
            Driver::Kernel => "strata mount (kernel overlayfs)",
            Driver::StrataFuse => "strata-fuse (passthrough)",
            Driver::StrataFuseDevOnly => "strata-fuse (passthrough, uring=off)",
            Driver::StrataFuseNoPassthrough => "strata-fuse (no passthrough)",
            Driver::FuseOverlayfs => "fuse-overlayfs",
        }
    }
}

/// Prepares a fresh writable layer and mounts it at `<scratch>/mnt` before each run;
/// unmounts and removes it after.
pub struct MountHooks {
    pub store: std::sync::Arc<Store>,
    pub top: String,
    pub driver: Driver,
    pub op: Operation,
    pub current: Mutex<Option<String>>,
}

fn mnt(scratch: &Path) -> PathBuf {
    scratch.join("mnt")
}

impl RunHooks for MountHooks {
    fn before(&self, scratch: &Path) -> anyhow::Result<()> {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let key = format!("bench-{}", RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let spec = self.store.prepare(&key, Some(&self.top), Default::default())?;
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(key);
        std::fs::create_dir_all(mnt(scratch))?;
        match self.driver {
            Driver::Kernel => {
                let plan = MountPlan::new(&spec, &OverlayOptions::default(), &mnt(scratch))?;
                KernelMounter.mount(&plan, &mnt(scratch))?;
            }
            Driver::FuseOverlayfs => fuse_overlayfs(&spec, &mnt(scratch))?,
            Driver::StrataFuse => mount_fuse(&crate::fuse_daemon()?, &spec, &mnt(scratch), true, &[])?,
            Driver::StrataFuseDevOnly => {
                mount_fuse(&crate::fuse_daemon()?, &spec, &mnt(scratch), true, &["uring=off"])?
            }
            Driver::StrataFuseNoPassthrough => {
                mount_fuse(&crate::fuse_daemon()?, &spec, &mnt(scratch), true, &["passthrough=off"])?;
            }
        }
        if let Some(setup) = &self.op.setup {
            let status = Command::new("sh").arg("-c").arg(format!("set -e; {setup}")).current_dir(scratch).status()?;
            if !status.success() {
                bail!("setup of {:?} failed: {setup}", self.op.name);
            }
        }
        if self.op.cold {
            super::runner::drop_caches()?;
        }
        Ok(())
    }

    fn sync_in_time(&self) -> bool {
        self.op.sync
    }

    fn after(&self, scratch: &Path) {
        let _ = KernelMounter.unmount(&mnt(scratch), true);
        if let Some(key) = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = self.store.remove(&key);
        }
    }
}

/// strata-fuse takes fuse-overlayfs's options, so one builder serves both.
fn fuse_overlayfs(spec: &MountSpec, target: &Path) -> anyhow::Result<()> {
    if spec.upper.is_none() {
        bail!("fuse-overlayfs needs a writable layer");
    }
    let out = Command::new("fuse-overlayfs")
        .arg("-o")
        .arg(fuse_options(spec, false))
        .arg(target)
        .stdout(Stdio::null())
        .output()
        .context("starting fuse-overlayfs")?;
    if !out.status.success() {
        bail!("fuse-overlayfs: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// One timed operation through the mount, as shell snippets run in the scratch dir
/// (`mnt/` is the mount).
#[derive(Debug, Clone)]
pub struct Operation {
    pub name: &'static str,
    /// Untimed, after mounting: warms a cache or puts files in place.
    pub setup: Option<String>,
    /// Drop the page, dentry and inode caches after `setup` (a cold-cache row).
    pub cold: bool,
    /// The timed command.
    pub script: String,
    /// Bytes it moves (for MB/s; 0 for metadata rows).
    pub bytes: u64,
    /// `sync` inside the timed span.
    pub sync: bool,
}

/// Where the bench's files are: the large files (lower layer 2), the small-file tree
/// (lower layer 1), and a tar of a separate many-small-files tree to write.
pub struct Paths<'a> {
    pub large_dir: &'a str,
    pub large_bytes: u64,
    pub small_dir: &'a str,
    pub tree_tar: &'a Path,
    pub tree_bytes: u64,
}

/// The rows: what a container does through its root filesystem, from reading a model
/// file to a package manager unpacking and removing files.
pub fn operations(p: &Paths<'_>) -> Vec<Operation> {
    let large = format!("$(find mnt/{} -type f)", p.large_dir);
    let untar = format!("mkdir -p mnt/new && tar -xf {:?} -C mnt/new", p.tree_tar);
    let op = |name, setup: Option<String>, cold, script: String, bytes, sync| Operation {
        name,
        setup,
        cold,
        script,
        bytes,
        sync,
    };
    vec![
        op("read, cold cache", None, true, format!("cat {large} > /dev/null"), p.large_bytes, false),
        op(
            "read, warm cache",
            Some(format!("cat {large} > /dev/null")),
            false,
            format!("cat {large} > /dev/null"),
            p.large_bytes,
            false,
        ),
        op(
            "copy-up (append 1 byte)",
            None,
            false,
            format!("for f in {large}; do printf x >> \"$f\"; done"),
            p.large_bytes,
            true,
        ),
        op("find", None, true, "find mnt > /dev/null".into(), 0, false),
        op("stat of each file", None, true, "find mnt -print0 | xargs -0 stat > /dev/null".into(), 0, false),
        op("untar small files", None, false, untar.clone(), p.tree_bytes, false),
        op("untar small files + sync", None, false, untar.clone(), p.tree_bytes, true),
        op("rm -rf of lower files", None, true, format!("rm -rf mnt/{}", p.small_dir), 0, true),
        op("rm -rf of files just written", Some(format!("{untar} && sync")), false, "rm -rf mnt/new".into(), 0, true),
    ]
}

/// Builds the rows: each operation under each driver, paired with the kernel row.
pub fn tools(store: &std::sync::Arc<Store>, top: &str, ops: &[Operation]) -> (Vec<Tool>, Vec<Skipped>) {
    let mut tools = Vec::new();
    let mut skipped = Vec::new();
    let root = rustix::process::geteuid().is_root();
    for op in ops {
        let pair = format!("{}: {}", Driver::Kernel.label(), op.name);
        let drivers = [
            Driver::Kernel,
            Driver::StrataFuse,
            Driver::StrataFuseDevOnly,
            Driver::StrataFuseNoPassthrough,
            Driver::FuseOverlayfs,
        ];
        for driver in drivers {
            let name = format!("{}: {}", driver.label(), op.name);
            if !root {
                skipped.push((name, "mounting needs root".into()));
                continue;
            }
            if driver != Driver::Kernel && !Path::new("/dev/fuse").exists() {
                skipped.push((name, "/dev/fuse missing (modprobe fuse)".into()));
                continue;
            }
            if driver == Driver::StrataFuseDevOnly && !strata_fuse::uring_enabled() {
                skipped.push((name, "FUSE-over-io_uring is off: every strata-fuse row already uses /dev/fuse".into()));
                continue;
            }
            if driver == Driver::FuseOverlayfs && !super::installed("fuse-overlayfs") {
                skipped.push((name, "fuse-overlayfs not installed (apt install fuse-overlayfs)".into()));
                continue;
            }
            let script = op.script.clone();
            tools.push(Tool {
                name,
                pair: pair.clone(),
                bytes: op.bytes,
                command: Box::new(move |scratch: &Path| {
                    let mut c = Command::new("sh");
                    c.arg("-c").arg(format!("set -e; {script}")).current_dir(scratch);
                    c
                }),
                hooks: Some(Box::new(MountHooks {
                    store: std::sync::Arc::clone(store),
                    top: top.to_owned(),
                    driver,
                    op: op.clone(),
                    current: Mutex::new(None),
                })),
            });
        }
    }
    (tools, skipped)
}
