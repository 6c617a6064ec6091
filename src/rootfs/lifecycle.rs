//! Mount and unmount: every mount holds a snapshot, a writable layer mounts once, and
//! only what the store recorded is unmounted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_core::ovl::MountSpec;
use strata_image::Image;
use strata_overlay::{HostFeatures, KernelMounter, MountPlan, Mounter, OverlayOptions, is_mount_point};
use strata_store::{Kind, MountRecord, Store, UnpackOptions, UnpackOutcome};

use super::driver::{Driver, MountedWith, choose_driver};
use super::fuse::{FuseDaemon, mount_fuse};
use super::init_layer;
use super::unpack::{Progress, now, unpack_image};
use super::{Error, Result};

/// How to mount an image.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// No writable layer.
    pub read_only: bool,
    /// Which driver ([`Driver::Auto`] by default).
    pub driver: Driver,
    /// The writable layer's snapshot key (default: [`default_name`] of the target). The
    /// same name over the same image reuses the layer: what one mount wrote, the next sees.
    pub name: Option<String>,
    /// How to unpack missing layers (the namespace is always the store's own).
    pub unpack: UnpackOptions,
    /// The strata-fuse daemon to start for [`Driver::Fuse`].
    pub fuse_daemon: FuseDaemon,
    /// Files injected per container (rootfs path, source file), kept in an init layer
    /// below the writable layer so a commit never takes them (see `init_layer.rs`).
    pub init_files: Vec<(PathBuf, PathBuf)>,
}

/// A mount made by [`mount_image`].
#[derive(Debug, Clone)]
pub struct Mounted {
    /// The mount point (canonical).
    pub target: PathBuf,
    /// The writable layer's key (`None`: read-only).
    pub key: Option<String>,
    /// What the mount is.
    pub how: MountedWith,
    /// Why [`Driver::Auto`] fell back to strata-fuse, if it did.
    pub fallback: Option<String>,
    /// The unpack: chains and per-layer reports (reused layers have none).
    pub unpacked: UnpackOutcome,
}

/// The default writable-layer name for a mount point: `mount:` + its canonical path.
pub fn default_name(target: &Path) -> String {
    format!("mount:{}", target.display())
}

/// The view snapshot a read-only mount holds: `view:` + its canonical path.
pub fn view_name(target: &Path) -> String {
    format!("view:{}", target.display())
}

/// Mounts `image`'s rootfs at `target` (created if missing; never a symlink), unpacking
/// what the store lacks and recording the mount.
///
/// # Errors
/// The target is a symlink, not a directory or already a mount point; the writable
/// layer exists for another image or is mounted elsewhere (the error names where); the
/// image has no layers; a layer fails to unpack; the mount fails (then nothing of it
/// stays recorded).
pub fn mount_image(
    store: &Store,
    image: &Image,
    target: &Path,
    options: &MountOptions,
    progress: &Progress<'_>,
) -> Result<Mounted> {
    let target = prepare_target(target)?;
    let host = HostFeatures::probe(store.root());
    let (driver, fallback) = choose_driver(options.driver, &host, store.root())?;
    // Layers go in the store's own xattr namespace (user.overlay.* without root).
    let unpack = UnpackOptions { xattrs: None, ..options.unpack };
    let unpacked = unpack_image(store, image, &image.name, unpack, progress)?;
    forget_stale_mounts(store)?;
    let Some(top) = unpacked.chains.last().map(ToString::to_string) else {
        return Err(Error::Refused(format!("image {} has no layers to mount", image.name)));
    };
    let labels = BTreeMap::from([("strata.image".to_owned(), image.name.clone())]);
    // Every mount holds a snapshot, so gc, rmi and `snapshots rm` never take its layers:
    // a read-only mount a view (removed at unmount), a writable one its active snapshot.
    let (key, spec) = if options.read_only {
        let key = view_name(&target);
        if store.stat(&key).is_ok() {
            store.remove(&key)?; // left by a crash: views hold nothing worth keeping
        }
        let spec = store.view(&key, Some(&top), labels)?;
        (key, spec)
    } else {
        let key = options.name.clone().unwrap_or_else(|| default_name(&target));
        let init = init_layer::init_key(&key);
        let on_image = |parent: Option<&str>| {
            parent == Some(top.as_str())
                || parent == Some(init.as_str()) && store.stat(&init).is_ok_and(|i| i.parent.as_deref() == Some(&top))
        };
        let files = options
            .init_files
            .iter()
            .map(|(path, src)| Ok((init_layer::check_path(path)?, src.clone())))
            .collect::<Result<Vec<_>>>()?;
        let spec = match store.stat(&key) {
            Ok(info)
                if info.kind == Kind::Active && !files.is_empty() && info.parent.as_deref() == Some(top.as_str()) =>
            {
                return Err(Error::Refused(format!(
                    "writable layer {key:?} was made without init files; --init-file needs a new one (another --name, or `strata umount --rm` first)"
                )));
            }
            Ok(info) if info.kind == Kind::Active && !files.is_empty() && on_image(info.parent.as_deref()) => {
                init_layer::ensure(store, &key, &top, &files)?;
                store.mounts(&key)?
            }
            Ok(info) if info.kind != Kind::Active || !on_image(info.parent.as_deref()) => {
                return Err(Error::Refused(format!(
                    "writable layer {key:?} exists for another image ({}); pick another name or `strata snapshots rm {key}`",
                    info.parent.as_deref().unwrap_or("no parent")
                )));
            }
            Ok(_) => store.mounts(&key)?,
            Err(strata_store::Error::NotFound { .. }) if files.is_empty() => store.prepare(&key, Some(&top), labels)?,
            Err(strata_store::Error::NotFound { .. }) => {
                let parent = init_layer::ensure(store, &key, &top, &files)?;
                store.prepare(&key, Some(&parent), labels)?
            }
            Err(e) => return Err(e.into()),
        };
        (key, spec)
    };
    // The claim comes before the mount: a second mount of the same writable layer is
    // refused here, naming the first (the store checks it in one transaction).
    let record = MountRecord {
        target: target.display().to_string(),
        key: Some(key.clone()),
        image: image.name.clone(),
        driver: if driver == Driver::Fuse { "fuse" } else { "overlay" }.into(),
        read_only: options.read_only,
        created: now(),
    };
    store.record_mount(&record)?;
    let how = match mount_spec(&spec, &target, driver, host.root, &options.fuse_daemon) {
        Ok(how) => how,
        Err(err) => {
            store.forget_mount(&record.target)?;
            if options.read_only {
                store.remove(&key)?;
            }
            return Err(err);
        }
    };
    Ok(Mounted { target, key: (!options.read_only).then_some(key), how, fallback, unpacked })
}

/// Checks and creates the mount target; returns its canonical path.
fn prepare_target(target: &Path) -> Result<PathBuf> {
    let refuse = |reason: String| Error::Target { path: target.to_owned(), reason };
    // Mount targets are never followed: a symlink there could point anywhere.
    if std::fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(refuse("is a symlink; strata mounts only onto a real directory".into()));
    }
    if !target.exists() {
        std::fs::create_dir_all(target).map_err(|e| refuse(format!("cannot be created: {e}")))?;
    }
    let meta = std::fs::metadata(target).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_dir() {
        return Err(refuse("is not a directory".into()));
    }
    let canonical = std::fs::canonicalize(target).map_err(|e| refuse(format!("cannot be resolved: {e}")))?;
    if is_mount_point(&canonical) {
        return Err(refuse(format!("is already a mount point (strata umount {} first)", canonical.display())));
    }
    Ok(canonical)
}

/// Mounts `spec` at `target` with `driver`.
fn mount_spec(spec: &MountSpec, target: &Path, driver: Driver, root: bool, daemon: &FuseDaemon) -> Result<MountedWith> {
    if driver == Driver::Fuse {
        // Passthrough is asked for always; the daemon uses it where the kernel lets it.
        mount_fuse(daemon, spec, target, root, &[])?;
        return Ok(MountedWith::Fuse);
    }
    let plan = MountPlan::new(spec, &OverlayOptions::default(), target)?;
    KernelMounter.mount(&plan, target)?;
    Ok(match plan {
        MountPlan::Bind { .. } => MountedWith::Bind,
        MountPlan::Overlay { .. } => MountedWith::Overlay,
    })
}

/// Forgets the records of mounts that are gone (a plain `umount`, a reboot) and the
/// views they held, so their snapshots are free again.
///
/// # Errors
/// The store fails.
pub fn forget_stale_mounts(store: &Store) -> Result<()> {
    for record in store.mount_records()? {
        if !is_mount_point(Path::new(&record.target)) {
            release(store, &record, false)?;
        }
    }
    Ok(())
}

/// Drops a mount's record and the view a read-only mount held; with `remove_layer`, the
/// writable layer too. Returns the writable layer removed, if any.
fn release(store: &Store, record: &MountRecord, remove_layer: bool) -> Result<Option<String>> {
    store.forget_mount(&record.target)?;
    match &record.key {
        Some(key) if record.read_only => {
            if store.stat(key).is_ok() {
                store.remove(key)?;
            }
            Ok(None)
        }
        Some(key) if remove_layer && store.stat(key).is_ok() => {
            let parent = store.stat(key)?.parent;
            store.remove(key)?;
            // Its init layer goes with it (nothing else sits on it).
            if let Some(parent) =
                parent.filter(|p| *p == init_layer::init_key(key) && init_layer::is_init_layer(store, p))
            {
                store.remove(&parent)?;
            }
            Ok(Some(key.clone()))
        }
        _ => Ok(None),
    }
}

/// How to unmount.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnmountOptions {
    /// Also remove the writable layer (by default it is kept for the next mount).
    pub remove_layer: bool,
    /// Detach even if busy (`MNT_DETACH`).
    pub lazy: bool,
}

/// What [`unmount`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmounted {
    /// Whether a mount was taken down (`false`: it was already gone; only records and
    /// layers were cleaned up).
    pub was_mounted: bool,
    /// The writable layer removed, if any.
    pub removed_layer: Option<String>,
}

/// Unmounts a mount that [`mount_image`] made and forgets it.
///
/// With [`UnmountOptions::remove_layer`] and no mount recorded at `target`, removes the
/// writable layer a plain `umount` left behind (the default name's).
///
/// # Errors
/// `target` is a mount point the store did not record (never touched), nothing is
/// mounted or kept there, or the unmount fails.
pub fn unmount(store: &Store, target: &Path, options: UnmountOptions) -> Result<Unmounted> {
    let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_owned());
    let mounted = is_mount_point(&target);
    let Some(record) = store.mount_records()?.into_iter().find(|m| Path::new(&m.target) == target) else {
        if mounted {
            return Err(Error::Refused(format!(
                "{} is a mount point strata did not make (no record in the store at {}); use umount(8) for it",
                target.display(),
                store.root().display()
            )));
        }
        let key = default_name(&target);
        if options.remove_layer && store.stat(&key).is_ok() {
            store.remove(&key)?;
            return Ok(Unmounted { was_mounted: false, removed_layer: Some(key) });
        }
        return Err(Error::Refused(format!(
            "{} is not mounted by strata (and no writable layer {key:?} is kept)",
            target.display()
        )));
    };
    if mounted {
        KernelMounter.unmount(&target, options.lazy)?;
    }
    let removed_layer = release(store, &record, options.remove_layer)?;
    Ok(Unmounted { was_mounted: mounted, removed_layer })
}
