//! The walk of an upper dir that writes its layer: depth first, names in byte order,
//! every call fd-relative and never following a symlink.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Stat};

use super::{DiffOptions, DiffReport};
use crate::apply::meta::xattr_allowed;
use crate::ovl::whiteout;
use crate::sys;
use crate::tar::{Builder, Entry, EntryKind, Timestamp};
use crate::{Error, Result};

/// Writes the layer of the upper dir `upper` as an uncompressed tar to `out`.
///
/// # Errors
/// The upper dir cannot be read ([`Error::Io`] names the path), holds a redirected
/// directory ([`Error::Unrepresentable`]), or writing fails.
pub fn write_tar<W: Write>(upper: &Path, options: &DiffOptions, out: W) -> Result<DiffReport> {
    let root = sys::open_dir_nofollow(upper).map_err(io_err("open upper dir", upper))?;
    let mut walk = Walk {
        options,
        tar: Builder::new(out),
        report: DiffReport::default(),
        links: HashMap::new(),
        upper: upper.to_path_buf(),
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

struct Walk<'a, W: Write> {
    options: &'a DiffOptions,
    tar: Builder<W>,
    report: DiffReport,
    /// (dev, ino) of multiply-linked files -> the layer path first written for them.
    links: HashMap<(u64, u64), Vec<u8>>,
    upper: PathBuf,
}

impl<W: Write> Walk<'_, W> {
    /// Writes the children of directory `dir`, at layer path `path` (bytes, no slashes
    /// at either end; empty for the root).
    fn dir(&mut self, dir: BorrowedFd<'_>, path: &mut Vec<u8>) -> Result<()> {
        let here = self.upper.join(OsStr::from_bytes(path));
        let readable = sys::open_child_dir_readable(dir, OsStr::new("")).map_err(io_err("open dir", &here))?;
        let mut names = sys::list_dir(readable.as_fd()).map_err(io_err("list dir", &here))?;
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
        let mut entry = self.base_entry(path, &st);
        entry.xattrs = self.xattrs(dir, name, &full)?;
        match sys::file_type(&st) {
            FileType::Directory => {
                let child = sys::open_child_dir(dir, name).map_err(io_err("open dir", &full))?;
                if crate::ovl::redirect::read(child.as_fd(), OsStr::new(""), self.options.xattrs, Path::new(""))
                    .map_err(io_err("read redirect", &full))?
                    .is_some()
                {
                    return Err(Error::Unrepresentable {
                        path: full,
                        reason: "a directory moved with redirect_dir keeps its lower contents elsewhere; \
                                 a layer of it needs the lower layers (not supported yet)"
                            .into(),
                    });
                }
                entry.kind = EntryKind::Dir;
                self.append(&entry, &[])?;
                if whiteout::is_opaque(child.as_fd(), OsStr::new(""), self.options.xattrs)
                    .map_err(io_err("read opaque marker", &full))?
                {
                    self.opaque(path, &st)?;
                }
                self.dir(child.as_fd(), path)
            }
            FileType::RegularFile => self.file(dir, name, &full, entry, &st),
            FileType::Symlink => {
                let target = sys::read_link(dir, name).map_err(io_err("read link", &full))?;
                entry.kind = EntryKind::Symlink;
                entry.link = Some(target.as_bytes().to_vec());
                self.append(&entry, &[])
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let char = sys::file_type(&st) == FileType::CharacterDevice;
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

    fn base_entry(&self, path: &[u8], st: &Stat) -> Entry {
        let (_, mut mtime) = sys::stat_times(st);
        if let Some(epoch) = self.options.source_date_epoch {
            if mtime.secs >= epoch {
                mtime = Timestamp { secs: epoch, nanos: 0 };
            }
        }
        Entry {
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
        }
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
        let mut entry = self.base_entry(&wh, st);
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
        let mut entry = self.base_entry(&marker, st);
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
