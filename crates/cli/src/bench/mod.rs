//! `vireo bench ...`.

mod blk;
mod ring;

use clap::Subcommand;

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Both sides of one virtqueue in this process, on two threads (the loop shape of the Linux
    /// kernel's tools/virtio/ringtest).
    Ring(ring::RingArgs),
    /// A vhost-user-blk backend driven by Vireo's frontend and virtio-blk driver.
    Blk(blk::BlkBenchArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ring(args) => ring::run(&args),
        BenchCommand::Blk(args) => blk::run(&args),
    }
}
