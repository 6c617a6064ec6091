//! `strata snapshotter`: containerd's snapshotter, served from the strata store.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use super::store::RootArgs;
use strata::rootfs::{self, Driver};

/// Options of `strata snapshotter` (the help text is on the subcommand).
#[derive(Debug, clap::Args)]
pub struct SnapshotterArgs {
    /// The unix socket to serve on (created 0600, parent dirs 0700).
    #[arg(long, value_name = "PATH", default_value = "/run/strata/snapshotter.sock")]
    address: PathBuf,
    /// How containerd mounts unions: kernel overlayfs, or strata-fuse through
    /// `mount.fuse3` (needs fuse3 and `strata-fuse` on containerd's PATH); auto picks
    /// overlayfs when it works here.
    #[arg(long, value_enum, default_value_t = Driver::Auto)]
    driver: Driver,
    /// containerd's content store (e.g. /var/lib/containerd/io.containerd.content.v1.content).
    /// With CRI's snapshot annotations on (`disable_snapshot_annotations = false`), strata
    /// unpacks the layers of a pull from there with its own engine (every fetched layer
    /// at once, digests verified) instead of letting containerd apply them one by one.
    #[arg(long, value_name = "DIR")]
    content_store: Option<PathBuf>,
}

pub fn run(args: SnapshotterArgs, root: &RootArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    let store = Arc::new(root.open()?);
    let host = strata_overlay::HostFeatures::probe(store.root());
    let (driver, fallback) = rootfs::choose_driver(args.driver, &host, store.root())?;
    if let Some(why) = fallback {
        tracing::warn!("{why}: containerd gets strata-fuse mounts (mount.fuse3 and strata-fuse must be on its PATH)");
    }
    let driver = match driver {
        Driver::Fuse => strata_snapshotter::Driver::Fuse,
        Driver::Overlay | Driver::Auto => strata_snapshotter::Driver::Overlay,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-snapshotter")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let stop = async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot watch SIGTERM: {e}");
                    return std::future::pending().await;
                }
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: finishing requests in flight, then stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing requests in flight, then stopping"),
            }
        };
        let options = strata_snapshotter::Options { driver, content_store: args.content_store };
        strata_snapshotter::serve(store, &args.address, options, stop).await
    })
    .with_context(|| format!("serving the snapshotter on {}", args.address.display()))
}
