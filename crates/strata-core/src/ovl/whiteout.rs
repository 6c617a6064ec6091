//! Whiteouts and opaque dirs in every form strata reads, and the overlayfs form it writes.
//!
//! - **tar / aufs form** (OCI `layer.md`): `DIR/.wh.NAME` hides `DIR/NAME` of the layers
//!   below; `DIR/.wh..wh..opq` hides everything below `DIR`. strata-fuse also writes this
//!   form into an upper dir on a filesystem without device nodes or xattrs.
//! - **overlayfs form**: a char 0/0 device named `NAME`; a directory with
//!   `<namespace>.overlay.opaque=y` ([`super::XattrNamespace`]).
//!
//! Reading a layer's opaque marker consults only the mount's namespace: a marker in the
//! other namespace is ordinary user data (kernel overlayfs ignores it too), so a user
//! who may set `user.*` xattrs cannot hide lower files in a `trusted` mount.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::XattrNamespace;
use crate::sys;

/// `.wh.NAME`: a whiteout of `NAME` in the tar form.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// `.wh..wh..opq`: the opaque marker of the tar form.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of aufs metadata names (`.wh..wh.aufs`, `.wh..wh.orph`, `.wh..wh.plnk`).
pub const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
/// `.wh..wh.plnk`: aufs's hardlink directory at a layer's root.
pub const AUFS_LINK_DIR: &[u8] = b".wh..wh.plnk";
/// The value overlayfs writes for a true boolean xattr.
pub const XATTR_TRUE: &[u8] = b"y";

/// Whether a stat is an overlayfs whiteout: a char device 0/0.
pub fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// `.wh.NAME`, the tar-form whiteout of `name`.
pub fn aufs_whiteout(name: &OsStr) -> OsString {
    let mut v = WHITEOUT_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    OsString::from_vec(v)
}

/// Whether a name is reserved for tar-form markers (never shown, never created by users).
pub fn is_aufs_marker(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WHITEOUT_PREFIX)
}

/// The name a `.wh.NAME` entry whites out, or `None` for other names and the opaque marker.
pub fn whited_out_name(name: &OsStr) -> Option<&OsStr> {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER {
        return None;
    }
    bytes.strip_prefix(WHITEOUT_PREFIX).map(OsStr::from_bytes)
}

/// Whether directory `name` in `dir` (`""`: `dir` itself) hides the layers below it:
/// the opaque xattr in namespace `ns`, or a `.wh..wh..opq` file inside.
///
/// # Errors
/// A filesystem call fails (a filesystem without xattrs or a namespace this process may
/// not read is not an error: the xattr form is then absent).
pub fn is_opaque(dir: BorrowedFd<'_>, name: &OsStr, ns: XattrNamespace) -> io::Result<bool> {
    if has_opaque_xattr(dir, name, ns)? {
        return Ok(true);
    }
    let mut marker = OsString::from(name);
    if !marker.is_empty() {
        marker.push("/");
    }
    marker.push(OsStr::from_bytes(OPAQUE_MARKER));
    match rustix::fs::statat(dir, &marker, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether directory `name` in `dir` (`""`: `dir` itself) carries the opaque xattr of
/// namespace `ns`.
///
/// # Errors
/// A filesystem call fails (no xattr support, or a namespace this process may not
/// read, counts as absent).
pub fn has_opaque_xattr(dir: BorrowedFd<'_>, name: &OsStr, ns: XattrNamespace) -> io::Result<bool> {
    match sys::get_xattr(dir, name, ns.opaque_key()) {
        Ok(v) => Ok(v.as_deref() == Some(XATTR_TRUE)),
        Err(e) if xattr_unsupported(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes the overlayfs whiteout (char 0/0) for `name` in `dir`; the name must be free.
///
/// # Errors
/// `mknodat` fails (`EPERM` without `CAP_MKNOD`).
pub fn make_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0)?;
    Ok(())
}

/// Writes the tar-form whiteout `.wh.NAME` in `dir`.
///
/// # Errors
/// The marker cannot be created (it exists, or the filesystem refuses).
pub fn make_aufs_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    rustix::fs::openat(dir, aufs_whiteout(name), flags, Mode::from_raw_mode(0o600))?;
    Ok(())
}

/// Marks directory `name` in `dir` opaque with the xattr of namespace `ns`, without
/// following a symlink.
///
/// # Errors
/// The xattr cannot be set (`EPERM` for `trusted` without `CAP_SYS_ADMIN`).
pub fn make_opaque(dir: BorrowedFd<'_>, name: &OsStr, ns: XattrNamespace) -> io::Result<()> {
    sys::set_xattr_nofollow(dir, name, ns.opaque_key(), XATTR_TRUE)
}

/// Writes the tar-form opaque marker `.wh..wh..opq` inside the directory `dir`.
///
/// # Errors
/// The marker cannot be created.
pub fn make_aufs_opaque(dir: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    rustix::fs::openat(dir, OsStr::from_bytes(OPAQUE_MARKER), flags, Mode::from_raw_mode(0o600))?;
    Ok(())
}

/// `ENOTSUP` (no xattrs on this filesystem) or `EPERM` (a namespace we may not read).
pub fn xattr_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == Errno::NOTSUP.raw_os_error() || c == Errno::PERM.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(aufs_whiteout(OsStr::new("x")), OsStr::new(".wh.x"));
        assert_eq!(whited_out_name(OsStr::new(".wh.x")), Some(OsStr::new("x")));
        assert_eq!(whited_out_name(OsStr::new(".wh..wh..opq")), None);
        assert_eq!(whited_out_name(OsStr::new("x")), None);
        assert!(is_aufs_marker(OsStr::new(".wh..wh..opq")));
        assert!(!is_aufs_marker(OsStr::new(".whx")));
    }
}
