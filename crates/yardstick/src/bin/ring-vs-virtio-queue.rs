//! Ratio benchmark: Vireo's device (`DeviceQueue` over `VmMemory`) against rust-vmm's
//! `virtio_queue::Queue` on identical work, driven by Vireo's split driver over one
//! `vm_memory::GuestMemoryMmap`, interleaved over several rounds (the run order alternates per
//! round). Prints ns/buffer for each and the median of the per-round ratios vireo/virtio-queue
//! (below 1.0: Vireo's device is faster). A third device, rust-vmm's queue driven the way
//! Firecracker-style devices drive it (`pop_descriptor_chain` and `add_used` per chain), gets its
//! own ratio ("pop"). Every run verifies every token.
//!
//! Usage: ring-vs-virtio-queue [--rounds N] [--buffers N] [--batch N] [--outstanding N]
//!        [--queue-size N] [--only NAME] [--single-thread] [--count DEVICE]
//! `--single-thread`: both sides on one thread taking turns (polling configurations): the work
//! per buffer without scheduling noise. `--count DEVICE` (vireo, virtio-queue,
//! virtio-queue-pop): one single-thread run of that device, for `valgrind --tool=callgrind`.
//! (eventfd configurations run a quarter of the buffers).

use std::process::ExitCode;

use vireo_spec::Features;
use vireo_yardstick::{
    run, run_single_thread, Device, NotifyKind, Options, Report, YardstickError,
};

/// One configuration: a name, ring features, how idle sides wait.
struct Config {
    name: &'static str,
    features: Features,
    kind: NotifyKind,
}

const CONFIGS: [Config; 5] = [
    Config {
        name: "poll",
        features: Features::empty(),
        kind: NotifyKind::Poll,
    },
    Config {
        name: "poll-event-idx",
        features: Features::EVENT_IDX,
        kind: NotifyKind::Poll,
    },
    Config {
        name: "poll-indirect",
        features: Features::INDIRECT_DESC,
        kind: NotifyKind::Poll,
    },
    Config {
        name: "eventfd",
        features: Features::empty(),
        kind: NotifyKind::EventFd,
    },
    Config {
        name: "eventfd-event-idx",
        features: Features::EVENT_IDX,
        kind: NotifyKind::EventFd,
    },
];

/// The devices compared, in report order: Vireo's, rust-vmm's with `iter` per batch (the
/// like-for-like peer), rust-vmm's with `pop_descriptor_chain` per chain.
const DEVICES: [Device; 3] = [Device::Vireo, Device::RustVmm, Device::RustVmmPop];

struct Args {
    rounds: usize,
    base: Options,
    only: Option<String>,
    /// Both sides on one thread taking turns (polling configurations only).
    single_thread: bool,
    /// Run only this device, once, single-threaded (for instruction counts).
    count: Option<Device>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rounds: 9,
        base: Options {
            buffers: 1_000_000,
            ..Options::default()
        },
        only: None,
        single_thread: false,
        count: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--single-thread" {
            args.single_thread = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        let small = || {
            number().and_then(|n| u16::try_from(n).map_err(|_| format!("{flag} {value}: too big")))
        };
        match flag.as_str() {
            "--rounds" => args.rounds = number()?.clamp(1, 1000) as usize,
            "--buffers" => args.base.buffers = number()?.clamp(16, 1 << 34),
            "--batch" => args.base.batch = small()?,
            "--outstanding" => args.base.outstanding = small()?,
            "--queue-size" => args.base.queue_size = small()?,
            "--only" => args.only = Some(value),
            "--count" => {
                args.count = Some(
                    DEVICES
                        .into_iter()
                        .find(|d| d.name() == value)
                        .ok_or(format!("--count {value}: not a device"))?,
                );
                args.single_thread = true;
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn one(
    opts: &Options,
    cfg: &Config,
    device: Device,
    single_thread: bool,
) -> Result<Report, YardstickError> {
    let report = if single_thread {
        run_single_thread(opts, device)?
    } else {
        let (kick, call) = cfg.kind.pair()?;
        run(opts, device, kick, call)?
    };
    if !report.verified {
        return Err(YardstickError::Verification(
            "not every token came back exactly once",
            report.completed,
        ));
    }
    Ok(report)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(f64::NAN),
        n => {
            (v.get(n / 2 - 1).copied().unwrap_or(f64::NAN)
                + v.get(n / 2).copied().unwrap_or(f64::NAN))
                / 2.0
        }
    }
}

fn bench(args: &Args, cfg: &Config) -> Result<(), YardstickError> {
    let mut opts = args.base;
    opts.ring_features = cfg.features;
    opts.notify = cfg.kind.mode();
    if cfg.kind == NotifyKind::EventFd {
        opts.buffers = (opts.buffers / 4).max(16);
    }
    // Warm-up (page faults, thread start, caches): a tenth of the buffers on each.
    let warm = Options {
        buffers: (opts.buffers / 10).max(16),
        ..opts
    };
    for device in DEVICES {
        one(&warm, cfg, device, args.single_thread)?;
    }
    // ns/buffer per round, in DEVICES order.
    let mut ns: [Vec<f64>; 3] = Default::default();
    let (mut ratios, mut ratios_pop) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // Rotate the run order so no device always goes first or last.
        let mut round_ns = [0.0f64; 3];
        for k in 0..DEVICES.len() {
            let i = (k + round) % DEVICES.len();
            let (Some(&device), Some(slot)) = (DEVICES.get(i), round_ns.get_mut(i)) else {
                continue;
            };
            *slot = one(&opts, cfg, device, args.single_thread)?.ns_per_buffer();
        }
        let [v, q, p] = round_ns;
        println!(
            "{:<18} round {:>2}: vireo {:>7.1}  virtio-queue {:>7.1}  virtio-queue-pop {:>7.1} ns/buf  ratio {:.3} (pop {:.3})",
            cfg.name, round, v, q, p, v / q, v / p
        );
        for (all, x) in ns.iter_mut().zip(round_ns) {
            all.push(x);
        }
        ratios.push(v / q);
        ratios_pop.push(v / p);
    }
    // The fastest round of each is the least disturbed by other load (a second view that
    // noise can only push up, never down).
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let [ours, theirs, pop] = &mut ns;
    let (best_ours, best_theirs, best_pop) = (best(ours), best(theirs), best(pop));
    println!(
        "SUMMARY {:<18}{} buffers {:>7} batch {:>3} outstanding {:>4} rounds {:>3}: median ns/buf vireo {:>6.1} virtio-queue {:>6.1} (pop {:>6.1}); median ratio vireo/virtio-queue {:.3} (pop {:.3}); best {:.1} vs {:.1} (pop {:.1}) ratio {:.3} (pop {:.3})",
        cfg.name,
        if args.single_thread { " single-thread" } else { "" },
        opts.buffers,
        opts.batch,
        opts.outstanding,
        ratios.len(),
        median(ours),
        median(theirs),
        median(pop),
        median(&mut ratios),
        median(&mut ratios_pop),
        best_ours,
        best_theirs,
        best_pop,
        best_ours / best_theirs,
        best_ours / best_pop,
    );
    Ok(())
}

/// One single-thread run of `device` (under callgrind: instructions per buffer are the
/// difference of two such runs over the difference of their buffers).
fn count(args: &Args, cfg: &Config, device: Device) -> Result<(), YardstickError> {
    let opts = Options {
        ring_features: cfg.features,
        ..args.base
    };
    let r = one(&opts, cfg, device, true)?;
    println!(
        "COUNT {} {} buffers {}: {:.1} ns/buf",
        cfg.name,
        device.name(),
        r.completed,
        r.ns_per_buffer()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ring-vs-virtio-queue: {e}");
            return ExitCode::from(2);
        }
    };
    for cfg in &CONFIGS {
        if args.only.as_deref().is_some_and(|o| o != cfg.name)
            || (args.single_thread && cfg.kind != NotifyKind::Poll)
        {
            continue;
        }
        let result = match args.count {
            Some(device) => count(&args, cfg, device),
            None => bench(&args, cfg),
        };
        if let Err(e) = result {
            eprintln!("ring-vs-virtio-queue: {}: {e}", cfg.name);
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
