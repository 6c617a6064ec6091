//! Disk use of a snapshot dir: allocated bytes and inodes, hard links counted once.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::model::Usage;

/// Walks `dir` (never following symlinks).
pub(crate) fn of(dir: &Path) -> io::Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let md = entry.map_err(io::Error::from)?.metadata().map_err(io::Error::from)?;
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.bytes += md.blocks() * 512;
    }
    Ok(usage)
}
