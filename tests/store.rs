//! The snapshot store: the containerd snapshotter API, unpacking images into it,
//! crash safety under SIGKILL, and several processes sharing one root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use strata::core::Digest;
use strata::core::tar::Entry;
use strata::store::Error;
use strata::store::{Kind, LayerSpec, Store, UnpackOptions};

use crate::util::images::{self, Blob};
use crate::util::{Tree, apply_overlay, e, layer};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn specs(blobs: &[Blob]) -> Vec<LayerSpec<'_>> {
    blobs
        .iter()
        .map(|b| LayerSpec {
            diff_id: b.diff_id(),
            digest: Some(b.digest()),
            open: Box::new(move || Ok(Box::new(std::io::Cursor::new(b.blob.clone())) as Box<dyn std::io::Read + Send>)),
        })
        .collect()
}

fn seq() -> UnpackOptions {
    UnpackOptions { jobs: 1, xattrs: None }
}

fn three_layers() -> Vec<Blob> {
    vec![
        Blob::gzip(layer(&[
            e(Entry::dir("etc", 0o755)),
            (Entry::file("etc/a", 0o644), b"a"),
            (Entry::file("bin/tool", 0o755), b"t"),
        ])),
        Blob::zstd(layer(&[(Entry::file("etc/b", 0o644), b"b"), e(Entry::hardlink("bin/tool2", "bin/tool"))])),
        Blob::plain(layer(&[
            e(Entry::whiteout("etc/a")),
            e(Entry::opaque("bin")),
            (Entry::file("bin/new", 0o755), b"n"),
        ])),
    ]
}

#[test]
fn snapshotter_api_round_trip() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path().join("store")).expect("open");
    let out = store.unpack(&specs(&three_layers()), seq(), &|_| {}).expect("unpack");
    let top = out.chains[2].to_string();
    assert_eq!(out.chains, {
        let d: Vec<Digest> = three_layers().iter().map(Blob::diff_id).collect();
        let c0 = Digest::chain(None, &d[0]);
        let c1 = Digest::chain(Some(&c0), &d[1]);
        let c2 = Digest::chain(Some(&c1), &d[2]);
        vec![c0, c1, c2]
    });

    // A container: active snapshot on the top layer.
    let spec = store.prepare("ctr-1", Some(&top), labels(&[("app", "web")])).expect("prepare");
    assert_eq!(spec.lowers.len(), 3);
    assert!(!spec.read_only && spec.upper.is_some() && spec.work.is_some());
    assert!(spec.lowers[0].ends_with("fs") && spec.lowers[0].exists());
    assert_eq!(spec.lowers[0], store.snapshot_dir(&top).expect("dir"), "top-most lower first");
    let info = store.stat("ctr-1").expect("stat");
    assert_eq!(
        (info.kind, info.parent.as_deref(), info.labels.get("app").map(String::as_str)),
        (Kind::Active, Some(top.as_str()), Some("web"))
    );
    assert!(matches!(store.prepare("ctr-1", Some(&top), labels(&[])), Err(Error::AlreadyExists(_))));
    assert!(
        matches!(store.prepare("ctr-2", Some("ctr-1"), labels(&[])), Err(Error::Snapshot { .. })),
        "parent must be committed"
    );

    // Write into the upper dir, commit it, build on it.
    std::fs::write(spec.upper.as_ref().expect("upper").join("hello"), b"hello").expect("write upper");
    store.commit("committed-1", "ctr-1").expect("commit");
    assert!(matches!(store.stat("ctr-1"), Err(Error::NotFound { .. })));
    assert_eq!(store.stat("committed-1").expect("stat").kind, Kind::Committed);
    assert_eq!(
        store.stat("committed-1").expect("stat").labels.get("app").map(String::as_str),
        Some("web"),
        "labels follow commit"
    );
    let view = store.view("view-1", Some("committed-1"), labels(&[])).expect("view");
    assert!(view.read_only && view.upper.is_none());
    let dir = |key: &str| store.snapshot_dir(key).expect("dir");
    let chain: Vec<String> = out.chains.iter().rev().map(ToString::to_string).collect();
    assert_eq!(view.lowers, [dir("committed-1"), dir(&chain[0]), dir(&chain[1]), dir(&chain[2])], "top-most first");
    assert_eq!(store.mounts("view-1").expect("mounts"), view, "mounts repeats what view returned");
    assert_eq!(store.mounts("committed-1").expect("mounts").lowers, view.lowers, "a committed layer is its own lower");
    assert!(matches!(store.mounts("no-such"), Err(Error::NotFound { .. })));

    let updated = store.update("view-1", labels(&[("k", "v")])).expect("update");
    assert_eq!(updated.labels, labels(&[("k", "v")]));
    let usage = store.usage("committed-1").expect("usage");
    assert_eq!(usage.inodes, 2, "the upper dir and its one file");
    let layer2 = store.usage(&out.chains[1].to_string()).expect("usage");
    assert_eq!(layer2.inodes, 5, "fs, etc, etc/b, bin, bin/tool + bin/tool2 counted once: {layer2:?}");

    assert_eq!(store.walk().expect("walk").len(), 5);
    assert!(matches!(store.remove("committed-1"), Err(Error::Snapshot { .. })), "has a child");
    store.remove("view-1").expect("remove view");
    store.remove("committed-1").expect("remove");
    assert_eq!(store.walk().expect("walk").len(), 3);
    assert_eq!(store.gc().expect("gc").len(), 3, "no image names them");
    assert!(store.walk().expect("walk").is_empty());
    assert_eq!(std::fs::read_dir(root.path().join("store/snapshots")).expect("ls").count(), 0);
}

#[test]
fn shared_layers_are_unpacked_once_and_bad_layers_never_become_visible() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = Store::open(root.path().join("store")).expect("open");
    let blobs = three_layers();
    store.unpack(&specs(&blobs[..2]), seq(), &|_| {}).expect("base image");
    let out = store.unpack(&specs(&blobs), seq(), &|_| {}).expect("derived image");
    assert_eq!(
        out.reports.iter().map(Option::is_none).collect::<Vec<_>>(),
        [true, true, false],
        "the base layers are reused"
    );

    // A layer whose bytes do not match its digest: nothing of it is recorded.
    let mut bad = three_layers();
    bad.push(Blob::gzip(layer(&[(Entry::file("x", 0o644), b"x")])));
    let mid = bad[3].blob.len() / 2;
    bad[3].blob[mid] ^= 0x55;
    let err = store.unpack(&specs(&bad), seq(), &|_| {}).expect_err("corrupt layer");
    assert!(err.to_string().starts_with("layer 4/4 (sha256:"), "{err}");
    assert_eq!(store.walk().expect("walk").len(), 3, "no snapshot of the bad layer");
    assert_eq!(std::fs::read_dir(root.path().join("store/staging")).expect("ls").count(), 0, "staging cleaned");
    // The store stays usable.
    store.prepare("after", Some(&out.chains[2].to_string()), labels(&[])).expect("prepare after failure");
}

#[test]
fn cleanup_on_open_removes_orphans_and_abandoned_staging_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let path = root.path().join("store");
    let store = Store::open(&path).expect("open");
    store.unpack(&specs(&three_layers()[..1]), seq(), &|_| {}).expect("unpack");
    // Debris a crash could leave: a renamed dir whose row never committed, and a staging
    // dir nobody holds.
    std::fs::create_dir_all(path.join("snapshots/orphan/fs")).expect("mkdir");
    std::fs::create_dir_all(path.join("staging/dead/fs/etc")).expect("mkdir");
    // A live staging dir must survive: an unpack in another thread whose layer source
    // blocks after its staging dir exists, until the reopen has cleaned up.
    let blobs = three_layers();
    let (opened, wait_opened) = std::sync::mpsc::channel::<()>();
    let (release, wait_release) = std::sync::mpsc::channel::<()>();
    let wait_release = std::sync::Mutex::new(wait_release);
    let blocked = LayerSpec {
        diff_id: blobs[1].diff_id(),
        digest: Some(blobs[1].digest()),
        open: Box::new(move || {
            let _ = opened.send(());
            let _ = wait_release.lock().expect("lock").recv();
            Ok(Box::new(std::io::Cursor::new(blobs[1].blob.clone())) as Box<dyn std::io::Read + Send>)
        }),
    };
    let all = three_layers();
    let base = specs(&all[..1]);
    std::thread::scope(|scope| {
        let unpacking =
            scope.spawn(|| store.unpack(&[base.into_iter().next().expect("base"), blocked], seq(), &|_| {}));
        wait_opened.recv().expect("the unpack staged its layer");
        let live: Vec<_> =
            std::fs::read_dir(path.join("staging")).expect("ls").map(|e| e.expect("entry").path()).collect();
        let cleaned = Store::open(&path).expect("reopen").cleanup().expect("cleanup");
        assert_eq!((cleaned.orphan_dirs, cleaned.staging_dirs), (0, 0), "the reopen already cleaned");
        assert!(!path.join("snapshots/orphan").exists() && !path.join("staging/dead").exists());
        let kept: Vec<_> = live.iter().filter(|p| p.exists()).collect();
        assert_eq!(kept.len(), 1, "the staging dir whose owner is alive is kept: {live:?}");
        release.send(()).expect("release");
        unpacking.join().expect("join").expect("the held unpack still commits");
    });
    assert_eq!(store.walk().expect("walk").len(), 2);
}

/// Per-layer reference trees: each layer applied in overlay form on its parents.
fn reference_layers(blobs: &[Blob], dir: &Path) -> Vec<Tree> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut trees = Vec::new();
    for (i, b) in blobs.iter().enumerate() {
        let out = dir.join(format!("ref{i}"));
        let parents: Vec<&Path> = dirs.iter().rev().map(PathBuf::as_path).collect();
        apply_overlay(&b.tar, &out, &parents).expect("reference apply");
        let mut tree = Tree::of(&out);
        tree.0.remove("");
        trees.push(tree);
        dirs.push(out);
    }
    trees
}

/// Several layers of many small files, so an unpack takes long enough to be killed
/// at interesting moments.
fn big_image(dir: &Path) -> Vec<Blob> {
    let blobs: Vec<Blob> = (0..4)
        .map(|l| {
            let mut entries: Vec<(Entry, Vec<u8>)> = Vec::new();
            for d in 0..10 {
                entries.push((Entry::dir(&format!("l{l}/d{d}"), 0o755), Vec::new()));
                for f in 0..60 {
                    entries.push((
                        Entry::file(&format!("l{l}/d{d}/f{f}"), 0o644),
                        vec![b'a' + (f % 26) as u8; 3000 + f * 7],
                    ));
                }
            }
            if l == 3 {
                entries.push((Entry::whiteout("l0/d0"), Vec::new()));
                entries.push((Entry::opaque("l1/d1"), Vec::new()));
            }
            let refs: Vec<(Entry, &[u8])> = entries.iter().map(|(e, d)| (e.clone(), d.as_slice())).collect();
            Blob::gzip(layer(&refs))
        })
        .collect();
    images::oci_layout(dir, &blobs, "big:1");
    blobs
}

fn strata_unpack(root: &Path, image: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(["unpack", "--root"]).arg(root).arg(image).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// After a crash: only whole snapshots, each equal to its reference tree, no debris.
fn assert_store_consistent(root: &Path, refs: &[Tree], chains: &[Digest]) -> usize {
    let store = Store::open(root).expect("reopen after kill");
    let infos = store.walk().expect("walk");
    for info in &infos {
        let i = chains
            .iter()
            .position(|c| c.to_string() == info.key)
            .unwrap_or_else(|| panic!("unknown snapshot {}", info.key));
        let mut tree = Tree::of(&store.snapshot_dir(&info.key).expect("dir"));
        tree.0.remove("");
        let diff = refs[i].diff(&tree);
        assert!(diff.is_empty(), "snapshot of layer {} is not whole:\n{}", i + 1, diff.join("\n"));
    }
    assert_eq!(std::fs::read_dir(root.join("staging")).expect("ls").count(), 0, "staging debris after open");
    assert_eq!(std::fs::read_dir(root.join("snapshots")).expect("ls").count(), infos.len(), "orphan dirs after open");
    infos.len()
}

#[test]
fn sigkill_at_random_moments_leaves_only_whole_snapshots() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = tmp.path().join("image");
    let blobs = big_image(&image);
    let refs = reference_layers(&blobs, tmp.path());
    let mut chains: Vec<Digest> = Vec::new();
    for b in &blobs {
        let c = Digest::chain(chains.last(), &b.diff_id());
        chains.push(c);
    }
    // How long one full unpack takes here, to spread the kills over it.
    let probe = tmp.path().join("probe-root");
    let started = std::time::Instant::now();
    assert!(strata_unpack(&probe, &image).status().expect("run").success());
    let full = started.elapsed();

    let root = tmp.path().join("root");
    let mut seed = 0x9e37_79b9_u64;
    let mut seen_partial = false;
    for round in 0..12 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let delay = full.mul_f64((seed >> 33) as f64 / (1u64 << 31) as f64 * 1.1);
        let mut child = strata_unpack(&root, &image).spawn().expect("spawn");
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let whole = assert_store_consistent(&root, &refs, &chains);
        seen_partial |= whole > 0 && whole < blobs.len();
        if round % 4 == 3 {
            // Start over now and then, so kills land in early layers again.
            std::fs::remove_dir_all(&root).expect("reset");
        }
    }
    let out = strata_unpack(&root, &image).output().expect("final unpack");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(assert_store_consistent(&root, &refs, &chains), blobs.len());
    eprintln!("kill test: full unpack {full:?}; a kill left a partial (but whole-snapshot) store: {seen_partial}");
}

#[test]
fn four_processes_unpack_one_image_into_one_root() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = tmp.path().join("image");
    let blobs = big_image(&image);
    let root = tmp.path().join("root");
    let children: Vec<_> = (0..4).map(|_| strata_unpack(&root, &image).spawn().expect("spawn")).collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr).replace('\n', " | ");
        assert!(out.status.success(), "a concurrent unpack failed: {stderr}");
    }
    let store = Store::open(&root).expect("open");
    assert_eq!(store.walk().expect("walk").len(), blobs.len(), "one snapshot per chain");
    assert_eq!(store.images().expect("images").len(), 1);
    assert_eq!(std::fs::read_dir(root.join("snapshots")).expect("ls").count(), blobs.len());
}

#[test]
fn parallel_unpack_gives_the_same_snapshots_as_sequential() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut blobs = three_layers();
    blobs.extend(big_image(&tmp.path().join("image")));
    let trees = |jobs: usize| {
        let store = Store::open(tmp.path().join(format!("store-{jobs}"))).expect("open");
        let out = store.unpack(&specs(&blobs), UnpackOptions { jobs, xattrs: None }, &|_| {}).expect("unpack");
        out.chains
            .iter()
            .map(|c| {
                let mut t = Tree::of(&store.snapshot_dir(&c.to_string()).expect("dir"));
                t.0.remove("");
                t
            })
            .collect::<Vec<_>>()
    };
    let (one, four) = (trees(1), trees(4));
    for (i, (a, b)) in one.iter().zip(&four).enumerate() {
        let diff = a.diff(b);
        assert!(diff.is_empty(), "layer {} differs between --jobs 1 and --jobs 4:\n{}", i + 1, diff.join("\n"));
    }
}

#[test]
fn parallel_unpack_failure_commits_the_layers_below_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("open");
    let mut blobs = three_layers();
    blobs.push(Blob::gzip(layer(&[(Entry::file("x", 0o644), b"x")])));
    let mid = blobs[1].blob.len() / 2;
    blobs[1].blob[mid] ^= 0x55;
    let err =
        store.unpack(&specs(&blobs), UnpackOptions { jobs: 3, xattrs: None }, &|_| {}).expect_err("corrupt layer 2");
    assert!(err.to_string().starts_with("layer 2/4"), "{err}");
    assert_eq!(store.walk().expect("walk").len(), 1, "only the layer below the bad one");
    assert_eq!(
        std::fs::read_dir(tmp.path().join("store/staging")).expect("ls").count(),
        0,
        "staged layers above discarded"
    );
}

/// An embedding runtime's commit: the layer blob, then the committed snapshot.
#[test]
fn commit_with_layer_writes_the_blob_and_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = strata::store::Store::open(dir.path().join("store")).expect("store");
    store.prepare("ctr", None, Default::default()).expect("prepare");
    let upper = store.snapshot_dir("ctr").expect("dir");
    std::fs::write(upper.join("hello"), "world").expect("write");
    let mut blob = Vec::new();
    let options = strata::core::diff::DiffOptions::default();
    let layer = store
        .commit_with_layer("layer-1", "ctr", &options, strata::core::Compression::Gzip, &mut blob)
        .expect("commit with layer");
    assert_eq!(layer.digest, strata::core::Digest::of(&blob));
    assert_eq!(layer.report.entries, 1);
    assert_eq!(store.stat("layer-1").expect("committed").kind, strata::store::Kind::Committed);
    let flat = dir.path().join("flat");
    crate::util::apply_flat(&blob, &flat).expect("the blob is a layer");
    assert_eq!(std::fs::read_to_string(flat.join("hello")).expect("read"), "world");
}
