//! Device side of the packed ring: every driver rule violation gets its specific error and
//! latches the queue broken (the policy in `vireo_queue::device`), with no panic and no
//! unbounded walk.
// Tests: a panic is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod device_fake;

use device_fake::packed::{PackedRing, RawPacked};
use vireo_memory::GuestMemoryMap;
use vireo_queue::device::{
    AvailChain, DeviceQueueError, DeviceQueueState, PackedDeviceQueue, Violation,
};
use vireo_spec::packed::desc::{F_AVAIL, F_INDIRECT, F_NEXT, F_USED, F_WRITE};
use vireo_spec::Features;

fn queue(ring: &PackedRing) -> PackedDeviceQueue {
    PackedDeviceQueue::new(&ring.mem, &ring.config(), DeviceQueueState::default()).unwrap()
}

/// A first-lap available descriptor (AVAIL 1, USED 0) for buffer slot `j` of id `id`.
fn avail(ring: &PackedRing, id: u16, j: u16, flags: u16) -> RawPacked {
    RawPacked {
        addr: ring.layout.buf(id, j),
        len: 8,
        id,
        flags: flags | F_AVAIL,
    }
}

/// Every later call fails with `Broken(v)`.
fn assert_latched(
    q: &mut PackedDeviceQueue,
    v: Violation,
    chain: Option<&AvailChain>,
    mem: &GuestMemoryMap,
) {
    let broken = DeviceQueueError::Broken(v);
    assert_eq!(q.broken_by(), Some(v));
    assert_eq!(q.pop(), Err(broken));
    if let Some(chain) = chain {
        let items: Vec<_> = q.chain(chain, mem).map(Result::err).collect();
        assert_eq!(items, [Some(broken)]);
        assert_eq!(q.add_used(chain, 0), Err(broken));
    }
    assert_eq!(q.publish_used(), Err(broken));
    assert_eq!(q.needs_notification(), Err(broken));
    assert_eq!(q.disable_kicks(), Err(broken));
    assert_eq!(q.enable_kicks(), Err(broken));
    assert_eq!(q.pop(), Err(broken), "still broken: never re-polled");
}

/// Pops, expecting violation `v`, and checks the latch.
fn expect_pop_violation(ring: &PackedRing, v: Violation) {
    let mut q = queue(ring);
    assert_eq!(q.pop(), Err(DeviceQueueError::Violation(v)));
    assert_latched(&mut q, v, None, &ring.mem);
}

/// Pops one chain, walks it; returns segments before the error and the error.
fn walk_violation(ring: &PackedRing, segments_before: usize, v: Violation) {
    let mut q = queue(ring);
    let c = q.pop().unwrap().unwrap();
    let mut reader = q.chain(&c, &ring.mem);
    let mut ok = 0;
    let err = loop {
        match reader.next() {
            Some(Ok(_)) => ok += 1,
            Some(Err(e)) => break e,
            None => panic!("the chain walked without error"),
        }
    };
    assert!(reader.next().is_none(), "fused after an error");
    assert_eq!((ok, err), (segments_before, DeviceQueueError::Violation(v)));
    assert_latched(&mut q, v, Some(&c), &ring.mem);
}

/// virtio 1.2 §2.8.6, §2.8.22: buffer ids are below the queue size.
#[test]
fn buffer_id_out_of_range() {
    let ring = PackedRing::new(4, Features::empty());
    ring.write_desc(
        0,
        RawPacked {
            id: 4,
            ..avail(&ring, 0, 0, 0)
        },
    );
    expect_pop_violation(&ring, Violation::BufferIdOutOfRange { id: 4, size: 4 });
}

/// §2.8.6: the id is taken from the last descriptor of a list; the others' ids are ignored.
#[test]
fn the_id_comes_from_the_last_descriptor() {
    let ring = PackedRing::new(4, Features::empty());
    ring.write_desc(
        1,
        RawPacked {
            id: 999,
            ..avail(&ring, 2, 1, 0)
        },
    );
    ring.write_desc(
        0,
        RawPacked {
            id: 999,
            ..avail(&ring, 2, 0, F_NEXT)
        },
    );
    // Out of range in the first: must be ignored; the last one decides.
    ring.write_desc(1, avail(&ring, 2, 1, 0));
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap();
    assert_eq!((c.id(), c.position()), (2, 0x8000));
    assert_eq!(q.chain(&c, &ring.mem).count(), 2);
}

/// §2.8.16: a buffer id made available again while the device holds it.
#[test]
fn buffer_id_in_flight() {
    let ring = PackedRing::new(4, Features::empty());
    ring.write_desc(0, avail(&ring, 1, 0, 0));
    ring.write_desc(1, avail(&ring, 1, 1, 0));
    let mut q = queue(&ring);
    let first = q.pop().unwrap().unwrap();
    assert_eq!(
        q.pop(),
        Err(DeviceQueueError::Violation(Violation::BufferIdInFlight {
            id: 1
        }))
    );
    assert_latched(
        &mut q,
        Violation::BufferIdInFlight { id: 1 },
        Some(&first),
        &ring.mem,
    );
}

/// §2.8.17: a list longer than the queue (every descriptor says NEXT, all available).
#[test]
fn a_list_longer_than_the_queue() {
    let ring = PackedRing::new(3, Features::empty());
    for off in 0..3 {
        ring.write_desc(off, avail(&ring, 0, off, F_NEXT));
    }
    // The walk wraps into the second lap, where AVAIL=1 no longer means available: the
    // descriptor after the ring's end is refused as not available, before any loop.
    expect_pop_violation(
        &ring,
        Violation::ChainDescriptorNotAvailable {
            offset: 0,
            flags: F_AVAIL | F_NEXT,
        },
    );
}

/// A list that would need more descriptors than the device has free: it holds two of three,
/// and the driver offers a list of two (§2.8.17).
#[test]
fn a_list_over_descriptors_the_device_holds() {
    let ring = PackedRing::new(3, Features::empty());
    ring.write_desc(1, avail(&ring, 1, 1, 0));
    ring.write_desc(0, avail(&ring, 0, 0, 0));
    let mut q = queue(&ring);
    let a = q.pop().unwrap().unwrap();
    let b = q.pop().unwrap().unwrap();
    // Descriptor 2 (lap 1) chains into descriptor 0 of lap 2 (wrap 0: AVAIL 0, USED 1).
    ring.write_desc(
        0,
        RawPacked {
            flags: F_USED,
            ..avail(&ring, 2, 0, 0)
        },
    );
    ring.write_desc(2, avail(&ring, 2, 2, F_NEXT));
    let v = Violation::RingOverfilled { held: 2, size: 3 };
    assert_eq!(q.pop(), Err(DeviceQueueError::Violation(v)));
    assert_latched(&mut q, v, Some(&a), &ring.mem);
    let _ = b;
}

/// §2.8.1: the next descriptor marked used in the lap the device is in (AVAIL and USED both
/// equal to the driver's wrap counter) is wrap-counter confusion.
#[test]
fn wrap_counter_mismatch() {
    let ring = PackedRing::new(4, Features::empty());
    ring.write_desc(0, avail(&ring, 0, 0, F_USED));
    expect_pop_violation(
        &ring,
        Violation::WrapCounterMismatch {
            offset: 0,
            flags: F_AVAIL | F_USED,
        },
    );
    // enable_kicks' re-check sees it as well.
    let mut q = queue(&ring);
    assert!(matches!(
        q.enable_kicks(),
        Err(DeviceQueueError::Violation(
            Violation::WrapCounterMismatch { .. }
        ))
    ));
}

/// Descriptors not made available in this lap (zero, or a previous lap's) are "nothing there".
#[test]
fn previous_lap_descriptors_are_not_available() {
    let ring = PackedRing::new(4, Features::empty());
    let mut q = queue(&ring);
    assert_eq!(q.pop(), Ok(None), "zero-initialised ring");
    ring.write_desc(
        0,
        RawPacked {
            flags: F_USED,
            ..avail(&ring, 0, 0, 0)
        },
    );
    assert_eq!(q.pop(), Ok(None), "AVAIL 0, USED 1: a wrap-0 descriptor");
    assert!(!q.is_broken());
}

/// §2.8.6, §2.8.17: the rest of a list must be available when its first descriptor is.
#[test]
fn rest_of_a_list_not_available() {
    let ring = PackedRing::new(4, Features::empty());
    ring.write_desc(
        1,
        RawPacked {
            flags: 0,
            ..avail(&ring, 0, 1, 0)
        },
    );
    ring.write_desc(0, avail(&ring, 0, 0, F_NEXT));
    expect_pop_violation(
        &ring,
        Violation::ChainDescriptorNotAvailable {
            offset: 1,
            flags: 0,
        },
    );
}

/// §2.8.19: INDIRECT only with VIRTIO_F_INDIRECT_DESC.
#[test]
fn indirect_not_negotiated() {
    let ring = PackedRing::new(4, Features::empty());
    ring.write_desc(
        0,
        RawPacked {
            addr: ring.layout.itable(0),
            len: 16,
            ..avail(&ring, 0, 0, F_INDIRECT)
        },
    );
    expect_pop_violation(&ring, Violation::IndirectNotNegotiated);
}

/// §2.8.19: an indirect descriptor with NEXT, or after one, is refused.
#[test]
fn indirect_with_next_or_in_a_list() {
    let ring = PackedRing::new(4, Features::INDIRECT_DESC);
    ring.write_desc(
        0,
        RawPacked {
            addr: ring.layout.itable(0),
            len: 16,
            ..avail(&ring, 0, 0, F_INDIRECT | F_NEXT)
        },
    );
    expect_pop_violation(&ring, Violation::IndirectWithNext);
    let ring = PackedRing::new(4, Features::INDIRECT_DESC);
    ring.write_desc(
        1,
        RawPacked {
            addr: ring.layout.itable(0),
            len: 16,
            ..avail(&ring, 0, 1, F_INDIRECT)
        },
    );
    ring.write_desc(0, avail(&ring, 0, 0, F_NEXT));
    expect_pop_violation(&ring, Violation::IndirectInChain);
}

/// §2.8.7: the table length is a non-zero multiple of 16.
#[test]
fn indirect_table_size() {
    for len in [0, 8, 24] {
        let ring = PackedRing::new(4, Features::INDIRECT_DESC);
        ring.write_desc(
            0,
            RawPacked {
                addr: ring.layout.itable(0),
                len,
                ..avail(&ring, 0, 0, F_INDIRECT)
            },
        );
        walk_violation(&ring, 0, Violation::IndirectTableSize { len });
    }
}

/// §2.8.19: no INDIRECT inside an indirect table; NEXT there is reserved and ignored (§2.8.7),
/// the table's length alone says how many entries it has.
#[test]
fn indirect_in_indirect_and_next_ignored() {
    let ring = PackedRing::new(4, Features::INDIRECT_DESC);
    let t = ring.layout.itable(0);
    ring.write_desc_at(
        t,
        0,
        RawPacked {
            addr: ring.layout.buf(0, 0),
            len: 4,
            id: 77,
            flags: F_NEXT,
        },
    );
    ring.write_desc_at(
        t,
        1,
        RawPacked {
            addr: ring.layout.buf(0, 1),
            len: 4,
            id: 0,
            flags: F_WRITE,
        },
    );
    ring.write_desc_at(
        t,
        2,
        RawPacked {
            addr: t,
            len: 16,
            id: 0,
            flags: F_INDIRECT,
        },
    );
    ring.write_desc(
        0,
        RawPacked {
            addr: t,
            len: 48,
            ..avail(&ring, 0, 0, F_INDIRECT | F_WRITE)
        },
    );
    walk_violation(&ring, 2, Violation::IndirectInIndirect);

    let ring = PackedRing::new(4, Features::INDIRECT_DESC);
    let t = ring.layout.itable(0);
    ring.write_desc_at(
        t,
        0,
        RawPacked {
            addr: ring.layout.buf(0, 0),
            len: 4,
            id: 77,
            flags: 0,
        },
    );
    ring.write_desc_at(
        t,
        1,
        RawPacked {
            addr: ring.layout.buf(0, 1),
            len: 4,
            id: 0,
            flags: F_WRITE | F_NEXT,
        },
    );
    ring.write_desc(
        0,
        RawPacked {
            addr: t,
            len: 32,
            ..avail(&ring, 0, 0, F_INDIRECT)
        },
    );
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap();
    let totals = q.chain(&c, &ring.mem).totals().unwrap();
    assert_eq!((totals.readable_segments, totals.writable_segments), (1, 1));
}

/// §2.8.17: readable after writable, in the ring and in an indirect table.
#[test]
fn readable_after_writable() {
    let ring = PackedRing::new(4, Features::empty());
    ring.write_desc(1, avail(&ring, 0, 1, 0));
    ring.write_desc(0, avail(&ring, 0, 0, F_WRITE | F_NEXT));
    walk_violation(&ring, 1, Violation::ReadableAfterWritable);
}

/// A buffer outside guest memory.
#[test]
fn buffer_outside_guest_memory() {
    let ring = PackedRing::new(4, Features::empty());
    ring.write_desc(
        0,
        RawPacked {
            addr: ring.layout.end + 4096,
            ..avail(&ring, 0, 0, 0)
        },
    );
    let mut q = queue(&ring);
    let c = q.pop().unwrap().unwrap();
    let err = q.chain(&c, &ring.mem).next().unwrap().unwrap_err();
    assert!(matches!(
        err,
        DeviceQueueError::Violation(Violation::BufferMemory(_))
    ));
    assert!(q.is_broken());
}

/// The messages are the doc comments, with the section cited.
#[test]
fn messages_cite_the_spec() {
    let e = DeviceQueueError::Violation(Violation::BufferIdOutOfRange { id: 9, size: 8 });
    assert_eq!(
        e.to_string(),
        "the driver broke a rule: buffer id 9 is not below the queue size 8 (virtio 1.2 §2.8.6, \
         §2.8.22)"
    );
    assert!(Violation::WrapCounterMismatch {
        offset: 1,
        flags: 0x8080
    }
    .to_string()
    .contains("(virtio 1.2 §2.8.1)"));
}
