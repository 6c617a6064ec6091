//! The mount flow's error type: the part that failed keeps its own error.

use std::path::PathBuf;

/// Everything that can go wrong mounting or unmounting an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The snapshot store failed (or refused: a layer in use, a name taken).
    #[error(transparent)]
    Store(#[from] strata_store::Error),
    /// A kernel mount or unmount failed.
    #[error(transparent)]
    Overlay(#[from] strata_overlay::Error),
    /// The mount target cannot be used.
    #[error("mount target {path:?}: {reason}")]
    Target {
        /// The target as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The request does not fit the store's state or this host.
    #[error("{0}")]
    Refused(String),
    /// The strata-fuse daemon could not be started or did not mount.
    #[error("strata-fuse: {0}")]
    Fuse(String),
    /// A filesystem call outside the store failed.
    #[error("{op} {path:?} failed")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
