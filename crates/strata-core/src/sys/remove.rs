//! Removing a tree whatever its shape, with a bounded number of descriptors and stack.
//!
//! A container user can build a directory chain deeper than any fd limit or thread
//! stack (`mkdir d && cd d` in a loop: `PATH_MAX` bounds a path, not a depth). A removal
//! holding a descriptor and a stack frame per level fails on it with `EMFILE`, leaving
//! the snapshot dir behind, or overflows the stack. So the walk recurses at most
//! [`RECURSION_LIMIT`] levels; a directory met below that is moved up into the directory
//! being removed under a fresh name (`renameat2(RENAME_NOREPLACE)`) and emptied from
//! there later. Each directory moves at most once, so the work stays linear.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, RenameFlags};
use rustix::io::Errno;

use super::{list_dir, open_child_dir_readable};

/// Levels the walk descends before it moves a directory up instead.
const RECURSION_LIMIT: usize = 32;

/// Removes `name` from `dir` whatever it is; a directory goes with its whole tree, at
/// any depth. Never follows a symlink: a symlink is removed, not what it points to.
///
/// # Errors
/// What the kernel says, other than `ENOENT`.
pub fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let top = open_child_dir_readable(dir, name)?;
    let mut moved = Moved { top: top.as_fd(), names: Vec::new(), next: 0 };
    empty(top.as_fd(), 1, &mut moved)?;
    while let Some(up) = moved.names.pop() {
        let sub = open_child_dir_readable(top.as_fd(), &up)?;
        empty(sub.as_fd(), 1, &mut moved)?;
        remove_dir(top.as_fd(), &up)?;
    }
    remove_dir(dir, name)
}

/// The directories moved up into `top`, still to empty and remove.
struct Moved<'a> {
    top: BorrowedFd<'a>,
    names: Vec<OsString>,
    next: u64,
}

impl Moved<'_> {
    /// Moves directory `name` of `dir` into `top` under a free name. `false` where the
    /// filesystem has no `RENAME_NOREPLACE` (the caller then recurses).
    fn take(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
        loop {
            let fresh = OsString::from(format!(".strata-rm.{}", self.next));
            self.next += 1;
            match rustix::fs::renameat_with(dir, name, self.top, &fresh, RenameFlags::NOREPLACE) {
                Ok(()) => {
                    self.names.push(fresh);
                    return Ok(true);
                }
                Err(Errno::EXIST) => {}
                Err(Errno::INVAL) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Removes everything in directory `dir`, `depth` levels below the top.
fn empty(dir: BorrowedFd<'_>, depth: usize, moved: &mut Moved<'_>) -> io::Result<()> {
    for name in list_dir(dir)? {
        match rustix::fs::unlinkat(dir, &name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => continue,
            Err(Errno::ISDIR) => {}
            Err(e) => return Err(e.into()),
        }
        if depth >= RECURSION_LIMIT && moved.take(dir, &name)? {
            continue;
        }
        let child = open_child_dir_readable(dir, &name)?;
        empty(child.as_fd(), depth + 1, moved)?;
        remove_dir(dir, &name)?;
    }
    Ok(())
}

fn remove_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{open_child_dir, open_dir_path};
    use std::os::fd::OwnedFd;

    #[test]
    fn remove_all_removes_links_not_targets() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        std::fs::create_dir(&victim).expect("mkdir");
        std::fs::write(victim.join("keep"), b"x").expect("write");
        std::fs::create_dir_all(tmp.path().join("t/d")).expect("mkdir");
        std::os::unix::fs::symlink(&victim, tmp.path().join("t/d/link")).expect("symlink");
        let root = open_dir_path(tmp.path()).expect("open");
        remove_all(root.as_fd(), OsStr::new("t")).expect("remove");
        assert!(!tmp.path().join("t").exists());
        assert!(victim.join("keep").exists());
    }

    /// A chain `depth` dirs deep below `dir`, with a file, a symlink out and a
    /// `.strata-rm.0` (the name the walk would pick first) every 100 levels.
    fn chain(dir: BorrowedFd<'_>, depth: usize, victim: &std::path::Path) {
        let mut at: OwnedFd = crate::sys::open_dir_beneath(dir, OsStr::new("")).expect("open");
        for level in 0..depth {
            crate::sys::mkdir(at.as_fd(), OsStr::new("d"), 0o755).expect("mkdir");
            if level % 100 == 0 {
                crate::sys::mkdir(at.as_fd(), OsStr::new(".strata-rm.0"), 0o755).expect("mkdir");
                crate::sys::symlink(victim.as_os_str(), at.as_fd(), OsStr::new("out")).expect("symlink");
                crate::sys::create_file_exclusive(at.as_fd(), OsStr::new("f")).expect("file");
            }
            at = open_child_dir(at.as_fd(), OsStr::new("d")).expect("descend");
        }
    }

    #[test]
    fn a_tree_deeper_than_the_recursion_limit_is_removed_whole() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        std::fs::create_dir(&victim).expect("mkdir");
        std::fs::write(victim.join("keep"), b"x").expect("write");
        std::fs::create_dir(tmp.path().join("t")).expect("mkdir");
        let root = open_dir_path(tmp.path()).expect("open");
        let t = open_child_dir(root.as_fd(), OsStr::new("t")).expect("open t");
        chain(t.as_fd(), 5000, &victim);
        remove_all(root.as_fd(), OsStr::new("t")).expect("remove a 5000-deep tree");
        assert!(!tmp.path().join("t").exists());
        assert!(victim.join("keep").exists(), "symlinks removed, not followed");
    }
}
