//! Metadata for nodes that cannot be opened for I/O: symlinks, fifos, devices.
//!
//! Setting an owner, mode or time by name after `mknodat`/`symlinkat` is a race: in a
//! directory another user can write, that user can rename something else into the name
//! between our two calls (`renameat2(RENAME_EXCHANGE)`), and `fchmodat` follows symlinks
//! (CVE-2018-15664 class; Linux has `fchmodat2(AT_SYMLINK_NOFOLLOW)` only since 6.6). So
//! the node is pinned right after it is made: an `O_PATH | O_NOFOLLOW` fd, checked to be
//! the kind of node we made. Every later call goes through that fd, so it reaches the
//! inode we created whatever happens to the name. If someone swapped the name before
//! the pin, the type check fails (a swapped-in fifo of their own is harmless: a fifo
//! cannot run, and devices need `CAP_MKNOD`).
//!
//! Calls on an `O_PATH` fd: `fchownat(fd, "", AT_EMPTY_PATH)` and
//! `utimensat(fd, "", AT_EMPTY_PATH)` take it directly; `chmod` and `setxattr` go through
//! `/proc/self/fd/N`, the magic link the kernel resolves to the pinned inode itself (glibc
//! implements `fchmodat(AT_SYMLINK_NOFOLLOW)` the same way).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::timespec;
use crate::tar::Timestamp;

/// A node pinned by an `O_PATH | O_NOFOLLOW` fd (see the module docs).
#[derive(Debug)]
pub struct PinnedNode {
    fd: OwnedFd,
    kind: FileType,
}

/// Pins `name` in `dir`, which must be a node of type `kind`.
///
/// # Errors
/// An error naming `name` when it is no longer a `kind` (someone replaced it), or what
/// the kernel says.
pub fn pin_node(dir: BorrowedFd<'_>, name: &OsStr, kind: FileType) -> io::Result<PinnedNode> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != kind {
        let what = format!("{} was replaced by another file while being created", name.to_string_lossy());
        return Err(io::Error::other(what));
    }
    Ok(PinnedNode { fd, kind })
}

impl PinnedNode {
    fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }

    /// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH)`.
    ///
    /// # Errors
    /// `EPERM` without `CAP_CHOWN`, or what the kernel says.
    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        let (uid, gid) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
        rustix::fs::chownat(&self.fd, "", Some(uid), Some(gid), AtFlags::EMPTY_PATH).map_err(io::Error::from)
    }

    /// Sets the permission bits (symlinks have none on Linux: a no-op for them).
    ///
    /// # Errors
    /// What the kernel says.
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        if self.kind == FileType::Symlink {
            return Ok(());
        }
        rustix::fs::chmod(self.proc_path(), Mode::from_raw_mode(mode)).map_err(io::Error::from)
    }

    /// Sets one extended attribute on the pinned node.
    ///
    /// # Errors
    /// What the kernel says (`EPERM` for `user.*` on a symlink or special file, ...).
    pub fn set_xattr(&self, key: &str, value: &[u8]) -> io::Result<()> {
        rustix::fs::setxattr(self.proc_path(), key, value, XattrFlags::empty()).map_err(io::Error::from)
    }

    /// `utimensat(fd, "", [atime, mtime], AT_EMPTY_PATH)`.
    ///
    /// # Errors
    /// What the kernel says.
    pub fn set_times(&self, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
        let times = Timestamps { last_access: timespec(atime), last_modification: timespec(mtime) };
        match rustix::fs::utimensat(&self.fd, "", &times, AtFlags::EMPTY_PATH) {
            // Kernels before 5.8 lack AT_EMPTY_PATH here; the magic link reaches the same
            // inode, and a symlink's O_PATH link is not followed further.
            Err(Errno::INVAL) => rustix::fs::utimensat(
                rustix::fs::CWD,
                self.proc_path().as_str(),
                &times,
                if self.kind == FileType::Symlink { AtFlags::SYMLINK_NOFOLLOW } else { AtFlags::empty() },
            ),
            other => other,
        }
        .map_err(io::Error::from)
    }
}

impl AsFd for PinnedNode {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn pinned_fifo_metadata_reaches_the_fifo_not_a_swapped_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = super::super::open_dir_path(tmp.path()).expect("open");
        rustix::fs::mknodat(&dir, "p", FileType::Fifo, Mode::from_raw_mode(0o600), 0).expect("mkfifo");
        let pinned = pin_node(dir.as_fd(), OsStr::new("p"), FileType::Fifo).expect("pin");
        // Another user's swap: the name now points at a symlink to a victim file.
        std::fs::write(tmp.path().join("victim"), b"x").expect("write");
        std::fs::set_permissions(tmp.path().join("victim"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::rename(tmp.path().join("p"), tmp.path().join("moved")).expect("rename");
        std::os::unix::fs::symlink(tmp.path().join("victim"), tmp.path().join("p")).expect("symlink");
        pinned.chmod(0o4755).expect("chmod");
        pinned.set_times(Timestamp { secs: 7, nanos: 0 }, Timestamp { secs: 9, nanos: 5 }).expect("times");
        let victim = std::fs::metadata(tmp.path().join("victim")).expect("stat");
        assert_eq!(victim.mode() & 0o7777, 0o600, "the victim's mode must not change");
        let fifo = std::fs::symlink_metadata(tmp.path().join("moved")).expect("stat");
        assert_eq!(fifo.mode() & 0o7777, 0o4755);
        assert_eq!((fifo.mtime(), fifo.mtime_nsec()), (9, 5));
    }

    #[test]
    fn pin_refuses_a_node_of_another_kind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("f"), b"x").expect("write");
        let dir = super::super::open_dir_path(tmp.path()).expect("open");
        assert!(pin_node(dir.as_fd(), OsStr::new("f"), FileType::Fifo).is_err());
        std::os::unix::fs::symlink("f", tmp.path().join("l")).expect("symlink");
        let link = pin_node(dir.as_fd(), OsStr::new("l"), FileType::Symlink).expect("pin symlink");
        link.set_times(Timestamp { secs: 3, nanos: 0 }, Timestamp { secs: 4, nanos: 0 }).expect("times");
        assert_eq!(std::fs::symlink_metadata(tmp.path().join("l")).expect("lstat").mtime(), 4);
        assert_ne!(std::fs::metadata(tmp.path().join("f")).expect("stat").mtime(), 4);
    }
}
