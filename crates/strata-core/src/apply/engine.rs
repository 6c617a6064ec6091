//! Per-entry apply logic, shared by both output forms.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::dir_cache::DirCache;
use super::dir_finish::DirFinish;
use super::lower::LowerChain;
use super::report::{ApplyReport, DeferredLink};
use super::tree::{Flag, LayerTree, NodeId};
use super::{Applier, DevicePolicy, Mode, meta};
use crate::error::{Error, Result};
use crate::ovl::copy_up::{CopyOptions, copy_entry};
use crate::ovl::whiteout;
use crate::path::{self, LayerPath, Meaning};
use crate::sys::{self, Code, NodeKind};
use crate::tar::{Entry, EntryKind, Reader};

/// The state of one apply.
pub(super) struct Engine<'a> {
    pub(super) opts: &'a Applier,
    pub(super) root: BorrowedFd<'a>,
    pub(super) target: &'a Path,
    pub(super) lower: &'a LowerChain,
    report: ApplyReport,
    /// What this layer wrote, whited out and made opaque, path by path.
    pub(super) tree: LayerTree,
    pub(super) dir_finish: DirFinish,
    /// Recently resolved parent directories; cleared on any removal.
    pub(super) cache: DirCache,
    aufs_links: bool,
    index: u64,
    entry_path: String,
}

/// What stood at a name an entry wants.
enum Clash {
    /// A directory, and the entry is one too: merge.
    Merge,
    /// Removed; it was an ordinary entry.
    Replaced,
    /// Removed; it was this layer's whiteout (a directory put there becomes opaque).
    ReplacedWhiteout,
}

impl<'a> Engine<'a> {
    pub(super) fn new(opts: &'a Applier, root: BorrowedFd<'a>, target: &'a Path, lower: &'a LowerChain) -> Self {
        Engine {
            opts,
            root,
            target,
            lower,
            report: ApplyReport::empty(),
            tree: LayerTree::default(),
            dir_finish: DirFinish::default(),
            cache: DirCache::default(),
            aufs_links: false,
            index: 0,
            entry_path: String::new(),
        }
    }

    /// Applies every entry, then restores directory times.
    pub(super) fn run<R: io::BufRead>(mut self, reader: &mut Reader<R>) -> Result<ApplyReport> {
        while let Some(entry) = reader.next_entry()? {
            self.index = entry.index;
            self.entry_path = entry.display_path();
            self.report.entries += 1;
            self.apply_entry(&entry, reader)?;
        }
        if self.aufs_links {
            sys::remove_all(self.root, OsStr::from_bytes(whiteout::AUFS_LINK_DIR)).map_err(|source| Error::Io {
                op: "remove aufs link dir",
                path: self.target.to_owned(),
                source,
            })?;
            self.cache.clear();
        }
        if self.opts.defer_lower {
            let implied = self.tree.with_flag(Flag::IMPLIED).map(|id| self.tree.path(id)).collect();
            self.report.deferred.implied_dirs = implied;
        }
        self.finish_dirs()?;
        Ok(self.report)
    }

    pub(super) fn set_context(&mut self, index: u64, path: String) {
        self.index = index;
        self.entry_path = path;
    }

    /// Sets `flag` on `path` (recording the path); `false` when it was already set.
    pub(super) fn flag(&mut self, path: &LayerPath, flag: Flag) -> bool {
        let id = self.tree.insert(path);
        self.tree.set(id, flag)
    }

    /// Clears `flag` on `path`; `true` when it was set.
    pub(super) fn unflag(&mut self, path: &LayerPath, flag: Flag) -> bool {
        self.tree.find(path).is_some_and(|id| self.tree.unset(id, flag))
    }

    pub(super) fn fail(&self, reason: impl Into<String>) -> Error {
        Error::Entry { index: self.index, path: self.entry_path.clone(), reason: reason.into() }
    }

    pub(super) fn io(&self, op: &'static str, source: io::Error) -> Error {
        Error::EntryIo { index: self.index, path: self.entry_path.clone(), op, source }
    }

    fn apply_entry<R: io::BufRead>(&mut self, entry: &Entry, reader: &mut Reader<R>) -> Result<()> {
        let path = LayerPath::parse(&entry.path).map_err(|r| self.fail(r))?;
        match path::classify(path).map_err(|r| self.fail(r))? {
            Meaning::AufsMeta => Ok(()),
            Meaning::AufsLinkTarget(p) => {
                self.aufs_links = true;
                if p.components().count() > 2 || !matches!(entry.kind, EntryKind::File | EntryKind::Dir) {
                    return Err(self.fail("only regular files directly under .wh..wh.plnk are supported"));
                }
                self.place(&p, entry, reader)
            }
            Meaning::Opaque(dir) => self.opaque_marker(&dir, entry),
            Meaning::Whiteout(p) => self.whiteout(&p, entry),
            Meaning::Plain(p) if p.is_root() => self.root_entry(entry),
            Meaning::Plain(p) => self.place(&p, entry, reader),
        }
    }

    /// `./` itself: attributes for the layer root, which must stay a directory.
    fn root_entry(&mut self, entry: &Entry) -> Result<()> {
        if entry.kind != EntryKind::Dir {
            return Err(self.fail(format!("the layer root cannot be replaced by a {:?}", entry.kind)));
        }
        let dir = sys::open_child_dir_readable(self.root, OsStr::new("")).map_err(|e| self.io("open target", e))?;
        self.set_dir_metadata(&LayerPath::root(), dir.as_fd(), entry)?;
        self.dir_finish.set(NodeId::ROOT, entry.atime.unwrap_or(entry.mtime), entry.mtime);
        Ok(())
    }

    fn place<R: io::BufRead>(&mut self, p: &LayerPath, entry: &Entry, reader: &mut Reader<R>) -> Result<()> {
        let Some((parent, name)) = p.split_last() else {
            return self.root_entry(entry);
        };
        let parent_dir = self.dir_at(&parent, entry)?;
        let dir = parent_dir.as_fd();
        match entry.kind {
            EntryKind::File => self.write_file(dir, parent_dir.new_file_owner, name, p, entry, reader)?,
            EntryKind::Dir => self.make_dir(dir, name, p, entry)?,
            EntryKind::Symlink => self.make_symlink(dir, name, p, entry)?,
            EntryKind::Hardlink => self.make_hardlink(dir, name, p, entry)?,
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => self.make_node(dir, name, p, entry)?,
        }
        self.flag(p, Flag::WRITTEN);
        Ok(())
    }

    /// Clears `name` for a new entry after `EEXIST`.
    fn clash(&mut self, dir: BorrowedFd<'_>, name: &OsStr, p: &LayerPath, new_is_dir: bool) -> Result<Clash> {
        let existing = sys::lstat(dir, name).map_err(|e| self.io("fstatat", e))?;
        if new_is_dir && existing.as_ref().is_some_and(sys::is_dir) {
            return Ok(Clash::Merge);
        }
        let ours = self.unflag(p, Flag::WHITEOUT);
        self.unflag(p, Flag::COPIED);
        sys::remove_all(dir, name).map_err(|e| self.io("remove existing entry", e))?;
        if existing.as_ref().is_some_and(sys::is_dir) {
            self.cache.clear();
        }
        Ok(if ours { Clash::ReplacedWhiteout } else { Clash::Replaced })
    }

    fn owner(&self, entry: &Entry) -> Result<Option<(u32, u32)>> {
        let uid = meta::id32("uid", entry.uid).map_err(|r| self.fail(r))?;
        let gid = meta::id32("gid", entry.gid).map_err(|r| self.fail(r))?;
        Ok(self.opts.same_owner.then_some((uid, gid)))
    }

    fn write_file<R: io::BufRead>(
        &mut self,
        dir: BorrowedFd<'_>,
        new_file_owner: (u32, u32),
        name: &OsStr,
        p: &LayerPath,
        entry: &Entry,
        reader: &mut Reader<R>,
    ) -> Result<()> {
        // A new file is already owned as the entry wants when the ids match what the
        // kernel gives it: skip that chown (most layers are all root:root).
        let owner = self.owner(entry)?.filter(|&o| o != new_file_owner);
        let mut file = match sys::create_file_exclusive(dir, name) {
            Ok(file) => file,
            Err(e) if sys::is_errno(&e, Code::EXIST) => {
                self.clash(dir, name, p, false)?;
                sys::create_file_exclusive(dir, name).map_err(|e| self.io("openat (create file)", e))?
            }
            Err(e) => return Err(self.io("openat (create file)", e)),
        };
        match &entry.sparse {
            None => self.copy_data(reader, |chunk| file.write_all(chunk))?,
            Some(map) => {
                for &(offset, len) in &map.regions {
                    let mut at = offset;
                    let mut left = len;
                    while left > 0 {
                        let chunk = reader.data()?;
                        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        file.write_all_at(&chunk[..n], at).map_err(|e| self.io("pwrite", e))?;
                        reader.consume(n);
                        at += n as u64;
                        left -= n as u64;
                        self.report.bytes += n as u64;
                    }
                }
                // Holes stay holes: extending the length allocates nothing.
                file.set_len(map.real_size).map_err(|e| self.io("ftruncate", e))?;
            }
        }
        self.set_fd_metadata(file.as_fd(), owner, entry, entry.mode)?;
        sys::set_times_fd(file.as_fd(), entry.atime.unwrap_or(entry.mtime), entry.mtime)
            .map_err(|e| self.io("futimens", e))?;
        self.report.files += 1;
        Ok(())
    }

    fn copy_data<R: io::BufRead>(
        &mut self,
        reader: &mut Reader<R>,
        mut write: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<()> {
        while reader.remaining() > 0 {
            let chunk = reader.data()?;
            let n = chunk.len();
            write(chunk).map_err(|e| self.io("write", e))?;
            reader.consume(n);
            self.report.bytes += n as u64;
        }
        Ok(())
    }

    /// chown -> xattrs -> chmod on an open fd (chown clears setuid, so chmod comes last).
    fn set_fd_metadata(
        &mut self,
        fd: BorrowedFd<'_>,
        owner: Option<(u32, u32)>,
        entry: &Entry,
        mode: u32,
    ) -> Result<()> {
        if let Some((uid, gid)) = owner {
            sys::chown_fd(fd, uid, gid).map_err(|e| self.io("fchown", e))?;
        }
        for (key, value) in &entry.xattrs {
            if !meta::xattr_allowed(key) {
                self.report.xattrs_filtered += 1;
                continue;
            }
            match sys::set_xattr_fd(fd, key, value) {
                Ok(()) => {}
                Err(e) if sys::is_errno(&e, Code::PERM) && !self.opts.same_owner => self.skip_privileged_xattr(key),
                Err(e) => return Err(self.io("fsetxattr", e)),
            }
        }
        sys::chmod_fd(fd, mode).map_err(|e| self.io("fchmod", e))
    }

    /// Without privilege, `security.*` xattrs (file capabilities, IMA) cannot be set.
    fn skip_privileged_xattr(&mut self, key: &str) {
        let warning = format!("{}: no permission to set {key}; skipped", self.entry_path);
        self.report.warnings.push(warning);
    }

    /// Directory attributes. Without privilege, a directory stays writable for us until
    /// the end (a layer's 0555 dir must still receive its children); its mode is set last.
    fn set_dir_metadata(&mut self, p: &LayerPath, fd: BorrowedFd<'_>, entry: &Entry) -> Result<()> {
        let owner = self.owner(entry)?;
        let mode = self.dir_mode_now(p, entry.mode);
        self.set_fd_metadata(fd, owner, entry, mode)
    }

    /// The mode to give directory `p` now: `mode`, or, unprivileged, `mode | 0o700` with
    /// `mode` deferred to the end (we must be able to write the children).
    pub(super) fn dir_mode_now(&mut self, p: &LayerPath, mode: u32) -> u32 {
        if self.opts.same_owner {
            return mode;
        }
        let id = self.tree.insert(p);
        self.dir_finish.defer_mode(id, mode);
        mode | 0o700
    }

    fn make_dir(&mut self, dir: BorrowedFd<'_>, name: &OsStr, p: &LayerPath, entry: &Entry) -> Result<()> {
        let mut opaque = false;
        let mut merged = false;
        match sys::mkdir(dir, name, 0o700) {
            Ok(()) => {}
            Err(e) if sys::is_errno(&e, Code::EXIST) => match self.clash(dir, name, p, true)? {
                Clash::Merge => {
                    merged = true;
                    // An explicit entry now owns this dir's metadata.
                    self.unflag(p, Flag::IMPLIED);
                }
                clash => {
                    opaque = matches!(clash, Clash::ReplacedWhiteout);
                    sys::mkdir(dir, name, 0o700).map_err(|e| self.io("mkdirat", e))?;
                }
            },
            Err(e) => return Err(self.io("mkdirat", e)),
        }
        let fd = sys::open_child_dir_readable(dir, name).map_err(|e| self.io("open directory", e))?;
        if merged {
            self.drop_stale_xattrs(fd.as_fd(), entry)?;
        }
        self.set_dir_metadata(p, fd.as_fd(), entry)?;
        if opaque {
            self.mark_opaque(fd.as_fd(), p)?;
        }
        let id = self.tree.insert(p);
        self.dir_finish.set(id, entry.atime.unwrap_or(entry.mtime), entry.mtime);
        self.report.dirs += 1;
        Ok(())
    }

    /// Dir over dir: the entry's attributes win, xattrs included, as the merged view of
    /// the overlay form shows the upper dir's xattrs only. Xattrs a layer may not set
    /// (overlay markers placed by this layer, SELinux labels) are the host's and stay.
    fn drop_stale_xattrs(&mut self, fd: BorrowedFd<'_>, entry: &Entry) -> Result<()> {
        let keys = sys::list_xattrs_fd(fd).map_err(|e| self.io("flistxattr", e))?;
        for key in keys.iter().filter(|k| meta::xattr_allowed(k) && !entry.xattrs.iter().any(|(e, _)| e == *k)) {
            sys::remove_xattr_fd(fd, key).map_err(|e| self.io("fremovexattr", e))?;
        }
        Ok(())
    }

    /// Metadata for objects that are never opened (symlinks, devices, fifos), through
    /// the fd that pinned the node right after it was made (see `sys::pin_node`).
    fn set_pinned_metadata(&mut self, node: &sys::PinnedNode, entry: &Entry) -> Result<()> {
        if let Some((uid, gid)) = self.owner(entry)? {
            node.chown(uid, gid).map_err(|e| self.io("fchownat", e))?;
        }
        for (key, value) in &entry.xattrs {
            if !meta::xattr_allowed(key) {
                self.report.xattrs_filtered += 1;
                continue;
            }
            match node.set_xattr(key, value) {
                Ok(()) => {}
                // Linux refuses user.* xattrs on symlinks and special files.
                Err(e) if sys::is_errno(&e, Code::PERM) && key.starts_with("user.") => self
                    .report
                    .warnings
                    .push(format!("{}: kernel refuses {key} on a {:?}; skipped", self.entry_path, entry.kind)),
                Err(e) if sys::is_errno(&e, Code::PERM) && !self.opts.same_owner => self.skip_privileged_xattr(key),
                Err(e) => return Err(self.io("setxattr", e)),
            }
        }
        node.chmod(entry.mode).map_err(|e| self.io("chmod", e))?;
        node.set_times(entry.atime.unwrap_or(entry.mtime), entry.mtime).map_err(|e| self.io("utimensat", e))
    }

    fn pin(&self, dir: BorrowedFd<'_>, name: &OsStr, kind: sys::Kind) -> Result<sys::PinnedNode> {
        sys::pin_node(dir, name, kind).map_err(|e| self.io("open new node", e))
    }

    fn make_symlink(&mut self, dir: BorrowedFd<'_>, name: &OsStr, p: &LayerPath, entry: &Entry) -> Result<()> {
        let target = OsStr::from_bytes(entry.link.as_deref().unwrap_or_default());
        if let Err(e) = sys::symlink(target, dir, name) {
            if !sys::is_errno(&e, Code::EXIST) {
                return Err(self.io("symlinkat", e));
            }
            self.clash(dir, name, p, false)?;
            sys::symlink(target, dir, name).map_err(|e| self.io("symlinkat", e))?;
        }
        let node = self.pin(dir, name, sys::Kind::Symlink)?;
        self.set_pinned_metadata(&node, entry)?;
        self.report.symlinks += 1;
        Ok(())
    }

    fn make_node(&mut self, dir: BorrowedFd<'_>, name: &OsStr, p: &LayerPath, entry: &Entry) -> Result<()> {
        let (kind, (major, minor)) = match entry.kind {
            EntryKind::CharDevice => {
                (NodeKind::Char, meta::device_numbers(entry.device.0, entry.device.1).map_err(|r| self.fail(r))?)
            }
            EntryKind::BlockDevice => {
                (NodeKind::Block, meta::device_numbers(entry.device.0, entry.device.1).map_err(|r| self.fail(r))?)
            }
            _ => (NodeKind::Fifo, (0, 0)),
        };
        if kind == NodeKind::Char && (major, minor) == (0, 0) {
            return Err(self.fail("char device 0/0 is an overlay whiteout in disguise; layers must use .wh. entries"));
        }
        self.owner(entry)?;
        let mut made = sys::mknod(dir, name, kind, 0o600, major, minor);
        if made.as_ref().is_err_and(|e| sys::is_errno(e, Code::EXIST)) {
            self.clash(dir, name, p, false)?;
            made = sys::mknod(dir, name, kind, 0o600, major, minor);
        }
        match made {
            Ok(()) => {}
            Err(e)
                if sys::is_errno(&e, Code::PERM)
                    && kind != NodeKind::Fifo
                    && self.opts.devices == DevicePolicy::SkipWithWarning =>
            {
                self.report
                    .warnings
                    .push(format!("{}: no permission to create device {major}:{minor}; skipped", self.entry_path));
                return Ok(());
            }
            Err(e) => return Err(self.io("mknodat", e)),
        }
        let node = self.pin(dir, name, kind.file_type())?;
        self.set_pinned_metadata(&node, entry)?;
        if kind == NodeKind::Fifo {
            self.report.fifos += 1;
        } else {
            self.report.devices += 1;
        }
        Ok(())
    }

    fn make_hardlink(&mut self, dir: BorrowedFd<'_>, name: &OsStr, p: &LayerPath, entry: &Entry) -> Result<()> {
        let raw = entry.link.as_deref().unwrap_or_default();
        let target = LayerPath::parse(raw).map_err(|r| self.fail(format!("hardlink target: {r}")))?;
        if !matches!(path::classify(target.clone()), Ok(Meaning::Plain(_) | Meaning::AufsLinkTarget(_))) {
            return Err(self.fail("hardlink target is not an ordinary path"));
        }
        if &target == p {
            return Err(self.fail("hardlink to itself"));
        }
        let Some((tparent, tname)) = target.split_last() else {
            return Err(self.fail("hardlink to the layer root"));
        };
        let tname = tname.to_owned();
        let mut tdir = match sys::open_dir_in_root(self.root, tparent.as_os_str()) {
            Ok(fd) => Some(fd),
            Err(e) if [Code::NOENT, Code::NOTDIR, Code::LOOP].iter().any(|&c| sys::is_errno(&e, c)) => None,
            Err(e) => return Err(self.io("open hardlink target directory", e)),
        };
        let mut found = match &tdir {
            Some(d) => sys::lstat(d.as_fd(), &tname).map_err(|e| self.io("fstatat (hardlink target)", e))?,
            None => None,
        };
        if found.is_none()
            && self.opts.mode == Mode::Overlay
            && !self.tree.path_has(&target, Flag::WHITEOUT)
            && self.copy_up(&target, &target, entry)?
        {
            tdir = self.existing_dir(&tparent)?;
            found = tdir.as_ref().and_then(|d| sys::lstat(d.as_fd(), &tname).ok().flatten());
        }
        if found.is_none() && self.opts.defer_lower && !self.tree.path_has(&target, Flag::WHITEOUT) {
            self.report.deferred.links.push(DeferredLink { link: p.clone(), target, mtime: entry.mtime });
            self.report.hardlinks += 1;
            return Ok(());
        }
        let (Some(tdir), Some(st)) = (tdir, found) else {
            return Err(self.fail(format!("hardlink target {} not found in this layer or below it", target.display())));
        };
        if sys::is_dir(&st) {
            return Err(self.fail("hardlink to a directory"));
        }
        if whiteout::is_whiteout(&st) {
            return Err(self.fail("hardlink target is a whiteout"));
        }
        if let Err(e) = sys::hardlink(tdir.as_fd(), &tname, dir, name) {
            if !sys::is_errno(&e, Code::EXIST) {
                return Err(self.io("linkat", e));
            }
            self.clash(dir, name, p, false)?;
            sys::hardlink(tdir.as_fd(), &tname, dir, name).map_err(|e| self.io("linkat", e))?;
        }
        self.report.hardlinks += 1;
        Ok(())
    }

    /// An existing directory, or `None` when the path is missing or crosses a non-directory.
    pub(super) fn existing_dir(&self, path: &LayerPath) -> Result<Option<OwnedFd>> {
        match sys::open_dir_beneath(self.root, path.as_os_str()) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if [Code::NOENT, Code::NOTDIR, Code::LOOP].iter().any(|&c| sys::is_errno(&e, c)) => Ok(None),
            Err(e) => Err(self.io("open hardlink target directory", e)),
        }
    }

    /// Copies `path` from the lower chain into this layer (a hardlink to a lower file
    /// needs the file in this layer). `false` when the chain does not have it.
    pub(super) fn copy_up(&mut self, path: &LayerPath, dst: &LayerPath, entry: &Entry) -> Result<bool> {
        let Some(found) = self.lower.find(path).map_err(|e| self.io("look up lower layers", e))? else {
            return Ok(false);
        };
        let Some((parent, name)) = dst.split_last() else {
            return Ok(false);
        };
        let st = &found.stat;
        if !matches!(sys::file_type(st), sys::Kind::RegularFile | sys::Kind::Symlink) {
            return Err(self.fail("hardlink target in a lower layer is neither a file nor a symlink"));
        }
        let dir = self.dir_at(&parent, entry)?;
        // The layer rule also keeps a lower opaque marker from being copied upward.
        let options = CopyOptions { data: true, owner: self.opts.same_owner, xattr: &meta::xattr_allowed };
        copy_entry(found.dir.as_fd(), &found.name, st, dir.as_fd(), name, &options)
            .map_err(|e| self.io("copy-up from a lower layer", e))?;
        self.flag(dst, Flag::COPIED);
        if st.st_nlink > 1 && sys::file_type(st) == sys::Kind::RegularFile {
            self.copy_up_link_group(&found, path, dst, entry)?;
        }
        Ok(true)
    }

    /// After copying up one name of a multiply-linked lower file, links every other name
    /// of it that the merged view still shows, so the layer keeps the file's link group
    /// whole, as the flattened tree does (`usr/bin/hi` and `usr/bin/hello` stay one
    /// file when a later layer links `hello-again` to `hello`).
    fn copy_up_link_group(
        &mut self,
        found: &super::lower::Found,
        path: &LayerPath,
        dst: &LayerPath,
        entry: &Entry,
    ) -> Result<()> {
        let names = self.lower.link_names(found).map_err(|e| self.io("read lower hardlinks", e))?;
        let Some((dst_parent, dst_name)) = dst.split_last() else { return Ok(()) };
        for other in names.iter().filter(|n| *n != path && *n != dst) {
            let Some((parent, name)) = other.split_last() else { continue };
            let touched = self
                .tree
                .find(other)
                .is_some_and(|id| [Flag::WRITTEN, Flag::WHITEOUT, Flag::COPIED].iter().any(|&f| self.tree.has(id, f)));
            if touched || self.hidden_by_this_layer(other) {
                continue;
            }
            // Only where the merged view shows this very file, not a nearer layer's.
            let shown = self.lower.find(other).map_err(|e| self.io("look up lower layers", e))?;
            if !shown.is_some_and(|s| s.layer == found.layer && s.stat.st_ino == found.stat.st_ino) {
                continue;
            }
            if let Some(dir) = self.existing_dir(&parent)? {
                if sys::lstat(dir.as_fd(), name).map_err(|e| self.io("fstatat", e))?.is_some() {
                    continue;
                }
            }
            let from = self.dir_at(&dst_parent, entry)?;
            let to = self.dir_at(&parent, entry)?;
            sys::hardlink(from.as_fd(), dst_name, to.as_fd(), name).map_err(|e| self.io("linkat (link group)", e))?;
            self.flag(other, Flag::COPIED);
        }
        Ok(())
    }

    /// Copies a lower entry's xattrs (never overlay markers) onto `fd`.
    pub(super) fn copy_xattrs(&mut self, found: &super::lower::Found, fd: BorrowedFd<'_>) -> Result<()> {
        let keys = sys::list_xattrs(found.dir.as_fd(), &found.name).map_err(|e| self.io("list lower xattrs", e))?;
        // The layer rule also keeps a lower opaque marker from being copied upward.
        for key in keys.iter().filter(|k| meta::xattr_allowed(k)) {
            if let Some(value) =
                sys::get_xattr(found.dir.as_fd(), &found.name, key).map_err(|e| self.io("read lower xattr", e))?
            {
                sys::set_xattr_fd(fd, key, &value).map_err(|e| self.io("fsetxattr (copied from lower)", e))?;
            }
        }
        Ok(())
    }

    /// Marks `dir` (at `path`) opaque: the xattr in overlay form, and in both forms the
    /// record that nothing of the lower layers shows below it.
    pub(super) fn mark_opaque(&mut self, dir: BorrowedFd<'_>, path: &LayerPath) -> Result<()> {
        self.flag(path, Flag::OPAQUE);
        if self.opts.mode == Mode::Overlay {
            sys::set_xattr_fd(dir, self.opts.xattrs.opaque_key(), whiteout::XATTR_TRUE)
                .map_err(|e| self.io("fsetxattr (opaque)", e))?;
        }
        Ok(())
    }

    /// `DIR/.wh..wh..opq`: everything below DIR in lower layers is hidden. Order
    /// independent: this layer's own entries in DIR survive wherever the marker sits.
    fn opaque_marker(&mut self, dir_path: &LayerPath, entry: &Entry) -> Result<()> {
        self.report.opaque_dirs += 1;
        if dir_path.is_root() {
            self.report.root_opaque = true;
        }
        self.make_opaque(dir_path, entry)
    }

    fn make_opaque(&mut self, dir_path: &LayerPath, entry: &Entry) -> Result<()> {
        let id = self.tree.insert(dir_path);
        if !self.tree.set(id, Flag::OPAQUE) {
            return Ok(());
        }
        let dir = self.dir_at(dir_path, entry)?;
        let dir = sys::open_child_dir_readable(dir.as_fd(), OsStr::new(""))
            .map_err(|e| self.io("open opaque directory", e))?;
        match self.opts.mode {
            Mode::Overlay => {
                self.mark_opaque(dir.as_fd(), dir_path)?;
                // A whiteout inside an opaque dir would show in readdir; drop ours. Once
                // per directory (the flag above), so the listing costs O(entries) in all.
                for name in sys::list_dir(dir.as_fd()).map_err(|e| self.io("read directory", e))? {
                    let Some(child) = self.tree.child(id, name.as_bytes()) else { continue };
                    if self.tree.unset(child, Flag::WHITEOUT) {
                        sys::remove_all(dir.as_fd(), &name).map_err(|e| self.io("remove whiteout in opaque dir", e))?;
                    }
                }
            }
            Mode::Flat => self.prune_lower(dir.as_fd(), id)?,
        }
        self.tree.set(id, Flag::WRITTEN);
        Ok(())
    }

    /// Flat form of an opaque dir: removes everything below `dir_path` that this layer did
    /// not write, at any depth. The layer's own entries may come before the marker
    /// (`a/b/c/foo`, then `a/.wh..wh..opq`): lower content under `a/b/c` must go too, as
    /// the kernel's merged view of the overlay form shows only `a/b/c/foo`. Directories
    /// already pruned (opaque themselves) hold no lower content and are not walked again.
    fn prune_lower(&mut self, dir: BorrowedFd<'_>, dir_id: NodeId) -> Result<()> {
        let names = sys::list_dir(dir).map_err(|e| self.io("read directory", e))?;
        for name in names {
            let child = self.tree.child(dir_id, name.as_bytes());
            let Some(child) = child.filter(|&c| self.tree.has(c, Flag::WRITTEN)) else {
                sys::remove_all(dir, &name).map_err(|e| self.io("remove lower entry of opaque dir", e))?;
                self.cache.clear();
                continue;
            };
            if !self.tree.has(child, Flag::OPAQUE)
                && sys::lstat(dir, &name).map_err(|e| self.io("fstatat", e))?.as_ref().is_some_and(sys::is_dir)
            {
                let sub = sys::open_child_dir_readable(dir, &name).map_err(|e| self.io("open directory", e))?;
                self.prune_lower(sub.as_fd(), child)?;
            }
        }
        Ok(())
    }

    /// True when an ancestor of `p` is opaque in this layer, or whited out by it: then a
    /// whiteout at `p` has nothing left to hide and must not imply its parent directory
    /// (`.wh.foo` with `foo/.wh.bar`, as `rm -rf` style writers emit, must leave no `foo`).
    fn hidden_by_this_layer(&self, p: &LayerPath) -> bool {
        let (chain, complete) = self.tree.walk(p);
        let ancestors = if complete { &chain[..chain.len() - 1] } else { &chain[..] };
        ancestors.iter().any(|&id| self.hides_below(id))
    }

    /// Whether nothing of the lower layers shows below `id`: this layer made it opaque
    /// or whited it out.
    pub(super) fn hides_below(&self, id: NodeId) -> bool {
        self.tree.has(id, Flag::OPAQUE) || self.tree.has(id, Flag::WHITEOUT)
    }

    /// The nearest proper ancestor of `p` that this layer wrote as a file (not a
    /// directory, not a symlink: a whiteout through a symlink stays refused, since tools
    /// that follow it would delete elsewhere).
    fn file_ancestor_of_this_layer(&self, p: &LayerPath) -> Result<Option<LayerPath>> {
        let (chain, complete) = self.tree.walk(p);
        let ancestors = if complete { &chain[..chain.len() - 1] } else { &chain[..] };
        let nearest = ancestors.iter().rev().find(|&&id| id != NodeId::ROOT && self.tree.has(id, Flag::WRITTEN));
        let Some(&nearest) = nearest else { return Ok(None) };
        let prefix = self.tree.path(nearest);
        let Some((parent, name)) = prefix.split_last() else { return Ok(None) };
        let Some(dir) = self.existing_dir(&parent)? else { return Ok(None) };
        let st = sys::lstat(dir.as_fd(), name).map_err(|e| self.io("fstatat", e))?;
        Ok(st.filter(|st| !matches!(sys::file_type(st), sys::Kind::Directory | sys::Kind::Symlink)).map(|_| prefix))
    }

    /// `DIR/.wh.NAME`: NAME of lower layers is hidden.
    fn whiteout(&mut self, p: &LayerPath, entry: &Entry) -> Result<()> {
        self.report.whiteouts += 1;
        let owner = self.owner(entry)?;
        let Some((parent, name)) = p.split_last() else {
            return Err(self.fail("whiteout of the layer root"));
        };
        if self.tree.path_has(p, Flag::WRITTEN) {
            // This layer wrote NAME itself; if it is a directory, the whiteout means its
            // lower contents are gone: an opaque directory.
            if let Some(dir) = self.existing_dir(p)? {
                drop(dir);
                self.make_opaque(p, entry)?;
            }
            return Ok(());
        }
        if self.hidden_by_this_layer(p) {
            return Ok(());
        }
        if let Some(file) = self.file_ancestor_of_this_layer(p)? {
            // umoci writes these when a directory became a file; nothing below a file
            // shows in the merged view, so they hide nothing (umoci's unpack agrees).
            let warning =
                format!("{}: whiteout under {}, a file of this layer; ignored", self.entry_path, file.display());
            self.report.warnings.push(warning);
            return Ok(());
        }
        let dir = self.dir_at(&parent, entry)?;
        let dir = dir.as_fd();
        match self.opts.mode {
            Mode::Overlay => {
                if self.unflag(p, Flag::COPIED) {
                    // A lower file this layer copied up to link to: the whiteout hides it.
                    sys::remove_all(dir, name).map_err(|e| self.io("remove copied-up file", e))?;
                }
                match sys::mknod(dir, name, NodeKind::Char, 0, 0, 0) {
                    Ok(()) => {}
                    Err(e) if sys::is_errno(&e, Code::EXIST) && self.tree.path_has(p, Flag::WHITEOUT) => {
                        return Ok(());
                    }
                    Err(e) => return Err(self.io("mknodat (whiteout)", e)),
                }
                let node = self.pin(dir, name, sys::Kind::CharacterDevice)?;
                if let Some((uid, gid)) = owner {
                    node.chown(uid, gid).map_err(|e| self.io("fchownat (whiteout)", e))?;
                }
                // The header's times, so the same layer always gives the same tree.
                node.set_times(entry.atime.unwrap_or(entry.mtime), entry.mtime)
                    .map_err(|e| self.io("utimensat (whiteout)", e))?;
                self.flag(p, Flag::WHITEOUT);
            }
            Mode::Flat => {
                let was_dir =
                    sys::lstat(dir, name).map_err(|e| self.io("fstatat", e))?.as_ref().is_some_and(sys::is_dir);
                sys::remove_all(dir, name).map_err(|e| self.io("remove whited-out entry", e))?;
                if was_dir {
                    self.cache.clear();
                }
                self.flag(p, Flag::WHITEOUT);
            }
        }
        Ok(())
    }
}
