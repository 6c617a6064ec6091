//! Copy-up: bring a lower entry into the upper dir before it changes. Staged under a
//! fresh name in the work dir (data, owner, mode, xattrs, times) and renamed into
//! place, so a crash or `ENOSPC` never leaves a partial file visible in the upper dir.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;
use strata_core::ovl::copy_up::{Copied, CopyOptions, copy_entry};
use strata_core::ovl::is_overlay_xattr;
use strata_core::sys;

use crate::layers::{LayerIx, Place};
use crate::located::Located;
use crate::nodes::{Node, ROOT};
use crate::union::Union;

impl Union {
    /// Makes sure `ino` has its real copy in the upper dir, parents first. The caller
    /// holds the tree lock exclusively.
    pub(crate) fn ensure_upper(&self, ino: u64) -> io::Result<()> {
        self.copy_up_as(ino, true, None).map(drop)
    }

    /// For a change to `ino` alone (open for writing, setattr, xattrs): copies it up
    /// under the exclusive tree lock only when it is not in the upper dir yet, so changes
    /// to upper files (the common case) run side by side under the shared lock. Without
    /// `with_data` a regular file comes up empty: it is about to be truncated
    /// (`open(O_TRUNC)`), so copying its data would be wasted (overlayfs skips it too).
    pub(crate) fn copy_up_if_needed(&self, ino: u64, with_data: bool) -> io::Result<()> {
        self.copy_up_for_open(ino, with_data, None).map(drop)
    }

    /// As [`Union::copy_up_if_needed`], and when it copies a regular file up, also
    /// opens the copy with `open`'s access mode before it takes the lower file's place:
    /// an open that fails leaves nothing behind, so `open(O_TRUNC)` never commits an
    /// empty copy of a file it then fails to open. `None` when nothing was copied.
    pub(crate) fn copy_up_for_open(&self, ino: u64, with_data: bool, open: Option<OFlags>) -> io::Result<Option<File>> {
        {
            let _tree = self.read_tree();
            if self.nodes().get(ino)?.place == Place::Upper {
                return Ok(None);
            }
        }
        let _tree = self.write_tree();
        self.copy_up_as(ino, with_data, open)
    }

    fn copy_up_as(&self, ino: u64, with_data: bool, open: Option<OFlags>) -> io::Result<Option<File>> {
        let (node, parent) = {
            let nodes = self.nodes();
            let node = nodes.get(ino)?.clone();
            if node.place == Place::Upper {
                return Ok(None);
            }
            let (parent, _) = node.links.first().cloned().ok_or(Errno::NOENT)?;
            (node, parent)
        };
        self.layers.upper_root()?;
        self.ensure_upper(parent)?;
        let (parent_at, name) = self.nodes().locate(ino)?;
        let (opened, st) = copy_up(self, node.place, &parent_at, &name, ino, with_data, open)?;
        if node.kind != FileType::Directory && node.links.len() > 1 {
            link_other_names(self, ino)?;
        }
        if let Place::Lower(layer) = node.place {
            if node.kind == FileType::RegularFile && st.st_nlink > 1 {
                link_lower_siblings(self, layer, &st, &parent_at.path.join(&name))?;
            }
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
        Ok(opened)
    }
}

/// Copies `name` (in `parent`'s copy in layer `from`) up; returns the open copy when
/// `open` asked for one, and the stat of the lower entry it copied.
fn copy_up(
    union: &Union,
    from: Place,
    parent: &Located,
    name: &OsStr,
    ino: u64,
    with_data: bool,
    open: Option<OFlags>,
) -> io::Result<(Option<File>, Stat)> {
    let layers = &union.layers;
    let src_dir = layers.dir(from, parent.path_in(from))?;
    let dst_dir = layers.dir(Place::Upper, &parent.path)?;
    let work = layers.work()?;
    let st = rustix::fs::statat(&src_dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let tmp = union.tmp_name();
    // Copy-up is no change of the parent dir: keep its times, as overlayfs does.
    let parent_st = rustix::fs::fstat(&dst_dir)?;
    let opened = stage(union, src_dir.as_fd(), name, &st, work, &tmp, ino, with_data).and_then(|()| {
        let opened = match open {
            Some(flags) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                let access = flags & (OFlags::RWMODE | OFlags::NOATIME);
                let fd = rustix::fs::openat(work, &tmp, access | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())?;
                Some(File::from(fd))
            }
            _ => None,
        };
        rustix::fs::renameat_with(work, &tmp, &dst_dir, name, RenameFlags::NOREPLACE)?;
        Ok(opened)
    });
    let opened = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = sys::remove_all(work, &tmp);
            return Err(e);
        }
    };
    // The copy is in place and complete: keeping the parent's times is best effort.
    let (atime, mtime) = sys::stat_times(&parent_st);
    let _ = sys::set_times_nofollow(dst_dir.as_fd(), OsStr::new("."), atime, mtime);
    Ok((opened, st))
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

/// After the copy-up of the lower file at union path `own` (`st` in lower layer
/// `layer`), links every other name the merged view shows for that same lower file to
/// the copy, as overlayfs with `index=on` does. Otherwise those names would keep the
/// old data under the same inode number, and the kernel, which knows a file by its
/// number, would take them for the copy. Names the kernel has not looked up are found
/// in the layer itself (its multiply-linked files, indexed once per layer).
fn link_lower_siblings(union: &Union, layer: LayerIx, st: &Stat, own: &Path) -> io::Result<()> {
    let names = union.layers.hardlink_names(layer, st.st_ino)?;
    let (Some(own_parent), Some(own_name)) = (own.parent(), own.file_name()) else { return Ok(()) };
    let own_dir = union.layers.dir(Place::Upper, own_parent)?;
    for path in names.iter().filter(|p| p.as_path() != own) {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { continue };
        // Only names the merged view shows as this very lower file.
        match union.resolve_path(path)? {
            Some((node, found)) if node.place == Place::Lower(layer) && found.st_ino == st.st_ino => {}
            _ => continue,
        }
        union.ensure_upper_dirs(parent)?;
        let dir = union.layers.dir(Place::Upper, parent)?;
        match rustix::fs::linkat(&own_dir, own_name, &dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Union {
    /// The entry at union path `path`, resolved through the layers without the kernel
    /// holding a reference (nothing is remembered). The caller holds the tree lock.
    pub(crate) fn resolve_path(&self, path: &Path) -> io::Result<Option<(Node, Stat)>> {
        let mut node = self.nodes().get(ROOT)?.clone();
        let mut at = Located::root();
        let mut parts = path.iter().peekable();
        while let Some(name) = parts.next() {
            let Some((child, st, _)) = self.resolve(&node, &at, name)? else { return Ok(None) };
            if parts.peek().is_none() {
                return Ok(Some((child, st)));
            }
            at = at.child(name, &child.redirects);
            node = child;
        }
        Ok(None)
    }

    /// Makes sure the directory at union path `dir` and its parents exist in the upper
    /// dir: through their nodes where the kernel holds them (so the nodes learn it),
    /// else by path. The caller holds the tree lock exclusively.
    pub(crate) fn ensure_upper_dirs(&self, dir: &Path) -> io::Result<()> {
        let mut known = Some(ROOT);
        let mut done = PathBuf::new();
        for name in dir.iter() {
            let child = known.and_then(|p| self.nodes().child(p, &name.to_owned()));
            known = child;
            if let Some(ino) = child {
                self.ensure_upper(ino)?;
            } else {
                let updir = self.layers.dir(Place::Upper, &done)?;
                if rustix::fs::statat(&updir, name, AtFlags::SYMLINK_NOFOLLOW).is_err() {
                    let (node, st) = self.resolve_path(&done.join(name))?.ok_or(Errno::NOENT)?;
                    let origin = self.mix(st.st_dev, st.st_ino);
                    copy_up(self, node.place, &Located::plain(done.clone()), name, origin, false, None)?;
                }
            }
            done.push(name);
        }
        Ok(())
    }
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
    let public = |key: &str| !is_overlay_xattr(key.as_bytes());
    let options = CopyOptions { data: with_data, owner: true, xattr: &public };
    let copied = copy_entry(src_dir, name, st, work, tmp, &options)?;
    // Keep the lower inode number (see ORIGIN_INO); optional, as on an fs without xattrs.
    let _ = match &copied {
        Copied::File(f) => sys::set_xattr_fd(f.as_fd(), &union.origin_key, &ino.to_le_bytes()),
        Copied::Node(n) => n.set_xattr(&union.origin_key, &ino.to_le_bytes()),
    };
    if let Copied::File(f) = &copied {
        // As overlayfs: the copy is durable before it replaces the lower view.
        rustix::fs::fsync(f)?;
    }
    Ok(())
}
