//! End-to-end tests of strata, one binary (see `util/` for fixtures).

mod util;

mod bench;
mod builders;
mod cli;
mod commit;
mod containerd;
mod diff;
mod faults;
mod flat_diff;
mod formats;
mod fuse;
mod fuse_diff;
mod fuse_uring;
mod hostile;
mod images;
mod mount;
mod mount_lifecycle;
mod mutation;
mod overlay_form;
mod podman;
mod privileged;
mod race;
mod semantics;
mod snapshotter;
mod store;
mod store_root;
