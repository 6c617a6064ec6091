//! The walk of an upper dir that writes its layer: depth first, names in byte order,
//! every call fd-relative and never following a symlink.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Stat};

use super::{DiffOptions, DiffReport, path_too_long};
use crate::apply::meta::xattr_allowed;
use crate::ovl::lower::{self, LowerDir};
use crate::ovl::whiteout;
use crate::path::PATH_MAX;
use crate::sys;
use crate::tar::{Builder, Entry, EntryKind, Timestamp};
use crate::{Error, Result};

/// Writes the layer of the upper dir `upper` as an uncompressed tar to `out`.
///
/// # Errors
/// The upper dir cannot be read ([`Error::Io`] names the path), holds a redirected
/// directory ([`Error::Unrepresentable`]), or writing fails.
pub fn write_tar<W: Write + Send>(upper: &Path, options: &DiffOptions, out: W) -> Result<DiffReport> {
    // The walk recurses once per level. PATH_MAX bounds that to 2,048 levels, whose
    // frames need more than a spawned or tokio thread's 2 MiB (and, in a debug build,
    // the main thread's 8 MiB): walk on a thread whose stack fits them. The memory is
    // reserved, not touched, by a shallow walk.
    std::thread::scope(|scope| {
        let walker = std::thread::Builder::new()
            .name("strata-diff-walk".into())
            .stack_size(WALK_STACK)
            .spawn_scoped(scope, || walk_tar(upper, options, out))
            .map_err(io_err("start the diff walk", upper))?;
        walker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The walk thread's stack: 2,048 levels take 12–24 MiB in a debug build (measured with
/// `tests/commit.rs`'s deep tree), less in release.
const WALK_STACK: usize = 64 << 20;

fn walk_tar<W: Write>(upper: &Path, options: &DiffOptions, out: W) -> Result<DiffReport> {
    let root = sys::open_dir_nofollow(upper).map_err(io_err("open upper dir", upper))?;
    let mut walk = Walk {
        options,
        tar: Builder::new(out),
        report: DiffReport::default(),
        links: HashMap::new(),
        upper: upper.to_path_buf(),
        lower_roots: Vec::new(),
    };
    // A root made opaque (a layer that replaced everything) keeps its marker.
    if whiteout::is_opaque(root.as_fd(), OsStr::new(""), options.xattrs).map_err(io_err("read opaque marker", upper))? {
        let st =
            sys::lstat(root.as_fd(), OsStr::new("")).map_err(io_err("stat", upper))?.ok_or_else(|| vanished(upper))?;
        walk.opaque(&[], &st)?;
    }
    walk.dir(root.as_fd(), &mut Vec::new())?;
    walk.tar.finish().map_err(io_err("write layer", upper))?;
    Ok(walk.report)
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// Where an entry of a merged dir comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Upper,
    Lower(usize),
    Hidden,
}

/// How to go below a directory.
enum Descend {
    /// The upper dir only (the normal case: a layer holds changes).
    Upper,
    /// Below a redirect: everything the mount shows, merging the lower dir at `lower`.
    Merged { lower: PathBuf, upper: bool },
}

struct Walk<'a, W: Write> {
    options: &'a DiffOptions,
    tar: Builder<W>,
    report: DiffReport,
    /// (dev, ino) of multiply-linked files -> the layer path first written for them.
    links: HashMap<(u64, u64), Vec<u8>>,
    upper: PathBuf,
    /// The lower layers' roots, opened on the first redirect met (most walks meet none).
    lower_roots: Vec<OwnedFd>,
}

impl<W: Write> Walk<'_, W> {
    /// Writes the children of directory `dir`, at layer path `path` (bytes, no slashes
    /// at either end; empty for the root).
    fn dir(&mut self, dir: BorrowedFd<'_>, path: &mut Vec<u8>) -> Result<()> {
        let here = self.upper.join(OsStr::from_bytes(path));
        // Listed up front and closed: the walk holds one descriptor per level, `dir`.
        let readable = sys::open_child_dir_readable(dir, OsStr::new("")).map_err(io_err("open dir", &here))?;
        let mut names = sys::list_dir(readable.as_fd()).map_err(io_err("list dir", &here))?;
        drop(readable);
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let mark = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            let done = self.entry(dir, &name, path);
            path.truncate(mark);
            done?;
        }
        Ok(())
    }

    fn excluded(&self, path: &[u8]) -> bool {
        let path = Path::new(OsStr::from_bytes(path));
        self.options.exclude.iter().any(|x| path.starts_with(x))
    }

    fn entry(&mut self, dir: BorrowedFd<'_>, name: &OsString, path: &mut Vec<u8>) -> Result<()> {
        let full = self.upper.join(OsStr::from_bytes(path));
        let bytes = name.as_bytes();
        // The tar form of the overlay markers, as written on filesystems without xattrs.
        if bytes == whiteout::OPAQUE_MARKER {
            return Ok(()); // written after its dir's own entry
        }
        if let Some(target) = whiteout::whited_out_name(name) {
            let mut deleted = path[..path.len() - bytes.len()].to_vec();
            deleted.extend_from_slice(target.as_bytes());
            if self.excluded(&deleted) {
                return Ok(());
            }
            let st = sys::lstat(dir, name).map_err(io_err("stat", &full))?.ok_or_else(|| vanished(&full))?;
            return self.whiteout(path.clone(), &st);
        }
        if bytes.starts_with(whiteout::AUFS_META_PREFIX) {
            return Ok(()); // AUFS bookkeeping (`.wh..wh.plnk`, ...): never layer content
        }
        if self.excluded(path) {
            return Ok(());
        }
        let st = sys::lstat(dir, name).map_err(io_err("stat", &full))?.ok_or_else(|| vanished(&full))?;
        if whiteout::is_whiteout(&st) {
            let mut wh = path[..path.len() - bytes.len()].to_vec();
            wh.extend_from_slice(whiteout::WHITEOUT_PREFIX);
            wh.extend_from_slice(bytes);
            return self.whiteout(wh, &st);
        }
        self.emit(dir, name, path, &st, &full, Descend::Upper)
    }

    /// Writes one real entry (`name` in `dir`, stat `st`) and, for a directory, what is
    /// below it as `descend` says.
    fn emit(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &mut Vec<u8>,
        st: &Stat,
        full: &Path,
        descend: Descend,
    ) -> Result<()> {
        let mut entry = self.base_entry(path, st)?;
        entry.xattrs = self.xattrs(dir, name, full)?;
        match sys::file_type(st) {
            FileType::Directory => {
                let child = sys::open_child_dir(dir, name).map_err(io_err("open dir", full))?;
                entry.kind = EntryKind::Dir;
                self.append(&entry, &[])?;
                let opaque = whiteout::is_opaque(child.as_fd(), OsStr::new(""), self.options.xattrs)
                    .map_err(io_err("read opaque marker", full))?;
                match descend {
                    Descend::Upper => {
                        let parent = Path::new(OsStr::from_bytes(path)).parent().unwrap_or(Path::new(""));
                        let redirect =
                            crate::ovl::redirect::read(child.as_fd(), OsStr::new(""), self.options.xattrs, parent)
                                .map_err(io_err("read redirect", full))?;
                        match redirect {
                            // A dir moved with redirect_dir: its lower contents are at the
                            // target. The layer makes the new path opaque and writes the
                            // whole merged dir there.
                            Some(target) if !opaque => {
                                self.opaque(path, st)?;
                                self.merged_dir(Some(child.as_fd()), &target.path, path, full)
                            }
                            _ => {
                                if opaque {
                                    self.opaque(path, st)?;
                                }
                                self.dir(child.as_fd(), path)
                            }
                        }
                    }
                    // Below a redirect everything is written out: an upper dir merges the
                    // lower dir at its lower path (unless opaque), a lower dir the layers below.
                    Descend::Merged { lower, upper: true } => {
                        let redirect = crate::ovl::redirect::read(
                            child.as_fd(),
                            OsStr::new(""),
                            self.options.xattrs,
                            lower.parent().unwrap_or(Path::new("")),
                        )
                        .map_err(io_err("read redirect", full))?;
                        let lower = redirect.map_or(lower, |t| t.path);
                        if opaque {
                            self.dir_merged_upper_only(child.as_fd(), path, full)
                        } else {
                            self.merged_dir(Some(child.as_fd()), &lower, path, full)
                        }
                    }
                    Descend::Merged { lower, upper: false } => self.merged_dir(None, &lower, path, full),
                }
            }
            FileType::RegularFile => self.file(dir, name, full, entry, st),
            FileType::Symlink => {
                let target = sys::read_link(dir, name).map_err(io_err("read link", full))?;
                entry.kind = EntryKind::Symlink;
                entry.link = Some(target.as_bytes().to_vec());
                self.append(&entry, &[])
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let char = sys::file_type(st) == FileType::CharacterDevice;
                entry.kind = if char { EntryKind::CharDevice } else { EntryKind::BlockDevice };
                entry.device = (u64::from(rustix::fs::major(st.st_rdev)), u64::from(rustix::fs::minor(st.st_rdev)));
                self.append(&entry, &[])
            }
            FileType::Fifo => {
                entry.kind = EntryKind::Fifo;
                self.append(&entry, &[])
            }
            _ => {
                // Sockets (and anything unknown) cannot be in a tar; overlayfs diffs skip them too.
                self.report.skipped += 1;
                Ok(())
            }
        }
    }

    /// An opaque upper dir below a redirect: only its own entries, written out.
    fn dir_merged_upper_only(&mut self, dir: BorrowedFd<'_>, path: &mut Vec<u8>, full: &Path) -> Result<()> {
        self.merged_children(Some(dir), None, path, full)
    }

    /// The children of a dir whose lower contents (at `lower` in the lower layers) are
    /// written too, merged with `upper`'s as a mount shows them.
    fn merged_dir(
        &mut self,
        upper: Option<BorrowedFd<'_>>,
        lower: &Path,
        path: &mut Vec<u8>,
        full: &Path,
    ) -> Result<()> {
        if self.options.lowers.is_empty() {
            return Err(Error::Unrepresentable {
                path: full.to_path_buf(),
                reason: "a directory moved with redirect_dir keeps its lower contents elsewhere: \
                         writing its layer needs the lower layers (DiffOptions::lowers)"
                    .into(),
            });
        }
        self.merged_children(upper, Some(lower), path, full)
    }

    fn merged_children(
        &mut self,
        upper: Option<BorrowedFd<'_>>,
        lower: Option<&Path>,
        path: &mut Vec<u8>,
        full: &Path,
    ) -> Result<()> {
        // name -> where it comes from; the top-most layer decides, whiteouts hide.
        let mut names: BTreeMap<Vec<u8>, Source> = BTreeMap::new();
        if let Some(dir) = upper {
            let readable = sys::open_child_dir_readable(dir, OsStr::new("")).map_err(io_err("open dir", full))?;
            for name in sys::list_dir(readable.as_fd()).map_err(io_err("list dir", full))? {
                let bytes = name.as_bytes();
                if let Some(target) = whiteout::whited_out_name(&name) {
                    names.entry(target.as_bytes().to_vec()).or_insert(Source::Hidden);
                } else if !bytes.starts_with(whiteout::AUFS_META_PREFIX) {
                    let st = sys::lstat(dir, &name).map_err(io_err("stat", full))?.ok_or_else(|| vanished(full))?;
                    let source = if whiteout::is_whiteout(&st) { Source::Hidden } else { Source::Upper };
                    names.insert(bytes.to_vec(), source);
                }
            }
        }
        let lower_dirs = match lower {
            Some(lower) => self.lower_dirs(lower, full)?,
            None => Vec::new(),
        };
        for LowerDir { layer, dir } in &lower_dirs {
            let readable =
                sys::open_child_dir_readable(dir.as_fd(), OsStr::new("")).map_err(io_err("open lower dir", full))?;
            for name in sys::list_dir(readable.as_fd()).map_err(io_err("list lower dir", full))? {
                let bytes = name.as_bytes();
                if let Some(target) = whiteout::whited_out_name(&name) {
                    names.entry(target.as_bytes().to_vec()).or_insert(Source::Hidden);
                } else if !bytes.starts_with(whiteout::AUFS_META_PREFIX) && !names.contains_key(bytes) {
                    let st = sys::lstat(dir.as_fd(), &name).map_err(io_err("stat", full))?;
                    let hidden = st.as_ref().is_none_or(whiteout::is_whiteout);
                    names.insert(bytes.to_vec(), if hidden { Source::Hidden } else { Source::Lower(*layer) });
                }
            }
        }
        for (name, source) in names {
            let mark = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            let name = OsStr::from_bytes(&name);
            let child_full = full.join(name);
            let done = match source {
                Source::Hidden => Ok(()),
                _ if self.excluded(path) => Ok(()),
                Source::Upper => {
                    let dir = upper.expect("upper entries come from an upper dir");
                    let st = sys::lstat(dir, name)
                        .map_err(io_err("stat", &child_full))?
                        .ok_or_else(|| vanished(&child_full))?;
                    let lower = lower.map_or_else(PathBuf::new, |l| l.join(name));
                    self.emit(dir, name, path, &st, &child_full, Descend::Merged { lower, upper: true })
                }
                Source::Lower(layer) => {
                    let dir = &lower_dirs.iter().find(|d| d.layer == layer).expect("listed above").dir;
                    let st = sys::lstat(dir.as_fd(), name)
                        .map_err(io_err("stat", &child_full))?
                        .ok_or_else(|| vanished(&child_full))?;
                    let lower = lower.map_or_else(PathBuf::new, |l| l.join(name));
                    self.emit(dir.as_fd(), name, path, &st, &child_full, Descend::Merged { lower, upper: false })
                }
            };
            path.truncate(mark);
            done?;
        }
        Ok(())
    }

    /// The lower layers' copies of dir `lower` (top-most first) that a mount merges.
    fn lower_dirs(&mut self, lower: &Path, full: &Path) -> Result<Vec<LowerDir>> {
        if self.lower_roots.is_empty() {
            self.lower_roots = (self.options.lowers.iter())
                .map(|root| sys::open_dir_nofollow(root).map_err(io_err("open lower layer", root)))
                .collect::<Result<_>>()?;
        }
        lower::dirs_at(&self.lower_roots, lower, self.options.xattrs).map_err(io_err("read lower layers at", full))
    }

    fn file(&mut self, dir: BorrowedFd<'_>, name: &OsStr, full: &Path, mut entry: Entry, st: &Stat) -> Result<()> {
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                entry.kind = EntryKind::Hardlink;
                entry.link = Some(first.clone());
                self.report.hardlinks += 1;
                return self.append(&entry, &[]);
            }
            self.links.insert(key, entry.path.clone());
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let mut file = sys::open_file_nofollow(dir, name).map_err(io_err("open file", full))?;
        self.tar.append_reader(&entry, size, &mut file).map_err(io_err("archive file", full))?;
        self.report.entries += 1;
        self.report.data_bytes += size;
        Ok(())
    }

    /// The entry at layer path `path` with `st`'s owner, mode and mtime. Every entry
    /// passes here before its directory is descended, so the path bound also bounds the
    /// walk's depth (and with it its stack and descriptors).
    fn base_entry(&self, path: &[u8], st: &Stat) -> Result<Entry> {
        if path.len() >= PATH_MAX {
            return Err(path_too_long(path));
        }
        let (_, mut mtime) = sys::stat_times(st);
        if let Some(epoch) = self.options.source_date_epoch {
            if mtime.secs >= epoch {
                mtime = Timestamp { secs: epoch, nanos: 0 };
            }
        }
        Ok(Entry {
            index: 0,
            offset: 0,
            path: path.to_vec(),
            kind: EntryKind::File,
            link: None,
            mode: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            mtime,
            atime: None,
            size: 0,
            device: (0, 0),
            xattrs: Vec::new(),
            sparse: None,
        })
    }

    /// The xattrs a layer may carry, sorted by key.
    fn xattrs(&self, dir: BorrowedFd<'_>, name: &OsStr, full: &Path) -> Result<Vec<(String, Vec<u8>)>> {
        let keys = match sys::list_xattrs(dir, name) {
            Ok(keys) => keys,
            Err(e) if whiteout::xattr_unsupported(&e) => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list xattrs", full)(e)),
        };
        let mut out = Vec::new();
        for key in keys.into_iter().filter(|k| xattr_allowed(k)) {
            if let Some(value) = sys::get_xattr(dir, name, &key).map_err(io_err("read xattr", full))? {
                out.push((key, value));
            }
        }
        out.sort();
        Ok(out)
    }

    /// `.wh.NAME` (layer path `wh`), with the owner and time of the whiteout node.
    fn whiteout(&mut self, wh: Vec<u8>, st: &Stat) -> Result<()> {
        let mut entry = self.base_entry(&wh, st)?;
        entry.mode = 0;
        self.report.whiteouts += 1;
        self.append(&entry, &[])
    }

    /// `DIR/.wh..wh..opq` for the opaque dir `dir`.
    fn opaque(&mut self, dir: &[u8], st: &Stat) -> Result<()> {
        let mut marker = dir.to_vec();
        if !marker.is_empty() {
            marker.push(b'/');
        }
        marker.extend_from_slice(whiteout::OPAQUE_MARKER);
        let mut entry = self.base_entry(&marker, st)?;
        (entry.mode, entry.uid, entry.gid) = (0, 0, 0);
        self.report.opaque_dirs += 1;
        self.append(&entry, &[])
    }

    fn append(&mut self, entry: &Entry, data: &[u8]) -> Result<()> {
        self.tar.append(entry, data).map_err(io_err("write layer", &self.upper))?;
        self.report.entries += 1;
        Ok(())
    }
}

fn vanished(path: &Path) -> Error {
    Error::Io { op: "stat", path: path.to_path_buf(), source: std::io::Error::from(std::io::ErrorKind::NotFound) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovl::XattrNamespace;
    use crate::tar::Reader;

    fn paths_in(layer: &[u8]) -> Vec<String> {
        let mut reader = Reader::new(layer, "none");
        let mut out = Vec::new();
        while let Some(entry) = reader.next_entry().expect("read back") {
            out.push(String::from_utf8_lossy(&entry.path).into_owned());
        }
        out
    }

    /// Regression: below a redirect the walk opened the target path in every lower layer
    /// and merged them all, showing files a higher layer's opaque dir or whiteout hides.
    #[test]
    fn a_redirected_dir_carries_only_what_the_lower_layers_show() {
        let t = tempfile::tempdir().expect("tempdir");
        let mk = |rel: &str| std::fs::create_dir_all(t.path().join(rel)).expect("mkdir");
        let touch = |rel: &str| std::fs::write(t.path().join(rel), b"x").expect("write");
        // Lower 0 makes `a` opaque: lower 1's `a/d/hidden` is gone from the union.
        mk("lower0/a/d");
        touch("lower0/a/.wh..wh..opq");
        touch("lower0/a/d/shown");
        mk("lower1/a/d");
        touch("lower1/a/d/hidden");
        // Lower 0 whites out `b`: lower 1's `b/d/hidden` is gone too.
        touch("lower0/.wh.b");
        mk("lower1/b/d");
        touch("lower1/b/d/hidden");
        mk("upper/moved-a");
        mk("upper/moved-b");
        let ns = XattrNamespace::User;
        let upper = sys::open_dir_nofollow(&t.path().join("upper")).expect("open upper");
        for (name, target) in [("moved-a", "a/d"), ("moved-b", "b/d")] {
            crate::ovl::redirect::write(upper.as_fd(), OsStr::new(name), ns, Path::new(target)).expect("redirect");
        }
        let options = DiffOptions {
            xattrs: ns,
            lowers: vec![t.path().join("lower0"), t.path().join("lower1")],
            ..DiffOptions::default()
        };
        let mut layer = Vec::new();
        write_tar(&t.path().join("upper"), &options, &mut layer).expect("diff");
        assert_eq!(
            paths_in(&layer),
            ["moved-a", "moved-a/.wh..wh..opq", "moved-a/shown", "moved-b", "moved-b/.wh..wh..opq"]
        );
    }
}
