//! # strata
//!
//! A facade over strata's crates, for programs that want one dependency, and the mount
//! flow they share with the `strata` command line ([`rootfs`]: unpack what is missing,
//! take a snapshot, pick a driver, mount, record). The work happens in [`core`] (layer
//! apply, the overlay format), [`image`] (OCI layouts and docker-save archives),
//! [`store`] (the snapshot store), [`overlay`] (kernel mounts) and [`fuse`]
//! (strata-fuse).
//!
//! ```
//! use strata::core::{ApplyBuilder, Mode};
//! let applier = ApplyBuilder::new(Mode::Flat).build()?;
//! # let _ = applier;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use strata_core as core;
pub use strata_fuse as fuse;
pub use strata_image as image;
pub use strata_overlay as overlay;
pub use strata_snapshotter as snapshotter;
pub use strata_store as store;

pub mod rootfs;
