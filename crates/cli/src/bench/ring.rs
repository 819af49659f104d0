//! `vireo bench ring`: both sides of one virtqueue in this process, moving N buffers.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use rustix::event::{eventfd, EventfdFlags};
use serde::Serialize;
use vireo_queue::loopback::{
    self, LoopbackOptions, Notifier, NotifyMode, Payload, PollingNotifier,
};
use vireo_queue::RingFormat;
use vireo_spec::Features;

/// Ring format on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// Split virtqueue (virtio 1.2 §2.7).
    Split,
    /// Packed virtqueue (virtio 1.2 §2.8).
    Packed,
}

/// Notification mechanism on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NotifyArg {
    /// Both sides poll; no notifications are sent.
    Poll,
    /// Kicks and calls are eventfds; an idle side sleeps in read(2).
    Eventfd,
}

/// What each buffer carries, on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PayloadArg {
    /// A readable segment with a sequence number that the device echoes into a writable one:
    /// data checked both ways.
    Echo,
    /// One writable descriptor, no data touched (ringtest's shape); tokens and lengths are
    /// still verified.
    None,
}

/// Arguments of `vireo bench ring`.
#[derive(Debug, Args)]
pub struct RingArgs {
    /// Ring format.
    #[arg(long, value_enum, default_value = "split")]
    format: FormatArg,
    /// Negotiate VIRTIO_F_EVENT_IDX.
    #[arg(long)]
    event_idx: bool,
    /// Negotiate VIRTIO_F_INDIRECT_DESC (each buffer then uses an indirect table).
    #[arg(long)]
    indirect: bool,
    /// Negotiate VIRTIO_F_IN_ORDER.
    #[arg(long)]
    in_order: bool,
    /// Buffers to move (1 to 2^34: every token is tracked in a bitmap of buffers/8 bytes).
    #[arg(long, default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=(1u64 << 34)))]
    buffers: u64,
    /// Buffers per batch (adds before a kick decision; uses before a notify decision).
    #[arg(long, default_value_t = 32)]
    batch: u16,
    /// Most buffers in flight.
    #[arg(long, default_value_t = 128)]
    outstanding: u16,
    /// Queue size.
    #[arg(long, default_value_t = 256)]
    queue_size: u16,
    /// How the sides notify each other.
    #[arg(long, value_enum, default_value = "poll")]
    notify: NotifyArg,
    /// What each buffer carries.
    #[arg(long, value_enum, default_value = "echo")]
    payload: PayloadArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct RingReport {
    format: &'static str,
    notify: &'static str,
    payload: &'static str,
    event_idx: bool,
    indirect: bool,
    in_order: bool,
    queue_size: u16,
    batch: u16,
    outstanding: u16,
    buffers: u64,
    completed: u64,
    ns_per_buffer: f64,
    mbuffers_per_second: f64,
    kicks: u64,
    calls: u64,
    driver_sleeps: u64,
    device_sleeps: u64,
    verified: bool,
}

/// An eventfd used as a one-way notifier: `notify` writes 1, `wait` blocks in read(2).
struct EventFdNotifier(OwnedFd);

impl Notifier for EventFdNotifier {
    fn notify(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
    fn wait(&self) {
        let mut b = [0u8; 8];
        loop {
            match rustix::io::read(&self.0, &mut b) {
                Err(rustix::io::Errno::INTR) => continue,
                _ => return,
            }
        }
    }
}

fn notifier(kind: NotifyArg) -> anyhow::Result<Arc<dyn Notifier>> {
    Ok(match kind {
        NotifyArg::Poll => Arc::new(PollingNotifier),
        NotifyArg::Eventfd => Arc::new(EventFdNotifier(
            eventfd(0, EventfdFlags::CLOEXEC).context("creating an eventfd")?,
        )),
    })
}

/// Runs the benchmark and prints its report.
pub fn run(args: &RingArgs) -> anyhow::Result<()> {
    let mut ring_features = Features::empty();
    ring_features.set(Features::EVENT_IDX, args.event_idx);
    ring_features.set(Features::INDIRECT_DESC, args.indirect);
    ring_features.set(Features::IN_ORDER, args.in_order);
    let options = LoopbackOptions {
        format: match args.format {
            FormatArg::Split => RingFormat::Split,
            FormatArg::Packed => RingFormat::Packed,
        },
        ring_features,
        queue_size: args.queue_size,
        buffers: args.buffers,
        batch: args.batch,
        outstanding: args.outstanding.min(args.queue_size),
        notify: match args.notify {
            NotifyArg::Poll => NotifyMode::Poll,
            NotifyArg::Eventfd => NotifyMode::Block,
        },
        payload: match args.payload {
            PayloadArg::Echo => Payload::Echo,
            PayloadArg::None => Payload::None,
        },
    };
    let report = loopback::run(&options, notifier(args.notify)?, notifier(args.notify)?)
        .context("ring loopback failed")?;
    let ns = report.ns_per_buffer();
    let out = RingReport {
        format: match args.format {
            FormatArg::Split => "split",
            FormatArg::Packed => "packed",
        },
        notify: match args.notify {
            NotifyArg::Poll => "poll",
            NotifyArg::Eventfd => "eventfd",
        },
        payload: match args.payload {
            PayloadArg::Echo => "echo",
            PayloadArg::None => "none",
        },
        event_idx: args.event_idx,
        indirect: args.indirect,
        in_order: args.in_order,
        queue_size: args.queue_size,
        batch: args.batch,
        outstanding: options.outstanding,
        buffers: args.buffers,
        completed: report.completed,
        ns_per_buffer: ns,
        mbuffers_per_second: if ns > 0.0 { 1e3 / ns } else { 0.0 },
        kicks: report.kicks,
        calls: report.calls,
        driver_sleeps: report.driver_sleeps,
        device_sleeps: report.device_sleeps,
        verified: report.verified,
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{} ring, {} notify: {} buffers in {:.3} s: {:.1} ns/buffer ({:.2} M buffers/s), {} kicks ({} device sleeps), {} calls ({} driver sleeps), verified: {}",
            out.format,
            out.notify,
            out.completed,
            report.elapsed.as_secs_f64(),
            out.ns_per_buffer,
            out.mbuffers_per_second,
            out.kicks,
            out.device_sleeps,
            out.calls,
            out.driver_sleeps,
            out.verified
        );
    }
    if !report.verified {
        anyhow::bail!("not every buffer was verified");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: super::RingArgs,
    }

    #[test]
    fn buffers_are_bounded_so_the_token_bitmap_fits() {
        assert!(Wrapper::try_parse_from(["t", "--buffers", "18446744073709551615"]).is_err());
        assert!(Wrapper::try_parse_from(["t", "--buffers", "0"]).is_err());
        let ok = Wrapper::try_parse_from(["t", "--buffers", "17179869184"]).unwrap();
        assert_eq!(ok.args.buffers, 1 << 34);
    }
}
