//! `strata mount`, `strata umount`, `strata ps`, `strata info`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::json;
use strata_core::store::{Kind, MountRecord, MountSpec, Store};
use strata_image::{Image, Platform, Selector};
use strata_overlay::{HostFeatures, KernelMounter, MountPlan, Mounter, OverlayOptions, is_mount_point};

use super::mount_fuse::mount_fuse;
use super::store::RootArgs;
use super::unpack::store_image;

/// Mount an image's root filesystem at TARGET.
///
/// Unpacks what is missing into the store, prepares the container's writable layer (an
/// active snapshot named --name, by default derived from TARGET) and mounts the layers
/// with kernel overlayfs, or with strata-fuse (a userspace union mount with the same
/// semantics) where overlayfs is unavailable or when asked. Mounting the same image with the same name again reuses that
/// writable layer: what was written in one mount is there in the next. Needs root for
/// overlayfs; strata-fuse also runs unprivileged where fusermount3 allows.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  strata mount demo/image /tmp/strata-demo\n  strata mount --driver fuse demo/image /tmp/strata-demo   # userspace, same semantics\n  strata mount --read-only --platform linux/arm64 app.tar /mnt/app\n  strata umount /tmp/strata-demo          # keeps the writable layer\n  strata umount --rm /tmp/strata-demo     # and removes it"
)]
pub struct MountArgs {
    /// Mount read-only (no writable layer).
    #[arg(long)]
    read_only: bool,
    /// `overlay` (kernel overlayfs), `fuse` (strata-fuse, userspace), or `auto` (overlay
    /// when it works here, else fuse; says which).
    #[arg(long, value_enum, default_value = "auto")]
    driver: Driver,
    /// Name of the container's writable layer (default: derived from TARGET).
    #[arg(long)]
    name: Option<String>,
    /// Which image of the source: NAME:TAG, a tag, or @sha256:<digest>.
    #[arg(long = "ref", value_name = "REF")]
    reference: Option<String>,
    /// Platform to pick from a multi-platform image (default: this host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,
    /// Layers unpacked at once [default: the number of CPUs].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// The image: an OCI layout directory or archive, or a docker-save archive.
    image: PathBuf,
    /// The directory to mount on (created if missing).
    target: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Driver {
    Auto,
    Overlay,
    Fuse,
}

/// The default writable-layer name for a mount point: `mount:` + its canonical path.
fn default_name(target: &Path) -> String {
    format!("mount:{}", target.display())
}

/// The view snapshot a read-only mount holds: `view:` + its canonical path.
fn view_name(target: &Path) -> String {
    format!("view:{}", target.display())
}

/// Mounts `spec` at `target`; says how.
fn mount_spec(spec: &MountSpec, target: &Path, driver: Driver, root: bool) -> anyhow::Result<&'static str> {
    if driver == Driver::Fuse {
        mount_fuse(spec, target, root, true)?;
        return Ok("strata-fuse");
    }
    let plan = MountPlan::new(spec, &OverlayOptions::default(), target)?;
    KernelMounter.mount(&plan, target)?;
    Ok(match plan {
        MountPlan::Bind { .. } => "bind mount",
        MountPlan::Overlay { .. } => "overlayfs",
    })
}

/// Forgets the records of mounts that are gone (a plain `umount`, a reboot) and the
/// views they held, so their snapshots are free again.
fn forget_stale_mounts(store: &Store) -> anyhow::Result<()> {
    for record in store.mount_records()? {
        if !is_mount_point(Path::new(&record.target)) {
            release(store, &record, false)?;
        }
    }
    Ok(())
}

/// Drops a mount's record and the view a read-only mount held; with `remove_layer`, the
/// writable layer too. Returns the writable layer removed, if any.
fn release(store: &Store, record: &MountRecord, remove_layer: bool) -> anyhow::Result<Option<String>> {
    store.forget_mount(&record.target)?;
    match &record.key {
        Some(key) if record.read_only => {
            if store.stat(key).is_ok() {
                store.remove(key)?;
            }
            Ok(None)
        }
        Some(key) if remove_layer && store.stat(key).is_ok() => {
            store.remove(key)?;
            Ok(Some(key.clone()))
        }
        _ => Ok(None),
    }
}

pub fn mount(args: MountArgs, root: &RootArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // Mount targets are never followed: a symlink there could point anywhere.
    if std::fs::symlink_metadata(&args.target).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!("mount target {} is a symlink; strata mounts only onto a real directory", args.target.display());
    }
    if !args.target.exists() {
        std::fs::create_dir_all(&args.target)
            .with_context(|| format!("creating mount target {}", args.target.display()))?;
    }
    let meta = std::fs::metadata(&args.target).with_context(|| format!("mount target {}", args.target.display()))?;
    if !meta.is_dir() {
        bail!("mount target {} is not a directory", args.target.display());
    }
    let target = std::fs::canonicalize(&args.target).with_context(|| format!("resolving {}", args.target.display()))?;
    if is_mount_point(&target) {
        bail!("{} is already a mount point (strata umount {} first)", target.display(), target.display());
    }
    let store_args = root;
    let root = root.path()?;
    std::fs::create_dir_all(&root).with_context(|| format!("creating the store root {}", root.display()))?;
    let host = HostFeatures::probe(&root);
    let driver = choose_driver(args.driver, &host, &root)?;
    let store = store_args.open()?;
    let selector = Selector {
        reference: args.reference.clone(),
        explicit_platform: args.platform.is_some(),
        platform: args.platform.clone().unwrap_or_else(Platform::host),
    };
    let image = Image::open(&args.image, &selector)?;
    // Layers go in the store's own xattr namespace (user.overlay.* without root).
    let outcome = store_image(&store, &image, &image.name, args.jobs, None, false)?;
    let top = outcome.chains.last().map(ToString::to_string);

    forget_stale_mounts(&store)?;
    let Some(top) = top else { bail!("image {} has no layers to mount", image.name) };
    let labels = BTreeMap::from([("strata.image".to_owned(), image.name.clone())]);
    // Every mount holds a snapshot, so gc, rmi and `snapshots rm` never take its layers:
    // a read-only mount a view (removed at umount), a writable one its active snapshot.
    let (key, spec) = if args.read_only {
        let key = view_name(&target);
        if store.stat(&key).is_ok() {
            store.remove(&key)?; // left by a crash: views hold nothing worth keeping
        }
        let spec = store.view(&key, Some(&top), labels)?;
        (key, spec)
    } else {
        let key = args.name.clone().unwrap_or_else(|| default_name(&target));
        let spec = match store.stat(&key) {
            Ok(info) => {
                if info.kind != Kind::Active || info.parent.as_deref() != Some(top.as_str()) {
                    bail!(
                        "writable layer {key:?} exists for another image ({}); pick another --name or `strata snapshots rm {key}`",
                        info.parent.as_deref().unwrap_or("no parent")
                    );
                }
                store.mounts(&key)?
            }
            Err(strata_core::Error::NotFound { .. }) => store.prepare(&key, Some(&top), labels)?,
            Err(e) => return Err(e.into()),
        };
        (key, spec)
    };
    // The claim comes before the mount: a second mount of the same writable layer is
    // refused here, naming the first (the store checks it in one transaction).
    let record = MountRecord {
        target: target.display().to_string(),
        key: Some(key.clone()),
        image: image.name.clone(),
        driver: if driver == Driver::Fuse { "fuse" } else { "overlay" }.into(),
        read_only: args.read_only,
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
    };
    store.record_mount(&record)?;
    let how = match mount_spec(&spec, &target, driver, host.root) {
        Ok(how) => how,
        Err(err) => {
            store.forget_mount(&record.target)?;
            if args.read_only {
                store.remove(&key)?;
            }
            return Err(err);
        }
    };
    let key = (!args.read_only).then_some(key);
    println!(
        "mounted {} ({} layers, {how}) at {} in {:.2} s; writable layer: {}",
        image.name,
        image.layers.len(),
        target.display(),
        started.elapsed().as_secs_f64(),
        key.as_deref().unwrap_or("none (read-only)")
    );
    Ok(())
}

/// Picks the driver: kernel overlayfs when asked or when it works here, strata-fuse
/// when asked or as the fallback (saying why).
fn choose_driver(asked: Driver, host: &HostFeatures, root: &Path) -> anyhow::Result<Driver> {
    let overlay_problem = if !host.root {
        Some("kernel overlayfs needs root (CAP_SYS_ADMIN)".to_owned())
    } else if !host.overlay {
        Some("this kernel has no overlayfs (try `modprobe overlay`)".to_owned())
    } else if !host.d_type {
        Some(format!(
            "the store at {} is on a filesystem without d_type, which overlayfs requires (XFS needs ftype=1)",
            root.display()
        ))
    } else {
        None
    };
    match (asked, overlay_problem) {
        (Driver::Fuse, _) => Ok(Driver::Fuse),
        (Driver::Overlay, None) | (Driver::Auto, None) => Ok(Driver::Overlay),
        (Driver::Overlay, Some(why)) => bail!("{why}; --driver fuse (strata-fuse) works without it"),
        (Driver::Auto, Some(why)) => {
            eprintln!("strata: {why}: mounting with strata-fuse instead");
            Ok(Driver::Fuse)
        }
    }
}

/// Unmount a rootfs mounted by `strata mount`.
#[derive(Debug, clap::Args)]
pub struct UmountArgs {
    /// Also remove the container's writable layer (by default it is kept for the next mount).
    #[arg(long)]
    rm: bool,
    /// Detach even if busy (MNT_DETACH); the mount goes away when its last user leaves.
    #[arg(long)]
    lazy: bool,
    /// The mount point.
    target: PathBuf,
}

pub fn umount(args: UmountArgs, root: &RootArgs) -> anyhow::Result<()> {
    let target = std::fs::canonicalize(&args.target).unwrap_or_else(|_| args.target.clone());
    let store = root.open()?;
    let mounted = is_mount_point(&target);
    let Some(record) = store.mount_records()?.into_iter().find(|m| Path::new(&m.target) == target) else {
        if mounted {
            bail!(
                "{} is a mount point strata did not make (no record in the store at {}); use umount(8) for it",
                target.display(),
                store.root().display()
            );
        }
        // No mount and no record: with --rm, the writable layer a plain umount left.
        let key = default_name(&target);
        if args.rm && store.stat(&key).is_ok() {
            store.remove(&key)?;
            println!("{} was not mounted; removed writable layer {key}", target.display());
            return Ok(());
        }
        bail!("{} is not mounted by strata (and no writable layer {key:?} is kept)", target.display());
    };
    if mounted {
        KernelMounter.unmount(&target, args.lazy)?;
    } else {
        eprintln!("strata: {} was already unmounted; forgetting the mount", target.display());
    }
    let removed = release(&store, &record, args.rm)?;
    let removed = removed.map(|key| format!("; removed writable layer {key}")).unwrap_or_default();
    println!("unmounted {}{removed}", target.display());
    Ok(())
}

/// What strata has mounted.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn ps(args: PsArgs, root: &RootArgs) -> anyhow::Result<()> {
    let store = root.open()?;
    let mut out = io::stdout().lock();
    let rows: Vec<_> = store
        .mount_records()?
        .into_iter()
        .map(|m| {
            let usage = m.key.as_deref().filter(|_| !m.read_only).and_then(|k| store.usage(k).ok());
            let live = is_mount_point(Path::new(&m.target));
            (m, usage, live)
        })
        .collect();
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(m, u, live)| json!({"target": m.target, "image": m.image, "driver": m.driver, "writable_layer": m.key.as_ref().filter(|_| !m.read_only),
                "read_only": m.read_only, "upper_bytes": u.map(|u| u.bytes), "upper_inodes": u.map(|u| u.inodes), "mounted": live}))
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(list))?;
        return Ok(());
    }
    writeln!(out, "{:<36} {:<24} {:<8} {:>12} STATE", "TARGET", "IMAGE", "DRIVER", "UPPER")?;
    for (m, u, live) in rows {
        let upper = u.map_or_else(|| "-".to_owned(), |u| format!("{:.1} MB", u.bytes as f64 / 1e6));
        writeln!(
            out,
            "{:<36} {:<24} {:<8} {:>12} {}",
            m.target,
            m.image,
            m.driver,
            upper,
            match (live, std::fs::metadata(&m.target)) {
                (true, Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::NOTCONN.raw_os_error()) =>
                    "daemon died (strata umount cleans up)",
                (true, _) => "mounted",
                (false, _) => "gone (strata umount to forget it)",
            }
        )?;
    }
    Ok(())
}

/// What strata-fuse can use here.
struct FuseFeatures {
    device: bool,
    passthrough: bool,
    fusermount: bool,
}

impl FuseFeatures {
    fn probe(kernel: &str) -> FuseFeatures {
        let device = Path::new("/dev/fuse").exists();
        let mut version = kernel.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
        let new_enough = (version.next().unwrap_or(0), version.next().unwrap_or(0)) >= (6, 9);
        let root = rustix::process::geteuid().is_root();
        let fusermount = ["/usr/bin/fusermount3", "/bin/fusermount3"].iter().any(|p| Path::new(p).exists());
        FuseFeatures { device, passthrough: device && new_enough && root, fusermount }
    }
}

/// Show what this host supports for mounts.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn info(args: InfoArgs, root: &RootArgs) -> anyhow::Result<()> {
    let root = root.path()?;
    std::fs::create_dir_all(&root).with_context(|| format!("creating the store root {}", root.display()))?;
    let h = HostFeatures::probe(&root);
    let fuse = FuseFeatures::probe(&h.kernel);
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({"kernel": h.kernel, "overlay": h.overlay, "new_mount_api": h.new_mount_api, "lowerdir_plus": h.lowerdir_plus,
            "userxattr": h.userxattr, "root": h.root, "store_root": root.display().to_string(), "store_d_type": h.d_type,
            "store_trusted_xattrs": h.trusted_xattrs, "store_user_xattrs": h.user_xattrs,
            "fuse": fuse.device, "fuse_passthrough": fuse.passthrough, "fusermount3": fuse.fusermount})
        )?;
        return Ok(());
    }
    let yes = |b: bool| if b { "yes" } else { "no" };
    let rows = [
        ("kernel", h.kernel.clone()),
        ("overlayfs", yes(h.overlay).into()),
        ("new mount API (fsopen)", yes(h.new_mount_api).into()),
        ("lowerdir+ (500 layers, no page limit)", yes(h.lowerdir_plus).into()),
        ("userxattr (rootless overlay)", yes(h.userxattr).into()),
        ("running as root", yes(h.root).into()),
        ("store root", root.display().to_string()),
        ("store fs: d_type", yes(h.d_type).into()),
        ("store fs: trusted.* xattrs", yes(h.trusted_xattrs).into()),
        ("store fs: user.* xattrs", yes(h.user_xattrs).into()),
        ("/dev/fuse (strata-fuse)", yes(fuse.device).into()),
        ("FUSE passthrough (Linux 6.9+, root)", yes(fuse.passthrough).into()),
        ("fusermount3 (unprivileged FUSE)", yes(fuse.fusermount).into()),
    ];
    for (k, v) in rows {
        writeln!(out, "{k:<40} {v}")?;
    }
    Ok(())
}
