//! # strata-testkit
//!
//! Fixtures for strata's tests and benches, kept out of the public crates (`publish =
//! false`): layers written in code ([`layer`]), compressors ([`gzip`], [`zstd`]), images
//! in every shape strata reads ([`images`], over `strata_image::layout`), and tar header
//! blocks crafted byte by byte for hostile inputs ([`hostile`]).
//!
//! ```
//! use strata_core::tar::Entry;
//! use strata_testkit::{e, gzip, layer};
//!
//! let tar = layer(&[e(Entry::dir("etc", 0o755)), (Entry::file("etc/motd", 0o644), b"hi\n")]);
//! assert!(gzip(&tar).len() > 10);
//! ```

pub mod hostile;
pub mod images;

use std::io::Write;

use strata_core::tar::{Builder, Entry};

/// A layer as `(entry, data)` pairs, written as a plain tar.
///
/// # Panics
/// Never: it writes to memory.
pub fn layer(entries: &[(Entry, &[u8])]) -> Vec<u8> {
    let mut tar = Builder::new(Vec::new());
    for (entry, data) in entries {
        tar.append(entry, data).expect("write to a Vec");
    }
    tar.finish().expect("write to a Vec")
}

/// Shorthand for an entry with no data.
pub fn e(entry: Entry) -> (Entry, &'static [u8]) {
    (entry, b"")
}

/// gzip-compresses (fast level).
///
/// # Panics
/// Never: it writes to memory.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("write to a Vec");
    gz.finish().expect("write to a Vec")
}

/// zstd-compresses with a content checksum, as the `zstd` CLI and containerd's encoder
/// write by default.
///
/// # Panics
/// Never: it writes to memory.
pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    let mut enc = zstd::Encoder::new(Vec::new(), 3).expect("encoder");
    enc.include_checksum(true).expect("checksum flag");
    enc.write_all(bytes).expect("compress in memory");
    enc.finish().expect("compress in memory")
}
