//! A snapshot of a directory tree with every attribute a layer can set, for exact
//! comparisons (flat apply vs overlay mount, before vs after a hostile layer).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// One entry's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size and content hash for files; target for symlinks; rdev for devices.
    pub content: String,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub mtime: (i64, i64),
    /// Other paths sharing this inode (hardlinks), sorted.
    pub links: Vec<String>,
}

/// Path (relative, "" for the root) -> node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<String, Node>);

impl Tree {
    pub fn of(root: &Path) -> Tree {
        Self::walk(root, None)
    }

    pub fn of_excluding(root: &Path, skip_top: &str) -> Tree {
        Self::walk(root, Some(skip_top))
    }

    fn walk(root: &Path, skip_top: Option<&str>) -> Tree {
        let mut nodes = BTreeMap::new();
        let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
        let walker = walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name().into_iter();
        for entry in walker.filter_entry(|e| skip_top.is_none_or(|s| e.depth() != 1 || e.file_name() != s)) {
            let entry = entry.expect("walk");
            let rel = entry.path().strip_prefix(root).expect("under root").to_string_lossy().into_owned();
            let md =
                entry.path().symlink_metadata().unwrap_or_else(|e| panic!("lstat {}: {e}", entry.path().display()));
            let ft = md.file_type();
            let (kind, content) = if ft.is_dir() {
                ("dir", String::new())
            } else if ft.is_symlink() {
                ("symlink", std::fs::read_link(entry.path()).expect("readlink").to_string_lossy().into_owned())
            } else if ft.is_file() {
                let data =
                    std::fs::read(entry.path()).unwrap_or_else(|e| panic!("read {}: {e}", entry.path().display()));
                ("file", format!("{} bytes sha256 {:x}", data.len(), Sha256::digest(&data)))
            } else if ft.is_char_device() {
                ("char", format!("{}:{}", rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev())))
            } else if ft.is_block_device() {
                ("block", format!("{}:{}", rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev())))
            } else if ft.is_fifo() {
                ("fifo", String::new())
            } else {
                ("socket", String::new())
            };
            if !ft.is_dir() && md.nlink() > 1 {
                inodes.entry((md.dev(), md.ino())).or_default().push(rel.clone());
            }
            nodes.insert(
                rel.clone(),
                Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    content,
                    xattrs: xattrs(entry.path()),
                    mtime: (md.mtime(), md.mtime_nsec()),
                    links: Vec::new(),
                },
            );
        }
        for group in inodes.values() {
            for path in group {
                let mut others: Vec<String> = group.iter().filter(|p| *p != path).cloned().collect();
                others.sort();
                if let Some(node) = nodes.get_mut(path) {
                    node.links = others;
                }
            }
        }
        Tree(nodes)
    }

    pub fn get(&self, path: &str) -> &Node {
        self.0.get(path).unwrap_or_else(|| panic!("{path:?} missing; tree has {:?}", self.0.keys().collect::<Vec<_>>()))
    }

    pub fn has(&self, path: &str) -> bool {
        self.0.contains_key(path)
    }

    pub fn paths(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// Human-readable differences (empty when equal).
    pub fn diff(&self, other: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        for (path, a) in &self.0 {
            match other.0.get(path) {
                None => out.push(format!("only in left: {path:?} {a:?}")),
                Some(b) if a != b => out.push(format!("{path:?}:\n   left  {a:?}\n   right {b:?}")),
                Some(_) => {}
            }
        }
        for path in other.0.keys().filter(|p| !self.0.contains_key(*p)) {
            out.push(format!("only in right: {path:?} {:?}", other.0[path]));
        }
        out
    }
}

/// xattrs except overlayfs' own (the kernel hides those through a mount).
fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return out;
    };
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        let mut value = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]) {
            value.truncate(len);
            out.insert(name, value);
        }
    }
    out
}

/// The `content` string a file with these bytes has in a [`Tree`].
pub fn content_of(data: &[u8]) -> String {
    format!("{} bytes sha256 {:x}", data.len(), Sha256::digest(data))
}
