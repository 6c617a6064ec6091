//! What one layer did at each path it touched, as a tree of interned names.
//!
//! Whiteouts and opaque markers ask questions about a path's ancestors ("did this layer
//! write, white out or make opaque any of them?"). Sets of whole paths answer each in
//! O(depth × length): one `.wh.` entry 160k components deep cost 28 s. Here a path is a
//! chain of nodes, so every question walks the chain once: O(length). Memory is a
//! fixed 16 bytes per node plus its name, one node per distinct path the layer touched
//! (so it grows with what the layer creates on disk, never faster).
//!
//! Written by hand because the crates that intern strings keep whole strings, and the
//! path-trie crates keep one map per node (a hostile layer of a million empty
//! directories would cost ~100 bytes each there).

use std::hash::{BuildHasher, RandomState};
use std::os::unix::ffi::OsStrExt;

use hashbrown::HashTable;

use crate::path::LayerPath;

/// A path this layer touched (an index into the tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(u32);

impl NodeId {
    /// The layer root.
    pub const ROOT: NodeId = NodeId(0);
}

/// What the layer did at a path; flags combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(u8);

impl Flag {
    /// The layer wrote the path (an entry, an implied directory or a copy-up): whiteouts
    /// and opaque markers hide only lower layers, never these.
    pub const WRITTEN: Flag = Flag(1);
    /// The layer whited the path out.
    pub const WHITEOUT: Flag = Flag(2);
    /// The layer made the directory opaque.
    pub const OPAQUE: Flag = Flag(4);
    /// An implied directory whose metadata comes from a lower layer later (deferred form).
    pub const IMPLIED: Flag = Flag(8);
    /// A lower file this layer copied up (to link to it): still the lower layers' file, so
    /// a later whiteout of the path removes it, as it would in the flattened tree.
    pub const COPIED: Flag = Flag(16);
}

#[derive(Debug, Clone, Copy)]
struct Node {
    parent: u32,
    name_at: u32,
    name_len: u8,
    flags: u8,
    depth: u16,
}

/// The paths of one layer. Names are at most 255 bytes and paths at most 2048 deep
/// ([`LayerPath::parse`] refuses longer ones), so the fields above are wide enough.
#[derive(Debug)]
pub struct LayerTree {
    nodes: Vec<Node>,
    names: Vec<u8>,
    /// Node ids keyed by (parent, name). Seeded SipHash: layer input cannot aim at one bucket.
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Default for LayerTree {
    fn default() -> Self {
        LayerTree {
            nodes: vec![Node { parent: 0, name_at: 0, name_len: 0, flags: 0, depth: 0 }],
            names: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl LayerTree {
    fn name(&self, node: &Node) -> &[u8] {
        let at = node.name_at as usize;
        &self.names[at..at + usize::from(node.name_len)]
    }

    fn hash(&self, parent: u32, name: &[u8]) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    /// The child `name` of `parent`, if the layer touched it.
    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        let hash = self.hash(parent.0, name);
        self.index
            .find(hash, |&id| {
                let node = &self.nodes[id as usize];
                node.parent == parent.0 && self.name(node) == name
            })
            .map(|&id| NodeId(id))
    }

    /// The child `name` of `parent`, created if new.
    pub fn child_or_insert(&mut self, parent: NodeId, name: &[u8]) -> NodeId {
        if let Some(id) = self.child(parent, name) {
            return id;
        }
        let id = u32::try_from(self.nodes.len()).expect("fewer than 2^32 paths in one layer");
        let name_at = u32::try_from(self.names.len()).expect("less than 4 GiB of names in one layer");
        let depth = self.nodes[parent.0 as usize].depth.saturating_add(1);
        self.names.extend_from_slice(name);
        self.nodes.push(Node { parent: parent.0, name_at, name_len: name.len() as u8, flags: 0, depth });
        let hash = self.hash(parent.0, name);
        let (nodes, names, hasher) = (&self.nodes, &self.names, &self.hasher);
        self.index.insert_unique(hash, id, |&id| {
            let node = &nodes[id as usize];
            let at = node.name_at as usize;
            hasher.hash_one((node.parent, &names[at..at + usize::from(node.name_len)]))
        });
        NodeId(id)
    }

    /// The node of `path`, if the layer touched it.
    pub fn find(&self, path: &LayerPath) -> Option<NodeId> {
        path.components().try_fold(NodeId::ROOT, |at, name| self.child(at, name.as_bytes()))
    }

    /// The node of `path`, created (with its ancestors) if new.
    pub fn insert(&mut self, path: &LayerPath) -> NodeId {
        path.components().fold(NodeId::ROOT, |at, name| self.child_or_insert(at, name.as_bytes()))
    }

    /// The nodes from the root down to `path`'s deepest touched ancestor-or-self, with a
    /// flag saying whether that last node is `path` itself.
    pub fn walk(&self, path: &LayerPath) -> (Vec<NodeId>, bool) {
        let mut chain = vec![NodeId::ROOT];
        let mut at = NodeId::ROOT;
        for name in path.components() {
            match self.child(at, name.as_bytes()) {
                Some(next) => {
                    chain.push(next);
                    at = next;
                }
                None => return (chain, false),
            }
        }
        (chain, true)
    }

    /// The parent of `id` (`None` for the root).
    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        (id != NodeId::ROOT).then(|| NodeId(self.nodes[id.0 as usize].parent))
    }

    /// How many components deep `id` is (the root is 0).
    pub fn depth(&self, id: NodeId) -> usize {
        usize::from(self.nodes[id.0 as usize].depth)
    }

    /// Whether `id` carries `flag`.
    pub fn has(&self, id: NodeId, flag: Flag) -> bool {
        self.nodes[id.0 as usize].flags & flag.0 != 0
    }

    /// Sets `flag` on `id`; `false` when it was already set.
    pub fn set(&mut self, id: NodeId, flag: Flag) -> bool {
        let flags = &mut self.nodes[id.0 as usize].flags;
        let was = *flags & flag.0 != 0;
        *flags |= flag.0;
        !was
    }

    /// Clears `flag` on `id`; `true` when it was set.
    pub fn unset(&mut self, id: NodeId, flag: Flag) -> bool {
        let flags = &mut self.nodes[id.0 as usize].flags;
        let was = *flags & flag.0 != 0;
        *flags &= !flag.0;
        was
    }

    /// Whether `path` was touched and carries `flag`.
    pub fn path_has(&self, path: &LayerPath, flag: Flag) -> bool {
        self.find(path).is_some_and(|id| self.has(id, flag))
    }

    /// Every node carrying `flag`, in the order the layer first touched them.
    pub fn with_flag(&self, flag: Flag) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len() as u32).map(NodeId).filter(move |&id| self.has(id, flag))
    }

    /// The path of `id`, rebuilt (for syscalls after the fact and for messages).
    pub fn path(&self, id: NodeId) -> LayerPath {
        let mut names = Vec::with_capacity(self.depth(id));
        let mut at = id;
        while let Some(parent) = self.parent(at) {
            names.push(self.name(&self.nodes[at.0 as usize]));
            at = parent;
        }
        let mut bytes = Vec::new();
        for name in names.iter().rev() {
            if !bytes.is_empty() {
                bytes.push(b'/');
            }
            bytes.extend_from_slice(name);
        }
        LayerPath::from_normalised(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(s: &str) -> LayerPath {
        LayerPath::parse(s.as_bytes()).expect("valid path")
    }

    #[test]
    fn paths_round_trip_and_share_ancestors() {
        let mut tree = LayerTree::default();
        let abc = tree.insert(&lp("a/b/c"));
        let abd = tree.insert(&lp("a/b/d"));
        assert_eq!(tree.path(abc), lp("a/b/c"));
        assert_eq!(tree.parent(abc), tree.parent(abd));
        assert_eq!(tree.depth(abd), 3);
        assert_eq!(tree.find(&lp("a/b")), tree.parent(abc));
        assert_eq!(tree.find(&lp("a/x")), None);
        assert_eq!(tree.insert(&lp("a/b/c")), abc);
        assert_eq!(tree.path(NodeId::ROOT), LayerPath::root());
    }

    #[test]
    fn flags_and_walks() {
        let mut tree = LayerTree::default();
        let ab = tree.insert(&lp("a/b"));
        assert!(tree.set(ab, Flag::OPAQUE));
        assert!(!tree.set(ab, Flag::OPAQUE));
        assert!(tree.path_has(&lp("a/b"), Flag::OPAQUE));
        assert!(!tree.path_has(&lp("a"), Flag::OPAQUE));
        let (chain, complete) = tree.walk(&lp("a/b/c/d"));
        assert_eq!(chain.len(), 3);
        assert!(!complete);
        assert!(tree.unset(ab, Flag::OPAQUE));
        assert_eq!(tree.with_flag(Flag::OPAQUE).count(), 0);
    }
}
