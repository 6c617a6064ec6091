//! `strata unpack`: an image from an OCI layout or docker-save archive into a rootfs.

use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::json;
use strata::rootfs;
use strata_core::ovl::XattrNamespace;
use strata_core::{ApplyBuilder, Mode};
use strata_image::{Image, Platform, Selector};
use strata_store::UnpackOptions;

use super::progress;
use super::store::RootArgs;

/// Unpack an image into the snapshot store, or with --to into a flattened rootfs.
///
/// IMAGE is an OCI image layout (directory or tar archive) or a `docker save` archive
/// (any Docker version). Every digest is checked.
///
/// Into the store (default): each layer becomes a committed snapshot keyed by its
/// ChainID, so layers shared between images are unpacked once; the image is recorded
/// under --name (default: its reference). A crash or a bad layer never leaves a partial
/// snapshot visible.
///
/// With --to DIR: the rootfs is built in a private (0700) staging directory beside DIR and renamed
/// into place only when the whole image applied (what `umoci unpack` gives).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  strata unpack alpine.tar --to /tmp/alpine-rootfs\n  strata unpack --ref app:v2 --platform linux/arm64 ./oci-layout --to rootfs"
)]
pub struct UnpackArgs {
    /// Which image of the source: NAME:TAG, a tag, or @sha256:<digest> (needed when the
    /// source holds several).
    #[arg(long = "ref", value_name = "REF")]
    reference: Option<String>,
    /// Platform to pick from a multi-platform image (default: this host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,
    /// Write a flattened rootfs here instead (must not exist, or be an empty directory).
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
    /// Record the image in the store under this name (default: its reference).
    #[arg(long, value_name = "NAME", conflicts_with = "to")]
    name: Option<String>,
    /// Write overlay markers in `user.overlay.*` (overlayfs's `userxattr`, rootless
    /// mounts). The default is the store's own namespace: `trusted` as root, `user`
    /// otherwise. Recorded per layer; a later mount moves markers to the namespace it reads.
    #[arg(long)]
    userxattr: bool,
    /// Layers unpacked at once [default: the number of CPUs].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
    /// The image: an OCI layout directory or archive, or a docker-save archive.
    image: PathBuf,
}

pub fn run(args: UnpackArgs, root: &RootArgs) -> anyhow::Result<()> {
    let selector = Selector {
        reference: args.reference.clone(),
        explicit_platform: args.platform.is_some(),
        platform: args.platform.clone().unwrap_or_else(Platform::host),
    };
    let image = Image::open(&args.image, &selector)?;
    let Some(to) = &args.to else {
        return unpack_into_store(&args, root, &image);
    };
    let started = Instant::now();
    let staging = staging_dir(to)?;
    let rootfs = staging.join("rootfs");
    let result = apply_all(&image, &rootfs, args.json).and_then(|layers| {
        std::fs::rename(&rootfs, to).with_context(|| format!("moving the unpacked rootfs into {}", to.display()))?;
        Ok(layers)
    });
    if let Err(cleanup) = std::fs::remove_dir_all(&staging) {
        let context = format!("also failed to remove the staging dir {}: {cleanup}", staging.display());
        return Err(match result {
            Ok(_) => anyhow::anyhow!(context),
            Err(err) => err.context(context),
        });
    }
    let layers = result?;
    let elapsed = started.elapsed().as_secs_f64();
    let bytes: u64 = layers.iter().map(|l| l.uncompressed_bytes).sum();
    let mut out = io::stdout().lock();
    if args.json {
        let layers: Vec<_> = layers
            .iter()
            .zip(&image.layers)
            .map(|(r, l)| {
                json!({"diff_id": l.diff_id.to_string(), "digest": r.digest.to_string(), "compression": r.compression.name(),
                       "uncompressed_bytes": r.uncompressed_bytes, "entries": r.entries, "elapsed_seconds": r.elapsed.as_secs_f64()})
            })
            .collect();
        let report = json!({
            "image": image.name, "format": image.format.to_string(), "platform": image.platform.to_string(),
            "config_digest": image.config_digest.to_string(),
            "manifest_digest": image.manifest_digest.as_ref().map(ToString::to_string),
            "to": to.display().to_string(), "layers": layers, "uncompressed_bytes": bytes, "elapsed_seconds": elapsed,
        });
        writeln!(out, "{report}")?;
    } else {
        writeln!(
            out,
            "unpacked {} ({}, {}, {} layers, {:.1} MB) to {} in {:.2} s ({:.0} MB/s)",
            image.name,
            image.format,
            image.platform,
            image.layers.len(),
            bytes as f64 / 1e6,
            to.display(),
            elapsed,
            bytes as f64 / 1e6 / elapsed.max(1e-9),
        )?;
    }
    Ok(())
}

/// A fresh private (0700) staging dir beside `to`, after checking `to` can be created;
/// the rootfs is built in its `rootfs` child and renamed to `to` when complete.
fn staging_dir(to: &Path) -> anyhow::Result<PathBuf> {
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} is not empty; unpack needs a new or empty directory", to.display());
            }
            std::fs::remove_dir(to).with_context(|| format!("replacing the empty directory {}", to.display()))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", to.display())),
    }
    let parent = to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "rootfs".into());
    let staging = parent.join(format!(".{name}.strata-partial-{}", std::process::id()));
    // 0700: while layers apply, no other user can reach the tree (not even a 0777
    // directory of the image), so none can swap a path under the apply.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("creating the staging dir {}", staging.display()))?;
    Ok(staging)
}

fn apply_all(image: &Image, staging: &Path, quiet: bool) -> anyhow::Result<Vec<strata_core::ApplyReport>> {
    let total = image.layers.len();
    let mut reports = Vec::with_capacity(total);
    for layer in &image.layers {
        let n = layer.index + 1;
        let what =
            || format!("layer {n}/{total} ({}) of {} ({})", layer.diff_id, image.name, image.source_path().display());
        let mut builder = ApplyBuilder::new(Mode::Flat).expect_diff_id(layer.diff_id.clone());
        if let Some(digest) = &layer.digest {
            builder = builder.expect_digest(digest.clone());
        }
        let blob = image.open_layer(layer).with_context(what)?;
        let input = progress::reader(blob, Some(layer.size), &format!("layer {n}/{total}"));
        let bar = input.handle();
        let applied = builder.build()?.apply(input, staging);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let report = applied.with_context(what)?;
        if !quiet {
            eprintln!(
                "layer {n}/{total} {} ({}) {:.1} MB, {} entries, {:.2} s",
                layer.diff_id,
                report.compression,
                report.uncompressed_bytes as f64 / 1e6,
                report.entries,
                report.elapsed.as_secs_f64()
            );
        }
        for warning in &report.warnings {
            eprintln!("strata: warning: layer {n}/{total}: {warning}");
        }
        reports.push(report);
    }
    Ok(reports)
}

fn unpack_into_store(args: &UnpackArgs, root: &RootArgs, image: &Image) -> anyhow::Result<()> {
    let store = root.open()?;
    let started = Instant::now();
    let total = image.layers.len();
    let name = args.name.clone().unwrap_or_else(|| image.name.clone());
    let mut options = UnpackOptions { xattrs: args.userxattr.then_some(XattrNamespace::User), ..Default::default() };
    if let Some(jobs) = args.jobs {
        options.jobs = usize::from(jobs);
    }
    let reporter = progress::LayerReporter::new(total, args.json);
    let outcome = rootfs::unpack_image(&store, image, &name, options, &reporter.progress()).with_context(|| {
        format!("unpacking {} ({}) into {}", image.name, image.source_path().display(), store.root().display())
    })?;
    reporter.finish();
    let top = outcome.chains.last().map(ToString::to_string);
    let elapsed = started.elapsed().as_secs_f64();
    let unpacked: Vec<_> = outcome.reports.iter().flatten().collect();
    let bytes: u64 = unpacked.iter().map(|r| r.uncompressed_bytes).sum();
    let mut out = io::stdout().lock();
    if args.json {
        let layers: Vec<_> = outcome
            .chains
            .iter()
            .zip(&outcome.reports)
            .zip(&image.layers)
            .map(|((chain, report), layer)| {
                json!({"chain_id": chain.to_string(), "diff_id": layer.diff_id.to_string(), "reused": report.is_none(),
                       "uncompressed_bytes": report.as_ref().map(|r| r.uncompressed_bytes),
                       "elapsed_seconds": report.as_ref().map(|r| r.elapsed.as_secs_f64())})
            })
            .collect();
        let report = json!({"name": name, "image": image.name, "platform": image.platform.to_string(),
            "config_digest": image.config_digest.to_string(), "top_chain": top, "layers": layers,
            "uncompressed_bytes": bytes, "elapsed_seconds": elapsed, "root": store.root().display().to_string()});
        writeln!(out, "{report}")?;
    } else {
        writeln!(
            out,
            "unpacked {name}: {total} layers ({} reused), {:.1} MB in {:.2} s ({:.0} MB/s); top chain {}",
            total - unpacked.len(),
            bytes as f64 / 1e6,
            elapsed,
            bytes as f64 / 1e6 / elapsed.max(1e-9),
            top.as_deref().unwrap_or("(none: no layers)")
        )?;
    }
    Ok(())
}
