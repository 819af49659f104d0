//! Does the format-independent face cost anything? Runs the same single-threaded ring loop
//! (driver adds a batch, publishes; device pops, walks, uses, publishes, decides; driver reaps)
//! three ways, interleaved round by round:
//! - `direct`: written against the format's own types (`SplitDeviceQueue`/`SplitDriverQueue`,
//!   packed likewise), calling their inherent methods;
//! - `generic`: one function generic over `DeviceRing`/`DriverRing`, called with the format's
//!   own types (the compiler makes one copy per format: what a device written once runs);
//! - `enum`: written against the enums `DeviceQueue`/`DriverQueue`, a `match` in every call.
//!
//! It prints each path's median ns per buffer and the median ratios generic/direct (1.00: the
//! trait costs nothing) and enum/direct per format. Timing is std's `Instant`; the machine is
//! noisy, so only the ratios of interleaved rounds mean anything.
//!
//! `cargo bench -p vireo-queue --bench dispatch [-- ROUNDS]`, or
//! `... -- --only {split,packed}-{direct,generic,enum} ITERATIONS` to run one variant alone (for
//! `valgrind --tool=callgrind`, which counts instructions deterministically).

// A benchmark, not peer-facing code: a failed expectation is a failed run.
#![allow(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use vireo_memory::{GuestMemoryMap, OwnedRegion};
use vireo_queue::device::{
    DeviceQueue, DeviceQueueState, DeviceRing, Direction, PackedDeviceQueue, SplitDeviceQueue,
};
use vireo_queue::driver::{
    BufferSegment, DriverQueue, DriverQueueOptions, DriverRing, PackedDriverQueue, SplitDriverQueue,
};
use vireo_queue::{QueueConfig, RingFormat};
use vireo_spec::Features;

const BASE: u64 = 0x4000_0000;
const QUEUE_SIZE: u16 = 256;
const BATCH: u16 = 32;
const BUF_LEN: u32 = 32;

/// The body of every variant: `iterations` batches of `BATCH` buffers through the ring; the
/// checksum. Method calls resolve to the inherent methods of concrete types and enums, and to
/// the traits' in the generic function: the same text, three ways of calling.
macro_rules! ring_loop {
    ($driver:ident, $device:ident, $mem:ident, $buffers:ident, $iterations:ident) => {{
        let mut sum = 0u64;
        let mut token = 0u64;
        for _ in 0..$iterations {
            for i in 0..BATCH {
                let seg = BufferSegment::new($buffers + u64::from(i) * u64::from(BUF_LEN), BUF_LEN);
                $driver.add(&[], &[seg], token).expect("add");
                token += 1;
            }
            sum += u64::from($driver.kick_prepare().expect("kick"));
            while let Some(c) = $device.pop().expect("pop") {
                let mut written = 0;
                for s in $device.chain(&c, $mem) {
                    let s = s.expect("segment");
                    if s.direction == Direction::DeviceWritable {
                        written = (s.addr % 7) as u32;
                    }
                }
                $device.add_used(&c, written).expect("use");
            }
            $device.publish_used().expect("publish");
            sum += u64::from($device.needs_notification().expect("notify"));
            while let Some(u) = $driver.pop_used().expect("reap") {
                sum = sum.wrapping_add(u.token ^ u64::from(u.written));
            }
        }
        sum
    }};
}

#[inline(never)]
fn run_split_direct(
    driver: &mut SplitDriverQueue<u64>,
    device: &mut SplitDeviceQueue,
    mem: &GuestMemoryMap,
    buffers: u64,
    iterations: u32,
) -> u64 {
    ring_loop!(driver, device, mem, buffers, iterations)
}

#[inline(never)]
fn run_packed_direct(
    driver: &mut PackedDriverQueue<u64>,
    device: &mut PackedDeviceQueue,
    mem: &GuestMemoryMap,
    buffers: u64,
    iterations: u32,
) -> u64 {
    ring_loop!(driver, device, mem, buffers, iterations)
}

#[inline(never)]
fn run_generic<Dr: DriverRing<u64>, De: DeviceRing>(
    driver: &mut Dr,
    device: &mut De,
    mem: &GuestMemoryMap,
    buffers: u64,
    iterations: u32,
) -> u64 {
    ring_loop!(driver, device, mem, buffers, iterations)
}

#[inline(never)]
fn run_enum(
    driver: &mut DriverQueue<u64>,
    device: &mut DeviceQueue,
    mem: &GuestMemoryMap,
    buffers: u64,
    iterations: u32,
) -> u64 {
    ring_loop!(driver, device, mem, buffers, iterations)
}

/// How the loop calls the queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Generic,
    Enum,
}

const PATHS: [Path; 3] = [Path::Direct, Path::Generic, Path::Enum];

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Generic => "generic",
            Path::Enum => "enum",
        }
    }
}

/// One ring in one region: the driver queue (as the enum) and the device queue (as the enum),
/// to be taken apart into the format's own types or kept.
struct Setup {
    mem: Arc<GuestMemoryMap>,
    driver: DriverQueue<u64>,
    device: DeviceQueue,
    buffers: u64,
}

fn setup(format: RingFormat) -> Setup {
    let mut features = Features::VERSION_1 | Features::EVENT_IDX;
    if format == RingFormat::Packed {
        features |= Features::RING_PACKED;
    }
    let opts = DriverQueueOptions::default();
    let ring = vireo_queue::driver::required_size(format, QUEUE_SIZE, features, &opts)
        .next_multiple_of(4096);
    let data = usize::from(QUEUE_SIZE) * BUF_LEN as usize;
    let area = OwnedRegion::new_area(ring + data).expect("region");
    let mem = Arc::new(GuestMemoryMap::single(BASE, area.clone()).expect("map"));
    let ring_area = area.sub_area(0, ring).expect("ring area");
    let driver =
        DriverQueue::<u64>::new(ring_area, BASE, QUEUE_SIZE, features, opts).expect("driver");
    let config = QueueConfig {
        size: QUEUE_SIZE,
        addrs: driver.addresses(),
        features,
    };
    let device = DeviceQueue::new(&*mem, &config, DeviceQueueState::default()).expect("device");
    Setup {
        mem,
        driver,
        device,
        buffers: BASE + ring as u64,
    }
}

fn time_variant(format: RingFormat, path: Path, iterations: u32) -> f64 {
    let s = setup(format);
    let mem = &*s.mem;
    let b = s.buffers;
    let start = Instant::now();
    let sum = match (path, s.driver, s.device) {
        (Path::Enum, mut dr, mut de) => run_enum(&mut dr, &mut de, mem, b, iterations),
        (Path::Direct, DriverQueue::Split(mut dr), DeviceQueue::Split(mut de)) => {
            run_split_direct(&mut dr, &mut de, mem, b, iterations)
        }
        (Path::Direct, DriverQueue::Packed(mut dr), DeviceQueue::Packed(mut de)) => {
            run_packed_direct(&mut dr, &mut de, mem, b, iterations)
        }
        (Path::Generic, DriverQueue::Split(mut dr), DeviceQueue::Split(mut de)) => {
            run_generic(&mut dr, &mut de, mem, b, iterations)
        }
        (Path::Generic, DriverQueue::Packed(mut dr), DeviceQueue::Packed(mut de)) => {
            run_generic(&mut dr, &mut de, mem, b, iterations)
        }
        _ => unreachable!("both sides have the same format"),
    };
    black_box(sum);
    start.elapsed().as_nanos() as f64 / (f64::from(iterations) * f64::from(BATCH))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (minimum, median, maximum).
fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    let m = median(v);
    (v[0], m, v[v.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let formats = [("split", RingFormat::Split), ("packed", RingFormat::Packed)];
    if args.first().map(String::as_str) == Some("--only") {
        let variant = args.get(1).map(String::as_str).unwrap_or("split-direct");
        let iterations = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
        let (format, path) = formats
            .iter()
            .flat_map(|&(f, format)| PATHS.iter().map(move |&p| (f, format, p)))
            .find(|(f, _, p)| format!("{f}-{}", p.name()) == variant)
            .map(|(_, format, p)| (format, p))
            .unwrap_or_else(|| panic!("unknown variant {variant}"));
        let ns = time_variant(format, path, iterations);
        println!("{variant}: {ns:.1} ns/buffer");
        return;
    }
    let rounds: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(15);
    let iterations = 20_000;
    // Warm up every path once.
    for (_, f) in formats {
        for p in PATHS {
            time_variant(f, p, 2_000);
        }
    }
    for (name, format) in formats {
        let mut ns: [Vec<f64>; 3] = Default::default();
        let mut generic_ratio = Vec::with_capacity(rounds);
        let mut enum_ratio = Vec::with_capacity(rounds);
        for round in 0..rounds {
            // Rotate which path goes first.
            let mut t = [0.0; 3];
            for k in 0..3 {
                let i = (round + k) % 3;
                t[i] = time_variant(format, PATHS[i], iterations);
            }
            for i in 0..3 {
                ns[i].push(t[i]);
            }
            generic_ratio.push(t[1] / t[0]);
            enum_ratio.push(t[2] / t[0]);
        }
        let (g, e) = (spread(&mut generic_ratio), spread(&mut enum_ratio));
        println!(
            "{name}: median ns/buffer direct {:.1}, generic {:.1}, enum {:.1}; ratios (median \
             [min, max]) generic/direct {:.3} [{:.3}, {:.3}], enum/direct {:.3} [{:.3}, {:.3}] \
             ({rounds} interleaved rounds, single thread, batch {BATCH})",
            median(&mut ns[0]),
            median(&mut ns[1]),
            median(&mut ns[2]),
            g.1,
            g.0,
            g.2,
            e.1,
            e.0,
            e.2,
        );
    }
}
