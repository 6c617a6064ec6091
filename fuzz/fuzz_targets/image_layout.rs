//! Image parsing: an OCI layout whose `index.json`, manifest and config the fuzzer
//! writes, with the digests that link them filled in by the harness (so mutations reach
//! past the digest checks into the JSON handling, nested indexes and platform
//! selection); or a docker-save `manifest.json` with its config. Opening must return an
//! image or an error, never panic.
//!
//! Input: a mode byte, then `index.json` (or `manifest.json`), manifest and config
//! separated by 0xFF bytes; `@CONFIG@` and `@MANIFEST@` in them become the digests,
//! `@CONFIG_PATH@` the config's path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};
use strata_image::{Image, Selector};

fn put_blob(dir: &std::path::Path, bytes: &[u8]) -> String {
    let hex = format!("{:x}", Sha256::digest(bytes));
    std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).expect("blob");
    format!("sha256:{hex}")
}

fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut parts = rest.split(|&b| b == 0xff);
    let (top, manifest, config) =
        (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("blobs/sha256")).expect("mkdir");
    let config_digest = put_blob(dir.path(), config);
    let manifest = replace(manifest, b"@CONFIG@", config_digest.as_bytes());
    let manifest_digest = put_blob(dir.path(), &manifest);
    let config_path = format!("blobs/sha256/{}", &config_digest["sha256:".len()..]);
    let top = replace(top, b"@CONFIG_PATH@", config_path.as_bytes());
    let top = replace(&replace(&top, b"@MANIFEST@", manifest_digest.as_bytes()), b"@CONFIG@", config_digest.as_bytes());
    if mode & 1 == 0 {
        std::fs::write(dir.path().join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
        std::fs::write(dir.path().join("index.json"), &top).expect("write");
    } else {
        std::fs::write(dir.path().join("manifest.json"), &top).expect("write");
    }
    let selector = Selector { reference: (mode & 2 == 2).then(|| "app:v1".to_owned()), ..Selector::default() };
    if let Ok(image) = Image::open(dir.path(), &selector) {
        let _ = image.chain_ids();
        let _ = image.config_bytes();
        for layer in &image.layers {
            let _ = image.open_layer(layer);
        }
    }
    let _ = Image::from_content_store(dir.path(), &manifest_digest.parse().expect("digest"), &selector);
});
