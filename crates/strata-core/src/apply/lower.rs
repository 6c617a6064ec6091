//! The lower layers of an overlay-form apply (parents, nearest first), read the way
//! overlayfs reads them: a char 0/0 hides the path, a non-directory hides everything
//! below it, an opaque directory hides the same path in the layers beneath.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::ovl::{XattrNamespace, whiteout};
use crate::path::LayerPath;
use crate::sys::{self, Stat};

/// Opened parent layer dirs, nearest first.
#[derive(Debug)]
pub struct LowerChain {
    layers: Vec<OwnedFd>,
    /// Per layer, the names of each multiply-linked file by inode; built on first need.
    link_groups: RefCell<HashMap<usize, HashMap<u64, Vec<LayerPath>>>>,
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
    /// Which layer of the chain (0: the nearest parent).
    pub layer: usize,
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
        Ok(LowerChain { layers, link_groups: RefCell::default() })
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
        for (index, layer) in self.layers.iter().enumerate() {
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
                    return Ok(Some(Found { dir, name: name.to_owned(), stat, layer: index }));
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

    /// Every name of `found`'s file in its layer (itself included). The layer is walked
    /// once, the first time a layer links to one of its multiply-linked files; only
    /// those files are remembered.
    ///
    /// # Errors
    /// A filesystem call fails.
    pub fn link_names(&self, found: &Found) -> io::Result<Vec<LayerPath>> {
        let mut groups = self.link_groups.borrow_mut();
        let inodes = match groups.entry(found.layer) {
            std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let mut inodes = HashMap::new();
                let root = sys::open_child_dir_readable(self.layers[found.layer].as_fd(), OsStr::new(""))?;
                collect_links(root.as_fd(), &LayerPath::root(), &mut inodes)?;
                slot.insert(inodes)
            }
        };
        Ok(inodes.get(&found.stat.st_ino).cloned().unwrap_or_default())
    }
}

/// Records every non-directory with more than one link below `dir`, by inode.
fn collect_links(dir: BorrowedFd<'_>, at: &LayerPath, out: &mut HashMap<u64, Vec<LayerPath>>) -> io::Result<()> {
    for name in sys::list_dir(dir)? {
        let Some(stat) = sys::lstat(dir, &name)? else { continue };
        if sys::is_dir(&stat) {
            let child = sys::open_child_dir_readable(dir, &name)?;
            collect_links(child.as_fd(), &at.join(name.as_bytes()), out)?;
        } else if stat.st_nlink > 1 && !whiteout::is_whiteout(&stat) {
            out.entry(stat.st_ino).or_default().push(at.join(name.as_bytes()));
        }
    }
    Ok(())
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
