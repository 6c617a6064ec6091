//! Lower-layer work done after the fact, so the layers of one image can be applied in
//! parallel: each layer goes into its own dir in overlay form with no parents, and once
//! its parents are committed, [`Applier::resolve_deferred`] gives implied directories the
//! lower directories' metadata and makes the hardlinks whose targets live below.
//! The result is the same tree a sequential apply with parents gives.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::Applier;
use super::engine::Engine;
use super::lower::LowerChain;
use super::report::{Deferred, DeferredLink};
use crate::error::{Error, Result};
use crate::path::LayerPath;
use crate::sys;
use crate::tar::Entry;

impl Applier {
    /// Finishes a layer applied with [`defer_lower`](super::ApplyBuilder::defer_lower) in
    /// `target`, now that its `parents` (nearest first) exist.
    ///
    /// # Errors
    /// A deferred hardlink's target is in no lower layer either, or a filesystem call
    /// fails.
    pub fn resolve_deferred(&self, target: &Path, parents: &[PathBuf], deferred: &Deferred) -> Result<()> {
        if deferred.is_empty() {
            return Ok(());
        }
        let root = sys::open_dir_path(target).map_err(|source| Error::Io {
            op: "open layer dir",
            path: target.to_owned(),
            source,
        })?;
        let lower = LowerChain::open(parents)?;
        let resolver = Applier { defer_lower: false, ..self.clone() };
        let mut engine = Engine::new(&resolver, root.as_fd(), target, &lower);
        // Links first: they may add entries to directories whose times come last.
        let mut first_copy: HashMap<&LayerPath, LayerPath> = HashMap::new();
        for link in &deferred.links {
            engine.set_context(0, format!("hardlink {} -> {}", link.link.display(), link.target.display()));
            let entry = Entry::hardlink("", "").mtime(link.mtime.secs, link.mtime.nanos);
            engine.resolve_link(link, &entry, &mut first_copy)?;
        }
        for dir in &deferred.implied_dirs {
            engine.set_context(0, format!("implied directory {}", dir.display()));
            let Some((parent, name)) = dir.split_last() else { continue };
            let Some(parent_fd) = engine.existing_dir(&parent)? else { continue };
            let Ok(fd) = sys::open_child_dir_readable(parent_fd.as_fd(), name) else { continue };
            engine.lower_dir_metadata(dir, fd.as_fd())?;
        }
        engine.finish_dirs()
    }
}

impl<'a> Engine<'a> {
    fn resolve_link<'l>(
        &mut self,
        link: &'l DeferredLink,
        entry: &Entry,
        first_copy: &mut HashMap<&'l LayerPath, LayerPath>,
    ) -> Result<()> {
        let Some((lparent, lname)) = link.link.split_last() else { return Ok(()) };
        let Some(ldir) = self.existing_dir(&lparent)? else { return Ok(()) };
        if sys::lstat(ldir.as_fd(), lname).map_err(|e| self.io("fstatat", e))?.is_some() {
            // A later entry of the layer put something at the link's path: it wins.
            return Ok(());
        }
        self.keep_dir_times(&lparent)?;
        if let Some(copy) = first_copy.get(&link.target) {
            return self.link_existing(copy, &link.link);
        }
        // Sequentially, the lower file is copied to the target path and linked; if a later
        // entry took the target path, the link keeps the copy on its own.
        let target_free = match link.target.split_last() {
            Some((tparent, tname)) => match self.existing_dir(&tparent)? {
                Some(tdir) => sys::lstat(tdir.as_fd(), tname).map_err(|e| self.io("fstatat", e))?.is_none(),
                None => true,
            },
            None => false,
        };
        let dst = if target_free { &link.target } else { &link.link };
        if let Some((tparent, _)) = dst.split_last() {
            self.keep_dir_times(&tparent)?;
        }
        if !self.copy_up(&link.target, dst, entry)? {
            return Err(
                self.fail(format!("hardlink target {} not found in this layer or below it", link.target.display()))
            );
        }
        if target_free {
            self.link_existing(&link.target, &link.link)?;
        }
        first_copy.insert(&link.target, dst.clone());
        Ok(())
    }

    fn link_existing(&mut self, from: &LayerPath, to: &LayerPath) -> Result<()> {
        let (Some((fparent, fname)), Some((tparent, tname))) = (from.split_last(), to.split_last()) else {
            return Ok(());
        };
        let fdir = self.dir_at(&fparent, &Entry::dir("", 0o755))?;
        let tdir = self.dir_at(&tparent, &Entry::dir("", 0o755))?;
        sys::hardlink(fdir.as_fd(), fname, tdir.as_fd(), tname).map_err(|e| self.io("linkat", e))
    }

    /// Records a directory's current times so the fix-up leaves them as the apply set them.
    fn keep_dir_times(&mut self, dir: &LayerPath) -> Result<()> {
        let Some(fd) = self.existing_dir(dir)? else { return Ok(()) };
        let st = sys::lstat(fd.as_fd(), OsStr::new("")).map_err(|e| self.io("fstatat", e))?;
        if let Some(st) = st {
            let id = self.tree.insert(dir);
            self.dir_finish.keep(id, || Ok(sys::stat_times(&st))).map_err(|e| self.io("fstatat", e))?;
        }
        Ok(())
    }
}
