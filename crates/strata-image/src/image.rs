//! Opening an image: which reader a source needs.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{Image, Selector};
use crate::source::Source;
use crate::{docker, oci};

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

    /// Opens the image whose manifest (or index) is blob `digest` in the content store
    /// at `root` (`blobs/sha256/<hex>`, as containerd's `io.containerd.content.v1.content`).
    /// Every blob is checked against its digest as with a layout; layer blobs may be
    /// missing (a pull still fetching): [`Image::has_layer_blob`] says.
    ///
    /// # Errors
    /// As [`Image::open`].
    pub fn from_content_store(root: &Path, digest: &strata_core::Digest, selector: &Selector) -> Result<Image> {
        oci::read_from_content_store(Arc::new(Source::new(root)?), digest, selector)
    }
}
