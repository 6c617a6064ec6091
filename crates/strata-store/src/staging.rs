//! Staging dirs: where a layer is unpacked before it becomes a snapshot.
//!
//! Each staging dir is `flock`ed by its owner for as long as it works in it, so the
//! cleanup that runs when any process opens the store removes exactly the staging dirs
//! of processes that died (the kernel drops a dead process's locks), never a live one's.
//! Creating a dir and locking it are two steps; creators hold a shared lock on the
//! staging root across both, and cleanup takes it exclusively, so cleanup never sees a
//! dir between its creation and its lock.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::FlockOperation;

use crate::error::{Error, Result};
use strata_core::sys;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other process or thread will pick.
pub(crate) fn unique_token() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}-{:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A locked staging dir holding `fs/` (the layer) and `work/` (overlayfs scratch).
#[derive(Debug)]
pub(crate) struct Staging {
    /// `<root>/staging/<token>`.
    pub(crate) path: PathBuf,
    /// The dir name, reused as the snapshot dir name after the rename.
    pub token: String,
    /// Held while we work; dropping it lets a later cleanup remove the dir.
    _lock: OwnedFd,
}

impl Staging {
    /// Creates and locks a fresh staging dir under `staging_root`.
    pub(crate) fn create(staging_root: &Path) -> Result<Staging> {
        let token = unique_token();
        let path = staging_root.join(&token);
        let io = |op, source| Error::Io { op, path: path.clone(), source };
        let parent = lock_root(staging_root, FlockOperation::LockShared)?;
        std::fs::create_dir(&path).map_err(|e| io("create staging dir", e))?;
        let lock =
            sys::open_child_dir_readable(parent.as_fd(), OsStr::new(&token)).map_err(|e| io("open staging dir", e))?;
        rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| io("lock staging dir", e.into()))?;
        std::fs::create_dir(path.join("fs")).map_err(|e| io("create staging fs dir", e))?;
        std::fs::create_dir(path.join("work")).map_err(|e| io("create staging work dir", e))?;
        Ok(Staging { path, token, _lock: lock })
    }

    /// The layer dir.
    pub(crate) fn fs(&self) -> PathBuf {
        self.path.join("fs")
    }

    /// Removes the staging dir (after a failed or redundant unpack).
    pub(crate) fn discard(self) -> Result<()> {
        let io = |source| Error::Io { op: "remove staging dir", path: self.path.clone(), source };
        let (Some(parent), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Err(io(std::io::Error::from(std::io::ErrorKind::InvalidInput)));
        };
        let parent = sys::open_dir_nofollow(parent).map_err(io)?;
        sys::remove_all(parent.as_fd(), name).map_err(io)
    }
}

/// Removes staging dirs whose owners are gone; returns how many.
pub(crate) fn remove_abandoned(staging_root: &Path) -> Result<usize> {
    let io = |op, source| Error::Io { op, path: staging_root.to_owned(), source };
    let root = lock_root(staging_root, FlockOperation::LockExclusive)?;
    let readable =
        sys::open_child_dir_readable(root.as_fd(), OsStr::new("")).map_err(|e| io("open staging root", e))?;
    let mut removed = 0;
    for name in sys::list_dir(readable.as_fd()).map_err(|e| io("read staging root", e))? {
        let Ok(dir) = sys::open_child_dir_readable(root.as_fd(), &name) else {
            // Not a directory: nothing of ours; remove it anyway, it can only be debris.
            sys::remove_all(root.as_fd(), &name).map_err(|e| io("remove staging debris", e))?;
            continue;
        };
        if rustix::fs::flock(&dir, FlockOperation::NonBlockingLockExclusive).is_ok() {
            sys::remove_all(root.as_fd(), &name).map_err(|e| io("remove abandoned staging dir", e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Opens the staging root and flocks it (shared: creating a staging dir; exclusive:
/// cleaning up). The lock lasts as long as the returned fd.
fn lock_root(staging_root: &Path, how: FlockOperation) -> Result<OwnedFd> {
    let io = |op, source| Error::Io { op, path: staging_root.to_owned(), source };
    let root = sys::open_dir_nofollow(staging_root).map_err(|e| io("open staging root", e))?;
    let root = sys::open_child_dir_readable(root.as_fd(), OsStr::new("")).map_err(|e| io("open staging root", e))?;
    rustix::fs::flock(&root, how).map_err(|e| io("lock staging root", e.into()))?;
    Ok(root)
}
