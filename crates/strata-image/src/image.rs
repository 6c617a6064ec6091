//! An image: its layers in order, with the digests that check them, and how it was found.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use strata_core::Digest;

use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::source::{BlobReader, Source};
use crate::{docker, oci};

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
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::OciLayout => "OCI image layout",
            Format::DockerLegacy => "docker save (legacy)",
            Format::DockerOci => "docker save (OCI)",
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
}

impl Image {
    /// Opens `path` (directory or tar archive) and selects one image.
    ///
    /// # Errors
    /// The source is unreadable or not an image, nothing matches the selection, a JSON
    /// document is invalid, too large, or does not match its digest, or the image uses a
    /// refused format (schema 1, encrypted or absent foreign layers).
    pub fn open(path: &Path, selector: &Selector) -> Result<Image> {
        let source = Arc::new(Source::new(path)?);
        if source.exists("manifest.json") {
            docker::read(source, selector)
        } else if source.exists("index.json") {
            oci::read(source, selector)
        } else {
            Err(Error::NotAnImage {
                image: path.to_owned(),
                reason: "it has neither index.json nor manifest.json".into(),
            })
        }
    }

    /// Streams layer `layer`'s blob.
    ///
    /// # Errors
    /// The blob is absent or unreadable.
    pub fn open_layer(&self, layer: &Layer) -> Result<BlobReader> {
        self.source.open_file(&layer.path, &format!("layer {} ({})", layer.index + 1, layer.diff_id)).map(|(r, _)| r)
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

/// Layer media types, and why some are refused.
pub(crate) fn check_layer_media_type(media_type: &str) -> Result<(), String> {
    if media_type.contains("+encrypted") {
        return Err(format!(
            "layer media type {media_type} is encrypted (ocicrypt); decrypt the image first (e.g. skopeo copy --decryption-key)"
        ));
    }
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(()),
        other => Err(format!("{other:?} is not a filesystem layer media type")),
    }
}

/// Whether a layer's blob may legitimately be missing from a layout (it lives elsewhere).
pub(crate) fn is_foreign(media_type: &str) -> bool {
    media_type.contains("foreign") || media_type.contains("nondistributable")
}

/// Parses a digest string found in a document, naming the document on failure.
pub(crate) fn parse_digest(image: &Path, what: &str, text: &str) -> Result<Digest> {
    text.parse().map_err(|_| Error::Invalid {
        image: image.to_owned(),
        what: what.to_owned(),
        reason: format!("{text:?} is not a sha256 digest"),
    })
}

/// Reads `blobs/sha256/<hex>` (JSON, capped) and checks it hashes to `digest`.
pub(crate) fn read_json_blob(source: &Source, digest: &Digest, what: &str) -> Result<Vec<u8>> {
    let bytes = source.read_json_bytes(&blob_path(digest), what)?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(Error::Digest {
            image: source.path().to_owned(),
            what: what.to_owned(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(bytes)
}

/// Where an OCI layout keeps a blob.
pub(crate) fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Parses JSON, naming the document on failure; refuses Docker schema 1 manifests with
/// the reason.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(source: &Source, what: &str, bytes: &[u8]) -> Result<T> {
    let image = source.path().to_owned();
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::Invalid {
        image: image.clone(),
        what: what.into(),
        reason: e.to_string(),
    })?;
    let media_type = value.get("mediaType").and_then(|m| m.as_str()).unwrap_or_default();
    if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1)
        || media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
    {
        return Err(Error::Unsupported {
            image,
            what: what.into(),
            reason: "Docker image manifest schema 1 is deprecated and unsupported (it carries no diff_ids); \
                     convert the image with a current docker or skopeo"
                .into(),
        });
    }
    serde_json::from_value(value).map_err(|e| Error::Invalid { image, what: what.into(), reason: e.to_string() })
}

/// Normalises an image reference for comparison: `docker.io/library/` dropped, `:latest`
/// added when no tag or digest is given.
pub(crate) fn normalize_reference(reference: &str) -> String {
    let r = reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("index.docker.io/library/"))
        .or_else(|| reference.strip_prefix("docker.io/"))
        .unwrap_or(reference);
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') || r.contains('@') { r.to_owned() } else { format!("{r}:latest") }
}

/// The digest in a reference like `@sha256:...`, `name@sha256:...` or `sha256:...`.
pub(crate) fn reference_digest(reference: &str) -> Option<&str> {
    let d = reference.rsplit_once('@').map_or(reference, |(_, d)| d);
    d.starts_with("sha256:").then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(normalize_reference("alpine"), "alpine:latest");
        assert_eq!(normalize_reference("docker.io/library/alpine:3.19"), "alpine:3.19");
        assert_eq!(normalize_reference("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(normalize_reference("ghcr.io/o/app:v1"), "ghcr.io/o/app:v1");
        assert_eq!(reference_digest("app@sha256:abc"), Some("sha256:abc"));
        assert_eq!(reference_digest("sha256:abc"), Some("sha256:abc"));
        assert_eq!(reference_digest("app:v1"), None);
    }

    #[test]
    fn layer_media_types() {
        assert!(check_layer_media_type("application/vnd.oci.image.layer.v1.tar+zstd").is_ok());
        assert!(check_layer_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").is_ok());
        let enc =
            check_layer_media_type("application/vnd.oci.image.layer.v1.tar+gzip+encrypted").expect_err("encrypted");
        assert!(enc.contains("encrypted"));
        assert!(check_layer_media_type("application/vnd.cncf.helm.chart.content.v1.tar+gzip").is_err());
    }
}
