//! Copying one entry up: a lower entry rebuilt under a new name with its data, owner,
//! mode, xattrs and times, as overlayfs does before the first change. Used by the apply
//! engine (a hardlink whose target lives in a lower layer) and by strata-fuse (every
//! first change to a lower file); the caller decides where the copy goes and when it
//! becomes visible.
//!
//! Everything after the create goes through a file descriptor of the new node
//! ([`crate::sys::PinnedNode`] for non-regular files), so a name swapped for a symlink
//! in the meantime is never followed.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{FileType, Mode, SeekFrom, Stat};
use rustix::io::Errno;

use super::whiteout::xattr_unsupported;
use crate::sys;

/// What to carry over besides the tree entry itself.
#[derive(Clone, Copy)]
pub struct CopyOptions<'a> {
    /// Copy a regular file's bytes (`false`: it comes up empty, e.g. about to be truncated).
    pub data: bool,
    /// Give the copy the source's owner (needs `CAP_CHOWN`).
    pub owner: bool,
    /// Which xattrs to copy (overlay markers and other private keys stay behind).
    pub xattr: &'a dyn Fn(&str) -> bool,
}

impl std::fmt::Debug for CopyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions").field("data", &self.data).field("owner", &self.owner).finish_non_exhaustive()
    }
}

/// The copy just made: the open file for a regular file (the caller may `fsync` it or
/// add xattrs), else the pinned node.
#[derive(Debug)]
pub enum Copied {
    /// A regular file, open for writing.
    File(File),
    /// Anything else, pinned by an `O_PATH` descriptor.
    Node(sys::PinnedNode),
}

impl AsFd for Copied {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Copied::File(f) => f.as_fd(),
            Copied::Node(n) => n.as_fd(),
        }
    }
}

/// Copies `src_name` in `src_dir` (whose lstat is `st`) to the free name `dst_name` in
/// `dst_dir`. A directory comes up empty with the source's attributes.
///
/// # Errors
/// A filesystem call fails; what was created is left for the caller to remove (it is
/// under a name the caller chose, not yet visible).
pub fn copy_entry(
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    st: &Stat,
    dst_dir: BorrowedFd<'_>,
    dst_name: &OsStr,
    options: &CopyOptions<'_>,
) -> io::Result<Copied> {
    let kind = FileType::from_raw_mode(st.st_mode);
    let copied = match kind {
        FileType::RegularFile => {
            let dst = sys::create_file_exclusive(dst_dir, dst_name)?;
            if options.data {
                let src = sys::open_file_nofollow(src_dir, src_name)?;
                copy_data(&src, &dst, st)?;
            }
            Copied::File(dst)
        }
        FileType::Directory => {
            rustix::fs::mkdirat(dst_dir, dst_name, Mode::from_raw_mode(0o700))?;
            Copied::Node(sys::pin_node(dst_dir, dst_name, kind)?)
        }
        FileType::Symlink => {
            let target = sys::read_link(src_dir, src_name)?;
            sys::symlink(&target, dst_dir, dst_name)?;
            Copied::Node(sys::pin_node(dst_dir, dst_name, kind)?)
        }
        other => {
            rustix::fs::mknodat(dst_dir, dst_name, other, Mode::from_raw_mode(0o600), st.st_rdev)?;
            Copied::Node(sys::pin_node(dst_dir, dst_name, kind)?)
        }
    };
    // Owner first: chown drops security.capability and the setuid/setgid bits.
    if options.owner {
        match &copied {
            Copied::File(f) => sys::chown_fd(f.as_fd(), st.st_uid, st.st_gid)?,
            Copied::Node(n) => n.chown(st.st_uid, st.st_gid)?,
        }
    }
    for key in sys::list_xattrs(src_dir, src_name)?.iter().filter(|k| (options.xattr)(k)) {
        let Some(value) = sys::get_xattr(src_dir, src_name, key)? else { continue };
        let set = match &copied {
            Copied::File(f) => sys::set_xattr_fd(f.as_fd(), key, &value),
            Copied::Node(n) => n.set_xattr(key, &value),
        };
        match set {
            Ok(()) => {}
            // security.* the target fs refuses (e.g. selinux labels on tmpfs): as overlayfs.
            Err(e) if key.starts_with("security.") && xattr_unsupported(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let mode = st.st_mode & 0o7777;
    match &copied {
        Copied::File(f) => sys::chmod_fd(f.as_fd(), mode)?,
        Copied::Node(n) if kind != FileType::Symlink => n.chmod(mode)?,
        Copied::Node(_) => {}
    }
    let (atime, mtime) = sys::stat_times(st);
    match &copied {
        Copied::File(f) => sys::set_times_fd(f.as_fd(), atime, mtime)?,
        Copied::Node(n) => n.set_times(atime, mtime)?,
    }
    Ok(copied)
}

/// Copies a regular file's bytes: a reflink when the fs can, else `copy_file_range`,
/// else read/write; holes are kept for sparse files.
fn copy_data(src: &File, dst: &File, st: &Stat) -> io::Result<()> {
    let size = st.st_size as u64;
    if size == 0 {
        return Ok(());
    }
    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let sparse = (st.st_blocks as u64) * 512 < size;
    let mut start = 0u64;
    while start < size {
        let (from, to) = if sparse {
            let Ok(data) = rustix::fs::seek(src, SeekFrom::Data(start)) else { break };
            let hole = rustix::fs::seek(src, SeekFrom::Hole(data)).unwrap_or(size);
            (data, hole.min(size))
        } else {
            (start, size)
        };
        copy_range(src, dst, from, to)?;
        start = to;
    }
    if sparse {
        rustix::fs::ftruncate(dst, size)?;
    }
    Ok(())
}

fn copy_range(src: &File, dst: &File, from: u64, to: u64) -> io::Result<()> {
    let mut off_in = from;
    let mut off_out = from;
    while off_in < to {
        let want = usize::try_from(to - off_in).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            // The source shrank under us: a short copy would be silent data loss.
            Ok(0) => return Err(Errno::IO.into()),
            Ok(_) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) => {
                return copy_by_reading(src, dst, off_in, to);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_by_reading(src: &File, dst: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = from;
    while off < to {
        let want = buf.len().min(usize::try_from(to - off).unwrap_or(usize::MAX));
        let n = src.read_at(&mut buf[..want], off)?;
        if n == 0 {
            return Err(Errno::IO.into());
        }
        dst.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}
