//! Writes `demo/image/`, the small OCI image the README's quick start mounts: three
//! layers with a whiteout, an opaque directory, a hardlink and a symlink.
//!
//! ```text
//! cargo run --example make_demo_image
//! ```
//! The output is deterministic; a test checks the shipped image is exactly this.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::json;
use strata_core::Digest;
use strata_core::tar::{Builder, Entry};

fn layer(entries: &[(Entry, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut tar = Builder::new(Vec::new());
    for (entry, data) in entries {
        tar.append(entry, data)?;
    }
    tar.finish()
}

/// The demo image's files: path -> bytes (blobs, index.json, oci-layout).
pub fn demo_image() -> std::io::Result<BTreeMap<String, Vec<u8>>> {
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
    let mut files = BTreeMap::new();
    let mut put = |bytes: Vec<u8>| {
        let digest = Digest::of(&bytes);
        let size = bytes.len();
        files.insert(format!("blobs/sha256/{}", digest.hex()), bytes);
        (digest.to_string(), size)
    };
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in &layers {
        diff_ids.push(Digest::of(tar).to_string());
        let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::best());
        gz.write_all(tar)?;
        let (digest, size) = put(gz.finish()?);
        descriptors
            .push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}));
    }
    // The files are architecture-independent; a single-platform image of another
    // architecture is still accepted unless --platform asks otherwise.
    let config = json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (config_digest, config_size) = put(serde_json::to_vec(&config)?);
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors});
    let (manifest_digest, manifest_size) = put(serde_json::to_vec(&manifest)?);
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": "strata-demo:1"}}]});
    files.insert("index.json".into(), serde_json::to_vec(&index)?);
    files.insert("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
    Ok(files)
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/image");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    for (path, bytes) in demo_image()? {
        let path = out.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(&out))?;
        std::fs::write(path, bytes)?;
    }
    println!("wrote {}", out.display());
    Ok(())
}
