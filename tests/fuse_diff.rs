//! The kernel is the oracle: seeded random sequences of file operations run against a
//! kernel overlayfs mount and a strata-fuse mount over the same lower layers; every
//! result (value or errno) must match, and so must both merged trees and both upper dirs
//! at the end.
//!
//! Budget: `STRATA_FUSE_DIFF_SEQUENCES` (default 24) sequences of
//! `STRATA_FUSE_DIFF_OPS` (default 150) operations; `STRATA_FUSE_DIFF_SEED` picks the
//! first seed; `STRATA_FUSE_DIFF_STRICT=1` compares the upper dirs after every operation
//! (slow; finds the operation that made them differ), `STRATA_FUSE_DIFF_SHOW=1` then
//! lists both upper dirs, and `STRATA_FUSE_DIFF_KEEP=1` leaves the mounts and layers of
//! a stack the kernel contradicts itself on, for a look. CI runs the default; run longer with e.g.
//! `STRATA_FUSE_DIFF_SEQUENCES=2000 cargo test --release fuse_diff`.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, RenameFlags, Timespec, Timestamps, XattrFlags};

use crate::util::{MountGuard, Rng, Tree, require_fuse};

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

/// A random path of depth 1..=3 over NAMES: small enough that operations collide.
fn path(rng: &mut Rng) -> String {
    let depth = 1 + rng.below(3);
    (0..depth).map(|_| NAMES[rng.below(NAMES.len())]).collect::<Vec<_>>().join("/")
}

/// Fills three lower layers over the same small namespace: files, dirs, symlinks,
/// hardlinks, fifos, xattrs, and overlayfs whiteouts and opaque dirs.
fn populate(rng: &mut Rng, lowers: &[PathBuf], user: Option<u32>) {
    for (depth, layer) in lowers.iter().enumerate().rev() {
        fs::create_dir_all(layer).expect("layer dir");
        for _ in 0..12 {
            let p = layer.join(path(rng));
            let parent = p.parent().expect("parent");
            if fs::create_dir_all(parent).is_err() {
                continue; // a file sits where a parent dir would go
            }
            if p.symlink_metadata().is_ok() {
                continue;
            }
            if rng.below(3) == 0 {
                // Aim at a name below, for whiteouts and opaque dirs that matter.
                if let Some(deeper) = lowers.get(depth + 1) {
                    if let Some(existing) = any_entry(deeper, rng) {
                        let target = layer.join(&existing);
                        if target.parent().is_some_and(|d| fs::create_dir_all(d).is_ok())
                            && target.symlink_metadata().is_err()
                        {
                            let _ = rustix::fs::mknodat(CWD, &target, FileType::CharacterDevice, Mode::empty(), 0);
                        }
                    }
                }
                continue;
            }
            match rng.below(8) {
                0 | 1 => {
                    let _ = fs::create_dir(&p);
                    if depth < lowers.len() - 1 && rng.below(3) == 0 {
                        let _ = rustix::fs::setxattr(&p, "trusted.overlay.opaque", b"y", XattrFlags::empty());
                    }
                }
                2 => {
                    let _ = std::os::unix::fs::symlink(NAMES[rng.below(5)], &p);
                }
                // A whiteout only where it hides something: overlayfs lists a lone one in
                // an unmerged dir (but cannot look it up), which no real layer has.
                3 if lowers[depth + 1..]
                    .iter()
                    .any(|l| l.join(p.strip_prefix(layer).expect("in layer")).symlink_metadata().is_ok()) =>
                {
                    let _ = rustix::fs::mknodat(CWD, &p, FileType::CharacterDevice, Mode::empty(), 0);
                }
                4 => {
                    let _ = rustix::fs::mknodat(CWD, &p, FileType::Fifo, Mode::from_raw_mode(0o640), 0);
                }
                _ => {
                    let body: Vec<u8> = (0..rng.below(3000)).map(|i| (i % 251) as u8 ^ depth as u8).collect();
                    if fs::write(&p, &body).is_ok() {
                        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o600 + rng.below(0o177) as u32));
                        let _ = rustix::fs::setxattr(&p, "user.origin", &[depth as u8], XattrFlags::empty());
                        let times = old_times(rng.below(1000) as i64);
                        let _ = rustix::fs::utimensat(CWD, &p, &times, AtFlags::SYMLINK_NOFOLLOW);
                    }
                }
            }
            // For a sequence run as a user: some entries (and the dirs above) are theirs.
            if let Some(uid) = user {
                if rng.below(2) == 0 {
                    let owner = Some(rustix::fs::Uid::from_raw(uid));
                    let group = Some(rustix::fs::Gid::from_raw(uid));
                    let _ = rustix::fs::chownat(CWD, &p, owner, group, AtFlags::SYMLINK_NOFOLLOW);
                    let _ = rustix::fs::chownat(CWD, parent, owner, group, AtFlags::empty());
                }
            }
        }
    }
}

/// Every entry below `root`, as relative paths in a stable order.
fn entries(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .map(|e| e.path().strip_prefix(root).expect("under root").to_string_lossy().into_owned())
        .collect()
}

/// A random existing entry (relative path) of a layer, if any.
fn any_entry(layer: &Path, rng: &mut Rng) -> Option<PathBuf> {
    let all: Vec<PathBuf> = walkdir::WalkDir::new(layer)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .map(|e| e.path().strip_prefix(layer).expect("in layer").to_owned())
        .collect();
    (!all.is_empty()).then(|| all[rng.below(all.len())].clone())
}

fn old_times(k: i64) -> Timestamps {
    let t = Timespec { tv_sec: 1_000_000_000 + k, tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

/// One operation, as a closure over a mount root giving a comparable outcome.
#[derive(Debug, Clone)]
enum Op {
    Create(String, u32),
    WriteAt(String, u64, usize, u8),
    Append(String, usize, u8),
    Truncate(String, u64),
    Overwrite(String, usize, u8),
    Chmod(String, u32),
    Chown(String, u32, u32),
    Utimens(String, i64),
    Mkdir(String, u32),
    Mknod(String),
    Rmdir(String),
    Unlink(String),
    Rename(String, String, u32),
    Link(String, String),
    Symlink(String, String),
    SetXattr(String, u8, u8),
    RemoveXattr(String, u8),
    ReadDir(String),
    Stat(String),
    Read(String),
    ReadLink(String),
    ListXattr(String),
}

/// An operation on a random path; half the time on an entry that exists (in the
/// kernel's view, which the fuse view equals while no divergence was found), so that
/// operations mostly change state rather than fail on missing names.
fn random_op(rng: &mut Rng, existing: &[String]) -> Op {
    let p =
        if !existing.is_empty() && rng.below(2) == 0 { existing[rng.below(existing.len())].clone() } else { path(rng) };
    match rng.below(22) {
        0 => Op::Create(p, 0o600 + rng.below(0o177) as u32),
        1 => Op::WriteAt(p, rng.below(5000) as u64, 1 + rng.below(3000), rng.below(256) as u8),
        2 => Op::Append(p, 1 + rng.below(100), rng.below(256) as u8),
        3 => Op::Truncate(p, rng.below(4000) as u64),
        4 => Op::Chmod(p, rng.below(0o7777) as u32),
        5 => Op::Chown(p, rng.below(3) as u32, rng.below(3) as u32),
        6 => Op::Utimens(p, rng.below(1000) as i64),
        7 => Op::Mkdir(p, 0o700 + rng.below(0o77) as u32),
        8 => Op::Mknod(p),
        9 => Op::Rmdir(p),
        10 => Op::Unlink(p),
        11 => Op::Rename(p, path(rng), [0, 0, 1, 2][rng.below(4)]),
        12 => Op::Link(p, path(rng)),
        13 => Op::Symlink(NAMES[rng.below(5)].to_owned(), p),
        14 => Op::SetXattr(p, rng.below(2) as u8, rng.below(256) as u8),
        15 => Op::RemoveXattr(p, rng.below(2) as u8),
        21 => Op::Overwrite(p, rng.below(2000), rng.below(256) as u8),
        16 => Op::ReadDir(if rng.below(3) == 0 { String::new() } else { p }),
        17 | 18 => Op::Stat(p),
        19 => Op::Read(p),
        _ => {
            if rng.below(2) == 0 {
                Op::ReadLink(p)
            } else {
                Op::ListXattr(p)
            }
        }
    }
}

type Outcome = Result<String, i32>;

/// Opening a fifo would block without a peer: open everything non-blocking.
const NONBLOCK: i32 = 0o4000;

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn rx<T>(r: rustix::io::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e.raw_os_error())
}

/// The stat fields overlayfs defines the same way as strata-fuse (not st_ino / st_dev,
/// which differ by design; mtimes only when a test set them, i.e. before 2010).
fn describe(md: &fs::Metadata) -> String {
    let kind = FileType::from_raw_mode(md.mode());
    let size = if matches!(kind, FileType::RegularFile | FileType::Symlink) { md.size() } else { 0 };
    let mtime = if md.mtime() < 1_300_000_000 { md.mtime() } else { 0 };
    format!(
        "{kind:?} mode {:o} uid {} gid {} size {size} nlink {} mtime {mtime} rdev {}",
        md.mode() & 0o7777,
        md.uid(),
        md.gid(),
        md.nlink(),
        md.rdev()
    )
}

fn run(op: &Op, root: &Path) -> Outcome {
    let at = |p: &str| root.join(p);
    match op {
        Op::Create(p, mode) => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(at(p))
            .map(|_| String::new())
            .map_err(errno),
        Op::WriteAt(p, off, len, byte) => {
            use std::os::unix::fs::FileExt;
            let f = OpenOptions::new().write(true).custom_flags(NONBLOCK).open(at(p)).map_err(errno)?;
            f.write_all_at(&vec![*byte; *len], *off).map(|_| String::new()).map_err(errno)
        }
        Op::Append(p, len, byte) => {
            let mut f = OpenOptions::new().append(true).custom_flags(NONBLOCK).open(at(p)).map_err(errno)?;
            f.write_all(&vec![*byte; *len]).map(|_| String::new()).map_err(errno)
        }
        Op::Truncate(p, len) => {
            let f = OpenOptions::new().write(true).custom_flags(NONBLOCK).open(at(p)).map_err(errno)?;
            f.set_len(*len).map(|_| String::new()).map_err(errno)
        }
        Op::Overwrite(p, len, byte) => {
            // open(O_TRUNC) of an existing file: a lower one copies up without its data.
            let mut f =
                OpenOptions::new().write(true).truncate(true).custom_flags(NONBLOCK).open(at(p)).map_err(errno)?;
            f.write_all(&vec![*byte; *len]).map(|_| String::new()).map_err(errno)
        }
        Op::Chmod(p, mode) => {
            rx(rustix::fs::chmodat(CWD, at(p), Mode::from_raw_mode(*mode), AtFlags::empty())).map(|_| String::new())
        }
        Op::Chown(p, u, g) => rx(rustix::fs::chownat(
            CWD,
            at(p),
            Some(rustix::fs::Uid::from_raw(*u)),
            Some(rustix::fs::Gid::from_raw(*g)),
            AtFlags::SYMLINK_NOFOLLOW,
        ))
        .map(|_| String::new()),
        Op::Utimens(p, k) => {
            rx(rustix::fs::utimensat(CWD, at(p), &old_times(*k), AtFlags::SYMLINK_NOFOLLOW)).map(|_| String::new())
        }
        Op::Mkdir(p, mode) => rx(rustix::fs::mkdirat(CWD, at(p), Mode::from_raw_mode(*mode))).map(|_| String::new()),
        Op::Mknod(p) => {
            rx(rustix::fs::mknodat(CWD, at(p), FileType::Fifo, Mode::from_raw_mode(0o644), 0)).map(|_| String::new())
        }
        Op::Rmdir(p) => fs::remove_dir(at(p)).map(|_| String::new()).map_err(errno),
        Op::Unlink(p) => fs::remove_file(at(p)).map(|_| String::new()).map_err(errno),
        Op::Rename(a, b, flags) => {
            let flags = match flags {
                1 => RenameFlags::NOREPLACE,
                2 => RenameFlags::EXCHANGE,
                _ => RenameFlags::empty(),
            };
            rx(rustix::fs::renameat_with(CWD, at(a), CWD, at(b), flags)).map(|_| String::new())
        }
        Op::Link(a, b) => fs::hard_link(at(a), at(b)).map(|_| String::new()).map_err(errno),
        Op::Symlink(target, p) => std::os::unix::fs::symlink(target, at(p)).map(|_| String::new()).map_err(errno),
        Op::SetXattr(p, k, v) => {
            rx(rustix::fs::lsetxattr(at(p), format!("user.k{k}").as_str(), &[*v], XattrFlags::empty()))
                .map(|_| String::new())
        }
        Op::RemoveXattr(p, k) => {
            rx(rustix::fs::lremovexattr(at(p), format!("user.k{k}").as_str())).map(|_| String::new())
        }
        Op::ReadDir(p) => {
            let mut names: Vec<String> = fs::read_dir(at(p))
                .map_err(errno)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()
                .map_err(errno)?;
            names.sort();
            Ok(names.join(" "))
        }
        Op::Stat(p) => at(p).symlink_metadata().map(|md| describe(&md)).map_err(errno),
        Op::Read(p) => {
            use std::io::Read;
            let mut f = OpenOptions::new().read(true).custom_flags(NONBLOCK).open(at(p)).map_err(errno)?;
            let mut d = Vec::new();
            f.read_to_end(&mut d).map_err(errno)?;
            Ok(format!("{} bytes, sum {}", d.len(), d.iter().map(|&b| u64::from(b)).sum::<u64>()))
        }
        Op::ReadLink(p) => fs::read_link(at(p)).map(|t| t.display().to_string()).map_err(errno),
        Op::ListXattr(p) => {
            let mut buf = vec![0u8; 4096];
            let n = rx(rustix::fs::llistxattr(at(p), &mut buf[..]))?;
            let names: BTreeSet<String> = buf[..n]
                .split(|&b| b == 0)
                .filter(|k| !k.is_empty())
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            Ok(names.into_iter().collect::<Vec<_>>().join(" "))
        }
    }
}

/// A tree with the mtimes the operations set kept and the rest blanked, plus which
/// dirs are opaque (overlay xattrs are hidden from [`Tree`]).
fn comparable(root: &Path) -> (Tree, BTreeSet<String>) {
    let mut tree = Tree::of(root);
    let mut opaque = BTreeSet::new();
    for (p, node) in tree.0.iter_mut() {
        if node.mtime.0 >= 1_300_000_000 {
            node.mtime = (0, 0);
        }
        if node.kind == "char" && node.content == "0:0" {
            node.links.clear(); // overlayfs shares one inode among its whiteouts
        }
        let mut v = [0u8; 8];
        if node.kind == "dir" && rustix::fs::lgetxattr(root.join(p), "trusted.overlay.opaque", &mut v[..]).is_ok() {
            opaque.insert(p.clone());
        }
    }
    (tree, opaque)
}

/// Every name a directory lists can be looked up (what a tree walk relies on) and, when
/// `inodes`, with the inode number the listing gave (what `ls -i` and `find -inum` rely
/// on; strata-fuse promises it, overlayfs without `xino` does not always keep it).
fn listing_matches_lookup(root: &Path, inodes: bool) -> Vec<String> {
    use std::os::unix::fs::DirEntryExt;
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.path().symlink_metadata() {
                Ok(md) if inodes && md.ino() != entry.ino() => out.push(format!(
                    "{}: readdir says inode {}, lstat says {}",
                    entry.path().display(),
                    entry.ino(),
                    md.ino()
                )),
                Ok(md) if md.is_dir() => dirs.push(entry.path()),
                Ok(_) => {}
                Err(e) => out.push(format!("{} is listed but lstat says {e}", entry.path().display())),
            }
        }
    }
    out
}

struct Mounts {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    fuse: PathBuf,
}

fn scratch() -> tempfile::TempDir {
    // tmpfs when there is one: the harness is about semantics, not disk speed.
    let base = Path::new("/dev/shm");
    if base.is_dir() { tempfile::tempdir_in(base) } else { tempfile::tempdir() }.expect("tempdir")
}

/// Runs one sequence; returns (operations run, of which succeeded, divergences).
fn sequence(seed: u64, ops: usize, passthrough: bool, user: Option<u32>) -> (usize, usize, Vec<String>) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let m = {
        let dir = scratch();
        let d = dir.path().to_owned();
        Mounts { kernel: d.join("kmnt"), fuse: d.join("fmnt"), dir }
    };
    let d = m.dir.path();
    let lowers: Vec<PathBuf> = (0..3).map(|i| d.join(format!("l{i}"))).collect();
    populate(&mut rng, &lowers, user);
    for sub in ["ku", "kw", "fu", "fw", "kmnt", "fmnt"] {
        fs::create_dir(d.join(sub)).expect("mkdir");
    }
    if let Some(uid) = user {
        // The user owns the mount's root (the upper root dirs), so it can create there.
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod");
        for sub in ["ku", "fu"] {
            let id = (Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(uid)));
            rustix::fs::chownat(CWD, d.join(sub), id.0, id.1, AtFlags::empty()).expect("chown");
        }
    }
    let lowerdir = lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},index=off,redirect_dir=off,metacopy=off,xino=off",
        d.join("ku").display(),
        d.join("kw").display()
    );
    let _kernel_guard = MountGuard(m.kernel.clone());
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&m.kernel)
        .status()
        .expect("mount");
    assert!(status.success(), "kernel overlay mount failed: {options}");
    let mut config = strata::fuse::UnionConfig::new(lowers.clone());
    config.stack.upper = Some(d.join("fu"));
    config.stack.work = Some(d.join("fw"));
    config.passthrough = passthrough;
    let _fuse_guard = MountGuard(m.fuse.clone());
    let fuse = strata::fuse::mount(&config, &m.fuse).expect("strata-fuse mount");

    let mut divergences = Vec::new();
    let mut ran = 0;
    let strict = std::env::var_os("STRATA_FUSE_DIFF_STRICT").is_some();
    let mut succeeded = 0;
    let kernel_broken = listing_matches_lookup(&m.kernel, false);
    if !kernel_broken.is_empty() {
        if std::env::var_os("STRATA_FUSE_DIFF_KEEP").is_some() {
            eprintln!("{kernel_broken:?}");
            std::mem::forget(m.dir);
            std::mem::forget(fuse);
            std::mem::forget(_kernel_guard);
            std::mem::forget(_fuse_guard);
            return (0, 0, divergences);
        }
        // Some random stacks (a dir over a non-dir over a dir) make overlayfs list
        // names it cannot look up: no oracle there.
        eprintln!("seed {seed}: kernel overlayfs is inconsistent on these layers; skipped");
        drop(fuse);
        let _ = std::process::Command::new("umount").arg(&m.kernel).status();
        return (0, 0, divergences);
    }
    let mut run_ops = || {
        for i in 0..ops {
            let existing = entries(&m.kernel);
            let op = random_op(&mut rng, &existing);
            let want = run(&op, &m.kernel);
            let got = run(&op, &m.fuse);
            ran += 1;
            succeeded += usize::from(got.is_ok());
            if want != got {
                divergences.push(format!("seed {seed} op {i}: {op:?}\n   kernel {want:?}\n   fuse   {got:?}"));
                break; // the states differ from here on
            }
            if strict {
                // Finds the first operation after which the upper dirs differ.
                let (ku, fu) = (comparable(&d.join("ku")), comparable(&d.join("fu")));
                if ku.1 != fu.1 || !ku.0.diff(&fu.0).is_empty() {
                    divergences.push(format!(
                        "seed {seed} op {i}: {op:?} left the upper dirs different: {:?}",
                        ku.0.diff(&fu.0)
                    ));
                    divergences.push(format!("   opaque: kernel {:?} fuse {:?}", ku.1, fu.1));
                    if std::env::var_os("STRATA_FUSE_DIFF_SHOW").is_some() {
                        let _ = std::process::Command::new("sh")
                            .arg("-c")
                            .arg(format!("cd {}; ls -laR ku fu; getfattr -R -d -m - ku fu", d.display()))
                            .status();
                    }
                    break;
                }
            }
        }
    };
    match user {
        // Credentials are per thread in Linux: this thread becomes the user, the FUSE
        // threads of this process stay root.
        Some(uid) => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let gid = rustix::fs::Gid::from_raw(uid);
                    rustix::thread::set_thread_groups(&[]).expect("setgroups");
                    rustix::thread::set_thread_res_gid(gid, gid, gid).expect("setresgid");
                    let uid = rustix::fs::Uid::from_raw(uid);
                    rustix::thread::set_thread_res_uid(uid, uid, uid).expect("setresuid");
                    run_ops();
                })
                .join()
                .expect("user thread");
        }),
        None => run_ops(),
    }
    for (name, root, inodes) in [("kernel", &m.kernel, false), ("fuse", &m.fuse, true)] {
        if divergences.is_empty() {
            let broken = listing_matches_lookup(root, inodes);
            divergences.extend(broken.into_iter().map(|l| format!("seed {seed} {name}: {l}")));
        }
    }
    if divergences.is_empty() {
        let (kt, ko) = comparable(&m.kernel);
        let (ft, fo) = comparable(&m.fuse);
        for line in kt.diff(&ft) {
            divergences.push(format!("seed {seed} merged view: {line}"));
        }
        if ko != fo {
            divergences.push(format!("seed {seed} merged view opaque dirs: kernel {ko:?} fuse {fo:?}"));
        }
    }
    drop(fuse);
    let status = std::process::Command::new("umount").arg(&m.kernel).status().expect("umount");
    assert!(status.success());
    if divergences.is_empty() {
        let (kt, ko) = comparable(&d.join("ku"));
        let (ft, fo) = comparable(&d.join("fu"));
        for line in kt.diff(&ft) {
            divergences.push(format!("seed {seed} upper dir: {line}"));
        }
        if ko != fo {
            divergences.push(format!("seed {seed} upper opaque dirs: kernel {ko:?} fuse {fo:?}"));
        }
    }
    (ran, succeeded, divergences)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn privileged_fuse_matches_kernel_overlay_on_random_operations() {
    if !require_fuse("privileged_fuse_matches_kernel_overlay_on_random_operations") {
        return;
    }
    let sequences = env_or("STRATA_FUSE_DIFF_SEQUENCES", 24);
    let ops = env_or("STRATA_FUSE_DIFF_OPS", 150) as usize;
    let first = env_or("STRATA_FUSE_DIFF_SEED", 1);
    let (mut total, mut total_ok, mut as_user) = (0, 0, 0);
    let mut all = Vec::new();
    for seed in first..first + sequences {
        // Every third sequence runs its operations as uid 1000 (permission checks,
        // owners of new entries); passthrough on every other one.
        let user = (seed % 3 == 0).then_some(1000);
        let (ran, ok, divergences) = sequence(seed, ops, seed % 2 == 0, user);
        total += ran;
        total_ok += ok;
        as_user += if user.is_some() { ran } else { 0 };
        all.extend(divergences);
    }
    eprintln!(
        "fuse differential: {sequences} sequences, {total} operations ({total_ok} succeeded, {as_user} as uid 1000), {} divergences",
        all.len()
    );
    assert!(all.is_empty(), "strata-fuse diverged from kernel overlayfs:\n{}", all.join("\n"));
}
