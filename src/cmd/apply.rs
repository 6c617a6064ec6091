//! `strata apply`: one layer tarball into a directory.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::json;
use strata_core::ovl::XattrNamespace;
use strata_core::{ApplyBuilder, ApplyReport, Digest, Mode};

use super::progress;

/// Apply one layer (tar, tar.gz or tar.zst; sniffed) to a directory.
///
/// In `flat` mode (default) the layer is applied on top of what TARGET holds, as an
/// image's layers stack into one rootfs: `.wh.NAME` deletes NAME, `.wh..wh..opq` empties
/// its directory of lower content. In `overlay` mode TARGET must be empty and receives
/// the layer in kernel overlayfs form (whiteouts as char 0/0 devices, opaque directories
/// with the overlay.opaque xattr), ready to be a lowerdir.
///
/// A rejected or corrupt layer exits 1 naming the entry and the reason; TARGET may then
/// be partly written, but nothing outside it is ever touched.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  strata apply demo/demo-layer.tar.gz /tmp/rootfs\n  strata apply --mode overlay --parent /snap/1 layer2.tar.zst /snap/2\n  zcat layer.tar.gz | strata apply --json - /tmp/rootfs"
)]
pub struct ApplyArgs {
    /// Output form: `flat` (apply on top of a rootfs) or `overlay` (a fresh overlayfs layer dir).
    #[arg(long, value_enum, default_value = "flat")]
    mode: ModeArg,
    /// Lower layer dir, nearest first; repeatable (overlay mode). Supplies implied
    /// directory metadata and hardlink targets that live in lower layers.
    #[arg(long = "parent", value_name = "DIR")]
    parents: Vec<PathBuf>,
    /// Mark opaque dirs with `user.overlay.opaque` (rootless overlayfs, mount option
    /// `userxattr`) instead of `trusted.overlay.opaque`.
    #[arg(long)]
    userxattr: bool,
    /// Fail unless the uncompressed layer hashes to this diff_id (sha256:<hex>).
    #[arg(long, value_name = "SHA")]
    diff_id: Option<Digest>,
    /// Fail unless the layer file hashes to this digest (sha256:<hex>).
    #[arg(long, value_name = "SHA")]
    digest: Option<Digest>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// The layer file, or `-` for standard input.
    layer: PathBuf,
    /// The directory to apply into (created if missing).
    target: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Flat,
    Overlay,
}

pub fn run(args: ApplyArgs) -> anyhow::Result<()> {
    let mode = match args.mode {
        ModeArg::Flat => Mode::Flat,
        ModeArg::Overlay => Mode::Overlay,
    };
    let xattrs = if args.userxattr { XattrNamespace::User } else { XattrNamespace::Trusted };
    let mut builder = ApplyBuilder::new(mode).xattr_namespace(xattrs);
    for parent in &args.parents {
        builder = builder.parent(parent);
    }
    if let Some(d) = args.diff_id.clone() {
        builder = builder.expect_diff_id(d);
    }
    if let Some(d) = args.digest.clone() {
        builder = builder.expect_digest(d);
    }
    let applier = builder.build()?;
    let layer_name = args.layer.display().to_string();
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = if args.layer.as_os_str() == "-" {
        (Box::new(io::stdin()), None)
    } else {
        let file = File::open(&args.layer).with_context(|| format!("cannot open layer {layer_name}"))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let input = progress::reader(input, size, &format!("applying {layer_name}"));
    let bar = input.handle();
    let applied = applier.apply(input, &args.target);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = applied.with_context(|| format!("applying layer {layer_name} to {}", args.target.display()))?;
    for warning in &report.warnings {
        eprintln!("strata: warning: {warning}");
    }
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report_json(&report, &args, mode))?;
    } else {
        writeln!(out, "{}", summary(&report, &layer_name, &args.target, mode))?;
    }
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Flat => "flat",
        Mode::Overlay => "overlay",
    }
}

fn summary(r: &ApplyReport, layer: &str, target: &std::path::Path, mode: Mode) -> String {
    format!(
        "applied {layer} ({}) to {} in {} form: {} entries ({} files, {} dirs, {} symlinks, {} hardlinks, {} devices, {} fifos, {} whiteouts, {} opaque dirs), {:.1} MB in {:.3} s ({:.0} MB/s); diff_id {}",
        r.compression,
        target.display(),
        mode_name(mode),
        r.entries,
        r.files,
        r.dirs,
        r.symlinks,
        r.hardlinks,
        r.devices,
        r.fifos,
        r.whiteouts,
        r.opaque_dirs,
        r.uncompressed_bytes as f64 / 1e6,
        r.elapsed.as_secs_f64(),
        r.megabytes_per_second(),
        r.diff_id,
    )
}

fn report_json(r: &ApplyReport, args: &ApplyArgs, mode: Mode) -> serde_json::Value {
    json!({
        "layer": args.layer.display().to_string(),
        "target": args.target.display().to_string(),
        "mode": mode_name(mode),
        "compression": r.compression.name(),
        "diff_id": r.diff_id.to_string(),
        "digest": r.digest.to_string(),
        "compressed_bytes": r.compressed_bytes,
        "uncompressed_bytes": r.uncompressed_bytes,
        "entries": r.entries,
        "files": r.files,
        "dirs": r.dirs,
        "symlinks": r.symlinks,
        "hardlinks": r.hardlinks,
        "devices": r.devices,
        "fifos": r.fifos,
        "whiteouts": r.whiteouts,
        "opaque_dirs": r.opaque_dirs,
        "root_opaque": r.root_opaque,
        "bytes": r.bytes,
        "xattrs_filtered": r.xattrs_filtered,
        "warnings": r.warnings,
        "elapsed_seconds": r.elapsed.as_secs_f64(),
        "megabytes_per_second": r.megabytes_per_second(),
    })
}
