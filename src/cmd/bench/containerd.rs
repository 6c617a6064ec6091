//! containerd as a peer: a private daemon per run (its own root, state and socket under
//! the run's scratch dir, the CRI plugin off), the image imported without unpacking
//! (untimed), then the timed step `ctr images mount --snapshotter overlayfs`, which
//! unpacks every layer into containerd's overlayfs snapshotter and mounts the result.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::runner::RunHooks;

/// The image name `ctr images import` gives (the layout's `io.containerd.image.name`).
pub const IMAGE: &str = "localhost/strata-bench:latest";

fn socket(scratch: &Path) -> PathBuf {
    scratch.join("ctd.sock")
}

/// `ctr` against the private daemon of `scratch`.
pub fn ctr(scratch: &Path) -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address").arg(socket(scratch)).args(["--namespace", "strata-bench"]);
    c
}

/// Starts and stops the private daemon around each run.
pub struct Daemon {
    /// An OCI archive (tar of the layout) to import.
    pub archive: PathBuf,
    pub child: Mutex<Option<Child>>,
}

impl RunHooks for Daemon {
    fn before(&self, scratch: &Path) -> anyhow::Result<()> {
        let config = scratch.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.aufs\"]\n[grpc]\n  address = {:?}\n",
                scratch.join("root"),
                scratch.join("state"),
                socket(scratch)
            ),
        )?;
        let log = std::fs::File::create(scratch.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        *self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child);
        let started = Instant::now();
        while !socket(scratch).exists() {
            if started.elapsed() > Duration::from_secs(20) {
                bail!("containerd did not come up (see {})", scratch.join("containerd.log").display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = ctr(scratch).args(["images", "import", "--no-unpack"]).arg(&self.archive).output()?;
        if !out.status.success() {
            bail!("ctr images import: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        std::fs::create_dir_all(scratch.join("mnt"))?;
        Ok(())
    }

    fn after(&self, scratch: &Path) {
        let _ = ctr(scratch).args(["images", "unmount"]).arg(scratch.join("mnt")).output();
        let _ = Command::new("umount").arg("-l").arg(scratch.join("mnt")).stderr(Stdio::null()).status();
        if let Some(mut child) = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ =
                rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM);
            let _ = child.wait();
        }
    }
}
