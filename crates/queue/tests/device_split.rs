//! Device side of the split ring: setup checks and the normal path (pop, walk, use).
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod device_fake;

use device_fake::split::{RawDesc, SplitFake, SplitRing, GUEST_BASE};
use device_fake::{pattern, BufSpec, ChainSpec, FakeDriver};
use vireo_memory::MemoryError;
use vireo_queue::device::{
    ChainTotals, DeviceQueue, DeviceQueueError, DeviceQueueState, Direction, RingArea,
    SplitDeviceQueue,
};
use vireo_queue::QueueConfig;
use vireo_spec::split::desc;
use vireo_spec::Features;

fn queue(ring: &SplitRing) -> SplitDeviceQueue {
    SplitDeviceQueue::new(&ring.mem, &ring.config(), DeviceQueueState::default()).unwrap()
}

fn rd(len: u32) -> BufSpec {
    BufSpec {
        len,
        direction: Direction::DeviceReadable,
    }
}

fn wr(len: u32) -> BufSpec {
    BufSpec {
        len,
        direction: Direction::DeviceWritable,
    }
}

fn new_err(ring: &SplitRing, config: &QueueConfig) -> DeviceQueueError {
    SplitDeviceQueue::new(&ring.mem, config, DeviceQueueState::default()).unwrap_err()
}

/// virtio 1.2 §2.7: queue size is a power of two, at most 32768.
#[test]
fn queue_size_must_be_a_power_of_two() {
    let ring = SplitRing::new(8, Features::empty());
    for size in [0u16, 3, 6, 12, 0xffff] {
        let config = QueueConfig {
            size,
            ..ring.config()
        };
        assert_eq!(
            new_err(&ring, &config),
            DeviceQueueError::InvalidQueueSize { size }
        );
    }
    for size in [1u16, 2, 4, 8] {
        let config = QueueConfig {
            size,
            ..ring.config()
        };
        assert_eq!(
            SplitDeviceQueue::new(&ring.mem, &config, DeviceQueueState::default())
                .unwrap()
                .size(),
            size
        );
    }
}

#[test]
fn largest_queue_size_is_accepted() {
    let ring = SplitRing::new(32768, Features::empty());
    assert_eq!(queue(&ring).size(), 32768);
}

/// virtio 1.2 §2.7 "Virtqueue Part Alignment": 16, 2 and 4 bytes.
#[test]
fn ring_areas_must_be_aligned() {
    let ring = SplitRing::new(8, Features::empty());
    let mut config = ring.config();
    config.addrs.desc_table += 8;
    assert_eq!(
        new_err(&ring, &config),
        DeviceQueueError::Misaligned {
            area: RingArea::DescriptorTable,
            addr: config.addrs.desc_table,
            align: 16
        }
    );
    let mut config = ring.config();
    config.addrs.driver_area += 1;
    assert!(matches!(
        new_err(&ring, &config),
        DeviceQueueError::Misaligned {
            area: RingArea::DriverArea,
            align: 2,
            ..
        }
    ));
    let mut config = ring.config();
    config.addrs.device_area += 2;
    assert!(matches!(
        new_err(&ring, &config),
        DeviceQueueError::Misaligned {
            area: RingArea::DeviceArea,
            align: 4,
            ..
        }
    ));
}

#[test]
fn ring_areas_must_be_in_guest_memory() {
    let ring = SplitRing::new(8, Features::empty());
    let mut config = ring.config();
    config.addrs.desc_table = GUEST_BASE - 0x1000;
    assert!(matches!(
        new_err(&ring, &config),
        DeviceQueueError::Memory {
            area: RingArea::DescriptorTable,
            source: MemoryError::OutOfRange { .. }
        }
    ));
    // The used ring with its avail_event must fit: place it at the very end of memory.
    let mut config = ring.config();
    config.addrs.device_area = ring.layout.end - 64;
    assert!(matches!(
        new_err(&ring, &config),
        DeviceQueueError::Memory {
            area: RingArea::DeviceArea,
            source: MemoryError::CrossesRegion { .. }
        }
    ));
    let mut config = ring.config();
    config.addrs.driver_area = u64::MAX - 1;
    assert!(matches!(
        new_err(&ring, &config),
        DeviceQueueError::Memory {
            area: RingArea::DriverArea,
            source: MemoryError::Overflow { .. }
        }
    ));
}

#[test]
fn the_features_pick_the_format() {
    let ring = SplitRing::new(8, Features::RING_PACKED);
    let q = DeviceQueue::new(&ring.mem, &ring.config(), DeviceQueueState::default()).unwrap();
    assert!(matches!(q, DeviceQueue::Packed(_)));
    assert_eq!(q.format(), vireo_queue::RingFormat::Packed);
    let ring = SplitRing::new(8, Features::empty());
    let q = DeviceQueue::new(&ring.mem, &ring.config(), DeviceQueueState::default()).unwrap();
    assert!(matches!(q, DeviceQueue::Split(_)));
}

#[test]
fn empty_ring_pops_nothing() {
    let ring = SplitRing::new(8, Features::empty());
    let mut q = queue(&ring);
    assert_eq!(q.pop().unwrap(), None);
    assert_eq!(q.state(), DeviceQueueState::default());
}

/// The normal path: a chain of readable then writable buffers comes out as segments with the
/// driver's addresses, lengths, directions and bytes; its used element goes back.
#[test]
fn pop_walk_and_use_a_direct_chain() {
    let mut drv = SplitFake::new(8, Features::empty());
    let spec = ChainSpec {
        direct: vec![rd(16), rd(3), wr(32), wr(8)],
        indirect: None,
    };
    let added = drv.add(&spec, 7).unwrap();
    drv.publish();
    let mut q = queue(&drv.ring);
    let chain = q.pop().unwrap().unwrap();
    assert_eq!(chain.id(), added.id);
    assert_eq!(chain.position(), 0);
    let segs: Vec<_> = q
        .chain(&chain, drv.mem())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(segs.len(), 4);
    for (i, (s, e)) in segs.iter().zip(&added.segs).enumerate() {
        assert_eq!(
            (s.addr, s.slice.len() as u32, s.direction),
            (e.addr, e.len, e.direction)
        );
        if s.direction == Direction::DeviceReadable {
            let mut b = vec![0; s.slice.len()];
            s.slice.read(0, &mut b).unwrap();
            assert!(b.iter().enumerate().all(|(o, &x)| x == pattern(7, i, o)));
        }
    }
    segs[2].slice.write(0, &[1; 32]).unwrap();
    segs[3].slice.write(0, &[2; 4]).unwrap();
    q.push_used(&chain, 36).unwrap();
    let reaped = drv.reap().unwrap();
    assert_eq!((reaped.id, reaped.len), (added.id, 36));
    assert_eq!(reaped.written, [[1u8; 32].as_slice(), &[2; 4]].concat());
    assert_eq!(
        q.state(),
        DeviceQueueState {
            next_avail: 1,
            next_used: 1,
            ..DeviceQueueState::default()
        }
    );
    assert_eq!(q.pop().unwrap(), None);
}

/// virtio 1.2 §2.7.5.3.2: "zero or more normal chained descriptors followed by a single
/// descriptor with flags&VIRTQ_DESC_F_INDIRECT".
#[test]
fn direct_descriptors_then_an_indirect_table() {
    let mut drv = SplitFake::new(8, Features::INDIRECT_DESC);
    let spec = ChainSpec {
        direct: vec![rd(4)],
        indirect: Some(vec![rd(5), wr(6), wr(7)]),
    };
    let added = drv.add(&spec, 1).unwrap();
    drv.publish();
    let q = &mut queue(&drv.ring);
    let chain = q.pop().unwrap().unwrap();
    let got: Vec<_> = q
        .chain(&chain, drv.mem())
        .map(|s| s.map(|s| (s.addr, s.slice.len() as u32, s.direction)))
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<_> = added
        .segs
        .iter()
        .map(|e| (e.addr, e.len, e.direction))
        .collect();
    assert_eq!(got, want);
    let totals = q.chain(&chain, drv.mem()).totals().unwrap();
    assert_eq!(
        totals,
        ChainTotals {
            readable_segments: 2,
            readable_bytes: 9,
            writable_segments: 2,
            writable_bytes: 13
        }
    );
}

/// §2.7.5.3.2: the device ignores VIRTQ_DESC_F_WRITE on the descriptor that refers to a table.
#[test]
fn write_flag_on_the_indirect_descriptor_is_ignored() {
    let ring = SplitRing::new(4, Features::INDIRECT_DESC);
    let t = ring.layout.itable(0);
    ring.write_desc_at(
        t,
        0,
        RawDesc {
            addr: ring.layout.buf(0),
            len: 8,
            flags: 0,
            next: 0,
        },
    );
    ring.add_direct(
        0,
        &[(
            0,
            RawDesc {
                addr: t,
                len: 16,
                flags: desc::F_INDIRECT | desc::F_WRITE,
                next: 0,
            },
        )],
    );
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap();
    let segs: Vec<_> = q.chain(&c, &ring.mem).collect::<Result<_, _>>().unwrap();
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].direction, Direction::DeviceReadable);
}

#[test]
fn zero_length_buffers_are_segments() {
    let ring = SplitRing::new(4, Features::empty());
    ring.add_direct(
        0,
        &[(
            2,
            RawDesc {
                addr: ring.layout.buf(2),
                len: 0,
                flags: 0,
                next: 0,
            },
        )],
    );
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap();
    let segs: Vec<_> = q.chain(&c, &ring.mem).collect::<Result<_, _>>().unwrap();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].slice.is_empty());
}

#[test]
fn collect_into_fills_a_fixed_array() {
    let mut drv = SplitFake::new(8, Features::empty());
    drv.add(
        &ChainSpec {
            direct: vec![rd(1), rd(2), wr(3)],
            indirect: None,
        },
        0,
    )
    .unwrap();
    drv.publish();
    let mut q = queue(&drv.ring);
    let c = q.pop().unwrap().unwrap();
    let mut out = [None; 4];
    assert_eq!(q.chain(&c, drv.mem()).collect_into(&mut out).unwrap(), 3);
    assert_eq!(
        out.iter()
            .flatten()
            .map(|s| s.slice.len())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(out[3].is_none());
    let mut small = [None; 2];
    assert_eq!(
        q.chain(&c, drv.mem()).collect_into(&mut small),
        Err(DeviceQueueError::TooManySegments { capacity: 2 })
    );
    assert!(
        !q.is_broken(),
        "a device's own limit does not break the queue"
    );
}

/// The device's own misuse of handles is refused and does not latch the queue.
#[test]
fn using_a_chain_twice_is_refused() {
    let mut drv = SplitFake::new(4, Features::empty());
    drv.add(
        &ChainSpec {
            direct: vec![wr(4)],
            indirect: None,
        },
        0,
    )
    .unwrap();
    drv.publish();
    let mut q = queue(&drv.ring);
    let c = q.pop().unwrap().unwrap();
    q.push_used(&c, 0).unwrap();
    assert_eq!(
        q.add_used(&c, 0),
        Err(DeviceQueueError::ChainNotInFlight { head: c.id() })
    );
    let first = q.chain(&c, drv.mem()).next().unwrap();
    assert_eq!(
        first.unwrap_err(),
        DeviceQueueError::ChainNotInFlight { head: c.id() }
    );
    assert!(!q.is_broken());
    assert_eq!(drv.reap().unwrap().id, c.id());
    assert_eq!(drv.reap(), None);
}

#[test]
fn a_handle_from_a_larger_queue_is_refused() {
    let mut big = SplitFake::new(16, Features::empty());
    for _ in 0..16 {
        big.add(
            &ChainSpec {
                direct: vec![wr(4)],
                indirect: None,
            },
            0,
        )
        .unwrap();
    }
    big.publish();
    let mut bq = queue(&big.ring);
    let foreign = std::iter::from_fn(|| bq.pop().unwrap())
        .find(|c| c.id() >= 4)
        .unwrap();
    let ring = SplitRing::new(4, Features::empty());
    let mut q = queue(&ring);
    assert_eq!(
        q.add_used(&foreign, 0),
        Err(DeviceQueueError::ChainIdOutOfRange {
            head: foreign.id(),
            size: 4
        })
    );
    assert!(matches!(
        q.chain(&foreign, &ring.mem).next(),
        Some(Err(DeviceQueueError::ChainIdOutOfRange { .. }))
    ));
}

/// Resuming from a saved state (vhost-user SET_VRING_BASE) continues at those indices.
#[test]
fn resume_from_state() {
    let ring = SplitRing::new(4, Features::empty());
    let state = DeviceQueueState {
        next_avail: 0xfffe,
        next_used: 0xfffe,
        ..DeviceQueueState::default()
    };
    for (i, pos) in [0xfffeu16, 0xffff, 0].into_iter().enumerate() {
        let d = i as u16;
        ring.write_desc(
            d,
            RawDesc {
                addr: ring.layout.buf(d),
                len: 4,
                flags: desc::F_WRITE,
                next: 0,
            },
        );
        ring.set_avail_entry(pos, d);
    }
    ring.set_avail_idx(1);
    let mut q = SplitDeviceQueue::new(&ring.mem, &ring.config(), state).unwrap();
    let mut ids = vec![];
    while let Some(c) = q.pop().unwrap() {
        ids.push((c.id(), c.position()));
        q.add_used(&c, 4).unwrap();
    }
    q.publish_used().unwrap();
    assert_eq!(ids, [(0, 0xfffe), (1, 0xffff), (2, 0)]);
    assert_eq!(ring.used_idx(), 1);
    assert_eq!(ring.used_elem(0xffff), (1, 4));
    assert_eq!(
        q.state(),
        DeviceQueueState {
            next_avail: 1,
            next_used: 1,
            ..DeviceQueueState::default()
        }
    );
}

/// The ring positions wrap around a full 16-bit cycle with a small queue.
#[test]
fn indices_wrap_around() {
    let mut drv = SplitFake::new(2, Features::empty());
    let mut q = queue(&drv.ring);
    for seed in 0..70_000u32 {
        let added = drv
            .add(
                &ChainSpec {
                    direct: vec![rd(1), wr(2)],
                    indirect: None,
                },
                seed as u8,
            )
            .unwrap();
        drv.publish();
        let c = q.pop().unwrap().unwrap();
        assert_eq!(c.id(), added.id);
        assert_eq!(q.chain(&c, drv.mem()).count(), 2);
        q.push_used(&c, 1).unwrap();
        assert_eq!(drv.reap().unwrap().id, added.id);
    }
    assert_eq!(q.state().next_avail, (70_000u32 % 65_536) as u16);
}

/// The format-independent face delegates every call to the split queue.
#[test]
fn the_enum_delegates_to_the_split_queue() {
    let mut drv = SplitFake::new(4, Features::EVENT_IDX);
    let mut q = DeviceQueue::new(drv.mem(), &drv.config(), DeviceQueueState::default()).unwrap();
    assert_eq!(q.size(), 4);
    assert!(!q.enable_kicks().unwrap());
    q.disable_kicks().unwrap();
    let added = drv
        .add(
            &ChainSpec {
                direct: vec![rd(2), wr(2)],
                indirect: None,
            },
            3,
        )
        .unwrap();
    drv.publish();
    let c = q.pop().unwrap().unwrap();
    assert_eq!(c.id(), added.id);
    assert_eq!(q.chain(&c, drv.mem()).totals().unwrap().writable_bytes, 2);
    q.add_used(&c, 1).unwrap();
    assert_eq!(drv.ring.used_idx(), 0);
    q.publish_used().unwrap();
    assert!(q.needs_notification().unwrap());
    assert_eq!(
        q.state(),
        DeviceQueueState {
            next_avail: 1,
            next_used: 1,
            ..DeviceQueueState::default()
        }
    );
    assert!(!q.is_broken() && q.broken_by().is_none());
    assert_eq!(drv.reap().map(|r| (r.id, r.len)), Some((added.id, 1)));
    assert_eq!(
        q.push_used(&c, 0),
        Err(DeviceQueueError::ChainNotInFlight { head: c.id() })
    );
}
