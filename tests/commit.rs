//! `strata commit` end to end: an image mounted with `strata mount` (kernel overlayfs
//! and strata-fuse), changed through the mount, committed into an OCI layout, then
//! unpacked again (by strata and by umoci) must give the tree the mount showed.

use std::path::PathBuf;
use std::process::Command;

use strata_testkit::images::{Blob, oci_layout, tar_dir};

use crate::diff::{change, lower, tree};
use crate::util::{MountGuard, require_fuse, require_privileged, require_tools, run};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env { dir: tempfile::tempdir().expect("tempdir") };
        lower(&env.path("rootfs"));
        oci_layout(&env.path("image"), &[Blob::gzip(tar_dir(&env.path("rootfs")))], "base:1");
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn strata(&self, store: &str, args: &[&str]) -> String {
        run(Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(self.path(store)).args(args))
    }

    /// `strata` on the store `store` under `prlimit --nofile=SOFT:HARD`.
    fn strata_limited(&self, nofile: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}")).arg(env!("CARGO_BIN_EXE_strata"));
        cmd.arg("--root").arg(self.path("store")).args(args);
        cmd
    }

    /// Mounts the base image with `driver`, makes the changes, and commits them into
    /// `out` as `reference`; returns the merged view and the commit's JSON.
    fn mount_change_commit(
        &self,
        store: &str,
        driver: &str,
        out: &str,
        reference: &str,
    ) -> (crate::util::Tree, serde_json::Value) {
        let mnt = self.path(&format!("mnt-{store}"));
        let _guard = MountGuard(mnt.clone());
        let (image, mnt_s) = (self.path("image"), mnt.to_str().expect("utf-8").to_owned());
        self.strata(store, &["mount", "--driver", driver, image.to_str().expect("utf-8"), &mnt_s]);
        change(&mnt, true);
        let view = tree(&mnt);
        let out = self.path(out);
        let json = self.strata(
            store,
            &["commit", &mnt_s, out.to_str().expect("utf-8"), "--ref", reference, "--json", "-m", "changes"],
        );
        self.strata(store, &["umount", &mnt_s]);
        (view, serde_json::from_str(&json).expect("commit json"))
    }
}

fn check_round_trip(driver: &str) {
    let env = Env::new();
    let (view, committed) = env.mount_change_commit("store", driver, "out", "app:v2");
    // strata reads the committed image back: the same tree.
    let flat = env.path("flat");
    env.strata(
        "store",
        &["unpack", env.path("out").to_str().expect("utf-8"), "--ref", "app:v2", "--to", flat.to_str().expect("utf-8")],
    );
    let back = tree(&flat);
    let diff = view.diff(&back);
    assert!(diff.is_empty(), "{driver}: merged view vs committed image:\n{}", diff.join("\n"));
    // The base layer's blob was copied once, the new one added: two layers.
    let manifest = committed["manifest"].as_str().expect("manifest digest");
    let bytes = std::fs::read(env.path("out/blobs/sha256").join(&manifest["sha256:".len()..])).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(2));
    // umoci reads it too, to the same tree.
    let bundle = env.path("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:app:v2", env.path("out").display()))
        .arg(&bundle));
    let by_umoci = tree(&bundle.join("rootfs"));
    let diff = back.diff(&by_umoci);
    assert!(diff.is_empty(), "{driver}: strata vs umoci unpack of the commit:\n{}", diff.join("\n"));
}

#[test]
fn privileged_commit_of_a_kernel_overlay_mount_unpacks_to_the_merged_view() {
    if !require_tools("privileged_commit_of_a_kernel_overlay_mount_unpacks_to_the_merged_view", &["umoci"]) {
        return;
    }
    check_round_trip("overlay");
}

#[test]
fn privileged_commit_of_a_strata_fuse_mount_unpacks_to_the_merged_view() {
    let test = "privileged_commit_of_a_strata_fuse_mount_unpacks_to_the_merged_view";
    if !require_fuse(test) || !require_tools(test, &["umoci"]) {
        return;
    }
    check_round_trip("fuse");
}

/// The same changes committed twice, and from two stores, give the same layer.
#[test]
fn privileged_commits_are_reproducible() {
    if !require_privileged("privileged_commits_are_reproducible") {
        return;
    }
    let env = Env::new();
    // SOURCE_DATE_EPOCH goes to the strata processes only (tests run in threads).
    let with_epoch = |store: &str, args: &[&str]| {
        run(Command::new(env!("CARGO_BIN_EXE_strata"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("--root")
            .arg(env.path(store))
            .args(args))
    };
    let mut layers = Vec::new();
    for store in ["one", "two"] {
        let mnt = env.path(&format!("mnt-{store}"));
        let _guard = MountGuard(mnt.clone());
        let mnt_s = mnt.to_str().expect("utf-8").to_owned();
        with_epoch(store, &["mount", "--driver", "overlay", env.path("image").to_str().expect("utf-8"), &mnt_s]);
        change(&mnt, true);
        for out in ["a", "b"] {
            let out = env.path(&format!("out-{store}-{out}"));
            let json = with_epoch(store, &["commit", &mnt_s, out.to_str().expect("utf-8"), "--ref", "r:1", "--json"]);
            let json: serde_json::Value = serde_json::from_str(&json).expect("json");
            layers.push((json["layer"]["digest"].as_str().expect("digest").to_owned(), json["manifest"].clone()));
        }
        with_epoch(store, &["umount", &mnt_s]);
    }
    assert!(layers.windows(2).all(|w| w[0] == w[1]), "layer and manifest digests differ: {layers:#?}");
}

/// Files injected with --init-file show in the mount but never in a commit.
#[test]
fn privileged_init_files_are_never_committed() {
    if !require_privileged("privileged_init_files_are_never_committed") {
        return;
    }
    let env = Env::new();
    let hosts = env.path("hosts");
    std::fs::write(&hosts, "127.0.0.1 container\n").expect("hosts");
    let mnt = env.path("mnt");
    let _guard = MountGuard(mnt.clone());
    let s = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    let init = format!("etc/hosts={}", s(&hosts));
    env.strata("store", &["mount", "--driver", "overlay", "--init-file", &init, &s(&env.path("image")), &s(&mnt)]);
    assert_eq!(std::fs::read_to_string(mnt.join("etc/hosts")).expect("injected"), "127.0.0.1 container\n");
    std::fs::write(mnt.join("etc/changed"), "by the container").expect("write");
    let diff = env.strata("store", &["diff", &s(&mnt)]);
    assert!(diff.contains("A /etc/changed") && !diff.contains("hosts"), "{diff}");
    env.strata("store", &["commit", &s(&mnt), &s(&env.path("out")), "--ref", "c:1"]);
    // Remounting refreshes the init file; the writable layer is kept.
    std::fs::write(&hosts, "10.0.0.1 container\n").expect("hosts");
    env.strata("store", &["umount", &s(&mnt)]);
    env.strata("store", &["mount", "--driver", "overlay", "--init-file", &init, &s(&env.path("image")), &s(&mnt)]);
    assert_eq!(std::fs::read_to_string(mnt.join("etc/hosts")).expect("refreshed"), "10.0.0.1 container\n");
    assert!(mnt.join("etc/changed").exists(), "the writable layer was kept");
    env.strata("store", &["umount", "--rm", &s(&mnt)]);
    let left = env.strata("store", &["snapshots", "ls"]);
    assert!(!left.contains(":init"), "the init layer goes with its writable layer:\n{left}");
    let flat = env.path("flat");
    env.strata("store", &["unpack", &s(&env.path("out")), "--ref", "c:1", "--to", &s(&flat)]);
    assert!(flat.join("etc/changed").exists());
    assert!(!flat.join("etc/hosts").exists(), "the injected file is not in the committed image");
}

/// `strata diff` and `strata commit` of a wide tree (1,500 new sibling dirs) under a
/// descriptor limit of 128: a walk must not hold a descriptor per pending dir.
#[test]
fn privileged_diff_and_commit_of_a_wide_tree_fit_in_a_small_fd_limit() {
    if !require_privileged("privileged_diff_and_commit_of_a_wide_tree_fit_in_a_small_fd_limit") {
        return;
    }
    let env = Env::new();
    let mnt = env.path("mnt");
    let _guard = MountGuard(mnt.clone());
    let s = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    env.strata("store", &["mount", "--driver", "overlay", &s(&env.path("image")), &s(&mnt)]);
    for i in 0..1500 {
        let dir = mnt.join(format!("wide/d{i}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("f"), "x").expect("write");
    }
    let limited = |args: &[&str]| run(&mut env.strata_limited("128:128", args));
    let diff = limited(&["diff", &s(&mnt)]);
    assert_eq!(diff.lines().filter(|l| l.starts_with("A /wide")).count(), 3001, "wide, 1500 dirs, 1500 files");
    limited(&["commit", &s(&mnt), &s(&env.path("out")), "--ref", "wide:1"]);
    env.strata("store", &["umount", "--rm", &s(&mnt)]);
    let flat = env.path("flat");
    env.strata("store", &["unpack", &s(&env.path("out")), "--ref", "wide:1", "--to", &s(&flat)]);
    assert_eq!(std::fs::read_dir(flat.join("wide")).expect("wide").count(), 1500);
}

/// A container can build a directory chain deeper than any layer may be (`mkdir d && cd
/// d` in a loop; 9,000 levels here). Started with a soft descriptor limit of 64 (hard
/// 4,096): `strata diff` and `strata commit` refuse it naming where it is (they overflowed
/// the stack or failed with a 6 KiB path before), and `strata umount --rm` still removes
/// the writable layer (it failed with EMFILE).
#[test]
fn privileged_a_tree_deeper_than_any_layer_is_refused_clearly_and_still_removed() {
    if !require_privileged("privileged_a_tree_deeper_than_any_layer_is_refused_clearly_and_still_removed") {
        return;
    }
    let env = Env::new();
    let mnt = env.path("mnt");
    let _guard = MountGuard(mnt.clone());
    let s = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    env.strata("store", &["mount", "--driver", "overlay", &s(&env.path("image")), &s(&mnt)]);
    std::fs::create_dir(mnt.join("deep")).expect("mkdir");
    let mut at = rustix::fs::open(mnt.join("deep"), rustix::fs::OFlags::PATH, rustix::fs::Mode::empty()).expect("open");
    for _ in 0..9000 {
        rustix::fs::mkdirat(&at, "d", rustix::fs::Mode::from_raw_mode(0o755)).expect("mkdir");
        at = rustix::fs::openat(&at, "d", rustix::fs::OFlags::PATH, rustix::fs::Mode::empty()).expect("descend");
    }
    drop(at);
    let limited = |args: &[&str]| env.strata_limited("64:4096", args).output().expect("run strata");
    for args in [vec!["diff", &s(&mnt)], vec!["commit", &s(&mnt), &s(&env.path("out")), "--ref", "deep:1"]] {
        let out = limited(&args.iter().map(|a| a.as_ref()).collect::<Vec<&str>>());
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} fails cleanly: {said}");
        assert!(said.contains("\"deep\"") && said.contains("longer than PATH_MAX"), "{args:?}: {said}");
        assert!(said.len() < 1000, "{args:?}: the error is readable, not 4 KiB of path: {said}");
    }
    let out = limited(&["umount", "--rm", &s(&mnt)]);
    assert!(out.status.success(), "umount --rm: {}", String::from_utf8_lossy(&out.stderr));
    let listed = env.strata("store", &["snapshots", "ls"]);
    assert!(!listed.contains("active"), "the writable layer is gone:\n{listed}");
    let dirs = std::fs::read_dir(env.path("store/snapshots")).expect("snapshots").count();
    assert_eq!(dirs, 1, "only the image's layer dir is left");
}

/// The shipped demo image (whiteouts, an opaque dir, lower hard links) through a commit.
#[test]
fn privileged_commit_of_the_demo_image_unpacks_to_the_merged_view() {
    if !require_fuse("privileged_commit_of_the_demo_image_unpacks_to_the_merged_view") {
        return;
    }
    let env = Env::new();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/image");
    let s = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    for driver in ["overlay", "fuse"] {
        let mnt = env.path(&format!("demo-{driver}"));
        let _guard = MountGuard(mnt.clone());
        env.strata("store", &["mount", "--driver", driver, &s(&demo), &s(&mnt)]);
        std::fs::remove_file(mnt.join("etc/os-release")).expect("rm");
        std::fs::write(mnt.join("usr/bin/hello"), "rewritten\n").expect("rewrite a linked file");
        std::fs::hard_link(mnt.join("usr/bin/hi"), mnt.join("usr/bin/hi2")).expect("link");
        std::fs::create_dir_all(mnt.join("var/cache/demo/new")).expect("mkdir in the opaque dir");
        std::os::unix::fs::symlink("../usr", mnt.join("etc/usr-link")).expect("symlink");
        let view = tree(&mnt);
        let out = env.path(&format!("demo-out-{driver}"));
        env.strata("store", &["commit", &s(&mnt), &s(&out), "--ref", "demo:changed"]);
        env.strata("store", &["umount", "--rm", &s(&mnt)]);
        let flat = env.path(&format!("demo-flat-{driver}"));
        env.strata("store", &["unpack", &s(&out), "--ref", "demo:changed", "--to", &s(&flat)]);
        let diff = view.diff(&tree(&flat));
        assert!(diff.is_empty(), "{driver}: demo merged view vs committed image:\n{}", diff.join("\n"));
    }
}
