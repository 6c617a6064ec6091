//! Where the snapshot store lives: `--root`, `$STRATA_ROOT`, or the default for the user.

use std::path::PathBuf;

use anyhow::Context as _;
use strata_store::Store;

/// The store root options shared by every store command.
#[derive(Debug, Clone, clap::Args)]
pub struct RootArgs {
    /// The store root [default: /var/lib/strata as root, else $XDG_DATA_HOME/strata or
    /// ~/.local/share/strata].
    #[arg(long, global = true, env = "STRATA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl RootArgs {
    /// The root to use.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(root) = &self.root {
            return Ok(root.clone());
        }
        if rustix::process::geteuid().is_root() {
            return Ok(PathBuf::from("/var/lib/strata"));
        }
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(data).join("strata"));
        }
        let home = std::env::var_os("HOME").context("neither --root, STRATA_ROOT, XDG_DATA_HOME nor HOME is set")?;
        Ok(PathBuf::from(home).join(".local/share/strata"))
    }

    /// Opens the store (cleaning up after crashed processes).
    pub fn open(&self) -> anyhow::Result<Store> {
        let root = self.path()?;
        Store::open(&root).with_context(|| format!("opening the snapshot store at {}", root.display()))
    }
}
