//! The store's error type.
//!
//! Apply errors (a corrupt or hostile layer) keep strata-core's type, wrapped in
//! [`Error::Layer`] with the layer's position; the rest name the snapshot, image or path.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Applying a layer failed (see [`strata_core::Error`]).
    #[error(transparent)]
    Apply(#[from] strata_core::Error),

    /// A filesystem operation on the store failed.
    #[error("{op} {path:?} failed")]
    Io {
        /// The operation, e.g. `create snapshot dir`.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The store root breaks a safety rule (a symlink, another user's, writable by others).
    #[error("refusing the store root {path:?}: {reason}")]
    UnsafeRoot {
        /// The root, subdir or ancestor that broke the rule.
        path: PathBuf,
        /// Which rule.
        reason: String,
    },

    /// The store's database failed.
    #[error("snapshot store database ({op})")]
    Db {
        /// What the store was doing.
        op: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// A snapshot or image the caller named does not exist.
    #[error("{what} {key:?} does not exist")]
    NotFound {
        /// `snapshot` or `image`.
        what: &'static str,
        /// The key or name.
        key: String,
    },

    /// A layer of an unpack failed; nothing of it became visible.
    #[error("layer {index}/{total} ({diff_id})")]
    Layer {
        /// 1-based position, bottom first.
        index: usize,
        /// Layers in the image.
        total: usize,
        /// The layer's diff_id.
        diff_id: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// A snapshot key is taken.
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),

    /// The operation does not fit the snapshot's state.
    #[error("snapshot {key:?}: {reason}")]
    Snapshot {
        /// The snapshot key.
        key: String,
        /// Why the operation is refused.
        reason: String,
    },

    /// Options given to the store do not fit together.
    #[error("invalid options: {0}")]
    Options(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
