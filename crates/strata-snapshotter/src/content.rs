//! Layers containerd has fetched, unpacked by strata's own engine: with CRI's snapshot
//! annotations on, each Prepare of a pull names the image's manifest; when strata can
//! read containerd's content store, it unpacks every fetched layer of that image up to
//! and past the one asked for (in parallel, blob digest and diff_id verified), and the
//! Prepare then takes the fast path. Anything that does not fit (another platform's
//! manifest, a layer not fetched yet, a corrupt blob) leaves the layer to containerd.

use std::path::Path;

use strata_core::Digest;
use strata_image::{Image, Selector};
use strata_store::{LayerSpec, Store, UnpackOptions};

use crate::status::error_chain;

/// The label with the digest of the image manifest a CRI pull unpacks.
pub const CRI_MANIFEST: &str = "containerd.io/snapshot/cri.manifest-digest";

/// Unpacks into `store` the fetched layers of manifest `manifest` (in the content store
/// at `root`) when they include chain `target`. Whether they did.
///
/// # Errors
/// The manifest, config or a blob is unreadable, invalid or does not match its digest,
/// or a layer fails to apply; the message says which.
pub(crate) fn unpack_through(store: &Store, root: &Path, manifest: &str, target: &str) -> Result<bool, String> {
    let digest: Digest = manifest.parse().map_err(|e| format!("label {CRI_MANIFEST}={manifest:?}: {e}"))?;
    let image = Image::from_content_store(root, &digest, &Selector::default()).map_err(|e| error_chain(&e))?;
    let chains = image.chain_ids();
    let Some(wanted) = chains.iter().position(|c| c.to_string() == target) else { return Ok(false) };
    // Every layer whose blob is here, from the bottom: a pull fetches ahead of unpacking.
    let fetched = image.layers.iter().take_while(|l| image.has_layer_blob(l)).count();
    if fetched <= wanted {
        return Ok(false);
    }
    let image = &image;
    let specs: Vec<LayerSpec<'_>> = image.layers[..fetched]
        .iter()
        .map(|layer| LayerSpec {
            diff_id: layer.diff_id.clone(),
            digest: layer.digest.clone(),
            open: Box::new(move || image.open_layer(layer).map_err(std::io::Error::other)),
        })
        .collect();
    store.unpack(&specs, UnpackOptions::default(), &|_| {}).map_err(|e| error_chain(&e))?;
    Ok(true)
}
