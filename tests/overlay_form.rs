//! Overlay form: what lands on disk for kernel overlayfs.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use strata::core::ovl::XattrNamespace;
use strata::core::tar::Entry;
use strata::core::{ApplyBuilder, Mode};

use crate::util::{Tree, apply_overlay, e, layer};

fn xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    rustix::fs::lgetxattr(path, key, &mut buf[..]).ok().map(|n| buf[..n].to_vec())
}

fn is_whiteout(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

#[test]
fn whiteouts_become_char_devices_with_the_header_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = layer(&[e(Entry::whiteout("etc/gone").owner(12, 34)), e(Entry::whiteout("top"))]);
    let r = apply_overlay(&l, &dir.path().join("l"), &[]).expect("apply");
    let gone = dir.path().join("l/etc/gone");
    assert!(is_whiteout(&gone));
    let md = std::fs::symlink_metadata(&gone).expect("stat");
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (12, 34, 0));
    assert!(is_whiteout(&dir.path().join("l/top")));
    assert_eq!(r.whiteouts, 2);
}

#[test]
fn opaque_dirs_get_the_trusted_or_user_xattr() {
    let l = layer(&[e(Entry::dir("o", 0o755)), e(Entry::opaque("o")), e(Entry::opaque("implied/p"))]);
    for (userxattr, key) in [(false, "trusted.overlay.opaque"), (true, "user.overlay.opaque")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("l");
        ApplyBuilder::new(Mode::Overlay)
            .xattr_namespace(if userxattr { XattrNamespace::User } else { XattrNamespace::Trusted })
            .build()
            .expect("opts")
            .apply(&l[..], &out)
            .expect("apply");
        assert_eq!(xattr(&out.join("o"), key).as_deref(), Some(&b"y"[..]), "{key}");
        assert_eq!(xattr(&out.join("implied/p"), key).as_deref(), Some(&b"y"[..]), "{key}");
    }
}

#[test]
fn whiteout_inside_an_opaque_dir_is_not_left_behind() {
    for entries in [
        vec![e(Entry::dir("o", 0o755)), e(Entry::whiteout("o/x")), e(Entry::opaque("o"))],
        vec![e(Entry::dir("o", 0o755)), e(Entry::opaque("o")), e(Entry::whiteout("o/x"))],
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        apply_overlay(&layer(&entries), &dir.path().join("l"), &[]).expect("apply");
        assert!(!dir.path().join("l/o/x").exists() && std::fs::symlink_metadata(dir.path().join("l/o/x")).is_err());
    }
}

#[test]
fn whiteout_plus_same_name_dir_makes_an_opaque_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = layer(&[
        e(Entry::whiteout("d")),
        e(Entry::dir("d", 0o755)),
        e(Entry::whiteout("q")),
        (Entry::file("q/x", 0o644), b"x"),
    ]);
    apply_overlay(&l, &dir.path().join("l"), &[]).expect("apply");
    assert_eq!(xattr(&dir.path().join("l/d"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(
        xattr(&dir.path().join("l/q"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..]),
        "implied dir over a whiteout"
    );
}

#[test]
fn implied_dirs_copy_lower_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l1 = dir.path().join("l1");
    let base = layer(&[
        e(Entry::dir("tmp", 0o1777).owner(5, 6).mtime(1_500_000_000, 77).xattr("user.k", b"v")),
        e(Entry::opaque("tmp")),
    ]);
    apply_overlay(&base, &l1, &[]).expect("apply l1");
    let l2 = dir.path().join("l2");
    apply_overlay(&layer(&[(Entry::file("tmp/x", 0o644), b"x")]), &l2, &[&l1]).expect("apply l2");
    let t = Tree::of(&l2);
    let tmp = t.get("tmp");
    assert_eq!((tmp.mode, tmp.uid, tmp.gid, tmp.mtime), (0o1777, 5, 6, (1_500_000_000, 77)));
    assert_eq!(tmp.xattrs.get("user.k").map(Vec::as_slice), Some(&b"v"[..]));
    assert_eq!(xattr(&l2.join("tmp"), "trusted.overlay.opaque"), None, "a lower opaque marker is never copied up");
}

#[test]
fn hardlink_to_a_lower_file_copies_it_into_the_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l1, l2) = (dir.path().join("l1"), dir.path().join("l2"));
    apply_overlay(&layer(&[(Entry::file("bin/tool", 0o4755).owner(0, 9).xattr("user.a", b"b"), b"tool")]), &l1, &[])
        .expect("l1");
    apply_overlay(&layer(&[e(Entry::hardlink("usr/tool", "bin/tool"))]), &l2, &[&l1]).expect("l2");
    let t = Tree::of(&l2);
    assert_eq!(t.get("bin/tool").links, ["usr/tool"]);
    let tool = t.get("bin/tool");
    assert_eq!((tool.mode, tool.gid, tool.content.clone()), (0o4755, 9, crate::util::tree::content_of(b"tool")));
    assert_eq!(tool.xattrs.get("user.a").map(Vec::as_slice), Some(&b"b"[..]));
    assert_eq!(Tree::of(&l1).get("bin/tool").links, Vec::<String>::new(), "the lower layer is untouched");
}

/// The copy keeps a file capability: chown (which drops `security.capability` and the
/// setuid bit) comes before the xattrs and the mode.
#[test]
fn privileged_copy_up_keeps_file_capabilities_and_setuid_after_chown() {
    if !crate::util::require_privileged("privileged_copy_up_keeps_file_capabilities_and_setuid_after_chown") {
        return;
    }
    const CAP_NET_RAW: [u8; 20] = [0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let dir = tempfile::tempdir().expect("tempdir");
    let (l1, l2) = (dir.path().join("l1"), dir.path().join("l2"));
    let ping = Entry::file("bin/ping", 0o4755).owner(1000, 1000).xattr("security.capability", &CAP_NET_RAW);
    apply_overlay(&layer(&[(ping, b"\x7fELF ping")]), &l1, &[]).expect("l1");
    apply_overlay(&layer(&[e(Entry::hardlink("usr/ping", "bin/ping"))]), &l2, &[&l1]).expect("l2");
    let t = Tree::of(&l2);
    let ping = t.get("bin/ping");
    assert_eq!((ping.mode, ping.uid, ping.gid), (0o4755, 1000, 1000));
    assert_eq!(ping.xattrs.get("security.capability").map(Vec::as_slice), Some(&CAP_NET_RAW[..]));
}

#[test]
fn hardlink_to_a_lower_file_hidden_by_a_whiteout_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l1, l2, l3) = (dir.path().join("l1"), dir.path().join("l2"), dir.path().join("l3"));
    apply_overlay(&layer(&[(Entry::file("f", 0o644), b"f")]), &l1, &[]).expect("l1");
    apply_overlay(&layer(&[e(Entry::whiteout("f"))]), &l2, &[&l1]).expect("l2");
    let err = apply_overlay(&layer(&[e(Entry::hardlink("h", "f"))]), &l3, &[&l2, &l1]).expect_err("hidden").to_string();
    assert!(err.contains("hardlink target f not found"), "{err}");
}

#[test]
fn root_opaque_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = apply_overlay(&layer(&[e(Entry::opaque(""))]), &dir.path().join("l"), &[]).expect("apply");
    assert!(r.root_opaque);
}

#[test]
fn overlay_form_needs_an_empty_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("leftover"), b"x").expect("write");
    let err = apply_overlay(&layer(&[]), dir.path(), &[]).expect_err("not empty").to_string();
    assert!(err.contains("overlay form needs an empty target"), "{err}");
}

/// A layer applied with `defer_lower` and finished by `resolve_deferred` once its
/// parents exist equals the same layer applied sequentially with its parents: this is
/// what makes parallel unpack exact.
#[test]
fn deferred_apply_then_resolve_equals_sequential_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layers = [
        layer(&[
            e(Entry::dir("tmp", 0o1777).owner(5, 6).mtime(1_500_000_000, 77).xattr("user.k", b"v")),
            e(Entry::dir("usr/bin", 0o750).mtime(1_400_000_000, 1)),
            (Entry::file("usr/bin/su", 0o4755).owner(0, 9).xattr("user.a", b"b"), b"su"),
            (Entry::file("usr/bin/old", 0o644), b"old"),
            e(Entry::symlink("usr/bin/sl", "su")),
        ]),
        layer(&[
            (Entry::file("tmp/x", 0o644), b"x"),
            e(Entry::hardlink("usr/bin/su-again", "usr/bin/su")),
            e(Entry::hardlink("usr/bin/su-third", "usr/bin/su")),
            e(Entry::hardlink("opt/deep/link", "usr/bin/sl")),
            // A later entry takes the link target's path: the link keeps the lower copy.
            e(Entry::hardlink("keep-old", "usr/bin/old")),
            (Entry::file("usr/bin/old", 0o600), b"new"),
            e(Entry::dir("usr", 0o711)),
        ]),
    ];
    let seq1 = dir.path().join("seq1");
    apply_overlay(&layers[0], &seq1, &[]).expect("base");
    let seq2 = dir.path().join("seq2");
    apply_overlay(&layers[1], &seq2, &[&seq1]).expect("sequential");

    let def2 = dir.path().join("def2");
    let applier = ApplyBuilder::new(Mode::Overlay).defer_lower(true).build().expect("opts");
    let report = applier.apply(&layers[1][..], &def2).expect("deferred apply");
    assert_eq!(report.deferred.links.len(), 4);
    assert!(report.deferred.implied_dirs.iter().any(|d| d.display() == "tmp"));
    applier.resolve_deferred(&def2, std::slice::from_ref(&seq1), &report.deferred).expect("resolve");

    let (mut a, mut b) = (Tree::of(&seq2), Tree::of(&def2));
    a.0.remove("");
    b.0.remove("");
    let diff = a.diff(&b);
    assert!(diff.is_empty(), "deferred apply differs from sequential:\n{}", diff.join("\n"));
    assert_eq!(a.get("keep-old").content, crate::util::tree::content_of(b"old"));
}

#[test]
fn deferred_link_with_no_target_anywhere_is_an_error_at_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let applier = ApplyBuilder::new(Mode::Overlay).defer_lower(true).build().expect("opts");
    let out = dir.path().join("l");
    let report = applier.apply(&layer(&[e(Entry::hardlink("h", "nowhere"))])[..], &out).expect("apply");
    let err = applier.resolve_deferred(&out, &[], &report.deferred).expect_err("no target").to_string();
    assert!(err.contains("hardlink target nowhere not found"), "{err}");
}

/// umoci, when a directory becomes a file, also writes whiteouts for the old children
/// under the new file (`dir2file/.wh.sub`). They hide nothing (a file hides all below
/// it), so they are ignored with a warning, in both forms, as `umoci unpack` does.
#[test]
fn whiteouts_under_a_file_of_the_same_layer_are_ignored_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = layer(&[e(Entry::dir("dir2file", 0o755)), (Entry::file("dir2file/sub", 0o644), b"old")]);
    let change = layer(&[(Entry::file("dir2file", 0o644), b"now a file"), e(Entry::whiteout("dir2file/sub"))]);
    let (l1, l2) = (dir.path().join("l1"), dir.path().join("l2"));
    apply_overlay(&base, &l1, &[]).expect("l1");
    let report = apply_overlay(&change, &l2, &[&l1]).expect("umoci's dir2file layer applies");
    assert_eq!(std::fs::read(l2.join("dir2file")).expect("file"), b"now a file");
    assert!(
        report.warnings.iter().any(|w| w.contains("dir2file/.wh.sub") && w.contains("ignored")),
        "{:?}",
        report.warnings
    );

    let flat = dir.path().join("flat");
    crate::util::apply_flat(&base, &flat).expect("base");
    crate::util::apply_flat(&change, &flat).expect("flat");
    assert_eq!(std::fs::read(flat.join("dir2file")).expect("file"), b"now a file");
}

/// A layer applied in the user namespace over parents in the trusted one (what
/// `strata unpack --userxattr` does on a root store's layers) still sees the parents'
/// opaque dirs: a hardlink to a file an opaque parent dir hides is an error, not a
/// copy of the hidden file.
#[test]
fn privileged_lower_opaque_dirs_count_in_either_namespace() {
    if !crate::util::require_privileged("privileged_lower_opaque_dirs_count_in_either_namespace") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (l1, l2, l3) = (dir.path().join("l1"), dir.path().join("l2"), dir.path().join("l3"));
    apply_overlay(&layer(&[e(Entry::dir("d", 0o755)), (Entry::file("d/f", 0o644), b"hidden")]), &l1, &[]).expect("l1");
    apply_overlay(&layer(&[e(Entry::dir("d", 0o755)), e(Entry::opaque("d"))]), &l2, &[&l1]).expect("l2");
    assert_eq!(xattr(&l2.join("d"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    let err = ApplyBuilder::new(Mode::Overlay)
        .xattr_namespace(XattrNamespace::User)
        .parent(&l2)
        .parent(&l1)
        .build()
        .expect("build")
        .apply(&layer(&[e(Entry::hardlink("h", "d/f"))])[..], &l3)
        .expect_err("d/f is hidden by l2's opaque d");
    assert!(err.to_string().contains("not found"), "{err}");
    assert!(!l3.join("d/f").exists(), "the hidden file was not copied up");
}
