//! What protects data across mounts: every mount holds a snapshot (gc and rmi never take
//! its layers), a writable layer is mounted once, `strata umount` touches only mounts
//! strata made, and a writable layer left by a plain umount can still be removed.

use std::path::Path;
use std::process::{Command, Output};

use strata::core::tar::Entry;

use crate::util::images::{self, Blob};
use crate::util::{MountGuard, e, layer, require_fuse, require_privileged};

fn strata(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(root).args(args).output().expect("run strata")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "strata failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "strata should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let blobs = [
            Blob::gzip(layer(&[
                (Entry::file("etc/os-release", 0o644), b"ID=demo\n"),
                e(Entry::dir("var/cache", 0o755)),
            ])),
            Blob::gzip(layer(&[(Entry::file("usr/bin/tool", 0o755), b"tool")])),
        ];
        images::oci_layout(&tmp.path().join("image"), &blobs, "life:1");
        Fixture { tmp }
    }
    fn path(&self, p: &str) -> std::path::PathBuf {
        self.tmp.path().join(p)
    }
    fn run(&self, args: &[&str]) -> Output {
        strata(&self.path("root"), args)
    }
}

#[test]
fn privileged_gc_keeps_the_layers_of_a_live_read_only_mount() {
    if !require_privileged("privileged_gc_keeps_the_layers_of_a_live_read_only_mount") {
        return;
    }
    let f = Fixture::new();
    let mnt = f.path("ro");
    let _guard = MountGuard(mnt.clone());
    ok(&f.run(&["mount", "--read-only", s(&f.path("image")), s(&mnt)]));
    ok(&f.run(&["rmi", "life:1"]));
    let gc = ok(&f.run(&["gc"]));
    assert!(gc.contains("removed 0 snapshot(s)"), "gc removed layers under a live mount: {gc}");
    assert_eq!(std::fs::read(mnt.join("etc/os-release")).expect("still readable"), b"ID=demo\n");
    let rm = failed(&f.run(&["snapshots", "rm", &format!("view:{}", mnt.display())]));
    assert!(rm.contains("is mounted at"), "{rm}");
    ok(&f.run(&["umount", s(&mnt)]));
    let gc = ok(&f.run(&["gc"]));
    assert!(gc.contains("removed 2 snapshot(s)"), "after umount gc frees both layers: {gc}");
}

#[test]
fn privileged_a_writable_layer_is_mounted_at_most_once() {
    if !require_fuse("privileged_a_writable_layer_is_mounted_at_most_once") {
        return;
    }
    let f = Fixture::new();
    let (a, b) = (f.path("a"), f.path("b"));
    let _guards = (MountGuard(a.clone()), MountGuard(b.clone()));
    ok(&f.run(&["mount", "--name", "shared", s(&f.path("image")), s(&a)]));
    for driver in ["overlay", "fuse"] {
        let err = failed(&f.run(&["mount", "--driver", driver, "--name", "shared", s(&f.path("image")), s(&b)]));
        assert!(err.contains("already mounted at") && err.contains(s(&a)), "{err}");
        assert!(!strata_overlay_mounted(&b), "nothing was mounted at b");
    }
    ok(&f.run(&["umount", s(&a)]));
    ok(&f.run(&["mount", "--name", "shared", s(&f.path("image")), s(&b)]));
    ok(&f.run(&["umount", "--rm", s(&b)]));
}

#[test]
fn privileged_umount_refuses_mounts_strata_did_not_make() {
    if !require_privileged("privileged_umount_refuses_mounts_strata_did_not_make") {
        return;
    }
    let f = Fixture::new();
    let t = f.path("tmpfs");
    std::fs::create_dir(&t).expect("mkdir");
    let _guard = MountGuard(t.clone());
    let status = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&t).status().expect("mount tmpfs");
    assert!(status.success());
    std::fs::write(t.join("data"), b"precious").expect("write");
    let err = failed(&f.run(&["umount", s(&t)]));
    assert!(err.contains("strata did not make"), "{err}");
    assert_eq!(std::fs::read(t.join("data")).expect("the tmpfs is still mounted"), b"precious");
}

#[test]
fn privileged_umount_rm_after_a_plain_umount_removes_the_writable_layer() {
    if !require_privileged("privileged_umount_rm_after_a_plain_umount_removes_the_writable_layer") {
        return;
    }
    let f = Fixture::new();
    let mnt = f.path("m");
    let _guard = MountGuard(mnt.clone());
    ok(&f.run(&["mount", s(&f.path("image")), s(&mnt)]));
    std::fs::write(mnt.join("new"), b"x").expect("write");
    assert!(Command::new("umount").arg(&mnt).status().expect("umount").success());
    let out = ok(&f.run(&["umount", "--rm", s(&mnt)]));
    assert!(out.contains("removed writable layer"), "{out}");
    let ls = ok(&f.run(&["snapshots", "ls"]));
    assert!(!ls.contains("mount:"), "{ls}");
    // And once nothing is left, umount says so.
    let err = failed(&f.run(&["umount", "--rm", s(&mnt)]));
    assert!(err.contains("is not mounted by strata"), "{err}");
}

#[test]
fn privileged_mount_refuses_a_symlinked_target() {
    if !require_privileged("privileged_mount_refuses_a_symlinked_target") {
        return;
    }
    let f = Fixture::new();
    let real = f.path("real");
    std::fs::create_dir(&real).expect("mkdir");
    std::os::unix::fs::symlink(&real, f.path("link")).expect("symlink");
    let _guard = MountGuard(real.clone());
    let err = failed(&f.run(&["mount", s(&f.path("image")), s(&f.path("link"))]));
    assert!(err.contains("is a symlink"), "{err}");
    assert!(!strata_overlay_mounted(&real));
}

fn strata_overlay_mounted(target: &Path) -> bool {
    strata::overlay::is_mount_point(target)
}

/// The shipped demo image (layer 2 makes `var/cache/demo` opaque over `stale-1`, `stale-2`).
fn demo_image() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/image")
}

#[test]
fn privileged_layers_unpacked_with_user_xattrs_mount_with_their_opaque_dirs() {
    if !require_privileged("privileged_layers_unpacked_with_user_xattrs_mount_with_their_opaque_dirs") {
        return;
    }
    let f = Fixture::new();
    ok(&f.run(&["unpack", "--userxattr", s(&demo_image())]));
    for (driver, name) in [("overlay", "ro-overlay"), ("fuse", "ro-fuse")] {
        let mnt = f.path(name);
        let _guard = MountGuard(mnt.clone());
        ok(&f.run(&["mount", "--read-only", "--driver", driver, s(&demo_image()), s(&mnt)]));
        let cache: Vec<String> = std::fs::read_dir(mnt.join("var/cache/demo"))
            .expect("read opaque dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(cache, ["fresh"], "{driver}: the opaque dir hides the lower entries");
        ok(&f.run(&["umount", s(&mnt)]));
    }
}

#[test]
fn privileged_a_normal_user_unpacks_into_their_own_store() {
    if !require_privileged("privileged_a_normal_user_unpacks_into_their_own_store") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).expect("chown");
    let image = tmp.path().join("image");
    let copy = Command::new("cp").arg("-a").arg(demo_image()).arg(&image).status().expect("cp");
    assert!(copy.success());
    let store = home.join("store");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args(["unpack", "--root", s(&store), s(&image)])
        .output()
        .expect("setpriv");
    ok(&out);
    // The opaque dir of layer 2 carries the user namespace's marker, which a rootless
    // overlayfs (userxattr) or strata-fuse reads.
    let marked = walkdir::WalkDir::new(store.join("snapshots"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_dir())
        .any(|e| xattr_of(e.path(), "user.overlay.opaque").as_deref() == Some(b"y".as_slice()));
    assert!(marked, "an opaque dir in user.overlay.* was written");
}

fn xattr_of(path: &Path, key: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, key, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// The mount flow as a library (what an embedding runtime calls): the same rules as the
/// CLI, without a process in between.
#[test]
fn privileged_the_library_mount_flow_mounts_refuses_a_second_claim_and_unmounts() {
    use strata::rootfs::{Driver, MountOptions, MountedWith, Progress, UnmountOptions, mount_image, unmount};
    if !require_privileged("privileged_the_library_mount_flow_mounts_refuses_a_second_claim_and_unmounts") {
        return;
    }
    let f = Fixture::new();
    let store = strata::store::Store::open(f.path("root")).expect("store");
    let image = strata::image::Image::open(&f.path("image"), &Default::default()).expect("image");
    let options = MountOptions { driver: Driver::Overlay, name: Some("ctr".into()), ..MountOptions::default() };
    let mounted = mount_image(&store, &image, &f.path("a"), &options, &Progress::none()).expect("mount");
    let _guard = MountGuard(mounted.target.clone());
    assert_eq!(mounted.how, MountedWith::Overlay);
    assert_eq!(mounted.key.as_deref(), Some("ctr"));
    assert_eq!(std::fs::read(mounted.target.join("etc/os-release")).expect("read"), b"ID=demo\n");
    std::fs::write(mounted.target.join("written"), b"kept").expect("write");

    let err = mount_image(&store, &image, &f.path("b"), &options, &Progress::none()).expect_err("second claim");
    assert!(err.to_string().contains(s(&mounted.target)), "names the first mount: {err}");
    assert!(!strata_overlay_mounted(&f.path("b")));

    let done = unmount(&store, &mounted.target, UnmountOptions::default()).expect("unmount");
    assert!(done.was_mounted && done.removed_layer.is_none());
    let again = mount_image(&store, &image, &f.path("b"), &options, &Progress::none()).expect("remount");
    let _guard_b = MountGuard(again.target.clone());
    assert_eq!(std::fs::read(again.target.join("written")).expect("kept"), b"kept");
    let done = unmount(&store, &again.target, UnmountOptions { remove_layer: true, lazy: false }).expect("unmount");
    assert_eq!(done.removed_layer.as_deref(), Some("ctr"));
    assert!(store.stat("ctr").is_err());
}
