//! `strata snapshots ls|info|usage|rm`.

use std::io::{self, Write};

use serde_json::json;
use strata_store::Info;

use super::store::RootArgs;

/// Inspect and remove snapshots.
#[derive(Debug, clap::Args)]
pub struct SnapshotsArgs {
    #[command(subcommand)]
    command: SnapshotsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SnapshotsCommand {
    /// List every snapshot.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one snapshot with its mount spec.
    Info {
        /// The snapshot key.
        key: String,
    },
    /// Disk use of one snapshot, or of all.
    Usage {
        /// The snapshot key (default: all).
        key: Option<String>,
    },
    /// Remove a snapshot (it must have no children and not be an image's top layer).
    Rm {
        /// The snapshot key.
        key: String,
    },
}

fn info_json(i: &Info) -> serde_json::Value {
    json!({"key": i.key, "parent": i.parent, "kind": i.kind.to_string(), "labels": i.labels,
           "created": i.created, "updated": i.updated, "root_opaque": i.root_opaque})
}

pub fn run(args: SnapshotsArgs, root: &RootArgs) -> anyhow::Result<()> {
    let store = root.open()?;
    let mut out = io::stdout().lock();
    match args.command {
        SnapshotsCommand::Ls { json } => {
            let all = store.walk()?;
            if json {
                writeln!(out, "{}", serde_json::Value::Array(all.iter().map(info_json).collect()))?;
            } else {
                writeln!(out, "{:<72} {:<10} PARENT", "KEY", "KIND")?;
                for i in all {
                    writeln!(out, "{:<72} {:<10} {}", i.key, i.kind, i.parent.as_deref().unwrap_or("-"))?;
                }
            }
        }
        SnapshotsCommand::Info { key } => {
            let info = store.stat(&key)?;
            let mounts = store.mounts(&key)?;
            let mut value = info_json(&info);
            value["mounts"] = json!({
                "lowers": mounts.lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "upper": mounts.upper.map(|p| p.display().to_string()),
                "work": mounts.work.map(|p| p.display().to_string()),
                "read_only": mounts.read_only,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        }
        SnapshotsCommand::Usage { key } => {
            let keys = match key {
                Some(k) => vec![k],
                None => store.walk()?.into_iter().map(|i| i.key).collect(),
            };
            writeln!(out, "{:<72} {:>12} {:>9}", "KEY", "BYTES", "INODES")?;
            for k in keys {
                let u = store.usage(&k)?;
                writeln!(out, "{k:<72} {:>12} {:>9}", u.bytes, u.inodes)?;
            }
        }
        SnapshotsCommand::Rm { key } => {
            store.remove(&key)?;
            writeln!(out, "removed {key}")?;
        }
    }
    Ok(())
}
