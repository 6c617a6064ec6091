//! Table-driven tests of layer semantics (flat form: layers applied in order into one
//! rootfs). Each case lists its layers and checks the resulting tree.

use strata::core::ApplyReport;
use strata::core::tar::Entry;

use crate::util::{Tree, apply_flat, children, e, layer};

type Check = Box<dyn Fn(&Tree, &ApplyReport)>;

struct Case {
    name: &'static str,
    layers: Vec<Vec<u8>>,
    check: Check,
}

fn case(name: &'static str, layers: Vec<Vec<u8>>, check: impl Fn(&Tree, &ApplyReport) + 'static) -> Case {
    Case { name, layers, check: Box::new(check) }
}

fn base() -> Vec<u8> {
    layer(&[
        e(Entry::dir("a", 0o755)),
        (Entry::file("a/f", 0o644), b"lower f"),
        (Entry::file("a/g", 0o644), b"lower g"),
        e(Entry::dir("a/sub", 0o755)),
        (Entry::file("a/sub/deep", 0o644), b"deep"),
        e(Entry::dir("t", 0o755)),
        (Entry::file("t/target-file", 0o644), b"link target"),
        e(Entry::symlink("link", "t")),
        (Entry::file("plain", 0o644), b"a file"),
        e(Entry::dir("d", 0o711)),
        (Entry::file("d/inner", 0o644), b"inner"),
    ])
}

fn cases() -> Vec<Case> {
    vec![
        case("whiteout removes a lower file", vec![base(), layer(&[e(Entry::whiteout("a/f"))])], |t, r| {
            assert!(!t.has("a/f"));
            assert!(t.has("a/g"));
            assert_eq!(r.whiteouts, 1);
        }),
        case("whiteout removes a lower dir tree", vec![base(), layer(&[e(Entry::whiteout("a/sub"))])], |t, _| {
            assert!(!t.has("a/sub") && !t.has("a/sub/deep"));
        }),
        case(
            "opaque marker before the layer's children",
            vec![
                base(),
                layer(&[e(Entry::dir("a", 0o755)), e(Entry::opaque("a")), (Entry::file("a/new", 0o644), b"n")]),
            ],
            |t, r| {
                assert_eq!(children(t, "a"), ["a/new"]);
                assert_eq!(r.opaque_dirs, 1);
            },
        ),
        case(
            "opaque marker after the layer's children (order independent)",
            vec![
                base(),
                layer(&[e(Entry::dir("a", 0o755)), (Entry::file("a/new", 0o644), b"n"), e(Entry::opaque("a"))]),
            ],
            |t, _| assert_eq!(children(t, "a"), ["a/new"]),
        ),
        case(
            "opaque marker without a dir entry",
            vec![base(), layer(&[e(Entry::opaque("a/sub")), (Entry::file("a/sub/x", 0o644), b"x")])],
            |t, _| {
                assert_eq!(children(t, "a/sub"), ["a/sub/x"]);
                assert!(t.has("a/f"));
            },
        ),
        case(
            "whiteout then same-name file in one layer",
            vec![base(), layer(&[e(Entry::whiteout("a/f")), (Entry::file("a/f", 0o600), b"upper f")])],
            |t, _| assert_eq!(t.get("a/f").content, crate::util::tree::content_of(b"upper f")),
        ),
        case(
            "same-name file then whiteout in one layer",
            vec![base(), layer(&[(Entry::file("a/f", 0o600), b"upper f"), e(Entry::whiteout("a/f"))])],
            |t, _| assert_eq!(t.get("a/f").content, crate::util::tree::content_of(b"upper f")),
        ),
        case(
            "whiteout then same-name dir: lower contents hidden",
            vec![
                base(),
                layer(&[e(Entry::whiteout("a")), e(Entry::dir("a", 0o700)), (Entry::file("a/only", 0o644), b"o")]),
            ],
            |t, _| {
                assert_eq!(children(t, "a"), ["a/only"]);
                assert_eq!(t.get("a").mode, 0o700);
            },
        ),
        case(
            "same-name dir then whiteout: the whiteout hides only lower contents",
            vec![
                base(),
                layer(&[e(Entry::dir("a", 0o700)), (Entry::file("a/only", 0o644), b"o"), e(Entry::whiteout("a"))]),
            ],
            |t, _| assert_eq!(children(t, "a"), ["a/only"]),
        ),
        case(
            "whiteout of a symlink removes the link, not its target",
            vec![base(), layer(&[e(Entry::whiteout("link"))])],
            |t, _| {
                assert!(!t.has("link"));
                assert!(t.has("t/target-file"));
            },
        ),
        case(
            "dir replaces a file",
            vec![base(), layer(&[e(Entry::dir("plain", 0o750)), (Entry::file("plain/x", 0o644), b"x")])],
            |t, _| {
                assert_eq!(t.get("plain").kind, "dir");
                assert!(t.has("plain/x"));
            },
        ),
        case("file replaces a dir tree", vec![base(), layer(&[(Entry::file("a", 0o644), b"now a file")])], |t, _| {
            assert_eq!(t.get("a").kind, "file");
            assert!(!t.has("a/f"));
        }),
        case(
            "dir over dir merges, new attributes win",
            vec![base(), layer(&[e(Entry::dir("d", 0o750).owner(7, 8).mtime(1_600_000_000, 5))])],
            |t, _| {
                let d = t.get("d");
                assert_eq!((d.mode, d.uid, d.gid, d.mtime), (0o750, 7, 8, (1_600_000_000, 5)));
                assert!(t.has("d/inner"));
            },
        ),
        case(
            "dir over dir: the new entry's xattrs replace the old ones",
            vec![
                layer(&[e(Entry::dir("x", 0o755).xattr("user.old", b"1").xattr("user.both", b"old"))]),
                layer(&[e(Entry::dir("x", 0o755).xattr("user.both", b"new"))]),
            ],
            |t, _| {
                let x = &t.get("x").xattrs;
                assert_eq!(x.keys().collect::<Vec<_>>(), ["user.both"]);
                assert_eq!(x.get("user.both").map(Vec::as_slice), Some(&b"new"[..]));
            },
        ),
        case(
            "implied parent of a new path: 0755 root, the entry's mtime",
            vec![layer(&[(Entry::file("x/y/z", 0o644).mtime(1_650_000_000, 0), b"z")])],
            |t, _| {
                for dir in ["x", "x/y"] {
                    let n = t.get(dir);
                    assert_eq!((n.kind, n.mode, n.uid, n.mtime), ("dir", 0o755, 0, (1_650_000_000, 0)), "{dir}");
                }
            },
        ),
        case(
            "an existing parent keeps its mtime when a child is added",
            vec![base(), layer(&[(Entry::file("d/added", 0o644), b"x")])],
            |t, _| assert_eq!(t.get("d").mtime, (1_700_000_000, 0)),
        ),
        case("setuid survives chown", vec![layer(&[(Entry::file("su", 0o4755).owner(1000, 1000), b"#!")])], |t, _| {
            let n = t.get("su");
            assert_eq!((n.mode, n.uid, n.gid), (0o4755, 1000, 1000));
        }),
        case(
            "setgid dir and sticky dir",
            vec![layer(&[e(Entry::dir("sg", 0o2775).owner(0, 50)), e(Entry::dir("tmp", 0o1777))])],
            |t, _| {
                assert_eq!(t.get("sg").mode, 0o2775);
                assert_eq!(t.get("tmp").mode, 0o1777);
            },
        ),
        case(
            "a file in a setgid dir gets the owner its entry names, not the dir's gid",
            vec![layer(&[
                e(Entry::dir("sg", 0o2775).owner(0, 50)),
                (Entry::file("sg/root-owned", 0o644), b"r"),
                (Entry::file("sg/group-owned", 0o644).owner(0, 50), b"g"),
            ])],
            |t, _| {
                assert_eq!(t.get("sg/root-owned").gid, 0);
                assert_eq!(t.get("sg/group-owned").gid, 50);
            },
        ),
        case(
            "file capabilities survive chown",
            vec![layer(&[(
                Entry::file("ping", 0o755).owner(0, 0).xattr("security.capability", &CAP_NET_RAW),
                b"\x7fELF",
            )])],
            |t, _| {
                assert_eq!(t.get("ping").xattrs.get("security.capability").map(Vec::as_slice), Some(&CAP_NET_RAW[..]))
            },
        ),
        case(
            "directory mtimes restored after children",
            vec![layer(&[
                e(Entry::dir("m", 0o755).mtime(1_500_000_000, 42)),
                (Entry::file("m/a", 0o644), b"a"),
                e(Entry::dir("m/n", 0o755).mtime(1_400_000_000, 7)),
                (Entry::file("m/n/b", 0o644), b"b"),
            ])],
            |t, _| {
                assert_eq!(t.get("m").mtime, (1_500_000_000, 42));
                assert_eq!(t.get("m/n").mtime, (1_400_000_000, 7));
            },
        ),
        case(
            "symlink mtime and owner",
            vec![layer(&[e(Entry::symlink("s", "/nowhere").mtime(1_234_567_890, 999_999_999).owner(5, 6))])],
            |t, _| {
                let n = t.get("s");
                assert_eq!(
                    (n.kind, n.content.as_str(), n.mtime, n.uid, n.gid),
                    ("symlink", "/nowhere", (1_234_567_890, 999_999_999), 5, 6)
                );
            },
        ),
        case(
            "symlink targets are stored verbatim",
            vec![layer(&[e(Entry::symlink("s1", "../../../etc/x")), e(Entry::symlink("s2", "a//b/./c/"))])],
            |t, _| {
                assert_eq!(t.get("s1").content, "../../../etc/x");
                assert_eq!(t.get("s2").content, "a//b/./c/");
            },
        ),
        case(
            "nanosecond file mtimes and negative times",
            vec![layer(&[
                (Entry::file("ns", 0o644).mtime(1_700_000_000, 123_456_789), b""),
                (Entry::file("old", 0o644).mtime(-2, 750_000_000), b""),
            ])],
            |t, _| {
                assert_eq!(t.get("ns").mtime, (1_700_000_000, 123_456_789));
                assert_eq!(t.get("old").mtime, (-2, 750_000_000));
            },
        ),
        case(
            "hardlink in the same layer",
            vec![layer(&[
                (Entry::file("f", 0o640), b"shared"),
                e(Entry::hardlink("h", "f")),
                e(Entry::hardlink("./h2", "./f")),
            ])],
            |t, r| {
                assert_eq!(t.get("f").links, ["h", "h2"]);
                assert_eq!(r.hardlinks, 2);
            },
        ),
        case("hardlink to a lower layer's file", vec![base(), layer(&[e(Entry::hardlink("hl", "a/g"))])], |t, _| {
            assert_eq!(t.get("hl").links, ["a/g"]);
        }),
        case(
            "hardlink forward reference binds to the file present at that point",
            vec![base(), layer(&[e(Entry::hardlink("hl", "a/f")), (Entry::file("a/f", 0o644), b"replaced")])],
            |t, _| {
                assert_eq!(t.get("hl").content, crate::util::tree::content_of(b"lower f"));
                assert_eq!(t.get("a/f").content, crate::util::tree::content_of(b"replaced"));
                assert!(t.get("hl").links.is_empty());
            },
        ),
        case(
            "hardlink to a symlink links the symlink itself",
            vec![layer(&[e(Entry::symlink("s", "missing-target")), e(Entry::hardlink("hs", "s"))])],
            |t, _| {
                assert_eq!(t.get("hs").kind, "symlink");
                assert_eq!(t.get("hs").links, ["s"]);
            },
        ),
        case(
            "devices and fifos",
            vec![layer(&[
                e(Entry::char_device("null", 1, 3)),
                e(Entry::block_device("loop0", 7, 0).owner(0, 6)),
                e(Entry::char_device("big", 4095, 0xfffff)),
                e(Entry::fifo("pipe").owner(3, 4)),
            ])],
            |t, r| {
                assert_eq!(
                    (t.get("null").kind, t.get("null").content.as_str(), t.get("null").mode),
                    ("char", "1:3", 0o666)
                );
                assert_eq!(
                    (t.get("loop0").kind, t.get("loop0").content.as_str(), t.get("loop0").gid),
                    ("block", "7:0", 6)
                );
                assert_eq!(t.get("big").content, "4095:1048575");
                assert_eq!((t.get("pipe").kind, t.get("pipe").uid), ("fifo", 3));
                assert_eq!((r.devices, r.fifos), (3, 1));
            },
        ),
        case(
            "xattrs with binary and empty values",
            vec![layer(&[(
                Entry::file("x", 0o644).xattr("user.bin", b"\x00\x01\n=\xff 12 k=v\n").xattr("user.empty", b""),
                b"",
            )])],
            |t, _| {
                let x = &t.get("x").xattrs;
                assert_eq!(x.get("user.bin").map(Vec::as_slice), Some(&b"\x00\x01\n=\xff 12 k=v\n"[..]));
                assert_eq!(x.get("user.empty").map(Vec::as_slice), Some(&b""[..]));
            },
        ),
        case(
            "overlay-private and host-policy xattrs are filtered",
            vec![layer(&[e(Entry::dir("o", 0o755)
                .xattr("trusted.overlay.opaque", b"y")
                .xattr("user.overlay.redirect", b"/x")
                .xattr("security.selinux", b"system_u:object_r:shadow_t:s0")
                .xattr("user.rootlesscontainers", b"x")
                .xattr("user.containers.override_stat", b"0:0:0755")
                .xattr("user.kept", b"1"))])],
            |t, r| {
                assert_eq!(t.get("o").xattrs.keys().collect::<Vec<_>>(), ["user.kept"]);
                assert_eq!(r.xattrs_filtered, 5);
            },
        ),
        case(
            "huge uid and gid (PAX records)",
            vec![layer(&[(Entry::file("big-ids", 0o644).owner(2_000_000_000, 4_294_967_294), b"")])],
            |t, _| {
                let n = t.get("big-ids");
                assert_eq!((n.uid, n.gid), (2_000_000_000, 4_294_967_294));
            },
        ),
        case("long names via PAX", vec![layer(&[(Entry::file(&long_path(), 0o644), b"deep")])], |t, _| {
            assert!(t.has(&long_path()))
        }),
        case(
            "aufs metadata is skipped and plnk hardlinks are re-targeted",
            vec![layer(&[
                e(Entry::file(".wh..wh.aufs", 0o644)),
                e(Entry::dir(".wh..wh.orph", 0o700)),
                e(Entry::dir(".wh..wh.plnk", 0o700)),
                (Entry::file(".wh..wh.plnk/1234.5678", 0o755), b"aufs linked"),
                e(Entry::hardlink("usr/bin/tool", ".wh..wh.plnk/1234.5678")),
            ])],
            |t, _| {
                assert_eq!(t.paths(), ["", "usr", "usr/bin", "usr/bin/tool"]);
                assert_eq!(t.get("usr/bin/tool").content, crate::util::tree::content_of(b"aufs linked"));
            },
        ),
        case(
            "root opaque marker empties the rootfs of lower content",
            vec![base(), layer(&[e(Entry::opaque("")), (Entry::file("only", 0o644), b"1")])],
            |t, r| {
                assert_eq!(t.paths(), ["", "only"]);
                assert!(r.root_opaque);
            },
        ),
        case(
            "a root entry sets the root's attributes",
            vec![layer(&[e(Entry::dir("./", 0o700).mtime(1_111_111_111, 0))])],
            |t, _| assert_eq!((t.get("").mode, t.get("").mtime), (0o700, (1_111_111_111, 0))),
        ),
    ]
}

/// security.capability v2 with cap_net_raw in the permitted set.
const CAP_NET_RAW: [u8; 20] = [0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn long_path() -> String {
    format!("{}/{}/{}", "d".repeat(200), "e".repeat(250), "f".repeat(255))
}

#[test]
fn semantics_table() {
    let mut failures = Vec::new();
    for case in cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut last = None;
        for (i, l) in case.layers.iter().enumerate() {
            match apply_flat(l, dir.path()) {
                Ok(r) => last = Some(r),
                Err(err) => panic!("{}: layer {i} failed: {err}", case.name),
            }
        }
        let tree = Tree::of(dir.path());
        let report = last.expect("at least one layer");
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.check)(&tree, &report))) {
            let msg =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            failures.push(format!("{}: {}", case.name, msg.unwrap_or_default()));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn hardlink_forward_reference_without_a_lower_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = layer(&[e(Entry::hardlink("h", "f")), (Entry::file("f", 0o644), b"later")]);
    let err = apply_flat(&l, dir.path()).expect_err("forward reference").to_string();
    assert!(err.contains("entry #0 \"h\"") && err.contains("hardlink target f not found"), "{err}");
}
