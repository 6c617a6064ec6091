//! Resolving an entry's parent directory: safely, with implied directories created as
//! overlayfs would show them, and with directory times recorded so they can be restored
//! after the children are written.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use super::dir_cache::ParentDir;
use super::dir_finish::DirFinal;
use super::engine::Engine;
use super::tree::{Flag, NodeId};
use crate::error::Result;
use crate::path::LayerPath;
use crate::sys::{self, Code};
use crate::tar::{Entry, Timestamp};

fn current_times(dir: BorrowedFd<'_>) -> std::io::Result<(Timestamp, Timestamp)> {
    let st = sys::lstat(dir, OsStr::new(""))?.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    Ok(sys::stat_times(&st))
}

impl Engine<'_> {
    /// The directory at `path` (as an fd), creating implied directories on the way and
    /// replacing lower non-directories that stand where a directory must be (the merged
    /// view of the overlay form shows this layer's directory there). Never follows a
    /// symlink.
    pub(super) fn dir_at(&mut self, path: &LayerPath, entry: &Entry) -> Result<Rc<ParentDir>> {
        if let Some(fd) = self.cache.get(path) {
            return Ok(fd);
        }
        let fd = match sys::open_dir_beneath(self.root, path.as_os_str()) {
            Ok(fd) => fd,
            Err(e) if [Code::NOENT, Code::NOTDIR, Code::LOOP].iter().any(|&c| sys::is_errno(&e, c)) => {
                self.walk_creating(path, entry)?
            }
            Err(e) => return Err(self.io("open parent directory", e)),
        };
        let st = sys::lstat(fd.as_fd(), OsStr::new(""))
            .and_then(|st| st.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)))
            .map_err(|e| self.io("stat directory", e))?;
        let id = self.tree.insert(path);
        self.dir_finish.keep(id, || Ok(sys::stat_times(&st))).map_err(|e| self.io("stat directory", e))?;
        let (euid, egid) = self.opts.ids;
        let gid = if st.st_mode & 0o2000 != 0 { st.st_gid } else { egid };
        let dir = Rc::new(ParentDir { fd, new_file_owner: (euid, gid) });
        self.cache.insert(path.clone(), Rc::clone(&dir));
        self.note_layer_dir(id);
        Ok(dir)
    }

    /// Records `path` and its ancestors as this layer's: a layer that writes `a/x` into a
    /// lower `a` has `a` in its overlay-form dir too, so a later `.wh.a` of the same layer
    /// makes `a` opaque instead of deleting `a/x` (whiteouts hide lower layers only).
    /// Stops at the first ancestor already recorded (its ancestors are too).
    fn note_layer_dir(&mut self, mut id: NodeId) {
        while id != NodeId::ROOT && self.tree.set(id, Flag::WRITTEN) {
            id = self.tree.parent(id).unwrap_or(NodeId::ROOT);
        }
    }

    /// The slow path of [`dir_at`](Self::dir_at): one component at a time, following the
    /// layer tree alongside so each step costs O(1) bookkeeping (a path is rebuilt only
    /// for a directory created here).
    fn walk_creating(&mut self, path: &LayerPath, entry: &Entry) -> Result<OwnedFd> {
        let mut cur = sys::open_dir_beneath(self.root, OsStr::new("")).map_err(|e| self.io("open target", e))?;
        let mut here = NodeId::ROOT;
        // Whether this layer hid the lower layers at `here` or above (opaque, whited out).
        let mut hidden = self.hides_below(here);
        for (depth, name) in path.components().enumerate() {
            let next = self.tree.child_or_insert(here, name.as_bytes());
            let replaced_whiteout = match sys::open_child_dir(cur.as_fd(), name) {
                Ok(fd) => {
                    cur = fd;
                    here = next;
                    hidden |= self.hides_below(here);
                    continue;
                }
                Err(e) if sys::is_errno(&e, Code::NOENT) => false,
                Err(e) if sys::is_errno(&e, Code::NOTDIR) || sys::is_errno(&e, Code::LOOP) => {
                    let ours = self.tree.unset(next, Flag::WHITEOUT);
                    if !ours && self.tree.has(next, Flag::WRITTEN) {
                        return Err(self.fail(format!(
                            "{} is a non-directory written earlier in this layer; nothing can be placed below it",
                            self.tree.path(next).display()
                        )));
                    }
                    self.dir_finish
                        .keep(here, || current_times(cur.as_fd()))
                        .map_err(|e| self.io("stat directory", e))?;
                    sys::remove_all(cur.as_fd(), name).map_err(|e| self.io("remove non-directory in the way", e))?;
                    self.cache.clear();
                    ours
                }
                Err(e) => return Err(self.io("open parent directory", e)),
            };
            self.dir_finish.keep(here, || current_times(cur.as_fd())).map_err(|e| self.io("stat directory", e))?;
            sys::mkdir(cur.as_fd(), name, 0o755).map_err(|e| self.io("mkdirat (implied directory)", e))?;
            let fd =
                sys::open_child_dir_readable(cur.as_fd(), name).map_err(|e| self.io("open implied directory", e))?;
            let prefix = path.prefix(depth + 1);
            self.implied_metadata(&prefix, next, fd.as_fd(), entry, !replaced_whiteout && !hidden)?;
            if replaced_whiteout {
                self.mark_opaque(fd.as_fd(), &prefix)?;
            }
            // `dir_at` records this dir and its ancestors as the layer's (note_layer_dir).
            cur = fd;
            here = next;
            hidden |= self.hides_below(here);
        }
        Ok(cur)
    }

    /// Metadata of an implied directory: that of the same directory in the lower chain when
    /// there is one (so a lower `/tmp` 1777 is not masked by 0755), else 0755 root with
    /// the implying entry's mtime (deterministic, unlike "now"). Not when the dir stands
    /// where this layer whited the lower one out, or below such a dir or an opaque one
    /// (`inherit` false): the lower dir is hidden, and the new one is as new as in the
    /// flattened tree.
    fn implied_metadata(
        &mut self,
        path: &LayerPath,
        id: NodeId,
        dir: BorrowedFd<'_>,
        entry: &Entry,
        inherit: bool,
    ) -> Result<()> {
        if inherit && self.opts.defer_lower {
            self.tree.set(id, Flag::IMPLIED);
        } else if inherit && self.lower_dir_metadata(path, dir)? {
            return Ok(());
        }
        sys::chmod_fd(dir, 0o755).map_err(|e| self.io("fchmod (implied directory)", e))?;
        self.dir_finish.set(id, entry.mtime, entry.mtime);
        Ok(())
    }

    /// Gives `dir` the metadata of the same directory in the lower chain (owner, xattrs,
    /// mode, times), so a lower `/tmp` 1777 is not masked by 0755. `false`, touching
    /// nothing, when no lower layer has a directory there.
    pub(super) fn lower_dir_metadata(&mut self, path: &LayerPath, dir: BorrowedFd<'_>) -> Result<bool> {
        let lower = self.lower.find(path).map_err(|e| self.io("look up lower layers", e))?;
        let Some(found) = lower.filter(|f| sys::is_dir(&f.stat)) else {
            return Ok(false);
        };
        if self.opts.same_owner {
            sys::chown_fd(dir, found.stat.st_uid, found.stat.st_gid)
                .map_err(|e| self.io("fchown (implied directory)", e))?;
        }
        self.copy_xattrs(&found, dir)?;
        let mode = self.dir_mode_now(path, found.stat.st_mode & 0o7777);
        sys::chmod_fd(dir, mode).map_err(|e| self.io("fchmod (implied directory)", e))?;
        let (atime, mtime) = sys::stat_times(&found.stat);
        let id = self.tree.insert(path);
        self.dir_finish.set(id, atime, mtime);
        Ok(true)
    }

    /// Sets every recorded directory time (and, unprivileged, every deferred directory
    /// mode), deepest first, once all entries are written.
    pub(super) fn finish_dirs(&mut self) -> Result<()> {
        for (id, DirFinal { times, mode }) in std::mem::take(&mut self.dir_finish).into_sorted(&self.tree) {
            let path = self.tree.path(id);
            let (parent, name) = match path.split_last() {
                Some((parent, name)) => (parent, name.to_owned()),
                None => (LayerPath::root(), OsStr::new("").to_owned()),
            };
            let dir = match sys::open_dir_beneath(self.root, parent.as_os_str()) {
                Ok(dir) => dir,
                // Removed or replaced by a later entry: nothing to restore.
                Err(_) => continue,
            };
            // O_DIRECTORY | O_NOFOLLOW: whatever now stands at the name, only a directory
            // gets the mode and times, through its fd.
            let Ok(fd) = sys::open_child_dir_readable(dir.as_fd(), &name) else {
                continue;
            };
            let fail = |op, source| crate::error::Error::Io { op, path: self.target.join(path.as_os_str()), source };
            if let Some(mode) = mode {
                sys::chmod_fd(fd.as_fd(), mode).map_err(|e| fail("set directory mode", e))?;
            }
            if let Some((atime, mtime)) = times {
                sys::set_times_fd(fd.as_fd(), atime, mtime).map_err(|e| fail("set directory times", e))?;
            }
        }
        Ok(())
    }
}
