//! The `vireo` command: serve virtio devices over vhost-user, probe and benchmark backends, and
//! benchmark Vireo's own rings.
#![forbid(unsafe_code)]

mod bench;
mod blk;
mod probe;

use clap::{Parser, Subcommand};

/// Vireo: virtio in Rust.
#[derive(Debug, Parser)]
#[command(name = "vireo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a virtio-blk device over vhost-user (a device daemon for QEMU or Cloud Hypervisor).
    Blk(blk::BlkArgs),
    /// Connect to a vhost-user backend and print what it offers.
    Probe(probe::ProbeArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Blk(args) => blk::run(&args),
        Command::Probe(args) => probe::run(&args),
        Command::Bench { what } => bench::run(what),
    }
}
