//! # strata-overlay
//!
//! Kernel overlayfs mounts of strata snapshots. [`MountPlan::new`] turns a store's
//! [`MountSpec`](strata_core::ovl::MountSpec) into what to mount, as containerd does: a
//! bind mount for a single layer or for a container with no parents, else overlayfs with
//! `index=off` (`userxattr` when rootless; `volatile`, `redirect_dir`, `metacopy` only on
//! request). [`KernelMounter`] mounts it with the new mount API — one `lowerdir+` per
//! layer, so images up to the kernel's 500 layers mount with no option-string limit —
//! falling back to one `lowerdir` (before Linux 6.8) and to mount(2) with relative paths
//! (before 5.2), and surfaces the kernel's own fs-context messages in errors.
//! [`RecordingMounter`] is the fake for tests. [`HostFeatures::probe`] says what the host
//! supports.
//!
//! ```
//! use strata_core::ovl::MountSpec;
//! use strata_overlay::{MountPlan, Mounter, OverlayOptions, RecordingMounter};
//!
//! let spec = MountSpec {
//!     lowers: vec!["/s/2/fs".into(), "/s/1/fs".into()],
//!     upper: None,
//!     work: None,
//!     read_only: true,
//!     xattrs: strata_core::ovl::XattrNamespace::Trusted,
//! };
//! let plan = MountPlan::new(&spec, &OverlayOptions::default(), "/mnt".as_ref())?;
//! let fake = RecordingMounter::default();
//! fake.mount(&plan, "/mnt".as_ref())?;
//! assert_eq!(plan.legacy_options(None)?, "lowerdir=/s/2/fs:/s/1/fs,index=off");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod mounter;
mod plan;
mod probe;

pub use error::{Error, Result};
pub use mounter::{KernelMounter, Mounter, RecordingMounter};
pub use plan::{MAX_LOWERS, MountPlan, OverlayOptions};
pub use probe::{HostFeatures, is_mount_point};
