//! `strata images`, `strata rmi`, `strata gc`.

use std::io::{self, Write};

use serde_json::json;

use super::store::RootArgs;

/// List the images recorded in the store.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn list(args: ImagesArgs, root: &RootArgs) -> anyhow::Result<()> {
    let store = root.open()?;
    let images = store.images()?;
    let mut out = io::stdout().lock();
    if args.json {
        let list: Vec<_> = images
            .iter()
            .map(|i| json!({"name": i.name, "manifest_digest": i.manifest_digest, "config_digest": i.config_digest, "top_chain": i.top_chain, "created": i.created}))
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(list))?;
        return Ok(());
    }
    writeln!(out, "{:<32} {:<20} TOP CHAIN", "NAME", "IMAGE ID")?;
    for i in images {
        let id = i.config_digest.strip_prefix("sha256:").unwrap_or(&i.config_digest);
        writeln!(out, "{:<32} {:<20} {}", i.name, &id[..id.len().min(12)], i.top_chain.as_deref().unwrap_or("-"))?;
    }
    Ok(())
}

/// Forget an image (its layers stay until `strata gc`).
#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// The image name, as `strata images` shows it.
    name: String,
}

pub fn rmi(args: RmiArgs, root: &RootArgs) -> anyhow::Result<()> {
    root.open()?.remove_image(&args.name)?;
    println!("removed image {}", args.name);
    Ok(())
}

/// Remove layer snapshots no image and no container snapshot uses.
#[derive(Debug, clap::Args)]
pub struct GcArgs {}

pub fn gc(_args: GcArgs, root: &RootArgs) -> anyhow::Result<()> {
    let store = root.open()?;
    let removed = store.gc()?;
    let mut out = io::stdout().lock();
    for key in &removed {
        writeln!(out, "removed {key}")?;
    }
    writeln!(out, "gc: removed {} snapshot(s)", removed.len())?;
    Ok(())
}
