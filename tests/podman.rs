//! podman runs containers through strata-fuse as its overlay `mount_program`, the way
//! it runs fuse-overlayfs: writes land in the container's upper dir and survive
//! `podman stop` / `podman start`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{require_tools, run, unmount_all_under};

/// podman with its storage under the test's dir and `program` as the overlay driver's
/// mount program.
struct Podman {
    dir: PathBuf,
    program: PathBuf,
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root").arg(self.dir.join("storage"));
        cmd.arg("--runroot").arg(self.dir.join("run"));
        cmd.args(["--storage-driver", "overlay", "--storage-opt"]);
        cmd.arg(format!("overlay.mount_program={}", self.program.display()));
        cmd
    }

    /// `podman run` with this host's needs: runc and cgroupfs (crun refuses the hybrid
    /// cgroup layout here) and limits below the sandbox's.
    fn run_args() -> [&'static str; 10] {
        [
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--network",
            "none",
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ]
    }
}

/// Imports a busybox image with `/data/base` into `podman`'s storage.
fn import_busybox(podman: &Podman, dir: &Path) -> &'static str {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir");
    std::fs::create_dir_all(rootfs.join("data")).expect("mkdir");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox (busybox-static)");
    for tool in ["sh", "cat", "echo", "ls", "stat", "grep", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).expect("symlink");
    }
    std::fs::write(rootfs.join("data/base"), "from the image\n").expect("file");
    let tar = dir.join("rootfs.tar");
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."));
    let image = "localhost/strata-podman:1";
    run(podman.cmd().arg("import").arg(&tar).arg(image));
    image
}

/// Unmounts what podman left under `dir` before the temp dir goes away.
struct Cleanup(Podman);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.cmd().args(["rm", "--all", "--force"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        unmount_all_under(&self.0.dir);
    }
}

#[test]
fn privileged_podman_runs_containers_through_strata_fuse() {
    if !require_tools(
        "privileged_podman_runs_containers_through_strata_fuse",
        &["podman", "runc", "tar", "fuse-overlayfs"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let podman = Podman { dir: dir.path().to_owned(), program: env!("CARGO_BIN_EXE_strata-fuse").into() };
    let image = import_busybox(&podman, dir.path());
    let cleanup = Cleanup(podman);
    let podman = &cleanup.0;

    // The container's root is a strata-fuse mount; a write and a change to an image file.
    let script = "grep ' / / ' /proc/self/mountinfo; cat /data/base; \
                  echo written > /data/new; echo changed >> /data/base";
    let said = run(podman.cmd().arg("run").args(Podman::run_args()).args(["--name", "c1", image, "sh", "-c", script]));
    assert!(said.contains(" - fuse strata ") || said.contains(" - fuse.strata "), "root mount: {said}");
    assert!(said.contains("from the image"), "{said}");

    // The writes are in the container's upper dir, in overlayfs's format.
    let upper = PathBuf::from(run(podman.cmd().args(["inspect", "c1", "--format", "{{.GraphDriver.Data.UpperDir}}"])));
    assert_eq!(std::fs::read_to_string(upper.join("data/new")).expect("upper/data/new"), "written\n");
    assert_eq!(std::fs::read_to_string(upper.join("data/base")).expect("copied up"), "from the image\nchanged\n");

    // stop / start: a new mount of the same layers shows the same writes.
    run(podman.cmd().args(["stop", "--time", "1", "c1"]));
    let said = run(podman.cmd().args(["start", "--attach", "c1"]));
    assert!(said.contains("from the image\nchanged"), "after restart: {said}");
    let said = run(podman.cmd().args(["run", "--rm"]).args(Podman::run_args()).args([image, "cat", "/data/base"]));
    assert_eq!(said, "from the image", "another container sees the image, not c1's change");

    // User namespaces: podman passes uidmapping=/gidmapping=; the container sees its
    // files exactly as through fuse-overlayfs (podman's default mount program).
    let view = |program: &Path| {
        let p = Podman { dir: podman.dir.clone(), program: program.to_owned() };
        run(p
            .cmd()
            .args(["run", "--rm", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"])
            .args(Podman::run_args())
            .args([image, "sh", "-c", "stat -c '%u:%g %a %n' /data/base /bin/busybox /data"]))
    };
    let ours = view(Path::new(env!("CARGO_BIN_EXE_strata-fuse")));
    assert_eq!(ours, view(Path::new("/usr/bin/fuse-overlayfs")), "strata-fuse vs fuse-overlayfs under --uidmap");
    assert!(ours.contains("/data/base"), "{ours}");
    assert_eq!(std::fs::metadata(upper.join("data/new")).expect("upper").uid(), 0, "stored ids unchanged");
}
