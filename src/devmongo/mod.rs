//! MongoDB wire-protocol dev server (filled in by its own change).
use anyhow::Result;

/// Flags of `tweet-embed dev-mongo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevMongoArgs {
    /// Port to listen on (loopback).
    #[arg(long, default_value_t = 27017)]
    pub port: u16,
}

/// Runs `tweet-embed dev-mongo` until interrupted.
pub fn run(_args: DevMongoArgs) -> Result<()> {
    anyhow::bail!("dev-mongo is not built yet")
}
