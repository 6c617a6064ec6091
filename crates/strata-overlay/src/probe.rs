//! What the host can do, probed once: `strata info` prints it, `strata mount` checks it.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{Dir, FileType};
use rustix::mount::FsOpenFlags;

/// Host features that matter for overlay mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFeatures {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// `overlay` is in /proc/filesystems.
    pub overlay: bool,
    /// fsopen("overlay") works (Linux 5.2+).
    pub new_mount_api: bool,
    /// `lowerdir+` is accepted (Linux 6.8+): no page-size limit on layers.
    pub lowerdir_plus: bool,
    /// `userxattr` exists (Linux 5.11+): rootless overlay in a user namespace.
    pub userxattr: bool,
    /// Running as root.
    pub root: bool,
    /// The probed dir's filesystem reports file types in readdir (overlay needs it).
    pub d_type: bool,
    /// `trusted.*` xattrs can be set there (root overlay form).
    pub trusted_xattrs: bool,
    /// `user.*` xattrs can be set there (rootless overlay form).
    pub user_xattrs: bool,
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

impl HostFeatures {
    /// Why kernel overlayfs cannot mount layers of a store at `root` here, if it cannot:
    /// the one rule `strata mount --driver auto` and `strata snapshotter --driver auto`
    /// fall back to strata-fuse by.
    pub fn overlay_problem(&self, root: &Path) -> Option<String> {
        if !self.root {
            Some("kernel overlayfs needs root (CAP_SYS_ADMIN)".to_owned())
        } else if !self.overlay {
            Some("this kernel has no overlayfs (try `modprobe overlay`)".to_owned())
        } else if !self.d_type {
            Some(format!(
                "the store at {} is on a filesystem without d_type, which overlayfs requires (XFS needs ftype=1)",
                root.display()
            ))
        } else {
            None
        }
    }

    /// Probes the kernel and the filesystem holding `dir` (a scratch file is created and
    /// removed there).
    pub fn probe(dir: &Path) -> HostFeatures {
        let kernel = rustix::system::uname().release().to_string_lossy().into_owned();
        let overlay =
            std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.lines().any(|l| l.ends_with("\toverlay")));
        let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC);
        let new_mount_api = fs.is_ok();
        let lowerdir_plus =
            fs.as_ref().is_ok_and(|fs| rustix::mount::fsconfig_set_string(fs, "lowerdir+", dir).is_ok());
        let (d_type, trusted_xattrs, user_xattrs) = probe_dir(dir);
        HostFeatures {
            userxattr: kernel_at_least(&kernel, 5, 11),
            kernel,
            overlay,
            new_mount_api,
            lowerdir_plus,
            root: rustix::process::geteuid().is_root(),
            d_type,
            trusted_xattrs,
            user_xattrs,
        }
    }
}

fn probe_dir(dir: &Path) -> (bool, bool, bool) {
    let Ok(scratch) = tempfile_in(dir) else { return (false, false, false) };
    let set = |key: &str| rustix::fs::setxattr(&scratch, key, b"y", rustix::fs::XattrFlags::empty()).is_ok();
    let trusted = set("trusted.strata.probe");
    let user = set("user.strata.probe");
    let d_type = std::fs::File::open(dir).ok().and_then(|d| Dir::read_from(d.as_fd()).ok()).is_some_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            e.file_name().to_bytes() == scratch.file_name().map_or(&b""[..], |n| n.as_encoded_bytes())
                && e.file_type() != FileType::Unknown
        })
    });
    let _ = std::fs::remove_file(&scratch);
    (d_type, trusted, user)
}

fn tempfile_in(dir: &Path) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join(format!(".strata-probe-{}", std::process::id()));
    std::fs::write(&path, b"")?;
    Ok(path)
}

/// Whether `target` is a mount point (per /proc/self/mountinfo).
pub fn is_mount_point(target: &Path) -> bool {
    // A FUSE mount whose daemon died fails every stat (ENOTCONN): use the path as given.
    let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    strata_core::sys::mountinfo::mounts().is_ok_and(|mounts| mounts.iter().any(|m| m.point == target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.18.44-fc", 6, 8));
        assert!(kernel_at_least("5.11.0", 5, 11));
        assert!(!kernel_at_least("5.10.200", 5, 11));
    }
}
