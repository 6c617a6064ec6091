//! strata as containerd's snapshotter, with the real components: a private containerd
//! (its own root, state, socket and config with the proxy plugin, no CRI), runc, and
//! `strata snapshotter` on a temporary socket. Images are built by the test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata::core::Digest;
use strata::snapshotter::proto::containerd::services::snapshots::v1::PrepareSnapshotRequest;
use strata::snapshotter::{CRI_MANIFEST, SNAPSHOT_REF};
use strata_testkit::images::{Blob, docker_oci, tar_dir};

use crate::util::grpc::snapshots_client;
use crate::util::{Tree, require_tools, run};

/// A process this test started, killed (SIGKILL, by its PID) and reaped on drop.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before creating {}", path.display());
        }
        assert!(Instant::now() < deadline, "{what} did not create {} in 20 s", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Env {
    dir: tempfile::TempDir,
    /// `strata snapshotter --driver`.
    driver: &'static str,
}

/// `PATH` with the directory of the built `strata-fuse` first: containerd and ctr run
/// `mount.fuse3 ... -t strata-fuse`, which looks the binary up there.
fn path_with_strata_fuse() -> std::ffi::OsString {
    let bin = Path::new(env!("CARGO_BIN_EXE_strata-fuse")).parent().expect("bin dir").to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&rest))).expect("PATH")
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store(&self) -> PathBuf {
        self.path("store")
    }

    fn snapshotter(&self) -> Started {
        let sock = self.path("strata.sock");
        let log = fs::OpenOptions::new().create(true).append(true).open(self.path("snapshotter.log")).expect("log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--root")
            .arg(self.store())
            .arg("snapshotter")
            .arg("--address")
            .arg(&sock)
            .args(["--driver", self.driver])
            .arg("--content-store")
            .arg(self.path("containerd-root/io.containerd.content.v1.content"))
            .stderr(log)
            .spawn()
            .expect("start strata snapshotter");
        // A restarted daemon replaces the stale socket: wait for the new one to answer.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("strata snapshotter exited ({status}): {}", self.log());
            }
            assert!(Instant::now() < deadline, "strata snapshotter not serving after 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Started(child)
    }

    fn containerd(&self) -> Started {
        let config = self.path("containerd.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = {:?}\n[proxy_plugins.strata]\n  type = \"snapshot\"\n  address = {:?}\n\
                 [plugins.\"io.containerd.gc.v1.scheduler\"]\n  deletion_threshold = 1\n",
                self.path("containerd-root"),
                self.path("containerd-state"),
                self.path("containerd.sock"),
                self.path("strata.sock"),
            ),
        )
        .expect("config");
        let log = fs::File::create(self.path("containerd.log")).expect("log");
        let mut child = Command::new("containerd")
            .env("PATH", path_with_strata_fuse())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        wait_for(&self.path("containerd.sock"), "containerd", &mut child);
        Started(child)
    }

    fn ctr(&self, namespace: &str, args: &[&str]) -> String {
        run(Command::new("ctr")
            .env("PATH", path_with_strata_fuse())
            .arg("-a")
            .arg(self.path("containerd.sock"))
            .args(["-n", namespace])
            .args(args))
    }

    fn strata(&self, args: &[&str]) -> String {
        run(Command::new(env!("CARGO_BIN_EXE_strata")).arg("--root").arg(self.store()).args(args))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("snapshotter.log")).unwrap_or_default()
    }
}

/// A three-layer busybox image: `/data/one`, `/data/two` and `/data/gone` (deleted by
/// layer 3), `/data/three`; `tag` goes into the files so two images differ.
fn image(dir: &Path, tag: &str) -> (PathBuf, PathBuf, Vec<Blob>) {
    let layer = |name: &str, files: &[(&str, &str)], busybox: bool| {
        let root = dir.join(name);
        fs::create_dir_all(root.join("data")).expect("mkdir");
        if busybox {
            fs::create_dir_all(root.join("bin")).expect("mkdir");
            fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy /bin/busybox (busybox-static)");
            for tool in ["sh", "cat", "echo", "find", "sort", "test"] {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).expect("symlink");
            }
        }
        for (path, body) in files {
            fs::write(root.join(path), body).expect("write");
        }
        Blob::gzip(tar_dir(&root))
    };
    let layers = vec![
        layer("l1", &[("data/one", &format!("one {tag}\n"))], true),
        layer("l2", &[("data/two", "two\n"), ("data/gone", "gone\n")], false),
        layer("l3", &[("data/.wh.gone", ""), ("data/three", "three\n")], false),
    ];
    let layout = dir.join("layout");
    docker_oci(&layout, &layers, &format!("strata-ctr-{tag}:1"));
    let archive = dir.join("image.tar");
    fs::write(&archive, tar_dir(&layout)).expect("image archive");
    (layout, archive, layers)
}

fn chains(layers: &[Blob]) -> Vec<String> {
    let mut parent: Option<Digest> = None;
    layers
        .iter()
        .map(|l| {
            let chain = Digest::chain(parent.as_ref(), &l.diff_id());
            parent = Some(chain.clone());
            chain.to_string()
        })
        .collect()
}

/// What containerd's unpacker (pull, CRI) sends for a layer: a Prepare through
/// containerd's own API with the layer's ChainID in `containerd.io/snapshot.ref`.
fn prepare_as_the_unpacker(
    env: &Env,
    namespace: &str,
    chain: &str,
    parent: &str,
    extra: &[(&str, &str)],
) -> tonic::Status {
    let sock = env.path("containerd.sock");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let mut client = snapshots_client(&sock).await;
        let mut request = tonic::Request::new(PrepareSnapshotRequest {
            snapshotter: "strata".into(),
            key: format!("extract-strata-test {chain}"),
            parent: parent.into(),
            labels: [(SNAPSHOT_REF, chain)]
                .iter()
                .chain(extra)
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        });
        request.metadata_mut().insert("containerd-namespace", namespace.parse().expect("header"));
        client.prepare(request).await.expect_err("the chain is in strata's store")
    })
}

#[test]
fn privileged_containerd_runs_containers_on_strata_snapshots() {
    if !require_tools("privileged_containerd_runs_containers_on_strata_snapshots", &["containerd", "ctr", "runc"]) {
        return;
    }
    let env = Env { dir: tempfile::tempdir().expect("tempdir"), driver: "overlay" };
    let (layout, archive, layers) = image(&env.path("a"), "a");
    let mut snapshotter = env.snapshotter();
    let _containerd = env.containerd();
    let ns = "strata-test";
    let image_ref = "docker.io/library/strata-ctr-a:1";
    env.ctr(ns, &["images", "import", "--snapshotter", "strata", archive.to_str().expect("utf-8")]);

    // A container through runc: reads every layer, sees the deletion, writes its rootfs.
    let script = "export PATH=/bin; cat /data/one /data/two /data/three; test ! -e /data/gone && echo gone; \
                  echo written > /data/new && cat /data/new; find / -xdev | sort";
    let out = env.ctr(ns, &["run", "--snapshotter", "strata", "--rm", image_ref, "c1", "/bin/sh", "-c", script]);
    let (head, listing) = out.split_at(out.find("\n/").map_or(out.len(), |i| i + 1));
    assert_eq!(head, "one a\ntwo\nthree\ngone\nwritten\n", "container output:\n{out}");
    // The merged view equals `strata unpack --to` of the same image (plus the write).
    let flat = env.path("flat");
    env.strata(&["unpack", layout.to_str().expect("utf-8"), "--to", flat.to_str().expect("utf-8")]);
    let mut expected: Vec<String> = walkdir::WalkDir::new(&flat)
        .into_iter()
        .map(|e| format!("/{}", e.expect("walk").path().strip_prefix(&flat).expect("under").display()))
        .map(|p| if p == "/" { "/".to_owned() } else { p })
        .chain(["/data/new".to_owned()])
        .collect();
    // runc's mount points exist in the rootfs (empty dirs containerd's spec mounts over).
    let runtime_dirs = ["/dev", "/proc", "/sys", "/run", "/etc"];
    let seen: Vec<&str> =
        listing.lines().filter(|l| !runtime_dirs.iter().any(|d| l == d || l.starts_with(&format!("{d}/")))).collect();
    expected.sort();
    assert_eq!(seen, expected.iter().map(String::as_str).collect::<Vec<_>>());

    // containerd's diff service reads a strata snapshot (`ctr snapshots diff`, what
    // `nerdctl commit` uses): a kept container's changes come back as a layer.
    env.ctr(
        ns,
        &["run", "--snapshotter", "strata", image_ref, "kept", "/bin/sh", "-c", "echo x > /data/added; rm /data/one"],
    );
    // ctr writes the diff blob (gzip) to stdout.
    let diff = Command::new("ctr")
        .arg("-a")
        .arg(env.path("containerd.sock"))
        .args(["-n", ns, "snapshots", "--snapshotter", "strata", "diff", "kept"])
        .output()
        .expect("ctr snapshots diff");
    assert!(diff.status.success(), "{}", String::from_utf8_lossy(&diff.stderr));
    let blob = env.path("diff.tar.gz");
    fs::write(&blob, &diff.stdout).expect("write diff");
    let listing = run(Command::new("tar").arg("-tzf").arg(&blob));
    let mut entries: Vec<&str> = listing.lines().map(|l| l.trim_start_matches("./").trim_end_matches('/')).collect();
    entries.retain(|e| !e.is_empty());
    entries.sort_unstable();
    // runc made its mount points in the rootfs (as with containerd's own snapshotter).
    let expected = ["data", "data/.wh.one", "data/added", "dev", "proc", "run", "sys"];
    assert_eq!(entries, expected, "the container's changes as a layer");
    // strata's own commit of the same snapshot gives the same tree as containerd's diff.
    let key = env
        .strata(&["snapshots", "ls"])
        .lines()
        .find_map(|l| l.split_whitespace().next().filter(|k| k.ends_with("/kept")).map(str::to_owned))
        .expect("the kept container's snapshot in strata's store");
    let (ours, theirs) = (env.path("by-strata"), env.path("by-containerd"));
    let out = env.path("committed");
    let s = |p: &Path| p.to_str().expect("utf-8").to_owned();
    env.strata(&["commit", "--name", &key, &s(&out), "--ref", "kept:1", "--base", &s(&layout)]);
    env.strata(&["unpack", &s(&out), "--ref", "kept:1", "--to", &s(&ours)]);
    env.strata(&["unpack", &s(&layout), "--to", &s(&theirs)]);
    env.strata(&["apply", &s(&blob), &s(&theirs)]);
    // containerd's diff keeps whole seconds (strata's keeps nanoseconds); the root's
    // own times are no layer's.
    let seconds = |root: &Path| {
        let mut t = Tree::of(root);
        t.0.remove("");
        t.0.values_mut().for_each(|n| n.mtime.1 = 0);
        t
    };
    let (a, b) = (seconds(&ours), seconds(&theirs));
    let differ = a.diff(&b);
    assert!(differ.is_empty(), "strata commit vs ctr snapshots diff:\n{}", differ.join("\n"));
    env.ctr(ns, &["containers", "rm", "kept"]);

    // containerd's view of the snapshots and strata's agree.
    let ours = env.strata(&["snapshots", "ls"]);
    let theirs = env.ctr(ns, &["snapshots", "--snapshotter", "strata", "ls"]);
    for chain in chains(&layers) {
        assert!(theirs.contains(&chain), "ctr lists {chain}:\n{theirs}");
        assert!(ours.lines().any(|l| l.contains(&chain) && l.contains("committed")), "strata lists {chain}:\n{ours}");
    }
    let top = chains(&layers).pop().expect("three layers");
    env.ctr(ns, &["snapshots", "--snapshotter", "strata", "prepare", "scratch", &top]);
    let info = env.ctr(ns, &["snapshots", "--snapshotter", "strata", "info", "scratch"]);
    assert!(info.contains("Active"), "{info}");
    let usage = env.ctr(ns, &["snapshots", "--snapshotter", "strata", "usage", "scratch"]);
    assert!(usage.contains("scratch"), "{usage}");
    assert!(env.strata(&["snapshots", "ls"]).contains("/scratch"), "strata sees containerd's active snapshot");
    env.ctr(ns, &["snapshots", "--snapshotter", "strata", "rm", "scratch"]);
    // containerd removes backend snapshots in its garbage collection, which the config
    // above runs after every deletion.
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.strata(&["snapshots", "ls"]).contains("/scratch") {
        assert!(Instant::now() < deadline, "containerd's gc did not remove the snapshot from strata in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The snapshotter dies and comes back: containerd reconnects, snapshots are kept.
    drop(snapshotter);
    snapshotter = env.snapshotter();
    // containerd redials within its gRPC backoff (a request in that window is refused).
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = Command::new("ctr")
            .env("PATH", path_with_strata_fuse())
            .arg("-a")
            .arg(env.path("containerd.sock"))
            .args(["-n", ns, "run", "--snapshotter", "strata", "--rm", image_ref, "c2", "/bin/cat", "/data/one"])
            .arg("/data/three")
            .output()
            .expect("ctr");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() || !stderr.contains("Unavailable") && !stderr.contains("unavailable") {
            assert!(out.status.success(), "ctr run after the restart: {stderr}");
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "containerd did not reconnect in 30 s: {stderr}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(out, "one a\nthree\n");

    // The fast path: an image `strata unpack` put in the store is not unpacked again when
    // containerd's unpacker asks for its chains.
    let (layout_b, archive_b, layers_b) = image(&env.path("b"), "b");
    env.strata(&["unpack", layout_b.to_str().expect("utf-8")]);
    // Committed snapshots only: containers' snapshots go when containerd's gc runs.
    let committed = |env: &Env| env.strata(&["snapshots", "ls"]).lines().filter(|l| l.contains("committed")).count();
    let before = committed(&env);
    env.ctr("fast", &["images", "import", "--no-unpack", archive_b.to_str().expect("utf-8")]);
    let mut parent = String::new();
    for chain in chains(&layers_b) {
        let status = prepare_as_the_unpacker(&env, "fast", &chain, &parent, &[]);
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
        parent = chain;
    }
    let out = env.ctr(
        "fast",
        &["run", "--snapshotter", "strata", "--rm", "docker.io/library/strata-ctr-b:1", "c3", "/bin/cat", "/data/one"],
    );
    assert_eq!(out.trim_end(), "one b");
    assert_eq!(committed(&env), before, "no layer was unpacked again");
    let log = env.log();
    assert_eq!(log.matches("layer already in the store").count(), 3, "{log}");
    assert!(
        !log.lines().any(|l| l.contains("prepared key=fast/") && l.contains("extract")),
        "containerd applied a layer:\n{log}"
    );

    // With CRI's annotations, a pulled image strata never saw is unpacked by strata from
    // containerd's content store: the first Prepare unpacks every fetched layer.
    let (layout_c, archive_c, layers_c) = image(&env.path("c"), "c");
    env.ctr("cri", &["images", "import", "--no-unpack", archive_c.to_str().expect("utf-8")]);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout_c.join("index.json")).expect("index.json")).expect("json");
    let manifest = index["manifests"][0]["digest"].as_str().expect("manifest digest").to_owned();
    let mut parent = String::new();
    for chain in chains(&layers_c) {
        let labels = [(CRI_MANIFEST, manifest.as_str())];
        let status = prepare_as_the_unpacker(&env, "cri", &chain, &parent, &labels);
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}\n{}", env.log());
        parent = chain;
    }
    let image_c = "docker.io/library/strata-ctr-c:1";
    let out = env
        .ctr("cri", &["run", "--snapshotter", "strata", "--rm", image_c, "c4", "/bin/cat", "/data/one", "/data/three"]);
    assert_eq!(out.trim_end(), "one c\nthree");
    let log = env.log();
    assert_eq!(log.matches("unpacked by strata from containerd's content store").count(), 1, "{log}");
    assert_eq!(log.matches("layer already in the store").count(), 3 + 2, "{log}");
    drop(snapshotter);
}

#[test]
fn privileged_containerd_runs_containers_on_strata_fuse_mounts() {
    if !require_tools(
        "privileged_containerd_runs_containers_on_strata_fuse_mounts",
        &["containerd", "ctr", "runc", "mount.fuse3"],
    ) {
        return;
    }
    let env = Env { dir: tempfile::tempdir().expect("tempdir"), driver: "fuse" };
    let (_, archive, _) = image(&env.path("a"), "a");
    let _snapshotter = env.snapshotter();
    let _containerd = env.containerd();
    let ns = "strata-fuse-test";
    env.ctr(ns, &["images", "import", "--snapshotter", "strata", archive.to_str().expect("utf-8")]);
    // The container's root is a strata-fuse union (containerd ran mount.fuse3).
    let script = "export PATH=/bin; cat /data/one /data/two /data/three; test ! -e /data/gone && echo gone; \
                  echo written > /data/new && cat /data/new; while read -r src dst kind rest; do \
                  [ \"$dst\" = / ] && echo \"$kind\"; done < /proc/mounts; true";
    let image_ref = "docker.io/library/strata-ctr-a:1";
    let out = env.ctr(ns, &["run", "--snapshotter", "strata", "--rm", image_ref, "c1", "/bin/sh", "-c", script]);
    assert_eq!(out.trim_end(), "one a\ntwo\nthree\ngone\nwritten\nfuse.strata", "container output:\n{out}");
}
