//! The snapshotter's request handling: any bytes decoded as one of containerd's
//! Snapshots requests (the first byte picks the RPC) and served by strata's service on a
//! real store. Errors are fine (they go back to containerd as gRPC codes); a panic is not.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use strata_snapshotter::proto::containerd::services::snapshots::v1 as pb;
use strata_snapshotter::proto::containerd::services::snapshots::v1::snapshots_server::Snapshots;
use strata_snapshotter::{Options, Snapshotter};
use tonic::Request;

struct World {
    runtime: tokio::runtime::Runtime,
    service: Snapshotter,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(strata_store::Store::open(dir.path().join("store")).expect("store"));
        // A committed chain and an active snapshot for requests to find.
        store.prepare("a", None, Default::default()).expect("prepare");
        store.commit("base", "a").expect("commit");
        store.prepare("active", Some("base"), Default::default()).expect("prepare");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        World { runtime, service: Snapshotter::new(store, Options::default()), _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let w = world();
    let s = &w.service;
    w.runtime.block_on(async {
        match which % 10 {
            0 | 1 => {
                if let Ok(r) = pb::PrepareSnapshotRequest::decode(bytes) {
                    let _ = s.prepare(Request::new(r)).await;
                }
            }
            2 => {
                if let Ok(r) = pb::ViewSnapshotRequest::decode(bytes) {
                    let _ = s.view(Request::new(r)).await;
                }
            }
            3 => {
                if let Ok(r) = pb::MountsRequest::decode(bytes) {
                    let _ = s.mounts(Request::new(r)).await;
                }
            }
            4 => {
                if let Ok(r) = pb::CommitSnapshotRequest::decode(bytes) {
                    let _ = s.commit(Request::new(r)).await;
                }
            }
            5 => {
                if let Ok(r) = pb::StatSnapshotRequest::decode(bytes) {
                    let _ = s.stat(Request::new(r)).await;
                }
            }
            6 => {
                if let Ok(r) = pb::UpdateSnapshotRequest::decode(bytes) {
                    let _ = s.update(Request::new(r)).await;
                }
            }
            7 => {
                if let Ok(r) = pb::ListSnapshotsRequest::decode(bytes) {
                    let _ = s.list(Request::new(r)).await;
                }
            }
            8 => {
                if let Ok(r) = pb::UsageRequest::decode(bytes) {
                    let _ = s.usage(Request::new(r)).await;
                }
            }
            _ => {
                if let Ok(r) = pb::RemoveSnapshotRequest::decode(bytes) {
                    // Never the fixtures other requests look for.
                    if !matches!(r.key.as_str(), "base" | "active") {
                        let _ = s.remove(Request::new(r)).await;
                    }
                }
            }
        }
    });
});
