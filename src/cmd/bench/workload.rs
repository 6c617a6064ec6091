//! Deterministic, realistic-looking layers for benchmarks: generated from a seed, so
//! every run and every peer sees the same bytes.
//!
//! Used by `strata bench`, and shared with `benches/apply.rs` and `examples/gen_layer.rs`
//! (via `#[path]`).

#![allow(dead_code)]

use strata::core::tar::{Builder, Entry};

/// What the layer is made of.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Many small files (a package tree: mostly 0.5–16 KiB, a few larger), in nested dirs.
    SmallFiles,
    /// A few large files (model weights, a JDK's modules file, ...).
    LargeFiles,
}

/// splitmix64: tiny, fast, good enough to make data look varied.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "int", "return", "static", "const", "struct", "void", "config", "value", "error", "buffer", "layer", "mount",
    "overlay", "snapshot", "the", "and", "of", "to", "in", "is", "for", "data", "file", "path", "0x7f", "lib", "usr",
];

/// Fills `out` with `len` bytes that compress like real files: text-ish runs mixed with
/// incompressible spans (about 2.5x with gzip, like typical image layers).
fn content(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    out.clear();
    while out.len() < len {
        if rng.below(10) == 0 {
            for _ in 0..rng.below(48) {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            for _ in 0..rng.below(32) + 1 {
                out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                out.push(if rng.below(8) == 0 { b'\n' } else { b' ' });
            }
        }
    }
    out.truncate(len);
}

/// A plain tar layer of about `bytes` bytes of file data under `usr/lib`.
pub fn layer(shape: Shape, bytes: u64, seed: u64) -> Vec<u8> {
    layer_under(shape, bytes, seed, "usr/lib", &[])
}

/// A plain tar layer of about `bytes` bytes of file data under `root`, preceded by
/// `extra` entries (whiteouts, opaque markers).
pub fn layer_under(shape: Shape, bytes: u64, seed: u64, root: &str, extra: &[Entry]) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut tar = Builder::new(Vec::with_capacity(bytes as usize + bytes as usize / 8));
    for entry in extra {
        tar.append(entry, b"").expect("write to a Vec");
    }
    let mut data = Vec::new();
    let mut written = 0u64;
    let mut dirs: Vec<String> = Vec::new();
    let mut index = 0u64;
    let mut current = 0usize;
    let mut left_in_dir = 0u64;
    while written < bytes {
        let size = match shape {
            Shape::SmallFiles => match rng.below(100) {
                0..=59 => 512 + rng.below(4 * 1024),
                60..=94 => 4 * 1024 + rng.below(28 * 1024),
                _ => 32 * 1024 + rng.below(480 * 1024),
            },
            Shape::LargeFiles => 16 * 1024 * 1024 + rng.below(16 * 1024 * 1024),
        }
        .min(bytes - written) as usize;
        // Files come grouped by directory, as a tar of a tree (docker, buildkit) has them.
        if left_in_dir == 0 {
            left_in_dir = 1 + rng.below(40);
            if dirs.is_empty() || rng.below(2) == 0 {
                let parent = if dirs.is_empty() || rng.below(3) == 0 {
                    root.to_owned()
                } else {
                    dirs[rng.below(dirs.len() as u64) as usize].clone()
                };
                let dir = format!("{parent}/d{}", dirs.len());
                tar.append(&Entry::dir(&dir, 0o755), b"").expect("write to a Vec");
                dirs.push(dir);
                current = dirs.len() - 1;
            } else {
                current = rng.below(dirs.len() as u64) as usize;
            }
        }
        left_in_dir -= 1;
        let dir = &dirs[current];
        content(&mut rng, size, &mut data);
        let mode = if rng.below(10) == 0 { 0o755 } else { 0o644 };
        tar.append(&Entry::file(&format!("{dir}/file{index}.so"), mode), &data).expect("write to a Vec");
        if rng.below(50) == 0 {
            tar.append(&Entry::symlink(&format!("{dir}/link{index}"), &format!("file{index}.so")), b"").expect("vec");
        }
        index += 1;
        written += size as u64;
    }
    tar.finish().expect("write to a Vec")
}

/// A realistic image of about `bytes` of file data, as plain tars bottom first: a base
/// of many small files (60%), a layer of large files (30%), and a top layer of small
/// files (10%) that whites out a base file and a base directory and makes another base
/// directory opaque.
pub fn image(bytes: u64, seed: u64) -> Vec<Vec<u8>> {
    let top_changes =
        [Entry::whiteout("usr/lib/d0/file0.so"), Entry::whiteout("usr/lib/d2"), Entry::opaque("usr/lib/d1")];
    vec![
        layer_under(Shape::SmallFiles, bytes * 6 / 10, seed, "usr/lib", &[]),
        layer_under(Shape::LargeFiles, bytes * 3 / 10, seed + 1, "opt/models", &[]),
        layer_under(Shape::SmallFiles, bytes / 10, seed + 2, "usr/share", &top_changes),
    ]
}

/// A tar of `files` small files (200 B to 9 KB, like a package's) spread over 100
/// directories of 7 subdirectories each: what a package manager writes.
pub fn small_tree(files: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut tar = Builder::new(Vec::new());
    let mut data = Vec::new();
    for d in 0..100 {
        tar.append(&Entry::dir(&format!("tree/d{d:02}"), 0o755), b"").expect("write to a Vec");
        for s in 0..7 {
            tar.append(&Entry::dir(&format!("tree/d{d:02}/s{s}"), 0o755), b"").expect("write to a Vec");
        }
    }
    for i in 0..files {
        let size = [200, 900, 2000, 4000, 9000][rng.below(5) as usize];
        content(&mut rng, size, &mut data);
        let path = format!("tree/d{:02}/s{}/f{i}", i % 100, i % 7);
        tar.append(&Entry::file(&path, 0o644), &data).expect("write to a Vec");
    }
    tar.finish().expect("write to a Vec")
}

/// gzip at the level `docker push` / containerd use (default, 6).
pub fn gzip(tar: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(tar).expect("write to a Vec");
    gz.finish().expect("write to a Vec")
}

/// zstd at level 3 (containerd's default).
pub fn zstd(tar: &[u8]) -> Vec<u8> {
    zstd::encode_all(tar, 3).expect("compress in memory")
}
