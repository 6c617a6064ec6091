//! strata-fuse's hard cases, on real FUSE mounts (privileged: root and /dev/fuse).

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{AtFlags, CWD, FileType, Mode, XattrFlags};
use strata::fuse::{Mounted, UnionConfig, mount};

use crate::util::{MountGuard, require_fuse, start_strata_fuse};

/// Lower dirs l0 (top) .. lN-1, an upper and a work dir, and a mount point.
struct Stack {
    dir: tempfile::TempDir,
    lowers: Vec<PathBuf>,
}

impl Stack {
    fn new(layers: usize) -> Stack {
        let dir = tempfile::tempdir().expect("tempdir");
        let lowers: Vec<PathBuf> = (0..layers).map(|i| dir.path().join(format!("l{i}"))).collect();
        for p in lowers.iter().chain([&dir.path().join("upper"), &dir.path().join("work"), &dir.path().join("mnt")]) {
            fs::create_dir_all(p).expect("mkdir");
        }
        Stack { dir, lowers }
    }

    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn config(&self, passthrough: bool) -> UnionConfig {
        let mut c = UnionConfig::new(self.lowers.clone());
        c.stack.upper = Some(self.upper());
        c.stack.work = Some(self.dir.path().join("work"));
        c.passthrough = passthrough;
        c
    }

    fn mount(&self, passthrough: bool) -> (Mounted, MountGuard) {
        let guard = MountGuard(self.mnt());
        (mount(&self.config(passthrough), &self.mnt()).expect("mount strata-fuse"), guard)
    }
}

fn xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    rustix::fs::lgetxattr(path, key, &mut buf[..]).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn privileged_fuse_copy_up_of_a_large_file_keeps_content_metadata_and_inode() {
    if !require_fuse("privileged_fuse_copy_up_of_a_large_file_keeps_content_metadata_and_inode") {
        return;
    }
    let s = Stack::new(1);
    let big = s.lowers[0].join("big");
    let body: Vec<u8> = (0..64u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    fs::write(&big, &body).expect("write lower");
    fs::set_permissions(&big, fs::Permissions::from_mode(0o4751)).expect("chmod");
    rustix::fs::chownat(
        CWD,
        &big,
        Some(rustix::fs::Uid::from_raw(7)),
        Some(rustix::fs::Gid::from_raw(8)),
        AtFlags::empty(),
    )
    .expect("chown");
    fs::set_permissions(&big, fs::Permissions::from_mode(0o4751)).expect("chmod after chown");
    rustix::fs::setxattr(&big, "user.tag", b"v1", XattrFlags::empty()).expect("xattr");
    // A file capability, which chown drops: the copy must set it after the owner.
    const CAP_NET_RAW: [u8; 20] = [0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    rustix::fs::setxattr(&big, "security.capability", &CAP_NET_RAW, XattrFlags::empty()).expect("capability");
    let t = rustix::fs::Timespec { tv_sec: 1_234_567_890, tv_nsec: 42 };
    rustix::fs::utimensat(
        CWD,
        &big,
        &rustix::fs::Timestamps { last_access: t, last_modification: t },
        AtFlags::empty(),
    )
    .expect("utimens");
    for passthrough in [true, false] {
        let _ = fs::remove_file(s.upper().join("big"));
        let (m, _g) = s.mount(passthrough);
        let merged = s.mnt().join("big");
        let before = merged.symlink_metadata().expect("stat before");
        // A metadata-only change copies up too; then the data must be whole.
        rustix::fs::setxattr(&merged, "user.more", b"x", XattrFlags::empty()).expect("setxattr copies up");
        let copied = s.upper().join("big");
        assert_eq!(fs::read(&copied).expect("upper copy"), body, "copied data (passthrough={passthrough})");
        let md = copied.symlink_metadata().expect("stat upper");
        assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o4751, 7, 8), "owner and mode incl. setuid");
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_234_567_890, 42), "mtime");
        assert_eq!(xattr(&copied, "user.tag").as_deref(), Some(&b"v1"[..]), "xattrs copied");
        assert_eq!(xattr(&copied, "security.capability").as_deref(), Some(&CAP_NET_RAW[..]), "capability kept");
        let after = merged.symlink_metadata().expect("stat after");
        assert_eq!(before.ino(), after.ino(), "st_ino stable across copy-up");
        assert!(!s.dir.path().join("work").read_dir().expect("work").any(|_| true), "work dir left clean");
        m.unmount().expect("unmount");
        let (m, _g) = s.mount(passthrough);
        assert_eq!(
            s.mnt().join("big").symlink_metadata().expect("stat").ino(),
            before.ino(),
            "st_ino stable across remount"
        );
        m.unmount().expect("unmount");
    }
    assert_eq!(fs::read(&big).expect("lower").len(), body.len(), "the lower file is untouched");
}

#[test]
fn privileged_fuse_file_held_open_across_copy_up() {
    if !require_fuse("privileged_fuse_file_held_open_across_copy_up") {
        return;
    }
    let s = Stack::new(1);
    fs::write(s.lowers[0].join("log"), b"lower\n").expect("lower");
    // Without passthrough: overlayfs semantics, the early reader sees later writes.
    {
        let (m, _g) = s.mount(false);
        let mut reader = fs::File::open(s.mnt().join("log")).expect("open reader");
        let mut writer = OpenOptions::new().append(true).open(s.mnt().join("log")).expect("open writer (copy-up)");
        writer.write_all(b"upper\n").expect("append");
        let mut seen = String::new();
        reader.read_to_string(&mut seen).expect("read");
        assert_eq!(seen, "lower\nupper\n", "the reader opened before copy-up follows the upper copy");
        drop((reader, writer));
        m.unmount().expect("unmount");
    }
    fs::remove_file(s.upper().join("log")).expect("reset upper");
    // With passthrough: a lower file of a writable mount is not bound as a backing (it
    // could not be copied up while bound), so the same holds, and nobody waits.
    {
        let (m, _g) = s.mount(true);
        let mut reader = fs::File::open(s.mnt().join("log")).expect("open reader");
        let mut writer = OpenOptions::new().append(true).open(s.mnt().join("log")).expect("open writer (copy-up)");
        writer.write_all(b"upper\n").expect("append");
        assert_eq!(fs::read(s.mnt().join("log")).expect("a new open"), b"lower\nupper\n", "new opens see the copy");
        let mut seen = String::new();
        reader.read_to_string(&mut seen).expect("read");
        assert_eq!(seen, "lower\nupper\n", "the reader opened before copy-up follows the upper copy");
        assert_eq!(fs::read(s.lowers[0].join("log")).expect("lower"), b"lower\n", "the lower layer is never written");
        drop((reader, writer));
        let mut writer = OpenOptions::new().append(true).open(s.mnt().join("log")).expect("open after readers closed");
        writer.write_all(b"later\n").expect("append");
        drop(writer);
        assert_eq!(fs::read_to_string(s.mnt().join("log")).expect("read merged"), "lower\nupper\nlater\n");
        m.unmount().expect("unmount");
    }
    assert_eq!(fs::read(s.lowers[0].join("log")).expect("lower"), b"lower\n");
}

#[test]
fn privileged_fuse_whiteouts_opaque_dirs_and_renames() {
    if !require_fuse("privileged_fuse_whiteouts_opaque_dirs_and_renames") {
        return;
    }
    let s = Stack::new(2);
    fs::create_dir_all(s.lowers[1].join("etc/conf.d")).expect("mkdir");
    fs::write(s.lowers[1].join("etc/conf.d/a"), b"a").expect("a");
    fs::write(s.lowers[1].join("etc/old"), b"old").expect("old");
    fs::create_dir_all(s.lowers[0].join("etc")).expect("mkdir");
    fs::write(s.lowers[0].join("etc/.wh.gone"), b"").expect("aufs whiteout");
    fs::write(s.lowers[1].join("etc/gone"), b"hidden").expect("hidden by the aufs whiteout");
    let (m, _g) = s.mount(true);
    let etc = s.mnt().join("etc");
    let names = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&etc), ["conf.d", "old"], "AUFS whiteouts hide and are hidden");
    assert!(etc.join("gone").symlink_metadata().is_err());
    // rmdir of a dir with lower entries, then mkdir of the same name: opaque and empty.
    fs::remove_file(etc.join("conf.d/a")).expect("rm a");
    fs::remove_dir(etc.join("conf.d")).expect("rmdir");
    assert!(fs::symlink_metadata(s.upper().join("etc/conf.d")).expect("whiteout").file_type().is_char_device());
    fs::create_dir(etc.join("conf.d")).expect("mkdir again");
    assert!(names(&etc.join("conf.d")).is_empty(), "the new dir hides the old contents");
    assert_eq!(xattr(&s.upper().join("etc/conf.d"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    // Rename over a whiteout: remove old, then move a new file onto its name.
    fs::remove_file(etc.join("old")).expect("rm old");
    fs::write(etc.join("new"), b"new").expect("new");
    fs::rename(etc.join("new"), etc.join("old")).expect("rename over the whiteout");
    assert_eq!(fs::read(etc.join("old")).expect("read"), b"new");
    assert!(etc.join("new").symlink_metadata().is_err());
    // A dir with lower parts cannot move (no redirect_dir): EXDEV, as overlayfs.
    let e = fs::rename(&etc, s.mnt().join("etc2")).expect_err("dir rename");
    assert_eq!(e.raw_os_error(), Some(rustix::io::Errno::XDEV.raw_os_error()));
    m.unmount().expect("unmount");
    // The upper dir is valid for kernel overlayfs: the same view there.
    let kmnt = s.dir.path().join("kmnt");
    fs::create_dir(&kmnt).expect("mkdir");
    let _kg = MountGuard(kmnt.clone());
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        s.lowers[0].display(),
        s.lowers[1].display(),
        s.upper().display(),
        s.dir.path().join("work").display()
    );
    assert!(
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&kmnt)
            .status()
            .expect("mount")
            .success()
    );
    assert_eq!(fs::read(kmnt.join("etc/old")).expect("read"), b"new");
    assert!(names(&kmnt.join("etc/conf.d")).is_empty());
}

#[test]
fn privileged_fuse_hardlinks_and_xattrs() {
    if !require_fuse("privileged_fuse_hardlinks_and_xattrs") {
        return;
    }
    let s = Stack::new(1);
    fs::write(s.lowers[0].join("bin"), b"v1").expect("lower");
    fs::hard_link(s.lowers[0].join("bin"), s.lowers[0].join("bin-alias")).expect("lower hardlink");
    rustix::fs::setxattr(s.lowers[0].join("bin"), "user.cap", b"c", XattrFlags::empty()).expect("xattr");
    let (m, _g) = s.mount(true);
    let mnt = s.mnt();
    // Hard links made in the union keep their link count.
    fs::write(mnt.join("f"), b"1").expect("create");
    fs::hard_link(mnt.join("f"), mnt.join("g")).expect("link");
    assert_eq!(mnt.join("f").metadata().expect("stat").nlink(), 2);
    OpenOptions::new().append(true).open(mnt.join("g")).expect("open").write_all(b"23").expect("append");
    assert_eq!(mnt.join("f").metadata().expect("stat").len(), 3, "a write through one name shows through the other");
    assert_eq!(
        s.upper().join("f").metadata().expect("upper").ino(),
        s.upper().join("g").metadata().expect("upper").ino()
    );
    // Lower hard links stay one file on copy-up (both names known to the kernel).
    let a = mnt.join("bin").metadata().expect("stat").ino();
    assert_eq!(a, mnt.join("bin-alias").metadata().expect("stat").ino());
    OpenOptions::new().append(true).open(mnt.join("bin")).expect("open").write_all(b"+").expect("append");
    assert_eq!(fs::read(mnt.join("bin-alias")).expect("read"), b"v1+");
    // xattrs: user ones round-trip and are copied up; the overlay's own are hidden.
    assert_eq!(xattr(&mnt.join("bin"), "user.cap").as_deref(), Some(&b"c"[..]));
    rustix::fs::setxattr(mnt.join("f"), "user.x", b"1", XattrFlags::empty()).expect("setxattr");
    rustix::fs::removexattr(mnt.join("f"), "user.x").expect("removexattr");
    assert!(xattr(&mnt.join("f"), "user.x").is_none());
    let mut list = vec![0u8; 1024];
    let n = rustix::fs::listxattr(mnt.join("bin"), &mut list[..]).expect("list");
    let listed = String::from_utf8_lossy(&list[..n]).into_owned();
    assert!(listed.contains("user.cap") && !listed.contains("overlay"), "{listed:?}");
    assert!(rustix::fs::setxattr(mnt.join("f"), "trusted.overlay.opaque", b"y", XattrFlags::empty()).is_err());
    m.unmount().expect("unmount");
}

#[test]
fn privileged_fuse_mounts_100_layers_and_read_only() {
    if !require_fuse("privileged_fuse_mounts_100_layers_and_read_only") {
        return;
    }
    let s = Stack::new(100);
    for (i, l) in s.lowers.iter().enumerate() {
        fs::create_dir_all(l.join("shared")).expect("mkdir");
        fs::write(l.join(format!("shared/f{i}")), format!("{i}")).expect("file");
        fs::write(l.join("top"), format!("{i}")).expect("file");
    }
    let mut c = s.config(true);
    c.stack.upper = None;
    c.stack.work = None;
    let _g = MountGuard(s.mnt());
    let m = mount(&c, &s.mnt()).expect("mount");
    assert_eq!(fs::read_dir(s.mnt().join("shared")).expect("readdir").count(), 100);
    assert_eq!(fs::read_to_string(s.mnt().join("shared/f99")).expect("bottom layer"), "99");
    assert_eq!(fs::read_to_string(s.mnt().join("top")).expect("top wins"), "0");
    let e = fs::write(s.mnt().join("new"), b"x").expect_err("read-only");
    assert_eq!(e.raw_os_error(), Some(rustix::io::Errno::ROFS.raw_os_error()));
    m.unmount().expect("unmount");
}

#[test]
fn privileged_fuse_copy_up_hitting_enospc_leaves_no_partial_file() {
    if !require_fuse("privileged_fuse_copy_up_hitting_enospc_leaves_no_partial_file") {
        return;
    }
    let s = Stack::new(1);
    fs::write(s.lowers[0].join("big"), vec![7u8; 8 << 20]).expect("lower");
    // Upper and work on tmpfs filesystems too small for the copy, at several sizes (the
    // copy fails at different points of the data).
    for size in ["256k", "1m", "2m", "6m"] {
        let small = s.dir.path().join(format!("small-{size}"));
        fs::create_dir(&small).expect("mkdir");
        let _sg = MountGuard(small.clone());
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&small).status();
        assert!(status.expect("mount").success());
        fs::create_dir(small.join("upper")).expect("mkdir");
        fs::create_dir(small.join("work")).expect("mkdir");
        let mut c = s.config(true);
        c.stack.upper = Some(small.join("upper"));
        c.stack.work = Some(small.join("work"));
        let _g = MountGuard(s.mnt());
        let m = mount(&c, &s.mnt()).expect("mount");
        let e = OpenOptions::new().append(true).open(s.mnt().join("big")).expect_err("copy-up cannot fit");
        assert_eq!(e.raw_os_error(), Some(rustix::io::Errno::NOSPC.raw_os_error()), "{size}: {e}");
        assert!(small.join("upper/big").symlink_metadata().is_err(), "{size}: no partial file in the upper dir");
        assert_eq!(fs::read_dir(small.join("work")).expect("work").count(), 0, "{size}: staging cleaned up");
        assert_eq!(fs::read(s.mnt().join("big")).expect("still the lower file").len(), 8 << 20);
        // The mount keeps serving: what fits is written.
        fs::write(s.mnt().join("small"), b"fits").expect("a small write after the failure");
        assert_eq!(fs::read(small.join("upper/small")).expect("in the upper dir"), b"fits");
        m.unmount().expect("unmount");
    }
}

#[test]
fn privileged_fuse_upper_without_xattrs_or_mknod_uses_aufs_forms() {
    if !require_fuse("privileged_fuse_upper_without_xattrs_or_mknod_uses_aufs_forms") {
        return;
    }
    let s = Stack::new(1);
    fs::create_dir_all(s.lowers[0].join("d")).expect("mkdir");
    fs::write(s.lowers[0].join("d/x"), b"x").expect("file");
    fs::write(s.lowers[0].join("f"), b"f").expect("file");
    // ramfs has no xattrs (detected). A filesystem without mknod is hard to find: since
    // Linux 5.8 any fs with mknod makes 0/0 whiteouts even without CAP_MKNOD; the
    // same fallback is taken on request (whiteouts=aufs).
    let ram = s.dir.path().join("ram");
    fs::create_dir(&ram).expect("mkdir");
    let _rg = MountGuard(ram.clone());
    assert!(Command::new("mount").args(["-t", "ramfs", "ramfs"]).arg(&ram).status().expect("mount").success());
    fs::create_dir(ram.join("upper")).expect("mkdir");
    fs::create_dir(ram.join("work")).expect("mkdir");
    let _g = MountGuard(s.mnt());
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},whiteouts=aufs",
        s.lowers[0].display(),
        ram.join("upper").display(),
        ram.join("work").display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_strata-fuse"))
        .args(["-o", &opts])
        .arg(s.mnt())
        .output()
        .expect("run strata-fuse");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(".wh. files") && said.contains(".wh..wh..opq"), "says so: {said}");
    fs::remove_file(s.mnt().join("f")).expect("rm");
    fs::remove_file(s.mnt().join("d/x")).expect("rm");
    fs::remove_dir(s.mnt().join("d")).expect("rmdir");
    fs::create_dir(s.mnt().join("d")).expect("mkdir");
    assert!(ram.join("upper/.wh.f").exists(), "AUFS whiteout");
    assert!(ram.join("upper/d/.wh..wh..opq").exists(), "AUFS opaque marker");
    assert!(s.mnt().join("f").symlink_metadata().is_err());
    assert_eq!(fs::read_dir(s.mnt().join("d")).expect("readdir").count(), 0, "markers hidden, lower hidden");
    assert!(Command::new("umount").arg(s.mnt()).status().expect("umount").success());
}

#[test]
fn privileged_strata_fuse_is_a_fuse_overlayfs_drop_in() {
    if !require_fuse("privileged_strata_fuse_is_a_fuse_overlayfs_drop_in") {
        return;
    }
    let s = Stack::new(2);
    fs::write(s.lowers[1].join("a"), b"lower").expect("file");
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={},fsync=0,noacl",
        s.lowers[0].display(),
        s.lowers[1].display(),
        s.upper().display(),
        s.dir.path().join("work").display()
    );
    for form in [
        vec!["-o".to_owned(), opts.clone(), s.mnt().display().to_string()],
        vec!["overlay".to_owned(), s.mnt().display().to_string(), "-o".to_owned(), opts.clone()],
    ] {
        let _g = MountGuard(s.mnt());
        // Detaches: returns once mounted, with its stdout closed (a caller reading it to EOF must not hang).
        let out = Command::new(env!("CARGO_BIN_EXE_strata-fuse")).args(&form).output().expect("run");
        assert!(out.status.success(), "{form:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(fs::read(s.mnt().join("a")).expect("read through the daemon"), b"lower");
        assert!(Command::new("umount").arg(s.mnt()).status().expect("umount").success());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_strata-fuse"))
        .args(["-o", "lowerdir=/nonexistent-layer"])
        .arg(s.mnt())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nonexistent-layer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = Command::new(env!("CARGO_BIN_EXE_strata-fuse")).arg("--help").output().expect("help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("lowerdir="));
}

/// Runs `script` with `sh -c` as uid 1000; returns (success, stdout + stderr).
fn as_user(script: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c", script])
        .output()
        .expect("run as uid 1000");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn privileged_fuse_enforces_overlayfs_rules_on_xattrs_and_whiteout_devices() {
    if !require_fuse("privileged_fuse_enforces_overlayfs_rules_on_xattrs_and_whiteout_devices") {
        return;
    }
    let s = Stack::new(1);
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir(s.lowers[0].join("shared")).expect("mkdir");
    fs::write(s.lowers[0].join("shared/keep"), b"x").expect("file");
    fs::write(s.lowers[0].join("f"), b"f").expect("file");
    rustix::fs::lsetxattr(s.lowers[0].join("f"), "trusted.secret", b"s", XattrFlags::empty()).expect("trusted xattr");
    rustix::fs::lsetxattr(s.lowers[0].join("f"), "user.visible", b"v", XattrFlags::empty()).expect("user xattr");
    let (m, _g) = s.mount(true);
    let mnt = s.mnt();
    fs::set_permissions(mnt.join("shared"), fs::Permissions::from_mode(0o777)).expect("chmod through the union");
    let mine = mnt.join("shared/mine");
    let (ok, said) = as_user(&format!("mkdir {}", mine.display()));
    assert!(ok, "{said}");

    // trusted.* names are listed to root only, as overlayfs does.
    let list = |path: &Path| {
        let mut buf = vec![0u8; 4096];
        let n = rustix::fs::llistxattr(path, &mut buf[..]).expect("listxattr");
        String::from_utf8_lossy(&buf[..n]).replace('\0', " ")
    };
    assert!(list(&mnt.join("f")).contains("trusted.secret"), "root sees trusted.*");
    let (ok, said) = as_user(&format!("getfattr -d -m - {}", mnt.join("f").display()));
    assert!(ok && said.contains("user.visible") && !said.contains("trusted."), "uid 1000 sees: {said}");

    // No overlay xattr, in either namespace, can be set, read or listed through the union.
    for key in ["user.overlay.opaque", "trusted.overlay.opaque", "user.overlay.redirect"] {
        let set = rustix::fs::lsetxattr(&mine, key, b"y", XattrFlags::empty());
        assert_eq!(set, Err(rustix::io::Errno::NOTSUP), "root sets {key}");
    }
    let (ok, said) = as_user(&format!("setfattr -n user.overlay.opaque -v y {}", mine.display()));
    assert!(!ok, "uid 1000 must not mark its dir opaque: {said}");
    assert!(!list(&mine).contains("overlay."), "{}", list(&mine));

    // A char 0/0 (a whiteout) cannot be made through the union, by anyone.
    let (ok, said) = as_user(&format!("mknod {} c 0 0", mine.join("ghost").display()));
    assert!(!ok && said.contains("not permitted"), "uid 1000 mknod c 0 0: {said}");
    let root_try =
        rustix::fs::mknodat(CWD, mnt.join("ghost"), FileType::CharacterDevice, Mode::from_raw_mode(0o600), 0);
    assert_eq!(root_try, Err(rustix::io::Errno::PERM), "root mknod c 0 0");
    m.unmount().expect("unmount");

    // Nothing a user did hides lower entries after a remount.
    let (m, _g) = s.mount(true);
    assert!(mnt.join("shared/keep").exists(), "lower entries still visible");
    assert!(fs::symlink_metadata(s.upper().join("shared/mine/ghost")).is_err());
    m.unmount().expect("unmount");
    for key in ["user.overlay.opaque", "trusted.overlay.opaque"] {
        assert!(xattr(&s.upper().join("shared/mine"), key).is_none(), "{key} on the upper dir");
    }
}

#[test]
fn privileged_fuse_mknod_and_special_files() {
    if !require_fuse("privileged_fuse_mknod_and_special_files") {
        return;
    }
    let s = Stack::new(1);
    let (m, _g) = s.mount(true);
    rustix::fs::mknodat(
        CWD,
        s.mnt().join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod");
    fs::write(s.mnt().join("null"), b"into the void").expect("write to /dev/null through the union");
    std::os::unix::fs::symlink("target", s.mnt().join("link")).expect("symlink");
    assert_eq!(fs::read_link(s.mnt().join("link")).expect("readlink"), Path::new("target"));
    m.unmount().expect("unmount");
}

#[test]
fn privileged_strata_fuse_unprivileged_goes_through_fusermount3() {
    if !require_fuse("privileged_strata_fuse_unprivileged_goes_through_fusermount3") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for sub in ["l", "u", "w", "m"] {
        fs::create_dir(d.join(sub)).expect("mkdir");
    }
    fs::write(d.join("l/a"), b"lower").expect("file");
    let bin = d.join("strata-fuse");
    fs::copy(env!("CARGO_BIN_EXE_strata-fuse"), &bin).expect("copy the binary where nobody can run it");
    let status = Command::new("chown").args(["-R", "nobody:nogroup"]).arg(d).status().expect("chown");
    assert!(status.success());
    fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod");
    let _g = MountGuard(d.join("m"));
    let _fuse_open_to_users = DevFuseMode::set(0o666);
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        d.join("l").display(),
        d.join("u").display(),
        d.join("w").display()
    );
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["-o", &opts])
        .arg(d.join("m"))
        .output()
        .expect("run as nobody");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mount as nobody through fusermount3: {said}");
    let as_nobody = |script: &str| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script])
            .current_dir(d)
            .output()
            .expect("run as nobody");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(as_nobody("cat m/a"), "lower");
    as_nobody("echo mine > m/b && rm m/a");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let line = mountinfo.lines().find(|l| l.contains(&d.join("m").display().to_string())).expect("mounted");
    assert!(line.contains("user_id=65534") && line.contains("nosuid"), "a user mount: {line}");
    as_nobody("fusermount3 -u m");
    assert_eq!(fs::read(d.join("u/b")).expect("upper"), b"mine\n");
    let gone = fs::symlink_metadata(d.join("u/a")).map(|m| m.file_type().is_char_device()).unwrap_or(false)
        || d.join("u/.wh.a").exists();
    assert!(gone, "the user's rm left a whiteout in the upper dir");
    assert_eq!(fs::read(d.join("l/a")).expect("lower"), b"lower", "the layer is untouched");
}

/// Gives /dev/fuse a mode for the life of the guard, then restores it (this host keeps
/// it 0600; the unprivileged path needs users to open it).
struct DevFuseMode(u32);

impl DevFuseMode {
    fn set(mode: u32) -> DevFuseMode {
        let old = fs::metadata("/dev/fuse").expect("/dev/fuse").permissions().mode() & 0o7777;
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(mode)).expect("chmod /dev/fuse");
        DevFuseMode(old)
    }
}

impl Drop for DevFuseMode {
    fn drop(&mut self) {
        let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(self.0));
    }
}

#[test]
fn privileged_fuse_a_users_reader_never_blocks_writers_or_loses_data() {
    if !require_fuse("privileged_fuse_a_users_reader_never_blocks_writers_or_loses_data") {
        return;
    }
    let s = Stack::new(1);
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir(s.lowers[0].join("etc")).expect("mkdir");
    let body = b"PRETTY_NAME=\"strata test\"\n";
    for name in ["os-release", "hostname"] {
        fs::write(s.lowers[0].join("etc").join(name), body).expect("lower file");
    }
    let (m, _g) = s.mount(true);
    let etc = s.mnt().join("etc");
    // uid 1000 opens the files read-only the way a shell redirect does: the open is
    // made by uid 1000 itself (the holder's stdin is opened after the uid switch).
    let mut holders = Vec::new();
    for name in ["os-release", "hostname"] {
        let script = format!("exec sleep 60 < {}", etc.join(name).display());
        let child = Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c", &script])
            .spawn()
            .expect("spawn holder");
        let fd0 = PathBuf::from(format!("/proc/{}/fd/0", child.id()));
        let opened = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            fs::read_link(&fd0).is_ok_and(|t| t.ends_with(name))
        });
        assert!(opened, "uid 1000 holds {name} open");
        holders.push(child);
    }
    // Root replaces one file's content (open O_TRUNC) while uid 1000 reads it.
    fs::write(etc.join("os-release"), b"new").expect("write while another user reads: no ETXTBSY");
    assert_eq!(fs::read(etc.join("os-release")).expect("read back"), b"new");
    // The other file is copied up by a metadata change; every open must still work.
    let out = Command::new("touch").arg(etc.join("hostname")).output().expect("touch");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read(etc.join("hostname")).expect("root reads after copy-up"), body);
    let out = Command::new("setpriv")
        .args(["--reuid=1000", "--regid=1000", "--clear-groups", "cat"])
        .arg(etc.join("hostname"))
        .output()
        .expect("cat as uid 1000");
    assert_eq!(out.stdout, body, "{}", String::from_utf8_lossy(&out.stderr));
    for mut child in holders {
        child.kill().expect("stop holder");
        child.wait().expect("reap holder");
    }
    // After the readers close: the content and the size are the written ones.
    assert_eq!(fs::metadata(etc.join("os-release")).expect("stat").len(), 3);
    assert_eq!(fs::read(etc.join("os-release")).expect("read"), b"new");
    assert_eq!(fs::read(etc.join("hostname")).expect("read"), body);
    m.unmount().expect("unmount");
    assert_eq!(fs::read(s.upper().join("etc/os-release")).expect("upper"), b"new");
    assert_eq!(fs::read(s.lowers[0].join("etc/os-release")).expect("lower"), body, "the layer is untouched");
}

#[test]
fn privileged_fuse_non_root_writes_clear_setuid_as_on_overlayfs() {
    if !require_fuse("privileged_fuse_non_root_writes_clear_setuid_as_on_overlayfs") {
        return;
    }
    for passthrough in [true, false] {
        let s = Stack::new(1);
        fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let lower = s.lowers[0].join("tool");
        fs::write(&lower, b"#!/bin/sh\n").expect("file");
        fs::set_permissions(&lower, fs::Permissions::from_mode(0o6777)).expect("chmod");
        let (m, _g) = s.mount(passthrough);
        let tool = s.mnt().join("tool");
        // Another user's write: the kernel (through passthrough or not) must drop setuid.
        let script = format!("echo more >> {}", tool.display());
        let out = Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c", &script])
            .output()
            .expect("write as uid 1000");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mode = tool.metadata().expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o777, "setuid/setgid cleared (passthrough={passthrough})");
        assert_eq!(fs::metadata(&lower).expect("lower").mode() & 0o7777, 0o6777, "lower untouched");
        m.unmount().expect("unmount");
    }
}

#[test]
fn privileged_fuse_fallocate_lseek_copy_file_range_and_fsync() {
    if !require_fuse("privileged_fuse_fallocate_lseek_copy_file_range_and_fsync") {
        return;
    }
    for passthrough in [true, false] {
        let s = Stack::new(1);
        fs::write(s.lowers[0].join("src"), vec![9u8; 1 << 20]).expect("lower");
        let (m, _g) = s.mount(passthrough);
        let mnt = s.mnt();
        // A 4 MiB file: fallocate, punch a hole, write the tail; SEEK_DATA / SEEK_HOLE must
        // answer as the upper filesystem itself does for the same steps.
        let sparse = |path: &Path| {
            let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).expect("create");
            rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 4 << 20).expect("fallocate");
            let punch = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
            rustix::fs::fallocate(&f, punch, 0, 3 << 20).expect("punch a hole");
            use std::os::unix::fs::FileExt;
            f.write_all_at(b"tail", (4 << 20) - 4).expect("write");
            let data = rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(0)).expect("SEEK_DATA");
            let hole = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(0)).expect("SEEK_HOLE");
            (f, data, hole)
        };
        let (_, want_data, want_hole) = sparse(&s.dir.path().join("direct"));
        let (f, data, hole) = sparse(&mnt.join("sparse"));
        assert_eq!((data, hole), (want_data, want_hole), "lseek as on the upper fs (passthrough={passthrough})");
        assert!(data >= 3 << 20, "the punched range is a hole");
        rustix::fs::fsync(&f).expect("fsync");
        // copy_file_range from a lower file (copied up? no: read-only source) into the new one.
        let src = fs::File::open(mnt.join("src")).expect("open lower");
        let (mut off_in, mut off_out) = (0u64, 0u64);
        let n = rustix::fs::copy_file_range(&src, Some(&mut off_in), &f, Some(&mut off_out), 1 << 20)
            .expect("copy_file_range");
        assert_eq!(n, 1 << 20);
        drop((f, src));
        let back = fs::read(mnt.join("sparse")).expect("read back");
        assert_eq!(back.len(), 4 << 20);
        assert!(back[..1 << 20].iter().all(|&b| b == 9) && back.ends_with(b"tail"));
        assert!(s.upper().join("sparse").exists() && !s.upper().join("src").exists(), "the source stayed lower");
        m.unmount().expect("unmount");
    }
}

/// (resident MB, open fds) of process `pid`.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    (kb / 1024, fs::read_dir(format!("/proc/{pid}/fd")).expect("fds").count())
}

#[test]
fn privileged_fuse_daemon_memory_and_fds_stay_bounded_under_a_users_opens() {
    if !require_fuse("privileged_fuse_daemon_memory_and_fds_stay_bounded_under_a_users_opens") {
        return;
    }
    let s = Stack::new(1);
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let big = s.lowers[0].join("big");
    fs::create_dir(&big).expect("mkdir");
    // 20k entries with 200-byte names: one merged listing is ~5 MB.
    let pad = "n".repeat(192);
    for i in 0..20_000 {
        fs::File::create(big.join(format!("{pad}{i:08}"))).expect("entry");
    }
    fs::write(s.lowers[0].join("file"), b"data").expect("file");
    fs::create_dir(s.lowers[0].join("many")).expect("mkdir");
    for i in 0..400 {
        fs::write(s.lowers[0].join(format!("many/f{i}")), b"x").expect("file");
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        s.lowers[0].display(),
        s.upper().display(),
        s.dir.path().join("work").display()
    );
    // A low fd limit, so a user can reach it here: 1300, of which 1024 are root's.
    let daemon = start_strata_fuse(&["prlimit", "--nofile=1300:1300"], &opts, &s.mnt());
    let (rss_before, fds_before) = rss_and_fds(daemon.id());
    // uid 1000 holds 100 opens of the big directory and 2000 opens of one file, then
    // opens distinct files until the daemon refuses.
    let script = format!(
        "for i in $(seq 100); do exec {{d}}<{dir}; done; for i in $(seq 2000); do exec {{f}}<{file}; done; \
         n=0; for i in $(seq 0 399); do exec {{g}}<{many}/f$i 2>/dev/null || break; n=$((n+1)); done; \
         echo held $n; exec sleep 60",
        dir = s.mnt().join("big").display(),
        file = s.mnt().join("file").display(),
        many = s.mnt().join("many").display()
    );
    let mut holder = Command::new("setpriv")
        .args(["--reuid=1000", "--regid=1000", "--clear-groups", "bash", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn holder");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().expect("stdout")), &mut line)
        .expect("read");
    let distinct: usize = line.trim().strip_prefix("held ").and_then(|n| n.parse().ok()).expect("held N");
    let (rss, fds) = rss_and_fds(daemon.id());
    eprintln!(
        "daemon: {rss_before} MB / {fds_before} fds idle; {rss} MB / {fds} fds under 100 dir + 2000 file opens + {distinct} distinct files"
    );
    assert!(distinct < 400, "the daemon keeps root's share of its fds: a user got {distinct} distinct files");
    // Root's opens still work while the user holds its share.
    assert_eq!(fs::read(s.mnt().join("many/f399")).expect("root reads"), b"x");
    holder.kill().expect("stop holder");
    holder.wait().expect("reap holder");
    // One listing (~5 MB) shared by the 100 opens, one fd shared by the 2000: a copy per
    // open would be ~500 MB and 2000 fds.
    assert!(rss < rss_before + 60, "daemon RSS grew from {rss_before} MB to {rss} MB");
    assert!(fds < fds_before + 300, "daemon fds grew from {fds_before} to {fds}");
    daemon.unmount();
}

/// Runs the detached strata-fuse daemon `bin` over `lower` (a tmpfs) and reports
/// whether that tmpfs could be unmounted the instant the union's unmount returned.
fn lower_free_after_union_umount(bin: &Path, s: &Stack, lower: &Path) -> bool {
    rustix::mount::mount("strata-test", lower, "tmpfs", rustix::mount::MountFlags::empty(), None).expect("tmpfs");
    fs::write(lower.join("a"), b"x").expect("file");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        s.upper().display(),
        s.dir.path().join("work").display()
    );
    let out = Command::new(bin).args(["-o", &opts]).arg(s.mnt()).output().expect("run strata-fuse");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read(s.mnt().join("a")).expect("read"), b"x");
    // The daemon raised the mount's readahead (daemon reads come in readahead-sized requests).
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let device = info
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 4 && Path::new(f[4]) == s.mnt())
        .map(|f| f[2].to_owned())
        .expect("the union in mountinfo");
    let knob = fs::read_to_string(format!("/sys/class/bdi/{device}/read_ahead_kb")).expect("read_ahead_kb");
    assert_eq!(knob.trim(), "1024", "readahead of the union");
    rustix::mount::unmount(s.mnt(), rustix::mount::UnmountFlags::empty()).expect("umount the union");
    let free = rustix::mount::unmount(lower, rustix::mount::UnmountFlags::empty()).is_ok();
    if !free {
        // The daemon exits a moment later; clean up for the next round.
        let gone = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            rustix::mount::unmount(lower, rustix::mount::UnmountFlags::empty()).is_ok()
        });
        assert!(gone, "the daemon let go of the lower layer");
    }
    free
}

#[test]
fn privileged_fuse_daemon_lets_go_of_the_layers_when_the_union_is_unmounted() {
    if !require_fuse("privileged_fuse_daemon_lets_go_of_the_layers_when_the_union_is_unmounted") {
        return;
    }
    // unionmount-testsuite unmounts the union, then the lower filesystem at once.
    let s = Stack::new(1);
    let lower = s.dir.path().join("lowerfs");
    fs::create_dir(&lower).expect("mkdir");
    let busy = (0..30)
        .filter(|_| !lower_free_after_union_umount(Path::new(env!("CARGO_BIN_EXE_strata-fuse")), &s, &lower))
        .count();
    assert_eq!(busy, 0, "the lower filesystem was busy after {busy} of 30 union unmounts");
}

#[test]
fn privileged_fuse_redirect_dir_moves_lower_dirs_as_kernel_overlayfs_reads_them() {
    if !require_fuse("privileged_fuse_redirect_dir_moves_lower_dirs_as_kernel_overlayfs_reads_them") {
        return;
    }
    use crate::util::tree::Tree;
    let s = Stack::new(2);
    for (layer, path, body) in [
        (1, "a/b/file1", "one"),
        (1, "a/b/sub/deep", "deep"),
        (1, "a/b/gone", "gone"),
        (0, "a/b/file0", "zero"),
        (0, "a/other", "other"),
        (0, "z/keep", "keep"),
    ] {
        let p = s.lowers[layer].join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, body).expect("write");
    }
    let mut config = s.config(true);
    // The default follows redirects but does not write them: EXDEV, as overlayfs.
    let m = mount(&config, &s.mnt()).expect("mount");
    let e = fs::rename(s.mnt().join("a/b"), s.mnt().join("c")).expect_err("no redirect_dir=on");
    assert_eq!(e.raw_os_error(), Some(rustix::io::Errno::XDEV.raw_os_error()));
    m.unmount().expect("unmount");

    config.redirect_dir = strata::fuse::RedirectDir::On;
    let guard = MountGuard(s.mnt());
    let m = mount(&config, &s.mnt()).expect("mount with redirect_dir=on");
    let mnt = s.mnt();
    let ino = fs::metadata(mnt.join("a/b")).expect("stat").ino();
    fs::rename(mnt.join("a/b"), mnt.join("c")).expect("move a merged dir to another parent");
    assert_eq!(fs::metadata(mnt.join("c")).expect("stat").ino(), ino, "the moved dir keeps its inode number");
    assert!(!mnt.join("a/b").exists());
    assert_eq!(fs::read_to_string(mnt.join("c/sub/deep")).expect("lower content below the move"), "deep");
    // Changes inside the moved dir, a nested move, a second move of the same dir, and a
    // new dir where the old one was (it must not show the old contents).
    fs::remove_file(mnt.join("c/gone")).expect("rm a lower file below the move");
    fs::write(mnt.join("c/file1"), "changed").expect("copy-up below the move");
    fs::rename(mnt.join("c/sub"), mnt.join("c/sub2")).expect("nested move");
    fs::create_dir(mnt.join("z/into")).expect("mkdir");
    fs::rename(mnt.join("c"), mnt.join("z/into/d")).expect("move the moved dir again");
    fs::create_dir(mnt.join("a/b")).expect("mkdir at the old name");
    fs::rename(mnt.join("a"), mnt.join("a2")).expect("move a parent of a whiteout");
    let view = Tree::of(&mnt);
    let mut names: Vec<&str> = view.paths();
    names.retain(|p| !p.is_empty());
    assert_eq!(
        names,
        [
            "a2",
            "a2/b",
            "a2/other",
            "z",
            "z/into",
            "z/into/d",
            "z/into/d/file0",
            "z/into/d/file1",
            "z/into/d/sub2",
            "z/into/d/sub2/deep",
            "z/keep"
        ]
    );
    assert_eq!(fs::read_to_string(mnt.join("z/into/d/file1")).expect("read"), "changed");
    m.unmount().expect("unmount");
    drop(guard);

    // The upper dir as written reads the same after a remount (default: follow) and
    // through the kernel's overlayfs with redirect_dir=on.
    let (m, _g) = s.mount(true);
    let again = Tree::of(&s.mnt());
    m.unmount().expect("unmount");
    assert!(view.diff(&again).is_empty(), "remounted:\n{}", view.diff(&again).join("\n"));
    let kmnt = s.dir.path().join("kmnt");
    fs::create_dir(&kmnt).expect("mkdir");
    let _kg = MountGuard(kmnt.clone());
    let opts = format!(
        "redirect_dir=on,lowerdir={}:{},upperdir={},workdir={}",
        s.lowers[0].display(),
        s.lowers[1].display(),
        s.upper().display(),
        s.dir.path().join("work").display()
    );
    let status = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&kmnt).status();
    assert!(status.expect("mount").success(), "kernel overlayfs mounts the upper dir");
    let kernel = Tree::of(&kmnt);
    assert!(view.diff(&kernel).is_empty(), "kernel view:\n{}", view.diff(&kernel).join("\n"));
}

#[test]
fn redirect_dir_on_is_refused_with_the_user_namespace() {
    let s = Stack::new(1);
    let mut config = s.config(false);
    config.stack.xattrs = strata::fuse::XattrNamespace::User;
    config.redirect_dir = strata::fuse::RedirectDir::On;
    let e = mount(&config, &s.mnt()).expect_err("forgeable redirects");
    assert!(e.to_string().contains("redirect_dir=on"), "{e}");
}

/// A lower file linked under names the kernel has never looked up: a write through one
/// name copies it up, and every other name the union shows follows (overlayfs with
/// index=on). Before, those names kept the old data under the copy's inode number.
#[test]
fn privileged_fuse_copy_up_keeps_unseen_lower_hard_links_one_file() {
    if !require_fuse("privileged_fuse_copy_up_keeps_unseen_lower_hard_links_one_file") {
        return;
    }
    let s = Stack::new(1);
    fs::create_dir_all(s.lowers[0].join("a/deep")).expect("mkdir");
    fs::write(s.lowers[0].join("one"), b"old").expect("write");
    fs::hard_link(s.lowers[0].join("one"), s.lowers[0].join("a/deep/two")).expect("link");
    fs::hard_link(s.lowers[0].join("one"), s.lowers[0].join("three")).expect("link");
    let (m, _g) = s.mount(true);
    // Only `one` is looked up before the write.
    fs::write(s.mnt().join("one"), b"new").expect("write through one name");
    for name in ["a/deep/two", "three"] {
        assert_eq!(fs::read(s.mnt().join(name)).expect("read"), b"new", "{name} follows the copy-up");
    }
    let ino = |p: &str| fs::metadata(s.mnt().join(p)).expect("stat").ino();
    assert_eq!(ino("one"), ino("a/deep/two"));
    assert_eq!(fs::metadata(s.mnt().join("three")).expect("stat").nlink(), 3);
    m.unmount().expect("unmount");
    assert_eq!(fs::metadata(s.upper().join("a/deep/two")).expect("linked in the upper dir").nlink(), 3);
}

/// The daemon remembers that a file has no capability (the kernel asks before every
/// write and chown); a capability set through the mount later must still be seen, and
/// dropped by another user's write as on overlayfs.
#[test]
fn privileged_fuse_a_capability_set_later_is_still_dropped_by_a_users_write() {
    if !require_fuse("privileged_fuse_a_capability_set_later_is_still_dropped_by_a_users_write") {
        return;
    }
    const CAP_NET_RAW: [u8; 20] = [0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for passthrough in [true, false] {
        let s = Stack::new(1);
        fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(s.lowers[0].join("tool"), b"#!/bin/sh\n").expect("file");
        fs::set_permissions(s.lowers[0].join("tool"), fs::Permissions::from_mode(0o777)).expect("chmod");
        let (m, _g) = s.mount(passthrough);
        let tool = s.mnt().join("tool");
        // Root's write: the kernel asks for the capability, there is none (remembered).
        fs::OpenOptions::new().append(true).open(&tool).and_then(|mut f| f.write_all(b"# root\n")).expect("root write");
        rustix::fs::setxattr(&tool, "security.capability", &CAP_NET_RAW, XattrFlags::empty())
            .expect("set a capability");
        assert!(xattr(&tool, "security.capability").is_some(), "the capability shows");
        let (ok, said) = as_user(&format!("echo more >> {}", tool.display()));
        assert!(ok, "{said}");
        assert!(xattr(&tool, "security.capability").is_none(), "a user's write drops it (passthrough={passthrough})");
        m.unmount().expect("unmount");
    }
}
