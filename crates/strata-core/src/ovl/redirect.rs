//! Directory redirects (overlayfs's `redirect_dir`): a directory renamed in the union
//! keeps its lower contents where they were; its upper copy carries
//! `trusted|user.overlay.redirect` naming that place, and lookups below it continue there
//! in the lower layers. The value is either absolute from the layer root (`/a/b`) or a
//! bare name in the same parent directory (`b`); the kernel writes both, strata writes
//! absolute ones.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::XattrNamespace;
use super::whiteout::xattr_unsupported;
use crate::sys;

/// Where a redirect points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Layer-relative path.
    pub path: PathBuf,
    /// Given from the layer root (`/a/b`): overlayfs then looks it up in every layer
    /// below, not only where the parent directory has copies.
    pub absolute: bool,
}

/// Where a redirect value points.
///
/// `parent` is the layer-relative path of the directory holding the redirected entry
/// (a bare-name redirect stays in it).
///
/// # Errors
/// `EIO` for a value overlayfs would refuse too: empty, `.`/`..` or empty components,
/// a NUL byte, or a `/` in a relative value.
pub fn parse(value: &[u8], parent: &Path) -> io::Result<Target> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "invalid overlay redirect xattr");
    if value.is_empty() || value.contains(&0) {
        return Err(invalid());
    }
    let (base, rest, absolute) = match value.strip_prefix(b"/") {
        Some(rest) => (PathBuf::new(), rest, true),
        None if value.contains(&b'/') => return Err(invalid()),
        None => (parent.to_path_buf(), value, false),
    };
    let mut out = base;
    for part in rest.split(|&b| b == b'/') {
        match Path::new(OsStr::from_bytes(part)).components().next() {
            Some(Component::Normal(name)) if name.as_bytes() == part => out.push(name),
            _ => return Err(invalid()),
        }
    }
    Ok(Target { path: out, absolute })
}

/// The value for a redirect to layer-relative `path` (absolute form).
pub fn encode(path: &Path) -> Vec<u8> {
    let mut value = b"/".to_vec();
    value.extend_from_slice(path.as_os_str().as_bytes());
    value
}

/// The redirect on entry `name` in `dir`, if any, parsed against `parent` (the
/// layer-relative path of `dir`).
///
/// # Errors
/// Reading the xattr fails (a filesystem without xattrs or a namespace this process may
/// not read counts as none), or the value is invalid (see [`parse`]).
pub fn read(dir: BorrowedFd<'_>, name: &OsStr, ns: XattrNamespace, parent: &Path) -> io::Result<Option<Target>> {
    match sys::get_xattr(dir, name, ns.redirect_key()) {
        Ok(Some(value)) => parse(&value, parent).map(Some),
        Ok(None) => Ok(None),
        Err(e) if xattr_unsupported(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a redirect to layer-relative `path` on entry `name` in `dir`, without
/// following a symlink.
///
/// # Errors
/// The xattr cannot be set (`ENOTSUP` where the filesystem has no xattrs).
pub fn write(dir: BorrowedFd<'_>, name: &OsStr, ns: XattrNamespace, path: &Path) -> io::Result<()> {
    sys::set_xattr_nofollow(dir, name, ns.redirect_key(), &encode(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_relative_values_resolve_as_overlayfs_reads_them() {
        let parent = Path::new("usr/share");
        assert_eq!(parse(b"/a/b", parent).expect("absolute"), Target { path: "a/b".into(), absolute: true });
        assert_eq!(parse(b"doc", parent).expect("relative"), Target { path: "usr/share/doc".into(), absolute: false });
        assert_eq!(parse(&encode(Path::new("x/y")), parent).expect("round trip").path, PathBuf::from("x/y"));
    }

    #[test]
    fn values_that_could_leave_the_layer_or_mean_nothing_are_refused() {
        for bad in [&b""[..], b"/", b"a/b", b"..", b"/a/../b", b"/a//b", b"/./a", b"/a/", b"a\0b", b"."] {
            assert!(parse(bad, Path::new("p")).is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
    }
}
