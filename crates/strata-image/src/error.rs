//! The crate's error type: every variant names the image source and what in it failed.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong reading an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the image could not be read.
    #[error("{image}: cannot read {what}")]
    Io {
        /// The image path given by the user.
        image: PathBuf,
        /// What was being read (`index.json`, `blob sha256:...`, ...).
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The path is neither an OCI image layout nor a docker-save archive.
    #[error("{image}: not an OCI image layout or docker-save archive: {reason}")]
    NotAnImage {
        /// The image path.
        image: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },

    /// A JSON document is malformed or too large.
    #[error("{image}: invalid {what}: {reason}")]
    Invalid {
        /// The image path.
        image: PathBuf,
        /// Which document.
        what: String,
        /// What is wrong.
        reason: String,
    },

    /// The image uses a format strata refuses, with why.
    #[error("{image}: {what}: {reason}")]
    Unsupported {
        /// The image path.
        image: PathBuf,
        /// The offending manifest or layer.
        what: String,
        /// What the format is and why it is refused.
        reason: String,
    },

    /// No image or platform matched the selection.
    #[error("{image}: {wanted} not found; available: {}", available.join(", "))]
    NotFound {
        /// The image path.
        image: PathBuf,
        /// What was asked for.
        wanted: String,
        /// What the source holds.
        available: Vec<String>,
    },

    /// A blob's bytes do not hash to its digest.
    #[error("{image}: {what} is corrupt: expected {expected}, got {actual}")]
    Digest {
        /// The image path.
        image: PathBuf,
        /// Which blob.
        what: String,
        /// The digest that names it.
        expected: String,
        /// What its bytes hash to.
        actual: String,
    },

    /// The archive itself could not be indexed (malformed tar).
    #[error("{image}: cannot read the archive")]
    Archive {
        /// The image path.
        image: PathBuf,
        /// What the tar reader said.
        #[source]
        source: strata_core::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
