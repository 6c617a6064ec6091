//! Extended attributes, fd-relative.
//!
//! Regular files and directories get `fsetxattr` on an open fd. Symlinks, devices and
//! fifos cannot be opened for that (a symlink opens as `O_PATH` only, and opening a fifo
//! blocks), and Linux has no `lsetxattrat` before 6.13, so we name them through
//! `/proc/self/fd/<dirfd>/<name>` with the `l*` calls: the magic link pins the directory
//! we already resolved safely and the final name is not followed.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;

use rustix::fs::XattrFlags;

fn via_proc(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(name);
    path
}

/// The names in a `listxattr` buffer (NUL-separated).
fn names(list: &[u8]) -> Vec<String> {
    list.split(|&b| b == 0).filter(|k| !k.is_empty()).map(|k| String::from_utf8_lossy(k).into_owned()).collect()
}

/// `fsetxattr(fd, key, value)`.
///
/// # Errors
/// What the kernel says (`ENOTSUP`, `EPERM`, ...).
pub fn set_xattr_fd(fd: BorrowedFd<'_>, key: &str, value: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(fd, key, value, XattrFlags::empty()).map_err(io::Error::from)
}

/// `lsetxattr` on `name` in `dir`, never following `name`.
///
/// # Errors
/// What the kernel says (`EPERM` for `user.*` on a symlink, ...).
pub fn set_xattr_nofollow(dir: BorrowedFd<'_>, name: &OsStr, key: &str, value: &[u8]) -> io::Result<()> {
    set_xattr_nofollow_with(dir, name, key, value, XattrFlags::empty())
}

/// As [`set_xattr_nofollow`], with `XATTR_CREATE` / `XATTR_REPLACE` flags (`name` may
/// be `.` for `dir` itself).
///
/// # Errors
/// What the kernel says (`EEXIST`, `ENODATA` for the flags, ...).
pub fn set_xattr_nofollow_with(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    key: impl rustix::path::Arg,
    value: &[u8],
    flags: XattrFlags,
) -> io::Result<()> {
    rustix::fs::lsetxattr(via_proc(dir, name), key, value, flags).map_err(io::Error::from)
}

/// `lremovexattr` on `name` in `dir` (`.` for `dir` itself), never following `name`.
///
/// # Errors
/// `ENODATA` when the key is absent, or what the kernel says.
pub fn remove_xattr_nofollow(dir: BorrowedFd<'_>, name: &OsStr, key: impl rustix::path::Arg) -> io::Result<()> {
    rustix::fs::lremovexattr(via_proc(dir, name), key).map_err(io::Error::from)
}

/// The xattr names of `name` in `dir` (never following `name`; empty name: `dir` itself,
/// reached by following the `/proc` magic link to the directory fd).
///
/// # Errors
/// What the kernel says.
pub fn list_xattrs(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<String>> {
    let path = via_proc(dir, name);
    let mut buf = vec![0u8; 4096];
    loop {
        let listed = if name.is_empty() {
            rustix::fs::listxattr(&path, &mut buf[..])
        } else {
            rustix::fs::llistxattr(&path, &mut buf[..])
        };
        match listed {
            Ok(n) => {
                return Ok(names(&buf[..n]));
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The value of xattr `key` of `name` in `dir`, `None` when unset.
///
/// # Errors
/// What the kernel says, other than `ENODATA`.
pub fn get_xattr(dir: BorrowedFd<'_>, name: &OsStr, key: &str) -> io::Result<Option<Vec<u8>>> {
    let path = via_proc(dir, name);
    let mut buf = vec![0u8; 256];
    loop {
        let got = if name.is_empty() {
            rustix::fs::getxattr(&path, key, &mut buf[..])
        } else {
            rustix::fs::lgetxattr(&path, key, &mut buf[..])
        };
        match got {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The xattr names of an open file or directory.
///
/// # Errors
/// What the kernel says.
pub fn list_xattrs_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    let mut buf = vec![0u8; 4096];
    loop {
        match rustix::fs::flistxattr(fd, &mut buf[..]) {
            Ok(n) => {
                return Ok(names(&buf[..n]));
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// `fremovexattr(fd, key)`; an absent key is not an error.
///
/// # Errors
/// What the kernel says, other than `ENODATA`.
pub fn remove_xattr_fd(fd: BorrowedFd<'_>, key: &str) -> io::Result<()> {
    match rustix::fs::fremovexattr(fd, key) {
        Ok(()) | Err(rustix::io::Errno::NODATA) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
