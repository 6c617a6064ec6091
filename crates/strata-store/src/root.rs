//! The store root's safety rules, checked on every open.
//!
//! Everything under the root is deleted by the store at some point (orphan snapshot
//! dirs, abandoned staging dirs, removed snapshots), so the root must be a place only the
//! caller controls: a real directory (not a symlink), owned by the caller, writable by
//! no one else, under ancestors that no one else can rename (owned by root or the caller,
//! and either not writable by others or sticky, like `/tmp`). The same holds for the
//! `snapshots/` and `staging/` dirs inside. A root that breaks a rule is refused with
//! the rule it breaks; nothing is changed or deleted. (DESIGN.md: "The store root is
//! 0700, a real directory owned by the caller; a symlinked or foreign root is refused;
//! cleanup never follows a symlink and never deletes outside the root.")

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use strata_core::sys::{self, Code};

/// The dirs the store keeps inside its root.
pub(super) const SUBDIRS: [&str; 2] = ["snapshots", "staging"];

fn refuse(path: &Path, reason: impl Into<String>) -> Error {
    Error::UnsafeRoot { path: path.to_owned(), reason: reason.into() }
}

/// Creates `root` (0700) if missing, then checks the rules in the module docs for it,
/// its ancestors and its subdirs (created 0700 if missing).
pub(super) fn secure(root: &Path) -> Result<()> {
    let root = std::path::absolute(root).map_err(|source| Error::Io {
        op: "resolve store root",
        path: root.into(),
        source,
    })?;
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            op: "create store root's parent",
            path: parent.into(),
            source,
        })?;
        check_ancestors(parent)?;
    }
    let name = root.file_name().ok_or_else(|| refuse(&root, "it is the filesystem root"))?;
    let parent = root.parent().unwrap_or(Path::new("/"));
    let parent_fd = sys::open_dir_path(parent).map_err(|source| Error::Io {
        op: "open store root's parent",
        path: parent.into(),
        source,
    })?;
    make_dir(parent_fd.as_fd(), name, &root, "create store root")?;
    let dir = open_nofollow(parent_fd.as_fd(), name, &root)?;
    check_owned(&root, &dir)?;
    for sub in SUBDIRS {
        let path = root.join(sub);
        make_dir(dir.as_fd(), OsStr::new(sub), &path, "create store dir")?;
        let fd = open_nofollow(dir.as_fd(), OsStr::new(sub), &path)?;
        check_owned(&path, &fd)?;
    }
    Ok(())
}

/// `mkdir(name, 0700)`; an existing entry is checked by the open that follows.
fn make_dir(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr, path: &Path, op: &'static str) -> Result<()> {
    match sys::mkdir(dir, name, 0o700) {
        Err(e) if !sys::is_errno(&e, Code::EXIST) => Err(Error::Io { op, path: path.into(), source: e }),
        _ => Ok(()),
    }
}

fn open_nofollow(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<OwnedFd> {
    sys::open_child_dir(dir, name).map_err(|source| {
        let is_link = sys::lstat(dir, name).ok().flatten().is_some_and(|st| sys::file_type(&st) == sys::Kind::Symlink);
        if is_link {
            refuse(path, "it is a symlink; give the real directory")
        } else if sys::is_errno(&source, Code::NOTDIR) {
            refuse(path, "it is not a directory")
        } else {
            Error::Io { op: "open store dir", path: path.into(), source }
        }
    })
}

/// Owned by the caller and writable by no one else.
fn check_owned(path: &Path, fd: &OwnedFd) -> Result<()> {
    let st =
        rustix::fs::fstat(fd).map_err(|e| Error::Io { op: "stat store dir", path: path.into(), source: e.into() })?;
    let (euid, _) = sys::effective_ids();
    if st.st_uid != euid {
        return Err(refuse(path, format!("it is owned by uid {}, not by the caller (uid {euid})", st.st_uid)));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(refuse(
            path,
            format!("it is writable by group or others (mode {:o}); chmod go-w it", st.st_mode & 0o7777),
        ));
    }
    Ok(())
}

/// Every ancestor: owned by root or the caller, and not writable by others unless sticky.
fn check_ancestors(parent: &Path) -> Result<()> {
    let (euid, _) = sys::effective_ids();
    let mut cur: Option<PathBuf> = Some(parent.to_owned());
    while let Some(dir) = cur {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(&dir).map_err(|source| Error::Io { op: "stat", path: dir.clone(), source })?;
        if md.uid() != 0 && md.uid() != euid {
            return Err(refuse(
                parent,
                format!("its ancestor {} is owned by uid {}, who could move the store", dir.display(), md.uid()),
            ));
        }
        if md.mode() & 0o022 != 0 && md.mode() & 0o1000 == 0 {
            return Err(refuse(parent, format!("its ancestor {} is writable by others and not sticky", dir.display())));
        }
        cur = dir.parent().map(Path::to_owned);
    }
    Ok(())
}
