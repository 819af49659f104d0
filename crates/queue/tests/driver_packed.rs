//! Driver side of the packed ring: setup, adding buffers (direct and indirect, byte for byte),
//! batch publication (the first head's flags last), ring sizes that are not powers of two, and
//! the ring wrapping round many times.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod driver_fake;

use driver_fake::packed::{packed_pair, RawDesc};
use driver_fake::{seg, FakeDevice, RING_BASE};
use vireo_memory::OwnedRegion;
use vireo_queue::driver::{
    required_size, DriverQueueError, DriverQueueOptions, PackedDriverQueue, UsedBuffer,
};
use vireo_queue::{RingAddresses, RingFormat};
use vireo_spec::packed::desc;
use vireo_spec::Features;

const NO_INDIRECT: DriverQueueOptions = DriverQueueOptions {
    indirect_table_len: 0,
};
/// AVAIL/USED bits of a descriptor made available with wrap counter 1 (virtio 1.2 §2.8.1).
const AVAIL_1: u16 = desc::F_AVAIL;

#[test]
fn layout_and_sizes() {
    // virtio 1.2 §2.8.10.1: descriptor ring 16-aligned, event structures 4 bytes, 4-aligned;
    // any size from 1 to 32768.
    let (q, _) = packed_pair(3, Features::empty(), NO_INDIRECT);
    assert_eq!(
        q.addresses(),
        RingAddresses {
            desc_table: RING_BASE,
            driver_area: RING_BASE + 48,
            device_area: RING_BASE + 52,
        }
    );
    assert_eq!((q.size(), q.num_free(), q.len_in_flight()), (3, 3, 0));
    let packed = Features::RING_PACKED;
    let area = OwnedRegion::new_area(1 << 20).unwrap();
    let new = |size| PackedDriverQueue::<u8>::new(area.clone(), 0, size, packed, NO_INDIRECT);
    for size in [0, 32769, 65535] {
        assert_eq!(
            new(size).unwrap_err(),
            DriverQueueError::InvalidSize { size }
        );
    }
    assert!(new(1).is_ok());
    assert!(new(32768).is_ok());
    let total = required_size(RingFormat::Packed, 3, packed, &NO_INDIRECT);
    let small = OwnedRegion::new_area(total - 1).unwrap();
    assert_eq!(
        PackedDriverQueue::<u8>::new(small, 0, 3, packed, NO_INDIRECT).unwrap_err(),
        DriverQueueError::AreaTooSmall {
            needed: total,
            available: total - 1
        }
    );
    assert_eq!(
        PackedDriverQueue::<u8>::new(area.clone(), 4, 3, packed, NO_INDIRECT).unwrap_err(),
        DriverQueueError::AreaMisaligned { align: 16 }
    );
}

#[test]
fn chain_byte_for_byte_and_the_head_flags_last() {
    // virtio 1.2 §2.8.6: NEXT on all but the last; every descriptor carries the buffer id and
    // the AVAIL/USED bits of the wrap counter. §2.8.21: the head's flags are written last, so
    // until publish the device sees nothing.
    let (mut q, mut dev) = packed_pair(4, Features::empty(), NO_INDIRECT);
    q.add(&[seg(0x100, 10)], &[seg(0x200, 20), seg(0x300, 30)], 1)
        .unwrap();
    let head = dev.desc(0);
    assert_eq!(
        (head.addr, head.len, head.flags),
        (0x100_0100, 10, 0),
        "the head's flags wait for publish"
    );
    let id = head.id;
    assert_eq!(
        dev.desc(1),
        RawDesc {
            addr: 0x100_0200,
            len: 20,
            id,
            flags: desc::F_WRITE | desc::F_NEXT | AVAIL_1,
        }
    );
    assert_eq!(
        dev.desc(2),
        RawDesc {
            addr: 0x100_0300,
            len: 30,
            id,
            flags: desc::F_WRITE | AVAIL_1,
        }
    );
    assert_eq!(dev.pop_avail(), None, "add does not publish");
    // A second buffer in the same batch: its head's flags may go out at once, since the device
    // stops at the first head.
    q.add(&[seg(0x400, 4)], &[], 2).unwrap();
    let second = dev.desc(3);
    assert_ne!(second.id, id, "each buffer has its own id");
    assert_eq!(second.flags, AVAIL_1);
    assert_eq!(dev.pop_avail(), None);
    assert_eq!(q.num_free(), 0);
    q.publish().unwrap();
    assert_eq!(dev.desc(0).flags, desc::F_NEXT | AVAIL_1);
    let a = dev.pop_avail().unwrap();
    assert_eq!((a.id, a.readable.len(), a.writable.len()), (id, 1, 2));
    assert_eq!(dev.pop_avail().unwrap().id, second.id);
}

#[test]
fn indirect_table_byte_for_byte() {
    // virtio 1.2 §2.8.7: one descriptor with INDIRECT (no NEXT) pointing at a table of len/16
    // packed descriptors, chained by their order, WRITE the only flag.
    let opts = DriverQueueOptions {
        indirect_table_len: 4,
    };
    let (mut q, mut dev) = packed_pair(5, Features::INDIRECT_DESC, opts);
    q.add(&[seg(0x10, 1)], &[seg(0x20, 2), seg(0x30, 3)], 7)
        .unwrap();
    assert_eq!(q.num_free(), 4, "an indirect buffer takes one descriptor");
    q.publish().unwrap();
    let head = dev.desc(0);
    assert_eq!(head.flags, desc::F_INDIRECT | AVAIL_1);
    assert_eq!(head.len, 48);
    assert_eq!(head.addr % 16, 0);
    let entries: Vec<_> = (0..3).map(|i| dev.desc_at(head.addr, i)).collect();
    assert_eq!(
        entries
            .iter()
            .map(|d| (d.addr, d.len, d.flags))
            .collect::<Vec<_>>(),
        [
            (0x100_0010, 1, 0),
            (0x100_0020, 2, desc::F_WRITE),
            (0x100_0030, 3, desc::F_WRITE)
        ]
    );
    let b = dev.pop_avail().unwrap();
    assert!(b.indirect);
    // Another buffer in flight gets another table.
    q.add(&[seg(0x40, 4), seg(0x50, 5)], &[], 8).unwrap();
    q.publish().unwrap();
    assert_ne!(dev.desc(1).addr, head.addr);
    assert_eq!(dev.desc(1).len, 32);
}

#[test]
fn caller_errors_and_a_full_ring() {
    let (mut q, mut dev) = packed_pair(3, Features::empty(), NO_INDIRECT);
    assert_eq!(
        q.add(&[], &[], 0).unwrap_err(),
        DriverQueueError::EmptyBuffer
    );
    assert_eq!(
        q.add(&[seg(0, 1)], &[seg(1, 0)], 0).unwrap_err(),
        DriverQueueError::ZeroLengthSegment { index: 1 }
    );
    assert_eq!(
        q.add(&[seg(0, 1); 4], &[], 0).unwrap_err(),
        DriverQueueError::TooManySegments { count: 4, max: 3 }
    );
    q.add(&[seg(0, 1), seg(1, 1)], &[], 1).unwrap();
    assert_eq!(
        q.add(&[seg(0, 1), seg(1, 1)], &[], 2).unwrap_err(),
        DriverQueueError::QueueFull { needed: 2, free: 1 }
    );
    q.add(&[seg(2, 1)], &[], 3).unwrap();
    assert_eq!(
        q.add(&[seg(3, 1)], &[], 4).unwrap_err(),
        DriverQueueError::QueueFull { needed: 1, free: 0 }
    );
    assert!(!q.is_broken());
    q.publish().unwrap();
    let a = dev.pop_avail().unwrap();
    let b = dev.pop_avail().unwrap();
    assert_eq!(dev.pop_avail(), None);
    // Used out of order: the second buffer first.
    dev.use_buffer(b.id, 0);
    dev.use_buffer(a.id, 0);
    dev.publish_used();
    assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(3));
    assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(1));
    assert_eq!(q.pop_used().unwrap(), None);
    assert_eq!((q.num_free(), q.len_in_flight()), (3, 0));
}

#[test]
fn the_ring_wraps_many_times_with_chains_of_every_length() {
    // Size 5 and chains of 1..=3 descriptors: chains straddle the end of the ring and both wrap
    // counters flip many times (virtio 1.2 §2.8.1).
    let (mut q, mut dev) = packed_pair(5, Features::empty(), NO_INDIRECT);
    for round in 0..200u32 {
        let n = (round % 3) as usize + 1;
        let segs: Vec<_> = (0..n as u64).map(|i| seg(i * 8, 8)).collect();
        q.add(&[], &segs, round).unwrap();
        if round % 2 == 1 {
            q.add(&[seg(0, 1)], &[], round + 1000).unwrap();
        }
        q.kick_prepare().unwrap();
        while let Some(b) = dev.pop_avail() {
            let written = b.writable_len() as u32;
            dev.use_buffer(b.id, written);
        }
        dev.publish_used();
        assert_eq!(
            q.pop_used().unwrap(),
            Some(UsedBuffer {
                token: round,
                written: 8 * n as u32
            })
        );
        if round % 2 == 1 {
            assert_eq!(q.pop_used().unwrap().map(|u| u.token), Some(round + 1000));
        }
        assert_eq!(q.pop_used().unwrap(), None);
        assert_eq!(q.num_free(), 5);
    }
}
