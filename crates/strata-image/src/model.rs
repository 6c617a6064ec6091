//! What an image is: its layers in order, with the digests that check them, and how it was found.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use strata_core::Digest;

use crate::error::Result;
use crate::platform::Platform;
use crate::source::{BlobReader, Source};

/// Which shape the image source has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// An OCI image layout (directory or tar archive).
    OciLayout,
    /// `docker save` of Docker <= 24: `manifest.json` and `<id>/layer.tar`.
    DockerLegacy,
    /// `docker save` of Docker >= 25: an OCI layout plus `manifest.json`.
    DockerOci,
    /// A content store (`blobs/sha256/<hex>`, as containerd keeps one), read from a
    /// manifest or index digest.
    ContentStore,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::OciLayout => "OCI image layout",
            Format::DockerLegacy => "docker save (legacy)",
            Format::DockerOci => "docker save (OCI)",
            Format::ContentStore => "content store",
        })
    }
}

/// Which image of a source to read.
#[derive(Debug, Clone)]
pub struct Selector {
    /// `NAME:TAG`, a tag, or `@sha256:...` / `sha256:...`; `None` when the source holds one.
    pub reference: Option<String>,
    /// The platform to pick from image indexes.
    pub platform: Platform,
    /// Whether the user named the platform (a single-platform image of another
    /// platform is then an error rather than accepted).
    pub explicit_platform: bool,
}

impl Default for Selector {
    fn default() -> Self {
        Selector { reference: None, platform: Platform::host(), explicit_platform: false }
    }
}

/// One layer of an image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Position, bottom layer first.
    pub index: usize,
    /// Digest of the blob as stored (compressed), when the format records it.
    pub digest: Option<Digest>,
    /// Digest of the uncompressed tar, from the image config.
    pub diff_id: Digest,
    /// Media type as declared (compression is sniffed anyway).
    pub media_type: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Path of the blob inside the image source.
    pub(crate) path: String,
}

/// An image read from an OCI layout or a docker-save archive.
#[derive(Debug, Clone)]
pub struct Image {
    /// A name for messages: the reference that selected it, or the first tag.
    pub name: String,
    /// The source's shape.
    pub format: Format,
    /// The manifest digest, when the format has manifests.
    pub manifest_digest: Option<Digest>,
    /// The config digest (the image id).
    pub config_digest: Digest,
    /// The platform from the config.
    pub platform: Platform,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    pub(crate) source: Arc<Source>,
    /// Where the config is in the source (`blobs/sha256/<hex>`, or `<hex>.json` in
    /// legacy docker-save archives).
    pub(crate) config_path: String,
}

impl Image {
    /// Streams layer `layer`'s blob.
    ///
    /// # Errors
    /// The blob is absent, unreadable, or not the size its descriptor declares (a
    /// truncated or padded blob is caught before any byte of it is applied).
    pub fn open_layer(&self, layer: &Layer) -> Result<BlobReader> {
        let what = format!("layer {} ({})", layer.index + 1, layer.diff_id);
        let (reader, size) = self.source.open_file(&layer.path, &what)?;
        if size != layer.size {
            return Err(crate::Error::Invalid {
                image: self.source.path().to_owned(),
                what,
                reason: format!("the blob {} is {size} bytes, its descriptor says {}", layer.path, layer.size),
            });
        }
        Ok(reader)
    }

    /// The image config as stored (checked against its digest).
    ///
    /// # Errors
    /// It is unreadable, too large or does not match its digest.
    pub fn config_bytes(&self) -> Result<Vec<u8>> {
        let what = format!("config {}", self.config_digest);
        let bytes = self.source.read_json_bytes(&self.config_path, &what)?;
        let actual = Digest::of(&bytes);
        if actual != self.config_digest {
            return Err(crate::Error::Digest {
                image: self.source.path().to_owned(),
                what,
                expected: self.config_digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Whether layer `layer`'s blob is in the source (a content store being filled by a
    /// pull may not hold it yet).
    pub fn has_layer_blob(&self, layer: &Layer) -> bool {
        self.source.exists(&layer.path)
    }

    /// The ChainID of each layer, bottom first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let chain = Digest::chain(out.last(), &layer.diff_id);
            out.push(chain);
        }
        out
    }

    /// The path of the image source.
    pub fn source_path(&self) -> &Path {
        self.source.path()
    }
}
