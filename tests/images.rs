//! Images in every shape strata reads, unpacked end to end with `strata unpack --to`,
//! compared with the tree the same layers give when applied directly; and bad images,
//! each refused with a message naming the image and the layer, leaving nothing behind.

use std::path::Path;
use std::process::{Command, Output};

use strata::core::tar::Entry;

use strata::image::layout::{LayoutWriter, REF_NAME};

use crate::util::images::{self, Blob};
use crate::util::{Tree, apply_flat, e, layer};

fn layers() -> Vec<Vec<u8>> {
    vec![
        layer(&[
            e(Entry::dir("etc", 0o755)),
            (Entry::file("etc/os-release", 0o644), b"ID=test\n"),
            e(Entry::dir("var/cache", 0o755)),
            (Entry::file("var/cache/a", 0o644), b"a"),
            (Entry::file("usr/bin/tool", 0o755), b"tool v1"),
        ]),
        layer(&[(Entry::file("usr/bin/tool", 0o755), b"tool v2"), e(Entry::hardlink("usr/bin/tool2", "usr/bin/tool"))]),
        layer(&[
            e(Entry::whiteout("etc/os-release")),
            e(Entry::opaque("var/cache")),
            (Entry::file("var/cache/b", 0o644), b"b"),
        ]),
    ]
}

fn expected() -> Tree {
    let dir = tempfile::tempdir().expect("tempdir");
    for l in layers() {
        apply_flat(&l, dir.path()).expect("apply");
    }
    Tree::of(dir.path())
}

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("run strata")
}

fn unpack(image: &Path, extra: &[&str]) -> (Output, tempfile::TempDir) {
    let out = tempfile::tempdir().expect("tempdir");
    let to = out.path().join("rootfs");
    let mut args = vec!["unpack"];
    args.extend_from_slice(extra);
    args.extend([image.to_str().expect("utf-8"), "--to", to.to_str().expect("utf-8")]);
    (strata(&args), out)
}

fn assert_unpacks_to_expected(image: &Path, extra: &[&str], format: &str) {
    let (out, dir) = unpack(image, extra);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}: {}", image.display(), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(format) && stdout.contains("3 layers"), "{stdout}");
    // The root has no entry in these layers: its attributes are the unpacker's own.
    let without_root = |mut t: Tree| {
        t.0.remove("");
        t
    };
    let diff = without_root(expected()).diff(&without_root(Tree::of(&dir.path().join("rootfs"))));
    assert!(diff.is_empty(), "{} unpacked differently:\n{}", image.display(), diff.join("\n"));
}

fn write_archive(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.parent().expect("parent").join(name);
    std::fs::write(&path, images::tar_dir(dir)).expect("write archive");
    path
}

#[test]
fn every_image_shape_unpacks_to_the_expected_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();

    images::oci_layout(&t.join("oci-gzip"), &layers().into_iter().map(Blob::gzip).collect::<Vec<_>>(), "v1");
    assert_unpacks_to_expected(&t.join("oci-gzip"), &[], "OCI image layout");

    images::oci_layout(&t.join("oci-zstd"), &layers().into_iter().map(Blob::zstd).collect::<Vec<_>>(), "v1");
    let archive = write_archive(&t.join("oci-zstd"), "oci-zstd.tar");
    assert_unpacks_to_expected(&archive, &[], "OCI image layout");

    // Legacy docker save with the bottom layer repeated on top: stored once, symlinked.
    let mut legacy_layers: Vec<Blob> = layers().into_iter().map(Blob::plain).collect();
    legacy_layers[1] = Blob::plain(layers()[1].clone());
    images::docker_legacy(&t.join("legacy"), &legacy_layers, "app:v1");
    let archive = write_archive(&t.join("legacy"), "legacy.tar");
    assert_unpacks_to_expected(&archive, &["--ref", "app:v1"], "docker save (legacy)");
    assert_unpacks_to_expected(&t.join("legacy"), &[], "docker save (legacy)");

    images::docker_oci(&t.join("docker25"), &layers().into_iter().map(Blob::plain).collect::<Vec<_>>(), "app:v2");
    let archive = write_archive(&t.join("docker25"), "docker25.tar");
    assert_unpacks_to_expected(&archive, &["--ref", "docker.io/library/app:v2"], "docker save (OCI)");

    let mixed: Vec<Blob> =
        layers().into_iter().enumerate().map(|(i, l)| if i == 1 { Blob::zstd(l) } else { Blob::gzip(l) }).collect();
    images::docker_legacy(&t.join("legacy-compressed"), &mixed, "app:gz");
    assert_unpacks_to_expected(&write_archive(&t.join("legacy-compressed"), "lc.tar"), &[], "docker save (legacy)");
}

#[test]
fn duplicate_layer_symlinks_in_legacy_archives_resolve_inside_the_archive() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let l = layer(&[(Entry::file("f", 0o644), b"same layer twice")]);
    let twice = vec![Blob::plain(l.clone()), Blob::plain(l)];
    images::docker_legacy(&tmp.path().join("d"), &twice, "dup:1");
    let archive = write_archive(&tmp.path().join("d"), "d.tar");
    let (out, dir) = unpack(&archive, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(dir.path().join("rootfs/f")).expect("read"), b"same layer twice");
}

#[test]
fn multi_platform_index_selects_by_platform_and_skips_attestations() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let amd = vec![Blob::gzip(layer(&[(Entry::file("arch", 0o644), b"amd64")]))];
    let arm = vec![Blob::gzip(layer(&[(Entry::file("arch", 0o644), b"arm64")]))];
    let dir = tmp.path().join("multi");
    images::oci_multiplatform(&dir, &amd, &arm, "multi:1");
    for (platform, want) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64"), ("linux/arm64/v8", "arm64")] {
        let (out, rootfs) = unpack(&dir, &["--platform", platform]);
        assert!(out.status.success(), "{platform}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(rootfs.path().join("rootfs/arch")).expect("read"), want.as_bytes(), "{platform}");
    }
    let (out, _) = unpack(&dir, &["--platform", "linux/s390x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("platform linux/s390x") && stderr.contains("linux/amd64, linux/arm64/v8"), "{stderr}");
    assert!(!stderr.contains("unknown"), "attestation manifests are never offered: {stderr}");
}

#[test]
fn several_images_need_a_reference() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("two");
    let mut layout = LayoutWriter::create(&dir).expect("layout");
    let host = strata::image::Platform::host();
    let one = images::write_image(&layout, &[Blob::plain(layer(&[(Entry::file("which", 0o644), b"one")]))], &host);
    let two = images::write_image(&layout, &[Blob::plain(layer(&[(Entry::file("which", 0o644), b"two")]))], &host);
    layout.add(one, &[(REF_NAME, "app:one")]);
    layout.add(two.clone(), &[(REF_NAME, "app:two")]);
    layout.finish().expect("layout");
    let (out, _) = unpack(&dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pick one with NAME:TAG") && stderr.contains("app:one") && stderr.contains("app:two"),
        "{stderr}"
    );
    let (out, rootfs) = unpack(&dir, &["--ref", "app:two"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(rootfs.path().join("rootfs/which")).expect("read"), b"two");
    let digest = two["digest"].as_str().expect("digest").to_owned();
    let (out, rootfs) = unpack(&dir, &["--ref", &format!("@{digest}")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(rootfs.path().join("rootfs/which")).expect("read"), b"two");
}

/// A bad image: the unpack fails with `want` in the message, exit 1, and nothing is
/// left where the rootfs would go (no DIR, no staging dir).
fn assert_refused(image: &Path, extra: &[&str], want: &[&str]) {
    let (out, dir) = unpack(image, extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("refused as expected: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{}: {stderr}", image.display());
    for w in want {
        assert!(stderr.contains(w), "{}: {stderr:?} lacks {w:?}", image.display());
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read").map(|e| e.expect("entry").file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_images_are_refused_clearly_and_leave_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let good = || layers().into_iter().map(Blob::gzip).collect::<Vec<_>>();

    // A flipped byte in layer 2.
    let dir = t.join("flipped");
    let blobs = good();
    images::oci_layout(&dir, &blobs, "v1");
    let path = dir.join("blobs/sha256").join(blobs[1].digest().hex());
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).expect("write");
    assert_refused(&dir, &[], &["layer 2/3", "of v1"]);

    // A truncated blob: its size gives it away before a byte is applied.
    let dir = t.join("truncated");
    let blobs = good();
    images::oci_layout(&dir, &blobs, "v1");
    let path = dir.join("blobs/sha256").join(blobs[2].digest().hex());
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("write");
    assert_refused(&dir, &[], &["layer 3/3", "bytes, its descriptor says"]);

    // A config whose diff_id does not match the layer (config and manifest re-hashed).
    let dir = t.join("wrong-diff-id");
    let mut blobs = good();
    blobs[0].tar = layer(&[(Entry::file("other", 0o644), b"not what the blob holds")]);
    images::oci_layout(&dir, &blobs, "v1");
    assert_refused(&dir, &[], &["layer 1/3", "diff_id mismatch"]);

    // A missing blob.
    let dir = t.join("missing");
    let blobs = good();
    images::oci_layout(&dir, &blobs, "v1");
    std::fs::remove_file(dir.join("blobs/sha256").join(blobs[0].digest().hex())).expect("rm");
    assert_refused(&dir, &[], &["layer 1/3", "cannot read layer 1"]);

    // A hostile manifest.json path.
    let dir = t.join("hostile");
    images::docker_legacy(&dir, &layers().into_iter().map(Blob::plain).collect::<Vec<_>>(), "app:v1");
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).expect("read");
    let first = manifest.split('"').find(|s| s.ends_with("/layer.tar")).expect("a layer path").to_owned();
    std::fs::write(dir.join("manifest.json"), manifest.replace(&first, "../../../victim/layer.tar")).expect("write");
    assert_refused(&write_archive(&dir, "hostile.tar"), &[], &["path \"../../../victim/layer.tar\"", "contains '..'"]);

    // A huge index.json.
    let dir = t.join("huge");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let huge =
        format!("{{\"schemaVersion\":2,\"manifests\":[],\"annotations\":{{\"pad\":\"{}\"}}}}", "x".repeat(21 << 20));
    std::fs::write(dir.join("index.json"), huge).expect("write");
    assert_refused(&dir, &[], &["index.json", "exceeds the 20971520-byte limit"]);

    // Docker schema 1.
    let dir = t.join("schema1");
    let mut layout = LayoutWriter::create(&dir).expect("layout");
    let mut desc = images::write_image(&layout, &good(), &strata::image::Platform::host());
    let s1 = serde_json::to_vec(&serde_json::json!({"schemaVersion": 1, "name": "old", "tag": "v1", "fsLayers": []}))
        .expect("json");
    let s1_digest = strata::core::Digest::of(&s1);
    std::fs::write(dir.join("blobs/sha256").join(s1_digest.hex()), &s1).expect("write");
    desc["digest"] = serde_json::json!(s1_digest.to_string());
    desc["size"] = serde_json::json!(s1.len());
    layout.add(desc, &[]);
    layout.finish().expect("layout");
    assert_refused(&dir, &[], &["schema 1", "unsupported"]);

    // An encrypted layer.
    let dir = t.join("encrypted");
    let mut blobs = good();
    blobs[1].media_type = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
    images::oci_layout(&dir, &blobs, "v1");
    assert_refused(&dir, &[], &["layer 2 of manifest", "encrypted"]);

    // A foreign layer whose blob is absent (Windows base layers, nondistributable).
    let dir = t.join("foreign");
    let mut blobs = good();
    blobs[0].media_type = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    images::oci_layout(&dir, &blobs, "v1");
    std::fs::remove_file(dir.join("blobs/sha256").join(blobs[0].digest().hex())).expect("rm");
    assert_refused(&dir, &[], &["layer 1 of manifest", "foreign layer", "is not in the image", "never downloads"]);

    // A blob that is not the size its descriptor declares (padded after the fact): caught
    // when the blob is opened, before any of it is applied.
    let dir = t.join("resized");
    let blobs = good();
    images::oci_layout(&dir, &blobs, "v1");
    let blob = dir.join("blobs/sha256").join(blobs[1].digest().hex());
    let mut bytes = std::fs::read(&blob).expect("read blob");
    bytes.extend_from_slice(&[0; 512]);
    std::fs::write(&blob, bytes).expect("pad blob");
    assert_refused(&dir, &[], &["layer 2", "bytes, its descriptor says"]);

    // Not an image at all.
    let dir = t.join("empty");
    std::fs::create_dir_all(&dir).expect("mkdir");
    assert_refused(&dir, &[], &["neither index.json nor manifest.json"]);
}

#[test]
fn unpack_refuses_a_non_empty_target() {
    let tmp = tempfile::tempdir().expect("tempdir");
    images::oci_layout(&tmp.path().join("img"), &layers().into_iter().map(Blob::gzip).collect::<Vec<_>>(), "v1");
    let to = tmp.path().join("busy");
    std::fs::create_dir(&to).expect("mkdir");
    std::fs::write(to.join("keep"), b"mine").expect("write");
    let out = strata(&["unpack", tmp.path().join("img").to_str().expect("utf-8"), "--to", to.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(std::fs::read(to.join("keep")).expect("kept"), b"mine");
}

#[test]
fn a_bad_layer_unpacked_into_the_store_never_shows_and_the_store_stays_usable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let blobs: Vec<Blob> = layers().into_iter().map(Blob::gzip).collect();
    let bad_dir = tmp.path().join("bad");
    images::oci_layout(&bad_dir, &blobs, "v1");
    let path = bad_dir.join("blobs/sha256").join(blobs[1].digest().hex());
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).expect("write");
    let root_arg = root.to_str().expect("utf-8");
    let out = strata(&["unpack", "--root", root_arg, bad_dir.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unpacking v1") && stderr.contains("layer 2/3"), "{stderr}");
    let ls = strata(&["snapshots", "--root", root_arg, "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "only layer 1 is committed: {list}");
    assert_eq!(
        String::from_utf8_lossy(&strata(&["images", "--root", root_arg]).stdout).lines().count(),
        1,
        "no image recorded"
    );

    let good_dir = tmp.path().join("good");
    images::oci_layout(&good_dir, &blobs_fresh(), "v1");
    let out = strata(&["unpack", "--root", root_arg, "--jobs", "2", good_dir.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 layers (1 reused)"));
}

fn blobs_fresh() -> Vec<Blob> {
    layers().into_iter().map(Blob::gzip).collect()
}

/// A layer blob that is a FIFO (planted in a layout another user controls) is refused
/// at once; opening it must not block. The unpack runs as a child so a regression
/// fails the test (after a generous bound) instead of hanging the suite.
#[test]
fn a_fifo_planted_as_a_blob_is_refused_without_hanging() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("img");
    let blobs: Vec<Blob> = layers().into_iter().map(Blob::gzip).collect();
    images::oci_layout(&dir, &blobs, "v1");
    let blob = dir.join("blobs/sha256").join(blobs[1].digest().hex());
    std::fs::remove_file(&blob).expect("rm blob");
    let made = Command::new("mkfifo").arg(&blob).status().expect("mkfifo");
    assert!(made.success());
    let to = tmp.path().join("rootfs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["unpack", dir.to_str().expect("utf-8"), "--to", to.to_str().expect("utf-8")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill(); // our own child, by PID
            panic!("strata unpack blocked opening a FIFO blob");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("layer 2/") && stderr.contains("not a regular file"), "{stderr}");
    assert!(!to.exists(), "nothing left behind");
}
