//! The only module that makes filesystem syscalls.
//!
//! Every call is relative to a directory fd and never follows a symlink in the final
//! component; directories are opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`, or, on kernels before 5.6, one `openat(O_NOFOLLOW)` per
//! component, which gives the same guarantee. Names follow cap-std's convention: a
//! function's name says what it guarantees.
//!
//! We use `rustix` rather than `nix` or raw `libc` because it wraps every call we need
//! (openat2 with resolve flags, the `*at` family, xattrs, copy_file_range) safely over
//! `OwnedFd`/`BorrowedFd`, so this crate needs no `unsafe` at all (it is the backend of
//! cap-std, which has the same job).
//!
//! [openat2(2)]: https://man7.org/linux/man-pages/man2/openat2.2.html

pub mod mountinfo;
mod pinned;
mod remove;
mod xattr;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

pub use rustix::fs::Stat;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

pub use pinned::{PinnedNode, pin_node};
pub use remove::remove_all;
pub use xattr::{
    get_xattr, list_xattrs, list_xattrs_fd, remove_xattr_fd, remove_xattr_nofollow, set_xattr_fd, set_xattr_nofollow,
    set_xattr_nofollow_with,
};

use crate::tar::Timestamp;

/// Cleared when the kernel says openat2 does not exist (ENOSYS), so we stop asking.
static HAVE_OPENAT2: AtomicBool = AtomicBool::new(true);

fn errno(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Opens a directory for use as the base of later `*at` calls (`O_PATH`).
///
/// # Errors
/// Fails as [open(2)](https://man7.org/linux/man-pages/man2/open.2.html) does.
pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(errno)
}

/// Opens directory `path` (`O_PATH`) without following a symlink in its last component.
///
/// # Errors
/// `ENOTDIR` or `ELOOP` when it is a symlink or not a directory, or what the kernel says.
pub fn open_dir_nofollow(path: &std::path::Path) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::open(path, flags, Mode::empty()).map_err(errno)
}

/// Opens directory `rel` beneath `root` without following any symlink on the way
/// (`O_PATH`). `rel` must hold no `..` (the caller normalises layer paths).
///
/// # Errors
/// `ENOENT` when a component is missing, `ENOTDIR` or `ELOOP` when one is not a directory
/// (a symlink included), or what the kernel says.
pub fn open_dir_beneath(root: BorrowedFd<'_>, rel: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let rel_or_dot = if rel.is_empty() { OsStr::new(".") } else { rel };
    if HAVE_OPENAT2.load(Ordering::Relaxed) {
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(root, rel_or_dot, flags, Mode::empty(), resolve) {
            Err(Errno::NOSYS) => HAVE_OPENAT2.store(false, Ordering::Relaxed),
            // EAGAIN: a concurrent rename raced the lookup; the walk below is exact.
            Err(Errno::AGAIN) => {}
            other => return other.map_err(errno),
        }
    }
    // Fallback: one component at a time, each refusing symlinks.
    let mut dir = rustix::fs::openat(root, ".", flags, Mode::empty()).map_err(errno)?;
    for part in rel.as_bytes().split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        if part == b".." {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "'..' in a path beneath a root"));
        }
        dir = rustix::fs::openat(&dir, OsStr::from_bytes(part), flags, Mode::empty()).map_err(errno)?;
    }
    Ok(dir)
}

/// Opens directory `rel` inside `root`, resolving like a chroot: symlinks are followed
/// but can never leave `root` (`RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, `O_PATH`). Used
/// for hardlink targets, which Docker and containerd resolve in the root the same way
/// (`d1 -> ../../etc`, then a link to `d1/passwd` means the layer's `etc/passwd`).
/// Without openat2, symlinks are refused instead.
///
/// # Errors
/// `ENOENT`, `ENOTDIR`, `ELOOP`, or what the kernel says.
pub fn open_dir_in_root(root: BorrowedFd<'_>, rel: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let rel_or_dot = if rel.is_empty() { OsStr::new(".") } else { rel };
    if HAVE_OPENAT2.load(Ordering::Relaxed) {
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(root, rel_or_dot, flags, Mode::empty(), resolve) {
            Err(Errno::NOSYS) => HAVE_OPENAT2.store(false, Ordering::Relaxed),
            Err(Errno::AGAIN) => {}
            other => return other.map_err(errno),
        }
    }
    open_dir_beneath(root, rel)
}

/// Opens regular file `rel` for reading inside `root`, resolving like a chroot: symlinks
/// are followed but can never leave `root` (`RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`).
/// Used to read image layouts, whose blobs may legitimately be symlinks. Without
/// openat2, symlinks are refused instead.
///
/// # Errors
/// `ENOENT`, `ELOOP`, `EXDEV`, or what the kernel says.
pub fn open_file_in_root(root: BorrowedFd<'_>, rel: &OsStr) -> io::Result<File> {
    // Non-blocking until checked: opening a FIFO planted as a blob must not hang.
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if HAVE_OPENAT2.load(Ordering::Relaxed) {
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve) {
            Err(Errno::NOSYS) => HAVE_OPENAT2.store(false, Ordering::Relaxed),
            Err(Errno::AGAIN) => {}
            other => return other.map_err(errno).and_then(regular_file),
        }
    }
    let bytes = rel.as_bytes();
    let (parent, name) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b""[..], bytes),
    };
    let dir = open_dir_beneath(root, OsStr::from_bytes(parent))?;
    open_file_nofollow(dir.as_fd(), OsStr::from_bytes(name))
}

/// Opens child directory `name` of `dir` without following a symlink (`O_PATH`).
///
/// # Errors
/// `ENOENT`, `ENOTDIR` (not a directory; a symlink included), or what the kernel says.
pub fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(errno)
}

/// Opens child directory `name` of `dir` for reading entries and setting metadata.
///
/// # Errors
/// As [`open_child_dir`].
pub fn open_child_dir_readable(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, if name.is_empty() { OsStr::new(".") } else { name }, flags, Mode::empty()).map_err(errno)
}

/// Creates regular file `name` in `dir`, failing if anything exists there (`O_EXCL`
/// never follows a symlink).
///
/// # Errors
/// `EEXIST` when the name is taken, or what the kernel says.
pub fn create_file_exclusive(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600)).map(File::from).map_err(errno)
}

/// Opens regular file `name` in `dir` for reading, refusing symlinks and anything that
/// is not a regular file (a FIFO swapped in must not block the open).
///
/// # Errors
/// `ELOOP` on a symlink, an error naming the file type for a non-regular file, or what
/// the kernel says.
pub fn open_file_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(errno).and_then(regular_file)
}

/// Checks that an fd opened with `O_NONBLOCK` is a regular file, then makes it blocking.
fn regular_file(fd: OwnedFd) -> io::Result<File> {
    let st = rustix::fs::fstat(&fd).map_err(errno)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a regular file ({kind:?})")));
    }
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(errno)?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(errno)?;
    Ok(File::from(fd))
}

/// `mkdirat(dir, name, mode)`.
///
/// # Errors
/// `EEXIST` when the name is taken, or what the kernel says.
pub fn mkdir(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)).map_err(errno)
}

/// The kind of special file [`mknod`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Named pipe.
    Fifo,
}

impl NodeKind {
    /// The `S_IFMT` type this kind creates.
    pub fn file_type(self) -> FileType {
        match self {
            NodeKind::Char => FileType::CharacterDevice,
            NodeKind::Block => FileType::BlockDevice,
            NodeKind::Fifo => FileType::Fifo,
        }
    }
}

/// `mknodat(dir, name, kind | mode, makedev(major, minor))`.
///
/// # Errors
/// `EEXIST`, `EPERM` without `CAP_MKNOD`, or what the kernel says.
pub fn mknod(dir: BorrowedFd<'_>, name: &OsStr, kind: NodeKind, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let file_type = kind.file_type();
    let dev = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(dir, name, file_type, Mode::from_raw_mode(mode), dev).map_err(errno)
}

/// `symlinkat(target, dir, name)`; the target is stored verbatim.
///
/// # Errors
/// `EEXIST`, or what the kernel says.
pub fn symlink(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    rustix::fs::symlinkat(target, dir, name).map_err(errno)
}

/// `readlinkat(dir, name)`.
///
/// # Errors
/// `EINVAL` when not a symlink, or what the kernel says.
pub fn read_link(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OsString> {
    rustix::fs::readlinkat(dir, name, Vec::new())
        .map(|target| std::os::unix::ffi::OsStringExt::from_vec(target.into_bytes()))
        .map_err(errno)
}

/// `linkat(old_dir, old, new_dir, new, 0)`: links a symlink itself, never its target.
///
/// # Errors
/// `EEXIST`, `ENOENT`, or what the kernel says.
pub fn hardlink(old_dir: BorrowedFd<'_>, old: &OsStr, new_dir: BorrowedFd<'_>, new: &OsStr) -> io::Result<()> {
    rustix::fs::linkat(old_dir, old, new_dir, new, AtFlags::empty()).map_err(errno)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`, `None` when absent.
///
/// # Errors
/// What the kernel says, other than `ENOENT`.
pub fn lstat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    let name = if name.is_empty() { OsStr::new(".") } else { name };
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(errno(e)),
    }
}

/// True for `S_IFDIR`.
pub fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// The file type bits of a stat.
pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// The names in a directory opened readable, without `.` and `..`.
///
/// # Errors
/// What the kernel says.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(errno)? {
        let entry = entry.map_err(errno)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`; an empty name means `dir`.
///
/// # Errors
/// `EPERM` without `CAP_CHOWN`, or what the kernel says.
pub fn chown_nofollow(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let (uid, gid) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
    let (name, flags) =
        if name.is_empty() { (OsStr::new(""), AtFlags::EMPTY_PATH) } else { (name, AtFlags::SYMLINK_NOFOLLOW) };
    rustix::fs::chownat(dir, name, Some(uid), Some(gid), flags).map_err(errno)
}

/// `fchown(fd, uid, gid)`.
///
/// # Errors
/// `EPERM` without `CAP_CHOWN`, or what the kernel says.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid))).map_err(errno)
}

/// `fchmod(fd, mode)` (after chown, which clears setuid).
///
/// # Errors
/// What the kernel says.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(errno)
}

fn timespec(t: Timestamp) -> rustix::fs::Timespec {
    rustix::fs::Timespec { tv_sec: t.secs, tv_nsec: i64::from(t.nanos) }
}

/// `utimensat(dir, name, [atime, mtime], AT_SYMLINK_NOFOLLOW)`; an empty name means `dir`.
///
/// # Errors
/// What the kernel says.
pub fn set_times_nofollow(dir: BorrowedFd<'_>, name: &OsStr, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
    let times = Timestamps { last_access: timespec(atime), last_modification: timespec(mtime) };
    let (name, flags) =
        if name.is_empty() { (OsStr::new("."), AtFlags::empty()) } else { (name, AtFlags::SYMLINK_NOFOLLOW) };
    rustix::fs::utimensat(dir, name, &times, flags).map_err(errno)
}

/// `futimens(fd, [atime, mtime])`.
///
/// # Errors
/// What the kernel says.
pub fn set_times_fd(fd: BorrowedFd<'_>, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
    let times = Timestamps { last_access: timespec(atime), last_modification: timespec(mtime) };
    rustix::fs::futimens(fd, &times).map_err(errno)
}

/// The access and modification times of a stat.
pub fn stat_times(st: &Stat) -> (Timestamp, Timestamp) {
    let t = |secs: i64, nanos: u64| Timestamp { secs, nanos: nanos as u32 };
    (t(st.st_atime, st.st_atime_nsec), t(st.st_mtime, st.st_mtime_nsec))
}

/// The effective uid and gid of this process.
pub fn effective_ids() -> (u32, u32) {
    (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
}

/// Whether `e` is the given errno.
pub fn is_errno(e: &io::Error, code: Errno) -> bool {
    e.raw_os_error() == Some(code.raw_os_error())
}

pub use rustix::io::Errno as Code;

/// Flushes the filesystem holding `path` (one `syncfs` instead of an fsync per file;
/// containerd measured per-file fsync 16x slower).
///
/// # Errors
/// What the kernel says.
pub fn sync_filesystem(path: &std::path::Path) -> io::Result<()> {
    let dir = File::open(path)?;
    rustix::fs::syncfs(&dir).map_err(errno)
}

/// Marker re-exported for callers that match on `file_type`.
pub use rustix::fs::FileType as Kind;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn open_dir_beneath_refuses_symlinks_everywhere() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("a/b")).expect("mkdir");
        std::os::unix::fs::symlink("/", tmp.path().join("a/up")).expect("symlink");
        std::os::unix::fs::symlink("b", tmp.path().join("a/rel")).expect("symlink");
        let root = open_dir_path(tmp.path()).expect("open root");
        assert!(open_dir_beneath(root.as_fd(), OsStr::new("a/b")).is_ok());
        assert!(open_dir_beneath(root.as_fd(), OsStr::new("")).is_ok());
        for bad in ["a/up", "a/up/etc", "a/rel", "a/missing"] {
            assert!(open_dir_beneath(root.as_fd(), OsStr::new(bad)).is_err(), "{bad}");
        }
    }
}
