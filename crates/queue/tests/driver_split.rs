//! Driver side of the split ring: setup, adding buffers (direct and indirect, byte for byte),
//! caller errors, free-list exhaustion and recovery, the normal path.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod driver_fake;

use driver_fake::split::{split_pair, RawDesc};
use driver_fake::{guest_memory, seg, FakeDevice, SeenSeg, RING_BASE};
use vireo_memory::OwnedRegion;
use vireo_queue::driver::{
    required_size, BufferSegment, DriverQueue, DriverQueueError, DriverQueueOptions,
    SplitDriverQueue, UsedBuffer,
};
use vireo_queue::{RingAddresses, RingFormat};
use vireo_spec::split::desc;
use vireo_spec::Features;

const NO_INDIRECT: DriverQueueOptions = DriverQueueOptions {
    indirect_table_len: 0,
};

#[test]
fn layout_follows_the_alignment_table() {
    // virtio 1.2 §2.7: descriptor table 16-aligned, available ring 2-aligned, used ring 4-aligned.
    let (q, _) = split_pair(8, Features::empty(), NO_INDIRECT);
    assert_eq!(
        q.addresses(),
        RingAddresses {
            desc_table: RING_BASE,
            driver_area: RING_BASE + 128,
            device_area: RING_BASE + 128 + 24, // avail: 6 + 2 * 8 = 22 bytes, rounded up to 4
        }
    );
    assert_eq!(
        required_size(RingFormat::Split, 8, Features::empty(), &NO_INDIRECT),
        152 + 70
    );
    assert_eq!((q.size(), q.num_free(), q.len_in_flight()), (8, 8, 0));
}

#[test]
fn the_format_independent_face() {
    let opts = DriverQueueOptions::default();
    let features = Features::INDIRECT_DESC | Features::EVENT_IDX;
    let mem = guest_memory(required_size(RingFormat::Split, 16, features, &opts));
    let area = mem.regions()[0].area().clone();
    let mut q = DriverQueue::<u8>::new(area.clone(), RING_BASE, 16, features, opts).unwrap();
    assert_eq!(q.format(), RingFormat::Split);
    let config = q.config();
    assert_eq!((config.size, config.features), (16, features));
    assert_eq!(config.addrs.desc_table, RING_BASE);
    q.add(&[seg(0, 1)], &[seg(1, 1)], 1).unwrap();
    assert_eq!((q.num_free(), q.len_in_flight(), q.size()), (15, 1, 16));
    // RING_PACKED selects the packed ring (its own layout: it needs less memory than a split
    // ring of 16 with these options, so the same area does).
    let packed = features | Features::RING_PACKED;
    let q = DriverQueue::<u8>::new(area, RING_BASE, 16, packed, opts).unwrap();
    assert_eq!(q.format(), RingFormat::Packed);
    assert_eq!(q.config().features, packed);
}

#[test]
fn new_zeroes_the_ring() {
    let len = required_size(RingFormat::Split, 4, Features::empty(), &NO_INDIRECT);
    let area = OwnedRegion::new_area(len).unwrap();
    area.slice().fill(0, len, 0xa5).unwrap();
    SplitDriverQueue::<u8>::new(area.clone(), 0, 4, Features::empty(), NO_INDIRECT).unwrap();
    let mut bytes = vec![0xffu8; len];
    area.slice().read(0, &mut bytes).unwrap();
    assert!(bytes.iter().all(|&b| b == 0));
}

#[test]
fn new_refuses_bad_sizes_and_areas() {
    let area = OwnedRegion::new_area(1 << 20).unwrap();
    let new = |size, addr| {
        SplitDriverQueue::<u8>::new(area.clone(), addr, size, Features::empty(), NO_INDIRECT)
    };
    for size in [0, 3, 100, 65535] {
        assert_eq!(
            new(size, 0).unwrap_err(),
            DriverQueueError::InvalidSize { size }
        );
    }
    assert!(new(32768, 0).is_ok());
    assert_eq!(
        new(8, 8).unwrap_err(),
        DriverQueueError::AreaMisaligned { align: 16 }
    );
    let total = 152 + 70;
    let addr = u64::MAX - 0xf; // 16-byte aligned, but the ring would run past 2^64
    assert_eq!(
        new(8, addr).unwrap_err(),
        DriverQueueError::AddressOverflow {
            addr,
            len: total as u64
        }
    );
    let small = OwnedRegion::new_area(total - 1).unwrap();
    assert_eq!(
        SplitDriverQueue::<u8>::new(small, 0, 8, Features::empty(), NO_INDIRECT).unwrap_err(),
        DriverQueueError::AreaTooSmall {
            needed: total,
            available: total - 1
        }
    );
    // The host side must be aligned too.
    let odd = area.sub_area(8, 4096).unwrap();
    assert_eq!(
        SplitDriverQueue::<u8>::new(odd, 0, 8, Features::empty(), NO_INDIRECT).unwrap_err(),
        DriverQueueError::AreaMisaligned { align: 16 }
    );
}

#[test]
fn direct_chain_byte_for_byte() {
    // virtio 1.2 §2.7.5: readable first, NEXT on all but the last, WRITE on writable ones;
    // §2.7.13.2: the head goes into the next available-ring slot.
    let (mut q, dev) = split_pair(4, Features::empty(), NO_INDIRECT);
    q.add(&[seg(0x100, 10)], &[seg(0x200, 20), seg(0x300, 30)], 1)
        .unwrap();
    assert_eq!(
        dev.desc(0),
        RawDesc {
            addr: 0x100_0100,
            len: 10,
            flags: desc::F_NEXT,
            next: 1
        }
    );
    let wn = desc::F_WRITE | desc::F_NEXT;
    assert_eq!(
        dev.desc(1),
        RawDesc {
            addr: 0x100_0200,
            len: 20,
            flags: wn,
            next: 2
        }
    );
    assert_eq!(
        dev.desc(2),
        RawDesc {
            addr: 0x100_0300,
            len: 30,
            flags: desc::F_WRITE,
            next: 0
        }
    );
    assert_eq!(dev.avail_entry(0), 0);
    assert_eq!(dev.avail_idx(), 0, "add does not publish");
    assert_eq!(q.num_free(), 1);
    q.add(&[seg(0x400, 4)], &[], 2).unwrap();
    assert_eq!(
        dev.desc(3),
        RawDesc {
            addr: 0x100_0400,
            len: 4,
            flags: 0,
            next: 0
        }
    );
    assert_eq!(dev.avail_entry(1), 3);
    q.publish().unwrap();
    assert_eq!(dev.avail_idx(), 2);
}

#[test]
fn indirect_table_byte_for_byte() {
    // virtio 1.2 §2.7.5.3: one descriptor with INDIRECT (and nothing else) pointing at a table
    // of len/16 entries, chained with NEXT and indices inside the table.
    let opts = DriverQueueOptions {
        indirect_table_len: 4,
    };
    let (mut q, dev) = split_pair(4, Features::INDIRECT_DESC, opts);
    q.add(&[seg(0x10, 1)], &[seg(0x20, 2), seg(0x30, 3)], 7)
        .unwrap();
    assert_eq!(q.num_free(), 3, "an indirect buffer takes one descriptor");
    let head = dev.desc(0);
    // The pool follows the used ring (8 + 4*... rounded to 16): table of slot 0 first.
    let pool = RING_BASE
        + required_size(RingFormat::Split, 4, Features::empty(), &NO_INDIRECT).next_multiple_of(16)
            as u64;
    assert_eq!(
        head,
        RawDesc {
            addr: pool,
            len: 48,
            flags: desc::F_INDIRECT,
            next: 0
        }
    );
    let wn = desc::F_WRITE | desc::F_NEXT;
    assert_eq!(
        dev.desc_at(pool, 0),
        RawDesc {
            addr: 0x100_0010,
            len: 1,
            flags: desc::F_NEXT,
            next: 1
        }
    );
    assert_eq!(
        dev.desc_at(pool, 1),
        RawDesc {
            addr: 0x100_0020,
            len: 2,
            flags: wn,
            next: 2
        }
    );
    assert_eq!(
        dev.desc_at(pool, 2),
        RawDesc {
            addr: 0x100_0030,
            len: 3,
            flags: desc::F_WRITE,
            next: 0
        }
    );
    // The next indirect buffer uses slot 1's own table.
    q.add(&[seg(0x40, 4), seg(0x50, 5)], &[], 8).unwrap();
    assert_eq!(dev.desc(1).addr, pool + 4 * 16);
    assert_eq!(dev.desc(1).len, 32);
    // One segment stays direct; more segments than a table holds fall back to a direct chain.
    q.add(&[seg(0x60, 6)], &[], 9).unwrap();
    assert_eq!(
        dev.desc(2),
        RawDesc {
            addr: 0x100_0060,
            len: 6,
            flags: 0,
            next: 0
        }
    );
    let five = [seg(0, 1), seg(1, 1), seg(2, 1), seg(3, 1), seg(4, 1)];
    assert_eq!(
        q.add(&five, &[], 10).unwrap_err(),
        DriverQueueError::TooManySegments { count: 5, max: 4 }
    );
}

#[test]
fn indirect_needs_the_feature() {
    let opts = DriverQueueOptions {
        indirect_table_len: 4,
    };
    let (mut q, dev) = split_pair(4, Features::empty(), opts);
    q.add(&[seg(0, 1), seg(1, 1)], &[], 1).unwrap();
    assert_eq!(q.num_free(), 2);
    assert_eq!(dev.desc(0).flags, desc::F_NEXT);
}

#[test]
fn caller_errors_leave_the_queue_unchanged() {
    let (mut q, mut dev) = split_pair(4, Features::empty(), NO_INDIRECT);
    assert_eq!(
        q.add(&[], &[], 0).unwrap_err(),
        DriverQueueError::EmptyBuffer
    );
    assert_eq!(
        q.add(&[seg(0, 1)], &[seg(1, 0)], 0).unwrap_err(),
        DriverQueueError::ZeroLengthSegment { index: 1 }
    );
    let wraps = BufferSegment::new(u64::MAX - 1, 4);
    assert_eq!(
        q.add(&[wraps], &[], 0).unwrap_err(),
        DriverQueueError::AddressOverflow {
            addr: u64::MAX - 1,
            len: 4
        }
    );
    let many = vec![seg(0, 1); 5];
    assert_eq!(
        q.add(&many, &[], 0).unwrap_err(),
        DriverQueueError::TooManySegments { count: 5, max: 4 }
    );
    assert!(!q.is_broken());
    assert!(!DriverQueueError::EmptyBuffer.is_device_fault());
    assert_eq!((q.num_free(), q.len_in_flight()), (4, 0));
    q.publish().unwrap();
    assert_eq!(dev.pop_avail(), None, "nothing was made available");
}

#[test]
fn free_list_exhaustion_and_recovery() {
    let (mut q, mut dev) = split_pair(4, Features::empty(), NO_INDIRECT);
    q.add(&[seg(0, 8), seg(8, 8)], &[], 1).unwrap();
    q.add(&[seg(16, 8)], &[], 2).unwrap();
    assert_eq!(
        q.add(&[seg(0, 1)], &[seg(1, 1)], 3).unwrap_err(),
        DriverQueueError::QueueFull { needed: 2, free: 1 }
    );
    q.add(&[], &[seg(24, 8)], 3).unwrap();
    assert_eq!(
        q.add(&[seg(0, 1)], &[], 4).unwrap_err(),
        DriverQueueError::QueueFull { needed: 1, free: 0 }
    );
    q.publish().unwrap();
    let bufs: Vec<_> = std::iter::from_fn(|| dev.pop_avail()).collect();
    assert_eq!(bufs.len(), 3);
    // The device returns the two-descriptor buffer: its two descriptors are free again.
    dev.use_buffer(bufs[0].id, 0);
    dev.publish_used();
    assert_eq!(
        q.pop_used().unwrap(),
        Some(UsedBuffer {
            token: 1,
            written: 0
        })
    );
    assert_eq!((q.num_free(), q.len_in_flight()), (2, 2));
    q.add(&[seg(0, 1)], &[seg(64, 32)], 5).unwrap();
    q.publish().unwrap();
    let again = dev.pop_avail().unwrap();
    assert_eq!(
        again.readable,
        [SeenSeg {
            addr: 0x100_0000,
            len: 1
        }]
    );
    assert_eq!(
        again.writable,
        [SeenSeg {
            addr: 0x100_0040,
            len: 32
        }]
    );
    // Used out of order, each with its token and length.
    for (b, written) in [(&bufs[2], 8), (&again, 32), (&bufs[1], 0)] {
        dev.use_buffer(b.id, written);
    }
    dev.publish_used();
    let got: Vec<_> = std::iter::from_fn(|| q.pop_used().unwrap()).collect();
    let want = [(3, 8), (5, 32), (2, 0)].map(|(token, written)| UsedBuffer { token, written });
    assert_eq!(got, want);
    assert_eq!((q.num_free(), q.len_in_flight()), (4, 0));
}

#[test]
fn a_full_ring_cycles_many_times() {
    // Every descriptor in use, then all returned, 3 * 2^16 / 8 times: indices wrap around.
    let (mut q, mut dev) = split_pair(8, Features::INDIRECT_DESC, DriverQueueOptions::default());
    for round in 0..(3 * 65536 / 8) {
        for t in 0..8u32 {
            let writable = [seg(u64::from(t) * 64, 64)];
            let readable: &[BufferSegment] = if t % 2 == 0 {
                &[]
            } else {
                &[BufferSegment::new(0x100_0000, 4)]
            };
            q.add(readable, &writable, round * 8 + t).unwrap();
        }
        assert_eq!(q.num_free(), 0);
        q.publish().unwrap();
        while let Some(b) = dev.pop_avail() {
            dev.use_buffer(b.id, u32::try_from(b.writable_len()).unwrap() - 1);
        }
        dev.publish_used();
        for t in 0..8u32 {
            assert_eq!(
                q.pop_used().unwrap(),
                Some(UsedBuffer {
                    token: round * 8 + t,
                    written: 63
                })
            );
        }
        assert_eq!(q.pop_used().unwrap(), None);
    }
}
