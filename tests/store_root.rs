//! The store root's safety rules: a symlinked, foreign or shared root is refused, and
//! opening a store never touches anything outside its root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use strata::store::Error;
use strata::store::Store;

use crate::util::{Tree, require_privileged};

/// A directory that looks like a store, with content a wrong cleanup would delete.
fn victim(dir: &Path) -> Tree {
    for sub in ["snapshots/orphan", "staging/abandoned"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        std::fs::write(dir.join(sub).join("precious"), b"keep").expect("write");
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    Tree::of(dir)
}

fn refused(root: &Path, want: &str) {
    match Store::open(root) {
        Err(err @ Error::UnsafeRoot { .. }) => assert!(err.to_string().contains(want), "{err}"),
        Err(other) => panic!("expected UnsafeRoot ({want}), got {other}"),
        Ok(_) => panic!("opened {} although {want}", root.display()),
    }
}

#[test]
fn a_symlinked_root_is_refused_and_its_target_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let real = tmp.path().join("V");
    let before = victim(&real);
    std::os::unix::fs::symlink(&real, tmp.path().join("L")).expect("symlink");
    refused(&tmp.path().join("L"), "is a symlink");
    assert_eq!(Tree::of(&real).diff(&before), Vec::<String>::new(), "nothing under the symlink's target changed");
}

#[test]
fn a_symlinked_subdir_is_refused_and_what_it_points_at_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let elsewhere = tmp.path().join("elsewhere");
    let before = victim(&elsewhere);
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::symlink(elsewhere.join("snapshots"), root.join("snapshots")).expect("plant");
    refused(&root, "is a symlink");
    assert_eq!(Tree::of(&elsewhere).diff(&before), Vec::<String>::new());
}

#[test]
fn a_group_or_world_writable_root_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    for mode in [0o777, 0o770, 0o702] {
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(mode)).expect("chmod");
        refused(&root, "writable by group or others");
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    Store::open(&root).expect("a 0755 root of the caller's is fine");
}

#[test]
fn a_new_root_is_made_0700() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("a/b/store");
    Store::open(&root).expect("open");
    let mode = std::fs::metadata(&root).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
}

#[test]
fn privileged_a_root_owned_by_another_user_is_refused_and_untouched() {
    if !require_privileged("privileged_a_root_owned_by_another_user_is_refused_and_untouched") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let elsewhere = tmp.path().join("elsewhere");
    let before = victim(&elsewhere);
    // Another user's root, with `snapshots` planted to point elsewhere.
    let root = tmp.path().join("theirs");
    std::fs::create_dir(&root).expect("mkdir");
    std::os::unix::fs::symlink(elsewhere.join("snapshots"), root.join("snapshots")).expect("plant");
    std::os::unix::fs::chown(&root, Some(1000), Some(1000)).expect("chown");
    refused(&root, "owned by uid 1000");
    assert_eq!(Tree::of(&elsewhere).diff(&before), Vec::<String>::new());
    // An ancestor another user owns could move the store under us.
    let nested = root.join("store");
    refused(&nested, "owned by uid 1000");
}
