//! OCI image layouts (image-spec `image-layout.md`): `index.json` -> (nested indexes,
//! chosen by platform) -> manifest -> config + layers, every blob checked against its
//! digest.

use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use strata_core::Digest;

use crate::error::{Error, Result};
use crate::model::{Format, Image, Layer, Selector};
use crate::platform::Platform;
use crate::rules::{
    blob_path, check_explicit_platform, check_layer_media_type, is_foreign, normalize_reference, parse_digest,
    parse_json, read_json_blob, reference_digest,
};
use crate::source::Source;

const INDEX_TYPES: &[&str] =
    &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
const MANIFEST_TYPES: &[&str] =
    &["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"];
/// Indexes nest (an index of indexes); real images use one or two levels.
const MAX_DEPTH: usize = 8;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Reads the image `selector` names from an OCI layout.
pub fn read(source: Arc<Source>, selector: &Selector) -> Result<Image> {
    let index: ImageIndex = parse_json(&source, "index.json", &source.read_json_bytes("index.json", "index.json")?)?;
    let top = index.manifests();
    let (chosen, name) = match &selector.reference {
        Some(reference) => {
            let found =
                top.iter().find(|d| matches_reference(d, reference)).cloned().ok_or_else(|| Error::NotFound {
                    image: source.path().to_owned(),
                    wanted: format!("image {reference:?}"),
                    available: top.iter().map(describe).collect(),
                })?;
            (found, reference.clone())
        }
        None if top.len() == 1 => {
            (top[0].clone(), name_of(&top[0]).unwrap_or_else(|| source.path().display().to_string()))
        }
        // index.json itself listing one manifest per platform of one image (untagged, or
        // every entry with the same name): it is the index to choose from.
        None if !top.is_empty()
            && top.iter().all(|d| d.platform().is_some())
            && top.iter().all(|d| name_of(d) == name_of(&top[0])) =>
        {
            let child = choose_platform(&source, top, selector, "index.json")?;
            (child, source.path().display().to_string())
        }
        None => {
            return Err(Error::NotFound {
                image: source.path().to_owned(),
                wanted: "a single image (the layout holds several; pick one with NAME:TAG or @sha256:...)".into(),
                available: top.iter().map(describe).collect(),
            });
        }
    };
    resolve(source, chosen, name, selector, 0)
}

/// Reads the image whose manifest (or index, then chosen by platform) is blob `digest`
/// of a content store (`blobs/sha256/<hex>` with no `index.json`: containerd's
/// `io.containerd.content.v1.content`).
pub fn read_from_content_store(source: Arc<Source>, digest: &Digest, selector: &Selector) -> Result<Image> {
    let what = format!("manifest {digest}");
    let bytes = read_json_blob(&source, digest, &what)?;
    // The document names its own type (both OCI and Docker v2 manifests and indexes do).
    let value: serde_json::Value = parse_json(&source, &what, &bytes)?;
    let media_type = value.get("mediaType").and_then(serde_json::Value::as_str).unwrap_or(MANIFEST_TYPES[0]);
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let oci_digest = digest.to_string().parse::<oci_spec::image::Digest>().map_err(|e| Error::Invalid {
        image: source.path().to_owned(),
        what: what.clone(),
        reason: e.to_string(),
    })?;
    let desc = Descriptor::new(media_type.into(), size, oci_digest);
    let mut image = resolve(source, desc, digest.to_string(), selector, 0)?;
    image.format = Format::ContentStore;
    Ok(image)
}

fn resolve(source: Arc<Source>, desc: Descriptor, name: String, selector: &Selector, depth: usize) -> Result<Image> {
    let media_type = desc.media_type().to_string();
    let digest = parse_digest(source.path(), "a descriptor", desc.digest().as_ref())?;
    if INDEX_TYPES.contains(&media_type.as_str()) {
        if depth >= MAX_DEPTH {
            return Err(Error::Invalid {
                image: source.path().to_owned(),
                what: format!("index {digest}"),
                reason: format!("indexes nest deeper than {MAX_DEPTH} levels"),
            });
        }
        let what = format!("index {digest}");
        let index: ImageIndex = parse_json(&source, &what, &read_json_blob(&source, &digest, &what)?)?;
        let child = choose_platform(&source, index.manifests(), selector, &what)?;
        return resolve(source, child, name, selector, depth + 1);
    }
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(Error::Unsupported {
            image: source.path().to_owned(),
            what: format!("manifest {digest}"),
            reason: format!("media type {media_type} is not an image manifest or index"),
        });
    }
    let what = format!("manifest {digest}");
    let manifest: ImageManifest = parse_json(&source, &what, &read_json_blob(&source, &digest, &what)?)?;
    let config_digest = parse_digest(source.path(), &what, manifest.config().digest().as_ref())?;
    let config_what = format!("config {config_digest}");
    let config: ImageConfiguration =
        parse_json(&source, &config_what, &read_json_blob(&source, &config_digest, &config_what)?)?;
    let platform = Platform {
        os: config.os().to_string(),
        arch: config.architecture().to_string(),
        variant: config.variant().clone(),
    };
    check_explicit_platform(&source, selector, &platform)?;
    let layers = layers(&source, &manifest, &config, &what)?;
    Ok(Image {
        config_path: blob_path(&config_digest),
        name,
        format: Format::OciLayout,
        manifest_digest: Some(digest),
        config_digest,
        platform,
        layers,
        source,
    })
}

fn layers(source: &Source, manifest: &ImageManifest, config: &ImageConfiguration, what: &str) -> Result<Vec<Layer>> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::Invalid {
            image: source.path().to_owned(),
            what: what.to_owned(),
            reason: format!("{} layers but the config lists {} diff_ids", manifest.layers().len(), diff_ids.len()),
        });
    }
    let mut out = Vec::with_capacity(diff_ids.len());
    for (index, (desc, diff_id)) in manifest.layers().iter().zip(diff_ids).enumerate() {
        let layer_what = format!("layer {} of {what}", index + 1);
        let media_type = desc.media_type().to_string();
        check_layer_media_type(&media_type).map_err(|reason| Error::Unsupported {
            image: source.path().to_owned(),
            what: layer_what.clone(),
            reason,
        })?;
        let digest = parse_digest(source.path(), &layer_what, desc.digest().as_ref())?;
        let path = blob_path(&digest);
        if is_foreign(&media_type) && !source.exists(&path) {
            return Err(Error::Unsupported {
                image: source.path().to_owned(),
                what: layer_what,
                reason: format!(
                    "foreign layer {digest} ({media_type}) is not in the image; strata never downloads (urls: {:?})",
                    desc.urls().clone().unwrap_or_default()
                ),
            });
        }
        out.push(Layer {
            index,
            digest: Some(digest),
            diff_id: parse_digest(source.path(), &format!("diff_id of {layer_what}"), diff_id)?,
            media_type,
            size: desc.size(),
            path,
        });
    }
    Ok(out)
}

/// Picks the manifest for the wanted platform; attestation manifests never count.
fn choose_platform(source: &Source, manifests: &[Descriptor], selector: &Selector, what: &str) -> Result<Descriptor> {
    let candidates: Vec<&Descriptor> = manifests.iter().filter(|d| !is_attestation(d)).collect();
    if let [only] = candidates.as_slice() {
        if only.platform().is_none() {
            return Ok((*only).clone());
        }
    }
    let wanted = &selector.platform;
    let matching: Vec<&&Descriptor> = candidates
        .iter()
        .filter(|d| {
            d.platform().as_ref().is_some_and(|p| {
                wanted.matches(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref())
            })
        })
        .collect();
    // An exact variant match wins over "any variant".
    let exact = matching.iter().find(|d| d.platform().as_ref().and_then(|p| p.variant().clone()) == wanted.variant);
    exact.or(matching.first()).map(|d| (**d).clone()).ok_or_else(|| Error::NotFound {
        image: source.path().to_owned(),
        wanted: format!("platform {wanted} in {what}"),
        available: candidates.iter().map(|d| platform_of(d)).collect(),
    })
}

fn is_attestation(d: &Descriptor) -> bool {
    let annotated = d
        .annotations()
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some_and(|t| t == "attestation-manifest");
    annotated || d.platform().as_ref().is_some_and(|p| p.os().to_string() == "unknown")
}

fn platform_of(d: &Descriptor) -> String {
    d.platform().as_ref().map_or_else(
        || "(no platform)".to_owned(),
        |p| {
            Platform { os: p.os().to_string(), arch: p.architecture().to_string(), variant: p.variant().clone() }
                .to_string()
        },
    )
}

fn name_of(d: &Descriptor) -> Option<String> {
    let a = d.annotations().as_ref()?;
    a.get(CONTAINERD_NAME).or_else(|| a.get(REF_NAME)).cloned()
}

fn describe(d: &Descriptor) -> String {
    match name_of(d) {
        Some(name) => format!("{name} ({})", d.digest()),
        None => d.digest().to_string(),
    }
}

fn matches_reference(d: &Descriptor, reference: &str) -> bool {
    if let Some(digest) = reference_digest(reference) {
        return d.digest().to_string() == digest;
    }
    let Some(a) = d.annotations().as_ref() else {
        return false;
    };
    let wanted = normalize_reference(reference);
    let tag = wanted.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
    a.get(CONTAINERD_NAME).is_some_and(|n| normalize_reference(n) == wanted)
        || a.get(REF_NAME).is_some_and(|n| {
            // ref.name is a tag ("3.19") or a full reference ("alpine:3.19").
            n == reference || normalize_reference(n) == wanted || (!n.contains([':', '/']) && n == tag)
        })
}
