//! # strata-image
//!
//! Reads container images from disk: OCI image layouts
//! (a directory or a tar archive of one) and `docker save` archives in all three shapes
//! (legacy `<id>/layer.tar`, Docker 25+ OCI-based, compressed layer blobs).
//!
//! [`Image::open`] selects one image by [`Selector`] (a `NAME:TAG`, a tag, or a digest,
//! and a [`Platform`] for image indexes; attestation manifests never count), checks
//! every JSON blob against its digest (JSON capped at 20 MiB), validates every digest
//! before it becomes a path, and resolves every path inside the image only. Layers come
//! out bottom first with their diff_ids (and blob digests where the format records
//! them), ready for `strata_core::Applier`, which checks them while applying.
//!
//! [`layout::LayoutWriter`] writes OCI layouts (content-addressed blobs, `index.json`
//! last).
//!
//! Refused, with the reason: Docker schema 1 manifests, encrypted layers, foreign layers
//! whose blob is absent, compressed image archives.
//!
//! ```no_run
//! use strata_image::{Image, Selector};
//! let image = Image::open("alpine.tar".as_ref(), &Selector::default())?;
//! for (layer, chain) in image.layers.iter().zip(image.chain_ids()) {
//!     println!("{} {} {}", layer.diff_id, chain, layer.size);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod docker;
mod error;
mod image;
pub mod layout;
mod model;
mod oci;
mod platform;
mod rules;
mod source;

pub use error::{Error, Result};
pub use model::{Format, Image, Layer, Selector};
pub use platform::Platform;
pub use source::{BlobReader, MAX_JSON};
