//! The "mount an image" flow, as a library: what `strata mount` / `strata umount` do,
//! for an embedding runtime to call directly.
//!
//! [`mount_image`] unpacks the layers the store lacks ([`unpack_image`]), takes a
//! snapshot for the mount (an active one named [`MountOptions::name`] for a writable
//! mount, a view for a read-only one, so `gc` and `rmi` never remove layers under a live
//! mount), claims it in the store (a writable layer is mounted at most once), picks the
//! driver ([`Driver::Auto`]: kernel overlayfs when it works here, else strata-fuse) and
//! mounts. [`unmount`] undoes it, only for mounts the store recorded. [`commit`] turns a
//! writable layer back into an image layer on its base image, in an OCI layout.
//!
//! ```no_run
//! use strata::rootfs::{MountOptions, Progress, UnmountOptions, mount_image, unmount};
//! use strata::image::{Image, Selector};
//! use strata::store::Store;
//!
//! let store = Store::open("/var/lib/strata")?;
//! let image = Image::open("demo/image".as_ref(), &Selector::default())?;
//! let mounted = mount_image(&store, &image, "/tmp/rootfs".as_ref(), &MountOptions::default(), &Progress::none())?;
//! println!("{} with {}", mounted.target.display(), mounted.how);
//! unmount(&store, &mounted.target, UnmountOptions { remove_layer: true, lazy: false })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod commit;
mod driver;
mod error;
mod fuse;
mod init_layer;
mod lifecycle;
mod unpack;

pub use commit::{CommitOptions, Committed, commit};
pub use driver::{Driver, MountedWith, choose_driver};
pub use error::{Error, Result};
pub use fuse::{FuseDaemon, fuse_options, mount_fuse};
pub use init_layer::{INIT_LABEL, init_key};
pub use lifecycle::{
    MountOptions, Mounted, UnmountOptions, Unmounted, default_name, forget_stale_mounts, mount_image, unmount,
    view_name,
};
pub use unpack::{Progress, WrapBlob, layer_specs, unpack_image};
