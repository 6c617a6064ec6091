//! Mounting behind a small trait: the kernel, and a recording fake for unit tests.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags};

use crate::error::{Error, Result};
use crate::plan::MountPlan;

/// Something that can mount a [`MountPlan`] and unmount it again.
pub trait Mounter {
    /// Mounts `plan` at `target` (an existing directory).
    ///
    /// # Errors
    /// The kernel refuses; the error carries its fs-context messages.
    fn mount(&self, plan: &MountPlan, target: &Path) -> Result<()>;

    /// Unmounts `target`; `lazy` detaches it even while busy (`MNT_DETACH`).
    ///
    /// # Errors
    /// Not mounted, busy (without `lazy`), or not permitted.
    fn unmount(&self, target: &Path, lazy: bool) -> Result<()>;
}

/// The real thing: the new mount API (fsopen / fsconfig / fsmount / move_mount, one
/// `lowerdir+` per layer, so no option string and no page-size limit), with fallbacks to
/// a single `lowerdir` (kernels before 6.8) and to mount(2) (kernels before 5.2).
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelMounter;

fn mount_err(op: impl Into<String>, target: &Path, kernel: Vec<String>, e: Errno) -> Error {
    Error::Mount { op: op.into(), target: target.to_owned(), kernel, source: e.into() }
}

/// Drains the fs-context log: overlayfs says why it refuses there (`e overlay: ...`).
fn kernel_log(fs: BorrowedFd<'_>) -> Vec<String> {
    let mut lines = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        // Each message starts with its level: "e ", "w " or "i ".
        let line = String::from_utf8_lossy(&buf[..n]);
        let text = line
            .strip_prefix("e ")
            .or_else(|| line.strip_prefix("w "))
            .or_else(|| line.strip_prefix("i "))
            .unwrap_or(&line);
        lines.push(text.trim().to_owned());
    }
    lines
}

impl KernelMounter {
    fn overlay_new_api(
        &self,
        lowers: &[PathBuf],
        upper: &Option<(PathBuf, PathBuf)>,
        options: &[(String, Option<String>)],
        read_only: bool,
        target: &Path,
    ) -> std::result::Result<(), (Errno, Error)> {
        let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(|e| (e, mount_err("fsopen overlay", target, Vec::new(), e)))?;
        let fail = |op: String, e: Errno| (e, mount_err(op, target, kernel_log(fs.as_fd()), e));
        let mut lowers_iter = lowers.iter();
        if let Some(first) = lowers_iter.next() {
            match rustix::mount::fsconfig_set_string(&fs, "lowerdir+", first) {
                Ok(()) => {
                    for lower in lowers_iter {
                        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower)
                            .map_err(|e| fail(format!("fsconfig lowerdir+ {}", lower.display()), e))?;
                    }
                }
                // Before Linux 6.8 there is no lowerdir+: one colon-separated value.
                Err(Errno::INVAL) => {
                    let _ = kernel_log(fs.as_fd());
                    let joined = lowers.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join(":");
                    rustix::mount::fsconfig_set_string(&fs, "lowerdir", joined.as_str())
                        .map_err(|e| fail("fsconfig lowerdir".into(), e))?;
                }
                Err(e) => return Err(fail(format!("fsconfig lowerdir+ {}", first.display()), e)),
            }
        }
        if let Some((upper, work)) = upper {
            rustix::mount::fsconfig_set_string(&fs, "upperdir", upper)
                .map_err(|e| fail("fsconfig upperdir".into(), e))?;
            rustix::mount::fsconfig_set_string(&fs, "workdir", work).map_err(|e| fail("fsconfig workdir".into(), e))?;
        }
        for (key, value) in options {
            match value {
                Some(value) => rustix::mount::fsconfig_set_string(&fs, key.as_str(), value.as_str()),
                None => rustix::mount::fsconfig_set_flag(&fs, key.as_str()),
            }
            .map_err(|e| fail(format!("fsconfig {key}"), e))?;
        }
        rustix::mount::fsconfig_create(&fs).map_err(|e| fail("fsconfig create".into(), e))?;
        let attrs = if read_only { MountAttrFlags::MOUNT_ATTR_RDONLY } else { MountAttrFlags::empty() };
        let mnt =
            rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(|e| fail("fsmount".into(), e))?;
        rustix::mount::move_mount(&mnt, "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
            .map_err(|e| fail("move_mount".into(), e))
    }

    /// mount(2) with an option string; relative paths (from the layers' common parent)
    /// when the absolute ones would pass the page size.
    fn overlay_legacy(&self, plan: &MountPlan, read_only: bool, target: &Path) -> Result<()> {
        let fail = |op: &str, e: Errno| mount_err(op, target, Vec::new(), e);
        let plan_err = |reason: String| Error::Plan { target: target.to_owned(), reason };
        let mut data = plan.legacy_options(None).map_err(plan_err)?;
        let mut base = None;
        if data.len() >= 4096 {
            let parent = common_parent(plan)
                .ok_or_else(|| plan_err("layer paths share no parent for relative options".into()))?;
            data = plan.legacy_options(Some(&parent)).map_err(plan_err)?;
            base = Some(parent);
        }
        let data = CString::new(data).map_err(|_| plan_err("NUL in mount options".into()))?;
        let flags = if read_only { MountFlags::RDONLY } else { MountFlags::empty() };
        let target = std::path::absolute(target)
            .map_err(|e| Error::Plan { target: target.to_owned(), reason: e.to_string() })?;
        // The relative form resolves against the working directory: this changes it for
        // the whole process while mounting (the CLI is single-threaded here).
        let previous = match &base {
            Some(dir) => {
                let here = rustix::fs::open(
                    ".",
                    rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(|e| fail("open cwd", e))?;
                rustix::process::chdir(dir).map_err(|e| fail("chdir to layers", e))?;
                Some(here)
            }
            None => None,
        };
        let result = rustix::mount::mount("overlay", &target, "overlay", flags, data.as_c_str())
            .map_err(|e| fail("mount(2) overlay", e));
        if let Some(here) = previous {
            rustix::process::fchdir(&here).map_err(|e| fail("restore cwd", e))?;
        }
        result
    }
}

fn common_parent(plan: &MountPlan) -> Option<PathBuf> {
    let MountPlan::Overlay { lowers, upper, .. } = plan else { return None };
    let mut all: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    if let Some((u, w)) = upper {
        all.extend([u.as_path(), w.as_path()]);
    }
    let mut parent = all.first()?.parent()?.to_owned();
    while !all.iter().all(|p| p.starts_with(&parent)) {
        parent = parent.parent()?.to_owned();
    }
    Some(parent)
}

impl Mounter for KernelMounter {
    fn mount(&self, plan: &MountPlan, target: &Path) -> Result<()> {
        match plan {
            MountPlan::Bind { source, read_only } => {
                rustix::mount::mount_bind(source, target)
                    .map_err(|e| mount_err("bind mount", target, Vec::new(), e))?;
                if *read_only {
                    rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                        .map_err(|e| mount_err("remount read-only", target, Vec::new(), e))?;
                }
                Ok(())
            }
            MountPlan::Overlay { lowers, upper, options } => {
                let read_only = upper.is_none();
                match self.overlay_new_api(lowers, upper, options, read_only, target) {
                    Ok(()) => Ok(()),
                    Err((Errno::NOSYS, _)) => self.overlay_legacy(plan, read_only, target),
                    Err((_, err)) => Err(err),
                }
            }
        }
    }

    fn unmount(&self, target: &Path, lazy: bool) -> Result<()> {
        let flags = if lazy { UnmountFlags::DETACH } else { UnmountFlags::empty() };
        rustix::mount::unmount(target, flags)
            .map_err(|e| Error::Unmount { target: target.to_owned(), source: io::Error::from(e) })
    }
}

/// A fake that records what it was asked to do, for tests of code that mounts.
#[derive(Debug, Default)]
pub struct RecordingMounter {
    /// Every mount, in order.
    pub mounts: Mutex<Vec<(MountPlan, PathBuf)>>,
    /// Every unmount, in order.
    pub unmounts: Mutex<Vec<(PathBuf, bool)>>,
}

impl Mounter for RecordingMounter {
    fn mount(&self, plan: &MountPlan, target: &Path) -> Result<()> {
        self.mounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((plan.clone(), target.to_owned()));
        Ok(())
    }

    fn unmount(&self, target: &Path, lazy: bool) -> Result<()> {
        self.unmounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((target.to_owned(), lazy));
        Ok(())
    }
}
