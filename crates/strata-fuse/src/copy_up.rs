//! Copy-up: bring a lower entry into the upper dir before it changes. Staged under a
//! fresh name in the work dir (data, owner, mode, xattrs, times) and renamed into
//! place, so a crash or `ENOSPC` never leaves a partial file visible in the upper dir.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, SeekFrom, Stat, Timespec, Timestamps};
use rustix::io::Errno;
use strata_core::sys;

use crate::layers::{self, Place};
use crate::union::Union;

impl Union {
    /// Makes sure `ino` has its real copy in the upper dir, parents first. The caller
    /// holds the tree lock exclusively.
    pub(crate) fn ensure_upper(&self, ino: u64) -> io::Result<()> {
        self.copy_up_as(ino, true)
    }

    /// For a change to `ino` alone (open for writing, setattr, xattrs): copies it up
    /// under the exclusive tree lock only when it is not in the upper dir yet, so changes
    /// to upper files (the common case) run side by side under the shared lock. Without
    /// `with_data` a regular file comes up empty: it is about to be truncated
    /// (`open(O_TRUNC)`), so copying its data would be wasted (overlayfs skips it too).
    pub(crate) fn copy_up_if_needed(&self, ino: u64, with_data: bool) -> io::Result<()> {
        {
            let _tree = self.read_tree();
            if self.nodes().get(ino)?.place == Place::Upper {
                return Ok(());
            }
        }
        let _tree = self.write_tree();
        self.copy_up_as(ino, with_data)
    }

    fn copy_up_as(&self, ino: u64, with_data: bool) -> io::Result<()> {
        let (node, parent) = {
            let nodes = self.nodes();
            let node = nodes.get(ino)?.clone();
            if node.place == Place::Upper {
                return Ok(());
            }
            let (parent, _) = node.links.first().cloned().ok_or(Errno::NOENT)?;
            (node, parent)
        };
        self.layers.upper_root()?;
        self.ensure_upper(parent)?;
        let (ppath, name) = self.nodes().locate(ino)?;
        copy_up(self, node.place, &ppath, &name, ino, with_data)?;
        if node.kind != FileType::Directory && node.links.len() > 1 {
            link_other_names(self, ino)?;
        }
        let mut nodes = self.nodes();
        let node = nodes.get_mut(ino)?;
        if node.kind == FileType::Directory {
            if let Place::Lower(i) = node.place {
                node.lowers.insert(0, i);
            }
            if let Some(notifier) = self.notifier.get() {
                // Attributes only (offset < 0): safe from inside a request.
                let _ = notifier.inval_inode(fuser::INodeNo(ino), -1, 0);
            }
        }
        node.place = Place::Upper;
        Ok(())
    }
}

fn copy_up(union: &Union, from: Place, ppath: &Path, name: &OsStr, ino: u64, with_data: bool) -> io::Result<()> {
    let layers = &union.layers;
    let src_dir = layers.dir(from, ppath)?;
    let dst_dir = layers.dir(Place::Upper, ppath)?;
    let work = layers.work()?;
    let st = rustix::fs::statat(&src_dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let tmp = union.tmp_name();
    // Copy-up is no change of the parent dir: keep its times, as overlayfs does.
    let parent = rustix::fs::fstat(&dst_dir)?;
    let staged = stage(union, src_dir.as_fd(), name, &st, work, &tmp, ino, with_data)
        .and_then(|()| Ok(rustix::fs::renameat_with(work, &tmp, &dst_dir, name, RenameFlags::NOREPLACE)?));
    if staged.is_err() {
        let _ = sys::remove_all(work, &tmp);
        return staged;
    }
    let (atime, mtime) = sys::stat_times(&parent);
    sys::set_times_nofollow(dst_dir.as_fd(), OsStr::new("."), atime, mtime)
}

/// After a copy-up of a file the kernel knows under several names (lower hard links),
/// gives those names the upper copy too, so they stay one file (as overlayfs with
/// `index=on`; without an index the kernel would split them).
fn link_other_names(union: &Union, ino: u64) -> io::Result<()> {
    let links = union.nodes().get(ino)?.links.clone();
    let Some(((first_parent, first_name), others)) = links.split_first() else { return Ok(()) };
    let src_dir = union.layers.dir(Place::Upper, &union.nodes().path(*first_parent)?)?;
    for (parent, name) in others {
        union.ensure_upper(*parent)?;
        let dst_dir = union.layers.dir(Place::Upper, &union.nodes().path(*parent)?)?;
        match rustix::fs::linkat(&src_dir, first_name, &dst_dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Builds the copy of `name` (in `src_dir`) as `tmp` in the work dir.
#[allow(clippy::too_many_arguments)]
fn stage(
    union: &Union,
    src_dir: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stat,
    work: BorrowedFd<'_>,
    tmp: &OsString,
    ino: u64,
    with_data: bool,
) -> io::Result<()> {
    let kind = layers::kind_of(st);
    let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
    let mut data: Option<File> = None;
    match kind {
        FileType::Directory => rustix::fs::mkdirat(work, tmp, Mode::from_raw_mode(0o700))?,
        FileType::RegularFile => {
            let src = File::from(rustix::fs::openat(
                src_dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            let dst = File::from(rustix::fs::openat(work, tmp, flags, Mode::from_raw_mode(0o600))?);
            if with_data {
                copy_data(&src, &dst, st)?;
            }
            data = Some(dst);
        }
        FileType::Symlink => {
            let target = sys::read_link(src_dir, name)?;
            rustix::fs::symlinkat(target.as_os_str(), work, tmp)?;
        }
        other => rustix::fs::mknodat(work, tmp, other, mode, st.st_rdev)?,
    }
    for key in sys::list_xattrs(src_dir, name)? {
        if union.is_private_xattr(OsStr::new(&key)) {
            continue;
        }
        if let Some(value) = sys::get_xattr(src_dir, name, &key)? {
            match sys::set_xattr_nofollow(work, tmp, &key, &value) {
                Ok(()) => {}
                // security.* the upper fs refuses (e.g. selinux labels on tmpfs): as overlayfs.
                Err(e) if key.starts_with("security.") && strata_core::ovl::whiteout::xattr_unsupported(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    rustix::fs::chownat(
        work,
        tmp,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if kind != FileType::Symlink {
        rustix::fs::chmodat(work, tmp, mode, AtFlags::empty())?;
    }
    // Keep the lower inode number (see ORIGIN_INO); optional, as on an fs without xattrs.
    let _ = sys::set_xattr_nofollow(work, tmp, &union.origin_key, &ino.to_le_bytes());
    let times = Timestamps {
        last_access: Timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec as _ },
        last_modification: Timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec as _ },
    };
    rustix::fs::utimensat(work, tmp, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    if let Some(dst) = data {
        // As overlayfs: the copy is durable before it replaces the lower view.
        rustix::fs::fsync(&dst)?;
    }
    Ok(())
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
