//! Unpacking an image's layers into the store, one committed snapshot per ChainID.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::Store;
use super::db;
use super::model::{Info, Kind};
use super::staging::Staging;
use crate::error::{Error, Result};
use strata_core::Digest;
use strata_core::ovl::XattrNamespace;
use strata_core::sys;
use strata_core::{ApplyBuilder, ApplyReport, Mode};

/// Opens a layer blob for reading.
pub type OpenBlob<'a> = Box<dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync + 'a>;

/// One layer to unpack: how to read it and the digests that check it.
pub struct LayerSpec<'a> {
    /// The uncompressed digest (from the image config).
    pub diff_id: Digest,
    /// The blob digest, when the image format records one.
    pub digest: Option<Digest>,
    /// Opens the blob.
    pub open: OpenBlob<'a>,
}

impl std::fmt::Debug for LayerSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerSpec")
            .field("diff_id", &self.diff_id)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// Progress of an unpack, reported as it happens.
#[derive(Debug)]
pub enum LayerEvent<'r> {
    /// Layer `index` was already in the store.
    Reused { index: usize, chain: &'r Digest },
    /// Layer `index` is being applied.
    Started { index: usize, chain: &'r Digest },
    /// Layer `index` was applied and committed.
    Committed { index: usize, chain: &'r Digest, report: &'r ApplyReport },
}

/// What an unpack did, per layer (bottom first).
#[derive(Debug, Clone)]
pub struct UnpackOutcome {
    /// The ChainID of each layer.
    pub chains: Vec<Digest>,
    /// The apply report of each layer this call unpacked (`None`: reused).
    pub reports: Vec<Option<ApplyReport>>,
}

/// Options of [`Store::unpack`].
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Layers applied at once (each also decompresses on its own thread).
    pub jobs: usize,
    /// The namespace to write overlay markers in (`None`: the store's, which is what
    /// its mounts read; `trusted` as root, `user` otherwise). Recorded per snapshot.
    pub xattrs: Option<XattrNamespace>,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions { jobs: std::thread::available_parallelism().map_or(1, |n| n.get()), xattrs: None }
    }
}

type Staged = Result<(Staging, ApplyReport)>;

impl Store {
    /// Unpacks `layers` (bottom first) into committed snapshots keyed by ChainID,
    /// reusing those already present.
    ///
    /// With one job, each layer is applied in overlay form into a staging dir with its
    /// committed parents (which supply implied-directory metadata and lower hardlink
    /// targets). With more, up to `jobs` layers are applied at once without parents
    /// ([`ApplyBuilder::defer_lower`]); then, in chain order, each is finished against its
    /// now-committed parents and committed, which gives the same trees. Every commit is
    /// a sync, a rename and a record in one transaction; if another process committed the
    /// same chain meanwhile, the staged copy is discarded: one snapshot per chain.
    ///
    /// # Errors
    /// A layer is corrupt, hostile or does not match its digests ([`Error::Layer`] names
    /// it; nothing of it becomes visible, the layers below it stay committed), or the
    /// store fails.
    pub fn unpack(
        &self,
        layers: &[LayerSpec<'_>],
        options: UnpackOptions,
        on_event: &(dyn Fn(LayerEvent<'_>) + Sync),
    ) -> Result<UnpackOutcome> {
        let xattrs = options.xattrs.unwrap_or(self.native);
        let mut chains: Vec<Digest> = Vec::with_capacity(layers.len());
        for layer in layers {
            let chain = Digest::chain(chains.last(), &layer.diff_id);
            chains.push(chain);
        }
        let mut todo = Vec::new();
        for (index, chain) in chains.iter().enumerate() {
            if !self.has_chain(chain)? {
                todo.push(index);
            }
        }
        let slots: Vec<Mutex<Option<Staged>>> = layers.iter().map(|_| Mutex::new(None)).collect();
        let ready = Condvar::new();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let parallel = options.jobs > 1 && todo.len() > 1;
        let workers = if parallel { options.jobs.min(todo.len()) } else { 0 };
        let mut reports: Vec<Option<ApplyReport>> = Vec::with_capacity(layers.len());

        let committed = std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while let Some(&index) = todo.get(next.fetch_add(1, Ordering::SeqCst)) {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        on_event(LayerEvent::Started { index, chain: &chains[index] });
                        let staged = self.stage(&layers[index], &[], xattrs, true);
                        *lock(&slots[index]) = Some(staged);
                        ready.notify_all();
                    }
                });
            }
            let result = (|| -> Result<()> {
                // The lower dirs of the chain so far, top-most first: built one layer at a
                // time (one row read each) rather than walking the whole chain per layer.
                let mut below: Vec<PathBuf> = Vec::new();
                for (index, layer) in layers.iter().enumerate() {
                    let chain = &chains[index];
                    if !todo.contains(&index) {
                        on_event(LayerEvent::Reused { index, chain });
                        reports.push(None);
                        below = self.stack_on(&chain.to_string(), below)?;
                        continue;
                    }
                    let parent = index.checked_sub(1).map(|i| &chains[i]);
                    let staged = if parallel {
                        let mut slot = lock(&slots[index]);
                        while slot.is_none() {
                            slot = ready.wait(slot).unwrap_or_else(std::sync::PoisonError::into_inner);
                        }
                        slot.take().unwrap_or_else(|| Err(Error::Options("layer result missing".into())))
                    } else {
                        on_event(LayerEvent::Started { index, chain });
                        self.stage(layer, &below, xattrs, false)
                    };
                    let report = self
                        .finish_and_commit(staged, chain, parent, &below, xattrs)
                        .map_err(|e| layer_error(index, layers.len(), layer, e))?;
                    on_event(LayerEvent::Committed { index, chain, report: &report });
                    reports.push(Some(report));
                    below = self.stack_on(&chain.to_string(), below)?;
                }
                Ok(())
            })();
            if result.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            result
        });
        // Workers have stopped; drop what they staged past a failure.
        for slot in &slots {
            if let Some(Ok((staging, _))) = lock(slot).take() {
                staging.discard()?;
            }
        }
        committed?;
        Ok(UnpackOutcome { chains, reports })
    }

    /// Applies a layer into a fresh staging dir: with its committed parents' dirs
    /// (top-most first), or deferring the lower-layer work (parallel unpack).
    fn stage(&self, layer: &LayerSpec<'_>, parents: &[PathBuf], xattrs: XattrNamespace, defer: bool) -> Staged {
        let staging = Staging::create(&self.staging_root())?;
        let result = (|| -> Result<ApplyReport> {
            let mut builder = ApplyBuilder::new(Mode::Overlay)
                .xattr_namespace(xattrs)
                .expect_diff_id(layer.diff_id.clone())
                .defer_lower(defer);
            if let Some(digest) = &layer.digest {
                builder = builder.expect_digest(digest.clone());
            }
            for lower in parents {
                builder = builder.parent(lower);
            }
            let blob = (layer.open)().map_err(|source| Error::Io {
                op: "open layer blob",
                path: staging.path.clone(),
                source,
            })?;
            Ok(builder.build()?.apply(blob, &staging.fs())?)
        })();
        match result {
            Ok(report) => Ok((staging, report)),
            Err(err) => Err(match staging.discard() {
                Ok(()) => err,
                Err(cleanup) => Error::Options(format!("{err}; and removing its staging dir failed: {cleanup}")),
            }),
        }
    }

    /// Resolves deferred lower-layer work against the committed parents, then commits.
    fn finish_and_commit(
        &self,
        staged: Staged,
        chain: &Digest,
        parent: Option<&Digest>,
        parents: &[PathBuf],
        xattrs: XattrNamespace,
    ) -> Result<ApplyReport> {
        let (staging, report) = staged?;
        let finished = (|| -> Result<()> {
            if !report.deferred.is_empty() {
                let applier = ApplyBuilder::new(Mode::Overlay).xattr_namespace(xattrs).defer_lower(true).build()?;
                applier.resolve_deferred(&staging.fs(), parents, &report.deferred)?;
            }
            Ok(())
        })();
        if let Err(err) = finished {
            staging.discard()?;
            return Err(err);
        }
        self.commit_staged(staging, chain, parent, report.root_opaque, xattrs)?;
        Ok(report)
    }

    /// Syncs a staged layer, then renames it into `snapshots/` and records it in one
    /// transaction; a chain already recorded (another process won) discards the copy.
    fn commit_staged(
        &self,
        staging: Staging,
        chain: &Digest,
        parent: Option<&Digest>,
        root_opaque: bool,
        xattrs: XattrNamespace,
    ) -> Result<()> {
        let fs = staging.fs();
        sys::sync_filesystem(&fs).map_err(|source| Error::Io { op: "syncfs", path: fs.clone(), source })?;
        let target = self.snapshots_root().join(&staging.token);
        let key = chain.to_string();
        let committed =
            self.write("commit layer", |tx| {
                if db::get(tx, &key)?.is_some() {
                    return Ok(false);
                }
                std::fs::rename(&staging.path, &target).map_err(|source| Error::Io {
                    op: "rename staged layer",
                    path: target.clone(),
                    source,
                })?;
                // The rename itself must be durable before the row that names it.
                std::fs::File::open(self.snapshots_root())
                    .and_then(|dir| dir.sync_all())
                    .map_err(|source| Error::Io { op: "fsync snapshots dir", path: target.clone(), source })?;
                let now = db::now();
                let info = Info {
                    key: key.clone(),
                    parent: parent.map(ToString::to_string),
                    kind: Kind::Committed,
                    labels: Default::default(),
                    created: now,
                    updated: now,
                    root_opaque,
                };
                db::insert(tx, &info, &staging.token)?;
                db::set_ns(tx, &key, xattrs)?;
                Ok(true)
            })?;
        if !committed {
            staging.discard()?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn layer_error(index: usize, total: usize, layer: &LayerSpec<'_>, err: Error) -> Error {
    Error::Layer { index: index + 1, total, diff_id: layer.diff_id.to_string(), source: Box::new(err) }
}
