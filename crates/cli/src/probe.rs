//! `vireo probe`: connect to any vhost-user backend and print what it offers.

use clap::Args;

/// Arguments of `vireo probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The backend's Unix socket.
    #[arg(long)]
    socket: std::path::PathBuf,
}

/// Probes the backend and prints the result.
pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    anyhow::bail!("vireo probe is not built yet (socket {})", args.socket.display())
}
