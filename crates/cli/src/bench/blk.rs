//! `vireo bench blk`: drive a vhost-user-blk backend with Vireo's frontend and blk driver.

use clap::Args;

/// Arguments of `vireo bench blk`.
#[derive(Debug, Args)]
pub struct BlkBenchArgs {
    /// The backend's Unix socket.
    #[arg(long)]
    socket: std::path::PathBuf,
}

/// Runs the benchmark and prints its report.
pub fn run(args: &BlkBenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("vireo bench blk is not built yet (socket {})", args.socket.display())
}
