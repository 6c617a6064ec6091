//! Subcommands.

mod apply;

/// What strata can do.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Apply(apply::ApplyArgs),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Apply(args) => apply::run(args),
        }
    }
}
