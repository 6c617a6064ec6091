//! # strata-core
//!
//! Turns container image layers (OCI image-spec `layer.md`) into directories, correctly
//! and safely, and fast.
//!
//! The main type is [`Applier`], built by [`ApplyBuilder`]: it streams one layer (plain
//! tar, gzip or zstd, sniffed from the first bytes) into a target directory in one of two
//! forms ([`Mode`]):
//!
//! - **overlay**: a per-layer snapshot dir as kernel overlayfs stores it. A whiteout
//!   `.wh.NAME` becomes a char 0/0 device, `.wh..wh..opq` becomes the
//!   `trusted.overlay.opaque=y` xattr (`user.overlay.opaque` for rootless mounts, see [`ovl`]).
//!   Parent layer dirs, if given, supply implied-directory metadata and hardlink targets.
//! - **flat**: the layer applied on top of a rootfs; whiteouts and opaque markers delete.
//!   The result equals the merged view of the overlay form.
//!
//! Every filesystem call is relative to a directory fd of the target and never follows
//! a symlink ([`sys`]); the tar reader ([`tar::Reader`]) refuses every input on which tar
//! implementations are known to disagree. Decompression and hashing run on their own
//! thread, in bounded memory. The [`ApplyReport`] carries the layer's diff_id and digest.
//!
//! The overlay on-disk format (whiteouts, opaque dirs, the xattr namespace, a stack of
//! layer dirs to mount) is defined once, in [`ovl`]. The snapshot store that holds
//! applied layers is the `strata-store` crate; mounts are `strata-overlay` and
//! `strata-fuse`.
//!
//! ```
//! use strata_core::tar::{Builder, Entry};
//! use strata_core::{ApplyBuilder, Mode};
//!
//! // A two-entry layer, written in memory.
//! let mut layer = Builder::new(Vec::new());
//! layer.append(&Entry::dir("etc", 0o755), b"")?;
//! layer.append(&Entry::file("etc/motd", 0o644), b"hello\n")?;
//! let layer = layer.finish()?;
//!
//! let target = tempfile::tempdir()?;
//! let report = ApplyBuilder::new(Mode::Flat).build()?.apply(&layer[..], target.path())?;
//! assert_eq!(std::fs::read(target.path().join("etc/motd"))?, b"hello\n");
//! assert_eq!(report.files, 1);
//! println!("diff_id {}", report.diff_id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
pub mod diff;
mod digest;
mod error;
pub mod ovl;
pub mod path;
mod stream;
pub mod sys;
pub mod tar;

pub use apply::{Applier, ApplyBuilder, ApplyReport, Deferred, DeferredLink, DevicePolicy, Mode};
pub use digest::{Digest, Hasher};
pub use error::{Error, Result};
pub use stream::Compression;
