//! The overlay on-disk format, defined once.
//!
//! Kernel overlayfs keeps its markers (opaque dirs, redirects, origins, ...) in
//! `trusted.overlay.*`, or in `user.overlay.*` when mounted with `userxattr` (rootless:
//! `trusted.*` needs `CAP_SYS_ADMIN`). A layer dir written in one namespace means
//! nothing to a mount that reads the other: an opaque dir stops being opaque and lower
//! files it must hide show through. So the namespace travels with every layer: the apply
//! engine writes in one ([`crate::ApplyBuilder::xattr_namespace`]), the store records it
//! per snapshot and moves a layer to the namespace a mount reads ([`convert_tree`]), and
//! mounters read it from the [`MountSpec`].
//!
//! Copying one entry up (data, owner, mode, xattrs, times) is [`copy_up`], shared by
//! the apply engine and strata-fuse; directory renames that keep their lower contents
//! (`redirect_dir`) are [`redirect`]. The names of the tar form (`.wh.NAME`, `.wh..wh..opq`) and the rules for telling
//! a whiteout from a file live in [`whiteout`]; what the lower layers show at a path
//! through those markers (the top-most layer decides) is [`lower`].

pub mod copy_up;
pub mod lower;
mod namespace;
pub mod redirect;
mod stack;
pub mod whiteout;

pub use namespace::{XattrNamespace, convert_tree, is_overlay_xattr};
pub use stack::MountSpec;
