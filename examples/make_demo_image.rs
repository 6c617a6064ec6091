//! Writes `demo/image/`, the small OCI image the README's quick start mounts: three
//! layers with a whiteout, an opaque directory, a hardlink and a symlink.
//!
//! ```text
//! cargo run --example make_demo_image
//! ```
//! The output is deterministic; a test checks the shipped image is exactly this.

use std::io::Write;
use std::path::Path;

use serde_json::json;
use strata_core::Digest;
use strata_core::tar::{Builder, Entry};
use strata_image::Platform;
use strata_image::layout::{LayerBlob, LayoutWriter, REF_NAME, media};

fn layer(entries: &[(Entry, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut tar = Builder::new(Vec::new());
    for (entry, data) in entries {
        tar.append(entry, data)?;
    }
    tar.finish()
}

/// Writes the demo image as an OCI layout into `out`.
pub fn write_demo_image(out: &Path) -> std::io::Result<()> {
    let e = |entry: Entry| (entry, &b""[..]);
    let layers = [
        layer(&[
            e(Entry::dir("", 0o755)),
            e(Entry::dir("etc", 0o755)),
            (Entry::file("etc/os-release", 0o644), b"NAME=\"strata demo\"\nVERSION=1\n"),
            (Entry::file("etc/motd", 0o644), b"Welcome to a rootfs mounted by strata.\n"),
            e(Entry::dir("usr/bin", 0o755)),
            (Entry::file("usr/bin/hello", 0o755), b"#!/bin/sh\necho hello from strata\n"),
            e(Entry::hardlink("usr/bin/hi", "usr/bin/hello")),
            e(Entry::symlink("bin", "usr/bin")),
            e(Entry::dir("tmp", 0o1777)),
            e(Entry::dir("var/cache/demo", 0o755)),
            (Entry::file("var/cache/demo/stale-1", 0o644), b"stale cache\n"),
            (Entry::file("var/cache/demo/stale-2", 0o644), b"stale cache\n"),
        ])?,
        layer(&[
            e(Entry::dir("", 0o755)),
            (Entry::file("etc/os-release", 0o644), b"NAME=\"strata demo\"\nVERSION=2\n"),
            e(Entry::whiteout("etc/motd")),
            e(Entry::opaque("var/cache/demo")),
            (Entry::file("var/cache/demo/fresh", 0o644), b"rebuilt cache\n"),
        ])?,
        layer(&[
            e(Entry::dir("", 0o755)),
            (Entry::file("home/user/notes.txt", 0o644).owner(1000, 1000), b"layers are just tarballs\n"),
            e(Entry::hardlink("usr/bin/hello-again", "usr/bin/hello")),
        ])?,
    ];
    let diff_ids: Vec<Digest> = layers.iter().map(|tar| Digest::of(tar)).collect();
    let mut blobs = Vec::new();
    for tar in &layers {
        let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
        gz.write_all(tar)?;
        blobs.push(gz.finish()?);
    }
    let layers: Vec<LayerBlob<'_>> = blobs
        .iter()
        .zip(&diff_ids)
        .map(|(blob, diff_id)| LayerBlob { blob, diff_id, media_type: media::LAYER_GZIP })
        .collect();
    let mut layout = LayoutWriter::create(out)?;
    // The files are architecture-independent; a single-platform image of another
    // architecture is still accepted unless --platform asks otherwise.
    let platform = Platform { os: "linux".into(), arch: "amd64".into(), variant: None };
    let manifest = layout.image(&layers, &platform, json!({"Cmd": ["/bin/sh"]}))?;
    layout.add(manifest, &[(REF_NAME, "strata-demo:1")]);
    layout.finish()?;
    Ok(())
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/image");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    write_demo_image(&out)?;
    println!("wrote {}", out.display());
    Ok(())
}
