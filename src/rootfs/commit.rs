//! A container's writable layer back into an image: `strata commit` as a library call.
//!
//! The active snapshot's upper dir is diffed into a new layer blob (written straight
//! into the output layout while it is compressed and hashed), and the base image —
//! read from the layout or archive it was unpacked from — gets it on top: its config
//! with the new `diff_id` and a history entry, a manifest, and an `index.json` entry
//! under the given reference. Blobs the layout holds already (the base image's, when
//! committing into the layout it came from) are not written again; `index.json` is
//! replaced last and whole, so a crash leaves the layout as it was.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use strata_core::Compression;
use strata_core::diff::{DiffOptions, LayerOutput};
use strata_image::layout::{LayoutWriter, REF_NAME, media};
use strata_image::{Image, Selector};
use strata_store::{Kind, Store};

use super::{Error, Result};

/// What to commit.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// The writable layer (active snapshot) to commit.
    pub key: String,
    /// The base image's layout or archive; default: where the store unpacked it from.
    pub base: Option<PathBuf>,
    /// The OCI layout to write (created, or added to).
    pub out: PathBuf,
    /// The new image's reference in the layout (`NAME:TAG`).
    pub reference: String,
    /// How the new layer is compressed.
    pub compression: Compression,
    /// The history entry's comment.
    pub message: Option<String>,
    /// The config's and history entry's author.
    pub author: Option<String>,
    /// Time clamp, exclusions (see [`DiffOptions`]).
    pub diff: DiffOptions,
}

/// What a commit wrote.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The new manifest's digest.
    pub manifest_digest: String,
    /// The new layer.
    pub layer: LayerOutput,
    /// The base image it was put on.
    pub base: String,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { op, path, source }
}

/// Commits `options.key` as a new image in `options.out`.
///
/// # Errors
/// The snapshot is not active; its base image cannot be found or is not the one it was
/// made from; the diff or a write fails.
pub fn commit(store: &Store, options: &CommitOptions) -> Result<Committed> {
    let info = store.stat(&options.key)?;
    if info.kind != Kind::Active {
        return Err(Error::Refused(format!("{:?} is {}, not a writable layer", options.key, info.kind)));
    }
    // A writable layer on an init layer is committed on the image below it: the
    // injected files are never part of an image.
    let parent = match info.parent.as_deref() {
        Some(p) if super::init_layer::is_init_layer(store, p) => store.stat(p)?.parent,
        _ => info.parent.clone(),
    };
    let info = strata_store::Info { parent, ..info };
    let record = store.images()?.into_iter().find(|i| i.top_chain == info.parent);
    let source = match (&options.base, record.as_ref().and_then(|r| r.source.clone())) {
        (Some(base), _) => base.clone(),
        (None, Some(source)) => PathBuf::from(source),
        (None, None) => {
            return Err(Error::Refused(format!(
                "the base image of {:?} is not known to the store (unpacked before sources were recorded?): \
                 pass --base IMAGE",
                options.key
            )));
        }
    };
    let selector = Selector {
        reference: record.as_ref().and_then(|r| r.manifest_digest.clone()).map(|d| format!("@{d}")),
        ..Selector::default()
    };
    let image = Image::open(&source, &selector)
        .or_else(|_| Image::open(&source, &Selector::default()))
        .map_err(|e| Error::Refused(format!("reading the base image {}: {e}", source.display())))?;
    let top = image.chain_ids().last().map(ToString::to_string);
    if !sits_on(info.parent.as_deref(), top.as_deref()) {
        return Err(Error::Refused(format!(
            "{} is not the image {:?} was made from (its top layer chain is {}, the writable layer sits on {})",
            source.display(),
            options.key,
            top.as_deref().unwrap_or("none"),
            info.parent.as_deref().unwrap_or("nothing")
        )));
    }

    let mut layout = LayoutWriter::open(&options.out).map_err(io("open output layout", &options.out))?;
    // The new layer, streamed into the layout.
    let tmp = layout.temp_blob_path();
    let file = std::fs::File::create(&tmp).map_err(io("create layer blob", &tmp))?;
    let written = store.diff(&options.key, &options.diff, options.compression, std::io::BufWriter::new(file));
    let layer = match written {
        Ok(layer) => layer,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    let layer_type = match options.compression {
        Compression::Gzip => media::LAYER_GZIP,
        Compression::Zstd => media::LAYER_ZSTD,
        _ => media::LAYER_TAR,
    };
    let new_layer =
        layout.adopt_blob(&tmp, &layer.digest, layer.size, layer_type).map_err(io("write layer blob", &options.out))?;

    // The base image's layers, unless the layout has them.
    let mut layers = Vec::new();
    for base_layer in &image.layers {
        let media_type = oci_layer_type(&base_layer.media_type);
        let mut blob = image.open_layer(base_layer).map_err(|e| Error::Refused(format!("base image layer: {e}")))?;
        let desc = match &base_layer.digest {
            Some(digest) => layout.copy_blob(digest, media_type, &mut blob),
            None => copy_unnamed_blob(&layout, media_type, &mut blob),
        }
        .map_err(io("copy base layer", &options.out))?;
        layers.push(desc);
    }
    layers.push(new_layer);

    let config = new_config(&image, &layer, options).map_err(Error::Refused)?;
    let config = layout.json_blob(media::CONFIG, &config).map_err(io("write config", &options.out))?;
    let manifest = json!({"schemaVersion": 2, "mediaType": media::MANIFEST, "config": config, "layers": layers});
    let mut descriptor = layout.json_blob(media::MANIFEST, &manifest).map_err(io("write manifest", &options.out))?;
    let mut platform = json!({"os": image.platform.os, "architecture": image.platform.arch});
    if let Some(variant) = &image.platform.variant {
        platform["variant"] = json!(variant);
    }
    descriptor["platform"] = platform;
    let manifest_digest = descriptor["digest"].as_str().unwrap_or_default().to_owned();
    layout.add(descriptor, &[(REF_NAME, &options.reference)]);
    layout.finish().map_err(io("write index.json", &options.out))?;
    Ok(Committed { manifest_digest, layer, base: image.name })
}

/// Whether a writable layer on snapshot `parent` sits on the layer chain `top`: its
/// parent is that chain (strata's keys), or a containerd key for it (`NS/ID/CHAIN`, how
/// containerd names the layers it unpacks).
fn sits_on(parent: Option<&str>, top: Option<&str>) -> bool {
    match (parent, top) {
        (None, None) => true,
        (Some(parent), Some(top)) => parent == top || parent.rsplit('/').next() == Some(top),
        _ => false,
    }
}

/// The OCI media type of a base layer (Docker's types have OCI twins).
fn oci_layer_type(media_type: &str) -> &'static str {
    if media_type.contains("zstd") {
        media::LAYER_ZSTD
    } else if media_type.contains("gzip") {
        media::LAYER_GZIP
    } else {
        media::LAYER_TAR
    }
}

/// A legacy docker-save layer (`<id>/layer.tar`) has no blob digest: hash it on the way.
fn copy_unnamed_blob(layout: &LayoutWriter, media_type: &str, blob: &mut dyn std::io::Read) -> std::io::Result<Value> {
    let mut bytes = Vec::new();
    blob.read_to_end(&mut bytes)?;
    layout.blob(media_type, &bytes)
}

/// The base config with the new layer: its `diff_id` appended, a history entry, the
/// creation time (`SOURCE_DATE_EPOCH` when set) and the author.
fn new_config(image: &Image, layer: &LayerOutput, options: &CommitOptions) -> std::result::Result<Value, String> {
    let bytes = image.config_bytes().map_err(|e| format!("base image config: {e}"))?;
    let mut config: Value = serde_json::from_slice(&bytes).map_err(|e| format!("base image config: {e}"))?;
    let seconds = options.diff.source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
    });
    let created = rfc3339(seconds);
    let diff_ids = &mut config["rootfs"]["diff_ids"];
    if !diff_ids.is_array() {
        *diff_ids = json!([]);
    }
    diff_ids.as_array_mut().expect("an array").push(json!(layer.diff_id.to_string()));
    config["rootfs"]["type"] = json!("layers");
    let mut entry = json!({"created": created, "created_by": "strata commit"});
    if let Some(message) = &options.message {
        entry["comment"] = json!(message);
    }
    if let Some(author) = &options.author {
        entry["author"] = json!(author);
        config["author"] = json!(author);
    }
    match config["history"].as_array_mut() {
        Some(history) => history.push(entry),
        None => config["history"] = json!([entry]),
    }
    config["created"] = json!(created);
    Ok(config)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of `seconds` since the epoch (UTC, proleptic Gregorian).
fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
