//! The crate's error type.
//!
//! Every variant says *where*: the entry (index and path in the layer) or the file
//! operation and the path it touched. Sources are chained, never repeated in the message.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong applying a layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The layer stream could not be read or decompressed.
    #[error("reading the layer stream ({compression})")]
    Stream {
        /// Which decoder was reading.
        compression: &'static str,
        /// What the decoder or reader said.
        #[source]
        source: io::Error,
    },

    /// The tar stream is malformed or uses a feature strata refuses.
    #[error("malformed tar at byte {offset}: {reason}")]
    Tar {
        /// Offset in the uncompressed stream of the header that failed.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// One entry was rejected (hostile or unsupported); nothing of it was written.
    #[error("entry #{index} {path:?}: {reason}")]
    Entry {
        /// Zero-based position of the entry in the layer.
        index: u64,
        /// The entry's path as written in the layer.
        path: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A filesystem operation failed while applying an entry.
    #[error("entry #{index} {path:?}: {op} failed")]
    EntryIo {
        /// Zero-based position of the entry in the layer.
        index: u64,
        /// The entry's path as written in the layer.
        path: String,
        /// The operation, e.g. `mknodat`.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A filesystem operation outside any single entry failed.
    #[error("{op} {path:?} failed")]
    Io {
        /// The operation, e.g. `open target`.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A digest given by the caller did not match the layer.
    #[error("{which} mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// `diff_id` (uncompressed stream) or `digest` (input bytes).
        which: &'static str,
        /// What the caller said.
        expected: String,
        /// What the stream hashed to.
        actual: String,
    },

    /// A digest string is not `sha256:` followed by 64 lower-case hex digits.
    #[error("invalid digest {0:?}: expected sha256:<64 lower-case hex digits>")]
    InvalidDigest(String),

    /// An upper dir holds something a layer cannot express (diff).
    #[error("{path:?} in the upper dir: {reason}")]
    Unrepresentable {
        /// The union path.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// Options given to a builder do not fit together.
    #[error("invalid options: {0}")]
    Options(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
