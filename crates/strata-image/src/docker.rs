//! `docker save` archives, all three shapes, read through `manifest.json`:
//! legacy (Docker <= 24: `<id>/layer.tar`, duplicate layers as in-archive symlinks),
//! Docker 25+ (an OCI layout whose `manifest.json` points into `blobs/sha256/`), and
//! archives whose layer blobs are gzip or zstd (compression is sniffed when applying).

use std::sync::Arc;

use oci_spec::image::ImageConfiguration;
use serde::Deserialize;
use strata_core::Digest;

use crate::error::{Error, Result};
use crate::model::{Format, Image, Layer, Selector};
use crate::platform::Platform;
use crate::rules::{check_explicit_platform, normalize_reference, parse_json, reference_digest};
use crate::source::Source;

/// One image in `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Reads the image `selector` names from a docker-save archive.
pub fn read(source: Arc<Source>, selector: &Selector) -> Result<Image> {
    let entries: Vec<Entry> =
        parse_json(&source, "manifest.json", &source.read_json_bytes("manifest.json", "manifest.json")?)?;
    let tags = |e: &Entry| e.repo_tags.clone().unwrap_or_default();
    let available = || {
        entries
            .iter()
            .map(|e| tags(e).join(" ").to_string())
            .map(|t| if t.is_empty() { "(untagged)".into() } else { t })
            .collect()
    };
    let entry = match &selector.reference {
        Some(reference) => {
            let wanted = normalize_reference(reference);
            let digest = reference_digest(reference).map(str::to_owned);
            entries.iter().find(|e| {
                tags(e).iter().any(|t| normalize_reference(t) == wanted)
                    || digest
                        .as_deref()
                        .is_some_and(|d| config_digest_of(&e.config).is_some_and(|c| c.to_string() == d))
            })
        }
        None if entries.len() == 1 => entries.first(),
        None => None,
    }
    .ok_or_else(|| Error::NotFound {
        image: source.path().to_owned(),
        wanted: selector.reference.as_ref().map_or_else(
            || "a single image (the archive holds several; pick one with NAME:TAG)".to_owned(),
            |r| format!("image {r:?}"),
        ),
        available: available(),
    })?;
    let name = selector
        .reference
        .clone()
        .or_else(|| tags(entry).first().cloned())
        .unwrap_or_else(|| source.path().display().to_string());

    let config_bytes = source.read_json_bytes(&entry.config, "the image config")?;
    let config_digest = Digest::of(&config_bytes);
    if let Some(named) = config_digest_of(&entry.config) {
        if named != config_digest {
            return Err(Error::Digest {
                image: source.path().to_owned(),
                what: format!("config {}", entry.config),
                expected: named.to_string(),
                actual: config_digest.to_string(),
            });
        }
    }
    let config: ImageConfiguration = parse_json(&source, "the image config", &config_bytes)?;
    let platform = Platform {
        os: config.os().to_string(),
        arch: config.architecture().to_string(),
        variant: config.variant().clone(),
    };
    check_explicit_platform(&source, selector, &platform)?;

    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != entry.layers.len() {
        return Err(Error::Invalid {
            image: source.path().to_owned(),
            what: "manifest.json".into(),
            reason: format!("{} layers but the config lists {} diff_ids", entry.layers.len(), diff_ids.len()),
        });
    }
    let legacy = entry.layers.iter().any(|l| !l.starts_with("blobs/"));
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (index, (path, diff_id)) in entry.layers.iter().zip(diff_ids).enumerate() {
        let what = format!("layer {} ({path})", index + 1);
        let (_, size) = source.open_file(path, &what)?;
        layers.push(Layer {
            index,
            digest: blob_digest_of(path),
            diff_id: diff_id.parse().map_err(|_| Error::Invalid {
                image: source.path().to_owned(),
                what: "the image config".into(),
                reason: format!("diff_id {diff_id:?} is not a sha256 digest"),
            })?,
            media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
            size,
            path: path.clone(),
        });
    }
    Ok(Image {
        name,
        format: if legacy { Format::DockerLegacy } else { Format::DockerOci },
        manifest_digest: None,
        config_digest,
        platform,
        layers,
        config_path: entry.config.clone(),
        source,
    })
}

/// `blobs/sha256/<hex>` -> the digest it names.
fn blob_digest_of(path: &str) -> Option<Digest> {
    path.strip_prefix("blobs/sha256/").and_then(|hex| format!("sha256:{hex}").parse().ok())
}

/// The config's digest as its file name says (`<hex>.json` or `blobs/sha256/<hex>`).
fn config_digest_of(path: &str) -> Option<Digest> {
    blob_digest_of(path).or_else(|| path.strip_suffix(".json").and_then(|hex| format!("sha256:{hex}").parse().ok()))
}
