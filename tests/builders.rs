//! Images built by real builders — podman, buildah, docker's legacy builder and
//! BuildKit — exported in every format each writes, unpacked by `strata unpack --to`,
//! and compared entry by entry with the builder's own view of the same image: the
//! kernel's read-only overlay mount of the builder's own layer dirs (containers/storage
//! or docker's overlay2), so no container-specific file gets in the way.
//!
//! The build deletes several files in one layer (overlayfs makes them hard links to
//! one whiteout device; docker and containers/storage then write `.wh.` entries with a
//! link name), removes a tree, turns a directory into a file and a file into a directory
//! and back, links to a lower file, and carries setuid bits and xattrs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{MountGuard, Tree, require_tools, run, unmount_all_under};

const CONTAINERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
COPY noted /data/noted
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /data/tree/sub /data/dir2file && echo one > /data/tree/a && echo two > /data/tree/sub/b \
 && echo 1 > /data/del1 && echo 2 > /data/del2 && echo 3 > /data/del3 && echo f > /data/file2dir \
 && echo x > /data/linked && ln /data/linked /data/linked2 && touch /data/dir2file/child \
 && echo suid > /data/suid && chmod 4755 /data/suid && chmod 2775 /data/tree && chown 1000:1000 /data/del3
RUN rm -rf /data/tree /data/del1 /data/del2 /data/del3 /data/dir2file \
 && echo now-a-file > /data/dir2file && rm /data/file2dir && mkdir /data/file2dir && touch /data/file2dir/in \
 && ln /data/linked /data/linked3 && chmod 0700 /data/suid
RUN rm -rf /data/file2dir && echo back > /data/file2dir && mkdir -p /data/tree/new
"#;

/// The same Containerfile for every builder, with a static busybox as the only program.
fn build_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("context");
    std::fs::create_dir_all(&ctx).expect("context dir");
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("copy /bin/busybox (Debian package busybox-static)");
    std::fs::write(ctx.join("Containerfile"), CONTAINERFILE).expect("Containerfile");
    std::fs::write(ctx.join("noted"), "xattrs\n").expect("noted");
    rustix::fs::setxattr(ctx.join("noted"), "user.strata.note", b"kept", rustix::fs::XattrFlags::empty())
        .expect("user xattr on the context file");
    ctx
}

/// Mounts the builder's layer dirs (`upper` on top, then `lowers`, colon-separated) as a
/// read-only overlay: the builder's own view of the image.
fn mount_reference(upper: &str, lowers: &str, at: &Path) -> MountGuard {
    std::fs::create_dir_all(at).expect("reference mount point");
    let mut layers = upper.to_owned();
    if !lowers.is_empty() && lowers != "<no value>" {
        layers = format!("{layers}:{lowers}");
    }
    run(Command::new("mount").args(["-t", "overlay", "overlay", "-o"]).arg(format!("ro,lowerdir={layers}")).arg(at));
    MountGuard(at.to_owned())
}

/// `strata unpack EXPORT --to DIR`, then the tree it made equals the reference entry by
/// entry (type, mode, owner, content, xattrs, mtime; see [`Fidelity`]), the root aside (the runtime's
/// mount point). Hardlinks: every group the builder's view has is within one group of
/// strata's (the flattened tree keeps a group that a later layer linked to whole; the
/// kernel's merged view splits it, see the hardlink note in docs/ARCHITECTURE.md).
fn assert_unpacks_as(export: &Path, reference: &Tree, work: &Path, what: &str, fidelity: Fidelity) {
    let to = work.join(format!("unpacked-{}", export.file_name().and_then(|n| n.to_str()).unwrap_or("image")));
    run(Command::new(env!("CARGO_BIN_EXE_strata")).arg("unpack").arg("--json").arg(export).arg("--to").arg(&to));
    let mut ours = Tree::of(&to);
    let mut theirs = reference.clone();
    for tree in [&mut ours, &mut theirs] {
        tree.0.remove("");
    }
    let groups = |t: &Tree| -> BTreeMap<String, Vec<String>> {
        t.0.iter().filter(|(_, n)| !n.links.is_empty()).map(|(p, n)| (p.clone(), n.links.clone())).collect()
    };
    let (our_groups, their_groups) = (groups(&ours), groups(&theirs));
    for (path, links) in &their_groups {
        let ours_for = our_groups.get(path).cloned().unwrap_or_default();
        assert!(
            links.iter().all(|l| ours_for.contains(l)),
            "{what}: {path} is linked to {links:?} in the builder's view, to {ours_for:?} in strata's"
        );
    }
    for tree in [&mut ours, &mut theirs] {
        for node in tree.0.values_mut() {
            node.links.clear();
            if fidelity == Fidelity::BuildKit {
                node.mtime.1 = 0;
                node.xattrs.retain(|key, _| !key.starts_with("user."));
            }
        }
    }
    let diff = ours.diff(&theirs);
    assert!(diff.is_empty(), "{what}: strata (left) differs from the builder's view (right):\n{}", diff.join("\n"));
    assert!(ours.has("data/linked3") && !ours.has("data/del1"), "{what}: the build's changes are missing");
}

/// What a builder's exported layers carry of its own view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fidelity {
    /// Everything: the builder's layer dirs were applied from the very layers it exports.
    Exact,
    /// BuildKit's layer dirs are its build snapshots; the layers it exports carry whole
    /// seconds and no `user.*` xattrs (checked by hand with Python's tarfile), which is
    /// all any unpacker can give back.
    BuildKit,
}

/// podman and buildah share containers/storage, kept under the test's own dir.
struct Storage {
    args: Vec<String>,
}

impl Storage {
    fn new(dir: &Path) -> Storage {
        let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
        let args = ["--root", &path("storage"), "--runroot", &path("run"), "--storage-driver", "overlay"];
        Storage { args: args.iter().map(|s| s.to_string()).collect() }
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.args(&self.args);
        cmd
    }

    /// The image's layer dirs: (top, lower ones) as containers/storage's overlay driver keeps them.
    fn layer_dirs(&self, image: &str) -> (String, String) {
        let format = "{{.GraphDriver.Data.UpperDir}}\n{{.GraphDriver.Data.LowerDir}}";
        let out = run(self.cmd("podman").args(["image", "inspect", "--format", format, image]));
        let (upper, lower) = out.split_once('\n').unwrap_or((&out, ""));
        (upper.to_owned(), lower.to_owned())
    }
}

struct UnmountOnDrop(PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        unmount_all_under(&self.0);
    }
}

#[test]
fn privileged_podman_and_buildah_images_unpack_as_their_builders_see_them() {
    if !require_tools("privileged_podman_and_buildah_images_unpack_as_their_builders_see_them", &["podman", "buildah"])
    {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let _unmount = UnmountOnDrop(dir.path().to_owned());
    let ctx = build_context(dir.path());
    let storage = Storage::new(dir.path());
    let limits = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--network", "none"];
    // runc and cgroupfs: crun refuses this host's hybrid cgroup layout.
    run(storage
        .cmd("podman")
        .args(["build", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "-t", "localhost/strata-corpus:podman"])
        .args(limits)
        .arg(&ctx));
    run(storage
        .cmd("buildah")
        .args(["bud", "--layers", "--isolation", "chroot", "-t", "localhost/strata-corpus:buildah"])
        .args(&limits[..4]) // chroot isolation: the host network, unused here
        .arg(&ctx));

    for tag in ["podman", "buildah"] {
        let image = format!("localhost/strata-corpus:{tag}");
        let work = dir.path().join(tag);
        std::fs::create_dir_all(&work).expect("work dir");
        let (upper, lowers) = storage.layer_dirs(&image);
        let reference_at = work.join("reference");
        let _mounted = mount_reference(&upper, &lowers, &reference_at);
        let reference = Tree::of(&reference_at);

        let mut exports = Vec::new();
        if tag == "podman" {
            for (format, file) in [("oci-archive", "oci.tar"), ("docker-archive", "docker.tar"), ("oci-dir", "oci-dir")]
            {
                let out = work.join(file);
                run(storage.cmd("podman").args(["save", "--format", format, "-o"]).arg(&out).arg(&image));
                exports.push((out, format!("podman save --format {format}")));
            }
        } else {
            for compression in ["gzip", "zstd"] {
                let out = work.join(format!("oci-{compression}"));
                let dest = format!("oci:{}", out.display());
                run(storage.cmd("buildah").args(["push", "--compression-format", compression, &image, &dest]));
                exports.push((out, format!("buildah push --compression-format {compression} oci:DIR")));
            }
            let out = work.join("oci-archive.tar");
            run(storage.cmd("buildah").args(["push", &image, &format!("oci-archive:{}", out.display())]));
            exports.push((out, "buildah push oci-archive:FILE".into()));
        }
        for (export, what) in &exports {
            assert_unpacks_as(export, &reference, &work, what, Fidelity::Exact);
        }
    }
}

/// A dockerd of the test's own (data, exec root and socket in its temp dir), stopped by
/// PID when dropped.
struct Dockerd {
    child: Child,
    client: PathBuf,
    host: String,
}

impl Dockerd {
    fn start(dir: &Path) -> Dockerd {
        let sock = dir.join("docker.sock");
        let host = format!("unix://{}", sock.display());
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("dockerd log");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("docker-data"))
            .arg("--exec-root")
            .arg(dir.join("docker-exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["--host", &host, "--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver", "overlay2"])
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start dockerd (Debian package docker.io)");
        // The client of the same package: it speaks this daemon's API and builds with
        // either builder (a newer client may lack the buildx plugin BuildKit needs).
        let client = docker_client();
        let dockerd = Dockerd { child, client, host };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dockerd
            .docker()
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "dockerd did not answer within 60 s; its log:\n{log}");
            std::thread::sleep(Duration::from_millis(200));
        }
        dockerd
    }

    fn docker(&self) -> Command {
        let mut cmd = Command::new(&self.client);
        cmd.env("DOCKER_HOST", &self.host);
        cmd
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

/// The `docker` client of dockerd's own release (Debian's docker.io): a newer client
/// elsewhere on PATH may lack the buildx plugin BuildKit builds need.
fn docker_client() -> PathBuf {
    let version = |tool: &Path| {
        let out = Command::new(tool).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split(',').next().and_then(|v| v.split_whitespace().nth(2)).map(str::to_owned)
    };
    let daemon = version(Path::new("dockerd")).expect("dockerd --version");
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("docker"))
        .find(|client| client.is_file() && version(client).as_deref() == Some(daemon.as_str()))
        .unwrap_or_else(|| panic!("no docker client of dockerd's version {daemon} on PATH"))
}

#[test]
fn privileged_docker_images_unpack_as_docker_sees_them() {
    if !require_tools("privileged_docker_images_unpack_as_docker_sees_them", &["dockerd"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let _unmount = UnmountOnDrop(dir.path().to_owned());
    let ctx = build_context(dir.path());
    let dockerd = Dockerd::start(dir.path());
    for (builder, buildkit) in [("legacy builder", "0"), ("BuildKit", "1")] {
        let tag = format!("strata-corpus:buildkit{buildkit}");
        run(dockerd
            .docker()
            .env("DOCKER_BUILDKIT", buildkit)
            .args(["build", "--network", "none", "-t", &tag, "-f"])
            .arg(ctx.join("Containerfile"))
            .arg(&ctx));
        let work = dir.path().join(format!("buildkit{buildkit}"));
        std::fs::create_dir_all(&work).expect("work dir");
        let format = "{{.GraphDriver.Data.UpperDir}}\n{{.GraphDriver.Data.LowerDir}}";
        let out = run(dockerd.docker().args(["image", "inspect", "--format", format, &tag]));
        let (upper, lowers) = out.split_once('\n').unwrap_or((&out, ""));
        let reference_at = work.join("reference");
        let _mounted = mount_reference(upper, lowers, &reference_at);
        let reference = Tree::of(&reference_at);
        let saved = work.join("docker-save.tar");
        run(dockerd.docker().args(["save", "-o"]).arg(&saved).arg(&tag));
        let fidelity = if buildkit == "1" { Fidelity::BuildKit } else { Fidelity::Exact };
        assert_unpacks_as(&saved, &reference, &work, &format!("docker save of a {builder} image"), fidelity);
    }
}
