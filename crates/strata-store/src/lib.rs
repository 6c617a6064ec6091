//! # strata-store
//!
//! The snapshot store a runtime embeds: the containerd snapshotter model (prepare /
//! view / commit / remove / stat / update / usage / walk / mounts / cleanup) on a
//! directory. Layers unpack into committed snapshots keyed by ChainID ([`Store::unpack`],
//! in parallel), each recording the xattr namespace its overlay markers are in; a mount
//! spec always reads one namespace ([`strata_core::ovl`]). Metadata lives in SQLite (WAL,
//! bundled via rusqlite): several processes share one store with real transactions.
//!
//! ```
//! use strata_store::{Kind, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("store"))?;
//! // A writable snapshot with no parent: an upper dir and a work dir, mounted as a bind.
//! let spec = store.prepare("container-1", None, Default::default())?;
//! assert!(spec.upper.is_some() && spec.lowers.is_empty());
//! assert_eq!(store.stat("container-1")?.kind, Kind::Active);
//! store.remove("container-1")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ```text
//! <root>/                  0700
//!   metadata.db            SQLite (WAL): snapshots, labels, images
//!   snapshots/<dir>/fs     a snapshot's tree (committed layer, or active upper dir)
//!   snapshots/<dir>/work   overlayfs work dir (active snapshots)
//!   staging/<token>/       layers being unpacked, each flock'ed by its owner
//! ```
//!
//! Crash safety: a layer is unpacked into a staging dir, synced once (`syncfs`), renamed
//! into `snapshots/` and recorded in one `BEGIN IMMEDIATE` transaction. A crash at any
//! instant leaves either no snapshot or a whole one: a renamed dir whose row never
//! committed, and a staging dir whose owner died, are removed at the next open.
//! Removal deletes the row first, then the dir, for the same reason.
//!
//! Concurrency: any number of processes may use one root. SQLite serialises writers;
//! two unpacks of the same chain both stage, the first to commit wins, the second finds
//! the snapshot recorded and discards its staging dir (a reuse, not an error).

mod db;
mod error;
mod model;
mod root;
mod staging;
mod unpack;
mod usage;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, TransactionBehavior};

pub use error::{Error, Result};
pub use model::{ImageRecord, Info, Kind, MountRecord, Usage};
pub use strata_core::ovl::MountSpec;
pub use unpack::{LayerEvent, LayerSpec, UnpackOptions, UnpackOutcome};

use strata_core::Digest;
use strata_core::ovl::{self, XattrNamespace};
use strata_core::sys;

/// What [`Store::cleanup`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Snapshot dirs with no record (a crash between rename and commit, or after remove).
    pub orphan_dirs: usize,
    /// Staging dirs whose owner died.
    pub staging_dirs: usize,
}

/// A snapshot store rooted at a directory, shareable by processes and threads.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    conn: Mutex<Connection>,
    /// The namespace this store's layers are written and mounted in (see `strata_core::ovl`).
    native: XattrNamespace,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

impl Store {
    /// Opens the store at `root` (created 0700 if missing) and removes what crashed
    /// processes left behind.
    ///
    /// # Errors
    /// [`Error::UnsafeRoot`] when the root is a symlink, another user's, or writable
    /// by others (see `root.rs`); the root cannot be created; the database cannot be
    /// opened.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        root::secure(&root)?;
        let conn = db::open(&root.join("metadata.db"))?;
        let store = Store { root, conn: Mutex::new(conn), native: XattrNamespace::native() };
        store.cleanup()?;
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn staging_root(&self) -> PathBuf {
        self.root.join("staging")
    }

    fn snapshots_root(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back on drop), so a poisoned mutex is still usable.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction (this process holds the write lock
    /// from the start, so check-then-write steps cannot interleave across processes).
    fn write<T>(&self, op: &'static str, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db::err(op))?;
        let out = f(&tx)?;
        tx.commit().map_err(db::err(op))?;
        Ok(out)
    }

    fn row(&self, key: &str) -> Result<db::Row> {
        db::get(&self.conn(), key)?.ok_or_else(|| Error::NotFound { what: "snapshot", key: key.to_owned() })
    }

    /// The `fs` dir of a snapshot.
    ///
    /// # Errors
    /// The snapshot does not exist.
    pub fn snapshot_dir(&self, key: &str) -> Result<PathBuf> {
        Ok(self.snapshots_root().join(self.row(key)?.dir).join("fs"))
    }

    /// Removes orphan snapshot dirs and abandoned staging dirs.
    ///
    /// # Errors
    /// A directory cannot be read or removed.
    pub fn cleanup(&self) -> Result<Cleanup> {
        let snapshots = self.snapshots_root();
        let orphan_dirs = self.write("cleanup", |tx| {
            let known: HashSet<String> = db::all_dirs(tx)?.into_iter().collect();
            let root = sys::open_dir_nofollow(&snapshots).map_err(io("open snapshots dir", &snapshots))?;
            let readable = sys::open_child_dir_readable(root.as_fd(), OsStr::new(""))
                .map_err(io("open snapshots dir", &snapshots))?;
            let mut removed = 0;
            for name in sys::list_dir(readable.as_fd()).map_err(io("read snapshots dir", &snapshots))? {
                if !known.contains(name.to_string_lossy().as_ref()) {
                    sys::remove_all(root.as_fd(), &name).map_err(io("remove orphan snapshot dir", &snapshots))?;
                    removed += 1;
                }
            }
            Ok(removed)
        })?;
        let staging_dirs = staging::remove_abandoned(&self.staging_root())?;
        Ok(Cleanup { orphan_dirs, staging_dirs })
    }

    /// A new active (writable) snapshot over committed `parent`.
    ///
    /// # Errors
    /// `key` exists, or `parent` is missing or not committed.
    pub fn prepare(&self, key: &str, parent: Option<&str>, labels: BTreeMap<String, String>) -> Result<MountSpec> {
        self.create(key, parent, labels, Kind::Active)
    }

    /// A new read-only view of committed `parent`.
    ///
    /// # Errors
    /// As [`Store::prepare`].
    pub fn view(&self, key: &str, parent: Option<&str>, labels: BTreeMap<String, String>) -> Result<MountSpec> {
        self.create(key, parent, labels, Kind::View)
    }

    fn create(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        kind: Kind,
    ) -> Result<MountSpec> {
        let token = staging::unique_token();
        let dir = self.snapshots_root().join(&token);
        self.write("prepare snapshot", |tx| {
            if db::get(tx, key)?.is_some() {
                return Err(Error::AlreadyExists(key.to_owned()));
            }
            if let Some(parent) = parent {
                let p =
                    db::get(tx, parent)?.ok_or_else(|| Error::NotFound { what: "snapshot", key: parent.to_owned() })?;
                if p.info.kind != Kind::Committed {
                    return Err(Error::Snapshot {
                        key: parent.to_owned(),
                        reason: format!("is {}, a parent must be committed", p.info.kind),
                    });
                }
            }
            for sub in ["fs", "work"] {
                std::fs::create_dir_all(dir.join(sub)).map_err(io("create snapshot dir", &dir))?;
            }
            let now = db::now();
            let info = Info {
                key: key.to_owned(),
                parent: parent.map(str::to_owned),
                kind,
                labels,
                created: now,
                updated: now,
                root_opaque: false,
            };
            db::insert(tx, &info, &token)?;
            // An upper dir gets the markers of the mount that writes it.
            db::set_ns(tx, key, self.native)
        })?;
        self.mounts(key)
    }

    /// Commits active snapshot `key` as committed snapshot `name`.
    ///
    /// # Errors
    /// `key` is missing or not active, or `name` exists.
    pub fn commit(&self, name: &str, key: &str) -> Result<()> {
        self.commit_with_labels(name, key, None)
    }

    /// As [`Store::commit`], and when `labels` is given the committed snapshot carries
    /// those labels instead of the active one's (containerd's `Commit` with
    /// `WithLabels`), in the same transaction.
    ///
    /// # Errors
    /// As [`Store::commit`].
    pub fn commit_with_labels(&self, name: &str, key: &str, labels: Option<&BTreeMap<String, String>>) -> Result<()> {
        let fs = self.snapshot_dir(key)?;
        sys::sync_filesystem(&fs).map_err(io("syncfs", &fs))?;
        self.write("commit snapshot", |tx| {
            let row = db::get(tx, key)?.ok_or_else(|| Error::NotFound { what: "snapshot", key: key.to_owned() })?;
            if row.info.kind != Kind::Active {
                return Err(Error::Snapshot {
                    key: key.to_owned(),
                    reason: format!("is {}, only active snapshots commit", row.info.kind),
                });
            }
            if db::get(tx, name)?.is_some() {
                return Err(Error::AlreadyExists(name.to_owned()));
            }
            tx.execute(
                "UPDATE snapshots SET key = ?1, kind = 'committed', updated = ?2 WHERE key = ?3",
                rusqlite::params![name, db::now(), key],
            )
            .map_err(db::err("commit snapshot"))?;
            match labels {
                Some(labels) => db::set_labels(tx, name, labels),
                None => Ok(()),
            }
        })
    }

    /// Removes snapshot `key` and its dir.
    ///
    /// # Errors
    /// It is missing, has children, or is the top layer of a recorded image.
    pub fn remove(&self, key: &str) -> Result<()> {
        let dir = self.write("remove snapshot", |tx| {
            let row = db::get(tx, key)?.ok_or_else(|| Error::NotFound { what: "snapshot", key: key.to_owned() })?;
            let children = db::children(tx, key)?;
            if !children.is_empty() {
                return Err(Error::Snapshot {
                    key: key.to_owned(),
                    reason: format!("has {} child snapshot(s), e.g. {:?}", children.len(), children[0]),
                });
            }
            if let Some(m) = db::mounts(tx)?.into_iter().find(|m| m.key.as_deref() == Some(key)) {
                return Err(Error::Snapshot {
                    key: key.to_owned(),
                    reason: format!("is mounted at {}; unmount it first", m.target),
                });
            }
            if let Some(image) = db::images(tx)?.into_iter().find(|i| i.top_chain.as_deref() == Some(key)) {
                return Err(Error::Snapshot {
                    key: key.to_owned(),
                    reason: format!("is the top layer of image {:?}; remove the image first", image.name),
                });
            }
            tx.execute("DELETE FROM snapshots WHERE key = ?1", rusqlite::params![key])
                .map_err(db::err("remove snapshot"))?;
            Ok(row.dir)
        })?;
        // After the commit: a crash here leaves an orphan dir, removed at the next open.
        let snapshots = self.snapshots_root();
        let root = sys::open_dir_nofollow(&snapshots).map_err(io("open snapshots dir", &snapshots))?;
        let path = snapshots.join(&dir);
        sys::remove_all(root.as_fd(), OsStr::new(&dir)).map_err(io("remove snapshot dir", &path))
    }

    /// Snapshot metadata.
    ///
    /// # Errors
    /// It does not exist.
    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.row(key)?.info)
    }

    /// Replaces a snapshot's labels.
    ///
    /// # Errors
    /// It does not exist.
    pub fn update(&self, key: &str, labels: BTreeMap<String, String>) -> Result<Info> {
        self.write("update labels", |tx| {
            if db::get(tx, key)?.is_none() {
                return Err(Error::NotFound { what: "snapshot", key: key.to_owned() });
            }
            db::set_labels(tx, key, &labels)?;
            tx.execute("UPDATE snapshots SET updated = ?1 WHERE key = ?2", rusqlite::params![db::now(), key])
                .map_err(db::err("update labels"))?;
            Ok(())
        })?;
        self.stat(key)
    }

    /// Disk use of a snapshot's own dir.
    ///
    /// # Errors
    /// It does not exist, or its tree cannot be read.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let fs = self.snapshot_dir(key)?;
        usage::of(&fs).map_err(io("measure usage", &fs))
    }

    /// Writes the layer of snapshot `key`: its own dir's changes over its parents, as
    /// an OCI layer blob compressed with `compression` (see [`strata_core::diff`]).
    /// The overlay markers are read in the namespace the snapshot is recorded in.
    ///
    /// # Errors
    /// It does not exist, is not active, or the diff fails.
    pub fn diff(
        &self,
        key: &str,
        options: &strata_core::diff::DiffOptions,
        compression: strata_core::Compression,
        out: impl std::io::Write + Send,
    ) -> Result<strata_core::diff::LayerOutput> {
        let (upper, options) = self.diff_source(key, options)?;
        Ok(strata_core::diff::write_layer(&upper, &options, compression, out)?)
    }

    /// Commits active snapshot `key` as committed snapshot `name` and writes its layer
    /// blob to `out` first (containerd's Commit plus the layer an image needs): an
    /// embedding runtime's `commit` without the CLI. When the blob cannot be written,
    /// nothing is committed.
    ///
    /// # Errors
    /// As [`Store::diff`] and [`Store::commit`].
    pub fn commit_with_layer(
        &self,
        name: &str,
        key: &str,
        options: &strata_core::diff::DiffOptions,
        compression: strata_core::Compression,
        out: impl std::io::Write + Send,
    ) -> Result<strata_core::diff::LayerOutput> {
        let layer = self.diff(key, options, compression, out)?;
        self.commit(name, key)?;
        Ok(layer)
    }

    /// What snapshot `key` changed over its parents, as `docker diff` lists it.
    ///
    /// # Errors
    /// It does not exist, is not active, or a directory cannot be read.
    pub fn changes(
        &self,
        key: &str,
        options: &strata_core::diff::DiffOptions,
    ) -> Result<Vec<strata_core::diff::Change>> {
        let (upper, options) = self.diff_source(key, options)?;
        Ok(strata_core::diff::changes(&upper, &options.lowers, &options)?)
    }

    fn diff_source(
        &self,
        key: &str,
        options: &strata_core::diff::DiffOptions,
    ) -> Result<(PathBuf, strata_core::diff::DiffOptions)> {
        let row = self.row(key)?;
        if row.info.kind != Kind::Active {
            return Err(Error::Snapshot {
                key: key.to_owned(),
                reason: format!("is {}, only an active snapshot has changes to diff", row.info.kind),
            });
        }
        let xattrs = db::get_ns(&self.conn(), key)?.unwrap_or(self.native);
        let lowers = self.mounts(key)?.lowers;
        let options = strata_core::diff::DiffOptions { xattrs, lowers, ..options.clone() };
        Ok((self.snapshots_root().join(&row.dir).join("fs"), options))
    }

    /// The snapshots carrying label `name` = `value` (one indexed query, not a walk).
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn with_label(&self, name: &str, value: &str) -> Result<Vec<Info>> {
        let conn = self.conn();
        db::keys_with_label(&conn, name, value)?
            .iter()
            .filter_map(|k| db::get(&conn, k).transpose())
            .map(|r| r.map(|r| r.info))
            .collect()
    }

    /// Every snapshot, oldest first.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn walk(&self) -> Result<Vec<Info>> {
        let conn = self.conn();
        db::all_keys(&conn)?.iter().filter_map(|k| db::get(&conn, k).transpose()).map(|r| r.map(|r| r.info)).collect()
    }

    /// How to mount snapshot `key`. Every dir of the stack is first brought into the
    /// store's namespace ([`XattrNamespace::native`]): a layer unpacked with the other one
    /// (`strata unpack --userxattr` as root) has its overlay markers moved and recorded,
    /// since a mount reading one namespace ignores the other's opaque dirs.
    ///
    /// # Errors
    /// It or one of its parents does not exist; a layer's markers cannot be moved.
    pub fn mounts(&self, key: &str) -> Result<MountSpec> {
        let chain = db::chain(&self.conn(), key)?;
        let Some(top) = chain.first() else {
            return Err(Error::NotFound { what: "snapshot", key: key.to_owned() });
        };
        // The snapshot itself is a lower only once committed; overlayfs ignores a layer
        // root's opaque xattr, so the stack stops at the first opaque root instead.
        let committed = top.kind == Kind::Committed;
        let mut used = 1;
        let mut stop = committed && top.root_opaque;
        for link in &chain[1..] {
            if stop {
                break;
            }
            used += 1;
            stop = link.root_opaque;
        }
        let fs = |link: &db::Link| self.snapshots_root().join(&link.dir).join("fs");
        for link in &chain[..used] {
            self.ensure_namespace(link, &fs(link))?;
        }
        let below = if committed { 0 } else { 1 };
        let lowers = chain[below..used].iter().map(fs).collect();
        let own = self.snapshots_root().join(&top.dir);
        let xattrs = self.native;
        Ok(match top.kind {
            Kind::Active => MountSpec {
                lowers,
                upper: Some(own.join("fs")),
                work: Some(own.join("work")),
                read_only: false,
                xattrs,
            },
            Kind::View | Kind::Committed => MountSpec { lowers, upper: None, work: None, read_only: true, xattrs },
        })
    }

    /// Moves snapshot `key`'s overlay markers into the store's namespace if it was
    /// written in the other one, and records that. Idempotent if interrupted.
    fn ensure_namespace(&self, link: &db::Link, dir: &Path) -> Result<()> {
        if link.ns.is_none_or(|ns| ns == self.native) {
            return Ok(());
        }
        ovl::convert_tree(dir, self.native).map_err(io("move overlay xattrs to the store's namespace", dir))?;
        self.write("record xattr namespace", |tx| db::set_ns(tx, &link.key, self.native))
    }

    /// The lower dirs (top-most first) of committed `key`, given those of its parent:
    /// its own dir on top and, unless its root is opaque, the parent's below — the rule
    /// [`Store::mounts`] applies walking down the chain, applied one layer up.
    fn stack_on(&self, key: &str, below: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
        let row = self.row(key)?;
        let mut lowers = vec![self.snapshots_root().join(&row.dir).join("fs")];
        if !row.info.root_opaque {
            lowers.extend(below);
        }
        Ok(lowers)
    }

    /// Records (or re-points) image `record.name`.
    ///
    /// # Errors
    /// Its top chain is not a snapshot.
    pub fn record_image(&self, record: &ImageRecord) -> Result<()> {
        self.write("record image", |tx| db::put_image(tx, record))
    }

    /// Every recorded image.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        db::images(&self.conn())
    }

    /// Forgets image `name` (its layers stay until [`Store::gc`]).
    ///
    /// # Errors
    /// No such image.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        self.write("remove image", |tx| {
            let n = tx
                .execute("DELETE FROM images WHERE name = ?1", rusqlite::params![name])
                .map_err(db::err("remove image"))?;
            if n == 0 {
                return Err(Error::NotFound { what: "image", key: name.to_owned() });
            }
            Ok(())
        })
    }

    /// Removes committed snapshots no image and no active or view snapshot uses; returns
    /// their keys, children before parents.
    ///
    /// # Errors
    /// The database or a dir cannot be read or removed.
    pub fn gc(&self) -> Result<Vec<String>> {
        let all = self.walk()?;
        let by_key: BTreeMap<&str, &Info> = all.iter().map(|i| (i.key.as_str(), i)).collect();
        let mut live: HashSet<&str> = HashSet::new();
        let roots = self.images()?.into_iter().filter_map(|i| i.top_chain).collect::<Vec<_>>();
        let mut stack: Vec<&str> = roots.iter().map(String::as_str).collect();
        stack.extend(all.iter().filter(|i| i.kind != Kind::Committed).map(|i| i.key.as_str()));
        while let Some(key) = stack.pop() {
            if live.insert(key) {
                if let Some(parent) = by_key.get(key).and_then(|i| i.parent.as_deref()) {
                    stack.push(parent);
                }
            }
        }
        let mut dead: Vec<&Info> = all.iter().filter(|i| !live.contains(i.key.as_str())).collect();
        // Children first: deeper chains go before their parents.
        let depth = |i: &Info| {
            let mut d = 0;
            let mut p = i.parent.as_deref();
            while let Some(k) = p {
                d += 1;
                p = by_key.get(k).and_then(|i| i.parent.as_deref());
            }
            d
        };
        dead.sort_by_key(|i| std::cmp::Reverse(depth(i)));
        let mut removed = Vec::new();
        for info in dead {
            self.remove(&info.key)?;
            removed.push(info.key.clone());
        }
        Ok(removed)
    }

    /// Records a mount (replacing any record for the same target). This is the claim a
    /// mount holds on its snapshot: a snapshot is mounted at most once (two overlay
    /// mounts of one upper dir lose writes), so a record for the same snapshot at another
    /// target is refused, in the same transaction, naming that target. A caller that
    /// finds the other mount gone calls [`Store::forget_mount`] for it first.
    ///
    /// # Errors
    /// [`Error::Snapshot`] when the snapshot is recorded as mounted elsewhere; the
    /// database cannot be written.
    pub fn record_mount(&self, record: &MountRecord) -> Result<()> {
        self.write("record mount", |tx| {
            if let Some(key) = &record.key {
                if let Some(other) =
                    db::mounts(tx)?.into_iter().find(|m| m.key.as_ref() == Some(key) && m.target != record.target)
                {
                    return Err(Error::Snapshot {
                        key: key.clone(),
                        reason: format!("is already mounted at {} (strata umount it first)", other.target),
                    });
                }
            }
            db::put_mount(tx, record)
        })
    }

    /// Forgets the mount at `target`, returning its record.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn forget_mount(&self, target: &str) -> Result<Option<MountRecord>> {
        self.write("forget mount", |tx| {
            let found = db::mounts(tx)?.into_iter().find(|m| m.target == target);
            tx.execute("DELETE FROM mounts WHERE target = ?1", rusqlite::params![target])
                .map_err(db::err("forget mount"))?;
            Ok(found)
        })
    }

    /// Every recorded mount.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn mount_records(&self) -> Result<Vec<MountRecord>> {
        db::mounts(&self.conn())
    }

    /// Whether a committed snapshot exists for `chain`.
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn has_chain(&self, chain: &Digest) -> Result<bool> {
        Ok(db::get(&self.conn(), &chain.to_string())?.is_some())
    }
}
