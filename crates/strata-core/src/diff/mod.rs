//! From an upper dir back to a layer: the inverse of the apply engine.
//!
//! [`write_tar`] walks an upper dir (the lower layers are read only below a redirect) in any
//! form strata writes or reads — overlayfs's char 0/0 whiteouts and
//! `trusted|user.overlay.opaque` dirs, or the tar form's `.wh.NAME` files and
//! `.wh..wh..opq` markers on filesystems without xattrs — and writes an OCI layer tar:
//! `.wh.NAME` for deletions, `.wh..wh..opq` after an opaque dir's own entry, hard links
//! within the layer as links, xattrs as `SCHILY.xattr.*` (minus those a layer may never
//! carry), devices, fifos, symlinks, and nanosecond mtimes.
//!
//! The output is reproducible: entries in byte order of their names, uid/gid/mode kept,
//! no atime, ctime, uname or gname, and mtimes clamped to `SOURCE_DATE_EPOCH` when
//! given (the BuildKit convention): the same upper dir gives the same bytes anywhere.
//! [`write_layer`] compresses and hashes on another thread, as unpacking does.
//!
//! A directory moved with `redirect_dir` (a `*.overlay.redirect` xattr) keeps its lower
//! contents at its old path; the layer carries it as an opaque dir with everything the
//! mount shows below it, read from the lower layers ([`DiffOptions::lowers`]). Sparse
//! files are written with their holes as zeros (the tar reader takes old-GNU sparse
//! entries, but no PAX form common readers agree on).
//!
//! ```
//! use strata_core::diff::{DiffOptions, write_tar};
//!
//! let upper = tempfile::tempdir()?;
//! std::fs::create_dir(upper.path().join("etc"))?;
//! std::fs::write(upper.path().join("etc/motd"), "changed\n")?;
//! let mut tar = Vec::new();
//! let report = write_tar(upper.path(), &DiffOptions::default(), &mut tar)?;
//! assert_eq!(report.entries, 2); // etc/ and etc/motd
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod changes;
mod layer;
mod walk;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

pub use changes::{Change, ChangeKind, changes};
pub use layer::{LayerOutput, write_layer};
pub use walk::write_tar;

use crate::Error;
use crate::ovl::XattrNamespace;
use crate::path::PATH_MAX;

/// How to write a layer from an upper dir.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// The namespace whose `*.overlay.*` xattrs mark opaque dirs in this upper dir (the
    /// one its mounts read); the other namespace's markers are user data, and dropped
    /// like every overlay xattr.
    pub xattrs: XattrNamespace,
    /// Clamp mtimes to this (seconds since the epoch): `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
    /// Union paths (relative, e.g. `etc/hosts`) left out with everything below them.
    pub exclude: Vec<PathBuf>,
    /// The lower layers (top-most first). Read only below a directory moved with
    /// `redirect_dir`, whose lower contents the layer must carry in full.
    pub lowers: Vec<PathBuf>,
}

impl Default for DiffOptions {
    fn default() -> DiffOptions {
        DiffOptions {
            xattrs: XattrNamespace::native(),
            source_date_epoch: None,
            exclude: Vec::new(),
            lowers: Vec::new(),
        }
    }
}

impl DiffOptions {
    /// `SOURCE_DATE_EPOCH` from the environment, when set to a number.
    ///
    /// # Errors
    /// It is set but not a number of seconds.
    pub fn source_date_epoch_from_env() -> Result<Option<i64>, String> {
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => {
                v.trim().parse().map(Some).map_err(|_| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))
            }
            Err(_) => Ok(None),
        }
    }
}

/// What a diff wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Tar entries written (whiteouts and opaque markers included).
    pub entries: u64,
    /// Deletions (`.wh.NAME`).
    pub whiteouts: u64,
    /// Opaque dirs.
    pub opaque_dirs: u64,
    /// Hard links to a path earlier in the layer.
    pub hardlinks: u64,
    /// Bytes of file data.
    pub data_bytes: u64,
    /// Entries that cannot be in a layer (sockets), left out.
    pub skipped: u64,
}

/// The error for an upper-dir path (layer path bytes) longer than a layer may hold:
/// `mkdir d && cd d` in a loop builds one, and no runtime could create it (strata's
/// apply refuses it, as Docker and containerd fail with `ENAMETOOLONG`). Names the
/// top-level entry holding it and its depth rather than printing 4 KiB of path.
fn path_too_long(path: &[u8]) -> Error {
    let top = path.split(|&b| b == b'/').next().unwrap_or_default();
    let levels = path.split(|&b| b == b'/').count();
    Error::Unrepresentable {
        path: PathBuf::from(OsStr::from_bytes(top)),
        reason: format!(
            "holds a path longer than PATH_MAX ({PATH_MAX} bytes), {levels} levels deep: \
             a layer cannot carry it (no runtime could create it)"
        ),
    }
}
