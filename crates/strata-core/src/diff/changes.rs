//! What a container changed, as `docker diff` lists it: `A` added, `C` changed, `D`
//! deleted, one path per line. The upper dir says what was touched; the lower layers
//! say whether a touched path existed before (`C`) or not (`A`).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{DiffOptions, path_too_long};
use crate::ovl::lower::{self, LowerDir};
use crate::ovl::whiteout;
use crate::path::PATH_MAX;
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
    // Pending dirs travel as paths with the lower layers the union shows beneath them
    // (by index), not as open fds: a wide tree must not hold a descriptor per pending
    // dir. Each visit opens its dirs beneath their roots (no symlink followed) once,
    // and its entries are looked up by name in them.
    let mut stack: Vec<(PathBuf, Vec<usize>)> = vec![(PathBuf::new(), (0..lowers.len()).collect())];
    while let Some((rel, shown)) = stack.pop() {
        let here = upper.join(&rel);
        let dir = sys::open_dir_beneath(root.as_fd(), rel.as_os_str()).map_err(io("open dir", &here))?;
        let readable = sys::open_child_dir_readable(dir.as_fd(), OsStr::new("")).map_err(io("open dir", &here))?;
        // A lower dir gone since its parent was read shows nothing.
        let below: Vec<LowerDir> = shown
            .into_iter()
            .filter_map(|layer| {
                sys::open_dir_beneath(lowers[layer].as_fd(), rel.as_os_str()).ok().map(|dir| LowerDir { layer, dir })
            })
            .collect();
        for name in sys::list_dir(readable.as_fd()).map_err(io("list dir", &here))? {
            if name.as_bytes().starts_with(whiteout::AUFS_META_PREFIX) {
                continue; // `.wh..wh..opq` and AUFS bookkeeping
            }
            if let Some(target) = whiteout::whited_out_name(&name) {
                out.push(Change { path: rel.join(target), kind: ChangeKind::Deleted });
                continue;
            }
            let path = rel.join(&name);
            if path.as_os_str().len() >= PATH_MAX {
                return Err(path_too_long(path.as_os_str().as_bytes()));
            }
            if options.exclude.iter().any(|x| path.starts_with(x)) {
                continue;
            }
            let full = upper.join(&path);
            let st = sys::lstat(dir.as_fd(), &name).map_err(io("stat", &full))?;
            let Some(st) = st else { continue };
            if whiteout::is_whiteout(&st) {
                out.push(Change { path, kind: ChangeKind::Deleted });
                continue;
            }
            let existed = lower::shows(&below, &name).map_err(io("read lower layers at", &full))?;
            out.push(Change {
                path: path.clone(),
                kind: if existed { ChangeKind::Changed } else { ChangeKind::Added },
            });
            if sys::is_dir(&st) {
                let child = sys::open_child_dir(dir.as_fd(), &name).map_err(io("open dir", &full))?;
                let opaque = whiteout::is_opaque(child.as_fd(), OsStr::new(""), options.xattrs)
                    .map_err(io("read opaque marker", &full))?;
                let shown = if opaque {
                    Vec::new()
                } else {
                    let dirs =
                        lower::child_dirs(&below, &name, options.xattrs).map_err(io("read lower layers at", &full))?;
                    dirs.into_iter().map(|d| d.layer).collect()
                };
                stack.push((path, shown));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer dir holding `entries`: a path ending in `/` is a dir, any other a file.
    fn layer(root: &Path, entries: &[&str]) -> PathBuf {
        std::fs::create_dir_all(root).expect("mkdir");
        for entry in entries {
            match entry.strip_suffix('/') {
                Some(dir) => std::fs::create_dir_all(root.join(dir)).expect("mkdir"),
                None => std::fs::write(root.join(entry), b"x").expect("write"),
            }
        }
        root.to_path_buf()
    }

    #[test]
    fn a_lower_dir_hidden_by_a_higher_layer_shows_nothing_beneath_it() {
        let t = tempfile::tempdir().expect("tempdir");
        // Lower `top` hides `bottom`'s dir `file-over-dir` with a file, `gone` with a
        // whiteout and `opaque`'s contents with an opaque marker.
        let top = layer(
            &t.path().join("top"),
            &["file-over-dir", ".wh.gone", "opaque/", "opaque/.wh..wh..opq", "merged/", "merged/t"],
        );
        let bottom = layer(
            &t.path().join("bottom"),
            &["file-over-dir/", "file-over-dir/x", "gone/", "gone/x", "opaque/", "opaque/x", "merged/", "merged/b"],
        );
        let upper = layer(
            &t.path().join("upper"),
            &[
                "file-over-dir/",
                "file-over-dir/x",
                "gone/",
                "gone/x",
                "opaque/",
                "opaque/x",
                "merged/",
                "merged/b",
                "merged/t",
                "merged/n",
            ],
        );
        let listed = changes(&upper, &[top, bottom], &DiffOptions::default()).expect("changes");
        let letters: Vec<String> = listed.iter().map(|c| format!("{} {}", c.kind.letter(), c.path.display())).collect();
        assert_eq!(
            letters,
            [
                "C file-over-dir",
                "A file-over-dir/x",
                "A gone",
                "A gone/x",
                "C merged",
                "C merged/b",
                "A merged/n",
                "C merged/t",
                "C opaque",
                "A opaque/x",
            ]
        );
    }
}
