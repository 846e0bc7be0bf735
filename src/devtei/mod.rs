//! TEI simulator (filled in by its own change).
use anyhow::Result;

/// Flags of `tweet-embed dev-tei`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevTeiArgs {
    /// Number of simulated GPUs, one endpoint each.
    #[arg(long, default_value_t = 4)]
    pub gpus: usize,
    /// Port of the first GPU's endpoint; the others follow.
    #[arg(long, default_value_t = 18080)]
    pub base_port: u16,
}

/// Runs `tweet-embed dev-tei` until interrupted.
pub fn run(_args: DevTeiArgs) -> Result<()> {
    anyhow::bail!("dev-tei is not built yet")
}
