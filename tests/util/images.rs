//! Images written by the tests, in every shape strata reads: OCI layouts (dir and
//! archive, multi-platform with an attestation manifest) and `docker save` archives
//! (legacy, Docker 25+), with plain, gzip or zstd layers.

use std::path::Path;

use serde_json::{Value, json};
use strata::core::Digest;
use strata::core::tar::{Builder, Entry};

/// A layer as the tests store it: the plain tar and the blob (maybe compressed).
pub struct Blob {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: &'static str,
}

impl Blob {
    pub fn plain(tar: Vec<u8>) -> Blob {
        Blob { blob: tar.clone(), tar, media_type: "application/vnd.oci.image.layer.v1.tar" }
    }
    pub fn gzip(tar: Vec<u8>) -> Blob {
        Blob { blob: super::gzip(&tar), tar, media_type: "application/vnd.oci.image.layer.v1.tar+gzip" }
    }
    pub fn zstd(tar: Vec<u8>) -> Blob {
        Blob { blob: super::zstd(&tar), tar, media_type: "application/vnd.oci.image.layer.v1.tar+zstd" }
    }
    pub fn diff_id(&self) -> Digest {
        Digest::of(&self.tar)
    }
    pub fn digest(&self) -> Digest {
        Digest::of(&self.blob)
    }
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    let path = dir.join("blobs/sha256").join(digest.hex());
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir blobs");
    std::fs::write(path, bytes).expect("write blob");
    digest
}

fn write_json(dir: &Path, value: &Value) -> (Digest, u64) {
    let bytes = serde_json::to_vec(value).expect("json");
    (write_blob(dir, &bytes), bytes.len() as u64)
}

pub fn config_json(layers: &[Blob], os: &str, arch: &str) -> Value {
    json!({
        "architecture": arch, "os": os,
        "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id().to_string()).collect::<Vec<_>>()},
    })
}

/// Writes config + layers + manifest blobs; returns the manifest descriptor.
pub fn write_image(dir: &Path, layers: &[Blob], os: &str, arch: &str) -> Value {
    let (config, config_size) = write_json(dir, &config_json(layers, os, arch));
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| json!({"mediaType": l.media_type, "digest": write_blob(dir, &l.blob).to_string(), "size": l.blob.len()}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": config_size},
        "layers": layer_descs,
    });
    let (digest, size) = write_json(dir, &manifest);
    json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest.to_string(), "size": size,
           "platform": {"os": os, "architecture": arch}})
}

pub fn write_layout(dir: &Path, manifests: Vec<Value>) {
    std::fs::create_dir_all(dir).expect("mkdir layout");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    let index =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("index.json");
}

/// An OCI layout holding one image tagged `name`.
pub fn oci_layout(dir: &Path, layers: &[Blob], name: &str) {
    let mut desc = write_image(dir, layers, "linux", host_arch());
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    write_layout(dir, vec![desc]);
}

/// An OCI layout whose one entry is an index of amd64 + arm64 images and an attestation
/// manifest (as buildx writes), nested one level.
pub fn oci_multiplatform(dir: &Path, amd64: &[Blob], arm64: &[Blob], name: &str) {
    let a = write_image(dir, amd64, "linux", "amd64");
    let mut b = write_image(dir, arm64, "linux", "arm64");
    b["platform"]["variant"] = json!("v8");
    let (att, att_size) = write_json(
        dir,
        &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(b"{}").to_string(), "size": 2},
        "layers": []}),
    );
    let attestation = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": att.to_string(), "size": att_size,
        "platform": {"os": "unknown", "architecture": "unknown"},
        "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": a["digest"]}});
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [a, b, attestation]});
    let (digest, size) = write_json(dir, &index);
    write_layout(
        dir,
        vec![json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest.to_string(),
        "size": size, "annotations": {"org.opencontainers.image.ref.name": name}})],
    );
}

/// A tar archive of a directory tree (an "OCI archive" or a docker-save archive).
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut tar = Builder::new(Vec::new());
    let mut paths: Vec<_> =
        walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name().into_iter().map(|e| e.expect("walk")).collect();
    paths.sort_by(|a, b| a.path().cmp(b.path()));
    for e in paths {
        let rel = e.path().strip_prefix(dir).expect("under dir").to_string_lossy().into_owned();
        let ft = e.path().symlink_metadata().expect("lstat").file_type();
        if ft.is_dir() {
            tar.append(&Entry::dir(&rel, 0o755), b"").expect("vec");
        } else if ft.is_symlink() {
            let target = std::fs::read_link(e.path()).expect("readlink").to_string_lossy().into_owned();
            tar.append(&Entry::symlink(&rel, &target), b"").expect("vec");
        } else {
            tar.append(&Entry::file(&rel, 0o644), &std::fs::read(e.path()).expect("read")).expect("vec");
        }
    }
    tar.finish().expect("vec")
}

/// A legacy `docker save` (Docker <= 24) tree: `<id>/layer.tar`, `<config>.json`,
/// `manifest.json`, `repositories`; a layer repeated in the image is stored once and
/// linked by an in-archive symlink, as docker does.
pub fn docker_legacy(dir: &Path, layers: &[Blob], tag: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let config = serde_json::to_vec(&config_json(layers, "linux", host_arch())).expect("json");
    let config_name = format!("{}.json", Digest::of(&config).hex());
    std::fs::write(dir.join(&config_name), &config).expect("config");
    let mut paths: Vec<String> = Vec::new();
    let mut first_of: std::collections::HashMap<String, String> = Default::default();
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
pub fn docker_oci(dir: &Path, layers: &[Blob], tag: &str) {
    let mut desc = write_image(dir, layers, "linux", host_arch());
    desc["annotations"] = json!({"io.containerd.image.name": format!("docker.io/library/{tag}"), "org.opencontainers.image.ref.name": tag.rsplit(':').next()});
    write_layout(dir, vec![desc]);
    let config = config_json(layers, "linux", host_arch());
    let config_digest = Digest::of(&serde_json::to_vec(&config).expect("json"));
    let manifest = json!([{"Config": format!("blobs/sha256/{}", config_digest.hex()), "RepoTags": [tag],
        "Layers": layers.iter().map(|l| format!("blobs/sha256/{}", l.digest().hex())).collect::<Vec<_>>()}]);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest).expect("json")).expect("manifest.json");
}

pub fn host_arch() -> &'static str {
    strata::image::Platform::host().arch.leak()
}
