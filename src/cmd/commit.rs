//! `strata diff` and `strata commit`: a container's writable layer, listed or turned
//! back into an image.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::json;
use strata::rootfs::{self, CommitOptions};
use strata_core::Compression;
use strata_core::diff::DiffOptions;

use super::store::RootArgs;

/// Which writable layer (with the mount point, given apart) and what to leave out.
#[derive(Debug, clap::Args)]
pub struct LayerArgs {
    /// The writable layer's name (`strata mount --name`), mounted or not, instead of a
    /// mount point.
    #[arg(long)]
    name: Option<String>,
    /// Leave out this path (relative to the rootfs, e.g. `etc/hosts`) and everything
    /// below it; repeat for more (files a runtime injects per container).
    #[arg(long, value_name = "PATH")]
    exclude: Vec<PathBuf>,
}

impl LayerArgs {
    /// The active snapshot of `--name`, or of the mount at `target`.
    fn key(&self, store: &strata_store::Store, target: Option<&PathBuf>) -> anyhow::Result<String> {
        match (&self.name, target) {
            (Some(name), None) => return Ok(name.clone()),
            (Some(_), Some(target)) => bail!("give a mount point ({}) or --name, not both", target.display()),
            (None, None) => bail!("which writable layer? give a mount point or --name"),
            (None, Some(_)) => {}
        }
        let target = target.expect("checked above");
        let canonical = std::fs::canonicalize(target).with_context(|| format!("mount point {}", target.display()))?;
        let record = store
            .mount_records()?
            .into_iter()
            .find(|m| Path::new(&m.target) == canonical)
            .with_context(|| format!("{} is not a strata mount (see `strata ps`)", target.display()))?;
        record.key.with_context(|| format!("{} is a read-only mount: it has no changes", target.display()))
    }

    fn options(&self) -> anyhow::Result<DiffOptions> {
        let source_date_epoch = DiffOptions::source_date_epoch_from_env().map_err(anyhow::Error::msg)?;
        for x in &self.exclude {
            if x.is_absolute() || x.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                bail!("--exclude {}: give a path relative to the rootfs, without `..`", x.display());
            }
        }
        Ok(DiffOptions { source_date_epoch, exclude: self.exclude.clone(), ..DiffOptions::default() })
    }
}

/// List what a container changed: `A` added, `C` changed, `D` deleted, a path a line
/// (as `docker diff`).
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// A mount point made by `strata mount` (or give --name).
    target: Option<PathBuf>,
    #[command(flatten)]
    layer: LayerArgs,
    /// Print JSON (`[{"kind": "A", "path": "/etc/x"}, ...]`).
    #[arg(long)]
    json: bool,
}

pub fn diff(args: DiffArgs, root: &RootArgs) -> anyhow::Result<()> {
    let store = root.open()?;
    let key = args.layer.key(&store, args.target.as_ref())?;
    let changes = store.changes(&key, &args.layer.options()?)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<_> = changes
            .iter()
            .map(|c| json!({"kind": c.kind.letter().to_string(), "path": format!("/{}", c.path.display())}))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        for c in &changes {
            writeln!(out, "{} /{}", c.kind.letter(), c.path.display())?;
        }
    }
    Ok(())
}

/// Layer compression for `commit`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LayerCompression {
    /// gzip, level 6 (what registries and `docker push` use).
    Gzip,
    /// zstd, level 3 (containerd's default).
    Zstd,
}

/// Options of `strata commit` (the help text is on the subcommand).
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// [TARGET] OUT: the mount point (or give --name), then the OCI layout to write
    /// (created if missing, else added to).
    #[arg(value_name = "TARGET|OUT", num_args = 1..=2, required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    layer: LayerArgs,
    /// The new image's reference in the layout.
    #[arg(long = "ref", value_name = "NAME:TAG")]
    reference: String,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: LayerCompression,
    /// History comment.
    #[arg(long, short)]
    message: Option<String>,
    /// Author (config and history).
    #[arg(long)]
    author: Option<String>,
    /// The base image's layout or archive [default: where `strata unpack`/`mount` read it].
    #[arg(long, value_name = "IMAGE")]
    base: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn commit(args: CommitArgs, root: &RootArgs) -> anyhow::Result<()> {
    let store = root.open()?;
    let (target, out) = match args.paths.as_slice() {
        [out] => (None, out.clone()),
        [target, out] => (Some(target), out.clone()),
        _ => bail!("usage: strata commit TARGET OUT --ref NAME:TAG, or strata commit --name NAME OUT --ref NAME:TAG"),
    };
    let key = args.layer.key(&store, target)?;
    let options = CommitOptions {
        key: key.clone(),
        base: args.base.clone(),
        out: out.clone(),
        reference: args.reference.clone(),
        compression: match args.compression {
            LayerCompression::Gzip => Compression::Gzip,
            LayerCompression::Zstd => Compression::Zstd,
        },
        message: args.message.clone(),
        author: args.author.clone(),
        diff: args.layer.options()?,
    };
    let started = std::time::Instant::now();
    let done = rootfs::commit(&store, &options).with_context(|| format!("committing {key:?}"))?;
    let r = &done.layer.report;
    if args.json {
        let value = json!({"reference": args.reference, "layout": out, "manifest": done.manifest_digest,
            "base": done.base, "layer": {"digest": done.layer.digest.to_string(), "diff_id": done.layer.diff_id.to_string(),
            "size": done.layer.size, "entries": r.entries, "whiteouts": r.whiteouts, "opaque_dirs": r.opaque_dirs,
            "hardlinks": r.hardlinks, "data_bytes": r.data_bytes, "skipped": r.skipped},
            "seconds": started.elapsed().as_secs_f64()});
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "committed {key} as {} in {} ({}) in {:.2} s\n  layer {} ({} bytes; {} entries, {} deleted, {} opaque dirs, {} hard links)",
            args.reference,
            out.display(),
            done.manifest_digest,
            started.elapsed().as_secs_f64(),
            done.layer.digest,
            done.layer.size,
            r.entries,
            r.whiteouts,
            r.opaque_dirs,
            r.hardlinks
        );
        if r.skipped > 0 {
            println!("  left out {} socket(s): a layer cannot hold them", r.skipped);
        }
    }
    Ok(())
}
