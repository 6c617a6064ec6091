//! The layer directories under a union mount and how to read one layer's entries:
//! whiteouts and opaque markers in every form, fd-relative and never following symlinks.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use strata_core::ovl::{XattrNamespace, whiteout};
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
            if whiteout::whited_out_name(OsStr::from_bytes(&name)).is_some() {
                found = true;
                break;
            }
        }
        Ok(*self.aufs.get_or_init(|| found))
    }
}

/// Open layer directories by (place, union path). Lower layers never change; upper
/// entries go stale only when a directory is renamed or removed, and every such change
/// drops the cached upper dirs below it ([`Layers::forget_upper_dirs_under`]).
#[derive(Debug, Default)]
struct DirCache {
    map: HashMap<(Place, PathBuf), Arc<LayerDir>>,
}

/// Multiply-linked files of one lower layer: inode -> its paths in the layer.
type HardlinkIndex = HashMap<u64, Vec<PathBuf>>;

/// Bound on cached directories (each holds an fd).
const DIR_CACHE_MAX: usize = 4096;

/// The open layer roots of one mount.
#[derive(Debug)]
pub(crate) struct Layers {
    lowers: Vec<OwnedFd>,
    upper: Option<OwnedFd>,
    work: Option<OwnedFd>,
    /// `trusted` (privileged) or `user` (rootless): the namespace of the overlay xattrs
    /// we read and write, and the one hidden from users.
    pub(crate) xattrs: XattrNamespace,
    pub(crate) forms: WriteForms,
    dirs: Mutex<DirCache>,
    /// Per lower layer, built on the first copy-up of a multiply-linked file there.
    hardlinks: Mutex<HashMap<LayerIx, Arc<HardlinkIndex>>>,
}

impl Layers {
    pub(crate) fn open(
        lowers: &[impl AsRef<Path>],
        upper: Option<&Path>,
        work: Option<&Path>,
        xattrs: XattrNamespace,
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
            xattrs,
            forms: WriteForms { chardev_whiteouts: true, opaque_xattr: true },
            dirs: Mutex::default(),
            hardlinks: Mutex::default(),
        };
        if layers.upper.is_some() {
            layers.clean_work()?;
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

    /// The paths in lower layer `layer` of its file with inode `ino` (when multiply
    /// linked). The layer is walked once, on first use: lower layers never change.
    pub(crate) fn hardlink_names(&self, layer: LayerIx, ino: u64) -> io::Result<Vec<PathBuf>> {
        let cached = self.hardlinks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&layer).cloned();
        let index = match cached {
            Some(index) => index,
            None => {
                let mut index = HardlinkIndex::new();
                index_links(self.root(Place::Lower(layer)), &mut PathBuf::new(), &mut index)?;
                let index = Arc::new(index);
                self.hardlinks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(layer, Arc::clone(&index));
                index
            }
        };
        Ok(index.get(&ino).cloned().unwrap_or_default())
    }

    /// Drops every cached directory: an upper directory was renamed or removed.
    /// Drops the cached upper directories at or below union path `rel`: it was renamed
    /// or removed. Lower directories never change; other upper ones stay valid.
    pub(crate) fn forget_upper_dirs_under(&self, rel: &Path) {
        self.cache().map.retain(|(place, path), _| !(*place == Place::Upper && path.starts_with(rel)));
    }

    pub(crate) fn forget_dirs(&self) {
        self.cache().map.clear();
    }

    /// What the layer directory `dir` says about `name`.
    pub(crate) fn probe(dir: &LayerDir, name: &OsStr) -> io::Result<Probe> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if whiteout::is_whiteout(&st) => Ok(Probe::Whiteout),
            Ok(st) => Ok(Probe::Found(st)),
            Err(Errno::NOENT) if !dir.has_aufs_whiteouts()? => Ok(Probe::Absent),
            Err(Errno::NOENT) => {
                match rustix::fs::statat(dir, whiteout::aufs_whiteout(name), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(_) => Ok(Probe::Whiteout),
                    Err(Errno::NOENT | Errno::NAMETOOLONG) => Ok(Probe::Absent),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether directory `name` in `dir` hides the layers below it: the opaque xattr in
    /// this mount's namespace only (another namespace's marker is user data, as in
    /// overlayfs), or a `.wh..wh..opq` file.
    pub(crate) fn is_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
        whiteout::is_opaque(dir, name, self.xattrs)
    }

    /// Writes a whiteout for `name` in upper directory `dir` (the name must be free).
    pub(crate) fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        if self.forms.chardev_whiteouts {
            whiteout::make_whiteout(dir, name)
        } else {
            whiteout::make_aufs_whiteout(dir, name)?;
            self.forget_dirs(); // a cached "no .wh. entries here" may be stale now
            Ok(())
        }
    }

    /// Marks directory `name` in upper directory `dir` opaque.
    pub(crate) fn make_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        if self.forms.opaque_xattr {
            whiteout::make_opaque(dir, name, self.xattrs)
        } else {
            whiteout::make_aufs_opaque(sys::open_child_dir(dir, name)?.as_fd())
        }
    }

    /// Removes an AUFS-form whiteout `.wh.NAME` from upper directory `dir`, if any.
    pub(crate) fn remove_whiteout_marker(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        match rustix::fs::unlinkat(dir, whiteout::aufs_whiteout(name), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT | Errno::NAMETOOLONG) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes what dead daemons left in the work dir (a copy-up or whiteout being
    /// staged when one was killed): entries named `#strata-PID-...` whose process is
    /// gone. A live daemon's entries (another mount misusing this work dir) are left.
    fn clean_work(&self) -> io::Result<()> {
        let work = self.work()?;
        let readable =
            rustix::fs::openat(work, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        for name in sys::list_dir(readable.as_fd())? {
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("#strata-")) else { continue };
            let pid = rest.trim_start_matches("probe-").split('-').next().and_then(|p| p.parse::<i32>().ok());
            let alive = pid
                .and_then(rustix::process::Pid::from_raw)
                .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
            if !alive {
                sys::remove_all(work, &name)?;
            }
        }
        Ok(())
    }

    /// Which forms the upper filesystem takes: tries a char 0/0 device and a
    /// `*.overlay.opaque` xattr in the work dir.
    fn probe_write_forms(&self) -> io::Result<WriteForms> {
        let work = self.work()?;
        let name = OsString::from(format!("#strata-probe-{}", std::process::id()));
        let _ = sys::remove_all(work, &name);
        let chardev_whiteouts = whiteout::make_whiteout(work, &name).is_ok();
        let _ = rustix::fs::unlinkat(work, &name, AtFlags::empty());
        rustix::fs::mkdirat(work, &name, Mode::from_raw_mode(0o700))?;
        let opaque_xattr = whiteout::make_opaque(work, &name, self.xattrs).is_ok();
        let _ = rustix::fs::unlinkat(work, &name, AtFlags::REMOVEDIR);
        Ok(WriteForms { chardev_whiteouts, opaque_xattr })
    }
}

/// Adds the multiply-linked files below `dir` (at layer path `path`) to `index`.
fn index_links(dir: BorrowedFd<'_>, path: &mut PathBuf, index: &mut HardlinkIndex) -> io::Result<()> {
    let readable = rustix::fs::openat(dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    for name in sys::list_dir(readable.as_fd())? {
        let st = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)?;
        path.push(&name);
        match kind_of(&st) {
            FileType::RegularFile if st.st_nlink > 1 => index.entry(st.st_ino).or_default().push(path.clone()),
            FileType::Directory => {
                let child = sys::open_child_dir(dir, &name)?;
                index_links(child.as_fd(), path, index)?;
            }
            _ => {}
        }
        path.pop();
    }
    Ok(())
}

/// The type of a stat.
pub(crate) fn kind_of(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}
