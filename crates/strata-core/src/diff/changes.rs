//! What a container changed, as `docker diff` lists it: `A` added, `C` changed, `D`
//! deleted, one path per line. The upper dir says what was touched; the lower layers
//! say whether a touched path existed before (`C`) or not (`A`).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::DiffOptions;
use crate::ovl::whiteout;
use crate::sys;
use crate::{Error, Result};

/// The kind of one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// `A`: not in the lower layers.
    Added,
    /// `C`: in the lower layers, changed or with changed contents.
    Changed,
    /// `D`: deleted.
    Deleted,
}

impl ChangeKind {
    /// `A`, `C` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One changed path (relative to the union root).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// The path.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// The changes of upper dir `upper` over `lowers` (top-most first), in path order.
///
/// # Errors
/// A directory cannot be read.
pub fn changes(upper: &Path, lowers: &[PathBuf], options: &DiffOptions) -> Result<Vec<Change>> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    let lowers: Vec<OwnedFd> =
        lowers.iter().map(|l| sys::open_dir_nofollow(l).map_err(io("open lower layer", l))).collect::<Result<_>>()?;
    let root = sys::open_dir_nofollow(upper).map_err(io("open upper dir", upper))?;
    let mut out = Vec::new();
    let mut stack: Vec<(OwnedFd, PathBuf, bool)> = vec![(root, PathBuf::new(), false)];
    while let Some((dir, rel, opaque_above)) = stack.pop() {
        let here = upper.join(&rel);
        let readable = sys::open_child_dir_readable(dir.as_fd(), OsStr::new("")).map_err(io("open dir", &here))?;
        for name in sys::list_dir(readable.as_fd()).map_err(io("list dir", &here))? {
            if name.as_bytes().starts_with(whiteout::AUFS_META_PREFIX) {
                continue; // `.wh..wh..opq` and AUFS bookkeeping
            }
            if let Some(target) = whiteout::whited_out_name(&name) {
                out.push(Change { path: rel.join(target), kind: ChangeKind::Deleted });
                continue;
            }
            let path = rel.join(&name);
            if options.exclude.iter().any(|x| path.starts_with(x)) {
                continue;
            }
            let st = sys::lstat(dir.as_fd(), &name).map_err(io("stat", &upper.join(&path)))?;
            let Some(st) = st else { continue };
            if whiteout::is_whiteout(&st) {
                out.push(Change { path, kind: ChangeKind::Deleted });
                continue;
            }
            let existed = !opaque_above && in_lowers(&lowers, &path, options.xattrs);
            out.push(Change {
                path: path.clone(),
                kind: if existed { ChangeKind::Changed } else { ChangeKind::Added },
            });
            if sys::is_dir(&st) {
                let child = sys::open_child_dir(dir.as_fd(), &name).map_err(io("open dir", &upper.join(&path)))?;
                let opaque = whiteout::is_opaque(child.as_fd(), OsStr::new(""), options.xattrs)
                    .map_err(io("read opaque marker", &upper.join(&path)))?;
                stack.push((child, path, opaque_above || opaque || !existed));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether the lower layers show `path`: the top-most layer that has it, or a whiteout
/// for it, decides.
fn in_lowers(lowers: &[OwnedFd], path: &Path, ns: crate::ovl::XattrNamespace) -> bool {
    let name = path.file_name().unwrap_or_default();
    let parent = path.parent().unwrap_or(Path::new(""));
    for layer in lowers {
        let Ok(dir) = sys::open_dir_beneath(layer.as_fd(), parent.as_os_str()) else { continue };
        match sys::lstat(dir.as_fd(), name) {
            Ok(Some(st)) => return !whiteout::is_whiteout(&st),
            Ok(None) => {
                if sys::lstat(dir.as_fd(), &whiteout::aufs_whiteout(name)).ok().flatten().is_some() {
                    return false;
                }
                if whiteout::is_opaque(dir.as_fd(), OsStr::new(""), ns).unwrap_or(false) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    false
}
