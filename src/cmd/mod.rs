//! Subcommands.

mod apply;
mod bench;
mod commit;
mod images;
mod mount;
mod progress;
mod snapshots;
mod snapshotter;
pub(crate) mod store;
mod unpack;

/// What strata can do.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Apply one layer (tar, tar.gz, tar.zst) to a directory, flat or in overlayfs form.
    Apply(apply::ApplyArgs),
    /// Unpack an image (OCI layout or docker-save archive) into the store or a rootfs.
    Unpack(unpack::UnpackArgs),
    /// List the images in the store.
    Images(images::ImagesArgs),
    /// Forget an image (its layers stay until gc).
    Rmi(images::RmiArgs),
    /// Inspect and remove snapshots.
    Snapshots(snapshots::SnapshotsArgs),
    /// Remove layer snapshots nothing uses.
    Gc(images::GcArgs),
    /// Mount an image's rootfs (kernel overlayfs or strata-fuse), writable, keeping changes per name.
    Mount(mount::MountArgs),
    /// Unmount what strata mount mounted.
    Umount(mount::UmountArgs),
    /// List what strata has mounted.
    Ps(mount::PsArgs),
    /// List what a container changed (`A`/`C`/`D` per path, as `docker diff`).
    Diff(commit::DiffArgs),
    /// Save a container's changes as a new image (an OCI layout) on the image it came from.
    ///
    /// The writable layer (a mount point, or --name) becomes a layer on top of the image it
    /// was mounted from. The layout OUT is created, or the image is added to it under --ref
    /// (a tag there is replaced; blobs it holds are not written again). The layer is
    /// reproducible: entries sorted, no host-specific fields, mtimes clamped to
    /// SOURCE_DATE_EPOCH when set. Read it back with `strata unpack OUT --ref NAME:TAG`,
    /// `umoci unpack --image OUT:NAME:TAG` or `skopeo copy oci:OUT:NAME:TAG ...`.
    #[command(verbatim_doc_comment)]
    Commit(commit::CommitArgs),
    /// Show what this host supports for mounts.
    Info(mount::InfoArgs),
    /// Serve the store to containerd as a snapshotter (proxy plugin, gRPC on a unix socket).
    #[command(verbatim_doc_comment)]
    ///
    /// containerd loads it with, in /etc/containerd/config.toml:
    ///
    ///   [proxy_plugins.strata]
    ///     type = "snapshot"
    ///     address = "/run/strata/snapshotter.sock"
    ///
    /// then `ctr run --snapshotter strata ...`, or CRI's `snapshotter = "strata"`.
    /// containerd performs the mounts it is given (overlayfs, or a bind for a single
    /// layer). When containerd's unpacker (pull, CRI) asks for a layer chain the store
    /// already holds (`strata unpack`, or another namespace's pull), it is told the
    /// snapshot exists and skips the layer. Stops cleanly on SIGTERM or SIGINT; logs to
    /// stderr, filtered by STRATA_LOG (e.g. `debug`).
    Snapshotter(snapshotter::SnapshotterArgs),
    /// Benchmark strata against the tools people use today, side by side.
    Bench(bench::BenchArgs),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self, root: &store::RootArgs) -> anyhow::Result<()> {
        match self {
            Command::Apply(args) => apply::run(args),
            Command::Unpack(args) => unpack::run(args, root),
            Command::Images(args) => images::list(args, root),
            Command::Rmi(args) => images::rmi(args, root),
            Command::Snapshots(args) => snapshots::run(args, root),
            Command::Gc(args) => images::gc(args, root),
            Command::Mount(args) => mount::mount(args, root),
            Command::Umount(args) => mount::umount(args, root),
            Command::Ps(args) => mount::ps(args, root),
            Command::Info(args) => mount::info(args, root),
            Command::Diff(args) => commit::diff(args, root),
            Command::Commit(args) => commit::commit(args, root),
            Command::Snapshotter(args) => snapshotter::run(args, root),
            Command::Bench(args) => bench::run(args),
        }
    }
}
