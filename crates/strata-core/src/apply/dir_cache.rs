//! Recently resolved parent directories, so consecutive entries of one directory (and
//! layers whose entries hop between a few directories) skip the `openat2` walk.
//!
//! Safety rule (containerd CVE-2025-47290): a cached fd must never outlive a change to
//! the tree that could make it point somewhere else. The engine calls [`DirCache::clear`]
//! on every removal or replacement of a directory, so a cached fd always names the
//! directory that is at its path now. Entries are only ever added, never renamed.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use crate::path::LayerPath;

/// Bound on open directory fds held; when reached, the cache starts over.
const CAPACITY: usize = 256;

/// A resolved parent directory.
#[derive(Debug)]
pub struct ParentDir {
    /// The directory (`O_PATH` or readable).
    pub fd: OwnedFd,
    /// The owner a file created here gets: our euid, and our egid or, in a setgid
    /// directory, the directory's gid. When an entry wants exactly that, chown is skipped.
    pub new_file_owner: (u32, u32),
}

impl AsFd for ParentDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Parent directories by layer path.
#[derive(Debug, Default)]
pub struct DirCache(HashMap<LayerPath, Rc<ParentDir>>);

impl DirCache {
    /// The directory cached for `path`.
    pub fn get(&self, path: &LayerPath) -> Option<Rc<ParentDir>> {
        self.0.get(path).cloned()
    }

    /// Remembers `dir` as the directory at `path`.
    pub fn insert(&mut self, path: LayerPath, fd: Rc<ParentDir>) {
        if self.0.len() >= CAPACITY {
            self.0.clear();
        }
        self.0.insert(path, fd);
    }

    /// Forgets everything (after any removal or replacement of a directory).
    pub fn clear(&mut self) {
        self.0.clear();
    }
}
