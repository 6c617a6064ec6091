//! Directory attributes set after a layer's entries: times (a child written later would
//! change them) and modes that had to stay writable meanwhile.

use std::collections::HashMap;

use super::tree::{LayerTree, NodeId};
use crate::tar::Timestamp;

/// What to set on a directory once every entry is written.
#[derive(Debug, Default, Clone, Copy)]
pub struct DirFinal {
    /// Access and modification times.
    pub times: Option<(Timestamp, Timestamp)>,
    /// The mode, when it was deferred (unprivileged: the dir had to stay writable).
    pub mode: Option<u32>,
}

/// Directory attributes that must wait until the children are written. For times,
/// explicit entries win over times recorded for implied or pre-existing directories.
#[derive(Debug, Default)]
pub struct DirFinish(HashMap<NodeId, DirFinal>);

impl DirFinish {
    /// Records the times a directory entry of this layer asks for.
    pub fn set(&mut self, path: NodeId, atime: Timestamp, mtime: Timestamp) {
        self.0.entry(path).or_default().times = Some((atime, mtime));
    }

    /// Records times to restore unless the layer sets its own.
    pub fn keep(
        &mut self,
        path: NodeId,
        times: impl FnOnce() -> std::io::Result<(Timestamp, Timestamp)>,
    ) -> std::io::Result<()> {
        if self.0.get(&path).is_none_or(|f| f.times.is_none()) {
            let t = times()?;
            self.0.entry(path).or_default().times = Some(t);
        }
        Ok(())
    }

    /// Records a mode to set last.
    pub fn defer_mode(&mut self, path: NodeId, mode: u32) {
        self.0.entry(path).or_default().mode = Some(mode);
    }

    /// Deepest first, so a restrictive parent mode never blocks reaching a child.
    pub fn into_sorted(self, tree: &LayerTree) -> Vec<(NodeId, DirFinal)> {
        let mut all: Vec<_> = self.0.into_iter().collect();
        all.sort_by_key(|&(id, _)| std::cmp::Reverse(tree.depth(id)));
        all
    }
}
