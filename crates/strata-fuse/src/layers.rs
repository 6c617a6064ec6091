//! The layer directories under a union mount and how to read one layer's entries:
//! whiteouts and opaque markers in every form, fd-relative and never following symlinks.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use strata_core::sys;

/// Index of a lower layer, 0 = top-most.
pub(crate) type LayerIx = u16;

/// Where the top-most real copy of a union entry lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Place {
    Upper,
    Lower(LayerIx),
}

/// What one layer says about a name.
#[derive(Debug)]
pub(crate) enum Probe {
    /// Nothing here: look further down.
    Absent,
    /// Deleted here: nothing below is visible.
    Whiteout,
    Found(Stat),
}

/// AUFS-style whiteout prefix (`.wh.NAME`), as in OCI layer tarballs.
pub(crate) const WH_PREFIX: &[u8] = b".wh.";
/// AUFS-style opaque marker inside a directory.
pub(crate) const WH_OPAQUE: &str = ".wh..wh..opq";

/// How this mount writes whiteouts and opaque markers into the upper dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteForms {
    /// Whiteouts as char 0/0 devices (overlayfs form); else `.wh.NAME` files.
    pub chardev_whiteouts: bool,
    /// Opaque dirs by xattr (overlayfs form); else a `.wh..wh..opq` file inside.
    pub opaque_xattr: bool,
}

/// An open layer directory, shared by lookups in it.
#[derive(Debug)]
pub(crate) struct LayerDir {
    fd: OwnedFd,
    /// Whether it holds any AUFS whiteout (`.wh.NAME`): when not, a name absent here
    /// needs no second probe for its `.wh.` form. Layers written by strata and
    /// containerd use char 0/0 devices, so this is almost always false.
    aufs: OnceLock<bool>,
}

impl AsFd for LayerDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl LayerDir {
    pub(crate) fn has_aufs_whiteouts(&self) -> io::Result<bool> {
        if let Some(&known) = self.aufs.get() {
            return Ok(known);
        }
        let readable =
            rustix::fs::openat(&self.fd, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let mut found = false;
        for entry in rustix::fs::Dir::new(readable)? {
            let name = entry?.file_name().to_bytes().to_vec();
            if name.starts_with(WH_PREFIX) && name != WH_OPAQUE.as_bytes() {
                found = true;
                break;
            }
        }
        Ok(*self.aufs.get_or_init(|| found))
    }
}

/// Open layer directories by (place, union path). Lower layers never change; upper
/// entries go stale only when a directory is renamed or removed, and every such change
/// clears the cache ([`Layers::forget_dirs`]).
#[derive(Debug, Default)]
struct DirCache {
    map: HashMap<(Place, PathBuf), Arc<LayerDir>>,
}

/// Bound on cached directories (each holds an fd).
const DIR_CACHE_MAX: usize = 4096;

/// The open layer roots of one mount.
#[derive(Debug)]
pub(crate) struct Layers {
    lowers: Vec<OwnedFd>,
    upper: Option<OwnedFd>,
    work: Option<OwnedFd>,
    /// `trusted.overlay.` (privileged) or `user.overlay.` (rootless): the namespace of
    /// the xattrs we write, and the one hidden from users.
    pub(crate) prefix: &'static str,
    pub(crate) forms: WriteForms,
    dirs: Mutex<DirCache>,
}

impl Layers {
    pub(crate) fn open(
        lowers: &[impl AsRef<Path>],
        upper: Option<&Path>,
        work: Option<&Path>,
        prefix: &'static str,
    ) -> io::Result<Layers> {
        let open = |p: &Path| {
            sys::open_dir_path(p).map_err(|e| io::Error::new(e.kind(), format!("layer directory {}: {e}", p.display())))
        };
        let lowers = lowers.iter().map(|p| open(p.as_ref())).collect::<io::Result<Vec<_>>>()?;
        let upper = upper.map(open).transpose()?;
        let work = work.map(open).transpose()?;
        let mut layers = Layers {
            lowers,
            upper,
            work,
            prefix,
            forms: WriteForms { chardev_whiteouts: true, opaque_xattr: true },
            dirs: Mutex::default(),
        };
        if layers.upper.is_some() {
            layers.forms = layers.probe_write_forms()?;
        }
        Ok(layers)
    }

    pub(crate) fn lower_count(&self) -> usize {
        self.lowers.len()
    }

    pub(crate) fn has_upper(&self) -> bool {
        self.upper.is_some()
    }

    pub(crate) fn root(&self, place: Place) -> BorrowedFd<'_> {
        match place {
            Place::Upper => self.upper.as_ref().expect("upper place only exists with an upper dir").as_fd(),
            Place::Lower(i) => self.lowers[usize::from(i)].as_fd(),
        }
    }

    pub(crate) fn upper_root(&self) -> io::Result<BorrowedFd<'_>> {
        self.upper.as_ref().map(AsFd::as_fd).ok_or_else(|| Errno::ROFS.into())
    }

    pub(crate) fn work(&self) -> io::Result<BorrowedFd<'_>> {
        self.work.as_ref().map(AsFd::as_fd).ok_or_else(|| Errno::ROFS.into())
    }

    /// Directory `rel` (union-relative, no symlinks followed) in `place`, as `O_PATH`.
    pub(crate) fn dir(&self, place: Place, rel: &Path) -> io::Result<Arc<LayerDir>> {
        let key = (place, rel.to_path_buf());
        if let Some(dir) = self.cache().map.get(&key) {
            return Ok(Arc::clone(dir));
        }
        let dir =
            Arc::new(LayerDir { fd: sys::open_dir_beneath(self.root(place), rel.as_os_str())?, aufs: OnceLock::new() });
        let mut cache = self.cache();
        if cache.map.len() >= DIR_CACHE_MAX {
            cache.map.clear();
        }
        cache.map.insert(key, Arc::clone(&dir));
        Ok(dir)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, DirCache> {
        self.dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops every cached directory: an upper directory was renamed or removed.
    pub(crate) fn forget_dirs(&self) {
        self.cache().map.clear();
    }

    /// What the layer directory `dir` says about `name`.
    pub(crate) fn probe(dir: &LayerDir, name: &OsStr) -> io::Result<Probe> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if is_whiteout(&st) => Ok(Probe::Whiteout),
            Ok(st) => Ok(Probe::Found(st)),
            Err(Errno::NOENT) if !dir.has_aufs_whiteouts()? => Ok(Probe::Absent),
            Err(Errno::NOENT) => match rustix::fs::statat(dir, aufs_whiteout(name), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => Ok(Probe::Whiteout),
                Err(Errno::NOENT | Errno::NAMETOOLONG) => Ok(Probe::Absent),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Whether directory `name` in `dir` hides the layers below it, in any form.
    pub(crate) fn is_opaque(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
        for key in ["trusted.overlay.opaque", "user.overlay.opaque"] {
            match sys::get_xattr(dir, name, key) {
                Ok(Some(v)) if v == b"y" => return Ok(true),
                Ok(_) => {}
                Err(e) if xattr_unsupported(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let mut marker = OsString::from(name);
        marker.push("/");
        marker.push(WH_OPAQUE);
        match rustix::fs::statat(dir, &marker, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a whiteout for `name` in upper directory `dir` (the name must be free).
    pub(crate) fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        if self.forms.chardev_whiteouts {
            rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0)?;
        } else {
            let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC;
            rustix::fs::openat(dir, aufs_whiteout(name), flags, Mode::from_raw_mode(0o600))?;
            self.forget_dirs(); // a cached "no .wh. entries here" may be stale now
        }
        Ok(())
    }

    /// Marks directory `name` in upper directory `dir` opaque.
    pub(crate) fn make_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        if self.forms.opaque_xattr {
            let key = format!("{}opaque", self.prefix);
            sys::set_xattr_nofollow(dir, name, &key, b"y")
        } else {
            let child = sys::open_child_dir(dir, name)?;
            let flags = OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC;
            rustix::fs::openat(child, WH_OPAQUE, flags, Mode::from_raw_mode(0o600))?;
            Ok(())
        }
    }

    /// Removes an AUFS-form whiteout `.wh.NAME` from upper directory `dir`, if any.
    pub(crate) fn remove_whiteout_marker(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        match rustix::fs::unlinkat(dir, aufs_whiteout(name), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT | Errno::NAMETOOLONG) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Which forms the upper filesystem takes: tries a char 0/0 device and a
    /// `*.overlay.opaque` xattr in the work dir.
    fn probe_write_forms(&self) -> io::Result<WriteForms> {
        let work = self.work()?;
        let name = OsString::from(format!("#strata-probe-{}", std::process::id()));
        let _ = sys::remove_all(work, &name);
        let chardev_whiteouts = rustix::fs::mknodat(work, &name, FileType::CharacterDevice, Mode::empty(), 0).is_ok();
        let _ = rustix::fs::unlinkat(work, &name, AtFlags::empty());
        rustix::fs::mkdirat(work, &name, Mode::from_raw_mode(0o700))?;
        let opaque_xattr = sys::set_xattr_nofollow(work, &name, &format!("{}opaque", self.prefix), b"y").is_ok();
        let _ = rustix::fs::unlinkat(work, &name, AtFlags::REMOVEDIR);
        Ok(WriteForms { chardev_whiteouts, opaque_xattr })
    }
}

/// `ENOTSUP` (no xattrs on this filesystem) or `EPERM` (a namespace we may not read).
pub(crate) fn xattr_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == Errno::NOTSUP.raw_os_error() || c == Errno::PERM.raw_os_error())
}

/// `.wh.NAME`.
pub(crate) fn aufs_whiteout(name: &OsStr) -> OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    OsString::from_vec(v)
}

/// Whether a name is reserved for AUFS whiteout markers (never shown, never created).
pub(crate) fn is_aufs_marker(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

/// A char 0/0 device: the overlayfs whiteout.
pub(crate) fn is_whiteout(st: &Stat) -> bool {
    sys::is_whiteout(st)
}

/// The type of a stat.
pub(crate) fn kind_of(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}
