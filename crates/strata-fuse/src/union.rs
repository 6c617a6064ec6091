//! The union view: name resolution through the layers, attributes with stable inode
//! numbers, merged listings and xattr reads. Changes live in `mutate.rs`.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use strata_core::sys;

use crate::RedirectDir;
use crate::layers::{self, LayerDir, LayerIx, Layers, Place, Probe};
use crate::located::Located;
use crate::nodes::{Node, Nodes, ROOT};
use strata_core::ovl::{is_overlay_xattr, redirect, whiteout};

/// The xattr (after the overlay prefix) in which a copied-up entry keeps the inode
/// number it had in its lower layer, so `st_ino` survives copy-up and remounts.
/// overlayfs ignores (and hides) unknown names under its prefix.
pub(crate) const ORIGIN_INO: &str = "strata.ino";

/// The file-capability xattr, which the kernel checks before each write and chown.
const CAPABILITY: &str = "security.capability";

/// A union entry found by name.
#[derive(Debug)]
pub(crate) struct Found {
    pub ino: u64,
    pub st: Stat,
    pub node: Node,
}

/// One merged directory entry.
#[derive(Debug, Clone)]
pub(crate) struct DirEntry {
    pub name: OsString,
    pub kind: FileType,
    pub ino: u64,
}

/// This process's umask, read without changing it (`umask(2)` can only swap it, which
/// would briefly affect other threads' file creation).
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_owned())))
        .and_then(|v| u32::from_str_radix(&v, 8).ok())
        .unwrap_or(0o022)
}

#[derive(Debug)]
pub(crate) struct Union {
    pub(crate) layers: Layers,
    pub(crate) nodes: Mutex<Nodes>,
    /// Changes to the tree (create, remove, rename, copy-up) hold it exclusively; name
    /// resolution and listings share it. Data reads and writes go through open fds and
    /// take nothing.
    tree: RwLock<()>,
    /// Merged listings, shared by every open of a directory until it changes (200 opens
    /// of a 200k-entry directory hold one listing, not 200).
    listings: Mutex<HashMap<u64, Weak<Vec<DirEntry>>>>,
    /// Devices seen, in a fixed order (upper, then lowers), for inode-number mixing.
    devs: Mutex<Vec<u64>>,
    tmp_counter: AtomicU64,
    /// This process's umask, which the kernel already applied to modes it sends us.
    pub(crate) umask: u32,
    pub(crate) origin_key: String,
    /// Whether directory renames follow and write `*.overlay.redirect`.
    pub(crate) redirects: RedirectDir,
    /// Tells the kernel to drop cached attributes it cannot know changed (a dir copied
    /// up becomes a merged dir: nlink 1). Set once the session exists.
    pub(crate) notifier: std::sync::Arc<std::sync::OnceLock<fuser::Notifier>>,
}

impl Union {
    pub(crate) fn new(layers: Layers, redirects: RedirectDir) -> io::Result<Union> {
        let n = LayerIx::try_from(layers.lower_count()).map_err(|_| Errno::INVAL)?;
        let root = if layers.has_upper() {
            Node { lowers: (0..n).collect(), nlookup: 1, ..Node::fresh(FileType::Directory, Place::Upper) }
        } else if n > 0 {
            Node { lowers: (1..n).collect(), nlookup: 1, ..Node::fresh(FileType::Directory, Place::Lower(0)) }
        } else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a union needs at least one layer"));
        };
        let mut devs = Vec::new();
        for place in root.places() {
            let dev = rustix::fs::fstat(layers.root(place))?.st_dev;
            if !devs.contains(&dev) {
                devs.push(dev);
            }
        }
        let origin_key = format!("{}{ORIGIN_INO}", layers.xattrs.prefix());
        Ok(Union {
            layers,
            nodes: Mutex::new(Nodes::new(root)),
            tree: RwLock::new(()),
            listings: Mutex::new(HashMap::new()),
            devs: Mutex::new(devs),
            tmp_counter: AtomicU64::new(0),
            umask: process_umask(),
            origin_key,
            redirects,
            notifier: std::sync::Arc::default(),
        })
    }

    pub(crate) fn nodes(&self) -> MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn read_tree(&self) -> RwLockReadGuard<'_, ()> {
        self.tree.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn write_tree(&self) -> RwLockWriteGuard<'_, ()> {
        self.tree.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh name for staging in the work dir.
    pub(crate) fn tmp_name(&self) -> OsString {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("#strata-{}-{n}", std::process::id()))
    }

    /// `ino`'s node, cloned out of the table, and where its copies are.
    pub(crate) fn node_at(&self, ino: u64) -> io::Result<(Node, Located)> {
        let nodes = self.nodes();
        Ok((nodes.get(ino)?.clone(), nodes.located(ino)?))
    }

    /// The layer directory holding `ino`'s real copy, and its name there.
    pub(crate) fn real(&self, ino: u64) -> io::Result<(Node, Arc<LayerDir>, OsString)> {
        let (node, parent, name) = {
            let nodes = self.nodes();
            let node = nodes.get(ino)?.clone();
            if ino == ROOT {
                (node, Located::root(), OsString::from("."))
            } else {
                let (p, n) = nodes.locate(ino)?;
                (node, p, n)
            }
        };
        let dir = self.layers.dir(node.place, parent.path_in(node.place))?;
        Ok((node, dir, name))
    }

    /// `lstat` of `ino`'s real copy.
    pub(crate) fn stat(&self, ino: u64) -> io::Result<(Node, Stat)> {
        let _tree = self.read_tree();
        let (node, dir, name) = self.real(ino)?;
        let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok((node, st))
    }

    /// Looks `name` up in directory `parent` and records the kernel's new reference.
    pub(crate) fn lookup(&self, parent: u64, name: &OsStr) -> io::Result<Found> {
        let _tree = self.read_tree();
        self.lookup_locked(parent, name)
    }

    pub(crate) fn lookup_locked(&self, parent: u64, name: &OsStr) -> io::Result<Found> {
        let (pnode, at) = self.node_at(parent)?;
        let (node, st, dir) = self.resolve(&pnode, &at, name)?.ok_or(Errno::NOENT)?;
        let ino = self.ino_of(node.place, dir.as_fd(), name, &st);
        let node = self.nodes().remember(ino, parent, &name.to_owned(), node).clone();
        Ok(Found { ino, st, node })
    }

    /// Resolves `name` in the directory `pnode` (at `at`) through its layers, as
    /// overlayfs does: the top-most entry wins; a whiteout ends the search; directories
    /// merge downwards until an opaque one or a non-directory, and a redirected one
    /// continues at its redirect's path.
    pub(crate) fn resolve(
        &self,
        pnode: &Node,
        at: &Located,
        name: &OsStr,
    ) -> io::Result<Option<(Node, Stat, Arc<LayerDir>)>> {
        if pnode.kind != FileType::Directory {
            return Err(Errno::NOTDIR.into());
        }
        if whiteout::is_aufs_marker(name) || name.as_bytes().contains(&b'/') {
            return Ok(None);
        }
        let mut found: Option<(Node, Stat, Arc<LayerDir>)> = None;
        // Once a layer's copy redirects, the layers below hold the dir at that path.
        let mut redirected: Option<PathBuf> = None;
        let lower_count = LayerIx::try_from(self.layers.lower_count()).map_err(|_| Errno::INVAL)?;
        // The parent's layers, until an absolute redirect switches to every layer below.
        let mut from_parent = pnode.places();
        let mut below_redirect: Option<std::ops::Range<LayerIx>> = None;
        loop {
            let next = match &mut below_redirect {
                Some(layers) => layers.next().map(Place::Lower),
                None => from_parent.next(),
            };
            let Some(place) = next else { break };
            let below = match place {
                Place::Upper => 0,
                Place::Lower(i) => i + 1,
            };
            let (dir_path, entry) = match &redirected {
                Some(target) => (target.parent().unwrap_or(Path::new("")), target.file_name().unwrap_or(name)),
                None => (at.path_in(place), name),
            };
            let dir = match self.layers.dir(place, dir_path) {
                Ok(d) => d,
                Err(e) if matches!(e.raw_os_error(), Some(c) if c == Errno::NOENT.raw_os_error()) => continue,
                Err(e) => return Err(e),
            };
            let st = match Layers::probe(&dir, entry)? {
                Probe::Absent => continue,
                Probe::Whiteout => break,
                Probe::Found(st) => st,
            };
            let is_dir = layers::kind_of(&st) == FileType::Directory;
            if found.is_some() && !is_dir {
                break;
            }
            let opaque = is_dir && self.layers.is_opaque(dir.as_fd(), entry)?;
            let follow = is_dir && !opaque && below < lower_count && self.redirects != RedirectDir::NoFollow;
            let redirect = if follow { self.read_redirect(&dir, entry, dir_path)? } else { None };
            let node = match &mut found {
                Some((node, _, _)) => {
                    if let Place::Lower(i) = place {
                        node.lowers.push(i);
                    }
                    node
                }
                None => &mut found.insert((Node::fresh(layers::kind_of(&st), place), st, dir)).0,
            };
            if let Some(target) = redirect {
                if target.absolute {
                    // As overlayfs: an absolute redirect is looked up in every layer
                    // below, also where the parent has no copy.
                    below_redirect = Some(below..lower_count);
                }
                node.redirects.push((below, target.path.clone()));
                redirected = Some(target.path);
            }
            if !is_dir || opaque {
                break;
            }
        }
        Ok(found)
    }

    /// The redirect on directory `name` in layer directory `dir` (at layer path
    /// `dir_path`); an invalid one is an error naming it.
    fn read_redirect(&self, dir: &LayerDir, name: &OsStr, dir_path: &Path) -> io::Result<Option<redirect::Target>> {
        redirect::read(dir.as_fd(), name, self.layers.xattrs, dir_path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir_path.join(name).display())))
    }

    /// Whether a lower layer under directory `pnode` shows an entry `name` (so removing
    /// or moving it away needs a whiteout).
    pub(crate) fn lower_positive(&self, pnode: &Node, at: &Located, name: &OsStr) -> io::Result<bool> {
        for place in pnode.places().filter(|p| *p != Place::Upper) {
            let dir = match self.layers.dir(place, at.path_in(place)) {
                Ok(d) => d,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => continue,
                Err(e) => return Err(e),
            };
            match Layers::probe(&dir, name)? {
                Probe::Absent => {}
                Probe::Whiteout => return Ok(false),
                Probe::Found(_) => return Ok(true),
            }
        }
        Ok(false)
    }

    /// The inode number we report for a real entry: its lower inode (kept across copy-up
    /// in the origin xattr), mixed with a device index when layers span filesystems.
    pub(crate) fn ino_of(&self, place: Place, dir: BorrowedFd<'_>, name: &OsStr, st: &Stat) -> u64 {
        if place == Place::Upper {
            if let Ok(Some(v)) = sys::get_xattr(dir, name, &self.origin_key) {
                if let Ok(bytes) = <[u8; 8]>::try_from(v.as_slice()) {
                    return u64::from_le_bytes(bytes);
                }
            }
        }
        self.mix(st.st_dev, st.st_ino)
    }

    pub(crate) fn mix(&self, dev: u64, ino: u64) -> u64 {
        let mut devs = self.devs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = match devs.iter().position(|&d| d == dev) {
            Some(i) => i,
            None => {
                devs.push(dev);
                devs.len() - 1
            }
        };
        let mixed = ino ^ ((index as u64) << 56);
        if mixed <= ROOT { mixed | (1 << 63) } else { mixed }
    }

    /// The merged listing of directory `ino`: de-duplicated, whiteouts and markers
    /// hidden, upper entries first.
    pub(crate) fn list(&self, ino: u64) -> io::Result<Arc<Vec<DirEntry>>> {
        // Under the shared tree lock: no change can slip between listing and caching.
        let _tree = self.read_tree();
        if let Some(shared) = self.listings().get(&ino).and_then(Weak::upgrade) {
            return Ok(shared);
        }
        let (node, at) = self.node_at(ino)?;
        let listing = Arc::new(self.list_node(&node, &at)?);
        let mut listings = self.listings();
        if listings.len() >= 1024 {
            listings.retain(|_, weak| weak.strong_count() > 0);
        }
        listings.insert(ino, Arc::downgrade(&listing));
        Ok(listing)
    }

    /// Directory `ino` is about to change (the caller holds the tree lock exclusively):
    /// later opens list it anew; open handles keep the listing they have, as POSIX allows.
    pub(crate) fn listing_changed(&self, ino: u64) {
        self.listings().remove(&ino);
    }

    fn listings(&self) -> MutexGuard<'_, HashMap<u64, Weak<Vec<DirEntry>>>> {
        self.listings.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn list_node(&self, node: &Node, at: &Located) -> io::Result<Vec<DirEntry>> {
        if node.kind != FileType::Directory {
            return Err(Errno::NOTDIR.into());
        }
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        for place in node.places() {
            let dir = match self.layers.dir(place, at.path_in(place)) {
                Ok(d) => d,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => continue,
                Err(e) => return Err(e),
            };
            let readable =
                rustix::fs::openat(&dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
            let dev = rustix::fs::fstat(&dir)?.st_dev;
            let mut hidden_below = Vec::new();
            for entry in Dir::new(readable)? {
                let entry = entry?;
                let name = OsStr::from_bytes(entry.file_name().to_bytes());
                if name == "." || name == ".." || name.as_bytes() == whiteout::OPAQUE_MARKER {
                    continue;
                }
                if let Some(target) = whiteout::whited_out_name(name) {
                    hidden_below.push(target.to_owned());
                    continue;
                }
                if seen.contains(name) {
                    continue;
                }
                let mut kind = entry.file_type();
                if matches!(kind, FileType::CharacterDevice | FileType::Unknown) {
                    let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                    if whiteout::is_whiteout(&st) {
                        seen.insert(name.to_owned());
                        continue;
                    }
                    kind = layers::kind_of(&st);
                }
                seen.insert(name.to_owned());
                // d_ino is the st_ino a stat would give (`ls -i`, `find -inum`): for a
                // copied-up entry, its origin's.
                let origin = match place {
                    Place::Upper => sys::get_xattr(dir.as_fd(), name, &self.origin_key).ok().flatten(),
                    Place::Lower(_) => None,
                };
                let ino = match origin.as_deref().map(<[u8; 8]>::try_from) {
                    Some(Ok(bytes)) => u64::from_le_bytes(bytes),
                    _ => self.mix(dev, entry.ino()),
                };
                out.push(DirEntry { name: name.to_owned(), kind, ino });
            }
            seen.extend(hidden_below);
        }
        Ok(out)
    }

    /// An open fd on `ino`'s real file with `flags` (access mode, `O_TRUNC` and
    /// `O_NOATIME` kept; the kernel handles `O_APPEND` offsets itself).
    pub(crate) fn open_real(&self, ino: u64, flags: OFlags) -> io::Result<(File, Place)> {
        let _tree = self.read_tree();
        let (node, dir, name) = self.real(ino)?;
        let keep = flags & (OFlags::RWMODE | OFlags::TRUNC | OFlags::NOATIME);
        let fd = rustix::fs::openat(&dir, &name, keep | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())?;
        Ok((File::from(fd), node.place))
    }

    pub(crate) fn readlink(&self, ino: u64) -> io::Result<OsString> {
        let _tree = self.read_tree();
        let (_, dir, name) = self.real(ino)?;
        sys::read_link(dir.as_fd(), &name)
    }

    pub(crate) fn getxattr(&self, ino: u64, key: &OsStr) -> io::Result<Vec<u8>> {
        if is_overlay_xattr(key.as_bytes()) {
            return Err(Errno::NOTSUP.into());
        }
        let key = key.to_str().ok_or(Errno::NODATA)?;
        let _tree = self.read_tree();
        // The kernel asks for a file's capability before every write and chown (to drop
        // it): answered from the node once the file is known to have none.
        let capability = key == CAPABILITY;
        if capability && self.nodes().get(ino)?.no_capability {
            return Err(Errno::NODATA.into());
        }
        let (_, dir, name) = self.real(ino)?;
        let got = match sys::get_xattr(dir.as_fd(), &name, key) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(Errno::NODATA.into()),
            // A layer on a filesystem without xattrs (ramfs) has none: ENODATA, as a
            // file there would say through overlayfs. EOPNOTSUPP would make the kernel
            // fail every open once it asks for the file's ACL.
            Err(e) if e.raw_os_error() == Some(Errno::NOTSUP.raw_os_error()) => Err(Errno::NODATA.into()),
            Err(e) => Err(e),
        };
        if capability && got.as_ref().is_err_and(|e| e.raw_os_error() == Some(Errno::NODATA.raw_os_error())) {
            if let Ok(node) = self.nodes().get_mut(ino) {
                node.no_capability = true;
            }
        }
        got
    }

    /// A capability may be set on `ino` now: forget that it had none.
    pub(crate) fn capability_may_change(&self, ino: u64, key: &OsStr) {
        if key.as_bytes() == CAPABILITY.as_bytes() {
            if let Ok(node) = self.nodes().get_mut(ino) {
                node.no_capability = false;
            }
        }
    }

    /// The xattr names a caller may see: never the overlay's own, and `trusted.*` only
    /// for a `privileged` caller (overlayfs checks `CAP_SYS_ADMIN`; we see the uid).
    pub(crate) fn listxattr(&self, ino: u64, privileged: bool) -> io::Result<Vec<u8>> {
        let _tree = self.read_tree();
        let (_, dir, name) = self.real(ino)?;
        let mut out = Vec::new();
        let keys = match sys::list_xattrs(dir.as_fd(), &name) {
            Err(e) if e.raw_os_error() == Some(Errno::NOTSUP.raw_os_error()) => Vec::new(),
            keys => keys?,
        };
        for key in keys {
            let hidden = is_overlay_xattr(key.as_bytes()) || (!privileged && key.starts_with("trusted."));
            if !hidden {
                out.extend_from_slice(key.as_bytes());
                out.push(0);
            }
        }
        Ok(out)
    }

    pub(crate) fn statfs(&self) -> io::Result<rustix::fs::StatVfs> {
        let root = match self.layers.upper_root() {
            Ok(fd) => fd,
            Err(_) => self.layers.root(Place::Lower(0)),
        };
        let fd = rustix::fs::openat(root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(rustix::fs::fstatvfs(fd)?)
    }
}
