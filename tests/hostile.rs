//! Hostile layers. Every case runs in a sandbox with a victim directory beside the
//! target and asserts (1) nothing outside the target changed and (2) the exact result or
//! error. Symlink plants point at the victim, never at a real host path.

use strata::core::tar::Entry;
use strata::core::tar::pax::format_record;
use strata::core::{ApplyBuilder, Mode};
use strata_testkit::hostile::{HeaderFields, gnu_long_header, pax_header, set_checksum};

use crate::util::{Sandbox, Tree, e, gzip, layer, zstd};

enum Expect {
    /// The apply fails and the message contains this.
    Err(&'static str),
    /// The apply succeeds and this holds of the target tree.
    Ok(fn(&Tree)),
}

struct Case {
    name: &'static str,
    /// Applied first (flat), e.g. to plant a symlink.
    earlier: Vec<Vec<u8>>,
    layer: Vec<u8>,
    mode: Mode,
    expect: Expect,
}

fn flat(name: &'static str, layer: Vec<u8>, expect: Expect) -> Case {
    Case { name, earlier: Vec::new(), layer, mode: Mode::Flat, expect }
}

fn after(name: &'static str, earlier: Vec<u8>, layer: Vec<u8>, expect: Expect) -> Case {
    Case { name, earlier: vec![earlier], layer, mode: Mode::Flat, expect }
}

fn overlay(name: &'static str, layer: Vec<u8>, expect: Expect) -> Case {
    Case { name, earlier: Vec::new(), layer, mode: Mode::Overlay, expect }
}

/// A layer whose single header is built by hand, then `tweak`ed (checksum recomputed).
fn raw_entry(fields: HeaderFields<'_>, data: &[u8], tweak: impl Fn(&mut [u8; 512])) -> Vec<u8> {
    let mut block = fields.block();
    tweak(&mut block);
    set_checksum(&mut block);
    let mut out = block.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend([0u8; 1024]);
    out
}

fn with_pax(records: &[(&str, &[u8])], entry: Entry, data: &[u8]) -> Vec<u8> {
    let body: Vec<u8> = records.iter().flat_map(|(k, v)| format_record(k, v)).collect();
    let mut out = pax_header(&entry.path, &body);
    out.extend(layer(&[(entry, data)]));
    out
}

fn cases(victim: &str) -> Vec<Case> {
    let victim_file = format!("{victim}/secret");
    let leaked = |v: &str| Box::leak(v.to_owned().into_boxed_str()) as &'static str;
    let victim: &'static str = leaked(victim);
    let victim_file: &'static str = leaked(&victim_file);
    let plant = || layer(&[e(Entry::symlink("evil", victim))]);
    let plant_rel = || layer(&[e(Entry::symlink("evil", "../victim"))]);
    let ok_evil_is_dir: fn(&Tree) = |t| assert_eq!(t.get("evil").kind, "dir");
    let tar = layer(&[(Entry::file("f", 0o644), b"payload")]);
    let mut truncated_gz = gzip(&tar);
    truncated_gz.truncate(truncated_gz.len() - 9);
    let mut corrupt_gz = gzip(&tar);
    let mid = corrupt_gz.len() / 2;
    corrupt_gz[mid] ^= 0xff;
    let mut truncated_zst = zstd(&tar);
    truncated_zst.truncate(truncated_zst.len() - 5);
    let mut corrupt_zst = zstd(&tar);
    let mid = corrupt_zst.len() / 2;
    corrupt_zst[mid] ^= 0xff;
    let mut truncated_tar = tar.clone();
    truncated_tar.truncate(512 + 3);
    let mut bad_checksum = tar.clone();
    bad_checksum[0] ^= 1;
    let big_name = "x".repeat(1024 * 1024 + 1);

    vec![
        // --- name traversal ---
        flat(
            "dot-dot escape",
            layer(&[(Entry::file("../victim/pwn", 0o644), b"x")]),
            Expect::Err("path contains '..'"),
        ),
        flat(
            "dot-dot in the middle",
            layer(&[(Entry::file("a/../../victim/pwn", 0o644), b"x")]),
            Expect::Err("path contains '..'"),
        ),
        flat(
            "dot-dot via PAX path",
            with_pax(&[("path", b"../victim/pwn")], Entry::file("innocent", 0o644), b"x"),
            Expect::Err("path contains '..'"),
        ),
        flat(
            "absolute path at the victim lands inside the root",
            layer(&[(Entry::file(&format!("{victim}/pwn"), 0o644), b"x")]),
            Expect::Ok(|t| assert!(t.paths().iter().any(|p| p.ends_with("victim/pwn")), "{:?}", t.paths())),
        ),
        flat(
            "NUL in a PAX path",
            with_pax(&[("path", b"ok\0../../victim/pwn")], Entry::file("ok", 0o644), b"x"),
            Expect::Err("NUL"),
        ),
        flat(
            "PAX path and GNU long name disagree",
            {
                let mut b = gnu_long_header(b'L', b"gnu-name");
                b.extend(with_pax(&[("path", b"pax-name")], Entry::file("hdr", 0o644), b"x"));
                b
            },
            Expect::Err("PAX path and GNU long name disagree"),
        ),
        flat(
            "PAX linkpath and GNU long link disagree",
            {
                let mut b = layer(&[(Entry::file("t1", 0o644), b"1")]);
                b.truncate(b.len() - 1024);
                b.extend(gnu_long_header(b'K', b"t1"));
                b.extend(with_pax(&[("linkpath", b"t2")], Entry::hardlink("h", "t1"), b""));
                b
            },
            Expect::Err("PAX linkpath and GNU long link disagree"),
        ),
        // --- symlink plants ---
        flat(
            "write through a symlink planted in the same layer",
            layer(&[e(Entry::symlink("evil", victim)), (Entry::file("evil/pwn", 0o644), b"x")]),
            Expect::Err("evil is a non-directory written earlier in this layer"),
        ),
        flat(
            "write through a relative symlink planted in the same layer",
            layer(&[e(Entry::symlink("evil", "../victim")), (Entry::file("evil/secret", 0o644), b"x")]),
            Expect::Err("evil is a non-directory written earlier in this layer"),
        ),
        flat(
            "whiteout through a symlink planted in the same layer",
            layer(&[e(Entry::symlink("evil", victim)), e(Entry::whiteout("evil/secret"))]),
            Expect::Err("evil is a non-directory written earlier in this layer"),
        ),
        after(
            "write through a symlink from an earlier layer",
            plant(),
            layer(&[(Entry::file("evil/pwn", 0o644), b"x")]),
            Expect::Ok(|t| {
                assert_eq!(t.get("evil").kind, "dir");
                assert!(t.has("evil/pwn"));
            }),
        ),
        after(
            "overwrite through a relative symlink from an earlier layer",
            plant_rel(),
            layer(&[(Entry::file("evil/secret", 0o644), b"x")]),
            Expect::Ok(ok_evil_is_dir),
        ),
        after(
            "chmod through a symlink from an earlier layer",
            plant(),
            layer(&[e(Entry::dir("evil", 0o777))]),
            Expect::Ok(|t| {
                assert_eq!((t.get("evil").kind, t.get("evil").mode), ("dir", 0o777));
            }),
        ),
        after(
            "chown through a symlinked parent",
            plant(),
            layer(&[e(Entry::dir("evil/sub", 0o700).owner(666, 666))]),
            Expect::Ok(|t| {
                assert_eq!(t.get("evil/sub").uid, 666);
            }),
        ),
        after(
            "file replacing a symlink does not write its target",
            layer(&[e(Entry::symlink("evil", victim_file))]),
            layer(&[(Entry::file("evil", 0o644), b"x")]),
            Expect::Ok(|t| {
                assert_eq!(t.get("evil").kind, "file");
            }),
        ),
        after(
            "whiteout through a symlink from an earlier layer",
            plant(),
            layer(&[e(Entry::whiteout("evil/secret"))]),
            Expect::Ok(ok_evil_is_dir),
        ),
        after(
            "opaque marker through a symlink from an earlier layer",
            plant(),
            layer(&[e(Entry::opaque("evil"))]),
            Expect::Ok(ok_evil_is_dir),
        ),
        after(
            "symlink chain from an earlier layer",
            layer(&[e(Entry::symlink("a", "b")), e(Entry::symlink("b", victim))]),
            layer(&[(Entry::file("a/pwn", 0o644), b"x")]),
            Expect::Ok(|t| {
                assert_eq!(t.get("a").kind, "dir");
                assert_eq!(t.get("b").kind, "symlink");
            }),
        ),
        after(
            "hardlink through a symlink from an earlier layer",
            plant(),
            layer(&[e(Entry::hardlink("stolen", "evil/secret"))]),
            Expect::Err("hardlink target evil/secret not found"),
        ),
        flat(
            "hardlink through a symlink in the same layer",
            layer(&[e(Entry::symlink("evil", victim)), e(Entry::hardlink("stolen", "evil/secret"))]),
            Expect::Err("hardlink target evil/secret not found"),
        ),
        overlay(
            "overlay: write through a symlink in the same layer",
            layer(&[e(Entry::symlink("evil", "../victim")), (Entry::file("evil/pwn", 0o644), b"x")]),
            Expect::Err("non-directory written earlier"),
        ),
        // --- hardlink escapes ---
        flat(
            "hardlink with dot-dot",
            layer(&[e(Entry::hardlink("stolen", "../victim/secret"))]),
            Expect::Err("hardlink target: path contains '..'"),
        ),
        flat(
            "hardlink to an absolute path",
            layer(&[e(Entry::hardlink("stolen", victim_file))]),
            Expect::Err("not found in this layer or below it"),
        ),
        flat(
            "absolute hardlink target inside the layer (kaniko)",
            layer(&[
                (Entry::file("usr/bin/perlbug", 0o755), b"perl"),
                e(Entry::hardlink("usr/bin/perlthanks", "/usr/bin/perlbug")),
            ]),
            Expect::Ok(|t| assert_eq!(t.get("usr/bin/perlthanks").links, vec!["usr/bin/perlbug".to_string()])),
        ),
        flat(
            "hardlink target through a symlink resolves in the root",
            layer(&[
                e(Entry::symlink("d1", "../../etc")),
                (Entry::file("etc/passwd", 0o644), b"root:x:0:0"),
                e(Entry::hardlink("mypasswd", "d1/passwd")),
            ]),
            Expect::Ok(|t| assert_eq!(t.get("mypasswd").links, vec!["etc/passwd".to_string()])),
        ),
        flat(
            "hardlink target through a symlink at the victim",
            layer(&[e(Entry::symlink("evil", victim)), e(Entry::hardlink("stolen", "evil/secret"))]),
            Expect::Err("not found in this layer or below it"),
        ),
        flat(
            "hardlink to a directory",
            layer(&[e(Entry::dir("d", 0o755)), e(Entry::hardlink("h", "d"))]),
            Expect::Err("hardlink to a directory"),
        ),
        flat("hardlink to itself", layer(&[e(Entry::hardlink("h", "h"))]), Expect::Err("hardlink to itself")),
        flat(
            "hardlink to a whiteout name",
            layer(&[e(Entry::hardlink("h", ".wh.x"))]),
            Expect::Err("hardlink target is not an ordinary path"),
        ),
        overlay(
            "overlay: hardlink to this layer's whiteout",
            layer(&[e(Entry::whiteout("w")), e(Entry::hardlink("h", "w"))]),
            Expect::Err("hardlink target is a whiteout"),
        ),
        // --- invalid whiteouts ---
        flat(
            "whiteout with an empty name",
            layer(&[e(Entry::file("etc/.wh.", 0o644))]),
            Expect::Err("whiteout with an empty name"),
        ),
        flat(
            "whiteout of '.'",
            layer(&[e(Entry::file("etc/.wh..", 0o644))]),
            Expect::Err("would escape its directory"),
        ),
        flat(
            "whiteout of '..'",
            layer(&[e(Entry::file("etc/.wh...", 0o644))]),
            Expect::Err("would escape its directory"),
        ),
        flat(
            "whiteout traversal via the parent",
            layer(&[e(Entry::file("../.wh.victim", 0o644))]),
            Expect::Err("path contains '..'"),
        ),
        flat(
            "reserved .wh..wh. name",
            layer(&[e(Entry::file("etc/.wh..wh.aufs", 0o644))]),
            Expect::Err("reserved whiteout metadata name"),
        ),
        flat(
            "whiteout name used as a directory",
            layer(&[e(Entry::file("a/.wh.b/c", 0o644))]),
            Expect::Err("used as a directory"),
        ),
        // --- the root ---
        flat(
            "'./' replaced by a symlink",
            layer(&[e(Entry::symlink("./", victim))]),
            Expect::Err("the layer root cannot be replaced"),
        ),
        flat(
            "'.' replaced by a file",
            layer(&[(Entry::file(".", 0o644), b"x")]),
            Expect::Err("the layer root cannot be replaced"),
        ),
        // --- smuggled overlay metadata ---
        flat(
            "overlay xattrs on a dir",
            layer(&[e(Entry::dir("d", 0o755)
                .xattr("trusted.overlay.opaque", b"y")
                .xattr("trusted.overlay.redirect", b"/x"))]),
            Expect::Ok(|t| {
                assert!(t.get("d").xattrs.is_empty());
            }),
        ),
        overlay(
            "overlay: user.overlay xattrs in rootless form",
            layer(&[e(Entry::dir("d", 0o755).xattr("user.overlay.opaque", b"y").xattr("user.overlay.metacopy", b""))]),
            Expect::Ok(|t| {
                assert!(t.get("d").xattrs.is_empty());
            }),
        ),
        flat(
            "literal char 0/0",
            layer(&[e(Entry::char_device("fake-whiteout", 0, 0))]),
            Expect::Err("char device 0/0 is an overlay whiteout in disguise"),
        ),
        flat(
            "device major past 12 bits",
            layer(&[e(Entry::char_device("dev", 4096, 0))]),
            Expect::Err("exceeds the kernel's 12-bit major"),
        ),
        flat(
            "device minor past 20 bits (would truncate to 0/0)",
            layer(&[e(Entry::char_device("dev", 0, 1 << 20))]),
            Expect::Err("exceeds the kernel's 12-bit major / 20-bit minor"),
        ),
        flat(
            "uid -1",
            layer(&[(Entry::file("f", 0o644).owner(u64::from(u32::MAX), 0), b"")]),
            Expect::Err("uid 4294967295 does not fit"),
        ),
        // --- header-level parser differentials and limits ---
        flat(
            "oversized PAX header",
            with_pax(&[("comment", &vec![b'c'; 1024 * 1024])], Entry::file("f", 0o644), b""),
            Expect::Err("exceeds the 1048576-byte limit"),
        ),
        flat(
            "oversized GNU long name",
            {
                let mut b = gnu_long_header(b'L', big_name.as_bytes());
                b.extend(layer(&[e(Entry::file("f", 0o644))]));
                b
            },
            Expect::Err("GNU long name header of 1048578 bytes exceeds"),
        ),
        flat(
            "PAX size disagrees with the header",
            with_pax(&[("size", b"3")], Entry::file("f", 0o644), b"payload"),
            Expect::Err("PAX size 3 disagrees with header size 7"),
        ),
        flat(
            "two PAX headers for one entry",
            {
                let mut b = pax_header(b"f", &format_record("uid", b"1"));
                b.extend(with_pax(&[("gid", b"1")], Entry::file("f", 0o644), b""));
                b
            },
            Expect::Err("two PAX headers for one entry"),
        ),
        flat(
            "global PAX header setting the path",
            {
                let mut b = raw_entry(
                    HeaderFields {
                        typeflag: b'g',
                        name: b"g",
                        size: format_record("path", b"x").len() as u64,
                        ..Default::default()
                    },
                    &format_record("path", b"x"),
                    |_| {},
                );
                b.truncate(b.len() - 1024);
                b.extend(layer(&[e(Entry::file("f", 0o644))]));
                b
            },
            Expect::Ok(|t| assert!(t.has("f") && !t.has("x"), "{:?}", t.paths())),
        ),
        flat(
            "data on a symlink entry",
            raw_entry(
                HeaderFields { typeflag: b'2', name: b"s", link: b"t", size: 5, ..Default::default() },
                b"hello",
                |_| {},
            ),
            Expect::Err("Symlink entry carries 5 bytes of data"),
        ),
        flat(
            "unknown entry type",
            raw_entry(HeaderFields { typeflag: b'V', name: b"vol", ..Default::default() }, b"", |_| {}),
            Expect::Err("unsupported entry type 'V'"),
        ),
        flat("bad header checksum", bad_checksum, Expect::Err("header checksum mismatch")),
        flat(
            "malformed PAX record length",
            {
                let mut b = pax_header(b"f", b"99 path=x\n");
                b.extend(layer(&[e(Entry::file("f", 0o644))]));
                b
            },
            Expect::Err("PAX record length 99 does not fit"),
        ),
        flat(
            "PAX header with no entry",
            {
                let mut b = pax_header(b"f", &format_record("path", b"x"));
                b.extend([0u8; 1024]);
                b
            },
            Expect::Err("end-of-archive marker right after a metadata header"),
        ),
        // --- stream corruption ---
        flat("truncated tar data", truncated_tar, Expect::Err("unexpected end of stream")),
        flat("truncated gzip", truncated_gz, Expect::Err("reading the layer stream (gzip)")),
        flat("corrupt gzip", corrupt_gz, Expect::Err("reading the layer stream (gzip)")),
        flat("truncated zstd", truncated_zst, Expect::Err("reading the layer stream (zstd)")),
        flat("corrupt zstd", corrupt_zst, Expect::Err("reading the layer stream (zstd)")),
        flat(
            "trailing garbage after the tar end marker is ignored",
            [tar.clone(), b"GARBAGE".to_vec()].concat(),
            Expect::Ok(|t| assert_eq!(t.paths(), vec!["", "f"])),
        ),
        flat(
            "gzip followed by zero padding",
            [gzip(&tar), vec![0u8; 4096]].concat(),
            Expect::Ok(|t| assert_eq!(t.paths(), vec!["", "f"])),
        ),
        flat(
            "gzip, two members, then zero padding",
            [gzip(&tar[..512]), gzip(&tar[512..]), vec![0u8; 100]].concat(),
            Expect::Ok(|t| assert_eq!(t.paths(), vec!["", "f"])),
        ),
        flat(
            "zstd beginning with a skippable frame",
            [vec![0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, b'a', b'b', b'c'], zstd(&tar)].concat(),
            Expect::Ok(|t| assert_eq!(t.paths(), vec!["", "f"])),
        ),
        flat(
            "NUL in a PAX key",
            with_pax(&[("path\0x", b"../victim/pwn")], Entry::file("f", 0o644), b"x"),
            Expect::Err("contains a NUL byte"),
        ),
        flat(
            "base-256 size of 2^64-1",
            raw_entry(HeaderFields { typeflag: b'0', name: b"f", ..Default::default() }, b"", |b| {
                b[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
            }),
            Expect::Err("exceeds the largest tar size"),
        ),
        after(
            "whiteouts with stale link names (docker, podman, buildah)",
            layer(&[
                (Entry::file("t/gone", 0o644), b"1"),
                (Entry::file("t/gone2", 0o644), b"2"),
                (Entry::file("t/kept", 0o644), b"3"),
            ]),
            {
                // Docker's and containers/storage's writers keep the link name of overlayfs's
                // shared whiteout inode on the 2nd and later whiteouts of a layer.
                let mut b =
                    raw_entry(HeaderFields { typeflag: b'0', name: b"t/.wh.gone", ..Default::default() }, b"", |_| {});
                b.truncate(b.len() - 1024);
                b.extend(raw_entry(
                    HeaderFields { typeflag: b'0', name: b"t/.wh.gone2", link: b"t/.wh.gone", ..Default::default() },
                    b"",
                    |_| {},
                ));
                b
            },
            Expect::Ok(|t| assert_eq!(t.paths(), vec!["", "t", "t/kept"])),
        ),
        flat(
            "trailing garbage after a gzip stream",
            [gzip(&tar), b"GARBAGE!".to_vec()].concat(),
            Expect::Err("reading the layer stream (gzip)"),
        ),
        flat(
            "trailing garbage after a zstd stream",
            [zstd(&tar), b"GARBAGE!".to_vec()].concat(),
            Expect::Err("reading the layer stream (zstd)"),
        ),
        flat(
            "hidden tar after a gzip member's end marker is never extracted",
            gzip(&[tar.clone(), layer(&[(Entry::file("../victim/pwn", 0o644), b"x")])].concat()),
            Expect::Ok(|t| assert_eq!(t.paths(), vec!["", "f"])),
        ),
        flat(
            "entry below a file of the same layer",
            layer(&[(Entry::file("f", 0o644), b"x"), (Entry::file("f/g", 0o644), b"y")]),
            Expect::Err("f is a non-directory written earlier in this layer"),
        ),
        flat(
            "a whiteout 100k components deep is refused at once (PATH_MAX)",
            layer(&[(Entry::file(&format!("{}.wh.x", "a/".repeat(100_000)), 0o644), b"")]),
            Expect::Err("longer than PATH_MAX"),
        ),
        flat(
            "a name longer than NAME_MAX",
            layer(&[(Entry::file(&"n".repeat(256), 0o644), b"")]),
            Expect::Err("longer than NAME_MAX"),
        ),
        flat(
            "a hardlink target longer than PATH_MAX",
            layer(&[(Entry::hardlink("l", &"t/".repeat(3000)), b"")]),
            Expect::Err("hardlink target: the path is longer than PATH_MAX"),
        ),
        flat(
            "a whiteout 1000 deep leaves its implied parents",
            layer(&[(Entry::file(&format!("{}.wh.x", "a/".repeat(1000)), 0o644), b"")]),
            Expect::Ok(|t| assert_eq!(t.paths().len(), 1001)),
        ),
        flat(
            "empty PAX path keeps the header name",
            with_pax(&[("path", b"")], Entry::file("kept", 0o644), b"x"),
            Expect::Ok(|t| assert!(t.has("kept"))),
        ),
    ]
}

#[test]
fn hostile_layers_table() {
    let probe = Sandbox::new();
    let names: Vec<&str> = cases(&probe.victim().to_string_lossy()).iter().map(|c| c.name).collect();
    assert!(names.len() >= 40, "the table must cover at least 40 hostile cases, has {}", names.len());

    let mut failures = Vec::new();
    for index in 0..names.len() {
        let sandbox = Sandbox::new();
        let case = cases(&sandbox.victim().to_string_lossy()).swap_remove(index);
        let outside_before = sandbox.outside();
        for earlier in &case.earlier {
            crate::util::apply_flat(earlier, &sandbox.target())
                .unwrap_or_else(|e| panic!("{}: earlier layer: {e}", case.name));
        }
        let target = if case.mode == Mode::Overlay { sandbox.target().join("layer") } else { sandbox.target() };
        let result = ApplyBuilder::new(case.mode).build().expect("options").apply(&case.layer[..], &target);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match (&case.expect, &result) {
                (Expect::Err(want), Err(err)) => {
                    let msg = err.to_string();
                    assert!(
                        msg.contains(want) || format!("{err:?}").contains(want),
                        "error {msg:?} (debug {err:?}) lacks {want:?}"
                    );
                }
                (Expect::Err(want), Ok(_)) => panic!("applied, but should fail with {want:?}"),
                (Expect::Ok(check), Ok(_)) => check(&Tree::of(&target)),
                (Expect::Ok(_), Err(err)) => panic!("failed: {err}"),
            }
            let diff = outside_before.diff(&sandbox.outside());
            assert!(diff.is_empty(), "something outside the target changed:\n{}", diff.join("\n"));
        }));
        if let Err(panic) = outcome {
            let msg =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            failures.push(format!("{}: {}", case.name, msg.unwrap_or_default()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile case(s) failed:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

#[test]
fn messages_shorten_long_paths() {
    let sandbox = Sandbox::new();
    let deep = format!("{}x", "d/".repeat(1500));
    let tar = layer(&[(Entry::file(&deep, 0o644), b"x"), (Entry::file(&format!("{deep}/below"), 0o644), b"y")]);
    let err = crate::util::apply_flat(&tar, &sandbox.target()).expect_err("entry below a file");
    let msg = err.to_string();
    assert!(msg.contains("non-directory written earlier"), "{msg}");
    assert!(msg.len() < 600, "a {}-byte message for a 3 KB path: {msg}", msg.len());
    assert!(msg.contains("bytes in all"), "{msg}");
}

#[test]
fn builder_refuses_parents_in_flat_mode() {
    let err = ApplyBuilder::new(Mode::Flat).parent("/nonexistent-parent").build().expect_err("flat + parents");
    assert!(err.to_string().contains("parents apply to overlay form only"), "{err}");
}
