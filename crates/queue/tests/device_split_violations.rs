//! Device side of the split ring: every driver rule violation gets its specific error and
//! latches the queue broken (the policy in `vireo_queue::device`).
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod device_fake;

use device_fake::split::{RawDesc, SplitRing};
use vireo_memory::mmap::MmapRegion;
use vireo_memory::{GuestMemoryMap, MemoryError};
use vireo_queue::device::{
    AvailChain, DeviceQueueError, DeviceQueueState, SplitDeviceQueue, Violation,
};
use vireo_spec::split::desc::{F_INDIRECT, F_NEXT, F_WRITE};
use vireo_spec::Features;

fn queue(ring: &SplitRing) -> SplitDeviceQueue {
    SplitDeviceQueue::new(&ring.mem, &ring.config(), DeviceQueueState::default()).unwrap()
}

/// A readable buffer descriptor in descriptor `d`'s buffer slot.
fn buf(ring: &SplitRing, d: u16, flags: u16, next: u16) -> RawDesc {
    RawDesc {
        addr: ring.layout.buf(d),
        len: 8,
        flags,
        next,
    }
}

/// Every later call fails with `Broken(v)`, including a reader made before the break.
fn assert_latched(
    q: &mut SplitDeviceQueue,
    v: Violation,
    chain: &AvailChain,
    mem: &GuestMemoryMap,
) {
    let broken = DeviceQueueError::Broken(v);
    assert!(q.is_broken());
    assert_eq!(q.broken_by(), Some(v));
    assert!(broken.needs_reset() && broken.violation() == Some(v));
    assert_eq!(q.pop(), Err(broken));
    let items: Vec<_> = q.chain(chain, mem).map(Result::err).collect();
    assert_eq!(items, [Some(broken)]);
    assert_eq!(q.add_used(chain, 0), Err(broken));
    assert_eq!(q.publish_used(), Err(broken));
    assert_eq!(q.needs_notification(), Err(broken));
    assert_eq!(q.disable_kicks(), Err(broken));
    assert_eq!(q.enable_kicks(), Err(broken));
    assert_eq!(
        q.pop(),
        Err(broken),
        "still broken: the chain is never re-polled"
    );
}

/// Pops the one chain and walks it: the segments before the error, then the error.
fn walk_until_error(ring: &SplitRing) -> (SplitDeviceQueue, AvailChain, usize, DeviceQueueError) {
    let mut q = queue(ring);
    let c = q.pop().unwrap().unwrap();
    let mut ok = 0;
    let mut reader = q.chain(&c, &ring.mem);
    let err = loop {
        match reader.next() {
            Some(Ok(_)) => ok += 1,
            Some(Err(e)) => break e,
            None => panic!("the chain walked without error"),
        }
    };
    assert!(
        reader.next().is_none(),
        "the reader is fused after an error"
    );
    (q, c, ok, err)
}

/// Walks the one chain and checks the violation, the segments before it, and the latch.
fn expect_walk_violation(ring: &SplitRing, segments_before: usize, v: Violation) {
    let (mut q, c, ok, err) = walk_until_error(ring);
    assert_eq!(err, DeviceQueueError::Violation(v));
    assert_eq!(ok, segments_before);
    assert_latched(&mut q, v, &c, &ring.mem);
}

/// virtio 1.2 §2.7.6: the ring holds `size` entries, so `avail.idx` is at most `size` ahead.
#[test]
fn avail_index_too_far_ahead() {
    let ring = SplitRing::new(4, Features::empty());
    for d in 0..4 {
        ring.write_desc(d, buf(&ring, d, 0, 0));
        ring.set_avail_entry(d, d);
    }
    ring.set_avail_idx(4);
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap(); // exactly `size` ahead is fine
    ring.set_avail_idx(9); // not read yet: three more entries are cached as published
    for _ in 0..3 {
        q.pop().unwrap().unwrap();
    }
    // The cache is empty now: the index is read, and it is 5 ahead of next_avail 4.
    let v = Violation::AvailIndexTooFarAhead {
        avail_idx: 9,
        next_avail: 4,
        size: 4,
    };
    assert_eq!(q.pop(), Err(DeviceQueueError::Violation(v)));
    assert_latched(&mut q, v, &c, &ring.mem);
}

/// An index that goes backwards is "too far ahead" modulo 2^16.
#[test]
fn avail_index_going_backwards() {
    let ring = SplitRing::new(8, Features::empty());
    ring.set_avail_idx(0xffff);
    let mut q = queue(&ring);
    let v = Violation::AvailIndexTooFarAhead {
        avail_idx: 0xffff,
        next_avail: 0,
        size: 8,
    };
    assert_eq!(q.pop(), Err(DeviceQueueError::Violation(v)));
    assert_eq!(q.pop(), Err(DeviceQueueError::Broken(v)));
}

/// enable_kicks re-reads the index, and checks it the same way.
#[test]
fn avail_index_too_far_ahead_seen_by_enable_kicks() {
    let ring = SplitRing::new(8, Features::EVENT_IDX);
    ring.set_avail_idx(9);
    let mut q = queue(&ring);
    let v = Violation::AvailIndexTooFarAhead {
        avail_idx: 9,
        next_avail: 0,
        size: 8,
    };
    assert_eq!(q.enable_kicks(), Err(DeviceQueueError::Violation(v)));
    assert_eq!(q.pop(), Err(DeviceQueueError::Broken(v)));
}

/// virtio 1.2 §2.7.6: a head is a descriptor index, below the queue size.
#[test]
fn head_out_of_range() {
    let ring = SplitRing::new(4, Features::empty());
    ring.write_desc(0, buf(&ring, 0, 0, 0));
    ring.set_avail_entry(0, 0);
    ring.set_avail_entry(1, 4);
    ring.set_avail_idx(2);
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap();
    let v = Violation::HeadOutOfRange { head: 4, size: 4 };
    assert_eq!(q.pop(), Err(DeviceQueueError::Violation(v)));
    assert_latched(&mut q, v, &c, &ring.mem);
}

/// §2.7.13.1: the driver may not offer a head the device still holds.
#[test]
fn head_offered_twice() {
    let ring = SplitRing::new(4, Features::empty());
    ring.write_desc(1, buf(&ring, 1, 0, 0));
    ring.set_avail_entry(0, 1);
    ring.set_avail_entry(1, 1);
    ring.set_avail_idx(2);
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap();
    let v = Violation::HeadInFlight { head: 1 };
    assert_eq!(q.pop(), Err(DeviceQueueError::Violation(v)));
    assert_latched(&mut q, v, &c, &ring.mem);
}

/// Once used, the same head may be offered again.
#[test]
fn head_offered_again_after_use() {
    let ring = SplitRing::new(4, Features::empty());
    ring.write_desc(1, buf(&ring, 1, 0, 0));
    ring.set_avail_entry(0, 1);
    ring.set_avail_entry(1, 1);
    ring.set_avail_idx(2);
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap();
    q.push_used(&c, 0).unwrap();
    assert_eq!(q.pop().unwrap().unwrap().id(), 1);
}

/// virtio 1.2 §2.7.5: `next` indexes the descriptor table.
#[test]
fn next_out_of_range_in_the_table() {
    let ring = SplitRing::new(4, Features::empty());
    ring.write_desc(0, buf(&ring, 0, F_NEXT, 1));
    ring.write_desc(1, buf(&ring, 1, F_NEXT, 4));
    ring.set_avail_entry(0, 0);
    ring.set_avail_idx(1);
    expect_walk_violation(
        &ring,
        1,
        Violation::NextOutOfRange {
            next: 4,
            table_len: 4,
        },
    );
}

/// In an indirect table, `next` indexes that table.
#[test]
fn next_out_of_range_in_an_indirect_table() {
    let ring = SplitRing::new(4, Features::INDIRECT_DESC);
    let t = ring.layout.itable(0);
    ring.write_desc_at(t, 0, buf(&ring, 0, F_NEXT, 1));
    ring.write_desc_at(t, 1, buf(&ring, 1, F_NEXT, 2));
    ring.add_direct(
        0,
        &[(
            0,
            RawDesc {
                addr: t,
                len: 32,
                flags: F_INDIRECT,
                next: 0,
            },
        )],
    );
    expect_walk_violation(
        &ring,
        1,
        Violation::NextOutOfRange {
            next: 2,
            table_len: 2,
        },
    );
}

/// §2.7.5.2: loops are forbidden; the walk visits at most `size` descriptors.
#[test]
fn a_loop_in_the_table_is_too_long() {
    let ring = SplitRing::new(4, Features::empty());
    ring.write_desc(0, buf(&ring, 0, F_NEXT, 1));
    ring.write_desc(1, buf(&ring, 1, F_NEXT, 0));
    ring.set_avail_entry(0, 0);
    ring.set_avail_idx(1);
    expect_walk_violation(&ring, 4, Violation::ChainTooLong { limit: 4 });
}

#[test]
fn a_self_loop_is_too_long() {
    let ring = SplitRing::new(1, Features::empty());
    ring.write_desc(0, buf(&ring, 0, F_NEXT, 0));
    ring.set_avail_entry(0, 0);
    ring.set_avail_idx(1);
    expect_walk_violation(&ring, 1, Violation::ChainTooLong { limit: 1 });
}

/// A chain of exactly `size` descriptors is fine.
#[test]
fn a_chain_of_the_queue_size_is_fine() {
    let ring = SplitRing::new(8, Features::empty());
    let descs: Vec<_> = (0..8).map(|d| (7 - d, buf(&ring, 7 - d, 0, 0))).collect();
    ring.add_direct(0, &descs);
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap();
    assert_eq!(q.chain(&c, &ring.mem).filter(Result::is_ok).count(), 8);
}

/// Inside an indirect table the walk visits at most the table's entries.
#[test]
fn a_loop_in_an_indirect_table_is_too_long() {
    let ring = SplitRing::new(4, Features::INDIRECT_DESC);
    let t = ring.layout.itable(0);
    ring.write_desc_at(t, 0, buf(&ring, 0, F_NEXT, 2));
    ring.write_desc_at(t, 1, buf(&ring, 1, 0, 0));
    ring.write_desc_at(t, 2, buf(&ring, 2, F_NEXT, 0));
    ring.add_direct(
        0,
        &[(
            0,
            RawDesc {
                addr: t,
                len: 48,
                flags: F_INDIRECT,
                next: 0,
            },
        )],
    );
    expect_walk_violation(&ring, 3, Violation::ChainTooLong { limit: 3 });
}

/// An indirect table may be longer than the queue (Linux builds such tables; QEMU accepts
/// them), up to 32768 entries.
#[test]
fn an_indirect_table_longer_than_the_queue_is_fine() {
    let ring = SplitRing::new(2, Features::INDIRECT_DESC);
    let t = ring.layout.itable(0);
    for j in 0..8u16 {
        let flags = if j < 7 { F_NEXT | F_WRITE } else { F_WRITE };
        ring.write_desc_at(
            t,
            j,
            RawDesc {
                addr: ring.layout.ibuf(0, j),
                len: 1,
                flags,
                next: j + 1,
            },
        );
    }
    ring.add_direct(
        0,
        &[(
            0,
            RawDesc {
                addr: t,
                len: 128,
                flags: F_INDIRECT,
                next: 0,
            },
        )],
    );
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap();
    assert_eq!(
        q.chain(&c, &ring.mem).totals().unwrap().writable_segments,
        8
    );
}

/// §2.7.5.2: a chain's buffers total at most 2^32 bytes. Needs a guest memory larger than
/// 4 GiB: a sparse memfd mapping (its pages are never touched).
#[test]
fn a_chain_over_4_gib_is_too_large() {
    let mut ring = SplitRing::new(4, Features::empty());
    let big_base = 0x1_0000_0000u64;
    let (_fd, region) = MmapRegion::memfd("vireo-test-big", 0x1_0001_0000).unwrap();
    ring.mem
        .add_region(big_base, region.into_area().unwrap())
        .unwrap();
    ring.write_desc(
        0,
        RawDesc {
            addr: big_base,
            len: 0x8000_0000,
            flags: F_NEXT,
            next: 1,
        },
    );
    ring.write_desc(
        1,
        RawDesc {
            addr: big_base,
            len: 0x8000_0000,
            flags: F_NEXT,
            next: 2,
        },
    );
    ring.write_desc(
        2,
        RawDesc {
            addr: big_base,
            len: 1,
            flags: 0,
            next: 0,
        },
    );
    ring.set_avail_entry(0, 0);
    ring.set_avail_idx(1);
    expect_walk_violation(&ring, 2, Violation::ChainTooLarge);
}

/// §2.7.5.3.1: no indirect descriptor inside an indirect table (as the first entry, and later).
#[test]
fn indirect_in_indirect() {
    for first in [true, false] {
        let ring = SplitRing::new(4, Features::INDIRECT_DESC);
        let t = ring.layout.itable(0);
        let nested = RawDesc {
            addr: ring.layout.itable(1),
            len: 16,
            flags: F_INDIRECT,
            next: 0,
        };
        if first {
            ring.write_desc_at(t, 0, nested);
        } else {
            ring.write_desc_at(t, 0, buf(&ring, 0, F_NEXT, 1));
            ring.write_desc_at(t, 1, nested);
        }
        ring.add_direct(
            0,
            &[(
                0,
                RawDesc {
                    addr: t,
                    len: 32,
                    flags: F_INDIRECT,
                    next: 0,
                },
            )],
        );
        expect_walk_violation(&ring, usize::from(!first), Violation::IndirectInIndirect);
    }
}

/// §2.7.5.3.1: not both INDIRECT and NEXT.
#[test]
fn indirect_with_next() {
    let ring = SplitRing::new(4, Features::INDIRECT_DESC);
    let t = ring.layout.itable(0);
    ring.write_desc_at(t, 0, buf(&ring, 0, 0, 0));
    ring.write_desc(
        0,
        RawDesc {
            addr: t,
            len: 16,
            flags: F_INDIRECT | F_NEXT,
            next: 1,
        },
    );
    ring.write_desc(1, buf(&ring, 1, 0, 0));
    ring.set_avail_entry(0, 0);
    ring.set_avail_idx(1);
    expect_walk_violation(&ring, 0, Violation::IndirectWithNext);
}

/// §2.7.5.3: the table is a non-empty array of 16-byte descriptors, at most 32768 of them.
#[test]
fn indirect_table_size() {
    for len in [0u32, 8, 17, 16 * 32769] {
        let ring = SplitRing::new(4, Features::INDIRECT_DESC);
        let t = ring.layout.itable(0);
        ring.write_desc_at(t, 0, buf(&ring, 0, 0, 0));
        ring.add_direct(
            0,
            &[(
                0,
                RawDesc {
                    addr: t,
                    len,
                    flags: F_INDIRECT,
                    next: 0,
                },
            )],
        );
        expect_walk_violation(&ring, 0, Violation::IndirectTableSize { len });
    }
}

/// §2.7.5.3.1: INDIRECT only when VIRTIO_F_INDIRECT_DESC was negotiated.
#[test]
fn indirect_not_negotiated() {
    let ring = SplitRing::new(4, Features::EVENT_IDX);
    let t = ring.layout.itable(0);
    ring.write_desc_at(t, 0, buf(&ring, 0, 0, 0));
    ring.add_direct(
        0,
        &[
            (1, buf(&ring, 1, 0, 0)),
            (
                0,
                RawDesc {
                    addr: t,
                    len: 16,
                    flags: F_INDIRECT,
                    next: 0,
                },
            ),
        ],
    );
    expect_walk_violation(&ring, 1, Violation::IndirectNotNegotiated);
}

/// §2.7.4.2: device-writable descriptors come after device-readable ones, also across the step
/// into an indirect table.
#[test]
fn readable_after_writable() {
    let ring = SplitRing::new(4, Features::empty());
    ring.add_direct(
        0,
        &[
            (0, buf(&ring, 0, 0, 0)),
            (1, buf(&ring, 1, F_WRITE, 0)),
            (2, buf(&ring, 2, 0, 0)),
        ],
    );
    expect_walk_violation(&ring, 2, Violation::ReadableAfterWritable);

    let ring = SplitRing::new(4, Features::INDIRECT_DESC);
    let t = ring.layout.itable(1);
    ring.write_desc_at(t, 0, buf(&ring, 2, 0, 0));
    ring.add_direct(
        0,
        &[
            (0, buf(&ring, 0, F_WRITE, 0)),
            (
                1,
                RawDesc {
                    addr: t,
                    len: 16,
                    flags: F_INDIRECT,
                    next: 0,
                },
            ),
        ],
    );
    expect_walk_violation(&ring, 1, Violation::ReadableAfterWritable);
}

#[test]
fn indirect_table_outside_guest_memory() {
    let ring = SplitRing::new(4, Features::INDIRECT_DESC);
    let addr = ring.layout.end + 0x1000;
    ring.add_direct(
        0,
        &[(
            0,
            RawDesc {
                addr,
                len: 32,
                flags: F_INDIRECT,
                next: 0,
            },
        )],
    );
    let v = Violation::IndirectTableMemory(MemoryError::OutOfRange { addr, len: 32 });
    expect_walk_violation(&ring, 0, v);
}

#[test]
fn buffer_outside_guest_memory() {
    let ring = SplitRing::new(4, Features::empty());
    let addr = ring.layout.end - 4;
    ring.add_direct(
        0,
        &[
            (0, buf(&ring, 0, 0, 0)),
            (
                1,
                RawDesc {
                    addr,
                    len: 8,
                    flags: F_WRITE,
                    next: 0,
                },
            ),
        ],
    );
    let v = Violation::BufferMemory(MemoryError::CrossesRegion { addr, len: 8 });
    expect_walk_violation(&ring, 1, v);

    let ring = SplitRing::new(4, Features::empty());
    ring.add_direct(
        0,
        &[(
            0,
            RawDesc {
                addr: u64::MAX,
                len: 2,
                flags: 0,
                next: 0,
            },
        )],
    );
    let v = Violation::BufferMemory(MemoryError::Overflow {
        addr: u64::MAX,
        len: 2,
    });
    expect_walk_violation(&ring, 0, v);
}

/// A reader made before the break sees `Broken` (the latch is shared through `&self`).
#[test]
fn a_reader_made_before_the_break_sees_it() {
    let ring = SplitRing::new(4, Features::empty());
    ring.write_desc(0, buf(&ring, 0, F_NEXT, 0)); // self-loop
    ring.write_desc(1, buf(&ring, 1, 0, 0));
    ring.set_avail_entry(0, 0);
    ring.set_avail_entry(1, 1);
    ring.set_avail_idx(2);
    let mut q = queue(&ring);
    let bad = q.pop().unwrap().unwrap();
    let good = q.pop().unwrap().unwrap();
    let mut good_reader = q.chain(&good, &ring.mem);
    let err = q.chain(&bad, &ring.mem).find_map(Result::err).unwrap();
    let v = Violation::ChainTooLong { limit: 4 };
    assert_eq!(err, DeviceQueueError::Violation(v));
    assert_eq!(
        good_reader.next().map(Result::err),
        Some(Some(DeviceQueueError::Broken(v)))
    );
    assert!(good_reader.next().is_none());
}

/// The error messages are the doc comments, with the section cited.
#[test]
fn messages_cite_the_spec() {
    let e = DeviceQueueError::Violation(Violation::ReadableAfterWritable);
    assert_eq!(
        e.to_string(),
        "the driver broke a rule: device-readable descriptor after a device-writable one \
         (virtio 1.2 §2.7.4.2)"
    );
    let b = DeviceQueueError::Broken(Violation::HeadOutOfRange { head: 9, size: 8 });
    assert!(b
        .to_string()
        .contains("chain head 9 in the available ring is not below the queue size 8"));
    assert!(!DeviceQueueError::ChainNotInFlight { head: 1 }.needs_reset());
}
