//! Open files: the daemon's fd behind each open, shared by every open of the same inode
//! with the same access mode, and the inode's kernel passthrough backing. Both are
//! bounded by the inodes open, not by the opens: 20,000 opens of one file cost one fd.
//!
//! The kernel binds at most one passthrough backing file to an inode, requires every
//! other open of it to pass through to that same file, and refuses passthrough while
//! the inode has opens served through the page cache. A lower file bound as the backing
//! could then never be copied up while it is open: a writer would wait or fail with
//! `ETXTBSY` for as long as any user holds the file open. So only files that can no
//! longer move pass through: upper files, and lower files of a read-only mount. A lower
//! file of a writable mount is served by the daemon through the page cache (warm reads
//! never reach the daemon); its readers follow the upper copy after a copy-up, exactly
//! as on overlayfs, and its opens after the last such reader closes pass through.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use fuser::BackingId;
use rustix::fs::OFlags;

use crate::layers::Place;

/// Daemon fds kept for root's opens whatever other users hold.
const ROOT_RESERVED_FDS: usize = 1024;

/// This process's fd limit, raised to the hard limit first (the daemon serves every
/// user of the mount from one fd table).
fn fd_limit() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(hard) = limit.maximum {
        let raised = rustix::process::Rlimit { current: Some(hard), maximum: Some(hard) };
        if rustix::process::setrlimit(rustix::process::Resource::Nofile, raised).is_ok() {
            return usize::try_from(hard).unwrap_or(usize::MAX);
        }
    }
    limit.current.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How the kernel reaches an open file's data; held by the open, so the inode's mode
/// lasts while any open of it does.
#[derive(Debug, Clone)]
pub(crate) enum Io {
    /// The kernel reads and writes the backing file itself.
    Passthrough(Arc<BackingId>),
    /// Through the daemon and the page cache.
    Cached { _mode: Arc<CachedMode> },
}

/// The token of an inode served through the page cache.
#[derive(Debug)]
pub(crate) struct CachedMode;

/// What the kernel has bound to an inode, while its opens last.
#[derive(Debug)]
enum Bound {
    Backing(Weak<BackingId>, Place),
    Cached(Weak<CachedMode>),
}

/// One open of a file.
#[derive(Debug)]
pub(crate) struct OpenFile {
    pub ino: u64,
    pub writable: bool,
    access: OFlags,
    /// The fd and where it points; a read-only fd on a lower file is swapped for the
    /// upper copy after a copy-up, so daemon reads see later writes as on overlayfs.
    real: Mutex<(Arc<File>, Place)>,
    /// Keeps the inode's mode (and the kernel's backing reference) while this is open.
    _io: Io,
}

impl OpenFile {
    /// The fd as it stands (no swap): for writes and syncs.
    pub(crate) fn fd(&self) -> Arc<File> {
        lock(&self.real).0.clone()
    }
}

/// (inode, access mode) -> the fd its opens share, and where it points.
type SharedFds = HashMap<(u64, u32), (Weak<File>, Place)>;

/// The tables of open files, shared fds and backings.
#[derive(Debug)]
pub(crate) struct OpenFiles {
    next_fh: AtomicU64,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    fds: Mutex<SharedFds>,
    /// inode -> how the kernel serves its opens now.
    modes: Mutex<HashMap<u64, Bound>>,
    passthrough_on: AtomicBool,
    /// How many shared fds other users' opens may hold; the rest of the daemon's fd
    /// limit is root's, so no user can make root's opens fail with `EMFILE`.
    user_fd_budget: usize,
}

impl OpenFiles {
    pub(crate) fn new() -> OpenFiles {
        OpenFiles {
            next_fh: AtomicU64::new(1),
            files: Mutex::new(HashMap::new()),
            fds: Mutex::new(HashMap::new()),
            modes: Mutex::new(HashMap::new()),
            passthrough_on: AtomicBool::new(false),
            user_fd_budget: fd_limit().saturating_sub(ROOT_RESERVED_FDS).max(64),
        }
    }

    pub(crate) fn enable_passthrough(&self) {
        self.passthrough_on.store(true, Ordering::Relaxed);
    }

    /// A fresh handle number (files and directories share the space).
    pub(crate) fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn get(&self, fh: u64) -> Option<Arc<OpenFile>> {
        lock(&self.files).get(&fh).cloned()
    }

    /// The fd for an open of `ino` with `flags` whose real file is at `place` now:
    /// `fresh` when the open just made it (a copy-up), else the one other opens with
    /// the same access share, else `open()`'s. `O_TRUNC` always opens anew, so the
    /// truncation happens. A new fd for an unprivileged caller past its budget is
    /// refused with `ENFILE`.
    pub(crate) fn fd(
        &self,
        ino: u64,
        flags: OFlags,
        place: Place,
        fresh: Option<File>,
        privileged: bool,
        open: impl FnOnce() -> io::Result<(File, Place)>,
    ) -> io::Result<(Arc<File>, Place)> {
        let key = (ino, (flags & OFlags::RWMODE).bits());
        let mut fds = lock(&self.fds);
        if fresh.is_none() && !flags.contains(OFlags::TRUNC) {
            if let Some((weak, at)) = fds.get(&key) {
                if *at == place {
                    if let Some(file) = weak.upgrade() {
                        return Ok((file, *at));
                    }
                }
            }
        }
        if !privileged && fds.len() >= self.user_fd_budget {
            fds.retain(|_, (weak, _)| weak.strong_count() > 0);
            if fds.len() >= self.user_fd_budget {
                return Err(rustix::io::Errno::NFILE.into());
            }
        }
        let (file, at) = match fresh {
            Some(file) => (file, place),
            None => open()?,
        };
        let file = Arc::new(file);
        fds.insert(key, (Arc::downgrade(&file), at));
        Ok((file, at))
    }

    /// How the kernel should reach the data of a new open of `ino` whose fd `file` is
    /// at `place`. `fixed`: the file cannot be copied up through this mount (it is in
    /// the upper dir, or the mount is read-only). `register` turns an fd into a kernel
    /// backing; `read_write` opens the upper file read-write, so later writers can
    /// share its backing.
    pub(crate) fn io(
        &self,
        ino: u64,
        place: Place,
        fixed: bool,
        file: &File,
        register: impl Fn(&File) -> io::Result<BackingId>,
        read_write: impl FnOnce() -> Option<File>,
    ) -> io::Result<Io> {
        let mut modes = lock(&self.modes);
        match modes.get(&ino) {
            Some(Bound::Backing(weak, at)) => {
                if let Some(id) = weak.upgrade() {
                    // A bound backing is always a fixed file: it never moves.
                    return if *at == place { Ok(Io::Passthrough(id)) } else { Err(rustix::io::Errno::BUSY.into()) };
                }
            }
            Some(Bound::Cached(weak)) => {
                if let Some(token) = weak.upgrade() {
                    return Ok(Io::Cached { _mode: token });
                }
            }
            None => {}
        }
        if fixed && self.passthrough_on.load(Ordering::Relaxed) {
            let upper = if place == Place::Upper { read_write() } else { None };
            match register(upper.as_ref().unwrap_or(file)) {
                Ok(id) => {
                    let id = Arc::new(id);
                    modes.insert(ino, Bound::Backing(Arc::downgrade(&id), place));
                    return Ok(Io::Passthrough(id));
                }
                Err(e) => {
                    if self.passthrough_on.swap(false, Ordering::Relaxed) {
                        eprintln!(
                            "strata-fuse: kernel passthrough refused ({e}); serving reads and writes in userspace"
                        );
                    }
                }
            }
        }
        let token = Arc::new(CachedMode);
        modes.insert(ino, Bound::Cached(Arc::downgrade(&token)));
        Ok(Io::Cached { _mode: token })
    }

    /// Records an open; returns its handle.
    pub(crate) fn add(&self, ino: u64, flags: OFlags, writable: bool, real: (Arc<File>, Place), io: Io) -> u64 {
        let fh = self.next_fh();
        let access = flags & OFlags::RWMODE;
        let open = OpenFile { ino, writable, access, real: Mutex::new(real), _io: io };
        lock(&self.files).insert(fh, Arc::new(open));
        fh
    }

    /// Forgets handle `fh` of `ino`, and the fd and mode nobody uses any more.
    pub(crate) fn release(&self, ino: u64, fh: u64) {
        let open = lock(&self.files).remove(&fh);
        drop(open);
        let mut fds = lock(&self.fds);
        for access in [OFlags::RDONLY, OFlags::WRONLY, OFlags::RDWR] {
            let key = (ino, access.bits());
            if fds.get(&key).is_some_and(|(weak, _)| weak.strong_count() == 0) {
                fds.remove(&key);
            }
        }
        drop(fds);
        let mut modes = lock(&self.modes);
        let unused = match modes.get(&ino) {
            Some(Bound::Backing(weak, _)) => weak.strong_count() == 0,
            Some(Bound::Cached(weak)) => weak.strong_count() == 0,
            None => false,
        };
        if unused {
            modes.remove(&ino);
        }
    }

    /// The fd to read `open` through: once the inode is in the upper dir, a read-only
    /// fd on its lower file is swapped for the upper copy's (`now` says where the inode
    /// is, asked only for a fd still on a lower file; `open_upper` opens the copy).
    pub(crate) fn read_fd(
        &self,
        open: &OpenFile,
        now: impl FnOnce() -> io::Result<Place>,
        open_upper: impl FnOnce() -> io::Result<(File, Place)>,
    ) -> io::Result<Arc<File>> {
        let mut real = lock(&open.real);
        if real.1 != Place::Upper && now()? == Place::Upper {
            // Unlinked since, the upper copy has no name to open by: keep reading the
            // fd we have rather than fail a read on an open file.
            if let Ok(swapped) = self.fd(open.ino, open.access, Place::Upper, None, true, open_upper) {
                *real = swapped;
            }
        }
        Ok(real.0.clone())
    }
}
