//! # strata
//!
//! A facade over strata's crates, for programs that want one dependency. The `strata`
//! binary is the command line; the work happens in [`core`] (layer apply).
//!
//! ```
//! use strata::core::{ApplyBuilder, Mode};
//! let applier = ApplyBuilder::new(Mode::Flat).build()?;
//! # let _ = applier;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use strata_core as core;
