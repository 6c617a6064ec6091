//! A stack of layer dirs, as a mounter (strata-overlay, strata-fuse) takes it.

use std::path::PathBuf;

use super::XattrNamespace;

/// How to mount a stack of layer dirs. Producers (the store, a runtime) build it;
/// mounters turn it into a kernel overlay, a bind mount or a FUSE mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Read-only layer dirs, top-most first (overlayfs `lowerdir` order).
    pub lowers: Vec<PathBuf>,
    /// The writable dir (active snapshots).
    pub upper: Option<PathBuf>,
    /// overlayfs' scratch dir, on the same filesystem as `upper`.
    pub work: Option<PathBuf>,
    /// Whether the mount is read-only.
    pub read_only: bool,
    /// The namespace every dir of the stack keeps its overlay markers in: a kernel
    /// mount needs `userxattr` for [`XattrNamespace::User`], strata-fuse writes in it.
    pub xattrs: XattrNamespace,
}
