//! Which xattr namespace a layer dir keeps its overlay markers in.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::sys;

/// Where overlayfs keeps its markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XattrNamespace {
    /// `trusted.overlay.*`: the default, needs `CAP_SYS_ADMIN`.
    Trusted,
    /// `user.overlay.*`: overlayfs's `userxattr` option, for rootless mounts.
    User,
}

/// Whether `key` is one of overlayfs's own xattrs in either namespace
/// (`trusted.overlay.*`, `user.overlay.*`): markers the union reads, never user data a
/// mount may show or let a user set (a user's `user.overlay.opaque` would hide the
/// layers below after a remount in that namespace).
pub fn is_overlay_xattr(key: &[u8]) -> bool {
    [XattrNamespace::Trusted, XattrNamespace::User].iter().any(|ns| key.starts_with(ns.prefix().as_bytes()))
}

impl XattrNamespace {
    /// What this process can write: `trusted` as root, `user` otherwise.
    pub fn native() -> XattrNamespace {
        if sys::effective_ids().0 == 0 { XattrNamespace::Trusted } else { XattrNamespace::User }
    }

    /// The key prefix, `trusted.overlay.` or `user.overlay.`.
    pub fn prefix(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.",
            XattrNamespace::User => "user.overlay.",
        }
    }

    /// The opaque-dir key.
    pub fn opaque_key(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.opaque",
            XattrNamespace::User => "user.overlay.opaque",
        }
    }

    /// The directory-redirect key (see [`super::redirect`]).
    pub fn redirect_key(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.redirect",
            XattrNamespace::User => "user.overlay.redirect",
        }
    }

    /// `trusted` or `user` (the form stored in the database).
    pub fn name(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted",
            XattrNamespace::User => "user",
        }
    }

    /// Parses [`XattrNamespace::name`].
    pub fn parse(name: &str) -> Option<XattrNamespace> {
        match name {
            "trusted" => Some(XattrNamespace::Trusted),
            "user" => Some(XattrNamespace::User),
            _ => None,
        }
    }

    fn other(self) -> XattrNamespace {
        match self {
            XattrNamespace::Trusted => XattrNamespace::User,
            XattrNamespace::User => XattrNamespace::Trusted,
        }
    }
}

impl fmt::Display for XattrNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Moves every overlay marker of the tree at `root` into namespace `to`: each
/// `<other>.overlay.*` xattr is set as `<to>.overlay.*` and then removed, so an
/// interrupted run leaves both keys and a second run finishes it. Walks directories by
/// fd, never following a symlink; returns how many markers moved.
///
/// # Errors
/// What the kernel says (`EPERM` writing `trusted.*` without `CAP_SYS_ADMIN`).
pub fn convert_tree(root: &std::path::Path, to: XattrNamespace) -> io::Result<u64> {
    let dir = sys::open_dir_nofollow(root)?;
    let dir = sys::open_child_dir_readable(dir.as_fd(), OsStr::new(""))?;
    convert_dir(dir.as_fd(), to.other(), to)
}

fn convert_dir(dir: BorrowedFd<'_>, from: XattrNamespace, to: XattrNamespace) -> io::Result<u64> {
    let mut moved = move_markers(dir, OsStr::new("."), from, to)?;
    for name in sys::list_dir(dir)? {
        match sys::open_child_dir_readable(dir, &name) {
            Ok(child) => moved += convert_dir(child.as_fd(), from, to)?,
            // Not a directory (or a symlink): markers on files (origin, metacopy) move too.
            Err(_) => moved += move_markers(dir, &name, from, to)?,
        }
    }
    Ok(moved)
}

fn move_markers(dir: BorrowedFd<'_>, name: &OsStr, from: XattrNamespace, to: XattrNamespace) -> io::Result<u64> {
    let mut moved = 0;
    for key in sys::list_xattrs(dir, name)? {
        let Some(rest) = key.strip_prefix(from.prefix()) else { continue };
        if let Some(value) = sys::get_xattr(dir, name, &key)? {
            sys::set_xattr_nofollow(dir, name, &format!("{}{rest}", to.prefix()), &value)?;
            sys::remove_xattr_nofollow(dir, name, key.as_str())?;
            moved += 1;
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for ns in [XattrNamespace::Trusted, XattrNamespace::User] {
            assert_eq!(XattrNamespace::parse(ns.name()), Some(ns));
            assert!(ns.opaque_key().starts_with(ns.prefix()));
        }
        assert_eq!(XattrNamespace::parse("security"), None);
    }
}
