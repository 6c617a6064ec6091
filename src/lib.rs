//! # strata
//!
//! A facade over strata's crates, for programs that want one dependency. The `strata`
//! binary is the command line; the work happens in [`core`] (layer apply) and [`image`]
//! (reading OCI layouts and docker-save archives).
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
