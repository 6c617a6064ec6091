//! `strata mount` against the kernel: the merged view equals the flattened unpack,
//! writes land in the upper dir in overlay form, the writable layer survives
//! umount/mount, 500 layers mount, and errors say what to do. Privileged tests run as
//! root with overlayfs (CI does) and say why they skip elsewhere.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Output};

use strata::core::tar::Entry;

use crate::util::images::{self, Blob};
use crate::util::{MountGuard, Tree, e, layer, require_fuse, require_privileged};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("run strata")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "strata failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn rich_layers() -> Vec<Blob> {
    vec![
        Blob::gzip(layer(&[
            e(Entry::dir("etc", 0o755).xattr("user.kind", b"config")),
            (Entry::file("etc/passwd", 0o644), b"root:x:0:0::/root:/bin/sh\n"),
            (Entry::file("etc/shadow", 0o640).owner(0, 42), b"root:*::\n"),
            e(Entry::dir("usr/bin", 0o755)),
            (Entry::file("usr/bin/su", 0o4755), b"su"),
            e(Entry::symlink("bin", "usr/bin")),
            e(Entry::dir("tmp", 0o1777)),
            e(Entry::dir("var/cache", 0o755)),
            (Entry::file("var/cache/old", 0o644), b"old"),
            e(Entry::char_device("dev/null", 1, 3)),
        ])),
        Blob::zstd(layer(&[
            e(Entry::whiteout("etc/shadow")),
            e(Entry::opaque("var/cache")),
            (Entry::file("var/cache/new", 0o644), b"new"),
            e(Entry::hardlink("usr/bin/su2", "usr/bin/su")),
        ])),
        Blob::plain(layer(&[
            (Entry::file("home/u/file", 0o600).owner(1000, 1000), b"mine"),
            e(Entry::fifo("run/ctl")),
        ])),
    ]
}

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new(blobs: &[Blob]) -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        images::oci_layout(&tmp.path().join("image"), blobs, "mnt:1");
        Fixture { tmp }
    }
    fn path(&self, p: &str) -> std::path::PathBuf {
        self.tmp.path().join(p)
    }
    fn mount(&self, target: &str, extra: &[&str]) -> (Output, MountGuard) {
        let t = self.path(target);
        let guard = MountGuard(t.clone());
        let (root, image) = (self.path("root"), self.path("image"));
        let mut args = vec!["mount", "--root", s(&root)];
        args.extend_from_slice(extra);
        args.extend([s(&image), s(&t)]);
        (strata(&args), guard)
    }
}

fn without_root(mut t: Tree) -> Tree {
    t.0.remove("");
    t
}

#[test]
fn privileged_mount_shows_the_flattened_image_and_keeps_writes_in_overlay_form() {
    if !require_privileged("privileged_mount_shows_the_flattened_image_and_keeps_writes_in_overlay_form") {
        return;
    }
    mount_shows_the_flattened_image_and_keeps_writes_in_overlay_form(&[]);
}

#[test]
fn privileged_fuse_driver_mount_shows_the_flattened_image_and_keeps_writes_in_overlay_form() {
    if !require_fuse("privileged_fuse_driver_mount_shows_the_flattened_image_and_keeps_writes_in_overlay_form") {
        return;
    }
    mount_shows_the_flattened_image_and_keeps_writes_in_overlay_form(&["--driver", "fuse"]);
}

/// The same checks whatever serves the mount: kernel overlayfs or strata-fuse.
fn mount_shows_the_flattened_image_and_keeps_writes_in_overlay_form(driver: &[&str]) {
    let f = Fixture::new(&rich_layers());
    ok(&strata(&["unpack", s(&f.path("image")), "--to", s(&f.path("flat"))]));
    let (out, guard) = f.mount("mnt", driver);
    ok(&out);
    let mnt = f.path("mnt");
    let diff = without_root(Tree::of(&f.path("flat"))).diff(&without_root(Tree::of(&mnt)));
    assert!(diff.is_empty(), "the mount differs from the flattened unpack:\n{}", diff.join("\n"));

    // Writes through the mount land in the writable layer in overlayfs's form.
    std::fs::write(mnt.join("etc/hostname"), b"box\n").expect("write");
    std::fs::remove_file(mnt.join("etc/passwd")).expect("rm lower file");
    std::fs::remove_dir_all(mnt.join("var/cache")).expect("rm lower dir");
    std::fs::create_dir(mnt.join("var/cache")).expect("mkdir over it");
    let ps: serde_json::Value =
        serde_json::from_str(&ok(&strata(&["ps", "--json", "--root", s(&f.path("root"))]))).expect("json");
    assert_eq!(ps[0]["mounted"], true);
    let key = ps[0]["writable_layer"].as_str().expect("key").to_owned();
    let store = strata::store::Store::open(f.path("root")).expect("store");
    let upper = store.snapshot_dir(&key).expect("upper dir");
    assert_eq!(std::fs::read(upper.join("etc/hostname")).expect("in upper"), b"box\n");
    let wh = std::fs::symlink_metadata(upper.join("etc/passwd")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "a deleted lower file is a char 0/0 whiteout");
    let mut buf = [0u8; 8];
    let n =
        rustix::fs::lgetxattr(upper.join("var/cache"), "trusted.overlay.opaque", &mut buf[..]).expect("opaque xattr");
    assert_eq!(&buf[..n], b"y", "a dir recreated over a lower dir is opaque");

    // umount keeps the writable layer; the next mount with the same name shows it.
    drop(guard);
    ok(&strata(&["umount", "--root", s(&f.path("root")), s(&mnt)]));
    assert!(!strata_overlay_is_mounted(&mnt));
    let (out, _guard) = f.mount("mnt", driver);
    ok(&out);
    assert_eq!(std::fs::read(mnt.join("etc/hostname")).expect("kept"), b"box\n");
    assert!(!mnt.join("etc/passwd").exists());
    ok(&strata(&["umount", "--rm", "--root", s(&f.path("root")), s(&mnt)]));
    assert!(matches!(store.stat(&key), Err(strata::store::Error::NotFound { .. })), "--rm removes the writable layer");
}

#[test]
fn privileged_fuse_daemon_killed_leaves_a_mount_strata_umount_cleans_up() {
    if !require_fuse("privileged_fuse_daemon_killed_leaves_a_mount_strata_umount_cleans_up") {
        return;
    }
    let f = Fixture::new(&rich_layers());
    let (out, _guard) = f.mount("mnt", &["--driver", "fuse"]);
    ok(&out);
    let mnt = f.path("mnt");
    assert!(String::from_utf8_lossy(&out.stdout).contains("strata-fuse"), "{}", String::from_utf8_lossy(&out.stdout));
    std::fs::write(
        mnt.join("etc/hostname"),
        b"box
",
    )
    .expect("write");
    // The daemon this test's `strata mount` started: the one serving this unique temp
    // mount point. Killed by its PID, never by a name pattern.
    let daemon = fuse_daemon_pid(&mnt).expect("the strata-fuse daemon of this mount");
    rustix::process::kill_process(daemon, rustix::process::Signal::KILL).expect("kill -9 the daemon");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let e = std::fs::metadata(mnt.join("etc")).expect_err("a dead daemon's mount");
    assert_eq!(e.raw_os_error(), Some(rustix::io::Errno::NOTCONN.raw_os_error()), "{e}");
    let ps = ok(&strata(&["ps", "--root", s(&f.path("root"))]));
    assert!(ps.contains("daemon died"), "{ps}");
    ok(&strata(&["umount", "--root", s(&f.path("root")), s(&mnt)]));
    assert!(!strata_overlay_is_mounted(&mnt));
    // What was written before the kill is in the writable layer: mount again and see it.
    let (out, _guard) = f.mount("mnt", &["--driver", "fuse"]);
    ok(&out);
    assert_eq!(
        std::fs::read(mnt.join("etc/hostname")).expect("kept"),
        b"box
"
    );
    ok(&strata(&["umount", "--rm", "--root", s(&f.path("root")), s(&mnt)]));
}

fn strata_overlay_is_mounted(p: &Path) -> bool {
    strata::overlay::is_mount_point(p)
}

#[test]
fn privileged_read_only_mount() {
    if !require_privileged("privileged_read_only_mount") {
        return;
    }
    let f = Fixture::new(&rich_layers());
    let (out, _guard) = f.mount("ro", &["--read-only"]);
    ok(&out);
    let err = std::fs::write(f.path("ro/etc/x"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
}

#[test]
fn privileged_500_layers_mount_and_read() {
    if !require_privileged("privileged_500_layers_mount_and_read") {
        return;
    }
    let blobs: Vec<Blob> = (0..500)
        .map(|i| Blob::plain(layer(&[(Entry::file(&format!("layers/l{i:03}"), 0o644), format!("{i}").as_bytes())])))
        .collect();
    let f = Fixture::new(&blobs);
    let started = std::time::Instant::now();
    ok(&strata(&["unpack", "--root", s(&f.path("root")), s(&f.path("image"))]));
    let unpacked = started.elapsed();
    let started = std::time::Instant::now();
    let (out, _guard) = f.mount("mnt", &[]);
    ok(&out);
    let mounted = started.elapsed();
    let names: Vec<_> =
        std::fs::read_dir(f.path("mnt/layers")).expect("readdir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names.len(), 500);
    assert_eq!(std::fs::read(f.path("mnt/layers/l000")).expect("bottom"), b"0");
    assert_eq!(std::fs::read(f.path("mnt/layers/l499")).expect("top"), b"499");
    eprintln!("500 layers: unpack {unpacked:?}, mount (layers already unpacked) {mounted:?}");
}

#[test]
fn mount_errors_say_what_to_do() {
    let f = Fixture::new(&rich_layers());
    std::fs::write(f.path("file"), b"x").expect("write");
    let out = strata(&["mount", "--root", s(&f.path("root")), s(&f.path("image")), s(&f.path("file"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));
    let out = strata(&["umount", "--root", s(&f.path("root")), s(&f.path("t"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not mounted"));
}

#[test]
fn privileged_mount_refuses_a_busy_target_and_non_root() {
    if !require_privileged("privileged_mount_refuses_a_busy_target_and_non_root") {
        return;
    }
    let f = Fixture::new(&rich_layers());
    let (out, _guard) = f.mount("mnt", &[]);
    ok(&out);
    let (again, _g2) = f.mount("mnt", &["--name", "other"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is already a mount point"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for dir in ["nobody-root", "nobody-target"] {
        std::fs::create_dir(f.path(dir)).expect("mkdir");
        std::os::unix::fs::chown(f.path(dir), Some(65534), Some(65534)).expect("chown");
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args(["mount", "--driver", "overlay", "--root", s(&f.path("nobody-root"))])
        .args([s(&f.path("image")), s(&f.path("nobody-target"))])
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs root") && stderr.contains("--driver fuse"), "{stderr}");
}

#[test]
fn privileged_single_layer_images_bind_mount_and_kernel_errors_are_explained() {
    if !require_privileged("privileged_single_layer_images_bind_mount_and_kernel_errors_are_explained") {
        return;
    }
    let f = Fixture::new(&[Blob::gzip(layer(&[(Entry::file("only", 0o644), b"one layer")]))]);
    let (out, _guard) = f.mount("ro", &["--read-only"]);
    assert!(ok(&out).contains("bind mount"), "one read-only layer is a bind mount");
    assert_eq!(std::fs::read(f.path("ro/only")).expect("read"), b"one layer");
    assert_eq!(std::fs::write(f.path("ro/x"), b"x").expect_err("read-only").raw_os_error(), Some(30));

    // A missing lower dir names the dir; the kernel's own reason reaches the user when
    // overlayfs logs one (here: upper and work dirs that are the same directory).
    use strata::overlay::{KernelMounter, MountPlan, Mounter};
    let target = f.path("bad");
    std::fs::create_dir(&target).expect("mkdir");
    let _g = MountGuard(target.clone());
    let plan =
        MountPlan::Overlay { lowers: vec![f.path("missing-a"), f.path("missing-b")], upper: None, options: vec![] };
    let msg = KernelMounter.mount(&plan, &target).expect_err("missing lowers").to_string();
    assert!(msg.contains("fsconfig lowerdir+") && msg.contains("missing-a"), "{msg}");
    for d in ["l1", "l2"] {
        std::fs::create_dir(f.path(d)).expect("mkdir");
    }
    let plan = MountPlan::Overlay {
        lowers: vec![f.path("l1"), f.path("l2")],
        upper: None,
        options: vec![("redirect_dir".into(), Some("bogus".into()))],
    };
    let msg = KernelMounter.mount(&plan, &target).expect_err("bad option").to_string();
    assert!(
        msg.contains("(kernel: overlay: Bad value for 'redirect_dir')"),
        "the fs-context log is in the error: {msg}"
    );
}

/// The PID of the `strata fuse-serve` process whose command line names `mnt`.
fn fuse_daemon_pid(mnt: &std::path::Path) -> Option<rustix::process::Pid> {
    let want = mnt.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let mut args = cmdline.split(|&b| b == 0);
        let serving = args.clone().any(|a| a == b"fuse-serve") && args.any(|a| a == want);
        serving.then(|| rustix::process::Pid::from_raw(pid)).flatten()
    })
}
