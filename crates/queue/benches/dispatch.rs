//! Does the format-independent face cost anything? Runs the same single-threaded ring loop
//! (driver adds a batch, publishes; device pops, walks, uses, publishes, decides; driver reaps)
//! through the format's own types (`SplitDeviceQueue`/`SplitDriverQueue`, packed likewise) and
//! through the enums (`DeviceQueue`/`DriverQueue`), interleaved round by round, and prints the
//! median ratio enum/direct per format (1.00: no cost). Timing is std's `Instant`; the machine is
//! noisy, so only the ratios of interleaved rounds mean anything.
//!
//! `cargo bench -p vireo-queue --bench dispatch [-- ROUNDS]`, or
//! `... -- --only split-direct|split-enum|packed-direct|packed-enum ITERATIONS` to run one variant
//! alone (for `valgrind --tool=callgrind`, which counts instructions deterministically).

// A benchmark, not peer-facing code: a failed expectation is a failed run.
#![allow(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use vireo_memory::{GuestMemoryMap, OwnedRegion};
use vireo_queue::device::{
    AvailChain, ChainReader, DeviceQueue, DeviceQueueError, DeviceQueueState, Direction,
    PackedDeviceQueue, SplitDeviceQueue,
};
use vireo_queue::driver::{
    BufferSegment, DriverQueue, DriverQueueError, DriverQueueOptions, PackedDriverQueue,
    SplitDriverQueue, UsedBuffer,
};
use vireo_queue::{QueueConfig, RingFormat};
use vireo_spec::Features;

const BASE: u64 = 0x4000_0000;
const QUEUE_SIZE: u16 = 256;
const BATCH: u16 = 32;
const BUF_LEN: u32 = 32;

/// The device calls of the loop, implemented by the format's own type and by the enum.
trait Device {
    fn pop(&mut self) -> Result<Option<AvailChain>, DeviceQueueError>;
    fn chain<'q, 'm>(
        &'q self,
        c: &AvailChain,
        mem: &'m GuestMemoryMap,
    ) -> ChainReader<'q, 'm, GuestMemoryMap>;
    fn add_used(&mut self, c: &AvailChain, written: u32) -> Result<(), DeviceQueueError>;
    fn publish_used(&mut self) -> Result<(), DeviceQueueError>;
    fn needs_notification(&mut self) -> Result<bool, DeviceQueueError>;
}

/// The driver calls of the loop.
trait Driver {
    fn add(&mut self, w: &[BufferSegment], token: u64) -> Result<(), DriverQueueError>;
    fn kick_prepare(&mut self) -> Result<bool, DriverQueueError>;
    fn pop_used(&mut self) -> Result<Option<UsedBuffer<u64>>, DriverQueueError>;
}

macro_rules! device_impl {
    ($t:ty) => {
        impl Device for $t {
            #[inline]
            fn pop(&mut self) -> Result<Option<AvailChain>, DeviceQueueError> {
                <$t>::pop(self)
            }
            #[inline]
            fn chain<'q, 'm>(
                &'q self,
                c: &AvailChain,
                mem: &'m GuestMemoryMap,
            ) -> ChainReader<'q, 'm, GuestMemoryMap> {
                <$t>::chain(self, c, mem)
            }
            #[inline]
            fn add_used(&mut self, c: &AvailChain, written: u32) -> Result<(), DeviceQueueError> {
                <$t>::add_used(self, c, written)
            }
            #[inline]
            fn publish_used(&mut self) -> Result<(), DeviceQueueError> {
                <$t>::publish_used(self)
            }
            #[inline]
            fn needs_notification(&mut self) -> Result<bool, DeviceQueueError> {
                <$t>::needs_notification(self)
            }
        }
    };
}
device_impl!(SplitDeviceQueue);
device_impl!(PackedDeviceQueue);
device_impl!(DeviceQueue);

macro_rules! driver_impl {
    ($t:ty) => {
        impl Driver for $t {
            #[inline]
            fn add(&mut self, w: &[BufferSegment], token: u64) -> Result<(), DriverQueueError> {
                <$t>::add(self, &[], w, token)
            }
            #[inline]
            fn kick_prepare(&mut self) -> Result<bool, DriverQueueError> {
                <$t>::kick_prepare(self)
            }
            #[inline]
            fn pop_used(&mut self) -> Result<Option<UsedBuffer<u64>>, DriverQueueError> {
                <$t>::pop_used(self)
            }
        }
    };
}
driver_impl!(SplitDriverQueue<u64>);
driver_impl!(PackedDriverQueue<u64>);
driver_impl!(DriverQueue<u64>);

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

/// `iterations` batches of `BATCH` buffers through the ring; returns a checksum.
#[inline(never)]
fn run<Dr: Driver, De: Device>(
    driver: &mut Dr,
    device: &mut De,
    mem: &GuestMemoryMap,
    buffers: u64,
    iterations: u32,
) -> u64 {
    let mut sum = 0u64;
    let mut token = 0u64;
    for _ in 0..iterations {
        for i in 0..BATCH {
            let seg = BufferSegment::new(buffers + u64::from(i) * u64::from(BUF_LEN), BUF_LEN);
            driver.add(&[seg], token).expect("add");
            token += 1;
        }
        sum += u64::from(driver.kick_prepare().expect("kick"));
        while let Some(c) = device.pop().expect("pop") {
            let mut written = 0;
            for s in device.chain(&c, mem) {
                let s = s.expect("segment");
                if s.direction == Direction::DeviceWritable {
                    written = (s.addr % 7) as u32;
                }
            }
            device.add_used(&c, written).expect("use");
        }
        device.publish_used().expect("publish");
        sum += u64::from(device.needs_notification().expect("notify"));
        while let Some(u) = driver.pop_used().expect("reap") {
            sum = sum.wrapping_add(u.token ^ u64::from(u.written));
        }
    }
    sum
}

fn time_variant(format: RingFormat, via_enum: bool, iterations: u32) -> f64 {
    let s = setup(format);
    let mem = &*s.mem;
    let start = Instant::now();
    let sum = match (via_enum, s.driver, s.device) {
        (true, mut dr, mut de) => run(&mut dr, &mut de, mem, s.buffers, iterations),
        (false, DriverQueue::Split(mut dr), DeviceQueue::Split(mut de)) => {
            run(&mut dr, &mut de, mem, s.buffers, iterations)
        }
        (false, DriverQueue::Packed(mut dr), DeviceQueue::Packed(mut de)) => {
            run(&mut dr, &mut de, mem, s.buffers, iterations)
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

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--only") {
        let variant = args.get(1).map(String::as_str).unwrap_or("split-direct");
        let iterations = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
        let (format, via_enum) = match variant {
            "split-direct" => (RingFormat::Split, false),
            "split-enum" => (RingFormat::Split, true),
            "packed-direct" => (RingFormat::Packed, false),
            "packed-enum" => (RingFormat::Packed, true),
            other => panic!("unknown variant {other}"),
        };
        let ns = time_variant(format, via_enum, iterations);
        println!("{variant}: {ns:.1} ns/buffer");
        return;
    }
    let rounds: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(15);
    let iterations = 20_000;
    // Warm up both paths once.
    for f in [RingFormat::Split, RingFormat::Packed] {
        time_variant(f, false, 2_000);
        time_variant(f, true, 2_000);
    }
    for (name, format) in [("split", RingFormat::Split), ("packed", RingFormat::Packed)] {
        let mut ratios = Vec::with_capacity(rounds);
        let mut direct = Vec::with_capacity(rounds);
        for round in 0..rounds {
            // Alternate which goes first.
            let (d, e) = if round % 2 == 0 {
                let d = time_variant(format, false, iterations);
                (d, time_variant(format, true, iterations))
            } else {
                let e = time_variant(format, true, iterations);
                (time_variant(format, false, iterations), e)
            };
            ratios.push(e / d);
            direct.push(d);
        }
        println!(
            "{name}: enum/direct median ratio {:.3} over {rounds} interleaved rounds \
             (direct median {:.1} ns/buffer, single thread, batch {BATCH})",
            median(&mut ratios),
            median(&mut direct)
        );
    }
}
