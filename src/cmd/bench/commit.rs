//! `strata bench commit`: saving a container's changes as a layer. The base image is
//! mounted writable and the changes (a tree of small files plus a few large ones) are
//! extracted into it, untimed; then the timed step writes the gzip layer:
//! `strata commit` (diff, compress, hash, into a copy of the base image's OCI layout)
//! against containerd's `ctr snapshots diff` on its overlayfs snapshotter (diff,
//! compress, into the content store that holds the base image).
//! The layer sizes each wrote are reported with the workload.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::bail;

use super::containerd;
use super::runner::{RunHooks, Skipped, Tool};

/// Layer sizes written per row, for the report.
pub type Sizes = Arc<Mutex<Vec<(String, u64)>>>;

fn extract(changes: &Path, into: &Path) -> anyhow::Result<()> {
    let status = Command::new("tar").arg("-xf").arg(changes).arg("-C").arg(into).status()?;
    if !status.success() {
        bail!("tar -xf of the changes into {} failed", into.display());
    }
    Ok(())
}

fn record(sizes: &Sizes, row: &str, bytes: u64) {
    sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((row.to_owned(), bytes));
}

/// `strata mount` (overlayfs) + the changes, before; the layer's size and
/// `strata umount --rm`, after.
struct StrataMount {
    exe: PathBuf,
    layout: PathBuf,
    changes: PathBuf,
    sizes: Sizes,
    row: String,
}

impl StrataMount {
    fn strata(&self, scratch: &Path) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--root").arg(scratch.join("root"));
        c
    }
}

impl RunHooks for StrataMount {
    fn before(&self, scratch: &Path) -> anyhow::Result<()> {
        let out = self
            .strata(scratch)
            .args(["mount", "--driver", "overlay"])
            .arg(&self.layout)
            .arg(scratch.join("mnt"))
            .stderr(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("strata mount: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        // Committed into a copy of the base image's layout, as containerd writes its diff
        // into a content store that holds the base: only the new layer, config and
        // manifest are written in the timed step.
        let status = Command::new("cp").arg("-a").arg(&self.layout).arg(scratch.join("out")).status()?;
        if !status.success() {
            bail!("cp -a of the base layout failed");
        }
        extract(&self.changes, &scratch.join("mnt"))
    }

    fn after(&self, scratch: &Path) {
        let layer = std::fs::read(scratch.join("out/index.json")).ok().and_then(|index| {
            let index: serde_json::Value = serde_json::from_slice(&index).ok()?;
            let entry = index["manifests"]
                .as_array()?
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "bench:commit")?;
            let digest = entry["digest"].as_str()?.strip_prefix("sha256:")?.to_owned();
            let manifest = std::fs::read(scratch.join("out/blobs/sha256").join(digest)).ok()?;
            let manifest: serde_json::Value = serde_json::from_slice(&manifest).ok()?;
            manifest["layers"].as_array()?.last()?["size"].as_u64()
        });
        if let Some(bytes) = layer {
            record(&self.sizes, &self.row, bytes);
        }
        let _ = self.strata(scratch).args(["umount", "--rm"]).arg(scratch.join("mnt")).output();
    }
}

/// A private containerd with the image imported, `ctr images mount --rw` + the changes,
/// before; the diff's size, the unmount and the daemon's stop, after.
struct ContainerdMount {
    daemon: containerd::Daemon,
    changes: PathBuf,
    sizes: Sizes,
    row: String,
}

impl RunHooks for ContainerdMount {
    fn before(&self, scratch: &Path) -> anyhow::Result<()> {
        self.daemon.before(scratch)?;
        let out = containerd::ctr(scratch)
            .args(["images", "mount", "--rw", "--snapshotter", "overlayfs", containerd::IMAGE])
            .arg(scratch.join("mnt"))
            .output()?;
        if !out.status.success() {
            bail!("ctr images mount: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        extract(&self.changes, &scratch.join("mnt"))
    }

    fn after(&self, scratch: &Path) {
        if let Ok(meta) = std::fs::metadata(scratch.join("diff.tar.gz")) {
            record(&self.sizes, &self.row, meta.len());
        }
        let _ = containerd::ctr(scratch).args(["images", "unmount", "--rm"]).arg(scratch.join("mnt")).output();
        self.daemon.after(scratch);
    }
}

/// The rows: strata commit, and containerd's diff when it can run here.
pub fn tools(
    exe: &Path,
    layout: &Path,
    archive: &Path,
    changes: &Path,
    bytes: u64,
) -> (Vec<Tool>, Vec<Skipped>, Sizes) {
    let sizes: Sizes = Arc::default();
    let strata_row = "strata commit (gzip)".to_owned();
    let mut tools = vec![Tool {
        name: strata_row.clone(),
        pair: strata_row.clone(),
        bytes,
        command: {
            let exe = exe.to_path_buf();
            Box::new(move |scratch: &Path| {
                let mut c = Command::new(&exe);
                c.arg("--root")
                    .arg(scratch.join("root"))
                    .arg("commit")
                    .arg(scratch.join("mnt"))
                    .arg(scratch.join("out"));
                c.args(["--ref", "bench:commit"]).stdout(Stdio::null());
                c
            })
        },
        hooks: Some(Box::new(StrataMount {
            exe: exe.to_path_buf(),
            layout: layout.to_path_buf(),
            changes: changes.to_path_buf(),
            sizes: Arc::clone(&sizes),
            row: strata_row.clone(),
        })),
    }];
    let mut skipped = Vec::new();
    let ctd_row = "containerd: ctr snapshots diff, overlayfs snapshotter (gzip)".to_owned();
    match ["containerd", "ctr"].iter().find(|p| !super::installed(p)) {
        Some(missing) => skipped.push((ctd_row, format!("{missing} not installed (apt install containerd)"))),
        None => tools.push(Tool {
            name: ctd_row.clone(),
            pair: strata_row,
            bytes,
            command: Box::new(|scratch: &Path| {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg("ctr -a \"$0\" -n strata-bench snapshots --snapshotter overlayfs diff \"$1\" > \"$2\"")
                    .arg(containerd::socket(scratch))
                    .arg(scratch.join("mnt"))
                    .arg(scratch.join("diff.tar.gz"));
                c
            }),
            hooks: Some(Box::new(ContainerdMount {
                daemon: containerd::Daemon { archive: Some(archive.to_path_buf()), ..containerd::Daemon::default() },
                changes: changes.to_path_buf(),
                sizes: Arc::clone(&sizes),
                row: ctd_row,
            })),
        }),
    }
    (tools, skipped, sizes)
}
