//! What the lower layers of a union show, read as overlayfs merges them: at each name
//! the top-most layer that has the name, or a whiteout for it (char 0/0 or `.wh.NAME`),
//! decides; a directory merges the same directory of the layers below it down to the
//! first opaque one, and a whiteout or a non-directory hides every layer below it.
//!
//! One reading for everything that asks "what did the lower layers hold here?": the
//! changes list (was a path there before?) and the diff walk below a redirect (what
//! does the mount show there?). Layer roots always merge, as in the kernel.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

use rustix::io::Errno;

use super::XattrNamespace;
use super::whiteout;
use crate::sys;

/// One layer's copy of a merged directory.
#[derive(Debug)]
pub struct LowerDir {
    /// The layer's index in the stack (0: top-most lower).
    pub layer: usize,
    /// The directory in that layer (`O_PATH`).
    pub dir: OwnedFd,
}

/// Whether the lower dirs `below` (one merged directory, top-most first) show `name`.
///
/// # Errors
/// A lookup fails other than with `ENOENT`.
pub fn shows(below: &[LowerDir], name: &OsStr) -> io::Result<bool> {
    for lower in below {
        match sys::lstat(lower.dir.as_fd(), name)? {
            Some(st) => return Ok(!whiteout::is_whiteout(&st)),
            None if has_aufs_whiteout(lower.dir.as_fd(), name)? => return Ok(false),
            None => {}
        }
    }
    Ok(false)
}

/// The copies of child directory `name` that the union merges below the merged
/// directory `below` (top-most first): down to the first opaque copy, a whiteout or a
/// non-directory.
///
/// # Errors
/// A lookup or an opaque-marker read fails other than with `ENOENT`.
pub fn child_dirs(below: &[LowerDir], name: &OsStr, ns: XattrNamespace) -> io::Result<Vec<LowerDir>> {
    let mut out = Vec::new();
    for lower in below {
        let dir = match sys::open_child_dir(lower.dir.as_fd(), name) {
            Ok(dir) => dir,
            Err(e) if sys::is_errno(&e, Errno::NOENT) => {
                if has_aufs_whiteout(lower.dir.as_fd(), name)? {
                    break;
                }
                continue;
            }
            // A file, device or symlink over the name (or a whiteout) hides what is below.
            Err(e) if sys::is_errno(&e, Errno::NOTDIR) || sys::is_errno(&e, Errno::LOOP) => break,
            Err(e) => return Err(e),
        };
        let opaque = whiteout::is_opaque(dir.as_fd(), OsStr::new(""), ns)?;
        out.push(LowerDir { layer: lower.layer, dir });
        if opaque {
            break;
        }
    }
    Ok(out)
}

/// The copies of directory `path` (layer-relative, no `..`) the union merges from the
/// layers `roots` (top-most first), walked one component at a time so that a higher
/// layer's whiteout, file or opaque directory on the way hides the layers below it.
///
/// # Errors
/// `path` holds a component other than a plain name, or a lookup fails other than with
/// `ENOENT`.
pub fn dirs_at(roots: &[OwnedFd], path: &Path, ns: XattrNamespace) -> io::Result<Vec<LowerDir>> {
    let mut dirs = (roots.iter().enumerate())
        .map(|(layer, root)| Ok(LowerDir { layer, dir: sys::open_dir_beneath(root.as_fd(), OsStr::new(""))? }))
        .collect::<io::Result<Vec<_>>>()?;
    for part in path.components() {
        let Component::Normal(name) = part else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a plain layer path"));
        };
        if dirs.is_empty() {
            break;
        }
        dirs = child_dirs(&dirs, name, ns)?;
    }
    Ok(dirs)
}

fn has_aufs_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    Ok(sys::lstat(dir, &whiteout::aufs_whiteout(name))?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A layer dir holding `entries`: a path ending in `/` is a dir, any other a file.
    fn layer(root: &Path, entries: &[&str]) -> OwnedFd {
        std::fs::create_dir_all(root).expect("mkdir");
        for entry in entries {
            match entry.strip_suffix('/') {
                Some(dir) => std::fs::create_dir_all(root.join(dir)).expect("mkdir"),
                None => std::fs::write(root.join(entry), b"x").expect("write"),
            }
        }
        sys::open_dir_nofollow(root).expect("open layer")
    }

    fn layers_at(roots: &[OwnedFd], path: &str) -> Vec<usize> {
        let dirs = dirs_at(roots, &PathBuf::from(path), XattrNamespace::native()).expect("dirs_at");
        dirs.iter().map(|d| d.layer).collect()
    }

    #[test]
    fn whiteouts_files_and_opaque_dirs_hide_what_is_below_them() {
        let t = tempfile::tempdir().expect("tempdir");
        let roots = [
            layer(
                &t.path().join("0"),
                &["merged/a/", ".wh.gone", "file", "opaque/", "opaque/.wh..wh..opq", "opaque/in/", "merged/.wh.b"],
            ),
            layer(&t.path().join("1"), &["merged/a/x/", "gone/a/", "file/a/", "opaque/in/", "merged/b/"]),
            layer(&t.path().join("2"), &["merged/a/x/", "only-here/"]),
        ];
        assert_eq!(layers_at(&roots, ""), [0, 1, 2]);
        assert_eq!(layers_at(&roots, "merged/a"), [0, 1, 2]);
        assert_eq!(layers_at(&roots, "merged/a/x"), [1, 2]);
        // Layer 0's `.wh.gone` hides layer 1's `gone/a` even though layer 1 has the path.
        assert_eq!(layers_at(&roots, "gone/a"), Vec::<usize>::new());
        // Layer 0's file `file` hides layer 1's directory of that name.
        assert_eq!(layers_at(&roots, "file/a"), Vec::<usize>::new());
        // Layer 0's opaque `opaque` hides layer 1's `opaque/in` below it.
        assert_eq!(layers_at(&roots, "opaque/in"), [0]);
        assert_eq!(layers_at(&roots, "merged/b"), Vec::<usize>::new());
        assert_eq!(layers_at(&roots, "only-here"), [2]);

        let merged = dirs_at(&roots, Path::new("merged"), XattrNamespace::native()).expect("merged");
        assert!(shows(&merged, OsStr::new("a")).expect("a"));
        assert!(!shows(&merged, OsStr::new("b")).expect("b"), "whited out in the tar form above");
        assert!(!shows(&merged, OsStr::new("c")).expect("c"));
        assert!(dirs_at(&roots, Path::new("../x"), XattrNamespace::native()).is_err());
    }
}
