//! Unpacking an image into the store and recording it by name.

use std::io::Read;

use strata_image::{Image, Layer};
use strata_store::{ImageRecord, LayerEvent, LayerSpec, Store, UnpackOptions, UnpackOutcome};

use super::Result;

/// Wraps a layer's blob reader (e.g. in a progress bar).
pub type WrapBlob<'a> = &'a (dyn Fn(&Layer, Box<dyn Read + Send>) -> Box<dyn Read + Send> + Sync);

/// What a caller sees of an unpack as it happens.
#[derive(Clone, Copy)]
pub struct Progress<'a> {
    /// Wraps each layer's blob reader.
    pub wrap_blob: Option<WrapBlob<'a>>,
    /// Called as each layer is reused, started and committed.
    pub on_event: &'a (dyn Fn(LayerEvent<'_>) + Sync),
}

impl std::fmt::Debug for Progress<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("wrap_blob", &self.wrap_blob.is_some()).finish_non_exhaustive()
    }
}

impl Progress<'static> {
    /// No progress reporting.
    pub fn none() -> Progress<'static> {
        Progress { wrap_blob: None, on_event: &|_| {} }
    }
}

/// `image`'s layers as the store unpacks them, each blob wrapped by `wrap`.
pub fn layer_specs<'a>(image: &'a Image, wrap: Option<WrapBlob<'a>>) -> Vec<LayerSpec<'a>> {
    image
        .layers
        .iter()
        .map(|layer| LayerSpec {
            diff_id: layer.diff_id.clone(),
            digest: layer.digest.clone(),
            open: Box::new(move || {
                let blob = image.open_layer(layer).map_err(std::io::Error::other)?;
                Ok(match wrap {
                    Some(wrap) => wrap(layer, blob),
                    None => blob,
                })
            }),
        })
        .collect()
}

/// Unpacks `image` into `store` (reusing the layers it holds) and records it as `name`.
///
/// # Errors
/// A layer is corrupt, hostile or does not match its digest (the error names it; the
/// layers below stay committed, nothing of it is visible), or the store fails.
pub fn unpack_image(
    store: &Store,
    image: &Image,
    name: &str,
    options: UnpackOptions,
    progress: &Progress<'_>,
) -> Result<UnpackOutcome> {
    let specs = layer_specs(image, progress.wrap_blob);
    let outcome = store.unpack(&specs, options, progress.on_event)?;
    store.record_image(&ImageRecord {
        name: name.to_owned(),
        manifest_digest: image.manifest_digest.as_ref().map(ToString::to_string),
        config_digest: image.config_digest.to_string(),
        top_chain: outcome.chains.last().map(ToString::to_string),
        created: now(),
        source: std::fs::canonicalize(image.source_path()).ok().map(|p| p.display().to_string()),
    })?;
    Ok(outcome)
}

/// Seconds since the epoch.
pub(super) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
