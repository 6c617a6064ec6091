//! Real faults, not mocks: a full filesystem, a daemon or a commit killed with SIGKILL
//! mid-work, a layer source cut off mid-stream. Each test states the guarantee and fails
//! if it breaks: a clear error, nothing half-made visible, the next attempt succeeds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use strata_testkit::images::{Blob, oci_layout, tar_dir};

use crate::util::{MountGuard, require_fuse, require_privileged, run, start_strata_fuse};

fn strata(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    c.arg("--root").arg(root);
    c
}

/// Bytes that do not compress (a layer of them keeps its size in every form).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A two-layer image: small files, then a 3 MB file.
fn image(dir: &Path) -> PathBuf {
    let one = dir.join("l1");
    std::fs::create_dir_all(one.join("etc")).expect("mkdir");
    for i in 0..50 {
        std::fs::write(one.join(format!("etc/f{i}")), noise(2000, i)).expect("write");
    }
    let two = dir.join("l2");
    std::fs::create_dir_all(two.join("opt")).expect("mkdir");
    std::fs::write(two.join("opt/big"), noise(3 << 20, 99)).expect("write");
    let layout = dir.join("image");
    oci_layout(&layout, &[Blob::gzip(tar_dir(&one)), Blob::gzip(tar_dir(&two))], "faults:1");
    layout
}

#[test]
fn privileged_unpack_into_a_full_filesystem_fails_clearly_and_commits_nothing_partial() {
    if !require_privileged("privileged_unpack_into_a_full_filesystem_fails_clearly_and_commits_nothing_partial") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = image(dir.path());
    let ram = dir.path().join("ram");
    std::fs::create_dir(&ram).expect("mkdir");
    for size in ["200k", "600k", "2m", "3m"] {
        let _guard = MountGuard(ram.clone());
        run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&ram));
        let store = ram.join("store");
        let out = strata(&store).arg("unpack").arg(&layout).output().expect("run strata");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{size}: unpack into a full filesystem succeeded?");
        assert!(said.contains("No space left on device"), "{size}: the error says why: {said}");
        // The store opens, lists only whole snapshots, and holds no staging leftovers.
        let listed = run(strata(&store).args(["snapshots", "ls"]));
        let committed = listed.lines().filter(|l| l.contains("committed")).count();
        assert!(committed <= 1, "{size}: at most the first layer is whole:\n{listed}");
        let staging: Vec<_> = std::fs::read_dir(store.join("staging")).map(|d| d.collect()).unwrap_or_default();
        assert!(staging.is_empty(), "{size}: staging dirs left: {staging:?}");
        // Space freed: the same unpack now succeeds.
        run(Command::new("mount").args(["-o", "remount,size=64m"]).arg(&ram));
        run(strata(&store).arg("unpack").arg(&layout));
        let listed = run(strata(&store).args(["snapshots", "ls"]));
        assert_eq!(listed.lines().filter(|l| l.contains("committed")).count(), 2, "{listed}");
        run(Command::new("umount").arg(&ram));
    }
}

/// A layer source that stops mid-stream (a pipe whose writer dies): the error names the
/// layer, its snapshot is not created, the layer below stays whole.
#[test]
fn a_layer_source_cut_off_mid_stream_names_the_layer_and_commits_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = image(dir.path());
    let image = strata::image::Image::open(&layout, &strata::image::Selector::default()).expect("image");
    let store = strata::store::Store::open(dir.path().join("store")).expect("store");
    let blob = layout.join("blobs/sha256").join(image.layers[1].digest.as_ref().expect("digest").hex());
    let specs = vec![
        strata::rootfs::layer_specs(&image, None).remove(0),
        strata::store::LayerSpec {
            diff_id: image.layers[1].diff_id.clone(),
            digest: image.layers[1].digest.clone(),
            // A real pipe: `head` hands over half the blob and exits.
            open: Box::new(move || {
                let child = Command::new("head").arg("-c").arg("500000").arg(&blob).stdout(Stdio::piped()).spawn()?;
                Ok(Box::new(child.stdout.expect("piped")) as Box<dyn std::io::Read + Send>)
            }),
        },
    ];
    let err =
        store.unpack(&specs, strata::store::UnpackOptions { jobs: 1, xattrs: None }, &|_| {}).expect_err("cut off");
    let text = format!("{err:#}");
    assert!(text.contains("layer 2/2") && text.contains(&image.layers[1].diff_id.to_string()), "{text}");
    let chains = image.chain_ids();
    assert!(store.stat(&chains[0].to_string()).is_ok(), "the whole layer below is kept");
    assert!(store.stat(&chains[1].to_string()).is_err(), "nothing of the cut layer is committed");
}

/// Every blob `index.json` names (manifests, configs, layers) exists and hashes to its
/// digest; returns the references listed.
fn verify_layout(out: &Path) -> Vec<String> {
    let Ok(index) = std::fs::read(out.join("index.json")) else { return Vec::new() };
    let index: serde_json::Value = serde_json::from_slice(&index).expect("index.json is whole JSON");
    let blob = |digest: &str| {
        let path = out.join("blobs/sha256").join(digest.strip_prefix("sha256:").expect("sha256"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{} named but {e}", path.display()));
        assert_eq!(format!("sha256:{:x}", Sha256::digest(&bytes)), digest, "a named blob is partial");
        bytes
    };
    let mut refs = Vec::new();
    for m in index["manifests"].as_array().expect("manifests") {
        let manifest: serde_json::Value =
            serde_json::from_slice(&blob(m["digest"].as_str().expect("digest"))).expect("json");
        blob(manifest["config"]["digest"].as_str().expect("config"));
        for layer in manifest["layers"].as_array().expect("layers") {
            blob(layer["digest"].as_str().expect("layer"));
        }
        refs.push(m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap_or_default().to_owned());
    }
    refs
}

#[test]
fn privileged_a_commit_killed_midway_never_leaves_an_index_naming_a_partial_blob() {
    if !require_privileged("privileged_a_commit_killed_midway_never_leaves_an_index_naming_a_partial_blob") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = image(dir.path());
    let (root, mnt, out) = (dir.path().join("store"), dir.path().join("mnt"), dir.path().join("out"));
    let _guard = MountGuard(mnt.clone());
    run(strata(&root).args(["mount", "--driver", "overlay"]).arg(&layout).arg(&mnt));
    for i in 0..8 {
        std::fs::write(mnt.join(format!("opt/new{i}")), noise(4 << 20, i)).expect("write");
    }
    run(strata(&root).arg("commit").arg(&mnt).arg(&out).args(["--ref", "good:0"]));
    for delay in [5, 40, 120, 300] {
        let mut child = strata(&root)
            .arg("commit")
            .arg(&mnt)
            .arg(&out)
            .args(["--ref", "killed:1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start commit");
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL, our own child by PID
        let _ = child.wait();
        let refs = verify_layout(&out);
        assert!(
            refs.contains(&"good:0".to_owned()),
            "after a kill at {delay} ms the earlier image is still listed: {refs:?}"
        );
    }
    run(strata(&root).arg("commit").arg(&mnt).arg(&out).args(["--ref", "good:1"]));
    let refs = verify_layout(&out);
    assert!(refs.contains(&"good:1".to_owned()) && refs.contains(&"good:0".to_owned()), "{refs:?}");
    run(strata(&root).args(["umount", "--rm"]).arg(&mnt));
}

#[test]
fn privileged_fuse_daemon_killed_during_copy_up_leaves_the_old_or_new_file_never_a_partial_one() {
    if !require_fuse("privileged_fuse_daemon_killed_during_copy_up_leaves_the_old_or_new_file_never_a_partial_one") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (lower, upper, work, mnt) =
        (dir.path().join("lower"), dir.path().join("upper"), dir.path().join("work"), dir.path().join("mnt"));
    for d in [&lower, &upper, &work, &mnt] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let body = noise(96 << 20, 7);
    std::fs::write(lower.join("big"), &body).expect("write");
    std::fs::write(lower.join("moved"), &body[..8 << 20]).expect("write");
    let want = format!("{:x}", Sha256::digest(&body));
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
    let start = || start_strata_fuse(&[], &opts, &mnt);
    for delay in [30, 150, 400] {
        let _guard = MountGuard(mnt.clone());
        let mut daemon = start();
        // Appending copies the 96 MB file up; a rename copies up and moves.
        let mut writer = Command::new("sh")
            .arg("-c")
            .arg("printf x >> \"$0/big\"; mv \"$0/moved\" \"$0/renamed\"")
            .arg(&mnt)
            .stderr(Stdio::null())
            .spawn()
            .expect("writer");
        std::thread::sleep(Duration::from_millis(delay));
        daemon.kill();
        let _ = writer.wait();
        run(Command::new("umount").arg("-l").arg(&mnt));
        // In the upper dir: no file, the whole copy, or the whole copy plus the byte.
        if let Ok(got) = std::fs::read(upper.join("big")) {
            let whole = got.len() == body.len() && format!("{:x}", Sha256::digest(&got)) == want;
            let appended = got.len() == body.len() + 1 && got[..body.len()] == body[..] && got[body.len()] == b'x';
            assert!(whole || appended, "killed at {delay} ms: a partial copy-up of {} bytes is visible", got.len());
        }
        // A new daemon cleans the dead one's staging and shows one whole `moved` file.
        let _guard = MountGuard(mnt.clone());
        let mut daemon = start();
        let leftovers: Vec<_> =
            std::fs::read_dir(&work).expect("work").map(|e| e.expect("entry").file_name()).collect();
        assert!(
            leftovers.iter().all(|n| !n.to_string_lossy().starts_with("#strata-")
                || n.to_string_lossy().contains(&daemon.id().to_string())),
            "{leftovers:?}"
        );
        let names: Vec<_> = ["moved", "renamed"].into_iter().filter(|n| mnt.join(n).exists()).collect();
        assert_eq!(names.len(), 1, "killed at {delay} ms: the renamed file is in exactly one place: {names:?}");
        assert_eq!(std::fs::read(mnt.join(names[0])).expect("read").len(), 8 << 20, "and whole");
        daemon.kill();
        run(Command::new("umount").arg("-l").arg(&mnt));
        // Next round starts from the lower files again.
        for name in ["big", "moved", "renamed"] {
            let _ = std::fs::remove_file(upper.join(name));
        }
    }
}

/// containerd's Commit on `strata snapshotter`, with the daemon killed (SIGKILL) while
/// commits are in flight: after a restart each snapshot is either still the active one
/// or the committed one, never both or neither.
#[test]
fn a_snapshotter_killed_during_commits_leaves_each_snapshot_active_or_committed() {
    use strata::snapshotter::proto::containerd::services::snapshots::v1 as pb;
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, sock) = (dir.path().join("store"), dir.path().join("s.sock"));
    let start = || {
        let child = strata(&root)
            .args(["snapshotter", "--driver", "overlay", "--address"])
            .arg(&sock)
            .stderr(Stdio::null())
            .spawn()
            .expect("start the snapshotter");
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    for round in 0..6u64 {
        let mut daemon = start();
        let keys: Vec<String> = (0..4).map(|i| format!("r{round}-k{i}")).collect();
        runtime.block_on(async {
            let mut c = crate::util::grpc::snapshots_client(&sock).await;
            for key in &keys {
                let request =
                    pb::PrepareSnapshotRequest { snapshotter: "strata".into(), key: key.clone(), ..Default::default() };
                let mounts = c.prepare(request).await.expect("prepare").into_inner().mounts;
                std::fs::write(Path::new(&mounts[0].source).join("data"), noise(1 << 20, round)).expect("write");
            }
            // Commits in flight, then the kill at a varying moment.
            for key in &keys {
                let mut c = c.clone();
                let (key, name) = (key.clone(), format!("{key}-committed"));
                tokio::spawn(async move {
                    let _ = c
                        .commit(pb::CommitSnapshotRequest {
                            snapshotter: "strata".into(),
                            name,
                            key,
                            ..Default::default()
                        })
                        .await;
                });
            }
            tokio::time::sleep(Duration::from_millis(round * 7)).await;
        });
        let _ = daemon.kill(); // SIGKILL, our own child by PID
        let _ = daemon.wait();
        let mut daemon = start();
        runtime.block_on(async {
            let mut c = crate::util::grpc::snapshots_client(&sock).await;
            for key in &keys {
                let stat = |k: String| pb::StatSnapshotRequest { snapshotter: "strata".into(), key: k };
                let active = c.stat(stat(key.clone())).await.ok().and_then(|r| r.into_inner().info);
                let committed = c.stat(stat(format!("{key}-committed"))).await.ok().and_then(|r| r.into_inner().info);
                match (active, committed) {
                    (Some(a), None) => assert_eq!(a.kind, pb::Kind::Active as i32),
                    (None, Some(c)) => assert_eq!(c.kind, pb::Kind::Committed as i32),
                    other => panic!("round {round}: {key} is both or neither: {other:?}"),
                }
            }
        });
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
}
