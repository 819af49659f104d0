//! `DeviceRing` and `DriverRing`: a loop written once, generic over the traits, gives the same
//! results over the split ring (virtio 1.2 §2.7) and the packed ring (§2.8), whether it is
//! handed the format's own types or the enums; and every trait method reaches the format's.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use vireo_memory::{GuestMemory, GuestMemoryMap, OwnedRegion};
use vireo_queue::device::{
    DeviceQueue, DeviceQueueError, DeviceQueueState, DeviceRing, Direction, Violation,
};
use vireo_queue::driver::{BufferSegment, DriverQueue, DriverQueueOptions, DriverRing};
use vireo_queue::{QueueConfig, RingFormat};
use vireo_spec::Features;

const BASE: u64 = 0x1000_0000;
const SIZE: u16 = 8;
/// Where the buffers start, after the ring memory.
const DATA: u64 = BASE + 0x4000;

/// A driver and a device queue (the enums) over one region, in `format`, with EVENT_IDX.
fn pair(format: RingFormat) -> (GuestMemoryMap, DriverQueue<u64>, DeviceQueue) {
    let mut features = Features::VERSION_1 | Features::EVENT_IDX;
    if format == RingFormat::Packed {
        features |= Features::RING_PACKED;
    }
    let opts = DriverQueueOptions::default();
    assert!(vireo_queue::driver::required_size(format, SIZE, features, &opts) <= 0x4000);
    let area = OwnedRegion::new_area(0x8000).unwrap();
    let mem = GuestMemoryMap::single(BASE, area.clone()).unwrap();
    let driver = DriverQueue::new(
        area.sub_area(0, 0x4000).unwrap(),
        BASE,
        SIZE,
        features,
        opts,
    )
    .unwrap();
    let config = QueueConfig {
        size: SIZE,
        addrs: driver.addresses(),
        features,
    };
    let device = DeviceQueue::new(&mem, &config, DeviceQueueState::default()).unwrap();
    (mem, driver, device)
}

/// Written once: `n` buffers (two descriptors each, at most 4) (8 readable bytes, then 16 writable ones) go round; the device
/// reports `token + 1` bytes written. Returns what the driver got back, in order.
fn round_trip<Dr: DriverRing<u64>, De: DeviceRing, M: GuestMemory>(
    driver: &mut Dr,
    device: &mut De,
    mem: &M,
    n: u64,
) -> Vec<(u64, u32)> {
    for token in 0..n {
        let at = DATA + token * 32;
        driver
            .add(
                &[BufferSegment::new(at, 8)],
                &[BufferSegment::new(at + 8, 16)],
                token,
            )
            .unwrap();
    }
    assert!(driver.kick_prepare().unwrap(), "first publish wants a kick");
    let mut popped = 0;
    while let Some(chain) = device.pop().unwrap() {
        let segments: Vec<_> = device
            .chain(&chain, mem)
            .map(|s| s.map(|s| (s.addr, s.slice.len(), s.direction)))
            .collect::<Result<_, _>>()
            .unwrap();
        let at = segments[0].0;
        assert_eq!(
            segments,
            vec![
                (at, 8, Direction::DeviceReadable),
                (at + 8, 16, Direction::DeviceWritable)
            ]
        );
        let token = (at - DATA) / 32;
        device.add_used(&chain, token as u32 + 1).unwrap();
        popped += 1;
    }
    assert_eq!(popped, n);
    device.publish_used().unwrap();
    assert!(device.needs_notification().unwrap());
    let mut got = Vec::new();
    while let Some(used) = driver.pop_used().unwrap() {
        got.push((used.token, used.written));
    }
    assert_eq!(driver.len_in_flight(), 0);
    assert_eq!(driver.num_free(), driver.size());
    got
}

fn expected(n: u64) -> Vec<(u64, u32)> {
    (0..n).map(|t| (t, t as u32 + 1)).collect()
}

#[test]
fn one_generic_loop_runs_both_formats_as_own_types_and_as_enums() {
    for format in [RingFormat::Split, RingFormat::Packed] {
        // The format's own types: picked once with a match.
        let (mem, driver, device) = pair(format);
        let own_state = match (driver, device) {
            (DriverQueue::Split(mut dr), DeviceQueue::Split(mut de)) => {
                assert_eq!(format, RingFormat::Split);
                assert_eq!(DriverRing::<u64>::format(&dr), RingFormat::Split);
                assert_eq!(DeviceRing::format(&de), RingFormat::Split);
                assert_eq!(round_trip(&mut dr, &mut de, &mem, 4), expected(4));
                DeviceRing::state(&de)
            }
            (DriverQueue::Packed(mut dr), DeviceQueue::Packed(mut de)) => {
                assert_eq!(format, RingFormat::Packed);
                assert_eq!(DriverRing::<u64>::format(&dr), RingFormat::Packed);
                assert_eq!(DeviceRing::format(&de), RingFormat::Packed);
                assert_eq!(round_trip(&mut dr, &mut de, &mem, 4), expected(4));
                DeviceRing::state(&de)
            }
            _ => panic!("both sides have the format the features select"),
        };
        // The enums, dispatching per call: the same results and the same ring positions.
        let (mem, mut dr, mut de) = pair(format);
        assert_eq!(DriverRing::<u64>::format(&dr), format);
        assert_eq!(DeviceRing::format(&de), format);
        assert_eq!(round_trip(&mut dr, &mut de, &mem, 4), expected(4));
        assert_eq!(DeviceRing::state(&de), own_state);
        assert_ne!(own_state, DeviceQueueState::default(), "{format:?}");
        assert_eq!(DeviceRing::size(&de), SIZE);
        assert!(!DeviceRing::is_broken(&de));
    }
}

/// Detaches every buffer in flight through the trait, then resets through it.
fn detach_all<Dr: DriverRing<u64>>(driver: &mut Dr) -> Vec<u64> {
    let mut tokens: Vec<u64> = std::iter::from_fn(|| driver.detach_unused()).collect();
    tokens.sort_unstable();
    driver.reset().unwrap();
    tokens
}

#[test]
fn detach_and_reset_reach_the_format_through_the_trait() {
    for format in [RingFormat::Split, RingFormat::Packed] {
        let (_mem, mut driver, _device) = pair(format);
        for token in [7, 3] {
            DriverRing::add(&mut driver, &[], &[BufferSegment::new(DATA, 4)], token).unwrap();
        }
        DriverRing::<u64>::publish(&mut driver).unwrap();
        assert_eq!(DriverRing::<u64>::len_in_flight(&driver), 2);
        let tokens = match &mut driver {
            DriverQueue::Split(q) => detach_all(q),
            DriverQueue::Packed(q) => detach_all(q),
        };
        assert_eq!(tokens, vec![3, 7]);
        assert_eq!(DriverRing::<u64>::num_free(&driver), SIZE);
        assert!(!DriverRing::<u64>::is_broken(&driver));
    }
}

/// Pops until the driver's violation shows; returns it.
fn pop_violation<De: DeviceRing>(device: &mut De) -> DeviceQueueError {
    device.pop().unwrap_err()
}

#[test]
fn a_broken_queue_is_broken_through_the_trait_too() {
    let (mem, driver, device) = pair(RingFormat::Split);
    // The driver publishes an available index SIZE + 1 ahead (virtio 1.2 §2.7.6).
    let idx = mem
        .translate(driver.addresses().driver_area + 2, 2)
        .unwrap();
    idx.write(0, &(SIZE + 1).to_le_bytes()).unwrap();
    let DeviceQueue::Split(mut de) = device else {
        panic!("split features give a split queue")
    };
    let violation = Violation::AvailIndexTooFarAhead {
        avail_idx: SIZE + 1,
        next_avail: 0,
        size: SIZE,
    };
    assert_eq!(
        pop_violation(&mut de),
        DeviceQueueError::Violation(violation)
    );
    assert!(DeviceRing::is_broken(&de));
    assert_eq!(DeviceRing::broken_by(&de), Some(violation));
    let mut de = DeviceQueue::Split(de);
    assert_eq!(
        DeviceRing::publish_used(&mut de).unwrap_err(),
        DeviceQueueError::Broken(violation)
    );
}
