//! Unpacking an image's layers into the store, one committed snapshot per ChainID.

use std::io::Read;

use super::Store;
use super::db;
use super::model::{Info, Kind};
use super::staging::Staging;
use crate::apply::{ApplyBuilder, ApplyReport, Mode};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::sys;

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

impl Store {
    /// Unpacks `layers` (bottom first) into committed snapshots keyed by ChainID,
    /// reusing those already present.
    ///
    /// Each layer is applied in overlay form into a staging dir (its parents, already
    /// committed, supply implied-directory metadata and lower hardlink targets), synced,
    /// then renamed and recorded in one transaction. If another process committed the
    /// same chain meanwhile, the staged copy is discarded: one snapshot per chain.
    ///
    /// # Errors
    /// A layer is corrupt, hostile or does not match its digests (the error names the
    /// layer; nothing of it becomes visible), or the store fails.
    pub fn unpack(
        &self,
        layers: &[LayerSpec<'_>],
        userxattr: bool,
        on_event: &(dyn Fn(LayerEvent<'_>) + Sync),
    ) -> Result<UnpackOutcome> {
        let mut chains: Vec<Digest> = Vec::with_capacity(layers.len());
        for layer in layers {
            let chain = Digest::chain(chains.last(), &layer.diff_id);
            chains.push(chain);
        }
        let mut reports = Vec::with_capacity(layers.len());
        for (index, layer) in layers.iter().enumerate() {
            let chain = &chains[index];
            if self.has_chain(chain)? {
                on_event(LayerEvent::Reused { index, chain });
                reports.push(None);
                continue;
            }
            on_event(LayerEvent::Started { index, chain });
            let parent = index.checked_sub(1).map(|i| &chains[i]);
            let report = self
                .unpack_one(layer, chain, parent, userxattr)
                .map_err(|e| layer_error(index, layers.len(), layer, e))?;
            on_event(LayerEvent::Committed { index, chain, report: &report });
            reports.push(Some(report));
        }
        Ok(UnpackOutcome { chains, reports })
    }

    fn unpack_one(
        &self,
        layer: &LayerSpec<'_>,
        chain: &Digest,
        parent: Option<&Digest>,
        userxattr: bool,
    ) -> Result<ApplyReport> {
        let staging = Staging::create(&self.staging_root())?;
        let result = (|| {
            let mut builder =
                ApplyBuilder::new(Mode::Overlay).userxattr(userxattr).expect_diff_id(layer.diff_id.clone());
            if let Some(digest) = &layer.digest {
                builder = builder.expect_digest(digest.clone());
            }
            if let Some(parent) = parent {
                for lower in self.mounts(&parent.to_string())?.lowers {
                    builder = builder.parent(lower);
                }
            }
            let blob = (layer.open)().map_err(|source| Error::Io {
                op: "open layer blob",
                path: staging.path.clone(),
                source,
            })?;
            builder.build()?.apply(blob, &staging.fs())
        })();
        match result {
            Ok(report) => {
                self.commit_staged(staging, chain, parent, report.root_opaque)?;
                Ok(report)
            }
            Err(err) => Err(match staging.discard() {
                Ok(()) => err,
                Err(cleanup) => Error::Options(format!("{err}; and removing its staging dir failed: {cleanup}")),
            }),
        }
    }

    /// Syncs a staged layer, then renames it into `snapshots/` and records it in one
    /// transaction; a chain already recorded (another process won) discards the copy.
    fn commit_staged(
        &self,
        staging: Staging,
        chain: &Digest,
        parent: Option<&Digest>,
        root_opaque: bool,
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
                Ok(true)
            })?;
        if !committed {
            staging.discard()?;
        }
        Ok(())
    }
}

fn layer_error(index: usize, total: usize, layer: &LayerSpec<'_>, err: Error) -> Error {
    Error::Layer { index: index + 1, total, diff_id: layer.diff_id.to_string(), source: Box::new(err) }
}
