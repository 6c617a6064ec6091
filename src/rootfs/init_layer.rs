//! The init layer: files a runtime injects into each container (Docker keeps
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` this way) in a layer of their
//! own between the image and the container's writable layer, so a commit never takes
//! them: the writable layer holds only what the container changed.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use strata_store::{Kind, Store};

use super::{Error, Result};

/// The label marking an init layer (a commit puts its layer on the init layer's parent).
pub const INIT_LABEL: &str = "strata.init-layer";

/// The init layer's key for writable layer `key`.
pub fn init_key(key: &str) -> String {
    format!("{key}:init")
}

/// Checks `PATH` of an init file: relative to the rootfs, no `..`.
///
/// # Errors
/// [`Error::Refused`] naming it.
pub fn check_path(path: &Path) -> Result<PathBuf> {
    let rel: PathBuf = path.components().filter(|c| !matches!(c, Component::RootDir | Component::CurDir)).collect();
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::Refused(format!("init file {}: give a path in the rootfs, without `..`", path.display())));
    }
    Ok(rel)
}

/// Writes `files` (rootfs path, source file) into the layer dir `dir`: parents 0755,
/// each file with its source's mode. The dir is the init layer's own (nothing else
/// writes there), so no path component can be a symlink.
fn write_files(dir: &Path, files: &[(PathBuf, PathBuf)]) -> Result<()> {
    for (path, src) in files {
        let dest = dir.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                op: "create init dir",
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::copy(src, &dest).map_err(|source| Error::Io { op: "copy init file", path: src.clone(), source })?;
    }
    Ok(())
}

/// Makes (or refreshes) the init layer of writable layer `key` on image chain `top`;
/// returns its key, the writable layer's parent.
///
/// # Errors
/// A file cannot be copied, or the store fails.
pub fn ensure(store: &Store, key: &str, top: &str, files: &[(PathBuf, PathBuf)]) -> Result<String> {
    let init = init_key(key);
    match store.stat(&init) {
        Ok(info) if info.kind == Kind::Committed && info.parent.as_deref() == Some(top) => {
            // Not mounted now (its writable layer is being mounted): refresh the files.
            write_files(&store.snapshot_dir(&init)?, files)?;
            return Ok(init);
        }
        Ok(_) => {
            return Err(Error::Refused(format!(
                "{init:?} exists but is not an init layer on this image; `strata snapshots rm {init}`"
            )));
        }
        Err(strata_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let building = format!("{init}.building");
    if store.stat(&building).is_ok() {
        store.remove(&building)?; // left by a crash
    }
    let labels = BTreeMap::from([(INIT_LABEL.to_owned(), "true".to_owned())]);
    store.prepare(&building, Some(top), labels)?;
    let written =
        write_files(&store.snapshot_dir(&building)?, files).and_then(|()| Ok(store.commit(&init, &building)?));
    if written.is_err() {
        let _ = store.remove(&building);
    }
    written.map(|()| init)
}

/// Whether snapshot `key` is an init layer.
pub fn is_init_layer(store: &Store, key: &str) -> bool {
    store.stat(key).is_ok_and(|i| i.labels.get(INIT_LABEL).is_some_and(|v| v == "true"))
}
