//! Tests that need root and overlayfs: they run on this project's machines and in CI,
//! and elsewhere print why they were skipped.
//!
//! The kernel is the oracle: a multi-layer image applied `flat` into one dir must equal,
//! entry by entry, the kernel overlayfs mount of the same layers applied in overlay form.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata::core::ovl::XattrNamespace;
use strata::core::tar::Entry;
use strata::core::{ApplyBuilder, Mode};

use crate::util::{MountGuard, Tree, children, e, gzip, layer, require_privileged, zstd};

const CAP_NET_RAW: [u8; 20] = [0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn root() -> (Entry, &'static [u8]) {
    e(Entry::dir("./", 0o755).mtime(1_600_000_000, 1))
}

/// Four layers exercising whiteouts, opaque dirs, hardlinks (same and lower layer),
/// symlinks, xattrs, a setuid file, devices, implied dirs and type changes.
fn image() -> Vec<Vec<u8>> {
    let l1 = layer(&[
        root(),
        e(Entry::dir("etc", 0o755).mtime(1_500_000_000, 11).xattr("user.dir", b"etc")),
        (Entry::file("etc/passwd", 0o644), b"root:x:0:0::/root:/bin/sh\n"),
        (Entry::file("etc/shadow", 0o640).owner(0, 42), b"root:*:1::::::\n"),
        (Entry::file("etc/motd", 0o644).mtime(1_500_000_000, 999_999_999), b"hello\n"),
        e(Entry::dir("usr/bin", 0o755).mtime(1_500_000_001, 0)),
        (Entry::file("usr/bin/su", 0o4755), b"\x7fELF su"),
        (Entry::file("usr/bin/ping", 0o755).xattr("security.capability", &CAP_NET_RAW), b"\x7fELF ping"),
        e(Entry::dir("usr/lib", 0o755)),
        (Entry::file("usr/lib/libx.so", 0o644).xattr("user.bin", b"\0\n=\xff"), b"lib"),
        e(Entry::symlink("usr/lib/libx.so.1", "libx.so").mtime(1_400_000_000, 5)),
        e(Entry::dir("usr/share/doc", 0o755)),
        (Entry::file("usr/share/doc/a", 0o644), b"a"),
        (Entry::file("usr/share/doc/b", 0o644), b"b"),
        e(Entry::dir("tmp", 0o1777).mtime(1_450_000_000, 0)),
        e(Entry::dir("dev", 0o755)),
        e(Entry::char_device("dev/null", 1, 3)),
        e(Entry::dir("var/cache/apt", 0o755)),
        (Entry::file("var/cache/apt/a.bin", 0o644), b"cache a"),
        (Entry::file("var/cache/apt/b.bin", 0o644), b"cache b"),
        e(Entry::dir("opt/app/data", 0o700).owner(1000, 1000)),
        (Entry::file("opt/app/config", 0o600).owner(1000, 1000), b"cfg"),
        (Entry::file("opt/app/data/blob", 0o600), b"blob"),
        e(Entry::dir("home/user", 0o750).owner(1000, 1000)),
        (Entry::file("home/user/.profile", 0o644).owner(1000, 1000), b"export X=1\n"),
        e(Entry::dir("hl", 0o755)),
        (Entry::file("hl/orig", 0o644), b"linked"),
        e(Entry::hardlink("hl/link", "hl/orig")),
    ]);
    let l2 = layer(&[
        root(),
        (Entry::file("etc/passwd", 0o644).mtime(1_700_000_000, 123_456_789), b"root:x:0:0::/root:/bin/bash\n"),
        e(Entry::whiteout("etc/shadow")),
        e(Entry::opaque("var/cache/apt")),
        (Entry::file("var/cache/apt/c.bin", 0o644), b"cache c"),
        e(Entry::whiteout("opt/app")),
        (Entry::file("usr/bin/newtool", 0o755), b"new"),
        e(Entry::hardlink("usr/bin/su-again", "usr/bin/su")),
        e(Entry::whiteout("home/user/.profile")),
        e(Entry::dir("run", 0o755)),
        e(Entry::fifo("run/ctl")),
    ]);
    let l3 = layer(&[
        root(),
        e(Entry::dir("opt/app", 0o755)),
        (Entry::file("opt/app/fresh", 0o644), b"fresh"),
        e(Entry::dir("etc", 0o750).mtime(1_650_000_000, 0)),
        e(Entry::symlink("etc/motd", "/run/motd")),
        (Entry::file("tmp/x", 0o644), b"x"),
        (Entry::file("var/cache", 0o644), b"cache is a file now"),
        e(Entry::block_device("dev/loop0", 7, 0).owner(0, 6)),
    ]);
    let l4 = layer(&[
        root(),
        e(Entry::whiteout("usr/lib/libx.so.1")),
        e(Entry::opaque("usr/share/doc")),
        (Entry::file("usr/share/doc/c", 0o644), b"c"),
        e(Entry::whiteout("hl")),
        e(Entry::dir("hl", 0o711)),
        (Entry::file("hl/new", 0o644), b"new"),
        e(Entry::hardlink("hl/new-link", "hl/new")),
        (Entry::file("tmp/x", 0o600).owner(3, 3), b"x2"),
    ]);
    vec![gzip(&l1), zstd(&l2), l3, gzip(&l4)]
}

fn mount_overlay(lowers: &[PathBuf], target: &Path, userxattr: bool) -> MountGuard {
    let lowerdir = lowers.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>().join(":");
    let mut options = format!("lowerdir={lowerdir}");
    if userxattr {
        options.push_str(",userxattr");
    }
    let guard = MountGuard(target.to_owned());
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(target)
        .status()
        .expect("run mount");
    assert!(status.success(), "mount -t overlay -o {options} failed");
    guard
}

/// `layers` applied flat into one dir, and applied in overlay form and mounted by the
/// kernel: both trees. `Err` when an apply refuses the stack.
pub(crate) fn flat_and_merged(layers: &[Vec<u8>], userxattr: bool) -> Result<(Tree, Tree), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let flat = dir.path().join("flat");
    let flat_applier = ApplyBuilder::new(Mode::Flat).build().expect("options");
    for (i, l) in layers.iter().enumerate() {
        flat_applier.apply(&l[..], &flat).map_err(|e| format!("flat apply of layer {}: {e}", i + 1))?;
    }
    // Overlay form: each layer in its own dir, parents nearest first.
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let out = dir.path().join(format!("l{}", i + 1));
        let mut b = ApplyBuilder::new(Mode::Overlay).xattr_namespace(if userxattr {
            XattrNamespace::User
        } else {
            XattrNamespace::Trusted
        });
        for parent in dirs.iter().rev() {
            b = b.parent(parent);
        }
        b.build()
            .expect("options")
            .apply(&l[..], &out)
            .map_err(|e| format!("overlay apply of layer {}: {e}", i + 1))?;
        dirs.push(out);
    }
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    let lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
    let guard = mount_overlay(&lowers, &mnt, userxattr);
    if let Some(phantom) = listed_but_absent(&mnt) {
        return Err(format!("{KERNEL_PHANTOM}: {}", phantom.display()));
    }
    let merged = Tree::of(&mnt);
    drop(guard);
    Ok((Tree::of(&flat), merged))
}

/// overlayfs passes readdir of a directory that exists in one layer only through
/// unfiltered: a whiteout there (nothing below it to hide) is listed, yet lookup hides
/// it. No flat tree can equal that, so such stacks are not compared.
pub(crate) const KERNEL_PHANTOM: &str = "the kernel lists a whiteout it cannot look up";

fn listed_but_absent(root: &Path) -> Option<PathBuf> {
    walkdir::WalkDir::new(root).follow_links(false).into_iter().find_map(|entry| match entry {
        Ok(entry) => entry.path().symlink_metadata().is_err().then(|| entry.path().to_owned()),
        Err(err) => err.path().map(Path::to_owned),
    })
}

#[test]
fn privileged_flat_apply_equals_kernel_overlay_mount() {
    if !require_privileged("privileged_flat_apply_equals_kernel_overlay_mount") {
        return;
    }
    let layers = image();
    for userxattr in [false, true] {
        let (flat_tree, merged) = flat_and_merged(&layers, userxattr).expect("apply");
        let diff = flat_tree.diff(&merged);
        assert!(
            diff.is_empty(),
            "flat apply differs from the overlay mount (userxattr={userxattr}):\n{}",
            diff.join("\n")
        );

        // And the result is what the layers say (not merely equal and both wrong).
        assert!(
            !flat_tree.has("etc/shadow") && !flat_tree.has("opt/app/config") && !flat_tree.has("usr/lib/libx.so.1")
        );
        assert_eq!(children(&flat_tree, "usr/share/doc"), ["usr/share/doc/c"]);
        assert_eq!(children(&flat_tree, "opt/app"), ["opt/app/fresh"]);
        assert_eq!(children(&flat_tree, "hl"), ["hl/new", "hl/new-link"]);
        assert_eq!(flat_tree.get("usr/bin/su").links, ["usr/bin/su-again"]);
        assert_eq!(flat_tree.get("usr/bin/su").mode, 0o4755);
        assert_eq!(
            flat_tree.get("usr/bin/ping").xattrs.get("security.capability").map(Vec::as_slice),
            Some(&CAP_NET_RAW[..])
        );
        assert_eq!((flat_tree.get("tmp").mode, flat_tree.get("tmp").mtime), (0o1777, (1_450_000_000, 0)));
        assert_eq!(flat_tree.get("var/cache").kind, "file");
        assert_eq!(flat_tree.get("etc").mode, 0o750);
        assert_eq!(flat_tree.get("dev/loop0").content, "7:0");
        assert_eq!(flat_tree.get("run/ctl").kind, "fifo");
    }
}

#[test]
fn privileged_root_opaque_layer_hides_the_layers_below_when_the_stack_stops_there() {
    if !require_privileged("privileged_root_opaque_layer_hides_the_layers_below_when_the_stack_stops_there") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (l1, l2, l3) = (dir.path().join("l1"), dir.path().join("l2"), dir.path().join("l3"));
    crate::util::apply_overlay(&layer(&[(Entry::file("old", 0o644), b"old")]), &l1, &[]).expect("l1");
    let r =
        crate::util::apply_overlay(&layer(&[e(Entry::opaque("")), (Entry::file("new", 0o644), b"new")]), &l2, &[&l1])
            .expect("l2");
    assert!(r.root_opaque, "the report tells the mounter to stop the stack at this layer");
    crate::util::apply_overlay(&layer(&[(Entry::file("top", 0o644), b"top")]), &l3, &[&l2, &l1]).expect("l3");
    // The kernel ignores the opaque xattr on a layer root: with l1 in the stack, "old" shows.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    {
        let _guard = mount_overlay(&[l3.clone(), l2.clone(), l1.clone()], &mnt, false);
        assert!(mnt.join("old").exists(), "kernel overlayfs ignores a root opaque marker (DESIGN.md)");
    }
    // Stopping the stack at the root-opaque layer gives the layer's meaning.
    let _guard = mount_overlay(&[l3, l2], &mnt, false);
    assert_eq!(Tree::of(&mnt).paths(), ["", "new", "top"]);
}

#[test]
fn privileged_lower_link_groups_stay_whole_in_the_merged_view() {
    if !require_privileged("privileged_lower_link_groups_stay_whole_in_the_merged_view") {
        return;
    }
    // Layer 1: one file under five names. Layer 2: one name whited out, one replaced.
    let l1 = layer(&[
        root(),
        (Entry::file("f1", 0o644), b"one"),
        e(Entry::hardlink("f2", "f1")),
        e(Entry::hardlink("f3", "f1")),
        e(Entry::hardlink("gone", "f1")),
        e(Entry::hardlink("d/f4", "f1")),
    ]);
    let l2 = layer(&[root(), e(Entry::whiteout("gone")), (Entry::file("f3", 0o600), b"replaced")]);
    // Layer 3 links to the lower file (which copies it up), then deletes the name it
    // linked to: the copy must go too, and the other names keep sharing the file.
    let linked = layer(&[root(), e(Entry::hardlink("new", "f1"))]);
    let linked_then_deleted = layer(&[root(), e(Entry::hardlink("new", "f1")), e(Entry::whiteout("f1"))]);
    for (l3, group) in [(linked, vec!["d/f4", "f1", "f2", "new"]), (linked_then_deleted, vec!["d/f4", "f2", "new"])] {
        let (flat, merged) = flat_and_merged(&[l1.clone(), l2.clone(), l3], false).expect("apply");
        let diff = flat.diff(&merged);
        assert!(diff.is_empty(), "flat apply differs from the overlay mount:\n{}", diff.join("\n"));
        let others: Vec<&str> = group.iter().copied().filter(|p| *p != "new").collect();
        assert_eq!(flat.get("new").links, others, "the link group of new");
        assert!(flat.get("f3").links.is_empty() && !flat.has("gone"));
    }
}
