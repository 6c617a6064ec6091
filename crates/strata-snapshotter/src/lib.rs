//! # strata-snapshotter
//!
//! strata's snapshot store as a containerd snapshotter. containerd loads external
//! snapshotters as proxy plugins: it speaks the `containerd.services.snapshots.v1.Snapshots`
//! gRPC service to a unix socket, and performs the mounts the service hands back. This
//! crate serves that service on a [`strata_store::Store`], the same store the `strata`
//! CLI uses (SQLite transactions make sharing it safe), so:
//!
//! - containerd's snapshots are strata's: `strata snapshots ls` shows them;
//! - a layer strata already holds (unpacked by `strata unpack`, or by containerd in
//!   another namespace) is never unpacked twice: Prepare answers `AlreadyExists` for the
//!   chain containerd's unpacker names in the `containerd.io/snapshot.ref` label, as
//!   remote snapshotters (stargz, nydus) do, and containerd skips the layer;
//! - with containerd's content store at hand ([`Options::content_store`]) and CRI's
//!   snapshot annotations on, layers of a pull are unpacked by strata's engine instead
//!   of applied by containerd;
//! - mounts follow containerd's overlay snapshotter (bind for a lone layer, overlayfs
//!   with `index=off` otherwise), planned by strata-overlay, or are strata-fuse unions
//!   containerd mounts through `mount.fuse3` ([`Driver::Fuse`]).
//!
//! The gRPC code is generated at build time from containerd's published `.proto`
//! contract (`proto/`) with tonic and prost; protox compiles the files in Rust, so no
//! `protoc` is needed. (The `containerd-snapshots` crate pins tonic 0.9 and its hyper 0.14
//! stack; generating from the contract keeps one current stack.)
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(strata_store::Store::open("/var/lib/strata")?);
//! let stop = async { tokio::signal::ctrl_c().await.ok(); };
//! let socket = "/run/strata/snapshotter.sock".as_ref();
//! strata_snapshotter::serve(store, socket, strata_snapshotter::Options::default(), stop).await?;
//! # Ok(()) }
//! ```
//!
//! containerd's side (`/etc/containerd/config.toml`):
//!
//! ```toml
//! [proxy_plugins.strata]
//!   type = "snapshot"
//!   address = "/run/strata/snapshotter.sock"
//! ```

mod content;
mod filter;
mod holders;
mod mounts;
mod service;
mod socket;
mod status;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use content::CRI_MANIFEST;
pub use filter::Filter;
pub use holders::HOLDERS;
pub use mounts::FUSE_TYPE;
pub use service::{SNAPSHOT_REF, Snapshotter};
pub use socket::bind;
use strata_store::Store;

/// The generated protocol types (containerd's package names as Rust modules).
pub mod proto {
    #![allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod containerd {
        pub mod types {
            tonic::include_proto!("containerd.types");
        }
        pub mod services {
            pub mod snapshots {
                pub mod v1 {
                    tonic::include_proto!("containerd.services.snapshots.v1");
                }
            }
        }
    }
}

/// How the unions handed to containerd are mounted (a lone layer, or a writable layer
/// without parents, is a bind mount either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Kernel overlayfs, as containerd's own overlay snapshotter.
    Overlay,
    /// strata-fuse through `mount.fuse3` (type [`FUSE_TYPE`]), for hosts without
    /// overlayfs.
    Fuse,
}

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// How unions are mounted.
    pub driver: Driver,
    /// containerd's content store (`/var/lib/containerd/io.containerd.content.v1.content`):
    /// when set, layers of a CRI pull are unpacked by strata from there (see
    /// [`CRI_MANIFEST`]) instead of applied by containerd.
    pub content_store: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options { driver: Driver::Overlay, content_store: None }
    }
}

/// Errors of serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("socket {}: {reason}", path.display())]
    Socket { path: PathBuf, reason: String },
    #[error("serving gRPC")]
    Transport(#[source] tonic::transport::Error),
}

/// Serves the Snapshots service for `store` on the unix socket `address` (made 0600,
/// parent dirs 0700 if missing) until `shutdown` completes; requests in flight finish
/// first, then the socket is removed.
///
/// # Errors
/// The socket cannot be made (a live snapshotter already serves it, or a non-socket is
/// in the way), or the transport fails.
pub async fn serve(
    store: Arc<Store>,
    address: &Path,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let bound = socket::bind(address)?;
    tracing::info!(address = %address.display(), store = %store.root().display(), driver = ?options.driver, content_store = ?options.content_store, "serving containerd's Snapshots service");
    let service = proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer::new(Snapshotter::new(
        store, options,
    ));
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(bound.listener()?);
    let served =
        tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, shutdown).await;
    bound.remove();
    served.map_err(Error::Transport)
}
