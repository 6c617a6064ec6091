//! containerd as a peer: a private daemon per run (its own root, state and socket under
//! the run's scratch dir, the CRI plugin off). The unpack row imports the image without
//! unpacking (untimed), then times `ctr images mount --snapshotter overlayfs`, which
//! unpacks every layer into containerd's overlayfs snapshotter and mounts the result.
//! The run rows time `ctr images import` + the first `ctr run` (runc) on containerd's
//! overlayfs snapshotter and on `strata snapshotter` (a proxy plugin, its own store in
//! the scratch dir, started with containerd).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::runner::RunHooks;

/// The image name `ctr images import` gives (the layout's `io.containerd.image.name`).
pub const IMAGE: &str = "localhost/strata-bench:latest";

pub fn socket(scratch: &Path) -> PathBuf {
    scratch.join("ctd.sock")
}

/// `ctr` against the private daemon of `scratch`.
pub fn ctr(scratch: &Path) -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address").arg(socket(scratch)).args(["--namespace", "strata-bench"]);
    c
}

/// The snapshotter name the proxy plugin gets.
pub const STRATA: &str = "strata";

fn strata_socket(scratch: &Path) -> PathBuf {
    scratch.join("strata.sock")
}

/// Starts and stops the private daemon around each run.
#[derive(Default)]
pub struct Daemon {
    /// An OCI archive (tar of the layout) to import untimed, without unpacking.
    pub archive: Option<PathBuf>,
    /// The strata binary: also serve `strata snapshotter` as containerd's proxy plugin.
    pub strata: Option<PathBuf>,
    pub child: Mutex<Option<Child>>,
    pub snapshotter: Mutex<Option<Child>>,
}

/// `sh -c` timing `ctr images import --snapshotter S ARCHIVE` and the first
/// `ctr run --snapshotter S --rm IMAGE ... /bin/true`.
pub fn import_and_run(snapshotter: &'static str, archive: PathBuf) -> Box<dyn Fn(&Path) -> Command> {
    Box::new(move |scratch: &Path| {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "set -e; ctr -a \"$0\" -n strata-bench images import --snapshotter {snapshotter} \"$1\" >/dev/null; \
                 ctr -a \"$0\" -n strata-bench run --snapshotter {snapshotter} --rm {IMAGE} bench-run /bin/true"
            ))
            .arg(socket(scratch))
            .arg(&archive);
        c
    })
}

fn stop(child: &Mutex<Option<Child>>) {
    if let Some(mut child) = child.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM);
        let _ = child.wait();
    }
}

fn wait_for(path: &Path, what: &str, log: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    while !path.exists() {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("{what} did not come up (see {})", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl RunHooks for Daemon {
    fn before(&self, scratch: &Path) -> anyhow::Result<()> {
        let mut proxy = String::new();
        if let Some(strata) = &self.strata {
            let log = scratch.join("snapshotter.log");
            let child = Command::new(strata)
                .arg("--root")
                .arg(scratch.join("strata-root"))
                .args(["snapshotter", "--driver", "overlay", "--address"])
                .arg(strata_socket(scratch))
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("starting strata snapshotter")?;
            *self.snapshotter.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child);
            wait_for(&strata_socket(scratch), "strata snapshotter", &log)?;
            proxy =
                format!("[proxy_plugins.{STRATA}]\n  type = \"snapshot\"\n  address = {:?}\n", strata_socket(scratch));
        }
        let config = scratch.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.aufs\"]\n[grpc]\n  address = {:?}\n{proxy}",
                scratch.join("root"),
                scratch.join("state"),
                socket(scratch)
            ),
        )?;
        let log = scratch.join("containerd.log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting containerd")?;
        *self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child);
        wait_for(&socket(scratch), "containerd", &log)?;
        if let Some(archive) = &self.archive {
            let out = ctr(scratch).args(["images", "import", "--no-unpack"]).arg(archive).output()?;
            if !out.status.success() {
                bail!("ctr images import: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        std::fs::create_dir_all(scratch.join("mnt"))?;
        Ok(())
    }

    fn after(&self, scratch: &Path) {
        let _ = ctr(scratch).args(["images", "unmount"]).arg(scratch.join("mnt")).output();
        let _ = Command::new("umount").arg("-l").arg(scratch.join("mnt")).stderr(Stdio::null()).status();
        stop(&self.child);
        stop(&self.snapshotter);
    }
}
