//! What an apply did.

use std::time::Duration;

use crate::digest::Digest;
use crate::path::LayerPath;
use crate::stream::Compression;
use crate::tar::Timestamp;

/// Counts and digests of one applied layer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplyReport {
    /// sha256 of the whole uncompressed stream (the OCI diff_id).
    pub diff_id: Digest,
    /// sha256 of the input bytes (the blob digest).
    pub digest: Digest,
    /// How the input was compressed.
    pub compression: Compression,
    /// Input bytes.
    pub compressed_bytes: u64,
    /// Uncompressed tar bytes.
    pub uncompressed_bytes: u64,
    /// Entries in the layer (metadata headers not counted).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories written.
    pub dirs: u64,
    /// Symlinks written.
    pub symlinks: u64,
    /// Hard links made.
    pub hardlinks: u64,
    /// Device nodes made.
    pub devices: u64,
    /// Fifos made.
    pub fifos: u64,
    /// Whiteout entries honoured.
    pub whiteouts: u64,
    /// Opaque-directory markers honoured.
    pub opaque_dirs: u64,
    /// True when the layer made its root opaque: it hides every layer below, and a mount
    /// must stop the lower stack here (overlayfs ignores the xattr on a layer root).
    pub root_opaque: bool,
    /// Bytes of file data written (sparse holes not counted).
    pub bytes: u64,
    /// Extended attributes dropped by policy (overlay internals, SELinux labels, ...).
    pub xattrs_filtered: u64,
    /// Work left for [`Applier::resolve_deferred`](super::Applier::resolve_deferred)
    /// (only with [`ApplyBuilder::defer_lower`](super::ApplyBuilder::defer_lower)).
    pub deferred: super::Deferred,
    /// Things skipped by policy, one line each (unprivileged devices, ...).
    pub warnings: Vec<String>,
    /// Wall time of the apply.
    pub elapsed: Duration,
}

impl ApplyReport {
    pub(crate) fn empty() -> Self {
        let zero = Digest::of(b"");
        ApplyReport {
            diff_id: zero.clone(),
            digest: zero,
            compression: Compression::None,
            compressed_bytes: 0,
            uncompressed_bytes: 0,
            entries: 0,
            files: 0,
            dirs: 0,
            symlinks: 0,
            hardlinks: 0,
            devices: 0,
            fifos: 0,
            whiteouts: 0,
            opaque_dirs: 0,
            root_opaque: false,
            bytes: 0,
            xattrs_filtered: 0,
            deferred: super::Deferred::default(),
            warnings: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// Uncompressed throughput in MB/s (10^6 bytes).
    pub fn megabytes_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.uncompressed_bytes as f64 / 1e6 / secs } else { 0.0 }
    }
}

/// What a deferred apply left to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deferred {
    /// Directories created because an entry needed them (no entry of their own).
    pub implied_dirs: Vec<LayerPath>,
    /// Hardlinks whose target was not in the layer at that point.
    pub links: Vec<DeferredLink>,
}

impl Deferred {
    /// Whether nothing was deferred.
    pub fn is_empty(&self) -> bool {
        self.implied_dirs.is_empty() && self.links.is_empty()
    }
}

/// A hardlink to a file expected in a lower layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredLink {
    /// The link's path.
    pub link: LayerPath,
    /// The target's path.
    pub target: LayerPath,
    /// The link entry's mtime (for directories the fix-up must create).
    pub mtime: Timestamp,
}
