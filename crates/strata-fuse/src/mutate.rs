//! Changes to the union, written to the upper dir in overlayfs's own form (whiteouts,
//! opaque dirs) so it stays valid for kernel overlayfs and for layer diffs. Each rule
//! follows what `fs/overlayfs/dir.c` does (with `redirect_dir=on` when configured).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, RenameFlags, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use strata_core::ovl::{is_overlay_xattr, redirect, whiteout};
use strata_core::sys;

use crate::RedirectDir;
use crate::layers::{self, Layers, Place};
use crate::located::Located;
use crate::nodes::Node;
use crate::union::{Found, Union};

/// What to create.
#[derive(Debug)]
pub(crate) enum NewEntry<'a> {
    File { mode: u32, flags: OFlags },
    Dir { mode: u32 },
    Special { mode: u32, rdev: u64 },
    Symlink { target: &'a Path },
    Link { ino: u64 },
}

/// Who asks (the new entry's owner).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// The attribute changes of one `setattr`.
#[derive(Debug, Default)]
pub(crate) struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub times: Option<Timestamps>,
}

const S_ISGID: u32 = 0o2000;

impl Union {
    /// Creates `name` in `parent`; returns the entry and, for files, the open file.
    pub(crate) fn create(
        &self,
        parent: u64,
        name: &OsStr,
        what: NewEntry<'_>,
        caller: Caller,
    ) -> io::Result<(Found, Option<File>)> {
        if whiteout::is_aufs_marker(name) {
            // A `.wh.` name would read back as a whiteout.
            return Err(Errno::INVAL.into());
        }
        if let NewEntry::Special { mode, rdev: 0 } = what {
            if FileType::from_raw_mode(mode) == FileType::CharacterDevice {
                // A char 0/0 is a whiteout: it would hide the name, invisible to all. The
                // VFS lets any user make one (for overlayfs); overlayfs refuses them all.
                return Err(Errno::PERM.into());
            }
        }
        let _tree = self.write_tree();
        self.listing_changed(parent);
        self.ensure_upper(parent)?;
        if let NewEntry::Link { ino } = what {
            self.ensure_upper(ino)?;
        }
        let (pnode, at) = self.node_at(parent)?;
        if self.resolve(&pnode, &at, name)?.is_some() {
            return Err(Errno::EXIST.into());
        }
        let updir = self.layers.dir(Place::Upper, &at.path)?;
        let pstat = rustix::fs::statat(&updir, ".", AtFlags::empty())?;
        let gid = if pstat.st_mode & S_ISGID != 0 { pstat.st_gid } else { caller.gid };
        let chardev_whiteout = match rustix::fs::statat(&updir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if whiteout::is_whiteout(&st) => true,
            Ok(_) => return Err(Errno::EXIST.into()),
            Err(_) => false,
        };
        let aufs_whiteout = !chardev_whiteout
            && updir.has_aufs_whiteouts()?
            && rustix::fs::statat(&updir, whiteout::aufs_whiteout(name), AtFlags::SYMLINK_NOFOLLOW).is_ok();
        let is_dir = matches!(what, NewEntry::Dir { .. });
        // A new dir over a whiteout must hide what the whiteout hid.
        let opaque = is_dir && (chardev_whiteout || aufs_whiteout);
        let sgid_parent = pstat.st_mode & S_ISGID != 0;
        let file = if chardev_whiteout || opaque {
            // Staged in the work dir, then swapped with the whiteout (or put in place).
            let work = self.layers.work()?;
            let tmp = self.tmp_name();
            let made = self.make(work, &tmp, &what, caller.uid, gid, sgid_parent).and_then(|f| {
                if opaque {
                    self.layers.make_opaque(work, &tmp)?;
                }
                if chardev_whiteout {
                    rustix::fs::renameat_with(work, &tmp, &updir, name, RenameFlags::EXCHANGE)?;
                    rustix::fs::unlinkat(work, &tmp, AtFlags::empty())?;
                } else {
                    rustix::fs::renameat_with(work, &tmp, &updir, name, RenameFlags::NOREPLACE)?;
                }
                Ok(f)
            });
            if made.is_err() {
                let _ = sys::remove_all(work, &tmp);
            }
            made?
        } else {
            self.make(updir.as_fd(), name, &what, caller.uid, gid, sgid_parent)?
        };
        if aufs_whiteout {
            Layers::remove_whiteout_marker(updir.as_fd(), name)?;
        }
        let found = if matches!(what, NewEntry::Link { .. }) {
            self.lookup_locked(parent, name)? // the linked node, with its own inode number
        } else {
            // A new entry: only in the upper dir, no origin; no need to walk the layers.
            let st = rustix::fs::statat(&updir, name, AtFlags::SYMLINK_NOFOLLOW)?;
            let node = Node::fresh(layers::kind_of(&st), Place::Upper);
            let ino = self.mix(st.st_dev, st.st_ino);
            // The inode number may be a removed directory's, whose listing is cached.
            self.listing_changed(ino);
            let node = self.nodes().remember(ino, parent, &name.to_owned(), node).clone();
            Found { ino, st, node }
        };
        Ok((found, file))
    }

    /// Makes one new entry `name` in `dir` owned by (uid, gid).
    fn make(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        what: &NewEntry<'_>,
        uid: u32,
        gid: u32,
        sgid_parent: bool,
    ) -> io::Result<Option<File>> {
        let mut file = None;
        let mut mode_to_fix = None;
        match what {
            NewEntry::File { mode, flags } => {
                let access = *flags & OFlags::RWMODE;
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    access | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::from_raw_mode(*mode & 0o7777),
                )?;
                mode_to_fix = Some(*mode & 0o7777);
                file = Some(File::from(fd));
            }
            NewEntry::Dir { mode } => {
                let mode = *mode & 0o7777 | if sgid_parent { S_ISGID } else { 0 };
                rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?;
                mode_to_fix = Some(mode);
            }
            NewEntry::Special { mode, rdev } => {
                let kind = FileType::from_raw_mode(*mode);
                rustix::fs::mknodat(dir, name, kind, Mode::from_raw_mode(*mode & 0o7777), *rdev)?;
                mode_to_fix = Some(*mode & 0o7777);
            }
            NewEntry::Symlink { target } => rustix::fs::symlinkat(target.as_os_str(), dir, name)?,
            NewEntry::Link { ino } => {
                let (_, src_dir, src_name) = self.real(*ino)?;
                rustix::fs::linkat(&src_dir, &src_name, dir, name, AtFlags::empty())?;
                return Ok(None);
            }
        }
        let (my_uid, my_gid) = sys::effective_ids();
        if uid != my_uid || gid != my_gid {
            rustix::fs::chownat(
                dir,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        // The kernel applied the caller's umask already; undo ours (and chown's suid clearing).
        if let Some(mode) = mode_to_fix {
            // mkdir drops S_ISGID from the mode, chown drops S_ISUID/S_ISGID.
            if mode & self.umask != 0 || mode & 0o7000 != 0 {
                rustix::fs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())?;
            }
        }
        Ok(file)
    }

    /// `unlink` (dir = false) or `rmdir` (dir = true).
    pub(crate) fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> io::Result<()> {
        let _tree = self.write_tree();
        self.listing_changed(parent);
        let (pnode, at) = self.node_at(parent)?;
        let _forget = dir.then(|| ForgetDirs(&self.layers, vec![at.path.join(name)]));
        let (child, _, _) = self.resolve(&pnode, &at, name)?.ok_or(Errno::NOENT)?;
        let child_is_dir = child.kind == FileType::Directory;
        if dir && !child_is_dir {
            return Err(Errno::NOTDIR.into());
        }
        if !dir && child_is_dir {
            return Err(Errno::ISDIR.into());
        }
        if dir && !self.list_node(&child, &at.child(name, &child.redirects))?.is_empty() {
            return Err(Errno::NOTEMPTY.into());
        }
        self.ensure_upper(parent)?;
        let (pnode, at) = self.node_at(parent)?;
        let updir = self.layers.dir(Place::Upper, &at.path)?;
        let needs_whiteout = self.lower_positive(&pnode, &at, name)?;
        if child.place == Place::Upper {
            if needs_whiteout {
                self.replace_with_whiteout(updir.as_fd(), name, child_is_dir)?;
            } else if child_is_dir {
                self.remove_upper_dir(updir.as_fd(), name)?;
            } else {
                rustix::fs::unlinkat(&updir, name, AtFlags::empty())?;
            }
        } else {
            self.put_whiteout(updir.as_fd(), name)?;
        }
        self.nodes().unlink(parent, &name.to_owned());
        Ok(())
    }

    /// A new whiteout at free name `name`, made in the work dir and renamed into place
    /// (so it gets no group from a setgid parent, as with overlayfs).
    fn put_whiteout(&self, updir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        if !self.layers.forms.chardev_whiteouts {
            return self.layers.make_whiteout(updir, name);
        }
        let work = self.layers.work()?;
        let tmp = self.tmp_name();
        self.layers.make_whiteout(work, &tmp)?;
        if let Err(e) = rustix::fs::renameat_with(work, &tmp, updir, name, RenameFlags::NOREPLACE) {
            let _ = rustix::fs::unlinkat(work, &tmp, AtFlags::empty());
            return Err(e.into());
        }
        Ok(())
    }

    /// Atomically turns upper entry `name` into a whiteout (staged in the work dir).
    fn replace_with_whiteout(&self, updir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
        let work = self.layers.work()?;
        if !self.layers.forms.chardev_whiteouts {
            let tmp = self.tmp_name();
            rustix::fs::renameat(updir, name, work, &tmp)?;
            sys::remove_all(work, &tmp)?;
            return self.layers.make_whiteout(updir, name);
        }
        let tmp = self.tmp_name();
        self.layers.make_whiteout(work, &tmp)?;
        let swapped = if is_dir {
            rustix::fs::renameat_with(work, &tmp, updir, name, RenameFlags::EXCHANGE)
        } else {
            rustix::fs::renameat(work, &tmp, updir, name)
        };
        if let Err(e) = swapped {
            let _ = rustix::fs::unlinkat(work, &tmp, AtFlags::empty());
            return Err(e.into());
        }
        if is_dir { sys::remove_all(work, &tmp) } else { Ok(()) }
    }

    /// Removes an upper dir that is empty in the union but may hold whiteouts or markers.
    fn remove_upper_dir(&self, updir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        match rustix::fs::unlinkat(updir, name, AtFlags::REMOVEDIR) {
            Err(Errno::NOTEMPTY | Errno::EXIST) => {
                let work = self.layers.work()?;
                let tmp = self.tmp_name();
                rustix::fs::renameat(updir, name, work, &tmp)?;
                sys::remove_all(work, &tmp)
            }
            other => Ok(other?),
        }
    }

    /// Empties an upper dir that is empty in the union (only whiteouts and markers left),
    /// so another dir can be renamed over it.
    fn clear_upper_dir(&self, updir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let dir = sys::open_child_dir_readable(updir, name)?;
        for entry in sys::list_dir(dir.as_fd())? {
            sys::remove_all(dir.as_fd(), &entry)?;
        }
        Ok(())
    }

    /// `rename(2)` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
    pub(crate) fn rename(&self, p1: u64, n1: &OsStr, p2: u64, n2: &OsStr, flags: RenameFlags) -> io::Result<()> {
        if whiteout::is_aufs_marker(n2) || flags.contains(RenameFlags::WHITEOUT) {
            return Err(Errno::INVAL.into());
        }
        let exchange = flags.contains(RenameFlags::EXCHANGE);
        let _tree = self.write_tree();
        self.listing_changed(p1);
        self.listing_changed(p2);
        let (pn1, pp1) = self.node_at(p1)?;
        let (pn2, pp2) = self.node_at(p2)?;
        let _forget = ForgetDirs(&self.layers, vec![pp1.path.join(n1), pp2.path.join(n2)]);
        let (src, src_st, _) = self.resolve(&pn1, &pp1, n1)?.ok_or(Errno::NOENT)?;
        let dst = self.resolve(&pn2, &pp2, n2)?;
        if p1 == p2 && n1 == n2 {
            return Ok(());
        }
        if flags.contains(RenameFlags::NOREPLACE) && dst.is_some() {
            return Err(Errno::EXIST.into());
        }
        if exchange && dst.is_none() {
            return Err(Errno::NOENT.into());
        }
        let src_is_dir = src.kind == FileType::Directory;
        // The order of checks is the kernel's: the VFS's type checks, then overlayfs's
        // EXDEV for dirs with lower parts (without redirect_dir=on), then emptiness.
        if let Some((d, d_st, _)) = &dst {
            let dst_is_dir = d.kind == FileType::Directory;
            if !exchange {
                if d_st.st_ino == src_st.st_ino && d_st.st_dev == src_st.st_dev {
                    return Ok(()); // two names of one file: rename(2) does nothing
                }
                if src_is_dir && !dst_is_dir {
                    return Err(Errno::NOTDIR.into());
                }
                if !src_is_dir && dst_is_dir {
                    return Err(Errno::ISDIR.into());
                }
            }
        }
        // A dir with lower contents moves with a redirect to where they stay.
        let redirect_to = if src_is_dir && src.has_lower() {
            if exchange || self.redirects != RedirectDir::On {
                return Err(Errno::XDEV.into());
            }
            Some(pp1.child(n1, &src.redirects).path_in(Place::Lower(0)).to_path_buf())
        } else {
            None
        };
        if let Some((d, _, _)) = &dst {
            let dst_is_dir = d.kind == FileType::Directory;
            if exchange && dst_is_dir && d.has_lower() {
                return Err(Errno::XDEV.into());
            }
            // A pure upper dir's emptiness is the upper fs's to check, after the opaque
            // marking below, as overlayfs does.
            if !exchange && dst_is_dir && d.has_lower() && !self.list_node(d, &pp2.child(n2, &d.redirects))?.is_empty()
            {
                return Err(Errno::NOTEMPTY.into());
            }
        }
        self.ensure_upper(p1)?;
        self.ensure_upper(p2)?;
        let src_ino = self.nodes().child(p1, &n1.to_owned()).ok_or(Errno::NOENT)?;
        self.ensure_upper(src_ino)?;
        let dst_ino = if exchange {
            let ino = self.nodes().child(p2, &n2.to_owned()).ok_or(Errno::NOENT)?;
            self.ensure_upper(ino)?;
            Some(ino)
        } else {
            None
        };
        let (pn1, pp1) = self.node_at(p1)?;
        let (pn2, pp2) = self.node_at(p2)?;
        let up1 = self.layers.dir(Place::Upper, &pp1.path)?;
        let up2 = self.layers.dir(Place::Upper, &pp2.path)?;
        if let Some(target) = &redirect_to {
            // Written before the move: a crash between the two leaves a dir that
            // redirects to where it is, which reads the same.
            redirect::write(up1.as_fd(), n1, self.layers.xattrs, target)
                .map_err(|e| if whiteout::xattr_unsupported(&e) { io::Error::from(Errno::XDEV) } else { e })?;
        } else if src_is_dir && pn2.is_merged_dir() && !self.layers.is_opaque(up1.as_fd(), n1)? {
            self.layers.make_opaque(up1.as_fd(), n1)?;
        }
        if exchange {
            let dst_is_dir = dst.as_ref().is_some_and(|(d, _, _)| d.kind == FileType::Directory);
            if dst_is_dir && pn1.is_merged_dir() && !self.layers.is_opaque(up2.as_fd(), n2)? {
                self.layers.make_opaque(up2.as_fd(), n2)?;
            }
            rustix::fs::renameat_with(&up1, n1, &up2, n2, RenameFlags::EXCHANGE)?;
            let mut nodes = self.nodes();
            nodes.unlink(p1, &n1.to_owned());
            nodes.unlink(p2, &n2.to_owned());
            nodes.add_link(src_ino, p2, n2);
            if let Some(ino) = dst_ino {
                nodes.add_link(ino, p1, n1);
            }
            return Ok(());
        }
        self.move_entry(&pn1, &pp1, up1.as_fd(), n1, up2.as_fd(), n2, src_is_dir, dst.as_ref().map(|d| &d.0))?;
        let mut nodes = self.nodes();
        nodes.rename(p1, &n1.to_owned(), p2, &n2.to_owned());
        if let (Some(target), Ok(node)) = (redirect_to, nodes.get_mut(src_ino)) {
            node.redirects.retain(|(from, _)| *from != 0);
            node.redirects.insert(0, (0, target));
        }
        Ok(())
    }

    /// The overwriting rename in the upper dir, leaving a whiteout at the source when a
    /// lower layer has that name.
    #[allow(clippy::too_many_arguments)]
    fn move_entry(
        &self,
        pn1: &Node,
        pp1: &Located,
        up1: BorrowedFd<'_>,
        n1: &OsStr,
        up2: BorrowedFd<'_>,
        n2: &OsStr,
        src_is_dir: bool,
        dst: Option<&Node>,
    ) -> io::Result<()> {
        let dst_upper = rustix::fs::statat(up2, n2, AtFlags::SYMLINK_NOFOLLOW).ok();
        let dst_is_whiteout = dst_upper.as_ref().is_some_and(whiteout::is_whiteout);
        if dst.is_some_and(|d| d.kind == FileType::Directory && d.place == Place::Upper && d.has_lower()) {
            // Union-empty (checked), but holding whiteouts: clear them so the rename can land.
            self.clear_upper_dir(up2, n2)?;
        }
        let whiteout_source = self.lower_positive(pn1, pp1, n1)?;
        if whiteout_source {
            if dst_is_whiteout {
                rustix::fs::renameat_with(up1, n1, up2, n2, RenameFlags::EXCHANGE)?;
            } else if self.layers.forms.chardev_whiteouts {
                rustix::fs::renameat_with(up1, n1, up2, n2, RenameFlags::WHITEOUT)?;
            } else {
                rustix::fs::renameat(up1, n1, up2, n2)?;
                self.layers.make_whiteout(up1, n1)?;
            }
        } else if dst_is_whiteout && src_is_dir {
            rustix::fs::renameat_with(up1, n1, up2, n2, RenameFlags::EXCHANGE)?;
            rustix::fs::unlinkat(up1, n1, AtFlags::empty())?;
        } else {
            rustix::fs::renameat(up1, n1, up2, n2)?;
        }
        Layers::remove_whiteout_marker(up2, n2)?;
        Ok(())
    }

    /// chmod, chown, truncate, utimens: copies up, then changes the upper copy.
    pub(crate) fn setattr(&self, ino: u64, change: &AttrChange, open: Option<&File>) -> io::Result<()> {
        self.copy_up_if_needed(ino, true)?;
        let _tree = self.read_tree();
        let (node, dir, name) = self.real(ino)?;
        if let Some(size) = change.size {
            if node.kind == FileType::Directory {
                return Err(Errno::ISDIR.into());
            }
            match open.map(|f| rustix::fs::ftruncate(f, size)) {
                Some(Ok(())) => {}
                _ => {
                    let fd = rustix::fs::openat(
                        &dir,
                        &name,
                        OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    rustix::fs::ftruncate(&fd, size)?;
                }
            }
        }
        if change.uid.is_some() || change.gid.is_some() {
            rustix::fs::chownat(
                &dir,
                &name,
                change.uid.map(Uid::from_raw),
                change.gid.map(Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(mode) = change.mode {
            if node.kind == FileType::Symlink {
                return Err(Errno::OPNOTSUPP.into());
            }
            rustix::fs::chmodat(&dir, &name, Mode::from_raw_mode(mode & 0o7777), AtFlags::empty())?;
        }
        if let Some(times) = &change.times {
            rustix::fs::utimensat(&dir, &name, times, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }

    pub(crate) fn setxattr(&self, ino: u64, key: &OsStr, value: &[u8], flags: XattrFlags) -> io::Result<()> {
        if is_overlay_xattr(key.as_bytes()) {
            return Err(Errno::NOTSUP.into());
        }
        self.capability_may_change(ino, key);
        self.copy_up_if_needed(ino, true)?;
        let _tree = self.read_tree();
        let (_, dir, name) = self.real(ino)?;
        sys::set_xattr_nofollow_with(dir.as_fd(), &name, key, value, flags)
    }

    pub(crate) fn removexattr(&self, ino: u64, key: &OsStr) -> io::Result<()> {
        if is_overlay_xattr(key.as_bytes()) {
            return Err(Errno::NOTSUP.into());
        }
        self.capability_may_change(ino, key);
        // overlayfs answers ENODATA without a copy-up when the name is absent.
        if let Err(e) = self.getxattr(ino, key) {
            if e.raw_os_error() == Some(Errno::NODATA.raw_os_error()) {
                return Err(e);
            }
        }
        self.copy_up_if_needed(ino, true)?;
        let _tree = self.read_tree();
        let (_, dir, name) = self.real(ino)?;
        sys::remove_xattr_nofollow(dir.as_fd(), &name, key)
    }
}

/// Drops the cached upper dirs at or below the given union paths when dropped: at the
/// end of an operation that may remove or move them (the checks before the change may
/// have cached them), still under the tree lock.
struct ForgetDirs<'a>(&'a Layers, Vec<std::path::PathBuf>);

impl Drop for ForgetDirs<'_> {
    fn drop(&mut self) {
        for path in &self.1 {
            self.0.forget_upper_dirs_under(path);
        }
    }
}
