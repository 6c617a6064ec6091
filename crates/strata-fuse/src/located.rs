//! Where a union entry's copies are, layer by layer. Without redirects (the common case)
//! every layer holds an entry at its union path. A directory renamed with
//! `redirect_dir=on` keeps its lower contents at its old path, which its upper copy
//! names in `*.overlay.redirect`: from there down, lookups beneath it go to that path in
//! the lower layers (and a lower layer's own redirect moves them again below it).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::layers::{LayerIx, Place};

/// A redirect read on a directory: (first lower layer it applies to, the path there).
/// A redirect on the upper copy applies from lower layer 0; on lower layer `i`, from
/// `i + 1`.
pub(crate) type Redirect = (LayerIx, PathBuf);

/// The paths of one union entry in each layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Located {
    /// The union path, which is also the path in the upper dir.
    pub path: PathBuf,
    /// Where lower layers differ from `path`: (from layer, path), ascending; layer `l`
    /// uses the last entry at or above it (`from <= l`).
    lower: Vec<Redirect>,
}

impl Located {
    /// The union root, the same in every layer.
    pub(crate) fn root() -> Located {
        Located::default()
    }

    /// An entry whose copies are at its union path `path` in every layer.
    pub(crate) fn plain(path: PathBuf) -> Located {
        Located { path, lower: Vec::new() }
    }

    /// The layer-relative path of this entry's copy in `place`.
    pub(crate) fn path_in(&self, place: Place) -> &Path {
        match place {
            Place::Upper => &self.path,
            Place::Lower(l) => self.lower.iter().rev().find(|(from, _)| *from <= l).map_or(&self.path, |(_, p)| p),
        }
    }

    /// Entry `name` in this directory, carrying `redirects` (ascending by layer).
    pub(crate) fn child(&self, name: &OsStr, redirects: &[Redirect]) -> Located {
        let path = self.path.join(name);
        if self.lower.is_empty() && redirects.is_empty() {
            return Located::plain(path);
        }
        let mut froms: Vec<LayerIx> = self.lower.iter().chain(redirects).map(|(from, _)| *from).collect();
        froms.sort_unstable();
        froms.dedup();
        let lower = froms
            .into_iter()
            .map(|from| {
                // The entry's own redirect (absolute) wins over where its parent is.
                let at = match redirects.iter().rev().find(|(f, _)| *f <= from) {
                    Some((_, target)) => target.clone(),
                    None => self.path_in(Place::Lower(from)).join(name),
                };
                (from, at)
            })
            .collect();
        Located { path, lower }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_redirects_every_layer_uses_the_union_path() {
        let a = Located::root().child(OsStr::new("a"), &[]).child(OsStr::new("b"), &[]);
        assert_eq!(a.path_in(Place::Upper), Path::new("a/b"));
        assert_eq!(a.path_in(Place::Lower(7)), Path::new("a/b"));
    }

    #[test]
    fn a_moved_dir_s_children_resolve_below_its_old_path_in_lower_layers() {
        // `old/dir` renamed to `new`: the upper `new` redirects to `/old/dir`.
        let moved = Located::root().child(OsStr::new("new"), &[(0, PathBuf::from("old/dir"))]);
        let child = moved.child(OsStr::new("file"), &[]);
        assert_eq!(child.path_in(Place::Upper), Path::new("new/file"));
        assert_eq!(child.path_in(Place::Lower(0)), Path::new("old/dir/file"));
        assert_eq!(child.path_in(Place::Lower(3)), Path::new("old/dir/file"));
    }

    #[test]
    fn a_lower_layer_s_redirect_applies_below_that_layer_only() {
        // Upper `c` came from `b`; in lower layer 1, `b` had itself come from `a`.
        let c = Located::root().child(OsStr::new("c"), &[(0, PathBuf::from("b")), (2, PathBuf::from("a"))]);
        let f = c.child(OsStr::new("f"), &[]);
        assert_eq!(f.path_in(Place::Upper), Path::new("c/f"));
        assert_eq!(f.path_in(Place::Lower(0)), Path::new("b/f"));
        assert_eq!(f.path_in(Place::Lower(1)), Path::new("b/f"));
        assert_eq!(f.path_in(Place::Lower(2)), Path::new("a/f"));
        // A child with its own redirect from layer 1 down overrides its parent's there.
        let g = c.child(OsStr::new("g"), &[(1, PathBuf::from("elsewhere"))]);
        assert_eq!(g.path_in(Place::Lower(0)), Path::new("b/g"));
        assert_eq!(g.path_in(Place::Lower(1)), Path::new("elsewhere"));
        assert_eq!(g.path_in(Place::Lower(2)), Path::new("elsewhere"));
    }
}
