//! # strata-fuse
//!
//! A userspace union mount of strata layer directories on FUSE (the `fuser` crate),
//! for hosts without kernel overlayfs or without the privilege to use it. It behaves as
//! kernel overlayfs with `index=off` and `redirect_dir` as configured ([`RedirectDir`]:
//! by default redirects are followed, not written) and writes the same upper-dir format,
//! so an upper dir written here mounts with the kernel's overlayfs and diffs into a
//! layer:
//!
//! - lookups go down the lower layers (top-most first); whiteouts and opaque dirs are
//!   read in every form (char 0/0 devices, `.wh.` files, `trusted|user.overlay.opaque`,
//!   `.wh..wh..opq`) and written in overlayfs's form (falling back to the AUFS form
//!   when the upper filesystem cannot make devices or xattrs; [`Mounted::forms`] says);
//! - copy-up is staged in the work dir (reflink, else `copy_file_range`, else
//!   read/write; owner, mode, times, xattrs) and renamed into place; `st_ino` stays the
//!   lower inode number across copy-up and remounts;
//! - names and attributes are cached by the kernel for a day: **the lower layers must
//!   not change under a mount** (as with overlayfs), and every change goes through it;
//! - with privilege (kernel 6.9+), reads and writes of files that cannot move any more
//!   (upper files, and every file of a read-only mount) bypass this process through FUSE
//!   passthrough; lower files of a writable mount are read through the page cache, so
//!   a copy-up never waits for another user's readers (see `open_files.rs`);
//! - where the kernel offers FUSE-over-io_uring (Linux 6.14+ with the `fuse` module's
//!   `enable_uring`), requests are answered on their caller's CPU by a thread pinned
//!   there ([`UnionConfig::uring`]; the transport lives in the vendored fuser, see
//!   `vendor/README.md`), without the two cross-CPU wake-ups of `/dev/fuse`;
//! - a mount serves every user from one process: opens of an inode share one fd, and
//!   mounting raises this process's soft fd limit to its hard limit, keeping 1,024 fds
//!   for root's opens.
//!
//! ```
//! use strata_fuse::{UnionConfig, mount};
//!
//! let dir = tempfile::tempdir()?;
//! for sub in ["lower", "upper", "work", "merged"] {
//!     std::fs::create_dir(dir.path().join(sub))?;
//! }
//! std::fs::write(dir.path().join("lower/hello"), "from the layer\n")?;
//! let mut config = UnionConfig::new(vec![dir.path().join("lower")]);
//! config.stack.upper = Some(dir.path().join("upper"));
//! config.stack.work = Some(dir.path().join("work"));
//! // Mounting needs /dev/fuse (and root here; fusermount3 elsewhere).
//! if rustix::process::geteuid().is_root() && std::path::Path::new("/dev/fuse").exists() {
//!     let mounted = mount(&config, &dir.path().join("merged"))?;
//!     std::fs::write(dir.path().join("merged/hello"), "changed through FUSE\n")?;
//!     mounted.unmount()?;
//!     // The change went to the upper dir (copy-up); the layer is untouched.
//!     assert_eq!(std::fs::read_to_string(dir.path().join("upper/hello"))?, "changed through FUSE\n");
//!     assert_eq!(std::fs::read_to_string(dir.path().join("lower/hello"))?, "from the layer\n");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod attr;
mod cli;
mod copy_up;
mod fs;
mod fusermount;
mod idmap;
mod isolate;
mod layers;
mod located;
mod mutate;
mod nodes;
mod open_files;
mod options;
mod stats;
mod union;

use std::path::{Path, PathBuf};

pub use cli::run as run_cli;
pub use idmap::IdMap;
pub use layers::WriteForms;
pub use options::parse_options;

/// Errors of setting up a union mount.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("opening the layers: {0}")]
    Layers(#[source] std::io::Error),
    #[error("mounting FUSE at {}: {source}", mountpoint.display())]
    Mount { mountpoint: PathBuf, source: std::io::Error },
    #[error("unmounting {}: {source}", mountpoint.display())]
    Unmount { mountpoint: PathBuf, source: std::io::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which xattr namespace marks opaque dirs and hides the overlay's own xattrs: the one
/// definition in strata-core, shared with the apply engine, the store and the mounts.
pub use strata_core::ovl::{MountSpec, XattrNamespace};

/// overlayfs's `redirect_dir`: whether a directory with lower contents can be renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectDir {
    /// Renames write `*.overlay.redirect` on the moved dir (its lower contents stay
    /// where they were) and redirects are followed. An upper dir with redirects mounts
    /// with kernel overlayfs only with `redirect_dir=on|follow`, and tools that diff an
    /// upper dir must read them (strata's do).
    On,
    /// Redirects already in the layers are followed; renaming a directory with lower
    /// contents fails with `EXDEV` (`mv` then copies it). The default, as overlayfs's
    /// `redirect_dir=off` with `redirect_always_follow`.
    Follow,
    /// Redirects are ignored and never written; the only choice with the `user`
    /// namespace, where anyone who owns a lower dir could forge one (overlayfs's
    /// `userxattr` implies it too).
    NoFollow,
}

/// Whether this kernel offers FUSE-over-io_uring to new mounts (Linux 6.14+ with the
/// `fuse` module's `enable_uring`, which the node's operator sets): where it does, a mount
/// with [`UnionConfig::uring`] takes requests over it.
pub fn uring_enabled() -> bool {
    std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring").is_ok_and(|v| v.trim() == "Y")
}

/// What to mount.
#[derive(Debug, Clone)]
pub struct UnionConfig {
    /// The layer dirs, the work dir, read-only and the xattr namespace: the one
    /// definition every mounter shares.
    pub stack: MountSpec,
    /// Use kernel passthrough for file I/O when the kernel and privilege allow.
    pub passthrough: bool,
    /// FUSE request threads.
    pub threads: usize,
    /// Take requests over FUSE-over-io_uring when the kernel offers it (Linux 6.14+ with
    /// the `fuse` module's `enable_uring`): each on the CPU of its caller, by a thread
    /// pinned there, in addition to the `threads` that read `/dev/fuse`.
    pub uring: bool,
    /// Let users other than the mounter in (`allow_other`; root may always).
    pub allow_other: bool,
    /// Name shown as the mount's source in `/proc/mounts`.
    pub fsname: String,
    /// Extra mount flags: `dev`, `suid`, `exec` and their `no` forms.
    pub flags: Vec<String>,
    /// Write whiteouts as AUFS `.wh.` files even where char 0/0 devices work (for
    /// upper dirs consumed by tools that expect the OCI tar form).
    pub aufs_whiteouts: bool,
    /// Ids as stored in the layers shown as other ids (fuse-overlayfs's
    /// `uidmapping=`/`gidmapping=`); empty: shown as stored.
    pub uid_map: IdMap,
    pub gid_map: IdMap,
    /// Directory renames (`redirect_dir=on|follow|off|nofollow`); with the `user`
    /// namespace always [`RedirectDir::NoFollow`].
    pub redirect_dir: RedirectDir,
}

impl UnionConfig {
    /// Defaults: passthrough on, io_uring where the kernel offers it, two threads per CPU
    /// (4 to 16); when root `allow_other`,
    /// `dev`, `suid` and the `trusted.` namespace, else the `user.` namespace.
    pub fn new(lowers: Vec<PathBuf>) -> UnionConfig {
        let root = rustix::process::geteuid().is_root();
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        UnionConfig {
            stack: MountSpec { lowers, upper: None, work: None, read_only: false, xattrs: XattrNamespace::native() },
            passthrough: true,
            // Requests wait on wake-ups more than on CPU: more threads than cores pay.
            threads: (2 * cpus).clamp(4, 16),
            uring: true,
            allow_other: root,
            fsname: "strata".into(),
            // Root mounts root filesystems: device nodes and setuid programs must work.
            flags: if root { vec!["dev".into(), "suid".into()] } else { Vec::new() },
            aufs_whiteouts: false,
            uid_map: IdMap::default(),
            gid_map: IdMap::default(),
            redirect_dir: RedirectDir::Follow,
        }
    }

    fn check(&self) -> Result<()> {
        if self.stack.lowers.is_empty() && self.stack.upper.is_none() {
            return Err(Error::Config("no layers: give at least one lowerdir".into()));
        }
        if self.stack.upper.is_some() != self.stack.work.is_some() {
            return Err(Error::Config("upperdir and workdir go together".into()));
        }
        if let (Some(upper), Some(work)) = (&self.stack.upper, &self.stack.work) {
            use std::os::unix::fs::MetadataExt;
            let meta = |p: &Path| std::fs::metadata(p).map_err(|e| Error::Config(format!("{}: {e}", p.display())));
            if meta(upper)?.dev() != meta(work)?.dev() {
                return Err(Error::Config(format!(
                    "workdir {} must be on the same filesystem as upperdir {}",
                    work.display(),
                    upper.display()
                )));
            }
            if work.starts_with(upper) || upper.starts_with(work) {
                return Err(Error::Config("workdir and upperdir must not contain each other".into()));
            }
        }
        if self.stack.xattrs == XattrNamespace::User && self.redirect_dir == RedirectDir::On {
            return Err(Error::Config(
                "redirect_dir=on needs the trusted namespace: with userxattr anyone who owns a lower dir could forge \
                 a redirect"
                    .into(),
            ));
        }
        Ok(())
    }

    fn fuse_config(&self, read_only: bool) -> fuser::Config {
        use fuser::MountOption as O;
        let mut opts = vec![O::FSName(self.fsname.clone()), O::Subtype("strata".into()), O::DefaultPermissions];
        if read_only {
            opts.push(O::RO);
        }
        for flag in &self.flags {
            opts.push(match flag.as_str() {
                "dev" => O::Dev,
                "nodev" => O::NoDev,
                "suid" => O::Suid,
                "nosuid" => O::NoSuid,
                "exec" => O::Exec,
                "noexec" => O::NoExec,
                "noatime" => O::NoAtime,
                other => O::CUSTOM(other.to_owned()),
            });
        }
        let mut config = fuser::Config::default();
        config.mount_options = opts;
        config.acl = if self.allow_other { fuser::SessionACL::All } else { fuser::SessionACL::Owner };
        config.n_threads = Some(self.threads.max(1));
        config.clone_fd = true;
        config
    }

    /// Opens the layers and builds the filesystem, without mounting it.
    fn build(&self) -> Result<(fs::StrataFs, WriteForms, bool)> {
        self.check()?;
        let mut layers = layers::Layers::open(
            &self.stack.lowers,
            self.stack.upper.as_deref(),
            self.stack.work.as_deref(),
            self.stack.xattrs,
        )
        .map_err(Error::Layers)?;
        if self.aufs_whiteouts {
            layers.forms.chardev_whiteouts = false;
        }
        let forms = layers.forms;
        let read_only = self.stack.read_only || !layers.has_upper();
        let redirects = match self.stack.xattrs {
            XattrNamespace::Trusted => self.redirect_dir,
            XattrNamespace::User => RedirectDir::NoFollow,
        };
        let union = union::Union::new(layers, redirects).map_err(Error::Layers)?;
        let options = fs::FsOptions {
            read_only,
            passthrough: self.passthrough,
            uring: self.uring,
            uid_map: self.uid_map.clone(),
            gid_map: self.gid_map.clone(),
        };
        Ok((fs::StrataFs::new(union, options), forms, read_only))
    }
}

/// A union mounted by this process; unmounted on [`Mounted::unmount`] or drop.
#[derive(Debug)]
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    forms: WriteForms,
    /// Mounted through fusermount3, which must also unmount it.
    helper: bool,
    /// The mount's device number: what is at the mount point is ours only while equal.
    dev: Option<u64>,
}

impl Mounted {
    /// How whiteouts and opaque dirs are written on this upper filesystem.
    pub fn forms(&self) -> WriteForms {
        self.forms
    }

    /// Unmounts and waits for the request threads to finish.
    ///
    /// # Errors
    /// [`Error::Unmount`] when the kernel refuses (busy).
    pub fn unmount(mut self) -> Result<()> {
        let session = self.session.take().expect("session present until unmount");
        let err = |source| Error::Unmount { mountpoint: self.mountpoint.clone(), source };
        if self.helper {
            fusermount::unmount(&self.mountpoint).map_err(err)?;
            session.join().map_err(err)
        } else {
            if unmount_when_free(&self.mountpoint, self.dev) {
                // The request threads end when the kernel closes the connection.
                session.join().map_err(err)
            } else {
                session.umount_and_join().map_err(err)
            }
        }
    }
}

/// Unmounts `mountpoint` directly, retrying briefly while it is busy: a process forked
/// by any thread of ours holds copies of our fds until it execs, so a file we just
/// closed can keep the mount busy for a moment. Whether it unmounted; anything else
/// (still busy, or not allowed) is left to the session's own unmount, which reports it.
fn unmount_when_free(mountpoint: &Path, dev: Option<u64>) -> bool {
    let ours = || dev.is_some_and(|d| rustix::fs::stat(mountpoint).is_ok_and(|st| st.st_dev == d));
    for _ in 0..100 {
        if !ours() {
            return false;
        }
        match rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => return true,
            Err(rustix::io::Errno::BUSY) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(_) => return false,
        }
    }
    false
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if self.helper {
                let _ = fusermount::unmount(&self.mountpoint);
                let _ = session.join();
            } else {
                let _ = session.umount_and_join();
            }
        }
    }
}

/// Starts a FUSE session for `fs` at `mountpoint`: directly when this process may open
/// /dev/fuse, else through the setuid fusermount3 helper. Returns whether the helper
/// mounted it.
fn start_session(
    config: &UnionConfig,
    fs: fs::StrataFs,
    mountpoint: &Path,
    read_only: bool,
    slot: &std::sync::Arc<std::sync::OnceLock<fuser::Notifier>>,
) -> Result<(fuser::Session<fs::StrataFs>, bool)> {
    let mount_err = |source| Error::Mount { mountpoint: mountpoint.to_owned(), source };
    let fuse_config = config.fuse_config(read_only);
    let fs = fs.with_notifier(slot.clone());
    let direct = rustix::process::geteuid().is_root()
        || std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok();
    let (session, helper) = if direct {
        (fuser::Session::new(fs, mountpoint, &fuse_config).map_err(mount_err)?, false)
    } else {
        let mut opts = format!("fsname={},subtype=strata,default_permissions", config.fsname.replace(',', "_"));
        opts.push_str(if read_only { ",ro" } else { ",rw" });
        if config.allow_other {
            opts.push_str(",allow_other");
        }
        for flag in &config.flags {
            opts.push(',');
            opts.push_str(flag);
        }
        let fd = fusermount::mount(mountpoint, &opts).map_err(mount_err)?;
        (fuser::Session::from_fd(fs, fd, fuse_config.acl, fuse_config.clone()).map_err(mount_err)?, true)
    };
    let _ = slot.set(session.notifier());
    raise_readahead(mountpoint);
    Ok((session, helper))
}

/// Reads served by the daemon come in readahead-sized requests, and the kernel gives a
/// FUSE mount 128 KiB: at 1 MiB a request carries 8x the data for the same round trip
/// (a 1 GiB read: 0.82 s -> 0.52 s here). Root only (sysfs); the mount's device number
/// comes from mountinfo, as a stat of the mount would wait for this very daemon.
fn raise_readahead(mountpoint: &Path) {
    if let Some(knob) = readahead_knob(mountpoint) {
        let _ = std::fs::write(knob, "1024");
    }
}

/// The sysfs file holding the mount's readahead.
fn readahead_knob(mountpoint: &Path) -> Option<PathBuf> {
    mount_device(mountpoint)
        .map(|(major, minor)| PathBuf::from(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb")))
}

/// The device number (major, minor) of the mount at `mountpoint`, from mountinfo (a
/// stat of the mount would wait for this very daemon). The last mount there wins.
fn mount_device(mountpoint: &Path) -> Option<(u32, u32)> {
    let target = std::fs::canonicalize(mountpoint).ok()?;
    let mounts = strata_core::sys::mountinfo::mounts().ok()?;
    mounts.iter().rev().find(|m| m.point == target).map(|m| m.device)
}

/// Mounts the union at `mountpoint`, served by threads of this process.
///
/// # Errors
/// [`Error::Config`] for inconsistent settings, [`Error::Layers`] when a layer cannot
/// be opened, [`Error::Mount`] when FUSE refuses.
pub fn mount(config: &UnionConfig, mountpoint: &Path) -> Result<Mounted> {
    let (fs, forms, read_only) = config.build()?;
    let slot = std::sync::Arc::new(std::sync::OnceLock::new());
    let (session, helper) = start_session(config, fs, mountpoint, read_only, &slot)?;
    let session = session.spawn().map_err(|source| Error::Mount { mountpoint: mountpoint.to_owned(), source })?;
    let dev = mount_device(mountpoint).map(|(major, minor)| rustix::fs::makedev(major, minor));
    Ok(Mounted { session: Some(session), mountpoint: mountpoint.to_owned(), forms, helper, dev })
}

/// Mounts the union at `mountpoint` and serves it on this thread until it is
/// unmounted. `ready` runs once the mount is in place.
///
/// # Errors
/// As [`mount`], and what the session loop ends with.
pub fn serve(config: &UnionConfig, mountpoint: &Path, ready: impl FnOnce(WriteForms)) -> Result<()> {
    let slot = std::sync::Arc::new(std::sync::OnceLock::new());
    let (session, forms) = if rustix::process::geteuid().is_root() {
        serve_isolated(config, mountpoint, &slot)?
    } else {
        let (fs, forms, read_only) = config.build()?;
        (start_session(config, fs, mountpoint, read_only, &slot)?.0, forms)
    };
    ready(forms);
    match session.run() {
        // How the loop ends when the mount goes away (umount, fusermount3 -u).
        Err(e) if matches!(e.raw_os_error(), Some(code) if is_connection_gone(code)) => Ok(()),
        done => done.map_err(|source| Error::Mount { mountpoint: mountpoint.to_owned(), source }),
    }
}

/// As root: mounts, then serves from a private mount namespace (see `isolate.rs`).
fn serve_isolated(
    config: &UnionConfig,
    mountpoint: &Path,
    slot: &std::sync::Arc<std::sync::OnceLock<fuser::Notifier>>,
) -> Result<(fuser::Session<fs::StrataFs>, WriteForms)> {
    let mount_err = |source| Error::Mount { mountpoint: mountpoint.to_owned(), source };
    // Checked before anything is mounted: a bad layer must not leave a mount behind.
    drop(config.build()?);
    let read_only = config.stack.read_only || config.stack.upper.is_none();
    let isolated = isolate::mount_then_isolate(config, mountpoint, read_only).map_err(mount_err)?;
    let (fs, forms, _) = match config.build() {
        Ok(built) => built,
        Err(e) => {
            isolated.abandon(mountpoint);
            return Err(e);
        }
    };
    let fuse_config = config.fuse_config(read_only);
    let fs = fs.with_notifier(slot.clone());
    let knob = isolated.readahead_knob.clone();
    let session = fuser::Session::from_fd(fs, isolated.dev, fuse_config.acl, fuse_config.clone()).map_err(mount_err)?;
    if let Some(knob) = knob {
        let _ = std::fs::write(knob, "1024"); // see raise_readahead
    }
    let _ = slot.set(session.notifier());
    Ok((session, forms))
}

fn is_connection_gone(errno: i32) -> bool {
    [rustix::io::Errno::CONNABORTED, rustix::io::Errno::NODEV].iter().any(|e| e.raw_os_error() == errno)
}
