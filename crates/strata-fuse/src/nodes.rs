//! The inode table: what the kernel holds a reference to, keyed by the stable inode
//! number we report (fuser makes the FUSE node id and `st_ino` one number).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::PathBuf;

use rustix::fs::FileType;
use rustix::io::Errno;

use crate::layers::{LayerIx, Place};
use crate::located::{Located, Redirect};

/// The FUSE root node.
pub(crate) const ROOT: u64 = 1;

/// One union entry the kernel knows.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: FileType,
    /// Where the top-most real copy is.
    pub place: Place,
    /// Directories: the lower layers merged under `place` (empty when opaque or pure upper).
    pub lowers: Vec<LayerIx>,
    /// The names it is reachable by, (parent, name); the first is used to reach the real
    /// file. Several only for hard links; empty once unlinked (open handles still work).
    pub links: Vec<(u64, OsString)>,
    pub nlookup: u64,
    /// Directories: where lower layers keep it instead of its union path (ascending by
    /// layer; empty unless it or a lower copy was renamed with `redirect_dir`).
    pub redirects: Vec<Redirect>,
    /// Known to carry no `security.capability` (set when one was asked for and absent,
    /// cleared when one is set or removed through the mount).
    pub no_capability: bool,
}

impl Node {
    /// A node the kernel holds no reference to yet, with one real copy at `place`.
    pub(crate) fn fresh(kind: FileType, place: Place) -> Node {
        Node {
            kind,
            place,
            lowers: Vec::new(),
            links: Vec::new(),
            nlookup: 0,
            redirects: Vec::new(),
            no_capability: false,
        }
    }

    /// Every layer this entry has a real copy in, top-most first.
    pub(crate) fn places(&self) -> impl Iterator<Item = Place> + '_ {
        std::iter::once(self.place).chain(self.lowers.iter().map(|&i| Place::Lower(i)))
    }

    /// overlayfs's "merge" type: a directory with more than one real copy.
    pub(crate) fn is_merged_dir(&self) -> bool {
        self.kind == FileType::Directory && !self.lowers.is_empty()
    }

    /// Whether a lower layer holds a real copy (what forbids renaming a dir: EXDEV).
    pub(crate) fn has_lower(&self) -> bool {
        matches!(self.place, Place::Lower(_)) || !self.lowers.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Nodes {
    map: HashMap<u64, Node>,
    /// (parent, name) -> node, for the names in `Node::links`.
    names: HashMap<(u64, OsString), u64>,
}

impl Nodes {
    pub(crate) fn new(root: Node) -> Nodes {
        Nodes { map: HashMap::from([(ROOT, root)]), names: HashMap::new() }
    }

    pub(crate) fn get(&self, ino: u64) -> io::Result<&Node> {
        self.map.get(&ino).ok_or_else(|| Errno::STALE.into())
    }

    pub(crate) fn get_mut(&mut self, ino: u64) -> io::Result<&mut Node> {
        self.map.get_mut(&ino).ok_or_else(|| Errno::STALE.into())
    }

    /// Records that the kernel got a reference to `ino` through (parent, name).
    pub(crate) fn remember(&mut self, ino: u64, parent: u64, name: &OsString, fresh: Node) -> &Node {
        let node = self.map.entry(ino).or_insert_with(|| Node { nlookup: 0, links: Vec::new(), ..fresh.clone() });
        node.kind = fresh.kind;
        node.place = fresh.place;
        node.lowers = fresh.lowers;
        node.redirects = fresh.redirects;
        if !node.links.iter().any(|(p, n)| *p == parent && n == name) {
            node.links.insert(0, (parent, name.clone()));
        }
        node.nlookup += 1;
        if let Some(old) = self.names.insert((parent, name.clone()), ino) {
            if old != ino {
                if let Some(stale) = self.map.get_mut(&old) {
                    stale.links.retain(|(p, n)| !(*p == parent && n == name));
                }
            }
        }
        &self.map[&ino]
    }

    /// The kernel dropped `count` references.
    pub(crate) fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT {
            return;
        }
        if let Some(node) = self.map.get_mut(&ino) {
            node.nlookup = node.nlookup.saturating_sub(count);
            if node.nlookup == 0 {
                if let Some(node) = self.map.remove(&ino) {
                    for link in node.links {
                        if self.names.get(&link) == Some(&ino) {
                            self.names.remove(&link);
                        }
                    }
                }
            }
        }
    }

    /// The node reachable by (parent, name), if the kernel holds one.
    pub(crate) fn child(&self, parent: u64, name: &OsString) -> Option<u64> {
        self.names.get(&(parent, name.clone())).copied()
    }

    /// Drops the name (parent, name) from whichever node has it.
    pub(crate) fn unlink(&mut self, parent: u64, name: &OsString) {
        if let Some(ino) = self.names.remove(&(parent, name.clone())) {
            if let Some(node) = self.map.get_mut(&ino) {
                node.links.retain(|(p, n)| !(*p == parent && n == name));
            }
        }
    }

    /// Moves the name (parent, name) to (new_parent, new_name).
    pub(crate) fn rename(&mut self, parent: u64, name: &OsString, new_parent: u64, new_name: &OsString) {
        self.unlink(new_parent, new_name);
        if let Some(ino) = self.names.remove(&(parent, name.clone())) {
            self.names.insert((new_parent, new_name.clone()), ino);
            if let Some(node) = self.map.get_mut(&ino) {
                for link in &mut node.links {
                    if link.0 == parent && &link.1 == name {
                        *link = (new_parent, new_name.clone());
                    }
                }
            }
        }
    }

    /// Gives `ino` the extra name (parent, name).
    pub(crate) fn add_link(&mut self, ino: u64, parent: u64, name: &OsStr) {
        let key = (parent, name.to_owned());
        if let Some(node) = self.map.get_mut(&ino) {
            node.links.insert(0, key.clone());
            self.names.insert(key, ino);
        }
    }

    /// Union-relative path of `ino` ("" for the root).
    pub(crate) fn path(&self, ino: u64) -> io::Result<PathBuf> {
        Ok(self.located(ino)?.path)
    }

    /// Where `ino`'s copies are in each layer.
    pub(crate) fn located(&self, ino: u64) -> io::Result<Located> {
        let mut chain = Vec::new();
        let mut redirected = false;
        let mut at = ino;
        while at != ROOT {
            let node = self.get(at)?;
            let (parent, name) = node.links.first().ok_or(Errno::NOENT)?;
            redirected |= !node.redirects.is_empty();
            chain.push((name.as_os_str(), node.redirects.as_slice()));
            at = *parent;
            if chain.len() > 4096 {
                return Err(Errno::LOOP.into());
            }
        }
        if !redirected {
            return Ok(Located::plain(chain.iter().rev().map(|(name, _)| *name).collect()));
        }
        Ok(chain.iter().rev().fold(Located::root(), |at, (name, redirects)| at.child(name, redirects)))
    }

    /// (where the parent directory is, name) of `ino`.
    pub(crate) fn locate(&self, ino: u64) -> io::Result<(Located, OsString)> {
        let node = self.get(ino)?;
        let (parent, name) = node.links.first().ok_or(Errno::NOENT)?;
        Ok((self.located(*parent)?, name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Node {
        Node::fresh(FileType::Directory, Place::Upper)
    }

    fn file() -> Node {
        Node::fresh(FileType::RegularFile, Place::Lower(0))
    }

    fn name(s: &str) -> OsString {
        OsString::from(s)
    }

    #[test]
    fn paths_follow_renames_of_parents() {
        let mut n = Nodes::new(dir());
        n.remember(10, ROOT, &name("etc"), dir());
        n.remember(11, 10, &name("passwd"), file());
        assert_eq!(n.path(11).expect("path"), PathBuf::from("etc/passwd"));
        n.rename(ROOT, &name("etc"), ROOT, &name("etc2"));
        assert_eq!(n.path(11).expect("path"), PathBuf::from("etc2/passwd"));
        assert_eq!(n.child(ROOT, &name("etc2")), Some(10));
        assert_eq!(n.child(ROOT, &name("etc")), None);
    }

    #[test]
    fn hard_links_share_a_node_and_survive_unlinking_one_name() {
        let mut n = Nodes::new(dir());
        n.remember(20, ROOT, &name("a"), file());
        n.add_link(20, ROOT, &name("b"));
        n.unlink(ROOT, &name("b"));
        assert_eq!(n.locate(20).expect("still reachable").1, name("a"));
        n.unlink(ROOT, &name("a"));
        assert!(n.locate(20).is_err(), "unlinked: no name left, but the node lives for open handles");
        assert!(n.get(20).is_ok());
    }

    #[test]
    fn forget_drops_a_node_only_when_every_lookup_is_returned() {
        let mut n = Nodes::new(dir());
        n.remember(30, ROOT, &name("x"), file());
        n.remember(30, ROOT, &name("x"), file());
        n.forget(30, 1);
        assert!(n.get(30).is_ok());
        n.forget(30, 1);
        assert!(n.get(30).is_err());
        assert_eq!(n.child(ROOT, &name("x")), None, "its name is gone with it");
        n.forget(ROOT, 100);
        assert!(n.get(ROOT).is_ok(), "the root is never forgotten");
    }

    #[test]
    fn a_rename_over_a_name_drops_the_overwritten_node_s_link() {
        let mut n = Nodes::new(dir());
        n.remember(40, ROOT, &name("old"), file());
        n.remember(41, ROOT, &name("new"), file());
        n.rename(ROOT, &name("new"), ROOT, &name("old"));
        assert_eq!(n.child(ROOT, &name("old")), Some(41));
        assert!(n.get(40).expect("still held").links.is_empty());
    }
}
