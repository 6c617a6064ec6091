//! The lower layers of an overlay-form apply (parents, nearest first), read the way
//! overlayfs reads them: a char 0/0 hides the path, a non-directory hides everything
//! below it, an opaque directory hides the same path in the layers beneath.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::ovl::{XattrNamespace, whiteout};
use crate::path::LayerPath;
use crate::sys::{self, Stat};

/// Opened parent layer dirs, nearest first.
#[derive(Debug)]
pub struct LowerChain {
    layers: Vec<OwnedFd>,
}

/// A path found in a lower layer.
#[derive(Debug)]
pub struct Found {
    /// The directory holding it, in the layer where it was found.
    pub dir: OwnedFd,
    /// Its name in `dir`.
    pub name: OsString,
    /// Its stat.
    pub stat: Stat,
}

impl LowerChain {
    /// Opens each parent dir.
    ///
    /// # Errors
    /// A parent cannot be opened as a directory.
    pub fn open(dirs: &[PathBuf]) -> Result<LowerChain> {
        let layers = dirs
            .iter()
            .map(|d| {
                sys::open_dir_path(d).map_err(|source| Error::Io { op: "open parent layer", path: d.clone(), source })
            })
            .collect::<Result<_>>()?;
        Ok(LowerChain { layers })
    }

    /// Looks `path` up through the chain as the merged view would see it.
    ///
    /// # Errors
    /// A filesystem call fails.
    pub fn find(&self, path: &LayerPath) -> io::Result<Option<Found>> {
        let parts: Vec<&OsStr> = path.components().collect();
        let Some(last) = parts.len().checked_sub(1) else {
            return Ok(None);
        };
        for layer in &self.layers {
            let mut dir = sys::open_dir_beneath(layer.as_fd(), OsStr::new(""))?;
            let mut stop_below = is_opaque(dir.as_fd())?;
            for (depth, &name) in parts.iter().enumerate() {
                let Some(stat) = sys::lstat(dir.as_fd(), name)? else {
                    break;
                };
                if whiteout::is_whiteout(&stat) {
                    return Ok(None);
                }
                if depth == last {
                    return Ok(Some(Found { dir, name: name.to_owned(), stat }));
                }
                if !sys::is_dir(&stat) {
                    return Ok(None);
                }
                dir = sys::open_child_dir(dir.as_fd(), name)?;
                stop_below |= is_opaque(dir.as_fd())?;
            }
            // An opaque dir on the way (the layer root included) hides the rest of the chain.
            if stop_below {
                return Ok(None);
            }
        }
        Ok(None)
    }
}

/// Parents may be in either namespace (a store layer keeps the one it was unpacked in,
/// and a `--userxattr` unpack stacks on trusted ones). A layer can never carry overlay
/// xattrs itself (`meta::xattr_allowed`), so any marker here was written by the apply
/// engine and both namespaces count.
fn is_opaque(dir: BorrowedFd<'_>) -> io::Result<bool> {
    for ns in [XattrNamespace::Trusted, XattrNamespace::User] {
        if whiteout::has_opaque_xattr(dir, OsStr::new(""), ns)? {
            return Ok(true);
        }
    }
    Ok(false)
}
