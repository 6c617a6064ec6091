//! Which mount driver: kernel overlayfs or strata-fuse.

use std::fmt;
use std::path::Path;

use strata_overlay::HostFeatures;

use super::{Error, Result};

/// How to mount a stack of layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Driver {
    /// Kernel overlayfs when it works here, else strata-fuse (saying why).
    #[default]
    Auto,
    /// Kernel overlayfs (needs root).
    Overlay,
    /// strata-fuse, the userspace union mount with overlayfs semantics.
    Fuse,
}

/// What a mount ended up being.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountedWith {
    /// Kernel overlayfs.
    Overlay,
    /// A bind mount (one layer and no writable layer, as containerd does).
    Bind,
    /// strata-fuse.
    Fuse,
}

impl fmt::Display for MountedWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MountedWith::Overlay => "overlayfs",
            MountedWith::Bind => "bind mount",
            MountedWith::Fuse => "strata-fuse",
        })
    }
}

/// Picks the driver for a store at `root`: returns [`Driver::Overlay`] or
/// [`Driver::Fuse`], and for an `Auto` that fell back to FUSE, why.
///
/// # Errors
/// [`Error::Refused`] when overlay was asked for and cannot work here (the reason says
/// what is missing).
pub fn choose_driver(asked: Driver, host: &HostFeatures, root: &Path) -> Result<(Driver, Option<String>)> {
    let overlay_problem = host.overlay_problem(root);
    match (asked, overlay_problem) {
        (Driver::Fuse, _) => Ok((Driver::Fuse, None)),
        (Driver::Overlay | Driver::Auto, None) => Ok((Driver::Overlay, None)),
        (Driver::Overlay, Some(why)) => {
            Err(Error::Refused(format!("{why}; --driver fuse (strata-fuse) works without it")))
        }
        (Driver::Auto, Some(why)) => Ok((Driver::Fuse, Some(why))),
    }
}
