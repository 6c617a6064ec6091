//! The attributes strata-fuse reports: the real file's, with the stable inode number
//! and overlayfs's conventions, and how long the kernel may cache them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, INodeNo, TimeOrNow};
use rustix::fs::{FileType, Stat, Timespec};

use crate::nodes::Node;

/// Layers do not change under a mount and every change goes through this process, so
/// the kernel may cache names and attributes for long. Hard-linked files are the
/// exception (a change through one name would leave the other's cached attributes
/// stale): they get no attribute caching.
pub(crate) const TTL: Duration = Duration::from_secs(24 * 3600);

fn time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = u32::try_from(nsec).unwrap_or(0);
    match u64::try_from(sec) {
        Ok(s) => UNIX_EPOCH + Duration::new(s, nsec),
        Err(_) => UNIX_EPOCH - Duration::new(sec.unsigned_abs(), 0) + Duration::new(0, nsec),
    }
}

pub(crate) fn fuse_kind(kind: FileType) -> fuser::FileType {
    match kind {
        FileType::Directory => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
        FileType::CharacterDevice => fuser::FileType::CharDevice,
        FileType::BlockDevice => fuser::FileType::BlockDevice,
        _ => fuser::FileType::RegularFile,
    }
}

/// The attributes we report: the real file's, with our stable inode number, and
/// overlayfs's `nlink = 1` for merged directories.
pub(crate) fn attr(ino: u64, st: &Stat, node: &Node) -> FileAttr {
    let kind = FileType::from_raw_mode(st.st_mode);
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec as i64),
        mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: fuse_kind(kind),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: if node.is_merged_dir() { 1 } else { st.st_nlink as u32 },
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// The attributes of a negative entry: node id 0 tells the kernel the name is absent.
pub(crate) fn negative() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

pub(crate) fn attr_ttl(st: &Stat) -> Duration {
    if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_nlink > 1 { Duration::ZERO } else { TTL }
}

pub(crate) fn timespec(t: TimeOrNow) -> Timespec {
    match t {
        TimeOrNow::Now => Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
        TimeOrNow::SpecificTime(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos().into() },
            Err(e) => Timespec { tv_sec: -(e.duration().as_secs_f64().ceil() as i64), tv_nsec: 0 },
        },
    }
}

pub(crate) const OMIT: Timespec = Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT };
