//! `strata mount`, `strata umount`, `strata ps`, `strata info`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde_json::json;
use strata::rootfs::{self, MountOptions, UnmountOptions};
use strata_image::{Image, Platform, Selector};
use strata_overlay::{HostFeatures, is_mount_point};

use super::progress;
use super::store::RootArgs;

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
    driver: rootfs::Driver,
    /// Name of the container's writable layer (default: derived from TARGET).
    #[arg(long)]
    name: Option<String>,
    /// Which image of the source: NAME:TAG, a tag, or @sha256:<digest>.
    #[arg(long = "ref", value_name = "REF")]
    reference: Option<String>,
    /// Put file SRC at PATH in the rootfs, in an init layer below the writable layer
    /// (as Docker does for /etc/hosts): `strata commit` never takes it. Repeatable;
    /// given again on a later mount, the files are refreshed.
    #[arg(long = "init-file", value_name = "PATH=SRC", value_parser = parse_init_file)]
    init_files: Vec<(PathBuf, PathBuf)>,
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

fn parse_init_file(value: &str) -> Result<(PathBuf, PathBuf), String> {
    let (path, src) = value.split_once('=').ok_or_else(|| format!("{value:?}: expected PATH=SRC"))?;
    if path.is_empty() || src.is_empty() {
        return Err(format!("{value:?}: expected PATH=SRC"));
    }
    if !Path::new(src).is_file() {
        return Err(format!("{src}: not a file"));
    }
    Ok((PathBuf::from(path), PathBuf::from(src)))
}

pub fn mount(args: MountArgs, root: &RootArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = root.open()?;
    let selector = Selector {
        reference: args.reference.clone(),
        explicit_platform: args.platform.is_some(),
        platform: args.platform.clone().unwrap_or_else(Platform::host),
    };
    let image = Image::open(&args.image, &selector)?;
    let mut options = MountOptions {
        read_only: args.read_only,
        driver: args.driver,
        name: args.name.clone(),
        fuse_daemon: crate::fuse_daemon()?,
        init_files: args.init_files.clone(),
        ..MountOptions::default()
    };
    if let Some(jobs) = args.jobs {
        options.unpack.jobs = usize::from(jobs);
    }
    let reporter = progress::LayerReporter::new(image.layers.len(), false);
    let mounted = rootfs::mount_image(&store, &image, &args.target, &options, &reporter.progress())
        .with_context(|| format!("mounting {} at {}", image.name, args.target.display()))?;
    reporter.finish();
    if let Some(why) = &mounted.fallback {
        eprintln!("strata: {why}: mounted with strata-fuse instead");
    }
    println!(
        "mounted {} ({} layers, {}) at {} in {:.2} s; writable layer: {}",
        image.name,
        image.layers.len(),
        mounted.how,
        mounted.target.display(),
        started.elapsed().as_secs_f64(),
        mounted.key.as_deref().unwrap_or("none (read-only)")
    );
    Ok(())
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
    let store = root.open()?;
    let options = UnmountOptions { remove_layer: args.rm, lazy: args.lazy };
    let done = rootfs::unmount(&store, &args.target, options)?;
    let removed = done.removed_layer.map(|key| format!("; removed writable layer {key}")).unwrap_or_default();
    if done.was_mounted {
        println!("unmounted {}{removed}", args.target.display());
    } else {
        println!("{} was not mounted; forgot it{removed}", args.target.display());
    }
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
