//! `vireo bench ...`.

mod ring;

use clap::Subcommand;

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Both sides of one virtqueue in this process, on two threads (the loop shape of the Linux
    /// kernel's tools/virtio/ringtest).
    Ring(ring::RingArgs),
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ring(args) => ring::run(&args),
    }
}
