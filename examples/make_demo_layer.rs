//! Writes `demo/demo-layer.tar.gz`, the small layer the README's quick start applies.
//!
//! ```text
//! cargo run --example make_demo_layer
//! ```
//! The output is deterministic (fixed times, fixed gzip header), and a test checks the
//! shipped file is exactly what this program writes.

use std::io::Write;

use strata_core::tar::{Builder, Entry};

/// The demo layer: a tiny rootfs with the things layers carry (a setuid binary, a
/// symlink, a hardlink, a device, xattrs, a sub-second mtime).
pub fn demo_layer() -> std::io::Result<Vec<u8>> {
    let mut tar = Builder::new(Vec::new());
    tar.append(&Entry::dir("", 0o755), b"")?;
    tar.append(&Entry::dir("etc", 0o755), b"")?;
    tar.append(&Entry::file("etc/os-release", 0o644), b"NAME=\"strata demo\"\nID=strata-demo\n")?;
    tar.append(
        &Entry::file("etc/motd", 0o644).mtime(1_700_000_000, 123_456_789),
        b"Welcome to a rootfs made by strata.\n",
    )?;
    tar.append(&Entry::dir("usr/bin", 0o755), b"")?;
    tar.append(&Entry::file("usr/bin/hello", 0o4755), b"#!/bin/sh\necho hello from strata\n")?;
    tar.append(&Entry::hardlink("usr/bin/hello-again", "usr/bin/hello"), b"")?;
    tar.append(&Entry::symlink("bin", "usr/bin"), b"")?;
    tar.append(&Entry::dir("tmp", 0o1777), b"")?;
    tar.append(&Entry::dir("dev", 0o755), b"")?;
    tar.append(&Entry::char_device("dev/null", 1, 3), b"")?;
    tar.append(&Entry::fifo("dev/initctl"), b"")?;
    tar.append(
        &Entry::file("home/user/notes.txt", 0o600).owner(1000, 1000).xattr("user.comment", b"made by strata"),
        b"layers are just tarballs\n",
    )?;
    let tar = tar.finish()?;
    let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar)?;
    gz.finish()
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/demo-layer.tar.gz");
    std::fs::write(&out, demo_layer()?)?;
    println!("wrote {}", out.display());
    Ok(())
}
