//! The apply engine: one layer stream into one directory.
//!
//! Two output forms of one engine ([`Mode`]): **overlay** writes a fresh per-layer
//! snapshot dir as kernel overlayfs stores it (whiteouts as char 0/0 devices, opaque dirs
//! with the `overlay.opaque` xattr); **flat** applies the layer on top of a rootfs dir,
//! deleting what whiteouts name. Flat output equals the merged view of the overlay form:
//! the privileged tests check that against the kernel.

mod deferred;
mod dir_cache;
mod dir_finish;
mod engine;
mod lower;
pub(crate) mod meta;
mod parents;
mod report;
mod tree;

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use report::{ApplyReport, Deferred, DeferredLink};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::ovl::XattrNamespace;
use crate::stream;
use crate::sys;
use crate::tar::Reader;

/// Which on-disk form the engine writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A per-layer snapshot dir in kernel overlayfs form. The target must be empty.
    Overlay,
    /// Apply on top of an existing rootfs; whiteouts and opaque markers delete.
    Flat,
}

/// What to do with device nodes when the process may not create them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePolicy {
    /// Skip the device and record a warning in the report.
    #[default]
    SkipWithWarning,
    /// Fail the apply.
    Fail,
}

/// Configures and builds an [`Applier`]; options are checked once in [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct ApplyBuilder {
    mode: Mode,
    parents: Vec<PathBuf>,
    xattrs: XattrNamespace,
    diff_id: Option<Digest>,
    digest: Option<Digest>,
    same_owner: Option<bool>,
    devices: DevicePolicy,
    defer_lower: bool,
}

impl ApplyBuilder {
    /// Starts a configuration for `mode`.
    pub fn new(mode: Mode) -> Self {
        ApplyBuilder {
            mode,
            parents: Vec::new(),
            xattrs: XattrNamespace::Trusted,
            diff_id: None,
            digest: None,
            same_owner: None,
            devices: DevicePolicy::default(),
            defer_lower: false,
        }
    }

    /// Overlay form without the parents yet: implied directories get default metadata
    /// and hardlinks to files not in this layer are left undone, both recorded in
    /// [`ApplyReport::deferred`] for [`Applier::resolve_deferred`] to finish once the
    /// parents exist. This is what lets the layers of one image unpack in parallel.
    pub fn defer_lower(mut self, yes: bool) -> Self {
        self.defer_lower = yes;
        self
    }

    /// Adds a lower layer dir (overlay form), nearest parent first. Parents supply the
    /// metadata of implied directories and the targets of hardlinks into lower layers.
    pub fn parent(mut self, dir: impl Into<PathBuf>) -> Self {
        self.parents.push(dir.into());
        self
    }

    /// The namespace overlay form writes its markers in (default
    /// [`XattrNamespace::Trusted`]; [`XattrNamespace::User`] for overlayfs's `userxattr`
    /// option, i.e. rootless mounts).
    pub fn xattr_namespace(mut self, xattrs: XattrNamespace) -> Self {
        self.xattrs = xattrs;
        self
    }

    /// Fails the apply unless the uncompressed stream hashes to `diff_id`.
    pub fn expect_diff_id(mut self, diff_id: Digest) -> Self {
        self.diff_id = Some(diff_id);
        self
    }

    /// Fails the apply unless the input bytes hash to `digest`.
    pub fn expect_digest(mut self, digest: Digest) -> Self {
        self.digest = Some(digest);
        self
    }

    /// Whether to apply the layer's owners (default: when running as root).
    pub fn same_owner(mut self, yes: bool) -> Self {
        self.same_owner = Some(yes);
        self
    }

    /// What to do with devices that cannot be created (default: skip with a warning).
    pub fn devices(mut self, policy: DevicePolicy) -> Self {
        self.devices = policy;
        self
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Options`] when parents are given in flat mode (the rootfs already holds
    /// the lower layers).
    pub fn build(self) -> Result<Applier> {
        if self.mode == Mode::Flat && !self.parents.is_empty() {
            return Err(Error::Options(
                "parents apply to overlay form only; a flat rootfs already holds its lower layers".into(),
            ));
        }
        let ids = sys::effective_ids();
        let same_owner = self.same_owner.unwrap_or(ids.0 == 0);
        Ok(Applier {
            mode: self.mode,
            parents: self.parents,
            xattrs: self.xattrs,
            diff_id: self.diff_id,
            digest: self.digest,
            same_owner,
            ids,
            devices: self.devices,
            defer_lower: self.defer_lower,
        })
    }
}

/// A configured layer applier. Cheap to reuse for many layers.
#[derive(Debug, Clone)]
pub struct Applier {
    mode: Mode,
    parents: Vec<PathBuf>,
    xattrs: XattrNamespace,
    diff_id: Option<Digest>,
    digest: Option<Digest>,
    same_owner: bool,
    /// Effective uid and gid of this process (owners of what it creates).
    ids: (u32, u32),
    devices: DevicePolicy,
    defer_lower: bool,
}

impl Applier {
    /// Applies one layer stream (plain, gzip or zstd; sniffed) into `target`, which is
    /// created if missing. Decompression and hashing run on their own thread.
    ///
    /// # Errors
    /// The stream is corrupt, an entry is hostile or unsupported ([`Error::Entry`] names
    /// it), a filesystem call fails, or a digest does not match. The target may then be
    /// partly written (the snapshot store applies into a staging dir), but nothing outside
    /// it is ever touched.
    pub fn apply<R: Read + Send>(&self, input: R, target: &Path) -> Result<ApplyReport> {
        let started = Instant::now();
        let root = open_target(target, self.mode)?;
        let lower = lower::LowerChain::open(&self.parents)?;
        let (job, chunks) = stream::pipeline(input).map_err(|source| Error::Io {
            op: "read layer",
            path: target.to_owned(),
            source,
        })?;
        let compression = chunks.compression();
        let (applied, decoded) = std::thread::scope(|scope| {
            let decoder = scope.spawn(move || job.run());
            let mut reader = Reader::new(chunks, compression.name());
            let applied = engine::Engine::new(self, root.as_fd(), target, &lower)
                .run(&mut reader)
                .map(|report| (report, reader.into_inner().finish()));
            // On failure the reader was dropped above: the decoder sees the hang-up and stops.
            let decoded = decoder.join().unwrap_or_else(|_| Err(std::io::Error::other("decoder thread panicked")));
            (applied, decoded)
        });
        let (mut report, output) = applied?;
        let input = decoded.map_err(|source| Error::Stream { compression: compression.name(), source })?;
        let diff_id = output.diff_id.unwrap_or_else(|| input.digest.clone());
        check_digest("diff_id", self.diff_id.as_ref(), &diff_id)?;
        check_digest("digest", self.digest.as_ref(), &input.digest)?;
        report.compression = compression;
        report.diff_id = diff_id;
        report.digest = input.digest;
        report.compressed_bytes = input.compressed_bytes;
        report.uncompressed_bytes = output.uncompressed_bytes;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

fn check_digest(which: &'static str, expected: Option<&Digest>, actual: &Digest) -> Result<()> {
    match expected {
        Some(expected) if expected != actual => {
            Err(Error::DigestMismatch { which, expected: expected.to_string(), actual: actual.to_string() })
        }
        _ => Ok(()),
    }
}

/// Opens (creating if missing) the target dir; overlay form needs it empty.
fn open_target(target: &Path, mode: Mode) -> Result<std::os::fd::OwnedFd> {
    let io_err = |op, source| Error::Io { op, path: target.to_owned(), source };
    match std::fs::create_dir(target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create target", e)),
    }
    let root = sys::open_dir_path(target).map_err(|e| io_err("open target", e))?;
    if mode == Mode::Overlay {
        let readable = sys::open_child_dir_readable(root.as_fd(), std::ffi::OsStr::new(""))
            .map_err(|e| io_err("open target", e))?;
        if !sys::list_dir(readable.as_fd()).map_err(|e| io_err("read target", e))?.is_empty() {
            return Err(Error::Options(format!(
                "overlay form needs an empty target, and {} is not empty (use flat mode to apply on top of a rootfs)",
                target.display()
            )));
        }
    }
    Ok(root)
}
