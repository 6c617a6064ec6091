//! Writing OCI image layouts: the one writer strata uses (the demo image, `strata
//! bench`, the test kit, `strata commit`).
//!
//! Blobs are content-addressed (`blobs/sha256/<hex>`), so a blob shared by several
//! images is written once. [`LayoutWriter::finish`] writes `oci-layout` and
//! `index.json` last: a layout is readable only once everything it names exists.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use strata_core::Digest;

use crate::Platform;

/// OCI media types used here.
pub mod media {
    /// An image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// A plain tar layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A gzip layer.
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// A zstd layer.
    pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
}

/// The annotation naming an index entry (`NAME:TAG` or a tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One layer to write: its blob as stored and the digest of its uncompressed tar.
#[derive(Debug, Clone, Copy)]
pub struct LayerBlob<'a> {
    /// The blob (maybe compressed).
    pub blob: &'a [u8],
    /// The uncompressed tar's digest (the config's `diff_id`).
    pub diff_id: &'a Digest,
    /// The layer's media type ([`media`]).
    pub media_type: &'a str,
}

/// An OCI layout being written.
#[derive(Debug)]
pub struct LayoutWriter {
    dir: PathBuf,
    manifests: Vec<Value>,
}

impl LayoutWriter {
    /// Starts a layout in `dir` (created if missing).
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn create(dir: &Path) -> io::Result<LayoutWriter> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        Ok(LayoutWriter { dir: dir.to_owned(), manifests: Vec::new() })
    }

    /// Opens `dir` to add images to it: an existing layout keeps its `index.json`
    /// entries (one with the same [`REF_NAME`] as a later [`LayoutWriter::add`] is
    /// replaced); a missing one is created.
    ///
    /// # Errors
    /// The directory cannot be created, or its `index.json` is not an OCI index.
    pub fn open(dir: &Path) -> io::Result<LayoutWriter> {
        let mut layout = LayoutWriter::create(dir)?;
        match std::fs::read(dir.join("index.json")) {
            Ok(bytes) => {
                let index: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("{}/index.json: {e}", dir.display()))
                })?;
                layout.manifests = index["manifests"].as_array().cloned().unwrap_or_default();
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(layout)
    }

    /// Whether blob `digest` is in the layout already.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.dir.join("blobs/sha256").join(digest.hex()).is_file()
    }

    /// A fresh path in the layout's blob dir for a blob being written (same filesystem,
    /// so [`LayoutWriter::adopt_blob`] is a rename).
    pub fn temp_blob_path(&self) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join("blobs/sha256").join(format!(".partial-{}-{n}", std::process::id()))
    }

    /// Moves the finished file `tmp` into place as blob `digest` (synced first: an
    /// index never names a blob a crash could leave half-written); returns its
    /// descriptor.
    ///
    /// # Errors
    /// Syncing or renaming fails.
    pub fn adopt_blob(&self, tmp: &Path, digest: &Digest, size: u64, media_type: &str) -> io::Result<Value> {
        std::fs::File::open(tmp)?.sync_all()?;
        std::fs::rename(tmp, self.dir.join("blobs/sha256").join(digest.hex()))?;
        Ok(json!({"mediaType": media_type, "digest": digest.to_string(), "size": size}))
    }

    /// Copies blob `digest` from `data` unless the layout has it, checking the bytes
    /// hash to `digest`; returns its descriptor.
    ///
    /// # Errors
    /// Reading or writing fails, or the bytes are not `digest`.
    pub fn copy_blob(&self, digest: &Digest, media_type: &str, data: &mut dyn io::Read) -> io::Result<Value> {
        let path = self.dir.join("blobs/sha256").join(digest.hex());
        if let Ok(meta) = std::fs::metadata(&path) {
            return Ok(json!({"mediaType": media_type, "digest": digest.to_string(), "size": meta.len()}));
        }
        let tmp = self.temp_blob_path();
        let copied = (|| {
            let mut out = std::fs::File::create(&tmp)?;
            let mut hasher = strata_core::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = data.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                io::Write::write_all(&mut out, &buf[..n])?;
                size += n as u64;
            }
            let actual = hasher.finish();
            if &actual != digest {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("blob {digest} hashes to {actual}")));
            }
            self.adopt_blob(&tmp, digest, size, media_type)
        })();
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        copied
    }

    /// Writes a blob; returns a descriptor (`mediaType`, `digest`, `size`).
    ///
    /// # Errors
    /// Writing fails.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> io::Result<Value> {
        let digest = Digest::of(bytes);
        let path = self.dir.join("blobs/sha256").join(digest.hex());
        if !path.exists() {
            std::fs::write(&path, bytes)?;
        }
        Ok(json!({"mediaType": media_type, "digest": digest.to_string(), "size": bytes.len()}))
    }

    /// Writes a JSON blob.
    ///
    /// # Errors
    /// Writing fails.
    pub fn json_blob(&self, media_type: &str, value: &Value) -> io::Result<Value> {
        self.blob(media_type, &serde_json::to_vec(value).map_err(io::Error::other)?)
    }

    /// Writes an image's layers, config (`runtime_config` as its `config` section, the
    /// platform and the diff_ids filled in) and manifest; returns the manifest's
    /// descriptor with its platform, for [`LayoutWriter::add`] or a nested index.
    ///
    /// # Errors
    /// Writing fails.
    pub fn image(&self, layers: &[LayerBlob<'_>], platform: &Platform, runtime_config: Value) -> io::Result<Value> {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let mut config = json!({"architecture": platform.arch, "os": platform.os, "config": runtime_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids}});
        let mut platform_json = json!({"os": platform.os, "architecture": platform.arch});
        if let Some(variant) = &platform.variant {
            config["variant"] = json!(variant);
            platform_json["variant"] = json!(variant);
        }
        let config = self.json_blob(media::CONFIG, &config)?;
        let layers = layers.iter().map(|l| self.blob(l.media_type, l.blob)).collect::<io::Result<Vec<_>>>()?;
        let manifest = json!({"schemaVersion": 2, "mediaType": media::MANIFEST, "config": config, "layers": layers});
        let mut descriptor = self.json_blob(media::MANIFEST, &manifest)?;
        descriptor["platform"] = platform_json;
        Ok(descriptor)
    }

    /// Writes an index of `manifests` as a blob (a multi-platform image); returns its
    /// descriptor.
    ///
    /// # Errors
    /// Writing fails.
    pub fn nested_index(&self, manifests: Vec<Value>) -> io::Result<Value> {
        self.json_blob(media::INDEX, &json!({"schemaVersion": 2, "mediaType": media::INDEX, "manifests": manifests}))
    }

    /// Lists `descriptor` in the layout's `index.json` with `annotations` (e.g.
    /// [`REF_NAME`]).
    pub fn add(&mut self, mut descriptor: Value, annotations: &[(&str, &str)]) {
        if let Some((_, name)) = annotations.iter().find(|(k, _)| *k == REF_NAME) {
            self.manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(name));
        }
        if !annotations.is_empty() {
            let map: serde_json::Map<String, Value> =
                annotations.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
            descriptor["annotations"] = Value::Object(map);
        }
        self.manifests.push(descriptor);
    }

    /// Writes `oci-layout` and `index.json`; returns the layout's directory.
    ///
    /// # Errors
    /// Writing fails.
    pub fn finish(self) -> io::Result<PathBuf> {
        std::fs::write(self.dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = json!({"schemaVersion": 2, "mediaType": media::INDEX, "manifests": self.manifests});
        // Replaced whole: a reader never sees half an index.
        let tmp = self.dir.join(format!(".index.json.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&index).map_err(io::Error::other)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.dir.join("index.json"))?;
        Ok(self.dir)
    }
}
