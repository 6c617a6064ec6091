//! Rules both image readers share: media types, digests as paths, JSON parsing with
//! its limits, references, platform checks.

use std::path::Path;

use strata_core::Digest;

use crate::error::{Error, Result};
use crate::model::Selector;
use crate::platform::Platform;
use crate::source::Source;

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

/// A single-platform image of another platform is refused only when the user asked
/// for a platform explicitly.
pub(crate) fn check_explicit_platform(source: &Source, selector: &Selector, platform: &Platform) -> Result<()> {
    if selector.explicit_platform
        && !selector.platform.matches(&platform.os, &platform.arch, platform.variant.as_deref())
    {
        return Err(Error::NotFound {
            image: source.path().to_owned(),
            wanted: format!("platform {}", selector.platform),
            available: vec![platform.to_string()],
        });
    }
    Ok(())
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
