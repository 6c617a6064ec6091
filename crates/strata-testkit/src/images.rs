//! Images written in code, in every shape strata reads: OCI layouts (dir and archive,
//! multi-platform with an attestation manifest) and `docker save` archives (legacy,
//! Docker 25+), with plain, gzip or zstd layers. OCI layouts go through
//! `strata_image::layout`, the one layout writer.
//!
//! Fixture writers panic on I/O errors: a test cannot go on without its image.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};
use strata_core::Digest;
use strata_core::tar::{Builder, Entry};
use strata_image::Platform;
use strata_image::layout::{LayerBlob, LayoutWriter, REF_NAME, media};

/// A layer as the tests keep it: the plain tar and the blob (maybe compressed).
#[derive(Debug, Clone)]
pub struct Blob {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// The blob as stored.
    pub blob: Vec<u8>,
    /// Its media type.
    pub media_type: &'static str,
}

impl Blob {
    /// An uncompressed layer.
    pub fn plain(tar: Vec<u8>) -> Blob {
        Blob { blob: tar.clone(), tar, media_type: media::LAYER_TAR }
    }
    /// A gzip layer.
    pub fn gzip(tar: Vec<u8>) -> Blob {
        Blob { blob: crate::gzip(&tar), tar, media_type: media::LAYER_GZIP }
    }
    /// A zstd layer.
    pub fn zstd(tar: Vec<u8>) -> Blob {
        Blob { blob: crate::zstd(&tar), tar, media_type: media::LAYER_ZSTD }
    }
    /// The digest of the tar.
    pub fn diff_id(&self) -> Digest {
        Digest::of(&self.tar)
    }
    /// The digest of the blob.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.blob)
    }
}

/// The runtime config section every test image carries.
fn runtime_config() -> Value {
    json!({"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]})
}

fn platform(os: &str, arch: &str) -> Platform {
    Platform { os: os.into(), arch: arch.into(), variant: None }
}

/// Writes `layers` as one image into `layout`; returns its manifest descriptor.
///
/// # Panics
/// Writing fails.
pub fn write_image(layout: &LayoutWriter, layers: &[Blob], platform: &Platform) -> Value {
    let diff_ids: Vec<Digest> = layers.iter().map(Blob::diff_id).collect();
    let blobs: Vec<LayerBlob<'_>> = layers
        .iter()
        .zip(&diff_ids)
        .map(|(l, diff_id)| LayerBlob { blob: &l.blob, diff_id, media_type: l.media_type })
        .collect();
    layout.image(&blobs, platform, runtime_config()).expect("write image")
}

/// An OCI layout holding one image tagged `name`.
///
/// # Panics
/// Writing fails.
pub fn oci_layout(dir: &Path, layers: &[Blob], name: &str) {
    let mut layout = LayoutWriter::create(dir).expect("layout");
    let desc = write_image(&layout, layers, &platform("linux", &host_arch()));
    layout.add(desc, &[(REF_NAME, name)]);
    layout.finish().expect("finish layout");
}

/// An OCI layout whose one entry is an index of amd64 + arm64/v8 images and an
/// attestation manifest (as buildx writes), nested one level.
///
/// # Panics
/// Writing fails.
pub fn oci_multiplatform(dir: &Path, amd64: &[Blob], arm64: &[Blob], name: &str) {
    let mut layout = LayoutWriter::create(dir).expect("layout");
    let a = write_image(&layout, amd64, &platform("linux", "amd64"));
    let b = write_image(&layout, arm64, &Platform { variant: Some("v8".into()), ..platform("linux", "arm64") });
    let mut attestation = layout
        .json_blob(
            media::MANIFEST,
            &json!({"schemaVersion": 2, "mediaType": media::MANIFEST,
                "config": {"mediaType": media::CONFIG, "digest": Digest::of(b"{}").to_string(), "size": 2}, "layers": []}),
        )
        .expect("attestation");
    attestation["platform"] = json!({"os": "unknown", "architecture": "unknown"});
    attestation["annotations"] =
        json!({"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": a["digest"]});
    let index = layout.nested_index(vec![a, b, attestation]).expect("index");
    layout.add(index, &[(REF_NAME, name)]);
    layout.finish().expect("finish layout");
}

/// A tar archive of a directory tree (an "OCI archive" or a docker-save archive, or a
/// layer): directories 0755, files with their own permission bits.
///
/// # Panics
/// Reading the tree fails.
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut tar = Builder::new(Vec::new());
    let mut paths: Vec<_> =
        walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name().into_iter().map(|e| e.expect("walk")).collect();
    paths.sort_by(|a, b| a.path().cmp(b.path()));
    for e in paths {
        let rel = e.path().strip_prefix(dir).expect("under dir").to_string_lossy().into_owned();
        let md = e.path().symlink_metadata().expect("lstat");
        let ft = md.file_type();
        if ft.is_dir() {
            tar.append(&Entry::dir(&rel, 0o755), b"").expect("vec");
        } else if ft.is_symlink() {
            let target = std::fs::read_link(e.path()).expect("readlink").to_string_lossy().into_owned();
            tar.append(&Entry::symlink(&rel, &target), b"").expect("vec");
        } else {
            // The file's own permission bits (a busybox copy stays executable).
            let mode = std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777;
            tar.append(&Entry::file(&rel, mode), &std::fs::read(e.path()).expect("read")).expect("vec");
        }
    }
    tar.finish().expect("vec")
}

/// The image config JSON of `layers` (as docker-save archives store it).
pub fn config_json(layers: &[Blob], os: &str, arch: &str) -> Value {
    json!({
        "architecture": arch, "os": os, "config": runtime_config(),
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id().to_string()).collect::<Vec<_>>()},
    })
}

/// A legacy `docker save` (Docker <= 24) tree: `<id>/layer.tar`, `<config>.json`,
/// `manifest.json`; a layer repeated in the image is stored once and linked by an
/// in-archive symlink, as docker does.
///
/// # Panics
/// Writing fails.
pub fn docker_legacy(dir: &Path, layers: &[Blob], tag: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let config = serde_json::to_vec(&config_json(layers, "linux", &host_arch())).expect("json");
    let config_name = format!("{}.json", Digest::of(&config).hex());
    std::fs::write(dir.join(&config_name), &config).expect("config");
    let mut paths: Vec<String> = Vec::new();
    let mut first_of: HashMap<String, String> = HashMap::new();
    for (i, layer) in layers.iter().enumerate() {
        let id = Digest::of(format!("layer-{i}").as_bytes()).hex().to_owned();
        std::fs::create_dir_all(dir.join(&id)).expect("mkdir layer");
        std::fs::write(dir.join(&id).join("VERSION"), b"1.0").expect("VERSION");
        let key = layer.diff_id().to_string();
        match first_of.get(&key) {
            Some(first) => std::os::unix::fs::symlink(format!("../{first}/layer.tar"), dir.join(&id).join("layer.tar"))
                .expect("symlink"),
            None => {
                std::fs::write(dir.join(&id).join("layer.tar"), &layer.blob).expect("layer.tar");
                first_of.insert(key, id.clone());
            }
        }
        paths.push(format!("{id}/layer.tar"));
    }
    let manifest = json!([{"Config": config_name, "RepoTags": [tag], "Layers": paths}]);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest).expect("json")).expect("manifest.json");
}

/// A Docker 25+ `docker save` tree: an OCI layout plus `manifest.json` into `blobs/`.
///
/// # Panics
/// Writing fails.
pub fn docker_oci(dir: &Path, layers: &[Blob], tag: &str) {
    let mut layout = LayoutWriter::create(dir).expect("layout");
    let desc = write_image(&layout, layers, &platform("linux", &host_arch()));
    let config_digest = Digest::of(&serde_json::to_vec(&config_json(layers, "linux", &host_arch())).expect("json"));
    let containerd_name = format!("docker.io/library/{tag}");
    layout.add(
        desc,
        &[("io.containerd.image.name", &containerd_name), (REF_NAME, tag.rsplit(':').next().unwrap_or(tag))],
    );
    layout.finish().expect("finish layout");
    let manifest = json!([{"Config": format!("blobs/sha256/{}", config_digest.hex()), "RepoTags": [tag],
        "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", l.digest().hex())).collect::<Vec<_>>()}]);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest).expect("json")).expect("manifest.json");
}

/// This host's architecture in OCI names.
pub fn host_arch() -> String {
    Platform::host().arch
}
