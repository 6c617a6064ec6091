//! Layer entry paths: normalisation and the whiteout naming rules (OCI image-spec
//! `layer.md`, with moby's handling of aufs metadata).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::ovl::whiteout::{AUFS_LINK_DIR, AUFS_META_PREFIX, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// A normalised path inside a layer: no `.`, `..`, empty or absolute components.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerPath(Vec<u8>);

impl LayerPath {
    /// The layer root.
    pub fn root() -> LayerPath {
        LayerPath(Vec::new())
    }

    /// Normalises a raw tar name or hardlink target: leading `/` and `./`, and `.` / empty
    /// components are dropped, so an absolute name means the same path inside the root
    /// (what Docker, containerd and umoci do; kaniko writes absolute hardlink targets).
    /// `..` is refused anywhere: resolved lexically it could disagree with the tree,
    /// where a component may be a symlink.
    ///
    /// # Errors
    /// Returns the reason when the name is refused.
    pub fn parse(raw: &[u8]) -> Result<LayerPath, String> {
        let mut out = Vec::with_capacity(raw.len());
        for part in raw.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err("path contains '..'".into()),
                part => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(part);
                }
            }
        }
        Ok(LayerPath(out))
    }

    /// The raw bytes (`a/b/c`; empty for the root).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As an `OsStr`, for syscalls relative to the layer root.
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    /// True for the layer root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent path and the last component (`None` for the root).
    pub fn split_last(&self) -> Option<(LayerPath, &OsStr)> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(slash) => (LayerPath(self.0[..slash].to_vec()), OsStr::from_bytes(&self.0[slash + 1..])),
            None => (LayerPath::root(), OsStr::from_bytes(&self.0)),
        })
    }

    /// The path of child `name`.
    pub fn join(&self, name: &[u8]) -> LayerPath {
        let mut out = self.0.clone();
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(name);
        LayerPath(out)
    }

    /// The components, root first.
    pub fn components(&self) -> impl Iterator<Item = &OsStr> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty()).map(OsStr::from_bytes)
    }

    /// The first `n` components.
    pub fn prefix(&self, n: usize) -> LayerPath {
        let end = self
            .0
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'/')
            .nth(n.saturating_sub(1))
            .map_or(self.0.len(), |(i, _)| i);
        if n == 0 { LayerPath::root() } else { LayerPath(self.0[..end].to_vec()) }
    }

    /// For messages.
    pub fn display(&self) -> String {
        if self.0.is_empty() { "/".into() } else { String::from_utf8_lossy(&self.0).into_owned() }
    }
}

/// What an entry's name means, per the whiteout rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meaning {
    /// An ordinary entry at this path.
    Plain(LayerPath),
    /// `DIR/.wh..wh..opq`: hide everything below DIR in lower layers.
    Opaque(LayerPath),
    /// `DIR/.wh.NAME`: hide DIR/NAME of lower layers.
    Whiteout(LayerPath),
    /// aufs bookkeeping at the layer root, skipped as moby does.
    AufsMeta,
    /// A file under `.wh..wh.plnk/`: kept only as a hardlink target, removed after apply.
    AufsLinkTarget(LayerPath),
}

/// Classifies a normalised path.
///
/// # Errors
/// Invalid whiteout names: `.wh.` alone, `.wh..`, `.wh...`, reserved `.wh..wh.*` names
/// away from the root, and whiteout names used as directories.
pub fn classify(path: LayerPath) -> Result<Meaning, String> {
    let parts: Vec<&[u8]> = path.as_bytes().split(|&b| b == b'/').filter(|p| !p.is_empty()).collect();
    let Some((&last, dirs)) = parts.split_last() else {
        return Ok(Meaning::Plain(path));
    };
    if let Some(&first) = parts.first() {
        if first.starts_with(AUFS_META_PREFIX) && first != OPAQUE_MARKER {
            return match first {
                AUFS_LINK_DIR => Ok(Meaning::AufsLinkTarget(path)),
                b".wh..wh.aufs" | b".wh..wh.orph" => Ok(Meaning::AufsMeta),
                _ => Err(format!("reserved whiteout metadata name {:?}", String::from_utf8_lossy(first))),
            };
        }
    }
    if let Some(dir) = dirs.iter().find(|d| d.starts_with(WHITEOUT_PREFIX)) {
        return Err(format!("whiteout name {:?} used as a directory", String::from_utf8_lossy(dir)));
    }
    let parent = path.prefix(dirs.len());
    if last == OPAQUE_MARKER {
        return Ok(Meaning::Opaque(parent));
    }
    let Some(name) = last.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(Meaning::Plain(path));
    };
    match name {
        b"" => Err("whiteout with an empty name".into()),
        b"." | b".." => Err(format!("whiteout of {:?} would escape its directory", String::from_utf8_lossy(name))),
        // `.wh..wh.*` away from the root: reserved, never a whiteout of `.wh.*`.
        n if n.starts_with(WHITEOUT_PREFIX) => {
            Err(format!("reserved whiteout metadata name {:?}", String::from_utf8_lossy(last)))
        }
        n => Ok(Meaning::Whiteout(parent.join(n))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(s: &str) -> LayerPath {
        LayerPath::parse(s.as_bytes()).expect("valid path")
    }

    #[test]
    fn normalisation() {
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("a/b", Ok("a/b")),
            ("./a/b", Ok("a/b")),
            ("a//b/./c/", Ok("a/b/c")),
            ("./", Ok("")),
            (".", Ok("")),
            ("", Ok("")),
            ("../a", Err(())),
            ("a/../../b", Err(())),
            ("a/..", Err(())),
            ("/etc/passwd", Ok("etc/passwd")),
            ("//x", Ok("x")),
            ("/", Ok("")),
            ("/../etc", Err(())),
            ("a/...", Ok("a/...")),
        ];
        for (raw, want) in cases {
            let got = LayerPath::parse(raw.as_bytes())
                .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
                .map_err(|_| ());
            assert_eq!(got, want.map(str::to_owned), "{raw:?}");
        }
    }

    #[test]
    fn whiteout_rules() {
        let cases: &[(&str, Result<Meaning, ()>)] = &[
            ("etc/passwd", Ok(Meaning::Plain(lp("etc/passwd")))),
            ("etc/.wh.passwd", Ok(Meaning::Whiteout(lp("etc/passwd")))),
            (".wh.etc", Ok(Meaning::Whiteout(lp("etc")))),
            ("etc/.wh..wh..opq", Ok(Meaning::Opaque(lp("etc")))),
            (".wh..wh..opq", Ok(Meaning::Opaque(LayerPath::root()))),
            ("a/.wh..hidden", Ok(Meaning::Whiteout(lp("a/.hidden")))),
            ("a/.wh....", Ok(Meaning::Whiteout(lp("a/...")))),
            (".wh..wh.aufs", Ok(Meaning::AufsMeta)),
            (".wh..wh.orph", Ok(Meaning::AufsMeta)),
            (".wh..wh.orph/x", Ok(Meaning::AufsMeta)),
            (".wh..wh.plnk/123.45", Ok(Meaning::AufsLinkTarget(lp(".wh..wh.plnk/123.45")))),
            ("etc/.wh.", Err(())),
            ("etc/.wh..", Err(())),
            ("etc/.wh...", Err(())),
            ("a/.wh..wh.aufs", Err(())),
            ("a/.wh..wh.plnk", Err(())),
            (".wh..wh.foo", Err(())),
            ("a/.wh.b/c", Err(())),
            ("a/.wh..wh..opq/c", Err(())),
        ];
        for (raw, want) in cases {
            let got = classify(lp(raw)).map_err(|_| ());
            assert_eq!(&got, want, "{raw:?}");
        }
    }

    #[test]
    fn split_and_prefix() {
        let p = lp("a/b/c");
        let (parent, name) = p.split_last().expect("not root");
        assert_eq!(parent, lp("a/b"));
        assert_eq!(name, "c");
        assert_eq!(p.prefix(0), LayerPath::root());
        assert_eq!(p.prefix(1), lp("a"));
        assert_eq!(p.prefix(2), lp("a/b"));
        assert_eq!(p.prefix(3), p);
        assert_eq!(LayerPath::root().split_last(), None);
    }
}
