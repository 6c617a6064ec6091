//! Layer entry paths: normalisation and the whiteout naming rules (OCI image-spec
//! `layer.md`, with moby's handling of aufs metadata).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::ovl::whiteout::{AUFS_LINK_DIR, AUFS_META_PREFIX, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Linux's longest name, in bytes.
pub const NAME_MAX: usize = 255;
/// Linux's longest path, in bytes with the terminating NUL.
pub const PATH_MAX: usize = 4096;

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
    ///
    /// Names longer than `NAME_MAX` (255 bytes) and paths longer than `PATH_MAX` (4096
    /// bytes with the NUL) are refused too: no runtime could create or open them (Docker
    /// and containerd fail with ENAMETOOLONG), and the bound keeps every per-path cost
    /// of the engine small.
    pub fn parse(raw: &[u8]) -> Result<LayerPath, String> {
        let mut out = Vec::with_capacity(raw.len().min(PATH_MAX));
        for part in raw.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err("path contains '..'".into()),
                part if part.len() > NAME_MAX => {
                    return Err(format!("a name of {} bytes is longer than NAME_MAX ({NAME_MAX})", part.len()));
                }
                part if out.len() + usize::from(!out.is_empty()) + part.len() >= PATH_MAX => {
                    return Err(format!("the path is longer than PATH_MAX ({PATH_MAX} bytes)"));
                }
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

    /// A path already in normal form (rebuilt from normalised components).
    pub(crate) fn from_normalised(bytes: Vec<u8>) -> LayerPath {
        LayerPath(bytes)
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

    /// For messages (long paths shortened, see [`for_message`]).
    pub fn display(&self) -> String {
        if self.0.is_empty() { "/".into() } else { for_message(&self.0) }
    }
}

/// Bytes a message shows of each end of a long path.
const MESSAGE_END: usize = 100;

/// A path as a message shows it: whole when short, else its two ends around the byte
/// count, so a hostile 1 MiB name cannot make an unreadable 1 MiB error line.
pub fn for_message(raw: &[u8]) -> String {
    if raw.len() <= 2 * MESSAGE_END + 32 {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let head = String::from_utf8_lossy(&raw[..MESSAGE_END]);
    let tail = String::from_utf8_lossy(&raw[raw.len() - MESSAGE_END..]);
    format!("{head}...[{} bytes in all]...{tail}", raw.len())
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
        let (name_max, name_too_long) = ("n".repeat(NAME_MAX), "n".repeat(NAME_MAX + 1));
        let (deepest, too_deep) = ("a/".repeat(PATH_MAX / 2), "a/".repeat(PATH_MAX / 2 + 1));
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
            (&name_max, Ok(&name_max)),
            (&name_too_long, Err(())),
            (&deepest, Ok(&deepest[..4095])),
            (&too_deep, Err(())),
        ];
        for (raw, want) in cases {
            let got = LayerPath::parse(raw.as_bytes())
                .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
                .map_err(|_| ());
            assert_eq!(got, want.map(str::to_owned), "{raw:?}");
        }
    }

    #[test]
    fn long_paths_are_shortened_in_messages() {
        assert_eq!(for_message(b"etc/passwd"), "etc/passwd");
        let long = "a/".repeat(50_000);
        let shown = for_message(long.as_bytes());
        assert!(shown.len() < 300, "{shown}");
        assert!(shown.contains("[100000 bytes in all]"), "{shown}");
        assert!(shown.starts_with("a/a/") && shown.ends_with("/a/"), "{shown}");
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
