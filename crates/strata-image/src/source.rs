//! Where an image's files come from: a directory (OCI layout, extracted docker save) or
//! a tar archive of one. Paths are resolved inside the image only: a directory is opened
//! like a chroot (`RESOLVE_IN_ROOT`), an archive's symlinks are resolved against the
//! archive's own members and may never climb above its root.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use strata_core::path::LayerPath;
use strata_core::sys;
use strata_core::tar::{EntryKind, Reader};

use crate::error::{Error, Result};

/// Largest JSON document read (index.json, manifests, configs): a hostile image must not
/// make us allocate without bound.
pub const MAX_JSON: u64 = 20 * 1024 * 1024;

/// A file of the image, ready to stream.
pub type BlobReader = Box<dyn Read + Send>;

/// An image directory or archive.
#[derive(Debug)]
pub enum Source {
    /// A directory, opened once.
    Dir { path: PathBuf, root: OwnedFd },
    /// A tar archive and its member index.
    Archive { path: PathBuf, members: HashMap<LayerPath, Member> },
}

/// An archive member.
#[derive(Debug, Clone)]
pub enum Member {
    /// A regular file: its data's offset and size in the archive.
    File { offset: u64, size: u64 },
    /// A symlink (target relative to the member's directory) or hard link (archive path).
    Link { target: Vec<u8>, hard: bool },
    /// A directory.
    Dir,
}

impl Source {
    /// Opens `path`: a directory, or a tar archive (indexed once, plain tar only).
    ///
    /// # Errors
    /// The path cannot be opened, or the archive is not a valid tar.
    pub fn new(path: &Path) -> Result<Source> {
        let io_err = |source| Error::Io { image: path.to_owned(), what: "the image path".into(), source };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            let root = sys::open_dir_path(path).map_err(io_err)?;
            return Ok(Source::Dir { path: path.to_owned(), root });
        }
        let file = File::open(path).map_err(io_err)?;
        let mut head = [0u8; 4];
        let n = (&file).read(&mut head).map_err(io_err)?;
        let compression = strata_core::Compression::sniff(&head[..n]);
        if compression != strata_core::Compression::None {
            return Err(Error::NotAnImage {
                image: path.to_owned(),
                reason: format!(
                    "the archive is {compression}-compressed; decompress it first (image archives are plain tar)"
                ),
            });
        }
        (&file).seek(SeekFrom::Start(0)).map_err(io_err)?;
        let members = index_archive(file).map_err(|source| Error::Archive { image: path.to_owned(), source })?;
        Ok(Source::Archive { path: path.to_owned(), members })
    }

    /// The path the user gave.
    pub fn path(&self) -> &Path {
        match self {
            Source::Dir { path, .. } | Source::Archive { path, .. } => path,
        }
    }

    fn not_found(&self, what: &str, rel: &str) -> Error {
        Error::Io {
            image: self.path().to_owned(),
            what: format!("{what} ({rel})"),
            source: io::Error::from(io::ErrorKind::NotFound),
        }
    }

    /// Whether the image holds file `rel`.
    pub fn exists(&self, rel: &str) -> bool {
        self.open_file(rel, rel).is_ok()
    }

    /// Opens file `rel` (a path inside the image), with its size.
    ///
    /// # Errors
    /// The path is invalid (`..`, absolute), absent, escapes the image, or unreadable.
    pub fn open_file(&self, rel: &str, what: &str) -> Result<(BlobReader, u64)> {
        let path = LayerPath::parse(rel.as_bytes()).map_err(|reason| Error::Invalid {
            image: self.path().to_owned(),
            what: format!("path {rel:?} of {what}"),
            reason,
        })?;
        match self {
            Source::Dir { path: image, root } => {
                let io_err = |source| Error::Io { image: image.clone(), what: format!("{what} ({rel})"), source };
                let file = sys::open_file_in_root(root.as_fd(), path.as_os_str()).map_err(io_err)?;
                let size = file.metadata().map_err(io_err)?.len();
                Ok((Box::new(file), size))
            }
            Source::Archive { path: image, members } => {
                let (offset, size) = resolve(members, path, 0).ok_or_else(|| self.not_found(what, rel))?;
                let io_err = |source| Error::Io { image: image.clone(), what: format!("{what} ({rel})"), source };
                let mut file = File::open(image).map_err(io_err)?;
                file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
                Ok((Box::new(BufReader::with_capacity(256 * 1024, file).take(size)), size))
            }
        }
    }

    /// Reads a small file (JSON), refusing more than [`MAX_JSON`] bytes.
    ///
    /// # Errors
    /// As [`Source::open_file`], or the file is too large.
    pub fn read_json_bytes(&self, rel: &str, what: &str) -> Result<Vec<u8>> {
        let (reader, size) = self.open_file(rel, what)?;
        if size > MAX_JSON {
            return Err(Error::Invalid {
                image: self.path().to_owned(),
                what: what.to_owned(),
                reason: format!("{size} bytes exceeds the {MAX_JSON}-byte limit for JSON documents"),
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        reader.take(MAX_JSON + 1).read_to_end(&mut bytes).map_err(|source| Error::Io {
            image: self.path().to_owned(),
            what: what.to_owned(),
            source,
        })?;
        Ok(bytes)
    }
}

/// Follows archive links (at most 40, like the kernel) to a regular file.
fn resolve(members: &HashMap<LayerPath, Member>, path: LayerPath, depth: u32) -> Option<(u64, u64)> {
    if depth > 40 {
        return None;
    }
    match members.get(&path)? {
        Member::File { offset, size } => Some((*offset, *size)),
        Member::Dir => None,
        Member::Link { target, hard: true } => resolve(members, LayerPath::parse(target).ok()?, depth + 1),
        Member::Link { target, hard: false } => {
            let base = path.split_last().map(|(parent, _)| parent).unwrap_or_else(LayerPath::root);
            resolve(members, join_inside(&base, target)?, depth + 1)
        }
    }
}

/// `base/target` normalised, `None` when it climbs above the archive root or is absolute.
fn join_inside(base: &LayerPath, target: &[u8]) -> Option<LayerPath> {
    if target.first() == Some(&b'/') {
        return None;
    }
    let mut parts: Vec<&[u8]> = base.as_bytes().split(|&b| b == b'/').filter(|p| !p.is_empty()).collect();
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    LayerPath::parse(&parts.join(&b'/')).ok()
}

fn index_archive(file: File) -> strata_core::Result<HashMap<LayerPath, Member>> {
    let mut reader = Reader::new(BufReader::with_capacity(64 * 1024, file), "plain");
    let mut members = HashMap::new();
    while let Some(entry) = reader.next_entry()? {
        let Ok(path) = LayerPath::parse(&entry.path) else {
            // A member we can never name: ignore it (paths we open are validated too).
            continue;
        };
        let member = match entry.kind {
            EntryKind::File => Member::File { offset: reader.offset(), size: entry.size },
            EntryKind::Dir => Member::Dir,
            EntryKind::Symlink | EntryKind::Hardlink => {
                Member::Link { target: entry.link.clone().unwrap_or_default(), hard: entry.kind == EntryKind::Hardlink }
            }
            _ => continue,
        };
        members.insert(path, member);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(s: &str) -> LayerPath {
        LayerPath::parse(s.as_bytes()).expect("path")
    }

    #[test]
    fn archive_links_stay_inside() {
        for (base, target, want) in [
            ("a", "../b/layer.tar", Some("b/layer.tar")),
            ("a/b", "../../c", Some("c")),
            ("a", "../../etc/passwd", None),
            ("", "../x", None),
            ("a", "/etc/passwd", None),
            ("a", "./x", Some("a/x")),
        ] {
            assert_eq!(join_inside(&lp(base), target.as_bytes()), want.map(lp), "{base} + {target}");
        }
    }
}
