//! `strata bench mount`: what a container feels through the mount. The same layers
//! (unpacked once into a bench store) are mounted by kernel overlayfs (`strata mount`'s
//! default driver), by strata-fuse with and without kernel passthrough, and by
//! fuse-overlayfs, each run on a fresh writable layer, and the same
//! operations are timed: sequential read of the large files, copy-up of those files
//! (append one byte each), a metadata walk of the whole tree, and small-file writes
//! (extracting a tar of ~1000 files into the mount).

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
    StrataFuseNoPassthrough,
    FuseOverlayfs,
}

impl Driver {
    pub fn label(self) -> &'static str {
        match self {
            Driver::Kernel => "strata mount (kernel overlayfs)",
            Driver::StrataFuse => "strata-fuse (passthrough)",
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
            Driver::StrataFuse | Driver::StrataFuseNoPassthrough => {
                mount_fuse(&crate::fuse_daemon()?, &spec, &mnt(scratch), true, self.driver == Driver::StrataFuse)?;
            }
        }
        Ok(())
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

/// The operations, as shell snippets run in the scratch dir (`mnt/` is the mount).
pub fn operations(large_bytes: u64, small_tar: &Path, small_bytes: u64) -> Vec<(&'static str, String, u64)> {
    vec![
        ("sequential read", "cat $(find mnt/opt/models -type f) > /dev/null".to_owned(), large_bytes),
        (
            "copy-up of large files",
            "for f in $(find mnt/opt/models -type f); do printf x >> \"$f\"; done".to_owned(),
            large_bytes,
        ),
        ("metadata walk (ls -lR)", "ls -lR mnt > /dev/null".to_owned(), 0),
        ("small-file writes (tar -x)", format!("mkdir -p mnt/new && tar -xf {:?} -C mnt/new", small_tar), small_bytes),
    ]
}

/// Builds the rows: each operation under each driver, paired with the kernel row.
pub fn tools(
    store: &std::sync::Arc<Store>,
    top: &str,
    ops: &[(&'static str, String, u64)],
) -> (Vec<Tool>, Vec<Skipped>) {
    let mut tools = Vec::new();
    let mut skipped = Vec::new();
    let root = rustix::process::geteuid().is_root();
    for (op, script, bytes) in ops {
        let pair = format!("{}: {op}", Driver::Kernel.label());
        for driver in [Driver::Kernel, Driver::StrataFuse, Driver::StrataFuseNoPassthrough, Driver::FuseOverlayfs] {
            let name = format!("{}: {op}", driver.label());
            if !root {
                skipped.push((name, "mounting needs root".into()));
                continue;
            }
            if driver != Driver::Kernel && !Path::new("/dev/fuse").exists() {
                skipped.push((name, "/dev/fuse missing (modprobe fuse)".into()));
                continue;
            }
            if driver == Driver::FuseOverlayfs && !super::installed("fuse-overlayfs") {
                skipped.push((name, "fuse-overlayfs not installed (apt install fuse-overlayfs)".into()));
                continue;
            }
            let script = script.clone();
            tools.push(Tool {
                name,
                pair: pair.clone(),
                bytes: *bytes,
                command: Box::new(move |scratch: &Path| {
                    let mut c = Command::new("sh");
                    c.arg("-c").arg(format!("set -e; {script}")).current_dir(scratch);
                    c
                }),
                hooks: Some(Box::new(MountHooks {
                    store: std::sync::Arc::clone(store),
                    top: top.to_owned(),
                    driver,
                    current: Mutex::new(None),
                })),
            });
        }
    }
    (tools, skipped)
}
