//! `vireo blk`: a virtio-blk device daemon over vhost-user.

use clap::Args;

/// Arguments of `vireo blk`.
#[derive(Debug, Args)]
pub struct BlkArgs {
    /// Unix socket to listen on.
    #[arg(long)]
    socket: std::path::PathBuf,
}

/// Serves the device until SIGINT or SIGTERM.
pub fn run(args: &BlkArgs) -> anyhow::Result<()> {
    anyhow::bail!("vireo blk is not built yet (socket {})", args.socket.display())
}
