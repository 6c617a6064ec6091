//! Subcommands.

mod apply;
mod progress;
mod unpack;

/// What strata can do.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Apply one layer (tar, tar.gz, tar.zst) to a directory, flat or in overlayfs form.
    Apply(apply::ApplyArgs),
    /// Unpack an image (OCI layout or docker-save archive) into a flattened rootfs.
    Unpack(unpack::UnpackArgs),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Apply(args) => apply::run(args),
            Command::Unpack(args) => unpack::run(args),
        }
    }
}
