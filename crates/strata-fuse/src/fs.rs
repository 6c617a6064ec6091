//! The FUSE face of the union: translates requests into [`Union`] calls, keeps open
//! file and directory handles, and hands data I/O to the kernel (passthrough) when it can.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use rustix::fs::{FileType, OFlags, Timestamps};

use crate::attr::{OMIT, TTL, attr, attr_ttl, fuse_kind, timespec};
use crate::idmap::IdMap;
use crate::layers::Place;
use crate::mutate::{AttrChange, Caller, NewEntry};
use crate::nodes::ROOT;
use crate::open_files::{Io, OpenFile, OpenFiles};
use crate::stats::{Op, Stats};
use crate::union::{DirEntry, Found, Union};

/// How the FUSE side behaves.
#[derive(Debug, Clone)]
pub(crate) struct FsOptions {
    pub read_only: bool,
    pub passthrough: bool,
    pub uring: bool,
    pub uid_map: IdMap,
    pub gid_map: IdMap,
}

#[derive(Debug)]
pub(crate) struct StrataFs {
    union: Union,
    options: FsOptions,
    /// Every open says FOPEN_NOFLUSH: data goes straight to the real file (or through
    /// the kernel's passthrough), so close(2) has nothing to ask us.
    files: OpenFiles,
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    stats: Stats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn errno(e: io::Error) -> Errno {
    match e.raw_os_error() {
        Some(code) if code > 0 => Errno::from_i32(code),
        _ => Errno::EIO,
    }
}

impl StrataFs {
    /// Where the session's notifier will be put, once the session exists.
    pub(crate) fn with_notifier(mut self, slot: Arc<std::sync::OnceLock<fuser::Notifier>>) -> StrataFs {
        self.union.notifier = slot;
        self
    }

    pub(crate) fn new(union: Union, options: FsOptions) -> StrataFs {
        StrataFs { union, options, files: OpenFiles::new(), dirs: Mutex::new(HashMap::new()), stats: Stats::from_env() }
    }

    fn entry(&self, reply: ReplyEntry, found: &Found) {
        reply.entry_with_ttls(&attr_ttl(&found.st), &TTL, &self.attr(found.ino, &found.st, &found.node), Generation(0));
    }

    fn reply_attr(&self, ino: u64, reply: ReplyAttr) {
        match self.union.stat(ino) {
            Ok((node, st)) => reply.attr(&attr_ttl(&st), &self.attr(ino, &st, &node)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<OpenFile>, Errno> {
        self.files.get(fh.0).ok_or(Errno::EBADF)
    }

    /// The fd to read `open` through: after a copy-up, a read-only lower fd is swapped
    /// for the upper copy.
    fn read_fd(&self, open: &OpenFile) -> io::Result<Arc<File>> {
        // Per read request: the node table is consulted only while the fd is a lower one.
        let now = || self.union.nodes().get(open.ino).map(|n| n.place);
        self.files.read_fd(open, now, || self.union.open_real(open.ino, OFlags::RDONLY))
    }

    /// The fd of a handle opened for writing (`EBADF` for read-only handles).
    fn writable_fd(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        let open = self.file(fh)?;
        if !open.writable {
            return Err(Errno::EBADF);
        }
        Ok(open.fd())
    }

    /// Who asks, in the ids stored in the layers.
    fn caller(&self, req: &Request) -> Caller {
        Caller { uid: self.options.uid_map.stored(req.uid()), gid: self.options.gid_map.stored(req.gid()) }
    }

    /// What we report for a real entry, its owner in the ids the kernel sees.
    fn attr(&self, ino: u64, st: &rustix::fs::Stat, node: &crate::nodes::Node) -> fuser::FileAttr {
        let mut a = attr(ino, st, node);
        a.uid = self.options.uid_map.shown(a.uid);
        a.gid = self.options.gid_map.shown(a.gid);
        a
    }

    fn writable_flags(flags: OFlags) -> bool {
        (flags & OFlags::RWMODE) != OFlags::RDONLY || flags.contains(OFlags::TRUNC)
    }

    /// Opens `ino` (whose fd is `fresh` if the open just copied it up) and records the
    /// open; returns the handle and how the kernel reaches its data.
    fn open_handle(
        &self,
        ino: u64,
        flags: OFlags,
        fresh: Option<File>,
        privileged: bool,
        register: impl Fn(&File) -> io::Result<BackingId>,
    ) -> io::Result<(u64, Io)> {
        let place = if fresh.is_some() { Place::Upper } else { self.union.nodes().get(ino)?.place };
        let fixed = place == Place::Upper || self.options.read_only;
        let (file, place) = self.files.fd(ino, flags, place, fresh, privileged, || self.union.open_real(ino, flags))?;
        // Upper files get a read-write backing so later writers can share it; the
        // kernel keeps its own reference, so that fd serves only the registration (not
        // needed when this open's fd is read-write already).
        let needs_reopen = !self.options.read_only && (flags & OFlags::RWMODE) != OFlags::RDWR;
        let read_write =
            || needs_reopen.then(|| self.union.open_real(ino, OFlags::RDWR).ok().map(|(f, _)| f)).flatten();
        let io = self.files.io(ino, place, fixed, &file, register, read_write)?;
        let fh = self.files.add(ino, flags, Self::writable_flags(flags), (file, place), io.clone());
        Ok((fh, io))
    }

    fn guard_write(&self) -> Result<(), Errno> {
        if self.options.read_only { Err(Errno::EROFS) } else { Ok(()) }
    }

    /// Runs a change that answers nothing but success: refused on a read-only mount.
    fn change(&self, reply: ReplyEmpty, change: impl FnOnce() -> io::Result<()>) {
        match self.guard_write().and_then(|()| change().map_err(errno)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn do_create(&self, req: &Request, parent: INodeNo, name: &OsStr, what: NewEntry<'_>, reply: ReplyEntry) {
        if let Err(e) = self.guard_write() {
            return reply.error(e);
        }
        match self.union.create(parent.0, name, what, self.caller(req)) {
            Ok((found, _)) => self.entry(reply, &found),
            Err(e) => reply.error(errno(e)),
        }
    }
}

impl Filesystem for StrataFs {
    fn destroy(&mut self) {
        self.stats.write();
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.add_capabilities(
            InitFlags::FUSE_DO_READDIRPLUS
                | InitFlags::FUSE_READDIRPLUS_AUTO
                | InitFlags::FUSE_PARALLEL_DIROPS
                | InitFlags::FUSE_CACHE_SYMLINKS,
        );
        // The kernel then enforces POSIX ACLs itself (as overlayfs does, from the real
        // files' system.posix_acl_* xattrs) and caches them per inode, instead of asking
        // us on every `ls -l`.
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        // open(O_TRUNC) arrives as one request: a lower file then copies up empty.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Requests on the CPU of their caller: no cross-CPU wake-up per request, which on an
        // otherwise idle host (a VM's halted vCPUs above all) costs more than the request.
        if self.options.uring {
            let _ = config.add_capabilities(InitFlags::FUSE_OVER_IO_URING);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        if self.options.passthrough && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() {
            // Backing files live on a plain filesystem: one level of stacking.
            if config.set_max_stack_depth(1).is_ok() {
                self.files.enable_passthrough();
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _t = self.stats.time(Op::Lookup);
        match self.union.lookup(parent.0, name) {
            Ok(found) => self.entry(reply, &found),
            // A negative entry (node id 0) the kernel may cache: names looked up and not
            // found (a shell searching $PATH, a loader its library dirs) stay absent until
            // created through this mount, which the kernel sees.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {
                reply.entry_with_ttls(&Duration::ZERO, &TTL, &crate::attr::negative(), Generation(0));
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _t = self.stats.time(Op::Forget);
        self.union.nodes().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let _t = self.stats.time(Op::Getattr);
        if let Some(open) = fh.and_then(|fh| self.file(fh).ok()) {
            // Only an unlinked file has no name to stat by: its open fd answers.
            let unlinked = self.union.nodes().get(ino.0).ok().filter(|n| n.links.is_empty() && ino.0 != ROOT).cloned();
            if let Some(node) = unlinked {
                return match self.read_fd(&open).and_then(|f| Ok(rustix::fs::fstat(&*f)?)) {
                    Ok(st) => reply.attr(&Duration::ZERO, &self.attr(ino.0, &st, &node)),
                    Err(e) => reply.error(errno(e)),
                };
            }
        }
        self.reply_attr(ino.0, reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _t = self.stats.time(Op::Setattr);
        if let Err(e) = self.guard_write() {
            return reply.error(e);
        }
        let times = (atime.is_some() || mtime.is_some()).then(|| Timestamps {
            last_access: atime.map_or(OMIT, timespec),
            last_modification: mtime.map_or(OMIT, timespec),
        });
        let uid = uid.map(|id| self.options.uid_map.stored(id));
        let gid = gid.map(|id| self.options.gid_map.stored(id));
        let change = AttrChange { mode, uid, gid, size, times };
        let open = fh.and_then(|fh| self.file(fh).ok()).filter(|o| o.writable);
        let file = open.as_ref().map(|o| o.fd());
        match self.union.setattr(ino.0, &change, file.as_deref()) {
            Ok(()) => self.reply_attr(ino.0, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _t = self.stats.time(Op::Readlink);
        match self.union.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.stats.time(Op::Mknod);
        let what = if FileType::from_raw_mode(mode) == FileType::RegularFile {
            NewEntry::File { mode, flags: OFlags::RDONLY }
        } else {
            NewEntry::Special { mode, rdev: rdev.into() }
        };
        self.do_create(req, parent, name, what, reply);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let _t = self.stats.time(Op::Mkdir);
        self.do_create(req, parent, name, NewEntry::Dir { mode }, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.stats.time(Op::Unlink);
        self.change(reply, || self.union.remove(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.stats.time(Op::Rmdir);
        self.change(reply, || self.union.remove(parent.0, name, true));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let _t = self.stats.time(Op::Symlink);
        self.do_create(req, parent, link_name, NewEntry::Symlink { target }, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.time(Op::Rename);
        let flags = rustix::fs::RenameFlags::from_bits_retain(flags.bits());
        self.change(reply, || self.union.rename(parent.0, name, newparent.0, newname, flags));
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let _t = self.stats.time(Op::Link);
        self.do_create(req, newparent, newname, NewEntry::Link { ino: ino.0 }, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.stats.time(Op::Open);
        let flags = OFlags::from_bits_retain(flags.0 as u32);
        let mut fresh = None;
        if Self::writable_flags(flags) {
            if let Err(e) = self.guard_write() {
                return reply.error(e);
            }
            match self.union.copy_up_for_open(ino.0, !flags.contains(OFlags::TRUNC), Some(flags)) {
                Ok(file) => fresh = file,
                Err(e) => return reply.error(errno(e)),
            }
        }
        match self.open_handle(ino.0, flags, fresh, req.uid() == 0, |f| reply.open_backing(f)) {
            Ok((fh, Io::Passthrough(id))) => reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &id),
            Ok((fh, Io::Cached { .. })) => {
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _t = self.stats.time(Op::Read);
        let open = match self.file(fh) {
            Ok(o) => o,
            Err(e) => return reply.error(e),
        };
        let file = match self.read_fd(&open) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(e)),
        };
        // One buffer per request thread: a fresh 1 MiB allocation per read costs page
        // faults that show in throughput.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let buf = &mut buf[..size as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match file.read_at(&mut buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return reply.error(errno(e)),
                }
            }
            reply.data(&buf[..filled]);
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _t = self.stats.time(Op::Write);
        let file = match self.writable_fd(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        match file.write_all_at(data, offset) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let _t = self.stats.time(Op::Flush);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.time(Op::Release);
        self.files.release(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let _t = self.stats.time(Op::Fsync);
        let open = match self.file(fh) {
            Ok(o) => o,
            Err(e) => return reply.error(e),
        };
        let file = open.fd();
        let done = if datasync { rustix::fs::fdatasync(&*file) } else { rustix::fs::fsync(&*file) };
        match done {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e.into())),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.stats.time(Op::Opendir);
        match self.union.list(ino.0) {
            Ok(entries) => {
                let fh = self.files.next_fh();
                lock(&self.dirs).insert(fh, entries);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let _t = self.stats.time(Op::Readdir);
        let Some(entries) = lock(&self.dirs).get(&fh.0).cloned() else { return reply.error(Errno::EBADF) };
        let dots = [(".", ino.0), ("..", ROOT)];
        let mut index = offset as usize;
        while index < dots.len() {
            let (name, dot_ino) = dots[index];
            if reply.add(INodeNo(dot_ino), (index + 1) as u64, fuser::FileType::Directory, name) {
                return reply.ok();
            }
            index += 1;
        }
        for (i, e) in entries.iter().enumerate().skip(index - dots.len()) {
            if reply.add(INodeNo(e.ino), (i + dots.len() + 1) as u64, fuse_kind(e.kind), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let _t = self.stats.time(Op::Readdirplus);
        let Some(entries) = lock(&self.dirs).get(&fh.0).cloned() else { return reply.error(Errno::EBADF) };
        let mut index = offset as usize;
        if index < 2 {
            let Ok((node, st)) = self.union.stat(ino.0) else { return reply.error(Errno::ENOENT) };
            let me = self.attr(ino.0, &st, &node);
            for (i, name) in [".", ".."].iter().enumerate().skip(index) {
                // The kernel takes no reference for dot entries: no lookup counted.
                if reply.add(INodeNo(ino.0), (i + 1) as u64, name, &Duration::ZERO, &me, Generation(0)) {
                    return reply.ok();
                }
            }
            index = 2;
        }
        for (i, e) in entries.iter().enumerate().skip(index - 2) {
            let Ok(found) = self.union.lookup(ino.0, &e.name) else { continue };
            let a = self.attr(found.ino, &found.st, &found.node);
            if reply.add(INodeNo(found.ino), (i + 3) as u64, &e.name, &attr_ttl(&found.st), &a, Generation(0)) {
                // Not sent: drop the reference this lookup took.
                self.union.nodes().forget(found.ino, 1);
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        let _t = self.stats.time(Op::Releasedir);
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let _t = self.stats.time(Op::Fsyncdir);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _t = self.stats.time(Op::Statfs);
        match self.union.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.time(Op::Setxattr);
        let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
        self.change(reply, || self.union.setxattr(ino.0, name, value, flags));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _t = self.stats.time(Op::Getxattr);
        match self.union.getxattr(ino.0, name) {
            Ok(v) => sized(reply, &v, size),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _t = self.stats.time(Op::Listxattr);
        match self.union.listxattr(ino.0, req.uid() == 0) {
            Ok(v) => sized(reply, &v, size),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.stats.time(Op::Removexattr);
        self.change(reply, || self.union.removexattr(ino.0, name));
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _t = self.stats.time(Op::Access);
        // With default_permissions the kernel checks modes itself; this answers only
        // existence and the read-only mount.
        if mask.contains(AccessFlags::W_OK) && self.options.read_only {
            return reply.error(Errno::EROFS);
        }
        match self.union.stat(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _t = self.stats.time(Op::Create);
        if let Err(e) = self.guard_write() {
            return reply.error(e);
        }
        let oflags = OFlags::from_bits_retain(flags as u32);
        let what = NewEntry::File { mode, flags: oflags };
        let (found, file) = match self.union.create(parent.0, name, what, self.caller(req)) {
            Ok((found, Some(file))) => (found, file),
            Ok((_, None)) => return reply.error(Errno::EIO),
            Err(e) => return reply.error(errno(e)),
        };
        let a = self.attr(found.ino, &found.st, &found.node);
        let ttl = attr_ttl(&found.st);
        let (fh, flags) =
            match self.open_handle(found.ino, oflags, Some(file), req.uid() == 0, |f| reply.open_backing(f)) {
                Ok((fh, Io::Passthrough(id))) => {
                    return reply.created_passthrough(
                        &ttl,
                        &a,
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::FOPEN_NOFLUSH,
                        &id,
                    );
                }
                Ok((fh, Io::Cached { .. })) => (fh, FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH),
                Err(e) => return reply.error(errno(e)),
            };
        reply.created(&ttl, &a, Generation(0), FileHandle(fh), flags);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.time(Op::Fallocate);
        let file = match self.writable_fd(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let mode = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
        match rustix::fs::fallocate(&*file, mode, offset, length) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e.into())),
        }
    }

    fn lseek(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        let _t = self.stats.time(Op::Lseek);
        let open = match self.file(fh) {
            Ok(o) => o,
            Err(e) => return reply.error(e),
        };
        let file = match self.read_fd(&open) {
            Ok(f) => f,
            Err(e) => return reply.error(errno(e)),
        };
        let pos = match whence {
            3 => rustix::fs::SeekFrom::Data(offset.max(0) as u64),
            4 => rustix::fs::SeekFrom::Hole(offset.max(0) as u64),
            _ => return reply.error(Errno::EINVAL),
        };
        match rustix::fs::seek(&*file, pos) {
            Ok(at) => reply.offset(at as i64),
            Err(e) => reply.error(errno(e.into())),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _t = self.stats.time(Op::CopyFileRange);
        let (src, dst) = match (self.file(fh_in), self.file(fh_out)) {
            (Ok(s), Ok(d)) if d.writable => (s, d),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
            _ => return reply.error(Errno::EBADF),
        };
        let (src, dst) = match self.read_fd(&src) {
            Ok(s) => (s, dst.fd()),
            Err(e) => return reply.error(errno(e)),
        };
        let (mut off_in, mut off_out) = (offset_in, offset_out);
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(&*src, Some(&mut off_in), &*dst, Some(&mut off_out), len) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e.into())),
        }
    }
}

/// Answers a get/listxattr: the size when asked for 0 bytes, else the value.
fn sized(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
