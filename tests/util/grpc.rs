//! A gRPC client of containerd's Snapshots service on a unix socket (strata's own, or
//! containerd's, which forwards to the proxy plugin).

use std::path::{Path, PathBuf};

use strata::snapshotter::proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use tonic::transport::Channel;

/// Connects to the unix socket `sock`.
pub async fn snapshots_client(sock: &Path) -> SnapshotsClient<Channel> {
    let sock: PathBuf = sock.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let sock = sock.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(sock).await?))
            }
        }))
        .await
        .expect("connect to the Snapshots socket");
    SnapshotsClient::new(channel)
}
