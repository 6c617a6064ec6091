//! The Snapshots service on a [`Store`]: each request runs the store's (blocking,
//! SQLite and filesystem) call on tokio's blocking pool, so parallel pulls proceed side
//! by side while SQLite serialises the writes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use strata_store::{Info, Kind, Store};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::content::{self, CRI_MANIFEST};
use crate::filter::{self, Filter};
use crate::holders;
use crate::proto::containerd::services::snapshots::v1 as pb;
use crate::proto::containerd::services::snapshots::v1::snapshots_server::Snapshots;
use crate::status::from_store;
use crate::{Driver, Options, mounts};

/// The label by which containerd's unpacker names the ChainID a Prepare is for; a
/// snapshotter that already holds that chain answers `AlreadyExists` and containerd
/// skips the layer (the remote-snapshotter protocol, `metadata/snapshot.go`).
pub const SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

/// Infos per List response message (containerd's own server sends batches too).
const LIST_BATCH: usize = 100;

/// containerd's Snapshots service over a strata store.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    store: Arc<Store>,
    driver: Driver,
    content_store: Option<Arc<PathBuf>>,
}

impl Snapshotter {
    /// The service for `store`.
    pub fn new(store: Arc<Store>, options: Options) -> Snapshotter {
        Snapshotter { store, driver: options.driver, content_store: options.content_store.map(Arc::new) }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::internal(format!("snapshot request failed: {e}")))?
    }
}

fn labels_of(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn require(what: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() { Err(Status::invalid_argument(format!("{what} must not be empty"))) } else { Ok(()) }
}

fn to_proto(info: Info) -> pb::Info {
    let kind = match info.kind {
        Kind::View => pb::Kind::View,
        Kind::Active => pb::Kind::Active,
        Kind::Committed => pb::Kind::Committed,
    };
    let time = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    pb::Info {
        name: info.key,
        parent: info.parent.unwrap_or_default(),
        kind: kind as i32,
        created_at: time(info.created),
        updated_at: time(info.updated),
        labels: info.labels.into_iter().filter(|(k, _)| !holders::is_reserved(k)).collect(),
    }
}

/// The fast path: a committed snapshot of chain `target` on `parent`, already in the
/// store (unpacked by `strata unpack`, or by containerd in another namespace). It gets
/// the ref label containerd's lookup filters on.
fn existing_chain(store: &Store, target: &str, parent: &str) -> Result<Option<String>, Status> {
    let fits = |i: &Info| i.kind == Kind::Committed && i.parent.as_deref().unwrap_or("") == parent;
    let found = match store.stat(target) {
        Ok(i) if fits(&i) => Some(i),
        _ => store.with_label(SNAPSHOT_REF, target).map_err(|e| from_store(&e))?.into_iter().find(|i| fits(i)),
    };
    let Some(found) = found else { return Ok(None) };
    let mut labels = found.labels.clone();
    labels.insert(SNAPSHOT_REF.to_owned(), target.to_owned());
    holders::adopted(&mut labels);
    store.update(&found.key, labels).map_err(|e| from_store(&e))?;
    Ok(Some(found.key))
}

type InfoStream = Pin<Box<dyn Stream<Item = Result<pb::ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for Snapshotter {
    async fn prepare(
        &self,
        request: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let r = request.into_inner();
        require("key", &r.key)?;
        let driver = self.driver;
        let content_store = self.content_store.clone();
        let mounts = self
            .run(move |store| {
                if let Some(target) = r.labels.get(SNAPSHOT_REF) {
                    if let Some(name) = existing_chain(store, target, &r.parent)? {
                        info!(key = %r.key, chain = %target, snapshot = %name, "layer already in the store: not unpacked again");
                        return Err(Status::already_exists(format!("target snapshot {target:?} exists as {name:?}")));
                    }
                    if let (Some(root), Some(manifest)) = (content_store, r.labels.get(CRI_MANIFEST)) {
                        match content::unpack_through(store, &root, manifest, target) {
                            Ok(true) => {
                                if let Some(name) = existing_chain(store, target, &r.parent)? {
                                    info!(key = %r.key, chain = %target, snapshot = %name, "unpacked by strata from containerd's content store");
                                    return Err(Status::already_exists(format!(
                                        "target snapshot {target:?} exists as {name:?}"
                                    )));
                                }
                            }
                            Ok(false) => debug!(chain = %target, %manifest, "not in the content store yet: containerd applies it"),
                            Err(e) => warn!(chain = %target, %manifest, "containerd applies the layer; unpacking it from the content store failed: {e}"),
                        }
                    }
                }
                let spec = store
                    .prepare(&r.key, non_empty(&r.parent), labels_of(r.labels))
                    .map_err(|e| from_store(&e))?;
                info!(key = %r.key, parent = %r.parent, layers = spec.lowers.len(), "prepared");
                mounts::of_snapshot(store, &r.key, &spec, driver)
            })
            .await?;
        Ok(Response::new(pb::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        request: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let r = request.into_inner();
        require("key", &r.key)?;
        let driver = self.driver;
        let mounts = self
            .run(move |store| {
                let spec = store.view(&r.key, non_empty(&r.parent), labels_of(r.labels)).map_err(|e| from_store(&e))?;
                info!(key = %r.key, parent = %r.parent, "view");
                mounts::of_snapshot(store, &r.key, &spec, driver)
            })
            .await?;
        Ok(Response::new(pb::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(&self, request: Request<pb::MountsRequest>) -> Result<Response<pb::MountsResponse>, Status> {
        let r = request.into_inner();
        let driver = self.driver;
        let mounts = self
            .run(move |store| {
                let spec = store.mounts(&r.key).map_err(|e| from_store(&e))?;
                mounts::of_snapshot(store, &r.key, &spec, driver)
            })
            .await?;
        Ok(Response::new(pb::MountsResponse { mounts }))
    }

    async fn commit(&self, request: Request<pb::CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        require("name", &r.name)?;
        self.run(move |store| {
            // Labels given at commit replace the active snapshot's (containerd's rule).
            let mut labels = if r.labels.is_empty() {
                store.stat(&r.key).map_err(|e| from_store(&e))?.labels
            } else {
                labels_of(r.labels)
            };
            holders::committed(&mut labels);
            store.commit_with_labels(&r.name, &r.key, Some(&labels)).map_err(|e| from_store(&e))?;
            info!(key = %r.key, name = %r.name, "committed");
            Ok(())
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(&self, request: Request<pb::RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.run(move |store| {
            let info = store.stat(&r.key).map_err(|e| from_store(&e))?;
            if holders::release(store, &info)? {
                info!(key = %r.key, "released by one namespace; others still hold it");
                return Ok(());
            }
            store.remove(&r.key).map_err(|e| from_store(&e))?;
            info!(key = %r.key, "removed");
            Ok(())
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let r = request.into_inner();
        let info = self.run(move |store| store.stat(&r.key).map_err(|e| from_store(&e))).await?;
        Ok(Response::new(pb::StatSnapshotResponse { info: Some(to_proto(info)) }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let r = request.into_inner();
        let new = r.info.ok_or_else(|| Status::invalid_argument("update without info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let info = self
            .run(move |store| {
                let old = store.stat(&new.name).map_err(|e| from_store(&e))?.labels;
                let mut labels = old.clone();
                if paths.is_empty() {
                    labels = labels_of(new.labels.clone());
                }
                for path in &paths {
                    if path == "labels" {
                        labels = labels_of(new.labels.clone());
                    } else if let Some(key) = path.strip_prefix("labels.") {
                        match new.labels.get(key) {
                            Some(v) => labels.insert(key.to_owned(), v.clone()),
                            None => labels.remove(key),
                        };
                    } else {
                        return Err(Status::invalid_argument(format!(
                            "cannot update {path:?} of snapshot {:?}: only labels change",
                            new.name
                        )));
                    }
                }
                holders::keep_reserved(&old, &mut labels);
                debug!(key = %new.name, "labels updated");
                store.update(&new.name, labels).map_err(|e| from_store(&e))
            })
            .await?;
        Ok(Response::new(pb::UpdateSnapshotResponse { info: Some(to_proto(info)) }))
    }

    type ListStream = InfoStream;

    async fn list(&self, request: Request<pb::ListSnapshotsRequest>) -> Result<Response<Self::ListStream>, Status> {
        let r = request.into_inner();
        let filters = r
            .filters
            .iter()
            .map(|f| Filter::parse(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        let infos = self
            .run(move |store| {
                let all = store.walk().map_err(|e| from_store(&e))?;
                Ok(all.into_iter().filter(|i| filter::any_matches(&filters, i)).map(to_proto).collect::<Vec<_>>())
            })
            .await?;
        let batches: Vec<Result<pb::ListSnapshotsResponse, Status>> =
            infos.chunks(LIST_BATCH).map(|c| Ok(pb::ListSnapshotsResponse { info: c.to_vec() })).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(&self, request: Request<pb::UsageRequest>) -> Result<Response<pb::UsageResponse>, Status> {
        let r = request.into_inner();
        let usage = self.run(move |store| store.usage(&r.key).map_err(|e| from_store(&e))).await?;
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Response::new(pb::UsageResponse { size: clamp(usage.bytes), inodes: clamp(usage.inodes) }))
    }

    async fn cleanup(&self, _request: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        let cleaned = self.run(|store| store.cleanup().map_err(|e| from_store(&e))).await?;
        info!(orphan_dirs = cleaned.orphan_dirs, staging_dirs = cleaned.staging_dirs, "cleanup");
        Ok(Response::new(()))
    }
}
