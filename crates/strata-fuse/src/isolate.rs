//! A root daemon serves the union from a private mount namespace, so that its fds on
//! the layers pin only its own copies of their mounts: once `umount` of the union
//! returns, the filesystems under the layers can be unmounted at once, though the
//! daemon still needs a moment to see the connection close and exit (the
//! unionmount-testsuite's `umount /lower` right after `umount /mnt` failed with
//! "target is busy"). The FUSE mount itself is made first, in the caller's namespace.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::UnionConfig;

/// A FUSE connection mounted in the caller's namespace, served from a private one.
pub(crate) struct Isolated {
    /// The /dev/fuse fd of the mount.
    pub dev: OwnedFd,
    /// The caller's namespace, to go back to if serving cannot start.
    host: Option<OwnedFd>,
    /// The mount's readahead knob in sysfs, found before leaving the namespace.
    pub readahead_knob: Option<PathBuf>,
}

impl Isolated {
    /// Undoes the mount when the daemon cannot serve it (a layer failed to open): back
    /// in the caller's namespace, so the mount does not stay behind disconnected.
    pub(crate) fn abandon(self, mountpoint: &Path) {
        if let Some(host) = &self.host {
            let _ = rustix::thread::move_into_link_name_space(
                rustix::fd::AsFd::as_fd(host),
                Some(rustix::thread::LinkNameSpaceType::Mount),
            );
        }
        let _ = rustix::mount::unmount(mountpoint, UnmountFlags::DETACH);
    }
}

/// Mounts FUSE at `mountpoint` (root only), then moves this process (which must not
/// have started threads yet) into a private mount namespace that keeps only the mounts
/// the layers need. Without namespaces the mount is still made and served; only the
/// early release is lost.
pub(crate) fn mount_then_isolate(config: &UnionConfig, mountpoint: &Path, read_only: bool) -> io::Result<Isolated> {
    // Resolved now: the layers' paths must not be looked up through our own mount.
    let keep: Vec<PathBuf> = config
        .stack
        .lowers
        .iter()
        .chain(&config.stack.upper)
        .chain(&config.stack.work)
        .map(std::fs::canonicalize)
        .chain(["/proc", "/dev", "/sys"].map(|p| Ok(PathBuf::from(p))))
        .collect::<io::Result<_>>()?;
    let mountpoint = std::fs::canonicalize(mountpoint)?;
    let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    mount_fuse(config, &mountpoint, read_only, &dev)?;
    // Found through this namespace's mountinfo: before we leave it.
    let readahead_knob = crate::readahead_knob(&mountpoint);
    let host = rustix::fs::open("/proc/self/ns/mnt", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok();
    // `unshare` is deprecated in rustix only for `CLONE_FILES` (fds that other threads
    // could no longer use); a new mount namespace changes no fd, and no thread runs yet.
    #[allow(deprecated)]
    if rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS).is_err() {
        return Ok(Isolated { dev, host: None, readahead_knob });
    }
    let isolated = Isolated { dev, host, readahead_knob };
    if let Err(e) = rustix::mount::mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC) {
        isolated.abandon(&mountpoint);
        return Err(e.into());
    }
    // Our copy of the union first (it would keep the connection alive after the real
    // one is unmounted), then every mount the layers do not need: a private copy of a
    // disk the host later unmounts would keep its filesystem alive until we exit.
    let _ = rustix::mount::unmount(&mountpoint, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW);
    let needed =
        |point: &Path| point == Path::new("/") || keep.iter().any(|k| k.starts_with(point) || point.starts_with(k));
    let mut points: Vec<PathBuf> =
        strata_core::sys::mountinfo::mounts().unwrap_or_default().into_iter().map(|m| m.point).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for point in points.iter().filter(|p| !needed(p)) {
        let _ = rustix::mount::unmount(point, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW);
    }
    Ok(isolated)
}

/// `mount -t fuse.strata` on `dev`, with the options fuser would pass.
fn mount_fuse(config: &UnionConfig, mountpoint: &Path, read_only: bool, dev: &OwnedFd) -> io::Result<()> {
    let has = |flag: &str| config.flags.iter().any(|f| f == flag);
    let mut flags = MountFlags::empty();
    for (off, flag) in [("suid", MountFlags::NOSUID), ("dev", MountFlags::NODEV)] {
        if !has(off) {
            flags |= flag;
        }
    }
    for (on, flag) in [("noexec", MountFlags::NOEXEC), ("noatime", MountFlags::NOATIME)] {
        if has(on) {
            flags |= flag;
        }
    }
    if read_only {
        flags |= MountFlags::RDONLY;
    }
    let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    let fd = rustix::fd::AsRawFd::as_raw_fd(dev);
    let mut data = format!("fd={fd},rootmode=40000,user_id={uid},group_id={gid},default_permissions");
    if config.allow_other {
        data.push_str(",allow_other");
    }
    let data = std::ffi::CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    rustix::mount::mount(config.fsname.as_str(), mountpoint, "fuse.strata", flags, data.as_c_str())?;
    Ok(())
}
