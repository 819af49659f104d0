//! The `vireo` command: serve virtio devices over vhost-user, probe and benchmark backends, and
//! benchmark Vireo's own rings.
#![forbid(unsafe_code)]

mod bench;

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
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { what } => bench::run(what),
    }
}
